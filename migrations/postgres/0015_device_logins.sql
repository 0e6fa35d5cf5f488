-- Browser logins of the CLI in flight (spec §5.2). Both codes are stored as HMACs under the
-- server secret, never as given. An approval records what to mint (workspace, namespace, key
-- name, and the admin key that approved); the key itself is minted by the CLI's poll that
-- takes the approval, once, so no key material is ever stored here. Each login lasts minutes:
-- expired ones are swept, and migrate-db does not copy them.
CREATE TABLE device_logins (
    device_hash  bytea PRIMARY KEY,
    user_hash    bytea NOT NULL UNIQUE,
    -- pending, approved, denied or spent
    state        text NOT NULL,
    created_at   bigint NOT NULL,
    expires_at   bigint NOT NULL,
    workspace_id text,
    namespace    text,
    key_name     text,
    approved_by  text
);
CREATE INDEX device_logins_expiry ON device_logins (expires_at);
