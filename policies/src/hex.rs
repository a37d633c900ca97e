//! Lowercase hex, written by hand: request ids, `traceparent` and the shared tier's names are
//! written per request, where `format!("{b:02x}")` cost hundreds of nanoseconds.

/// Each byte's two hex digits.
const PAIRS: [[u8; 2]; 256] = {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut pairs = [[0; 2]; 256];
    let mut byte = 0;
    while byte < 256 {
        pairs[byte] = [DIGITS[byte >> 4], DIGITS[byte & 0xf]];
        byte += 1;
    }
    pairs
};

/// Writes `bytes` as hex into `out` (two digits a byte; `out` is as long as that).
pub fn write(out: &mut [u8], bytes: &[u8]) {
    for (pair, byte) in out.chunks_exact_mut(2).zip(bytes) {
        pair.copy_from_slice(&PAIRS[usize::from(*byte)]);
    }
}

/// Appends `bytes` as hex to `text`.
pub fn push(text: &mut String, bytes: &[u8]) {
    for byte in bytes {
        let [high, low] = PAIRS[usize::from(*byte)];
        text.push(char::from(high));
        text.push(char::from(low));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn bytes_are_written_most_significant_digit_first() {
        let mut out = [0; 16];
        super::write(&mut out, &0x0123_4567_89ab_cdefu64.to_be_bytes());
        assert_eq!(&out, b"0123456789abcdef");
        let mut text = String::from("x:");
        super::push(&mut text, &[0x00, 0xff, 0x5a]);
        assert_eq!(text, "x:00ff5a");
    }
}
