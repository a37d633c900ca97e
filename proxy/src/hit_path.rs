//! The hit path: answers cache hits straight off the HTTP/1.1 connection, before Pingora's
//! proxy machinery, and hands every other request to the proxy service untouched.
//!
//! Why: a hit is one read and one write, but going through `pingora-proxy` costs several
//! times what the cache lookup does (its per-request session, module and filter machinery);
//! measured in `benches/`. The hit path reads a request's bytes itself and looks at it only
//! when it has the common shape of a cacheable read: an HTTP/1.1 `POST` with a small
//! `Content-Length` JSON body. It answers only a fresh hit that passes every check the proxy
//! service would make (the shared [`guards`]); anything else, including every error, is handed
//! over to the service with the bytes read so far, so there is one source of truth for
//! forwarding and for errors. HTTP/2 connections go to the service directly.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::{Buf, BufMut, BytesMut};
use mcp_edge_policies::method::Method;
use pingora::apps::{HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::http::date::get_cached_date;
use pingora::protocols::{ALPN, Stream};
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::answer::{self, Outcome};
use crate::error::EdgeError;
use crate::guards;
use crate::handover::Understood;
use crate::known_headers::{KnownHeaders, parse_content_length};
use crate::request_cache::{LookupInput, Prelooked};
use crate::runtime::{Live, Runtime};
use crate::served::Served;
use crate::service::{INSPECT_LIMIT, McpProxy};
use crate::store::{EdgeCache, Found, Stored};

/// How long a kept-alive connection may sit idle between requests (Pingora's default too).
const KEEPALIVE: Duration = Duration::from_secs(60);
/// Request heads larger than this are left to the proxy service (which allows more).
const MAX_HEAD: usize = 16 * 1024;
/// Why a request that trickles in past `server.header_timeout` is refused (408).
const TOO_SLOW: &str = "the request did not arrive in time";
/// Requests with more header lines than this are left to the proxy service.
const MAX_HEADERS: usize = 48;

pub struct EdgeApp {
    proxy: Arc<HttpProxy<McpProxy>>,
    live: Live,
    cache: Arc<EdgeCache>,
}

impl EdgeApp {
    pub fn new(proxy: HttpProxy<McpProxy>, live: Live, cache: Arc<EdgeCache>) -> EdgeApp {
        EdgeApp { proxy: Arc::new(proxy), live, cache }
    }
}

#[async_trait]
impl ServerApp for EdgeApp {
    async fn process_new(self: &Arc<Self>, stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        let _open = crate::metrics::OpenConnection::start();
        if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            return self.proxy.process_new(stream, shutdown).await;
        }
        let mut stream = stream;
        let mut buffer = BytesMut::with_capacity(4096);
        // Our own receiver, so an idle read can also wait for shutdown without a clone per read.
        let mut shutdown_watch = shutdown.clone();
        loop {
            match self.serve_one(&mut stream, &mut buffer, &mut shutdown_watch).await {
                Step::Answered => continue,
                Step::Close => return None,
                Step::HandOver(understood) => {
                    stream = self.hand_over(stream, buffer.split(), understood, shutdown).await?;
                }
            }
        }
    }

    async fn cleanup(&self) {
        self.proxy.cleanup().await;
    }
}

/// What became of one request on the hit path.
enum Step {
    /// Answered from the cache; the connection stays open for the next request.
    Answered,
    /// The connection is done (closed by the client, idle too long, shutting down, or the
    /// client asked to close).
    Close,
    /// The proxy service takes this request (with all the hit path learned of it, if it
    /// passed the checks).
    HandOver(Option<Box<Understood>>),
}

impl EdgeApp {
    async fn serve_one(&self, stream: &mut Stream, buffer: &mut BytesMut, shutdown: &mut ShutdownWatch) -> Step {
        // A request's head (and a body the hit path reads) must arrive within
        // `server.header_timeout` of its first byte, as with nginx's `client_header_timeout`:
        // a client trickling a byte now and then must not hold a connection for ever.
        // The clock is read only when a request takes more than one read (most arrive whole).
        let header_timeout = || Instant::now() + self.live.load().config.server.header_timeout;
        let mut deadline = None;
        // Once the head is complete: the length of the whole request (the head is parsed again
        // only when that much has arrived; usually it all arrives at once and is parsed once).
        let mut awaiting = 0;
        loop {
            if !buffer.is_empty() && buffer.len() >= awaiting {
                let snapshot = self.live.load_full();
                match probe_head(buffer, |path| route_and_identity(&snapshot, path)) {
                    Probe::Complete(head) if buffer.len() >= head.request_len() => {
                        let request_len = head.request_len();
                        let step = self.serve_whole(stream, shutdown, head, &buffer[..request_len], snapshot).await;
                        if matches!(step, Step::Answered) {
                            buffer.advance(request_len);
                        }
                        return step;
                    }
                    Probe::Complete(head) => awaiting = head.request_len(),
                    Probe::Unsuitable => return Step::HandOver(None),
                    Probe::Malformed(reason) => return refuse(stream, EdgeError::bad_request(reason)).await,
                    Probe::Partial if buffer.len() > MAX_HEAD => return Step::HandOver(None),
                    Probe::Partial => {}
                }
            }
            if deadline.is_none() && !buffer.is_empty() {
                deadline = Some(header_timeout());
            }
            match read_more(stream, buffer, shutdown, deadline).await {
                Read::More => {}
                Read::Over => return Step::Close,
                Read::TooSlow => return refuse(stream, EdgeError::RequestTimeout(TOO_SLOW.into())).await,
            }
        }
    }

