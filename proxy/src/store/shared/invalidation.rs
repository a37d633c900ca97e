//! Invalidations through the shared tier: markers written into Redis and announcements
//! published to the other nodes, in one script; what the server could not take is kept and
//! offered again (see `subscription::retry_pending`).

use std::sync::Arc;
use std::time::Duration;

use mcp_edge_policies::cache::Key;
use mcp_edge_policies::shared_tier::{Announcement, Bucket, CLOCK_SKEW_MS, Invalidated, marker_life_ms, publish};

use redis::cluster_routing::{MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo};

use super::SharedTier;
use super::link::Link;
use crate::metrics::cache_operation;
use crate::store::now_ms;

/// Sets each marker to the announced time unless a later one is there (a marker from the
/// future, past `ARGV[5]`, is overwritten), then announces it (unless `ARGV[4]` is empty): one
/// step, so a node reading after it sees the marker and a node listening hears of it. A
/// server out of memory refuses the `SET`s but not the `PUBLISH` (nor this script, which
/// declares no flags): the announcement goes out anyway, and the answer (0) says the markers
/// must be written again.
pub(super) const INVALIDATE_SCRIPT: &str = r"
local written = 1
for _, key in ipairs(KEYS) do
  local current = tonumber(redis.call('GET', key) or '0') or 0
  if current < tonumber(ARGV[1]) or current > tonumber(ARGV[5]) then
    local set = redis.pcall('SET', key, ARGV[1], 'PX', ARGV[2])
    if type(set) == 'table' and set.err then written = 0 end
  end
end
if ARGV[4] ~= '' then redis.call('PUBLISH', ARGV[3], ARGV[4]) end
return written
";

/// On a cluster, an invalidation's markers are written a second time between one and two of
/// these after the first (see [`RewriteLater`]).
pub(super) const CLUSTER_REWRITE_AFTER: Duration = Duration::from_secs(10);

/// The most marker keys kept, per generation, to be written again: past it, a flood's extra
/// invalidations go without the second write (they were written once, and announced).
const REWRITE_CAPACITY: usize = 10_000;

/// Invalidations made on a cluster, kept to be written a second time: a master acknowledges a
/// write before its replica has it, and one that fails just after may lose the markers in the
/// failover. Two generations, rotated every [`CLUSTER_REWRITE_AFTER`]: what is made now is
/// written again after one to two rotations, past any such failover, by the same retries as
/// markers Redis refused (`unwritten`). Bounded whatever the rate of invalidations.
#[derive(Default)]
pub(super) struct RewriteLater {
    young: Vec<Announcement>,
    old: Vec<Announcement>,
    young_keys: usize,
}

impl RewriteLater {
    fn keep(&mut self, announcement: &Announcement) {
        let keys = match &announcement.what {
            Invalidated::Markers(keys) => keys.len(),
            Invalidated::Everything => 1,
        };
        if self.young_keys + keys <= REWRITE_CAPACITY {
            self.young_keys += keys;
            self.young.push(announcement.clone());
        }
    }

    /// The generation due now; the young one becomes the next.
    pub(super) fn rotate(&mut self) -> Vec<Announcement> {
        self.young_keys = 0;
        std::mem::replace(&mut self.old, std::mem::take(&mut self.young))
    }
}

/// How much of an announcement the server took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reached {
    /// Its markers and its message.
    Whole,
    /// Its message, not its markers (the server is out of memory).
    NoMarkers,
    Nothing,
}

impl SharedTier {
    /// Writes markers for `keys` at `at_ms` and announces them to the other nodes, in the
    /// background; kept and sent later if the server cannot be reached now.
    pub fn invalidate(self: &Arc<Self>, keys: Vec<Key>, at_ms: u64) {
        let tier = self.clone();
        self.runtime.spawn(async move {
            let announcement = Announcement { node: tier.node, at_ms, what: Invalidated::Markers(keys) };
            match tier.announce(&announcement, true).await {
                Reached::Whole => {}
                Reached::NoMarkers => tier.unwritten.lock().expect("unwritten").keep(&announcement),
                Reached::Nothing => {
                    tier.pending.lock().expect("pending").keep(&announcement);
                    cache_operation("invalidate", "shared", "queued").inc();
                }
            }
            if tier.is_cluster() {
                tier.rewrite_later.lock().expect("rewrite later").keep(&announcement);
            }
        });
    }

    /// Writes an announcement's markers and publishes it (unless `publishing` is false: its
    /// markers only); how much of it the server took. On one server, one script does both. On
    /// a cluster, the markers are written into every bucket (one script per bucket, each in
    /// one slot, all at once), then the message is published on its own: a master that is
    /// down (failing over) holds back its buckets' markers, which are written again once it
    /// is back (`Reached::NoMarkers`), not the announcement, which every other node hears now.
    async fn announce(&self, announcement: &Announcement, publishing: bool) -> Reached {
        let channel = self.names.channel();
        let message = if publishing { publish(announcement, &channel, self.secret.as_deref()) } else { Vec::new() };
        let reached = if self.is_cluster() {
            // Not into buckets on refused nodes: this node reads no entry there.
            let buckets = self.names.buckets().filter(|&bucket| !self.refuses(bucket));
            let writes = buckets.map(|bucket| self.write_markers(announcement, bucket, &channel, &[]));
            let written =
                futures_util::future::join_all(writes).await.into_iter().all(|reached| reached == Reached::Whole);
            let heard = !publishing || self.publish(&channel, message).await;
            match (heard, written) {
                (false, _) => Reached::Nothing,
                (true, true) => Reached::Whole,
                (true, false) => Reached::NoMarkers,
            }
        } else {
            self.write_markers(announcement, 0, &channel, &message).await
        };
        let result = match reached {
            Reached::Whole => "ok",
            Reached::NoMarkers => "unwritten",
            Reached::Nothing => "error",
        };
        cache_operation("invalidate", "shared", result).inc();
        reached
    }

