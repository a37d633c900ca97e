//! The fronts: where every client connection (and every prefetch, on its in-process
//! connection) is served. Each request is read by the front of its protocol, understood by
//! the one intake (`intake`), and answered by the front (a hit, an error) or forwarded by
//! Pingora's proxy service (`service`), which reads nothing of it again.
//!
//! - [`h1`]: HTTP/1.1, on the connection itself (`head`, `wire`; Pingora gets a view of the
//!   connection holding exactly the one request it forwards: `one_request`, `chunked`);
//! - [`h2`]: HTTP/2, on the streams Pingora's HTTP/2 server accepts.

mod chunked;
mod h1;
mod h2;
mod head;
mod one_request;
mod wire;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::BytesMut;
use pingora::apps::ServerApp;
use pingora::protocols::{ALPN, Stream};
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;

use crate::intake::Intake;
use crate::prefetch::Prefetcher;
use crate::runtime::Live;
use crate::service::McpProxy;
use crate::store::EdgeCache;
use h2::H2Front;
use wire::{IdleTimer, KEEPALIVE, ShutdownSignal};

/// The app every connection is served by. Cloned for the prefetcher, which sends its
/// requests to it.
#[derive(Clone)]
pub struct EdgeApp {
    proxy: Arc<HttpProxy<McpProxy>>,
    live: Live,
    intake: Arc<Intake>,
    h2: Arc<H2Front>,
}

impl EdgeApp {
    pub fn new(proxy: HttpProxy<McpProxy>, live: Live, cache: Arc<EdgeCache>, prefetch: Arc<Prefetcher>) -> EdgeApp {
        let proxy = Arc::new(proxy);
        let intake = Arc::new(Intake { cache, prefetch });
        let h2 = Arc::new(H2Front { proxy: proxy.clone(), live: live.clone(), intake: intake.clone() });
        EdgeApp { proxy, live, intake, h2 }
    }
}

#[async_trait]
impl ServerApp for EdgeApp {
    async fn process_new(self: &Arc<Self>, stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        let _open = crate::metrics::OpenConnection::start();
        if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            // Pingora's HTTP/2 server (handshake, streams, flow control, shutdown) hands each
            // stream to the HTTP/2 front.
            return self.h2.process_new(stream, shutdown).await;
        }
        let client = stream.get_socket_digest().and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        let internal = crate::prefetch::is_internal(&stream);
        let io = h1::ConnectionIo {
            stream,
            shutdown: ShutdownSignal::new(shutdown.clone()),
            idle_timer: IdleTimer::new(KEEPALIVE),
            client,
            internal,
        };
        let conn = h1::Connection { io, buffer: BytesMut::with_capacity(4096) };
        self.serve_h1(conn, shutdown).await;
        None
    }

    async fn cleanup(&self) {
        self.proxy.cleanup().await;
    }
}
