//! TreeStore on PostgreSQL. Every tree commit first locks the namespace's row (and bumps its
//! generation if it changes anything): commits to one namespace run one at a time on every
//! node, and each checks the tree under that lock. The hot commits are one statement each, a
//! function in `migrations/postgres/0009_group_and_tree_commits.sql`; file writes are
//! group-committed (`db::group`).

use super::*;
use crate::db::TreeChanges;

#[async_trait]
impl TreeStore for PgStore {
    async fn get_entry(
        &self,
        ws: &WorkspaceId,
        ns: &Namespace,
        path: &NsPath,
    ) -> Result<Option<Entry>> {
        let sql = format!(
            "SELECT {ENTRY_COLUMNS} FROM files
             WHERE workspace_id = $1 AND namespace = $2 AND path = $3"
        );
        let row = sqlx::query(&sql)
            .bind(ws.as_str())
            .bind(ns.as_str())
            .bind(path.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(entry_from_row).transpose()
    }

    async fn list_children(
        &self,
        ws: &WorkspaceId,
        ns: &Namespace,
        dir: &NsPath,
        limit: usize,
    ) -> Result<Vec<Entry>> {
        let sql = format!(
            "SELECT {ENTRY_COLUMNS} FROM files
             WHERE workspace_id = $1 AND namespace = $2 AND parent = $3
             ORDER BY kind <> 'dir', name LIMIT $4"
        );
        let rows = sqlx::query(&sql)
            .bind(ws.as_str())
            .bind(ns.as_str())
            .bind(dir.as_str())
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(entry_from_row).collect()
    }

    async fn check_writable(&self, ws: &WorkspaceId, ns: &Namespace, path: &NsPath) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        writable(path, &existing_kinds(&mut conn, ws, ns, path).await?)
    }

    async fn commit_write(
        &self,
        lock: &WriteLock,
        file: &FileWrite,
        event: &NewEvent,
    ) -> Result<()> {
        debug_assert_eq!(
            lock.path(),
            &file.path,
            "a write commits under its own path's lock"
        );
        // Group commit (db::group): queue the write, then wait for a commit turn. Whoever
        // gets one commits every write queued by then.
        let (queued, mut result) = self.queue.push(
            lock.workspace(),
            lock.namespace(),
            file,
            event,
            lock.fence(),
        );
        let turn = Arc::clone(&self.turns)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        if let Ok(r) = result.try_recv() {
            return r;
        }
        let group = self.queue.take();
        drop(queued);
        // On a task of its own: a cancelled caller must not leave the others' writes half
        // done, their writers told they failed.
        let (pool, appended) = (self.pool.clone(), self.appended.clone());
        tokio::spawn(async move {
            commit_writes(&pool, &appended, group).await;
            drop(turn);
        });
        outcome(result).await
    }

