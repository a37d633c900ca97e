//! The edge's own subscriptions: a change the upstream announces invalidates the public entries
//! mcp-edge caches even when no client is listening (the decisions are
//! `policies::subscriptions`; this is the I/O).
//!
//! - Storing a public entry tells its route's [`RouteWatch`] (one call in
//!   `request_cache::store`): the URI (a `resources/read`) or the kind of list, in the era of the
//!   request that fetched it.
//! - The [`SubscriptionService`] keeps one worker per route, replica and era while that era of
//!   the route watches anything, and follows reloads: workers of routes or replicas that went
//!   away stop; a route whose settings changed gets new ones.
//! - A worker (`handshake`, `listen`) holds the edge's own session or listen stream on its
//!   replica, with no client's credential (so only public entries are watched), and applies the
//!   notifications it hears with [`EdgeCache::invalidate`] (every tier, every node).

mod handshake;
mod link;
mod listen;
mod reader;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use mcp_edge_policies::cache::Target;
use mcp_edge_policies::subscriptions::{Backoff, Era, Noted, Support, UNSUPPORTED_RETRY_MS, Wanted, Watched};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use serde::Serialize;
use tokio::sync::{Notify, watch};

use crate::metrics::METRICS;
use crate::runtime::{Live, Route, Runtime};
use crate::store::{EdgeCache, now_ms};
use link::Link;

/// Wakes the service when a route starts watching something in an era (a worker may be due).
static WAKE: LazyLock<Notify> = LazyLock::new(Notify::new);

/// What one route caches publicly that its subscriptions keep fresh, and how they fare.
pub struct RouteWatch {
    route: String,
    eras: [EraWatch; 2],
    /// Each worker's state, by replica URL and era.
    streams: Mutex<BTreeMap<(String, Era), StreamStatus>>,
    /// URIs not watched since start: the route watched `max_subscriptions` already, or too long.
    not_watched: AtomicU64,
    /// Replicas found to offer nothing the edge can use, by URL and era: until when they are
    /// left alone, and what they do offer (if known). Kept here, not in the worker, so that a
    /// worker stopped (nothing watched) and started again does not ask again at once.
    unsupported: Mutex<Verdicts>,
    /// Its route is gone (or has a new watch): it exports nothing more.
    retired: AtomicBool,
}

/// Replicas left alone, by URL and era: until when, and what they offer (if known).
type Verdicts = HashMap<(String, Era), (u64, Option<Support>)>;

struct EraWatch {
    watched: Mutex<Watched>,
    /// Bumped on every change of `watched`: the era's workers wake up to follow it.
    changes: watch::Sender<u64>,
}

/// What can happen to a subscription (`mcp_subscription_events_total{kind}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A change notification heard (and applied).
    Notification,
    /// A subscription established (first, or again after a failure).
    Connected,
    /// Established again after a failure: what it watched was invalidated (changes may have
    /// been missed meanwhile).
    Reconnected,
    /// The connection failed or dropped.
    Dropped,
    /// The server answered with an error.
    Refused,
    /// The server's session was gone (404 or 400 on it): a new one is made.
    SessionLost,
    /// The server offers nothing the edge can use (no `subscribe`, no `listChanged`, no
    /// `subscriptions/listen`): asked again only after 10 minutes.
    Unsupported,
    /// A stateless-era stream replaced by one naming more URIs.
    Switched,
    /// A URI not watched: the route already watches `max_subscriptions`.
    OverLimit,
    /// A URI not watched: longer than 1 KiB.
    TooLong,
}

impl Event {
    pub fn label(self) -> &'static str {
        match self {
            Event::Notification => "notification",
            Event::Connected => "connected",
            Event::Reconnected => "reconnected",
            Event::Dropped => "dropped",
            Event::Refused => "refused",
            Event::SessionLost => "session_lost",
            Event::Unsupported => "unsupported",
            Event::Switched => "switched",
            Event::OverLimit => "over_limit",
            Event::TooLong => "too_long",
        }
    }
}

