//! The prefetcher's one task: it takes the request paths' events in order, keeps each route's
//! model, budget and tracker (so no lock is shared with a request), decides, and sends the
//! prefetches (each on its own task, reporting back here when done). It also keeps `warm`
//! URIs fresh, counts what prefetches became, holds the predictions waiting for their delay
//! (see `sequence`), and saves the learned models beside the disk cache (see `models`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use mcp_edge_policies::cache::Key;
use mcp_edge_policies::headers::{STATELESS_ERA, is_stateless_era};
use mcp_edge_policies::jsonrpc::META_PROTOCOL_VERSION;
use mcp_edge_policies::method::Method;
use mcp_edge_policies::prefetch::budget::{Budget, Caps};
use mcp_edge_policies::prefetch::pending::{Bounds, Pending};
use mcp_edge_policies::prefetch::sequence::{Limits, SequenceModel, Snapshot};
use mcp_edge_policies::prefetch::tracker::Tracker;
use mcp_edge_policies::prefetch::{Kind, Outcome};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::sync::mpsc;

use super::sequence::Deferred;
use super::{Event, Mirror, Prefetcher, Replay, internal, models};
use crate::front::EdgeApp;
use crate::metrics::{self, METRICS};
use crate::runtime::{Live, Route, Runtime};
use crate::store::now_ms;

/// Prefetched entries tracked per route until used or expired.
const TRACKED: usize = 100_000;
/// How often the learned models are saved.
const SAVE_EVERY: Duration = Duration::from_secs(60);
/// New sessions whose start-up lists wait for their clients' `notifications/initialized`.
const MAX_OFFERS: usize = 10_000;
/// How long a session's offer waits for its client.
const OFFER_FOR_MS: u64 = 60_000;
/// A start-up list is fetched while it pays: until this many were issued, then only if at
/// least `PAYS_AT_LEAST` of them were used (and one in ten anyway, to notice a change).
const PAYS_AFTER: u64 = 20;
const PAYS_AT_LEAST: f64 = 0.25;

/// The prefetcher as a Pingora background service.
pub struct PrefetchService {
    pub prefetcher: Arc<Prefetcher>,
    pub app: EdgeApp,
    pub live: Live,
}

#[async_trait]
impl BackgroundService for PrefetchService {
    async fn start(&self, shutdown: ShutdownWatch) {
        let Some(events) = self.prefetcher.take_receiver() else { return };
        let (done, finished) = mpsc::unbounded_channel();
        let model_path = self.live.load().config.cache.disk_path.as_deref().map(models::path_in);
        let saved = model_path.as_ref().map(models::load).unwrap_or_default();
        let mut worker = Worker {
            prefetcher: self.prefetcher.clone(),
            app: Arc::new(self.app.clone()),
            live: self.live.clone(),
            shutdown: shutdown.clone(),
            routes: HashMap::new(),
            saved,
            offers: HashMap::new(),
            pending: Pending::new(Bounds::default()),
            done,
            next_id: 0,
            model_path,
            warm_failures: HashMap::new(),
        };
        worker.run(events, finished).await;
    }
}

/// What a prefetch task reports back: what it became, the refresh it held and the start-up
/// list it fetched, if any.
struct Done {
    route: String,
    kind: Kind,
    outcome: Option<Outcome>,
    refreshing: Option<Key>,
    list: Option<Method>,
    warm: Option<String>,
}

pub(super) struct RouteState {
    pub(super) model: SequenceModel,
    budget: Budget,
    tracker: Tracker,
    /// Which start-up list a stored session-start prefetch was, until a client reads it.
    session_lists: HashMap<Key, Method>,
    /// Per start-up list: (issued, used) so far.
    session_stats: HashMap<Method, (u64, u64)>,
}

pub(super) struct Worker {
    prefetcher: Arc<Prefetcher>,
    app: Arc<EdgeApp>,
    live: Live,
    shutdown: ShutdownWatch,
    routes: HashMap<String, RouteState>,
    /// Models read from disk at start, handed to their routes when first seen.
    saved: HashMap<String, Snapshot>,
    /// New sessions' start-up lists, until their clients say they are initialized.
    offers: HashMap<String, (Vec<Method>, u64)>,
    /// Predictions waiting for their delay (bounded, see `sequence`).
    pub(super) pending: Pending<Deferred>,
    done: mpsc::UnboundedSender<Done>,
    next_id: u64,
    /// Where the learned models are saved (beside the disk cache), if anywhere.
    model_path: Option<PathBuf>,
    /// `warm` URIs (route, URI) that failed: how many times in a row, and when to ask again.
    warm_failures: HashMap<(String, String), (u32, u64)>,
}

