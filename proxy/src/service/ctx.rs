//! What one request has learned on its way through the proxy service's phases.

use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use mcp_edge_policies::method::Method;
use mcp_edge_policies::observe::Observer;
use mcp_edge_policies::prefetch::Kind;
use mcp_edge_policies::prefetch::sequence::Context;
use pingora::ErrorType;

use crate::answer::Outcome;
use crate::error::EdgeError;
use crate::handover::Understood;
use crate::limits;
use crate::request_cache::RequestCache;
use crate::runtime::{Route, Runtime};

/// What one request has learned on its way through the filters.
pub struct Ctx {
    pub(super) started: Instant,
    pub(super) snapshot: Option<Arc<Runtime>>,
    pub(super) route: usize,
    /// JSON-RPC method and raw id, when the body was inspected.
    pub(super) rpc_method: Option<String>,
    pub(super) rpc_id: Option<String>,
    pub(super) stateless: bool,
    /// The upstream owning the request's MCP session, and that upstream's own session id.
    pub(super) pinned: Option<usize>,
    pub(super) upstream_session: Option<String>,
    /// Upstreams tried so far (the last one is the current attempt).
    pub(super) tried: Vec<usize>,
    /// Bytes of a streamed (not inspected) request body seen so far.
    pub(super) streamed_body: u64,
    /// A streamed stateless-era body, held back until it has been read whole and its mirrored
    /// headers checked (the upstream sees nothing of it before).
    pub(super) held_body: Option<BytesMut>,
    /// Why mcp-edge failed the request itself (answered by `fail_to_proxy`).
    pub(super) failure: Option<EdgeError>,
    /// This request's place among the route's requests forwarded upstream (`max_concurrent`),
    /// or among its client's open streams.
    pub(super) forwarding: Option<limits::Forwarding>,
    pub(super) open_stream: Option<limits::OpenStream>,
    /// Why the last attempt failed, connecting or proxying (named in the error if none
    /// succeeds, and whether that error is a 504).
    pub(super) last_failure: Option<ErrorType>,
    /// Cache state of a cacheable request.
    pub(super) cache: Option<Box<RequestCache>>,
    /// The request as the hit path understood it, when it handed it over (see `handover`).
    pub(super) understood: Option<Box<Understood>>,
    pub(super) outcome: Outcome,
    /// The cache tier that answered a hit (`memory`, `disk`, `shared`).
    pub(super) cache_tier: Option<&'static str>,
    /// Watches the upstream answer (result capture, notifications).
    pub(super) observer: Option<Observer>,
    /// The handshake-era session id the client sent, and how many server requests this
    /// request's answer has carried so far (told to the session's other requests).
    pub(super) edge_session: Option<String>,
    pub(super) server_requests_told: u64,
    pub(super) _active: crate::metrics::ActiveRequest,
    /// The client accepts gzip (and the configuration allows it).
    pub(super) accepts_gzip: bool,
    /// Compresses the body of the answer being proxied.
    pub(super) gzip: Option<crate::compress::Gzip>,
    /// The kind of prefetch this request is (the prefetcher's own), if it is one.
    pub(super) prefetch: Option<Kind>,
    /// A client's `resources/read` the prefetcher learns once it is answered from the cache or
    /// its answer stored: its context and URI.
    pub(super) learn: Option<(Context, String)>,
    /// When the current upstream attempt began (for the prefetcher's view of its latency).
    pub(super) upstream_started: Option<Instant>,
    /// An `initialize` whose answer the prefetcher wants (the server's capabilities).
    pub(super) watch_initialize: bool,
    /// The session id the client was given, when the upstream minted one for this request.
    pub(super) minted_session: Option<String>,
    /// The client was told `100 Continue` (it sent `Expect: 100-continue`).
    pub(super) body_invited: bool,
    /// A write (a `tools/call` of a tool not known to be read-only) whose invalidation is
    /// still to be applied: once its answer tells what became of it (see `writes`).
    pub(super) write_pending: bool,
    /// The write was sent upstream (it may have been applied, answered or not).
    pub(super) write_sent: bool,
    /// The upstream refused it (a head other than `2xx`): nothing was changed.
    pub(super) write_refused: bool,
}

impl Ctx {
    pub(super) fn new() -> Ctx {
        Ctx {
            started: Instant::now(),
            snapshot: None,
            route: 0,
            rpc_method: None,
            rpc_id: None,
            stateless: false,
            cache_tier: None,
            pinned: None,
            upstream_session: None,
            tried: Vec::new(),
            streamed_body: 0,
            held_body: None,
            failure: None,
            forwarding: None,
            open_stream: None,
            last_failure: None,
            cache: None,
            understood: None,
            outcome: Outcome::Bypass,
            observer: None,
            edge_session: None,
            server_requests_told: 0,
            _active: crate::metrics::ActiveRequest::start(),
            accepts_gzip: false,
            gzip: None,
            prefetch: None,
            learn: None,
            upstream_started: None,
            watch_initialize: false,
            minted_session: None,
            body_invited: false,
            write_pending: false,
            write_sent: false,
            write_refused: false,
        }
    }

    pub(super) fn route(&self) -> Option<&Route> {
        self.snapshot.as_ref().map(|s| &s.routes[self.route])
    }

    pub(super) fn mcp_method(&self) -> Option<Method> {
        self.rpc_method.as_deref().and_then(Method::named)
    }

    pub(super) fn current_upstream(&self) -> Option<usize> {
        self.tried.last().copied()
    }

    /// Server-to-client streams may stay silent for long: no read timeout for them.
    pub(super) fn is_long_lived_stream(&self, http_method: &http::Method) -> bool {
        http_method == http::Method::GET || self.mcp_method().is_some_and(Method::is_long_lived)
    }

    /// Whether the request may be sent again after a failure on a reused connection:
    /// only reads that change nothing, and never a request bound to a session's upstream.
    pub(super) fn safe_to_resend(&self, http_method: &http::Method) -> bool {
        let changes_nothing = self.mcp_method().is_some_and(Method::changes_nothing);
        self.pinned.is_none() && (changes_nothing || http_method == http::Method::GET)
    }
}
