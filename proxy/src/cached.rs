//! The cache's part in a request: look up before forwarding, answer hits, coalesce misses,
//! and capture what the upstream answers (storing cacheable results, applying the
//! invalidations that notifications carry).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use mcp_edge_policies::cache::{
    Answer, Caller, Deflated, Entry, Key, Lookup, Store, lookup_for, result_facts, store_decision,
};
use mcp_edge_policies::config::{CachePolicy, CompressionConfig};
use mcp_edge_policies::jsonrpc::Message;
use mcp_edge_policies::observe::Observer;
use pingora::http::ResponseHeader;
use serde_json::value::RawValue;

use crate::cache::{EdgeCache, Found, Stored, now_ms};
use crate::coalesce::{Coalesce, Leader, wait_for_leader};
use crate::session_signals::SERVER_REQUESTS;

/// The cache state of one cacheable request.
pub struct CacheCtx {
    pub lookup: Lookup,
    pub caller: Caller,
    /// The key concurrent misses of this request coalesce on.
    pub coalescing_key: Key,
    /// When the upstream fetch began: invalidations after it win over its answer.
    pub fetched_at_ms: u64,
    pub leader: Option<Leader>,
    /// An expired entry to serve if every upstream fails.
    pub stale: Option<Bytes>,
    /// The answer was looked at for storing (it is, at most once).
    pub stored: bool,
    /// The session's count of server-to-client requests when the fetch began (handshake era):
    /// if it moves before the answer comes, the answer may depend on what the client said.
    pub session_epoch: Option<u64>,
}

impl CacheCtx {
    /// Whether a server request reached this request's session (on any of its streams) since
    /// the fetch began.
    pub fn session_was_asked(&self) -> bool {
        let current = self.caller.session.as_deref().map(|session| SERVER_REQUESTS.epoch(session));
        current != self.session_epoch
    }
}

/// The `x-cache` value of a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Hit,
    Miss,
    Bypass,
    Stale,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Hit => "HIT",
            Outcome::Miss => "MISS",
            Outcome::Bypass => "BYPASS",
            Outcome::Stale => "STALE",
        }
    }
}

/// Tools an upstream declared read-only, idempotent and closed-world in its `tools/list`.
#[derive(Default)]
pub struct ReadonlyTools(Mutex<HashSet<String>>);

impl ReadonlyTools {
    pub fn contains(&self, name: &str) -> bool {
        self.0.lock().expect("readonly tools").contains(name)
    }

    /// Learns from a `tools/list` result.
    pub fn learn(&self, result: &str) {
        let Ok(list) = serde_json::from_str::<serde_json::Value>(result) else { return };
        let Some(tools) = list["tools"].as_array() else { return };
        let mut known = self.0.lock().expect("readonly tools");
        for tool in tools {
            let (Some(name), hints) = (tool["name"].as_str(), &tool["annotations"]) else { continue };
            let safe =
                hints["readOnlyHint"] == true && hints["idempotentHint"] == true && hints["openWorldHint"] == false;
            if safe {
                known.insert(name.to_string());
            } else {
                known.remove(name);
            }
        }
    }
}

pub enum Prepared {
    /// Answer with this entry.
    Hit(Stored),
    /// Forward upstream, capturing the answer.
    Forward(Box<CacheCtx>),
}

/// What the hit path found for a request it then handed to the proxy service (see
/// `handover`), so the service does not look the same request up again.
pub struct Prelooked {
    pub lookup: Lookup,
    pub found: Found,
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

/// Looks a cacheable request up (unless the hit path already did: `found`); on a miss, joins
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
        None => cache.lookup(route, &lookup, policy.stale_if_error).await,
    };
    let mut stale = match found {
        Found::Fresh(bytes) => return Prepared::Hit(bytes),
        Found::Stale(bytes) => Some(bytes),
        Found::Nothing => None,
    };
    let coalescing_key = lookup.coalescing_key(&caller);
    let leader = match cache.flights.coalesce(coalescing_key) {
        Coalesce::Lead(leader) => Some(leader),
        Coalesce::Pass => None,
        Coalesce::Wait(mut progress) => {
            // The leader's answer is stored before it releases us; a timeout or an
            // uncacheable answer sends this request upstream on its own.
            wait_for_leader(&mut progress, wait_limit).await;
            match cache.lookup(route, &lookup, policy.stale_if_error).await {
                Found::Fresh(bytes) => return Prepared::Hit(bytes),
                Found::Stale(bytes) => stale = Some(bytes),
                Found::Nothing => {}
            }
            None
        }
    };
    let session_epoch = caller.session.as_deref().map(|session| SERVER_REQUESTS.epoch(session));
    Prepared::Forward(Box::new(CacheCtx {
        lookup,
        caller,
        coalescing_key,
        fetched_at_ms: now_ms(),
        leader,
        stale,
        stored: false,
        session_epoch,
    }))
}

/// An answer mcp-edge writes itself from a cached entry: body and the headers beyond the
/// content type and length. It borrows the entry, so the hit path writes the entry's bytes
/// without copying them first.
pub struct CachedAnswer<'a> {
    pub body: AnswerBody<'a>,
    outcome: Outcome,
    session: Option<&'a str>,
    vary: bool,
}

/// The body of an answer from a cached entry.
pub enum AnswerBody<'a> {
    /// The entry's result spliced with the request's id, in parts (see [`Answer`]).
    Spliced(Answer<'a>),
    /// Gzipped from the entry's pre-compressed form.
    Gzipped(Bytes),
}

