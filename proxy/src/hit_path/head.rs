//! Reading a request head on the hit path: whether what has arrived is a complete HTTP/1.1
//! request the hit path may take, and the headers its checks need, parsed once.

use pingora::http::RequestHeader;
use pingora::protocols::http::authority::validate_request_authority;

use crate::error::EdgeError;
use crate::known_headers::KnownHeaders;
use crate::runtime::Runtime;
use crate::service::INSPECT_LIMIT;

/// Requests with more header lines than this are left to the proxy service.
const MAX_HEADERS: usize = 48;
/// The most header fields a request may have (Pingora's own limit, which it answers with a
/// bare 400): more are refused here with 431 and a JSON-RPC error.
pub(super) const MAX_HEADER_FIELDS: usize = 256;
/// The largest request head taken (as Envoy's default, 60 KiB, and nginx's 4 × 8 KiB): a
/// larger one is refused with 431 (Pingora alone would take 1 MiB).
pub(super) const MAX_HEAD: usize = 64 * 1024;

/// What the hit path makes of what has arrived of a request. (Returned once per request, on
/// the stack: boxing the large variant would allocate per request instead.)
#[allow(clippy::large_enum_variant)]
pub(super) enum Probe<'b> {
    Complete(Head<'b>),
    Partial,
    /// Not the shape the hit path answers: the proxy service takes it.
    Unsuitable,
    /// Answered here with a JSON-RPC error, and the connection closed: a head that is not a
    /// valid HTTP/1.1 request (400), one larger than [`MAX_HEAD`] or with more fields than
    /// [`MAX_HEADER_FIELDS`] (431), a `CONNECT` (405). Pingora would answer each with a bare
    /// status before any hook of mcp-edge runs: no JSON-RPC error, no access-log line.
    Refused(EdgeError),
}

/// A complete request head the hit path may take, read once (it borrows the request's bytes).
pub(super) struct Head<'b> {
    pub(super) head_len: usize,
    pub(super) body_len: usize,
    /// The target's path (without its query).
    pub(super) path: &'b str,
    /// The route serving `path`, if any.
    pub(super) route: Option<usize>,
    pub(super) known: KnownHeaders<'b>,
}

impl Head<'_> {
    pub(super) fn request_len(&self) -> usize {
        self.head_len + self.body_len
    }
}

/// The route serving `path` and its identity header (none without a route).
pub(super) fn route_and_identity<'r>(snapshot: &'r Runtime, path: &str) -> (Option<usize>, &'r str) {
    match snapshot.route_for(path) {
        Some(index) => (Some(index), snapshot.routes[index].config.policy.identity_header.as_str()),
        None => (None, ""),
    }
}

/// Parses what has arrived of a request head and decides whether the hit path may take it:
/// HTTP/1.1 `POST` to an origin-form target, one `Host`, one `Content-Length` small enough to
/// inspect, no `Transfer-Encoding`, `Expect` or `Upgrade`. `route_of` names the route of a
/// path and its identity header.
pub(super) fn probe_head<'b, 'r>(
    buffer: &'b [u8],
    route_of: impl FnOnce(&str) -> (Option<usize>, &'r str),
) -> Probe<'b> {
    let mut header_slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut header_slots);
    let head_len = match parsed.parse(buffer) {
        Ok(status) if over_head_limit(status, buffer) => return too_large(HEAD_TOO_LARGE),
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Probe::Partial,
        Err(httparse::Error::TooManyHeaders) => return probe_many_fields(buffer),
        Err(_) => return malformed("malformed request head"),
    };
    let target = parsed.path.unwrap_or_default();
    if !valid_target(target) {
        return malformed("invalid request target");
    }
    let path = target.split('?').next().unwrap_or_default();
    let (route, identity_header) = route_of(path);
    let known = KnownHeaders::from_parsed(parsed.headers, identity_header);
    if let Some(reason) = malformed_framing(&known) {
        return malformed(reason);
    }
    if parsed.method == Some("CONNECT") {
        return Probe::Refused(EdgeError::MethodNotAllowed { method: "CONNECT".into() });
    }
    if let Some(reason) = refused_by_pingora(&parsed, target, &known) {
        return malformed(reason);
    }
    let suitable_line = parsed.method == Some("POST") && parsed.version == Some(1) && target.starts_with('/');
    let framing_plain = !known.transfer_encoding
        && !known.expects_or_upgrades
        && known.content_length_lines == 1
        && known.host_lines == 1;
    let body_len = known.content_length;
    match body_len {
        Some(body_len) if suitable_line && framing_plain && body_len <= INSPECT_LIMIT => {
            Probe::Complete(Head { head_len, body_len: body_len as usize, path, route, known })
        }
        _ => Probe::Unsuitable,
    }
}

fn malformed(reason: impl Into<String>) -> Probe<'static> {
    Probe::Refused(EdgeError::bad_request(reason))
}

