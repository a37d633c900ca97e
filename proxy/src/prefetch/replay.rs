//! The triggering request as a prefetch repeats it: its path and its end-to-end headers (its
//! credentials, identity header, protocol version, session, `Host`), and how a prefetch's own
//! request is written from them.

use bytes::Bytes;
use mcp_edge_policies::prefetch::Kind;

/// Headers a prefetch does not repeat: hop-by-hop ones, framing (it has its own body), the
/// internal marker (it sets its own), `Accept-Encoding` (the prefetcher reads the answer) and
/// `Content-Encoding` (its body is plain, whatever the trigger's was).
const NOT_REPEATED: [&str; 14] = [
    "accept-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "content-encoding",
    "expect",
    // A prefetch is a request of its own, with its own id.
    crate::request_id::HEADER,
    "http2-settings",
    super::KIND_HEADER,
];

/// What a prefetch repeats of the request that triggered it.
#[derive(Debug, Clone)]
pub struct Replay {
    path: String,
    headers: Vec<(String, Bytes)>,
    /// The request's `params._meta` (client info and capabilities, protocol version, trace
    /// context), without its `progressToken`: a prefetch carries what its trigger said of the
    /// client, and asks for no progress.
    meta: Option<serde_json::Map<String, serde_json::Value>>,
    /// An upper bound of what `meta` holds: the length of the body it came from.
    meta_bytes: usize,
}

impl Replay {
    pub fn new<'a>(path: &str, headers: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Replay {
        let headers = headers
            .into_iter()
            .filter(|(name, _)| !NOT_REPEATED.iter().any(|skip| name.eq_ignore_ascii_case(skip)))
            .map(|(name, value)| (name.to_ascii_lowercase(), Bytes::copy_from_slice(value)))
            .collect();
        Replay { path: path.to_string(), headers, meta: None, meta_bytes: 0 }
    }

    /// About what the replay holds in memory: its path, headers (with a slot's overhead each)
    /// and `_meta` (bounded by its body's length).
    pub fn bytes(&self) -> usize {
        let headers: usize = self.headers.iter().map(|(name, value)| name.len() + value.len() + 64).sum();
        self.path.len() + headers + self.meta_bytes
    }

    /// With the `_meta` of the JSON-RPC request `body`.
    pub fn with_meta_of(mut self, body: &[u8]) -> Replay {
        #[derive(serde::Deserialize)]
        struct Request {
            params: Option<Params>,
        }
        #[derive(serde::Deserialize)]
        struct Params {
            #[serde(rename = "_meta")]
            meta: Option<serde_json::Map<String, serde_json::Value>>,
        }
        let meta = serde_json::from_slice::<Request>(body).ok().and_then(|r| r.params?.meta);
        self.meta = meta.map(|mut meta| {
            meta.remove("progressToken");
            meta
        });
        self.meta_bytes = if self.meta.is_some() { body.len() } else { 0 };
        self
    }

    /// The trigger's `_meta` (see the field).
    pub fn meta(&self) -> Option<&serde_json::Map<String, serde_json::Value>> {
        self.meta.as_ref()
    }

    /// From a raw HTTP/1.1 request head (the HTTP/1.1 front's bytes).
    pub fn from_head(head: &[u8]) -> Option<Replay> {
        let mut slots = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Request::new(&mut slots);
        parsed.parse(head).ok()?;
        let path = parsed.path?;
        Some(Replay::new(path, parsed.headers.iter().map(|h| (h.name, h.value))))
    }

    /// From Pingora's parsed request head (the proxy service's).
    /// An HTTP/2 request names its host in its target (`:authority`), not in a `Host`: the
    /// prefetch, written in HTTP/1.1, carries it as one.
    pub fn from_request(request: &pingora::http::RequestHeader) -> Replay {
        let path = request.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let mut replay =
            Replay::new(path, request.headers.iter().map(|(name, value)| (name.as_str(), value.as_bytes())));
        if let Some(authority) = request.uri.authority()
            && replay.header("host").is_none()
        {
            replay.headers.push(("host".into(), Bytes::copy_from_slice(authority.as_str().as_bytes())));
        }
        replay
    }

    /// The repeated value of `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| &v[..])
    }

    /// A prefetch request of `kind` with `body`, its `Mcp-Method` and `Mcp-Name` as `mirror` says.
    pub fn request(&self, kind: Kind, body: &[u8], mirror: Mirror<'_>) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + body.len());
        out.extend_from_slice(b"POST ");
        out.extend_from_slice(self.path.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
        let replaced = |name: &str| !matches!(mirror, Mirror::Keep) && (name == "mcp-method" || name == "mcp-name");
        for (name, value) in self.headers.iter().filter(|(name, _)| !replaced(name)) {
            header(&mut out, name, value);
        }
        if let Mirror::Set { method, name } = mirror {
            header(&mut out, "mcp-method", method.as_bytes());
            if let Some(name) = name {
                header(&mut out, "mcp-name", mcp_edge_policies::headers::encode_header_value(name).as_bytes());
            }
        }
        header(&mut out, super::KIND_HEADER, kind.label().as_bytes());
        header(&mut out, "content-length", itoa::Buffer::new().format(body.len()).as_bytes());
        header(&mut out, "connection", b"close");
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(body);
        out
    }
}

