//! The cache's part in one request that may be cached: its lookup ([`LookupInput`]), what a
//! miss does (join or lead the coalesced fetch: [`prepare`]), and the [`RequestCache`] that
//! follows it upstream and stores the answer. (Invalidations that the upstream's notifications
//! carry are applied by the service as it watches every stream.)

use crate::metrics::METRICS;
use std::sync::Arc;

use bytes::Bytes;
use mcp_edge_policies::cache::{
    Caller, Deflated, Entry, Key, Lookup, ResultFacts, Scope, Store, http_forbids_storing, http_vary_forbids_storing,
    lookup_for, store_decision,
};
use mcp_edge_policies::config::CachePolicy;
use mcp_edge_policies::jsonrpc::Message;
use mcp_edge_policies::observe::Observer;
use pingora::http::ResponseHeader;

use crate::coalesce::{Coalesce, Leader, wait_for_leader};
use crate::readonly_tools::ReadonlyTools;
use crate::session_signals::SERVER_REQUESTS;
use crate::store::{EdgeCache, Found, Fresh, now_ms};
use crate::subscriptions::RouteWatch;

/// The cache's part in one cacheable request that goes upstream, from the miss to the stored
/// answer. Its phases each call one method, once: [`answer_began`](Self::answer_began) when
/// the upstream's answer starts, [`record_answer`](Self::record_answer) when it is known,
/// [`take_stale`](Self::take_stale) if the upstream failed. If it led the coalesced fetch of
/// its key, dropping it ends the lead, whatever became of the request.
pub struct RequestCache {
    lookup: Lookup,
    caller: Caller,
    /// The key concurrent misses of this request coalesce on.
    coalescing_key: Key,
    /// When the upstream fetch began: invalidations after it win over its answer.
    fetched_at_ms: u64,
    leader: Option<Leader>,
    /// An expired entry to serve if every upstream fails.
    stale: Option<Bytes>,
    /// The answer was recorded (it is, at most once).
    recorded: bool,
    /// Until when the recorded answer is fresh in the cache, if it was stored.
    stored_until_ms: Option<u64>,
    /// The session's count of server-to-client requests when the fetch began (handshake era):
    /// if it moves before the answer comes, the answer may depend on what the client said.
    session_epoch: Option<u64>,
}

impl RequestCache {
    pub fn method(&self) -> mcp_edge_policies::method::Method {
        self.lookup.method
    }

    /// Until when the answer recorded is fresh in the cache (`None`: not stored).
    pub fn stored_until_ms(&self) -> Option<u64> {
        self.stored_until_ms
    }

    /// The cursor a list request asked for its page with, if any.
    pub fn cursor(&self) -> Option<&str> {
        self.lookup.cursor.as_deref()
    }

    /// The upstream has begun to answer: requests waiting on this one's fetch wait little more.
    pub fn answer_began(&self) {
        if let Some(leader) = &self.leader {
            leader.answer_began();
        }
    }

    pub fn has_stale(&self) -> bool {
        self.stale.is_some()
    }

    /// The expired entry to serve instead of a failed upstream's answer, once.
    pub fn take_stale(&mut self) -> Option<Bytes> {
        self.stale.take()
    }

    /// Records the upstream's answer once it is known: stores `result` (`None`: nothing
    /// cacheable came) if the rules allow, tells the coalescer what became of it and ends a
    /// lead. Where it was stored (`Some(None)`: not stored); `None` when the answer was
    /// recorded before.
    pub fn record_answer(
        &mut self,
        cache: &Arc<EdgeCache>,
        result: Option<&ResultFacts>,
        rules: StoreRules<'_>,
    ) -> Option<Option<StoredAs>> {
        if std::mem::replace(&mut self.recorded, true) {
            return None;
        }
        let stored = result.and_then(|result| store(cache, self, rules, result));
        self.stored_until_ms = stored.as_ref().map(|stored| stored.expires_at_ms);
        match self.leader.take() {
            Some(leader) => leader.answered(stored.is_some()),
            None => cache.answered(self.coalescing_key, stored.is_some()),
        }
        Some(stored)
    }

    /// Whether a server request reached this request's session (on any of its streams) since
    /// the fetch began.
    fn session_was_asked(&self) -> bool {
        let current = self.caller.session.as_deref().map(|session| SERVER_REQUESTS.epoch(session));
        current != self.session_epoch
    }
}

