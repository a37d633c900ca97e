//! The admin listener, apart from the public ones: `GET /` (the dashboard, a page that reads
//! `GET /stats` every second), `GET /stats` (see `stats`), `GET /healthz` (process up), `GET /readyz`
//! (every route has a healthy upstream and mcp-edge is not draining to stop; the shared tier's
//! state as detail), `GET /metrics` (Prometheus text), `POST /purge`
//! (`{"route": "...", "uri": "..."}` or `{"route": "...", "all": true}`).
//!
//! Apart from the dashboard's own same-origin reads, it is not for browsers: a request carrying
//! `Origin` is refused, and `POST /purge` takes
//! only `application/json` (which a page cannot send to another origin without a CORS
//! preflight, which this listener never grants). With `admin.token_file`, every request but
//! `/healthz` and the dashboard page itself (which holds no data) needs `Authorization: Bearer
//! <token>`; the page asks for the token when `/stats` wants one.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use mcp_edge_policies::cache::Target;
use serde::Deserialize;
use serde_json::json;

use crate::metrics::METRICS;
use crate::runtime::Live;
use crate::stats::Stats;
use crate::store::EdgeCache;

/// The dashboard: one self-contained page (no external assets), drawn from `/stats`.
const DASHBOARD: &str = include_str!("dashboard.html");

struct Admin {
    live: Live,
    cache: Arc<EdgeCache>,
    stats: Arc<Stats>,
}

/// Binds the admin listener and serves it on a thread of its own.
pub fn spawn(addr: SocketAddr, live: Live, cache: Arc<EdgeCache>) -> std::io::Result<()> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let admin = Arc::new(Admin { live, cache, stats: Arc::new(Stats::default()) });
    std::thread::Builder::new().name("admin".into()).spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("admin runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("admin listener");
            admin.stats.spawn_sampler(admin.cache.clone());
            let mut last_warning: Option<std::time::Instant> = None;
            loop {
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors, typically: wait instead of spinning, and say
                        // so every few seconds, not every time.
                        if last_warning.is_none_or(|at| at.elapsed() > std::time::Duration::from_secs(5)) {
                            tracing::warn!(error = %e, "admin listener: accept failed; retrying every 100 ms");
                            last_warning = Some(std::time::Instant::now());
                        }
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let admin = admin.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let admin = admin.clone();
                        async move { Ok::<_, Infallible>(admin.handle(req).await) }
                    });
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
    })?;
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Purge {
    route: String,
    uri: Option<String>,
    #[serde(default)]
    all: bool,
}

