//! What is recorded of every answered request, whichever path answered it: the request
//! metrics of DESIGN.md and the access log line (target `mcp_edge::access`, level info).

use std::time::Instant;

use mcp_edge_policies::method::Method;

use crate::metrics::METRICS;

/// One answered request.
pub struct Served<'a> {
    pub route: &'a str,
    pub http_method: &'a str,
    pub mcp_method: Option<&'a str>,
    /// 0 when nothing was sent (the client went away).
    pub status: u16,
    pub cache: &'static str,
    /// The cache tier that answered a hit (`memory`, `disk`, `shared`).
    pub tier: Option<&'static str>,
    pub upstream: Option<&'a str>,
    pub started: Instant,
    pub error: Option<String>,
}

impl Served<'_> {
    pub fn record(&self) {
        let method = Method::label(self.mcp_method);
        let status = status_label(self.status);
        let elapsed = self.started.elapsed().as_secs_f64();
        METRICS.requests.with_label_values(&[self.route, method, &status, self.cache]).inc();
        METRICS.request_duration.with_label_values(&[self.route, method, self.cache]).observe(elapsed);
        if let Some(tier) = self.tier {
            count_hit(self.route, tier);
        }
        if let Some(upstream) = self.upstream {
            METRICS.upstream_requests.with_label_values(&[self.route, upstream, &status]).inc();
        }
        tracing::info!(
            target: "mcp_edge::access",
            route = self.route,
            method = self.http_method,
            mcp_method = self.mcp_method.unwrap_or("-"),
            status = self.status,
            upstream = self.upstream.unwrap_or("-"),
            cache = self.cache,
            tier = self.tier.unwrap_or("-"),
            duration_ms = elapsed * 1000.0,
            error = self.error.as_deref().unwrap_or_default(),
        );
    }
}

/// Counts a hit in `mcp_cache_hits_total`, through counters each thread resolved once (a
/// labelled counter is found by hashing its labels under a lock: too much for every hit).
fn count_hit(route: &str, tier: &'static str) {
    thread_local! {
        static RESOLVED: std::cell::RefCell<Vec<(String, &'static str, prometheus::IntCounter)>> =
            const { std::cell::RefCell::new(Vec::new()) };
    }
    RESOLVED.with_borrow_mut(|resolved| {
        if let Some((_, _, counter)) = resolved.iter().find(|(r, t, _)| *t == tier && r == route) {
            counter.inc();
            return;
        }
        let counter = METRICS.cache_hits.with_label_values(&[route, tier]);
        counter.inc();
        // Routes come and go with reloads: a bounded list, rebuilt when it fills.
        if resolved.len() >= 64 {
            resolved.clear();
        }
        resolved.push((route.to_string(), tier, counter));
    });
}

/// The `status` label: the common ones without building a string per request.
fn status_label(status: u16) -> std::borrow::Cow<'static, str> {
    match status {
        200 => "200".into(),
        202 => "202".into(),
        other => other.to_string().into(),
    }
}
