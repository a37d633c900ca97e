//! Where a chunked request body ends (RFC 9112 §7.1), found as its bytes go by: the front
//! hands Pingora exactly one request (see `one_request`), so it must know where a chunked body
//! ends without reading it for Pingora. Only the framing is followed; Pingora reads the body
//! itself, and refuses what it finds malformed.

/// How far a chunked body has gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ChunkedEnd {
    /// In a chunk-size line (its hex digits so far, and whether its extension began).
    Size { size: u64, digits: u8, in_extension: bool, cr: bool },
    /// In a chunk's data: how many bytes are left.
    Data(u64),
    /// After a chunk's data: its CRLF (`true` once the CR was seen).
    DataEnd { cr: bool },
    /// After the last chunk: trailer lines, ended by an empty line (`line_len` of the current
    /// line, `cr` once its CR was seen).
    Trailers { line_len: usize, cr: bool },
    /// The body is over.
    Done,
    /// Not chunked framing: its end cannot be told (the connection is not reused).
    Broken,
}

/// The longest chunk size taken, in hex digits (16: a u64).
const MAX_SIZE_DIGITS: u8 = 16;

impl ChunkedEnd {
    pub(super) fn new() -> ChunkedEnd {
        ChunkedEnd::Size { size: 0, digits: 0, in_extension: false, cr: false }
    }

    /// Follows `bytes`, the body's next ones; returns how many of them belong to the body
    /// (all of them unless it ended within them).
    pub(super) fn feed(&mut self, bytes: &[u8]) -> usize {
        let mut at = 0;
        while at < bytes.len() {
            match self {
                ChunkedEnd::Done | ChunkedEnd::Broken => break,
                ChunkedEnd::Data(left) => {
                    let taken = (*left).min((bytes.len() - at) as u64);
                    *left -= taken;
                    at += taken as usize;
                    if *left == 0 {
                        *self = ChunkedEnd::DataEnd { cr: false };
                    }
                }
                _ => {
                    self.step(bytes[at]);
                    at += 1;
                }
            }
        }
        at
    }

    /// One byte of the framing (outside chunk data).
    fn step(&mut self, byte: u8) {
        *self = match std::mem::replace(self, ChunkedEnd::Broken) {
            ChunkedEnd::Size { size, digits, in_extension, cr: false } => match byte {
                b'\r' if digits > 0 => ChunkedEnd::Size { size, digits, in_extension, cr: true },
                _ if in_extension => ChunkedEnd::Size { size, digits, in_extension, cr: false },
                b';' | b' ' | b'\t' if digits > 0 => ChunkedEnd::Size { size, digits, in_extension: true, cr: false },
                _ => match (byte as char).to_digit(16) {
                    Some(digit) if digits < MAX_SIZE_DIGITS => {
                        ChunkedEnd::Size { size: size << 4 | digit as u64, digits: digits + 1, in_extension, cr: false }
                    }
                    _ => ChunkedEnd::Broken,
                },
            },
            ChunkedEnd::Size { size: 0, cr: true, .. } if byte == b'\n' => {
                ChunkedEnd::Trailers { line_len: 0, cr: false }
            }
            ChunkedEnd::Size { size, cr: true, .. } if byte == b'\n' => ChunkedEnd::Data(size),
            ChunkedEnd::DataEnd { cr: false } if byte == b'\r' => ChunkedEnd::DataEnd { cr: true },
            ChunkedEnd::DataEnd { cr: true } if byte == b'\n' => ChunkedEnd::new(),
            ChunkedEnd::Trailers { line_len, cr: false } if byte == b'\r' => {
                ChunkedEnd::Trailers { line_len, cr: true }
            }
            ChunkedEnd::Trailers { line_len: 0, cr: true } if byte == b'\n' => ChunkedEnd::Done,
            ChunkedEnd::Trailers { cr: true, .. } if byte == b'\n' => ChunkedEnd::Trailers { line_len: 0, cr: false },
            ChunkedEnd::Trailers { line_len, cr: false } => ChunkedEnd::Trailers { line_len: line_len + 1, cr: false },
            _ => ChunkedEnd::Broken,
        };
    }

    pub(super) fn is_done(&self) -> bool {
        *self == ChunkedEnd::Done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end_of(body: &[u8]) -> (usize, ChunkedEnd) {
        let mut end = ChunkedEnd::new();
        let taken = end.feed(body);
        (taken, end)
    }

    #[test]
    fn finds_the_end_of_a_chunked_body() {
        let body = b"5\r\nhello\r\n1a;name=v\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\n";
        let mut next = body.to_vec();
        next.extend_from_slice(b"POST /mcp HTTP/1.1\r\n");
        assert_eq!(end_of(&next), (body.len(), ChunkedEnd::Done));
        let trailers = b"3\r\nabc\r\n0\r\nX-T: 1\r\nX-U: 2\r\n\r\nnext";
        assert_eq!(end_of(trailers), (trailers.len() - 4, ChunkedEnd::Done));
    }

    #[test]
    fn finds_it_one_byte_at_a_time() {
        let body = b"A\r\n0123456789\r\n0\r\nX: y\r\n\r\n";
        let mut end = ChunkedEnd::new();
        for (i, byte) in body.iter().enumerate() {
            assert!(!end.is_done(), "done early at {i}");
            assert_eq!(end.feed(std::slice::from_ref(byte)), 1);
        }
        assert!(end.is_done());
        assert_eq!(end.feed(b"more"), 0);
    }

    #[test]
    fn a_body_not_chunked_is_broken() {
        for body in [&b"zz\r\n"[..], b"\r\n", b"5\n", b"5\r\nhello!!", b"11111111111111111\r\n"] {
            assert_eq!(end_of(body).1, ChunkedEnd::Broken, "{body:?}");
        }
    }
}
