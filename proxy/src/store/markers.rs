//! Invalidation markers: when each target (URI, list kind, route) was last invalidated, so an
//! entry fetched before is dead. Kept in memory and written into the cache (so a restarted
//! process checks entries on disk against them too); shared with the task that applies other
//! nodes' invalidations (see `shared`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use foyer::HybridCache;
use mcp_edge_policies::cache::{Key, entry, markers_watermark_key};

use super::StoreKey;

/// Markers kept in memory at most. Each names a target (a URI, a list kind, a route), and
/// URIs come from the upstream's notifications and write results. A route's own URI markers
/// are folded into its route marker well before this (see `EdgeCache::invalidate`); what is
/// left to this bound is markers announced by other nodes: past it, the older half is folded
/// into one "everything until" marker, so memory stays bounded and no invalidation is
/// forgotten (entries fetched before the folded markers die, needed or not, on every route).
pub(super) const MAX_MARKERS: usize = 1 << 18;

pub(super) struct Markers {
    /// Marker key → wall-clock ms of the latest invalidation.
    by_key: Mutex<HashMap<Key, u64>>,
    /// The latest marker this process has set (ms): no marker of its own kills an entry
    /// fetched after it (the watermark that spares most hits the look).
    latest_ms: AtomicU64,
    /// Every entry fetched up to then is dead (an invalidation of everything, announced by a
    /// node that lost track of what it invalidated).
    everything_until_ms: AtomicU64,
    /// With a shared tier: entries the local tiers got up to then may have missed another
    /// node's invalidation (announced while this node was not listening) and are not served
    /// from the local tiers. 0: every local entry is trusted (no shared tier).
    local_trusted_after_ms: AtomicU64,
    store: HybridCache<StoreKey, Bytes>,
}

impl Markers {
    pub(super) fn new(store: HybridCache<StoreKey, Bytes>) -> Markers {
        Markers {
            by_key: Mutex::new(HashMap::new()),
            latest_ms: AtomicU64::new(0),
            everything_until_ms: AtomicU64::new(0),
            local_trusted_after_ms: AtomicU64::new(0),
            store,
        }
    }

    /// Records that the targets of `keys` changed at `at_ms` (a later marker already there
    /// stays).
    pub(super) fn set(&self, keys: &[Key], at_ms: u64) {
        let mut markers = self.by_key.lock().expect("markers");
        // The watermark first (foyer's one flusher writes records in the order they come):
        // should the process die before every record reaches the disk, a watermark without its
        // marker only costs the next process a needless look; a marker without its watermark
        // could be skipped.
        let latest = self.latest_ms.fetch_max(at_ms, Ordering::AcqRel).max(at_ms);
        self.store.insert(StoreKey(markers_watermark_key()), encode_ms(latest));
        for key in keys {
            let marker = markers.entry(*key).or_insert(at_ms);
            *marker = (*marker).max(at_ms);
            self.store.insert(StoreKey(*key), encode_ms(*marker));
        }
        if markers.len() > MAX_MARKERS {
            let folded_until = fold_older_half(&mut markers);
            self.everything_until_ms.fetch_max(folded_until, Ordering::AcqRel);
            tracing::warn!(
                kept = markers.len(),
                "more than {MAX_MARKERS} invalidation markers: entries fetched before the older half's latest are dropped"
            );
        }
    }

    /// Forgets the markers of `keys`; the latest time among them (0: none held).
    pub(super) fn take(&self, keys: &[Key]) -> u64 {
        let mut markers = self.by_key.lock().expect("markers");
        keys.iter().filter_map(|key| markers.remove(key)).max().unwrap_or(0)
    }

    /// Records that every entry fetched up to `at_ms` is dead.
    pub(super) fn set_everything(&self, at_ms: u64) {
        self.everything_until_ms.fetch_max(at_ms, Ordering::AcqRel);
        self.latest_ms.fetch_max(at_ms, Ordering::AcqRel);
    }

    pub(super) fn in_memory(&self, key: &Key) -> Option<u64> {
        self.by_key.lock().expect("markers").get(key).copied()
    }

    /// Whether any marker this process knows of may be later than `fetched_at_ms`.
    pub(super) fn may_kill(&self, fetched_at_ms: u64) -> bool {
        fetched_at_ms <= self.latest_ms.load(Ordering::Acquire)
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.by_key.lock().expect("markers").len()
    }

    #[cfg(test)]
    pub(super) fn latest_ms(&self) -> u64 {
        self.latest_ms.load(Ordering::Acquire)
    }

    pub(super) fn everything_kills(&self, fetched_at_ms: u64) -> bool {
        fetched_at_ms <= self.everything_until_ms.load(Ordering::Acquire)
    }

    /// Local entries got up to `at_ms` are no longer trusted (see `local_trusted_after_ms`).
    pub(super) fn trust_local_after(&self, at_ms: u64) {
        self.local_trusted_after_ms.fetch_max(at_ms, Ordering::AcqRel);
    }

    /// Whether a local entry (`encoded`, fetched at `fetched_at_ms`) was got before the
    /// current subscription to other nodes' invalidations began: neither fetched after, nor
    /// confirmed by the shared tier after.
    pub(super) fn predates_fanout(&self, encoded: &[u8], fetched_at_ms: u64) -> bool {
        let trusted_after = self.local_trusted_after_ms.load(Ordering::Acquire);
        trusted_after != 0
            && fetched_at_ms <= trusted_after
            && entry::confirmed_at_ms(encoded).is_none_or(|confirmed| confirmed <= trusted_after)
    }
}

/// Removes the older half of `markers` (by time); returns the latest time removed.
fn fold_older_half(markers: &mut HashMap<Key, u64>) -> u64 {
    let mut times: Vec<u64> = markers.values().copied().collect();
    let middle = times.len() / 2;
    let (_, &mut cutoff, _) = times.select_nth_unstable(middle);
    markers.retain(|_, at_ms| *at_ms > cutoff);
    cutoff
}

pub(super) fn encode_ms(ms: u64) -> Bytes {
    Bytes::copy_from_slice(&ms.to_le_bytes())
}

pub(super) fn decode_ms(stored: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(stored.get(..8)?.try_into().ok()?))
}
