//! The response cache: a foyer `HybridCache` (memory, plus disk when `cache.disk_path` is
//! set) holding encoded [`Entry`]s, invalidation markers, request coalescing, and the tier
//! nodes share (`[cache.shared]`, see `shared`), asked after the local tiers miss.
//!
//! Invalidation works by time (see `mcp_edge_policies::cache`): a marker records when a target
//! (URI, list kind, route) was invalidated; entries fetched before it are dead. Markers are kept
//! in memory and also written into the cache, so entries stored before a restart are checked
//! against invalidations from before the restart too. A watermark, the time of the latest
//! marker, spares that check to every entry fetched after it: the common case of a hit.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use foyer::{
    BlockEngineConfig, DeviceBuilder, FsDeviceBuilder, HybridCache, HybridCacheBuilder, HybridCachePolicy, Load,
    RecoverMode, S3FifoConfig,
};
use mcp_edge_policies::admission::MemoryAdmission;
use mcp_edge_policies::cache::cursors::HandedCursors;
use mcp_edge_policies::cache::{Entry, Key, Lookup, Target, entry, marker_key, markers_watermark_key};
use mcp_edge_policies::config::CacheConfig;
use mcp_edge_policies::method::Method;

use crate::coalesce::{Coalesce, Coalescer};
use crate::cpu::{self, DiskRead, DiskReads};
use crate::metrics::cache_operation;

mod markers;
mod shared;
mod stored;
#[cfg(test)]
mod tests;

use markers::{Markers, decode_ms, encode_ms};
use mcp_edge_policies::shared_tier::{CLOCK_SKEW_MS, Unusable, bounded_expiry, from_the_future};
use shared::{Held, SharedTier};
pub use shared::{SharedStatus, check as check_shared};
pub use stored::{Found, Fresh, Life, StoreKey, Stored};

/// URI markers one route holds before its older half folds into its route marker.
const MAX_NAMED_MARKERS_PER_ROUTE: usize = 1 << 14;

/// What a memory-tier slot is sized for when counting how many entries the tier holds: a
/// small resource, the common case.
const TYPICAL_ENTRY_BYTES: usize = 1024;

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

pub struct EdgeCache {
    store: HybridCache<StoreKey, Bytes>,
    markers: Arc<Markers>,
    /// Disk reads asked for and not yet answered, and when the last one was answered (or the
    /// first began, if none was since): see [`DiskReads::starving`].
    disk_reads: DiskReads,
    /// Which disk hits are copied into the memory tier.
    memory_admission: MemoryAdmission,
    /// The latest marker an earlier process can have left on disk (ms; its watermark record).
    /// Only entries fetched up to then are checked against markers read from disk.
    disk_markers_until_ms: u64,
    /// Concurrent misses of one request, and requests whose answers are not cacheable.
    flights: Coalescer,
    /// The tier nodes share, if configured.
    shared: Option<Arc<SharedTier>>,
    /// List cursors the upstreams handed out (see `cursors`).
    cursors: std::sync::Mutex<HandedCursors>,
    /// The URI markers each route set, oldest first (see `count_named`).
    named_by_route: std::sync::Mutex<std::collections::HashMap<String, std::collections::VecDeque<Key>>>,
    /// Runs foyer's background work (flushers, disk I/O) whatever runtime asks.
    runtime: CacheRuntime,
}

/// foyer's runtime, shut down without waiting for its threads when the cache is dropped: the
/// last handle to the cache may go on any thread, an async one included, where dropping a
/// runtime the usual (blocking) way panics. What must reach the disk was flushed by `close`.
struct CacheRuntime(Option<tokio::runtime::Runtime>);

impl std::ops::Deref for CacheRuntime {
    type Target = tokio::runtime::Runtime;

    fn deref(&self) -> &tokio::runtime::Runtime {
        self.0.as_ref().expect("the runtime lives as long as the cache")
    }
}

impl Drop for CacheRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

