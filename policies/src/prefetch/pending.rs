//! Predictions waiting for their delay (fetched then if the client has not asked meanwhile).
//! Each holds a copy of its triggering request (its headers: up to 64 KiB), so the set is
//! bounded in count and in bytes, over all clients and per client: what does not fit is
//! dropped (and counted so by the caller), never queued.

use std::collections::{BTreeMap, HashMap};

/// How much the pending set may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub max: usize,
    pub max_bytes: usize,
    pub per_client: usize,
    pub per_client_bytes: usize,
}

impl Default for Bounds {
    /// 1 000 pending and 16 MiB in all: a busy route defers a few hundred reads per `delay`,
    /// and typical heads are a few KiB. 16 and 1 MiB per client: a client reads one page at a
    /// time, and two predictions per read at most, so 16 is a dozen reads within one `delay`;
    /// 1 MiB holds 16 heads of 64 KiB (the largest head mcp-edge accepts).
    fn default() -> Self {
        Bounds { max: 1_000, max_bytes: 16 << 20, per_client: 16, per_client_bytes: 1 << 20 }
    }
}

/// Why a prediction was not kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// The whole set is full (count or bytes).
    All,
    /// The client's share is full (count or bytes).
    Client,
}

struct Waiting<T> {
    client: u64,
    bytes: usize,
    item: T,
}

/// The pending predictions, by when they are due.
pub struct Pending<T> {
    bounds: Bounds,
    waiting: BTreeMap<(u64, u64), Waiting<T>>,
    /// Per client: (count, bytes) pending; a client with nothing pending has no entry.
    clients: HashMap<u64, (usize, usize)>,
    bytes: usize,
    sequence: u64,
}

impl<T> Pending<T> {
    pub fn new(bounds: Bounds) -> Pending<T> {
        Pending { bounds, waiting: BTreeMap::new(), clients: HashMap::new(), bytes: 0, sequence: 0 }
    }

    /// Keeps `item` (of `bytes`, for `client`) until `due_ms`, if it fits.
    pub fn push(&mut self, client: u64, bytes: usize, due_ms: u64, item: T) -> Result<(), Full> {
        let bounds = self.bounds;
        if self.waiting.len() >= bounds.max || self.bytes.saturating_add(bytes) > bounds.max_bytes {
            return Err(Full::All);
        }
        let (count, held) = self.clients.get(&client).copied().unwrap_or_default();
        if count >= bounds.per_client || held.saturating_add(bytes) > bounds.per_client_bytes {
            return Err(Full::Client);
        }
        self.clients.insert(client, (count + 1, held + bytes));
        self.bytes += bytes;
        self.sequence += 1;
        self.waiting.insert((due_ms, self.sequence), Waiting { client, bytes, item });
        Ok(())
    }

    /// When the next one is due.
    pub fn next_due(&self) -> Option<u64> {
        self.waiting.keys().next().map(|(due, _)| *due)
    }

    /// Takes the next one if it is due at `now_ms`.
    pub fn pop_due(&mut self, now_ms: u64) -> Option<T> {
        let entry = self.waiting.first_entry().filter(|e| e.key().0 <= now_ms)?;
        let Waiting { client, bytes, item } = entry.remove();
        self.bytes -= bytes;
        if let Some((count, held)) = self.clients.get_mut(&client) {
            *count -= 1;
            *held -= bytes;
            if *count == 0 {
                self.clients.remove(&client);
            }
        }
        Some(item)
    }

    /// Pending predictions and the bytes they hold.
    pub fn held(&self) -> (usize, usize) {
        (self.waiting.len(), self.bytes)
    }

    /// Clients with something pending.
    pub fn clients(&self) -> usize {
        self.clients.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Bounds {
        Bounds { max: 4, max_bytes: 1000, per_client: 2, per_client_bytes: 300 }
    }

    #[test]
    fn a_client_gets_its_share_and_no_more() {
        let mut pending = Pending::new(small());
        assert_eq!(pending.push(1, 100, 10, 'a'), Ok(()));
        assert_eq!(pending.push(1, 100, 10, 'b'), Ok(()));
        assert_eq!(pending.push(1, 1, 10, 'c'), Err(Full::Client), "count");
        assert_eq!(pending.push(2, 301, 10, 'c'), Err(Full::Client), "bytes");
        assert_eq!(pending.push(2, 300, 10, 'c'), Ok(()));
        assert_eq!(pending.held(), (3, 500));
    }

    #[test]
    fn the_whole_set_is_bounded_in_count_and_bytes() {
        let mut pending = Pending::new(small());
        for client in 0..4 {
            assert_eq!(pending.push(client, 200, 10, client), Ok(()));
        }
        assert_eq!(pending.push(9, 1, 10, 9), Err(Full::All), "count");
        let mut by_bytes = Pending::new(Bounds { max: 100, ..small() });
        for client in 0..5 {
            assert_eq!(by_bytes.push(client, 200, 10, client), Ok(()));
        }
        assert_eq!(by_bytes.push(9, 1, 10, 9), Err(Full::All), "bytes");
        // Thousands of hits carrying large heads hold no more than the bounds.
        let mut flood = Pending::new(Bounds::default());
        let kept = (0..3_000u64).filter(|n| flood.push(n % 7, 60 << 10, 5_000, *n).is_ok()).count();
        let (count, bytes) = flood.held();
        assert_eq!(count, kept);
        assert!(bytes <= 7 << 20, "{bytes}: at most 1 MiB for each of the 7 clients");
        assert_eq!(kept, 7 * 16, "16 heads of 60 KiB fit a client's MiB");
    }

    #[test]
    fn what_is_due_comes_out_in_order_and_frees_its_room() {
        let mut pending = Pending::new(small());
        pending.push(1, 100, 30, 'c').unwrap();
        pending.push(1, 100, 10, 'a').unwrap();
        pending.push(2, 100, 20, 'b').unwrap();
        assert_eq!(pending.next_due(), Some(10));
        assert_eq!(pending.pop_due(5), None, "not yet");
        assert_eq!(pending.pop_due(25), Some('a'));
        assert_eq!(pending.pop_due(25), Some('b'));
        assert_eq!(pending.pop_due(25), None);
        assert_eq!(pending.clients(), 1);
        assert_eq!(pending.push(1, 100, 40, 'd'), Ok(()), "client 1 has room again");
        assert_eq!(pending.pop_due(100), Some('c'));
        assert_eq!(pending.pop_due(100), Some('d'));
        assert_eq!((pending.held(), pending.clients()), ((0, 0), 0));
    }
}