    /// Runs the invalidation script on the markers of `announcement` in `bucket`, publishing
    /// `message` unless it is empty.
    async fn write_markers(
        &self,
        announcement: &Announcement,
        bucket: Bucket,
        channel: &str,
        message: &[u8],
    ) -> Reached {
        let mut invocation = self.invalidate_script.prepare_invoke();
        match &announcement.what {
            Invalidated::Markers(keys) => {
                for key in keys {
                    invocation.key(self.names.marker(bucket, key));
                }
            }
            Invalidated::Everything => {
                invocation.key(self.names.everything_marker(bucket));
            }
        }
        invocation
            .arg(announcement.at_ms)
            .arg(marker_life_ms(self.ttl_cap))
            .arg(channel)
            .arg(message)
            .arg(now_ms().saturating_add(CLOCK_SKEW_MS));
        let mut connection = self.link();
        match self.invalidation_step(invocation.invoke_async::<i64>(&mut connection)).await {
            Some(1) => Reached::Whole,
            Some(_) => Reached::NoMarkers,
            None => Reached::Nothing,
        }
    }

    /// Publishes an announcement on its own, on a cluster: through every master at once,
    /// done when one took it. Any node broadcasts a message to the whole cluster, but the
    /// client would send it to the master of the channel's slot, which may be the one that is
    /// down; listeners hear it once per master (announcements are idempotent).
    async fn publish(&self, channel: &str, message: Vec<u8>) -> bool {
        let Link::Cluster(mut connection) = self.link() else { return false };
        let mut command = redis::cmd("PUBLISH");
        command.arg(channel).arg(message);
        let every_master =
            RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, Some(ResponsePolicy::OneSucceeded)));
        self.invalidation_step(connection.route_command(command, every_master)).await.is_some()
    }

    /// Awaits one command of an invalidation, within its deadline (the tier's `timeout`, at
    /// least 500 ms: invalidations never delay a client); its answer, or `None` (the error
    /// kept for `/readyz`). A cluster connection that answers nothing is replaced.
    async fn invalidation_step<T>(
        &self,
        command: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Option<T> {
        let sent = tokio::time::timeout(self.timeout.max(Duration::from_millis(500)), command).await;
        self.on_cluster_answer(matches!(sent, Ok(Ok(_))));
        match sent {
            Ok(Ok(answer)) => Some(answer),
            Ok(Err(e)) => {
                *self.health.last_error.lock().expect("last error") = Some(e.to_string());
                None
            }
            Err(_) => None,
        }
    }

    /// Announces what was invalidated while the server was away.
    pub(super) async fn send_pending(&self) {
        let _offering = Offering::start(self);
        let announcements = self.pending.lock().expect("pending").take(self.node);
        for (i, announcement) in announcements.iter().enumerate() {
            match self.announce(announcement, true).await {
                Reached::Whole => {}
                Reached::NoMarkers => self.unwritten.lock().expect("unwritten").keep(announcement),
                Reached::Nothing => {
                    let mut pending = self.pending.lock().expect("pending");
                    announcements[i..].iter().for_each(|unsent| pending.keep(unsent));
                    return;
                }
            }
        }
    }

    /// Writes again the markers of announcements the server refused to keep.
    pub(super) async fn write_unwritten(&self) {
        let _offering = Offering::start(self);
        let announcements = self.unwritten.lock().expect("unwritten").take(self.node);
        for (i, announcement) in announcements.iter().enumerate() {
            if self.announce(announcement, false).await != Reached::Whole {
                let mut unwritten = self.unwritten.lock().expect("unwritten");
                announcements[i..].iter().for_each(|unsent| unwritten.keep(unsent));
                return;
            }
        }
    }
}

/// Counts invalidations being offered again while it lives (see `SharedTier::offering`).
struct Offering<'a>(&'a SharedTier);

impl<'a> Offering<'a> {
    fn start(tier: &'a SharedTier) -> Offering<'a> {
        tier.offering.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Offering(tier)
    }
}

impl Drop for Offering<'_> {
    fn drop(&mut self) {
        self.0.offering.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn purge(n: u8, keys: usize) -> Announcement {
        Announcement { node: 1, at_ms: u64::from(n), what: Invalidated::Markers(vec![[n; 32]; keys]) }
    }

    #[test]
    fn an_invalidation_is_due_again_after_one_to_two_rotations() {
        let mut later = RewriteLater::default();
        later.keep(&purge(1, 1));
        assert!(later.rotate().is_empty(), "not due at the first rotation");
        later.keep(&purge(2, 1));
        assert_eq!(later.rotate(), vec![purge(1, 1)], "due at the second");
        assert_eq!(later.rotate(), vec![purge(2, 1)]);
        assert!(later.rotate().is_empty(), "written again once");
    }

    #[test]
    fn what_is_kept_to_be_written_again_is_bounded_whatever_the_rate() {
        let mut later = RewriteLater::default();
        for n in 0..=255u8 {
            later.keep(&purge(n, 100));
        }
        later.rotate();
        let keys: usize = later
            .rotate()
            .iter()
            .map(|announcement| match &announcement.what {
                Invalidated::Markers(keys) => keys.len(),
                Invalidated::Everything => 1,
            })
            .sum();
        assert_eq!(keys, REWRITE_CAPACITY, "100 announcements of 100 keys kept, the other 156 not");
    }
}
