-- Snapshots: archives of a namespace tree in object storage; this is their catalogue.
CREATE TABLE snapshots (
    id           text PRIMARY KEY,
    workspace_id text NOT NULL,
    namespace    text COLLATE "C" NOT NULL,
    label        text,
    size_bytes   bigint NOT NULL,
    file_count   bigint NOT NULL,
    key_id       text,
    created_at   bigint NOT NULL,
    expires_at   bigint NOT NULL
);
CREATE INDEX snapshots_by_namespace ON snapshots (workspace_id, namespace, created_at);
CREATE INDEX snapshots_by_expiry ON snapshots (expires_at);
