-- The audit trail: every file operation (reads and listings included) with the key that did
-- it and how it ended. Kept apart from `events` so reads never flood the feed or webhooks.
CREATE TABLE audit (
    seq          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workspace_id text NOT NULL,
    key_id       text NOT NULL,
    namespace    text COLLATE "C",
    operation    text NOT NULL,
    path         text,
    status       integer NOT NULL,
    created_at   bigint NOT NULL
);
CREATE INDEX audit_by_time ON audit (workspace_id, created_at);
CREATE INDEX audit_by_key ON audit (workspace_id, key_id, created_at);
