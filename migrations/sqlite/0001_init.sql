-- Warren metadata, SQLite flavour. Times are INTEGER microseconds since the Unix epoch (UTC).

CREATE TABLE settings (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE workspaces (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id),
    name         TEXT NOT NULL,
    prefix       TEXT NOT NULL,
    -- HMAC-SHA256(server secret, plaintext key); the plaintext is never stored.
    hash         BLOB NOT NULL UNIQUE,
    scope        TEXT NOT NULL CHECK (scope IN ('admin', 'workspace')),
    namespace    TEXT,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER,
    revoked_at   INTEGER,
    CHECK (scope = 'workspace' OR namespace IS NULL)
);
CREATE INDEX api_keys_by_workspace ON api_keys (workspace_id, created_at);

CREATE TABLE namespaces (
    workspace_id TEXT NOT NULL REFERENCES workspaces (id),
    name         TEXT NOT NULL,
    -- Bumped by every change to the tree; a working copy at this generation is current.
    generation   INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, name)
);

-- The file tree. Bytes live in object storage; this is the index over them.
CREATE TABLE files (
    workspace_id TEXT NOT NULL,
    namespace    TEXT NOT NULL,
    path         TEXT NOT NULL,
    parent       TEXT NOT NULL,
    name         TEXT NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('file', 'dir', 'symlink')),
    size         INTEGER NOT NULL DEFAULT 0,
    mode         INTEGER NOT NULL,
    mtime        INTEGER NOT NULL,
    sha256       TEXT,
    target       TEXT,
    generation   INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, namespace, path),
    FOREIGN KEY (workspace_id, namespace) REFERENCES namespaces (workspace_id, name)
) WITHOUT ROWID;
CREATE INDEX files_by_parent ON files (workspace_id, namespace, parent, name);

-- Append-only log: the audit trail, the events feed and webhooks all read from it.
CREATE TABLE events (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT NOT NULL UNIQUE,
    type         TEXT NOT NULL,
    workspace_id TEXT NOT NULL,
    namespace    TEXT,
    key_id       TEXT,
    created_at   INTEGER NOT NULL,
    data         TEXT NOT NULL
);
CREATE INDEX events_by_time ON events (workspace_id, created_at, seq);
