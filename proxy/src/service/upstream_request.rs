//! What the upstream is sent of a request: the path under the upstream URL's, the upstream's
//! `Host` (the client's goes in `X-Forwarded-Host`), `X-Forwarded-For` and `-Proto`, the
//! upstream's own session id, and never the internal prefetch marker, an `Expect` the proxy
//! answered, nor the client's `Accept-Encoding`: mcp-edge reads every answer (results to
//! cache, notifications that invalidate, server requests) and compresses for the client
//! itself, so the upstream is asked for the plain text (as nginx is told to when it must read
//! a body).

use std::sync::LazyLock;

use http::HeaderValue;
use http::header::{
    ACCEPT_ENCODING, CONNECTION, CONTENT_ENCODING, CONTENT_LENGTH, EXPECT, HOST, TRANSFER_ENCODING, UPGRADE,
};
use pingora::http::RequestHeader;
use pingora::proxy::Session;
use pingora::{Error, ErrorType, Result};

use mcp_edge_policies::routing::upstream_path;

use super::ctx::Ctx;
use super::head_edit::edit_request;
use super::respond::{client_ip, header_str, is_tls};
use crate::ip_text::IpText;
use crate::known_headers::{MCP_SESSION_ID, X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO, X_REQUEST_ID};

const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");
const TRACESTATE: http::HeaderName = http::HeaderName::from_static("tracestate");
use crate::prefetch::KIND_HEADER;

/// Rewrites `request` (Pingora's copy of the client's head) for the upstream `ctx` chose.
pub(super) fn rewrite(session: &Session, request: &mut RequestHeader, ctx: &Ctx) -> Result<()> {
    let Some(route) = ctx.route() else { return Ok(()) };
    let upstream = ctx.current_upstream().expect("upstream_peer ran");
    let original = request.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let path = upstream_path(&route.config.path, &upstream.url.path, original);
    // Rewritten only when the target on the wire would change (usually it does not).
    let new_uri = (path.as_bytes() != request.raw_path())
        .then(|| path.parse::<http::Uri>())
        .transpose()
        .map_err(|e| Error::because(ErrorType::InternalError, "upstream path", e))?;
    let client_host = session.req_header().headers.get(HOST).cloned();
    let client_host =
        client_host.or_else(|| request.uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()));
    let forwarded_for = forwarded_for(session)?;
    let via = via(session)?;
    let scheme = HeaderValue::from_static(if is_tls(session) { "https" } else { "http" });
    let upstream_session = (ctx
        .request
        .as_ref()
        .and_then(|request| request.admitted.pinned.as_ref())
        .map(|(_, id)| HeaderValue::from_str(id.as_str()))
        .transpose())
    .map_err(|e| Error::because(ErrorType::InvalidHTTPHeader, "upstream session id", e))?;
    let subject = subject_header(route, ctx)?;
    // A CORS preflight passed a protected route unchecked: it goes on without credentials.
    let unchecked_preflight =
        route.auth.is_some() && session.req_header().method == http::Method::OPTIONS && !verified(ctx);
    edit_request(request, new_uri, |headers| {
        if let Some((name, subject)) = subject {
            // The upstream trusts this header: only the edge writes it, and instead of the token.
            // Its twins with `_` for `-` go too (CGI-style servers read them as the same).
            drop_header_and_twins(headers, &name);
            if let Some(subject) = subject {
                headers.remove(http::header::AUTHORIZATION);
                headers.insert(name, subject);
            }
        }
        if unchecked_preflight {
            for credential in [http::header::AUTHORIZATION, http::header::COOKIE, MCP_SESSION_ID] {
                headers.remove(credential);
            }
        }
        headers.insert(HOST, upstream.host_header.clone());
        if let Some(host) = client_host {
            headers.insert(X_FORWARDED_HOST, host);
        }
        if let Some(chain) = forwarded_for {
            headers.insert(X_FORWARDED_FOR, chain);
        }
        headers.insert(X_FORWARDED_PROTO, scheme);
        headers.insert(http::header::VIA, via);
        if let Some(id) = ctx.request_id().and_then(|id| HeaderValue::from_str(id).ok()) {
            headers.insert(X_REQUEST_ID, id);
        }
        // A traced request's upstream hears of mcp-edge's span (`tracestate` passes as sent).
        if let Some((traceparent, new_trace)) = ctx.upstream_traceparent() {
            headers.insert(TRACEPARENT, traceparent);
            if new_trace {
                headers.remove(TRACESTATE);
            }
        }
        headers.remove(ACCEPT_ENCODING);
        if let Some(id) = upstream_session.filter(|_| !unchecked_preflight) {
            headers.insert(MCP_SESSION_ID, id);
        }
        if ctx.prefetch().is_some() {
            headers.remove(KIND_HEADER);
        }
        // An upgrade is never granted (MCP has none): the upstream is not asked for one, so the
        // request stays a plain request whose connection serves the next (RFC 9110 §7.8: a
        // server may ignore `Upgrade`). `Connection` is hop-by-hop, and names the upgrade.
        if headers.remove(UPGRADE).is_some() {
            headers.remove("http2-settings");
            headers.remove(CONNECTION);
        }
        if let Some(request) = ctx.request.as_ref().filter(|request| request.admitted.coding.is_some()) {
            forward_plain(headers, request.decoded_body.as_ref().map(|decoded| decoded.len()));
        }
        // The client was already told to send its body, which mcp-edge reads.
        if ctx.request.as_ref().is_some_and(|request| request.body_invited) {
            headers.remove(EXPECT);
        }
    })
}

