-- Fencing: a commit made under cluster-wide locks (advisory locks held by a session of their
-- own, see PgStore::hold_locks) checks, once it holds its namespace row, that the session still
-- holds them. Every later holder's commit takes the same row, so it lands after this one: a
-- node whose lock session died (a restart of the database, a cut connection) cannot commit
-- over a write that another node made meanwhile. A NULL pid means no cluster locks (one
-- process on its own).

-- Whether backend p_pid holds the advisory lock p_key (pg_advisory_lock's bigint form shows
-- in pg_locks as its high half in classid and its low half in objid, objsubid 1).
CREATE FUNCTION warren_holds(p_pid int, p_key bigint) RETURNS boolean
LANGUAGE sql VOLATILE AS $$
    SELECT p_pid IS NULL OR EXISTS (
        SELECT 1 FROM pg_locks
        WHERE locktype = 'advisory' AND granted AND pid = p_pid AND objsubid = 1
          AND classid = ((p_key >> 32) & 4294967295)::oid
          AND objid = (p_key & 4294967295)::oid)
$$;

-- Raises WA003 unless backend p_pid holds the advisory lock p_key.
CREATE FUNCTION warren_check_fence(p_pid int, p_key bigint) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF NOT warren_holds(p_pid, p_key) THEN
        RAISE EXCEPTION USING ERRCODE = 'WA003', MESSAGE = 'the commit''s locks were lost';
    END IF;
END $$;

