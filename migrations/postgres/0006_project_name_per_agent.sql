-- One compose project name per agent. The name is what the agent passes to `docker compose -p`,
-- a namespace on the agent's host: two projects with the same name on one agent are one stack
-- to Compose, and each deploy recreates or removes the other's containers. Names were unique per
-- owner only; from now on they are unique per agent as well. ops::projects checks it first (and
-- answers 409 "agent X already runs a project named N"); the index below holds it against races.
--
-- A database may already hold such pairs (of one owner on different agents they cannot be, of
-- two owners on one agent they can). This migration must not fail on them, and it does not
-- rename anything behind their owners' backs: every project that shared its name with an older
-- one (created_at, then id) on the same agent is marked legacy_name_clash and left out of the
-- index, so both keep working as before. The agent now refuses to deploy into a compose project
-- whose containers belong to another project (agent/src/claim.rs), so the later of the two to
-- deploy is told to rename. The mark goes as soon as the project's name or agent changes
-- (db::projects), and then the index holds it like any other.
-- migrations/sqlite/ mirrors this file.

ALTER TABLE projects ADD COLUMN legacy_name_clash BOOLEAN NOT NULL DEFAULT FALSE;

UPDATE projects
SET legacy_name_clash = TRUE
WHERE EXISTS (
    SELECT 1
    FROM projects AS older
    WHERE older.agent_id = projects.agent_id
      AND older.name = projects.name
      AND (older.created_at < projects.created_at
           OR (older.created_at = projects.created_at AND older.id < projects.id))
);

CREATE UNIQUE INDEX projects_name_per_agent ON projects (agent_id, name)
WHERE NOT legacy_name_clash;