/// A prefetch's `Mcp-Method` and `Mcp-Name` headers.
#[derive(Debug, Clone, Copy)]
pub enum Mirror<'a> {
    /// The trigger's (a refresh repeats the request).
    Keep,
    /// Its own (a stateless-era request of its own).
    Set { method: &'a str, name: Option<&'a str> },
    /// None (a handshake-era request, whose server reads no such headers).
    Drop,
}

fn header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefetch_repeats_credentials_and_session_but_not_framing() {
        let head = b"POST /mcp/x HTTP/1.1\r\nHost: edge\r\nAuthorization: Bearer a\r\nMcp-Session-Id: s1\r\nContent-Length: 99\r\nConnection: keep-alive\r\nMcp-Method: resources/read\r\nMcp-Name: docs://1\r\nX-Mcp-Edge-Prefetch: refresh\r\n\r\n";
        let replay = Replay::from_head(head).unwrap();
        let request =
            replay.request(Kind::Sequence, b"{}", Mirror::Set { method: "resources/read", name: Some("docs://2") });
        let text = String::from_utf8(request).unwrap();
        assert!(text.starts_with("POST /mcp/x HTTP/1.1\r\n"), "{text}");
        for expected in ["host: edge", "authorization: Bearer a", "mcp-session-id: s1", "mcp-name: docs://2"] {
            assert!(text.contains(&format!("{expected}\r\n")), "{expected} in {text}");
        }
        for absent in ["docs://1", "keep-alive", "99", "refresh"] {
            assert!(!text.contains(absent), "{absent} in {text}");
        }
        assert!(text.ends_with("x-mcp-edge-prefetch: sequence\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}"));
        let refresh = String::from_utf8(replay.request(Kind::Refresh, b"{}", Mirror::Keep)).unwrap();
        assert!(refresh.contains("mcp-name: docs://1\r\n"), "a refresh repeats the request: {refresh}");
        let legacy = String::from_utf8(replay.request(Kind::SessionStart, b"{}", Mirror::Drop)).unwrap();
        assert!(!legacy.contains("mcp-name") && !legacy.contains("mcp-method"), "{legacy}");
    }

    #[test]
    fn a_prefetch_of_an_http2_request_names_its_host() {
        let mut request = pingora::http::RequestHeader::build("POST", b"/mcp", None).unwrap();
        request.set_uri("https://edge.example:8443/mcp".parse().unwrap());
        request.insert_header("authorization", "Bearer a").unwrap();
        let replay = Replay::from_request(&request);
        assert_eq!(replay.header("host"), Some(&b"edge.example:8443"[..]));
        // A Host of its own is kept as it is.
        request.insert_header("host", "other").unwrap();
        assert_eq!(Replay::from_request(&request).header("host"), Some(&b"other"[..]));
    }

    #[test]
    fn the_triggers_meta_is_kept_without_its_progress_token() {
        let body = br#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"a","_meta":{"progressToken":7,"io.modelcontextprotocol/clientInfo":{"name":"c"}}}}"#;
        let replay = Replay::new("/mcp", []).with_meta_of(body);
        let meta = replay.meta().unwrap();
        assert!(meta.get("progressToken").is_none());
        assert_eq!(meta["io.modelcontextprotocol/clientInfo"]["name"], "c");
        assert!(Replay::new("/mcp", []).with_meta_of(b"not json").meta().is_none());
    }
}
