//! The edge's own subscriptions: for the public entries it caches, mcp-edge subscribes to the
//! upstream's change notifications itself, without any client's credential, so a change
//! invalidates the entry even when no client is listening.
//!
//! - [`Watched`]: what one route caches publicly in one protocol era that a subscription can
//!   keep fresh (resource URIs, kinds of list), bounded and following the entries' lives;
//! - [`Backoff`]: how long to wait before trying again when a subscription fails;
//! - [`messages`]: the requests the edge sends (initialize, `resources/subscribe`,
//!   `subscriptions/listen`, …), what the server's capabilities allow, and what one event on a
//!   subscription stream means.
//!
//! The proxy does the I/O (`proxy/src/subscriptions`); everything it decides is here.

pub mod messages;
#[cfg(test)]
mod tests;
mod watched;

pub use messages::{Heard, Reply, Support};
pub use watched::{Lists, Noted, Wanted, Watched};

/// The protocol era a subscription speaks: the era of the requests whose answers it keeps fresh
/// (a route may need both).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Era {
    /// `initialize`, a session, a GET stream, `resources/subscribe` per URI.
    Handshake,
    /// `subscriptions/listen`: one POST whose SSE answer stays open, its URIs fixed.
    Stateless,
}

impl Era {
    pub const ALL: [Era; 2] = [Era::Handshake, Era::Stateless];

    /// The era of a request (`stateless`: it carried a 2026-07-28 `MCP-Protocol-Version`).
    pub fn of(stateless: bool) -> Era {
        if stateless { Era::Stateless } else { Era::Handshake }
    }

    /// The metrics label and `/stats` name.
    pub fn label(self) -> &'static str {
        match self {
            Era::Handshake => "handshake",
            Era::Stateless => "stateless",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// URIs longer than this are never subscribed to (the same bound as the prefetcher's).
pub const MAX_URI: usize = crate::prefetch::sequence::MAX_URI;

/// URIs one route subscribes to per era unless configured otherwise.
pub const DEFAULT_MAX_SUBSCRIPTIONS: usize = 1000;

/// The first wait after a failure; it doubles with each failure in a row.
pub const FIRST_RETRY_MS: u64 = 1_000;
/// The longest wait between attempts.
pub const LONGEST_RETRY_MS: u64 = 60_000;
/// A subscription up this long is healthy: its next failure waits `FIRST_RETRY_MS` again.
pub const HEALTHY_AFTER_MS: u64 = 30_000;
/// A server whose capabilities offer nothing the edge could use is asked again after this.
pub const UNSUPPORTED_RETRY_MS: u64 = 10 * 60_000;
/// A stateless-era stream is replaced by one with more URIs at most this often.
pub const SWITCH_EVERY_MS: u64 = 1_000;

/// Waits between attempts of one subscription: 1 s after the first failure, doubling to 60 s,
/// back to 1 s once a subscription has stayed up for `HEALTHY_AFTER_MS`.
#[derive(Debug, Default, Clone)]
pub struct Backoff {
    failures: u32,
    up_since_ms: Option<u64>,
}

impl Backoff {
    /// The subscription is established (acknowledged by the server).
    pub fn up(&mut self, now_ms: u64) {
        self.up_since_ms = Some(now_ms);
    }

    /// The subscription failed (or could not be made): how long to wait before the next try.
    pub fn down(&mut self, now_ms: u64) -> u64 {
        if let Some(since) = self.up_since_ms.take()
            && now_ms.saturating_sub(since) >= HEALTHY_AFTER_MS
        {
            self.failures = 0;
        }
        self.failures = self.failures.saturating_add(1);
        FIRST_RETRY_MS.saturating_mul(1u64 << (self.failures - 1).min(16)).min(LONGEST_RETRY_MS)
    }

    /// Failures in a row so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

/// How long to wait before a stateless-era stream opened at `last_open_ms` may be replaced (0:
/// now), so that a burst of new URIs makes one new stream a second, not one per URI.
pub fn switch_wait_ms(now_ms: u64, last_open_ms: u64) -> u64 {
    (last_open_ms + SWITCH_EVERY_MS).saturating_sub(now_ms)
}
