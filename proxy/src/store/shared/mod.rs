//! The shared tier's I/O (`[cache.shared]`): entries and invalidation markers in Redis (one
//! server, or a Redis/Valkey Cluster: `link`), read and written through one reconnecting
//! multiplexed connection, and a subscription to the other nodes' invalidations
//! (`subscription`); markers and announcements are written in `invalidation`; on a cluster,
//! which masters it reports reachable is read in `masters`. The rules (names, lives, announcements, the breaker, what is trusted of
//! what is read back) are in `mcp_edge_policies::shared_tier`.
//!
//! Nothing that works without the shared tier fails because of it: every operation has a
//! short deadline and counts as a miss when it passes, a breaker stops asking a failing server
//! for a while, writes and announcements never delay a client, and invalidations made while
//! the server is away, or refusing them, are announced when it takes them (`subscription`).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use mcp_edge_policies::cache::Key;
use mcp_edge_policies::config::{SecretFile, SharedConfig, SharedServers};
use mcp_edge_policies::shared_tier::{
    self, Admit, Breaker, Bucket, NONCE_LEN, Names, Pending, SEALING_OVERHEAD, Secret, entry_life_ms, marker_ms,
};
use serde::Serialize;

use super::markers::Markers;
use super::now_ms;
use crate::metrics::{METRICS, cache_operation};
use invalidation::RewriteLater;
use link::Link;
use masters::Masters;
use memory::RedisMemory;
use subscription::{listen, retry_pending};

mod invalidation;
mod link;
mod masters;
mod memory;
mod nodes;
mod subscription;

/// Invalidations kept while the server is away, before they collapse into "everything".
const PENDING_CAPACITY: usize = 10_000;
/// How often an idle subscription is checked (a PING), and how long the check may take.
const SUBSCRIPTION_CHECK: Duration = Duration::from_secs(5);
/// Waits between attempts to subscribe (and reconnect) again: from the first to the longest,
/// doubling. Short: a node back within a quarter second of the server hears what was
/// announced since (a refused connection costs the server nothing).
const RESUBSCRIBE_FIRST: Duration = Duration::from_millis(100);
const RESUBSCRIBE_LONGEST: Duration = Duration::from_millis(250);

/// A lookup's read: the values of KEYS, the first ARGV[2] of them entries read only when at
/// most ARGV[1] bytes long, the others markers read only when at most 32 bytes (a time in ms):
/// whoever wrote a longer value, a node never takes more than that into its memory (an `MGET`
/// would read whatever is there). Missing, longer or not a string: nil.
const READ_SCRIPT: &str = r"
local out = {}
local entries = tonumber(ARGV[2])
for i, key in ipairs(KEYS) do
  local limit = 32
  if i <= entries then limit = tonumber(ARGV[1]) end
  local length = redis.pcall('STRLEN', key)
  if type(length) == 'number' and length > 0 and length <= limit then
    out[i] = redis.call('GET', key)
  else
    out[i] = false
  end
end
return out
";

pub struct SharedTier {
    names: Names,
    /// The nodes' shared secret (`secret_file`): values sealed, announcements signed.
    secret: Option<Arc<Secret>>,
    nonces: ring::rand::SystemRandom,
    timeout: Duration,
    max_entry_size: u64,
    ttl_cap: Duration,
    /// Swapped for a new one when a cluster's stays unanswered (see `on_cluster_answer`).
    connection: ArcSwap<Link>,
    /// On a cluster: how to make a new connection, and when it last answered.
    cluster: Option<ClusterRepair>,
    invalidate_script: redis::Script,
    read_script: redis::Script,
    breaker: Mutex<Breaker>,
    pending: Mutex<Pending>,
    /// Invalidations announced whose markers the server refused (out of memory): written
    /// again until it takes them, so a node that starts later still finds them.
    unwritten: Mutex<Pending>,
    /// Invalidations taken out of `pending` or `unwritten` to be offered again, not yet
    /// answered: still held back, as far as `/readyz` is concerned.
    offering: std::sync::atomic::AtomicUsize,
    /// On a cluster: invalidations to write a second time (see `RewriteLater`).
    rewrite_later: Mutex<RewriteLater>,
    /// This process, in its announcements (it ignores its own).
    node: u64,
    health: Health,
    memory: Arc<RedisMemory>,
    /// On a cluster, its masters as it reports them.
    masters: Arc<Masters>,
    /// On a cluster, the buckets (bit set) on masters this node refuses to connect to (see
    /// `nodes`): neither read nor written, rather than failing (and opening the breaker) on
    /// every request.
    refused_buckets: AtomicU32,
    runtime: tokio::runtime::Handle,
}

