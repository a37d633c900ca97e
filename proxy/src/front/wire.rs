//! The HTTP/1.1 front's side of the wire: reading more of a request (with its deadline and the
//! keep-alive timeout), writing a cached answer in one vectored write, and refusing a request.

use std::pin::Pin;
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use pingora::protocols::Stream;
use pingora::protocols::http::date::get_cached_date;
use pingora::server::ShutdownWatch;
use pingora::time::fast_timeout::fast_timeout;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Sleep;

use crate::answer;
use crate::error::EdgeError;
use crate::served::{Asked, Served};

/// How long a kept-alive connection may sit idle between requests (as Pingora's default).
pub(super) const KEEPALIVE: Duration = Duration::from_secs(60);

/// What reading more of a request came to.
pub(super) enum Read {
    More,
    /// The connection is over: closed, failed, idle past the keep-alive timeout, or the server
    /// is shutting down while the connection is idle.
    Over,
    /// The request has been arriving for longer than its deadline.
    TooSlow,
}

/// Reads more of the request; `deadline`: when the request under way must have arrived.
pub(super) async fn read_more(
    stream: &mut Stream,
    buffer: &mut BytesMut,
    shutdown: &mut ShutdownSignal,
    idle_timer: &mut IdleTimer,
    deadline: Option<Instant>,
) -> Read {
    buffer.reserve(4096);
    if buffer.is_empty() {
        // Between requests: the keep-alive timer, and a shutdown ends the wait too.
        return tokio::select! {
            biased;
            result = stream.read_buf(buffer) => match result {
                Ok(n) if n > 0 => Read::More,
                _ => Read::Over,
            },
            _ = idle_timer.expired() => Read::Over,
            () = shutdown.begun() => Read::Over,
        };
    }
    // A request under way (rare: most arrive in one read). Pingora's coarse timer (10 ms
    // ticks, armed only if the read has to wait), as Pingora's own reads use.
    let limit = deadline.map_or(KEEPALIVE, |d| d.saturating_duration_since(Instant::now()));
    match fast_timeout(limit, stream.read_buf(buffer)).await {
        Ok(Ok(n)) if n > 0 => Read::More,
        Err(_) => Read::TooSlow,
        _ => Read::Over,
    }
}

/// The keep-alive timer of one connection: a connection may sit idle between requests for
/// `period`. One Tokio timer serves the connection's whole life and is moved on only when it
/// fires early (for an idle spell that began later), so a wait that ends with a request costs
/// no timer at all. Arming one per wait (Pingora's coarse timer, or a Tokio timer) cost about
/// as much as parsing the request head (`benches/HISTORY.md`, thirteenth session).
pub(super) struct IdleTimer {
    period: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl IdleTimer {
    pub(super) fn new(period: Duration) -> IdleTimer {
        IdleTimer { period, sleep: None }
    }

    /// Completes once the connection has been idle for a whole period, counted from this
    /// future's first poll (when the read it races against first had to wait).
    pub(super) async fn expired(&mut self) {
        let until = tokio::time::Instant::now() + self.period;
        let sleep = self.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(until)));
        loop {
            sleep.as_mut().await;
            // A deadline set for an earlier idle spell: this one lasts its own whole period.
            if sleep.deadline() >= until {
                return;
            }
            sleep.as_mut().reset(until);
        }
    }
}

/// Shutdown as one connection sees it. A wait between requests races the start of shutdown;
/// one future made at the first such wait serves them all, as [`IdleTimer`] does for the
/// keep-alive timeout: a wait made anew each time registered with the watch and left it again
/// (300 instructions per forwarded request, counted by `benches/load/instructions.sh`).
pub(super) struct ShutdownSignal {
    watch: ShutdownWatch,
    begun: Option<Pin<Box<dyn Future<Output = ()> + Send + Sync>>>,
    seen: bool,
}

impl ShutdownSignal {
    pub(super) fn new(watch: ShutdownWatch) -> ShutdownSignal {
        ShutdownSignal { watch, begun: None, seen: false }
    }

    /// Whether shutdown has begun, or mcp-edge is draining before it (see `drain`).
    pub(super) fn has_begun(&self) -> bool {
        self.seen || crate::drain::draining() || *self.watch.borrow()
    }

    /// Completes once shutdown has begun (or nothing can announce it any more).
    pub(super) async fn begun(&mut self) {
        if self.seen {
            return;
        }
        let watch = &self.watch;
        let begun = self.begun.get_or_insert_with(|| {
            let mut watch = watch.clone();
            Box::pin(async move {
                let _ = watch.wait_for(|stopping| *stopping).await;
            })
        });
        begun.as_mut().await;
        // Done: a finished future must not be polled again.
        self.seen = true;
        self.begun = None;
    }
}

