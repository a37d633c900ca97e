//! What one request has established on its way through the proxy service's phases: what the
//! intake understood of it (before the first phase), then its upstream attempts, its streamed
//! body and its answer.

use crate::pool::Upstream;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use mcp_edge_policies::method::Method;
use mcp_edge_policies::observe::Observer;
use mcp_edge_policies::prefetch::Kind;
use pingora::ErrorType;

use crate::answer::Outcome;
use crate::error::EdgeError;
use crate::intake::Understood;
use crate::request_cache::RequestCache;
use crate::runtime::{Route, Runtime};

/// What one request has established on its way through the filters.
pub struct Ctx {
    pub(super) started: Instant,
    pub(super) _active: crate::metrics::ActiveRequest,
    /// What the intake understood of the request (taken in `request_filter`, its first phase;
    /// absent only for a request no front handed over, which is refused).
    pub(super) request: Option<Box<Understood>>,
    /// The upstream attempts so far.
    pub(super) attempts: Attempts,
    /// A request body streamed through (not read by the intake).
    pub(super) streamed: StreamedBody,
    /// The upstream's answer, as it arrives.
    pub(super) answer: Answering,
    pub(super) outcome: Outcome,
    /// The cache tier that answered (`memory`, `disk`, `shared`).
    pub(super) cache_tier: Option<&'static str>,
    /// Why mcp-edge failed the request itself (answered by `fail_to_proxy`).
    pub(super) failure: Option<EdgeError>,
    /// What the client was told of a failure, for the access log.
    pub(super) failure_told: Option<String>,
}

/// The upstream attempts of one request.
#[derive(Default)]
pub struct Attempts {
    /// Upstreams tried so far (the last one is the current attempt).
    pub(super) tried: Vec<Arc<Upstream>>,
    /// Why the last attempt failed, connecting or proxying (named in the error if none
    /// succeeds, and whether that error is a 504).
    pub(super) last_failure: Option<ErrorType>,
    /// When the current attempt began (for the prefetcher's view of its latency).
    pub(super) started: Option<Instant>,
    /// When the first attempt began (for a traced request's span of the exchange).
    pub(super) first_started: Option<Instant>,
    /// No replica was healthy when the first attempt was chosen (health checks or ejections
    /// had ruled them all out): the replicas are tried all the same, and if every one fails
    /// the answer is `503 no healthy upstream`, not an upstream's failure.
    pub(super) none_healthy: bool,
}

/// A request body that streams through.
#[derive(Default)]
pub struct StreamedBody {
    /// Bytes seen so far.
    pub(super) seen: u64,
    /// A body held back until it has been read whole and checked (the upstream sees nothing
    /// of it before).
    pub(super) held: Option<BytesMut>,
}

/// The upstream's answer as it arrives.
#[derive(Default)]
pub struct Answering {
    /// Watches it (result capture, notifications).
    pub(super) observer: Option<Observer>,
    /// Compresses its body.
    pub(super) gzip: Option<crate::compress::Gzip>,
    /// The session id the client was given, when the upstream minted one for this request.
    pub(super) minted_session: Option<String>,
    /// An `initialize` whose answer the prefetcher wants (the server's capabilities).
    pub(super) watch_initialize: bool,
    /// How many server requests it has carried so far (told to the session's other requests).
    pub(super) server_requests_told: u64,
    /// A write (see `writes`) was sent upstream: it may have been applied, answered or not.
    pub(super) write_sent: bool,
    /// The upstream refused it (a head other than `2xx`): nothing was changed.
    pub(super) write_refused: bool,
}

impl Ctx {
    pub(super) fn new() -> Ctx {
        Ctx {
            started: Instant::now(),
            _active: crate::metrics::ActiveRequest::start(),
            request: None,
            attempts: Attempts::default(),
            streamed: StreamedBody::default(),
            answer: Answering::default(),
            outcome: Outcome::Bypass,
            cache_tier: None,
            failure: None,
            failure_told: None,
        }
    }

    pub(super) fn snapshot(&self) -> Option<&Arc<Runtime>> {
        self.request.as_ref().map(|request| &request.admitted.snapshot)
    }

    pub(super) fn route(&self) -> Option<&Route> {
        self.request.as_ref().map(|request| request.route())
    }

    pub(super) fn mcp_method(&self) -> Option<Method> {
        self.request.as_ref().and_then(|request| request.mcp_method())
    }

    pub(super) fn rpc_id(&self) -> Option<&str> {
        self.request.as_ref().and_then(|request| request.rpc_id.as_deref())
    }

    /// The upstream owning the request's MCP session.
    pub(super) fn pinned(&self) -> Option<&Arc<Upstream>> {
        self.request.as_ref().and_then(|request| request.admitted.pinned.as_ref()).map(|(upstream, _)| upstream)
    }

    /// The kind of prefetch this request is (the prefetcher's own), if it is one.
    pub(super) fn prefetch(&self) -> Option<Kind> {
        self.request.as_ref().and_then(|request| request.admitted.prefetch)
    }

    /// The handshake-era session id the client sent.
    /// The request is part of a trace whose spans are exported (see `spans`).
    pub(super) fn traced(&self) -> bool {
        self.request.as_ref().is_some_and(|request| request.admitted.trace.is_some())
    }

    /// The `traceparent` for the upstream (the request's trace, its upstream exchange's span),
    /// and whether the trace is new (the client's `tracestate` is then not passed on).
    pub(super) fn upstream_traceparent(&self) -> Option<(http::HeaderValue, bool)> {
        let trace = self.request.as_ref()?.admitted.trace.as_deref()?;
        Some((http::HeaderValue::from_bytes(&trace.upstream_traceparent()).ok()?, trace.is_new()))
    }

    /// The request's `X-Request-ID` (see `request_id`).
    pub(super) fn request_id(&self) -> Option<&str> {
        self.request.as_ref().map(|request| request.admitted.request_id.as_str())
    }

    /// A compressed request body, decoded (see `body_coding`).
    pub(super) fn decoded_body(&self) -> Option<bytes::Bytes> {
        self.request.as_ref().and_then(|request| request.decoded_body.clone())
    }

    pub(super) fn edge_session(&self) -> Option<&str> {
        self.request.as_ref().and_then(|request| request.edge_session.as_deref())
    }

    pub(super) fn cache(&self) -> Option<&RequestCache> {
        self.request.as_ref().and_then(|request| request.cache.as_deref())
    }

    pub(super) fn cache_mut(&mut self) -> Option<&mut RequestCache> {
        self.request.as_mut().and_then(|request| request.cache.as_deref_mut())
    }

    /// A write whose invalidation is still to be applied, once its answer tells what became
    /// of it (see `writes`).
    pub(super) fn write_pending(&self) -> bool {
        self.request.as_ref().is_some_and(|request| request.write_pending)
    }

    pub(super) fn current_upstream(&self) -> Option<&Arc<Upstream>> {
        self.attempts.tried.last()
    }

    /// Server-to-client streams may stay silent for long: no read timeout for them.
    pub(super) fn is_long_lived_stream(&self, http_method: &http::Method) -> bool {
        http_method == http::Method::GET || self.mcp_method().is_some_and(Method::is_long_lived)
    }

    /// Whether the request may be sent again after a failure on a reused connection:
    /// only reads that change nothing, and never a request bound to a session's upstream.
    pub(super) fn safe_to_resend(&self, http_method: &http::Method) -> bool {
        let changes_nothing = self.mcp_method().is_some_and(Method::changes_nothing);
        self.pinned().is_none() && (changes_nothing || http_method == http::Method::GET)
    }
}
