//! Compressed request bodies (`Content-Encoding: gzip`, `deflate`, `br`): decoded at the edge,
//! read and keyed as the plain JSON-RPC message they carry, and forwarded plain (identity), so
//! that no upstream has to decode them and no cache key depends on how a client compressed.
//!
//! A body is decoded under two limits, and refused (413) as soon as either is passed, before the
//! rest is decoded: `server.max_body` applies to the decoded size, and a body decoding to more
//! than [`MAX_RATIO`] times its compressed size (past [`RATIO_FLOOR`]) is a decompression bomb.

use std::io::Read;

use bytes::Bytes;
use tokio::io::AsyncReadExt;

use crate::error::EdgeError;

/// JSON compresses 5 to 20 times; gzip's best is about 1000 times. A body decoding to more than
/// this many times its compressed size is not a message but an attempt to make the edge hold
/// memory.
pub const MAX_RATIO: u64 = 100;

/// Up to this decoded size the ratio is not checked: small bodies of repeated text (a long
/// run of spaces, an array of zeros) compress far better than text, and cost nothing.
pub const RATIO_FLOOR: u64 = 64 * 1024;

/// A content coding the edge decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Gzip,
    /// HTTP's `deflate`: a zlib stream (RFC 9110 §8.4.1.2); raw deflate, which some clients
    /// send under the same name, is accepted too.
    Deflate,
    Brotli,
}

impl Coding {
    /// The coding a `Content-Encoding` value names (`Err`: one the edge does not decode, or
    /// codings stacked on each other, which no MCP client sends).
    pub fn parse(value: &[u8]) -> Result<Coding, String> {
        let text = String::from_utf8_lossy(value);
        match text.trim().to_ascii_lowercase().as_str() {
            "gzip" | "x-gzip" => Ok(Coding::Gzip),
            "deflate" => Ok(Coding::Deflate),
            "br" => Ok(Coding::Brotli),
            _ => Err(text.into_owned()),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Coding::Gzip => "gzip",
            Coding::Deflate => "deflate",
            Coding::Brotli => "br",
        }
    }
}

/// The most a body of `compressed` bytes may decode to, and why (for the 413's message).
fn decoded_limit(compressed: usize, max_body: u64) -> (u64, &'static str) {
    let by_ratio = (compressed as u64).saturating_mul(MAX_RATIO).max(RATIO_FLOOR);
    if by_ratio < max_body { (by_ratio, "ratio") } else { (max_body, "max_body") }
}

/// Decodes a whole compressed body, stopping as soon as it passes its limit.
pub async fn decode(coding: Coding, compressed: &[u8], max_body: u64) -> Result<Bytes, EdgeError> {
    let (limit, which) = decoded_limit(compressed.len(), max_body);
    // One byte past the limit tells a body at the limit from one over it.
    let read_limit = limit + 1;
    let mut decoded = Vec::with_capacity(compressed.len().saturating_mul(4).min(limit as usize));
    let read = match coding {
        Coding::Gzip => {
            let mut decoder = async_compression::tokio::bufread::GzipDecoder::new(compressed);
            decoder.multiple_members(true);
            decoder.take(read_limit).read_to_end(&mut decoded).await
        }
        Coding::Deflate if looks_like_zlib(compressed) => {
            let decoder = async_compression::tokio::bufread::ZlibDecoder::new(compressed);
            decoder.take(read_limit).read_to_end(&mut decoded).await
        }
        Coding::Deflate => {
            let decoder = async_compression::tokio::bufread::DeflateDecoder::new(compressed);
            decoder.take(read_limit).read_to_end(&mut decoded).await
        }
        // Brotli through the decoder Pingora already builds (async-compression's would be a
        // second copy of the brotli crate); the input is in memory, so reading never waits.
        Coding::Brotli => brotli::Decompressor::new(compressed, 4096).take(read_limit).read_to_end(&mut decoded),
    };
    if decoded.len() as u64 > limit {
        return Err(EdgeError::DecodedBodyTooLarge {
            coding: coding.as_str(),
            compressed: compressed.len() as u64,
            limit,
            bomb: which == "ratio",
        });
    }
    match read {
        Ok(_) => Ok(Bytes::from(decoded)),
        Err(e) => Err(EdgeError::UndecodableBody { coding: coding.as_str(), reason: e.to_string() }),
    }
}

