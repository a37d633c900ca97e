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
use std::time::Instant;

use async_trait::async_trait;
use bytes::{Buf, BytesMut};
use mcp_edge_policies::cache::Caller;
use mcp_edge_policies::method::Method;
use mcp_edge_policies::prefetch::Kind;
use pingora::apps::{HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::{ALPN, Stream};
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use tokio::io::AsyncWriteExt;

use crate::answer::{self, Outcome};
use crate::error::EdgeError;
use crate::guards;
use crate::handover::Understood;
use crate::prefetch::{Prefetcher, Replay};
use crate::request_cache::{LookupInput, Prelooked};
use crate::runtime::{Live, Runtime};
use crate::served::Served;
use crate::service::McpProxy;

mod head;
mod pipelined;
mod wire;

use crate::store::{EdgeCache, Found, Life, Stored};
use head::{Head, Probe, probe_head, route_and_identity};
use pipelined::ReadAhead;
use wire::{IdleTimer, KEEPALIVE, Read, ShutdownSignal, encode_head, read_more, write_parts};

/// Why a request that trickles in past `server.header_timeout` is refused (408).
const TOO_SLOW: &str = "the request did not arrive in time";

/// The app every client connection (and every prefetch, on its in-process connection) is
/// served by. Cloned for the prefetcher, which sends its requests to it.
#[derive(Clone)]
pub struct EdgeApp {
    proxy: Arc<HttpProxy<McpProxy>>,
    live: Live,
    cache: Arc<EdgeCache>,
    prefetch: Arc<Prefetcher>,
}

impl EdgeApp {
    pub fn new(proxy: HttpProxy<McpProxy>, live: Live, cache: Arc<EdgeCache>, prefetch: Arc<Prefetcher>) -> EdgeApp {
        EdgeApp { proxy: Arc::new(proxy), live, cache, prefetch }
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
        let mut shutdown_signal = ShutdownSignal::new(shutdown.clone());
        let mut idle_timer = IdleTimer::new(KEEPALIVE);
        loop {
            match self.serve_one(&mut stream, &mut buffer, &mut shutdown_signal, &mut idle_timer).await {
                Step::Answered => continue,
                Step::Close => return None,
                Step::HandOver { understood, request_len } => {
                    // The request alone when its end is known, else all read so far; what
                    // follows it comes back here after it, with what Pingora reads meanwhile
                    // (`pipelined`).
                    let handed = match request_len {
                        Some(len) => buffer.split_to(len),
                        None => buffer.split(),
                    };
                    stream = self.hand_over(stream, handed, understood, &mut buffer, shutdown).await?;
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
    /// passed the checks); `request_len`: where it ends in the buffer, when known.
    HandOver { understood: Option<Box<Understood>>, request_len: Option<usize> },
}

impl EdgeApp {
    async fn serve_one(
        &self,
        stream: &mut Stream,
        buffer: &mut BytesMut,
        shutdown: &mut ShutdownSignal,
        idle_timer: &mut IdleTimer,
    ) -> Step {
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
                    Probe::Unsuitable => return Step::HandOver { understood: None, request_len: None },
                    Probe::Refused(refused) => return refuse(stream, refused).await,
                    Probe::Partial => {}
                }
            }
            if deadline.is_none() && !buffer.is_empty() {
                deadline = Some(header_timeout());
            }
            match read_more(stream, buffer, shutdown, idle_timer, deadline).await {
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
        shutdown: &ShutdownSignal,
        head: Head<'_>,
        request: &[u8],
        snapshot: Arc<Runtime>,
    ) -> Step {
        let started = Instant::now();
        let _active = crate::metrics::ActiveRequest::start();
        let client =
            || stream.get_socket_digest().and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        let body = &request[head.head_len..];
        let internal = crate::prefetch::is_internal(stream);
        let hit = match self.try_hit(&head, body, snapshot, client, internal).await {
            Lookout::Hit(hit) => hit,
            Lookout::Missed(understood) => return Step::HandOver { understood, request_len: Some(request.len()) },
        };
        let closing = head.known.connection_close || shutdown.has_begun();
        let compression = &hit.snapshot.config.compression;
        let id = hit.id.as_deref().unwrap_or("null");
        let session = head.known.session_id.text();
        let Some(answer) = answer::render(&hit.entry, id, Outcome::Hit, compression, hit.accepts_gzip, session) else {
            return Step::HandOver { understood: None, request_len: Some(request.len()) };
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
            tier: Some(hit.entry.tier()),
            upstream: None,
            started,
            error: None,
        }
        .record();
        self.after_hit(&hit, request, head.head_len);
        crate::cpu::yield_to_disk_reads(self.cache.disk_reads());
        if closing { Step::Close } else { Step::Answered }
    }

    /// Tells the prefetcher about a hit once it is answered (see `prefetch`): a client's read
    /// is learned, and the hit may use a prefetched entry or refresh a nearly expired one.
    fn after_hit(&self, hit: &Hit, request: &[u8], head_len: usize) {
        let Some(prefetching) = &hit.prefetching else { return };
        let route = &hit.snapshot.routes[hit.route];
        let (head, body) = request.split_at(head_len);
        let client = prefetching.kind.is_none();
        if client
            && let Some(uri) = &prefetching.read
            && let Some(context) = self.prefetch.context(route, &prefetching.caller)
        {
            let replay = || Replay::from_head(head).map(|replay| replay.with_meta_of(body));
            self.prefetch.client_read(route, context, uri, replay);
        }
        // Never a tool call again: a prefetch calls no tool, whatever the route caches.
        let refreshable = hit.mcp_method != Method::ToolsCall.as_str();
        let again = || {
            let replay = Replay::from_head(head).filter(|_| refreshable)?;
            Some((replay, bytes::Bytes::copy_from_slice(body)))
        };
        self.prefetch.hit(route, &prefetching.life, client, again);
    }

    /// Answers the request (`head`, then `body`) from the cache if it is a fresh hit that
    /// passes every check the proxy service makes.
    async fn try_hit(
        &self,
        head: &Head<'_>,
        body: &[u8],
        snapshot: Arc<Runtime>,
        client: impl FnOnce() -> Option<std::net::IpAddr>,
        internal: bool,
    ) -> Lookout {
        let Some(route_index) = head.route else { return Lookout::Missed(None) };
        let route = &snapshot.routes[route_index];
        let known = &head.known;
        // The kind of a prefetch, on the prefetcher's own connections only.
        let prefetch = if internal { known.prefetch.text().and_then(Kind::parse) } else { None };
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
        let caller = guards::caller(known, stateless, &policy.identity_header);
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
            // A refresh replaces the entry, whatever the cache holds.
            Some(_) if prefetch.is_some_and(Kind::bypasses_cache) => Some(Found::Nothing),
            // A caller the upstream would refuse is its to answer (see `live_sessions`).
            Some(_) if !caller.may_take_hits(route.sessions.known_sessionless()) => Some(Found::Nothing),
            Some(lookup) => {
                Some(self.cache.lookup(&route.config.name, lookup, policy.stale_if_error, policy.max_ttl).await)
            }
            None => None,
        };
        let found = match found {
            Some(Found::Fresh(fresh)) => {
                // A hit counts against its client's rate too (a miss is counted by the
                // service); one past it goes to the service, which counts it again and refuses it.
                if route.limits.limits_rate() && route.limits.admit(client()).is_err() {
                    return Lookout::Missed(None);
                }
                let mcp_method = Method::label(message.method.as_deref());
                if mcp_method == Method::ToolsList.as_str() {
                    route.readonly.learn_from_hit(&fresh.stored, &route.config.name, &policy.cache_tools);
                }
                // What prefetching needs of the hit, only on routes that prefetch.
                let prefetching = route.config.prefetch.enabled.then(|| {
                    let read = (mcp_method == Method::ResourcesRead.as_str()).then_some(message.params.uri).flatten();
                    Box::new(HitPrefetching { life: fresh.life, read, caller, kind: prefetch })
                });
                return Lookout::Hit(Hit {
                    entry: fresh.stored,
                    id: message.id,
                    accepts_gzip,
                    mcp_method,
                    route: route_index,
                    snapshot,
                    prefetching,
                });
            }
            other => other,
        };
        Lookout::Missed(Some(Box::new(Understood {
            snapshot,
            route: route_index,
            message,
            stateless,
            pinned,
            caller,
            accepts_gzip,
            prelooked: lookup.zip(found).map(|(lookup, found)| Prelooked { lookup, found }),
            prefetch,
        })))
    }

    /// Gives one request to the proxy service: a Pingora HTTP/1 session whose parser starts
    /// with `handed` (the request, or all read so far). Returns the connection if it may serve
    /// another request, with the bytes Pingora read past that request appended to `kept` (what
    /// the hit path read behind it), so the requests that follow are the hit path's again
    /// (`pipelined`).
    async fn hand_over(
        &self,
        stream: Stream,
        handed: BytesMut,
        understood: Option<Box<Understood>>,
        kept: &mut BytesMut,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let mut session = ServerSession::new_http1(stream);
        session.set_keepalive(unless_shutting_down(shutdown, KEEPALIVE.as_secs()));
        session.set_pipelining_enabled(true);
        if !handed.is_empty() {
            session.set_pipelined_prefix(handed);
        }
        if let Some(understood) = understood {
            // Delivered to `McpProxy::on_connection_reuse` for this very request.
            session.set_connection_user_context(Some(understood));
        }
        loop {
            let (stream, settings) = self.proxy.process_new_http(session, shutdown).await?.consume();
            // The service persists no connection context: the settings matter only for the
            // bytes read ahead.
            let read_ahead = settings.as_ref().map_or(ReadAhead::Nothing, pipelined::read_ahead);
            let settings = match read_ahead {
                ReadAhead::Nothing => return Some(stream),
                ReadAhead::Bytes(bytes) => {
                    kept.extend_from_slice(&bytes);
                    return Some(stream);
                }
                ReadAhead::Unreadable if !kept.is_empty() => {
                    // Pingora's bytes came after the hit path's and cannot be put behind them.
                    tracing::error!("bytes read ahead by Pingora could not be read back; closing the connection");
                    return None;
                }
                ReadAhead::Unreadable => settings?,
            };
            // Fallback for a form `pipelined` does not know: Pingora serves what it read.
            session = ServerSession::new_http1(stream);
            settings.apply_to_session(&mut session);
            // The next request has begun arriving: the rest of its head is waited for as the
            // hit path would (`server.header_timeout`, here for each read), not for a whole
            // keep-alive period.
            let header_timeout = self.live.load().config.server.header_timeout.as_secs().max(1);
            session.set_keepalive(unless_shutting_down(shutdown, header_timeout));
        }
    }
}

/// A handed-over session's keep-alive (in seconds): none once the server is shutting down.
fn unless_shutting_down(shutdown: &ShutdownWatch, seconds: u64) -> Option<u64> {
    (!*shutdown.borrow()).then_some(seconds)
}

/// (Returned once per request, on the stack: boxing the hit would allocate per hit instead.)
#[allow(clippy::large_enum_variant)]
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
    /// On routes that prefetch: what the prefetcher is told of the hit.
    prefetching: Option<Box<HitPrefetching>>,
    /// The index of the request's route in `snapshot`.
    route: usize,
    snapshot: Arc<Runtime>,
}

/// What the prefetcher is told of a hit (see `EdgeApp::after_hit`).
struct HitPrefetching {
    life: Life,
    /// A `resources/read`'s URI (learned, when a client read it).
    read: Option<String>,
    caller: Caller,
    /// The kind of prefetch this is, if it is one (else a client's).
    kind: Option<Kind>,
}

/// Answers a request the hit path refuses outright (a malformed head, too slow to arrive) with
/// a JSON-RPC error, and closes the connection: what follows cannot be trusted to be framed.
async fn refuse(stream: &mut Stream, refused: EdgeError) -> Step {
    let status = refused.status();
    let body = refused.body(None);
    let phrase = http::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("Error");
    let extra: String = refused.extra_headers().iter().map(|(name, value)| format!("{name}: {value}\r\n")).collect();
    let head = format!(
        "HTTP/1.1 {status} {phrase}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{extra}x-cache: BYPASS\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let written = write_parts(stream, [head.as_bytes(), body.as_bytes(), &[], &[]]).await;
    let flushed = written.is_ok() && stream.flush().await.is_ok();
    let waited_for = matches!(refused, EdgeError::RequestTimeout(_));
    Served {
        route: "-",
        http_method: "-",
        mcp_method: None,
        status,
        cache: Outcome::Bypass.as_str(),
        tier: None,
        upstream: None,
        started: Instant::now(),
        error: Some(refused.to_string()),
    }
    .record();
    // The rest of the request may be on its way. A client too slow to send its head in
    // time is not waited for again.
    if flushed && !waited_for {
        crate::linger::linger(stream).await;
    }
    Step::Close
}