/// The state of one worker (route, replica, era).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Connecting,
    Open,
    BackingOff,
    Unsupported,
}

impl State {
    const ALL: [State; 4] = [State::Connecting, State::Open, State::BackingOff, State::Unsupported];

    fn label(self) -> &'static str {
        match self {
            State::Connecting => "connecting",
            State::Open => "open",
            State::BackingOff => "backing_off",
            State::Unsupported => "unsupported",
        }
    }
}

/// One worker's figures, in `/stats`.
#[derive(Debug, Clone, Serialize)]
pub struct StreamStatus {
    pub upstream: String,
    pub era: &'static str,
    pub state: State,
    /// URIs the server has acknowledged subscriptions to.
    pub subscribed: usize,
    /// Change notifications heard.
    pub notifications: u64,
    /// Failures since the worker started.
    pub failures: u64,
    /// The last failure, in a few words (no URI, no credential: there is none).
    pub last_error: Option<String>,
}

/// A route's subscriptions, in `/stats`.
#[derive(Debug, Serialize)]
pub struct SubscriptionsNow {
    pub max_subscriptions: usize,
    /// URIs watched per era.
    pub uris: BTreeMap<&'static str, usize>,
    /// URIs not watched since start (the route watched `max_subscriptions`, or too long).
    pub not_subscribed: u64,
    pub streams: Vec<StreamStatus>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl RouteWatch {
    pub fn new(route: &str, max_subscriptions: usize) -> RouteWatch {
        let era = || EraWatch { watched: Mutex::new(Watched::new(max_subscriptions)), changes: watch::channel(0).0 };
        RouteWatch {
            route: route.to_string(),
            eras: [era(), era()],
            streams: Mutex::new(BTreeMap::new()),
            not_watched: AtomicU64::new(0),
            unsupported: Mutex::new(HashMap::new()),
            retired: AtomicBool::new(false),
        }
    }

    /// A public entry was stored, fetched in the stateless era or not, invalidated by
    /// `targets`, fresh until `expires_at_ms`. Short: a lock held for a map lookup, no
    /// allocation unless something new is watched.
    pub fn cached(&self, stateless: bool, targets: &[Target], expires_at_ms: u64) {
        let era = &self.eras[Era::of(stateless).index()];
        let (mut grew, mut refused) = (false, None);
        let uris = {
            let mut watched = lock(&era.watched);
            for target in targets {
                match target {
                    Target::Resource(uri) => match watched.note_uri(uri, expires_at_ms) {
                        Noted::Known => {}
                        Noted::Added => grew = true,
                        Noted::Full => refused = Some(Event::OverLimit),
                        Noted::TooLong => refused = Some(Event::TooLong),
                    },
                    Target::List(kind) => grew |= watched.note_list(*kind, expires_at_ms, now_ms()),
                    // Whole routes and un-hinted entries are no subscription's business.
                    Target::Route | Target::Unhinted => {}
                }
            }
            watched.len()
        };
        if grew {
            self.export_uris(Era::of(stateless), uris);
            era.changes.send_modify(|n| *n += 1);
            WAKE.notify_one();
        }
        if let Some(event) = refused {
            self.not_watched.fetch_add(1, Ordering::Relaxed);
            self.count(event);
        }
    }

    /// A new `max_subscriptions` (a reload kept this route).
    fn set_limit(&self, limit: usize) {
        for era in &self.eras {
            let mut watched = lock(&era.watched);
            if watched.limit() != limit {
                watched.set_limit(limit);
                drop(watched);
                era.changes.send_modify(|n| *n += 1);
            }
        }
    }

    /// Whether the era watches anything, after forgetting what expired if `prune`.
    fn wants(&self, era: Era, now_ms: u64, prune: bool) -> bool {
        let era = &self.eras[era.index()];
        let mut watched = lock(&era.watched);
        let changed = watched.changed();
        if prune {
            watched.prune(now_ms);
        }
        let wants = watched.wants_anything(now_ms);
        if watched.changed() != changed {
            drop(watched);
            era.changes.send_modify(|n| *n += 1);
        }
        wants
    }

    /// What the era's subscriptions should ask for now.
    fn wanted(&self, era: Era) -> Wanted {
        lock(&self.eras[era.index()].watched).wanted(now_ms())
    }

    /// The era's growth count (see `Watched::grown`).
    fn grown(&self, era: Era) -> u64 {
        lock(&self.eras[era.index()].watched).grown()
    }

    /// A receiver woken by every change of the era's watched set.
    fn changes(&self, era: Era) -> watch::Receiver<u64> {
        self.eras[era.index()].changes.subscribe()
    }

    fn count(&self, event: Event) {
        METRICS.subscription_events.with_label_values(&[self.route.as_str(), event.label()]).inc();
    }

    /// Updates the status of the worker of `upstream` in `era`.
    fn set_status(&self, upstream: &str, era: Era, update: impl FnOnce(&mut StreamStatus)) {
        let mut streams = lock(&self.streams);
        let status = streams.entry((upstream.to_string(), era)).or_insert_with(|| StreamStatus {
            upstream: upstream.to_string(),
            era: era.label(),
            state: State::Connecting,
            subscribed: 0,
            notifications: 0,
            failures: 0,
            last_error: None,
        });
        let state = status.state;
        update(status);
        if status.state != state {
            self.export_streams(&streams);
        }
    }

    fn forget_status(&self, upstream: &str, era: Era) {
        lock(&self.streams).remove(&(upstream.to_string(), era));
    }

    /// The route's subscriptions for `/stats`.
    pub fn status(&self) -> SubscriptionsNow {
        let uris = Era::ALL.iter().map(|era| (era.label(), lock(&self.eras[era.index()].watched).len())).collect();
        SubscriptionsNow {
            max_subscriptions: lock(&self.eras[0].watched).limit(),
            uris,
            not_subscribed: self.not_watched.load(Ordering::Relaxed),
            streams: lock(&self.streams).values().cloned().collect(),
        }
    }

    /// Sets the route's gauges from what it watches and how its workers fare.
    fn export(&self) {
        for era in Era::ALL {
            let uris = lock(&self.eras[era.index()].watched).len();
            self.export_uris(era, uris);
        }
        self.export_streams(&lock(&self.streams));
    }

    fn export_uris(&self, era: Era, uris: usize) {
        if !self.retired.load(Ordering::Relaxed) {
            METRICS.subscription_uris.with_label_values(&[self.route.as_str(), era.label()]).set(uris as i64);
        }
    }

    /// The stream gauges, set as states change (not only once a second), so that they say what
    /// is.
    fn export_streams(&self, streams: &BTreeMap<(String, Era), StreamStatus>) {
        if self.retired.load(Ordering::Relaxed) {
            return;
        }
        for state in State::ALL {
            let count = streams.values().filter(|s| s.state == state).count();
            METRICS.subscription_streams.with_label_values(&[self.route.as_str(), state.label()]).set(count as i64);
        }
    }
}

/// Removes the series of a route that is gone.
fn unexport(route: &str) {
    for era in Era::ALL {
        let _ = METRICS.subscription_uris.remove_label_values(&[route, era.label()]);
    }
    for state in State::ALL {
        let _ = METRICS.subscription_streams.remove_label_values(&[route, state.label()]);
    }
}

/// Keeps the watch of each route a reload keeps (by name, subscriptions on in both), so what it
/// watches and its workers carry on; a route turned on anew starts empty.
pub fn carry_over(old: &Runtime, new: &mut Runtime) {
    for route in &mut new.routes {
        let kept = old.routes.iter().find(|r| r.config.name == route.config.name).and_then(|r| r.watch.clone());
        if let (Some(kept), Some(_)) = (kept, &route.watch) {
            kept.set_limit(route.config.subscriptions.max_subscriptions);
            route.watch = Some(kept);
        }
    }
}

/// The watch of a route built anew (`None` when its subscriptions are off).
pub fn watch_for(config: &mcp_edge_policies::config::RouteConfig) -> Option<Arc<RouteWatch>> {
    config
        .subscriptions
        .enabled
        .then(|| Arc::new(RouteWatch::new(&config.name, config.subscriptions.max_subscriptions)))
}

/// Everything that makes a worker what it is: a change of any restarts it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct WorkerKey {
    route: String,
    upstream: String,
    era: Era,
    /// The watch it serves (a route turned off and on again has a new one).
    watch: usize,
    addr: std::net::SocketAddr,
    ca_file: Option<PathBuf>,
    connect_timeout: Duration,
    read_timeout: Duration,
}

