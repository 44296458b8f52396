-- Notifications: each person's channels, which events of a project go to which channel, and a
-- durable queue of deliveries. migrations/postgres/ mirrors this file.

-- A channel's URL is a credential (Slack and Discord URLs embed a token): it is sealed by the
-- vault like a secret value, bound to its row, and so are the webhook signing secret and the
-- ntfy token. `target` (scheme and host) is what listings show.
CREATE TABLE notification_channels (
    id             TEXT PRIMARY KEY,
    owner_id       TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind           TEXT NOT NULL,
    name           TEXT NOT NULL,
    target         TEXT NOT NULL,
    url            BLOB NOT NULL,
    signing_secret BLOB,
    token          BLOB,
    created_at     BIGINT NOT NULL
);
CREATE INDEX notification_channels_by_owner ON notification_channels (owner_id, created_at);

-- Project × channel × event: one row per event a channel gets from a project.
CREATE TABLE notification_rules (
    project_id TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    channel_id TEXT NOT NULL REFERENCES notification_channels (id) ON DELETE CASCADE,
    event      TEXT NOT NULL,
    PRIMARY KEY (project_id, channel_id, event)
);
CREATE INDEX notification_rules_by_channel ON notification_rules (channel_id);

-- The queue: `seq` orders one channel's deliveries; a worker claims a row by setting
-- `claimed_by` / `claimed_until` only where no live claim is held, so two replicas never send
-- the same row at once.
CREATE TABLE notification_deliveries (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT NOT NULL UNIQUE,
    channel_id      TEXT NOT NULL REFERENCES notification_channels (id) ON DELETE CASCADE,
    event           TEXT NOT NULL,
    -- JSON of shared::notify::Notification, already masked.
    payload         TEXT NOT NULL,
    status          TEXT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    http_status     BIGINT,
    last_error      TEXT,
    next_attempt_at BIGINT NOT NULL,
    claimed_by      TEXT,
    claimed_until   BIGINT,
    created_at      BIGINT NOT NULL,
    delivered_at    BIGINT
);
CREATE INDEX notification_deliveries_due ON notification_deliveries (status, next_attempt_at);
CREATE INDEX notification_deliveries_by_channel ON notification_deliveries (channel_id, status, seq);
