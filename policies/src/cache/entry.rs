//! The stored form of an answer (a fixed header, the result's raw JSON, optionally its deflated
//! form) and the hit written from it.

/// A stored answer: a fixed header, the result's raw JSON (without `ttlMs`), and optionally the
/// same result pre-compressed for gzip answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<'a> {
    /// Wall-clock milliseconds when the upstream fetch began (invalidations after it win).
    pub fetched_at_ms: u64,
    pub expires_at_ms: u64,
    pub restate_ttl: bool,
    /// It lives on mcp-edge's own TTL, not on one the server gave (`ttlMs`): a write through
    /// the route may have changed it (`invalidate_on_write = "unhinted"`).
    pub own_ttl: bool,
    pub result: &'a [u8],
    /// `result` minus its opening `{`, deflated once at store time (see [`Answer`]).
    pub deflated: Option<Deflated<'a>>,
}

/// A raw deflate segment ending on a byte boundary (sync flush, not final), with the CRC-32 of
/// what it inflates to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deflated<'a> {
    pub crc32: u32,
    pub bytes: &'a [u8],
}

/// An answer in three parts: a small per-request `prefix` (id, remaining ttl), the stored
/// `body` (the result after its opening brace), and the closing brace. Split this way, a gzip
/// answer reuses the body's pre-compressed form instead of compressing every hit.
pub struct Answer<'a> {
    pub prefix: Vec<u8>,
    pub body: &'a [u8],
    pub suffix: &'static [u8],
}

impl Answer<'_> {
    pub fn to_bytes(&self) -> Vec<u8> {
        [&self.prefix[..], self.body, self.suffix].concat()
    }

    pub fn len(&self) -> usize {
        self.prefix.len() + self.body.len() + self.suffix.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

const ENTRY_MAGIC: u8 = 0xE2;
const ENTRY_HEADER: usize = 1 + 8 + 8 + 1 + 4 + 4 + 4;
/// Flags (the header's byte 17).
const FLAG_RESTATE_TTL: u8 = 1;
const FLAG_CONFIRMED: u8 = 2;
const FLAG_OWN_TTL: u8 = 4;
/// With [`FLAG_CONFIRMED`], the entry ends with the time it was confirmed (8 bytes).
const CONFIRMED_TRAILER: usize = 8;

/// An encoded entry marked as confirmed at `at_ms`: a copy read from the shared tier after its
/// invalidation markers were checked, so it is as trustworthy as an answer fetched then (see
/// [`confirmed_at_ms`]). A confirmation already there is replaced. `None`: not an entry.
pub fn confirmed(encoded: &[u8], at_ms: u64) -> Option<Vec<u8>> {
    Entry::decode(encoded)?;
    let plain_len = encoded.len() - confirmed_at_ms(encoded).map_or(0, |_| CONFIRMED_TRAILER);
    let mut out = Vec::with_capacity(plain_len + CONFIRMED_TRAILER);
    out.extend_from_slice(&encoded[..plain_len]);
    out[17] |= FLAG_CONFIRMED;
    out.extend_from_slice(&at_ms.to_le_bytes());
    Some(out)
}

/// When an encoded entry was confirmed by the shared tier (see [`confirmed`]), if it was.
pub fn confirmed_at_ms(encoded: &[u8]) -> Option<u64> {
    if encoded.len() < ENTRY_HEADER + CONFIRMED_TRAILER
        || encoded[0] != ENTRY_MAGIC
        || encoded[17] & FLAG_CONFIRMED == 0
    {
        return None;
    }
    Some(u64::from_le_bytes(encoded[encoded.len() - CONFIRMED_TRAILER..].try_into().ok()?))
}

impl<'a> Entry<'a> {
    pub fn encode(&self) -> Vec<u8> {
        let deflated = self.deflated.unwrap_or(Deflated { crc32: 0, bytes: &[] });
        let mut out = Vec::with_capacity(ENTRY_HEADER + self.result.len() + deflated.bytes.len());
        out.push(ENTRY_MAGIC);
        out.extend_from_slice(&self.fetched_at_ms.to_le_bytes());
        out.extend_from_slice(&self.expires_at_ms.to_le_bytes());
        let restate = if self.restate_ttl { FLAG_RESTATE_TTL } else { 0 };
        out.push(restate | if self.own_ttl { FLAG_OWN_TTL } else { 0 });
        out.extend_from_slice(&(self.result.len() as u32).to_le_bytes());
        out.extend_from_slice(&deflated.crc32.to_le_bytes());
        out.extend_from_slice(&(deflated.bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(self.result);
        out.extend_from_slice(deflated.bytes);
        out
    }

    /// `None` for bytes that are not an entry of this format (e.g. a corrupt disk record, or
    /// one written by an older version).
    pub fn decode(bytes: &'a [u8]) -> Option<Entry<'a>> {
        if bytes.len() < ENTRY_HEADER || bytes[0] != ENTRY_MAGIC {
            return None;
        }
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        let result_len = u32_at(18) as usize;
        let deflated_len = u32_at(26) as usize;
        let trailer = if bytes[17] & FLAG_CONFIRMED != 0 { CONFIRMED_TRAILER } else { 0 };
        if bytes.len() != ENTRY_HEADER + result_len + deflated_len + trailer || result_len == 0 {
            return None;
        }
        let result = &bytes[ENTRY_HEADER..ENTRY_HEADER + result_len];
        let deflated_at = ENTRY_HEADER + result_len;
        let deflated = (deflated_len > 0)
            .then(|| Deflated { crc32: u32_at(22), bytes: &bytes[deflated_at..deflated_at + deflated_len] });
        Some(Entry {
            fetched_at_ms: u64_at(1),
            expires_at_ms: u64_at(9),
            restate_ttl: bytes[17] & FLAG_RESTATE_TTL != 0,
            own_ttl: bytes[17] & FLAG_OWN_TTL != 0,
            result,
            deflated,
        })
    }

    /// The body part of every answer: the result after its opening brace.
    pub fn body(&self) -> &'a [u8] {
        &self.result[1..]
    }

    /// The answer to a request with raw id `id`, at wall-clock `now_ms`.
    pub fn answer(&self, id: &str, now_ms: u64) -> Answer<'a> {
        // Room for the envelope and a restated `"ttlMs":<u64>,` (no regrowth).
        let mut prefix = Vec::with_capacity(id.len() + 64);
        prefix.extend_from_slice(br#"{"jsonrpc":"2.0","id":"#);
        prefix.extend_from_slice(id.as_bytes());
        prefix.extend_from_slice(br#","result":{"#);
        let body = self.body();
        if self.restate_ttl {
            // Remaining freshness, so clients do not extend a TTL that already ran here.
            let remaining = self.expires_at_ms.saturating_sub(now_ms);
            prefix.extend_from_slice(br#""ttlMs":"#);
            prefix.extend_from_slice(itoa::Buffer::new().format(remaining).as_bytes());
            if body.first() != Some(&b'}') {
                prefix.push(b',');
            }
        }
        Answer { prefix, body, suffix: b"}" }
    }
}