/// The HTTP/1.1 head of the response for a cached answer.
pub(super) fn encode_head(answer: &answer::CachedAnswer<'_>, closing: bool) -> Vec<u8> {
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
pub(super) async fn write_parts(stream: &mut Stream, parts: [&[u8]; 4]) -> std::io::Result<()> {
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

/// Answers a refused request (`asked`: what the access log tells of it) with its JSON-RPC
/// error, and closes the connection: what follows a refused request cannot be trusted to be
/// framed.
pub(super) async fn refuse(stream: &mut Stream, refused: EdgeError, asked: Asked<'_>) {
    let status = refused.status();
    let body = refused.body(None);
    let phrase = http::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("Error");
    let mut head = Vec::with_capacity(160);
    head.put_slice(
        format!("HTTP/1.1 {status} {phrase}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n", body.len())
            .as_bytes(),
    );
    for (name, value) in refused.extra_headers() {
        head.put_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    head.put_slice(format!("{}: {}\r\n", crate::request_id::HEADER, asked.request_id.as_str()).as_bytes());
    head.put_slice(b"x-cache: BYPASS\r\nconnection: close\r\n\r\n");
    // A `HEAD` request's answer has no body (its length is the one a `GET` would have).
    let body_sent = if asked.http_method == "HEAD" { "" } else { body.as_str() };
    let written = write_parts(stream, [&head, body_sent.as_bytes(), &[], &[]]).await;
    let flushed = written.is_ok() && stream.flush().await.is_ok();
    let waited_for = matches!(refused, EdgeError::RequestTimeout(_));
    Served::refused(asked, &refused, body_sent.len()).record();
    // The rest of the request may be on its way. A client too slow to send its head in
    // time is not waited for again.
    if flushed && !waited_for {
        crate::linger::linger(stream).await;
    }
}

/// Answers with a document mcp-edge publishes itself (a protected route's metadata, see
/// `auth`), and closes the connection, as after a refusal: such requests are rare.
pub(super) async fn answer_document(stream: &mut Stream, document: &str, asked: Asked<'_>) {
    let body = if asked.http_method == "HEAD" { "" } else { document };
    let mut head = Vec::with_capacity(256);
    head.put_slice(format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n", document.len()).as_bytes());
    for (name, value) in crate::auth::DOCUMENT_HEADERS {
        head.put_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    head.put_slice(format!("{}: {}\r\n", crate::request_id::HEADER, asked.request_id.as_str()).as_bytes());
    head.put_slice(b"connection: close\r\n\r\n");
    let written = write_parts(stream, [&head, body.as_bytes(), &[], &[]]).await;
    if written.is_ok() && stream.flush().await.is_ok() {
        crate::linger::linger(stream).await;
    }
    crate::auth::published(asked, body.len()).record();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::answer::Outcome;

    fn entry(result: &[u8]) -> Vec<u8> {
        mcp_edge_policies::cache::Entry {
            fetched_at_ms: 0,
            expires_at_ms: u64::MAX,
            restate_ttl: false,
            own_ttl: false,
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

    /// Waits for the timer, or gives up after `busy_after` (a request arriving first).
    async fn idle_spell(timer: &mut IdleTimer, busy_after: Duration) -> bool {
        tokio::select! {
            _ = timer.expired() => true,
            _ = tokio::time::sleep(busy_after) => false,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_times_out_after_one_period() {
        let mut timer = IdleTimer::new(Duration::from_secs(60));
        let started = tokio::time::Instant::now();
        timer.expired().await;
        assert_eq!(started.elapsed(), Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn each_idle_spell_lasts_a_whole_period_of_its_own() {
        let mut timer = IdleTimer::new(Duration::from_secs(60));
        assert!(!idle_spell(&mut timer, Duration::from_secs(50)).await, "a request came after 50 s");
        // The timer still points at the first spell's end (60 s); the second spell began at 50 s.
        let second = tokio::time::Instant::now();
        assert!(!idle_spell(&mut timer, Duration::from_secs(59)).await, "not idle for 60 s yet");
        let third = tokio::time::Instant::now();
        assert!(idle_spell(&mut timer, Duration::from_secs(61)).await);
        assert_eq!(third.elapsed(), Duration::from_secs(60));
        assert_eq!(second.elapsed(), Duration::from_secs(119));
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_that_lapsed_while_the_connection_was_busy_starts_over() {
        let mut timer = IdleTimer::new(Duration::from_secs(60));
        assert!(!idle_spell(&mut timer, Duration::from_secs(1)).await);
        // Busy (no idle wait polled) well past the first spell's deadline.
        tokio::time::sleep(Duration::from_secs(300)).await;
        let spell = tokio::time::Instant::now();
        timer.expired().await;
        assert_eq!(spell.elapsed(), Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn one_shutdown_signal_serves_every_wait_and_stays_given() {
        let (announce, watch) = tokio::sync::watch::channel(false);
        let mut shutdown = ShutdownSignal::new(watch);
        for _ in 0..3 {
            // Waits that end with a request (here: a second) leave the signal waiting.
            let ended_by_shutdown = tokio::select! {
                () = shutdown.begun() => true,
                _ = tokio::time::sleep(Duration::from_secs(1)) => false,
            };
            assert!(!ended_by_shutdown && !shutdown.has_begun());
        }
        announce.send(true).unwrap();
        assert!(shutdown.has_begun());
        shutdown.begun().await;
        // Given once, it stays given (the finished wait is not polled again).
        shutdown.begun().await;
        assert!(shutdown.has_begun());
    }

    #[tokio::test]
    async fn a_shutdown_signal_whose_sender_is_gone_ends_every_wait() {
        let (announce, watch) = tokio::sync::watch::channel(false);
        let mut shutdown = ShutdownSignal::new(watch);
        drop(announce);
        shutdown.begun().await;
        shutdown.begun().await;
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
