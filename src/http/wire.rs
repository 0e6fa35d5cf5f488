//! The JSON bodies of the wire protocol, as types: handlers answer with them, and the OpenAPI
//! document (`/openapi.json`) is derived from the same types, so the two cannot drift.
//! Request bodies and query strings live beside their handlers; these are the answers.

use serde::Serialize;
use utoipa::ToSchema;

use crate::services::audit::AuditRecord;
use crate::services::auth::KeyRecord;
use crate::services::files::{Entry, EntryKind};
use crate::services::namespaces::NamespaceUsage;
use crate::services::snapshots::Snapshot;
use crate::services::webhooks::Webhook;

/// Every error: a status from the one table in `error.rs` and this body.
#[derive(Serialize, ToSchema)]
pub struct Detail {
    /// What went wrong, for a person or an agent to act on.
    pub detail: String,
}

/// `/readyz` when a check fails: 503, what failed, and `Retry-After`.
#[derive(Serialize, ToSchema)]
pub struct NotReady {
    pub detail: String,
    pub checks: ReadyChecks,
}

#[derive(Serialize, ToSchema)]
pub struct Ready {
    /// `ready`.
    pub status: String,
    pub checks: ReadyChecks,
}

#[derive(Serialize, ToSchema)]
pub struct ReadyChecks {
    /// `ok` or `unreachable`.
    pub database: String,
    /// `ok` or `unreachable`.
    pub storage: String,
    /// `ok`, or `fenced` while the node has lost the cluster.
    pub cluster: String,
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: String,
}

