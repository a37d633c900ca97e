//! Stopping on SIGTERM without dropping the requests in flight.
//!
//! Pingora answers SIGTERM by telling its services to stop and, after its grace period (a
//! fixed sleep, 0 here so that an idle proxy stops at once), shutting its runtimes down, which
//! cancels every task at once: a request under way got an empty reply. mcp-edge gives Pingora
//! its own watch of the signals ([`DrainingSignals`]): on SIGTERM it first drains, as nginx
//! does on a graceful stop. While draining, every answer closes its connection (kept-alive
//! clients reconnect, to the next instance once this one has stopped listening), and Pingora
//! hears of the signal once no request is in flight (`mcp_requests_in_flight`), or after
//! [`DRAIN_LIMIT`]. Server-to-client streams (`mcp_streams_open`: a handshake-era GET stream,
//! `subscriptions/listen`) are not waited for: they may last for ever, and their clients
//! reconnect (a GET stream resumes with `Last-Event-ID`); they end when mcp-edge stops.
//! SIGINT stops at once and SIGQUIT hands the listeners over, as Pingora's own watch does.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch, UnixShutdownSignalWatch};
use tokio::signal::unix::{self, SignalKind};

use crate::metrics::METRICS;

/// How long a stop waits for the requests in flight: under systemd's stop timeout (20 s) with
/// Pingora's own 5 s for its runtimes.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(10);
/// How often the drain looks at the requests in flight.
const POLL: Duration = Duration::from_millis(10);

static DRAINING: AtomicBool = AtomicBool::new(false);

/// Whether mcp-edge is draining: answers then close their connections.
pub fn draining() -> bool {
    DRAINING.load(Ordering::Relaxed)
}

/// Answers the request in `session` with `Connection: close` while draining (Pingora decides
/// keep-alive from the request it read, so this is said after reading it).
pub fn close_when_draining(session: &mut pingora::proxy::Session) {
    if draining() {
        session.set_keepalive(None);
    }
}

/// The signal watch mcp-edge runs Pingora with.
pub struct DrainingSignals;

#[async_trait]
impl ShutdownSignalWatch for DrainingSignals {
    async fn recv(&self) -> ShutdownSignal {
        // Pingora's own watch decides which signal came; only SIGTERM is answered differently.
        let signal = UnixShutdownSignalWatch.recv().await;
        if !matches!(signal, ShutdownSignal::GracefulTerminate) {
            return signal;
        }
        DRAINING.store(true, Ordering::Relaxed);
        let listen = |kind| unix::signal(kind).expect("signal handlers can be installed");
        let (mut terminate, mut interrupt) = (listen(SignalKind::terminate()), listen(SignalKind::interrupt()));
        // The edge's own subscriptions end their sessions meanwhile (see `subscriptions`).
        let drained = async { tokio::join!(drain(DRAIN_LIMIT), crate::subscriptions::end_all(Duration::from_secs(2))) };
        let signal = tokio::select! {
            _ = drained => ShutdownSignal::GracefulTerminate,
            // A second signal stops at once.
            _ = interrupt.recv() => ShutdownSignal::FastShutdown,
            _ = terminate.recv() => ShutdownSignal::GracefulTerminate,
        };
        // The drained requests' spans are sent before the process exits (a blocking flush,
        // bounded by the exporter's timeout, on a thread of its own).
        let _ = tokio::task::spawn_blocking(crate::spans::flush).await;
        signal
    }
}

/// Waits until no request is in flight but server-to-client streams, or `limit`.
async fn drain(limit: Duration) {
    // The two gauges are read one after the other: a stream opening or closing between the
    // reads can make one reading low, so quiet means quiet twice in a row.
    let in_flight = || METRICS.requests_in_flight.get() - METRICS.streams_open.get();
    tracing::info!(
        in_flight = in_flight(),
        streams = METRICS.streams_open.get(),
        "SIGTERM: finishing the requests in flight before stopping (open streams are not waited for)"
    );
    let quiet = async {
        let mut quiet_polls = 0;
        while quiet_polls < 2 {
            quiet_polls = if in_flight() > 0 { 0 } else { quiet_polls + 1 };
            tokio::time::sleep(POLL).await;
        }
    };
    if tokio::time::timeout(limit, quiet).await.is_err() {
        tracing::warn!(in_flight = in_flight(), ?limit, "stopping with requests still in flight");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::ActiveRequest;

    #[tokio::test(start_paused = true)]
    async fn a_drain_waits_for_the_requests_in_flight_and_no_longer_than_its_limit() {
        let _alone = crate::metrics::IN_FLIGHT_GAUGES_IN_TEST.lock().await;
        let request = ActiveRequest::start();
        let started = tokio::time::Instant::now();
        let finish = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            drop(request);
        });
        drain(Duration::from_secs(60)).await;
        // Other tests' requests may be in flight too: at least this one was waited for.
        assert!(started.elapsed() >= Duration::from_secs(2));
        finish.await.unwrap();

        let forever = ActiveRequest::start();
        let started = tokio::time::Instant::now();
        drain(Duration::from_secs(3)).await;
        assert_eq!(started.elapsed().as_secs(), 3, "a request that never ends holds the stop only until the limit");
        drop(forever);
    }

    /// A server-to-client stream (a request in flight that is a stream) does not hold the stop.
    #[tokio::test(start_paused = true)]
    async fn a_drain_does_not_wait_for_open_streams() {
        let _alone = crate::metrics::IN_FLIGHT_GAUGES_IN_TEST.lock().await;
        let stream_request = ActiveRequest::start();
        let stream = crate::limits::open_stream(None, 0).unwrap();
        let started = tokio::time::Instant::now();
        drain(Duration::from_secs(60)).await;
        assert!(started.elapsed() < Duration::from_secs(1), "waited {:?} for a stream", started.elapsed());
        drop((stream, stream_request));
    }
}
