-- The tree's change journal: what changed since a generation, so a working copy is refreshed
-- at a cost proportional to the change, not to the namespace. Every row already carries the
-- generation that last wrote it; a removed row leaves a tombstone with a generation at least
-- that of its removal (the trigger reads the namespace's generation, bumped before or after
-- the removal in the same transaction, and adds one). Tombstones older than a day are
-- pruned, raising the namespace's journal_floor: a copy older than the floor is refreshed in
-- full.
CREATE TABLE tree_tombstones (
    workspace_id text NOT NULL,
    namespace    text COLLATE "C" NOT NULL,
    path         text COLLATE "C" NOT NULL,
    generation   bigint NOT NULL,
    deleted_at   bigint NOT NULL,
    PRIMARY KEY (workspace_id, namespace, path)
);
CREATE INDEX tree_tombstones_by_generation ON tree_tombstones (workspace_id, namespace, generation);
CREATE INDEX tree_tombstones_by_age ON tree_tombstones (deleted_at);
CREATE INDEX files_by_generation ON files (workspace_id, namespace, generation);
ALTER TABLE namespaces ADD COLUMN journal_floor bigint NOT NULL DEFAULT 0;

CREATE FUNCTION warren_tombstone() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO tree_tombstones AS t (workspace_id, namespace, path, generation, deleted_at)
    SELECT old.workspace_id, old.namespace, old.path, coalesce(max(n.generation), 0) + 1,
           warren_now()
    FROM namespaces n WHERE n.workspace_id = old.workspace_id AND n.name = old.namespace
    ON CONFLICT (workspace_id, namespace, path) DO UPDATE
      SET generation = excluded.generation, deleted_at = excluded.deleted_at;
    RETURN NULL;
END $$;

CREATE TRIGGER files_tombstone AFTER DELETE ON files
    FOR EACH ROW EXECUTE FUNCTION warren_tombstone();
