//! W3C Trace Context's `traceparent` header (<https://www.w3.org/TR/trace-context/>): read from a
//! client's request, written on the request mcp-edge sends upstream with its own span as the
//! parent. `tracestate` is passed on untouched (mcp-edge adds no member to it).

/// A `traceparent`'s fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    /// The caller's span (the parent of mcp-edge's).
    pub parent_id: [u8; 8],
    /// Bit 0: the caller sampled (records) this trace.
    pub flags: u8,
}

/// `00-` + 32 + `-` + 16 + `-` + 2 hex digits.
pub const LENGTH: usize = 55;

impl TraceParent {
    /// Reads a `traceparent` value; `None` for anything the specification says to ignore
    /// (then mcp-edge starts a new trace): a version other than `00` is read by its first four
    /// fields if it is longer, never `ff`; ids all zero are invalid; hex is lowercase.
    pub fn parse(value: &[u8]) -> Option<TraceParent> {
        let value = value.trim_ascii();
        if value.len() < LENGTH {
            return None;
        }
        let version = hex_byte(&value[..2])?;
        let well_framed = value[2] == b'-' && value[35] == b'-' && value[52] == b'-';
        // Version 00 is exactly this long; a later version may add fields after a dash.
        let length_fits =
            if version == 0 { value.len() == LENGTH } else { value.len() == LENGTH || value[LENGTH] == b'-' };
        if version == 0xff || !well_framed || !length_fits {
            return None;
        }
        let mut trace_id = [0; 16];
        let mut parent_id = [0; 8];
        for (i, byte) in trace_id.iter_mut().enumerate() {
            *byte = hex_byte(&value[3 + 2 * i..5 + 2 * i])?;
        }
        for (i, byte) in parent_id.iter_mut().enumerate() {
            *byte = hex_byte(&value[36 + 2 * i..38 + 2 * i])?;
        }
        let flags = hex_byte(&value[53..55])?;
        (trace_id != [0; 16] && parent_id != [0; 8]).then_some(TraceParent { trace_id, parent_id, flags })
    }

    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }

    /// The header's value (version `00`).
    pub fn render(&self) -> [u8; LENGTH] {
        let mut out = [b'-'; LENGTH];
        out[..2].copy_from_slice(b"00");
        crate::hex::write(&mut out[3..35], &self.trace_id);
        crate::hex::write(&mut out[36..52], &self.parent_id);
        crate::hex::write(&mut out[53..55], &[self.flags]);
        out
    }
}

fn hex_byte(two: &[u8]) -> Option<u8> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    Some(digit(two[0])? << 4 | digit(two[1])?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_specifications_example_reads_and_renders_back() {
        let parent = TraceParent::parse(EXAMPLE.as_bytes()).unwrap();
        assert_eq!(parent.trace_id[..4], [0x4b, 0xf9, 0x2f, 0x35]);
        assert_eq!(parent.parent_id, [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]);
        assert!(parent.sampled());
        assert_eq!(&parent.render(), EXAMPLE.as_bytes());
        let unsampled = TraceParent::parse(EXAMPLE.replace("-01", "-00").as_bytes()).unwrap();
        assert!(!unsampled.sampled());
    }

    #[test]
    fn what_the_specification_says_to_ignore_is_not_read() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        ] {
            assert_eq!(TraceParent::parse(bad.as_bytes()), None, "{bad:?}");
        }
    }

    #[test]
    fn a_later_version_is_read_by_its_first_fields() {
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-whatever";
        assert_eq!(TraceParent::parse(later.as_bytes()), TraceParent::parse(EXAMPLE.as_bytes()));
    }
}
