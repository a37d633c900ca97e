//! How much memory the shared tier's Redis uses (`INFO memory`; on a cluster, summed over the
//! masters that answer), read when the tier opens and then every 10 s (see `SharedTier::watch`), for
//! `/stats`, the dashboard, `mcp-edge status` and `mcp_shared_tier_memory_bytes`. The figure
//! is the whole server's: other users of the same Redis count in it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::Value;

use super::link::Link;
use crate::metrics::METRICS;
/// Not read yet (or not since the server was last reached).
const UNKNOWN: u64 = u64::MAX;

pub(super) struct RedisMemory {
    used: AtomicU64,
    /// `maxmemory`; 0: no limit set.
    limit: AtomicU64,
}

impl Default for RedisMemory {
    fn default() -> Self {
        RedisMemory { used: AtomicU64::new(UNKNOWN), limit: AtomicU64::new(0) }
    }
}

impl RedisMemory {
    /// Bytes the server uses, once read.
    pub(super) fn used(&self) -> Option<u64> {
        Some(self.used.load(Ordering::Relaxed)).filter(|&used| used != UNKNOWN)
    }

    /// The server's `maxmemory`, when it has one.
    pub(super) fn limit(&self) -> Option<u64> {
        Some(self.limit.load(Ordering::Relaxed)).filter(|&limit| limit != 0)
    }

    pub(super) async fn read(&self, link: &mut Link) {
        let mut command = redis::cmd("INFO");
        command.arg("memory");
        // One server answers with its text; a cluster client asks every master and answers
        // with a map from master to text (or to its error).
        let asked = command.query_async::<Value>(link);
        let figures = match tokio::time::timeout(Duration::from_secs(1), asked).await {
            Ok(Ok(answer)) => summed(&answer),
            _ => None,
        };
        let (used, limit) = figures.map_or((UNKNOWN, 0), |(used, limit)| (used, limit.unwrap_or(0)));
        self.used.store(used, Ordering::Relaxed);
        self.limit.store(limit, Ordering::Relaxed);
        METRICS.shared_tier_memory.set(if used == UNKNOWN { 0 } else { used as i64 });
    }
}

/// Bytes used and `maxmemory` over every `INFO memory` text in `answer` (a limit only when
/// every server has one).
fn summed(answer: &Value) -> Option<(u64, Option<u64>)> {
    let texts: Vec<String> = match answer {
        Value::Map(per_master) => {
            per_master.iter().filter_map(|(_, text)| redis::from_redis_value_ref(text).ok()).collect()
        }
        text => vec![redis::from_redis_value_ref(text).ok()?],
    };
    let figures: Vec<_> = texts.iter().filter_map(|info| mcp_edge_policies::shared_tier::redis_memory(info)).collect();
    let used = figures.iter().map(|(used, _)| used).sum();
    let limit = figures.iter().map(|(_, limit)| *limit).sum::<Option<u64>>();
    (!figures.is_empty()).then_some((used, limit))
}
