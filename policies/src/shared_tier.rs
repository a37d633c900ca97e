//! The rules of the tier nodes share (`[cache.shared]`, on Redis), apart from its I/O: what
//! its keys are named, how long an entry lives there, what an invalidation message carries,
//! when to stop asking a server that fails, and what a node keeps of the invalidations it
//! could not publish.
//!
//! Coherence across nodes rests on two things. Every invalidation writes its markers into the
//! shared tier and publishes them in the same step; a node checks a shared entry against those
//! markers as it reads it, so the shared tier never answers with what was invalidated, even
//! to a node that has just started. A node's local tiers learn of other nodes' invalidations
//! only from the published messages: an entry a node stored locally before its current
//! subscription began may have missed one, so it is not served from the local tiers any more
//! (see [`Entry::confirmed`](crate::cache::entry::confirmed)) but read again from the shared
//! tier, which checks it.

use std::time::Duration;

use crate::cache::Key;

mod trust;
pub use trust::{
    CLOCK_SKEW_MS, Heard, MIN_SECRET_LEN, NONCE_LEN, SEALING_OVERHEAD, Secret, Unusable, bounded_expiry,
    from_the_future, hear, marker_ms, publish,
};

/// Names of everything a deployment keeps in the shared server, all under its `key_prefix`.
/// Keys are digests: no URI, argument or credential can be read from them. With a secret,
/// entries and markers are named by keyed digests of their keys: without the secret, nobody
/// can tell which name holds what, or compute the name of a given request.
///
/// On a Redis Cluster (`clustered`) every name also carries a hash tag, one of
/// [`CLUSTER_BUCKETS`], which fixes its slot. An entry's bucket follows from its name's digest,
/// so entries spread evenly over the buckets; every invalidation marker is written into every
/// bucket (markers are few, small and written rarely), so an entry and every marker that could
/// kill it are read by one `MGET` in one slot. The buckets' slots are spread evenly over the
/// 16 384 (see [`bucket_tags`]): a cluster whose masters hold even ranges of slots (as
/// `redis-cli --cluster create` makes them) gets an even share of buckets on each master,
/// rather than one hot slot for the whole deployment.
#[derive(Debug, Clone)]
pub struct Names {
    prefix: String,
    keyed: Option<ring::hmac::Key>,
    /// The buckets' hash tags on a cluster; empty on one server (names carry no tag).
    tags: Vec<String>,
}

/// How many buckets a deployment's names are spread over on a cluster: at most this many
/// masters share its load; each invalidation marker is written this many times.
pub const CLUSTER_BUCKETS: u16 = 16;

/// Hash slots of a Redis Cluster.
const CLUSTER_SLOTS: u16 = 16_384;

/// One bucket of names (always 0 on one server).
pub type Bucket = u16;

impl Names {
    /// Names on one server (no hash tags).
    pub fn new(prefix: &str, secret: Option<&Secret>) -> Names {
        Names { prefix: prefix.to_string(), keyed: secret.map(Secret::names_key), tags: Vec::new() }
    }

    /// Names on a cluster, spread over [`CLUSTER_BUCKETS`] hash tags.
    pub fn clustered(prefix: &str, secret: Option<&Secret>) -> Names {
        Names { tags: bucket_tags(CLUSTER_BUCKETS), ..Names::new(prefix, secret) }
    }

    /// The buckets names are spread over (one on a single server).
    pub fn buckets(&self) -> std::ops::Range<Bucket> {
        0..(self.tags.len().max(1) as Bucket)
    }

    /// Where the entry stored under `key` lives, and its bucket.
    pub fn entry(&self, key: &Key) -> (String, Bucket) {
        let digest = self.digest("e", key);
        let bucket =
            if self.tags.is_empty() { 0 } else { u16::from_be_bytes([digest[0], digest[1]]) % self.tags.len() as u16 };
        (self.name(bucket, "e", &digest), bucket)
    }

    /// Where the invalidation marker `key` (a `marker_key`) lives in `bucket`: the time of the
    /// latest invalidation of its target, in ms.
    pub fn marker(&self, bucket: Bucket, key: &Key) -> String {
        self.name(bucket, "m", &self.digest("m", key))
    }

    /// The marker that kills every entry, in `bucket`: set when a node could not keep the list
    /// of what it invalidated while the server was away.
    pub fn everything_marker(&self, bucket: Bucket) -> String {
        format!("{}everything", self.stem(bucket, "m"))
    }

    /// The pub/sub channel invalidations are announced on.
    pub fn channel(&self) -> String {
        format!("{}:invalidations", self.prefix)
    }

