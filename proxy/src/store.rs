//! The response cache: a foyer `HybridCache` (memory, plus disk when `cache.disk_path` is
//! set) holding encoded [`Entry`]s, invalidation markers, and request coalescing.
//!
//! Invalidation works by time (see `mcp_edge_policies::cache`): a marker records when a target
//! (URI, list kind, route) was invalidated; entries fetched before it are dead. Markers are kept
//! in memory and also written into the cache, so entries stored before a restart are checked
//! against invalidations from before the restart too. A watermark, the time of the latest
//! marker, spares that check to every entry fetched after it: the common case of a hit.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use foyer::{
    BlockEngineConfig, DeviceBuilder, FsDeviceBuilder, HybridCache, HybridCacheBuilder, HybridCachePolicy, Load,
    RecoverMode, S3FifoConfig,
};
use mcp_edge_policies::admission::MemoryAdmission;
use mcp_edge_policies::cache::{Entry, Key, Lookup, Target, marker_key, markers_watermark_key};
use mcp_edge_policies::config::CacheConfig;
use prometheus::IntCounter;

use crate::coalesce::{Coalesce, Coalescer};
use crate::cpu::{self, DiskRead, DiskReads};
use crate::metrics::cache_operation;

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A storage key as foyer holds it: inline in the entry's record, compared without chasing a
/// pointer (with a million entries, every pointer chased on a hit is a cache miss).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StoreKey(Key);

impl StoreKey {
    /// 64 bits of the key, itself a SHA-256 digest: as good a hash as any.
    fn hash64(&self) -> u64 {
        u64::from_le_bytes(self.0[..8].try_into().expect("keys are 32 bytes"))
    }
}

/// What a memory-tier slot is sized for when counting how many entries the tier holds: a
/// small resource, the common case.
const TYPICAL_ENTRY_BYTES: usize = 1024;

impl foyer::Code for StoreKey {
    fn encode(&self, writer: &mut impl std::io::Write) -> foyer::Result<()> {
        writer.write_all(&self.0).map_err(foyer::Error::io_error)
    }

    fn decode(reader: &mut impl std::io::Read) -> foyer::Result<Self> {
        let mut key = Key::default();
        reader.read_exact(&mut key).map_err(foyer::Error::io_error)?;
        Ok(StoreKey(key))
    }

    fn estimated_size(&self) -> usize {
        size_of::<Key>()
    }
}

type MemoryEntry = foyer::CacheEntry<StoreKey, Bytes, foyer::DefaultHasher, foyer::HybridCacheProperties>;

/// An entry's encoded bytes as the cache gave them, through the memory tier's entry handle:
/// reading through it spares a clone of the value, whose shared count is one more cache miss
/// per hit on a large cache.
pub enum Stored {
    /// Found in the memory tier.
    Memory(MemoryEntry),
    /// Read from the disk tier (and now in the memory tier too).
    Loaded(MemoryEntry),
    /// Read from the disk tier and not copied into memory (see [`MemoryAdmission`]).
    Disk(Bytes),
}

impl Stored {
    /// The counter of lookups that found this entry fresh (`hit`) or expired.
    fn lookup_counter(&self, fresh: bool) -> &'static IntCounter {
        let counters = &*LOOKUP_COUNTERS;
        match (self, fresh) {
            (Stored::Memory(_), true) => &counters.hit_memory,
            (Stored::Loaded(_) | Stored::Disk(_), true) => &counters.hit_disk,
            (Stored::Memory(_), false) => &counters.expired_memory,
            (Stored::Loaded(_) | Stored::Disk(_), false) => &counters.expired_disk,
        }
    }
}

/// The lookup outcomes of `mcp_cache_operations_total`, resolved once: every request counts
/// one, and resolving a labelled counter hashes its labels and takes a lock.
struct LookupCounters {
    miss: IntCounter,
    hit_memory: IntCounter,
    hit_disk: IntCounter,
    expired_memory: IntCounter,
    expired_disk: IntCounter,
}

static LOOKUP_COUNTERS: LazyLock<LookupCounters> = LazyLock::new(|| {
    let lookup = |tier, result| cache_operation("lookup", tier, result);
    LookupCounters {
        miss: lookup("-", "miss"),
        hit_memory: lookup("memory", "hit"),
        hit_disk: lookup("disk", "hit"),
        expired_memory: lookup("memory", "expired"),
        expired_disk: lookup("disk", "expired"),
    }
});

impl std::ops::Deref for Stored {
    type Target = Bytes;

    fn deref(&self) -> &Bytes {
        match self {
            Stored::Memory(entry) | Stored::Loaded(entry) => entry.value(),
            Stored::Disk(value) => value,
        }
    }
}

