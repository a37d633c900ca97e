//! The Pingora proxy service: guards a request, understands its JSON-RPC body, pins MCP
//! sessions to the upstream that created them, and streams the answer back untouched.

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use mcp_edge_policies::affinity;
use mcp_edge_policies::balance::consistent_key;
use mcp_edge_policies::routing::upstream_path;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::protocols::l4::socket::SocketAddr;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorSource, ErrorType, Result};

use crate::answer::{self, CachedAnswer, Outcome};
use crate::error::EdgeError;
use crate::guards;
use crate::handover::Understood;
use crate::known_headers::KnownHeaders;
use crate::limits;
use crate::request_cache::{self, LookupInput, Prelooked, Prepared, RequestCache, StoreRules};
use crate::runtime::{Live, Route, Runtime};
use crate::served::Served;
use crate::session_signals::SERVER_REQUESTS;
use crate::store::{EdgeCache, Found};
use mcp_edge_policies::cache::{Caller, Lookup};
use mcp_edge_policies::jsonrpc::Message;
use mcp_edge_policies::method::Method;
use mcp_edge_policies::observe::Observer;

/// Bodies up to this size are read and parsed before forwarding. Larger ones (never cacheable
/// reads) stream straight through: Pingora's retry buffer, which replays a body read in
/// `request_filter`, holds at most 64 KiB.
pub const INSPECT_LIMIT: u64 = 64 * 1024;
/// How long an idle pooled upstream connection is kept.
const UPSTREAM_IDLE: Duration = Duration::from_secs(60);

/// The Pingora error type of a failure mcp-edge decided itself (the [`EdgeError`] waits in
/// the context for `fail_to_proxy`: Pingora's phases return only Pingora's error type).
const EDGE_FAILURE: &str = "mcp-edge failure";

pub struct McpProxy {
    pub live: Live,
    pub cache: Arc<EdgeCache>,
}

/// What one request has learned on its way through the filters.
pub struct Ctx {
    started: Instant,
    snapshot: Option<Arc<Runtime>>,
    route: usize,
    /// JSON-RPC method and raw id, when the body was inspected.
    rpc_method: Option<String>,
    rpc_id: Option<String>,
    stateless: bool,
    /// The upstream owning the request's MCP session, and that upstream's own session id.
    pinned: Option<usize>,
    upstream_session: Option<String>,
    /// Upstreams tried so far (the last one is the current attempt).
    tried: Vec<usize>,
    /// Bytes of a streamed (not inspected) request body seen so far.
    streamed_body: u64,
    /// A streamed stateless-era body, held back until it has been read whole and its mirrored
    /// headers checked (the upstream sees nothing of it before).
    held_body: Option<BytesMut>,
    /// Why mcp-edge failed the request itself (answered by `fail_to_proxy`).
    failure: Option<EdgeError>,
    /// This request's place among the route's requests forwarded upstream (`max_concurrent`),
    /// or among its client's open streams.
    forwarding: Option<limits::Forwarding>,
    open_stream: Option<limits::OpenStream>,
    /// Why the last attempt failed, connecting or proxying (named in the error if none
    /// succeeds).
    last_failure: Option<String>,
    /// Cache state of a cacheable request.
    cache: Option<Box<RequestCache>>,
    /// The request as the hit path understood it, when it handed it over (see `handover`).
    understood: Option<Box<Understood>>,
    outcome: Outcome,
    /// Watches the upstream answer (result capture, notifications).
    observer: Option<Observer>,
    /// The handshake-era session id the client sent, and how many server requests this
    /// request's answer has carried so far (told to the session's other requests).
    edge_session: Option<String>,
    server_requests_told: u64,
    _active: crate::metrics::ActiveRequest,
    /// The client accepts gzip (and the configuration allows it).
    accepts_gzip: bool,
    /// Compresses the body of the answer being proxied.
    gzip: Option<crate::compress::Gzip>,
}

impl Ctx {
    fn route(&self) -> Option<&Route> {
        self.snapshot.as_ref().map(|s| &s.routes[self.route])
    }

    fn mcp_method(&self) -> Option<Method> {
        self.rpc_method.as_deref().and_then(Method::named)
    }

    fn current_upstream(&self) -> Option<usize> {
        self.tried.last().copied()
    }

