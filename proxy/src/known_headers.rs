//! The request headers mcp-edge reads, found in one pass over a request's head.
//!
//! Every request passes the same checks in the intake, whichever front read it: HTTP/1.1
//! (headers as `httparse` parsed them) or HTTP/2 (Pingora's `HeaderMap`). Both read the head
//! once into
//! [`KnownHeaders`], which also notes what the checks need about repeats and framing, so no
//! check scans the headers again (a hit used to scan them a dozen times).

/// Headers that decide who a request is, what it asks and how it is framed. Sent twice, the
/// proxy would read one value and the upstream perhaps the other: such a request is refused.
/// The route's identity header is one too.
#[derive(Clone, Copy)]
enum Singleton {
    Host,
    ContentType,
    SessionId,
    ProtocolVersion,
    Method,
    Name,
    Origin,
}

/// One header's value: absent, text (visible ASCII), or bytes that are not text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Value<'a> {
    #[default]
    Absent,
    Text(&'a str),
    Opaque(&'a [u8]),
}

impl<'a> Value<'a> {
    fn of(bytes: &'a [u8]) -> Value<'a> {
        let visible = |b: u8| b == b'\t' || (b' '..=b'~').contains(&b);
        // Without an early exit the loop runs on whole vectors (values are short and visible).
        match bytes.iter().fold(true, |all, &b| all & visible(b)) {
            // Visible ASCII is UTF-8.
            true => Value::Text(std::str::from_utf8(bytes).unwrap_or_default()),
            false => Value::Opaque(bytes),
        }
    }

    /// The value as text; `None` when absent or not text.
    pub fn text(self) -> Option<&'a str> {
        match self {
            Value::Text(text) => Some(text),
            _ => None,
        }
    }

    pub fn bytes(self) -> Option<&'a [u8]> {
        match self {
            Value::Absent => None,
            Value::Text(text) => Some(text.as_bytes()),
            Value::Opaque(bytes) => Some(bytes),
        }
    }

    pub fn is_present(self) -> bool {
        self != Value::Absent
    }

    /// This value if present, else `bytes` read as a value (the first of repeated lines wins).
    fn or(self, bytes: &'a [u8]) -> Value<'a> {
        match self {
            Value::Absent => Value::of(bytes),
            present => present,
        }
    }
}

/// What one pass over a request's headers found.
#[derive(Debug, Default)]
pub struct KnownHeaders<'a> {
    pub host: Value<'a>,
    pub content_type: Value<'a>,
    /// The first `Content-Length` line's length, if it is one (digits only).
    pub content_length: Option<u64>,
    pub session_id: Value<'a>,
    pub protocol_version: Value<'a>,
    pub method: Value<'a>,
    pub name: Value<'a>,
    pub origin: Value<'a>,
    pub accept_encoding: Value<'a>,
    /// The body's `Content-Encoding`, unless it says `identity`.
    pub content_encoding: Value<'a>,
    /// A second `Content-Encoding` line naming a coding: codings stacked (never decoded).
    pub content_encoding_stacked: bool,
    /// The route's identity header (e.g. `Authorization`).
    pub identity: Value<'a>,
    /// `X-Request-ID` (see `request_id`).
    pub request_id: Value<'a>,
    /// W3C `traceparent` (read only while spans are exported, see `spans`; see
    /// [`KnownHeaders::trace_parent`]).
    pub traceparent: Value<'a>,
    pub traceparent_lines: u8,
    /// `x-mcp-edge-prefetch`: the kind of an internal prefetch (trusted only on the proxy's own
    /// in-process connections, see `prefetch`).
    pub prefetch: Value<'a>,
    /// A `Connection` line names `close`.
    pub connection_close: bool,
    /// A `Connection` line names `keep-alive` (what keeps an HTTP/1.0 connection open).
    pub connection_keep_alive: bool,
    /// The first singleton header (above) that appeared twice, as the client spelled it.
    pub repeated: Option<&'a str>,
    /// A `Connection` line names a singleton header (or the identity header): a proxy drops
    /// what `Connection` names, so the upstream would not see what the request was keyed on.
    pub connection_names_singleton: Option<&'a str>,
    /// How the body is framed (and how many `Host` lines: HTTP/1.1 wants exactly one).
    pub host_lines: usize,
    pub content_length_lines: usize,
    /// A `Content-Length` that is not digits, or two that disagree.
    pub invalid_content_length: bool,
    pub transfer_encoding: bool,
    /// `Expect: 100-continue`: the client sends its body once told to.
    pub expects_continue: bool,
    /// `Upgrade`: the client asks for another protocol on this connection (never granted: it is
    /// not forwarded).
    pub upgrade: bool,
}