/// What a lookup found.
pub enum Found {
    /// A fresh entry (encoded [`Entry`]).
    Fresh(Stored),
    /// Expired, but young enough to be served if every upstream fails (`stale_if_error`).
    Stale(Bytes),
    Nothing,
}

pub struct EdgeCache {
    store: HybridCache<StoreKey, Bytes>,
    /// Marker key → wall-clock ms of the latest invalidation.
    markers: Mutex<HashMap<Key, u64>>,
    /// The latest marker this process has set (ms): no marker of its own kills an entry
    /// fetched after it.
    latest_marker_ms: AtomicU64,
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
    /// Runs foyer's background work (flushers, disk I/O) whatever runtime asks.
    runtime: tokio::runtime::Runtime,
}

impl EdgeCache {
    /// Opens the cache. A disk tier that cannot be opened (unwritable or corrupt directory)
    /// is logged and replaced by a memory-only cache: the proxy still starts.
    pub fn open(config: &CacheConfig) -> EdgeCache {
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
        let mut cache = EdgeCache {
            store,
            markers: Mutex::new(HashMap::new()),
            latest_marker_ms: AtomicU64::new(0),
            disk_reads: DiskReads::default(),
            memory_admission: MemoryAdmission::new(admission_memory, TYPICAL_ENTRY_BYTES),
            disk_markers_until_ms: 0,
            flights: Coalescer::default(),
            runtime,
        };
        cache.disk_markers_until_ms = cache.runtime.block_on(cache.read_disk_watermark());
        cache
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
            return ms;
        }
        let now = now_ms();
        self.store.insert(key, encode_ms(now));
        now
    }

    /// Looks a request up in each of its scopes, freshest first.
    pub async fn lookup(&self, route: &str, lookup: &Lookup, stale_if_error: Duration) -> Found {
        let now = now_ms();
        let mut stale = None;
        for scope in &lookup.scopes {
            let key = StoreKey(lookup.key(scope));
            let Some(stored) = self.get(&key).await else {
                LOOKUP_COUNTERS.miss.inc();
                continue;
            };
            let Some(entry) = Entry::decode(&stored) else {
                self.store.remove(&key);
                continue;
            };
            if self.invalidated(route, &lookup.targets, entry.fetched_at_ms).await {
                self.store.remove(&key);
                continue;
            }
            if now < entry.expires_at_ms {
                stored.lookup_counter(true).inc();
                return Found::Fresh(stored);
            }
            stored.lookup_counter(false).inc();
            if now < entry.expires_at_ms.saturating_add(stale_if_error.as_millis() as u64) {
                stale.get_or_insert_with(|| Bytes::clone(&stored));
            } else {
                self.store.remove(&key);
            }
        }
        stale.map_or(Found::Nothing, Found::Stale)
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

    pub fn insert(&self, key: Key, entry: &Entry<'_>) {
        self.store.insert(StoreKey(key), Bytes::from(entry.encode()));
        count("insert", "memory", "ok");
    }

    /// Records that `targets` of `route` changed now: every entry fetched before is dead.
    pub fn invalidate(&self, route: &str, targets: &[Target]) {
        let now = now_ms();
        let mut markers = self.markers.lock().expect("markers");
        // The watermark first (foyer's one flusher writes records in the order they come): should
        // the process die before every record reaches the disk, a watermark without its marker
        // only costs the next process a needless look; a marker without its watermark could be
        // skipped.
        self.latest_marker_ms.fetch_max(now, Ordering::AcqRel);
        self.store.insert(StoreKey(markers_watermark_key()), encode_ms(now));
        for target in targets {
            let key = marker_key(route, target);
            markers.insert(key, now);
            count("invalidate", "all", "ok");
            self.store.insert(StoreKey(key), encode_ms(now));
        }
    }

    async fn invalidated(&self, route: &str, targets: &[Target], fetched_at_ms: u64) -> bool {
        let predates_disk_markers = fetched_at_ms <= self.disk_markers_until_ms;
        if !predates_disk_markers && fetched_at_ms > self.latest_marker_ms.load(Ordering::Acquire) {
            return false;
        }
        for target in targets {
            let key = marker_key(route, target);
            let in_memory = self.markers.lock().expect("markers").get(&key).copied();
            let marker = match in_memory {
                Some(ms) => Some(ms),
                None if predates_disk_markers => self.get(&StoreKey(key)).await.and_then(|stored| decode_ms(&stored)),
                None => None,
            };
            if marker.is_some_and(|ms| fetched_at_ms <= ms) {
                return true;
            }
        }
        false
    }
}

fn encode_ms(ms: u64) -> Bytes {
    Bytes::copy_from_slice(&ms.to_le_bytes())
}

