-- Browser logins of the CLI in flight (spec §5.2). Both codes are stored as HMACs under the
-- server secret, never as given. An approval records what to mint (workspace, namespace, key
-- name, and the admin key that approved); the key itself is minted by the CLI's poll that
-- takes the approval, once, so no key material is ever stored here. Each login lasts minutes:
-- expired ones are swept, and migrate-db does not copy them.
CREATE TABLE device_logins (
    device_hash  BLOB PRIMARY KEY,
    user_hash    BLOB NOT NULL UNIQUE,
    -- pending, approved, denied or spent
    state        TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    workspace_id TEXT,
    namespace    TEXT,
    key_name     TEXT,
    approved_by  TEXT
);
CREATE INDEX device_logins_expiry ON device_logins (expires_at);
