//! The checks a request passes before mcp-edge forwards or answers it, made by the intake.
//! Each reads the request's [`KnownHeaders`] (found in one pass over the head: `httparse`'s
//! for HTTP/1.1, Pingora's for HTTP/2) and either passes or names the error to send.

use mcp_edge_policies::affinity;
use mcp_edge_policies::cache::{Caller, identity_of};
use mcp_edge_policies::config::ServerConfig;
use mcp_edge_policies::headers::{Mirrored, check_mirrored, is_stateless_era};
use mcp_edge_policies::jsonrpc::{self, Message};

use crate::body_coding::Coding;
use crate::error::EdgeError;
use crate::known_headers::{KnownHeaders, Value};
use crate::live_sessions::LIVE_SESSIONS;
use crate::runtime::Route;

/// Refuses a request that repeats a header it must carry at most once (the Host, its framing,
/// its MCP headers, its origin and the route's identity header).
pub fn check_singletons(headers: &KnownHeaders<'_>) -> Result<(), EdgeError> {
    match headers.repeated {
        Some(name) => {
            Err(EdgeError::bad_request(format!("header {} appears more than once", name.to_ascii_lowercase())))
        }
        None => Ok(()),
    }
}

/// The checks of a request's head before anything else: its path, headers sent twice, its
/// host and its origin (`target_authority`: an absolute-form target's, when it has no `Host`).
pub fn check_request_head(
    server: &ServerConfig,
    path: &str,
    target_authority: Option<&str>,
    headers: &KnownHeaders<'_>,
) -> Result<(), EdgeError> {
    check_path(path)?;
    check_singletons(headers)?;
    if let Some(named) = headers.connection_names_singleton {
        return Err(EdgeError::bad_request(format!(
            "Connection names {}, which decides who is asking or what is asked: a proxy would drop it",
            named.to_ascii_lowercase()
        )));
    }
    let host = match headers.host {
        Value::Absent => target_authority,
        Value::Text(host) => Some(host),
        Value::Opaque(bytes) => return Err(invalid_host(&String::from_utf8_lossy(bytes))),
    };
    check_host(&server.allowed_hosts, host)?;
    check_origin(&server.allowed_origins, host, headers.origin)
}

fn invalid_host(host: &str) -> EdgeError {
    EdgeError::bad_request(format!("invalid Host header {host:?}"))
}

/// DNS-rebinding protection, which upstreams cannot do behind a proxy that rewrites `Host`:
/// the request's host must be one of `server.allowed_hosts` (any port). A `Host` that is not a
/// plain `host[:port]` (user info, a path, a bad port) is refused whatever the list says.
pub fn check_host(allowed: &[String], host: Option<&str>) -> Result<(), EdgeError> {
    let Some(host) = host else { return Ok(()) };
    let Some(name) = host_name(host) else { return Err(invalid_host(host)) };
    if allowed.iter().any(|a| a == "*" || a.eq_ignore_ascii_case(name)) {
        return Ok(());
    }
    Err(EdgeError::HostNotAllowed { host: host.to_string() })
}

/// The name part of a `host[:port]` authority (`[v6]` kept bracketed); `None` if it is not one.
pub fn host_name(authority: &str) -> Option<&str> {
    let bytes = authority.as_bytes();
    let valid_char = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':' | b'[' | b']');
    if authority.is_empty() || !bytes.iter().all(valid_char) {
        return None;
    }
    let (name, port) = if authority.starts_with('[') {
        let end = authority.find(']')?;
        (&authority[..=end], authority[end + 1..].strip_prefix(':'))
    } else {
        match authority.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (authority, None),
        }
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    let name_ok = !name.is_empty() && (name.starts_with('[') || !name.contains([':', '[', ']']));
    (port_ok && name_ok && (port.is_some() || authority.len() == name.len())).then_some(name)
}

/// Requests from browsers carry `Origin`. One naming the request's own host (same-origin) may
/// call; any other must be listed in `server.allowed_origins` (`"*"`: any).
pub fn check_origin(allowed: &[String], host: Option<&str>, origin: Value<'_>) -> Result<(), EdgeError> {
    let origin = match origin {
        Value::Absent => return Ok(()),
        Value::Text(origin) => std::borrow::Cow::Borrowed(origin),
        // Not text: no list entry and no host can equal it.
        Value::Opaque(bytes) => String::from_utf8_lossy(bytes),
    };
    let trimmed = origin.trim_end_matches('/');
    let authority = trimmed.split_once("://").map(|(_, rest)| rest);
    let same_origin = authority.zip(host).is_some_and(|(authority, host)| authority.eq_ignore_ascii_case(host));
    if same_origin || allowed.iter().any(|a| a == "*" || a.eq_ignore_ascii_case(trimmed)) {
        return Ok(());
    }
    Err(EdgeError::OriginNotAllowed { origin: origin.into_owned() })
}

