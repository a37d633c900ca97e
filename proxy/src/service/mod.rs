//! The Pingora proxy service: forwards a request the intake understood (`intake`) to its
//! upstream (the one owning its MCP session, else one the balancer picks, with failover), and
//! streams the answer back, watching it: storing a cacheable result, invalidating on
//! notifications and writes, keeping the book of sessions.
//!
//! - this file: the Pingora phases, in the order Pingora calls them;
//! - [`ctx`]: what one request establishes on its way through them;
//! - [`captured`]: what is done with the upstream's answer (stored, learned from);
//! - [`failure`]: what a failure means to the client;
//! - [`respond`]: answers mcp-edge writes itself;
//! - [`upstream_request`]: what the upstream is sent (its path, `Host`, `X-Forwarded-*`, session);
//! - [`head_edit`]: setting headers on Pingora's heads through the `http` crate's map;
//! - [`writes`]: what a write through the route invalidates.

mod captured;
mod ctx;
mod failure;
mod head_edit;
mod respond;
mod upstream_request;
mod writes;

use ctx::Ctx;
pub use failure::short as short_error;
use failure::{classify_failure, connect_failed, fail, no_upstream_left, proxy_failed};
use respond::*;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use mcp_edge_policies::affinity;
use mcp_edge_policies::balance::consistent_key;
use mcp_edge_policies::insight::{self, Call, CallOutcome, OpKind};
use mcp_edge_policies::method::Method;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorSource, ErrorType, Result};

use crate::answer::Outcome;
use crate::error::EdgeError;
use crate::guards;
use crate::known_headers::{MCP_SESSION_ID, X_CACHE, X_REQUEST_ID};
use crate::live_sessions::LIVE_SESSIONS;
use crate::prefetch::Prefetcher;
use crate::request_cache;
use crate::served::{Asked, Served};
use crate::session_signals::SERVER_REQUESTS;
use crate::store::EdgeCache;

/// How long an idle pooled upstream connection is kept.
const UPSTREAM_IDLE: Duration = Duration::from_secs(60);

pub struct McpProxy {
    pub cache: Arc<EdgeCache>,
    pub prefetch: Arc<Prefetcher>,
}

#[async_trait]
impl ProxyHttp for McpProxy {
    /// Boxed: Pingora keeps the context inside the request's future, which is moved (copied
    /// whole) twice per request; a 744-byte context made every one of those copies larger.
    type CTX = Box<Ctx>;

    fn new_ctx(&self) -> Box<Ctx> {
        Box::new(Ctx::new())
    }

