//! Reading a request head on the HTTP/1.1 front: whether what has arrived is a complete,
//! valid HTTP/1.1 request head, and the headers the intake needs, parsed once.

use pingora::http::RequestHeader;
use pingora::protocols::http::authority::validate_request_authority;

use crate::error::EdgeError;
use crate::intake::Request;
use crate::known_headers::KnownHeaders;
use crate::runtime::Runtime;

/// Header lines parsed without allocating; a head with more is parsed again with room for
/// [`MAX_HEADER_FIELDS`] (only such rare heads pay for it).
const MAX_HEADERS: usize = 48;
/// The most header fields a request may have: more are refused with 431 and a JSON-RPC error.
/// (Pingora's HTTP/1 reader takes as many; `tests::pingora_reads_every_head_the_front_passes`
/// holds it to that.)
pub(super) const MAX_HEADER_FIELDS: usize = 256;
/// The largest request head taken (as Envoy's default, 60 KiB, and nginx's 4 × 8 KiB): a
/// larger one is refused with 431 (Pingora alone would take 1 MiB).
pub(super) const MAX_HEAD: usize = 64 * 1024;

/// What the front makes of what has arrived of a request. (Returned once per request, on the
/// stack: boxing the large variant would allocate per request instead.)
#[allow(clippy::large_enum_variant)]
pub(super) enum Probe<'b> {
    Complete(Head<'b>),
    Partial,
    /// Answered with a JSON-RPC error, and the connection closed: a head that is not a valid
    /// HTTP/1.1 request (400), one larger than [`MAX_HEAD`] or with more fields than
    /// [`MAX_HEADER_FIELDS`] (431), a `CONNECT` (405).
    Refused(EdgeError),
}

/// How a request's body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// `Content-Length` (0 when there is neither it nor `Transfer-Encoding`).
    Length(u64),
    Chunked,
}

/// A complete, valid request head, read once (it borrows the request's bytes).
pub(super) struct Head<'b> {
    pub(super) head_len: usize,
    pub(super) method: &'b str,
    pub(super) version: http::Version,
    /// The target's path (without its query).
    pub(super) path: &'b str,
    /// An absolute-form target's authority.
    pub(super) authority: Option<String>,
    /// The route serving `path`, if any.
    pub(super) route: Option<usize>,
    pub(super) known: KnownHeaders<'b>,
    pub(super) framing: Framing,
}

impl<'b> Head<'b> {
    /// The whole request's length, when its body has one.
    pub(super) fn request_len(&self) -> Option<usize> {
        match self.framing {
            Framing::Length(length) => Some(self.head_len + length as usize),
            Framing::Chunked => None,
        }
    }

    /// The head as the intake reads it.
    pub(super) fn request(&'b self, client: Option<std::net::IpAddr>, internal: bool) -> Request<'b> {
        Request {
            method: self.method,
            version: self.version,
            path: self.path,
            authority: self.authority.as_deref(),
            known: &self.known,
            client,
            internal,
            request_id: crate::request_id::RequestId::of(self.known.request_id.bytes()),
            bodiless: !self.known.transfer_encoding && self.known.content_length.unwrap_or(0) == 0,
        }
    }
}

/// The route serving `path` and its identity header (none without a route).
pub(super) fn route_and_identity<'r>(snapshot: &'r Runtime, path: &str) -> (Option<usize>, &'r str) {
    match snapshot.route_for(path) {
        Some(index) => (Some(index), snapshot.routes[index].config.policy.identity_header.as_str()),
        None => (None, ""),
    }
}

/// Parses what has arrived of a request head. `route_of` names the route of a path and its
/// identity header.
pub(super) fn probe_head<'b, 'r>(
    buffer: &'b [u8],
    route_of: impl FnOnce(&str) -> (Option<usize>, &'r str),
) -> Probe<'b> {
    let mut header_slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    match parse_head(buffer, &mut header_slots, route_of) {
        Err(TooMany(route_of)) => {
            let mut slots = vec![httparse::EMPTY_HEADER; MAX_HEADER_FIELDS];
            match parse_head(buffer, &mut slots, route_of) {
                Ok(probe) => probe,
                Err(_) => too_large(TOO_MANY_FIELDS),
            }
        }
        Ok(probe) => probe,
    }
}

/// More header fields than the slots: `route_of`, unused, back.
struct TooMany<F>(F);

