//! From a request to its upstream: reading and understanding it (or taking over what the hit
//! path understood), answering it from the cache or preparing to store its answer, and
//! admitting it to the upstream.

use bytes::BytesMut;
use mcp_edge_policies::cache::cursors::next_cursor;
use mcp_edge_policies::cache::{Caller, Lookup};
use mcp_edge_policies::jsonrpc::Message;
use mcp_edge_policies::method::Method;
use mcp_edge_policies::prefetch::sequence::Context;
use pingora::Result;
use pingora::protocols::http::v1::common::is_expect_continue_req;
use pingora::proxy::Session;

use super::ctx::Ctx;
use super::respond::{OwnedAnswer, client_addr, known_headers, reject, render_cached, respond_cached};
use super::{INSPECT_LIMIT, McpProxy};
use crate::answer::Outcome;
use crate::guards;
use crate::handover::Understood;
use crate::limits;
use crate::prefetch::Replay;
use crate::request_cache::{self, Prelooked, Prepared, StoreRules};
use crate::runtime::Route;
use crate::store::Found;

impl McpProxy {
    /// A request the hit path understood (see `handover`): what it did is not done again.
    /// Left: the client's rate, reading the body (Pingora forwards it from its retry buffer),
    /// the cache (with the hit path's lookup) and the route's upstream admission.
    pub(super) async fn take_over(&self, session: &mut Session, ctx: &mut Ctx, understood: Understood) -> Result<bool> {
        let Understood { snapshot, route, message, stateless, pinned, caller, accepts_gzip, prelooked, prefetch } =
            understood;
        ctx.prefetch = prefetch;
        ctx.snapshot = Some(snapshot.clone());
        ctx.route = route;
        ctx.accepts_gzip = accepts_gzip;
        ctx.stateless = stateless;
        // Handshake-era requests only: stateless-era ones carry no session (see `pin_session`).
        ctx.edge_session = if stateless { None } else { caller.session.clone() };
        ctx.pinned = pinned.as_ref().map(|(index, _)| *index);
        ctx.upstream_session = pinned.map(|(_, upstream_session)| upstream_session);
        let route = &snapshot.routes[route];
        let client = client_addr(session);
        if let Err(refused) = route.limits.admit(client) {
            return reject(session, refused).await;
        }
        fill_retry_buffer(session).await?;
        if prefetch.is_none() {
            ctx.learn = self.read_to_learn(route, &message, &caller);
        }
        ctx.write_pending = super::writes::is_write_on(route, &message);
        ctx.rpc_method = message.method;
        ctx.rpc_id = message.id;
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
    pub(super) async fn consult_cache(
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
            Prepared::Hit(fresh) => {
                let Some(answer) = render_cached(session, ctx, &fresh.stored, Outcome::Hit) else { return Ok(false) };
                if ctx.mcp_method() == Some(Method::ToolsList) {
                    route.readonly.learn_from_hit(&fresh.stored, &route.config.name, &policy.cache_tools);
                }
                ctx.outcome = Outcome::Hit;
                ctx.cache_tier = Some(fresh.stored.tier());
                let answer = OwnedAnswer::from(answer);
                respond_cached(session, answer, true).await?;
                if let Some((context, uri)) = ctx.learn.take() {
                    self.prefetch.client_read(route, context, &uri, || Some(replay_of(session)));
                }
                // No refresh from here: the service keeps no copy of the request's body.
                self.prefetch.hit(route, &fresh.life, ctx.prefetch.is_none(), || None);
                Ok(true)
            }
            Prepared::Forward(cache) => {
                ctx.cache = Some(cache);
                ctx.outcome = Outcome::Miss;
                Ok(false)
            }
        }
    }

    /// Tells the prefetcher how the current upstream attempt went (its latency, whether it
    /// failed), on routes that prefetch (only those time their attempts).
    pub(super) fn report_upstream(&self, ctx: &Ctx, failed: bool) {
        if let (Some(route), Some(started)) = (ctx.route(), ctx.upstream_started) {
            let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
            self.prefetch.upstream_answered(route, latency_ms, failed, ctx.prefetch.is_some());
        }
    }

