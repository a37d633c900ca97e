//! Prometheus metrics, named as the README lists them (its "Admin listener" section; DESIGN.md in
//! ../shared gives the core names). Label values are bounded: MCP method names come
//! from a fixed set, never URIs, session ids or tool names.

use std::sync::LazyLock;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub cache_operations: IntCounterVec,
    pub cache_bytes: IntGaugeVec,
    pub upstream_up: IntGaugeVec,
    /// Scaling signals, per route (see README "Scaling signals"): requests being proxied to
    /// each replica, requests waiting for another's fetch, the share of `max_concurrent` in
    /// use, and the route's latency target.
    pub upstream_in_flight: IntGaugeVec,
    pub requests_waiting: IntGaugeVec,
    pub route_capacity_used: prometheus::GaugeVec,
    pub route_latency_target: prometheus::GaugeVec,
    pub upstream_requests: IntCounterVec,
    /// Client connections open (HTTP/1.1 and h2, plain and TLS).
    pub active_connections: IntGauge,
    /// Requests being answered.
    pub requests_in_flight: IntGauge,
    /// Of those, the server-to-client streams (a stop does not wait for them).
    pub streams_open: IntGauge,
    pub config_reloads: IntCounterVec,
    /// Prefetches by route, kind and outcome (see `prefetch`).
    pub prefetches: IntCounterVec,
    /// Predictions waiting for their delay, and the bytes of requests they hold.
    pub prefetch_pending: IntGauge,
    pub prefetch_pending_bytes: IntGauge,
    /// Bytes of requests the prefetcher's queued events hold.
    pub prefetch_queued_bytes: IntGauge,
    /// `warm` URIs that failed and are left alone for a while.
    pub prefetch_warm_backing_off: IntGauge,
    /// 1 while the shared tier (`[cache.shared]`) is connected and asked, 0 while the node
    /// goes on without it (absent when none is configured).
    pub shared_tier_up: IntGauge,
    /// Bytes the shared tier's Redis server uses (0 until read).
    pub shared_tier_memory: IntGauge,
    pub shared_tier_master_up: IntGaugeVec,
    /// Connections to cluster nodes refused (outside `cluster_allow` or the seeds' network).
    pub shared_tier_nodes_refused: IntCounter,
    /// Hits by route and the tier that answered them.
    pub cache_hits: IntCounterVec,
    /// Invalidation targets applied, by route and cause (`notification`, `write`, `cursor`,
    /// `purge`; `subscription` and `resubscribed` from the edge's own subscriptions).
    pub invalidations: IntCounterVec,
    /// When the configuration was last loaded (at start or by a reload), in seconds since the
    /// epoch.
    pub config_last_reload: prometheus::Gauge,
    /// The edge's own subscriptions (see `subscriptions`): URIs watched per route and era,
    /// subscription streams per route and state, and what happened to them.
    pub subscription_uris: IntGaugeVec,
    pub subscription_streams: IntGaugeVec,
    pub subscription_events: IntCounterVec,
    /// Spans sent to the OTLP collector, by result (`exported`, `failed`).
    pub spans: IntCounterVec,
    /// Bearer token checks on protected routes, by route and result (`ok`, `anonymous`, or
    /// why the token was refused: `missing`, `expired`, `signature`, …).
    pub auth: IntCounterVec,
    /// Fetches of the issuers' key sets, by result (`changed`, `unchanged`, `error`).
    pub auth_key_fetches: IntCounterVec,
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let metric = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry.register(Box::new(metric.clone())).expect("registered once");
    metric
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let metric = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry.register(Box::new(metric.clone())).expect("registered once");
    metric
}

fn float_gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> prometheus::GaugeVec {
    let metric = prometheus::GaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry.register(Box::new(metric.clone())).expect("registered once");
    metric
}