    async fn commit_delete(
        &self,
        lock: &DeleteLock,
        event: &NewEvent,
    ) -> Result<Option<Vec<NsPath>>> {
        let (ws, ns, path) = (lock.workspace(), lock.namespace(), lock.path());
        let removed: Option<Vec<String>> = sqlx::query_scalar(
            "SELECT warren_fenced_commit_delete($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(lock.fence().map(|f| f.session))
        .bind(lock.fence().map(|f| f.lock))
        .bind(ws.as_str())
        .bind(ns.as_str())
        .bind(path.as_str())
        .bind(event.id.as_str())
        .bind(event.kind)
        .bind(event.namespace.as_ref().map(|n| n.as_str()))
        .bind(event.key_id.as_ref().map(|k| k.as_str()))
        .bind(event.data.as_str())
        .fetch_one(&self.pool)
        .await
        .map_err(|e| commit_error(e, ns))?;
        let Some(removed) = removed else {
            return Ok(None);
        };
        self.appended.send_modify(|n| *n += 1);
        let files = removed.iter().map(|p| NsPath::parse(p));
        Ok(Some(files.collect::<std::result::Result<_, _>>()?))
    }

    async fn replace_tree(
        &self,
        lock: &NamespaceLock,
        files: &[FileWrite],
        event: &NewEvent,
    ) -> Result<()> {
        let (ws, ns) = (lock.workspace(), lock.namespace());
        let mut dirs = std::collections::BTreeSet::new();
        for f in files {
            dirs.extend(f.path.ancestors());
        }
        let mut tx = self.begin().await?;
        let generation = bump_generation(&mut tx, ws, ns).await?;
        // Under the namespace row, as the hot commits check theirs (0012).
        sqlx::query("SELECT warren_check_fence($1, $2)")
            .bind(lock.fence().map(|f| f.session))
            .bind(lock.fence().map(|f| f.lock))
            .execute(&mut *tx)
            .await
            .map_err(|e| commit_error(e, ns))?;
        sqlx::query("DELETE FROM files WHERE workspace_id = $1 AND namespace = $2")
            .bind(ws.as_str())
            .bind(ns.as_str())
            .execute(&mut *tx)
            .await?;
        let now = db_now(&mut tx).await?;
        let dirs: Vec<NsPath> = dirs.into_iter().collect();
        for chunk in dirs.chunks(ROWS_PER_STATEMENT) {
            insert_dirs(&mut tx, ws, ns, chunk, now, generation).await?;
        }
        let files: Vec<&FileWrite> = files.iter().collect();
        for chunk in files.chunks(ROWS_PER_STATEMENT) {
            upsert_files(&mut tx, ws, ns, chunk, generation).await?;
        }
        append_events(&mut tx, std::slice::from_ref(event)).await?;
        self.commit_events(tx).await
    }

    async fn commit_tree_ops(
        &self,
        lock: &NamespaceLock,
        ops: &[TreeOp],
        events: &[NewEvent],
    ) -> Result<(u64, u64)> {
        let (ws, ns) = (lock.workspace(), lock.namespace());
        debug_assert!(events.iter().all(|e| &e.workspace == ws));
        let ops = OpColumns::new(ops);
        // One statement however many ops: they are applied in order inside the database.
        let (before, after): (i64, i64) = sqlx::query_as(
            "SELECT * FROM warren_fenced_commit_tree_ops($1, $2, $3, $4, $5, $6, $7, $8, $9,
                                              $10, $11, $12, $13, $14, $15, $16, $17, $18)",
        )
        .bind(lock.fence().map(|f| f.session))
        .bind(lock.fence().map(|f| f.lock))
        .bind(ws.as_str())
        .bind(ns.as_str())
        .bind(ops.op)
        .bind(ops.path)
        .bind(ops.parent)
        .bind(ops.name)
        .bind(ops.size)
        .bind(ops.mode)
        .bind(ops.mtime)
        .bind(ops.sha256)
        .bind(ops.target)
        .bind(events.iter().map(|e| e.id.as_str()).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.kind).collect::<Vec<_>>())
        .bind(
            events
                .iter()
                .map(|e| e.namespace.as_ref().map(|n| n.as_str()))
                .collect::<Vec<_>>(),
        )
        .bind(
            events
                .iter()
                .map(|e| e.key_id.as_ref().map(|k| k.as_str()))
                .collect::<Vec<_>>(),
        )
        .bind(events.iter().map(|e| e.data.as_str()).collect::<Vec<_>>())
        .fetch_one(&self.pool)
        .await
        .map_err(|e| commit_error(e, ns))?;
        if !events.is_empty() {
            self.appended.send_modify(|n| *n += 1);
        }
        Ok((before as u64, after as u64))
    }

    async fn tree(&self, ws: &WorkspaceId, ns: &Namespace) -> Result<Vec<Entry>> {
        let sql = format!(
            "SELECT {ENTRY_COLUMNS} FROM files WHERE workspace_id = $1 AND namespace = $2
             ORDER BY path"
        );
        let rows = sqlx::query(&sql)
            .bind(ws.as_str())
            .bind(ns.as_str())
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(entry_from_row).collect()
    }

    async fn file_paths(&self, ws: &WorkspaceId, ns: &Namespace) -> Result<Vec<NsPath>> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT path FROM files WHERE workspace_id = $1 AND namespace = $2 AND kind = 'file'",
        )
        .bind(ws.as_str())
        .bind(ns.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|p| Ok(NsPath::parse(p)?)).collect()
    }

    async fn generation(&self, ws: &WorkspaceId, ns: &Namespace) -> Result<u64> {
        let g: Option<i64> = sqlx::query_scalar(
            "SELECT generation FROM namespaces WHERE workspace_id = $1 AND name = $2",
        )
        .bind(ws.as_str())
        .bind(ns.as_str())
        .fetch_optional(&self.pool)
        .await?;
        Ok(g.unwrap_or(0) as u64)
    }

    async fn tree_changes(
        &self,
        ws: &WorkspaceId,
        ns: &Namespace,
        since: u64,
    ) -> Result<Option<TreeChanges>> {
        // The floor is read last: a prune that ran meanwhile shows there, not as a silently
        // missing removal.
        let removed: Vec<String> = sqlx::query_scalar(
            "SELECT t.path FROM tree_tombstones t
             WHERE t.workspace_id = $1 AND t.namespace = $2 AND t.generation > $3
               AND NOT EXISTS (SELECT 1 FROM files f WHERE f.workspace_id = $1
                                 AND f.namespace = $2 AND f.path = t.path)
             ORDER BY t.path",
        )
        .bind(ws.as_str())
        .bind(ns.as_str())
        .bind(since as i64)
        .fetch_all(&self.pool)
        .await?;
        let sql = format!(
            "SELECT {ENTRY_COLUMNS} FROM files
             WHERE workspace_id = $1 AND namespace = $2 AND generation > $3 ORDER BY path"
        );
        let rows = sqlx::query(&sql)
            .bind(ws.as_str())
            .bind(ns.as_str())
            .bind(since as i64)
            .fetch_all(&self.pool)
            .await?;
        let floor: Option<i64> = sqlx::query_scalar(
            "SELECT journal_floor FROM namespaces WHERE workspace_id = $1 AND name = $2",
        )
        .bind(ws.as_str())
        .bind(ns.as_str())
        .fetch_optional(&self.pool)
        .await?;
        let written = rows.iter().map(entry_from_row).collect::<Result<_>>()?;
        TreeChanges::read(since, written, &removed, floor)
    }

    async fn prune_journal(&self, before: Micros) -> Result<u64> {
        let mut tx = self.begin().await?;
        let pruned: Option<i64> = sqlx::query_scalar(
            "WITH gone AS (
                 DELETE FROM tree_tombstones WHERE deleted_at < $1
                 RETURNING workspace_id, namespace, generation
             ), tops AS (
                 SELECT workspace_id, namespace, max(generation) AS top, count(*) AS n
                 FROM gone GROUP BY workspace_id, namespace
             ), raised AS (
                 UPDATE namespaces n SET journal_floor = GREATEST(n.journal_floor, t.top)
                 FROM tops t WHERE n.workspace_id = t.workspace_id AND n.name = t.namespace
             )
             SELECT sum(n)::bigint FROM tops",
        )
        .bind(before.0)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(pruned.unwrap_or(0) as u64)
    }
}

