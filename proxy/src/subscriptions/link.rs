//! The edge's own requests to one replica: over Pingora's connector, with the replica's
//! address, TLS, server name and the route's CA, `Host` set to the upstream URL's authority
//! (servers bound to localhost refuse another), and no credential.

use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use bytes::Bytes;
use mcp_edge_policies::sse::SseParser;
use mcp_edge_policies::subscriptions::Reply;
use mcp_edge_policies::subscriptions::messages::reply_to;
use mcp_edge_policies::upstream::UpstreamUrl;
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use pingora::prelude::HttpPeer;
use pingora::protocols::http::client::HttpSession;
use pingora::protocols::l4::ext::TcpKeepalive;
use pingora::protocols::tls::CaType;

use crate::runtime::Route;

/// One connector for every subscription (a connector loads the root certificates once).
static CONNECTOR: LazyLock<Connector> = LazyLock::new(|| Connector::new(None));

/// Largest answer read to one of the edge's requests (an `initialize` result is a few KiB).
const MAX_ANSWER: usize = 1 << 20;
/// Largest single event kept on a subscription stream (notifications are small); larger ones
/// are dropped by the parser.
pub const MAX_EVENT: usize = 64 * 1024;
/// How long an idle connection for the edge's requests is kept.
const POOL_IDLE: Duration = Duration::from_secs(30);

/// One replica of one route, as the edge's subscriptions reach it.
pub struct Link {
    pub url: UpstreamUrl,
    addr: SocketAddr,
    ca: Option<Arc<CaType>>,
    connect_timeout: Duration,
    read_timeout: Duration,
}

/// Why a request of the edge's got no usable answer.
#[derive(Debug)]
pub enum Failure {
    /// No answer: the connection failed, timed out or dropped.
    Unreachable(String),
    /// An answer the edge could not read (too large, no reply to its request).
    Unreadable(&'static str),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Unreachable(reason) => write!(f, "unreachable: {reason}"),
            Failure::Unreadable(what) => f.write_str(what),
        }
    }
}

/// The answer to a request of the edge's.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// `Mcp-Session-Id`, when the server sent one.
    pub session: Option<String>,
    /// The JSON-RPC response to the request, when it had an id and one came.
    pub reply: Option<Reply>,
}

/// A stream the server opened: its answer's head was read, its body is to be read by the caller.
pub struct Opened {
    pub session: HttpSession,
    pub status: u16,
    /// The answer is `text/event-stream`.
    pub sse: bool,
}

fn unreachable(e: impl std::fmt::Display) -> Failure {
    Failure::Unreachable(e.to_string().split_whitespace().collect::<Vec<_>>().join(" "))
}

impl Link {
    pub fn new(route: &Route, upstream: &crate::pool::Upstream) -> Link {
        Link {
            url: upstream.url.clone(),
            addr: upstream.addr,
            ca: route.pool.ca.clone(),
            connect_timeout: route.config.connect_timeout,
            read_timeout: route.config.read_timeout,
        }
    }

    /// The replica as a peer: requests time out as the route's POSTs do; streams have no read
    /// timeout (they may rightly stay silent for hours) but TCP keep-alives, so that a peer that
    /// vanished without closing is noticed within about a minute.
    fn peer(&self, stream: bool) -> HttpPeer {
        let mut peer = HttpPeer::new(self.addr, self.url.tls, self.url.host.clone());
        peer.options.connection_timeout = Some(self.connect_timeout);
        peer.options.write_timeout = Some(self.read_timeout);
        peer.options.ca = self.ca.clone();
        if stream {
            peer.options.tcp_keepalive = Some(TcpKeepalive {
                idle: Duration::from_secs(30),
                interval: Duration::from_secs(10),
                count: 3,
                #[cfg(target_os = "linux")]
                user_timeout: Duration::ZERO,
            });
        } else {
            peer.options.read_timeout = Some(self.read_timeout);
            peer.options.idle_timeout = Some(POOL_IDLE);
        }
        peer
    }

    fn head(&self, method: &str, headers: &[(&str, &str)], body: Option<&str>) -> pingora::Result<RequestHeader> {
        let mut head = RequestHeader::build(method, self.url.path.as_bytes(), None)?;
        head.insert_header("Host", self.url.authority.as_str())?;
        head.insert_header("User-Agent", concat!("mcp-edge/", env!("CARGO_PKG_VERSION"), " (subscriptions)"))?;
        if let Some(body) = body {
            head.insert_header("Content-Type", "application/json")?;
            head.insert_header("Content-Length", body.len().to_string())?;
        }
        for (name, value) in headers {
            head.insert_header(name.to_string(), *value)?;
        }
        Ok(head)
    }