impl Metrics {
    fn new() -> Metrics {
        let registry = Registry::new();
        let request_duration = HistogramVec::new(
            HistogramOpts::new("mcp_request_duration_seconds", "Time to answer an MCP request")
                // From 50 µs: hits take tens of microseconds.
                .buckets(vec![
                    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                    2.5, 5.0, 10.0,
                ]),
            &["route", "method", "cache"],
        )
        .expect("valid metric");
        registry.register(Box::new(request_duration.clone())).expect("registered once");
        let int_gauge = |name: &str, help: &str| {
            let gauge = IntGauge::new(name, help).expect("valid metric");
            registry.register(Box::new(gauge.clone())).expect("registered once");
            gauge
        };
        let active_connections = int_gauge("mcp_active_connections", "Client connections open");
        let requests_in_flight = int_gauge("mcp_requests_in_flight", "Requests being answered");
        let streams_open = int_gauge(
            "mcp_streams_open",
            "Server-to-client streams open (handshake-era GET streams, subscriptions/listen), counted in mcp_requests_in_flight too",
        );
        let shared_tier_up =
            int_gauge("mcp_shared_tier_up", "1 while the shared cache tier is connected and asked, 0 while degraded");
        let shared_tier_memory = int_gauge(
            "mcp_shared_tier_memory_bytes",
            "Bytes the shared tier's Redis server uses (the whole server's figure; 0 until read)",
        );
        let shared_tier_nodes_refused = IntCounter::new(
            "mcp_shared_tier_nodes_refused_total",
            "Connections to Redis Cluster nodes refused: outside cache.shared.cluster_allow (or the seeds' network)",
        )
        .expect("valid metric");
        registry.register(Box::new(shared_tier_nodes_refused.clone())).expect("registered once");
        let prefetch_pending =
            int_gauge("mcp_prefetch_pending", "Predicted reads waiting for their delay (bounded: 1000, 16 per client)");
        let prefetch_pending_bytes = int_gauge(
            "mcp_prefetch_pending_bytes",
            "Bytes of triggering requests the predicted reads waiting for their delay hold (bounded: 16 MiB, 1 MiB per client)",
        );
        let prefetch_warm_backing_off = int_gauge(
            "mcp_prefetch_warm_backing_off",
            "warm URIs whose last read failed, asked again after a wait that doubles with each failure (2 s to 5 min)",
        );
        let prefetch_queued_bytes = int_gauge(
            "mcp_prefetch_queued_bytes",
            "Bytes of client requests the events waiting for the prefetcher hold (bounded: 4 MiB)",
        );
        let config_last_reload = prometheus::Gauge::new(
            "mcp_config_last_reload_success_timestamp_seconds",
            "When the configuration was last loaded, at start or by a reload",
        )
        .expect("valid metric");
        registry.register(Box::new(config_last_reload.clone())).expect("registered once");
        let config_reloads = counter(&registry, "mcp_config_reloads_total", "Configuration reloads", &["result"]);
        // Exported at 0 from the start: alerts on increase() need the series to exist.
        for result in ["ok", "error"] {
            config_reloads.with_label_values(&[result]);
        }
        let invalidations = counter(
            &registry,
            "mcp_invalidations_total",
            "Invalidation targets applied (a URI, a list kind, the route's un-hinted entries, the route), by cause",
            &["route", "cause"],
        );
        Metrics {
            auth: counter(
                &registry,
                "mcp_auth_total",
                "Bearer token checks on protected routes ([route.auth]), by result: ok, anonymous, or the refusal's reason",
                &["route", "result"],
            ),
            auth_key_fetches: counter(
                &registry,
                "mcp_auth_key_fetches_total",
                "Fetches of the authorization servers' key sets (JWKS), by result: changed, unchanged, error",
                &["result"],
            ),
            invalidations,
            requests: counter(
                &registry,
                "mcp_requests_total",
                "MCP requests answered",
                &["route", "method", "status", "cache"],
            ),
            request_duration,
            cache_operations: counter(
                &registry,
                "mcp_cache_operations_total",
                "Cache lookups, inserts and invalidations",
                &["operation", "tier", "result"],
            ),
            cache_bytes: gauge(&registry, "mcp_cache_bytes", "Bytes held by each cache tier", &["tier"]),
            shared_tier_master_up: gauge(
                &registry,
                "mcp_shared_tier_master_up",
                "On a Redis Cluster: 1 for each master the cluster reports reachable, 0 for one it reports failed",
                &["master"],
            ),
            upstream_up: gauge(&registry, "mcp_upstream_up", "1 when the upstream is healthy", &["route", "upstream"]),
            upstream_in_flight: gauge(
                &registry,
                "mcp_upstream_in_flight",
                "Requests being proxied to each upstream replica",
                &["route", "upstream"],
            ),
            requests_waiting: gauge(
                &registry,
                "mcp_requests_waiting",
                "Requests waiting, by why: coalescing (for another request's fetch of the same answer)",
                &["route", "reason"],
            ),
            route_capacity_used: float_gauge(
                &registry,
                "mcp_route_capacity_used_ratio",
                "Requests forwarded upstream over the route's limits.max_concurrent (routes that set it)",
                &["route"],
            ),
            route_latency_target: float_gauge(
                &registry,
                "mcp_route_latency_target_seconds",
                "The route's scaling.latency_target (routes that set it)",
                &["route"],
            ),
            upstream_requests: counter(
                &registry,
                "mcp_upstream_requests_total",
                "Requests sent to each upstream",
                &["route", "upstream", "status"],
            ),
            active_connections,
            requests_in_flight,
            streams_open,
            config_reloads,
            prefetches: counter(
                &registry,
                "mcp_prefetch_total",
                "Prefetches: issued, used, wasted, failed, dropped",
                &["route", "kind", "outcome"],
            ),
            prefetch_pending,
            prefetch_pending_bytes,
            prefetch_queued_bytes,
            prefetch_warm_backing_off,
            shared_tier_up,
            shared_tier_memory,
            shared_tier_nodes_refused,
            cache_hits: counter(
                &registry,
                "mcp_cache_hits_total",
                "Cache hits by the tier that answered",
                &["route", "tier"],
            ),
            config_last_reload,
            subscription_uris: gauge(
                &registry,
                "mcp_subscription_uris",
                "Resource URIs of public cache entries the edge subscribes to, per protocol era (bounded by max_subscriptions)",
                &["route", "era"],
            ),
            subscription_streams: gauge(
                &registry,
                "mcp_subscription_streams",
                "The edge's own subscriptions, one per route, replica and era, by state",
                &["route", "state"],
            ),
            subscription_events: counter(
                &registry,
                "mcp_subscription_events_total",
                "What happened to the edge's own subscriptions: notifications heard, connections, failures, URIs not subscribed",
                &["route", "kind"],
            ),
            spans: counter(
                &registry,
                "mcp_spans_total",
                "Spans sent to the OTLP collector ([tracing] otlp), by result: exported, failed (the collector refused them or could not be reached)",
                &["result"],
            ),
            registry,
        }
    }