-- warren_commit_writes, each write with its fence (the lock session's pid and a key it holds).
CREATE FUNCTION warren_commit_writes(
    p_ws text[], p_ns text[], p_paths text[], p_parents text[], p_names text[],
    p_sizes bigint[], p_modes bigint[], p_mtimes bigint[], p_sha256 text[],
    p_dir_of int[], p_dirs text[], p_dir_parents text[], p_dir_names text[],
    p_event_ids text[], p_event_types text[], p_event_nss text[], p_event_keys text[],
    p_event_data text[], p_fence_pids int[], p_fence_keys bigint[],
    OUT codes text[], OUT messages text[], OUT details text[]
) LANGUAGE plpgsql AS $$
DECLARE
    n int := coalesce(cardinality(p_paths), 0);
    g bigint;
    st text;
    clash record;
    ok boolean[] := array_fill(false, ARRAY[n]);
    w text;
    ids text[];
    types text[];
    nss text[];
    keys text[];
    data text[];
BEGIN
    codes := array_fill(NULL::text, ARRAY[n]);
    messages := codes;
    details := codes;
    FOR i IN 1 .. n LOOP
        -- Lock the namespace row before looking at the tree, and bump it only once the write
        -- stands: a refused write changes nothing, its generation included.
        SELECT state INTO st FROM namespaces WHERE workspace_id = p_ws[i] AND name = p_ns[i]
        FOR UPDATE;
        IF FOUND AND st NOT IN ('active', 'purged') THEN
            codes[i] := 'WA001';
            CONTINUE;
        END IF;
        -- Under the row lock: a write whose locks were lost (and may now be another's) is
        -- reported, and changes nothing.
        IF FOUND AND NOT warren_holds(p_fence_pids[i], p_fence_keys[i]) THEN
            codes[i] := 'WA003';
            CONTINUE;
        END IF;
        -- In the way: a directory at the path, or anything but one above it. (An array of
        -- exact paths, so this is a few primary-key probes, never a scan of the namespace.)
        SELECT f.path, f.kind INTO clash FROM files f
        WHERE f.workspace_id = p_ws[i] AND f.namespace = p_ns[i]
          AND f.path = ANY (p_paths[i] || ARRAY(
              SELECT d.path FROM unnest(p_dir_of, p_dirs) AS d (owner, path) WHERE d.owner = i))
          AND (f.kind = 'dir') = (f.path = p_paths[i])
        ORDER BY f.path LIMIT 1;
        IF FOUND THEN
            codes[i] := 'WA002';
            messages[i] := CASE WHEN clash.path = p_paths[i] THEN 'dir' ELSE 'not-dir' END;
            details[i] := clash.path;
            CONTINUE;
        END IF;
        g := warren_try_bump_generation(p_ws[i], p_ns[i]);
        IF g IS NULL THEN
            -- Deleted by a commit that made the row since the look above.
            codes[i] := 'WA001';
            CONTINUE;
        END IF;
        -- The row is new (or was made since the look above): only now is it locked. A write
        -- fenced here has bumped it, so the whole call is refused (the caller then tries each
        -- write alone); this takes a lock lost in the instant between the two looks.
        PERFORM warren_check_fence(p_fence_pids[i], p_fence_keys[i]);
        INSERT INTO files (workspace_id, namespace, path, parent, name, kind, size, mode, mtime,
                           generation)
        SELECT p_ws[i], p_ns[i], d.path, d.parent, d.name, 'dir', 0, 493, p_mtimes[i], g
        FROM unnest(p_dir_of, p_dirs, p_dir_parents, p_dir_names) AS d (owner, path, parent, name)
        WHERE d.owner = i
        ON CONFLICT (workspace_id, namespace, path) DO NOTHING;
        INSERT INTO files (workspace_id, namespace, path, parent, name, kind, size, mode, mtime,
                           sha256, generation)
        VALUES (p_ws[i], p_ns[i], p_paths[i], p_parents[i], p_names[i], 'file', p_sizes[i],
                p_modes[i], p_mtimes[i], p_sha256[i], g)
        ON CONFLICT (workspace_id, namespace, path) DO UPDATE SET
          kind = 'file', size = excluded.size, mode = excluded.mode, mtime = excluded.mtime,
          sha256 = excluded.sha256, target = NULL, generation = excluded.generation;
        ok[i] := true;
    END LOOP;
    FOR w IN SELECT DISTINCT x FROM unnest(p_ws) AS x ORDER BY x LOOP
        SELECT array_agg(e.id ORDER BY e.k), array_agg(e.etype ORDER BY e.k),
               array_agg(e.ens ORDER BY e.k), array_agg(e.ekey ORDER BY e.k),
               array_agg(e.edata ORDER BY e.k)
        INTO ids, types, nss, keys, data
        FROM unnest(p_ws, ok, p_event_ids, p_event_types, p_event_nss, p_event_keys,
                    p_event_data) WITH ORDINALITY AS e (ews, eok, id, etype, ens, ekey, edata, k)
        WHERE e.eok AND e.ews = w;
        IF ids IS NOT NULL THEN
            PERFORM warren_append_events(w, ids, types, nss, keys, data);
        END IF;
    END LOOP;
END $$;

DROP FUNCTION warren_commit_writes(text[], text[], text[], text[], text[], bigint[], bigint[],
                                   bigint[], text[], int[], text[], text[], text[], text[],
                                   text[], text[], text[], text[]);

-- A delete and a sync-back, fenced: checked at the end, when the inner commit holds the
-- namespace row (a delete of nothing and an empty sync-back change nothing either way).
CREATE FUNCTION warren_fenced_commit_delete(
    p_pid int, p_key bigint, p_ws text, p_ns text, p_path text,
    p_event_id text, p_event_type text, p_event_ns text, p_event_key text, p_event_data text
) RETURNS text[] LANGUAGE plpgsql AS $$
DECLARE
    removed text[] := warren_commit_delete(p_ws, p_ns, p_path, p_event_id, p_event_type,
                                           p_event_ns, p_event_key, p_event_data);
BEGIN
    PERFORM warren_check_fence(p_pid, p_key);
    RETURN removed;
END $$;

CREATE FUNCTION warren_fenced_commit_tree_ops(
    p_pid int, p_key bigint, p_ws text, p_ns text,
    p_ops text[], p_paths text[], p_parents text[], p_names text[], p_sizes bigint[],
    p_modes bigint[], p_mtimes bigint[], p_sha256 text[], p_targets text[],
    p_event_ids text[], p_event_types text[], p_event_nss text[], p_event_keys text[],
    p_event_data text[],
    OUT gen_before bigint, OUT gen_after bigint
) LANGUAGE plpgsql AS $$
BEGIN
    SELECT * INTO gen_before, gen_after FROM warren_commit_tree_ops(
        p_ws, p_ns, p_ops, p_paths, p_parents, p_names, p_sizes, p_modes, p_mtimes, p_sha256,
        p_targets, p_event_ids, p_event_types, p_event_nss, p_event_keys, p_event_data);
    PERFORM warren_check_fence(p_pid, p_key);
END $$;