fn decode_ms(stored: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(stored.get(..8)?.try_into().ok()?))
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

#[cfg(test)]
mod tests {
    use super::*;
    use foyer::Code;
    use mcp_edge_policies::cache::Scope;

    #[test]
    fn store_keys_round_trip_through_their_disk_form() {
        let key = StoreKey(std::array::from_fn(|i| i as u8 * 7));
        let mut written = Vec::new();
        key.encode(&mut written).unwrap();
        assert_eq!(written.len(), key.estimated_size());
        assert_eq!(StoreKey::decode(&mut written.as_slice()).unwrap(), key);
        // A truncated record is an error, never a short key.
        assert!(StoreKey::decode(&mut &written[..31]).is_err());
    }

    #[test]
    fn each_memory_shard_holds_entries_of_the_largest_cacheable_size() {
        assert_eq!(memory_shards(256 << 20, 8 << 20), 8, "the defaults");
        assert_eq!(memory_shards(2 << 30, 8 << 20), 64);
        assert_eq!(memory_shards(8 << 20, 8 << 20), 1);
        assert_eq!(memory_shards(1 << 20, 0), 64);
        let config = CacheConfig { memory: 256 << 20, disk_path: None, disk_size: 0, max_entry_size: 8 << 20 };
        let cache = EdgeCache::open(&config);
        let key = StoreKey([2; 32]);
        cache.store.insert(key, Bytes::from(vec![b'x'; 8 << 20]));
        // A shard evicts when something else is inserted into it: touch every shard.
        for i in 0..1000u16 {
            let mut small = [3; 32];
            small[..2].copy_from_slice(&i.to_le_bytes());
            cache.store.insert(StoreKey(small), Bytes::from_static(b"small"));
        }
        assert!(cache.store.memory().get(&key).is_some(), "an entry of max_entry_size stays in memory");
    }