/// Commits a group of queued writes, [`WRITES_PER_CALL`] per transaction (one statement
/// each), and tells each writer how its write went.
async fn commit_writes(
    pool: &PgPool,
    appended: &tokio::sync::watch::Sender<u64>,
    mut group: Vec<QueuedWrite>,
) {
    // One lock order for every group: namespace rows by workspace and namespace.
    group.sort_by(|a, b| (&a.ws, &a.ns, &a.file.path).cmp(&(&b.ws, &b.ns, &b.file.path)));
    let mut rest = group.into_iter().peekable();
    while rest.peek().is_some() {
        let chunk: Vec<QueuedWrite> = rest.by_ref().take(WRITES_PER_CALL).collect();
        let outcomes = match call_commit_writes(pool, &chunk).await {
            Ok(outcomes) => outcomes,
            Err(e) if chunk.len() == 1 => vec![Err(e)],
            // The database refused the call itself (it is neither unreachable nor busy): one
            // write in it is bad, and trying each alone finds which.
            Err(Error::Backend(_)) => {
                for w in chunk {
                    let r = call_commit_writes(pool, std::slice::from_ref(&w)).await;
                    let r = r.and_then(|mut o| o.pop().unwrap_or(Ok(())));
                    if r.is_ok() {
                        appended.send_modify(|n| *n += 1);
                    }
                    w.finish(r);
                }
                continue;
            }
            // Unreachable or busy: every write in the call gets the answer at once, rather
            // than each waiting its turn to fail alike.
            Err(e) => chunk.iter().map(|_| Err(copy_error(&e))).collect(),
        };
        if outcomes.iter().any(Result::is_ok) {
            appended.send_modify(|n| *n += 1);
        }
        for (w, r) in chunk.into_iter().zip(outcomes) {
            w.finish(r);
        }
    }
}