/// Request paths with dot segments (`/mcp/../admin`, also `%2e`-encoded) or backslashes, or
/// with an encoded `/` or `\\` (`%2f`, `%5c`: a server that decodes them sees segments the route
/// did not), are refused rather than forwarded as they are: the upstream (or anything between)
/// may resolve them to a path no route was chosen for.
pub fn check_path(path: &str) -> Result<(), EdgeError> {
    // Most paths have no '.', '%' or '\\' at all: nothing to look at (no allocation per hit).
    if !path.contains(['.', '%', '\\']) {
        return Ok(());
    }
    let encoded_separator = path.as_bytes().windows(3).any(|w| {
        w[0] == b'%'
            && ((w[1] == b'2' && w[2].eq_ignore_ascii_case(&b'f'))
                || (w[1] == b'5' && w[2].eq_ignore_ascii_case(&b'c')))
    });
    if encoded_separator || path.contains('\\') || path.split('/').any(is_dot_segment) {
        return Err(EdgeError::bad_request(format!(
            "path {path:?} has dot segments, backslashes or encoded separators"
        )));
    }
    Ok(())
}

/// `.` or `..`, each dot possibly written `%2e` / `%2E`.
fn is_dot_segment(segment: &str) -> bool {
    let mut rest = segment.as_bytes();
    let mut dots = 0;
    while !rest.is_empty() {
        if rest[0] == b'.' {
            rest = &rest[1..];
        } else if rest.len() >= 3 && rest[0] == b'%' && rest[1] == b'2' && rest[2].eq_ignore_ascii_case(&b'e') {
            rest = &rest[3..];
        } else {
            return false;
        }
        dots += 1;
    }
    dots == 1 || dots == 2
}

/// Where a handshake-era request's session lives: the pool index of the upstream that created
/// it and that upstream's own session id. `Ok(None)`: no session (stateless-era requests ignore
/// session ids, as the spec tells servers to). 404 when the id is not one of ours or its
/// upstream has left the pool; an unreachable upstream is found out on connecting.
pub fn pin_session(
    route: &Route,
    headers: &KnownHeaders<'_>,
    stateless: bool,
) -> Result<Option<(std::sync::Arc<crate::pool::Upstream>, String)>, EdgeError> {
    if stateless || !headers.session_id.is_present() {
        return Ok(None);
    }
    // An id that is not text is not one of ours.
    let pinned = headers
        .session_id
        .text()
        .and_then(affinity::decode)
        .and_then(|(upstream_id, upstream_session)| Some((route.pool.find_by_id(upstream_id)?, upstream_session)));
    match pinned {
        Some((upstream, upstream_session)) => Ok(Some((upstream, upstream_session.to_string()))),
        // 404 tells an MCP client to initialize a new session (spec, handshake era).
        None => Err(EdgeError::SessionNotFound),
    }
}

/// A POST body's framing, as its headers declare it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PostBody {
    /// Its length on the wire (`None`: chunked).
    pub length: Option<u64>,
    /// How it is compressed (`None`: plain).
    pub coding: Option<Coding>,
}

/// Checks a POST's framing headers (type, coding, length).
pub fn check_post(headers: &KnownHeaders<'_>, max_body: u64) -> Result<PostBody, EdgeError> {
    let content_type = headers.content_type.text().unwrap_or_default();
    if !content_type.to_ascii_lowercase().starts_with("application/json") {
        return Err(EdgeError::UnsupportedMediaType { content_type: content_type.to_string() });
    }
    if headers.content_encoding_stacked {
        return Err(EdgeError::EncodedBody { coding: "codings stacked on separate lines".into() });
    }
    let coding = headers.content_encoding.bytes().map(Coding::parse).transpose();
    let coding = coding.map_err(|coding| EdgeError::EncodedBody { coding })?;
    if headers.invalid_content_length {
        return Err(EdgeError::bad_request("invalid Content-Length"));
    }
    let length = headers.content_length;
    if let Some(size) = length.filter(|&n| n > max_body) {
        return Err(EdgeError::BodyTooLarge { size, limit: max_body });
    }
    Ok(PostBody { length, coding })
}