impl EdgeCache {
    /// Opens the cache. A disk tier that cannot be opened (unwritable or corrupt directory)
    /// is logged and replaced by a memory-only cache: the proxy still starts. Fails only on a
    /// shared tier that cannot be configured (its password file unreadable).
    pub fn open(config: &CacheConfig) -> Result<EdgeCache, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            // A few disk threads: enough for parallel reads and a flush at once, few enough
            // that they batch (see `cpu::run_as_batch`).
            .max_blocking_threads(cpu::disk_threads())
            .on_thread_start(cpu::run_as_batch)
            .thread_name("cache-io")
            .enable_all()
            .build()
            .expect("cache runtime");
        let store = runtime.block_on(async {
            if let Some(path) = &config.disk_path {
                match open_hybrid(config, path, &runtime).await {
                    Ok(store) => return store,
                    Err(e) => tracing::error!(
                        path = %path.display(),
                        error = %e,
                        "cannot open the disk cache; continuing with a memory-only cache"
                    ),
                }
            }
            memory_builder(config).storage().build().await.expect("a memory-only cache always opens")
        });
        // Without a disk tier nothing is read from disk: the doorkeeper is kept at its least.
        let admission_memory = if store.storage().is_enabled() { config.memory as usize } else { 0 };
        let markers = Arc::new(Markers::new(store.clone()));
        let shared = match &config.shared {
            Some(shared) => Some(SharedTier::open(shared, markers.clone())?),
            None => None,
        };
        let mut cache = EdgeCache {
            store,
            markers,
            disk_reads: DiskReads::default(),
            memory_admission: MemoryAdmission::new(admission_memory, TYPICAL_ENTRY_BYTES),
            disk_markers_until_ms: 0,
            flights: Coalescer::default(),
            shared,
            cursors: Default::default(),
            named_by_route: Default::default(),
            runtime: CacheRuntime(Some(runtime)),
        };
        cache.disk_markers_until_ms = cache.runtime.block_on(cache.read_disk_watermark());
        Ok(cache)
    }

    /// Reads the markers' watermark left on disk by earlier processes. A disk tier without
    /// one (a new cache, or one written before watermarks existed) may hold markers of any
    /// time until now: the watermark is then now, and is written so the next start knows.
    async fn read_disk_watermark(&self) -> u64 {
        if !self.store.storage().is_enabled() {
            return 0;
        }
        let key = StoreKey(markers_watermark_key());
        if let Some(stored) = self.get(&key).await
            && let Some(ms) = decode_ms(&stored)
        {
            // No later than a marker can be (one from the future is ignored, see `invalidated`).
            return ms.min(now_ms().saturating_add(CLOCK_SKEW_MS));
        }
        let now = now_ms();
        self.store.insert(key, encode_ms(now));
        now
    }

    /// Looks a request up in each of its scopes, the caller's own first: in the local tiers,
    /// then in the shared tier (whose entries live at most `max_ttl` from their fetch).
    pub async fn lookup(&self, route: &str, lookup: &Lookup, stale_if_error: Duration, max_ttl: Duration) -> Found {
        let now = now_ms();
        let mut stale = None;
        for scope in &lookup.scopes {
            let key = StoreKey(lookup.key(scope));
            let Some(stored) = self.get(&key).await else {
                stored::count_miss();
                continue;
            };
            let Some(entry) = Entry::decode(&stored) else {
                self.store.remove(&key);
                continue;
            };
            if self.markers.predates_fanout(&stored, entry.fetched_at_ms)
                || self.invalidated(route, &lookup.targets, &entry).await
            {
                self.store.remove(&key);
                continue;
            }
            if now < entry.expires_at_ms {
                stored.lookup_counter(true).inc();
                let (fetched_at_ms, expires_at_ms) = (entry.fetched_at_ms, entry.expires_at_ms);
                return Found::Fresh(Fresh { stored, life: Life { key: key.0, fetched_at_ms, expires_at_ms } });
            }
            stored.lookup_counter(false).inc();
            if now < entry.expires_at_ms.saturating_add(stale_if_error.as_millis() as u64) {
                stale.get_or_insert_with(|| Bytes::clone(&stored));
            } else {
                self.store.remove(&key);
            }
        }
        if let Some(shared) = &self.shared {
            match self.lookup_shared(shared, route, lookup, stale_if_error, max_ttl).await {
                Found::Fresh(fresh) => return Found::Fresh(fresh),
                Found::Stale(bytes) => {
                    stale.get_or_insert(bytes);
                }
                Found::Nothing => {}
            }
        }
        stale.map_or(Found::Nothing, Found::Stale)
    }

    /// Looks a request up in the shared tier: its entries in every scope and the markers of
    /// its targets, in one round trip. A fresh entry not invalidated since its fetch is copied
    /// into the local tiers, marked as confirmed when it was asked for (see
    /// `Markers::predates_fanout`). Whoever can write to the server could have written what
    /// it holds: its times are bounded (`shared_tier::bounded_expiry`), and with a secret
    /// what does not open with it is refused.
    async fn lookup_shared(
        &self,
        shared: &SharedTier,
        route: &str,
        lookup: &Lookup,
        stale_if_error: Duration,
        max_ttl: Duration,
    ) -> Found {
        let keys: Vec<Key> = lookup.scopes.iter().map(|scope| lookup.key(scope)).collect();
        let marker_keys: Vec<Key> = lookup.targets.iter().map(|target| marker_key(route, target)).collect();
        let own_ttl_marker = marker_key(route, &Target::Unhinted);
        let asked_at = now_ms();
        let Some(read) = shared.read(&keys, &marker_keys, &own_ttl_marker).await else { return Found::Nothing };
        let now = now_ms();
        let max_ttl_ms = max_ttl.as_millis().min(u64::MAX as u128) as u64;
        let mut stale = None;
        for (key, read) in keys.into_iter().zip(read) {
            let value = match read.held {
                Held::Value(value) => value,
                Held::Nothing => {
                    count("lookup", "shared", "miss");
                    continue;
                }
                Held::Refused => {
                    count("lookup", "shared", "refused");
                    continue;
                }
            };
            let Some(mut entry) = Entry::decode(&value) else {
                count("lookup", "shared", "unreadable");
                continue;
            };
            let bounded =
                bounded_expiry(now, entry.fetched_at_ms, entry.expires_at_ms, max_ttl_ms, shared.ttl_cap_ms());
            let expires_at_ms = match bounded {
                Ok(expires_at_ms) => expires_at_ms,
                Err(Unusable::Future) => {
                    count("lookup", "shared", "refused");
                    continue;
                }
                Err(Unusable::Outlived) => {
                    stored::count_expired_shared();
                    continue;
                }
            };
            if entry.fetched_at_ms <= read.newest_marker_ms
                || (entry.own_ttl && entry.fetched_at_ms <= read.own_ttl_marker_ms)
                || self.invalidated(route, &lookup.targets, &entry).await
            {
                count("lookup", "shared", "invalidated");
                continue;
            }
            let capped;
            let value = if expires_at_ms < entry.expires_at_ms {
                entry.expires_at_ms = expires_at_ms;
                capped = entry.encode();
                &capped[..]
            } else {
                &value[..]
            };
            if now < entry.expires_at_ms {
                let Some(confirmed) = entry::confirmed(value, asked_at) else { continue };
                let life = Life { key, fetched_at_ms: entry.fetched_at_ms, expires_at_ms: entry.expires_at_ms };
                let stored = Stored::Shared(self.store.insert(StoreKey(key), Bytes::from(confirmed)));
                stored.lookup_counter(true).inc();
                return Found::Fresh(Fresh { stored, life });
            }
            stored::count_expired_shared();
            if now < entry.expires_at_ms.saturating_add(stale_if_error.as_millis() as u64) {
                stale.get_or_insert_with(|| Bytes::copy_from_slice(value));
            }
        }
        stale.map_or(Found::Nothing, Found::Stale)
    }

    /// The shared tier's state, if one is configured.
    /// Whether the node has a shared tier (`[cache.shared]`).
    pub fn has_shared(&self) -> bool {
        self.shared.is_some()
    }

    pub fn shared_status(&self) -> Option<SharedStatus> {
        self.shared.as_ref().map(|shared| shared.status())
    }

    /// Reads `key` from the memory tier, else from the disk tier, copying what the disk had
    /// into memory when [`MemoryAdmission`] admits it. Done by hand rather than with
    /// `HybridCache::get`, whose memory miss spawns the disk load as a task on the cache
    /// runtime: that hop, on top of the I/O engine's own blocking-pool hop, doubled the thread
    /// switches of every disk hit.
    async fn get(&self, key: &StoreKey) -> Option<Stored> {
        if let Some(entry) = self.store.memory().get(key) {
            return Some(Stored::Memory(entry));
        }
        // Memory-only (no disk path, or the disk tier failed to open): nothing more to read.
        if !self.store.storage().is_enabled() {
            return None;
        }
        let reading = DiskRead::start(&self.disk_reads);
        let loaded = self.store.storage().load(key).await;
        drop(reading);
        let value = match loaded {
            Ok(Load::Entry { value, .. }) => value,
            Ok(Load::Piece { piece, .. }) => piece.value().clone(),
            Ok(Load::Throttled | Load::Miss) => return None,
            Err(e) => {
                tracing::warn!(error = %e, "reading the disk cache");
                return None;
            }
        };
        if !self.memory_admission.admits(key.hash64(), || self.memory_has_room()) {
            return Some(Stored::Disk(value));
        }
        // Straight into the memory tier: a hybrid insert would write the entry to disk again.
        Some(Stored::Loaded(self.store.memory().insert(*key, value)))
    }

    /// Whether the memory tier could take an entry without evicting another (roughly: its
    /// shards evict on their own). Sums every shard's usage under its lock.
    fn memory_has_room(&self) -> bool {
        let memory = self.store.memory();
        memory.usage() < memory.capacity() / 16 * 15
    }

    /// The disk reads under way (whether they starve: see `cpu`).
    pub fn disk_reads(&self) -> &DiskReads {
        &self.disk_reads
    }

    /// Flushes what the disk tier has buffered (at shutdown).
    pub async fn close(&self) {
        if let Err(e) = self.store.close().await {
            tracing::warn!(error = %e, "closing the cache");
        }
    }

    /// Bytes read from and written to the disk tier since the start.
    pub fn disk_io_bytes(&self) -> (u64, u64) {
        if !self.store.storage().is_enabled() {
            return (0, 0);
        }
        let statistics = self.store.storage().statistics();
        (statistics.disk_read_bytes() as u64, statistics.disk_write_bytes() as u64)
    }

    /// Bytes held by the memory tier.
    pub fn memory_bytes(&self) -> usize {
        self.store.memory().usage()
    }

    /// Stores `entry` under `key` (a [`Lookup::key`]).
    /// Leads, joins or passes the fetch of a missed key (see `coalesce`).
    pub fn coalesce(&self, key: Key) -> Coalesce {
        self.flights.coalesce(key)
    }

    /// Records what became of an answer fetched without leading its key.
    pub fn answered(&self, key: Key, stored: bool) {
        self.flights.answered(key, stored);
    }

    /// Stores a fetched answer under `key` (a [`Lookup::key`]) in the local tiers, and in the
    /// shared tier (in the background) for the other nodes.
    pub fn store_answer(&self, key: Key, entry: &Entry<'_>, stale_if_error: Duration) {
        let encoded = Bytes::from(entry.encode());
        if let Some(shared) = &self.shared {
            shared.write(key, encoded.clone(), entry.expires_at_ms, stale_if_error);
        }
        self.store.insert(StoreKey(key), encoded);
        count("insert", "memory", "ok");
    }

    /// Stores `entry` under `key` in the local tiers only (a new form of an entry already
    /// shared).
    pub fn insert(&self, key: Key, entry: &Entry<'_>) {
        self.store.insert(StoreKey(key), Bytes::from(entry.encode()));
        count("insert", "memory", "ok");
    }

    /// Records that `targets` of `route` changed now: every entry fetched before is dead, on
    /// this node and (through the shared tier) on the others. `cause` labels the count
    /// (`mcp_invalidations_total`).
    pub fn invalidate(&self, route: &str, targets: &[Target], cause: &str) {
        let now = now_ms();
        let keys: Vec<Key> = targets.iter().map(|target| marker_key(route, target)).collect();
        self.markers.set(&keys, now);
        cache_operation("invalidate", "all", "ok").inc_by(targets.len() as u64);
        crate::metrics::invalidated(route, cause, targets.len());
        if let Some(shared) = &self.shared {
            shared.invalidate(keys.clone(), now);
        }
        let named = targets.iter().zip(&keys).filter(|(target, _)| matches!(target, Target::Resource(_)));
        let named: Vec<Key> = named.map(|(_, key)| *key).collect();
        if !named.is_empty() {
            self.count_named(route, named);
        }
    }

    /// Counts the URI markers `route` has set; past [`MAX_NAMED_MARKERS_PER_ROUTE`], its older
    /// half is folded into the route's own marker (every entry of the route fetched before the
    /// latest of them dies, needed or not). URIs come from notifications and write results,
    /// which may echo what a client chose: a flood of them costs that route its entries,
    /// never another route's, and never memory without bound.
    fn count_named(&self, route: &str, keys: Vec<Key>) {
        let mut named = self.named_by_route.lock().expect("named markers");
        let held = named.entry(route.to_string()).or_default();
        held.extend(keys);
        if held.len() <= MAX_NAMED_MARKERS_PER_ROUTE {
            return;
        }
        let folded: Vec<Key> = held.drain(..held.len() / 2).collect();
        drop(named);
        let until = self.markers.take(&folded);
        if until == 0 {
            return;
        }
        let route_marker = marker_key(route, &Target::Route);
        self.markers.set(&[route_marker], until);
        if let Some(shared) = &self.shared {
            shared.invalidate(vec![route_marker], until);
        }
        tracing::warn!(
            route,
            "more than {MAX_NAMED_MARKERS_PER_ROUTE} resources invalidated by name: the older half folds into the route's marker"
        );
    }

    /// The upstream handed out `cursor` in a page of `method` on `route`.
    pub fn cursor_handed(&self, route: &str, method: Method, cursor: &str) {
        self.cursors.lock().expect("cursors").handed(route, method, cursor);
    }

    /// The upstream answered a page of `method` on `route` asked with `cursor` with an error:
    /// if it had handed that cursor out, the list changed under it, and its cached pages go
    /// (the specification's caching page).
    pub fn cursor_refused(&self, route: &str, method: Method, cursor: &str) {
        let refused = self.cursors.lock().expect("cursors").refused(route, method, cursor);
        if let Some(kind) = refused {
            tracing::debug!(route, ?kind, "a cursor handed out is refused now; discarding the list's pages");
            self.invalidate(route, &[Target::List(kind)], "cursor");
        }
    }

    /// Whether `entry`, an entry of a request with `targets`, was invalidated after its fetch:
    /// by a marker of one of its targets, or (kept on mcp-edge's own TTL) by a write.
    async fn invalidated(&self, route: &str, targets: &[Target], entry: &Entry<'_>) -> bool {
        let fetched_at_ms = entry.fetched_at_ms;
        let own_ttl = entry.own_ttl.then_some(&Target::Unhinted);
        let predates_disk_markers = fetched_at_ms <= self.disk_markers_until_ms;
        if !predates_disk_markers && !self.markers.may_kill(fetched_at_ms) {
            return false;
        }
        if self.markers.everything_kills(fetched_at_ms) {
            return true;
        }
        for target in targets.iter().chain(own_ttl) {
            let key = marker_key(route, target);
            let marker = match self.markers.in_memory(&key) {
                Some(ms) => Some(ms),
                // A marker from the future (applied by an earlier version from a forged
                // announcement) would kill its target for good: ignored.
                None if predates_disk_markers => self
                    .get(&StoreKey(key))
                    .await
                    .and_then(|stored| decode_ms(&stored))
                    .filter(|&ms| !from_the_future(ms, now_ms())),
                None => None,
            };
            if marker.is_some_and(|ms| fetched_at_ms <= ms) {
                return true;
            }
        }
        false
    }
}