fn too_large(reason: &'static str) -> Probe<'static> {
    Probe::Refused(EdgeError::HeadTooLarge(reason))
}

const HEAD_TOO_LARGE: &str = "the request head is larger than 64 KiB";
const TOO_MANY_FIELDS: &str = "the request head has more than 256 header fields";

/// Whether a head is past [`MAX_HEAD`]: complete and longer, or still arriving and already
/// longer.
fn over_head_limit(status: httparse::Status<usize>, buffer: &[u8]) -> bool {
    match status {
        httparse::Status::Complete(head_len) => head_len > MAX_HEAD,
        httparse::Status::Partial => buffer.len() > MAX_HEAD,
    }
}

/// A head with more fields than the hit path parses, parsed again with room for
/// [`MAX_HEADER_FIELDS`] (only such rare heads pay for it): the service takes it whole, within
/// the same limits.
fn probe_many_fields(buffer: &[u8]) -> Probe<'_> {
    let mut slots = vec![httparse::EMPTY_HEADER; MAX_HEADER_FIELDS];
    match httparse::Request::new(&mut slots).parse(buffer) {
        Ok(status) if over_head_limit(status, buffer) => too_large(HEAD_TOO_LARGE),
        Ok(httparse::Status::Complete(_)) => Probe::Unsuitable,
        Ok(httparse::Status::Partial) => Probe::Partial,
        Err(httparse::Error::TooManyHeaders) => too_large(TOO_MANY_FIELDS),
        Err(_) => malformed("malformed request head"),
    }
}

