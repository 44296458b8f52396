-- Push webhooks: one hook per project, with its own random id (in its URL) and its own secret,
-- and the deliveries it verified. migrations/sqlite/ mirrors this file.

-- The secret is sealed by the vault like a secret value, bound to its project and hook id: the
-- HMAC check needs the plain value, so it cannot be a hash. `pending_deploy` is the "deploy again
-- when the running deploy ends" flag: the trigger (JSON of shared::api::DeployTrigger) of the
-- newest push that arrived while a deploy of the project was running or queued.
CREATE TABLE webhooks (
    id             TEXT PRIMARY KEY,
    project_id     TEXT NOT NULL UNIQUE REFERENCES projects (id) ON DELETE CASCADE,
    secret         BYTEA NOT NULL,
    created_at     BIGINT NOT NULL,
    rotated_at     BIGINT,
    pending_deploy TEXT
);

-- Verified deliveries only (a bad signature stores nothing): the delivery id a sender gave, so a
-- redelivery is not deployed twice, and what became of it for the dashboard. Kept for a while
-- (ops::webhooks::DELIVERY_RETENTION).
CREATE TABLE webhook_deliveries (
    hook_id       TEXT NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    delivery_id   TEXT NOT NULL,
    received_at   BIGINT NOT NULL,
    provider      TEXT NOT NULL,
    event         TEXT NOT NULL,
    outcome       TEXT NOT NULL,
    deployment_id TEXT,
    PRIMARY KEY (hook_id, delivery_id)
);
CREATE INDEX webhook_deliveries_by_time ON webhook_deliveries (hook_id, received_at);

-- What started a deploy (JSON of shared::api::DeployTrigger); NULL: a person, by hand.
ALTER TABLE deployments ADD COLUMN trigger_info TEXT;
