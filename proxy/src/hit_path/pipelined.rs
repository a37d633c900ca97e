//! Requests a client pipelines behind one the proxy service is answering.
//!
//! The hit path hands Pingora all it has read: the request and whatever followed it. While
//! Pingora answers, it also keeps reading the connection (to notice a client that leaves), so
//! more of what follows may reach it then. Left to itself, Pingora fails the request it is
//! answering ("data after the end of the body") or closes on the bytes behind it. With
//! pipelining enabled it keeps them instead, in order, and hands them back with the
//! connection, in its `HttpPersistentSettings`, for the next session to parse: the requests
//! they start are served by Pingora too, one after the other, and the hit path takes the
//! connection back once nothing read ahead is left.
//!
//! Pingora has no accessor for those bytes, so whether the settings hold any is read from
//! their `Debug` form, into a sink that stops at the one field it looks for (no allocation).
//! The unit tests below pin that form: a Pingora upgrade that changes it fails them, and
//! until then an unreadable answer counts as "bytes held" (served by Pingora: slower, never
//! lost).

use std::fmt::{self, Write};

use pingora::apps::HttpPersistentSettings;

/// The field of `HttpPersistentSettings` holding the bytes read past the last request.
const PREFIX_FIELD: &str = "pipelined_prefix";

/// Whether Pingora handed back bytes of a request that follows the one it answered.
pub(super) fn holds_next_request(settings: &HttpPersistentSettings) -> bool {
    let mut probe = FieldProbe::default();
    let _ = write!(probe, "{settings:?}");
    probe.is_some.unwrap_or(true)
}

/// Reads whether [`PREFIX_FIELD`] is `Some` as the `Debug` form is written, then stops it.
#[derive(Default)]
struct FieldProbe {
    at_field: bool,
    is_some: Option<bool>,
}

impl Write for FieldProbe {
    fn write_str(&mut self, written: &str) -> fmt::Result {
        match (self.at_field, written) {
            (false, PREFIX_FIELD) => self.at_field = true,
            (false, _) | (true, ": ") => {}
            (true, value) => {
                self.is_some = Some(value.starts_with("Some"));
                // Nothing more is needed: stop formatting.
                return Err(fmt::Error);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use pingora::protocols::http::ServerSession;

    use super::*;

    async fn settings(prefix: Option<&[u8]>) -> HttpPersistentSettings {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let stream: pingora::protocols::l4::stream::Stream = client.into();
        let session = ServerSession::new_http1(Box::new(stream));
        let mut settings = HttpPersistentSettings::for_session(&session);
        if let Some(prefix) = prefix {
            settings.set_pipelined_prefix(BytesMut::from(prefix));
        }
        settings
    }

    #[tokio::test]
    async fn reads_whether_pingora_holds_bytes_of_the_next_request() {
        assert!(!holds_next_request(&settings(None).await));
        assert!(holds_next_request(&settings(Some(b"POST /mcp HTTP/1.1\r\n")).await));
        // Bytes that look like the field's name change nothing.
        assert!(holds_next_request(&settings(Some(b"pipelined_prefix: None")).await));
    }

    #[test]
    fn an_unreadable_form_counts_as_bytes_held() {
        let mut probe = FieldProbe::default();
        let _ = write!(probe, "Settings {{ other: None }}");
        assert_eq!(probe.is_some, None);
    }
}
