//! Learned sequences, the worker's part: a client's read is learned, then what that client is
//! likely to read next (by its own walks, or by walks `min_identities` distinct contexts made:
//! see `policies::prefetch::sequence`) is fetched under its credentials: at once, or after the
//! route's `delay` if the client has not asked by then.
//!
//! A deferred prediction waits in the worker's bounded pending set (`policies::prefetch::pending`)
//! with a copy of its trigger's headers; past the set's bounds it is dropped and counted so.

use std::sync::Arc;

use mcp_edge_policies::prefetch::sequence::{Context, Uri};
use mcp_edge_policies::prefetch::{Kind, Outcome, Thresholds, When};

use super::Replay;
use super::worker::Worker;
use crate::metrics::{self, METRICS};
use crate::store::now_ms;

/// Predicted reads fetched per read, at most.
const PER_READ: usize = 2;

/// A predicted read waiting for its delay.
pub(super) struct Deferred {
    route: String,
    uri: Uri,
    replay: Arc<Replay>,
}

impl Worker {
    /// Learns `context`'s read of `uri`, then fetches what likely follows for it.
    pub(super) fn on_read(&mut self, route: String, context: Context, uri: String, replay: Replay) {
        let Some((snapshot, index)) = self.route(&route) else { return };
        let config = snapshot.routes[index].config.prefetch.clone();
        let now = now_ms();
        let state = self.state(&route);
        state.model.observe(context, &uri, now);
        let thresholds = Thresholds { immediate: config.immediate_confidence, later: config.min_confidence };
        let predictions = state.model.predict(context, &uri, now, config.min_confidence, config.min_identities);
        let replay = Arc::new(replay);
        for prediction in predictions.into_iter().take(PER_READ) {
            match thresholds.when(prediction.confidence) {
                Some(When::Now) => self.send_read(&route, Kind::Sequence, &replay, &prediction.uri),
                Some(When::Later) => {
                    let due = now + config.delay.as_millis() as u64;
                    let deferred = Deferred { route: route.clone(), uri: prediction.uri, replay: replay.clone() };
                    let bytes = deferred.uri.len() + replay.bytes();
                    if self.pending.push(context.id, bytes, due, deferred).is_err() {
                        metrics::prefetch(&route, Kind::Sequence, Outcome::Dropped);
                    }
                }
                None => {}
            }
        }
        self.show_pending();
    }

    /// Sends the deferred predictions now due. Each is fetched only if the client has not
    /// asked meanwhile: then the entry is in the cache and the proxy answers the prefetch from
    /// it (counted as nothing).
    pub(super) fn send_due(&mut self) {
        while let Some(Deferred { route, uri, replay }) = self.pending.pop_due(now_ms()) {
            self.send_read(&route, Kind::Sequence, &replay, &uri);
        }
        self.show_pending();
    }

    fn show_pending(&self) {
        let (count, bytes) = self.pending.held();
        METRICS.prefetch_pending.set(count as i64);
        METRICS.prefetch_pending_bytes.set(bytes as i64);
    }
}
