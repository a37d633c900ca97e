//! Answers mcp-edge writes itself from a cached entry (hits, and stale answers when the
//! upstream fails): the entry's result spliced with the request's id, gzipped from the entry's
//! deflated form when the client accepts it, and the `x-cache` outcome.

use bytes::Bytes;
use mcp_edge_policies::cache::{Answer, Entry};
use mcp_edge_policies::config::CompressionConfig;

use crate::store::now_ms;

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

    /// The `x-cache` header's value (static: nothing is allocated per response).
    pub fn header_value(self) -> http::HeaderValue {
        http::HeaderValue::from_static(self.as_str())
    }
}

/// An answer mcp-edge writes itself from a cached entry: body and the headers beyond the
/// content type and length. It borrows the entry, so the HTTP/1.1 front writes the entry's bytes
/// without copying them first.
pub struct CachedAnswer<'a> {
    pub body: AnswerBody<'a>,
    outcome: Outcome,
    session: Option<&'a str>,
    vary: bool,
    request_id: Option<&'a str>,
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
            self.request_id.map(|id| (crate::request_id::HEADER, id)),
            self.session.map(|session| ("mcp-session-id", session)),
            self.vary.then_some(("vary", "Accept-Encoding")),
            gzipped.then_some(("content-encoding", "gzip")),
        ]
        .into_iter()
        .flatten()
    }

    /// With the request's `X-Request-ID` (see `request_id`).
    pub fn with_request_id(mut self, id: &'a str) -> CachedAnswer<'a> {
        self.request_id = Some(id);
        self
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
    Some(CachedAnswer { body, outcome, session, vary: compression.gzip, request_id: None })
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