/// A zlib stream's two-byte header: deflate method, a window of at most 32 KiB, a check
/// making the pair a multiple of 31 (RFC 1950 §2.2).
fn looks_like_zlib(body: &[u8]) -> bool {
    match body {
        [cmf, flg, ..] => cmf & 0x0f == 8 && cmf >> 4 <= 7 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn gzip(plain: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(plain).unwrap();
        encoder.finish().unwrap()
    }

    fn zlib(plain: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(plain).unwrap();
        encoder.finish().unwrap()
    }

    fn raw_deflate(plain: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(plain).unwrap();
        encoder.finish().unwrap()
    }

    fn brotli(plain: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut encoder = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
            encoder.write_all(plain).unwrap();
        }
        out
    }

    const MESSAGE: &[u8] = br#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///a"}}"#;

    #[tokio::test]
    async fn every_coding_decodes_to_the_message() {
        for (coding, body) in [
            (Coding::Gzip, gzip(MESSAGE)),
            (Coding::Deflate, zlib(MESSAGE)),
            (Coding::Deflate, raw_deflate(MESSAGE)),
            (Coding::Brotli, brotli(MESSAGE)),
        ] {
            assert_eq!(&decode(coding, &body, 4 << 20).await.unwrap()[..], MESSAGE, "{coding:?}");
        }
    }

    #[tokio::test]
    async fn concatenated_gzip_members_are_one_body() {
        let mut body = gzip(&MESSAGE[..10]);
        body.extend(gzip(&MESSAGE[10..]));
        assert_eq!(&decode(Coding::Gzip, &body, 4 << 20).await.unwrap()[..], MESSAGE);
    }

    #[tokio::test]
    async fn a_bomb_is_stopped_at_the_ratio_limit() {
        let bomb = gzip(&vec![b' '; 50 << 20]);
        let refused = decode(Coding::Gzip, &bomb, 64 << 20).await.unwrap_err();
        assert_eq!(refused.status(), 413);
        assert!(refused.to_string().contains("times its compressed size"), "{refused}");
    }

    #[tokio::test]
    async fn max_body_applies_to_the_decoded_size() {
        // Text that compresses about 2 times: under the ratio, over max_body once decoded.
        let plain: Vec<u8> =
            (0..200_000u32).flat_map(|i| (i.wrapping_mul(2654435761) % 97).to_string().into_bytes()).collect();
        let body = gzip(&plain);
        let refused = decode(Coding::Gzip, &body, 100_000).await.unwrap_err();
        assert_eq!(refused.status(), 413);
        assert!(refused.to_string().contains("server.max_body"), "{refused}");
        assert_eq!(decode(Coding::Gzip, &body, 4 << 20).await.unwrap().len(), plain.len());
    }

    #[tokio::test]
    async fn small_repetitive_bodies_are_not_bombs() {
        let plain = vec![b'0'; 60 * 1024];
        assert_eq!(decode(Coding::Gzip, &gzip(&plain), 4 << 20).await.unwrap().len(), plain.len());
    }

    #[tokio::test]
    async fn corrupt_or_truncated_bodies_are_a_bad_request() {
        let body = gzip(MESSAGE);
        for broken in [&body[..body.len() / 2], b"not gzip at all", &[]] {
            let refused = decode(Coding::Gzip, broken, 4 << 20).await.unwrap_err();
            assert_eq!(refused.status(), 400, "{broken:?}");
        }
        assert_eq!(decode(Coding::Brotli, b"\xff\xff\xff\xff", 4 << 20).await.unwrap_err().status(), 400);
    }

    #[test]
    fn codings_are_named_as_http_names_them() {
        assert_eq!(Coding::parse(b"gzip"), Ok(Coding::Gzip));
        assert_eq!(Coding::parse(b" X-GZIP "), Ok(Coding::Gzip));
        assert_eq!(Coding::parse(b"deflate"), Ok(Coding::Deflate));
        assert_eq!(Coding::parse(b"br"), Ok(Coding::Brotli));
        for other in [&b"zstd"[..], b"gzip, br", b"compress", b""] {
            assert!(Coding::parse(other).is_err(), "{other:?}");
        }
    }
}
