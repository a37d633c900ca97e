//! Which cached answers a prefetch stored, until a client reads them (used) or they expire
//! unread (wasted). Bounded: past `capacity`, the entry expiring first is counted wasted.

use std::collections::{BTreeMap, HashMap};

use super::Kind;
use crate::cache::Key;

#[derive(Debug)]
pub struct Tracker {
    capacity: usize,
    pending: HashMap<Key, (Kind, u64)>,
    /// (expiry ms, key), to find what expired without a scan.
    by_expiry: BTreeMap<(u64, Key), ()>,
}

impl Tracker {
    pub fn new(capacity: usize) -> Tracker {
        Tracker { capacity: capacity.max(1), pending: HashMap::new(), by_expiry: BTreeMap::new() }
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// A prefetch of `kind` stored the entry `key`, fresh until `expires_at_ms`. Returns the
    /// kinds of entries pushed out unread to make room (wasted).
    pub fn stored(&mut self, key: Key, kind: Kind, expires_at_ms: u64) -> Vec<Kind> {
        if let Some((_, old_expiry)) = self.pending.insert(key, (kind, expires_at_ms)) {
            self.by_expiry.remove(&(old_expiry, key));
        }
        self.by_expiry.insert((expires_at_ms, key), ());
        let mut wasted = Vec::new();
        while self.pending.len() > self.capacity {
            let Some(((_, oldest), ())) = self.by_expiry.pop_first() else { break };
            if let Some((kind, _)) = self.pending.remove(&oldest) {
                wasted.push(kind);
            }
        }
        wasted
    }

    /// A client read `key` from the cache: the kind of the prefetch that stored it, counted used
    /// once.
    pub fn read(&mut self, key: &Key) -> Option<Kind> {
        let (kind, expiry) = self.pending.remove(key)?;
        self.by_expiry.remove(&(expiry, *key));
        Some(kind)
    }

    /// Entries that expired unread by `now_ms` (wasted), by kind.
    pub fn expire(&mut self, now_ms: u64) -> Vec<Kind> {
        let mut wasted = Vec::new();
        while let Some(entry) = self.by_expiry.first_entry() {
            let (expiry, key) = *entry.key();
            if expiry > now_ms {
                break;
            }
            entry.remove();
            if let Some((kind, _)) = self.pending.remove(&key) {
                wasted.push(kind);
            }
        }
        wasted
    }
}
