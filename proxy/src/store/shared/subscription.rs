//! The shared tier's background work: listening for the other nodes' invalidations (and
//! subscribing again whenever that is lost), and announcing the invalidations this node had
//! to keep back until the server takes them.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use mcp_edge_policies::shared_tier::{Announcement, Heard, Invalidated, Secret, hear as read_message};

use super::invalidation::CLUSTER_REWRITE_AFTER;
use super::{RESUBSCRIBE_FIRST, RESUBSCRIBE_LONGEST, SUBSCRIPTION_CHECK, SharedTier};
use crate::metrics::cache_operation;
use crate::store::markers::Markers;
use crate::store::now_ms;

/// How often invalidations kept back are offered again while the node is listening.
const PENDING_RETRY: Duration = Duration::from_millis(250);

/// Listens for other nodes' invalidations and applies them to the local tiers, subscribing
/// again whenever the subscription is lost: to the next of `servers` (on a cluster, its seed
/// nodes; any node hears every announcement). Each new subscription moves the moment after
/// which local entries are trusted: announcements made while it was down were missed. Ends
/// when the tier is dropped.
pub(super) async fn listen(tier: Weak<SharedTier>, servers: Vec<redis::Client>, markers: Arc<Markers>) {
    let mut wait = RESUBSCRIBE_FIRST;
    for client in servers.iter().cycle() {
        let Some(channel) = tier.upgrade().map(|tier| tier.names.channel()) else { return };
        let subscribed = tokio::time::timeout(Duration::from_secs(2), async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        })
        .await;
        let error = match subscribed {
            Ok(Ok(pubsub)) => {
                markers.trust_local_after(now_ms());
                let (node, secret) = match tier.upgrade() {
                    Some(tier) => {
                        tier.commands_answer().await;
                        tier.health.came_back();
                        tier.breaker.lock().expect("breaker").succeeded();
                        tier.refresh_gauge();
                        tracing::info!(channel, "shared tier: listening for invalidations");
                        tier.send_pending().await;
                        (tier.node, tier.secret.clone())
                    }
                    None => return,
                };
                wait = RESUBSCRIBE_FIRST;
                hear(pubsub, &channel, node, secret.as_deref(), &markers).await
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => "no answer to SUBSCRIBE within 2s".to_string(),
        };
        let Some(shared) = tier.upgrade() else { return };
        if shared.health.subscribed.swap(false, Ordering::AcqRel) {
            tracing::warn!(error, "shared tier: lost; local entries will be checked again once it is back");
        }
        shared.health.went_down(&error);
        shared.refresh_gauge();
        drop(shared);
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(RESUBSCRIBE_LONGEST);
    }
}

/// Applies announcements until the subscription ends (or stops answering a PING); why it ended.
/// With a secret, only announcements signed with it; never one from the future (see
/// `shared_tier::hear`).
async fn hear(
    pubsub: redis::aio::PubSub,
    channel: &str,
    node: u64,
    secret: Option<&Secret>,
    markers: &Markers,
) -> String {
    let (mut sink, mut messages) = pubsub.split();
    loop {
        tokio::select! {
            message = messages.next() => {
                let Some(message) = message else { return "the subscription closed".to_string() };
                match read_message(message.get_payload_bytes(), channel, secret, now_ms()) {
                    Heard::Announcement(announcement) if announcement.node != node => apply(&announcement, markers),
                    Heard::Announcement(_) => {}
                    Heard::Refused => cache_operation("announcement", "shared", "refused").inc(),
                    Heard::Stranger => tracing::debug!("shared tier: ignored a message that is no announcement"),
                }
            }
            _ = tokio::time::sleep(SUBSCRIPTION_CHECK) => {
                // Any answer will do (a subscribed RESP2 connection answers `["pong", ""]`).
                let pong = tokio::time::timeout(Duration::from_secs(1), sink.ping::<redis::Value>()).await;
                if !matches!(pong, Ok(Ok(_))) {
                    return "the subscription stopped answering PING".to_string();
                }
            }
        }
    }
}

fn apply(announcement: &Announcement, markers: &Markers) {
    match &announcement.what {
        Invalidated::Markers(keys) => markers.set(keys, announcement.at_ms),
        Invalidated::Everything => markers.set_everything(announcement.at_ms),
    }
    cache_operation("announcement", "shared", "applied").inc();
}

/// Offers the invalidations kept back to the server again, every [`PENDING_RETRY`] while the
/// node listens, and writes again the markers it refused (whether or not the node listens). A new subscription sends them at once, but one kept while the subscription
/// stayed up (Redis refusing writes when out of memory, the command connection lost alone, an
/// announcement that timed out just as the server came back) would otherwise wait for the
/// next loss, and the other nodes would go on serving what it invalidated.
/// On a cluster, it also hands each generation of invalidations to write a second time
/// (`RewriteLater`) to those retries as it falls due.
pub(super) async fn retry_pending(tier: Weak<SharedTier>) {
    let mut tick = tokio::time::interval(PENDING_RETRY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_rotation = tokio::time::Instant::now() + CLUSTER_REWRITE_AFTER;
    loop {
        tick.tick().await;
        let Some(tier) = tier.upgrade() else { return };
        if tokio::time::Instant::now() >= next_rotation {
            next_rotation += CLUSTER_REWRITE_AFTER;
            let due = tier.rewrite_later.lock().expect("rewrite later").rotate();
            let mut unwritten = tier.unwritten.lock().expect("unwritten");
            due.iter().for_each(|announcement| unwritten.keep(announcement));
        }
        let listening = tier.health.subscribed.load(Ordering::Acquire);
        if listening && !tier.pending.lock().expect("pending").is_empty() {
            tier.send_pending().await;
        }
        if !tier.unwritten.lock().expect("unwritten").is_empty() {
            tier.write_unwritten().await;
        }
    }
}
