//! Compressed request bodies (`Content-Encoding: gzip`, `deflate`, `br`): decoded at the edge,
//! keyed as the message they carry, forwarded plain; bombs, corrupt bodies and unknown codings
//! refused before the upstream.

use std::io::Write;

use serde_json::json;

use crate::harness::*;

pub fn gzip(plain: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(plain).unwrap();
    encoder.finish().unwrap()
}

fn zlib(plain: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
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

/// A stateless-era request's body and its mirrored headers.
fn stateless_request(method: &str, params: serde_json::Value) -> (String, Vec<(String, String)>) {
    let (body, name) = stateless_body(method, params, json!(7));
    let mut headers = vec![
        ("mcp-protocol-version".to_string(), "2026-07-28".to_string()),
        ("mcp-method".to_string(), method.to_string()),
    ];
    if let Some(name) = name {
        headers.push(("mcp-name".to_string(), name));
    }
    (body, headers)
}

async fn post_encoded(mcp: &Mcp, body: Vec<u8>, coding: &str, headers: &[(String, String)]) -> Reply {
    let mut all: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    all.push(("content-encoding", coding));
    mcp.post(body, &all).await
}

#[tokio::test]
async fn compressed_bodies_are_read_keyed_and_forwarded_plain() {
    let upstream = demo_upstream("a", &[]).await;
    let proxy = proxy(&route(&[&upstream], "")).await;
    let mcp = proxy.mcp();

    // The upstream (which reads plain JSON only) gets the decoded body, framed by its length.
    let (body, headers) = stateless_request("tools/call", json!({"name": "request_headers", "arguments": {}}));
    let reply = post_encoded(&mcp, gzip(body.as_bytes()), "gzip", &headers).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let seen = reply.tool_text();
    assert!(!seen.contains("content-encoding"), "{seen}");
    assert!(seen.contains(&format!("content-length: {}", body.len())), "{seen}");

    // One cache entry, whichever way the same read came: keyed on the message, not its bytes.
    let (read, headers) = stateless_request("resources/read", json!({"uri": "demo://docs/3"}));
    let first = post_encoded(&mcp, gzip(read.as_bytes()), "gzip", &headers).await;
    assert_eq!((first.status, x_cache(&first)), (200, "MISS"), "{first:?}");
    assert_eq!(first.json()["id"], 7);
    let plain_headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let plain = mcp.post(read.clone(), &plain_headers).await;
    assert_eq!((plain.status, x_cache(&plain)), (200, "HIT"), "{plain:?}");
    for (coding, encoded) in
        [("deflate", zlib(read.as_bytes())), ("br", brotli(read.as_bytes())), ("x-gzip", gzip(read.as_bytes()))]
    {
        let reply = post_encoded(&mcp, encoded, coding, &headers).await;
        assert_eq!((reply.status, x_cache(&reply)), (200, "HIT"), "{coding}: {reply:?}");
        assert_eq!(reply.json()["result"]["contents"], first.json()["result"]["contents"], "{coding}");
    }
    assert_eq!(upstream_reads(&upstream).await, 1);
}

#[tokio::test]
async fn a_large_compressed_body_streams_through_decoded() {
    let upstream = demo_upstream("a", &[]).await;
    let proxy = proxy(&route(&[&upstream], "")).await;
    let mcp = proxy.mcp();
    // Text that hardly compresses, so that the compressed body is past what is read first
    // (64 KiB): it streams, is held whole, decoded, then sent on chunked.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let message: String = (0..150_000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(b'a' + (state % 26) as u8)
        })
        .collect();
    let (body, headers) = stateless_request("tools/call", json!({"name": "echo", "arguments": {"message": message}}));
    let compressed = gzip(body.as_bytes());
    assert!(compressed.len() > 64 * 1024, "{} bytes compressed", compressed.len());
    // Sent chunked (a stream of unknown length), as clients that compress on the fly do.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = compressed.chunks(10_000).map(|c| Ok(c.to_vec())).collect();
    let mut request = mcp
        .client
        .post(&mcp.url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("content-encoding", "gzip");
    for (name, value) in &headers {
        request = request.header(name, value);
    }
    let response = request.body(reqwest::Body::wrap_stream(futures_util::stream::iter(chunks))).send().await.unwrap();
    let reply = read_reply(response).await;
    assert_eq!(reply.status, 200, "{}", &reply.body[..reply.body.len().min(300)]);
    assert_eq!(reply.tool_text(), message);
}