/// What storing an answer depends on beside the answer: the route's policy and the cache's
/// limits.
pub struct StoreRules<'a> {
    pub policy: &'a CachePolicy,
    pub max_entry: u64,
    /// Also keep a deflated form, so gzip hits cost no compression.
    pub precompress: bool,
    /// The route's own subscriptions, told of every public entry stored.
    pub watch: Option<&'a RouteWatch>,
}

pub enum Prepared {
    /// Answer with this entry.
    Hit(Fresh),
    /// Forward upstream, capturing the answer.
    Forward(Box<RequestCache>),
}

/// Where a request's cache lookup comes from.
pub struct LookupInput<'a> {
    pub route: &'a str,
    pub policy: &'a CachePolicy,
    pub readonly: &'a ReadonlyTools,
    pub message: &'a Message,
    pub caller: &'a Caller,
}

impl LookupInput<'_> {
    /// The request's cache lookup; `None`: not cacheable.
    pub fn lookup(&self) -> Option<Lookup> {
        lookup_for(self.route, self.message, self.caller, self.policy, |name| self.readonly.contains(name))
    }
}

/// Looks a cacheable request up (unless the intake already did: `found`); on a miss, joins
/// or leads the coalesced fetch.
pub async fn prepare(
    cache: &EdgeCache,
    (route, policy): (&str, &CachePolicy),
    (lookup, found): (Lookup, Option<Found>),
    caller: Caller,
    wait_limit: std::time::Duration,
) -> Prepared {
    let found = match found {
        Some(found) => found,
        None => cache.lookup(route, &lookup, policy.stale_if_error, policy.max_ttl).await,
    };
    let mut stale = match found {
        Found::Fresh(bytes) => return Prepared::Hit(bytes),
        Found::Stale(bytes) => Some(bytes),
        Found::Nothing => None,
    };
    let coalescing_key = lookup.coalescing_key(&caller);
    let leader = match cache.coalesce(coalescing_key) {
        Coalesce::Lead(leader) => Some(leader),
        Coalesce::Pass => None,
        Coalesce::Wait(mut progress) => {
            // The leader's answer is stored before it releases us; a timeout or an
            // uncacheable answer sends this request upstream on its own.
            let waiting = Waiting::new(route, "coalescing");
            wait_for_leader(&mut progress, wait_limit).await;
            drop(waiting);
            match cache.lookup(route, &lookup, policy.stale_if_error, policy.max_ttl).await {
                Found::Fresh(bytes) => return Prepared::Hit(bytes),
                Found::Stale(bytes) => stale = Some(bytes),
                Found::Nothing => {}
            }
            None
        }
    };
    let session_epoch = caller.session.as_deref().map(|session| SERVER_REQUESTS.epoch(session));
    Prepared::Forward(Box::new(RequestCache {
        lookup,
        caller,
        coalescing_key,
        fetched_at_ms: now_ms(),
        leader,
        stale,
        recorded: false,
        stored_until_ms: None,
        session_epoch,
    }))
}

/// Answers up to this size are deflated (for gzip hits) as they are stored; larger ones are
/// stored plain at once and deflated on a blocking thread, then stored again with their
/// deflated form: deflating 8 MiB takes tens of milliseconds, which on the proxy worker would
/// stall every connection it serves.
const DEFLATE_INLINE_LIMIT: usize = 64 * 1024;

/// Where an answer was stored, and until when it is fresh.
#[derive(Debug, Clone, Copy)]
pub struct StoredAs {
    pub key: Key,
    pub expires_at_ms: u64,
}

