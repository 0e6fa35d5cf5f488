-- Namespace lifecycle: a deleted namespace is inaccessible at once and purged later.
-- active -> deleted -> purging (bytes being removed; no restore from here) -> purged.
ALTER TABLE namespaces ADD COLUMN state text NOT NULL DEFAULT 'active'
    CHECK (state IN ('active', 'deleted', 'purging', 'purged'));
ALTER TABLE namespaces ADD COLUMN deleted_at bigint;
ALTER TABLE namespaces ADD COLUMN purged_at bigint;
CREATE INDEX namespaces_by_state ON namespaces (state, deleted_at);