    /// Server-to-client streams may stay silent for long: no read timeout for them.
    fn is_long_lived_stream(&self, http_method: &http::Method) -> bool {
        http_method == http::Method::GET || self.mcp_method().is_some_and(Method::is_long_lived)
    }

    /// Whether the request may be sent again after a failure on a reused connection:
    /// only reads that change nothing, and never a request bound to a session's upstream.
    fn safe_to_resend(&self, http_method: &http::Method) -> bool {
        let changes_nothing = self.mcp_method().is_some_and(Method::changes_nothing);
        self.pinned.is_none() && (changes_nothing || http_method == http::Method::GET)
    }
}

#[async_trait]
impl ProxyHttp for McpProxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            started: Instant::now(),
            snapshot: None,
            route: 0,
            rpc_method: None,
            rpc_id: None,
            stateless: false,
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
        }
    }

    /// The hit path hands a request over with what it learned of it.
    fn on_connection_reuse(&self, _session: &mut Session, ctx: &mut Ctx, handed_over: Box<dyn Any + Send + Sync>) {
        if let Ok(understood) = handed_over.downcast::<Understood>() {
            ctx.understood = Some(understood);
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        if let Some(understood) = ctx.understood.take() {
            return self.take_over(session, ctx, *understood).await;
        }
        let snapshot = self.live.load_full();
        let path = session.req_header().uri.path().to_string();
        let Some(route_index) = snapshot.route_for(&path) else {
            return reject(session, EdgeError::NoRoute { path }).await;
        };
        ctx.snapshot = Some(snapshot.clone());
        ctx.route = route_index;
        let route = &snapshot.routes[route_index];
        let known = known_headers(session, route);
        ctx.accepts_gzip =
            snapshot.config.compression.gzip && crate::compress::accepts_gzip(known.accept_encoding.text());

        let method = session.req_header().method.clone();
        if ![http::Method::POST, http::Method::GET, http::Method::DELETE, http::Method::OPTIONS].contains(&method) {
            return reject(session, EdgeError::MethodNotAllowed { method: method.to_string() }).await;
        }
        let client = client_addr(session);
        ctx.stateless = guards::is_stateless(&known);
        if !ctx.stateless {
            ctx.edge_session = known.session_id.text().map(str::to_string);
        }
        let pinned = guards::check_request(&snapshot.config.server, session.req_header(), &known)
            .and_then(|()| route.limits.admit(client))
            .and_then(|()| guards::pin_session(route, &known, ctx.stateless));
        match pinned {
            Ok(pinned) => {
                ctx.pinned = pinned.as_ref().map(|(index, _)| *index);
                ctx.upstream_session = pinned.map(|(_, upstream_session)| upstream_session);
            }
            Err(refused) => return reject(session, refused).await,
        }
        if method == http::Method::POST {
            match self.inspect_post(session, ctx, snapshot.config.server.max_body).await? {
                Inspected::Answered => return Ok(true),
                Inspected::Streamed => {}
                Inspected::Message(message) => {
                    let caller = guards::caller(&known_headers(session, route), ctx.stateless);
                    let input = LookupInput {
                        route: &route.config.name,
                        policy: &route.config.policy,
                        readonly: &route.readonly,
                        message: &message,
                        caller: &caller,
                    };
                    if let Some(lookup) = input.lookup()
                        && self.consult_cache(session, ctx, route, caller, (lookup, None)).await?
                    {
                        return Ok(true);
                    }
                }
            }
        }
        admit_upstream(session, ctx, route, &method, client, snapshot.config.server.max_streams_per_client).await
    }

    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(chunk) = body {
            ctx.streamed_body += chunk.len() as u64;
            let max_body = ctx.snapshot.as_ref().map_or(u64::MAX, |s| s.config.server.max_body);
            if ctx.streamed_body > max_body {
                return fail(ctx, EdgeError::StreamedBodyTooLarge { limit: max_body });
            }
        }
        let Some(held) = ctx.held_body.as_mut() else { return Ok(()) };
        if let Some(chunk) = body.take() {
            held.extend_from_slice(&chunk);
        }
        if !end_of_stream {
            // An empty chunk is not written (None would end the upstream body).
            *body = Some(Bytes::new());
            return Ok(());
        }
        let whole = ctx.held_body.take().unwrap_or_default().freeze();
        let Some(route) = ctx.route() else { return Ok(()) };
        match guards::understand(&whole, &known_headers(session, route), true) {
            Ok(message) => {
                ctx.rpc_method = message.method;
                ctx.rpc_id = message.id;
                *body = Some(whole);
                Ok(())
            }
            Err(refused) => fail(ctx, refused),
        }
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let snapshot = ctx.snapshot.clone().expect("request_filter ran");
        let route = &snapshot.routes[ctx.route];
        let index = match ctx.pinned {
            Some(pinned) if ctx.tried.contains(&pinned) => {
                return fail(ctx, EdgeError::SessionUpstreamGone);
            }
            Some(pinned) => pinned,
            None => {
                let identity = session.req_header().headers.get(route.config.policy.identity_header.as_str());
                let client = client_ip(session);
                let key = consistent_key(identity.map(|v| v.as_bytes()), client.as_bytes());
                let Some(index) = route.pool.select(key, &ctx.tried) else {
                    let route = route.config.name.clone();
                    let failure = match ctx.last_failure.clone() {
                        Some(last) => EdgeError::EveryUpstreamFailed { route, last },
                        None => EdgeError::NoHealthyUpstream { route },
                    };
                    return fail(ctx, failure);
                };
                index
            }
        };
        if let Some(previous) = ctx.current_upstream() {
            route.pool.upstreams[previous].inflight.fetch_sub(1, Ordering::Relaxed);
        }
        ctx.tried.push(index);
        let upstream = &route.pool.upstreams[index];
        upstream.inflight.fetch_add(1, Ordering::Relaxed);

        let mut peer = HttpPeer::new(upstream.addr, upstream.url.tls, upstream.url.host.clone());
        peer.options.connection_timeout = Some(route.config.connect_timeout);
        peer.options.idle_timeout = Some(UPSTREAM_IDLE);
        peer.options.ca = route.pool.ca.clone();
        if !ctx.is_long_lived_stream(&session.req_header().method) {
            peer.options.read_timeout = Some(route.config.read_timeout);
        }
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        request: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let route = ctx.route().expect("request_filter ran");
        let upstream = &route.pool.upstreams[ctx.current_upstream().expect("upstream_peer ran")];
        let original_path = request.uri.path_and_query().map_or("/", |pq| pq.as_str()).to_string();
        let path = upstream_path(&route.config.path, &upstream.url.path, &original_path);
        request.set_uri(
            path.parse::<http::Uri>().map_err(|e| Error::because(ErrorType::InternalError, "upstream path", e))?,
        );

        let client_host =
            header_str(session, "host").map(str::to_string).or_else(|| request.uri.authority().map(|a| a.to_string()));
        request.insert_header("host", upstream.url.authority.as_str())?;
        if let Some(host) = client_host {
            request.insert_header("x-forwarded-host", host)?;
        }
        let client = client_ip(session);
        let forwarded_for = match header_str(session, "x-forwarded-for") {
            Some(earlier) if !client.is_empty() => format!("{earlier}, {client}"),
            Some(earlier) => earlier.to_string(),
            None => client,
        };
        if !forwarded_for.is_empty() {
            request.insert_header("x-forwarded-for", forwarded_for)?;
        }
        let scheme = if is_tls(session) { "https" } else { "http" };
        request.insert_header("x-forwarded-proto", scheme)?;
        if let Some(upstream_session) = &ctx.upstream_session {
            request.insert_header("mcp-session-id", upstream_session.as_str())?;
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let (Some(route), Some(index)) = (ctx.route(), ctx.current_upstream())
            && route.pool.record_status(index, response.status.as_u16())
        {
            let upstream = &route.pool.upstreams[index].url.url;
            tracing::warn!(route = %route.config.name, %upstream, "upstream answered 5xx repeatedly; ejecting it for a while");
        }
        if response.status.is_server_error() && ctx.cache.as_ref().is_some_and(|c| c.has_stale()) {
            // fail_to_proxy answers with the stale entry instead.
            return Error::e_explain(ErrorType::HTTPStatus(response.status.as_u16()), "upstream 5xx, serving stale");
        }
        if let Some(cache) = &ctx.cache {
            cache.answer_began();
        }
        let want_id = ctx.cache.as_ref().and(ctx.rpc_id.clone());
        let max_entry = ctx.snapshot.as_ref().map_or(0, |s| s.config.cache.max_entry_size);
        ctx.observer = request_cache::observer_for(response, want_id, max_entry);
        let (Some(route), Some(index)) = (ctx.route(), ctx.current_upstream()) else {
            return Ok(());
        };
        // Name the owning upstream in the session id the client sees (see `affinity`).
        let minted = response.headers.get("mcp-session-id").and_then(|v| v.to_str().ok()).map(str::to_string);
        if let Some(upstream_session) = minted {
            let edge_session = affinity::encode(&route.pool.upstreams[index].url.id, &upstream_session);
            response.insert_header("mcp-session-id", edge_session)?;
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        response.insert_header("x-cache", ctx.outcome.as_str())?;
        let Some(snapshot) = ctx.snapshot.as_ref() else { return Ok(()) };
        ctx.gzip = crate::compress::prepare_response(&snapshot.config.compression, response, ctx.accepts_gzip)?;
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<Duration>> {
        let Some(gzip) = ctx.gzip.as_mut() else { return Ok(None) };
        let mut out = body.as_ref().map(|chunk| gzip.chunk(chunk)).unwrap_or_default();
        if end_of_stream {
            let mut whole = out.to_vec();
            whole.extend_from_slice(&gzip.finish());
            out = Bytes::from(whole);
        }
        *body = Some(out);
        Ok(None)
    }

    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<Duration>> {
        let Some(observer) = ctx.observer.as_mut() else { return Ok(None) };
        if let Some(chunk) = body {
            observer.feed(chunk);
        }
        if end_of_stream {
            observer.finish();
        }
        let new_server_requests = observer.server_requests - ctx.server_requests_told;
        if new_server_requests > 0
            && let Some(session) = &ctx.edge_session
        {
            SERVER_REQUESTS.add(session, new_server_requests);
            ctx.server_requests_told = observer.server_requests;
        }
        let invalidations = std::mem::take(&mut observer.invalidations);
        let route = ctx.route().expect("request_filter ran");
        if !invalidations.is_empty() {
            tracing::debug!(route = %route.config.name, ?invalidations, "invalidating on upstream notification");
            self.cache.invalidate(&route.config.name, &invalidations);
        }
        // Store as soon as the answer is known: an SSE client may close the stream right
        // after the response event, before the upstream's end of stream arrives.
        let answered = ctx.observer.as_ref().is_some_and(|o| o.result.is_some());
        if answered || end_of_stream {
            self.store_captured(ctx);
        }
        Ok(None)
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        ctx.last_failure = Some(e.etype().as_str().to_string());
        if let (Some(route), Some(index)) = (ctx.route(), ctx.current_upstream()) {
            tracing::warn!(route = %route.config.name, upstream = %route.pool.upstreams[index].url.url, error = %e, "upstream connect failed; ejecting it for a while");
            route.pool.eject(index);
        }
        // The upstream never saw the request, so another replica may take it, unless the
        // request belongs to a session only this upstream knows.
        if ctx.pinned.is_none() {
            e.set_retry(true);
        }
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        let resendable = ctx.safe_to_resend(&session.req_header().method) && !session.as_ref().retry_buffer_truncated();
        if !resendable {
            e.set_retry(false);
        } else if e.esource() == &ErrorSource::Upstream && session.response_written().is_none() {
            // A read that changes nothing, whose upstream failed before answering (it died,
            // reset the connection, answered garbage): another replica may answer it.
            ctx.last_failure = Some(e.etype().as_str().to_string());
            e.set_retry(true);
        } else {
            e.retry.decide_reuse(client_reused);
        }
        e
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let route_name = ctx.route().map_or("?", |r| r.config.name.as_str()).to_string();
        if session.response_written().is_none()
            && e.esource() != &ErrorSource::Downstream
            && let Some(stale) = ctx.cache.as_mut().and_then(|c| c.take_stale())
            && let Some(answer) = render_cached(session, ctx, &stale, Outcome::Stale)
        {
            tracing::warn!(route = %route_name, error = %e, "upstream failed; serving a stale cached answer");
            ctx.outcome = Outcome::Stale;
            // After a failed upstream attempt the connection's state is uncertain: close it.
            let answer = OwnedAnswer::from(answer);
            if respond_cached(session, answer, false).await.is_ok() {
                return FailToProxy { error_code: 200, can_reuse_downstream: false };
            }
        }
        // `None`: the client is gone, nothing to answer.
        let failure = ctx.failure.take().or_else(|| classify_failure(e, ctx, &route_name));
        let status = failure.as_ref().map_or(0, EdgeError::status);
        if let Some(failure) = failure
            && session.response_written().is_none()
        {
            let body = Bytes::from(failure.body(ctx.rpc_id.as_deref()));
            let headers =
                [("x-cache", ctx.outcome.as_str())].into_iter().chain(failure.extra_headers().iter().copied());
            if let Err(write_error) = respond(session, status, body, headers, false).await {
                tracing::debug!(error = %write_error, "could not send the error response");
            }
        }
        FailToProxy { error_code: status, can_reuse_downstream: false }
    }

    async fn logging(&self, session: &mut Session, error: Option<&Error>, ctx: &mut Ctx) {
        let route = ctx.route();
        if let (Some(route), Some(index)) = (route, ctx.current_upstream()) {
            route.pool.upstreams[index].inflight.fetch_sub(1, Ordering::Relaxed);
        }
        let upstream = route.zip(ctx.current_upstream()).map(|(r, index)| r.pool.upstreams[index].url.url.as_str());
        Served {
            route: route.map_or("-", |r| r.config.name.as_str()),
            http_method: session.req_header().method.as_str(),
            mcp_method: ctx.rpc_method.as_deref(),
            status: session.response_written().map_or(0, |r| r.status.as_u16()),
            cache: ctx.outcome.as_str(),
            upstream,
            started: ctx.started,
            error: error.map(|e| e.to_string()),
        }
        .record();
    }
}

impl McpProxy {
    /// A request the hit path understood (see `handover`): what it did is not done again.
    /// Left: the client's rate, reading the body (Pingora forwards it from its retry buffer),
    /// the cache (with the hit path's lookup) and the route's upstream admission.
    async fn take_over(&self, session: &mut Session, ctx: &mut Ctx, understood: Understood) -> Result<bool> {
        let Understood { snapshot, route, message, stateless, pinned, edge_session, caller, accepts_gzip, prelooked } =
            understood;
        ctx.snapshot = Some(snapshot.clone());
        ctx.route = route;
        ctx.accepts_gzip = accepts_gzip;
        ctx.stateless = stateless;
        ctx.edge_session = edge_session;
        ctx.pinned = pinned.as_ref().map(|(index, _)| *index);
        ctx.upstream_session = pinned.map(|(_, upstream_session)| upstream_session);
        ctx.rpc_method = message.method;
        ctx.rpc_id = message.id;
        let route = &snapshot.routes[route];
        let client = client_addr(session);
        if let Err(refused) = route.limits.admit(client) {
            return reject(session, refused).await;
        }
        read_whole_body(session).await?;
        if let Some(Prelooked { lookup, found }) = prelooked
            && self.consult_cache(session, ctx, route, caller, (lookup, Some(found))).await?
        {
            return Ok(true);
        }
        let max_streams = snapshot.config.server.max_streams_per_client;
        admit_upstream(session, ctx, route, &http::Method::POST, client, max_streams).await
    }

    /// Answers from the cache when it can; otherwise prepares to capture the upstream answer.
    /// `looked`: the request's lookup, and what it found if the hit path looked already.
    async fn consult_cache(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        route: &Route,
        caller: Caller,
        looked: (Lookup, Option<Found>),
    ) -> Result<bool> {
        let policy = &route.config.policy;
        let wait_limit = route.config.read_timeout;
        match request_cache::prepare(&self.cache, (&route.config.name, policy), looked, caller, wait_limit).await {
            Prepared::Hit(entry) => {
                let Some(answer) = render_cached(session, ctx, &entry, Outcome::Hit) else { return Ok(false) };
                ctx.outcome = Outcome::Hit;
                let answer = OwnedAnswer::from(answer);
                respond_cached(session, answer, true).await?;
                Ok(true)
            }
            Prepared::Forward(cache) => {
                ctx.cache = Some(cache);
                ctx.outcome = Outcome::Miss;
                Ok(false)
            }
        }
    }

    /// Once the upstream has answered: store the result if the cache may keep it (once), then
    /// wake the requests coalesced on it (they need not wait for the end of the stream).
    fn store_captured(&self, ctx: &mut Ctx) {
        let (Some(observer), Some(request_cache), Some(snapshot)) =
            (ctx.observer.as_ref(), ctx.cache.as_mut(), ctx.snapshot.as_ref())
        else {
            return;
        };
        let route = &snapshot.routes[ctx.route];
        let result = observer.cacheable_result();
        let rules = StoreRules {
            policy: &route.config.policy,
            max_entry: snapshot.config.cache.max_entry_size,
            precompress: snapshot.config.compression.gzip,
        };
        let recorded = request_cache.record_answer(&self.cache, result, rules);
        if recorded.is_some() && route.config.policy.readonly_tools && request_cache.method() == Method::ToolsList {
            result.into_iter().for_each(|tools| route.readonly.learn(tools));
        }
    }

    /// Guards a POST and, when small enough, reads and understands its JSON-RPC body.
    async fn inspect_post(&self, session: &mut Session, ctx: &mut Ctx, max_body: u64) -> Result<Inspected> {
        let Some(route) = ctx.route() else { return Ok(Inspected::Streamed) };
        let length = match guards::check_post(&known_headers(session, route), max_body) {
            Ok(length) => length,
            Err(refused) => return answered(reject(session, refused).await),
        };
        if length.is_none_or(|n| n > INSPECT_LIMIT) {
            // Large or chunked: streamed through, size-checked in request_body_filter. In the
            // stateless era its mirrored headers must still be checked against it: it is held
            // back until read whole (at most max_body).
            if ctx.stateless {
                ctx.held_body = Some(BytesMut::new());
            }
            return Ok(Inspected::Streamed);
        }
        let body = read_whole_body(session).await?;
        let Some(route) = ctx.route() else { return Ok(Inspected::Streamed) };
        let message = match guards::understand(&body, &known_headers(session, route), ctx.stateless) {
            Ok(message) => message,
            Err(refused) => return answered(reject(session, refused).await),
        };
        ctx.rpc_method = message.method.clone();
        ctx.rpc_id = message.id.clone();
        Ok(Inspected::Message(message))
    }
}

/// What inspecting a POST led to.
enum Inspected {
    /// An error was already answered.
    Answered,
    /// Too large or chunked to inspect: it streams through.
    Streamed,
    Message(Message),
}

/// Reads a small request body whole; Pingora keeps it in its retry buffer and forwards it
/// from there (also to a second upstream if the first fails).
async fn read_whole_body(session: &mut Session) -> Result<BytesMut> {
    session.enable_retry_buffering();
    let mut body = BytesMut::new();
    while let Some(chunk) = session.read_request_body().await? {
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Admits a request to the upstream: a long-lived stream against its client's open streams,
/// anything else against the route's concurrent requests.
async fn admit_upstream(
    session: &mut Session,
    ctx: &mut Ctx,
    route: &Route,
    method: &http::Method,
    client: Option<std::net::IpAddr>,
    max_streams: usize,
) -> Result<bool> {
    let admitted = match ctx.is_long_lived_stream(method) {
        true => limits::open_stream(client, max_streams).map(|stream| ctx.open_stream = stream),
        false => route.limits.forward().map(|forwarding| ctx.forwarding = forwarding),
    };
    match admitted {
        Ok(()) => Ok(false),
        Err(refused) => reject(session, refused).await,
    }
}

/// `reject`'s outcome as an inspection result.
fn answered(rejected: Result<bool>) -> Result<Inspected> {
    rejected.map(|_| Inspected::Answered)
}

/// What a proxying failure Pingora reports means to the client; `None`: the client is gone,
/// nothing to answer.
fn classify_failure(e: &Error, ctx: &Ctx, route: &str) -> Option<EdgeError> {
    use ErrorType::*;
    let connect_failure = matches!(
        e.etype(),
        ConnectTimedout
            | ConnectRefused
            | ConnectNoRoute
            | ConnectError
            | TLSHandshakeFailure
            | TLSHandshakeTimedout
            | InvalidCert
            | HandshakeError
    );
    let route = route.to_string();
    if e.esource() == &ErrorSource::Downstream {
        // The client's doing (it left, or sent bytes past its request while the answer was
        // pending): never reported as an upstream failure, which would tell it to start over.
        return match e.etype() {
            WriteError | ReadError | ConnectionClosed => None,
            ConnectError => Some(EdgeError::bad_request(
                "data arrived after the request, before its answer (HTTP pipelining is not supported here)",
            )),
            other => Some(EdgeError::bad_request(other.as_str())),
        };
    }
    Some(match e.etype() {
        _ if connect_failure && ctx.pinned.is_some() => EdgeError::SessionUpstreamGone,
        // The context may name the upstream (Pingora adds the peer): not for the client's eyes.
        HTTPStatus(code) => EdgeError::UpstreamStatus { route, status: *code },
        ConnectTimedout => EdgeError::ConnectTimedOut { route },
        ReadTimedout | WriteTimedout if e.esource() == &ErrorSource::Upstream => EdgeError::UpstreamTimedOut { route },
        _ if connect_failure => EdgeError::CannotConnect { route, cause: e.etype().as_str().to_string() },
        _ if e.esource() == &ErrorSource::Upstream => {
            EdgeError::UpstreamFailed { route, cause: e.etype().as_str().to_string() }
        }
        _ => EdgeError::Internal,
    })
}

/// Fails the request with `failure`, which `fail_to_proxy` answers.
fn fail<T>(ctx: &mut Ctx, failure: EdgeError) -> Result<T> {
    let explain = failure.to_string();
    ctx.failure = Some(failure);
    Error::e_explain(ErrorType::Custom(EDGE_FAILURE), explain)
}

fn header_str<'a>(session: &'a Session, name: &str) -> Option<&'a str> {
    session.req_header().headers.get(name).and_then(|value| value.to_str().ok())
}

/// The request's headers the guards read (one pass over Pingora's parsed head).
fn known_headers<'a>(session: &'a Session, route: &Route) -> KnownHeaders<'a> {
    KnownHeaders::from_map(&session.req_header().headers, &route.config.policy.identity_header)
}