// Inlined, as `read_head`: the head is then built where the caller keeps it, not copied out.
#[inline(always)]
fn parse_head<'b, 'r, F: FnOnce(&str) -> (Option<usize>, &'r str)>(
    buffer: &'b [u8],
    slots: &mut [httparse::Header<'b>],
    route_of: F,
) -> Result<Probe<'b>, TooMany<F>> {
    let mut parsed = httparse::Request::new(slots);
    let head_len = match parsed.parse(buffer) {
        Ok(status) if over_head_limit(status, buffer) => return Ok(too_large(HEAD_TOO_LARGE)),
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(Probe::Partial),
        Err(httparse::Error::TooManyHeaders) => return Err(TooMany(route_of)),
        Err(_) => return Ok(malformed("malformed request head")),
    };
    Ok(read_head(&parsed, head_len, route_of))
}

/// A parsed head's checks and what the front needs of it.
#[inline(always)]
fn read_head<'b, 'r>(
    parsed: &httparse::Request<'_, 'b>,
    head_len: usize,
    route_of: impl FnOnce(&str) -> (Option<usize>, &'r str),
) -> Probe<'b> {
    let target = parsed.path.unwrap_or_default();
    if !valid_target(target) {
        return malformed("invalid request target");
    }
    let method = parsed.method.unwrap_or_default();
    if method == "CONNECT" {
        return Probe::Refused(EdgeError::MethodNotAllowed { method: "CONNECT".into() });
    }
    let (path, authority) = match target.starts_with('/') {
        true => (target.split('?').next().unwrap_or_default(), None),
        false => match absolute_form(target) {
            Some(parts) => parts,
            None => return malformed("invalid request target"),
        },
    };
    let (route, identity_header) = route_of(path);
    let known = KnownHeaders::from_parsed(parsed.headers, identity_header);
    if let Some(reason) = malformed_framing(&known) {
        return malformed(reason);
    }
    if let Some(reason) = refused_by_pingora(parsed, target, &known) {
        return malformed(reason);
    }
    let version = if parsed.version == Some(0) { http::Version::HTTP_10 } else { http::Version::HTTP_11 };
    let framing = match (known.transfer_encoding, known.content_length) {
        (true, _) => Framing::Chunked,
        (false, length) => Framing::Length(length.unwrap_or(0)),
    };
    Probe::Complete(Head { head_len, method, version, path, authority, route, known, framing })
}

/// The path (a static `/` when it has none: `http://a`) and authority of an absolute-form
/// target (`*` has neither: no route serves it).
fn absolute_form(target: &str) -> Option<(&str, Option<String>)> {
    if target == "*" {
        return Some(("*", None));
    }
    let uri: http::Uri = target.parse().ok()?;
    let authority = uri.authority().map(|a| a.as_str().to_string());
    // The path as it appears in the target (borrowed from the request's bytes).
    let after_authority = authority.as_deref().and_then(|a| target.split_once(a)).map_or("", |(_, rest)| rest);
    let path = after_authority.split('?').next().unwrap_or_default();
    Some((if path.is_empty() { "/" } else { path }, authority))
}

fn malformed(reason: impl Into<String>) -> Probe<'static> {
    Probe::Refused(EdgeError::bad_request(reason))
}

