-- Several server replicas on one database (README, "Running several replicas").
--
-- Which replica holds each connected agent's socket, until when: a replica renews the leases of
-- its agents every few seconds, so those of a replica that died expire on their own.
CREATE TABLE agent_leases (
    agent_id TEXT PRIMARY KEY,
    replica_id TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX agent_leases_replica ON agent_leases (replica_id);

-- What replicas hand each other (a job waiting for an agent held elsewhere, a log stream to
-- start, a dashboard event): the body is kept here and NOTIFY carries only the row's id.
-- `target` NULL is for every replica. Rows are removed once read (targeted) or after a minute.
CREATE TABLE replica_messages (
    id BIGSERIAL PRIMARY KEY,
    sender TEXT NOT NULL,
    target TEXT,
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX replica_messages_created_at ON replica_messages (created_at);

-- The replicas that are up, each until its lease runs out (renewed with its agents' leases):
-- a log stream one replica started on its agent for another is stopped once that one is gone.
CREATE TABLE replicas (
    replica_id TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
