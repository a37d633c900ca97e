//! Reading a request head on the hit path: whether what has arrived is a complete HTTP/1.1
//! request the hit path may take, and the headers its checks need, parsed once.

use crate::known_headers::KnownHeaders;
use crate::runtime::Runtime;
use crate::service::INSPECT_LIMIT;

/// Requests with more header lines than this are left to the proxy service.
const MAX_HEADERS: usize = 48;

/// What the hit path makes of what has arrived of a request. (Returned once per request, on
/// the stack: boxing the large variant would allocate per request instead.)
#[allow(clippy::large_enum_variant)]
pub(super) enum Probe<'b> {
    Complete(Head<'b>),
    Partial,
    /// Not the shape the hit path answers: the proxy service takes it.
    Unsuitable,
    /// Not a valid HTTP/1.1 request head: answered here with a JSON-RPC error (Pingora's own
    /// parser would answer a bare 400), and the connection closed.
    Malformed(&'static str),
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
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Probe::Partial,
        // The service allows more header lines than the hit path parses.
        Err(httparse::Error::TooManyHeaders) => return Probe::Unsuitable,
        Err(_) => return Probe::Malformed("malformed request head"),
    };
    let target = parsed.path.unwrap_or_default();
    if !valid_target(target) {
        return Probe::Malformed("invalid request target");
    }
    let path = target.split('?').next().unwrap_or_default();
    let (route, identity_header) = route_of(path);
    let known = KnownHeaders::from_parsed(parsed.headers, identity_header);
    if let Some(reason) = malformed_framing(&known) {
        return Probe::Malformed(reason);
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
            assert!(matches!(probe(&text), Probe::Malformed(_)), "{text:?}");
        }
        let many: String = (0..MAX_HEADERS + 4).map(|n| format!("X-{n}: v\r\n")).collect();
        assert!(matches!(probe(&GOOD.replace("Host: a\r\n", &format!("Host: a\r\n{many}"))), Probe::Unsuitable));
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
