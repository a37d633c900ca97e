//! Which disk-tier hits earn a copy in the memory tier.
//!
//! Copying a disk hit into a full memory tier evicts another entry: an insert, an eviction and
//! a free on the request's path, for an entry that may never be read again before it is
//! evicted in turn (a read spread over more keys than memory holds). A [`Doorkeeper`] admits
//! a key on its second disk read within a window about as long as the memory tier is large,
//! as TinyLFU's doorkeeper does: keys read once pass through, keys read again stay.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// Admits every disk hit while the memory tier has room (a copy then evicts nothing), and
/// only keys read again (see [`Doorkeeper`]) once it is full.
pub struct MemoryAdmission {
    doorkeeper: Doorkeeper,
    has_room: AtomicBool,
    decisions: AtomicUsize,
}

/// Whether the memory tier has room is asked once per this many decisions: asking sums every
/// shard's usage under its lock.
const ASK_ROOM_EVERY: usize = 256;

impl MemoryAdmission {
    /// For a memory tier of `memory_bytes` holding entries of about `typical_entry_bytes`.
    pub fn new(memory_bytes: usize, typical_entry_bytes: usize) -> MemoryAdmission {
        MemoryAdmission {
            doorkeeper: Doorkeeper::new(Doorkeeper::keys_for(memory_bytes, typical_entry_bytes)),
            has_room: AtomicBool::new(true),
            decisions: AtomicUsize::new(0),
        }
    }

    /// Whether the disk hit of the key hashed `hash` should be copied into the memory tier.
    /// `has_room` says whether the memory tier has room now; it is asked now and then.
    pub fn admits(&self, hash: u64, has_room: impl FnOnce() -> bool) -> bool {
        if self.decisions.fetch_add(1, Ordering::Relaxed).is_multiple_of(ASK_ROOM_EVERY) {
            self.has_room.store(has_room(), Ordering::Relaxed);
        }
        self.has_room.load(Ordering::Relaxed) || self.doorkeeper.read_again(hash)
    }
}

/// Remembers the keys of recent disk reads, one per slot, a newer read taking an older one's
/// slot. Lock-free and approximate: two keys sharing a slot only forget each other sooner.
pub struct Doorkeeper {
    slots: Box<[AtomicU64]>,
}

/// An empty slot. Key hashes are stored with their low bit set, so none is ever 0.
const EMPTY: u64 = 0;

impl Doorkeeper {
    /// A doorkeeper remembering about `keys` recent reads (rounded up to a power of two, from
    /// 1 Ki to 4 Mi): 8 bytes each, 0.8% of a memory tier of 1 KiB entries.
    pub fn new(keys: usize) -> Doorkeeper {
        let slots = keys.clamp(1 << 10, 1 << 22).next_power_of_two();
        Doorkeeper { slots: (0..slots).map(|_| AtomicU64::new(EMPTY)).collect() }
    }

    /// How many recent reads a doorkeeper for a memory tier of `memory_bytes` should remember:
    /// about as many as entries of `typical_entry_bytes` the tier holds.
    pub fn keys_for(memory_bytes: usize, typical_entry_bytes: usize) -> usize {
        memory_bytes / typical_entry_bytes.max(1)
    }

    /// Records a disk read of the key hashed `hash`; true when the same key was read recently
    /// enough that its slot still remembers it.
    pub fn read_again(&self, hash: u64) -> bool {
        let mark = hash | 1;
        let slot = &self.slots[(hash >> 1) as usize & (self.slots.len() - 1)];
        // A load first: a key read again leaves its slot untouched (no write to share).
        slot.load(Ordering::Relaxed) == mark || {
            slot.store(mark, Ordering::Relaxed);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_disk_hit_is_admitted_while_memory_has_room() {
        let admission = MemoryAdmission::new(1 << 20, 1024);
        assert!((0..1000u64).all(|hash| admission.admits(hash << 1, || true)));
    }

    #[test]
    fn a_full_memory_admits_only_keys_read_again() {
        let admission = MemoryAdmission::new(1 << 20, 1024);
        assert!(!admission.admits(10, || false), "first read");
        assert!(admission.admits(10, || unreachable!("asked once per {ASK_ROOM_EVERY}")), "second read");
    }

    #[test]
    fn room_is_asked_again_after_a_while() {
        let admission = MemoryAdmission::new(1 << 20, 1024);
        admission.admits(2, || false);
        let asked = std::cell::Cell::new(0);
        for hash in 0..ASK_ROOM_EVERY as u64 {
            admission.admits(hash << 1, || {
                asked.set(asked.get() + 1);
                true
            });
        }
        assert_eq!(asked.get(), 1);
        assert!(admission.admits(4 << 1, || true), "room again: admitted on a first read");
    }

    #[test]
    fn a_key_is_admitted_on_its_second_read() {
        let doorkeeper = Doorkeeper::new(1024);
        assert!(!doorkeeper.read_again(42));
        assert!(doorkeeper.read_again(42));
        assert!(doorkeeper.read_again(42), "and on every read after");
    }

    #[test]
    fn a_key_whose_slot_was_taken_since_starts_over() {
        let doorkeeper = Doorkeeper::new(1024);
        let slots = 1024u64;
        // Same slot (bits 1.. equal modulo the slot count), different keys.
        let (first, second) = (7 << 1, (7 + slots) << 1);
        assert!(!doorkeeper.read_again(first));
        assert!(!doorkeeper.read_again(second));
        assert!(!doorkeeper.read_again(first), "forgotten: its slot holds the other key");
        assert!(doorkeeper.read_again(first));
    }

    #[test]
    fn reads_spread_over_many_more_keys_than_it_remembers_are_rarely_admitted() {
        let doorkeeper = Doorkeeper::new(4096);
        let keys = 100_000u64;
        // Two passes over many keys: each key's second read comes 100 000 reads after its first.
        let admitted =
            (0..2 * keys).filter(|n| doorkeeper.read_again((n % keys).wrapping_mul(0x9E37_79B9_7F4A_7C15))).count();
        assert!(admitted < 100, "{admitted} of {keys} second reads admitted");
    }

    #[test]
    fn sizes_follow_the_memory_tier() {
        assert_eq!(Doorkeeper::keys_for(8 << 20, 1024), 8192);
        assert_eq!(Doorkeeper::new(8192).slots.len(), 8192);
        assert_eq!(Doorkeeper::new(5000).slots.len(), 8192);
        assert_eq!(Doorkeeper::new(0).slots.len(), 1024);
        assert_eq!(Doorkeeper::new(usize::MAX).slots.len(), 1 << 22);
    }
}