    /// A client's `resources/read`, for the prefetcher to learn from once its answer is in the
    /// cache (a hit, or a miss whose answer was stored).
    pub(super) fn read_to_learn(&self, route: &Route, message: &Message, caller: &Caller) -> Option<(Context, String)> {
        if message.method.as_deref() != Some(Method::ResourcesRead.as_str()) {
            return None;
        }
        Some((self.prefetch.context(route, caller)?, message.params.uri.clone()?))
    }

    /// Once the upstream has answered: store the result if the cache may keep it (once), then
    /// wake the requests coalesced on it (they need not wait for the end of the stream). Tells
    /// the prefetcher where a prefetch's answer went, and of a client's list page that has a
    /// next one.
    pub(super) fn store_captured(&self, session: &Session, ctx: &mut Ctx) {
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
            watch: route.watch.as_deref(),
        };
        let recorded = request_cache.record_answer(&self.cache, result, rules);
        let method = request_cache.method();
        let policy = &route.config.policy;
        // What the tools say of themselves: which may be cached, which calls are writes.
        if method == Method::ToolsList && recorded.is_some() {
            let name = &route.config.name;
            result.into_iter().for_each(|tools| route.readonly.learn(&tools.stored_result, name, &policy.cache_tools));
        }
        if let (Some(Some(_)), None) = (&recorded, ctx.prefetch)
            && let Some((context, uri)) = ctx.learn.take()
        {
            self.prefetch.client_read(route, context, &uri, || Some(replay_of(session)));
        }
        if recorded.is_some() && method.is_list() {
            self.follow_cursors(session, ctx, method);
        }
        if let (Some(Some(stored)), Some(kind)) = (recorded, ctx.prefetch) {
            self.prefetch.prefetch_stored(route, kind, stored, method);
        }
    }

    /// A list page's answer, once: the `nextCursor` it hands out is remembered (and its page
    /// prefetched for a client, where the route prefetches); an error for a cursor the
    /// upstream handed out discards the list's cached pages (see `cursors`).
    fn follow_cursors(&self, session: &Session, ctx: &Ctx, method: Method) {
        let (Some(observer), Some(request_cache), Some(route)) = (&ctx.observer, &ctx.cache, ctx.route()) else {
            return;
        };
        let name = &route.config.name;
        match observer.any_result() {
            Some(result) => {
                let Some(cursor) = result.and_then(|facts| next_cursor(&facts.stored_result)) else { return };
                self.cache.cursor_handed(name, method, &cursor);
                if ctx.prefetch.is_none() {
                    self.prefetch.list_answered(route, method.as_str(), cursor, || replay_of(session));
                }
            }
            None if observer.responded() => {
                if let Some(cursor) = request_cache.cursor() {
                    self.cache.cursor_refused(name, method, cursor);
                }
            }
            None => {}
        }
    }

    /// Reads and understands a POST's JSON-RPC body when it is small enough (`length`: its
    /// declared length, `None` when chunked; its framing headers passed `check_post`).
    pub(super) async fn inspect_post(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        route: &Route,
        length: Option<u64>,
    ) -> Result<Inspected> {
        invite_body(session, ctx).await?;
        if length.is_none_or(|n| n > INSPECT_LIMIT) {
            // Large or chunked: size-checked in request_body_filter as it comes, and held back
            // until read whole (at most max_body), then checked by the same rules as a small
            // body (a valid message; in the stateless era, its mirrored headers): the framing
            // a client picks must not decide what reaches the upstream.
            ctx.held_body = Some(BytesMut::new());
            return Ok(Inspected::Streamed);
        }
        let body = read_whole_body(session).await?;
        // The headers are read again: the body was read since (the session was borrowed).
        let (understood, caller) = {
            let known = known_headers(session, route);
            (
                guards::understand(&body, &known, ctx.stateless),
                guards::caller(&known, ctx.stateless, &route.config.policy.identity_header),
            )
        };
        let message = match understood {
            Ok(message) => message,
            Err(refused) => return answered(reject(session, refused).await),
        };
        ctx.rpc_method = message.method.clone();
        ctx.rpc_id = message.id.clone();
        Ok(Inspected::Message(message, caller))
    }
}

