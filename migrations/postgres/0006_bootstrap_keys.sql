-- The admin key a server installs from its configuration (WARREN_ADMIN_KEY or admin.key) is
-- flagged, so that configuring a new one retires the old one instead of leaving both valid.
-- (SQLite's version also flags keys from before the column existed; a PostgreSQL database
-- has none.)
ALTER TABLE api_keys ADD COLUMN bootstrap boolean NOT NULL DEFAULT false;
