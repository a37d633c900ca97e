//! The edge's own subscriptions: a change the upstream announces invalidates the public entries
//! mcp-edge caches even when no client is listening (the decisions are
//! `policies::subscriptions`; this is the I/O).
//!
//! - Storing a public entry tells its route's [`RouteWatch`] (`route_watch`; one call in
//!   `request_cache::store`): the URI (a `resources/read`) or the kind of list, in the era of the
//!   request that fetched it.
//! - The [`SubscriptionService`] (`service`) keeps one worker per route, replica and era while that era of
//!   the route watches anything, and follows reloads: workers of routes or replicas that went
//!   away stop; a route whose settings changed gets new ones.
//! - A worker (`handshake`, `listen`) holds the edge's own session or listen stream on its
//!   replica, with no client's credential (so only public entries are watched), and applies the
//!   notifications it hears with [`EdgeCache::invalidate`] (every tier, every node).

mod handshake;
mod link;
mod listen;
mod reader;
mod route_watch;
mod service;

use route_watch::{Event, State, StreamStatus, lock};
pub use route_watch::{RouteWatch, SubscriptionsNow, carry_over, watch_for};
pub use service::SubscriptionService;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use mcp_edge_policies::cache::Target;
use mcp_edge_policies::subscriptions::{Backoff, Era, Support, UNSUPPORTED_RETRY_MS, Wanted};
use tokio::sync::watch;

use crate::metrics::METRICS;
use crate::store::{EdgeCache, now_ms};
use link::Link;

/// What a worker needs.
pub(super) struct Context {
    pub watch: Arc<RouteWatch>,
    pub era: Era,
    pub link: Link,
    pub cache: Arc<EdgeCache>,
}

impl Context {
    fn set_status(&self, update: impl FnOnce(&mut StreamStatus)) {
        self.watch.set_status(&self.link.url.url, self.era, update);
    }

    /// Records a state change.
    fn state(&self, state: State) {
        self.set_status(|s| s.state = state);
    }

    /// Records a failure of `kind` and what it was.
    fn failed(&self, event: Event, reason: &str) {
        self.watch.count(event);
        tracing::debug!(route = %self.watch.route, upstream = %self.link.url.url, era = self.era.label(), reason, "subscription failed");
        self.set_status(|s| {
            s.failures += 1;
            s.last_error = Some(reason.chars().take(200).collect());
        });
    }

    /// Applies what a stream heard.
    fn invalidate(&self, targets: &[Target]) {
        if targets.is_empty() {
            return;
        }
        tracing::debug!(route = %self.watch.route, ?targets, "invalidating on the edge's own subscription");
        self.cache.invalidate(&self.watch.route, targets, "subscription");
        METRICS
            .subscription_events
            .with_label_values(&[self.watch.route.as_str(), Event::Notification.label()])
            .inc_by(targets.len() as u64);
        self.set_status(|s| s.notifications += targets.len() as u64);
    }

    /// Established (again): after a failure, changes may have been missed while nobody
    /// listened, so what is watched is invalidated (entries fetched before now are dead).
    fn connected(&self, again: bool, wanted: &Wanted, subscribed: usize) {
        if again {
            let targets = watched_targets(wanted);
            if !targets.is_empty() {
                self.cache.invalidate(&self.watch.route, &targets, "resubscribed");
            }
            self.watch.count(Event::Reconnected);
        }
        lock(&self.watch.unsupported).remove(&(self.link.url.url.clone(), self.era));
        self.watch.count(Event::Connected);
        self.set_status(|s| {
            s.state = State::Open;
            s.subscribed = subscribed;
        });
    }
}

/// What invalidates every entry `wanted` covers.
fn watched_targets(wanted: &Wanted) -> Vec<Target> {
    use mcp_edge_policies::cache::ListKind;
    let lists = [ListKind::Resources, ListKind::Tools, ListKind::Prompts]
        .into_iter()
        .filter(|kind| wanted.lists.contains(*kind))
        .map(Target::List);
    wanted.uris.iter().map(|uri| Target::Resource(uri.clone())).chain(lists).collect()
}

/// Told once when mcp-edge stops: every worker ends its subscription.
static STOPPING: LazyLock<watch::Sender<bool>> = LazyLock::new(|| watch::channel(false).0);
/// Workers running.
static RUNNING: AtomicUsize = AtomicUsize::new(0);

/// Tells every worker to end its subscription (a handshake-era session is ended with a DELETE,
/// so the upstream does not keep it until it idles out) and waits for them, at most `limit`.
/// Called as mcp-edge starts to stop, while its runtimes still run.
pub async fn end_all(limit: Duration) {
    STOPPING.send_replace(true);
    let ended = async {
        while RUNNING.load(Ordering::Acquire) > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let _ = tokio::time::timeout(limit, ended).await;
}

/// Waits until `stop` says true (or its sender is gone).
async fn told(stop: &mut watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// Waits until the worker is told to stop, or mcp-edge stops.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let mut everyone = STOPPING.subscribe();
    tokio::select! {
        _ = told(stop) => {}
        _ = told(&mut everyone) => {}
    }
}

/// Sleeps `ms`, or less if the worker is told to stop; whether it was.
async fn sleep_or_stop(ms: u64, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_millis(ms)) => false,
        _ = stopped(stop) => true,
    }
}

/// How a subscription attempt ended.
pub(super) enum Ended {
    /// The server offers nothing the edge can use (with what it offers, when known).
    Unsupported(String, Option<Support>),
    /// It failed: tried again after the back-off.
    Failed(Event, String),
}

/// Records how an attempt ended and waits before the next: the back-off after a failure; after
/// "unsupported", 10 minutes (see [`unsupported_wait`]). Whether the worker was told to stop
/// meanwhile.
async fn finish(
    context: &Context,
    ended: Ended,
    backoff: &mut Backoff,
    changes: &mut watch::Receiver<u64>,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    match ended {
        Ended::Failed(event, reason) => {
            context.failed(event, &reason);
            context.state(State::BackingOff);
            sleep_or_stop(backoff.down(now_ms()), stop).await
        }
        Ended::Unsupported(reason, support) => {
            context.failed(Event::Unsupported, &reason);
            let until = now_ms() + UNSUPPORTED_RETRY_MS;
            lock(&context.watch.unsupported).insert((context.link.url.url.clone(), context.era), (until, support));
            unsupported_wait(context, changes, stop).await
        }
    }
}

/// Waits while the replica is known to offer nothing the edge can use (found by this worker or
/// an earlier one): until its 10 minutes are over, or until what is watched becomes something
/// its known capabilities serve. Whether the worker was told to stop meanwhile.
async fn unsupported_wait(
    context: &Context,
    changes: &mut watch::Receiver<u64>,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    let key = (context.link.url.url.clone(), context.era);
    let Some((until, support)) = lock(&context.watch.unsupported).get(&key).copied() else { return false };
    let serves = |support: Option<Support>| support.is_some_and(|s| s.serves(&context.watch.wanted(context.era)));
    if until <= now_ms() || serves(support) {
        return false;
    }
    context.state(State::Unsupported);
    let retry = tokio::time::sleep(Duration::from_millis(until.saturating_sub(now_ms())));
    tokio::pin!(retry);
    loop {
        tokio::select! {
            _ = &mut retry => return false,
            _ = stopped(stop) => return true,
            changed = changes.changed() => {
                if changed.is_err() {
                    stopped(stop).await;
                    return true;
                }
                if serves(support) {
                    return false;
                }
            }
        }
    }
}