fn too_large(reason: &'static str) -> Probe<'static> {
    Probe::Refused(EdgeError::HeadTooLarge(reason))
}

const HEAD_TOO_LARGE: &str = "the request head is larger than 64 KiB";
pub(super) const TOO_MANY_FIELDS: &str = "the request head has more than 256 header fields";

/// Whether a head is past [`MAX_HEAD`]: complete and longer, or still arriving and already
/// longer.
fn over_head_limit(status: httparse::Status<usize>, buffer: &[u8]) -> bool {
    match status {
        httparse::Status::Complete(head_len) => head_len > MAX_HEAD,
        httparse::Status::Partial => buffer.len() > MAX_HEAD,
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

    fn complete(text: &str) -> Head<'_> {
        match probe(text) {
            Probe::Complete(head) => head,
            _ => panic!("not taken: {text:?}"),
        }
    }

    #[test]
    fn reads_a_post_with_a_length() {
        let head = complete(GOOD);
        assert_eq!((head.head_len, head.framing), (GOOD.len() - 2, Framing::Length(2)));
        assert_eq!((head.method, head.path, head.version), ("POST", "/mcp", http::Version::HTTP_11));
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
        let text = GOOD.replace("Host: a\r\n", &format!("Host: a\r\n{many}"));
        assert_eq!(complete(&text).known.host.text(), Some("a"), "many fields are parsed again, whole");
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
        // What Pingora takes, the front takes.
        for text in [GOOD.replace("/mcp", "http://a/mcp"), chunked("gzip, chunked"), chunked("CHUNKED")] {
            complete(&text);
        }
    }

    #[test]
    fn refuses_heads_past_the_limits() {
        let fields = |n: usize| (0..n).map(|i| format!("X-{i}: v\r\n")).collect::<String>();
        let with = |extra: &str| GOOD.replace("Host: a\r\n", &format!("Host: a\r\n{extra}"));
        // Up to the limit (the Host and the others make 3 more): taken.
        complete(&with(&fields(MAX_HEADER_FIELDS - 3)));
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
    fn reads_every_valid_head() {
        let get = GOOD.replace("POST", "GET");
        assert_eq!(complete(&get).method, "GET");
        let old = GOOD.replace("HTTP/1.1", "HTTP/1.0");
        assert_eq!(complete(&old).version, http::Version::HTTP_10);
        let absolute = GOOD.replace("/mcp", "http://a/mcp?x=1");
        let head = complete(&absolute);
        assert_eq!((head.path, head.authority.as_deref()), ("/mcp", Some("a")));
        let chunked = GOOD.replace("Content-Length: 2", "Transfer-Encoding: chunked");
        assert_eq!(complete(&chunked).framing, Framing::Chunked);
        let large = GOOD.replace("Content-Length: 2", "Content-Length: 100000");
        assert_eq!(complete(&large).framing, Framing::Length(100_000));
        let no_host = GOOD.replace("Host: a\r\n", "");
        assert_eq!(complete(&no_host).known.host_lines, 0);
        let expect = GOOD.replace("Host: a", "Expect: 100-continue\r\nHost: a");
        assert!(complete(&expect).known.expects_continue);
        let upgrade = GOOD.replace("Host: a", "Upgrade: h2c\r\nHost: a");
        assert!(complete(&upgrade).known.upgrade);
    }

    /// Heads built from the shapes a client can vary: method, target, version, framing,
    /// Host, field count and size.
    fn head_corpus() -> Vec<String> {
        let targets = ["/mcp", "/mcp?x=1&y=%20", "http://a/mcp", "http://a:80/mcp", "http://b/mcp", "*", "/a/../mcp"];
        let framings = [
            "Content-Length: 2",
            "Content-Length: 0",
            "Transfer-Encoding: chunked",
            "Transfer-Encoding: gzip, chunked",
            "Transfer-Encoding: chunked, gzip",
            "Content-Length: 2\r\nContent-Length: 2",
            "",
        ];
        let hosts = ["Host: a", "Host: a:80", "", "Host: u@a", "Host: a\r\nHost: a"];
        let extras = [
            String::new(),
            fields(40),
            fields(200),
            fields(MAX_HEADER_FIELDS - 6),
            format!("X-Big: {}", "v".repeat(60_000)),
        ];
        let mut heads = Vec::new();
        for method in ["POST", "GET", "DELETE", "OPTIONS", "PUT"] {
            for version in ["HTTP/1.1", "HTTP/1.0"] {
                for target in targets {
                    for framing in framings {
                        for host in hosts {
                            for extra in &extras {
                                let lines = [host, framing, extra.as_str()].into_iter().filter(|l| !l.is_empty());
                                let lines: String = lines.map(|l| format!("{l}\r\n")).collect();
                                heads.push(format!("{method} {target} {version}\r\n{lines}\r\n"));
                            }
                        }
                    }
                }
            }
        }
        heads
    }

    fn fields(n: usize) -> String {
        (0..n).map(|i| format!("X-{i}: v")).collect::<Vec<_>>().join("\r\n")
    }

    /// Pingora's HTTP/1 reader takes every head the front passes: a head it refused would get
    /// a bare status, no JSON-RPC error and no access-log line (this holds the front's own
    /// checks, e.g. `refused_by_pingora` and `MAX_HEADER_FIELDS`, to Pingora's, by behaviour).
    #[tokio::test]
    async fn pingora_reads_every_head_the_front_passes() {
        use tokio::io::AsyncWriteExt;
        let mut passed = 0;
        for head in head_corpus() {
            if !matches!(probe(&head), Probe::Complete(_)) {
                continue;
            }
            passed += 1;
            let (mut client, server) = tokio::io::duplex(128 * 1024);
            client.write_all(head.as_bytes()).await.unwrap();
            let mut session = pingora::protocols::http::ServerSession::new_http1(Box::new(server));
            let read = session.read_request().await;
            assert!(
                matches!(read, Ok(true)),
                "Pingora refused a head the front passed: {:?}\n{read:?}",
                &head[..head.len().min(200)]
            );
        }
        assert!(passed > 1000, "only {passed} heads passed: the corpus tests little");
    }
}