    /// Takes over what the intake understood of the request: nothing of it is read again.
    /// Left: reading a small body into Pingora's retry buffer (from which it is forwarded, to
    /// a second upstream too if the first fails).
    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        crate::drain::close_when_draining(session);
        let Some(request) = crate::intake::handover::take() else {
            // Every front hands its requests over; one that was not is not forwarded unread.
            tracing::error!("a request reached the proxy service without passing the intake");
            return reject(session, EdgeError::Internal).await;
        };
        let read_first = matches!(request.admitted.body, crate::intake::BodyPlan::Read(_));
        if request.admitted.body == crate::intake::BodyPlan::Streamed {
            ctx.streamed.held = Some(bytes::BytesMut::new());
        }
        ctx.outcome = if request.cache.is_some() { Outcome::Miss } else { Outcome::Bypass };
        ctx.request = Some(request);
        if read_first {
            captured::fill_retry_buffer(session).await?;
        }
        Ok(false)
    }

    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        if let Some(chunk) = body {
            ctx.streamed.seen += chunk.len() as u64;
            let max_body = ctx.snapshot().map_or(u64::MAX, |s| s.config.server.max_body);
            if ctx.streamed.seen > max_body {
                return fail(ctx, EdgeError::StreamedBodyTooLarge { limit: max_body });
            }
        }
        if let Some(decoded) = ctx.request.as_ref().and_then(|request| request.decoded_body.as_ref())
            && ctx.streamed.held.is_none()
        {
            // A compressed body the intake read and decoded: its plain text is sent instead, at
            // its end (an empty chunk is not written; None would end the upstream body).
            *body = Some(if end_of_stream { decoded.clone() } else { Bytes::new() });
            return Ok(());
        }
        let Some(held) = ctx.streamed.held.as_mut() else { return Ok(()) };
        if let Some(chunk) = body.take() {
            held.extend_from_slice(&chunk);
        }
        if !end_of_stream {
            *body = Some(Bytes::new());
            return Ok(());
        }
        let whole = ctx.streamed.held.take().unwrap_or_default().freeze();
        let Some(request) = ctx.request.as_mut() else { return Ok(()) };
        let whole = match request.admitted.coding {
            Some(coding) => {
                let max_body = request.admitted.snapshot.config.server.max_body;
                match crate::body_coding::decode(coding, &whole, max_body).await {
                    Ok(decoded) => {
                        request.decoded_body = Some(decoded.clone());
                        decoded
                    }
                    Err(refused) => return fail(ctx, refused),
                }
            }
            None => whole,
        };
        let route = request.admitted.route();
        let known = known_headers(session, route);
        match guards::understand(&whole, &known, request.admitted.stateless) {
            Ok(message) => {
                request.write_pending = crate::intake::is_write_on(route, &message);
                request.rpc_method = message.method;
                request.rpc_id = message.id;
                *body = Some(whole);
                Ok(())
            }
            Err(refused) => fail(ctx, refused),
        }
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<Box<HttpPeer>> {
        let Some(request) = ctx.request.as_ref() else { return fail(ctx, EdgeError::Internal) };
        // Its own handle on the snapshot: `ctx` is written to below.
        let (snapshot, route_index) = (request.admitted.snapshot.clone(), request.admitted.route);
        let route = &snapshot.routes[route_index];
        if upstream_request::came_through_here(session) {
            tracing::warn!(route = %route.config.name, "a request came back to this mcp-edge: an upstream of the route is the edge itself");
            return fail(ctx, EdgeError::LoopDetected);
        }
        let upstream = match ctx.pinned() {
            Some(pinned) if ctx.attempts.tried.iter().any(|tried| Arc::ptr_eq(tried, pinned)) => {
                return fail(ctx, EdgeError::SessionUpstreamGone);
            }
            Some(pinned) => pinned.clone(),
            None => {
                // Who the caller is (identity header, else address) is read only by a balancer
                // that hashes on it; the others ignore the key.
                let hashes = route.pool.hashes_callers();
                let headers = &session.req_header().headers;
                let identity = hashes.then(|| headers.get(route.config.policy.identity_header.as_str())).flatten();
                let client = if hashes { client_ip(session) } else { None };
                let client = client.as_ref().map_or(&b""[..], |ip| ip.as_str().as_bytes());
                let key = consistent_key(identity.map(|v| v.as_bytes()), client);
                if ctx.attempts.tried.is_empty() {
                    ctx.attempts.none_healthy = !route.pool.any_ready();
                }
                let Some(upstream) = route.pool.select(key, &ctx.attempts.tried) else {
                    let (last_failure, none_healthy) = (ctx.attempts.last_failure.clone(), ctx.attempts.none_healthy);
                    return fail(ctx, no_upstream_left(route.config.name.clone(), last_failure, none_healthy));
                };
                upstream
            }
        };
        if let Some(previous) = ctx.current_upstream() {
            previous.inflight.fetch_sub(1, Ordering::Relaxed);
        }
        upstream.inflight.fetch_add(1, Ordering::Relaxed);
        // Timed only where the prefetcher watches the upstream's latency.
        if route.config.prefetch.enabled {
            ctx.attempts.started = Some(std::time::Instant::now());
        }
        let mut peer = HttpPeer::new(upstream.addr, upstream.url.tls, upstream.url.host.clone());
        peer.options.connection_timeout = Some(route.config.connect_timeout);
        peer.options.idle_timeout = Some(UPSTREAM_IDLE);
        peer.options.ca = route.pool.ca.clone();
        if !ctx.is_long_lived_stream(&session.req_header().method) {
            peer.options.read_timeout = Some(route.config.read_timeout);
        }
        // Timed only for a span of the exchange (see `spans`).
        if ctx.attempts.first_started.is_none() && ctx.traced() {
            ctx.attempts.first_started = Some(std::time::Instant::now());
        }
        ctx.attempts.tried.push(upstream);
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        request: &mut RequestHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        ctx.answer.write_sent |= ctx.write_pending();
        upstream_request::rewrite(session, request, ctx)
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        self.report_upstream(ctx, response.status.is_server_error());
        if let (Some(route), Some(upstream)) = (ctx.route(), ctx.current_upstream())
            && route.pool.record_status(upstream, response.status.as_u16())
        {
            let upstream = &upstream.label;
            tracing::warn!(route = %route.config.name, %upstream, "upstream answered 5xx repeatedly; ejecting it for a while");
        }
        if response.status.is_server_error() && ctx.cache().is_some_and(|c| c.has_stale()) {
            // Served stale by failing the request: see `fail_to_proxy` for why.
            return Error::e_explain(ErrorType::HTTPStatus(response.status.as_u16()), "upstream 5xx, serving stale");
        }
        if let Some(cache) = ctx.cache() {
            cache.answer_began();
        }
        // A handshake-era `initialize` answer is read too on routes that prefetch: the server's
        // capabilities say which list calls the new session will make (see `prefetch`).
        ctx.answer.watch_initialize = ctx.prefetch().is_none()
            && ctx.mcp_method() == Some(Method::Initialize)
            && ctx.route().is_some_and(|r| r.config.prefetch.enabled);
        ctx.answer.write_refused = !response.status.is_success();
        // A write's answer is read whatever its headers say: what became of it decides what
        // it invalidates.
        let read_anyway = ctx.answer.watch_initialize || ctx.write_pending();
        // A tool call's answer is read for the route's insight too (are its answers alike?).
        let insight = ctx.request.as_ref().and_then(|r| r.op.as_ref()).is_some_and(|op| op.kind == OpKind::Tool);
        let want_id =
            if ctx.cache().is_some() || read_anyway || insight { ctx.rpc_id().map(str::to_string) } else { None };
        let max_entry = ctx.snapshot().map_or(0, |s| s.config.cache.max_entry_size);
        ctx.answer.observer = request_cache::observer_for(response, want_id, read_anyway, max_entry);
        let Some(upstream) = ctx.current_upstream() else {
            return Ok(());
        };
        // Name the owning upstream in the session id the client sees (see `affinity`).
        let minted = response.headers.get(&MCP_SESSION_ID).and_then(|v| v.to_str().ok()).map(str::to_string);
        if let Some(upstream_session) = minted {
            let edge_session = affinity::encode(&upstream.id, &upstream_session);
            response.insert_header("mcp-session-id", edge_session.as_str())?;
            ctx.answer.minted_session = Some(edge_session);
        }
        keep_session_book(session, ctx, response.status.as_u16(), ctx.answer.minted_session.as_deref());
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        let compression = ctx.snapshot().map(|snapshot| &snapshot.config.compression);
        let accepts_gzip = ctx.request.as_ref().is_some_and(|request| request.accepts_gzip);
        let outcome = ctx.outcome.header_value();
        let request_id = ctx.request_id().and_then(|id| http::HeaderValue::from_str(id).ok());
        ctx.answer.gzip = head_edit::edit_response(response, |status, headers| {
            headers.insert(X_CACHE, outcome);
            if let Some(id) = request_id {
                headers.insert(X_REQUEST_ID, id);
            }
            head_edit::drop_framing_of_204(status, headers);
            compression.and_then(|config| crate::compress::prepare_response(config, status, headers, accepts_gzip))
        })?;
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<Option<Duration>> {
        if let Some(gzip) = ctx.answer.gzip.as_mut() {
            gzip.filter(body, end_of_stream);
        }
        Ok(None)
    }

    fn upstream_response_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<Option<Duration>> {
        let Some(observer) = ctx.answer.observer.as_mut() else { return Ok(None) };
        if let Some(chunk) = body {
            observer.feed(chunk);
        }
        if end_of_stream {
            observer.finish();
        }
        let new_server_requests = observer.server_requests - ctx.answer.server_requests_told;
        let edge_session = ctx.request.as_ref().and_then(|request| request.edge_session.as_deref());
        if new_server_requests > 0
            && let Some(session) = edge_session
        {
            SERVER_REQUESTS.add(session, new_server_requests);
            ctx.answer.server_requests_told = observer.server_requests;
        }
        let invalidations = std::mem::take(&mut observer.invalidations);
        self.settle_write(ctx, end_of_stream);
        let Some(route) = ctx.route() else { return Ok(None) };
        if !invalidations.is_empty() {
            tracing::debug!(route = %route.config.name, ?invalidations, "invalidating on upstream notification");
            self.cache.invalidate(&route.config.name, &invalidations, "notification");
        }
        if ctx.answer.watch_initialize
            && let (Some(result), Some(session)) =
                (ctx.answer.observer.as_ref().and_then(|o| o.result()), &ctx.answer.minted_session)
        {
            self.prefetch.session_initialized(route, session, &result.stored_result);
        }
        ctx.answer.watch_initialize &= ctx.answer.observer.as_ref().is_none_or(|o| !o.answered());
        // Store as soon as the answer is known: an SSE client may close the stream right
        // after the response event, before the upstream's end of stream arrives.
        let answered = ctx.answer.observer.as_ref().is_some_and(|o| o.answered());
        if answered || end_of_stream {
            self.store_captured(session, ctx);
        }
        Ok(None)
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Self::CTX,
        e: Box<Error>,
    ) -> Box<Error> {
        self.report_upstream(ctx, true);
        connect_failed(ctx, e)
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Self::CTX,
        client_reused: bool,
    ) -> Box<Error> {
        proxy_failed(peer, session, e, ctx, client_reused)
    }

    /// Answers a failed request: with a stale entry when the cache holds one (`stale_if_error`),
    /// else with the failure's JSON-RPC error.
    ///
    /// Why an upstream 5xx is turned into an error to get here: once Pingora has the
    /// upstream's response head, its phases can change headers (`upstream_response_filter`,
    /// `response_filter`) but the body that follows is the upstream's; no phase can drop the
    /// upstream's answer and write another in its place, except failing the request, after
    /// which this phase may write a whole response of its own. (Pingora's own serve-stale lives
    /// in pingora-cache's state machine, keyed on the HTTP request; mcp-edge's keys come from
    /// the JSON-RPC body, so it keeps its own cache and takes this seam.)
    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Self::CTX) -> FailToProxy {
        let route_name = ctx.route().map_or("?", |r| r.config.name.as_str()).to_string();
        if !final_answer_written(session)
            && e.esource() != &ErrorSource::Downstream
            && let Some(stale) = ctx.cache_mut().and_then(|c| c.take_stale())
            && let Some(answer) = render_cached(session, ctx, &stale, Outcome::Stale)
        {
            tracing::warn!(route = %route_name, error = %e, "upstream failed; serving a stale cached answer");
            ctx.outcome = Outcome::Stale;
            // After a failed upstream attempt the connection's state is uncertain: close it.
            let answer = OwnedAnswer::of(answer, ctx);
            if respond_cached(session, answer, false).await.is_ok() {
                return FailToProxy { error_code: 200, can_reuse_downstream: false };
            }
        }
        // `None`: the client is gone, nothing to answer.
        let failure = ctx.failure.take().or_else(|| classify_failure(e, ctx, &route_name));
        let status = failure.as_ref().map_or(0, EdgeError::status);
        ctx.failure_told = failure.as_ref().map(EdgeError::to_string);
        if let Some(failure) = failure
            && !final_answer_written(session)
        {
            let body = Bytes::from(failure.body(ctx.rpc_id()));
            let request_id = ctx.request_id().unwrap_or("-");
            let headers = [("x-cache", ctx.outcome.as_str()), (crate::request_id::HEADER, request_id)];
            let headers = headers.into_iter().chain(failure.extra_headers());
            if let Err(write_error) = respond(session, status, body, headers, false).await {
                tracing::debug!(error = %write_error, "could not send the error response");
            }
        }
        FailToProxy { error_code: status, can_reuse_downstream: false }
    }

    /// Pingora's own line for a failed request: the access log's line tells of it (with what
    /// the client was told), and `failure` logs the upstream events behind it, once each.
    fn suppress_error_log(&self, _session: &Session, _ctx: &Self::CTX, _error: &Error) -> bool {
        true
    }

    /// Pingora's line for each attempt sent again: `failure` logs why (a replica ejected, an
    /// upstream failing before its answer), with the route and the upstream's URL.
    fn suppress_proxy_warn_log(
        &self,
        _session: &Session,
        _ctx: &Self::CTX,
        _error: &Error,
        _context: pingora::proxy::ProxyWarnLogContext,
    ) -> bool {
        true
    }

    async fn logging(&self, session: &mut Session, error: Option<&Error>, ctx: &mut Self::CTX) {
        // A write whose answer was cut short may have changed anything all the same.
        self.settle_write(ctx, true);
        let route = ctx.route();
        let answered = session.response_written().map_or(0, |r| r.status.as_u16());
        if let (Some(route), Some(edge_session), true) = (route, ctx.edge_session(), (200..300).contains(&answered))
            && ctx.prefetch().is_none()
            && ctx.mcp_method() == Some(Method::NotificationsInitialized)
        {
            let decoded = ctx.decoded_body();
            self.prefetch.session_ready(route, edge_session, || captured::replay_of(session, decoded.as_ref()));
        }
        if let Some(upstream) = ctx.current_upstream() {
            upstream.inflight.fetch_sub(1, Ordering::Relaxed);
        }
        // A request mcp-edge refused itself for what the client sent (a body found too large or
        // malformed once streamed) is no upstream's answer, though an upstream was chosen.
        let refused_by_edge = ctx.failure_told.is_some() && answered < 500;
        let upstream = ctx.current_upstream().filter(|_| !refused_by_edge).map(|u| u.label.as_str());
        let path = session.req_header().uri.path();
        let http_method = session.req_header().method.as_str();
        let asked = match ctx.request.as_ref() {
            Some(request) => request.asked(http_method, path),
            None => Asked { http_method, path, ..Asked::unread(client_addr(session)) },
        };
        Served {
            asked,
            mcp_method: ctx.request.as_ref().and_then(|request| request.rpc_method.as_deref()),
            status: answered,
            cache: ctx.outcome.as_str(),
            tier: ctx.cache_tier,
            upstream,
            started: ctx.started,
            error: failure::logged_error(error, ctx, answered),
            bytes_in: session.as_downstream().body_bytes_read() as u64,
            bytes_out: session.as_downstream().body_bytes_sent() as u64,
            attempted: ctx
                .attempts
                .first_started
                .map(|first_at| crate::spans::Attempted { first_at, count: ctx.attempts.tried.len() }),
        }
        .record();
        count_call(ctx, answered);
        captured::drain_if_closing(session, ctx).await;
    }
}

