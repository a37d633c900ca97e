//! Sending a prefetch through the proxy itself: an in-process connection (a tokio duplex
//! stream) served by the same app that serves clients, so a prefetch takes every path a
//! client's request takes.

use std::sync::Arc;
use std::time::Duration;

use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use crate::front::EdgeApp;

/// Whether `stream` is one of the prefetcher's own connections (no client can open one).
pub fn is_internal(stream: &Stream) -> bool {
    stream.as_any().is::<DuplexStream>()
}

/// What the proxy answered a prefetch.
#[derive(Debug, PartialEq, Eq)]
pub struct Answered {
    pub status: u16,
    /// `x-cache`: `HIT` when the cache answered (nothing went upstream).
    pub from_cache: bool,
    /// A JSON-RPC error, or no JSON-RPC result at all.
    pub failed: bool,
}

/// Sends `request` (a whole HTTP/1.1 request with `connection: close`) and reads the answer;
/// `None` if none came within `limit`.
pub async fn send(app: &Arc<EdgeApp>, shutdown: &ShutdownWatch, request: &[u8], limit: Duration) -> Option<Answered> {
    let (mut ours, theirs) = tokio::io::duplex(64 * 1024);
    let (app, shutdown) = (app.clone(), shutdown.clone());
    let serving = tokio::spawn(async move {
        use pingora::apps::ServerApp;
        app.process_new(Box::new(theirs), &shutdown).await;
    });
    let exchange = async {
        ours.write_all(request).await.ok()?;
        let mut response = Vec::new();
        ours.read_to_end(&mut response).await.ok()?;
        Some(response)
    };
    let response = tokio::time::timeout(limit, exchange).await.ok().flatten();
    serving.abort();
    read_answer(&response?)
}

/// The status, `x-cache` and outcome of a whole response.
fn read_answer(response: &[u8]) -> Option<Answered> {
    let mut slots = [httparse::EMPTY_HEADER; 32];
    let mut parsed = httparse::Response::new(&mut slots);
    let httparse::Status::Complete(head_len) = parsed.parse(response).ok()? else { return None };
    let status = parsed.code?;
    let header = |name: &str| parsed.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value);
    let from_cache = header("x-cache") == Some(b"HIT");
    let body = &response[head_len..];
    Some(Answered { status, from_cache, failed: status != 200 || !has_result(body) })
}

/// Whether a JSON (or SSE) answer carries a JSON-RPC `result`.
fn has_result(body: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Envelope<'a> {
        #[serde(borrow)]
        result: Option<&'a serde_json::value::RawValue>,
    }
    let messages = body.split(|&b| b == b'\n').filter_map(|line| {
        let line = line.strip_prefix(b"data:").unwrap_or(line);
        serde_json::from_slice::<Envelope>(line.trim_ascii()).ok()
    });
    messages.into_iter().any(|message| message.result.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_from_json_and_sse() {
        let json = b"HTTP/1.1 200 OK\r\nx-cache: MISS\r\ncontent-length: 40\r\n\r\n{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}";
        assert_eq!(read_answer(json), Some(Answered { status: 200, from_cache: false, failed: false }));
        let error = b"HTTP/1.1 200 OK\r\nx-cache: MISS\r\n\r\n{\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"code\":-1,\"message\":\"no\"}}";
        assert!(read_answer(error).unwrap().failed);
        let sse = b"HTTP/1.1 200 OK\r\nx-cache: HIT\r\n\r\nevent: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"contents\":[]}}\n\n";
        assert_eq!(read_answer(sse), Some(Answered { status: 200, from_cache: true, failed: false }));
        assert!(read_answer(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").unwrap().failed);
        assert_eq!(read_answer(b"HTTP/1.1 200"), None);
    }
}
