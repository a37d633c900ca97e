//! Predictive prefetching: what to fetch before a client asks, and when not to.
//!
//! - [`sequence`]: learned transitions between consecutive reads (which resource follows), and
//!   whose walks may steer whose fetches; [`own`]: a context's own recent transitions;
//! - [`pending`]: predictions waiting for their delay, bounded in count and bytes;
//! - [`budget`]: whether a prefetch may go upstream now (in flight, share of upstream traffic,
//!   the upstream's health, latency and errors);
//! - [`tracker`]: which stored answers came from prefetches, to count them used or wasted;
//! - this file: the kinds of prefetch, their outcomes, and the decisions that need no state
//!   (refresh-ahead, the next page of a list).
//!
//! The proxy side (`proxy/src/prefetch`) issues what these decide, as ordinary requests.

pub mod budget;
pub mod own;
pub mod pending;
pub mod sequence;
pub mod tracker;

#[cfg(test)]
mod tests;

use crate::cache::Caller;

/// Why a prefetch was made (the `kind` label of `mcp_prefetch_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A learned next read.
    Sequence,
    /// The next page of a list answer that had a `nextCursor`.
    Page,
    /// The list calls a new handshake-era session makes at start.
    SessionStart,
    /// A hot entry near the end of its TTL, fetched again with the hitting request's
    /// credentials.
    Refresh,
    /// A configured `warm` URI.
    Warm,
}

impl Kind {
    pub const ALL: [Kind; 5] = [Kind::Sequence, Kind::Page, Kind::SessionStart, Kind::Refresh, Kind::Warm];

    pub fn label(self) -> &'static str {
        match self {
            Kind::Sequence => "sequence",
            Kind::Page => "page",
            Kind::SessionStart => "session_start",
            Kind::Refresh => "refresh",
            Kind::Warm => "warm",
        }
    }

    /// The `x-mcp-edge-prefetch` header value of an internal request of this kind.
    pub fn parse(label: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|kind| kind.label() == label)
    }

    /// Whether a prefetch of this kind must reach the upstream even if the cache holds a fresh
    /// answer (a refresh replaces one that is about to expire).
    pub fn bypasses_cache(self) -> bool {
        self == Kind::Refresh
    }
}

/// What became of a prefetch (the `outcome` label of `mcp_prefetch_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Sent upstream.
    Issued,
    /// Its stored answer was read by a client before it expired or was evicted.
    Used,
    /// Its stored answer expired (or was evicted, or never stored) unread.
    Wasted,
    /// The upstream failed it, or answered with an error.
    Failed,
    /// Not sent: over budget, the upstream unhealthy or slow, or already cached.
    Dropped,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Issued => "issued",
            Outcome::Used => "used",
            Outcome::Wasted => "wasted",
            Outcome::Failed => "failed",
            Outcome::Dropped => "dropped",
        }
    }
}

/// How long a `warm` URI that failed `failures` times in a row (at least once) is left alone:
/// 2 s after the first failure, doubling, at most 5 minutes. A URI the upstream refuses is then
/// asked about a dozen times an hour instead of every second.
pub fn warm_backoff_ms(failures: u32) -> u64 {
    const FIRST_MS: u64 = 2_000;
    const LONGEST_MS: u64 = 5 * 60 * 1_000;
    FIRST_MS.saturating_mul(1u64 << failures.saturating_sub(1).min(20)).min(LONGEST_MS)
}

/// The client context sequences are learned per: the authorization context, else the
/// handshake-era session; `None` (an anonymous stateless client) learns nothing.
pub fn context_of(caller: &Caller) -> Option<sequence::Context> {
    let (tag, value): (u8, &str) = match (&caller.identity, &caller.session) {
        (Some(identity), _) => (1, identity),
        (None, Some(session)) => (2, session),
        (None, None) => return None,
    };
    let id = fnv1a(std::iter::once(tag).chain(value.bytes()));
    Some(sequence::Context { id, credentialed: tag == 1 })
}

fn fnv1a(bytes: impl Iterator<Item = u8>) -> u64 {
    bytes.fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3))
}

/// Whether a hit on an entry fetched at `fetched_at_ms` and fresh until `expires_at_ms` should
/// refresh it: it is in the last `share` of its lifetime (and still fresh).
pub fn refresh_due(fetched_at_ms: u64, expires_at_ms: u64, now_ms: u64, share: f64) -> bool {
    if share <= 0.0 || now_ms >= expires_at_ms {
        return false;
    }
    let lifetime = expires_at_ms.saturating_sub(fetched_at_ms) as f64;
    let remaining = (expires_at_ms - now_ms) as f64;
    remaining <= lifetime * share
}

/// The confidences that decide when a predicted read is fetched.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// At least this: fetched at once.
    pub immediate: f64,
    /// At least this (and below `immediate`): fetched after the route's delay, if the client
    /// has not asked for it meanwhile.
    pub later: f64,
}

/// When a predicted read should be fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    Now,
    Later,
}

impl Thresholds {
    pub fn when(&self, confidence: f64) -> Option<When> {
        if confidence >= self.immediate {
            Some(When::Now)
        } else if confidence >= self.later {
            Some(When::Later)
        } else {
            None
        }
    }
}
