-- The admin key a server installs from its configuration (WARREN_ADMIN_KEY or admin.key) is
-- flagged, so that configuring a new one retires the old one instead of leaving both valid.
ALTER TABLE api_keys ADD COLUMN bootstrap INTEGER NOT NULL DEFAULT 0;
-- Keys installed before this flag existed: admin keys whose creation no key is credited with.
UPDATE api_keys SET bootstrap = 1
WHERE scope = 'admin' AND revoked_at IS NULL
  AND id IN (SELECT json_extract(data, '$.key_id') FROM events
             WHERE type = 'key.created' AND key_id IS NULL);