/// Parses a JSON-RPC body and, in the stateless era, checks the headers that mirror it.
pub fn understand(body: &[u8], headers: &KnownHeaders<'_>, stateless: bool) -> Result<Message, EdgeError> {
    let message = jsonrpc::parse(body).map_err(|invalid| EdgeError::InvalidMessage {
        id: invalid.id.clone(),
        code: invalid.code,
        message: invalid.message,
    })?;
    if stateless {
        let mirrored = Mirrored {
            protocol_version: headers.protocol_version.text(),
            method: headers.method.text(),
            name: headers.name.text(),
        };
        if let Err(reason) = check_mirrored(mirrored, &message) {
            return Err(EdgeError::HeaderMismatch { id: message.id.clone(), reason });
        }
    }
    Ok(message)
}

/// Who is asking, as far as cache scopes are concerned (the identity only as a hash of the
/// route's `identity_header`, here `headers.identity`).
pub fn caller(headers: &KnownHeaders<'_>, stateless: bool, identity: Identity<'_>) -> Caller {
    let session = headers.session_id.text().map(str::to_string);
    let seen = session.as_deref().filter(|_| !stateless).and_then(|s| LIVE_SESSIONS.lookup(s));
    let identity = match identity {
        Identity::Header(name) => identity_of(name, headers.identity.bytes()),
        Identity::Verified(context) => context.map(str::to_string),
    };
    Caller {
        identity,
        session,
        stateless,
        protocol_version: headers.protocol_version.text().map(str::to_string),
        session_alive: seen.is_some(),
        capabilities: seen.flatten(),
    }
}

