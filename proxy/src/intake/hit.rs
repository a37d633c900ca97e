//! A request answered from the cache: what its answer is made of, and what is told of it once
//! written (the access log and metrics, the prefetcher).

use std::time::Instant;

use bytes::Bytes;

use super::{Intake, Understood};
use crate::answer::{self, CachedAnswer, Outcome};
use crate::prefetch::Replay;
use crate::served::Served;
use crate::store::Fresh;
use mcp_edge_policies::insight::{Call, CallOutcome};

/// A fresh hit (rendered when written, so that the answer borrows the entry's bytes).
pub struct Hit {
    /// The request (its JSON-RPC id is the answer's).
    pub request: Understood,
    pub fresh: Fresh,
    pub mcp_method: &'static str,
}

impl Hit {
    /// The answer, for a client whose session id (echoed back) is `session`; `None` if the
    /// entry cannot be read (the request is then forwarded instead).
    pub fn render<'a>(&'a self, session: Option<&'a str>) -> Option<CachedAnswer<'a>> {
        let compression = &self.request.admitted.snapshot.config.compression;
        let id = self.request.rpc_id.as_deref().unwrap_or("null");
        let answer =
            answer::render(&self.fresh.stored, id, Outcome::Hit, compression, self.request.accepts_gzip, session)?;
        Some(answer.with_request_id(self.request.admitted.request_id.as_str()))
    }

    /// Records the answered hit (of `path`, `bytes_in` of body, answered with `bytes_out`) in
    /// the access log and metrics.
    pub fn record(&self, started: Instant, path: &str, bytes_in: usize, bytes_out: usize) {
        let elapsed = started.elapsed();
        self.request.count_call(|op| Call {
            kind: op.kind,
            name: &op.name,
            args: op.args,
            at_ms: crate::store::now_ms(),
            latency_us: elapsed.as_micros() as u64,
            outcome: CallOutcome::Hit,
            answer: None,
            server_ttl_ms: None,
            fresh_until_ms: Some(self.fresh.life.expires_at_ms),
        });
        Served {
            asked: self.request.asked("POST", path),
            mcp_method: Some(self.mcp_method),
            status: 200,
            cache: Outcome::Hit.as_str(),
            tier: Some(self.fresh.stored.tier()),
            upstream: None,
            started,
            error: None,
            bytes_in: bytes_in as u64,
            bytes_out: bytes_out as u64,
            attempted: None,
        }
        .record_after(elapsed);
    }
}

impl Intake {
    /// Tells the prefetcher of a hit once it is answered (see `prefetch`): a client's read is
    /// learned, and the hit may use a prefetched entry or refresh a nearly expired one (by
    /// sending the request again: `replay`, its head, and `body`).
    pub fn after_hit(&self, hit: &Hit, replay: impl Fn() -> Option<Replay>, body: &[u8]) {
        crate::cpu::yield_to_disk_reads(self.cache.disk_reads());
        // A compressed body is replayed as the message it decoded to.
        let body = hit.request.decoded_body.as_deref().unwrap_or(body);
        let route = hit.request.route();
        if !route.config.prefetch.enabled {
            return;
        }
        let client = hit.request.admitted.prefetch.is_none();
        if client && let Some((context, uri)) = &hit.request.learn {
            self.prefetch.client_read(route, *context, uri, || replay().map(|replay| replay.with_meta_of(body)));
        }
        // Never a tool call again: a prefetch calls no tool, whatever the route caches.
        let refreshable = hit.mcp_method != mcp_edge_policies::method::Method::ToolsCall.as_str();
        let again = || Some((replay().filter(|_| refreshable)?, Bytes::copy_from_slice(body)));
        self.prefetch.hit(route, &hit.fresh.life, client, again);
    }
}
