//! The HTTP/1.1 front: reads each request off the connection, has the intake decide what
//! becomes of it, and writes the answer (a hit, an error) itself, or hands the request to
//! Pingora through a view that holds exactly it (`one_request`), then takes the connection
//! back for the next request.
//!
//! Why it reads requests itself rather than leaving it to Pingora: a hit is one read and one
//! write, but going through `pingora-proxy` costs several times what the cache lookup does
//! (its per-request session, module and filter machinery); measured in `benches/`.

use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, BytesMut};
use pingora::apps::HttpServerApp;
use pingora::protocols::Stream;
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use tokio::io::AsyncWriteExt;

use super::EdgeApp;
use super::chunked::ChunkedEnd;
use super::head::{Framing, Head, Probe, probe_head, route_and_identity};
use super::one_request::{OneRequest, Rest};
use super::wire::{IdleTimer, KEEPALIVE, Read, ShutdownSignal, encode_head, read_more, refuse, write_parts};
use crate::error::EdgeError;
use crate::intake::{self, BodyPlan, Hit, Understood, Verdict, handover};
use crate::prefetch::Replay;
use crate::request_id::RequestId;
use crate::runtime::Runtime;
use crate::served::Asked;

/// Why a request that trickles in past `server.header_timeout` is refused (408).
const TOO_SLOW: &str = "the request did not arrive in time";

/// One client connection, as the front serves it.
pub(super) struct Connection {
    pub(super) io: ConnectionIo,
    /// What has been read of the connection and not yet served.
    pub(super) buffer: BytesMut,
}

/// A connection's socket and what it is read and written with (apart from what was read).
pub(super) struct ConnectionIo {
    pub(super) stream: Stream,
    pub(super) shutdown: ShutdownSignal,
    pub(super) idle_timer: IdleTimer,
    pub(super) client: Option<std::net::IpAddr>,
    /// One of the prefetcher's in-process connections.
    pub(super) internal: bool,
}

/// What became of one request.
enum Step {
    /// Answered (the request was `consumed` bytes); the connection stays open for the next
    /// request.
    Answered { consumed: usize },
    /// The connection is done (closed by the client, idle too long, shutting down, refused,
    /// or the client asked to close).
    Close,
    /// Pingora forwards it: its bytes in the buffer (`len`, or all of it), and what is left
    /// to come of its body.
    Forward { understood: Box<Understood>, len: usize, rest: Rest },
}

impl EdgeApp {
    /// Serves an HTTP/1.1 connection's requests, one after the other, until it closes.
    pub(super) async fn serve_h1(&self, mut conn: Connection, shutdown: &ShutdownWatch) {
        loop {
            match self.serve_one(&mut conn).await {
                Step::Answered { consumed } => conn.buffer.advance(consumed),
                Step::Close => return,
                Step::Forward { understood, len, rest } => {
                    let handed = conn.buffer.split_to(len);
                    let Some(back) = self.forward(conn.io.stream, handed, rest, understood, shutdown).await else {
                        return;
                    };
                    conn.io.stream = back.0;
                    conn.buffer.extend_from_slice(&back.1);
                }
            }
        }
    }

    async fn serve_one(&self, conn: &mut Connection) -> Step {
        // A request's head (and a body the front reads) must arrive within
        // `server.header_timeout` of its first byte, as with nginx's `client_header_timeout`:
        // a client trickling a byte now and then must not hold a connection for ever.
        // The clock is read only when a request takes more than one read (most arrive whole).
        let header_timeout = || Instant::now() + self.live.load().config.server.header_timeout;
        let mut deadline = None;
        // Once the head is complete: the length of the whole request, when the front reads its
        // body first (the head is parsed again only when that much has arrived).
        let mut awaiting = 0;
        // The client was told `100 Continue`.
        let mut invited = false;
        // The head's verdict, kept while its body arrives (its checks count against the
        // client's rate once).
        let mut admitted = None;
        loop {
            if !conn.buffer.is_empty() && conn.buffer.len() >= awaiting {
                let snapshot = self.live.load_full();
                let probe = probe_head(&conn.buffer, |path| route_and_identity(&snapshot, path));
                match probe {
                    Probe::Complete(head) => {
                        match self
                            .take(&mut conn.io, &conn.buffer, &head, &snapshot, (&mut admitted, &mut invited))
                            .await
                        {
                            Taken::Done(step) => return step,
                            Taken::Awaiting(len) => awaiting = len,
                        }
                    }
                    Probe::Refused(refused) => {
                        refuse(&mut conn.io.stream, refused, Asked::unread(conn.io.client)).await;
                        return Step::Close;
                    }
                    Probe::Partial => {}
                }
            }
            if deadline.is_none() && !conn.buffer.is_empty() {
                deadline = Some(header_timeout());
            }
            let io = &mut conn.io;
            match read_more(&mut io.stream, &mut conn.buffer, &mut io.shutdown, &mut io.idle_timer, deadline).await {
                Read::More => {}
                Read::Over => return Step::Close,
                Read::TooSlow => {
                    refuse(&mut io.stream, EdgeError::RequestTimeout(TOO_SLOW.into()), Asked::unread(io.client)).await;
                    return Step::Close;
                }
            }
        }
    }

