//! Server-to-client requests (sampling, elicitation, roots) seen per handshake-era session.
//!
//! A server may ask the client something on *any* stream of the session while a call is in
//! flight: on the call's own SSE answer, or on the session's GET stream (servers built on the TS
//! SDK's `server.request()` do the latter). The answer then depends on what that client said,
//! and must not be cached. The call's own stream is watched by its observer; this table tells
//! a call about the session's other streams: every stream of a session bumps the session's
//! counter when it carries a server request, and a call whose session's counter moved while it
//! was in flight is not stored.
//!
//! Sessions share slots by hash: a collision can only make an answer uncacheable, never the
//! reverse, and the table never grows.

use std::hash::{BuildHasher, RandomState};
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

const SLOTS: usize = 4096;

pub struct SessionSignals {
    hasher: RandomState,
    slots: Box<[AtomicU64]>,
}

impl SessionSignals {
    fn new() -> SessionSignals {
        SessionSignals { hasher: RandomState::new(), slots: (0..SLOTS).map(|_| AtomicU64::new(0)).collect() }
    }

    fn slot(&self, session: &str) -> &AtomicU64 {
        &self.slots[self.hasher.hash_one(session) as usize % SLOTS]
    }

    /// How many server requests the session's streams have carried so far (a call records it
    /// when it starts, and compares when its answer comes).
    pub fn epoch(&self, session: &str) -> u64 {
        self.slot(session).load(Ordering::Acquire)
    }

    /// A stream of `session` carried `count` more server requests.
    pub fn add(&self, session: &str, count: u64) {
        self.slot(session).fetch_add(count, Ordering::AcqRel);
    }
}

/// The process's one table.
pub static SERVER_REQUESTS: LazyLock<SessionSignals> = LazyLock::new(SessionSignals::new);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_on_another_stream_of_the_session_moves_its_epoch_only() {
        let signals = SessionSignals::new();
        let mine = signals.epoch("s1");
        let others: Vec<String> = (0..8).map(|n| format!("other-{n}")).collect();
        let before: Vec<u64> = others.iter().map(|o| signals.epoch(o)).collect();
        signals.add("s1", 1);
        assert_eq!(signals.epoch("s1"), mine + 1);
        let unmoved = others.iter().zip(before).filter(|(o, b)| signals.epoch(o) == *b).count();
        assert!(unmoved >= 7, "only a session sharing s1's slot moves");
    }
}
