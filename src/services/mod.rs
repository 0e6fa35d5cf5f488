//! The service layer: what Warren does, independent of how requests arrive.
//!
//! Services take validated names and an authenticated [`Caller`], enforce scopes, and drive the
//! metadata store and blob storage in the order the invariants require. They return
//! [`Error`], whose variants say what went wrong in terms a client can act on; `src/http` maps
//! them to status codes in one place.

pub mod audit;
pub mod auth;
pub mod device;
pub mod events;
pub mod exec;
pub mod files;
pub mod namespaces;
mod reactions;
pub mod reindex;
pub mod retention;
pub mod running;
pub mod snapshots;
pub mod webhooks;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use warren_storage::{BlobStore, NameError, Namespace, WorkspaceId};

use crate::coord::{Coordinator, Reactor};
use crate::db::{self, MetaStore, NewEvent};
use crate::event::Event;
use crate::ids::EventId;

pub use audit::Audit;
pub use auth::{Caller, Keys};
pub use events::Events;
pub use exec::Exec;
pub use files::Files;
pub use namespaces::Namespaces;
pub use snapshots::Snapshots;
pub use webhooks::Webhooks;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    TooLarge(String),
    /// Well-formed but refused (stdin over its cap).
    #[error("{0}")]
    Unprocessable(String),
    /// The command ran past its time limit.
    #[error("{0}")]
    Timeout(String),
    /// A limit on how often, or how much at once, was reached; retrying later may succeed.
    #[error("{0}")]
    TooManyRequests(String),
    /// This server cannot do it (no sandbox on this host).
    #[error("{0}")]
    Unavailable(String),
    /// Momentarily impossible (the database is busy or unreachable): the same call may succeed
    /// if retried after a short wait.
    #[error("{0}")]
    Busy(String),
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Coordination that cannot be had now is worth a retry, like a busy database.
impl From<crate::coord::Unavailable> for Error {
    fn from(e: crate::coord::Unavailable) -> Self {
        tracing::warn!(why = %e, "coordination could not be had; the client may retry");
        Error::Busy("The service is busy; retry shortly".into())
    }
}

impl From<NameError> for Error {
    fn from(e: NameError) -> Self {
        Error::BadRequest(e.to_string())
    }
}

impl From<db::Error> for Error {
    fn from(e: db::Error) -> Self {
        match e {
            db::Error::Conflict(msg) => Error::Conflict(msg),
            db::Error::NamespaceDeleted(ns) => {
                Error::NotFound(format!("Namespace not found: {ns}"))
            }
            db::Error::Busy(why) | db::Error::Unavailable(why) => {
                tracing::warn!(%why, "the database could not take a call; the client may retry");
                Error::Busy("The service is busy; retry shortly".into())
            }
            other => Error::Internal(other.to_string()),
        }
    }
}

impl From<warren_storage::Error> for Error {
    fn from(e: warren_storage::Error) -> Self {
        Error::Internal(e.to_string())
    }
}

/// Everything a request handler needs, built once at start-up.
pub struct Services {
    pub meta: Arc<dyn MetaStore>,
    pub blobs: BlobStore,
    pub coord: Arc<dyn Coordinator>,
    pub keys: Arc<Keys>,
    pub files: Files,
    pub exec: Arc<Exec>,
    pub snapshots: Arc<Snapshots>,
    pub events: Events,
    pub webhooks: Arc<Webhooks>,
    pub audit: Arc<Audit>,
    pub namespaces: Arc<Namespaces>,
    /// Browser logins of the CLI.
    pub device: device::DeviceFlow,
    /// The execs and streams in flight (exposed for its test hook).
    pub running: Arc<running::Running>,
    pub default_workspace: WorkspaceId,
    /// Cancelled when the server begins shutting down; long-lived responses end on it.
    pub shutdown: CancellationToken,
    /// Acts on the coordination feed; the coordinator holds it weakly.
    _reactions: Arc<reactions::Reactions>,
}

/// What the services are built from, besides the stores.
pub struct ServiceSettings<'a> {
    pub secret: [u8; 32],
    pub default_workspace: WorkspaceId,
    pub webhooks: webhooks::WebhookSettings,
    /// The host's sandbox, or why there is none (exec then answers 503).
    pub sandbox: std::result::Result<warren_exec::Sandbox, warren_exec::Unavailable>,
    pub exec: &'a exec::ExecSettings,
    pub snapshot_retention: std::time::Duration,
    pub device: device::DeviceSettings,
}