/// Stores a captured result if its facts allow; where it was stored.
fn store(cache: &Arc<EdgeCache>, ctx: &RequestCache, rules: StoreRules<'_>, facts: &ResultFacts) -> Option<StoredAs> {
    let StoreRules { policy, max_entry, precompress, watch } = rules;
    if ctx.session_was_asked() {
        return None;
    }
    let Store { scope, ttl, restate_ttl, own_ttl } = store_decision(&ctx.lookup, &ctx.caller, facts, policy)?;
    let result = facts.stored_result.as_bytes();
    if result.len() as u64 > max_entry {
        return None;
    }
    let key = ctx.lookup.key(&scope);
    let inline = result.len() <= DEFLATE_INLINE_LIMIT;
    let deflated = (precompress && inline).then(|| crate::compress::deflate_segment(&result[1..]));
    let entry = Entry {
        fetched_at_ms: ctx.fetched_at_ms,
        expires_at_ms: ctx.fetched_at_ms + ttl.as_millis() as u64,
        restate_ttl,
        own_ttl,
        result,
        deflated: deflated.as_ref().map(|(crc32, bytes)| Deflated { crc32: *crc32, bytes }),
    };
    cache.store_answer(key, &entry, policy.stale_if_error);
    if let (Some(watch), Scope::Public(_)) = (watch, &scope) {
        watch.cached(ctx.caller.stateless, &ctx.lookup.targets, entry.expires_at_ms);
    }
    let stored_as = StoredAs { key, expires_at_ms: entry.expires_at_ms };
    if precompress && !inline {
        let (cache, fetched_at_ms, expires_at_ms) = (cache.clone(), entry.fetched_at_ms, entry.expires_at_ms);
        // Its own copy: the blocking thread outlives the observer that holds the result.
        let result = result.to_vec();
        // The entry keeps its fetch time: an invalidation since still kills it.
        tokio::task::spawn_blocking(move || {
            let (crc32, bytes) = crate::compress::deflate_segment(&result[1..]);
            let deflated = Some(Deflated { crc32, bytes: &bytes });
            cache.insert(key, &Entry { fetched_at_ms, expires_at_ms, restate_ttl, own_ttl, result: &result, deflated });
        });
    }
    Some(stored_as)
}

/// Watches an upstream answer: every SSE stream (for notifications), and the JSON or SSE
/// answer of a request whose result is wanted (`want_id`): a cacheable one's, unless the
/// upstream's `Cache-Control` or `Vary` forbids storing it, it sets a cookie or it is encoded
/// (the upstream is not asked for an encoding; one that sends one anyway is not read), or
/// one read whatever its headers say (`read_anyway`: an `initialize`'s, a write's).
pub fn observer_for(
    response: &ResponseHeader,
    want_id: Option<String>,
    read_anyway: bool,
    max_entry: u64,
) -> Option<Observer> {
    let content_type =
        response.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let sse = content_type.starts_with("text/event-stream");
    let json = content_type.starts_with("application/json");
    // An answer that sets a cookie is someone's (nginx's `proxy_cache` does not keep it either).
    let storable = || {
        let encoding = response.headers.get(http::header::CONTENT_ENCODING).map(|v| v.as_bytes().trim_ascii());
        encoding.is_none_or(|encoding| encoding.eq_ignore_ascii_case(b"identity"))
            && !response.headers.contains_key(http::header::SET_COOKIE)
            && !http_forbids_storing(response.headers.get_all(http::header::CACHE_CONTROL).iter().map(|v| v.as_bytes()))
            && !http_vary_forbids_storing(response.headers.get_all(http::header::VARY).iter().map(|v| v.as_bytes()))
    };
    let capture = want_id.filter(|_| response.status.as_u16() == 200 && (read_anyway || storable()));
    (sse || (json && capture.is_some())).then(|| Observer::new(capture, sse, max_entry as usize))
}

/// A request counted in `mcp_requests_waiting` while it lives (a client that leaves while
/// waiting is uncounted too).
struct Waiting(prometheus::IntGauge);

impl Waiting {
    fn new(route: &str, reason: &str) -> Waiting {
        let gauge = METRICS.requests_waiting.with_label_values(&[route, reason]);
        gauge.inc();
        Waiting(gauge)
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_answer(headers: &[(&'static str, &'static str)]) -> ResponseHeader {
        let mut response = ResponseHeader::build(200, None).unwrap();
        response.insert_header("content-type", "application/json").unwrap();
        for (name, value) in headers {
            response.append_header(*name, *value).unwrap();
        }
        response
    }

    /// A JSON answer is watched only when its result could be stored.
    #[test]
    fn an_answer_is_watched_for_its_result_only_when_it_may_be_stored() {
        let watched = |headers: &[(&'static str, &'static str)]| {
            observer_for(&json_answer(headers), Some("1".into()), false, 1 << 20).is_some()
        };
        assert!(watched(&[]));
        assert!(watched(&[("content-encoding", "identity"), ("vary", "accept-encoding")]));
        for unstorable in [
            ("content-encoding", "gzip"),
            ("content-encoding", "br"),
            ("set-cookie", "a=1"),
            ("cache-control", "no-store"),
            ("vary", "*"),
        ] {
            assert!(!watched(&[unstorable]), "{unstorable:?}");
        }
        // An initialize's answer is read whatever its headers say (the session's setup).
        assert!(observer_for(&json_answer(&[("set-cookie", "a=1")]), Some("1".into()), true, 1 << 20).is_some());
    }
}