    /// Every metric's current value.
    pub fn gather(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.registry.gather()
    }

    /// Records that the configuration was (re)loaded now.
    pub fn config_loaded(&self) {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        self.config_last_reload.set(now.as_secs_f64());
    }

    /// The Prometheus text exposition of every metric.
    /// The metrics in Prometheus' text format; the shared tier's `mcp_shared_tier_*` only on
    /// a node that has one (`shared_tier`): a gauge at 0 on every node without would read as a
    /// tier down, and fire its alert.
    pub fn render(&self, shared_tier: bool) -> String {
        let mut families = self.registry.gather();
        if !shared_tier {
            families.retain(|family| !family.name().starts_with("mcp_shared_tier_"));
        }
        let mut out = Vec::new();
        TextEncoder::new().encode(&families, &mut out).expect("text encoding");
        String::from_utf8(out).expect("prometheus text is UTF-8")
    }
}

/// One series of `mcp_cache_operations_total`. Resolving it hashes the labels under a lock:
/// the hot paths resolve theirs once and keep the counter.
pub fn cache_operation(operation: &str, tier: &str, result: &str) -> IntCounter {
    METRICS.cache_operations.with_label_values(&[operation, tier, result])
}

/// Held by unit tests that read `mcp_requests_in_flight` or `mcp_streams_open` as exact (or
/// open streams), so that they do not run at once.
#[cfg(test)]
pub static IN_FLIGHT_GAUGES_IN_TEST: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Counts a request in `mcp_requests_in_flight` while it lives.
pub struct ActiveRequest;

impl ActiveRequest {
    pub fn start() -> ActiveRequest {
        METRICS.requests_in_flight.inc();
        ActiveRequest
    }
}

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        METRICS.requests_in_flight.dec();
    }
}

/// Counts a client connection in `mcp_active_connections` while it lives.
pub struct OpenConnection;

impl OpenConnection {
    pub fn start() -> OpenConnection {
        METRICS.active_connections.inc();
        OpenConnection
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        METRICS.active_connections.dec();
    }
}

/// Counts the disk tier's failures (foyer logs a failed write or flush at ERROR and counts
/// nothing) in `mcp_cache_operations_total{operation="write",tier="disk",result="error"}`. Its
/// own filter keeps every other event's call site off, as the log's filter does.
pub fn disk_errors_counter<S>() -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    use tracing_subscriber::Layer;
    let errors = cache_operation("write", "disk", "error");
    // The level hint matters: without one the subscriber's maximum level is TRACE, and every
    // `log` record of every dependency (Pingora logs per request at debug and trace) would be
    // built and dispatched only to be dropped.
    let foyer_errors = tracing_subscriber::filter::filter_fn(|m| {
        *m.level() == tracing::Level::ERROR && m.target().starts_with("foyer")
    })
    .with_max_level_hint(tracing::Level::ERROR);
    DiskErrors(errors).with_filter(foyer_errors)
}

struct DiskErrors(IntCounter);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for DiskErrors {
    fn on_event(&self, _event: &tracing::Event<'_>, _context: tracing_subscriber::layer::Context<'_, S>) {
        self.0.inc();
    }
}

/// Counts invalidation targets applied on `route` for `cause`.
pub fn invalidated(route: &str, cause: &str, targets: usize) {
    METRICS.invalidations.with_label_values(&[route, cause]).inc_by(targets as u64);
}

/// Counts one prefetch outcome.
pub fn prefetch(route: &str, kind: mcp_edge_policies::prefetch::Kind, outcome: mcp_edge_policies::prefetch::Outcome) {
    METRICS.prefetches.with_label_values(&[route, kind.label(), outcome.label()]).inc();
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::Layer;
    use tracing_subscriber::filter::LevelFilter;

    #[test]
    fn the_disk_error_counter_asks_for_errors_only() {
        // Without this hint the subscriber's maximum level is TRACE, and every dependency's
        // debug and trace records are built and dispatched only to be dropped.
        let layer = super::disk_errors_counter::<tracing_subscriber::Registry>();
        assert_eq!(layer.max_level_hint(), Some(LevelFilter::ERROR));
    }
}
