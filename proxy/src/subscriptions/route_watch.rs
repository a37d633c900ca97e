//! What one route caches publicly that the edge's subscriptions keep fresh ([`RouteWatch`]),
//! and how they fare (`/stats`, metrics).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};

use mcp_edge_policies::cache::Target;
use mcp_edge_policies::subscriptions::{Era, Noted, Support, Wanted, Watched};
use serde::Serialize;
use tokio::sync::{Notify, watch};

use crate::metrics::METRICS;
use crate::runtime::Runtime;
use crate::store::now_ms;

/// Wakes the service when a route starts watching something in an era (a worker may be due).
pub(super) static WAKE: LazyLock<Notify> = LazyLock::new(Notify::new);

/// What one route caches publicly that its subscriptions keep fresh, and how they fare.
pub struct RouteWatch {
    pub(super) route: String,
    eras: [EraWatch; 2],
    /// Each worker's state, by replica URL and era.
    streams: Mutex<BTreeMap<(String, Era), StreamStatus>>,
    /// URIs not watched since start: the route watched `max_subscriptions` already, or too long.
    not_watched: AtomicU64,
    /// Replicas found to offer nothing the edge can use, by URL and era: until when they are
    /// left alone, and what they do offer (if known). Kept here, not in the worker, so that a
    /// worker stopped (nothing watched) and started again does not ask again at once.
    pub(super) unsupported: Mutex<Verdicts>,
    /// Its route is gone (or has a new watch): it exports nothing more.
    pub(super) retired: AtomicBool,
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
    pub(super) const ALL: [State; 4] = [State::Connecting, State::Open, State::BackingOff, State::Unsupported];

    pub(super) fn label(self) -> &'static str {
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

pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
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
    pub(super) fn set_limit(&self, limit: usize) {
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
    pub(super) fn wants(&self, era: Era, now_ms: u64, prune: bool) -> bool {
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
    pub(super) fn wanted(&self, era: Era) -> Wanted {
        lock(&self.eras[era.index()].watched).wanted(now_ms())
    }

    /// The era's growth count (see `Watched::grown`).
    pub(super) fn grown(&self, era: Era) -> u64 {
        lock(&self.eras[era.index()].watched).grown()
    }

    /// A receiver woken by every change of the era's watched set.
    pub(super) fn changes(&self, era: Era) -> watch::Receiver<u64> {
        self.eras[era.index()].changes.subscribe()
    }

    pub(super) fn count(&self, event: Event) {
        METRICS.subscription_events.with_label_values(&[self.route.as_str(), event.label()]).inc();
    }

    /// Updates the status of the worker of `upstream` in `era`.
    pub(super) fn set_status(&self, upstream: &str, era: Era, update: impl FnOnce(&mut StreamStatus)) {
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

    pub(super) fn forget_status(&self, upstream: &str, era: Era) {
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
    pub(super) fn export(&self) {
        for era in Era::ALL {
            let uris = lock(&self.eras[era.index()].watched).len();
            self.export_uris(era, uris);
        }
        self.export_streams(&lock(&self.streams));
    }

    pub(super) fn export_uris(&self, era: Era, uris: usize) {
        if !self.retired.load(Ordering::Relaxed) {
            METRICS.subscription_uris.with_label_values(&[self.route.as_str(), era.label()]).set(uris as i64);
        }
    }

    /// The stream gauges, set as states change (not only once a second), so that they say what
    /// is.
    pub(super) fn export_streams(&self, streams: &BTreeMap<(String, Era), StreamStatus>) {
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
pub(super) fn unexport(route: &str) {
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