struct Worker {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

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

/// Runs every route's subscription workers while mcp-edge serves.
pub struct SubscriptionService {
    pub live: Live,
    pub cache: Arc<EdgeCache>,
}

#[async_trait]
impl BackgroundService for SubscriptionService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut workers: HashMap<WorkerKey, Worker> = HashMap::new();
        let mut exported: HashMap<String, Arc<RouteWatch>> = HashMap::new();
        let mut every_second = tokio::time::interval(Duration::from_secs(1));
        every_second.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            // Expired URIs are forgotten once a second; a wake-up (something newly watched)
            // only starts the workers now due.
            let prune = tokio::select! {
                _ = every_second.tick() => true,
                _ = WAKE.notified() => false,
                _ = shutdown.changed() => break,
            };
            let runtime = self.live.load_full();
            self.reconcile(&runtime, &mut workers, prune);
            export(&runtime, &mut exported);
        }
        // Stopping: each worker ends its session (a DELETE within a second), then the process
        // goes on stopping.
        let tasks: Vec<_> = workers
            .into_values()
            .map(|worker| {
                let _ = worker.stop.send(true);
                worker.task
            })
            .collect();
        let _ = tokio::time::timeout(Duration::from_secs(2), futures_util::future::join_all(tasks)).await;
    }
}

