//! The numbers behind the admin listener's dashboard (`GET /`), `GET /stats` and `mcp-edge
//! status`: the metrics read once a second (the last five minutes kept), turned into rates,
//! ratios and percentiles per route (see `window`), with the live state of every replica and
//! of the cache.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::proto::{Metric, MetricFamily};
use serde::Serialize;

use crate::metrics::METRICS;
use crate::runtime::Live;
use crate::store::{EdgeCache, SharedStatus, now_ms};

mod window;

pub use window::{Histogram, RouteReading, RouteWindow, route_window};

/// Points of history kept: five minutes, one a second.
const HISTORY: usize = 300;
/// The "now" figures are over this many seconds (one-second percentiles are too noisy).
const NOW_SECONDS: usize = 5;

/// The last readings of the metrics, and the history drawn from them.
#[derive(Default)]
pub struct Stats {
    recent: Mutex<Recent>,
}

#[derive(Default)]
struct Recent {
    /// The readings the "now" window spans (`NOW_SECONDS` + 1).
    readings: VecDeque<Reading>,
    /// One point per second between consecutive readings, made once as each reading comes.
    history: VecDeque<Point>,
}

/// The cumulative counters at one instant.
#[derive(Debug, Default)]
struct Reading {
    at_ms: u64,
    routes: BTreeMap<String, RouteReading>,
    reloads_ok: u64,
    reloads_failed: u64,
    disk_read_bytes: u64,
    disk_write_bytes: u64,
}

impl Stats {
    /// Reads the metrics every second, on the runtime this is called in, for as long as it
    /// runs.
    pub fn spawn_sampler(self: &Arc<Self>, cache: Arc<EdgeCache>) {
        let stats = self.clone();
        tokio::spawn(async move {
            let mut every_second = tokio::time::interval(Duration::from_secs(1));
            every_second.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                every_second.tick().await;
                stats.sample(&cache);
            }
        });
    }

    fn sample(&self, cache: &EdgeCache) {
        let mut reading = read_metrics(&METRICS.gather());
        (reading.disk_read_bytes, reading.disk_write_bytes) = cache.disk_io_bytes();
        let mut recent = self.recent.lock().expect("recent readings");
        if let Some(before) = recent.readings.back() {
            let point = Point::between(before, &reading);
            if recent.history.len() == HISTORY {
                recent.history.pop_front();
            }
            recent.history.push_back(point);
        }
        if recent.readings.len() == NOW_SECONDS + 1 {
            recent.readings.pop_front();
        }
        recent.readings.push_back(reading);
    }

    /// What `GET /stats` answers.
    pub fn snapshot(&self, live: &Live, cache: &EdgeCache) -> Snapshot {
        let recent = self.recent.lock().expect("recent readings");
        let runtime = live.load();
        let none = Reading::default();
        let latest = recent.readings.back().unwrap_or(&none);
        let earliest = recent.readings.front().unwrap_or(&none);
        let seconds = (latest.at_ms.saturating_sub(earliest.at_ms)) as f64 / 1000.0;
        let no_route = RouteReading::default();
        let routes = runtime
            .routes
            .iter()
            .map(|route| {
                let name = &route.config.name;
                let now = latest.routes.get(name).unwrap_or(&no_route);
                let then = earliest.routes.get(name).unwrap_or(&no_route);
                let upstreams: Vec<UpstreamNow> = route
                    .pool
                    .members()
                    .upstreams
                    .iter()
                    .map(|upstream| UpstreamNow {
                        url: upstream.label.clone(),
                        healthy: route.pool.is_ready(upstream),
                        in_flight: upstream.inflight.load(std::sync::atomic::Ordering::Relaxed),
                    })
                    .collect();
                RouteNow {
                    name: name.clone(),
                    path: route.config.path.clone(),
                    healthy: upstreams.iter().any(|u| u.healthy),
                    totals: Totals::of(now),
                    now: route_window(then, now, seconds),
                    upstreams,
                    cached_tools_that_change_state: route.readonly.doubtful(),
                    subscriptions: route.watch.as_ref().map(|watch| watch.status()),
                    operations: crate::insight::now(route),
                }
            })
            .collect();
        let history = recent.history.iter().cloned().collect();
        Snapshot {
            at_ms: now_ms(),
            window_seconds: seconds,
            routes,
            cache: CacheNow {
                memory_bytes: cache.memory_bytes(),
                memory_capacity_bytes: runtime.config.cache.memory,
                disk_capacity_bytes: runtime.config.cache.disk_path.as_ref().map(|_| runtime.config.cache.disk_size),
                disk_read_bytes: latest.disk_read_bytes,
                disk_write_bytes: latest.disk_write_bytes,
                shared: cache.shared_status(),
            },
            reloads: Reloads { ok: latest.reloads_ok, failed: latest.reloads_failed, last_ok_at_ms: last_reload_ms() },
            history,
        }
    }
}

/// `GET /stats` (documented in the README).
#[derive(Debug, Serialize)]
pub struct Snapshot {
    pub at_ms: u64,
    /// What the routes' `now` figures are over.
    pub window_seconds: f64,
    pub routes: Vec<RouteNow>,
    pub cache: CacheNow,
    pub reloads: Reloads,
    /// One point a second for the last minutes, oldest first.
    pub history: Vec<Point>,
}

#[derive(Debug, Serialize)]
pub struct RouteNow {
    pub name: String,
    pub path: String,
    /// At least one replica is healthy.
    pub healthy: bool,
    pub totals: Totals,
    pub now: RouteWindow,
    pub upstreams: Vec<UpstreamNow>,
    /// Tools `cache_tools` names that the upstream's `tools/list` marks not read-only or
    /// destructive.
    pub cached_tools_that_change_state: Vec<String>,
    /// The edge's own subscriptions (`None`: off for this route).
    pub subscriptions: Option<crate::subscriptions::SubscriptionsNow>,
    /// Its most called tools and resources, and the advice they give (see `insight`).
    pub operations: crate::insight::OperationsNow,
}