    #[test]
    fn cache_threads_yield_to_the_proxy_workers() {
        let config = CacheConfig { memory: 1 << 20, disk_path: None, disk_size: 0, max_entry_size: 1 << 20 };
        let cache = EdgeCache::open(&config);
        assert!(!cache.store.storage().is_enabled(), "no disk path: memory only");
        let cache_thread_policies = || {
            let mut policies = Vec::new();
            for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
                let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
                if comm.trim() == "cache-io" {
                    let tid: i32 = task.file_name().to_str().unwrap().parse().unwrap();
                    // SAFETY: reads the policy of a thread of this process.
                    policies.push(unsafe { libc::sched_getscheduler(tid) });
                }
            }
            policies
        };
        // A thread is named before its start hook runs, and other tests start cache runtimes
        // in parallel: wait until every thread seen has run its hook (one never would).
        let all_batch = |policies: &[i32]| !policies.is_empty() && policies.iter().all(|&p| p == libc::SCHED_BATCH);
        let mut policies = cache_thread_policies();
        for _ in 0..100 {
            if all_batch(&policies) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
            policies = cache_thread_policies();
        }
        assert!(!policies.is_empty(), "the cache runtime has threads");
        assert!(policies.iter().all(|&p| p == libc::SCHED_BATCH), "{policies:?}");
    }

    fn disk_config(dir: &Path) -> CacheConfig {
        CacheConfig {
            memory: 16 << 20,
            disk_path: Some(dir.to_path_buf()),
            disk_size: 64 << 20,
            max_entry_size: 1 << 20,
        }
    }

    fn read_lookup(uri: &str) -> Lookup {
        let body = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{{"uri":"{uri}"}}}}"#);
        let message = mcp_edge_policies::jsonrpc::parse(body.as_bytes()).unwrap();
        let caller = mcp_edge_policies::cache::Caller {
            identity: None,
            session: None,
            stateless: true,
            protocol_version: Some("2026-07-28".into()),
        };
        let config =
            mcp_edge_policies::Config::from_toml("[[route]]\npath = \"/mcp\"\nupstreams = [\"http://h:1/mcp\"]\n")
                .unwrap();
        mcp_edge_policies::cache::lookup_for("r", &message, &caller, &config.routes[0].policy, |_| false).unwrap()
    }

    fn store_fetched_at(cache: &EdgeCache, lookup: &Lookup, fetched_at_ms: u64) {
        let entry = Entry {
            fetched_at_ms,
            expires_at_ms: fetched_at_ms + 3_600_000,
            restate_ttl: false,
            result: br#"{"contents":[]}"#,
            deflated: None,
        };
        cache.insert(lookup.key(&Scope::Public(mcp_edge_policies::cache::Audience::Anonymous)), &entry);
    }

    fn is_fresh(cache: &EdgeCache, lookup: &Lookup) -> bool {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        matches!(runtime.block_on(cache.lookup("r", lookup, Duration::ZERO)), Found::Fresh(_))
    }

    #[test]
    fn an_invalidation_outlives_a_restart_through_the_markers_watermark() {
        let dir = tempfile::tempdir().unwrap();
        let (dead, alive) = (read_lookup("a://dead"), read_lookup("a://alive"));
        let before_start = now_ms() - 1_000;
        let invalidated_at = {
            let cache = EdgeCache::open(&disk_config(dir.path()));
            assert!(cache.disk_markers_until_ms >= before_start, "a new disk tier gets a watermark of now");
            store_fetched_at(&cache, &dead, before_start);
            store_fetched_at(&cache, &alive, before_start);
            cache.invalidate("r", &[Target::Resource("a://dead".into())]);
            cache.runtime.block_on(cache.close());
            cache.latest_marker_ms.load(Ordering::Acquire)
        };
        let cache = EdgeCache::open(&disk_config(dir.path()));
        assert_eq!(cache.disk_markers_until_ms, invalidated_at, "read back from disk");
        assert!(!is_fresh(&cache, &dead), "killed by a marker of the previous process");
        assert!(is_fresh(&cache, &alive));
        // Fetched after every marker: answered without reading one.
        let later = read_lookup("a://later");
        store_fetched_at(&cache, &later, invalidated_at + 1);
        assert!(is_fresh(&cache, &later));
    }

    #[test]
    fn an_invalidation_kills_only_entries_fetched_up_to_it() {
        let cache = EdgeCache::open(&CacheConfig { disk_path: None, ..disk_config(Path::new("/")) });
        assert_eq!(cache.disk_markers_until_ms, 0, "memory only: no marker predates this process");
        let (before, after) = (read_lookup("a://1"), read_lookup("a://2"));
        store_fetched_at(&cache, &before, now_ms() - 1);
        cache.invalidate("r", &[Target::Route]);
        let invalidated_at = cache.latest_marker_ms.load(Ordering::Acquire);
        store_fetched_at(&cache, &after, invalidated_at + 1);
        assert!(!is_fresh(&cache, &before));
        assert!(is_fresh(&cache, &after));
        store_fetched_at(&cache, &before, invalidated_at);
        assert!(!is_fresh(&cache, &before), "a fetch started in the marker's millisecond may predate it");
    }

    #[test]
    fn a_full_memory_tier_copies_only_disk_hits_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let cache = EdgeCache::open(&disk_config(dir.path()));
        // Keys spread like digests: the doorkeeper tells keys apart by their first 64 bits.
        let key = |tag: u8, n: u16| {
            let mut key = [tag; 32];
            let spread = (u64::from(n) << 8 | u64::from(tag)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            key[..8].copy_from_slice(&spread.to_le_bytes());
            StoreKey(key)
        };
        // On disk alone, then a memory tier full of other entries.
        for n in 0..=256 {
            cache.store.insert(key(b'd', n), Bytes::from_static(b"on disk"));
            cache.store.memory().remove(&key(b'd', n));
        }
        for n in 0..4096 {
            cache.store.memory().insert(key(b'm', n), Bytes::from(vec![0; 8 << 10]));
        }
        assert!(!cache.memory_has_room());
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            for n in 0..256 {
                let read = cache.get(&key(b'd', n)).await.expect("on disk");
                assert!(matches!(read, Stored::Disk(_)), "read once: not copied into memory");
            }
            let again = key(b'd', 256);
            assert!(matches!(cache.get(&again).await, Some(Stored::Disk(_))));
            let second = cache.get(&again).await.expect("on disk");
            assert!(matches!(second, Stored::Loaded(_)), "read again: copied into memory");
            assert_eq!(&second[..], b"on disk");
            assert!(matches!(cache.get(&again).await, Some(Stored::Memory(_))));
        });
    }

    #[test]
    fn disk_hits_are_copied_into_a_memory_tier_with_room() {
        let dir = tempfile::tempdir().unwrap();
        let cache = EdgeCache::open(&disk_config(dir.path()));
        assert!(cache.store.storage().is_enabled());
        let key = StoreKey([1; 32]);
        // Written to disk as it is stored; then dropped from memory alone.
        cache.store.insert(key, Bytes::from_static(b"on disk"));
        cache.store.memory().remove(&key);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let loaded = cache.get(&key).await.expect("the disk tier has the entry");
            assert!(matches!(loaded, Stored::Loaded(_)), "read from the disk tier");
            assert_eq!(&loaded[..], b"on disk");
            let again = cache.get(&key).await.expect("still there");
            assert!(matches!(again, Stored::Memory(_)), "a disk hit is kept in memory");
            assert_eq!(&again[..], b"on disk");
        });
    }
}