impl SubscriptionService {
    /// Starts the workers the live configuration and what its routes watch call for, and stops
    /// the others.
    fn reconcile(&self, runtime: &Runtime, workers: &mut HashMap<WorkerKey, Worker>, prune: bool) {
        let now = now_ms();
        let mut due = HashSet::new();
        for route in &runtime.routes {
            let Some(watch) = &route.watch else { continue };
            lock(&watch.unsupported).retain(|_, (until, _)| *until > now);
            for era in Era::ALL {
                if !watch.wants(era, now, prune) {
                    continue;
                }
                for index in 0..route.pool.upstreams.len() {
                    let key = worker_key(route, watch, era, index);
                    let running = workers.get(&key).is_some_and(|w| !w.task.is_finished());
                    if !running {
                        let context = Context {
                            watch: watch.clone(),
                            era,
                            link: Link::new(route, index),
                            cache: self.cache.clone(),
                        };
                        workers.insert(key.clone(), spawn(context));
                    }
                    due.insert(key);
                }
            }
        }
        workers.retain(|key, worker| {
            let keep = due.contains(key);
            if !keep {
                let _ = worker.stop.send(true);
            }
            keep
        });
    }
}

fn worker_key(route: &Route, watch: &Arc<RouteWatch>, era: Era, index: usize) -> WorkerKey {
    let upstream = &route.pool.upstreams[index];
    WorkerKey {
        route: route.config.name.clone(),
        upstream: upstream.url.url.clone(),
        era,
        watch: Arc::as_ptr(watch) as usize,
        addr: upstream.addr,
        ca_file: route.config.ca_file.clone(),
        connect_timeout: route.config.connect_timeout,
        read_timeout: route.config.read_timeout,
    }
}

fn spawn(context: Context) -> Worker {
    let (stop, stopping) = watch::channel(false);
    RUNNING.fetch_add(1, Ordering::AcqRel);
    let task = tokio::spawn(async move {
        let (watch, upstream, era) = (context.watch.clone(), context.link.url.url.clone(), context.era);
        match era {
            Era::Handshake => handshake::run(context, stopping).await,
            Era::Stateless => listen::run(context, stopping).await,
        }
        watch.forget_status(&upstream, era);
        RUNNING.fetch_sub(1, Ordering::AcqRel);
    });
    Worker { stop, task }
}

