//! Active health checks: a plain GET of each replica's own MCP endpoint (no
//! `Accept: text/event-stream`, so no stream is opened). Any answer below 500 proves the server
//! is up: MCP servers answer such a GET with 400, 405 or 406.
//!
//! Each replica is checked as requests reach it: its own `Host`, path and TLS server name (the
//! host without its port), from its [`UpstreamUrl`], found by the `Backend`'s address. (The URL
//! is not carried in the `Backend`'s extensions: pingora-lb clones the selected `Backend` for
//! every request, and cloning a URL's strings cost allocations on every forwarded request.) Every check of
//! every pool goes through one connector, so the system's root certificates are loaded once
//! per process, not once per route and reload.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use mcp_edge_policies::upstream::UpstreamUrl;
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use pingora::lb::Backend;
use pingora::lb::health_check::HealthCheck;
use pingora::prelude::HttpPeer;
use pingora::protocols::tls::CaType;
use pingora::{Error, ErrorType, Result};

use crate::pool::Members;

/// The connector every health check uses (a connector loads the root certificates).
static CONNECTOR: LazyLock<Connector> = LazyLock::new(|| Connector::new(None));

pub struct McpHealthCheck {
    /// The route whose pool it checks (named in its log lines).
    pub route: String,
    /// The pool's replicas (their URLs found by the address a `Backend` names).
    pub members: Arc<ArcSwap<Members>>,
    pub timeout: Duration,
    /// The route's own CA (`ca_file`); `None`: the system roots.
    pub ca: Option<Arc<CaType>>,
    /// Why each replica's last check failed, for the line telling it became unhealthy
    /// (pingora-lb reports the change apart from the check). At most one per replica.
    pub last_failure: Mutex<HashMap<SocketAddr, String>>,
}

impl McpHealthCheck {
    pub fn new(route: &str, members: Arc<ArcSwap<Members>>, timeout: Duration, ca: Option<Arc<CaType>>) -> Self {
        McpHealthCheck { route: route.to_string(), members, timeout, ca, last_failure: Mutex::default() }
    }

    /// One check of the replica at `addr`.
    async fn probe(&self, url: &UpstreamUrl, target: &Backend) -> Result<()> {
        let mut peer = HttpPeer::new("0.0.0.0:1", url.tls, url.host.clone());
        peer._address = target.addr.clone();
        peer.options.connection_timeout = Some(self.timeout);
        peer.options.read_timeout = Some(self.timeout);
        peer.options.write_timeout = Some(self.timeout);
        peer.options.ca = self.ca.clone();
        let (mut session, _reused) = CONNECTOR.get_http_session(&peer).await?;
        session.set_write_timeout(peer.options.write_timeout);
        session.write_request_header(Box::new(probe_request(url)?)).await?;
        session.finish_request_body().await?;
        session.set_read_timeout(peer.options.read_timeout);
        session.read_response_header().await?;
        let status = session.response_header().map_or(500, |r| r.status.as_u16());
        if status >= 500 {
            return Error::e_explain(ErrorType::CustomCode("unhealthy upstream", status), "health check answered 5xx");
        }
        Ok(())
    }
}

/// The backend of one replica (nothing in its extensions: see the module doc).
pub fn backend_for(addr: SocketAddr) -> Backend {
    Backend { addr: addr.into(), weight: 1, ext: Default::default() }
}

/// The request a health check sends to `url`.
pub fn probe_request(url: &UpstreamUrl) -> Result<RequestHeader> {
    let mut request = RequestHeader::build("GET", url.path.as_bytes(), None)?;
    request.insert_header("Host", url.authority.as_str())?;
    request.insert_header("User-Agent", "mcp-edge-health")?;
    Ok(request)
}

#[async_trait]
impl HealthCheck for McpHealthCheck {
    async fn check(&self, target: &Backend) -> Result<()> {
        let members = self.members.load_full();
        let Some((addr, url)) = target.addr.as_inet().and_then(|addr| Some((*addr, &members.get(addr)?.url))) else {
            return Error::e_explain(ErrorType::InternalError, "a backend without its upstream URL");
        };
        let checked = self.probe(url, target).await;
        let mut last_failure = self.last_failure.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match &checked {
            Ok(()) => last_failure.remove(&addr),
            Err(e) => last_failure.insert(addr, crate::service::short_error(e)),
        };
        checked
    }

    /// One line per change, both ways, naming the route and the replica (pingora-lb's own
    /// lines, turned off in the default log filter, print its `Backend` in Rust's debug form).
    async fn health_status_change(&self, target: &Backend, healthy: bool) {
        let Some(addr) = target.addr.as_inet().copied() else { return };
        let members = self.members.load_full();
        let upstream = members.get(&addr).map_or_else(|| addr.to_string(), |u| u.label.clone());
        if healthy {
            tracing::info!(route = %self.route, %upstream, "upstream is healthy again");
        } else {
            let failure = self.last_failure.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).get(&addr).cloned();
            let error = failure.unwrap_or_default();
            tracing::warn!(route = %self.route, %upstream, %error, "upstream failed its health check; no requests go to it until it passes");
        }
    }

    fn health_threshold(&self, _success: bool) -> usize {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_replica_is_probed_with_its_own_host_and_path() {
        let url = UpstreamUrl::parse("https://localhost:41443/v1/mcp").unwrap();
        assert_eq!(url.host, "localhost", "the TLS server name has no port");
        let request = probe_request(&url).unwrap();
        assert_eq!(request.uri.path(), "/v1/mcp");
        assert_eq!(request.headers["host"], "localhost:41443");
    }
}