    fn digest(&self, kind: &str, key: &Key) -> [u8; 32] {
        match &self.keyed {
            Some(names) => {
                let mut context = ring::hmac::Context::with_key(names);
                context.update(kind.as_bytes());
                context.update(key);
                let mut digest = [0u8; 32];
                digest.copy_from_slice(context.sign().as_ref());
                digest
            }
            None => *key,
        }
    }

    /// `prefix:kind:` on one server, `prefix:{tag}:kind:` on a cluster.
    fn stem(&self, bucket: Bucket, kind: &str) -> String {
        let mut stem = String::with_capacity(self.prefix.len() + 16 + 64);
        stem.push_str(&self.prefix);
        stem.push(':');
        if let Some(tag) = self.tags.get(usize::from(bucket)) {
            stem.push('{');
            stem.push_str(tag);
            stem.push_str("}:");
        }
        stem.push_str(kind);
        stem.push(':');
        stem
    }

    fn name(&self, bucket: Bucket, kind: &str, digest: &[u8; 32]) -> String {
        let mut name = self.stem(bucket, kind);
        // By hand: `write!` with `{:02x}` took 400 ns for 32 bytes.
        crate::hex::push(&mut name, digest);
        name
    }
}

/// Hash tags for `count` buckets whose slots are spread evenly over the cluster's 16 384: the
/// tag of bucket `i` is the smallest number (as text) whose slot lies in the `i`-th of `count`
/// equal ranges. The same on every node (no configuration), and short.
pub fn bucket_tags(count: u16) -> Vec<String> {
    let width = u32::from(CLUSTER_SLOTS).div_ceil(u32::from(count.max(1)));
    let mut tags: Vec<Option<String>> = vec![None; usize::from(count)];
    let mut found = 0;
    let mut n: u32 = 0;
    while found < tags.len() {
        let tag = n.to_string();
        let range = (u32::from(cluster_slot(tag.as_bytes())) / width) as usize;
        if let Some(slot @ None) = tags.get_mut(range) {
            *slot = Some(tag);
            found += 1;
        }
        n += 1;
    }
    tags.into_iter().flatten().collect()
}

/// The cluster slot of a name (or of a hash tag's content): CRC16 (XMODEM) mod 16 384, as
/// Redis computes it.
pub fn cluster_slot(name: &[u8]) -> u16 {
    let tagged = name
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let inner = &name[open + 1..];
            inner.iter().position(|&b| b == b'}').filter(|&close| close > 0).map(|close| &inner[..close])
        })
        .unwrap_or(name);
    crc16::State::<crc16::XMODEM>::calculate(tagged) % CLUSTER_SLOTS
}

/// How long (ms) an entry stored now lives in the shared tier: until it can no longer be
/// served even as stale, capped by `ttl_cap`. `None`: it would not live at all.
pub fn entry_life_ms(now_ms: u64, expires_at_ms: u64, stale_if_error: Duration, ttl_cap: Duration) -> Option<u64> {
    let servable_until = expires_at_ms.saturating_add(stale_if_error.as_millis() as u64);
    let life = servable_until.saturating_sub(now_ms).min(ttl_cap.as_millis() as u64);
    (life > 0).then_some(life)
}

/// How long (ms) an invalidation marker lives in the shared tier: longer than any entry it can
/// kill (those live at most `ttl_cap`, from a store that follows their fetch closely).
pub fn marker_life_ms(ttl_cap: Duration) -> u64 {
    ttl_cap.as_millis() as u64 + 5 * 60 * 1000
}

/// One invalidation as announced to the other nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    /// The node that invalidated (a node ignores its own announcements).
    pub node: u64,
    /// When (wall clock, ms): entries fetched up to then are dead.
    pub at_ms: u64,
    pub what: Invalidated,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidated {
    /// The targets of these marker keys.
    Markers(Vec<Key>),
    /// Every entry.
    Everything,
}

const ANNOUNCEMENT_MAGIC: u8 = 0xA1;
const KIND_MARKERS: u8 = 1;
const KIND_EVERYTHING: u8 = 2;

impl Announcement {
    /// Magic, kind, node, time, then the marker keys (32 bytes each).
    pub fn encode(&self) -> Vec<u8> {
        let keys: &[Key] = match &self.what {
            Invalidated::Markers(keys) => keys,
            Invalidated::Everything => &[],
        };
        let mut out = Vec::with_capacity(18 + keys.len() * 32);
        out.push(ANNOUNCEMENT_MAGIC);
        out.push(match self.what {
            Invalidated::Markers(_) => KIND_MARKERS,
            Invalidated::Everything => KIND_EVERYTHING,
        });
        out.extend_from_slice(&self.node.to_le_bytes());
        out.extend_from_slice(&self.at_ms.to_le_bytes());
        for key in keys {
            out.extend_from_slice(key);
        }
        out
    }