/// Exports every route's gauges; retires the watches of routes that are gone (or whose watch
/// was replaced) and removes their series.
fn export(runtime: &Runtime, exported: &mut HashMap<String, Arc<RouteWatch>>) {
    let mut now = HashMap::new();
    for route in &runtime.routes {
        if let Some(watch) = &route.watch {
            now.insert(route.config.name.clone(), watch.clone());
        }
    }
    for (name, watch) in exported.iter() {
        if now.get(name).is_none_or(|new| !Arc::ptr_eq(new, watch)) {
            watch.retired.store(true, Ordering::Relaxed);
            if !now.contains_key(name) {
                unexport(name);
            }
        }
    }
    now.values().for_each(|watch| watch.export());
    *exported = now;
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

#[cfg(test)]
mod tests {
    use mcp_edge_policies::cache::ListKind;

    use super::*;

    fn read_targets(uri: &str) -> Vec<Target> {
        vec![Target::Route, Target::Resource(uri.into())]
    }

    #[test]
    fn stored_public_entries_are_watched_per_era_up_to_the_limit() {
        let watch = RouteWatch::new("watch-test", 2);
        let later = now_ms() + 60_000;
        let mut stateless_changes = watch.changes(Era::Stateless);
        watch.cached(true, &read_targets("demo://a"), later);
        assert!(stateless_changes.has_changed().unwrap(), "a new URI wakes the era's workers");
        stateless_changes.borrow_and_update();
        watch.cached(true, &read_targets("demo://a"), later + 1);
        assert!(!stateless_changes.has_changed().unwrap(), "a URI already watched wakes nobody");
        watch.cached(true, &read_targets("demo://b"), later);
        watch.cached(true, &read_targets("demo://c"), later);
        watch.cached(false, &[Target::Route, Target::List(ListKind::Tools), Target::Unhinted], later);
        assert_eq!(watch.wanted(Era::Stateless).uris, ["demo://a", "demo://b"]);
        let handshake = watch.wanted(Era::Handshake);
        assert!(handshake.uris.is_empty() && handshake.lists.tools, "eras apart: {handshake:?}");
        let status = watch.status();
        assert_eq!((status.not_subscribed, status.uris["stateless"], status.uris["handshake"]), (1, 2, 0));
    }

    #[test]
    fn a_reload_keeps_a_routes_watch_by_name_and_applies_its_new_limit() {
        let build = |routes: &str| {
            let config = mcp_edge_policies::Config::from_toml(routes).unwrap();
            Runtime::build(config).unwrap()
        };
        let route = |name: &str, extra: &str| {
            format!(
                "[[route]]\nname = \"{name}\"\npath = \"/{name}\"\nupstreams = [\"http://127.0.0.1:1/mcp\"]\n{extra}\n"
            )
        };
        let old = build(&(route("kept", "") + &route("off", "")));
        let kept = old.routes[0].watch.clone().unwrap();
        kept.cached(true, &read_targets("demo://a"), now_ms() + 60_000);
        kept.cached(true, &read_targets("demo://b"), now_ms() + 60_000);
        let mut new = build(
            &(route("kept", "[route.subscriptions]\nmax_subscriptions = 1")
                + &route("off", "[route.subscriptions]\nenabled = false")
                + &route("new", "")),
        );
        carry_over(&old, &mut new);
        assert!(Arc::ptr_eq(new.routes[0].watch.as_ref().unwrap(), &kept), "what it watches carries over");
        assert_eq!(kept.wanted(Era::Stateless).uris.len(), 1, "the new limit applies");
        assert!(new.routes[1].watch.is_none(), "turned off");
        assert!(
            new.routes[2].watch.as_ref().unwrap().wanted(Era::Stateless).uris.is_empty(),
            "a new route starts empty"
        );
    }
}
