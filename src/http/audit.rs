//! The audit trail at the HTTP edge: a middleware on every runtime route records the
//! operation (named by the route where it is declared, through [`operation`]), the key, the
//! namespace, the path and the response status.

use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;

use super::AppState;
use super::error::CLIENT_CLOSED;
use crate::ids::Micros;
use crate::services::Caller;
use crate::services::audit::{AuditPos, AuditRecord};

const MAX_RECORDED_PATH: usize = 1024;

/// Filled in while a request is handled: the caller by authentication, the namespace and path
/// by the handler; read by the middleware once the response status is known.
#[derive(Clone, Default)]
pub struct AuditSlot(Arc<Mutex<Slot>>);

#[derive(Default)]
struct Slot {
    caller: Option<Caller>,
    namespace: Option<String>,
    path: Option<String>,
    operation: Option<&'static str>,
}

fn clip(s: &str) -> String {
    s.chars().take(MAX_RECORDED_PATH).collect()
}

impl AuditSlot {
    pub fn caller(&self, caller: &Caller, namespace: Option<&str>) {
        let mut s = self.0.lock().unwrap();
        s.caller = Some(caller.clone());
        s.namespace = namespace.map(clip);
    }

    pub fn namespace(&self, ns: &str) {
        self.0.lock().unwrap().namespace = Some(ns.to_owned());
    }

    /// The path as the client sent it, valid or not.
    pub fn path(&self, path: &str) {
        self.0.lock().unwrap().path = Some(clip(path));
    }
}

/// The layer that names a route's audit operation; put on each method of each runtime route,
/// beside its handler.
pub fn operation(
    name: &'static str,
) -> tower::util::MapRequestLayer<impl Fn(Request) -> Request + Clone + Send + Sync + 'static> {
    tower::util::MapRequestLayer::new(move |req: Request| {
        if let Some(slot) = req.extensions().get::<AuditSlot>() {
            slot.0.lock().unwrap().operation = Some(name);
        }
        req
    })
}

/// One call's audit record. Normally written once the response status is known; if the
/// handler is dropped first (hyper drops it when the client disconnects), written from
/// `Drop` as [`CLIENT_CLOSED`], so the trail still shows the call.
struct Pending {
    state: AppState,
    slot: AuditSlot,
}

impl Pending {
    fn take(&self, status: u16) -> Option<AuditRecord> {
        let taken = std::mem::take(&mut *self.slot.0.lock().unwrap());
        let caller = taken.caller?;
        Some(AuditRecord {
            seq: AuditPos::START,
            workspace: caller.key.workspace.clone(),
            key_id: caller.key.id.to_string(),
            namespace: taken.namespace,
            // Every runtime route names one; "other" would be a route that forgot.
            operation: taken.operation.unwrap_or("other").to_owned(),
            path: taken.path,
            status,
            created_at: Micros::now(),
        })
    }

    async fn finish(self, status: StatusCode) {
        if let Some(record) = self.take(status.as_u16()) {
            self.state.audit.record(record).await;
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        // Empty after `finish`; still filled if the call never got that far.
        if let Some(record) = self.take(CLIENT_CLOSED) {
            let audit = Arc::clone(&self.state.audit);
            tokio::spawn(async move { audit.record(record).await });
        }
    }
}

/// Middleware for runtime routes: records every authenticated call, failures and client
/// disconnects included.
pub async fn record(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let slot = AuditSlot::default();
    req.extensions_mut().insert(slot.clone());
    let pending = Pending { state, slot };
    let resp = next.run(req).await;
    pending.finish(resp.status()).await;
    resp
}
