//! The accept loop: HTTP/1 and HTTP/2 on one listener, with the limits a server facing
//! untrusted clients needs and `axum::serve` does not set.
//!
//! - A request's head must arrive within `header_read_timeout`; hyper restarts that clock
//!   whenever a connection waits for its next request, so it is also the keep-alive idle limit.
//!   (Without a timer hyper enforces neither, and a few hundred half-open connections held
//!   every descriptor.)
//! - At most `max_connections` are open. When a new one arrives at the cap, the connection
//!   that has been idle longest is closed to make room (a half-open one counts as idle); only
//!   when every connection is busy is the newcomer turned away. Shedding idle ones rather than
//!   refusing new ones means idle sockets cannot lock out clients with work to do.
//! - On shutdown, idle connections close at once and busy ones after their response.
//! - When descriptors run out anyway (accept fails), the longest-idle connection is dropped.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Connection limits; see the module docs.
#[derive(Debug, Clone, Copy)]
pub struct HttpSettings {
    pub header_read_timeout: Duration,
    pub max_connections: usize,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(20),
            max_connections: 4096,
        }
    }
}

/// Descriptors kept free of connections: the database, object files, exec pipes and sandboxes.
const RESERVED_FDS: u64 = 256;

/// The connection cap for a process allowed `nofile` descriptors: the configured one, or less
/// where the descriptors would run out first.
pub fn connection_cap(configured: usize, nofile: u64) -> usize {
    let room = nofile.saturating_sub(RESERVED_FDS).max(16);
    configured
        .min(usize::try_from(room).unwrap_or(usize::MAX))
        .max(1)
}

/// Raises the soft descriptor limit to the hard one (Rust leaves it where the parent set it;
/// systemd's default is 1024). Returns the soft limit now in force.
pub fn raise_nofile_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    let before = limit.current;
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            tracing::warn!(error = %e, "could not raise the open-file limit");
            return before.unwrap_or(u64::MAX);
        }
    }
    limit.current.unwrap_or(u64::MAX)
}

/// One open connection as the cap sees it.
struct Open {
    /// Requests whose response has not been fully sent.
    busy: Arc<AtomicUsize>,
    /// Closes the connection to make room for another.
    shed: CancellationToken,
}

/// The open connections, oldest first (ids only increase).
#[derive(Default)]
struct Registry {
    next: u64,
    open: BTreeMap<u64, Open>,
}

impl Registry {
    /// Makes room for one more connection if there is none: closes the oldest idle one.
    /// Returns false when every connection is busy.
    fn make_room(&mut self, cap: usize) -> bool {
        if self.open.len() < cap {
            return true;
        }
        let idle = self
            .open
            .iter()
            .find(|(_, o)| o.busy.load(Ordering::Acquire) == 0)
            .map(|(id, _)| *id);
        match idle {
            Some(id) => {
                // Removed now, so the slot is free before the socket finishes closing.
                if let Some(o) = self.open.remove(&id) {
                    o.shed.cancel();
                }
                true
            }
            None => false,
        }
    }
}

/// Counts a request as in flight until its response body is done or dropped.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn enter(busy: &Arc<AtomicUsize>) -> Self {
        busy.fetch_add(1, Ordering::AcqRel);
        Self(Arc::clone(busy))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request counted as in flight while it streams.
struct Tracked {
    inner: Body,
    _in_flight: InFlight,
}

impl http_body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Serves `app` on `listener` until `shutdown` fires, then waits for open connections to
/// finish their responses.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    settings: HttpSettings,
    shutdown: CancellationToken,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(settings.header_read_timeout)
        .keep_alive_timeout(settings.header_read_timeout);
    let builder = Arc::new(builder);
    let registry = Arc::new(Mutex::new(Registry::default()));
    let tracker = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.cancelled() => break,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                // Out of descriptors (EMFILE/ENFILE) or a connection reset before accept:
                // wait a moment rather than spin.
                tracing::warn!(error = %e, "accept failed");
                // At a cap of 0, "making room" drops the longest-idle connection.
                let _ = registry.lock().unwrap().make_room(0);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Responses go out as headers then body; without NODELAY, Nagle holds the body back
        // until the client's delayed ACK, adding ~40 ms to every small download.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
        let (id, busy, shed) = {
            let mut reg = registry.lock().unwrap();
            if !reg.make_room(settings.max_connections) {
                tracing::warn!(
                    max = settings.max_connections,
                    "every connection is busy; turning one away"
                );
                continue;
            }
            reg.next += 1;
            let id = reg.next;
            let busy = Arc::new(AtomicUsize::new(0));
            let shed = CancellationToken::new();
            reg.open.insert(
                id,
                Open {
                    busy: Arc::clone(&busy),
                    shed: shed.clone(),
                },
            );
            (id, busy, shed)
        };
        let stop = shutdown.clone();
        let (app, builder, registry) = (app.clone(), Arc::clone(&builder), Arc::clone(&registry));
        tracker.spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let app = app.clone();
                let in_flight = InFlight::enter(&busy);
                async move {
                    let resp = tower::ServiceExt::oneshot(app, req.map(Body::new)).await?;
                    Ok::<_, Infallible>(resp.map(|inner| {
                        Body::new(Tracked {
                            inner,
                            _in_flight: in_flight,
                        })
                    }))
                }
            });
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service);
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                // Shed to make room: nothing is in flight, and one that has sent half a
                // request head would hold a graceful close open, so it is dropped outright.
                _ = shed.cancelled() => Ok(()),
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            registry.lock().unwrap().open.remove(&id);
        });
    }
    drop(listener);
    tracker.close();
    tracker.wait().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_descriptors_for_everything_else() {
        assert_eq!(connection_cap(4096, 1024), 768);
        assert_eq!(connection_cap(4096, 1 << 20), 4096);
        assert_eq!(connection_cap(100, 512), 100);
        assert_eq!(connection_cap(4096, 100), 16);
    }
}