#[derive(Serialize, ToSchema)]
pub struct Me {
    pub workspace_id: String,
    pub key_id: String,
    pub key_name: String,
    /// `admin` or `workspace`.
    pub scope: String,
    /// The namespace the key is locked to.
    pub namespace: Option<String>,
    pub capabilities: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Key {
    pub key_id: String,
    pub name: String,
    /// The first characters of the key, to recognise it by.
    pub prefix: String,
    pub scope: String,
    pub namespace: Option<String>,
    pub created_at: String,
    pub last_used_at: Option<String>,
}

impl From<&KeyRecord> for Key {
    fn from(k: &KeyRecord) -> Self {
        Self {
            key_id: k.id.as_str().to_owned(),
            name: k.name.clone(),
            prefix: k.prefix.clone(),
            scope: k.scope.as_str().to_owned(),
            namespace: k.namespace.as_ref().map(|n| n.as_str().to_owned()),
            created_at: k.created_at.to_rfc3339(),
            last_used_at: k.last_used_at.map(|t| t.to_rfc3339()),
        }
    }
}

/// A key just minted or rotated: the only answer that carries its plaintext.
#[derive(Serialize, ToSchema)]
pub struct KeyWithSecret {
    #[serde(flatten)]
    pub key: Key,
    pub api_key: String,
}

#[derive(Serialize, ToSchema)]
pub struct KeyList {
    pub keys: Vec<Key>,
}

#[derive(Serialize, ToSchema)]
pub struct KeyRevoked {
    pub key_id: String,
    pub revoked: bool,
}

#[derive(Serialize, ToSchema)]
pub struct NamespaceInfo {
    pub namespace: String,
    /// `active` or `deleted` (purged after the grace period).
    pub state: String,
    pub file_count: u64,
    pub bytes: u64,
    pub snapshot_count: u64,
    pub snapshot_bytes: u64,
    pub created_at: String,
    pub last_activity_at: Option<String>,
    pub deleted_at: Option<String>,
}

impl From<&NamespaceUsage> for NamespaceInfo {
    fn from(n: &NamespaceUsage) -> Self {
        Self {
            namespace: n.name.clone(),
            state: n.state.clone(),
            file_count: n.files,
            bytes: n.bytes,
            snapshot_count: n.snapshots,
            snapshot_bytes: n.snapshot_bytes,
            created_at: n.created_at.to_rfc3339(),
            last_activity_at: n.last_activity.map(|t| t.to_rfc3339()),
            deleted_at: n.deleted_at.map(|t| t.to_rfc3339()),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct NamespaceList {
    pub namespaces: Vec<NamespaceInfo>,
}

#[derive(Serialize, ToSchema)]
pub struct NamespaceDeleted {
    pub namespace: String,
    pub deleted: bool,
}

#[derive(Serialize, ToSchema)]
pub struct NamespaceRestored {
    pub namespace: String,
    pub restored: bool,
}

#[derive(Serialize, ToSchema)]
pub struct Written {
    /// With the `workspace/` prefix, as every path in an answer.
    pub path: String,
    pub size_bytes: u64,
}

#[derive(Serialize, ToSchema)]
pub struct Deleted {
    /// The path removed.
    pub deleted: String,
}

#[derive(Serialize, ToSchema)]
pub struct DirEntry {
    pub name: String,
    pub path: String,
    pub is_dir: bool,
    /// Absent (null) for directories.
    pub size_bytes: Option<u64>,
    pub modified_at: String,
}

impl From<&Entry> for DirEntry {
    fn from(e: &Entry) -> Self {
        let is_dir = e.kind == EntryKind::Dir;
        Self {
            name: e.path.name().to_owned(),
            path: e.path.wire(),
            is_dir,
            size_bytes: (!is_dir).then_some(e.size),
            modified_at: e.mtime.to_rfc3339(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct Listing {
    pub entries: Vec<DirEntry>,
    /// More entries exist than one answer carries.
    pub truncated: bool,
}

#[derive(Serialize, ToSchema)]
pub struct Content {
    pub path: String,
    pub size_bytes: u64,
    pub modified_at: String,
    /// `utf-8`, or `binary` (then `content` is null).
    pub encoding: String,
    pub content: Option<String>,
    pub truncated: bool,
}

#[derive(Serialize, ToSchema)]
pub struct NotSynced {
    pub path: String,
    pub reason: String,
}

/// What a command did. The extensions appear only when true (or non-empty).
#[derive(Serialize, ToSchema)]
pub struct ExecOutput {
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
    pub duration_ms: u64,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub stdout_truncated: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub stderr_truncated: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub oom_killed: bool,
    /// Changes the command made that were not kept, and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_synced: Vec<NotSynced>,
}

#[derive(Serialize, ToSchema)]
pub struct SnapshotInfo {
    pub snapshot_id: String,
    pub namespace: String,
    pub label: Option<String>,
    pub size_bytes: u64,
    pub file_count: u64,
    pub created_at: String,
    pub expires_at: String,
}

impl From<&Snapshot> for SnapshotInfo {
    fn from(s: &Snapshot) -> Self {
        Self {
            snapshot_id: s.id.as_str().to_owned(),
            namespace: s.namespace.as_str().to_owned(),
            label: s.label.clone(),
            size_bytes: s.size_bytes,
            file_count: s.file_count,
            created_at: s.created_at.to_rfc3339(),
            expires_at: s.expires_at.to_rfc3339(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct SnapshotList {
    pub snapshots: Vec<SnapshotInfo>,
}

#[derive(Serialize, ToSchema)]
pub struct SnapshotRestored {
    pub snapshot_id: String,
    pub files_restored: u64,
}

#[derive(Serialize, ToSchema)]
pub struct SnapshotDeleted {
    pub snapshot_id: String,
    pub deleted: bool,
}

#[derive(Serialize, ToSchema)]
pub struct WebhookInfo {
    pub webhook_id: String,
    pub url: String,
    pub events: Vec<String>,
    pub namespace: Option<String>,
    pub description: Option<String>,
    pub enabled: bool,
    pub created_at: String,
    pub last_delivery_ok: Option<bool>,
    pub last_delivery_at: Option<String>,
    pub last_delivery_status: Option<u16>,
}

impl From<&Webhook> for WebhookInfo {
    fn from(w: &Webhook) -> Self {
        Self {
            webhook_id: w.id.clone(),
            url: w.url.clone(),
            events: w.events.clone(),
            namespace: w.namespace.as_ref().map(|n| n.as_str().to_owned()),
            description: w.description.clone(),
            enabled: w.enabled,
            created_at: w.created_at.to_rfc3339(),
            last_delivery_ok: w.last_delivery_ok,
            last_delivery_at: w.last_delivery_at.map(|t| t.to_rfc3339()),
            last_delivery_status: w.last_delivery_status,
        }
    }
}

/// A subscription just made: the only answer that carries its signing secret.
#[derive(Serialize, ToSchema)]
pub struct WebhookWithSecret {
    #[serde(flatten)]
    pub webhook: WebhookInfo,
    pub signing_secret: String,
}

#[derive(Serialize, ToSchema)]
pub struct WebhookList {
    pub webhooks: Vec<WebhookInfo>,
}

#[derive(Serialize, ToSchema)]
pub struct WebhookDeleted {
    pub webhook_id: String,
    pub deleted: bool,
}

#[derive(Serialize, ToSchema)]
pub struct WebhookTest {
    pub ok: bool,
    /// The receiver's status, if it answered.
    pub status: Option<u16>,
    pub event_id: String,
    pub error: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct EventPage {
    pub events: Vec<crate::envelope::Envelope>,
    pub next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct AuditEntry {
    pub key_id: String,
    pub namespace: Option<String>,
    pub operation: String,
    pub path: Option<String>,
    pub status: u16,
    pub created_at: String,
}

impl From<&AuditRecord> for AuditEntry {
    fn from(r: &AuditRecord) -> Self {
        Self {
            key_id: r.key_id.clone(),
            namespace: r.namespace.clone(),
            operation: r.operation.clone(),
            path: r.path.clone(),
            status: r.status,
            created_at: r.created_at.to_rfc3339(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct AuditPage {
    pub records: Vec<AuditEntry>,
    pub next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct DeviceStarted {
    /// The CLI's secret for polling; never shown.
    pub device_code: String,
    /// What the person confirms in the browser (`ABCD-1234`).
    pub user_code: String,
    pub verification_uri: String,
    pub verification_uri_complete: String,
    /// Seconds between polls.
    pub interval: u64,
    /// Seconds the login waits for its approval.
    pub expires_in: u64,
}

#[derive(Serialize, ToSchema)]
pub struct DevicePolled {
    /// `pending`, `approved`, `denied` or `expired`.
    pub status: String,
    /// With `approved` only, once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// With `approved` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workspace_id: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct DeviceDecided {
    /// `approved` or `denied`.
    pub status: String,
}