    /// Takes a request whose head is complete: through the intake once its body (when it is
    /// read first) has arrived (`admitted_before`: the head's verdict, when it came earlier).
    async fn take(
        &self,
        io: &mut ConnectionIo,
        buffer: &[u8],
        head: &Head<'_>,
        snapshot: &Arc<Runtime>,
        (admitted_before, invited): (&mut Option<intake::Admitted>, &mut bool),
    ) -> Taken {
        let started = Instant::now();
        let request = head.request(io.client, io.internal);
        if admitted_before.is_none()
            && matches!(head.method, "GET" | "HEAD")
            && let Some(document) = crate::auth::metadata_document(snapshot, head.path)
        {
            let asked = Asked {
                route: "-",
                http_method: head.method,
                path: head.path,
                client: io.client,
                session: None,
                request_id: request.request_id,
                trace: None,
                prefetch: None,
            };
            super::wire::answer_document(&mut io.stream, &document, asked).await;
            return Taken::Done(Step::Close);
        }
        let admitted = match admitted_before.take() {
            Some(admitted) => admitted,
            None => match intake::admit_head(snapshot, head.route, &request).await {
                Ok(admitted) => admitted,
                Err(refused) => {
                    return Taken::Done(refuse_head(io, refused, (head, request.request_id), snapshot).await);
                }
            },
        };
        // A client that waits before sending its body (RFC 9110 §10.1.1) is told to send it
        // now that its head passed (else it waits out its own timeout: curl's is 1 s). The
        // upstream is not asked again (`Expect` is not forwarded).
        // (An HTTP/1.0 client's expectation is ignored, as RFC 9110 §10.1.1 says.)
        let expects = head.known.expects_continue && head.version == http::Version::HTTP_11;
        if expects && admitted.body != BodyPlan::None && !*invited {
            *invited = true;
            let interim = b"HTTP/1.1 100 Continue\r\n\r\n";
            if write_parts(&mut io.stream, [interim, &[], &[], &[]]).await.is_err() || io.stream.flush().await.is_err()
            {
                return Taken::Done(Step::Close);
            }
        }
        let buffered = buffer.len();
        if let BodyPlan::Read(length) = admitted.body {
            let request_len = head.head_len + length as usize;
            if buffered < request_len {
                *admitted_before = Some(admitted);
                return Taken::Awaiting(request_len);
            }
        }
        let _active = crate::metrics::ActiveRequest::start();
        let body = match admitted.body {
            BodyPlan::Read(length) => &buffer[head.head_len..head.head_len + length as usize],
            _ => &[][..],
        };
        match self.intake.understand(admitted, &request, body).await {
            Verdict::Refuse(refused) => {
                Taken::Done(refuse_head(io, refused, (head, request.request_id), snapshot).await)
            }
            Verdict::Hit(hit) => match self.answer_hit(io, buffer, head, &hit, started).await {
                Some(step) => Taken::Done(step),
                None => Taken::Done(self.forward_instead(io, (buffer, head), hit, snapshot).await),
            },
            Verdict::Forward(mut understood) => {
                understood.body_invited = *invited;
                let (len, rest) = forwarded_extent(head, buffer);
                Taken::Done(Step::Forward { understood, len, rest })
            }
        }
    }