    /// Answers a request that has arrived whole (`request`: its head and body) from the cache,
    /// or hands it over.
    async fn serve_whole(
        &self,
        stream: &mut Stream,
        shutdown: &ShutdownWatch,
        head: Head<'_>,
        request: &[u8],
        snapshot: Arc<Runtime>,
    ) -> Step {
        let started = Instant::now();
        let _active = crate::metrics::ActiveRequest::start();
        let client =
            || stream.get_socket_digest().and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        let body = &request[head.head_len..];
        let hit = match self.try_hit(&head, body, snapshot, client).await {
            Lookout::Hit(hit) => hit,
            Lookout::Missed(understood) => return Step::HandOver(understood),
        };
        let closing = head.known.connection_close || *shutdown.borrow();
        let compression = &hit.snapshot.config.compression;
        let id = hit.id.as_deref().unwrap_or("null");
        let session = head.known.session_id.text();
        let Some(answer) = answer::render(&hit.entry, id, Outcome::Hit, compression, hit.accepts_gzip, session) else {
            return Step::HandOver(None);
        };
        let response_head = encode_head(&answer, closing);
        let [first, entry_bytes, last] = answer.body.parts();
        if write_parts(stream, [&response_head, first, entry_bytes, last]).await.is_err()
            || stream.flush().await.is_err()
        {
            return Step::Close;
        }
        Served {
            route: &hit.snapshot.routes[hit.route].config.name,
            http_method: "POST",
            mcp_method: Some(hit.mcp_method),
            status: 200,
            cache: Outcome::Hit.as_str(),
            upstream: None,
            started,
            error: None,
        }
        .record();
        crate::cpu::yield_to_disk_reads(self.cache.disk_reads());
        if closing { Step::Close } else { Step::Answered }
    }

    /// Answers the request (`head`, then `body`) from the cache if it is a fresh hit that
    /// passes every check the proxy service makes.
    async fn try_hit(
        &self,
        head: &Head<'_>,
        body: &[u8],
        snapshot: Arc<Runtime>,
        client: impl FnOnce() -> Option<std::net::IpAddr>,
    ) -> Lookout {
        let Some(route_index) = head.route else { return Lookout::Missed(None) };
        let route = &snapshot.routes[route_index];
        let known = &head.known;
        let stateless = guards::is_stateless(known);
        // Any refusal is left to the service, which answers it.
        let checked = guards::check_request_head(&snapshot.config.server, head.path, None, known)
            .and_then(|_| guards::pin_session(route, known, stateless))
            .and_then(|pinned| {
                guards::check_post(known, snapshot.config.server.max_body)?;
                Ok((pinned, guards::understand(body, known, stateless)?))
            });
        let Ok((pinned, message)) = checked else { return Lookout::Missed(None) };
        let policy = &route.config.policy;
        let caller = guards::caller(known, stateless);
        let input = LookupInput {
            route: &route.config.name,
            policy,
            readonly: &route.readonly,
            message: &message,
            caller: &caller,
        };
        let lookup = input.lookup();
        let accepts_gzip =
            snapshot.config.compression.gzip && crate::compress::accepts_gzip(known.accept_encoding.text());
        let found = match &lookup {
            Some(lookup) => Some(self.cache.lookup(&route.config.name, lookup, policy.stale_if_error).await),
            None => None,
        };
        let found = match found {
            Some(Found::Fresh(entry)) => {
                // A hit counts against its client's rate too (a miss is counted by the
                // service); one past it goes to the service, which counts it again and refuses it.
                if route.limits.limits_rate() && route.limits.admit(client()).is_err() {
                    return Lookout::Missed(None);
                }
                return Lookout::Hit(Hit {
                    entry,
                    id: message.id,
                    accepts_gzip,
                    mcp_method: Method::label(message.method.as_deref()),
                    route: route_index,
                    snapshot,
                });
            }
            other => other,
        };
        let edge_session = if stateless { None } else { known.session_id.text().map(str::to_string) };
        Lookout::Missed(Some(Box::new(Understood {
            snapshot,
            route: route_index,
            message,
            stateless,
            pinned,
            edge_session,
            caller,
            accepts_gzip,
            prelooked: lookup.zip(found).map(|(lookup, found)| Prelooked { lookup, found }),
        })))
    }

