//! The checks a request passes before mcp-edge forwards or answers it, shared by the proxy
//! service and the hit path. Each reads headers through [`HeaderLookup`] (Pingora's parsed
//! header on one side, `httparse`'s on the other) and either passes or names the error to send.

use mcp_edge_policies::affinity;
use mcp_edge_policies::cache::{Caller, identity_hash};
use mcp_edge_policies::config::CachePolicy;
use mcp_edge_policies::headers::{Mirrored, check_mirrored};
use mcp_edge_policies::jsonrpc::{self, Message, codes};

use crate::runtime::Route;

/// Read access to a request's headers by (case-insensitive) name.
pub trait HeaderLookup {
    fn header_bytes(&self, name: &str) -> Option<&[u8]>;

    /// The header as text; `None` when absent or not visible ASCII.
    fn header(&self, name: &str) -> Option<&str> {
        self.header_bytes(name).and_then(|v| std::str::from_utf8(v).ok()).filter(|v| v.bytes().all(is_visible))
    }
}

fn is_visible(b: u8) -> bool {
    b == b'\t' || (b' '..=b'~').contains(&b)
}

impl HeaderLookup for http::HeaderMap {
    fn header_bytes(&self, name: &str) -> Option<&[u8]> {
        self.get(name).map(|v| v.as_bytes())
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| v.to_str().ok())
    }
}

impl HeaderLookup for [httparse::Header<'_>] {
    fn header_bytes(&self, name: &str) -> Option<&[u8]> {
        self.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value)
    }
}

/// An error answer: HTTP status plus a JSON-RPC error body.
#[derive(Debug)]
pub struct Rejection {
    pub status: u16,
    pub id: Option<String>,
    pub code: i64,
    pub message: String,
}

impl Rejection {
    pub fn new(status: u16, code: i64, message: impl Into<String>) -> Rejection {
        Rejection { status, id: None, code, message: message.into() }
    }

    pub fn body(&self) -> String {
        jsonrpc::error_body(self.id.as_deref(), self.code, &self.message)
    }
}

/// Requests from browsers carry `Origin`; only configured origins may talk to MCP servers.
pub fn check_origin(allowed: &[String], headers: &(impl HeaderLookup + ?Sized)) -> Result<(), Rejection> {
    let Some(origin) = headers.header("origin") else { return Ok(()) };
    let trimmed = origin.trim_end_matches('/');
    if allowed.iter().any(|a| a == "*" || a.eq_ignore_ascii_case(trimmed)) {
        return Ok(());
    }
    Err(Rejection::new(403, codes::SERVER_ERROR, format!("Forbidden: origin {origin} is not allowed")))
}

/// Where a handshake-era request's session lives: the pool index of the upstream that created
/// it and that upstream's own session id. `Ok(None)`: no session (stateless-era requests ignore
/// session ids, as the spec tells servers to). 404 when the id is not one of ours or its
/// upstream has left the pool; an unreachable upstream is found out on connecting.
pub fn pin_session(
    route: &Route,
    headers: &(impl HeaderLookup + ?Sized),
    stateless: bool,
) -> Result<Option<(usize, String)>, Rejection> {
    if stateless {
        return Ok(None);
    }
    let Some(edge_session) = headers.header("mcp-session-id") else { return Ok(None) };
    let pinned = affinity::decode(edge_session)
        .and_then(|(upstream_id, upstream_session)| Some((route.pool.find_by_id(upstream_id)?, upstream_session)));
    match pinned {
        Some((index, upstream_session)) => Ok(Some((index, upstream_session.to_string()))),
        // 404 tells an MCP client to initialize a new session (spec, handshake era).
        None => Err(Rejection::new(404, -32001, "Session not found")),
    }
}

/// Checks a POST's framing headers; returns its declared body length (`None`: chunked).
pub fn check_post(headers: &(impl HeaderLookup + ?Sized), max_body: u64) -> Result<Option<u64>, Rejection> {
    let content_type = headers.header("content-type").unwrap_or_default();
    if !content_type.to_ascii_lowercase().starts_with("application/json") {
        let message = format!("Unsupported Media Type: Content-Type must be application/json, not {content_type:?}");
        return Err(Rejection::new(415, codes::INVALID_REQUEST, message));
    }
    let length = match headers.header("content-length").map(|v| v.trim().parse::<u64>()) {
        Some(Ok(n)) => Some(n),
        Some(Err(_)) => return Err(Rejection::new(400, codes::INVALID_REQUEST, "invalid Content-Length")),
        None => None,
    };
    if let Some(n) = length.filter(|&n| n > max_body) {
        let message = format!("request body of {n} bytes exceeds the limit of {max_body} bytes");
        return Err(Rejection::new(413, codes::INVALID_REQUEST, message));
    }
    Ok(length)
}