fn client_addr(session: &Session) -> Option<std::net::IpAddr> {
    match session.client_addr() {
        Some(SocketAddr::Inet(addr)) => Some(addr.ip()),
        _ => None,
    }
}

fn client_ip(session: &Session) -> String {
    match session.client_addr() {
        Some(SocketAddr::Inet(addr)) => addr.ip().to_string(),
        _ => String::new(),
    }
}

fn is_tls(session: &Session) -> bool {
    session.digest().is_some_and(|d| d.ssl_digest.is_some())
}

/// Answers the request with a JSON-RPC error; `Ok(true)` tells Pingora the response is sent.
async fn reject(session: &mut Session, refused: EdgeError) -> Result<bool> {
    let headers = [("x-cache", Outcome::Bypass.as_str())].into_iter().chain(refused.extra_headers().iter().copied());
    // The request body may be unread (rejected before reading): don't reuse the connection.
    respond(session, refused.status(), Bytes::from(refused.body(None)), headers, false).await?;
    Ok(true)
}

/// A cached entry as the answer to this request.
fn render_cached<'a>(session: &'a Session, ctx: &Ctx, entry: &'a [u8], outcome: Outcome) -> Option<CachedAnswer<'a>> {
    let compression = &ctx.snapshot.as_ref()?.config.compression;
    let id = ctx.rpc_id.as_deref().unwrap_or("null");
    answer::render(entry, id, outcome, compression, ctx.accepts_gzip, header_str(session, "mcp-session-id"))
}