/// Counts a forwarded call (answered `status`) in its route's insight: how it was answered,
/// its answer's hash and `ttlMs` when read, until when it is fresh in the cache if stored.
fn count_call(ctx: &Ctx, status: u16) {
    let Some(request) = ctx.request.as_ref() else { return };
    let succeeded = (200..300).contains(&status) && ctx.failure_told.is_none();
    let outcome = match ctx.outcome {
        _ if !succeeded => CallOutcome::Failed,
        Outcome::Hit | Outcome::Stale => CallOutcome::Hit,
        Outcome::Miss => CallOutcome::Miss,
        Outcome::Bypass => CallOutcome::Bypass,
    };
    let facts = ctx.answer.observer.as_ref().and_then(|observer| observer.result());
    request.count_call(|op| Call {
        kind: op.kind,
        name: &op.name,
        args: op.args,
        at_ms: crate::store::now_ms(),
        latency_us: ctx.started.elapsed().as_micros() as u64,
        outcome,
        answer: facts.map(|facts| insight::hash_of(&facts.stored_result)),
        server_ttl_ms: facts.and_then(|facts| facts.ttl_ms),
        fresh_until_ms: ctx.cache().and_then(|cache| cache.stored_until_ms()),
    });
}

/// Keeps the book of live sessions (see `live_sessions`) from an upstream's answer (`status`):
/// a session minted for an `initialize` (with what its body declared: it is in Pingora's
/// retry buffer, unless it was held whole), a session the upstream answered, one it refused
/// or that was deleted. Also learns whether the route's upstream gives sessions at all.
fn keep_session_book(session: &Session, ctx: &Ctx, status: u16, minted: Option<&str>) {
    let initialize = ctx.mcp_method() == Some(Method::Initialize);
    let stateless = ctx.request.as_ref().is_none_or(|request| request.admitted.stateless);
    if initialize && status == 200 && !stateless {
        if let Some(route) = ctx.route() {
            route.sessions.initialized(minted.is_some());
        }
        if let Some(minted) = minted {
            let body = captured::request_body(session, ctx.decoded_body().as_ref());
            LIVE_SESSIONS.minted(minted, mcp_edge_policies::cache::declared_capabilities(&body));
        }
        return;
    }
    let Some(edge_session) = ctx.edge_session() else { return };
    let deleted = session.req_header().method == http::Method::DELETE;
    match status {
        200..=299 if deleted => LIVE_SESSIONS.ended(edge_session),
        200..=299 => LIVE_SESSIONS.answered(edge_session),
        400 | 404 => LIVE_SESSIONS.ended(edge_session),
        _ => {}
    }
}

/// Whether the client was sent its answer's head. A `100 Continue` (sent to a client that
/// waits before sending its body) is not it: a body held and refused after it still gets its
/// error.
fn final_answer_written(session: &Session) -> bool {
    session.response_written().is_some_and(|head| !head.status.is_informational())
}