    /// Writes a hit's answer, and tells of it; `None` if its entry cannot be read (borrowed: a
    /// hit is not copied into this future).
    async fn answer_hit(
        &self,
        io: &mut ConnectionIo,
        buffer: &[u8],
        head: &Head<'_>,
        hit: &Hit,
        started: Instant,
    ) -> Option<Step> {
        // An HTTP/1.0 connection is kept alive only when its client asks (else it may read until
        // the connection closes).
        let old_http = head.version == http::Version::HTTP_10 && !head.known.connection_keep_alive;
        let closing = head.known.connection_close || old_http || io.shutdown.has_begun();
        let answer = hit.render(head.known.session_id.text())?;
        let response_head = encode_head(&answer, closing);
        let [first, entry_bytes, last] = answer.body.parts();
        if write_parts(&mut io.stream, [&response_head, first, entry_bytes, last]).await.is_err()
            || io.stream.flush().await.is_err()
        {
            return Some(Step::Close);
        }
        let request_len = head.request_len().unwrap_or(head.head_len);
        let (head_bytes, body) = buffer[..request_len].split_at(head.head_len);
        hit.record(started, head.path, body.len(), answer.body.len());
        self.intake.after_hit(hit, || Replay::from_head(head_bytes), body);
        Some(if closing { Step::Close } else { Step::Answered { consumed: request_len } })
    }

    /// A hit whose entry cannot be read: forwarded instead, as a miss.
    async fn forward_instead(
        &self,
        io: &mut ConnectionIo,
        (buffer, head): (&[u8], &Head<'_>),
        hit: Hit,
        snapshot: &Runtime,
    ) -> Step {
        let request_id = hit.request.admitted.request_id;
        match self.intake.forward_instead(hit, head.method, io.client) {
            Ok(understood) => {
                let (len, rest) = forwarded_extent(head, buffer);
                Step::Forward { understood, len, rest }
            }
            Err(refused) => refuse_head(io, refused, (head, request_id), snapshot).await,
        }
    }

    /// Hands one request to Pingora: a Pingora HTTP/1 session over a view of the connection
    /// that holds exactly this request (`handed`: what the front read of it; `rest`: what is
    /// left to come). Returns the connection and what the client sent meanwhile, if it may
    /// serve another request.
    async fn forward(
        &self,
        stream: Stream,
        handed: BytesMut,
        rest: Rest,
        understood: Box<Understood>,
        shutdown: &ShutdownWatch,
    ) -> Option<(Stream, BytesMut)> {
        let mut session = ServerSession::new_http1(Box::new(OneRequest::new(stream, handed, rest)));
        session.set_keepalive((!*shutdown.borrow()).then_some(KEEPALIVE.as_secs()));
        let served = handover::forward_with(understood, self.proxy.process_new_http(session, shutdown)).await?;
        let (stream, _settings) = served.consume();
        let back = OneRequest::take_back(stream)?;
        back.reusable.then_some((back.stream, back.ahead))
    }
}

/// Refuses a request whose head was read (`snapshot`: the configuration its route was found
/// in; `request_id`: its `X-Request-ID`).
async fn refuse_head(
    io: &mut ConnectionIo,
    refused: EdgeError,
    (head, request_id): (&Head<'_>, RequestId),
    snapshot: &Runtime,
) -> Step {
    let trace = crate::spans::Trace::begin(head.known.trace_parent());
    let asked = Asked {
        route: head.route.map_or("-", |index| snapshot.routes[index].config.name.as_str()),
        http_method: head.method,
        path: head.path,
        client: io.client,
        session: head.known.session_id.text(),
        request_id,
        trace: trace.as_deref(),
        prefetch: None,
    };
    refuse(&mut io.stream, refused, asked).await;
    Step::Close
}

/// What taking a complete head came to.
enum Taken {
    Done(Step),
    /// The front reads the body first: the whole request is this many bytes.
    Awaiting(usize),
}

/// How much of the buffer a forwarded request takes, and what is left to come of it.
fn forwarded_extent(head: &Head<'_>, buffer: &[u8]) -> (usize, Rest) {
    match head.framing {
        Framing::Length(length) => {
            let request_len = head.head_len + length as usize;
            let len = request_len.min(buffer.len());
            (len, Rest::Length((request_len - len) as u64))
        }
        Framing::Chunked => {
            let mut end = ChunkedEnd::new();
            let body = end.feed(&buffer[head.head_len..]);
            (head.head_len + body, Rest::Chunked(end))
        }
    }
}
