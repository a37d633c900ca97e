//! What is done with the upstream's answer: stored when the cache may keep it, and learned
//! from (the tools that say they are read-only, the pages of a list, a prefetch's answer).

use bytes::Bytes;
use mcp_edge_policies::cache::cursors::next_cursor;
use mcp_edge_policies::method::Method;
use pingora::Result;
use pingora::protocols::http::v1::common::is_expect_continue_req;
use pingora::proxy::Session;

use super::McpProxy;
use super::ctx::Ctx;
use crate::prefetch::Replay;
use crate::request_cache::StoreRules;

impl McpProxy {
    /// Tells the prefetcher how the current upstream attempt went (its latency, whether it
    /// failed), on routes that prefetch (only those time their attempts).
    pub(super) fn report_upstream(&self, ctx: &Ctx, failed: bool) {
        if let (Some(route), Some(started)) = (ctx.route(), ctx.attempts.started) {
            let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
            self.prefetch.upstream_answered(route, latency_ms, failed, ctx.prefetch().is_some());
        }
    }

    /// Once the upstream has answered: store the result if the cache may keep it (once), then
    /// wake the requests coalesced on it (they need not wait for the end of the stream). Tells
    /// the prefetcher where a prefetch's answer went, and of a client's list page that has a
    /// next one.
    pub(super) fn store_captured(&self, session: &Session, ctx: &mut Ctx) {
        let (Some(observer), Some(request)) = (ctx.answer.observer.as_ref(), ctx.request.as_deref_mut()) else {
            return;
        };
        let prefetch = request.admitted.prefetch;
        let decoded = request.decoded_body.clone();
        let snapshot = request.admitted.snapshot.clone();
        let route = &snapshot.routes[request.admitted.route];
        let Some(request_cache) = request.cache.as_deref_mut() else { return };
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
        if let (Some(Some(_)), None) = (&recorded, prefetch)
            && let Some((context, uri)) = request.learn.take()
        {
            self.prefetch.client_read(route, context, &uri, || Some(replay_of(session, decoded.as_ref())));
        }
        if recorded.is_some() && method.is_list() {
            self.follow_cursors(session, ctx, method);
        }
        if let (Some(Some(stored)), Some(kind)) = (recorded, prefetch) {
            self.prefetch.prefetch_stored(route, kind, stored, method);
        }
    }

    /// A list page's answer, once: the `nextCursor` it hands out is remembered (and its page
    /// prefetched for a client, where the route prefetches); an error for a cursor the
    /// upstream handed out discards the list's cached pages (see `cursors`).
    fn follow_cursors(&self, session: &Session, ctx: &Ctx, method: Method) {
        let (Some(observer), Some(request_cache), Some(route)) = (&ctx.answer.observer, ctx.cache(), ctx.route())
        else {
            return;
        };
        let name = &route.config.name;
        match observer.any_result() {
            Some(result) => {
                let Some(cursor) = result.and_then(|facts| next_cursor(&facts.stored_result)) else { return };
                self.cache.cursor_handed(name, method, &cursor);
                if ctx.prefetch().is_none() {
                    let decoded = ctx.decoded_body();
                    self.prefetch
                        .list_answered(route, method.as_str(), cursor, || replay_of(session, decoded.as_ref()));
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
}

/// On a connection that closes after this answer: reads what is left of the request's body
/// first, so that closing does not reset the connection before the client reads the answer
/// (`linger`). A client waiting for `100 Continue` sends its body only once invited.
pub(super) async fn drain_if_closing(session: &mut Session, ctx: &Ctx) {
    if session.as_downstream().get_keepalive().is_none() {
        let invited = ctx.request.as_ref().is_some_and(|request| request.body_invited);
        let body_expected = invited || !is_expect_continue_req(session.req_header());
        crate::linger::drain_unread_body(session.as_downstream_mut(), body_expected).await;
    }
}

/// Reads a body the intake has read and checked already, only so that Pingora holds it in its
/// retry buffer (from which it forwards it, to a second upstream too), without a copy of its own.
pub(super) async fn fill_retry_buffer(session: &mut Session) -> Result<()> {
    session.enable_retry_buffering();
    while session.read_request_body().await?.is_some() {}
    Ok(())
}

/// The request's body as read: `decoded`, when it came compressed (see `body_coding`), else
/// what Pingora's retry buffer holds once the body was read.
pub(super) fn request_body(session: &Session, decoded: Option<&Bytes>) -> Bytes {
    decoded.cloned().unwrap_or_else(|| session.as_ref().get_retry_buffer().unwrap_or_default())
}

/// What a prefetch repeats of this request: its head, and the `_meta` of its body.
pub(super) fn replay_of(session: &Session, decoded: Option<&Bytes>) -> Replay {
    Replay::from_request(session.req_header()).with_meta_of(&request_body(session, decoded))
}