impl<'a> KnownHeaders<'a> {
    /// Reads `headers` (name, value) in one pass; `identity_header` is the route's.
    pub fn read(headers: impl IntoIterator<Item = (&'a str, &'a [u8])>, identity_header: &str) -> KnownHeaders<'a> {
        let mut known = KnownHeaders::default();
        // A bit per singleton seen: the identity header's, then one per `Singleton`.
        let mut seen = 0u16;
        let mut note_singleton = |known: &mut KnownHeaders<'a>, name: &'a str, bit: u16| {
            if seen & bit != 0 && known.repeated.is_none() {
                known.repeated = Some(name);
            }
            seen |= bit;
        };
        for (name, value) in headers {
            let is = |wanted: &str| name.len() == wanted.len() && name.eq_ignore_ascii_case(wanted);
            if !identity_header.is_empty() && is(identity_header) {
                note_singleton(&mut known, name, 1);
                known.identity = known.identity.or(value);
            }
            let (slot, singleton) = match name.len() {
                4 if is("host") => {
                    known.host_lines += 1;
                    (&mut known.host, Singleton::Host)
                }
                6 if is("origin") => (&mut known.origin, Singleton::Origin),
                6 if is("expect") => {
                    known.expects_continue |= value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
                    continue;
                }
                7 if is("upgrade") => {
                    known.upgrade = true;
                    continue;
                }
                8 if is("mcp-name") => (&mut known.name, Singleton::Name),
                10 if is("mcp-method") => (&mut known.method, Singleton::Method),
                10 if is("connection") => {
                    known.connection_close |= names_close(value);
                    known.connection_keep_alive |= names(value, b"keep-alive");
                    if known.connection_names_singleton.is_none() {
                        known.connection_names_singleton = named_singleton(value, identity_header);
                    }
                    continue;
                }
                11 if is("traceparent") => {
                    known.traceparent_lines = known.traceparent_lines.saturating_add(1);
                    known.traceparent = known.traceparent.or(value);
                    continue;
                }
                12 if is("content-type") => (&mut known.content_type, Singleton::ContentType),
                12 if is(crate::request_id::HEADER) => {
                    known.request_id = known.request_id.or(value);
                    continue;
                }
                14 if is("content-length") => {
                    known.read_content_length(value);
                    continue;
                }
                14 if is("mcp-session-id") => (&mut known.session_id, Singleton::SessionId),
                15 if is("accept-encoding") => {
                    known.accept_encoding = known.accept_encoding.or(value);
                    continue;
                }
                16 if is("content-encoding") => {
                    if !value.trim_ascii().eq_ignore_ascii_case(b"identity") {
                        known.content_encoding_stacked |= known.content_encoding.is_present();
                        known.content_encoding = known.content_encoding.or(value);
                    }
                    continue;
                }
                17 if is("transfer-encoding") => {
                    known.transfer_encoding = true;
                    continue;
                }
                19 if is(crate::prefetch::KIND_HEADER) => {
                    known.prefetch = known.prefetch.or(value);
                    continue;
                }
                20 if is("mcp-protocol-version") => (&mut known.protocol_version, Singleton::ProtocolVersion),
                _ => continue,
            };
            *slot = slot.or(value);
            note_singleton(&mut known, name, 2 << singleton as u16);
        }
        known
    }

    /// The `traceparent` to continue: none if sent twice (W3C: then a new trace starts).
    pub fn trace_parent(&self) -> Option<&'a [u8]> {
        self.traceparent.bytes().filter(|_| self.traceparent_lines == 1)
    }

    /// One `Content-Length` line: the first is kept, every one must be digits and agree with it.
    fn read_content_length(&mut self, value: &[u8]) {
        let length = std::str::from_utf8(value).ok().and_then(parse_content_length);
        if self.content_length_lines == 0 {
            self.content_length = length;
        }
        self.content_length_lines += 1;
        self.invalid_content_length |= length.is_none() || length != self.content_length;
    }

    /// [`read`](Self::read) over a parsed `HeaderMap` (Pingora's request head).
    pub fn from_map(map: &'a http::HeaderMap, identity_header: &str) -> KnownHeaders<'a> {
        KnownHeaders::read(map.iter().map(|(name, value)| (name.as_str(), value.as_bytes())), identity_header)
    }

    /// [`read`](Self::read) over `httparse`'s headers (the HTTP/1.1 front's); borrows only the request's
    /// bytes, not the parser's header slots.
    pub fn from_parsed(headers: &[httparse::Header<'a>], identity_header: &str) -> KnownHeaders<'a> {
        KnownHeaders::read(headers.iter().map(|h| (h.name, h.value)), identity_header)
    }
}

/// A `Content-Length` value: digits only (RFC 9110), no sign, no spaces inside.
pub fn parse_content_length(value: &str) -> Option<u64> {
    let digits = value.trim_matches([' ', '\t']);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The first token of a `Connection` value that names a singleton header or the identity
/// header, if one does.
fn named_singleton<'a>(value: &'a [u8], identity_header: &str) -> Option<&'a str> {
    const SINGLETONS: [&str; 7] =
        ["host", "content-type", "mcp-session-id", "mcp-protocol-version", "mcp-method", "mcp-name", "origin"];
    let tokens = value.split(|&b| b == b',').map(<[u8]>::trim_ascii);
    tokens.filter_map(|token| std::str::from_utf8(token).ok()).find(|token| {
        SINGLETONS.iter().any(|s| token.eq_ignore_ascii_case(s))
            || (!identity_header.is_empty() && token.eq_ignore_ascii_case(identity_header))
    })
}

/// Whether a `Connection` value lists the `close` token.
fn names_close(value: &[u8]) -> bool {
    names(value, b"close")
}

/// Whether a `Connection` value names `option` (its tokens are case-insensitive).
fn names(value: &[u8], option: &[u8]) -> bool {
    value.split(|&b| b == b',').any(|token| token.trim_ascii().eq_ignore_ascii_case(option))
}

/// Names looked up or set on every forwarded request, parsed once here: a name given as text
/// is parsed (and checked) again on every use.
pub const MCP_SESSION_ID: http::HeaderName = http::HeaderName::from_static("mcp-session-id");
pub const X_FORWARDED_FOR: http::HeaderName = http::HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_HOST: http::HeaderName = http::HeaderName::from_static("x-forwarded-host");
pub const X_FORWARDED_PROTO: http::HeaderName = http::HeaderName::from_static("x-forwarded-proto");
pub const X_CACHE: http::HeaderName = http::HeaderName::from_static("x-cache");
pub const X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static(crate::request_id::HEADER);

#[cfg(test)]
mod tests {
    use super::*;

    fn read<'a>(pairs: &'a [(&'a str, &'a str)]) -> KnownHeaders<'a> {
        KnownHeaders::read(pairs.iter().map(|(n, v)| (*n, v.as_bytes())), "authorization")
    }

    #[test]
    fn finds_each_known_header_whatever_its_case() {
        let pairs = [
            ("Host", "localhost:8080"),
            ("CONTENT-TYPE", "application/json"),
            ("Mcp-Session-Id", "s1"),
            ("MCP-Protocol-Version", "2026-07-28"),
            ("Mcp-Method", "resources/read"),
            ("Mcp-Name", "a://b"),
            ("Origin", "http://localhost:8080"),
            ("Accept-Encoding", "gzip"),
            ("Authorization", "Bearer t"),
            ("Content-Length", "12"),
            ("X-Other", "x"),
        ];
        let known = read(&pairs);
        let texts = [
            known.host,
            known.content_type,
            known.session_id,
            known.protocol_version,
            known.method,
            known.name,
            known.origin,
            known.accept_encoding,
            known.identity,
        ]
        .map(|value| value.text().unwrap());
        let expected: Vec<&str> = pairs[..9].iter().map(|(_, value)| *value).collect();
        assert_eq!(texts.to_vec(), expected);
        assert_eq!((known.content_length, known.content_length_lines), (Some(12), 1));
        assert_eq!(known.repeated, None);
        assert!(!known.connection_close && !known.transfer_encoding && !known.expects_continue && !known.upgrade);
    }

    #[test]
    fn notes_the_first_repeated_singleton() {
        assert_eq!(read(&[("authorization", "a"), ("Authorization", "b")]).repeated, Some("Authorization"));
        assert_eq!(read(&[("mcp-session-id", "a"), ("mcp-session-id", "a")]).repeated, Some("mcp-session-id"));
        assert_eq!(read(&[("host", "a"), ("HOST", "a"), ("origin", "o"), ("origin", "o")]).repeated, Some("HOST"));
        let twice_but_not_singletons = read(&[("authorization", "a"), ("accept", "x"), ("accept", "y")]);
        assert_eq!(twice_but_not_singletons.repeated, None);
    }

    #[test]
    fn notes_a_connection_header_naming_a_singleton() {
        let named = |value: &'static str| {
            KnownHeaders::read([("connection", value.as_bytes())], "cookie").connection_names_singleton
        };
        assert_eq!(named("keep-alive, Cookie"), Some("Cookie"));
        assert_eq!(named("close,mcp-method"), Some("mcp-method"));
        assert_eq!(named(" Host "), Some("Host"));
        assert_eq!(named("keep-alive, close, te"), None);
        assert_eq!(named("authorization"), None, "not the identity header on this route");
        assert_eq!(read(&[("connection", "Authorization")]).connection_names_singleton, Some("Authorization"));
    }

    #[test]
    fn values_that_are_not_visible_ascii_are_not_text() {
        let pairs = [("host", "caf\u{e9}"), ("origin", "a\u{7f}")];
        let known = read(&pairs);
        assert_eq!(known.host.text(), None);
        assert!(known.host.is_present(), "present, though not text");
        assert_eq!(known.host.bytes(), Some("caf\u{e9}".as_bytes()));
        assert_eq!(known.origin.text(), None);
        assert_eq!(read(&[("host", "a\tb")]).host.text(), Some("a\tb"));
    }

    #[test]
    fn framing_facts() {
        let known = read(&[("content-length", "2"), ("Content-Length", "02")]);
        assert_eq!((known.content_length_lines, known.invalid_content_length), (2, false));
        assert!(read(&[("content-length", "2"), ("content-length", "3")]).invalid_content_length);
        assert!(read(&[("content-length", "+2")]).invalid_content_length);
        assert!(read(&[("content-length", "2"), ("content-length", "x")]).invalid_content_length);
        assert!(read(&[("transfer-encoding", "chunked")]).transfer_encoding);
        assert!(read(&[("expect", "100-Continue")]).expects_continue);
        assert!(!read(&[("expect", "something")]).expects_continue);
        assert!(read(&[("upgrade", "h2c")]).upgrade);
        assert!(read(&[("connection", "TE, Close")]).connection_close);
        assert!(!read(&[("connection", "keep-alive")]).connection_close);
    }

    #[test]
    fn a_header_map_reads_alike() {
        let mut map = http::HeaderMap::new();
        map.insert("host", "localhost".parse().unwrap());
        map.append("authorization", "a".parse().unwrap());
        map.append("authorization", "b".parse().unwrap());
        let known = KnownHeaders::from_map(&map, "authorization");
        assert_eq!((known.host.text(), known.identity.text()), (Some("localhost"), Some("a")));
        assert_eq!(known.repeated, Some("authorization"));
    }
}