fn verified(ctx: &Ctx) -> bool {
    ctx.request.as_ref().is_some_and(|request| request.admitted.verified.is_some())
}

/// Removes `name` and every header that is `name` once `_` or `.` is read as `-`.
fn drop_header_and_twins(headers: &mut http::HeaderMap, name: &http::HeaderName) {
    let twin = |other: &http::HeaderName| {
        let (a, b) = (other.as_str().as_bytes(), name.as_str().as_bytes());
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y || (matches!(*x, b'_' | b'.') && *y == b'-'))
    };
    let twins: Vec<http::HeaderName> = headers.keys().filter(|other| twin(other)).cloned().collect();
    for twin in twins {
        headers.remove(twin);
    }
}

/// The header naming the verified subject (`auth.subject_header`), and its value for this
/// request (`None`: no verified token, so no subject, and no client's say-so either).
fn subject_header(route: &crate::runtime::Route, ctx: &Ctx) -> Result<Option<(http::HeaderName, Option<HeaderValue>)>> {
    let Some(name) = route.auth.as_ref().and_then(|auth| auth.config.subject_header.as_deref()) else {
        return Ok(None);
    };
    let name = http::HeaderName::from_bytes(name.as_bytes())
        .map_err(|e| Error::because(ErrorType::InternalError, "auth.subject_header", e))?;
    let verified = ctx.request.as_ref().and_then(|request| request.admitted.verified.as_ref());
    let value = verified
        .map(|verified| HeaderValue::from_str(&verified.subject))
        .transpose()
        .map_err(|e| Error::because(ErrorType::InvalidHTTPHeader, "the token's subject is not a header value", e))?;
    Ok(Some((name, value)))
}

/// This process's name in `Via` (RFC 9110 §7.6.3): `mcp-edge-` and a random number drawn at
/// start, so a request that comes back to the process that forwarded it is recognised
/// ([`came_through_here`]), whatever address led it there (an upstream or a DNS answer naming
/// the edge itself).
static VIA_NAME: LazyLock<String> = LazyLock::new(|| {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher
        .write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    hasher.write_u32(std::process::id());
    format!("mcp-edge-{:016x}", hasher.finish())
});

/// Whether the request was forwarded by this very process (a loop).
pub(super) fn came_through_here(session: &Session) -> bool {
    session.req_header().headers.get_all(http::header::VIA).iter().any(|value| {
        value
            .to_str()
            .is_ok_and(|text| text.split(',').any(|hop| hop.split_whitespace().nth(1) == Some(VIA_NAME.as_str())))
    })
}

/// `Via`: the hops the request came through, and this one.
fn via(session: &Session) -> Result<HeaderValue> {
    let version = match session.req_header().version {
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_10 => "1.0",
        _ => "1.1",
    };
    let hop = format!("{version} {}", VIA_NAME.as_str());
    let earlier: Vec<&str> =
        session.req_header().headers.get_all(http::header::VIA).iter().filter_map(|v| v.to_str().ok()).collect();
    let chain = if earlier.is_empty() { hop } else { format!("{}, {hop}", earlier.join(", ")) };
    HeaderValue::try_from(chain).map_err(|e| Error::because(ErrorType::InvalidHTTPHeader, "Via", e))
}

/// `X-Forwarded-For`: the client's address after any the client's own proxies named.
fn forwarded_for(session: &Session) -> Result<Option<HeaderValue>> {
    let client = client_ip(session);
    let client = client.as_ref().map_or("", IpText::as_str);
    let chain = match header_str(session, &X_FORWARDED_FOR) {
        Some(earlier) if !client.is_empty() => format!("{earlier}, {client}"),
        Some(earlier) => earlier.to_string(),
        None if !client.is_empty() => client.to_string(),
        None => return Ok(None),
    };
    let invalid = |e| Error::because(ErrorType::InvalidHTTPHeader, "X-Forwarded-For", e);
    HeaderValue::try_from(chain).map(Some).map_err(invalid)
}

/// A compressed request body is forwarded decoded (see `body_coding`): no `Content-Encoding`,
/// and its decoded length (`decoded_len`, when read first), else chunked (a streamed body is
/// decoded once whole, after the head went out).
fn forward_plain(headers: &mut http::HeaderMap, decoded_len: Option<usize>) {
    headers.remove(CONTENT_ENCODING);
    headers.remove(CONTENT_LENGTH);
    headers.remove(TRANSFER_ENCODING);
    match decoded_len {
        Some(len) => headers.insert(CONTENT_LENGTH, HeaderValue::from(len)),
        None => headers.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked")),
    };
}