#[tokio::test]
async fn bombs_corrupt_bodies_and_unknown_codings_are_refused_before_the_upstream() {
    let upstream = demo_upstream("a", &[]).await;
    let proxy = proxy(&route(&[&upstream], "")).await;
    let mcp = proxy.mcp();
    let (read, headers) = stateless_request("resources/read", json!({"uri": "demo://docs/1"}));

    // 5 MiB of spaces inside a valid message: about 5 KiB of gzip, far past the ratio limit
    // (decoding stops at 100 times the compressed size, well before max_body's 4 MiB).
    let mut padded = read.clone().into_bytes();
    padded.truncate(padded.len() - 1);
    padded.extend(std::iter::repeat_n(b' ', 5 << 20));
    padded.push(b'}');
    let bomb = gzip(&padded);
    assert!(bomb.len() < 64 * 1024, "{}", bomb.len());
    let refused = post_encoded(&mcp, bomb.clone(), "gzip", &headers).await;
    assert_eq!(refused.status, 413, "{refused:?}");
    assert!(refused.json()["error"]["message"].as_str().unwrap().contains("times its compressed size"), "{refused:?}");
    // The same bomb, streamed (chunked): refused once whole, still before the upstream.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = bomb.chunks(4096).map(|c| Ok(c.to_vec())).collect();
    let mut request =
        mcp.client.post(&mcp.url).header("content-type", "application/json").header("content-encoding", "gzip");
    for (name, value) in &headers {
        request = request.header(name, value);
    }
    let streamed = request.body(reqwest::Body::wrap_stream(futures_util::stream::iter(chunks))).send().await.unwrap();
    assert_eq!(streamed.status().as_u16(), 413);
    // The edge's refusal, not the upstream's answer.
    let metrics = reqwest::get(proxy.admin_url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(!metrics.lines().any(|l| l.starts_with("mcp_upstream_requests_total") && l.contains("413")), "{metrics}");

    // Codings stacked over two lines are refused as on one line.
    let mut stacked = mcp.client.post(&mcp.url).header("content-type", "application/json");
    stacked = stacked.header("content-encoding", "gzip").header("content-encoding", "br");
    for (name, value) in &headers {
        stacked = stacked.header(name, value);
    }
    let stacked = stacked.body(gzip(read.as_bytes())).send().await.unwrap();
    assert_eq!(stacked.status().as_u16(), 415);

    let mut corrupt = gzip(read.as_bytes());
    corrupt.truncate(corrupt.len() / 2);
    let refused = post_encoded(&mcp, corrupt, "gzip", &headers).await;
    assert_eq!(refused.status, 400, "{refused:?}");
    assert!(refused.body.contains("does not decode"), "{refused:?}");

    let refused = post_encoded(&mcp, read.clone().into_bytes(), "zstd", &headers).await;
    assert_eq!(refused.status, 415, "{refused:?}");
    assert_eq!(refused.header("accept-encoding"), Some("gzip, deflate, br, identity"));

    assert_eq!(upstream_reads(&upstream).await, 0, "nothing refused reached the upstream");
    // The edge is still well (a bomb costs it at most its limit).
    let fine = post_encoded(&mcp, gzip(read.as_bytes()), "gzip", &headers).await;
    assert_eq!(fine.status, 200, "{fine:?}");
}
