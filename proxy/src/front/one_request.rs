//! The I/O view through which Pingora reads exactly one request.
//!
//! The front owns every connection: it reads each request itself, and hands Pingora only
//! those it forwards, one at a time. Pingora's HTTP/1 reader may read ahead of the request it
//! answers (it keeps reading while it proxies, to notice a client that leaves), and would then
//! hold the start of the next request where nothing public gives it back. So Pingora is not
//! given the socket but this view of it: it yields the request's bytes (what the front read of
//! it, then the rest of its body, no further), then reports the client leaving, while what the
//! client sends next is kept here, for the front, which takes the view back (`into_parts`)
//! when Pingora returns the connection.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use bytes::{Buf, BytesMut};
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream, TimingDigest,
    UniqueID, UniqueIDType, raw_connect::ProxyDigest,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::chunked::ChunkedEnd;

/// At most this much of what follows the request is read while Pingora answers it: enough for
/// a pipelined request or two; then the view stops reading until the front takes it back.
const AHEAD_LIMIT: usize = 128 * 1024;

/// How much of the request's body is still to come from the socket.
#[derive(Debug)]
pub(super) enum Rest {
    /// This many bytes.
    Length(u64),
    /// A chunked body, until its end.
    Chunked(ChunkedEnd),
}

/// One request's view of a client connection (see the module's doc).
pub(super) struct OneRequest {
    inner: Stream,
    /// What the front read of the request, given to Pingora first.
    given: BytesMut,
    rest: Rest,
    /// What the client sent past the request's end, read while Pingora answered it.
    ahead: BytesMut,
    /// The client closed its side (or the connection failed) past the request's end.
    ended: bool,
}

/// What is left of a connection once Pingora is done with its request.
pub(super) struct Returned {
    pub(super) stream: Stream,
    /// What the client sent past the request's end.
    pub(super) ahead: BytesMut,
    /// Pingora read the request whole, and only it: the connection may serve the next one.
    pub(super) reusable: bool,
}

impl OneRequest {
    /// `given`: what the front read of the request; `rest`: what is still to come of it (a
    /// chunked body's framing already fed what `given` holds of it).
    pub(super) fn new(inner: Stream, given: BytesMut, rest: Rest) -> OneRequest {
        OneRequest { inner, given, rest, ahead: BytesMut::new(), ended: false }
    }

    /// The connection back from Pingora (`None`: it is not one of these views).
    pub(super) fn take_back(stream: Stream) -> Option<Returned> {
        let view = stream.into_any().downcast::<OneRequest>().ok()?;
        let OneRequest { inner, given, rest, ahead, ended } = *view;
        let whole = given.is_empty() && rest.is_over();
        Some(Returned { stream: inner, ahead, reusable: whole && !ended })
    }

