-- Snapshots: archives of a namespace tree in object storage; this is their catalogue.
CREATE TABLE snapshots (
    id           TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL,
    namespace    TEXT NOT NULL,
    label        TEXT,
    size_bytes   INTEGER NOT NULL,
    file_count   INTEGER NOT NULL,
    key_id       TEXT,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL
);
CREATE INDEX snapshots_by_namespace ON snapshots (workspace_id, namespace, created_at);
CREATE INDEX snapshots_by_expiry ON snapshots (expires_at);
