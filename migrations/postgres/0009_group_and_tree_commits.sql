-- Group commit for file writes, and a delete and an exec's sync-back as one statement each.
-- The namespace row is the lock every tree commit takes first; one function bumps it for all.

-- Bumps (creating) the namespace row, locking it until the transaction ends, and returns the
-- new generation; a purged namespace starts afresh. NULL when it is deleted or purging (the
-- row is locked all the same).
CREATE FUNCTION warren_try_bump_generation(p_ws text, p_ns text) RETURNS bigint
LANGUAGE sql AS $$
    INSERT INTO namespaces AS n (workspace_id, name, generation, created_at)
    VALUES (p_ws, p_ns, 1, warren_now())
    ON CONFLICT (workspace_id, name) DO UPDATE SET
      generation = n.generation + 1, state = 'active', deleted_at = NULL, purged_at = NULL
    WHERE n.state IN ('active', 'purged')
    RETURNING generation
$$;

-- The same, raising WA001 when the namespace is deleted.
CREATE FUNCTION warren_bump_generation(p_ws text, p_ns text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    g bigint := warren_try_bump_generation(p_ws, p_ns);
BEGIN
    IF g IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'WA001', MESSAGE = p_ns;
    END IF;
    RETURN g;
END $$;

-- Deletes the entry at p_path and, when p_inclusive is false, only what is below it; returns
-- the removed rows. Everything below a directory sorts in [p/, p0), '0' being the byte after
-- '/' (the path column compares bytewise).
CREATE FUNCTION warren_delete_subtree(p_ws text, p_ns text, p_path text, p_inclusive boolean)
RETURNS TABLE (removed_path text, removed_kind text) LANGUAGE sql AS $$
    DELETE FROM files
    WHERE workspace_id = p_ws AND namespace = p_ns
      AND ((path >= p_path || '/' AND path < p_path || '0') OR (p_inclusive AND path = p_path))
    RETURNING path, kind
$$;

-- Records a group of written files in one transaction (group commit, see PgStore::commit_write).
-- Write i is element i of the p_ arrays; its missing ancestor directories are the p_dirs
-- elements whose p_dir_of is i. Each write is checked as it comes, after the writes before it;
-- one that fails is skipped rather than raised, so the rest still commit and no write needs a
-- subtransaction. Returns each write's outcome: code NULL when recorded, 'WA001' when its
-- namespace is deleted, 'WA002' when it clashes with the tree (message 'dir' or 'not-dir',
-- detail the path that clashes). The caller orders the writes by workspace and namespace, and
-- the log heads are locked only after every namespace row: groups lock rows in one order and
-- never deadlock one another.
CREATE FUNCTION warren_commit_writes(
    p_ws text[], p_ns text[], p_paths text[], p_parents text[], p_names text[],
    p_sizes bigint[], p_modes bigint[], p_mtimes bigint[], p_sha256 text[],
    p_dir_of int[], p_dirs text[], p_dir_parents text[], p_dir_names text[],
    p_event_ids text[], p_event_types text[], p_event_nss text[], p_event_keys text[],
    p_event_data text[],
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

-- Superseded by warren_commit_writes (a single write is a group of one).
DROP FUNCTION warren_commit_write(text, text, text, text, text, bigint, bigint, bigint, text,
                                  text[], text[], text[], text, text, text, text, text);

-- Removes p_path and everything below it and appends the event. Returns the removed files'
-- paths (directories left out), or NULL when nothing was there: then nothing changes, the
-- generation included. Raises WA001 when the namespace is deleted.
CREATE FUNCTION warren_commit_delete(
    p_ws text, p_ns text, p_path text,
    p_event_id text, p_event_type text, p_event_ns text, p_event_key text, p_event_data text
) RETURNS text[] LANGUAGE plpgsql AS $$
DECLARE
    removed text[];
    n bigint;
BEGIN
    -- The namespace row first, as every commit takes it, so the delete sees each commit
    -- before it (a statement's snapshot is taken when it starts, after this lock).
    PERFORM 1 FROM namespaces WHERE workspace_id = p_ws AND name = p_ns FOR UPDATE;
    SELECT coalesce(array_agg(removed_path) FILTER (WHERE removed_kind <> 'dir'), '{}'),
           count(*)
    INTO removed, n
    FROM warren_delete_subtree(p_ws, p_ns, p_path, true);
    IF n = 0 THEN
        RETURN NULL;
    END IF;
    PERFORM warren_bump_generation(p_ws, p_ns);
    PERFORM warren_append_events(p_ws, ARRAY[p_event_id], ARRAY[p_event_type], ARRAY[p_event_ns],
                                 ARRAY[p_event_key], ARRAY[p_event_data]);
    RETURN removed;
END $$;

-- Applies an exec's sync-back: the ops in order (parallel arrays, one element per op; see
-- TreeOp), one generation step if there are any, then the events. Returns the generation
-- before and after.
CREATE FUNCTION warren_commit_tree_ops(
    p_ws text, p_ns text,
    p_ops text[], p_paths text[], p_parents text[], p_names text[], p_sizes bigint[],
    p_modes bigint[], p_mtimes bigint[], p_sha256 text[], p_targets text[],
    p_event_ids text[], p_event_types text[], p_event_nss text[], p_event_keys text[],
    p_event_data text[],
    OUT gen_before bigint, OUT gen_after bigint
) LANGUAGE plpgsql AS $$
DECLARE
    i int;
BEGIN
    IF cardinality(p_ops) = 0 THEN
        -- Nothing changed: the generation as it is (0 for a namespace never written).
        SELECT generation INTO gen_before FROM namespaces
        WHERE workspace_id = p_ws AND name = p_ns;
        gen_before := coalesce(gen_before, 0);
        gen_after := gen_before;
    ELSE
        gen_after := warren_bump_generation(p_ws, p_ns);
        gen_before := gen_after - 1;
    END IF;
    -- Each op's effect depends on those before it, so they go one by one (here, not over
    -- the network).
    FOR i IN 1 .. coalesce(cardinality(p_ops), 0) LOOP
        CASE p_ops[i]
        WHEN 'clear' THEN
            DELETE FROM files WHERE workspace_id = p_ws AND namespace = p_ns;
        WHEN 'delete' THEN
            PERFORM warren_delete_subtree(p_ws, p_ns, p_paths[i], true);
        WHEN 'delete_below' THEN
            PERFORM warren_delete_subtree(p_ws, p_ns, p_paths[i], false);
        WHEN 'dir' THEN
            DELETE FROM files WHERE workspace_id = p_ws AND namespace = p_ns
              AND path = p_paths[i] AND kind <> 'dir';
            INSERT INTO files (workspace_id, namespace, path, parent, name, kind, size, mode,
                               mtime, generation)
            VALUES (p_ws, p_ns, p_paths[i], p_parents[i], p_names[i], 'dir', 0, 493,
                    p_mtimes[i], gen_after)
            ON CONFLICT (workspace_id, namespace, path) DO NOTHING;
        WHEN 'file' THEN
            PERFORM warren_delete_subtree(p_ws, p_ns, p_paths[i], false);
            INSERT INTO files (workspace_id, namespace, path, parent, name, kind, size, mode,
                               mtime, sha256, generation)
            VALUES (p_ws, p_ns, p_paths[i], p_parents[i], p_names[i], 'file', p_sizes[i],
                    p_modes[i], p_mtimes[i], p_sha256[i], gen_after)
            ON CONFLICT (workspace_id, namespace, path) DO UPDATE SET
              kind = 'file', size = excluded.size, mode = excluded.mode, mtime = excluded.mtime,
              sha256 = excluded.sha256, target = NULL, generation = excluded.generation;
        WHEN 'symlink' THEN
            PERFORM warren_delete_subtree(p_ws, p_ns, p_paths[i], true);
            INSERT INTO files (workspace_id, namespace, path, parent, name, kind, size, mode,
                               mtime, target, generation)
            VALUES (p_ws, p_ns, p_paths[i], p_parents[i], p_names[i], 'symlink', p_sizes[i],
                    511, p_mtimes[i], p_targets[i], gen_after);
        END CASE;
    END LOOP;
    PERFORM warren_append_events(p_ws, p_event_ids, p_event_types, p_event_nss, p_event_keys,
                                 p_event_data);
END $$;
