-- Webhook deliveries: replay protection by body, and an index for the retention purge.
-- migrations/sqlite/ mirrors this file. (0012's comments say shared::api::DeployTrigger; the
-- type is shared::webhooks::DeployTrigger. 0012 is not edited: it is applied already.)

-- SHA-256 (hex) of the raw body of a delivery signed with an HMAC (GitHub, Gitea, Forgejo),
-- NULL for the others. The signature covers the body only, not the delivery id or the sender's
-- headers, so a captured delivery re-sent under a new id (or none, or another sender's headers)
-- is recognised by its body: a true redelivery is byte-identical, a new push has a new body.
ALTER TABLE webhook_deliveries ADD COLUMN body_sha256 TEXT;
CREATE UNIQUE INDEX webhook_deliveries_by_body ON webhook_deliveries (hook_id, body_sha256);

-- The retention purge selects by time across every hook.
CREATE INDEX webhook_deliveries_received_at ON webhook_deliveries (received_at);
