//! Raw HTTP/1.1 on a socket, for what an HTTP client will not send: malformed heads, repeated
//! headers, pipelined requests, connections held open.

use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::harness::Proxy;

/// One response read off a raw connection.
pub struct RawReply {
    pub status: u16,
    pub head: String,
    pub body: Value,
}

impl RawReply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }
}

/// Reads exactly one `Content-Length` response from `stream` (leaving what follows in `pending`).
pub async fn read_response(stream: &mut TcpStream, pending: &mut Vec<u8>) -> RawReply {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8(pending[..end].to_vec()).expect("ASCII head");
            let length: usize = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
                .expect("content-length");
            if pending.len() >= end + 4 + length {
                let body = serde_json::from_slice(&pending[end + 4..end + 4 + length]).expect("JSON body");
                pending.drain(..end + 4 + length);
                let status = head[9..12].parse().unwrap();
                return RawReply { status, head, body };
            }
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await.expect("response in time").unwrap();
        assert!(n > 0, "connection closed before a whole response; have {:?}", String::from_utf8_lossy(pending));
        pending.extend_from_slice(&chunk[..n]);
    }
}

/// A raw connection to the proxy's plain listener.
pub async fn connect(proxy: &Proxy) -> tokio::net::TcpStream {
    tokio::net::TcpStream::connect(("127.0.0.1", proxy.port)).await.unwrap()
}

/// Sends `request` on a new connection and reads one response.
pub async fn raw_exchange(proxy: &Proxy, request: &[u8]) -> RawReply {
    use tokio::io::AsyncWriteExt;
    let mut stream = connect(proxy).await;
    stream.write_all(request).await.unwrap();
    read_response(&mut stream, &mut Vec::new()).await
}

/// A raw HTTP/1.1 POST of `body` to `/mcp` with `headers` (each `Name: value`), framed by
/// Content-Length unless a header frames it otherwise.
pub fn raw_post(body: &str, headers: &[&str]) -> Vec<u8> {
    let mut head = String::from(
        "POST /mcp HTTP/1.1\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\n",
    );
    for header in headers {
        head.push_str(header);
        head.push_str("\r\n");
    }
    if !headers.iter().any(|h| h.to_ascii_lowercase().starts_with("host:")) {
        head.push_str("Host: localhost\r\n");
    }
    if !headers.iter().any(|h| {
        h.to_ascii_lowercase().starts_with("content-length:")
            || h.to_ascii_lowercase().starts_with("transfer-encoding:")
    }) {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    format!("{head}\r\n{body}").into_bytes()
}

/// A hand-written upstream for what the demo upstream will not send: on every connection, for
/// every request read whole (its head and `Content-Length` body, as text), writes the bytes
/// `answer` makes of it. Returns its port.
pub async fn raw_upstream(answer: fn(&str) -> Vec<u8>) -> u16 {
    raw_upstream_with(answer).await
}

/// [`raw_upstream`] with an `answer` that may keep state (e.g. a log of what it was asked).
pub async fn raw_upstream_with(answer: impl Fn(&str) -> Vec<u8> + Send + Sync + 'static) -> u16 {
    use tokio::io::AsyncWriteExt;
    let answer = std::sync::Arc::new(answer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut pending = Vec::new();
                let mut chunk = [0u8; 4096];
                while let Ok(n @ 1..) = stream.read(&mut chunk).await {
                    pending.extend_from_slice(&chunk[..n]);
                    while let Some(length) = whole_request_length(&pending) {
                        let request: Vec<u8> = pending.drain(..length).collect();
                        let reply = answer(&String::from_utf8_lossy(&request));
                        if stream.write_all(&reply).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    port
}

/// The length of the request at the start of `bytes` once it has all arrived (framed by
/// `Content-Length`, or none).
fn whole_request_length(bytes: &[u8]) -> Option<usize> {
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&bytes[..end]).to_ascii_lowercase();
    let body = head.lines().find_map(|l| l.strip_prefix("content-length:")?.trim().parse().ok()).unwrap_or(0);
    (bytes.len() >= end + body).then_some(end + body)
}
