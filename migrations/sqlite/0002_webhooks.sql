-- Webhook subscriptions and their delivery outbox.

CREATE TABLE webhooks (
    id                   TEXT PRIMARY KEY,
    workspace_id         TEXT NOT NULL REFERENCES workspaces (id),
    url                  TEXT NOT NULL,
    -- JSON array of event types; "*" matches every type, present and future.
    events               TEXT NOT NULL,
    namespace            TEXT,
    description          TEXT,
    -- Needed in clear to sign deliveries; returned only once, at creation.
    secret               TEXT NOT NULL,
    enabled              INTEGER NOT NULL DEFAULT 1,
    created_at           INTEGER NOT NULL,
    deleted_at           INTEGER,
    last_delivery_at     INTEGER,
    last_delivery_ok     INTEGER,
    last_delivery_status INTEGER
);
CREATE INDEX webhooks_by_workspace ON webhooks (workspace_id, created_at);

-- One row per (subscription, event): filled in the event's own transaction, so no event is
-- lost between commit and delivery, and drained by the delivery worker.
CREATE TABLE deliveries (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    webhook_id      TEXT NOT NULL REFERENCES webhooks (id),
    event_seq       INTEGER NOT NULL REFERENCES events (seq),
    state           TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    -- A claimed row is leased; a worker that dies mid-delivery loses the lease, and the row is
    -- picked up again (at-least-once).
    locked_until    INTEGER,
    last_status     INTEGER,
    last_error      TEXT,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX deliveries_due ON deliveries (state, next_attempt_at);
