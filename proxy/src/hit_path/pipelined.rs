//! Requests a client pipelines behind one the proxy service is answering.
//!
//! The hit path hands Pingora the one request it takes (all it has read, when it could not
//! tell where that request ends) and keeps what follows. While Pingora answers, it also keeps
//! reading the connection (to notice a client that leaves), so more of what follows may reach
//! it then. Left to itself, Pingora fails the request it is answering ("data after the end of
//! the body") or closes on the bytes behind it. With pipelining enabled it keeps them instead,
//! in order, and hands them back with the connection, in its `HttpPersistentSettings`. The
//! hit path reads them back ([`read_ahead`]) behind what it kept, and serves every request
//! that follows itself: hits from the cache, and refusals as JSON-RPC errors.
//!
//! Pingora has no accessor for those bytes, so they are read from the settings' `Debug` form
//! (the `bytes` crate writes them as a Rust byte string: `b"POST /mcp\r\n…"`), into a sink
//! that stops at once when the field is `None` (no allocation on the common path). The unit
//! tests below pin that form for every byte value: a Pingora or `bytes` upgrade that changes
//! it fails them, and until then a form the reader does not know is [`ReadAhead::Unreadable`],
//! which leaves those bytes to Pingora (the caller's fallback).

use std::fmt::{self, Write};

use pingora::apps::HttpPersistentSettings;

/// The field of `HttpPersistentSettings` holding the bytes read past the last request.
const PREFIX_FIELD: &str = "pipelined_prefix";

/// What Pingora read past the end of the request it answered.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum ReadAhead {
    Nothing,
    /// The start of the requests that follow, in the order they arrived.
    Bytes(Vec<u8>),
    /// Pingora holds bytes, or may, but their `Debug` form was not understood.
    Unreadable,
}

/// Reads what Pingora read past the end of the request it answered.
pub(super) fn read_ahead(settings: &HttpPersistentSettings) -> ReadAhead {
    let mut probe = FieldProbe::default();
    let _ = write!(probe, "{settings:?}");
    probe.read_ahead()
}

/// Where the `Debug` form being written is, for [`FieldProbe`].
#[derive(Default)]
enum Probe {
    #[default]
    BeforeField,
    /// The field's name was written: its value comes next (after `": "`).
    AtField,
    /// The field holds `Some`: the rest of the form is kept in `value`.
    InValue,
    /// The field holds `None`.
    Empty,
}

/// Finds [`PREFIX_FIELD`] as the `Debug` form is written: stops the formatting at once when it
/// is `None`, else keeps the rest of the form for [`decode_byte_string`].
#[derive(Default)]
struct FieldProbe {
    state: Probe,
    value: String,
}

impl Write for FieldProbe {
    fn write_str(&mut self, written: &str) -> fmt::Result {
        match (&self.state, written) {
            (Probe::BeforeField, PREFIX_FIELD) => self.state = Probe::AtField,
            (Probe::BeforeField, _) | (Probe::AtField, ": ") => {}
            (Probe::AtField, value) if value.starts_with("None") => {
                self.state = Probe::Empty;
                // Nothing more is needed: stop formatting.
                return Err(fmt::Error);
            }
            (Probe::AtField, value) => {
                self.state = Probe::InValue;
                self.value.push_str(value);
            }
            (Probe::InValue, value) => self.value.push_str(value),
            (Probe::Empty, _) => return Err(fmt::Error),
        }
        Ok(())
    }
}

impl FieldProbe {
    /// What the form written so far says Pingora read ahead.
    fn read_ahead(self) -> ReadAhead {
        match self.state {
            Probe::Empty => ReadAhead::Nothing,
            Probe::InValue => decode_byte_string(&self.value).map_or(ReadAhead::Unreadable, ReadAhead::Bytes),
            Probe::BeforeField | Probe::AtField => ReadAhead::Unreadable,
        }
    }
}

/// The bytes of `Some(b"…")` (and whatever follows it), as the `bytes` crate writes them:
/// printable ASCII as itself, `\n`, `\r`, `\t`, `\\`, `\"`, `\0`, and `\xNN` for the rest.
/// Anything else is not that form: `None`.
fn decode_byte_string(text: &str) -> Option<Vec<u8>> {
    let mut rest = text.strip_prefix("Some(b\"")?.as_bytes();
    let mut bytes = Vec::with_capacity(rest.len());
    loop {
        let (byte, tail) = match rest {
            [b'"', b')', ..] => return Some(bytes),
            [b'\\', b'x', high, low, tail @ ..] => (hex_digit(*high)? << 4 | hex_digit(*low)?, tail),
            [b'\\', escaped, tail @ ..] => (unescape(*escaped)?, tail),
            [byte, tail @ ..] if (0x20..0x7f).contains(byte) && !matches!(byte, b'"' | b'\\') => (*byte, tail),
            _ => return None,
        };
        bytes.push(byte);
        rest = tail;
    }
}

fn unescape(escaped: u8) -> Option<u8> {
    Some(match escaped {
        b'n' => b'\n',
        b'r' => b'\r',
        b't' => b'\t',
        b'0' => 0,
        b'\\' | b'"' => escaped,
        _ => return None,
    })
}

/// A lower-case hexadecimal digit's value (the form writes `{:02x}`).
fn hex_digit(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        _ => None,
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
    async fn reads_back_what_pingora_read_ahead() {
        assert_eq!(read_ahead(&settings(None).await), ReadAhead::Nothing);
        let next = b"POST /mcp HTTP/1.1\r\nHost: a\r\n";
        assert_eq!(read_ahead(&settings(Some(next)).await), ReadAhead::Bytes(next.to_vec()));
        // Bytes that look like the field or the form change nothing.
        for tricky in [&b"pipelined_prefix: None"[..], b"\")", b"\\x41\\", b"", b"Some(b\""] {
            assert_eq!(read_ahead(&settings(Some(tricky)).await), ReadAhead::Bytes(tricky.to_vec()));
        }
    }

    /// Pins the `Debug` form: every byte value comes back as it was, in any order.
    #[tokio::test]
    async fn every_byte_value_comes_back() {
        let mut every: Vec<u8> = (0..=255).collect();
        every.extend((0..=255u8).rev());
        assert_eq!(read_ahead(&settings(Some(&every)).await), ReadAhead::Bytes(every));
    }

    #[test]
    fn an_unknown_form_is_unreadable() {
        let read_from = |form: &str| {
            let mut probe = FieldProbe::default();
            let _ = probe.write_str(PREFIX_FIELD);
            let _ = probe.write_str(": ");
            let _ = probe.write_str(form);
            probe.read_ahead()
        };
        for form in ["Some([80, 79])", "Some(b\"\\u{7f}\")", "Some(b\"\\x4G\")", "Some(b\"\u{e9}\")", "Some(b\"open"] {
            assert_eq!(read_from(form), ReadAhead::Unreadable, "{form}");
        }
        let mut probe = FieldProbe::default();
        let _ = write!(probe, "Settings {{ other: None }}");
        assert_eq!(probe.read_ahead(), ReadAhead::Unreadable);
    }
}