impl Admin {
    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        // A page on the operator's machine can point a name it controls at 127.0.0.1 (DNS
        // rebinding) and read the answers as same-origin: only the listener's own names pass.
        // `/healthz` says nothing but "up": liveness probes may name any address.
        if req.uri().path() != "/healthz" {
            let checked = addressed_to(&req).and_then(|host| {
                crate::guards::check_host(&self.live.load().config.admin.allowed_hosts, host)
                    .map_err(|refused| (refused.status(), refused.to_string()))
            });
            if let Err((status, reason)) = checked {
                return json_error(StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN), &reason);
            }
        }
        if let Some(origin) = req.headers().get("origin") {
            let origin = String::from_utf8_lossy(origin.as_bytes());
            return json_error(
                StatusCode::FORBIDDEN,
                &format!("the admin API does not answer browsers (Origin {origin})"),
            );
        }
        if !matches!(req.uri().path(), "/healthz" | "/")
            && let Some(token) = &self.live.load().admin_token
            && !bearer_matches(req.headers().get("authorization"), token)
        {
            let mut response =
                json_error(StatusCode::UNAUTHORIZED, "admin.token_file is set: send Authorization: Bearer <token>");
            response.headers_mut().insert("www-authenticate", "Bearer".parse().unwrap());
            return response;
        }
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/") => {
                let mut response = text(StatusCode::OK, DASHBOARD);
                let headers = response.headers_mut();
                headers.insert("content-type", "text/html; charset=utf-8".parse().unwrap());
                // Nothing from elsewhere: scripts and styles are inline, data from this origin.
                let policy = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:; frame-ancestors 'none'";
                headers.insert("content-security-policy", policy.parse().unwrap());
                response
            }
            (&Method::GET, "/stats") => {
                let snapshot = self.stats.snapshot(&self.live, &self.cache);
                json_response(StatusCode::OK, serde_json::to_value(snapshot).unwrap_or_default())
            }
            (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
            (&Method::GET, "/readyz") => self.readiness(),
            (&Method::GET, "/metrics") => {
                self.refresh_gauges();
                let mut metrics = METRICS.render(self.cache.has_shared());
                let runtime = self.live.load();
                if runtime.config.admin.operation_metrics {
                    metrics.push_str(&crate::insight::metrics_text(&runtime));
                }
                let mut response = text(StatusCode::OK, metrics);
                response.headers_mut().insert("content-type", "text/plain; version=0.0.4".parse().unwrap());
                response
            }
            (&Method::POST, "/purge") => self.purge(req).await,
            (_, "/" | "/stats" | "/healthz" | "/readyz" | "/metrics" | "/purge") => {
                text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
            }
            _ => text(StatusCode::NOT_FOUND, "not found: try /, /stats, /healthz, /readyz, /metrics or POST /purge\n"),
        }
    }

    /// Ready when every route has a healthy upstream and mcp-edge is not draining. The shared
    /// tier's state is reported but does not make the node unready: without it the node still
    /// answers (see `store::shared`).
    fn readiness(&self) -> Response<Full<Bytes>> {
        let runtime = self.live.load();
        let unready: Vec<&str> =
            runtime.routes.iter().filter(|r| !r.pool.any_ready()).map(|r| r.config.name.as_str()).collect();
        // Draining before a stop: load balancers should send new clients elsewhere.
        let draining = crate::drain::draining();
        let ready = unready.is_empty() && !draining;
        let mut body = json!({"ready": ready});
        if !unready.is_empty() {
            body["routes_without_healthy_upstream"] = json!(unready);
        }
        if draining {
            body["draining"] = json!(true);
        }
        // Upstream names and what they resolve to, on routes that discover their replicas.
        let discovery: serde_json::Map<String, serde_json::Value> = runtime
            .routes
            .iter()
            .filter(|r| r.config.discovery.enabled)
            .map(|r| (r.config.name.clone(), json!(r.pool.discovery_status())))
            .collect();
        if !discovery.is_empty() {
            body["discovery"] = json!(discovery);
        }
        if let Some(shared) = self.cache.shared_status() {
            body["shared_tier"] = serde_json::to_value(shared).unwrap_or_default();
        }
        let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
        json_response(status, body)
    }

    fn refresh_gauges(&self) {
        let runtime = self.live.load();
        // Replicas and routes gone (a reload, discovery) take their series with them.
        for vec in [&METRICS.upstream_up, &METRICS.upstream_in_flight] {
            vec.reset();
        }
        METRICS.route_capacity_used.reset();
        METRICS.route_latency_target.reset();
        for route in &runtime.routes {
            let name = route.config.name.as_str();
            for upstream in &route.pool.members().upstreams {
                let labels = [name, upstream.label.as_str()];
                METRICS.upstream_up.with_label_values(&labels).set(route.pool.is_ready(upstream) as i64);
                let in_flight = upstream.inflight.load(std::sync::atomic::Ordering::Relaxed) as i64;
                METRICS.upstream_in_flight.with_label_values(&labels).set(in_flight);
            }
            // Exported at 0 when nothing waits: an autoscaler's query then finds a value.
            METRICS.requests_waiting.with_label_values(&[name, "coalescing"]);
            if let Some(used) = route.limits.capacity_used() {
                METRICS.route_capacity_used.with_label_values(&[name]).set(used);
            }
            if let Some(target) = route.config.scaling.latency_target {
                METRICS.route_latency_target.with_label_values(&[name]).set(target.as_secs_f64());
            }
        }
        METRICS.cache_bytes.with_label_values(&["memory"]).set(self.cache.memory_bytes() as i64);
    }

    async fn purge(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let content_type = req.headers().get("content-type").map(|v| v.as_bytes().to_ascii_lowercase());
        if !content_type.is_some_and(|c| c.starts_with(b"application/json")) {
            return json_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "POST /purge takes Content-Type: application/json");
        }
        let body = match Limited::new(req.into_body(), 64 * 1024).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(_) => return json_error(StatusCode::PAYLOAD_TOO_LARGE, "purge body over 64 KiB"),
        };
        let purge: Purge = match serde_json::from_slice(&body) {
            Ok(p) => p,
            Err(e) => {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    &format!(
                        "expected {{\"route\": \"...\", \"uri\": \"...\"}} or {{\"route\": \"...\", \"all\": true}}: {e}"
                    ),
                );
            }
        };
        let known = self.live.load().routes.iter().any(|r| r.config.name == purge.route);
        if !known {
            return json_error(StatusCode::NOT_FOUND, &format!("no route named {:?}", purge.route));
        }
        let target = match (purge.uri, purge.all) {
            (Some(uri), false) => Target::Resource(uri),
            (None, true) => Target::Route,
            _ => return json_error(StatusCode::BAD_REQUEST, "give either \"uri\" or \"all\": true"),
        };
        self.cache.invalidate(&purge.route, std::slice::from_ref(&target), "purge");
        tracing::info!(route = %purge.route, target = %target.key_part(), "purged");
        json_response(StatusCode::OK, json!({"purged": target.key_part(), "route": purge.route}))
    }
}

/// Whether `header` is `Bearer <token>`, compared in constant time.
fn bearer_matches(header: Option<&hyper::header::HeaderValue>, token: &str) -> bool {
    let Some(given) = header.and_then(|v| v.as_bytes().strip_prefix(b"Bearer ")) else { return false };
    let expected = token.as_bytes();
    given.len() == expected.len() && given.iter().zip(expected).fold(0u8, |diff, (a, b)| diff | (a ^ b)) == 0
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
}

fn json_response(status: StatusCode, value: serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = text(status, value.to_string());
    response.headers_mut().insert("content-type", "application/json".parse().unwrap());
    response
}

/// The name an admin request is addressed to: the target's authority in absolute form (which
/// overrides `Host`, RFC 9112 §3.2.2), else its one `Host`. Refused (`400`): two `Host`s, or
/// none on HTTP/1.1, as the main listener refuses them.
fn addressed_to(req: &Request<Incoming>) -> Result<Option<&str>, (u16, String)> {
    let mut hosts = req.headers().get_all(http::header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err((400, "header host appears more than once".to_string()));
    }
    if let Some(authority) = req.uri().authority() {
        return Ok(Some(authority.as_str()));
    }
    match host {
        // Not text: no name the list can hold.
        Some(host) => Ok(Some(host.to_str().unwrap_or("\u{fffd}"))),
        None if req.version() == http::Version::HTTP_11 => {
            Err((400, "an HTTP/1.1 request must carry a Host header".to_string()))
        }
        None => Ok(None),
    }
}

fn json_error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json_response(status, json!({"error": message}))
}
