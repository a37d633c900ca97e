//! The response cache: a foyer `HybridCache` (memory, plus disk when `cache.disk_path` is
//! set) holding encoded [`Entry`]s, invalidation markers, and request coalescing.
//!
//! Invalidation works by time (see `mcp_edge_policies::cache`): a marker records when a target
//! (URI, list kind, route) was invalidated; entries fetched before it are dead. Markers are kept
//! in memory and also written into the cache, so entries stored before a restart are checked
//! against invalidations from before the restart too.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use foyer::{
    BlockEngineConfig, DeviceBuilder, FsDeviceBuilder, HybridCache, HybridCacheBuilder, HybridCachePolicy, Load,
    RecoverMode,
};
use mcp_edge_policies::cache::{Entry, Lookup, Scope, Target, marker_key};
use mcp_edge_policies::config::CacheConfig;
use tokio::sync::watch;

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// What a lookup found.
pub enum Found {
    /// A fresh entry (encoded [`Entry`]).
    Fresh(Bytes),
    /// Expired, but young enough to be served if every upstream fails (`stale_if_error`).
    Stale(Bytes),
    Nothing,
}

pub struct EdgeCache {
    store: HybridCache<Vec<u8>, Bytes>,
    /// False when the cache runs memory-only (no disk path, or the disk tier failed to open).
    has_disk: bool,
    /// Marker key → wall-clock ms of the latest invalidation.
    markers: Mutex<HashMap<Vec<u8>, u64>>,
    /// Entries fetched before this instant may predate markers this process never saw.
    started_ms: u64,
    /// Coalescing key → a channel closed when the leading fetch is done.
    inflight: Mutex<HashMap<Vec<u8>, watch::Receiver<()>>>,
    /// Runs foyer's background work (flushers, disk I/O) whatever runtime asks.
    _runtime: tokio::runtime::Runtime,
}

/// Held by the request that fetches a coalesced key; dropping it releases the waiters.
pub struct Leader {
    key: Vec<u8>,
    _done: watch::Sender<()>,
}

pub enum Coalesce {
    Lead(Leader),
    /// Another request is fetching the same thing: wait on this, then look up again.
    Wait(watch::Receiver<()>),
}

impl EdgeCache {
    /// Opens the cache. A disk tier that cannot be opened (unwritable or corrupt directory)
    /// is logged and replaced by a memory-only cache: the proxy still starts.
    pub fn open(config: &CacheConfig) -> EdgeCache {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("cache-io")
            .enable_all()
            .build()
            .expect("cache runtime");
        let memory = config.memory.max(1 << 20) as usize;
        let (store, has_disk) = runtime.block_on(async {
            if let Some(path) = &config.disk_path {
                match open_hybrid(memory, path, config.disk_size as usize, &runtime).await {
                    Ok(store) => return (store, true),
                    Err(e) => tracing::error!(
                        path = %path.display(),
                        error = %e,
                        "cannot open the disk cache; continuing with a memory-only cache"
                    ),
                }
            }
            let store = memory_builder(memory).storage().build().await.expect("a memory-only cache always opens");
            (store, false)
        });
        EdgeCache {
            store,
            has_disk,
            markers: Mutex::new(HashMap::new()),
            started_ms: now_ms(),
            inflight: Mutex::new(HashMap::new()),
            _runtime: runtime,
        }
    }

    /// Looks a request up in each of its scopes, freshest first.
    pub async fn lookup(&self, route: &str, lookup: &Lookup, stale_if_error: Duration) -> Found {
        let now = now_ms();
        let mut stale = None;
        for scope in &lookup.scopes {
            let key = lookup.key(scope);
            let Some((bytes, tier)) = self.get(&key).await else {
                count("lookup", "-", "miss");
                continue;
            };
            let Some(entry) = Entry::decode(&bytes) else {
                self.store.remove(&key);
                continue;
            };
            if self.invalidated(route, &lookup.targets, entry.fetched_at_ms).await {
                self.store.remove(&key);
                continue;
            }
            if now < entry.expires_at_ms {
                count("lookup", tier, "hit");
                return Found::Fresh(bytes);
            }
            count("lookup", tier, "expired");
            if now < entry.expires_at_ms.saturating_add(stale_if_error.as_millis() as u64) {
                stale.get_or_insert(bytes);
            } else {
                self.store.remove(&key);
            }
        }
        stale.map_or(Found::Nothing, Found::Stale)
    }