    /// `None` for anything that is not an announcement (another program on the channel).
    pub fn decode(bytes: &[u8]) -> Option<Announcement> {
        let (&[magic, kind], rest) = bytes.split_first_chunk::<2>()?;
        let (node, rest) = rest.split_first_chunk::<8>()?;
        let (at_ms, keys) = rest.split_first_chunk::<8>()?;
        if magic != ANNOUNCEMENT_MAGIC {
            return None;
        }
        let what = match kind {
            KIND_EVERYTHING if keys.is_empty() => Invalidated::Everything,
            KIND_MARKERS if !keys.is_empty() && keys.len() % 32 == 0 => {
                Invalidated::Markers(keys.chunks_exact(32).map(|k| k.try_into().expect("32 bytes")).collect())
            }
            _ => return None,
        };
        Some(Announcement { node: u64::from_le_bytes(*node), at_ms: u64::from_le_bytes(*at_ms), what })
    }
}

/// Invalidations a node made while the shared server was unreachable, to write and announce
/// once it is back. Bounded: past `capacity` markers it keeps only "everything, as of the
/// latest", which kills more than needed but misses nothing.
#[derive(Debug, Default)]
pub struct Pending {
    markers: Vec<(Key, u64)>,
    everything_at_ms: Option<u64>,
    capacity: usize,
}

impl Pending {
    pub fn with_capacity(capacity: usize) -> Pending {
        Pending { capacity, ..Pending::default() }
    }

    pub fn add(&mut self, keys: &[Key], at_ms: u64) {
        if self.everything_at_ms.is_some() || self.markers.len() + keys.len() > self.capacity {
            self.add_everything(at_ms);
            return;
        }
        self.markers.extend(keys.iter().map(|key| (*key, at_ms)));
    }

    /// Everything, as of the latest time kept or given: the markers it replaces may be later
    /// than `at_ms`.
    pub fn add_everything(&mut self, at_ms: u64) {
        let latest = self.markers.drain(..).map(|(_, at)| at).fold(at_ms, u64::max);
        self.everything_at_ms = Some(self.everything_at_ms.map_or(latest, |at| at.max(latest)));
    }

    /// Keeps an announcement that could not be sent, whatever it invalidates.
    pub fn keep(&mut self, announcement: &Announcement) {
        match &announcement.what {
            Invalidated::Markers(keys) => self.add(keys, announcement.at_ms),
            Invalidated::Everything => self.add_everything(announcement.at_ms),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.markers.is_empty() && self.everything_at_ms.is_none()
    }

    /// Everything pending, as announcements of `node` (one per distinct time), emptied.
    pub fn take(&mut self, node: u64) -> Vec<Announcement> {
        if let Some(at_ms) = self.everything_at_ms.take() {
            self.markers.clear();
            return vec![Announcement { node, at_ms, what: Invalidated::Everything }];
        }
        let mut announcements: Vec<Announcement> = Vec::new();
        for (key, at_ms) in self.markers.drain(..) {
            match announcements.last_mut() {
                Some(Announcement { at_ms: last, what: Invalidated::Markers(keys), .. }) if *last == at_ms => {
                    keys.push(key)
                }
                _ => announcements.push(Announcement { node, at_ms, what: Invalidated::Markers(vec![key]) }),
            }
        }
        announcements
    }
}

/// Stops a node from asking a shared server that keeps failing: after `FAILURES_TO_OPEN`
/// failures in a row it is not asked for a while (1 s, doubling while it stays down, up to
/// 30 s); then one request tries it again, and a success closes the breaker.
#[derive(Debug, Clone, Default)]
pub struct Breaker {
    failures_in_a_row: u32,
    open_until_ms: u64,
    /// How long the breaker stays open next time it opens (ms; 0 before the first time).
    next_open_ms: u64,
    /// One request was let through to try the server again and has not answered yet.
    probing: bool,
}

pub const FAILURES_TO_OPEN: u32 = 3;
const FIRST_OPEN_MS: u64 = 1_000;
const LONGEST_OPEN_MS: u64 = 30_000;

/// What a breaker lets through now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Ask the server.
    Ask,
    /// Ask the server: the one request trying it again after it failed.
    Probe,
    /// Do not ask: go on without the shared tier.
    Skip,
}