/// What the shared tier held under one entry key, and the markers read beside it (from its
/// bucket: on a cluster every marker is written into every bucket).
pub struct SharedRead {
    pub held: Held,
    /// The latest invalidation of any target asked for (0: none), markers from the future
    /// left out.
    pub newest_marker_ms: u64,
    /// The latest invalidation of the entries kept on mcp-edge's own TTL (a write through
    /// the route; see `Target::Unhinted`), markers from the future left out.
    pub own_ttl_marker_ms: u64,
}

/// What the shared tier held under one entry key.
pub enum Held {
    Nothing,
    /// A value that does not open with the secret (altered, moved, forged, or sealed with
    /// another secret), or a plain one where sealed ones are expected.
    Refused,
    /// The encoded entry.
    Value(Vec<u8>),
}

/// The shared tier's state, for `/readyz` and the metrics.
#[derive(Debug, Clone, Serialize)]
pub struct SharedStatus {
    /// `up`, or `degraded` while the node goes on without it.
    pub state: &'static str,
    pub subscribed: bool,
    pub breaker_open: bool,
    /// When it was last found unreachable (ms since the epoch), if it was.
    pub down_since_ms: Option<u64>,
    pub last_error: Option<String>,
    /// Invalidations waiting to be announced.
    pub pending_invalidations: bool,
    /// Bytes the Redis server uses (all of it, not only this tier's; on a cluster, summed over
    /// the masters that answered), once read.
    pub memory_bytes: Option<u64>,
    /// The server's `maxmemory`, when it has one.
    pub max_memory_bytes: Option<u64>,
    /// On a cluster: its masters, as the cluster last reported them (empty until read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub masters: Option<Vec<masters::Master>>,
}

/// What it takes to replace a cluster connection that stopped answering.
struct ClusterRepair {
    client: redis::cluster::ClusterClient,
    answered_ms: AtomicU64,
    replaced_ms: AtomicU64,
}

/// How long a cluster connection may go without answering before it is replaced. The redis
/// crate's cluster client (1.8) was seen to hang in the slot refresh it starts when a master
/// dies, never routing again to the replica that took over; a new connection learns the slots
/// afresh.
const CLUSTER_UNANSWERED: Duration = Duration::from_secs(2);

