//! Rows both backends store alike: each record's stored shape, decoded by sqlx from either
//! database, and its one conversion into the record (validating names on the way out).

use sqlx::{FromRow, Row};
use warren_storage::{Namespace, NsPath, SnapshotId, WorkspaceId};

use super::{Entry, EntryKind, Error, KeyRecord, NamespaceUsage, Result, Scope, SnapshotRecord};
use crate::ids::{KeyId, Micros};

pub(super) const KEY_COLUMNS: &str =
    "id, workspace_id, name, prefix, scope, namespace, created_at, last_used_at, bootstrap";
pub(super) const ENTRY_COLUMNS: &str = "path, kind, size, mode, mtime, sha256, target";

#[derive(FromRow)]
pub(super) struct KeyRow {
    id: String,
    workspace_id: String,
    name: String,
    prefix: String,
    scope: String,
    namespace: Option<String>,
    created_at: i64,
    last_used_at: Option<i64>,
    bootstrap: bool,
}

pub(super) fn key_from_row<'r, R: Row>(row: &'r R) -> Result<KeyRecord>
where
    KeyRow: FromRow<'r, R>,
{
    let r = KeyRow::from_row(row)?;
    Ok(KeyRecord {
        id: KeyId::from_string(r.id),
        workspace: WorkspaceId::parse(&r.workspace_id)?,
        name: r.name,
        prefix: r.prefix,
        scope: Scope::parse(&r.scope)?,
        namespace: r.namespace.map(|n| Namespace::parse(&n)).transpose()?,
        created_at: Micros(r.created_at),
        last_used_at: r.last_used_at.map(Micros),
        bootstrap: r.bootstrap,
    })
}

#[derive(FromRow)]
pub(super) struct EntryRow {
    path: String,
    kind: String,
    size: i64,
    mode: i64,
    mtime: i64,
    sha256: Option<String>,
    target: Option<String>,
}

pub(super) fn entry_from_row<'r, R: Row>(row: &'r R) -> Result<Entry>
where
    EntryRow: FromRow<'r, R>,
{
    let r = EntryRow::from_row(row)?;
    Ok(Entry {
        path: NsPath::parse(&r.path).map_err(|e| Error::Corrupt(format!("{:?}: {e}", r.path)))?,
        kind: EntryKind::parse(&r.kind)?,
        size: r.size as u64,
        mode: r.mode as u32,
        mtime: Micros(r.mtime),
        sha256: r.sha256,
        target: r.target,
    })
}

#[derive(FromRow)]
pub(super) struct SnapshotRow {
    id: String,
    workspace_id: String,
    namespace: String,
    label: Option<String>,
    size_bytes: i64,
    file_count: i64,
    key_id: Option<String>,
    created_at: i64,
    expires_at: i64,
}

pub(super) fn snapshot_from_row<'r, R: Row>(row: &'r R) -> Result<SnapshotRecord>
where
    SnapshotRow: FromRow<'r, R>,
{
    let r = SnapshotRow::from_row(row)?;
    Ok(SnapshotRecord {
        id: SnapshotId::parse(&r.id)?,
        workspace: WorkspaceId::parse(&r.workspace_id)?,
        namespace: Namespace::parse(&r.namespace)?,
        label: r.label,
        size_bytes: r.size_bytes as u64,
        file_count: r.file_count as u64,
        key_id: r.key_id,
        created_at: Micros(r.created_at),
        expires_at: Micros(r.expires_at),
    })
}

/// A namespace with its usage, as `list_namespaces` selects it on both backends.
#[derive(FromRow)]
pub(super) struct UsageRow {
    name: String,
    state: String,
    created_at: i64,
    deleted_at: Option<i64>,
    files: i64,
    bytes: i64,
    last_activity: Option<i64>,
    snapshots: i64,
    snapshot_bytes: i64,
}

pub(super) fn usage_from_row<'r, R: Row>(row: &'r R) -> Result<NamespaceUsage>
where
    UsageRow: FromRow<'r, R>,
{
    let r = UsageRow::from_row(row)?;
    Ok(NamespaceUsage {
        name: r.name,
        state: r.state,
        files: r.files as u64,
        bytes: r.bytes as u64,
        created_at: Micros(r.created_at),
        deleted_at: r.deleted_at.map(Micros),
        snapshots: r.snapshots as u64,
        snapshot_bytes: r.snapshot_bytes as u64,
        last_activity: r.last_activity.map(Micros),
    })
}

pub(super) const DEVICE_COLUMNS: &str = "state, workspace_id, namespace, key_name, approved_by";

/// A login as stored: its state and, once approved, what to mint.
#[derive(FromRow)]
pub(super) struct DeviceRow {
    state: String,
    workspace_id: Option<String>,
    namespace: Option<String>,
    key_name: Option<String>,
    approved_by: Option<String>,
}

/// What a poll answers for a login read while unexpired (`None`: unknown or expired).
pub(super) fn device_poll(row: Option<DeviceRow>) -> super::DevicePoll {
    use super::{ApprovedLogin, DevicePoll};
    let Some(row) = row else {
        return DevicePoll::Expired;
    };
    match (
        row.state.as_str(),
        row.workspace_id,
        row.key_name,
        row.approved_by,
    ) {
        ("pending", ..) => DevicePoll::Pending,
        ("denied", ..) => DevicePoll::Denied,
        ("approved", Some(workspace), Some(key_name), Some(approved_by)) => {
            DevicePoll::Approved(ApprovedLogin {
                workspace,
                namespace: row.namespace,
                key_name,
                approved_by,
            })
        }
        _ => DevicePoll::Expired,
    }
}
