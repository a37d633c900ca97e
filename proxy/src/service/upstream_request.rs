//! What the upstream is sent of a request: the path under the upstream URL's, the upstream's
//! `Host` (the client's goes in `X-Forwarded-Host`), `X-Forwarded-For` and `-Proto`, the
//! upstream's own session id, and never the internal prefetch marker.

use pingora::http::RequestHeader;
use pingora::proxy::Session;
use pingora::{Error, ErrorType, Result};

use mcp_edge_policies::routing::upstream_path;

use super::ctx::Ctx;
use super::respond::{IpText, client_ip, header_str, is_tls};
use crate::known_headers::X_FORWARDED_FOR;
use crate::prefetch::KIND_HEADER;

/// Rewrites `request` (Pingora's copy of the client's head) for the upstream `ctx` chose.
pub(super) fn rewrite(session: &Session, request: &mut RequestHeader, ctx: &Ctx) -> Result<()> {
    let route = ctx.route().expect("request_filter ran");
    let upstream = &route.pool.upstreams[ctx.current_upstream().expect("upstream_peer ran")];
    let original = request.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let path = upstream_path(&route.config.path, &upstream.url.path, original);
    // Rewritten only when the target on the wire would change (usually it does not).
    if path.as_bytes() != request.raw_path() {
        let uri =
            path.parse::<http::Uri>().map_err(|e| Error::because(ErrorType::InternalError, "upstream path", e))?;
        request.set_uri(uri);
    }

    let client_host = session.req_header().headers.get(http::header::HOST).cloned();
    let client_host =
        client_host.or_else(|| request.uri.authority().and_then(|a| http::HeaderValue::from_str(a.as_str()).ok()));
    request.insert_header("host", upstream.host_header.clone())?;
    if let Some(host) = client_host {
        request.insert_header("x-forwarded-host", host)?;
    }
    let client = client_ip(session);
    let client = client.as_ref().map_or("", IpText::as_str);
    let forwarded_for = match header_str(session, &X_FORWARDED_FOR) {
        Some(earlier) if !client.is_empty() => Some(format!("{earlier}, {client}")),
        Some(earlier) => Some(earlier.to_string()),
        None => None,
    };
    match forwarded_for {
        Some(chain) => request.insert_header("x-forwarded-for", chain)?,
        None if !client.is_empty() => request.insert_header("x-forwarded-for", client)?,
        None => {}
    }
    let scheme = if is_tls(session) { "https" } else { "http" };
    request.insert_header("x-forwarded-proto", http::HeaderValue::from_static(scheme))?;
    if let Some(upstream_session) = &ctx.upstream_session {
        request.insert_header("mcp-session-id", upstream_session.as_str())?;
    }
    if ctx.prefetch.is_some() {
        request.remove_header(KIND_HEADER);
    }
    Ok(())
}