impl Services {
    pub fn new(
        meta: Arc<dyn MetaStore>,
        blobs: BlobStore,
        coord: Arc<dyn Coordinator>,
        settings: ServiceSettings<'_>,
    ) -> Self {
        let ServiceSettings {
            secret,
            default_workspace,
            webhooks,
            sandbox,
            exec,
            snapshot_retention,
            device,
        } = settings;
        let running = Arc::new(running::Running::default());
        let keys = Arc::new(Keys::new(
            Arc::clone(&meta),
            secret,
            Arc::clone(&running),
            Arc::clone(&coord),
        ));
        let exec = Arc::new(Exec::new(
            Arc::clone(&meta),
            blobs.clone(),
            Arc::clone(&coord),
            Arc::clone(&running),
            sandbox,
            exec,
        ));
        let namespaces = Arc::new(Namespaces::new(Arc::clone(&meta), Arc::clone(&coord)));
        let reactions = Arc::new(reactions::Reactions {
            keys: Arc::clone(&keys),
            running: Arc::clone(&running),
            namespaces: Arc::clone(&namespaces),
            exec: Arc::clone(&exec),
        });
        let reactor: Arc<dyn Reactor> = reactions.clone();
        coord.set_reactor(Arc::downgrade(&reactor));
        Self {
            device: device::DeviceFlow::new(Arc::clone(&meta), Arc::clone(&keys), secret, device),
            keys,
            files: Files::new(Arc::clone(&meta), blobs.clone(), Arc::clone(&coord)),
            snapshots: Arc::new(Snapshots::new(
                Arc::clone(&meta),
                blobs.clone(),
                Arc::clone(&coord),
                snapshot_retention,
            )),
            exec,
            events: Events::new(Arc::clone(&meta), Arc::clone(&running)),
            webhooks: Arc::new(Webhooks::new(Arc::clone(&meta), webhooks)),
            audit: Arc::new(Audit::new(Arc::clone(&meta))),
            namespaces,
            running,
            meta,
            blobs,
            coord,
            default_workspace,
            shutdown: CancellationToken::new(),
            _reactions: reactions,
        }
    }
}

/// What `/readyz` reports: whether this node can serve now.
#[derive(Debug)]
pub struct Readiness {
    /// Why the database does not answer, if it does not.
    pub database: Option<String>,
    /// Why the object store does not answer, if it does not.
    pub storage: Option<String>,
    /// The node lost the cluster and refuses authenticated calls until it catches up.
    pub fenced: bool,
}

impl Readiness {
    pub fn ready(&self) -> bool {
        self.database.is_none() && self.storage.is_none() && !self.fenced
    }
}

/// How long a readiness probe waits for each store: a probe must answer before the
/// orchestrator's own timeout, and a store slower than this is as good as down.
const READINESS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

impl Services {
    /// Checks both stores (at once) and the coordinator's fence.
    pub async fn readiness(&self) -> Readiness {
        async fn within<E: std::fmt::Display>(
            f: impl std::future::Future<Output = std::result::Result<(), E>>,
        ) -> Option<String> {
            match tokio::time::timeout(READINESS_TIMEOUT, f).await {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some(format!("no answer within {READINESS_TIMEOUT:?}")),
            }
        }
        let (database, storage) = tokio::join!(
            within(async { self.meta.get_setting("default_workspace").await.map(drop) }),
            within(self.blobs.check()),
        );
        Readiness {
            database,
            storage,
            fenced: self.coord.fenced(),
        }
    }
}

/// Builds an event attributed to `caller`, stamped now.
pub(crate) fn event(
    caller: Option<&Caller>,
    workspace: &WorkspaceId,
    namespace: Option<&Namespace>,
    event: Event,
) -> NewEvent {
    NewEvent {
        id: EventId::random(),
        kind: event.kind().as_str(),
        workspace: workspace.clone(),
        namespace: namespace.cloned(),
        key_id: caller.map(|c| c.key.id.clone()),
        data: event.data_json(),
    }
}