    /// Sends a request and reads its answer's head. A pooled connection the server closed
    /// meanwhile is tried once more on a new one.
    async fn send(
        &self,
        method: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
        stream: bool,
    ) -> Result<HttpSession, Failure> {
        let peer = self.peer(stream);
        for attempt in 0..2 {
            let (mut session, reused) = CONNECTOR.get_http_session(&peer).await.map_err(unreachable)?;
            let head = self.head(method, headers, body).map_err(unreachable)?;
            let sent = async {
                session.write_request_header(Box::new(head)).await?;
                if let Some(body) = body {
                    session.write_request_body(Bytes::copy_from_slice(body.as_bytes()), true).await?;
                }
                session.finish_request_body().await?;
                session.read_response_header().await
            }
            .await;
            match sent {
                Ok(()) => {
                    if stream {
                        session.set_read_timeout(None);
                    }
                    return Ok(session);
                }
                Err(_) if reused && attempt == 0 => continue,
                Err(e) => return Err(unreachable(e)),
            }
        }
        Err(Failure::Unreachable("no connection".into()))
    }

    /// POSTs `body` and reads its answer; the reply to request `id`, if given, from a JSON or
    /// SSE answer. A connection whose answer was read whole goes back to the pool. The whole
    /// exchange takes at most the route's `read_timeout` (a server that keeps an answer open
    /// without replying does not hold the subscription up).
    pub async fn call(&self, body: &str, id: Option<&str>, headers: &[(&str, &str)]) -> Result<Answer, Failure> {
        tokio::time::timeout(self.read_timeout, self.call_unbounded(body, id, headers))
            .await
            .unwrap_or_else(|_| Err(Failure::Unreachable(format!("no answer within {:?}", self.read_timeout))))
    }

    async fn call_unbounded(&self, body: &str, id: Option<&str>, headers: &[(&str, &str)]) -> Result<Answer, Failure> {
        let mut all_headers = vec![("Accept", "application/json, text/event-stream")];
        all_headers.extend_from_slice(headers);
        let mut session = self.send("POST", &all_headers, Some(body), false).await?;
        let head = session.response_header().ok_or(Failure::Unreadable("no answer head"))?;
        let status = head.status.as_u16();
        let session_id = head.headers.get("mcp-session-id").and_then(|v| v.to_str().ok()).map(|s| s.trim().to_string());
        let sse = content_type_is(head, "text/event-stream");
        let reply = match id {
            Some(id) if status == 200 || (400..500).contains(&status) => read_reply(&mut session, id, sse).await?,
            _ => None,
        };
        if session.response_done() {
            CONNECTOR.release_http_session(session, &self.peer(false), Some(POOL_IDLE)).await;
        }
        Ok(Answer { status, session: session_id, reply })
    }

    /// Opens a stream (a GET, or the POST of `subscriptions/listen`) and returns it once its
    /// answer's head is read.
    pub async fn open(&self, method: &str, body: Option<&str>, headers: &[(&str, &str)]) -> Result<Opened, Failure> {
        // The head must come within `read_timeout`; the body may then stay silent.
        let session = tokio::time::timeout(self.read_timeout, self.send(method, headers, body, true))
            .await
            .unwrap_or_else(|_| Err(Failure::Unreachable(format!("no answer within {:?}", self.read_timeout))))?;
        let head = session.response_header().ok_or(Failure::Unreadable("no answer head"))?;
        let (status, sse) = (head.status.as_u16(), content_type_is(head, "text/event-stream"));
        Ok(Opened { session, status, sse })
    }

    /// Ends a handshake-era session (best effort, within a second).
    pub async fn delete(&self, session: &str, protocol: &str) {
        let headers = [("Mcp-Session-Id", session), ("MCP-Protocol-Version", protocol)];
        let ended = tokio::time::timeout(Duration::from_secs(1), self.send("DELETE", &headers, None, false)).await;
        if let Ok(Ok(mut session)) = ended {
            let _ = tokio::time::timeout(Duration::from_secs(1), session.read_response_body()).await;
        }
    }
}

fn content_type_is(head: &pingora::http::ResponseHeader, wanted: &str) -> bool {
    head.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|c| c.starts_with(wanted))
}

/// Reads an answer's body (at most `MAX_ANSWER`) until the reply to `id` is found: in the JSON
/// body, or in one of the SSE events (others, such as notifications, are skipped).
async fn read_reply(session: &mut HttpSession, id: &str, sse: bool) -> Result<Option<Reply>, Failure> {
    let mut parser = sse.then(|| SseParser::new(MAX_ANSWER));
    let mut json = Vec::new();
    let mut read = 0;
    while let Some(chunk) = session.read_response_body().await.map_err(unreachable)? {
        read += chunk.len();
        if read > MAX_ANSWER {
            return Err(Failure::Unreadable("answer too large"));
        }
        match &mut parser {
            Some(parser) => {
                let found = parser.feed(&chunk).iter().find_map(|data| {
                    serde_json::from_str::<serde_json::Value>(data).ok().and_then(|m| reply_to(&m, id))
                });
                if found.is_some() {
                    return Ok(found);
                }
            }
            None => json.extend_from_slice(&chunk),
        }
    }
    Ok(serde_json::from_slice::<serde_json::Value>(&json).ok().and_then(|m| reply_to(&m, id)))
}
