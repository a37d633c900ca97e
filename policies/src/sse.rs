//! An incremental Server-Sent Events parser (WHATWG): lines end in LF, CRLF or CR; `data:`
//! lines of one event join with `\n`; one space after the colon is dropped; `:` lines are
//! comments. Only `data` matters to mcp-edge, so only data is returned.

#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    data: Vec<u8>,
    has_data: bool,
    /// The previous chunk ended in CR: a LF starting the next chunk belongs to it.
    after_cr: bool,
    /// Bytes buffered for the current event; past `limit` the event is dropped.
    limit: usize,
    overflowed: bool,
}

impl SseParser {
    /// A parser that drops any single event larger than `limit` bytes.
    pub fn new(limit: usize) -> Self {
        SseParser { limit, ..Default::default() }
    }

    /// Feeds a chunk; returns the data of every event it completed.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<String> {
        let mut events = Vec::new();
        for &byte in chunk {
            if self.after_cr {
                self.after_cr = false;
                if byte == b'\n' {
                    continue;
                }
            }
            match byte {
                b'\n' => self.end_line(&mut events),
                b'\r' => {
                    self.end_line(&mut events);
                    self.after_cr = true;
                }
                _ if self.line.len() + self.data.len() < self.limit => self.line.push(byte),
                _ => self.overflowed = true,
            }
        }
        events
    }

    fn end_line(&mut self, events: &mut Vec<String>) {
        let line = std::mem::take(&mut self.line);
        if line.is_empty() {
            // A blank line dispatches the event.
            if self.has_data && !self.overflowed {
                events.push(String::from_utf8_lossy(&self.data).into_owned());
            }
            self.data.clear();
            self.has_data = false;
            self.overflowed = false;
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(at) => {
                let value = &line[at + 1..];
                (&line[..at], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (&line[..], &b""[..]),
        };
        if field == b"data" {
            if self.has_data {
                self.data.push(b'\n');
            }
            self.data.extend_from_slice(value);
            self.has_data = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lf_crlf_and_cr_endings() {
        for text in ["data: a\n\ndata: b\n\n", "data: a\r\n\r\ndata: b\r\n\r\n", "data: a\r\rdata: b\r\r"] {
            assert_eq!(SseParser::new(1 << 20).feed(text.as_bytes()), vec!["a", "b"], "{text:?}");
        }
    }

    #[test]
    fn events_split_anywhere_across_chunks() {
        let text = "event: message\r\nid: 1\r\ndata: {\"x\":\r\ndata: 1}\r\n\r\n: comment\n\ndata:y\n\n";
        for split in 0..text.len() {
            let mut parser = SseParser::new(1 << 20);
            let mut events = parser.feed(&text.as_bytes()[..split]);
            events.extend(parser.feed(&text.as_bytes()[split..]));
            assert_eq!(events, vec!["{\"x\":\n1}", "y"], "split at {split}");
        }
    }

    #[test]
    fn priming_events_without_data_are_skipped_and_huge_events_dropped() {
        assert_eq!(SseParser::new(1 << 20).feed(b"id: 7\ndata:\n\n"), vec![""]);
        assert!(SseParser::new(1 << 20).feed(b"id: 7\n\n").is_empty());
        let mut small = SseParser::new(8);
        assert_eq!(small.feed(b"data: 0123456789\n\ndata: ok\n\n"), vec!["ok"]);
    }
}