/// The same failure, for each writer of the call it ended.
fn copy_error(e: &Error) -> Error {
    match e {
        Error::Busy(m) => Error::Busy(m.clone()),
        // Unreachable, or what a call cannot otherwise fail with: the writer may retry.
        other => Error::Unavailable(other.to_string()),
    }
}

/// A text column of `warren_commit_writes`' result, one element per write.
type Column = Vec<Option<String>>;

/// One call of `warren_commit_writes` for `writes`: each write's outcome, in order.
async fn call_commit_writes(pool: &PgPool, writes: &[QueuedWrite]) -> Result<Vec<Result<()>>> {
    let (mut dir_of, mut dirs) = (Vec::new(), Vec::new());
    for (i, w) in writes.iter().enumerate() {
        for d in w.file.path.ancestors() {
            dir_of.push(i as i32 + 1);
            dirs.push(d);
        }
    }
    let files = || writes.iter().map(|w| &w.file);
    let events = || writes.iter().map(|w| &w.event);
    let (codes, clashes, at): (Column, Column, Column) = sqlx::query_as(
        "SELECT * FROM warren_commit_writes($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11,
                                            $12, $13, $14, $15, $16, $17, $18, $19, $20)",
    )
    .bind(writes.iter().map(|w| w.ws.as_str()).collect::<Vec<_>>())
    .bind(writes.iter().map(|w| w.ns.as_str()).collect::<Vec<_>>())
    .bind(files().map(|f| f.path.as_str()).collect::<Vec<_>>())
    .bind(files().map(|f| parent_of(&f.path)).collect::<Vec<_>>())
    .bind(files().map(|f| f.path.name()).collect::<Vec<_>>())
    .bind(files().map(|f| f.size as i64).collect::<Vec<_>>())
    .bind(files().map(|f| i64::from(f.mode)).collect::<Vec<_>>())
    .bind(files().map(|f| f.mtime.0).collect::<Vec<_>>())
    .bind(files().map(|f| f.sha256.as_str()).collect::<Vec<_>>())
    .bind(dir_of)
    .bind(dirs.iter().map(NsPath::as_str).collect::<Vec<_>>())
    .bind(dirs.iter().map(parent_of).collect::<Vec<_>>())
    .bind(dirs.iter().map(NsPath::name).collect::<Vec<_>>())
    .bind(events().map(|e| e.id.as_str()).collect::<Vec<_>>())
    .bind(events().map(|e| e.kind).collect::<Vec<_>>())
    .bind(
        events()
            .map(|e| e.namespace.as_ref().map(|n| n.as_str()))
            .collect::<Vec<_>>(),
    )
    .bind(
        events()
            .map(|e| e.key_id.as_ref().map(|k| k.as_str()))
            .collect::<Vec<_>>(),
    )
    .bind(events().map(|e| e.data.as_str()).collect::<Vec<_>>())
    .bind(
        writes
            .iter()
            .map(|w| w.fence.map(|f| f.session))
            .collect::<Vec<_>>(),
    )
    .bind(
        writes
            .iter()
            .map(|w| w.fence.map(|f| f.lock))
            .collect::<Vec<_>>(),
    )
    .fetch_one(pool)
    .await
    .map_err(|e| match writes {
        // A fence that can only raise (see 0012) fails the whole call: a write alone gets
        // its own answer, and a group is tried write by write to find whose it was.
        [one] => commit_error(e, &one.ns),
        _ => e.into(),
    })?;
    if codes.len() != writes.len() {
        return Err(Error::Corrupt(format!(
            "{} outcomes for {} writes",
            codes.len(),
            writes.len()
        )));
    }
    Ok(writes
        .iter()
        .zip(codes.iter().zip(clashes.iter().zip(&at)))
        .map(|(w, (code, (clash, at)))| {
            write_outcome(&w.ns, code.as_deref(), clash.as_deref(), at.as_deref())
        })
        .collect())
}