/// What makes a complete head invalid, whatever its method: a `Content-Length` that is not
/// digits or disagrees with another, `Content-Length` beside `Transfer-Encoding` (a
/// request-smuggling shape), a second `Host`.
fn malformed_framing(known: &KnownHeaders<'_>) -> Option<&'static str> {
    if known.invalid_content_length {
        return Some("invalid Content-Length");
    }
    if known.transfer_encoding && known.content_length_lines > 0 {
        return Some("Content-Length and Transfer-Encoding together");
    }
    (known.host_lines > 1).then_some("more than one Host header")
}

/// What Pingora's HTTP/1 reader refuses in a head it has parsed (its `validate_request`):
/// an absolute-form target whose authority is ambiguous, carries userinfo or differs from
/// `Host`; userinfo in `Host`; `Transfer-Encoding` on HTTP/1.0, or not ending in `chunked`.
/// The authority is checked by Pingora's own function, on the rare heads it can refuse.
fn refused_by_pingora(parsed: &httparse::Request<'_, '_>, target: &str, known: &KnownHeaders<'_>) -> Option<String> {
    let host = known.host.bytes();
    if !target.starts_with('/') || host.is_some_and(|host| host.contains(&b'@')) {
        let mut request = match RequestHeader::build(parsed.method.unwrap_or_default(), target.as_bytes(), Some(1)) {
            Ok(request) => request,
            Err(refused) => return Some(reason_of(&refused)),
        };
        if let Some(host) = host {
            request.append_header(http::header::HOST, host).ok()?;
        }
        if let Err(refused) = validate_request_authority(&request) {
            return Some(reason_of(&refused));
        }
    }
    if !known.transfer_encoding {
        return None;
    }
    if parsed.version == Some(0) {
        return Some("Transfer-Encoding on an HTTP/1.0 request".into());
    }
    // The final coding of the last `Transfer-Encoding` line must be `chunked` (RFC 9112 §6.3).
    let last = parsed.headers.iter().rev().find(|h| h.name.eq_ignore_ascii_case("transfer-encoding"))?;
    let final_coding = last.value.rsplit(|&b| b == b',').next().unwrap_or_default().trim_ascii();
    (!final_coding.eq_ignore_ascii_case(b"chunked"))
        .then(|| "Transfer-Encoding whose final coding is not chunked".into())
}

/// Pingora's explanation of a refusal (e.g. "Host header differs from request-target authority").
fn reason_of(refused: &pingora::Error) -> String {
    refused.context.as_ref().map_or_else(|| "invalid request target".into(), |context| context.as_str().to_string())
}

/// Whether `http::Uri` takes `target` (and it has no `"`, which Pingora refuses). The common
/// origin-form target of plain characters is taken without parsing (no allocation per hit).
fn valid_target(target: &str) -> bool {
    let plain = |b: &u8| b.is_ascii_alphanumeric() || b"/-._~!$&'()*+,;=:@?%".contains(b);
    if target.starts_with('/') && target.as_bytes().iter().all(plain) && !target.contains('%') {
        return true;
    }
    target == "*" || (target.parse::<http::Uri>().is_ok() && !target.contains('"'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(text: &str) -> Probe<'_> {
        probe_head(text.as_bytes(), |_| (Some(0), "authorization"))
    }

    const GOOD: &str = "POST /mcp HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";

    #[test]
    fn takes_small_posts_with_a_length() {
        let Probe::Complete(head) = probe(GOOD) else { panic!("should be taken") };
        assert_eq!((head.head_len, head.body_len), (GOOD.len() - 2, 2));
        assert!(matches!(probe(&GOOD[..20]), Probe::Partial));
    }

    #[test]
    fn refuses_malformed_heads_itself() {
        let malformed = [
            GOOD.replace("Content-Length: 2", "Content-Length: +2"),
            GOOD.replace("Content-Length: 2", "Content-Length: 2, 2"),
            GOOD.replace("Content-Length: 2", "Content-Length: 2\r\nContent-Length: 3"),
            GOOD.replace("Content-Length: 2", "Content-Length: 2\r\nTransfer-Encoding: chunked"),
            GOOD.replace("/mcp", "/mcp?q=\"x\""),
            GOOD.replace("/mcp", "/m cp"),
            GOOD.replace("Host: a", "Host: a\r\nHost: b"),
            "POST /mcp HTTP/1.1\r\nHo st: a\r\n\r\n".to_string(),
            GOOD.replace("POST", "GET").replace("/mcp", "/mcp?q=\"x\""),
        ];
        for text in malformed {
            assert!(matches!(probe(&text), Probe::Refused(EdgeError::BadRequest(_))), "{text:?}");
        }
        let many: String = (0..MAX_HEADERS + 4).map(|n| format!("X-{n}: v\r\n")).collect();
        assert!(matches!(probe(&GOOD.replace("Host: a\r\n", &format!("Host: a\r\n{many}"))), Probe::Unsuitable));
    }

    /// Heads Pingora's reader would answer with a bare 400 (its `validate_request`), before
    /// any hook of mcp-edge could answer with a JSON-RPC error or log the request.
    #[test]
    fn refuses_what_pingora_would_refuse_bare() {
        let chunked = |coding: &str| GOOD.replace("Content-Length: 2", &format!("Transfer-Encoding: {coding}"));
        let refused = [
            (GOOD.replace("/mcp", "http://a:8080/mcp"), "Host header differs from request-target authority"),
            (GOOD.replace("/mcp", "http://b/mcp"), "Host header differs from request-target authority"),
            (GOOD.replace("/mcp", "http://u@a/mcp"), "userinfo in request target"),
            (GOOD.replace("Host: a", "Host: u@a"), "userinfo in Host header"),
            (chunked("gzip"), "Transfer-Encoding whose final coding is not chunked"),
            (chunked("chunked, gzip"), "Transfer-Encoding whose final coding is not chunked"),
            (chunked("chunked").replace("HTTP/1.1", "HTTP/1.0"), "Transfer-Encoding on an HTTP/1.0 request"),
        ];
        for (text, reason) in refused {
            let Probe::Refused(EdgeError::BadRequest(said)) = probe(&text) else { panic!("not refused: {text:?}") };
            assert_eq!(said, reason, "{text:?}");
        }
        let connect = "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n";
        assert!(matches!(probe(connect), Probe::Refused(EdgeError::MethodNotAllowed { .. })));
        // What Pingora takes, the service takes.
        for text in [GOOD.replace("/mcp", "http://a/mcp"), chunked("gzip, chunked"), chunked("CHUNKED")] {
            assert!(matches!(probe(&text), Probe::Unsuitable), "{text:?}");
        }
    }

    #[test]
    fn refuses_heads_past_the_limits() {
        let fields = |n: usize| (0..n).map(|i| format!("X-{i}: v\r\n")).collect::<String>();
        let with = |extra: &str| GOOD.replace("Host: a\r\n", &format!("Host: a\r\n{extra}"));
        // Up to the limit (the Host and the others make 3 more): the service takes it.
        assert!(matches!(probe(&with(&fields(MAX_HEADER_FIELDS - 3))), Probe::Unsuitable));
        assert!(matches!(
            probe(&with(&fields(MAX_HEADER_FIELDS))),
            Probe::Refused(EdgeError::HeadTooLarge(TOO_MANY_FIELDS))
        ));
        let big = format!("X-Big: {}\r\n", "a".repeat(MAX_HEAD));
        assert!(
            matches!(probe(&with(&big)), Probe::Refused(EdgeError::HeadTooLarge(HEAD_TOO_LARGE))),
            "complete and too large"
        );
        let partial = with(&big);
        assert!(
            matches!(probe(&partial[..MAX_HEAD + 1]), Probe::Refused(EdgeError::HeadTooLarge(HEAD_TOO_LARGE))),
            "still arriving"
        );
        let many_partial = with(&fields(100));
        assert!(matches!(probe(&many_partial[..many_partial.len() - 10]), Probe::Partial), "many fields, arriving");
    }

    #[test]
    fn leaves_everything_else_to_the_service() {
        let unsuitable = [
            GOOD.replace("POST", "GET"),
            GOOD.replace("HTTP/1.1", "HTTP/1.0"),
            GOOD.replace("/mcp", "http://a/mcp"),
            GOOD.replace("Content-Length: 2", "Transfer-Encoding: chunked"),
            GOOD.replace("Content-Length: 2", "Content-Length: 2\r\nContent-Length: 2"),
            GOOD.replace("Content-Length: 2", &format!("Content-Length: {}", INSPECT_LIMIT + 1)),
            GOOD.replace("Host: a\r\n", ""),
            GOOD.replace("Host: a", "Expect: 100-continue\r\nHost: a"),
            GOOD.replace("Host: a", "Upgrade: h2c\r\nHost: a"),
        ];
        for text in unsuitable {
            assert!(matches!(probe(&text), Probe::Unsuitable), "{text:?}");
        }
    }
}
