//! gzip for responses (async-compression): whole bodies for JSON, and for SSE (when
//! `compression.sse` is on) a sync flush after every chunk so each event reaches the client
//! at once. The encoder writes into memory and never waits, so it is driven synchronously
//! from Pingora's body filters.

use async_compression::Level;
use async_compression::tokio::write::{DeflateEncoder, GzipEncoder};
use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, VARY};
use http::{HeaderMap, HeaderValue, StatusCode};
use mcp_edge_policies::cache::{Answer, Deflated};
use mcp_edge_policies::config::CompressionConfig;
use tokio::io::AsyncWriteExt;

use futures_util::FutureExt;

/// gzip level 6: zlib's default, the usual size/CPU balance for text.
const LEVEL: i32 = 6;

/// A gzip stream over one response body.
pub struct Gzip {
    encoder: GzipEncoder<Vec<u8>>,
    /// Flush after every chunk (SSE), so nothing waits in the encoder.
    flush_each: bool,
}

impl Gzip {
    pub fn new(flush_each: bool) -> Gzip {
        Gzip { encoder: GzipEncoder::with_quality(Vec::new(), Level::Precise(LEVEL)), flush_each }
    }

    /// Compresses one chunk; returns the bytes ready to send.
    pub fn chunk(&mut self, data: &[u8]) -> Bytes {
        self.encoder.write_all(data).now_or_never().expect("writing to memory never waits").expect("in-memory gzip");
        if self.flush_each {
            self.encoder.flush().now_or_never().expect("in-memory").expect("in-memory gzip");
        }
        self.take()
    }

    /// Ends the stream (trailer included); returns the last bytes.
    pub fn finish(&mut self) -> Bytes {
        self.encoder.shutdown().now_or_never().expect("in-memory").expect("in-memory gzip");
        self.take()
    }

    /// Pingora's body filter: replaces `body` (a chunk, or none at the end) with its gzip
    /// bytes, the trailer included at the end of the stream.
    pub fn filter(&mut self, body: &mut Option<Bytes>, end_of_stream: bool) {
        let mut out = body.as_ref().map(|chunk| self.chunk(chunk)).unwrap_or_default();
        if end_of_stream {
            let mut whole = out.to_vec();
            whole.extend_from_slice(&self.finish());
            out = Bytes::from(whole);
        }
        *body = Some(out);
    }

    fn take(&mut self) -> Bytes {
        Bytes::from(std::mem::take(self.encoder.get_mut()))
    }
}

/// Deflates `data` once (at store time) into a raw segment that ends on a byte boundary and is
/// not final, so it can sit in the middle of a gzip stream (see [`gzip_answer`]).
pub fn deflate_segment(data: &[u8]) -> (u32, Vec<u8>) {
    let mut encoder = DeflateEncoder::with_quality(Vec::new(), Level::Precise(LEVEL));
    encoder.write_all(data).now_or_never().expect("in-memory").expect("in-memory deflate");
    // A sync flush ends the segment byte-aligned, with no final block.
    encoder.flush().now_or_never().expect("in-memory").expect("in-memory deflate");
    (crc32fast::hash(data), std::mem::take(encoder.get_mut()))
}

/// A gzip stream for an answer whose body was deflated at store time: the small per-request
/// prefix and the closing brace go in stored (uncompressed) deflate blocks around the
/// pre-compressed body, and the CRC-32 is combined from the parts. No compression per hit.
pub fn gzip_answer(answer: &Answer<'_>, body: Deflated<'_>) -> Bytes {
    const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    let mut out = Vec::with_capacity(answer.prefix.len() + body.bytes.len() + 40);
    out.extend_from_slice(&GZIP_HEADER);
    stored_blocks(&mut out, &answer.prefix, false);
    out.extend_from_slice(body.bytes);
    stored_blocks(&mut out, answer.suffix, true);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&answer.prefix);
    crc.combine(&crc32fast::Hasher::new_with_initial_len(body.crc32, answer.body.len() as u64));
    let mut suffix = crc32fast::Hasher::new();
    suffix.update(answer.suffix);
    crc.combine(&suffix);
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(&(answer.len() as u32).to_le_bytes());
    Bytes::from(out)
}