/// What inspecting a POST led to. (Returned once per request, on the stack: boxing the large
/// variant would allocate per request instead.)
#[allow(clippy::large_enum_variant)]
pub(super) enum Inspected {
    /// An error was already answered.
    Answered,
    /// Too large or chunked to inspect: it streams through.
    Streamed,
    /// The body's message, and who is asking (for the cache).
    Message(Message, Caller),
}

/// On a connection that closes after this answer: reads what is left of the request's body
/// first, so that closing does not reset the connection before the client reads the answer
/// (`linger`). A client waiting for `100 Continue` sends its body only once invited.
pub(super) async fn drain_if_closing(session: &mut Session, ctx: &Ctx) {
    if session.as_downstream().get_keepalive().is_none() {
        let body_expected = ctx.body_invited || !is_expect_continue_req(session.req_header());
        crate::linger::drain_unread_body(session.as_downstream_mut(), body_expected).await;
    }
}

/// Tells a client that waits before sending its body (`Expect: 100-continue`, HTTP/1.1) to
/// send it, now that its head passed every check (RFC 9110 §10.1.1): the proxy reads bodies
/// before forwarding them, so without this the client waited out its own timeout (curl: 1 s).
/// A request refused before this is answered without it, and Pingora then closes the
/// connection, the body unread. The upstream is not asked again (`Expect` is not forwarded).
async fn invite_body(session: &mut Session, ctx: &mut Ctx) -> Result<()> {
    if is_expect_continue_req(session.req_header()) {
        // Pingora turns keep-alive off when it writes any answer before the body has been
        // read, this `100` too; the final answer is checked again when it is written.
        let keepalive = session.get_keepalive();
        session.write_continue_response().await?;
        session.set_keepalive(keepalive);
        ctx.body_invited = true;
    }
    Ok(())
}

/// Reads a small request body whole; Pingora keeps it in its retry buffer and forwards it
/// from there (also to a second upstream if the first fails).
pub(super) async fn read_whole_body(session: &mut Session) -> Result<BytesMut> {
    session.enable_retry_buffering();
    let mut body = BytesMut::new();
    while let Some(chunk) = session.read_request_body().await? {
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Reads a body the hit path has read and checked already, only so that Pingora holds it in
/// its retry buffer (as [`read_whole_body`] does), without a copy of its own.
async fn fill_retry_buffer(session: &mut Session) -> Result<()> {
    session.enable_retry_buffering();
    while session.read_request_body().await?.is_some() {}
    Ok(())
}

/// What a prefetch repeats of this request: its head, and the `_meta` of its body (which
/// Pingora's retry buffer holds once the body was read).
pub(super) fn replay_of(session: &Session) -> Replay {
    let body = session.as_ref().get_retry_buffer().unwrap_or_default();
    Replay::from_request(session.req_header()).with_meta_of(&body)
}

/// Admits a request to the upstream: a long-lived stream against its client's open streams,
/// anything else against the route's concurrent requests.
pub(super) async fn admit_upstream(
    session: &mut Session,
    ctx: &mut Ctx,
    route: &Route,
    method: &http::Method,
    client: Option<std::net::IpAddr>,
    max_streams: usize,
) -> Result<bool> {
    let admitted = match ctx.is_long_lived_stream(method) {
        true => limits::open_stream(client, max_streams).map(|stream| ctx.open_stream = Some(stream)),
        false => route.limits.forward().map(|forwarding| ctx.forwarding = forwarding),
    };
    match admitted {
        Ok(()) => Ok(false),
        Err(refused) => reject(session, refused).await,
    }
}

/// `reject`'s outcome as an inspection result.
pub(super) fn answered(rejected: Result<bool>) -> Result<Inspected> {
    rejected.map(|_| Inspected::Answered)
}
