//! The stop of a running server, bounded. actix-server's graceful stop waits for every HTTP
//! worker to finish its connections (at most `FECHATTER_SHUTDOWN_TIMEOUT_SECS`), but it has
//! no bound of its own beyond that: a worker that never reports back (actix-server 2.6 could
//! deadlock so, fixed in 2.9.1; RELIABILITY.md "A graceful stop") would hold the process for
//! ever. So once a stop has begun — SIGTERM, SIGINT or SIGQUIT, or [`StopHandle::stop`] — the
//! server is given the shutdown timeout plus [`STOP_GRACE`]; past that it is dropped, the
//! shutdown work (presence's `last_seen`, leaving the cluster) still runs, and `run` reports
//! the overrun.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use tokio::sync::Notify;

/// How much longer than the shutdown timeout a stop may take before it is given up on.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// Stops the server; also tells [`serve_bounded`] that a stop has begun.
#[derive(Clone)]
pub struct StopHandle {
    server: ServerHandle,
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    begun: Notify,
    overran: AtomicBool,
}

impl StopHandle {
    pub fn new(server: ServerHandle) -> Self {
        StopHandle {
            server,
            shared: Arc::default(),
        }
    }

    /// Whether a stop overran its bound (and the HTTP workers were given up on).
    pub fn overran(&self) -> bool {
        self.shared.overran.load(Ordering::Acquire)
    }

    /// Stops the server (`graceful`: open requests are finished first, within the shutdown
    /// timeout); resolves when actix reports the stop done, or when the bound gave up on it.
    pub fn stop(&self, graceful: bool) -> impl Future<Output = ()> + use<> {
        // A stored permit: the bound starts even if `serve_bounded` waits only later.
        self.shared.begun.notify_one();
        self.server.stop(graceful)
    }

    /// Resolves once a stop was asked for through this handle (or a clone).
    async fn begun(&self) {
        self.shared.begun.notified().await;
    }
}

/// Resolves when the process is asked to stop by a signal (the ones actix-server itself acts
/// on), or never if they cannot be listened to.
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let kinds = [
        SignalKind::terminate(),
        SignalKind::interrupt(),
        SignalKind::quit(),
    ];
    let mut streams: Vec<_> = kinds.into_iter().filter_map(|k| signal(k).ok()).collect();
    if streams.is_empty() {
        return std::future::pending().await;
    }
    let waits = streams.iter_mut().map(|s| Box::pin(s.recv()));
    futures_util::future::select_all(waits).await;
}

/// Awaits `server`; once a stop has begun (a signal, or `handle`), at most `bound` longer.
/// An overrun is logged and returned as a `TimedOut` error; the server future is dropped.
pub async fn serve_bounded<F>(server: F, handle: &StopHandle, bound: Duration) -> io::Result<()>
where
    F: Future<Output = io::Result<()>>,
{
    let begun = async {
        tokio::select! {
            () = handle.begun() => {}
            () = stop_signal() => {}
        }
    };
    serve_bounded_by(server, begun, bound, &handle.shared.overran).await
}

/// The bound itself: `overran` is set before the server future is dropped, so that whoever
/// awaits the stop's completion (resolved by that drop) sees it.
async fn serve_bounded_by<F, B>(
    server: F,
    begun: B,
    bound: Duration,
    overran: &AtomicBool,
) -> io::Result<()>
where
    F: Future<Output = io::Result<()>>,
    B: Future<Output = ()>,
{
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => return result,
        () = begun => {}
    }
    match tokio::time::timeout(bound, server).await {
        Ok(result) => result,
        Err(_) => {
            overran.store(true, Ordering::Release);
            tracing::error!(
                bound_secs = bound.as_secs(),
                "the graceful stop did not finish in time: giving up on the HTTP workers"
            );
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the graceful stop did not finish within {bound:?}"),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that never finishes its stop is given up on once the bound has passed.
    #[tokio::test(start_paused = true)]
    async fn a_stop_that_never_finishes_is_given_up_after_the_bound() {
        let started = tokio::time::Instant::now();
        let bound = Duration::from_secs(15);
        let overran = AtomicBool::new(false);
        let result = serve_bounded_by(
            std::future::pending::<io::Result<()>>(),
            tokio::time::sleep(Duration::from_secs(3)),
            bound,
            &overran,
        )
        .await;
        let err = result.expect_err("an overrun is an error");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(overran.load(Ordering::Acquire));
        assert_eq!(started.elapsed(), Duration::from_secs(3) + bound);
    }

    /// A server that serves is not bounded until a stop begins, and its own result is kept.
    #[tokio::test(start_paused = true)]
    async fn a_server_runs_unbounded_until_a_stop_begins() {
        let server = async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Err(io::Error::other("its own"))
        };
        let overran = AtomicBool::new(false);
        let never = std::future::pending();
        let result = serve_bounded_by(server, never, Duration::from_secs(1), &overran).await;
        assert_eq!(result.expect_err("kept").to_string(), "its own");
        assert!(!overran.load(Ordering::Acquire));
    }

    /// A stop that finishes within the bound returns the server's result.
    #[tokio::test(start_paused = true)]
    async fn a_stop_within_the_bound_returns_the_servers_result() {
        let server = async {
            tokio::time::sleep(Duration::from_secs(4)).await;
            Ok(())
        };
        let begun = tokio::time::sleep(Duration::from_secs(1));
        let overran = AtomicBool::new(false);
        serve_bounded_by(server, begun, Duration::from_secs(5), &overran)
            .await
            .expect("finished in time");
        assert!(!overran.load(Ordering::Acquire));
    }
}
