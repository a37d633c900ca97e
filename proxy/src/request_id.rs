//! `X-Request-ID`: every request carries one, for operators to follow it from the client's logs
//! through mcp-edge's access log to the upstream's. A well-formed id the client sent is kept;
//! otherwise (none, or one that could break a log line) mcp-edge makes one. It is sent to the
//! upstream, returned to the client on every answer (hits and refusals too) and logged.
//!
//! Made ids are 32 hex digits (as nginx's `$request_id`): a random half drawn once per process,
//! then a bijective mix of a counter, so ids are unique within a process and across processes
//! but cost no system call per request. They are correlation handles, not secrets.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The header's name.
pub const HEADER: &str = "x-request-id";

/// Longer ids the client sends are replaced (UUIDs are 36 characters, W3C trace ids 32).
pub const MAX_LEN: usize = 64;

/// A request's id, held inline (no allocation per request).
#[derive(Clone, Copy)]
pub struct RequestId {
    len: u8,
    bytes: [u8; MAX_LEN],
}

impl RequestId {
    /// The id of a request that sent `sent` as its `X-Request-ID`: kept when well-formed, else
    /// a new one.
    pub fn of(sent: Option<&[u8]>) -> RequestId {
        sent.and_then(RequestId::parse).unwrap_or_else(RequestId::make)
    }

    /// A well-formed id: 1 to 64 visible ASCII characters, none of which could end a quoted
    /// log field or a JSON string (`"`, `\`).
    pub fn parse(sent: &[u8]) -> Option<RequestId> {
        let well_formed = !sent.is_empty()
            && sent.len() <= MAX_LEN
            && sent.iter().all(|&b| b.is_ascii_graphic() && b != b'"' && b != b'\\');
        well_formed.then(|| {
            let mut bytes = [0; MAX_LEN];
            bytes[..sent.len()].copy_from_slice(sent);
            RequestId { len: sent.len() as u8, bytes }
        })
    }

    /// A new id (see the module's doc).
    pub fn make() -> RequestId {
        /// The process's half, written once, and the counter's offset.
        static PROCESS: LazyLock<([u8; 16], u64)> = LazyLock::new(|| {
            let mut seed = [0u8; 16];
            // Without the system's randomness (never seen), ids are still unique per process.
            let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed);
            let half = |b: &[u8]| u64::from_le_bytes(b.try_into().expect("8 bytes"));
            let mut process = [0; 16];
            mcp_edge_policies::hex::write(&mut process, &half(&seed[..8]).to_be_bytes());
            (process, half(&seed[8..]))
        });
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let (process, offset) = &*PROCESS;
        let sequence = mix(COUNTER.fetch_add(1, Ordering::Relaxed).wrapping_add(*offset));
        let mut bytes = [0; MAX_LEN];
        bytes[..16].copy_from_slice(process);
        mcp_edge_policies::hex::write(&mut bytes[16..32], &sequence.to_be_bytes());
        RequestId { len: 32, bytes }
    }

    pub fn as_str(&self) -> &str {
        let bytes = &self.bytes[..self.len as usize];
        debug_assert!(bytes.is_ascii());
        // SAFETY: only ASCII is ever stored (`parse` keeps visible ASCII, `make` writes hex
        // digits), and ASCII is UTF-8. Read on every answer; validating again cost ~70
        // instructions a hit (callgrind).
        unsafe { std::str::from_utf8_unchecked(bytes) }
    }
}

impl std::fmt::Debug for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// splitmix64's finaliser: a bijection on u64, so distinct counters give distinct ids.
pub fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_well_formed_id_is_kept() {
        for good in ["abc", "5f0c2a7e-6b1d-4b7a-9c55-1e2d3f4a5b6c", "req:1/2+3=", &"x".repeat(64)] {
            assert_eq!(RequestId::of(Some(good.as_bytes())).as_str(), good);
        }
    }

    #[test]
    fn ids_that_could_break_a_log_line_are_replaced() {
        for bad in ["", "a b", "a\"b", "a\\b", "a\nb", "caf\u{e9}", &"x".repeat(65)] {
            let id = RequestId::of(Some(bad.as_bytes()));
            assert_ne!(id.as_str(), bad);
            assert_eq!(id.as_str().len(), 32, "{bad:?}");
        }
    }

    #[test]
    fn made_ids_are_hex_and_distinct() {
        let ids: std::collections::HashSet<String> =
            (0..10_000).map(|_| RequestId::make().as_str().to_string()).collect();
        assert_eq!(ids.len(), 10_000);
        assert!(ids.iter().all(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())));
    }
}