    /// Gives one request to the proxy service: a Pingora HTTP/1 session whose parser starts
    /// with the bytes read so far. Returns the connection if it may serve another request.
    async fn hand_over(
        &self,
        stream: Stream,
        read_so_far: BytesMut,
        understood: Option<Box<Understood>>,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let mut session = ServerSession::new_http1(stream);
        session.set_keepalive(if *shutdown.borrow() { None } else { Some(KEEPALIVE.as_secs()) });
        if !read_so_far.is_empty() {
            session.set_pipelined_prefix(read_so_far);
        }
        if let Some(understood) = understood {
            // Delivered to `McpProxy::on_connection_reuse` for this very request.
            session.set_connection_user_context(Some(understood));
        }
        // The service never enables pipelining nor persists a connection context, so the
        // settings Pingora hands back carry nothing the next request needs.
        let (stream, _settings) = self.proxy.process_new_http(session, shutdown).await?.consume();
        Some(stream)
    }
}

enum Lookout {
    Hit(Hit),
    /// Not answered here; `Some` when the request passed the checks (see `handover`), `None`
    /// when the service must check it again (and refuse it).
    Missed(Option<Box<Understood>>),
}

/// A fresh hit and what its answer is made of (rendered when written, so the answer can
/// borrow the entry's bytes).
struct Hit {
    entry: Stored,
    /// The request's raw JSON-RPC id.
    id: Option<String>,
    accepts_gzip: bool,
    mcp_method: &'static str,
    /// The index of the request's route in `snapshot`.
    route: usize,
    snapshot: Arc<Runtime>,
}

/// What the hit path makes of what has arrived of a request. (Returned once per request, on
/// the stack: boxing the large variant would allocate per request instead.)
#[allow(clippy::large_enum_variant)]
enum Probe<'b> {
    Complete(Head<'b>),
    Partial,
    /// Not the shape the hit path answers: the proxy service takes it.
    Unsuitable,
    /// Not a valid HTTP/1.1 request head: answered here with a JSON-RPC error (Pingora's own
    /// parser would answer a bare 400), and the connection closed.
    Malformed(&'static str),
}

/// A complete request head the hit path may take, read once (it borrows the request's bytes).
struct Head<'b> {
    head_len: usize,
    body_len: usize,
    /// The target's path (without its query).
    path: &'b str,
    /// The route serving `path`, if any.
    route: Option<usize>,
    known: KnownHeaders<'b>,
}

impl Head<'_> {
    fn request_len(&self) -> usize {
        self.head_len + self.body_len
    }
}

/// The route serving `path` and its identity header (none without a route).
fn route_and_identity<'r>(snapshot: &'r Runtime, path: &str) -> (Option<usize>, &'r str) {
    match snapshot.route_for(path) {
        Some(index) => (Some(index), snapshot.routes[index].config.policy.identity_header.as_str()),
        None => (None, ""),
    }
}

/// Parses what has arrived of a request head and decides whether the hit path may take it:
/// HTTP/1.1 `POST` to an origin-form target, one `Host`, one `Content-Length` small enough to
/// inspect, no `Transfer-Encoding`, `Expect` or `Upgrade`. `route_of` names the route of a
/// path and its identity header.
fn probe_head<'b, 'r>(buffer: &'b [u8], route_of: impl FnOnce(&str) -> (Option<usize>, &'r str)) -> Probe<'b> {
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
    let body_len = known.content_length.text().and_then(parse_content_length);
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