    /// Reads `key` from the memory tier, else from the disk tier, promoting what the disk had
    /// into memory. Done by hand rather than with `HybridCache::get`, whose memory miss spawns
    /// the disk load as a task on the cache runtime: that hop, on top of the I/O engine's own
    /// blocking-pool hop, doubled the thread switches of every disk hit.
    async fn get(&self, key: &Vec<u8>) -> Option<(Bytes, &'static str)> {
        if let Some(entry) = self.store.memory().get(key) {
            return Some((entry.value().clone(), "memory"));
        }
        if !self.has_disk {
            return None;
        }
        let value = match self.store.storage().load(key).await {
            Ok(Load::Entry { value, .. }) => value,
            Ok(Load::Piece { piece, .. }) => piece.value().clone(),
            Ok(Load::Throttled | Load::Miss) => return None,
            Err(e) => {
                tracing::warn!(error = %e, "reading the disk cache");
                return None;
            }
        };
        // Straight into the memory tier: a hybrid insert would write the entry to disk again.
        self.store.memory().insert(key.clone(), value.clone());
        Some((value, "disk"))
    }

    /// Flushes what the disk tier has buffered (at shutdown).
    pub async fn close(&self) {
        if let Err(e) = self.store.close().await {
            tracing::warn!(error = %e, "closing the cache");
        }
    }

    /// Bytes held by the memory tier.
    pub fn memory_bytes(&self) -> usize {
        self.store.memory().usage()
    }

    pub fn insert(&self, lookup: &Lookup, scope: &Scope, entry: &Entry<'_>) {
        self.store.insert(lookup.key(scope), Bytes::from(entry.encode()));
        count("insert", "memory", "ok");
    }

    /// Records that `targets` of `route` changed now: every entry fetched before is dead.
    pub fn invalidate(&self, route: &str, targets: &[Target]) {
        let now = now_ms();
        let mut markers = self.markers.lock().expect("markers");
        for target in targets {
            let key = marker_key(route, target);
            markers.insert(key.clone(), now);
            count("invalidate", "all", "ok");
            self.store.insert(key, Bytes::copy_from_slice(&now.to_le_bytes()));
        }
    }

    async fn invalidated(&self, route: &str, targets: &[Target], fetched_at_ms: u64) -> bool {
        let predates_start = fetched_at_ms < self.started_ms;
        for target in targets {
            let key = marker_key(route, target);
            let in_memory = self.markers.lock().expect("markers").get(&key).copied();
            let marker = match in_memory {
                Some(ms) => Some(ms),
                // Only entries from before this process can predate a marker it never saw.
                None if predates_start => match self.get(&key).await {
                    Some((stored, _)) => stored.get(..8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes"))),
                    None => None,
                },
                None => None,
            };
            if marker.is_some_and(|ms| fetched_at_ms <= ms) {
                return true;
            }
        }
        false
    }

    /// Joins or leads the fetch of `key`.
    pub fn coalesce(&self, key: Vec<u8>) -> Coalesce {
        let mut inflight = self.inflight.lock().expect("inflight");
        if let Some(waiting) = inflight.get(&key)
            && waiting.has_changed().is_ok()
        {
            return Coalesce::Wait(waiting.clone());
        }
        let (done, receiver) = watch::channel(());
        inflight.insert(key.clone(), receiver);
        Coalesce::Lead(Leader { key, _done: done })
    }

    /// Ends a lead: waiters wake up (the sender drops with the leader) and look up again.
    pub fn release(&self, leader: Leader) {
        self.inflight.lock().expect("inflight").remove(&leader.key);
    }
}

fn count(operation: &str, tier: &str, result: &str) {
    crate::metrics::METRICS.cache_operations.with_label_values(&[operation, tier, result]).inc();
}

fn memory_builder(memory: usize) -> foyer::HybridCacheBuilderPhaseMemory<Vec<u8>, Bytes, foyer::DefaultHasher> {
    HybridCacheBuilder::new()
        .with_name("mcp-edge")
        // Every entry goes to disk as it is stored, so a restart finds it there.
        .with_policy(HybridCachePolicy::WriteOnInsertion)
        .memory(memory)
        .with_weighter(|key: &Vec<u8>, value: &Bytes| key.len() + value.len() + 64)
}

async fn open_hybrid(
    memory: usize,
    path: &Path,
    disk_size: usize,
    runtime: &tokio::runtime::Runtime,
) -> Result<HybridCache<Vec<u8>, Bytes>, String> {
    std::fs::create_dir_all(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    let device = FsDeviceBuilder::new(path).with_capacity(disk_size).build().map_err(|e| e.to_string())?;
    memory_builder(memory)
        .storage()
        .with_engine_config(BlockEngineConfig::new(device).with_block_size(disk_block_size(disk_size)))
        .with_recover_mode(RecoverMode::Quiet)
        .with_spawner(runtime.handle().clone().into())
        .build()
        .await
        .map_err(|e| e.to_string())
}

/// Blocks of 16 MiB, smaller for small disks (the block engine wants several blocks).
fn disk_block_size(disk_size: usize) -> usize {
    (disk_size / 8).clamp(1 << 20, 16 << 20).next_power_of_two().min(16 << 20)
}
