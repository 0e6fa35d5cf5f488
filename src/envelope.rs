//! The event envelope (spec §7.1): the one JSON shape an event has everywhere it leaves the
//! server, in the feed, in webhook deliveries and on the live stream. Kept outside `src/http`
//! because the webhook worker serializes it too; it is a wire format, not an HTTP response.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::db::EventRecord;

/// The API version stamped on every envelope (the one trove-sdk's fixtures carry).
pub const API_VERSION: &str = "2026-04-30";

/// An event on the wire.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Envelope {
    pub id: String,
    /// The same as `id`, for clients that read either.
    pub event_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub api_version: &'static str,
    pub workspace_id: String,
    pub namespace: Option<String>,
    pub key_id: Option<String>,
    pub created_at: String,
    /// The event's own fields, by type.
    pub data: Map<String, Value>,
}

impl std::fmt::Display for Envelope {
    /// The single-line JSON form (what the live stream frames).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let json = serde_json::to_string(self).map_err(|_| std::fmt::Error)?;
        f.write_str(&json)
    }
}

pub fn envelope(e: &EventRecord) -> Envelope {
    Envelope {
        id: e.id.as_str().to_owned(),
        event_id: e.id.as_str().to_owned(),
        kind: e.kind.clone(),
        api_version: API_VERSION,
        workspace_id: e.workspace.as_str().to_owned(),
        namespace: e.namespace.clone(),
        key_id: e.key_id.clone(),
        created_at: e.created_at.to_rfc3339(),
        data: serde_json::from_str(&e.data).unwrap_or_default(),
    }
}
