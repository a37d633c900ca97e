//! What is recorded of every answered request, whichever path answered it: the request
//! metrics (`mcp_requests_total`, `mcp_request_duration_seconds`, `mcp_cache_hits_total`,
//! `mcp_upstream_requests_total`) and the access log line (target `mcp_edge::access`, level
//! info).

use std::cell::RefCell;
use std::net::IpAddr;
use std::thread::LocalKey;
use std::time::Instant;

use prometheus::{Histogram, IntCounter};

use mcp_edge_policies::method::Method;

use crate::ip_text::IpText;
use crate::metrics::METRICS;
use crate::request_id::RequestId;
use crate::spans::{Attempted, Trace};

/// Who asked for what: the access log's account of any request, whatever answered it.
#[derive(Clone, Copy)]
pub struct Asked<'a> {
    /// Its route's name (`-`: none serves its path).
    pub route: &'a str,
    /// `-` when its head could not be read.
    pub http_method: &'a str,
    pub path: &'a str,
    pub client: Option<IpAddr>,
    /// The handshake-era session id it sent (logged as a fingerprint, see [`fingerprint`]).
    pub session: Option<&'a str>,
    pub request_id: RequestId,
    /// Its place in a trace, while spans are exported (see `spans`).
    pub trace: Option<&'a Trace>,
    /// The kind of prefetch it is (the prefetcher's own requests).
    pub prefetch: Option<&'static str>,
}

impl Asked<'_> {
    /// A request whose head could not be read.
    pub fn unread(client: Option<IpAddr>) -> Asked<'static> {
        let request_id = RequestId::make();
        Asked {
            route: "-",
            http_method: "-",
            path: "-",
            client,
            session: None,
            request_id,
            trace: None,
            prefetch: None,
        }
    }
}

/// One answered request.
pub struct Served<'a> {
    pub asked: Asked<'a>,
    pub mcp_method: Option<&'a str>,
    /// 0 when nothing was sent (the client went away).
    pub status: u16,
    pub cache: &'static str,
    /// The cache tier that answered a hit (`memory`, `disk`, `shared`).
    pub tier: Option<&'static str>,
    pub upstream: Option<&'a str>,
    pub started: Instant,
    pub error: Option<String>,
    /// The request's body bytes as received, and the answer's as sent (after compression).
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Its upstream attempts (told only while spans are exported).
    pub attempted: Option<Attempted>,
}

impl<'a> Served<'a> {
    /// A request mcp-edge refused itself before any upstream, with an answer of `bytes_out`.
    pub fn refused(asked: Asked<'a>, refused: &crate::error::EdgeError, bytes_out: usize) -> Served<'a> {
        Served {
            asked,
            mcp_method: None,
            status: refused.status(),
            cache: crate::answer::Outcome::Bypass.as_str(),
            tier: None,
            upstream: None,
            started: Instant::now(),
            error: Some(refused.to_string()),
            bytes_in: 0,
            bytes_out: bytes_out as u64,
            attempted: None,
        }
    }

    pub fn record(&self) {
        self.record_after(self.started.elapsed());
    }

    /// Records it as answered `elapsed` after it started (for a caller that read the clock).
    pub fn record_after(&self, elapsed: std::time::Duration) {
        if let Some(trace) = self.asked.trace {
            crate::spans::export(self, trace, elapsed);
        }
        let method = Method::label(self.mcp_method);
        let elapsed = elapsed.as_secs_f64();
        RequestSeries::with(self, method, |series| {
            series.requests.inc();
            series.duration.observe(elapsed);
            if let Some(hits) = &series.hits {
                hits.inc();
            }
        });
        if let Some(upstream) = self.upstream {
            UpstreamSeries::with(self.asked.route, upstream, self.status, |requests| requests.inc());
        }
        self.log(elapsed);
    }

    /// The access log line (target `mcp_edge::access`), in the order nginx and HAProxy users
    /// read theirs: who, what, the outcome, how long.
    fn log(&self, elapsed: f64) {
        // The fields below are made only when the line is written.
        if !tracing::enabled!(target: "mcp_edge::access", tracing::Level::INFO) {
            return;
        }
        let asked = &self.asked;
        let client = asked.client.map(IpText::of);
        let session = asked.session.map(fingerprint);
        tracing::info!(
            target: "mcp_edge::access",
            client = client.as_ref().map_or("-", |c| c.as_str()),
            route = asked.route,
            method = asked.http_method,
            path = asked.path,
            mcp_method = self.mcp_method.unwrap_or("-"),
            status = self.status,
            bytes_in = self.bytes_in,
            bytes_out = self.bytes_out,
            cache = self.cache,
            tier = self.tier.unwrap_or("-"),
            upstream = self.upstream.unwrap_or("-"),
            // Rounded to the microsecond: the shortest decimal that reads back as this float
            // is then a few digits (2.549, not 2.5491099999999998), and JSON keeps a number.
            duration_ms = (elapsed * 1_000_000.0).round() / 1000.0,
            session = session.as_deref().unwrap_or("-"),
            request_id = asked.request_id.as_str(),
            error = self.error.as_deref().unwrap_or_default(),
        );
    }
}

/// How a session id is logged: the first 12 hex digits of its SHA-256. Enough to follow one
/// session through the log (and to find it from the id a client reports), not enough to use
/// it: whoever reads the log cannot take over the session.
pub fn fingerprint(session: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, session.as_bytes());
    digest.as_ref()[..6].iter().map(|b| format!("{b:02x}")).collect()
}

