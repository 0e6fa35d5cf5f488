//! The event log as clients read it: the feed behind `GET /v1/workspaces/{ws}/events`, with the
//! scope rules of spec §2.3 (admins see every namespace; a key locked to a namespace sees only
//! it; an unlocked workspace key must name the one it wants).

use std::sync::Arc;

use warren_storage::Namespace;

use super::{Caller, Error, Result};
use crate::db::{EventQuery, EventRecord, MetaStore, Scope};
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
pub struct Cursor(i64);

impl Cursor {
    pub fn parse(s: &str) -> Option<Self> {
        s.strip_prefix("seq-")?.parse().ok().map(Cursor)
    }

    pub fn encode(self) -> String {
        format!("seq-{}", self.0)
    }
}

pub struct Page {
    pub events: Vec<EventRecord>,
    pub next_cursor: Option<Cursor>,
}

pub struct Events {
    meta: Arc<dyn MetaStore>,
}

impl Events {
    pub fn new(meta: Arc<dyn MetaStore>) -> Self {
        Self { meta }
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
