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

/// The `status` label: the common ones without building a string per request.
fn status_label(status: u16) -> std::borrow::Cow<'static, str> {
    match status {
        200 => "200".into(),
        202 => "202".into(),
        other => other.to_string().into(),
    }
}