/// Rows per array-bound statement, so a huge tree goes in bounded pieces.
const ROWS_PER_STATEMENT: usize = 5000;

/// Tree ops as the parallel arrays `warren_commit_tree_ops` takes, one element per op.
#[derive(Default)]
struct OpColumns<'a> {
    op: Vec<&'static str>,
    path: Vec<&'a str>,
    parent: Vec<String>,
    name: Vec<&'a str>,
    size: Vec<i64>,
    mode: Vec<i64>,
    mtime: Vec<i64>,
    sha256: Vec<Option<&'a str>>,
    target: Vec<Option<&'a str>>,
}

/// One op's row; a column the op does not use keeps its default.
#[derive(Default)]
struct OpRow<'a> {
    path: Option<&'a NsPath>,
    size: i64,
    mode: i64,
    mtime: i64,
    sha256: Option<&'a str>,
    target: Option<&'a str>,
}

impl<'a> OpColumns<'a> {
    fn new(ops: &'a [TreeOp]) -> Self {
        let mut c = OpColumns::default();
        for op in ops {
            let (kind, row) = match op {
                TreeOp::Clear => ("clear", OpRow::default()),
                TreeOp::Delete(p) => ("delete", OpRow::at(p)),
                TreeOp::DeleteBelow(p) => ("delete_below", OpRow::at(p)),
                TreeOp::Dir(p, mtime) => (
                    "dir",
                    OpRow {
                        mtime: mtime.0,
                        ..OpRow::at(p)
                    },
                ),
                TreeOp::File(f) => (
                    "file",
                    OpRow {
                        size: f.size as i64,
                        mode: i64::from(f.mode),
                        mtime: f.mtime.0,
                        sha256: Some(&f.sha256),
                        ..OpRow::at(&f.path)
                    },
                ),
                TreeOp::Symlink {
                    path,
                    target,
                    mtime,
                } => (
                    "symlink",
                    OpRow {
                        size: target.len() as i64,
                        mtime: mtime.0,
                        target: Some(target),
                        ..OpRow::at(path)
                    },
                ),
            };
            c.op.push(kind);
            c.path.push(row.path.map_or("", NsPath::as_str));
            c.parent.push(row.path.map(parent_of).unwrap_or_default());
            c.name.push(row.path.map_or("", NsPath::name));
            c.size.push(row.size);
            c.mode.push(row.mode);
            c.mtime.push(row.mtime);
            c.sha256.push(row.sha256);
            c.target.push(row.target);
        }
        c
    }
}

impl<'a> OpRow<'a> {
    fn at(path: &'a NsPath) -> Self {
        OpRow {
            path: Some(path),
            ..OpRow::default()
        }
    }
}
