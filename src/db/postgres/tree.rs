//! TreeStore on PostgreSQL. Every tree commit first bumps the namespace's generation, which
//! locks its row: commits to one namespace run one at a time on every node, and each checks
//! the tree under that lock.

use super::*;

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
        let (ws, ns) = (lock.workspace(), lock.namespace());
        let dirs = file.path.ancestors();
        // One statement: the namespace row is held only while the function runs.
        sqlx::query(
            "SELECT warren_commit_write($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12,
                                        $13, $14, $15, $16, $17)",
        )
        .bind(ws.as_str())
        .bind(ns.as_str())
        .bind(file.path.as_str())
        .bind(parent_of(&file.path))
        .bind(file.path.name())
        .bind(file.size as i64)
        .bind(i64::from(file.mode))
        .bind(file.mtime.0)
        .bind(file.sha256.as_str())
        .bind(dirs.iter().map(NsPath::as_str).collect::<Vec<_>>())
        .bind(dirs.iter().map(parent_of).collect::<Vec<_>>())
        .bind(dirs.iter().map(NsPath::name).collect::<Vec<_>>())
        .bind(event.id.as_str())
        .bind(event.kind)
        .bind(event.namespace.as_ref().map(|n| n.as_str()))
        .bind(event.key_id.as_ref().map(|k| k.as_str()))
        .bind(event.data.as_str())
        .execute(&self.pool)
        .await
        .map_err(|e| commit_error(e, ns))?;
        self.appended.send_modify(|n| *n += 1);
        Ok(())
    }

    async fn commit_delete(
        &self,
        lock: &DeleteLock,
        event: &NewEvent,
    ) -> Result<Option<Vec<NsPath>>> {
        let (ws, ns, path) = (lock.workspace(), lock.namespace(), lock.path());
        let mut tx = self.begin().await?;
        // Locks the namespace first, so the deletion sees every commit before it.
        let generation = bump_generation(&mut tx, ws, ns).await;
        let deleted = delete_subtree(&mut tx, ws, ns, path, true).await?;
        if deleted.is_empty() {
            // Nothing was there: no change, no event (the rollback undoes the bump).
            return Ok(None);
        }
        generation?;
        let mut files = Vec::new();
        for (p, kind) in deleted {
            if kind != "dir" {
                files.push(NsPath::parse(&p)?);
            }
        }
        append_events(&mut tx, std::slice::from_ref(event)).await?;
        self.commit_events(tx).await?;
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
        let mut tx = self.begin().await?;
        let generation = bump_generation(&mut tx, ws, ns).await?;
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
        let mut tx = self.begin().await?;
        let (before, after) = if ops.is_empty() {
            // An exec that changed nothing: the generation as it is (0 for a namespace never
            // written).
            let g: Option<i64> = sqlx::query_scalar(
                "SELECT generation FROM namespaces WHERE workspace_id = $1 AND name = $2",
            )
            .bind(ws.as_str())
            .bind(ns.as_str())
            .fetch_optional(&mut *tx)
            .await?;
            (g.unwrap_or(0), g.unwrap_or(0))
        } else {
            let g = bump_generation(&mut tx, ws, ns).await?;
            (g - 1, g)
        };
        // A statement per op, in order: each op's effect depends on those before it.
        for op in ops {
            match op {
                TreeOp::Clear => {
                    sqlx::query("DELETE FROM files WHERE workspace_id = $1 AND namespace = $2")
                        .bind(ws.as_str())
                        .bind(ns.as_str())
                        .execute(&mut *tx)
                        .await?;
                }
                TreeOp::Delete(p) => {
                    delete_subtree(&mut tx, ws, ns, p, true).await?;
                }
                TreeOp::DeleteBelow(p) => {
                    delete_subtree(&mut tx, ws, ns, p, false).await?;
                }
                TreeOp::Dir(p, mtime) => {
                    sqlx::query(
                        "DELETE FROM files WHERE workspace_id = $1 AND namespace = $2 AND path = $3
                           AND kind <> 'dir'",
                    )
                    .bind(ws.as_str())
                    .bind(ns.as_str())
                    .bind(p.as_str())
                    .execute(&mut *tx)
                    .await?;
                    insert_dirs(&mut tx, ws, ns, std::slice::from_ref(p), *mtime, after).await?;
                }
                TreeOp::File(f) => {
                    delete_subtree(&mut tx, ws, ns, &f.path, false).await?;
                    upsert_files(&mut tx, ws, ns, &[f], after).await?;
                }
                TreeOp::Symlink {
                    path,
                    target,
                    mtime,
                } => {
                    delete_subtree(&mut tx, ws, ns, path, true).await?;
                    sqlx::query(
                        "INSERT INTO files (workspace_id, namespace, path, parent, name, kind,
                           size, mode, mtime, target, generation)
                         VALUES ($1, $2, $3, $4, $5, 'symlink', $6, 511, $7, $8, $9)",
                    )
                    .bind(ws.as_str())
                    .bind(ns.as_str())
                    .bind(path.as_str())
                    .bind(parent_of(path))
                    .bind(path.name())
                    .bind(target.len() as i64)
                    .bind(mtime.0)
                    .bind(target.as_str())
                    .bind(after)
                    .execute(&mut *tx)
                    .await?;
                }
            }
        }
        for chunk in events.chunks(ROWS_PER_STATEMENT) {
            append_events(&mut tx, chunk).await?;
        }
        self.commit_events(tx).await?;
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
}

/// Rows per array-bound statement, so a huge tree goes in bounded pieces.
const ROWS_PER_STATEMENT: usize = 5000;
