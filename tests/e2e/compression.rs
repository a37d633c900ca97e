//! gzip: compressed when the client asks and the answer is large enough, never otherwise;
//! SSE only when configured, then flushed event by event; MCP clients work with it.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::json;
use tokio::io::AsyncReadExt;

use crate::harness::*;

/// Decodes as much of a gzip stream as is there (a prefix of a stream decodes up to its
/// last flush).
async fn gunzip(bytes: &[u8]) -> String {
    let mut decoder = async_compression::tokio::bufread::GzipDecoder::new(bytes);
    let mut out = Vec::new();
    let mut buffer = [0u8; 4096];
    while let Ok(n) = decoder.read(&mut buffer).await {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buffer[..n]);
    }
    String::from_utf8(out).expect("UTF-8")
}

async fn read_gzip(mcp: &Mcp, uri: &str, accept: Option<&str>) -> (Reply, Vec<u8>) {
    let (body, name) = stateless_body("resources/read", json!({"uri": uri}), json!(5));
    let mut request = mcp
        .client
        .post(&mcp.url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "resources/read")
        .header("mcp-name", name.unwrap());
    if let Some(accept) = accept {
        request = request.header("accept-encoding", accept);
    }
    let response = request.body(body).send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let raw = response.bytes().await.unwrap().to_vec();
    (Reply { status, headers, body: String::from_utf8_lossy(&raw).into_owned() }, raw)
}

#[tokio::test]
async fn large_answers_are_gzipped_when_asked_misses_and_hits_alike() {
    let upstream = demo_upstream("a", &[]).await;
    let proxy = proxy(&route(&[&upstream], "")).await;
    let mcp = proxy.mcp();
    let (plain, _) = read_gzip(&mcp, "demo://kib/1", None).await;
    assert_eq!(plain.header("content-encoding"), None, "no Accept-Encoding, no gzip");
    assert_eq!(plain.header("vary"), Some("Accept-Encoding"));
    let expected = plain.json()["result"]["contents"].clone();
    for outcome in ["HIT", "HIT"] {
        let (reply, raw) = read_gzip(&mcp, "demo://kib/1", Some("gzip, deflate")).await;
        assert_eq!((reply.header("content-encoding"), reply.header("x-cache")), (Some("gzip"), Some(outcome)));
        let decoded: serde_json::Value = serde_json::from_str(&gunzip(&raw).await).unwrap();
        assert_eq!(decoded["result"]["contents"], expected);
        assert!(raw.len() < 1024, "1 KiB of padding compresses: {} bytes", raw.len());
    }
    let (miss, raw) = read_gzip(&mcp, "demo://kib/2", Some("gzip")).await;
    assert_eq!((miss.header("content-encoding"), miss.header("x-cache")), (Some("gzip"), Some("MISS")));
    assert!(gunzip(&raw).await.contains("demo://kib/2"));

    let (small, _) = read_gzip(&mcp, "demo://docs/1", Some("gzip")).await;
    assert_eq!(small.header("content-encoding"), None, "below min_size");
    let (refused, _) = read_gzip(&mcp, "demo://kib/1", Some("gzip;q=0, br")).await;
    assert_eq!(refused.header("content-encoding"), None);
}

#[tokio::test]
async fn gzip_can_be_turned_off() {
    let upstream = demo_upstream("a", &[]).await;
    let proxy = proxy_full(&route(&[&upstream], ""), "", |_| "[compression]\ngzip = false\n".into()).await;
    for _ in 0..2 {
        let (reply, _) = read_gzip(&proxy.mcp(), "demo://kib/1", Some("gzip")).await;
        assert_eq!(reply.header("content-encoding"), None);
    }
}

async fn slow_events(mcp: &Mcp, session: &str) -> (reqwest::Response, Instant) {
    let body = json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
        "params": {"name": "slow_events", "arguments": {"delay_ms": 1000}}});
    let started = Instant::now();
    let response =
        mcp.post_streaming(body.to_string(), &[("accept-encoding", "gzip"), ("mcp-session-id", session)]).await;
    (response, started)
}