impl AnswerBody<'_> {
    pub fn len(&self) -> usize {
        match self {
            AnswerBody::Spliced(answer) => answer.len(),
            AnswerBody::Gzipped(bytes) => bytes.len(),
        }
    }

    /// The body's bytes, to be sent one part after the other.
    pub fn parts(&self) -> [&[u8]; 3] {
        match self {
            AnswerBody::Spliced(answer) => [&answer.prefix, answer.body, answer.suffix],
            AnswerBody::Gzipped(bytes) => [bytes, &[], &[]],
        }
    }

    pub fn to_bytes(&self) -> Bytes {
        match self {
            AnswerBody::Spliced(answer) => Bytes::from(answer.to_bytes()),
            AnswerBody::Gzipped(bytes) => bytes.clone(),
        }
    }
}

impl<'a> CachedAnswer<'a> {
    /// The headers beyond content type and length, in the order they are written.
    pub fn headers(&self) -> impl Iterator<Item = (&'static str, &'a str)> {
        let gzipped = matches!(self.body, AnswerBody::Gzipped(_));
        [
            Some(("x-cache", self.outcome.as_str())),
            self.session.map(|session| ("mcp-session-id", session)),
            self.vary.then_some(("vary", "Accept-Encoding")),
            gzipped.then_some(("content-encoding", "gzip")),
        ]
        .into_iter()
        .flatten()
    }
}

/// Renders a cached entry as the answer to request `id`, gzipped when the client accepts it
/// and the configuration allows. Handshake-era servers echo the session id on every response;
/// so do cached answers.
pub fn render<'a>(
    entry: &'a [u8],
    id: &str,
    outcome: Outcome,
    compression: &CompressionConfig,
    accepts_gzip: bool,
    session: Option<&'a str>,
) -> Option<CachedAnswer<'a>> {
    let gzip_from = (compression.gzip && accepts_gzip).then_some(compression.min_size);
    let body = answer(entry, id, gzip_from)?;
    Some(CachedAnswer { body, outcome, session, vary: compression.gzip })
}

/// The answer to request `id` from a cached entry: gzipped (from the entry's pre-compressed
/// body) when `gzip_from` is the size from which to compress and the answer reaches it.
pub fn answer<'a>(entry: &'a [u8], id: &str, gzip_from: Option<u64>) -> Option<AnswerBody<'a>> {
    let entry = Entry::decode(entry)?;
    // The clock is read only for an answer that restates its remaining TTL.
    let now = if entry.restate_ttl { now_ms() } else { 0 };
    let answer = entry.answer(id, now);
    match (gzip_from, entry.deflated) {
        (Some(min_size), Some(deflated)) if answer.len() as u64 >= min_size => {
            Some(AnswerBody::Gzipped(crate::compress::gzip_answer(&answer, deflated)))
        }
        _ => Some(AnswerBody::Spliced(answer)),
    }
}

/// Answers up to this size are deflated (for gzip hits) as they are stored; larger ones are
/// stored plain at once and deflated on a blocking thread, then stored again with their
/// deflated form: deflating 8 MiB takes tens of milliseconds, which on the proxy worker would
/// stall every connection it serves.
const DEFLATE_INLINE_LIMIT: usize = 64 * 1024;

/// Stores a captured result if its facts allow. `precompress`: also keep a deflated form, so
/// gzip hits cost no compression. Whether it was stored.
pub fn store(
    cache: &Arc<EdgeCache>,
    ctx: &CacheCtx,
    policy: &CachePolicy,
    result: &str,
    max_entry: u64,
    precompress: bool,
) -> bool {
    if ctx.session_was_asked() {
        return false;
    }
    let Ok(raw) = serde_json::from_str::<Box<RawValue>>(result) else { return false };
    let Some(facts) = result_facts(&raw) else { return false };
    let Some(Store { scope, ttl, restate_ttl }) = store_decision(&ctx.lookup, &ctx.caller, &facts, policy) else {
        return false;
    };
    if facts.stored_result.len() as u64 > max_entry {
        return false;
    }
    let key = ctx.lookup.key(&scope);
    let result = facts.stored_result.into_bytes();
    let inline = result.len() <= DEFLATE_INLINE_LIMIT;
    let deflated = (precompress && inline).then(|| crate::compress::deflate_segment(&result[1..]));
    let entry = Entry {
        fetched_at_ms: ctx.fetched_at_ms,
        expires_at_ms: ctx.fetched_at_ms + ttl.as_millis() as u64,
        restate_ttl,
        result: &result,
        deflated: deflated.as_ref().map(|(crc32, bytes)| Deflated { crc32: *crc32, bytes }),
    };
    cache.insert(key, &entry);
    if precompress && !inline {
        let (cache, fetched_at_ms, expires_at_ms) = (cache.clone(), entry.fetched_at_ms, entry.expires_at_ms);
        // The entry keeps its fetch time: an invalidation since still kills it.
        tokio::task::spawn_blocking(move || {
            let (crc32, bytes) = crate::compress::deflate_segment(&result[1..]);
            let deflated = Some(Deflated { crc32, bytes: &bytes });
            cache.insert(key, &Entry { fetched_at_ms, expires_at_ms, restate_ttl, result: &result, deflated });
        });
    }
    true
}

/// Watches an upstream answer: every SSE stream (for notifications), and the JSON or SSE
/// answer of a cacheable request (for its result).
pub fn observer_for(response: &ResponseHeader, want_id: Option<String>, max_entry: u64) -> Option<Observer> {
    let content_type = response.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
    let sse = content_type.starts_with("text/event-stream");
    let json = content_type.starts_with("application/json");
    let capture = want_id.filter(|_| response.status.as_u16() == 200);
    (sse || (json && capture.is_some())).then(|| Observer::new(capture, sse, max_entry as usize))
}
