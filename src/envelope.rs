//! The event envelope (spec §7.1): the one JSON shape an event has everywhere it leaves the
//! server, in the feed, in webhook deliveries and on the live stream. Kept outside `src/http`
//! because the webhook worker serializes it too; it is a wire format, not an HTTP response.

use serde_json::{Value, json};

use crate::db::EventRecord;

/// The API version stamped on every envelope (the one trove-sdk's fixtures carry).
pub const API_VERSION: &str = "2026-04-30";

/// `event_id` repeats `id` for clients that read either.
pub fn envelope(e: &EventRecord) -> Value {
    let data: Value = serde_json::from_str(&e.data).unwrap_or_else(|_| json!({}));
    json!({
        "id": e.id.as_str(),
        "event_id": e.id.as_str(),
        "type": e.kind,
        "api_version": API_VERSION,
        "workspace_id": e.workspace.as_str(),
        "namespace": e.namespace,
        "key_id": e.key_id,
        "created_at": e.created_at.to_rfc3339(),
        "data": data,
    })
}