/// Parses a JSON-RPC body and, in the stateless era, checks the headers that mirror it.
pub fn understand(body: &[u8], headers: &(impl HeaderLookup + ?Sized), stateless: bool) -> Result<Message, Rejection> {
    let message = jsonrpc::parse(body).map_err(|invalid| Rejection {
        status: 400,
        id: invalid.id.clone(),
        code: invalid.code,
        message: invalid.message,
    })?;
    if stateless {
        let mirrored = Mirrored {
            protocol_version: headers.header("mcp-protocol-version"),
            method: headers.header("mcp-method"),
            name: headers.header("mcp-name"),
        };
        if let Err(reason) = check_mirrored(mirrored, &message) {
            return Err(Rejection {
                status: 400,
                id: message.id.clone(),
                code: codes::HEADER_MISMATCH,
                message: reason,
            });
        }
    }
    Ok(message)
}

/// Who is asking, as far as cache scopes are concerned (the identity only as a hash).
pub fn caller(headers: &(impl HeaderLookup + ?Sized), policy: &CachePolicy, stateless: bool) -> Caller {
    Caller {
        identity: headers.header_bytes(policy.identity_header.as_str()).map(identity_hash),
        session: headers.header("mcp-session-id").map(str::to_string),
        stateless,
        protocol_version: headers.header("mcp-protocol-version").map(str::to_string),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(pairs: &[(&'static str, &'static str)]) -> Vec<httparse::Header<'static>> {
        pairs.iter().map(|(name, value)| httparse::Header { name, value: value.as_bytes() }).collect()
    }

    #[test]
    fn both_header_sources_read_alike() {
        let parsed = raw(&[("Content-Type", "application/json"), ("X-Bin", "caf\u{e9}")]);
        let mut map = http::HeaderMap::new();
        map.insert("content-type", "application/json".parse().unwrap());
        map.insert("x-bin", http::HeaderValue::from_bytes("caf\u{e9}".as_bytes()).unwrap());
        assert_eq!(parsed.header("content-type"), Some("application/json"));
        assert_eq!(map.header("content-type"), Some("application/json"));
        // Non-ASCII values are not text in either source.
        assert_eq!(parsed.header("x-bin"), None);
        assert_eq!(map.header("x-bin"), None);
        assert_eq!(parsed.header_bytes("x-bin"), Some("caf\u{e9}".as_bytes()));
    }

    #[test]
    fn origin_must_be_listed() {
        let allowed = vec!["https://app.example".to_string()];
        assert!(check_origin(&allowed, raw(&[]).as_slice()).is_ok());
        assert!(check_origin(&allowed, raw(&[("origin", "https://APP.example/")]).as_slice()).is_ok());
        let denied = check_origin(&allowed, raw(&[("origin", "https://evil.example")]).as_slice()).unwrap_err();
        assert_eq!(denied.status, 403);
        assert!(denied.message.contains("https://evil.example"));
    }

    #[test]
    fn post_framing() {
        let json = [("content-type", "application/json; charset=utf-8")];
        assert_eq!(check_post(raw(&json).as_slice(), 100).unwrap(), None);
        let sized = raw(&[json[0], ("content-length", "10")]);
        assert_eq!(check_post(sized.as_slice(), 100).unwrap(), Some(10));
        assert_eq!(check_post(sized.as_slice(), 5).unwrap_err().status, 413);
        let bad = raw(&[json[0], ("content-length", "ten")]);
        assert_eq!(check_post(bad.as_slice(), 100).unwrap_err().status, 400);
        assert_eq!(check_post(raw(&[("content-type", "text/plain")]).as_slice(), 100).unwrap_err().status, 415);
    }

    #[test]
    fn understand_checks_mirrored_headers_in_the_stateless_era() {
        let body = br#"{"jsonrpc":"2.0","id":3,"method":"resources/read","params":{"uri":"a://b"}}"#;
        let good =
            raw(&[("mcp-protocol-version", "2026-07-28"), ("mcp-method", "resources/read"), ("mcp-name", "a://b")]);
        assert!(understand(body, good.as_slice(), true).is_ok());
        let bad = raw(&[("mcp-protocol-version", "2026-07-28"), ("mcp-method", "tools/list"), ("mcp-name", "a://b")]);
        let mismatch = understand(body, bad.as_slice(), true).unwrap_err();
        assert_eq!((mismatch.status, mismatch.code, mismatch.id.as_deref()), (400, codes::HEADER_MISMATCH, Some("3")));
        // The handshake era has no mirrored headers to check.
        assert!(understand(body, bad.as_slice(), false).is_ok());
        assert_eq!(understand(b"{", good.as_slice(), true).unwrap_err().code, codes::PARSE_ERROR);
    }
}