/// A cached answer copied out of the request it borrows, so that the session can be written to.
struct OwnedAnswer {
    body: Bytes,
    headers: Vec<(&'static str, String)>,
}

impl From<CachedAnswer<'_>> for OwnedAnswer {
    fn from(answer: CachedAnswer<'_>) -> OwnedAnswer {
        let headers = answer.headers().map(|(name, value)| (name, value.to_string())).collect();
        OwnedAnswer { body: answer.body.to_bytes(), headers }
    }
}

/// Writes a cached answer (200).
async fn respond_cached(session: &mut Session, answer: OwnedAnswer, keep_alive: bool) -> Result<()> {
    let headers = answer.headers.iter().map(|(name, value)| (*name, value.as_str()));
    respond(session, 200, answer.body, headers, keep_alive).await
}

/// Writes a whole `application/json` response.
async fn respond(
    session: &mut Session,
    status: u16,
    body: Bytes,
    headers: impl IntoIterator<Item = (&'static str, &str)>,
    keep_alive: bool,
) -> Result<()> {
    let mut header = ResponseHeader::build(status, Some(4))?;
    header.insert_header("content-type", "application/json")?;
    header.insert_header("content-length", body.len().to_string())?;
    for (name, value) in headers {
        header.insert_header(name, value)?;
    }
    if !keep_alive {
        session.set_keepalive(None);
    }
    session.write_response_header(Box::new(header), false).await?;
    session.write_response_body(Some(body), true).await?;
    Ok(())
}