/// What a caller's identity is read from.
pub enum Identity<'a> {
    /// The hash of this header's value (a route without `[route.auth]`).
    Header(&'a str),
    /// The authorization context of its verified token (`None`: no token, on a protected route
    /// that does not require one): the header's bytes are not hashed at all.
    Verified(Option<&'a str>),
}

/// Whether the request speaks the stateless era (its `MCP-Protocol-Version` says so).
pub fn is_stateless(headers: &KnownHeaders<'_>) -> bool {
    headers.protocol_version.text().is_some_and(is_stateless_era)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcp_edge_policies::jsonrpc::codes;

    fn raw(pairs: &[(&'static str, &'static str)]) -> KnownHeaders<'static> {
        KnownHeaders::read(pairs.iter().map(|(name, value)| (*name, value.as_bytes())), "authorization")
    }

    fn origin(value: &'static str) -> Value<'static> {
        raw(&[("origin", value)]).origin
    }

    #[test]
    fn hosts_and_origins_that_are_not_text_are_refused() {
        let config = "[[route]]\npath = \"/mcp\"\nupstreams = [\"http://127.0.0.1:1/mcp\"]\n";
        let server = mcp_edge_policies::config::Config::from_toml(config).unwrap().server;
        let check = |pairs: &[(&'static str, &'static str)]| check_request_head(&server, "/mcp", None, &raw(pairs));
        assert_eq!(check(&[("host", "caf\u{e9}")]).unwrap_err().status(), 400);
        assert_eq!(check(&[("host", "localhost"), ("origin", "http://caf\u{e9}")]).unwrap_err().status(), 403);
        assert!(check(&[("host", "localhost"), ("origin", "http://localhost")]).is_ok());
    }

    #[test]
    fn origin_must_be_the_requests_own_or_listed() {
        let allowed = vec!["https://app.example".to_string()];
        let host = Some("localhost:8080");
        assert!(check_origin(&allowed, host, Value::Absent).is_ok());
        assert!(check_origin(&allowed, host, origin("https://APP.example/")).is_ok());
        assert!(check_origin(&[], host, origin("http://localhost:8080")).is_ok(), "same origin");
        for foreign in ["http://localhost:9999", "http://evil.example", "null", "localhost:8080"] {
            let denied = check_origin(&[], host, origin(foreign)).unwrap_err();
            assert_eq!(denied.status(), 403, "{foreign}");
            assert!(denied.to_string().contains(foreign));
        }
        let star = vec!["*".to_string()];
        assert!(check_origin(&star, host, origin("http://evil.example")).is_ok());
    }

    #[test]
    fn hosts_must_be_allowed_and_well_formed() {
        let loopback: Vec<String> = ["localhost", "127.0.0.1", "[::1]"].map(String::from).to_vec();
        for good in ["localhost", "localhost:8080", "127.0.0.1:1", "[::1]:8080", "LOCALHOST:80"] {
            assert!(check_host(&loopback, Some(good)).is_ok(), "{good}");
        }
        assert!(check_host(&loopback, None).is_ok(), "no Host: nothing to rebind");
        let evil = check_host(&loopback, Some("evil.example.com")).unwrap_err();
        assert_eq!(evil.status(), 403);
        assert!(evil.to_string().contains("evil.example.com"));
        let any = vec!["*".to_string()];
        assert!(check_host(&any, Some("mcp.example.com:443")).is_ok());
        for bad in
            ["user@localhost", "localhost:80:80", "localhost:", "local host", "a/b", "[::1", "localhost:99999x", ""]
        {
            assert_eq!(check_host(&any, Some(bad)).unwrap_err().status(), 400, "{bad:?}");
        }
    }

    #[test]
    fn dot_segments_are_refused() {
        for bad in
            ["/mcp/../mcp", "/mcp/./x", "/mcp/%2E%2e/x", "/..", "/mcp\\..\\x", "/mcp/%2E%2E%2fadmin", "/mcp/a%5Cb"]
        {
            assert_eq!(check_path(bad).unwrap_err().status(), 400, "{bad}");
        }
        for good in ["/mcp", "/mcp/a.b", "/mcp/...", "/"] {
            assert!(check_path(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn repeated_singleton_headers_are_refused() {
        let twice = check_singletons(&raw(&[("authorization", "a"), ("Authorization", "b")])).unwrap_err();
        assert_eq!(twice.status(), 400);
        assert!(twice.to_string().contains("header authorization appears more than once"), "{twice}");
        assert!(check_singletons(&raw(&[("mcp-session-id", "a"), ("mcp-session-id", "a")])).is_err());
        assert!(check_singletons(&raw(&[("authorization", "a"), ("accept", "x"), ("accept", "y")])).is_ok());
    }

    #[test]
    fn post_framing() {
        let json = [("content-type", "application/json; charset=utf-8")];
        assert_eq!(check_post(&raw(&json), 100).unwrap(), PostBody { length: None, coding: None });
        let sized = raw(&[json[0], ("content-length", "10")]);
        assert_eq!(check_post(&sized, 100).unwrap(), PostBody { length: Some(10), coding: None });
        let gzipped = raw(&[json[0], ("content-length", "10"), ("content-encoding", "gzip")]);
        assert_eq!(check_post(&gzipped, 100).unwrap().coding, Some(Coding::Gzip));
        let zstd = check_post(&raw(&[json[0], ("content-encoding", "zstd")]), 100).unwrap_err();
        assert_eq!(zstd.status(), 415);
        assert!(check_post(&raw(&[json[0], ("content-encoding", "identity")]), 100).unwrap().coding.is_none());
        // Codings on two lines are stacked, as "gzip, br" on one is.
        let stacked = raw(&[json[0], ("content-encoding", "gzip"), ("content-encoding", "br")]);
        assert_eq!(check_post(&stacked, 100).unwrap_err().status(), 415);
        let with_identity = raw(&[json[0], ("content-encoding", "identity"), ("content-encoding", "gzip")]);
        assert_eq!(check_post(&with_identity, 100).unwrap().coding, Some(Coding::Gzip));
        assert_eq!(check_post(&sized, 5).unwrap_err().status(), 413);
        for bad in ["ten", "+9", "-1", "1 0", "", "0x1"] {
            let bad = raw(&[json[0], ("content-length", bad)]);
            assert_eq!(check_post(&bad, 100).unwrap_err().status(), 400);
        }
        assert_eq!(check_post(&raw(&[("content-type", "text/plain")]), 100).unwrap_err().status(), 415);
    }

    #[test]
    fn understand_checks_mirrored_headers_in_the_stateless_era() {
        let body = br#"{"jsonrpc":"2.0","id":3,"method":"resources/read","params":{"uri":"a://b"}}"#;
        let good =
            raw(&[("mcp-protocol-version", "2026-07-28"), ("mcp-method", "resources/read"), ("mcp-name", "a://b")]);
        assert!(understand(body, &good, true).is_ok());
        let bad = raw(&[("mcp-protocol-version", "2026-07-28"), ("mcp-method", "tools/list"), ("mcp-name", "a://b")]);
        let mismatch = understand(body, &bad, true).unwrap_err();
        assert_eq!((mismatch.status(), mismatch.code(), mismatch.id()), (400, codes::HEADER_MISMATCH, Some("3")));
        // The handshake era has no mirrored headers to check.
        assert!(understand(body, &bad, false).is_ok());
        assert_eq!(understand(b"{", &good, true).unwrap_err().code(), codes::PARSE_ERROR);
    }
}
