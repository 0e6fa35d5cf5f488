-- Warren metadata, PostgreSQL flavour: the same tables and meaning as migrations/sqlite, so
-- both backends behave alike. Times are bigint microseconds since the Unix epoch (UTC), read
-- from the database's clock (warren_now) wherever the store stamps them, so every node agrees.
-- Paths and names are compared bytewise (COLLATE "C"): subtree ranges and child order depend
-- on it, whatever the database's default collation.

CREATE FUNCTION warren_now() RETURNS bigint LANGUAGE sql VOLATILE AS
$$ SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint $$;

CREATE TABLE settings (
    name  text PRIMARY KEY,
    value text NOT NULL
);

CREATE TABLE workspaces (
    id         text PRIMARY KEY,
    name       text NOT NULL,
    created_at bigint NOT NULL
);

CREATE TABLE api_keys (
    id           text PRIMARY KEY,
    workspace_id text NOT NULL REFERENCES workspaces (id),
    name         text NOT NULL,
    prefix       text NOT NULL,
    -- HMAC-SHA256(server secret, plaintext key); the plaintext is never stored.
    hash         bytea NOT NULL UNIQUE,
    scope        text NOT NULL CHECK (scope IN ('admin', 'workspace')),
    namespace    text,
    created_at   bigint NOT NULL,
    last_used_at bigint,
    revoked_at   bigint,
    CHECK (scope = 'workspace' OR namespace IS NULL)
);
CREATE INDEX api_keys_by_workspace ON api_keys (workspace_id, created_at);

CREATE TABLE namespaces (
    workspace_id text NOT NULL REFERENCES workspaces (id),
    name         text COLLATE "C" NOT NULL,
    -- Bumped by every change to the tree; a working copy at this generation is current.
    generation   bigint NOT NULL DEFAULT 0,
    created_at   bigint NOT NULL,
    PRIMARY KEY (workspace_id, name)
);

-- The file tree. Bytes live in object storage; this is the index over them.
CREATE TABLE files (
    workspace_id text NOT NULL,
    namespace    text COLLATE "C" NOT NULL,
    path         text COLLATE "C" NOT NULL,
    parent       text COLLATE "C" NOT NULL,
    name         text COLLATE "C" NOT NULL,
    kind         text NOT NULL CHECK (kind IN ('file', 'dir', 'symlink')),
    size         bigint NOT NULL DEFAULT 0,
    mode         bigint NOT NULL,
    mtime        bigint NOT NULL,
    sha256       text,
    target       text,
    generation   bigint NOT NULL,
    PRIMARY KEY (workspace_id, namespace, path),
    FOREIGN KEY (workspace_id, namespace) REFERENCES namespaces (workspace_id, name)
);
CREATE INDEX files_by_parent ON files (workspace_id, namespace, parent, name);

-- Append-only log: the events feed and webhooks read from it. `pos` is the position within
-- the workspace's log, handed out by event_heads (see below); `seq` only names a row.
CREATE TABLE events (
    seq          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id           text NOT NULL UNIQUE,
    type         text NOT NULL,
    workspace_id text NOT NULL,
    namespace    text COLLATE "C",
    key_id       text,
    pos          bigint NOT NULL,
    created_at   bigint NOT NULL,
    data         jsonb NOT NULL,
    UNIQUE (workspace_id, pos)
);
CREATE INDEX events_by_time ON events (workspace_id, created_at, pos);

-- Each workspace's log head: the last position and time handed out. An append moves it in
-- the appending transaction, so the row stays locked until that transaction ends: appends
-- to one workspace commit one after another, and a position becomes visible only after every
-- position before it. Pollers by position or by time therefore never skip an event that
-- commits late, whatever the number of writers.
CREATE TABLE event_heads (
    workspace_id text PRIMARY KEY,
    pos          bigint NOT NULL,
    at           bigint NOT NULL
);
