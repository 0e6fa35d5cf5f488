-- The nodes serving this database. Each polls the event log for the changes every node must
-- act on (revocations, rotations, namespace deletes, restores and purges) and records here, with
-- a heartbeat, the database time before which it has seen and applied all of them. A node
-- making such a change waits until every live node has applied past the change's commit.
CREATE TABLE cluster_nodes (
    id              text PRIMARY KEY,
    started_at      bigint NOT NULL,
    heartbeat_at    bigint NOT NULL,
    applied_through bigint NOT NULL
);

-- The change events alone, so each node's poll reads only them.
CREATE INDEX events_cluster_changes ON events (workspace_id, pos)
    WHERE type IN ('key.revoked', 'key.rotated', 'namespace.deleted', 'namespace.restored',
                   'namespace.purged');