    /// Reads past the request's end into `ahead`, so that a client leaving is noticed (and
    /// reported as the end of the stream) and what it sends next is kept.
    fn poll_past_end(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        loop {
            if self.ended {
                return Poll::Ready(Ok(()));
            }
            if self.ahead.len() >= AHEAD_LIMIT {
                // Enough kept: the rest waits in the socket for the front.
                return Poll::Pending;
            }
            // Read onto the stack first: most polls find nothing (the client waits for its
            // answer), and then nothing is allocated.
            let mut landing = [std::mem::MaybeUninit::<u8>::uninit(); 4096];
            let mut read = ReadBuf::uninit(&mut landing);
            match Pin::new(&mut self.inner).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) if read.filled().is_empty() => self.ended = true,
                Poll::Ready(Ok(())) => self.ahead.extend_from_slice(read.filled()),
                Poll::Ready(Err(e)) => {
                    self.ended = true;
                    return Poll::Ready(Err(e));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Rest {
    fn is_over(&self) -> bool {
        match self {
            Rest::Length(left) => *left == 0,
            Rest::Chunked(end) => end.is_done(),
        }
    }
}

impl AsyncRead for OneRequest {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if !this.given.is_empty() {
            let n = this.given.len().min(buf.remaining());
            buf.put_slice(&this.given[..n]);
            this.given.advance(n);
            return Poll::Ready(Ok(()));
        }
        match &mut this.rest {
            Rest::Length(0) => this.poll_past_end(cx),
            Rest::Length(left) => {
                let room = (*left).min(buf.remaining() as u64) as usize;
                let mut limited = buf.take(room);
                let polled = Pin::new(&mut this.inner).poll_read(cx, &mut limited);
                let n = limited.filled().len();
                // SAFETY: `limited` borrows `buf`'s unfilled part, where it put `n` bytes.
                unsafe { buf.assume_init(n) };
                buf.advance(n);
                *left -= n as u64;
                polled
            }
            Rest::Chunked(end) if end.is_done() => this.poll_past_end(cx),
            Rest::Chunked(end) => {
                let before = buf.filled().len();
                let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
                let read = &buf.filled()[before..];
                let body = end.feed(read);
                if body < read.len() {
                    // The body ended within this read: what follows is the next request's.
                    this.ahead.extend_from_slice(&read[body..]);
                    buf.set_filled(before + body);
                }
                polled
            }
        }
    }
}

impl AsyncWrite for OneRequest {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for OneRequest {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for OneRequest {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for OneRequest {
    fn get_ssl(&self) -> Option<&pingora::protocols::tls::TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<pingora::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<pingora::protocols::ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for OneRequest {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> std::time::Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> std::time::Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for OneRequest {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
}

impl GetSocketDigest for OneRequest {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }
}

#[async_trait]
impl Peek for OneRequest {}

impl fmt::Debug for OneRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OneRequest").field("given", &self.given.len()).field("rest", &self.rest).finish()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A view over an in-process connection, and the client's end of it.
    fn view(given: &[u8], rest: Rest) -> (OneRequest, tokio::io::DuplexStream) {
        let (client, server) = tokio::io::duplex(64 * 1024);
        (OneRequest::new(Box::new(server), BytesMut::from(given), rest), client)
    }

    /// Reads what the view yields until it has nothing more for now (or ends).
    async fn read_available(view: &mut OneRequest) -> (Vec<u8>, bool) {
        let mut read = Vec::new();
        loop {
            let mut chunk = [0u8; 7];
            match tokio::time::timeout(Duration::from_millis(50), view.read(&mut chunk)).await {
                Ok(Ok(0)) => return (read, true),
                Ok(Ok(n)) => read.extend_from_slice(&chunk[..n]),
                Ok(Err(e)) => panic!("{e}"),
                Err(_) => return (read, false),
            }
        }
    }

    #[tokio::test]
    async fn yields_one_request_and_keeps_what_follows() {
        let (mut view, mut client) = view(b"HEAD|", Rest::Length(4));
        client.write_all(b"BODYPOST /next").await.unwrap();
        assert_eq!(read_available(&mut view).await, (b"HEAD|BODY".to_vec(), false));
        let back = OneRequest::take_back(Box::new(view)).unwrap();
        assert!(back.reusable);
        assert_eq!(&back.ahead[..], b"POST /next");
    }

    #[tokio::test]
    async fn a_client_leaving_after_its_request_is_the_end_of_the_stream() {
        let (mut view, mut client) = view(b"HEAD|BO", Rest::Length(2));
        client.write_all(b"DY").await.unwrap();
        drop(client);
        assert_eq!(read_available(&mut view).await, (b"HEAD|BODY".to_vec(), true));
        assert!(!OneRequest::take_back(Box::new(view)).unwrap().reusable);
    }

    #[tokio::test]
    async fn a_chunked_body_ends_where_its_framing_says() {
        let mut end = ChunkedEnd::new();
        let given = b"HEAD|3\r\nab";
        end.feed(&given[5..]);
        let (mut view, mut client) = view(given, Rest::Chunked(end));
        client.write_all(b"c\r\n0\r\n\r\nPOST /next").await.unwrap();
        assert_eq!(read_available(&mut view).await, (b"HEAD|3\r\nabc\r\n0\r\n\r\n".to_vec(), false));
        let back = OneRequest::take_back(Box::new(view)).unwrap();
        assert!(back.reusable);
        assert_eq!(&back.ahead[..], b"POST /next");
    }

    #[tokio::test]
    async fn a_request_not_read_whole_leaves_the_connection_unusable() {
        let (view, _client) = view(b"HEAD|", Rest::Length(4));
        assert!(!OneRequest::take_back(Box::new(view)).unwrap().reusable);
    }

    #[tokio::test]
    async fn what_is_kept_is_bounded() {
        let (mut view, mut client) = view(b"", Rest::Length(0));
        let flood = vec![b'x'; 60 * 1024];
        let writer = tokio::spawn(async move {
            for _ in 0..8 {
                if client.write_all(&flood).await.is_err() {
                    return;
                }
            }
        });
        assert_eq!(read_available(&mut view).await, (Vec::new(), false));
        let back = OneRequest::take_back(Box::new(view)).unwrap();
        assert!(back.ahead.len() <= AHEAD_LIMIT + 8 * 1024, "{}", back.ahead.len());
        writer.abort();
    }
}