/// The models are saved when the worker ends, however it ends: at shutdown Pingora stops the
/// runtimes at once (no grace period), dropping this task wherever it waits.
impl Drop for Worker {
    fn drop(&mut self) {
        self.save();
    }
}

/// A prefetch to send.
struct Planned {
    kind: Kind,
    request: Vec<u8>,
    /// The entry whose refresh this is (released when it is done).
    refreshing: Option<Key>,
    /// The start-up list call this is (its pay is measured).
    list: Option<Method>,
    /// The `warm` URI this asks for (its failures back off).
    warm: Option<String>,
}

impl Planned {
    fn new(kind: Kind, request: Vec<u8>) -> Planned {
        Planned { kind, request, refreshing: None, list: None, warm: None }
    }
}

impl Worker {
    async fn run(&mut self, mut events: mpsc::Receiver<Event>, mut finished: mpsc::UnboundedReceiver<Done>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut last_save = tokio::time::Instant::now();
        let mut shutdown = self.shutdown.clone();
        loop {
            let next_due = self.pending.next_due().map(|due| Duration::from_millis(due.saturating_sub(now_ms())));
            tokio::select! {
                Some(event) = events.recv() => {
                    self.prefetcher.taken(&event);
                    self.on_event(event);
                }
                Some(done) = finished.recv() => self.on_done(done),
                _ = tokio::time::sleep(next_due.unwrap_or_default()), if next_due.is_some() => self.send_due(),
                _ = tick.tick() => {
                    self.expire_tracked();
                    self.warm();
                    if last_save.elapsed() >= SAVE_EVERY {
                        self.save();
                        last_save = tokio::time::Instant::now();
                    }
                }
                _ = shutdown.changed() => break,
            }
        }
    }

    /// The route named `name` in the live configuration, if prefetching is on for it.
    pub(super) fn route(&self, name: &str) -> Option<(Arc<Runtime>, usize)> {
        let snapshot = self.live.load_full();
        let index = snapshot.routes.iter().position(|r| r.config.name == name)?;
        snapshot.routes[index].config.prefetch.enabled.then_some((snapshot, index))
    }

