-- The audit trail: every file operation (reads and listings included) with the key that did
-- it and how it ended. Kept apart from `events` so reads never flood the feed or webhooks.
CREATE TABLE audit (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace_id TEXT NOT NULL,
    key_id       TEXT NOT NULL,
    namespace    TEXT,
    operation    TEXT NOT NULL,
    path         TEXT,
    status       INTEGER NOT NULL,
    created_at   INTEGER NOT NULL
);
CREATE INDEX audit_by_time ON audit (workspace_id, created_at);
CREATE INDEX audit_by_key ON audit (workspace_id, key_id, created_at);
