-- The order a server hands an agent its jobs in. `created_at` is the clock of the replica that
-- queued the job, and replicas' clocks differ: a stop asked for through one replica right after
-- a deploy through another could sort before it and run first. The order is drawn from one
-- sequence of the database instead, so a job queued after another is handed over after it.
CREATE SEQUENCE deployments_queue_order;
ALTER TABLE deployments ADD COLUMN queue_order BIGINT;
UPDATE deployments d SET queue_order = o.n
FROM (SELECT id, row_number() OVER (ORDER BY created_at, id) AS n FROM deployments) o
WHERE d.id = o.id;
SELECT setval('deployments_queue_order', COALESCE((SELECT MAX(queue_order) FROM deployments), 0) + 1, false);
ALTER TABLE deployments ALTER COLUMN queue_order SET DEFAULT nextval('deployments_queue_order');
ALTER TABLE deployments ALTER COLUMN queue_order SET NOT NULL;
ALTER SEQUENCE deployments_queue_order OWNED BY deployments.queue_order;