    pub(super) fn state(&mut self, route: &str) -> &mut RouteState {
        if !self.routes.contains_key(route) {
            let mut model = SequenceModel::new(Limits::default());
            if let Some(saved) = self.saved.remove(route) {
                model.restore(saved);
            }
            let state = RouteState {
                model,
                budget: Budget::default(),
                tracker: Tracker::new(TRACKED),
                session_lists: HashMap::new(),
                session_stats: HashMap::new(),
            };
            self.routes.insert(route.to_string(), state);
        }
        self.routes.get_mut(route).expect("just made")
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Read { route, context, uri, replay } => self.on_read(route, context, uri, replay),
            Event::Hit { route, key, client, refresh } => {
                let state = self.state(&route);
                if client && let Some(kind) = state.tracker.read(&key) {
                    state.budget.share.used(now_ms());
                    metrics::prefetch(&route, kind, Outcome::Used);
                }
                if client && let Some(method) = state.session_lists.remove(&key) {
                    state.session_stats.entry(method).or_default().1 += 1;
                }
                if let Some((replay, body)) = refresh {
                    let request = replay.request(Kind::Refresh, &body, Mirror::Keep);
                    self.send(&route, Planned { refreshing: Some(key), ..Planned::new(Kind::Refresh, request) });
                }
            }
            Event::Page { route, method, cursor, replay } => {
                let params = serde_json::json!({ "cursor": cursor });
                let request = self.prefetch_request(Kind::Page, &replay, method, params, None);
                self.send(&route, Planned::new(Kind::Page, request));
            }
            Event::Stored { route, kind, stored, method } => {
                let state = self.state(&route);
                for pushed_out in state.tracker.stored(stored.key, kind, stored.expires_at_ms) {
                    metrics::prefetch(&route, pushed_out, Outcome::Wasted);
                }
                if kind == Kind::SessionStart {
                    if state.session_lists.len() >= TRACKED {
                        state.session_lists.clear();
                    }
                    state.session_lists.insert(stored.key, method);
                }
            }
            Event::SessionOffers { session, lists } => {
                let now = now_ms();
                if self.offers.len() >= MAX_OFFERS {
                    self.offers.retain(|_, (_, at)| now.saturating_sub(*at) < OFFER_FOR_MS);
                    if self.offers.len() >= MAX_OFFERS {
                        self.offers.clear();
                    }
                }
                self.offers.insert(session, (lists, now));
            }
            Event::SessionReady { route, session, replay } => self.start_session(&route, &session, &replay),
            Event::Upstream { route, latency_ms, failed, prefetch } => {
                let budget = &mut self.state(&route).budget;
                budget.weather.record(latency_ms, failed);
                budget.share.record(now_ms(), prefetch);
            }
        }
    }

    fn on_done(&mut self, done: Done) {
        let Done { route, kind, outcome, refreshing, list, warm } = done;
        if let Some(key) = refreshing {
            self.prefetcher.refreshing.release(&key);
        }
        if let Some(uri) = warm {
            self.warm_answered(route.clone(), uri, outcome != Some(Outcome::Failed));
        }
        if let Some(state) = self.routes.get_mut(&route) {
            state.budget.finish();
            if let (Some(method), Some(Outcome::Issued)) = (list, outcome) {
                state.session_stats.entry(method).or_default().0 += 1;
            }
        }
        if let Some(outcome) = outcome {
            metrics::prefetch(&route, kind, outcome);
        }
    }

    /// Fetches the start-up lists of a session whose client is now initialized, those its
    /// server offers and that have paid on this route so far.
    fn start_session(&mut self, route: &str, session: &str, replay: &Replay) {
        let Some((lists, _)) = self.offers.remove(session) else { return };
        for method in lists {
            let stats = self.state(route).session_stats.get(&method).copied().unwrap_or_default();
            if !pays(stats) {
                continue;
            }
            let params = serde_json::json!({});
            let request = self.prefetch_request(Kind::SessionStart, replay, method.as_str(), params, None);
            self.send(route, Planned { list: Some(method), ..Planned::new(Kind::SessionStart, request) });
        }
    }

    /// Sends `planned` if the route's budget and its upstreams allow; counts it dropped if not.
    fn send(&mut self, route_name: &str, planned: Planned) {
        let Planned { kind, request, refreshing, list, warm } = planned;
        let dropped = |worker: &mut Worker| {
            if let Some(key) = refreshing {
                worker.prefetcher.refreshing.release(&key);
            }
            metrics::prefetch(route_name, kind, Outcome::Dropped);
        };
        let Some((snapshot, index)) = self.route(route_name) else { return dropped(self) };
        let route = &snapshot.routes[index];
        if !any_ready(route) {
            return dropped(self);
        }
        let config = &route.config.prefetch;
        let caps = Caps { max_inflight: config.max_inflight, max_share: config.max_share };
        if self.state(route_name).budget.start(now_ms(), caps).is_err() {
            return dropped(self);
        }
        // A prefetch waits no longer than a client's read would.
        let limit = route.config.read_timeout + route.config.connect_timeout;
        let (app, shutdown, done, route) =
            (self.app.clone(), self.shutdown.clone(), self.done.clone(), route_name.to_string());
        tokio::spawn(async move {
            let answered = internal::send(&app, &shutdown, &request, limit).await;
            let outcome = match answered {
                // The cache answered: nothing went upstream, nothing to count.
                Some(answer) if answer.from_cache => None,
                Some(answer) if !answer.failed => Some(Outcome::Issued),
                _ => Some(Outcome::Failed),
            };
            if outcome == Some(Outcome::Failed) {
                metrics::prefetch(&route, kind, Outcome::Issued);
            }
            let _ = done.send(Done { route, kind, outcome, refreshing, list, warm });
        });
    }

    /// Sends a `resources/read` of `uri` as a prefetch of `kind`, with `replay`'s headers.
    pub(super) fn send_read(&mut self, route: &str, kind: Kind, replay: &Replay, uri: &str) {
        let planned = self.read_planned(kind, replay, uri);
        self.send(route, planned);
    }

    /// A `resources/read` of `uri` as a prefetch of `kind`, with `replay`'s headers.
    fn read_planned(&mut self, kind: Kind, replay: &Replay, uri: &str) -> Planned {
        let params = serde_json::json!({ "uri": uri });
        Planned::new(kind, self.prefetch_request(kind, replay, "resources/read", params, Some(uri)))
    }

    /// A JSON-RPC request of `method` with `params` (plus the trigger's `_meta`, or at least
    /// the stateless era's protocol version), written with `replay`'s headers and its own
    /// mirrored ones.
    fn prefetch_request(
        &mut self,
        kind: Kind,
        replay: &Replay,
        method: &str,
        mut params: serde_json::Value,
        name: Option<&str>,
    ) -> Vec<u8> {
        self.next_id += 1;
        let version = replay.header("mcp-protocol-version").and_then(|v| std::str::from_utf8(v).ok());
        match replay.meta() {
            Some(meta) => params["_meta"] = serde_json::Value::Object(meta.clone()),
            None => {
                // A request of the proxy's own (`warm`): it speaks for itself.
                if let Some(version) = version.filter(|v| is_stateless_era(v)) {
                    params["_meta"] = serde_json::json!({
                        META_PROTOCOL_VERSION: version,
                        "io.modelcontextprotocol/clientInfo": {"name": "mcp-edge", "version": env!("CARGO_PKG_VERSION")},
                        "io.modelcontextprotocol/clientCapabilities": {},
                    });
                }
            }
        }
        let body = serde_json::json!({
            "jsonrpc": "2.0",
            "id": format!("mcp-edge-prefetch-{}", self.next_id),
            "method": method,
            "params": params,
        });
        let mirror = match version.is_some_and(is_stateless_era) {
            true => Mirror::Set { method, name },
            false => Mirror::Drop,
        };
        replay.request(kind, body.to_string().as_bytes(), mirror)
    }

    /// Asks for every `warm` URI of every route: the cache answers those still fresh (a hit
    /// near its end refreshes itself), the rest are fetched. One that failed is left alone for
    /// a while, longer after each failure in a row (`warm_backoff_ms`).
    fn warm(&mut self) {
        let snapshot = self.live.load_full();
        let now = now_ms();
        for route in snapshot.routes.iter().filter(|r| r.config.prefetch.enabled) {
            let host = snapshot.config.server.allowed_hosts.first().map_or("localhost", String::as_str);
            let replay = warm_replay(route, host);
            for uri in &route.config.prefetch.warm {
                let failed = self.warm_failures.get(&(route.config.name.clone(), uri.clone()));
                if failed.is_some_and(|&(_, ask_again_at)| now < ask_again_at) {
                    continue;
                }
                let planned = Planned { warm: Some(uri.clone()), ..self.read_planned(Kind::Warm, &replay, uri) };
                self.send(&route.config.name, planned);
            }
        }
    }

    /// A `warm` URI was answered (`ok`: from the cache or the upstream) or failed.
    fn warm_answered(&mut self, route: String, uri: String, ok: bool) {
        if ok {
            self.warm_failures.remove(&(route, uri));
        } else {
            let (failures, ask_again_at) = self.warm_failures.entry((route, uri)).or_default();
            *failures += 1;
            *ask_again_at = now_ms() + mcp_edge_policies::prefetch::warm_backoff_ms(*failures);
        }
        METRICS.prefetch_warm_backing_off.set(self.warm_failures.len() as i64);
    }

    fn expire_tracked(&mut self) {
        let now = now_ms();
        for (route, state) in &mut self.routes {
            for kind in state.tracker.expire(now) {
                metrics::prefetch(route, kind, Outcome::Wasted);
            }
        }
    }

    fn save(&self) {
        let Some(path) = &self.model_path else { return };
        let snapshots: HashMap<&str, Snapshot> =
            self.routes.iter().map(|(name, state)| (name.as_str(), state.model.snapshot())).collect();
        models::save(path, &snapshots);
    }
}

/// The request a `warm` URI is asked with: the route's own path, no credentials (warm
/// resources are public), the stateless era.
fn warm_replay(route: &Route, host: &str) -> Replay {
    let headers: [(&str, &[u8]); 4] = [
        ("host", host.as_bytes()),
        ("content-type", b"application/json"),
        ("accept", b"application/json, text/event-stream"),
        ("mcp-protocol-version", STATELESS_ERA.as_bytes()),
    ];
    Replay::new(&route.config.path, headers)
}

/// Whether a start-up list with `(issued, used)` so far is worth fetching again.
fn pays((issued, used): (u64, u64)) -> bool {
    issued < PAYS_AFTER || used as f64 >= PAYS_AT_LEAST * issued as f64 || issued % 10 == 0
}

fn any_ready(route: &Route) -> bool {
    route.pool.any_ready()
}
