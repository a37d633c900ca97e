//! Lingering close: when mcp-edge answers a request and closes the connection while the
//! client is still sending (a body too large, a head refused before its body was read), it
//! stops writing and reads on, dropping what it reads, before it closes.
//!
//! Why: closing a socket with unread bytes makes the kernel reset the connection, and the
//! reset can destroy the answer in the client's buffers before the client reads it. A client
//! uploading a body too large would see "connection reset" instead of its 413. nginx does the
//! same (`lingering_close`), with the same limits: [`LINGER_READ`] and [`LINGER_TOTAL`].

use std::time::Duration;

use pingora::protocols::Stream;
use pingora::protocols::http::ServerSession;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long the client may send nothing before the connection is closed anyway.
const LINGER_READ: Duration = Duration::from_secs(5);
/// How long the proxy reads on at most.
const LINGER_TOTAL: Duration = Duration::from_secs(30);
/// What one read may drop.
const SINK_SIZE: usize = 16 * 1024;

/// On a connection the front is closing after a refusal: ends the answer (FIN) and reads
/// until the client closes, pauses for [`LINGER_READ`] or [`LINGER_TOTAL`] has passed.
pub async fn linger(stream: &mut Stream) {
    if stream.shutdown().await.is_err() {
        return;
    }
    let mut sink = vec![0u8; SINK_SIZE];
    let _ = tokio::time::timeout(LINGER_TOTAL, async {
        while let Ok(Ok(read)) = tokio::time::timeout(LINGER_READ, stream.read(&mut sink)).await {
            if read == 0 {
                return;
            }
        }
    })
    .await;
}

/// After the proxy service answered on a connection that is closing: when the request's body
/// is still unread (HTTP/1; HTTP/2 refuses a stream without touching the connection), ends the
/// answer and reads the rest of the body, within the same limits. `body_expected`: whether
/// the client will send its body at all (one waiting for `100 Continue` it was not sent will
/// not).
pub async fn drain_unread_body(session: &mut ServerSession, body_expected: bool) {
    let ServerSession::H1(http1) = session else { return };
    if !body_expected || http1.is_body_done() {
        return;
    }
    http1.shutdown().await;
    http1.set_read_timeout(Some(LINGER_READ));
    http1.set_total_drain_timeout(Some(LINGER_TOTAL));
    let _ = http1.drain_request_body().await;
}
