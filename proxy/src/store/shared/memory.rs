//! How much memory the shared tier's Redis uses, read (`INFO memory`) when the tier opens and
//! then every [`READ_EVERY`], for `/stats`, the dashboard, `mcp-edge status` and
//! `mcp_shared_tier_memory_bytes`. The figure is the whole server's: other users of the same
//! Redis count in it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::ConnectionManager;

use crate::metrics::METRICS;

const READ_EVERY: Duration = Duration::from_secs(10);
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

    /// Reads the figure now and every [`READ_EVERY`] on `runtime`, until the tier is dropped.
    pub(super) fn watch(self: &Arc<Self>, mut connection: ConnectionManager, runtime: &tokio::runtime::Handle) {
        let memory = Arc::downgrade(self);
        runtime.spawn(async move {
            loop {
                let Some(memory) = memory.upgrade() else { return };
                memory.read(&mut connection).await;
                drop(memory);
                tokio::time::sleep(READ_EVERY).await;
            }
        });
    }

    async fn read(&self, connection: &mut ConnectionManager) {
        let mut command = redis::cmd("INFO");
        command.arg("memory");
        let asked = command.query_async::<String>(connection);
        let figures = match tokio::time::timeout(Duration::from_secs(1), asked).await {
            Ok(Ok(info)) => mcp_edge_policies::shared_tier::redis_memory(&info),
            _ => None,
        };
        let (used, limit) = figures.map_or((UNKNOWN, 0), |(used, limit)| (used, limit.unwrap_or(0)));
        self.used.store(used, Ordering::Relaxed);
        self.limit.store(limit, Ordering::Relaxed);
        METRICS.shared_tier_memory.set(if used == UNKNOWN { 0 } else { used as i64 });
    }
}
