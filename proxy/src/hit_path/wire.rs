//! The hit path's side of the wire: reading more of a request (with its deadline and the
//! keep-alive timeout) and writing a cached answer in one vectored write.

use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use pingora::protocols::Stream;
use pingora::protocols::http::date::get_cached_date;
use pingora::server::ShutdownWatch;
use pingora::time::fast_timeout::fast_timeout;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::answer::{self};

/// How long a kept-alive connection may sit idle between requests (Pingora's default too).
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
    shutdown: &mut ShutdownWatch,
    deadline: Option<Instant>,
) -> Read {
    buffer.reserve(4096);
    let idle = buffer.is_empty();
    let limit = deadline.map_or(KEEPALIVE, |d| d.saturating_duration_since(Instant::now()));
    // Pingora's coarse timer (10 ms ticks, armed only if the read has to wait), as Pingora's
    // own reads use: a Tokio timer per read woke the worker's own event loop (an eventfd
    // write, then an extra epoll round) on most requests (`benches/README.md`, twelfth session).
    let read = fast_timeout(limit, stream.read_buf(buffer));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::answer::Outcome;

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
