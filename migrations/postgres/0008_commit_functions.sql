-- The hot writes as server-side functions, so each is one statement: one round trip, and the
-- namespace and log-head rows are held only while the function runs and the commit flushes.

-- Appends events (parallel arrays, in order) to one workspace's log and queues their webhook
-- deliveries; see event_heads for why positions come from the head row.
CREATE FUNCTION warren_append_events(
    p_ws text, p_ids text[], p_types text[], p_namespaces text[], p_keys text[], p_data text[]
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    n bigint := cardinality(p_ids);
    head_pos bigint;
    head_at bigint;
BEGIN
    IF n = 0 THEN
        RETURN;
    END IF;
    INSERT INTO event_heads AS h (workspace_id, pos, at)
    VALUES (p_ws, n, warren_now() + n - 1)
    ON CONFLICT (workspace_id) DO UPDATE
      SET pos = h.pos + n, at = GREATEST(h.at + n, warren_now() + n - 1)
    RETURNING pos, at INTO head_pos, head_at;
    WITH appended AS (
        INSERT INTO events (id, type, workspace_id, namespace, key_id, pos, created_at, data)
        SELECT e.id, e.type, p_ws, e.namespace, e.key_id,
               head_pos - n + e.i, head_at - n + e.i, e.data::jsonb
        FROM unnest(p_ids, p_types, p_namespaces, p_keys, p_data)
          WITH ORDINALITY AS e (id, type, namespace, key_id, data, i)
        RETURNING seq, type, namespace
    )
    INSERT INTO deliveries (webhook_id, event_seq, state, next_attempt_at, updated_at)
    SELECT w.id, a.seq, 'pending', warren_now(), warren_now()
    FROM appended a JOIN webhooks w ON w.workspace_id = p_ws
    WHERE w.enabled AND w.deleted_at IS NULL
      AND (w.namespace IS NULL OR w.namespace = a.namespace)
      AND ('*' = ANY (w.events) OR a.type = ANY (w.events));
END $$;

-- Records a written file: bumps (creating) the namespace, checks the tree under its row lock,
-- makes missing parent directories, upserts the file and appends its event. Raises WA001
-- (namespace deleted) or WA002 (a conflict with the tree, the message saying which path).
CREATE FUNCTION warren_commit_write(
    p_ws text, p_ns text, p_path text, p_parent text, p_name text,
    p_size bigint, p_mode bigint, p_mtime bigint, p_sha256 text,
    p_dirs text[], p_dir_parents text[], p_dir_names text[],
    p_event_id text, p_event_type text, p_event_ns text, p_event_key text, p_event_data text
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    g bigint;
    clash record;
BEGIN
    INSERT INTO namespaces AS n (workspace_id, name, generation, created_at)
    VALUES (p_ws, p_ns, 1, warren_now())
    ON CONFLICT (workspace_id, name) DO UPDATE SET
      generation = n.generation + 1, state = 'active', deleted_at = NULL, purged_at = NULL
    WHERE n.state IN ('active', 'purged')
    RETURNING generation INTO g;
    IF g IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'WA001', MESSAGE = p_ns;
    END IF;
    SELECT path, kind INTO clash FROM files
    WHERE workspace_id = p_ws AND namespace = p_ns
      AND ((path = p_path AND kind = 'dir') OR (path = ANY (p_dirs) AND kind <> 'dir'))
    ORDER BY path LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'WA002',
            MESSAGE = CASE WHEN clash.path = p_path THEN 'dir' ELSE 'not-dir' END,
            DETAIL = clash.path;
    END IF;
    INSERT INTO files (workspace_id, namespace, path, parent, name, kind, size, mode, mtime,
                       generation)
    SELECT p_ws, p_ns, d.path, d.parent, d.name, 'dir', 0, 493, p_mtime, g
    FROM unnest(p_dirs, p_dir_parents, p_dir_names) AS d (path, parent, name)
    ON CONFLICT (workspace_id, namespace, path) DO NOTHING;
    INSERT INTO files (workspace_id, namespace, path, parent, name, kind, size, mode, mtime,
                       sha256, generation)
    VALUES (p_ws, p_ns, p_path, p_parent, p_name, 'file', p_size, p_mode, p_mtime, p_sha256, g)
    ON CONFLICT (workspace_id, namespace, path) DO UPDATE SET
      kind = 'file', size = excluded.size, mode = excluded.mode, mtime = excluded.mtime,
      sha256 = excluded.sha256, target = NULL, generation = excluded.generation;
    PERFORM warren_append_events(p_ws, ARRAY[p_event_id], ARRAY[p_event_type], ARRAY[p_event_ns],
                                 ARRAY[p_event_key], ARRAY[p_event_data]);
END $$;
