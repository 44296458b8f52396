-- A project's deploy target: a Compose project on the agent's host (as before) or a Docker
-- Swarm stack on the agent's manager, and how a Swarm stack receives its secrets.
ALTER TABLE projects ADD COLUMN target TEXT NOT NULL DEFAULT 'compose';
ALTER TABLE projects ADD COLUMN secrets_as TEXT NOT NULL DEFAULT 'environment';
