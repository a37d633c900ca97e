//! Answers the proxy service writes itself (errors, cached and stale answers), and what it reads
//! of the client's session.

use bytes::Bytes;
use pingora::Result;
use pingora::protocols::l4::socket::SocketAddr;
use pingora::proxy::Session;

use super::ctx::Ctx;
use crate::answer::{self, CachedAnswer, Outcome};
use crate::error::EdgeError;
use crate::known_headers::KnownHeaders;
use crate::runtime::Route;

pub(super) fn header_str<'a>(session: &'a Session, name: &http::HeaderName) -> Option<&'a str> {
    session.req_header().headers.get(name).and_then(|value| value.to_str().ok())
}

/// The request's headers the guards read (one pass over Pingora's parsed head).
pub(super) fn known_headers<'a>(session: &'a Session, route: &Route) -> KnownHeaders<'a> {
    KnownHeaders::from_map(&session.req_header().headers, &route.config.policy.identity_header)
}

pub(super) fn client_addr(session: &Session) -> Option<std::net::IpAddr> {
    match session.client_addr() {
        Some(SocketAddr::Inet(addr)) => Some(addr.ip()),
        _ => None,
    }
}

/// The client's IP address as text (`None` on a Unix socket).
pub(super) fn client_ip(session: &Session) -> Option<IpText> {
    client_addr(session).map(IpText::of)
}

/// An IP address as text, written on the stack: it is read for every forwarded request.
pub(super) struct IpText {
    text: [u8; IpText::LONGEST],
    len: usize,
}

impl IpText {
    /// `ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255`
    const LONGEST: usize = 45;

    pub(super) fn of(ip: std::net::IpAddr) -> IpText {
        let mut text = [0; IpText::LONGEST];
        let len = match ip {
            // Written octet by octet: through `core::fmt` this took about 1 100 instructions of
            // every forwarded request (callgrind), several times what it does now.
            std::net::IpAddr::V4(v4) => {
                let mut len = 0;
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        text[len] = b'.';
                        len += 1;
                    }
                    let mut digits = itoa::Buffer::new();
                    let digits = digits.format(octet).as_bytes();
                    text[len..len + digits.len()].copy_from_slice(digits);
                    len += digits.len();
                }
                len
            }
            std::net::IpAddr::V6(v6) => {
                use std::io::Write;
                let mut rest = &mut text[..];
                // An address's text always fits.
                let _ = write!(rest, "{v6}");
                IpText::LONGEST - rest.len()
            }
        };
        IpText { text, len }
    }

    pub(super) fn as_str(&self) -> &str {
        std::str::from_utf8(&self.text[..self.len]).unwrap_or_default()
    }
}

pub(super) fn is_tls(session: &Session) -> bool {
    session.digest().is_some_and(|d| d.ssl_digest.is_some())
}

/// Answers the request with a JSON-RPC error; `Ok(true)` tells Pingora the response is sent.
pub(super) async fn reject(session: &mut Session, refused: EdgeError) -> Result<bool> {
    let headers = [("x-cache", Outcome::Bypass.as_str())].into_iter().chain(refused.extra_headers().iter().copied());
    // The request body may be unread (rejected before reading): don't reuse the connection.
    respond(session, refused.status(), Bytes::from(refused.body(None)), headers, false).await?;
    Ok(true)
}

/// A cached entry as the answer to this request.
pub(super) fn render_cached<'a>(
    session: &'a Session,
    ctx: &Ctx,
    entry: &'a [u8],
    outcome: Outcome,
) -> Option<CachedAnswer<'a>> {
    let compression = &ctx.snapshot()?.config.compression;
    let id = ctx.rpc_id().unwrap_or("null");
    let accepts_gzip = ctx.request.as_ref().is_some_and(|request| request.accepts_gzip);
    answer::render(
        entry,
        id,
        outcome,
        compression,
        accepts_gzip,
        header_str(session, &crate::known_headers::MCP_SESSION_ID),
    )
}

/// A cached answer copied out of the request it borrows, so that the session can be written to.
pub(super) struct OwnedAnswer {
    body: Bytes,
    headers: Vec<(&'static str, String)>,
}

impl From<CachedAnswer<'_>> for OwnedAnswer {
    fn from(answer: CachedAnswer<'_>) -> OwnedAnswer {
        let headers = answer.headers().map(|(name, value)| (name, value.to_string())).collect();
        OwnedAnswer { body: answer.body.to_bytes(), headers }
    }
}

/// Writes a cached answer (200).
pub(super) async fn respond_cached(session: &mut Session, answer: OwnedAnswer, keep_alive: bool) -> Result<()> {
    let headers = answer.headers.iter().map(|(name, value)| (*name, value.as_str()));
    respond(session, 200, answer.body, headers, keep_alive).await
}

/// Writes a whole `application/json` response (see `crate::respond`), closing the connection
/// after it unless `keep_alive`.
pub(super) async fn respond(
    session: &mut Session,
    status: u16,
    body: Bytes,
    headers: impl IntoIterator<Item = (&'static str, &str)>,
    keep_alive: bool,
) -> Result<()> {
    if !keep_alive {
        session.set_keepalive(None);
    }
    crate::respond::write_whole(session.as_downstream_mut(), status, body, headers).await
}

#[cfg(test)]
mod tests {
    use super::IpText;

    #[test]
    fn addresses_are_written_as_std_writes_them() {
        for ip in [
            "127.0.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "10.20.3.100",
            "::1",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "::ffff:255.255.255.255",
            "2001:db8::8a2e:370:7334",
        ] {
            let parsed: std::net::IpAddr = ip.parse().unwrap();
            assert_eq!(IpText::of(parsed).as_str(), parsed.to_string());
        }
    }
}
