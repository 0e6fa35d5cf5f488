//! The event log as clients read it: the feed behind `GET /v1/workspaces/{ws}/events`, with the
//! scope rules of spec §2.3 (admins see every namespace; a key locked to a namespace sees only
//! it; an unlocked workspace key must name the one it wants).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;

use warren_storage::Namespace;

use super::running::Running;
use super::{Caller, Error, Result};
use crate::db::{EventQuery, EventRecord, LogPos, MetaStore, Scope};
use crate::event::EventKind;
use crate::ids::Micros;

pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 1000;
/// Event types only admins see: the proof of a purge describes the previous tenant of a name,
/// and a new tenant of the same name must see nothing of it.
const ADMIN_ONLY_TYPES: &[&str] = &[EventKind::NamespacePurged.as_str()];

/// What a caller asked for, already parsed.
pub struct Feed {
    pub namespace: Option<Namespace>,
    pub types: Vec<String>,
    pub since: Option<Micros>,
    pub cursor: Option<Cursor>,
    pub limit: u32,
}

/// A position in the log; pages continue strictly below it. Opaque to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor(LogPos);

impl Cursor {
    pub fn parse(s: &str) -> Option<Self> {
        LogPos::from_token(s).map(Cursor)
    }

    pub fn encode(self) -> String {
        self.0.token()
    }
}

pub struct Page {
    pub events: Vec<EventRecord>,
    pub next_cursor: Option<Cursor>,
}

pub struct Events {
    meta: Arc<dyn MetaStore>,
    running: Arc<Running>,
}

/// How long a live stream waits for a wake-up before it polls anyway (events committed by
/// another process wake nobody here).
const LIVE_POLL: Duration = Duration::from_secs(1);
/// Events a live stream reads per query.
const LIVE_BATCH: u32 = 100;

impl Events {
    pub(crate) fn new(meta: Arc<dyn MetaStore>, running: Arc<Running>) -> Self {
        Self { meta, running }
    }

    /// The events of workspace `ws` (of one namespace, if given) committed from now on,
    /// oldest first, for an admin key. The stream ends when the caller's key is revoked or
    /// rotated. It waits on the store's wake-up rather than polling on a timer.
    pub async fn live(
        &self,
        caller: &Caller,
        ws: &str,
        namespace: Option<&str>,
    ) -> Result<BoxStream<'static, EventRecord>> {
        let ws = caller.require_admin(ws, "webhooks")?;
        // Parsed only once the caller may stream at all: others learn nothing from a 400.
        let namespace = namespace.map(Namespace::parse).transpose()?;
        let held = self.running.hold(self.meta.as_ref(), caller, None).await?;
        // Subscribed before the start position is read, so nothing committed in between is
        // missed.
        let mut wake = self.meta.appended();
        wake.mark_unchanged();
        let start = self.meta.last_event_seq(&ws).await?;
        let meta = Arc::clone(&self.meta);
        let events = futures::stream::unfold(
            (start, VecDeque::new(), wake),
            move |(mut seq, mut pending, mut wake): (LogPos, VecDeque<EventRecord>, _)| {
                let (meta, ws, ns) = (Arc::clone(&meta), ws.clone(), namespace.clone());
                async move {
                    loop {
                        if let Some(e) = pending.pop_front() {
                            return Some((e, (seq, pending, wake)));
                        }
                        wake.mark_unchanged();
                        match meta.events_after(&ws, ns.as_ref(), seq, LIVE_BATCH).await {
                            Ok(batch) if !batch.is_empty() => {
                                seq = batch.last().map_or(seq, |e| e.seq);
                                pending.extend(batch);
                            }
                            Ok(_) => {
                                let _ = tokio::time::timeout(LIVE_POLL, wake.changed()).await;
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "event stream poll failed");
                                tokio::time::sleep(LIVE_POLL).await;
                            }
                        }
                    }
                }
            },
        );
        let cancel = held.cancel.clone();
        let open = crate::metrics::OpenStream::new();
        Ok(events
            .take_until(cancel.cancelled_owned())
            // The registration, and the count of open streams, live as long as the stream.
            .map(move |e| {
                let _ = (&held, &open);
                e
            })
            .boxed())
    }

    pub async fn list(&self, caller: &Caller, ws: &str, feed: Feed) -> Result<Page> {
        let workspace = caller.require_workspace(ws)?;
        let namespace = match (caller.key.scope, &caller.key.namespace, feed.namespace) {
            (Scope::Admin, _, ns) => ns,
            (Scope::Workspace, Some(lock), None) => Some(lock.clone()),
            (Scope::Workspace, Some(lock), Some(ns)) if ns == *lock => Some(ns),
            (Scope::Workspace, Some(lock), Some(_)) => {
                return Err(Error::Forbidden(format!(
                    "This key is scoped to namespace '{lock}'"
                )));
            }
            (Scope::Workspace, None, Some(ns)) => Some(ns),
            (Scope::Workspace, None, None) => {
                return Err(Error::Forbidden(
                    "Workspace keys must name a namespace (?namespace=) to read events".into(),
                ));
            }
        };
        if feed.types.len() > super::webhooks::MAX_EVENT_TYPES {
            return Err(Error::BadRequest(format!(
                "types may list at most {} event types",
                super::webhooks::MAX_EVENT_TYPES
            )));
        }
        let hidden_types = match caller.key.scope {
            Scope::Admin => &[],
            Scope::Workspace => ADMIN_ONLY_TYPES,
        };
        if !(1..=MAX_LIMIT).contains(&feed.limit) {
            return Err(Error::BadRequest(format!(
                "limit must be between 1 and {MAX_LIMIT}"
            )));
        }
        // One more than asked, to know whether another page exists.
        let mut events = self
            .meta
            .query_events(&EventQuery {
                workspace,
                namespace,
                types: feed.types,
                hidden_types,
                since: feed.since,
                before_seq: feed.cursor.map(|c| c.0),
                limit: feed.limit + 1,
            })
            .await?;
        let next_cursor = if events.len() > feed.limit as usize {
            events.truncate(feed.limit as usize);
            events.last().map(|e| Cursor(e.seq))
        } else {
            None
        };
        Ok(Page {
            events,
            next_cursor,
        })
    }
}