#[tokio::test]
async fn sse_is_gzipped_only_when_configured_and_then_flushed_per_event() {
    let upstream = demo_upstream("a", &[]).await;
    let default = proxy(&route(&[&upstream], "")).await;
    let session = default.mcp().initialize().await;
    let (response, _) = slow_events(&default.mcp(), &session).await;
    assert_eq!(response.headers().get("content-encoding"), None, "SSE is not compressed by default");

    let compressing =
        proxy_full(&route(&[&upstream], ""), "", |_| "[compression]\nsse = true\nmin_size = 0\n".into()).await;
    let mcp = compressing.mcp();
    let session = mcp.initialize().await;
    let (response, started) = slow_events(&mcp, &session).await;
    assert_eq!(response.headers()["content-encoding"], "gzip");
    let mut stream = response.bytes_stream();
    let mut raw = Vec::new();
    while !gunzip(&raw).await.contains("notifications/progress") {
        raw.extend_from_slice(&stream.next().await.expect("first event").unwrap());
    }
    let first_at = started.elapsed();
    assert!(first_at < Duration::from_millis(700), "the first event waited {first_at:?} in the encoder");
    while let Some(chunk) = stream.next().await {
        raw.extend_from_slice(&chunk.unwrap());
    }
    let all = gunzip(&raw).await;
    assert!(all.contains(r#""id":9"#) && all.contains("done"), "{all}");
}

#[tokio::test]
async fn the_sdk_client_works_with_everything_compressed() {
    let (_server, port) = crate::peers::python_server(&[]).await;
    let routes = format!("[[route]]\npath = \"/mcp\"\nupstreams = [\"http://127.0.0.1:{port}/mcp\"]\n");
    let proxy = proxy_full(&routes, "", |_| "[compression]\nsse = true\nmin_size = 0\n".into()).await;
    for mode in ["legacy", "2026-07-28"] {
        let direct =
            crate::peers::sdk_client(&format!("http://127.0.0.1:{port}/mcp"), mode, "add", r#"{"a": 4, "b": 5}"#).await;
        let proxied = crate::peers::sdk_client(&proxy.url("/mcp"), mode, "add", r#"{"a": 4, "b": 5}"#).await;
        assert_eq!(proxied, direct, "mode {mode}");
    }
}

#[tokio::test]
async fn a_large_entry_is_deflated_off_the_worker_and_then_served_gzipped() {
    let upstream = demo_upstream("a", &[]).await;
    let proxy = proxy(&route(&[&upstream], "")).await;
    let mcp = proxy.mcp();
    let (miss, _) = read_gzip(&mcp, "demo://large/1024", None).await;
    assert_eq!(miss.header("x-cache"), Some("MISS"));
    // Stored at once, plain: a hit needs no wait for the compression.
    let (hit, _) = read_gzip(&mcp, "demo://large/1024", None).await;
    assert_eq!((hit.header("x-cache"), hit.body.len()), (Some("HIT"), miss.body.len()));
    // The deflated form follows from a blocking thread.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (reply, raw) = read_gzip(&mcp, "demo://large/1024", Some("gzip")).await;
        assert_eq!(reply.header("x-cache"), Some("HIT"));
        if reply.header("content-encoding") == Some("gzip") {
            assert!(raw.len() < miss.body.len() / 4, "compressed: {} bytes", raw.len());
            let text: serde_json::Value = serde_json::from_str(&gunzip(&raw).await).unwrap();
            let plain: serde_json::Value = serde_json::from_str(&miss.body).unwrap();
            assert_eq!(text["result"]["contents"], plain["result"]["contents"]);
            break;
        }
        assert!(Instant::now() < deadline, "the large entry was never stored deflated");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
