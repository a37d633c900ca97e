//! Whole answers mcp-edge writes itself through a Pingora session: an HTTP/2 front's hits and
//! refusals, and the proxy service's errors and stale answers. (The HTTP/1.1 front writes its
//! own on the wire: `front::wire`.) What is written is rendered once, elsewhere: a cached
//! answer by `answer`, an error by `error::EdgeError`.

use bytes::Bytes;
use pingora::Result;
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession;

/// Writes a whole `application/json` response (dated, as the HTTP/1.1 front's hits are).
pub async fn write_whole(
    session: &mut ServerSession,
    status: u16,
    body: Bytes,
    headers: impl IntoIterator<Item = (&'static str, &str)>,
) -> Result<()> {
    let mut header = ResponseHeader::build(status, Some(4))?;
    header.insert_header("content-type", "application/json")?;
    header.insert_header("content-length", body.len().to_string())?;
    for (name, value) in headers {
        header.insert_header(name, value)?;
    }
    header.insert_header("date", pingora::protocols::http::date::get_cached_date())?;
    session.write_response_header(Box::new(header)).await?;
    session.write_response_body(body, true).await?;
    Ok(())
}