/// Series each thread keeps before it resolves them again: finding a labelled series hashes
/// its labels under a lock and clones a shared handle (a cache line the workers pass back and
/// forth), on every request. Routes come and go with reloads, so the list is bounded.
const RESOLVED_PER_THREAD: usize = 256;

/// The series one answered request counts in.
struct RequestSeries {
    route: String,
    method: &'static str,
    status: u16,
    cache: &'static str,
    tier: Option<&'static str>,
    requests: IntCounter,
    duration: Histogram,
    hits: Option<IntCounter>,
}

impl RequestSeries {
    fn with(served: &Served<'_>, method: &'static str, count: impl FnOnce(&RequestSeries)) {
        thread_local! {
            static RESOLVED: RefCell<Vec<RequestSeries>> = const { RefCell::new(Vec::new()) };
        }
        let same = |s: &RequestSeries| {
            s.status == served.status
                && s.method == method
                && s.cache == served.cache
                && s.tier == served.tier
                && s.route == served.asked.route
        };
        let resolve = || {
            let status = status_label(served.status);
            RequestSeries {
                route: served.asked.route.to_string(),
                method,
                status: served.status,
                cache: served.cache,
                tier: served.tier,
                requests: METRICS.requests.with_label_values(&[served.asked.route, method, &status, served.cache]),
                duration: METRICS.request_duration.with_label_values(&[served.asked.route, method, served.cache]),
                hits: served.tier.map(|tier| METRICS.cache_hits.with_label_values(&[served.asked.route, tier])),
            }
        };
        with_resolved(&RESOLVED, same, resolve, count);
    }
}

/// The series of requests sent to one upstream with one status.
struct UpstreamSeries {
    route: String,
    upstream: String,
    status: u16,
    requests: IntCounter,
}

impl UpstreamSeries {
    fn with(route: &str, upstream: &str, status: u16, count: impl FnOnce(&IntCounter)) {
        thread_local! {
            static RESOLVED: RefCell<Vec<UpstreamSeries>> = const { RefCell::new(Vec::new()) };
        }
        let same = |s: &UpstreamSeries| s.status == status && s.upstream == upstream && s.route == route;
        let resolve = || UpstreamSeries {
            route: route.to_string(),
            upstream: upstream.to_string(),
            status,
            requests: METRICS.upstream_requests.with_label_values(&[route, upstream, &status_label(status)]),
        };
        with_resolved(&RESOLVED, same, resolve, |series| count(&series.requests));
    }
}

/// Counts in the series `same` finds among those this thread resolved, else in a new one
/// (`resolve`), which the thread keeps.
fn with_resolved<S: 'static>(
    resolved: &'static LocalKey<RefCell<Vec<S>>>,
    same: impl Fn(&S) -> bool,
    resolve: impl FnOnce() -> S,
    count: impl FnOnce(&S),
) {
    resolved.with_borrow_mut(|resolved| {
        if let Some(series) = resolved.iter().find(|series| same(series)) {
            return count(series);
        }
        let series = resolve();
        count(&series);
        if resolved.len() >= RESOLVED_PER_THREAD {
            resolved.clear();
        }
        resolved.push(series);
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
