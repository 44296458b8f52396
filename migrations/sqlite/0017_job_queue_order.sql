-- The order a server hands an agent its jobs in (on PostgreSQL drawn from a sequence, since
-- replicas' clocks differ; here, one server, the next number at each insert).
ALTER TABLE deployments ADD COLUMN queue_order INTEGER;
UPDATE deployments SET queue_order = (
    SELECT o.n FROM (SELECT id, row_number() OVER (ORDER BY created_at, id) AS n FROM deployments) o
    WHERE o.id = deployments.id
);
-- Each insert reads the largest so far.
CREATE INDEX deployments_queue_order ON deployments (queue_order);