/// Answers a request the hit path refuses outright (a malformed head, too slow to arrive) with
/// a JSON-RPC error, and closes the connection: what follows cannot be trusted to be framed.
async fn refuse(stream: &mut Stream, refused: EdgeError) -> Step {
    let status = refused.status();
    let body = refused.body(None);
    let phrase = http::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("Error");
    let head = format!(
        "HTTP/1.1 {status} {phrase}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nx-cache: BYPASS\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = write_parts(stream, [head.as_bytes(), body.as_bytes(), &[], &[]]).await;
    let _ = stream.flush().await;
    Served {
        route: "-",
        http_method: "-",
        mcp_method: None,
        status,
        cache: Outcome::Bypass.as_str(),
        upstream: None,
        started: Instant::now(),
        error: Some(refused.to_string()),
    }
    .record();
    Step::Close
}

/// What reading more of a request came to.
enum Read {
    More,
    /// The connection is over: closed, failed, idle past the keep-alive timeout, or the server
    /// is shutting down while the connection is idle.
    Over,
    /// The request has been arriving for longer than its deadline.
    TooSlow,
}

/// Reads more of the request; `deadline`: when the request under way must have arrived.
async fn read_more(
    stream: &mut Stream,
    buffer: &mut BytesMut,
    shutdown: &mut ShutdownWatch,
    deadline: Option<Instant>,
) -> Read {
    buffer.reserve(4096);
    let idle = buffer.is_empty();
    let limit = deadline.map_or(KEEPALIVE, |d| d.saturating_duration_since(Instant::now()));
    let read = tokio::time::timeout(limit, stream.read_buf(buffer));
    tokio::select! {
        biased;
        result = read => match result {
            Ok(Ok(n)) if n > 0 => Read::More,
            Err(_) if !idle => Read::TooSlow,
            _ => Read::Over,
        },
        _ = shutdown.wait_for(|stopping| *stopping), if idle => Read::Over,
    }
}

/// The HTTP/1.1 head of the response for a cached answer.
fn encode_head(answer: &answer::CachedAnswer<'_>, closing: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.put_slice(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: ");
    out.put_slice(itoa::Buffer::new().format(answer.body.len()).as_bytes());
    for (name, value) in answer.headers() {
        out.put_slice(b"\r\n");
        out.put_slice(name.as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
    }
    out.put_slice(b"\r\ndate: ");
    out.put_slice(get_cached_date().as_bytes());
    out.put_slice(if closing { b"\r\nconnection: close\r\n\r\n" } else { b"\r\nconnection: keep-alive\r\n\r\n" });
    out
}

/// Writes `parts` one after the other as one vectored write: the stream's write buffer gathers
/// a small answer into one send, and a large one goes out with `writev`, uncopied.
async fn write_parts(stream: &mut Stream, parts: [&[u8]; 4]) -> std::io::Result<()> {
    let mut slices = parts.map(std::io::IoSlice::new);
    let mut remaining = &mut slices[..];
    while !remaining.is_empty() {
        let written = stream.write_vectored(remaining).await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        std::io::IoSlice::advance_slices(&mut remaining, written);
    }
    Ok(())
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

    fn entry(result: &[u8]) -> Vec<u8> {
        mcp_edge_policies::cache::Entry {
            fetched_at_ms: 0,
            expires_at_ms: u64::MAX,
            restate_ttl: false,
            result,
            deflated: None,
        }
        .encode()
    }

    #[test]
    fn response_is_framed_once() {
        let stored = entry(br#"{"x":1}"#);
        let compression = mcp_edge_policies::config::CompressionConfig { gzip: false, min_size: 0, sse: false };
        let answer = answer::render(&stored, "7", Outcome::Hit, &compression, false, Some("s1")).unwrap();
        let mut text = encode_head(&answer, true);
        answer.body.parts().iter().for_each(|part| text.extend_from_slice(part));
        let text = String::from_utf8(text).unwrap();
        let body = r#"{"jsonrpc":"2.0","id":7,"result":{"x":1}}"#;
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nx-cache: HIT\r\nmcp-session-id: s1\r\n",
            body.len()
        );
        assert!(text.starts_with(&head), "{text}");
        assert!(text.ends_with(&format!("\r\nconnection: close\r\n\r\n{body}")), "{text}");
    }

    #[tokio::test]
    async fn parts_larger_than_a_socket_takes_at_once_are_written_whole() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        let mut client = client.unwrap();
        let mut server: Stream = Box::new(pingora::protocols::l4::stream::Stream::from(accepted.unwrap().0));
        let parts: Vec<Vec<u8>> = (0..4u8).map(|i| vec![b'a' + i; 1_500_000 + i as usize]).collect();
        let expected = parts.concat();
        let reader = tokio::spawn(async move {
            let mut received = Vec::new();
            client.read_to_end(&mut received).await.unwrap();
            received
        });
        write_parts(&mut server, [&parts[0], &parts[1], &parts[2], &parts[3]]).await.unwrap();
        server.flush().await.unwrap();
        drop(server);
        assert!(reader.await.unwrap() == expected, "every byte, in order");
    }
}