/// Counts since the process started.
#[derive(Debug, Serialize)]
pub struct Totals {
    pub requests: u64,
    pub hits: u64,
    pub misses: u64,
    pub failed: u64,
    pub hits_by_tier: BTreeMap<String, u64>,
    pub prefetch: BTreeMap<String, u64>,
}

impl Totals {
    fn of(reading: &RouteReading) -> Totals {
        let outcome = |name: &str| reading.by_outcome.get(name).copied().unwrap_or(0);
        Totals {
            requests: reading.by_outcome.values().sum(),
            hits: outcome("HIT"),
            misses: outcome("MISS"),
            failed: reading.failed,
            hits_by_tier: reading.hits_by_tier.clone(),
            prefetch: reading.prefetch.clone(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct UpstreamNow {
    pub url: String,
    pub healthy: bool,
    pub in_flight: usize,
}

#[derive(Debug, Serialize)]
pub struct CacheNow {
    pub memory_bytes: usize,
    pub memory_capacity_bytes: u64,
    /// `None`: no disk tier.
    pub disk_capacity_bytes: Option<u64>,
    pub disk_read_bytes: u64,
    pub disk_write_bytes: u64,
    /// `None`: no shared tier.
    pub shared: Option<SharedStatus>,
}

#[derive(Debug, Serialize)]
pub struct Reloads {
    pub ok: u64,
    pub failed: u64,
    /// When the configuration was last loaded (at start, or by a reload).
    pub last_ok_at_ms: u64,
}

/// One second of every route, for the trend graphs.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub at_ms: u64,
    pub routes: BTreeMap<String, PointRoute>,
}

impl Point {
    /// The second between two consecutive readings.
    fn between(before: &Reading, after: &Reading) -> Point {
        let seconds = after.at_ms.saturating_sub(before.at_ms) as f64 / 1000.0;
        let no_route = RouteReading::default();
        let routes = after
            .routes
            .iter()
            .map(|(name, now)| {
                let window = route_window(before.routes.get(name).unwrap_or(&no_route), now, seconds);
                (name.clone(), PointRoute::from(&window))
            })
            .collect();
        Point { at_ms: after.at_ms, routes }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PointRoute {
    pub requests_per_s: f64,
    pub hit_ratio: Option<f64>,
    pub failed_per_s: f64,
    pub hit_p99_ms: Option<f64>,
    pub miss_p99_ms: Option<f64>,
}

impl From<&RouteWindow> for PointRoute {
    fn from(window: &RouteWindow) -> PointRoute {
        PointRoute {
            requests_per_s: window.requests_per_s,
            hit_ratio: window.hit_ratio,
            failed_per_s: window.failed_per_s,
            hit_p99_ms: window.hit_p99_ms,
            miss_p99_ms: window.miss_p99_ms,
        }
    }
}

fn last_reload_ms() -> u64 {
    (METRICS.config_last_reload.get() * 1000.0) as u64
}

/// The counters the dashboard needs, out of every metric family.
fn read_metrics(families: &[MetricFamily]) -> Reading {
    let mut reading = Reading { at_ms: now_ms(), ..Reading::default() };
    for family in families {
        for metric in &family.metric {
            let label = |name: &str| label(metric, name);
            let name = family.name();
            if name == "mcp_config_reloads_total" {
                match label("result") {
                    "ok" => reading.reloads_ok = counter(metric),
                    _ => reading.reloads_failed = counter(metric),
                }
                continue;
            }
            let route = reading.routes.entry(label("route").to_string()).or_default();
            match name {
                "mcp_requests_total" => {
                    let count = counter(metric);
                    *route.by_outcome.entry(label("cache").to_string()).or_default() += count;
                    if failed_status(label("status")) {
                        route.failed += count;
                    }
                }
                "mcp_request_duration_seconds" => match label("cache") {
                    "HIT" => route.hit_latency.add(&histogram(metric)),
                    "MISS" => route.miss_latency.add(&histogram(metric)),
                    _ => {}
                },
                "mcp_cache_hits_total" => {
                    *route.hits_by_tier.entry(label("tier").to_string()).or_default() += counter(metric);
                }
                "mcp_upstream_requests_total" => {
                    let count = counter(metric);
                    let failed = if failed_status(label("status")) { count } else { 0 };
                    let upstream = route.upstreams.entry(label("upstream").to_string()).or_default();
                    *upstream = (upstream.0 + count, upstream.1 + failed);
                }
                "mcp_prefetch_total" => {
                    *route.prefetch.entry(label("outcome").to_string()).or_default() += counter(metric);
                }
                _ => {}
            }
        }
    }
    // Families without a route label (cache operations, gauges) made an entry for "".
    reading.routes.remove("");
    reading
}

/// A 5xx, or nothing sent (`0`: the client or the upstream went away).
fn failed_status(status: &str) -> bool {
    status.starts_with('5') || status == "0"
}

fn label<'a>(metric: &'a Metric, name: &str) -> &'a str {
    metric.label.iter().find(|pair| pair.name() == name).map_or("", |pair| pair.value())
}

fn counter(metric: &Metric) -> u64 {
    metric.counter.value() as u64
}

fn histogram(metric: &Metric) -> Histogram {
    let proto = &metric.histogram;
    Histogram {
        bounds: proto.bucket.iter().map(|b| b.upper_bound()).collect(),
        cumulative: proto.bucket.iter().map(|b| b.cumulative_count()).collect(),
        count: proto.sample_count(),
    }
}
