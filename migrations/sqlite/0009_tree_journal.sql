-- The tree's change journal: what changed since a generation, so a working copy is refreshed
-- at a cost proportional to the change, not to the namespace. Every row already carries the
-- generation that last wrote it; a removed row leaves a tombstone with a generation at least
-- that of its removal (the trigger reads the namespace's generation, bumped before or after
-- the removal in the same transaction, and adds one). Tombstones older than a day are
-- pruned, raising the namespace's journal_floor: a copy older than the floor is refreshed in
-- full.
CREATE TABLE tree_tombstones (
    workspace_id TEXT NOT NULL,
    namespace    TEXT NOT NULL,
    path         TEXT NOT NULL,
    generation   INTEGER NOT NULL,
    deleted_at   INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, namespace, path)
) WITHOUT ROWID;
CREATE INDEX tree_tombstones_by_generation ON tree_tombstones (workspace_id, namespace, generation);
CREATE INDEX tree_tombstones_by_age ON tree_tombstones (deleted_at);
CREATE INDEX files_by_generation ON files (workspace_id, namespace, generation);
ALTER TABLE namespaces ADD COLUMN journal_floor INTEGER NOT NULL DEFAULT 0;

CREATE TRIGGER files_tombstone AFTER DELETE ON files BEGIN
    INSERT OR REPLACE INTO tree_tombstones (workspace_id, namespace, path, generation, deleted_at)
    VALUES (old.workspace_id, old.namespace, old.path,
            coalesce((SELECT generation FROM namespaces
                      WHERE workspace_id = old.workspace_id AND name = old.namespace), 0) + 1,
            CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER));
END;