fn count(operation: &str, tier: &str, result: &str) {
    cache_operation(operation, tier, result).inc();
}

fn memory_builder(config: &CacheConfig) -> foyer::HybridCacheBuilderPhaseMemory<StoreKey, Bytes, foyer::DefaultHasher> {
    let memory = config.memory.max(1 << 20) as usize;
    HybridCacheBuilder::new()
        .with_name("mcp-edge")
        // Every entry goes to disk as it is stored, so a restart finds it there.
        .with_policy(HybridCachePolicy::WriteOnInsertion)
        .memory(memory)
        // S3-FIFO: a hit only bumps a counter under a read lock, where LRU takes the shard's
        // write lock and relinks its list (cache misses on neighbours once the index is large).
        .with_eviction_config(S3FifoConfig::default())
        .with_shards(memory_shards(memory, config.max_entry_size as usize))
        .with_weighter(|_: &StoreKey, value: &Bytes| size_of::<StoreKey>() + value.len() + 64)
}

async fn open_hybrid(
    config: &CacheConfig,
    path: &Path,
    runtime: &tokio::runtime::Runtime,
) -> Result<HybridCache<StoreKey, Bytes>, String> {
    let disk_size = config.disk_size as usize;
    std::fs::create_dir_all(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    let device = FsDeviceBuilder::new(path).with_capacity(disk_size).build().map_err(|e| e.to_string())?;
    memory_builder(config)
        .storage()
        .with_engine_config(BlockEngineConfig::new(device).with_block_size(disk_block_size(disk_size)))
        .with_recover_mode(RecoverMode::Quiet)
        .with_spawner(runtime.handle().clone().into())
        .build()
        .await
        .map_err(|e| e.to_string())
}

/// Shards of the memory tier: up to 64 (fewer lock collisions between threads), but each
/// shard evicts on its own, so each must hold a few entries of the largest cacheable size.
fn memory_shards(memory: usize, max_entry: usize) -> usize {
    (memory / max_entry.max(1).saturating_mul(4)).clamp(1, 64)
}

/// Blocks of 16 MiB, smaller for small disks (the block engine wants several blocks).
fn disk_block_size(disk_size: usize) -> usize {
    (disk_size / 8).clamp(1 << 20, 16 << 20).next_power_of_two().min(16 << 20)
}
