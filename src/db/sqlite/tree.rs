//! TreeStore on SQLite.

use super::*;
use crate::db::TreeChanges;

#[async_trait]
impl TreeStore for SqliteStore {
    async fn get_entry(
        &self,
        ws: &WorkspaceId,
        ns: &Namespace,
        path: &NsPath,
    ) -> Result<Option<Entry>> {
        let sql = format!(
            "SELECT {ENTRY_COLUMNS} FROM files WHERE workspace_id = ? AND namespace = ? AND path = ?"
        );
        let row = sqlx::query(&sql)
            .bind(ws.as_str())
            .bind(ns.as_str())
            .bind(path.as_str())
            .fetch_optional(&mut *self.reader.get().await?)
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
             WHERE workspace_id = ? AND namespace = ? AND parent = ?
             ORDER BY kind <> 'dir', name LIMIT ?"
        );
        let rows = sqlx::query(&sql)
            .bind(ws.as_str())
            .bind(ns.as_str())
            .bind(dir.as_str())
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&mut *self.reader.get().await?)
            .await?;
        rows.iter().map(entry_from_row).collect()
    }

    async fn check_writable(&self, ws: &WorkspaceId, ns: &Namespace, path: &NsPath) -> Result<()> {
        let mut b = Batch::new();
        push_existing_kinds(&mut b, ws, ns, path);
        let rows = b.run_on(&mut *self.reader.get().await?).await?;
        writable(path, &kinds_in(&rows))
    }

    async fn commit_write(
        &self,
        lock: &WriteLock,
        file: &FileWrite,
        event: &NewEvent,
    ) -> Result<()> {
        let (ws, ns) = (lock.workspace(), lock.namespace());
        debug_assert_eq!(
            lock.path(),
            &file.path,
            "a write commits under its own path's lock"
        );
        // Group commit: queue the write, then take the writer. Whoever gets it commits every
        // write queued by then in one transaction, so concurrent writers share one commit
        // instead of each waiting in line for its own.
        let (queued, mut result) = self.queue.push(ws, ns, file, event, lock.fence());
        let conn = self.writer.get().await?;
        if let Ok(r) = result.try_recv() {
            return r;
        }
        let group = self.queue.take();
        drop(queued);
        // Once taken from the queue, the writes are committed on a task of their own: a
        // cancelled caller must not leave them half-done, their writers told they failed.
        tokio::spawn(commit_writes(conn, group, self.appended.clone()));
        outcome(result).await
    }

    async fn commit_delete(
        &self,
        lock: &DeleteLock,
        event: &NewEvent,
    ) -> Result<Option<Vec<NsPath>>> {
        let (ws, ns, path) = (lock.workspace(), lock.namespace(), lock.path());
        let mut b = Batch::new();
        let (lo, hi) = subtree_range(path.as_str());
        // Two statements for the reason given in `push_delete_subtree`.
        b.push(
            "DELETE FROM files WHERE workspace_id = ? AND namespace = ? AND path = ?
             RETURNING path, kind",
        )
        .bind(ws.as_str())
        .bind(ns.as_str())
        .bind(path.as_str());
        b.push(
            "DELETE FROM files WHERE workspace_id = ? AND namespace = ? AND path >= ? AND path < ?
             RETURNING path, kind",
        )
        .bind(ws.as_str())
        .bind(ns.as_str())
        .bind(lo)
        .bind(hi);
        push_bump_generation(&mut b, ws, ns, now());
        push_event(&mut b, event);

        let mut conn = self.writer.get().await?;
        let rows = conn.batch(b).await?;
        let deleted: Vec<&SqliteRow> = rows
            .iter()
            .filter(|r| r.try_get::<&str, _>("kind").is_ok())
            .collect();
        if deleted.is_empty() {
            // Nothing was there: no change, no event.
            conn.rollback().await;
            return Ok(None);
        }
        let mut files = Vec::new();
        for row in deleted {
            if row.try_get::<&str, _>("kind")? == "dir" {
                continue;
            }
            let p: String = row.try_get("path")?;
            files.push(NsPath::parse(&p)?);
        }
        if let Err(e) = generation_in(&rows, ns) {
            conn.rollback().await;
            return Err(e);
        }
        conn.commit().await?;
        self.committed();
        Ok(Some(files))
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
        let mut conn = self.writer.get().await?;
        let mut b = Batch::new().one_off();
        push_bump_generation(&mut b, ws, ns, now());
        b.push("DELETE FROM files WHERE workspace_id = ? AND namespace = ?")
            .bind(ws.as_str())
            .bind(ns.as_str());
        let rows = conn.batch(b).await?;
        if let Err(e) = generation_in(&rows, ns) {
            conn.rollback().await;
            return Err(e);
        }
        let mut b = Batch::new().one_off();
        for dir in &dirs {
            push_insert_dir(&mut b, ws, ns, dir, now());
            b = flush_if_full(&mut conn, b).await?;
        }
        for f in files {
            push_upsert_file(&mut b, ws, ns, f);
            b = flush_if_full(&mut conn, b).await?;
        }
        push_event(&mut b, event);
        conn.batch(b).await?;
        conn.commit().await?;
        self.committed();
        Ok(())
    }

    async fn commit_tree_ops(
        &self,
        lock: &NamespaceLock,
        ops: &[TreeOp],
        events: &[NewEvent],
    ) -> Result<(u64, u64)> {
        let (ws, ns) = (lock.workspace(), lock.namespace());
        let now = now();
        let mut conn = self.writer.get().await?;
        // An exec that changed nothing sends the same text every time; keep that one prepared.
        let mut b = if ops.is_empty() {
            Batch::new()
        } else {
            Batch::new().one_off()
        };
        if ops.is_empty() {
            b.push("SELECT generation FROM namespaces WHERE workspace_id = ? AND name = ?")
                .bind(ws.as_str())
                .bind(ns.as_str());
        } else {
            push_bump_generation(&mut b, ws, ns, now);
        }
        // The first batch is sent alone only when there is more than fits with it.
        let mut first = None;
        for op in ops {
            match op {
                TreeOp::Clear => {
                    b.push("DELETE FROM files WHERE workspace_id = ? AND namespace = ?")
                        .bind(ws.as_str())
                        .bind(ns.as_str());
                }
                TreeOp::Delete(p) => push_delete_subtree(&mut b, ws, ns, p, true),
                TreeOp::DeleteBelow(p) => push_delete_subtree(&mut b, ws, ns, p, false),
                TreeOp::Dir(p, mtime) => {
                    b.push(
                        "DELETE FROM files WHERE workspace_id = ? AND namespace = ? AND path = ?
                           AND kind <> 'dir'",
                    )
                    .bind(ws.as_str())
                    .bind(ns.as_str())
                    .bind(p.as_str());
                    push_insert_dir(&mut b, ws, ns, p, *mtime);
                }
                TreeOp::File(f) => {
                    push_delete_subtree(&mut b, ws, ns, &f.path, false);
                    push_upsert_file(&mut b, ws, ns, f);
                }
                TreeOp::Symlink {
                    path,
                    target,
                    mtime,
                } => {
                    push_delete_subtree(&mut b, ws, ns, path, true);
                    b.push(&format!(
                        "INSERT INTO files (workspace_id, namespace, path, parent, name, kind, size,
                           mode, mtime, target, generation)
                         VALUES (?, ?, ?, ?, ?, 'symlink', ?, ?, ?, ?, {GENERATION})"
                    ))
                    .bind(ws.as_str())
                    .bind(ns.as_str())
                    .bind(path.as_str())
                    .bind(
                        path.parent()
                            .unwrap_or_else(NsPath::root)
                            .as_str()
                            .to_owned(),
                    )
                    .bind(path.name())
                    .bind(target.len() as i64)
                    .bind(0o777_i64)
                    .bind(mtime.0)
                    .bind(target.as_str())
                    .bind(ws.as_str())
                    .bind(ns.as_str());
                }
            }
            if b.len() > BATCH_BYTES {
                let full = std::mem::replace(&mut b, Batch::new().one_off());
                let rows = conn.batch(full).await?;
                first.get_or_insert(rows);
            }
        }
        // Events go in chunks too: SQLite copies the rest of a batch's text for each statement
        // it prepares, so one batch of every event of a large sync-back is quadratic.
        for ev in events {
            push_event(&mut b, ev);
            if b.len() > BATCH_BYTES {
                let full = std::mem::replace(&mut b, Batch::new().one_off());
                let rows = conn.batch(full).await?;
                first.get_or_insert(rows);
            }
        }
        let rows = conn.batch(b).await?;
        let first = first.unwrap_or(rows);
        let generation = match generation_in(&first, ns) {
            // An exec on a namespace never written has nothing to read the generation from.
            Err(_) if ops.is_empty() => 0,
            Err(e) => {
                conn.rollback().await;
                return Err(e);
            }
            Ok(g) => g,
        };
        conn.commit().await?;
        self.committed();
        let before = if ops.is_empty() {
            generation
        } else {
            generation - 1
        };
        Ok((before as u64, generation as u64))
    }

    async fn tree(&self, ws: &WorkspaceId, ns: &Namespace) -> Result<Vec<Entry>> {
        let rows = sqlx::query(
            "SELECT path, kind, size, mode, mtime, sha256, target FROM files
             WHERE workspace_id = ? AND namespace = ? ORDER BY path",
        )
        .bind(ws.as_str())
        .bind(ns.as_str())
        .fetch_all(&mut *self.reader.get().await?)
        .await?;
        rows.iter().map(entry_from_row).collect()
    }

    async fn file_paths(&self, ws: &WorkspaceId, ns: &Namespace) -> Result<Vec<NsPath>> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT path FROM files WHERE workspace_id = ? AND namespace = ? AND kind = 'file'",
        )
        .bind(ws.as_str())
        .bind(ns.as_str())
        .fetch_all(&mut *self.reader.get().await?)
        .await?;
        rows.iter().map(|p| Ok(NsPath::parse(p)?)).collect()
    }

    async fn generation(&self, ws: &WorkspaceId, ns: &Namespace) -> Result<u64> {
        let g: Option<i64> = sqlx::query_scalar(
            "SELECT generation FROM namespaces WHERE workspace_id = ? AND name = ?",
        )
        .bind(ws.as_str())
        .bind(ns.as_str())
        .fetch_optional(&mut *self.reader.get().await?)
        .await?;
        Ok(g.unwrap_or(0) as u64)
    }

    async fn tree_changes(
        &self,
        ws: &WorkspaceId,
        ns: &Namespace,
        since: u64,
    ) -> Result<Option<TreeChanges>> {
        let mut conn = self.reader.get().await?;
        // The floor is read last: a prune that ran meanwhile shows there, not as a silently
        // missing removal.
        let removed: Vec<String> = sqlx::query_scalar(
            "SELECT t.path FROM tree_tombstones t
             WHERE t.workspace_id = ?1 AND t.namespace = ?2 AND t.generation > ?3
               AND NOT EXISTS (SELECT 1 FROM files f WHERE f.workspace_id = ?1
                                 AND f.namespace = ?2 AND f.path = t.path)
             ORDER BY t.path",
        )
        .bind(ws.as_str())
        .bind(ns.as_str())
        .bind(since as i64)
        .fetch_all(&mut *conn)
        .await?;
        let rows = sqlx::query(
            "SELECT path, kind, size, mode, mtime, sha256, target FROM files
             WHERE workspace_id = ? AND namespace = ? AND generation > ? ORDER BY path",
        )
        .bind(ws.as_str())
        .bind(ns.as_str())
        .bind(since as i64)
        .fetch_all(&mut *conn)
        .await?;
        let floor: Option<i64> = sqlx::query_scalar(
            "SELECT journal_floor FROM namespaces WHERE workspace_id = ? AND name = ?",
        )
        .bind(ws.as_str())
        .bind(ns.as_str())
        .fetch_optional(&mut *conn)
        .await?;
        let written = rows.iter().map(entry_from_row).collect::<Result<_>>()?;
        TreeChanges::read(since, written, &removed, floor)
    }

    async fn prune_journal(&self, before: Micros) -> Result<u64> {
        let mut b = Batch::new();
        b.push(
            "UPDATE namespaces SET journal_floor = max(journal_floor, (
                 SELECT max(t.generation) FROM tree_tombstones t
                 WHERE t.workspace_id = namespaces.workspace_id
                   AND t.namespace = namespaces.name AND t.deleted_at < ?))
             WHERE EXISTS (SELECT 1 FROM tree_tombstones t
                           WHERE t.workspace_id = namespaces.workspace_id
                             AND t.namespace = namespaces.name AND t.deleted_at < ?)",
        )
        .bind(before.0)
        .bind(before.0);
        b.push("DELETE FROM tree_tombstones WHERE deleted_at < ? RETURNING 1")
            .bind(before.0);
        let mut conn = self.writer.get().await?;
        let rows = conn.batch(b).await?;
        conn.commit().await?;
        Ok(rows.len() as u64)
    }
}
