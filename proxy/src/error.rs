//! mcp-edge's errors: what a request can be refused or failed with ([`EdgeError`], each
//! knowing its HTTP status, JSON-RPC code and message), and what setting up a configuration
//! can fail with ([`SetupError`]).
//!
//! Every error answer is a JSON-RPC error body with the status below; messages name what was
//! refused (a header, a limit, a route) and never an upstream's address.

use mcp_edge_policies::jsonrpc::{self, codes};

/// Why a request is refused or failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EdgeError {
    // The client's doing.
    #[error("no route serves path {path}")]
    NoRoute { path: String },
    #[error("method {method} is not allowed on an MCP endpoint")]
    MethodNotAllowed { method: String },
    /// A malformed request: bad framing, repeated headers, dot segments, an invalid Host.
    #[error("Bad Request: {0}")]
    BadRequest(String),
    #[error("Request Timeout: {0}")]
    RequestTimeout(String),
    #[error("Forbidden: host {host} is not allowed (server.allowed_hosts)")]
    HostNotAllowed { host: String },
    #[error("Forbidden: origin {origin} is not allowed (server.allowed_origins)")]
    OriginNotAllowed { origin: String },
    #[error("Unsupported Media Type: Content-Type must be application/json, not {content_type:?}")]
    UnsupportedMediaType { content_type: String },
    /// A request body in a coding mcp-edge does not decode (see `body_coding`).
    #[error("Unsupported Media Type: request bodies may be sent plain or as gzip, deflate or br, not {coding:?}")]
    EncodedBody { coding: String },
    /// A compressed body decoding past `server.max_body`, or (`bomb`) past `body_coding`'s
    /// ratio limit: refused as soon as decoding passed `limit`.
    #[error("{}", decoded_too_large(coding, *compressed, *limit, *bomb))]
    DecodedBodyTooLarge { coding: &'static str, compressed: u64, limit: u64, bomb: bool },
    /// A compressed body that does not decode (corrupt, truncated).
    #[error("Bad Request: the {coding} request body does not decode ({reason})")]
    UndecodableBody { coding: &'static str, reason: String },
    #[error("request body of {size} bytes exceeds the limit of {limit} bytes")]
    BodyTooLarge { size: u64, limit: u64 },
    /// Found too large while streaming (its size was not declared).
    #[error("request body too large: the limit is {limit} bytes")]
    StreamedBodyTooLarge { limit: u64 },
    #[error("Request Header Fields Too Large: {0}")]
    HeadTooLarge(&'static str),
    /// The body is not a valid JSON-RPC message (`code`: parse error or invalid request).
    #[error("{message}")]
    InvalidMessage { id: Option<String>, code: i64, message: String },
    /// A stateless-era header disagrees with the body it mirrors.
    #[error("{reason}")]
    HeaderMismatch { id: Option<String>, reason: String },
    /// A handshake-era session id that is not one of ours (or its upstream left the pool).
    #[error("Session not found")]
    SessionNotFound,
    /// The upstream owning the session failed: the client must start a new session.
    #[error("Session not found: its upstream is unavailable; initialize a new session")]
    SessionUpstreamGone,
    #[error("Too Many Requests: {0}")]
    TooManyRequests(String),
    /// No valid bearer token on a protected route (`[route.auth]`): `challenge` is the
    /// `WWW-Authenticate` value (RFC 6750 §3), `label` the metric's reason.
    #[error("Unauthorized: {description}")]
    Unauthorized { challenge: String, description: String, label: &'static str },
    /// A valid token without a scope the route requires.
    #[error("Forbidden: {description}")]
    InsufficientScope { challenge: String, description: String },
    /// The issuer's signing keys are not known yet (never fetched: the issuer was down since
    /// start): a token cannot be checked either way.
    #[error("Service Unavailable: the authorization server's signing keys could not be fetched; try again shortly")]
    KeysUnavailable,

    // The upstreams' doing.
    /// The request came back to the mcp-edge that forwarded it (its own name in `Via`): an
    /// upstream, or a name it resolved to, is the edge itself.
    #[error("Loop Detected: the request came back to this mcp-edge (an upstream of the route is the edge itself)")]
    LoopDetected,
    /// Health checks (or ejections) found no replica healthy, and trying them all the same
    /// failed too (`last`: how the last attempt failed).
    #[error("route {route}: no healthy upstream is available{}", last_error(last))]
    NoHealthyUpstream { route: String, last: Option<String> },
    /// `timed_out`: the last attempt timed out (then a 504, as nginx answers).
    #[error("route {route}: every upstream failed (last error: {last})")]
    EveryUpstreamFailed { route: String, last: String, timed_out: bool },
    /// The upstream answered this status where mcp-edge had to answer itself (e.g. a 5xx
    /// with a stale entry that could not be sent).
    #[error("route {route}: HTTP {status}")]
    UpstreamStatus { route: String, status: u16 },
    #[error("route {route}: timed out connecting to the upstream")]
    ConnectTimedOut { route: String },
    #[error("route {route}: the upstream did not answer in time")]
    UpstreamTimedOut { route: String },
    #[error("route {route}: cannot connect to any upstream ({cause})")]
    CannotConnect { route: String, cause: String },
    #[error("route {route}: upstream failed ({cause})")]
    UpstreamFailed { route: String, cause: String },
    #[error("internal error")]
    Internal,
}

impl EdgeError {
    pub fn bad_request(reason: impl Into<String>) -> EdgeError {
        EdgeError::BadRequest(reason.into())
    }

    /// The HTTP status of the answer.
    pub fn status(&self) -> u16 {
        use EdgeError::*;
        match self {
            BadRequest(_) | InvalidMessage { .. } | HeaderMismatch { .. } | UndecodableBody { .. } => 400,
            Unauthorized { .. } => 401,
            HostNotAllowed { .. } | OriginNotAllowed { .. } | InsufficientScope { .. } => 403,
            NoRoute { .. } | SessionNotFound | SessionUpstreamGone => 404,
            MethodNotAllowed { .. } => 405,
            RequestTimeout(_) => 408,
            BodyTooLarge { .. } | StreamedBodyTooLarge { .. } | DecodedBodyTooLarge { .. } => 413,
            UnsupportedMediaType { .. } | EncodedBody { .. } => 415,
            HeadTooLarge(_) => 431,
            TooManyRequests(_) => 429,
            Internal => 500,
            EveryUpstreamFailed { timed_out: false, .. } | CannotConnect { .. } | UpstreamFailed { .. } => 502,
            NoHealthyUpstream { .. } | KeysUnavailable => 503,
            LoopDetected => 508,
            EveryUpstreamFailed { timed_out: true, .. } | ConnectTimedOut { .. } | UpstreamTimedOut { .. } => 504,
            UpstreamStatus { status, .. } => *status,
        }
    }

    /// The JSON-RPC error code of the answer.
    pub fn code(&self) -> i64 {
        use EdgeError::*;
        match self {
            InvalidMessage { code, .. } => *code,
            HeaderMismatch { .. } => codes::HEADER_MISMATCH,
            SessionNotFound | SessionUpstreamGone => codes::SESSION_NOT_FOUND,
            BadRequest(_)
            | RequestTimeout(_)
            | UnsupportedMediaType { .. }
            | EncodedBody { .. }
            | BodyTooLarge { .. }
            | StreamedBodyTooLarge { .. }
            | DecodedBodyTooLarge { .. }
            | UndecodableBody { .. }
            | HeadTooLarge(_) => codes::INVALID_REQUEST,
            _ => codes::SERVER_ERROR,
        }
    }

    /// The raw JSON-RPC id the error answers, when the body was read far enough to know it.
    pub fn id(&self) -> Option<&str> {
        match self {
            EdgeError::InvalidMessage { id, .. } | EdgeError::HeaderMismatch { id, .. } => id.as_deref(),
            _ => None,
        }
    }

    /// The JSON-RPC error body; `id`: the request's, unless the error knows it.
    pub fn body(&self, id: Option<&str>) -> String {
        jsonrpc::error_body(self.id().or(id), self.code(), &self.to_string())
    }

    /// Headers the answer carries beside the body.
    pub fn extra_headers(&self) -> impl Iterator<Item = (&'static str, &str)> {
        let fixed: &'static [(&'static str, &'static str)] = match self {
            EdgeError::MethodNotAllowed { .. } => &[("allow", "GET, POST, DELETE, OPTIONS")],
            EdgeError::TooManyRequests(_) | EdgeError::KeysUnavailable => &[("retry-after", "1")],
            // RFC 9110 §12.5.3: the codings the server takes in a request.
            EdgeError::EncodedBody { .. } => &[("accept-encoding", "gzip, deflate, br, identity")],
            _ => &[],
        };
        let challenge = match self {
            EdgeError::Unauthorized { challenge, .. } | EdgeError::InsufficientScope { challenge, .. } => {
                Some(("www-authenticate", challenge.as_str()))
            }
            _ => None,
        };
        fixed.iter().copied().chain(challenge)
    }
}

/// How the last attempt failed, when one was made.
fn last_error(last: &Option<String>) -> String {
    last.as_ref().map(|last| format!(" (last error: {last})")).unwrap_or_default()
}

/// The message of [`EdgeError::DecodedBodyTooLarge`].
fn decoded_too_large(coding: &str, compressed: u64, limit: u64, bomb: bool) -> String {
    if bomb {
        format!(
            "request body too large: {compressed} bytes of {coding} decode to more than {limit} bytes, over {} times its compressed size",
            crate::body_coding::MAX_RATIO
        )
    } else {
        format!(
            "request body too large: {compressed} bytes of {coding} decode to more than {limit} bytes (server.max_body)"
        )
    }
}

/// Why a configuration could not be put to work (at start, on reload, in `mcp-edge check`).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{path}: cannot read: {reason}")]
    Unreadable { path: String, reason: String },
    /// Every problem found, one per line, each naming the file (and line where known).
    #[error("{}", .problems.join("\n"))]
    Invalid { problems: Vec<String> },
    #[error("upstream {url:?}: {reason}")]
    Upstream { url: String, reason: String },
    #[error("ca_file {path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error("[server.tls] {0}")]
    Tls(String),
    #[error("admin.token_file {path}: {reason}")]
    AdminToken { path: String, reason: String },
    /// `[cache.shared]`: the message names the key (and may start `line N: `).
    #[error("{0}")]
    SharedTier(String),
    /// `[route.auth]`: its key set could not be read (`value`: the file or URL).
    #[error("[route.auth] {reason}")]
    Auth { value: String, reason: String },
}

impl SetupError {
    /// The problem as `check` prints it: `file:line: message`, the line found from what the
    /// message names (a URL, a path) where the problem was found past the file's parsing.
    pub fn placed(&self, file: &std::path::Path) -> String {
        let source = std::fs::read_to_string(file).unwrap_or_default();
        let file = file.display();
        let (line, message) = match self {
            // Already placed, each problem on its line (or naming the file it could not read).
            SetupError::Invalid { .. } | SetupError::Unreadable { .. } => return self.to_string(),
            SetupError::SharedTier(message) => match message.strip_prefix("line ").and_then(|m| m.split_once(": ")) {
                Some((line, rest)) => (line.parse().ok(), rest.to_string()),
                None => {
                    let value = message.split(' ').nth(1).map(|value| value.trim_end_matches(':'));
                    (value.and_then(|value| line_quoting(&source, value)), message.clone())
                }
            },
            SetupError::Upstream { url: value, .. }
            | SetupError::CaFile { path: value, .. }
            | SetupError::AdminToken { path: value, .. }
            | SetupError::Auth { value, .. } => (line_quoting(&source, value), self.to_string()),
            SetupError::Tls(_) => (line_of(&source, |line| line.trim() == "[server.tls]"), self.to_string()),
        };
        match line {
            Some(line) => format!("{file}:{line}: {message}"),
            None => format!("{file}: {message}"),
        }
    }
}

/// The (1-based) line of `source` holding `value` as a quoted string.
fn line_quoting(source: &str, value: &str) -> Option<usize> {
    let quoted = format!("\"{value}\"");
    line_of(source, |line| line.contains(&quoted))
}

fn line_of(source: &str, wanted: impl Fn(&str) -> bool) -> Option<usize> {
    source.lines().position(wanted).map(|index| index + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route() -> String {
        "docs".to_string()
    }

    #[test]
    fn each_error_knows_its_status_and_code() {
        let cases = [
            (EdgeError::NoRoute { path: "/x".into() }, 404, codes::SERVER_ERROR),
            (EdgeError::MethodNotAllowed { method: "PUT".into() }, 405, codes::SERVER_ERROR),
            (EdgeError::bad_request("invalid Content-Length"), 400, codes::INVALID_REQUEST),
            (EdgeError::RequestTimeout("late".into()), 408, codes::INVALID_REQUEST),
            (EdgeError::HostNotAllowed { host: "evil".into() }, 403, codes::SERVER_ERROR),
            (EdgeError::OriginNotAllowed { origin: "http://evil".into() }, 403, codes::SERVER_ERROR),
            (EdgeError::UnsupportedMediaType { content_type: "text/plain".into() }, 415, codes::INVALID_REQUEST),
            (EdgeError::EncodedBody { coding: "zstd".into() }, 415, codes::INVALID_REQUEST),
            (
                EdgeError::DecodedBodyTooLarge { coding: "gzip", compressed: 1, limit: 5, bomb: true },
                413,
                codes::INVALID_REQUEST,
            ),
            (EdgeError::UndecodableBody { coding: "br", reason: "x".into() }, 400, codes::INVALID_REQUEST),
            (EdgeError::BodyTooLarge { size: 10, limit: 5 }, 413, codes::INVALID_REQUEST),
            (EdgeError::StreamedBodyTooLarge { limit: 5 }, 413, codes::INVALID_REQUEST),
            (EdgeError::HeadTooLarge("big"), 431, codes::INVALID_REQUEST),
            (EdgeError::InvalidMessage { id: None, code: codes::PARSE_ERROR, message: "x".into() }, 400, -32700),
            (EdgeError::HeaderMismatch { id: None, reason: "x".into() }, 400, codes::HEADER_MISMATCH),
            (EdgeError::SessionNotFound, 404, codes::SESSION_NOT_FOUND),
            (EdgeError::SessionUpstreamGone, 404, codes::SESSION_NOT_FOUND),
            (EdgeError::TooManyRequests("x".into()), 429, codes::SERVER_ERROR),
            (
                EdgeError::Unauthorized { challenge: "Bearer".into(), description: "x".into(), label: "missing" },
                401,
                codes::SERVER_ERROR,
            ),
            (
                EdgeError::InsufficientScope { challenge: "Bearer".into(), description: "x".into() },
                403,
                codes::SERVER_ERROR,
            ),
            (EdgeError::KeysUnavailable, 503, codes::SERVER_ERROR),
            (EdgeError::NoHealthyUpstream { route: route(), last: None }, 503, codes::SERVER_ERROR),
            (
                EdgeError::EveryUpstreamFailed { route: route(), last: "x".into(), timed_out: false },
                502,
                codes::SERVER_ERROR,
            ),
            (
                EdgeError::EveryUpstreamFailed { route: route(), last: "x".into(), timed_out: true },
                504,
                codes::SERVER_ERROR,
            ),
            (EdgeError::UpstreamStatus { route: route(), status: 502 }, 502, codes::SERVER_ERROR),
            (EdgeError::ConnectTimedOut { route: route() }, 504, codes::SERVER_ERROR),
            (EdgeError::UpstreamTimedOut { route: route() }, 504, codes::SERVER_ERROR),
            (EdgeError::CannotConnect { route: route(), cause: "x".into() }, 502, codes::SERVER_ERROR),
            (EdgeError::UpstreamFailed { route: route(), cause: "x".into() }, 502, codes::SERVER_ERROR),
            (EdgeError::Internal, 500, codes::SERVER_ERROR),
        ];
        for (error, status, code) in cases {
            assert_eq!((error.status(), error.code()), (status, code), "{error:?}");
        }
    }

    #[test]
    fn bodies_are_json_rpc_errors_with_the_best_known_id() {
        let body: serde_json::Value =
            serde_json::from_str(&EdgeError::NoHealthyUpstream { route: route(), last: None }.body(Some("7"))).unwrap();
        assert_eq!(body["id"], 7);
        assert_eq!(body["error"]["code"], codes::SERVER_ERROR);
        assert_eq!(body["error"]["message"], "route docs: no healthy upstream is available");
        let mismatch = EdgeError::HeaderMismatch { id: Some("\"a\"".into()), reason: "Header mismatch".into() };
        let body: serde_json::Value = serde_json::from_str(&mismatch.body(None)).unwrap();
        assert_eq!(body["id"], "a", "the error's own id when it read one");
        let anonymous: serde_json::Value = serde_json::from_str(&EdgeError::SessionNotFound.body(None)).unwrap();
        assert!(anonymous["id"].is_null());
    }

    #[test]
    fn refusals_that_tell_clients_what_to_do_carry_their_header() {
        let headers = |error: EdgeError| error.extra_headers().map(|(n, v)| (n, v.to_string())).collect::<Vec<_>>();
        assert_eq!(headers(EdgeError::MethodNotAllowed { method: "PUT".into() })[0].0, "allow");
        assert_eq!(headers(EdgeError::TooManyRequests("x".into())), [("retry-after", "1".to_string())]);
        let challenge = "Bearer resource_metadata=\"https://x/.well-known/oauth-protected-resource\"".to_string();
        let unauthorized =
            EdgeError::Unauthorized { challenge: challenge.clone(), description: "d".into(), label: "missing" };
        assert_eq!(headers(unauthorized), [("www-authenticate", challenge)]);
        assert!(headers(EdgeError::Internal).is_empty());
    }
}
