-- Webhook subscriptions and their delivery outbox.

CREATE TABLE webhooks (
    id                   text PRIMARY KEY,
    workspace_id         text NOT NULL REFERENCES workspaces (id),
    url                  text NOT NULL,
    -- Event types; '*' matches every type, present and future.
    events               text[] NOT NULL,
    namespace            text COLLATE "C",
    description          text,
    -- Needed in clear to sign deliveries; returned only once, at creation.
    secret               text NOT NULL,
    enabled              boolean NOT NULL DEFAULT true,
    created_at           bigint NOT NULL,
    deleted_at           bigint,
    last_delivery_at     bigint,
    last_delivery_ok     boolean,
    last_delivery_status integer
);
CREATE INDEX webhooks_by_workspace ON webhooks (workspace_id, created_at);

-- One row per (subscription, event): filled in the event's own transaction, so no event is
-- lost between commit and delivery, and drained by the delivery workers of every node.
CREATE TABLE deliveries (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    webhook_id      text NOT NULL REFERENCES webhooks (id),
    event_seq       bigint NOT NULL REFERENCES events (seq),
    state           text NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at bigint NOT NULL,
    -- A claimed row is leased; a worker that dies mid-delivery loses the lease, and the row is
    -- picked up again (at-least-once).
    locked_until    bigint,
    last_status     integer,
    last_error      text,
    updated_at      bigint NOT NULL
);
CREATE INDEX deliveries_due ON deliveries (webhook_id, next_attempt_at) WHERE state = 'pending';
CREATE INDEX deliveries_by_event ON deliveries (event_seq);
