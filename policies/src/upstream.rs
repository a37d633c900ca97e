//! Upstream URLs (`http://host:port/path`, `https://…`) and their stable short ids.

use sha2::{Digest, Sha256};

/// A parsed upstream URL of a route's pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    /// The URL as written in the configuration.
    pub url: String,
    pub tls: bool,
    /// Host name or IP literal, without brackets.
    pub host: String,
    pub port: u16,
    /// The URL's authority as written (`host[:port]`), sent as the `Host` header: MCP servers
    /// bound to localhost check it against DNS rebinding.
    pub authority: String,
    /// Path and query the route's requests are sent to (e.g. `/mcp`).
    pub path: String,
    /// Stable id derived from the URL, used in edge session ids (see `affinity`).
    pub id: String,
    /// For an `srv+http(s)://_service._proto.name/path` URL, the SRV name whose records give
    /// the replicas' addresses, ports and weights; `host` (the TLS server name) and
    /// `authority` (the `Host` header) are then the name without `_service._proto.`.
    pub srv: Option<String>,
}

impl UpstreamUrl {
    /// Parses `http(s)://host[:port][/path]`, or `srv+http(s)://_service._proto.name[/path]`.
    pub fn parse(url: &str) -> Result<Self, String> {
        if let Some(plain) = url.strip_prefix("srv+") {
            return Self::parse_srv(url, plain);
        }
        if !url.contains("://") {
            return Err(format!("upstream {url:?} needs a scheme, e.g. \"http://{url}\""));
        }
        if url.contains('#') {
            return Err(format!("upstream {url:?} has a fragment (#…): it is never sent"));
        }
        let uri: http::Uri = url.parse().map_err(|e| format!("upstream {url:?} is not a valid URL: {e}"))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            Some(other) => {
                return Err(format!("upstream {url:?} has scheme {other:?}; use http or https"));
            }
            None => return Err(format!("upstream {url:?} is not a valid URL")),
        };
        let authority = uri.authority().ok_or_else(|| format!("upstream {url:?} has no host"))?;
        if authority.as_str().contains('@') {
            return Err(format!("upstream {url:?} must not carry credentials in the URL"));
        }
        let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_string();
        if host.is_empty() {
            return Err(format!("upstream {url:?} has no host"));
        }
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        if port == 0 {
            return Err(format!("upstream {url:?}: port 0 is not a port to connect to"));
        }
        let path = match uri.path_and_query() {
            Some(pq) if !pq.as_str().is_empty() => pq.as_str().to_string(),
            _ => "/".to_string(),
        };
        Ok(UpstreamUrl {
            url: url.to_string(),
            tls,
            authority: authority.as_str().to_string(),
            host,
            port,
            path,
            id: upstream_id(url),
            srv: None,
        })
    }

    /// An SRV URL: no port (the records give them); its `Host` header is the name without its
    /// `_service._proto.` labels.
    fn parse_srv(url: &str, plain: &str) -> Result<Self, String> {
        let parsed = Self::parse(plain).map_err(|e| e.replace(plain, url))?;
        let labels: Vec<&str> = parsed.host.split('.').collect();
        let named = labels.len() > 2 && labels[0].starts_with('_') && labels[1].starts_with('_');
        if !named {
            return Err(format!("upstream {url:?}: an SRV name starts with _service._proto. (e.g. _mcp._tcp.mcp.svc)"));
        }
        if parsed.authority.ends_with(&format!(":{}", parsed.port)) {
            return Err(format!("upstream {url:?}: an SRV URL takes no port (its records give the ports)"));
        }
        let service_domain = labels[2..].join(".");
        Ok(UpstreamUrl {
            url: url.to_string(),
            authority: service_domain.clone(),
            id: upstream_id(url),
            srv: Some(parsed.host.clone()),
            host: service_domain,
            ..parsed
        })
    }
}

/// The first 8 hex digits of SHA-256 of the URL: the same on every node and across restarts,
/// so an edge session id minted by one mcp-edge can be routed by another.
pub fn upstream_id(url: &str) -> String {
    let digest = Sha256::digest(url.as_bytes());
    digest[..4].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_srv_urls() {
        let u = UpstreamUrl::parse("srv+https://_mcp._tcp.mcp.svc.cluster.local/v1/mcp").unwrap();
        assert!(u.tls);
        assert_eq!(u.srv.as_deref(), Some("_mcp._tcp.mcp.svc.cluster.local"));
        assert_eq!(u.path, "/v1/mcp");
        assert_eq!(u.authority, "mcp.svc.cluster.local", "the Host header: the service's domain");
        assert_eq!(u.host, "mcp.svc.cluster.local", "and the TLS server name");
        assert_eq!(u.url, "srv+https://_mcp._tcp.mcp.svc.cluster.local/v1/mcp");
        assert!(UpstreamUrl::parse("http://mcp.svc/mcp").unwrap().srv.is_none());
        let refused = |url: &str| UpstreamUrl::parse(url).unwrap_err();
        assert!(refused("srv+http://_mcp._tcp.mcp.svc:8080/mcp").contains("takes no port"));
        assert!(refused("srv+http://_mcp._tcp.mcp.svc/mcp?x=1#frag").contains("fragment"));
        assert!(refused("http://mcp.svc:0/mcp").contains("port 0"));
        assert!(refused("srv+http://mcp.svc/mcp").contains("_service._proto."));
        assert!(
            refused("srv+ftp://_mcp._tcp.mcp.svc/mcp").contains("srv+ftp://"),
            "{}",
            refused("srv+ftp://_mcp._tcp.x/mcp")
        );
    }

    #[test]
    fn parses_plain_and_tls_urls() {
        let u = UpstreamUrl::parse("http://127.0.0.1:3001/mcp").unwrap();
        assert!(!u.tls);
        assert_eq!((u.host.as_str(), u.port, u.path.as_str()), ("127.0.0.1", 3001, "/mcp"));
        assert_eq!(u.authority, "127.0.0.1:3001");
        assert_eq!(UpstreamUrl::parse("https://example.com/mcp").unwrap().authority, "example.com");
        let t = UpstreamUrl::parse("https://mcp.example.com/v1/mcp?x=1").unwrap();
        assert!(t.tls);
        assert_eq!((t.port, t.path.as_str()), (443, "/v1/mcp?x=1"));
        let v6 = UpstreamUrl::parse("http://[::1]:8000").unwrap();
        assert_eq!((v6.host.as_str(), v6.authority.as_str(), v6.path.as_str()), ("::1", "[::1]:8000", "/"));
    }

    #[test]
    fn rejects_bad_urls_with_reasons() {
        assert!(UpstreamUrl::parse("127.0.0.1:3001/mcp").unwrap_err().contains("scheme"));
        assert!(UpstreamUrl::parse("ftp://h/mcp").unwrap_err().contains("use http or https"));
        assert!(UpstreamUrl::parse("http://user:pw@h/mcp").unwrap_err().contains("credentials"));
        assert!(UpstreamUrl::parse("http:// bad").unwrap_err().contains("not a valid URL"));
    }

    #[test]
    fn ids_are_stable_and_distinct() {
        let a = upstream_id("http://127.0.0.1:3001/mcp");
        assert_eq!(a.len(), 8);
        assert_eq!(a, upstream_id("http://127.0.0.1:3001/mcp"));
        assert_ne!(a, upstream_id("http://127.0.0.1:3002/mcp"));
    }
}
