-- The nodes of the Swarm an agent's engine manages, as it last reported them (a JSON array of
-- `shared::target::SwarmNode`); NULL until it reports, `[]` when it manages none.
ALTER TABLE agents ADD COLUMN swarm_nodes TEXT;