/// Deflate stored blocks (RFC 1951 §3.2.4) carrying `data` as is, starting byte-aligned.
fn stored_blocks(out: &mut Vec<u8>, data: &[u8], last: bool) {
    let mut chunks = data.chunks(u16::MAX as usize).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&[last as u8, 0, 0, 0xff, 0xff]);
    }
    while let Some(chunk) = chunks.next() {
        let is_final = last && chunks.peek().is_none();
        let len = chunk.len() as u16;
        out.push(is_final as u8);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
}

/// Whether `Accept-Encoding` allows gzip (`gzip` or `*`, with a q-value above 0).
pub fn accepts_gzip(accept_encoding: Option<&str>) -> bool {
    let Some(value) = accept_encoding else { return false };
    value.split(',').any(|item| {
        let mut parts = item.split(';').map(str::trim);
        let coding = parts.next().unwrap_or_default();
        let zero_q = parts.any(|p| p.strip_prefix("q=").and_then(|q| q.parse::<f32>().ok()).is_some_and(|q| q == 0.0));
        (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !zero_q
    })
}

/// Decides, once per proxied response, what compression does to it: a response that may be
/// compressed at all varies on Accept-Encoding; it is gzipped when the client accepts gzip and
/// it is not known to be smaller than `min_size`. Returns the encoder for its body, if any.
/// `headers`: the response's, edited in place (see `service::head_edit`).
pub fn prepare_response(
    config: &CompressionConfig,
    status: StatusCode,
    headers: &mut HeaderMap,
    client_accepts_gzip: bool,
) -> Option<Gzip> {
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let content_type = header(CONTENT_TYPE);
    let sse = content_type.starts_with("text/event-stream");
    // RFC 9110 §7.7: a proxy must not transform a no-transform response, unless the operator
    // explicitly asked for compressed SSE (SDK servers mark every SSE answer no-transform).
    let no_transform = contains_ignoring_case(header(CACHE_CONTROL), "no-transform");
    let kind_ok = content_type.starts_with("application/json") || (sse && config.sse);
    let transform_allowed = sse || !no_transform;
    let compressible = config.gzip && kind_ok && transform_allowed && headers.get(CONTENT_ENCODING).is_none();
    let large_enough = header(CONTENT_LENGTH).parse::<u64>().ok().is_none_or(|n| n >= config.min_size);
    if !compressible {
        return None;
    }
    add_vary(headers);
    if !client_accepts_gzip || !large_enough || status == StatusCode::NO_CONTENT {
        return None;
    }
    // The length changes.
    headers.remove(CONTENT_LENGTH);
    headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    Some(Gzip::new(sse))
}

fn add_vary(headers: &mut HeaderMap) {
    let existing = headers.get(VARY).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if existing.split(',').any(|v| v.trim().eq_ignore_ascii_case("accept-encoding") || v.trim() == "*") {
        return;
    }
    let vary = if existing.is_empty() {
        HeaderValue::from_static("Accept-Encoding")
    } else {
        // Visible ASCII (it was read as text) and more of it: valid.
        let Ok(value) = HeaderValue::try_from(format!("{existing}, Accept-Encoding")) else { return };
        value
    };
    headers.insert(VARY, vary);
}

/// Whether `text` contains `word` (ASCII letters in any case), without lowering a copy.
fn contains_ignoring_case(text: &str, word: &str) -> bool {
    text.as_bytes().windows(word.len()).any(|window| window.eq_ignore_ascii_case(word.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_response(extra: &[(&'static str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (name, value) in extra {
            headers.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    const GZIP_ON: CompressionConfig = CompressionConfig { gzip: true, min_size: 0, sse: false };

    #[test]
    fn no_transform_is_read_in_any_case() {
        for cache_control in ["no-transform", "max-age=0, No-Transform", "NO-TRANSFORM"] {
            let mut response = json_response(&[("cache-control", cache_control)]);
            assert!(prepare_response(&GZIP_ON, StatusCode::OK, &mut response, true).is_none(), "{cache_control}");
            assert!(response.get("content-encoding").is_none());
        }
        let mut response = json_response(&[("cache-control", "no-store")]);
        assert!(prepare_response(&GZIP_ON, StatusCode::OK, &mut response, true).is_some());
        assert_eq!(response["content-encoding"], "gzip");
    }

    #[test]
    fn vary_names_accept_encoding_once() {
        let vary_after = |existing: Option<&str>| {
            let mut response = json_response(&existing.map(|v| ("vary", v)).into_iter().collect::<Vec<_>>());
            prepare_response(&GZIP_ON, StatusCode::OK, &mut response, false);
            response["vary"].to_str().unwrap().to_string()
        };
        assert_eq!(vary_after(None), "Accept-Encoding");
        assert_eq!(vary_after(Some("Origin")), "Origin, Accept-Encoding");
        assert_eq!(vary_after(Some("origin, accept-encoding")), "origin, accept-encoding");
        assert_eq!(vary_after(Some("*")), "*");
    }

    #[test]
    fn accept_encoding_is_read_with_q_values() {
        assert!(accepts_gzip(Some("gzip, deflate")));
        assert!(accepts_gzip(Some("br;q=1.0, GZIP;q=0.5")));
        assert!(accepts_gzip(Some("*")));
        assert!(!accepts_gzip(Some("gzip;q=0")));
        assert!(!accepts_gzip(Some("deflate, br")));
        assert!(!accepts_gzip(None));
    }

    #[test]
    fn streamed_chunks_decode_to_the_input() {
        let mut stream = Gzip::new(true);
        let mut out = Vec::new();
        for chunk in [&b"data: one\n\n"[..], b"data: two\n\n"] {
            let bytes = stream.chunk(chunk);
            assert!(!bytes.is_empty(), "a flushed chunk produces output at once");
            out.extend_from_slice(&bytes);
        }
        out.extend_from_slice(&stream.finish());
        assert_eq!(gunzip(&out), "data: one\n\ndata: two\n\n");
    }

    #[test]
    fn the_body_filter_ends_the_stream_with_the_last_chunk_or_without_one() {
        for last in [Some(Bytes::from_static(b"}")), None] {
            let mut stream = Gzip::new(false);
            let mut out = Vec::new();
            for (chunk, end) in [(Some(Bytes::from_static(b"{\"a\":1")), false), (last.clone(), true)] {
                let mut body = chunk;
                stream.filter(&mut body, end);
                out.extend_from_slice(&body.expect("the filter always leaves a body"));
            }
            let expected = if last.is_some() { "{\"a\":1}" } else { "{\"a\":1" };
            assert_eq!(gunzip(&out), expected);
        }
    }

    #[test]
    fn spliced_answers_are_valid_gzip() {
        let result = br#"{"contents":[{"text":"the same stored result, compressed once"}]}"#;
        let (crc32, bytes) = deflate_segment(&result[1..]);
        let entry = mcp_edge_policies::cache::Entry {
            fetched_at_ms: 0,
            expires_at_ms: 60_000,
            restate_ttl: true,
            own_ttl: false,
            result,
            deflated: Some(Deflated { crc32, bytes: &bytes }),
        };
        for id in ["1", r#""a much longer string id, to change the prefix length""#] {
            let answer = entry.answer(id, 1_000);
            let gzipped = gzip_answer(&answer, entry.deflated.unwrap());
            assert_eq!(gunzip(&gzipped).as_bytes(), &answer.to_bytes()[..], "id {id}");
        }
        let big_prefix = Answer { prefix: vec![b'x'; 70_000], body: b"", suffix: b"}" };
        let (crc32, bytes) = deflate_segment(b"");
        assert_eq!(gunzip(&gzip_answer(&big_prefix, Deflated { crc32, bytes: &bytes })).len(), 70_001);
    }

    fn gunzip(bytes: &[u8]) -> String {
        async {
            use tokio::io::AsyncReadExt;
            let mut decoder = async_compression::tokio::bufread::GzipDecoder::new(bytes);
            let mut text = String::new();
            decoder.read_to_string(&mut text).await.map(|_| text)
        }
        .now_or_never()
        .expect("in memory")
        .expect("valid gzip")
    }
}