impl Breaker {
    pub fn admit(&mut self, now_ms: u64) -> Admit {
        if self.failures_in_a_row < FAILURES_TO_OPEN {
            return Admit::Ask;
        }
        if now_ms < self.open_until_ms || self.probing {
            return Admit::Skip;
        }
        self.probing = true;
        Admit::Probe
    }

    pub fn succeeded(&mut self) {
        *self = Breaker::default();
    }

    pub fn failed(&mut self, now_ms: u64) {
        self.failures_in_a_row = self.failures_in_a_row.saturating_add(1);
        self.probing = false;
        // Failures of requests let through before it opened do not keep it open longer.
        if self.failures_in_a_row >= FAILURES_TO_OPEN && now_ms >= self.open_until_ms {
            self.next_open_ms = (self.next_open_ms * 2).clamp(FIRST_OPEN_MS, LONGEST_OPEN_MS);
            self.open_until_ms = now_ms + self.next_open_ms;
        }
    }

    /// Whether the server is being skipped (the node is degraded).
    pub fn is_open(&self) -> bool {
        self.failures_in_a_row >= FAILURES_TO_OPEN
    }
}

/// What Redis says of its memory in its `INFO memory` answer: the bytes it uses, and its
/// `maxmemory` (`None`: no limit set). `None` when the answer has no `used_memory` field.
pub fn redis_memory(info: &str) -> Option<(u64, Option<u64>)> {
    let field = |name: &str| {
        info.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(':')?.trim().parse::<u64>().ok())
    };
    Some((field("used_memory")?, field("maxmemory").filter(|&limit| limit > 0)))
}

/// The most masters a cluster's report is read for: what a server answers is bounded before
/// it becomes metric labels.
pub const MAX_REPORTED_MASTERS: usize = 64;

/// A master as a `CLUSTER NODES` answer lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterMaster {
    /// `host:port` of its client port.
    pub address: String,
    /// Unless flagged `fail` or `fail?`, or its link `disconnected`.
    pub reachable: bool,
    /// The slots it serves (ranges, inclusive).
    pub slots: Vec<(u16, u16)>,
}

/// The masters a `CLUSTER NODES` answer lists that serve slots or have failed, in its order.
/// A master without slots that has not failed (a node being added) is left out; a failed
/// master whose replica took its slots stays listed (as unreachable) until it comes back (as
/// a replica) or the cluster forgets it. At most [`MAX_REPORTED_MASTERS`]; lines that do not
/// parse are left out, as are slots being imported or migrated (`[…]`).
pub fn cluster_masters(nodes: &str) -> Vec<ClusterMaster> {
    nodes
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_ascii_whitespace().collect();
            let (address, flags, link) = (fields.get(1)?, fields.get(2)?, fields.get(7)?);
            let flags: Vec<&str> = flags.split(',').collect();
            if !flags.contains(&"master") {
                return None;
            }
            // `ip:port@cport[,hostname]`: the client port's address.
            let address = address.split(['@', ',']).next().filter(|a| !a.is_empty() && a.len() <= 64)?;
            let failed = flags.iter().any(|flag| *flag == "fail" || *flag == "fail?");
            let slots: Vec<(u16, u16)> = fields[8..].iter().filter_map(|range| slot_range(range)).collect();
            if slots.is_empty() && !failed {
                return None;
            }
            Some(ClusterMaster { address: address.to_string(), reachable: !failed && *link == "connected", slots })
        })
        .take(MAX_REPORTED_MASTERS)
        .collect()
}

/// `5461-10922` or `42`, within the cluster's slots.
fn slot_range(text: &str) -> Option<(u16, u16)> {
    let (first, last) = text.split_once('-').unwrap_or((text, text));
    let (first, last): (u16, u16) = (first.parse().ok()?, last.parse().ok()?);
    (first <= last && last < CLUSTER_SLOTS).then_some((first, last))
}

/// The buckets of `names` whose slot one of `ranges` holds, as a bit set (bit `b`: bucket
/// `b`); none on one server.
pub fn buckets_in(names: &Names, ranges: &[(u16, u16)]) -> u32 {
    names
        .tags
        .iter()
        .enumerate()
        .filter(|(_, tag)| {
            let slot = cluster_slot(tag.as_bytes());
            ranges.iter().any(|&(first, last)| (first..=last).contains(&slot))
        })
        .fold(0, |set, (bucket, _)| set | 1 << bucket)
}

#[cfg(test)]
mod tests;