#[derive(Default)]
struct Health {
    subscribed: AtomicBool,
    down_since_ms: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl SharedTier {
    /// Connects (lazily: a server down at start is reached once it is up) and starts listening
    /// for other nodes' invalidations. Fails only on configuration (an unreadable password
    /// file, a URL the client refuses).
    pub(super) fn open(config: &SharedConfig, markers: Arc<Markers>) -> Result<Arc<SharedTier>, String> {
        let secret = config.secret_file.as_ref().map(read_secret).transpose()?.map(Arc::new);
        let runtime = io_runtime();
        let reach = {
            let _inside = runtime.enter();
            link::reach(config, RESUBSCRIBE_LONGEST)?
        };
        let names = match &config.servers {
            SharedServers::One(_) => Names::new(&config.key_prefix, secret.as_deref()),
            SharedServers::Cluster(_) => Names::clustered(&config.key_prefix, secret.as_deref()),
        };
        let tier = Arc::new(SharedTier {
            names,
            secret,
            nonces: ring::rand::SystemRandom::new(),
            timeout: config.timeout,
            max_entry_size: config.max_entry_size,
            ttl_cap: config.ttl_cap,
            connection: ArcSwap::from_pointee(reach.link),
            cluster: reach.cluster.map(|client| ClusterRepair {
                client,
                answered_ms: AtomicU64::new(now_ms()),
                replaced_ms: AtomicU64::new(0),
            }),
            invalidate_script: redis::Script::new(invalidation::INVALIDATE_SCRIPT),
            read_script: redis::Script::new(READ_SCRIPT),
            breaker: Mutex::new(Breaker::default()),
            pending: Mutex::new(Pending::with_capacity(PENDING_CAPACITY)),
            unwritten: Mutex::new(Pending::with_capacity(PENDING_CAPACITY)),
            offering: Default::default(),
            rewrite_later: Mutex::default(),
            node: node_id(),
            health: Health::default(),
            memory: Arc::default(),
            masters: Arc::default(),
            refused_buckets: AtomicU32::new(0),
            runtime: runtime.clone(),
        });
        runtime.spawn(SharedTier::watch(Arc::downgrade(&tier), reach.guard));
        // Until it listens, the node may miss any announcement: nothing in its local tiers
        // from before (a disk tier of an earlier process) is trusted.
        markers.trust_local_after(now_ms());
        METRICS.shared_tier_up.set(0);
        runtime.spawn(listen(Arc::downgrade(&tier), reach.subscribers, markers));
        runtime.spawn(retry_pending(Arc::downgrade(&tier)));
        Ok(tier)
    }

    /// Reads the entries under `entry_keys`, each with the markers of `marker_keys`, the
    /// route's own-TTL marker (`own_ttl_marker`) and the everything marker beside it: one
    /// `MGET` per bucket the entries fall in (one server: one bucket; a cluster: each `MGET` in
    /// one slot), sent together. `None`: the tier was not asked (breaker open) or one `MGET`
    /// was not answered in time.
    pub async fn read(&self, entry_keys: &[Key], marker_keys: &[Key], own_ttl_marker: &Key) -> Option<Vec<SharedRead>> {
        let named: Vec<(String, Bucket)> = entry_keys.iter().map(|key| self.names.entry(key)).collect();
        let mut buckets: Vec<Bucket> = named.iter().map(|(_, bucket)| *bucket).collect();
        buckets.sort_unstable();
        buckets.dedup();
        let reads = buckets.iter().map(|&bucket| self.read_bucket(bucket, &named, marker_keys, own_ttl_marker));
        let mut read: Vec<Option<SharedRead>> = (0..named.len()).map(|_| None).collect();
        for bucket_read in futures_util::future::join_all(reads).await {
            for (index, entry) in bucket_read? {
                read[index] = Some(entry);
            }
        }
        read.into_iter().collect()
    }

    /// Reads the entries of `named` that are in `bucket`, and the markers in that bucket:
    /// each entry's index in `named` with what it held.
    async fn read_bucket(
        &self,
        bucket: Bucket,
        named: &[(String, Bucket)],
        marker_keys: &[Key],
        own_ttl_marker: &Key,
    ) -> Option<Vec<(usize, SharedRead)>> {
        let here: Vec<usize> = (0..named.len()).filter(|&i| named[i].1 == bucket).collect();
        if self.refuses(bucket) {
            let nothing = || SharedRead { held: Held::Nothing, newest_marker_ms: 0, own_ttl_marker_ms: 0 };
            return Some(here.into_iter().map(|i| (i, nothing())).collect());
        }
        let mut invocation = self.read_script.prepare_invoke();
        for &i in &here {
            invocation.key(&named[i].0);
        }
        for key in marker_keys {
            invocation.key(self.names.marker(bucket, key));
        }
        invocation.key(self.names.marker(bucket, own_ttl_marker));
        invocation.key(self.names.everything_marker(bucket));
        invocation.arg(self.max_entry_size + SEALING_OVERHEAD as u64).arg(here.len());
        let mut connection = self.link();
        let asked = invocation.invoke_async::<Vec<Option<Vec<u8>>>>(&mut connection);
        let mut values = self.run("lookup", Kind::Read, asked).await?;
        if values.len() != here.len() + marker_keys.len() + 2 {
            return None;
        }
        let now = now_ms();
        let mut markers = values.split_off(here.len());
        let everything = markers.pop().flatten();
        let own_ttl = markers.pop().flatten();
        let newest = |texts: &mut dyn Iterator<Item = &Vec<u8>>| texts.filter_map(|text| marker_ms(text, now)).max();
        let newest_marker_ms = newest(&mut markers.iter().flatten().chain(&everything)).unwrap_or(0);
        let own_ttl_marker_ms = newest(&mut own_ttl.iter()).unwrap_or(0);
        let entries = values.into_iter().zip(here).map(|(value, i)| {
            (i, SharedRead { held: self.open_value(&named[i].0, value), newest_marker_ms, own_ttl_marker_ms })
        });
        Some(entries.collect())
    }

    /// A value read under `name`, opened with the secret if there is one.
    fn open_value(&self, name: &str, value: Option<Vec<u8>>) -> Held {
        match (value, &self.secret) {
            (None, _) => Held::Nothing,
            (Some(value), None) => Held::Value(value),
            (Some(sealed), Some(secret)) => secret.open(name, &sealed).map_or(Held::Refused, Held::Value),
        }
    }

    /// Writes an entry for the other nodes, in the background. It lives there while it could
    /// be served (`stale_if_error` past expiry), at most `ttl_cap`.
    pub fn write(self: &Arc<Self>, key: Key, encoded: Bytes, expires_at_ms: u64, stale_if_error: Duration) {
        if encoded.len() as u64 > self.max_entry_size {
            cache_operation("write", "shared", "too_large").inc();
            return;
        }
        let Some(life_ms) = entry_life_ms(now_ms(), expires_at_ms, stale_if_error, self.ttl_cap) else { return };
        let (name, bucket) = self.names.entry(&key);
        if self.refuses(bucket) {
            return;
        }
        let tier = self.clone();
        self.runtime.spawn(async move {
            let value = match &tier.secret {
                Some(secret) => {
                    let mut nonce = [0u8; NONCE_LEN];
                    if ring::rand::SecureRandom::fill(&tier.nonces, &mut nonce).is_err() {
                        cache_operation("write", "shared", "error").inc();
                        return;
                    }
                    secret.seal(&name, &encoded, nonce)
                }
                None => encoded.to_vec(),
            };
            let mut command = redis::cmd("SET");
            command.arg(&name).arg(value).arg("PX").arg(life_ms);
            let mut connection = tier.link();
            if tier.run("write", Kind::Write, command.query_async::<()>(&mut connection)).await.is_some() {
                cache_operation("write", "shared", "ok").inc();
            }
        });
    }

    /// The longest life of a shared entry (ms).
    pub fn ttl_cap_ms(&self) -> u64 {
        self.ttl_cap.as_millis() as u64
    }

    pub fn status(&self) -> SharedStatus {
        let subscribed = self.health.subscribed.load(Ordering::Acquire);
        let breaker_open = self.breaker.lock().expect("breaker").is_open();
        let down_since = self.health.down_since_ms.load(Ordering::Acquire);
        let up = is_up(subscribed, breaker_open);
        SharedStatus {
            state: if up { "up" } else { "degraded" },
            subscribed,
            breaker_open,
            // Cleared by the next answered read; until then, not shown beside "up".
            down_since_ms: (!up && down_since != 0).then_some(down_since),
            last_error: self.health.last_error.lock().expect("last error").clone(),
            pending_invalidations: !self.pending.lock().expect("pending").is_empty()
                || !self.unwritten.lock().expect("unwritten").is_empty()
                || self.offering.load(Ordering::Acquire) > 0,
            memory_bytes: self.memory.used(),
            max_memory_bytes: self.memory.limit(),
            masters: self.cluster.is_some().then(|| self.masters.list()),
        }
    }

    /// Waits (up to a second) for the command connection to answer a PING. Once subscribed
    /// again after an outage it may still be waiting to reconnect: the breaker closed before
    /// it answers would open again on the first reads' timeouts.
    async fn commands_answer(&self) {
        let started = tokio::time::Instant::now();
        while started.elapsed() < Duration::from_secs(1) {
            let mut connection = self.link();
            let ping = redis::cmd("PING");
            let answered = tokio::time::timeout(Duration::from_millis(250), ping.query_async::<()>(&mut connection));
            if matches!(answered.await, Ok(Ok(()))) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Runs one command under the breaker and the deadline; its answer, or `None` (counted as
    /// `skipped`, `timeout` or `error` under `operation`). Only reads open and close the
    /// breaker: a server refusing writes (out of memory) may still answer every read.
    async fn run<T>(
        &self,
        operation: &str,
        kind: Kind,
        command: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Option<T> {
        let skip = match kind {
            Kind::Read => self.breaker.lock().expect("breaker").admit(now_ms()) == Admit::Skip,
            Kind::Write => self.breaker.lock().expect("breaker").is_open(),
        };
        if skip {
            cache_operation(operation, "shared", "skipped").inc();
            return None;
        }
        let outcome = tokio::time::timeout(self.timeout, command).await;
        self.on_cluster_answer(matches!(outcome, Ok(Ok(_))));
        let failure = match outcome {
            Ok(Ok(value)) => {
                if kind == Kind::Write {
                    return Some(value);
                }
                self.breaker.lock().expect("breaker").succeeded();
                if self.health.subscribed.load(Ordering::Acquire) {
                    self.health.down_since_ms.store(0, Ordering::Release);
                }
                self.refresh_gauge();
                return Some(value);
            }
            Ok(Err(e)) if !e.is_timeout() => ("error", e.to_string()),
            // Past the deadline, or the connection's own response timeout (the same deadline).
            _ => ("timeout", format!("no answer within {:?}", self.timeout)),
        };
        cache_operation(operation, "shared", failure.0).inc();
        if kind == Kind::Write {
            *self.health.last_error.lock().expect("last error") = Some(failure.1);
            return None;
        }
        self.breaker.lock().expect("breaker").failed(now_ms());
        self.health.went_down(&failure.1);
        self.refresh_gauge();
        None
    }

    /// The connection commands go through now.
    fn link(&self) -> Link {
        Link::clone(&self.connection.load())
    }

    /// What the tier reports of its servers, read now and then: on a cluster its masters every
    /// 2 s, the memory used every 10 s.
    async fn watch(tier: Weak<SharedTier>, guard: Option<Arc<nodes::NodeGuard>>) {
        for round in 0u64.. {
            let Some(tier) = tier.upgrade() else { return };
            let mut link = tier.link();
            if let Some(guard) = &guard
                && let Some(refused_slots) = tier.masters.read(&mut link, guard).await
            {
                let refused = shared_tier::buckets_in(&tier.names, &refused_slots);
                if tier.refused_buckets.swap(refused, Ordering::Relaxed) != refused && refused != 0 {
                    tracing::warn!(
                        "shared tier: {} of {} buckets live on refused cluster nodes: their entries are misses on this node",
                        refused.count_ones(),
                        tier.names.buckets().len()
                    );
                }
            }
            if round % 5 == 0 {
                tier.memory.read(&mut link).await;
            }
            drop(tier);
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    /// Whether `bucket` lives on a cluster node this node refuses to connect to.
    fn refuses(&self, bucket: Bucket) -> bool {
        self.refused_buckets.load(Ordering::Relaxed) & 1 << bucket != 0
    }

    fn is_cluster(&self) -> bool {
        self.cluster.is_some()
    }

    /// On a cluster: notes whether a command was answered, and replaces the connection when
    /// none has been for [`CLUSTER_UNANSWERED`] (at most once per that time).
    fn on_cluster_answer(&self, answered: bool) {
        let Some(repair) = &self.cluster else { return };
        let now = now_ms();
        if answered {
            repair.answered_ms.store(now, Ordering::Release);
            return;
        }
        let quiet_ms = CLUSTER_UNANSWERED.as_millis() as u64;
        let last = repair.answered_ms.load(Ordering::Acquire).max(repair.replaced_ms.load(Ordering::Acquire));
        if now.saturating_sub(last) < quiet_ms {
            return;
        }
        if repair.replaced_ms.fetch_max(now, Ordering::AcqRel) > last {
            return; // Another caller is replacing it.
        }
        tracing::warn!("shared tier: the cluster connection went {quiet_ms} ms without an answer; connecting afresh");
        let _inside = self.runtime.enter();
        self.connection.store(Arc::new(link::cluster_connection(&repair.client)));
    }

    fn refresh_gauge(&self) {
        let subscribed = self.health.subscribed.load(Ordering::Acquire);
        let breaker_open = self.breaker.lock().expect("breaker").is_open();
        METRICS.shared_tier_up.set(is_up(subscribed, breaker_open) as i64);
    }
}

/// Whether a command reads (its failures open the breaker) or writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
}

/// Up: listening for announcements, and asked (the breaker closed).
fn is_up(subscribed: bool, breaker_open: bool) -> bool {
    subscribed && !breaker_open
}

impl Health {
    fn went_down(&self, error: &str) {
        let _ = self.down_since_ms.compare_exchange(0, now_ms(), Ordering::AcqRel, Ordering::Acquire);
        *self.last_error.lock().expect("last error") = Some(error.to_string());
    }

    fn came_back(&self) {
        self.down_since_ms.store(0, Ordering::Release);
        self.subscribed.store(true, Ordering::Release);
    }
}

/// Checks what opening the shared tier would check (`mcp-edge check`): the URLs, the password
/// file, the CA file and the secret file. Connecting is left to the start: the server may
/// rightly be down now.
pub fn check(config: &SharedConfig) -> Result<(), String> {
    link::check(config)?;
    config.secret_file.as_ref().map(read_secret).transpose().map(|_| ())
}

/// The nodes' secret: the file's first line, its line ending trimmed, at least
/// `MIN_SECRET_LEN` bytes. Errors start with the configuration's line naming the file.
fn read_secret(file: &SecretFile) -> Result<Secret, String> {
    let refused =
        |reason: String| format!("line {}: cache.shared.secret_file {}: {reason}", file.line, file.path.display());
    let text = std::fs::read(&file.path).map_err(|e| refused(format!("cannot read: {e}")))?;
    let line = text.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    Secret::new(line).map_err(refused)
}

/// A thread of its own for the connection's I/O, the subscription and the background writes,
/// at normal priority: a request that misses locally waits on it (the cache's I/O threads run
/// as `SCHED_BATCH`, which on a busy machine would delay every shared-tier answer).
fn io_runtime() -> tokio::runtime::Handle {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("shared-tier".into())
        .spawn(move || {
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().expect("shared-tier runtime");
            let _ = sender.send(runtime.handle().clone());
            // It serves the process's whole life.
            runtime.block_on(std::future::pending::<()>());
        })
        .expect("shared-tier thread");
    receiver.recv().expect("the shared-tier runtime starts")
}

/// A number that tells this process's announcements apart from other nodes'.
fn node_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.write_u64(now_ms());
    hasher.finish()
}
