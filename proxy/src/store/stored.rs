//! What the store holds and hands out: keys in foyer's form, entries as read from a tier, and
//! what a lookup found.

use std::sync::LazyLock;

use bytes::Bytes;
use mcp_edge_policies::cache::Key;
use prometheus::IntCounter;

use crate::metrics::cache_operation;

/// A storage key as foyer holds it: inline in the entry's record, compared without chasing a
/// pointer (with a million entries, every pointer chased on a hit is a cache miss).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StoreKey(pub(super) Key);

impl StoreKey {
    /// 64 bits of the key, itself a SHA-256 digest: as good a hash as any.
    pub(super) fn hash64(&self) -> u64 {
        u64::from_le_bytes(self.0[..8].try_into().expect("keys are 32 bytes"))
    }
}

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
    /// Read from the shared tier (and now in the local tiers too).
    Shared(MemoryEntry),
}

impl Stored {
    /// The counter of lookups that found this entry fresh (`hit`) or expired.
    pub(super) fn lookup_counter(&self, fresh: bool) -> &'static IntCounter {
        let counters = &*LOOKUP_COUNTERS;
        match (self, fresh) {
            (Stored::Memory(_), true) => &counters.hit_memory,
            (Stored::Loaded(_) | Stored::Disk(_), true) => &counters.hit_disk,
            (Stored::Shared(_), true) => &counters.hit_shared,
            (Stored::Memory(_), false) => &counters.expired_memory,
            (Stored::Loaded(_) | Stored::Disk(_), false) => &counters.expired_disk,
            (Stored::Shared(_), false) => &counters.expired_shared,
        }
    }

    /// The tier that answered, as the metrics and the access log name it.
    pub fn tier(&self) -> &'static str {
        match self {
            Stored::Memory(_) => "memory",
            Stored::Loaded(_) | Stored::Disk(_) => "disk",
            Stored::Shared(_) => "shared",
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
    hit_shared: IntCounter,
    expired_shared: IntCounter,
}

static LOOKUP_COUNTERS: LazyLock<LookupCounters> = LazyLock::new(|| {
    let lookup = |tier, result| cache_operation("lookup", tier, result);
    LookupCounters {
        miss: lookup("-", "miss"),
        hit_memory: lookup("memory", "hit"),
        hit_disk: lookup("disk", "hit"),
        expired_memory: lookup("memory", "expired"),
        expired_disk: lookup("disk", "expired"),
        hit_shared: lookup("shared", "hit"),
        expired_shared: lookup("shared", "expired"),
    }
});

/// Counts an entry the shared tier held expired (nothing of it is kept to count it by).
pub(super) fn count_expired_shared() {
    LOOKUP_COUNTERS.expired_shared.inc();
}

/// Counts a lookup that found nothing in one of its scopes.
pub(super) fn count_miss() {
    LOOKUP_COUNTERS.miss.inc();
}

impl std::ops::Deref for Stored {
    type Target = Bytes;

    fn deref(&self) -> &Bytes {
        match self {
            Stored::Memory(entry) | Stored::Loaded(entry) | Stored::Shared(entry) => entry.value(),
            Stored::Disk(value) => value,
        }
    }
}

/// What a lookup found.
pub enum Found {
    /// A fresh entry (encoded [`Entry`]).
    Fresh(Fresh),
    /// Expired, but young enough to be served if every upstream fails (`stale_if_error`).
    Stale(Bytes),
    Nothing,
}

/// A fresh entry, and its life (where it is stored, how long it lives).
pub struct Fresh {
    pub stored: Stored,
    pub life: Life,
}

/// Where an entry is stored and how long it lives (what prefetching needs of a hit).
#[derive(Debug, Clone, Copy)]
pub struct Life {
    pub key: Key,
    pub fetched_at_ms: u64,
    pub expires_at_ms: u64,
}
