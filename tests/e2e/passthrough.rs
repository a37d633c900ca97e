//! mcp-edge carries both MCP eras intact: bodies, SSE streams (flushed per event), sessions,
//! GET streams, DELETE, and the headers a proxy must add, keep or drop.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::json;

use crate::harness::*;

#[tokio::test]
async fn stateless_era_answers_equal_direct_ones() {
    let upstream = demo_upstream("a", &[]).await;
    let proxy = proxy(&route(&[&upstream], "")).await;
    let (direct, edge) = (Mcp::new(&upstream.url()), proxy.mcp());
    for (method, params) in [
        ("resources/list", json!({})),
        ("resources/templates/list", json!({})),
        ("resources/read", json!({"uri": "demo://docs/3"})),
        ("tools/list", json!({})),
        ("tools/call", json!({"name": "add", "arguments": {"a": 2, "b": 40}})),
        ("prompts/list", json!({})),
        ("prompts/get", json!({"name": "greet", "arguments": {"who": "edge"}})),
    ] {
        let expected = direct.stateless(method, params.clone(), &[]).await;
        let got = edge.stateless(method, params, &[]).await;
        assert_eq!((got.status, got.json()), (expected.status, expected.json()), "{method}");
        assert_eq!(got.header("content-type"), Some("application/json"));
    }
}

#[tokio::test]
async fn handshake_era_session_flow_works_through_the_proxy() {
    let upstream = demo_upstream("a", &[]).await;
    let proxy = proxy(&route(&[&upstream], "")).await;
    let mcp = proxy.mcp();
    let session = mcp.initialize().await;
    let (upstream_id, upstream_session) = session.split_once('.').expect("edge session id names its upstream");
    assert_eq!(upstream_id.len(), 8);
    assert_eq!(upstream_session.len(), 32, "the upstream's own id follows: {session}");

    let read = mcp.in_session(&session, 1, "resources/read", json!({"uri": "demo://docs/2"})).await;
    assert_eq!(read.status, 200);
    assert_eq!(read.header("content-type"), Some("text/event-stream"), "SSE passes through");
    assert_eq!(read.header("mcp-session-id"), Some(session.as_str()), "responses carry the edge id");
    assert_eq!(read.json()["result"]["contents"][0]["text"], "Document 2, served by a.");

    // The upstream sees its own session id, never the edge one.
    let seen = mcp
        .in_session(&session, 2, "tools/call", json!({"name": "request_headers", "arguments": {}}))
        .await
        .tool_text();
    assert!(seen.contains(&format!("mcp-session-id: {upstream_session}\n")), "{seen}");

    let delete = mcp.client.delete(&mcp.url).header("mcp-session-id", &session).send().await.unwrap();
    assert_eq!(delete.status(), 200);
    let after = mcp.in_session(&session, 3, "ping", json!({})).await;
    assert_eq!(after.status, 404, "a deleted session is unknown upstream: {after:?}");
}

#[tokio::test]
async fn get_stream_carries_last_event_id_and_stays_open() {
    let upstream = demo_upstream("a", &[]).await;
    let proxy = proxy(&route(&[&upstream], "read_timeout = \"500ms\"")).await;
    let mcp = proxy.mcp();
    let session = mcp.initialize().await;
    let response = mcp.open_stream(&session, &[("last-event-id", "evt-41")]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut stream = response.bytes_stream();
    let first =
        tokio::time::timeout(Duration::from_secs(5), stream.next()).await.expect("first event").unwrap().unwrap();
    let text = String::from_utf8_lossy(&first);
    assert!(text.contains(r#""last_event_id":"evt-41""#), "{text}");
    // Longer than the route's read_timeout: a server-to-client stream is not timed out.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let later = tokio::time::timeout(Duration::from_secs(5), stream.next()).await.expect("stream still open");
    assert!(later.is_some_and(|chunk| chunk.is_ok()), "the GET stream must stay open past read_timeout");
}

#[tokio::test]
async fn sse_events_are_flushed_as_they_come() {
    let upstream = demo_upstream("a", &[]).await;
    let proxy = proxy(&route(&[&upstream], "")).await;
    let mcp = proxy.mcp();
    let session = mcp.initialize().await;
    let body = json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
        "params": {"name": "slow_events", "arguments": {"delay_ms": 1000}}});
    let started = Instant::now();
    let response = mcp.post_streaming(body.to_string(), &[("mcp-session-id", &session)]).await;
    let mut stream = response.bytes_stream();
    let mut received = String::new();
    while !received.contains("notifications/progress") {
        let chunk = stream.next().await.expect("progress event").unwrap();
        received.push_str(&String::from_utf8_lossy(&chunk));
    }
    let first_at = started.elapsed();
    assert!(first_at < Duration::from_millis(700), "first event took {first_at:?}: it was held back");
    assert!(!received.contains(r#""id":9"#), "the result must not have arrived with the first event");
    while !received.contains(r#""id":9"#) {
        let chunk = stream.next().await.expect("result event").unwrap();
        received.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(started.elapsed() >= Duration::from_millis(1000));
}

#[tokio::test]
async fn a_one_mebibyte_argument_crosses_intact() {
    let upstream = demo_upstream("a", &["--json"]).await;
    let proxy = proxy(&route(&[&upstream], "")).await;
    let message: String = (0..(1 << 20)).map(|i| (b'a' + (i % 26) as u8) as char).collect();
    for mcp in [proxy.mcp()] {
        let reply = mcp.stateless("tools/call", json!({"name": "echo", "arguments": {"message": message}}), &[]).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.tool_text(), message);
    }
    // The same, sent chunked (no Content-Length).
    let (body, _) = stateless_body("tools/call", json!({"name": "echo", "arguments": {"message": message}}), json!(2));
    let chunks = futures_util::stream::iter(
        body.into_bytes().chunks(64 * 1024).map(|c| Ok::<_, std::io::Error>(c.to_vec())).collect::<Vec<_>>(),
    );
    let mcp = proxy.mcp();
    let reply = mcp
        .post(
            reqwest::Body::wrap_stream(chunks),
            &[("mcp-protocol-version", "2026-07-28"), ("mcp-method", "tools/call"), ("mcp-name", "echo")],
        )
        .await;
    assert_eq!(reply.status, 200, "{:?}", &reply.body[..reply.body.len().min(300)]);
    assert_eq!(reply.tool_text(), message);
}

#[tokio::test]
async fn proxy_headers_are_added_kept_and_dropped() {
    let upstream = demo_upstream("a", &[]).await;
    let proxy = proxy(&route(&[&upstream], "")).await;
    let reply = proxy
        .mcp()
        .stateless(
            "tools/call",
            json!({"name": "request_headers", "arguments": {}}),
            &[
                ("authorization", "Bearer token-1"),
                ("mcp-param-region", "eu"),
                ("x-forwarded-for", "203.0.113.9"),
                ("connection", "keep-alive, x-hop"),
                ("x-hop", "must-not-pass"),
                ("accept-encoding", "gzip, br"),
            ],
        )
        .await;
    let seen = reply.tool_text();
    let has = |line: &str| assert!(seen.contains(&format!("{line}\n")), "upstream did not see {line:?} in:\n{seen}");
    has(&format!("host: 127.0.0.1:{}", upstream.port));
    has(&format!("x-forwarded-host: 127.0.0.1:{}", proxy.port));
    has("x-forwarded-for: 203.0.113.9, 127.0.0.1");
    has("x-forwarded-proto: http");
    has("authorization: Bearer token-1");
    has("mcp-protocol-version: 2026-07-28");
    has("mcp-method: tools/call");
    has("mcp-name: request_headers");
    has("mcp-param-region: eu");
    assert!(!seen.contains("x-hop"), "a Connection-nominated header crossed:\n{seen}");
    // mcp-edge reads every answer and compresses for the client itself.
    assert!(!seen.contains("accept-encoding"), "the upstream was asked for an encoding:\n{seen}");
}

#[tokio::test]
async fn routes_are_chosen_by_longest_prefix() {
    let (a, b) = (demo_upstream("a", &[]).await, demo_upstream("b", &[]).await);
    let routes =
        format!("{}[[route]]\nname = \"team-b\"\npath = \"/mcp/b\"\nupstreams = [{:?}]\n", route(&[&a], ""), b.url());
    let proxy = proxy(&routes).await;
    assert_eq!(whoami(&proxy.mcp()).await, "a");
    assert_eq!(whoami(&Mcp::new(&proxy.url("/mcp/b"))).await, "b");
}

#[tokio::test]
async fn upstream_405_for_get_and_delete_passes_through() {
    let upstream = demo_upstream("a", &[]).await;
    let proxy = proxy(&route(&[&upstream], "")).await;
    let mcp = proxy.mcp();
    // The demo upstream, like any stateless-era server, refuses GET and DELETE with 405.
    for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
        let response = mcp
            .client
            .request(method.clone(), &mcp.url)
            .header("accept", "text/event-stream")
            .header("mcp-protocol-version", "2026-07-28")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 405, "{method}");
        assert_eq!(response.headers()["x-cache"], "BYPASS");
    }
}

/// A client that waits to send its body (`Expect: 100-continue`) is told to go on once its
/// head passes the checks (it used to wait out its own timeout: curl's is 1 s); the upstream
/// is not asked again, and the connection stays open. A head refused outright gets its final
/// answer instead, and the connection closes (the body was never read).
#[tokio::test]
async fn a_client_expecting_100_continue_is_told_to_send_its_body() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = demo_upstream("a", &[]).await;
    let proxy = proxy(&route(&[&upstream], "")).await;
    let (body, _) = stateless_body("tools/call", json!({"name": "request_headers", "arguments": {}}), json!(7));
    let head = |length: usize| {
        format!(
            "POST /mcp HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
             Accept: application/json, text/event-stream\r\nMcp-Protocol-Version: 2026-07-28\r\n\
             Mcp-Method: tools/call\r\nMcp-Name: request_headers\r\nExpect: 100-continue\r\n\
             Content-Length: {length}\r\n\r\n"
        )
    };
    let mut stream = crate::raw::connect(&proxy).await;
    stream.write_all(head(body.len()).as_bytes()).await.unwrap();
    let mut interim = [0u8; 25];
    tokio::time::timeout(Duration::from_millis(900), stream.read_exact(&mut interim))
        .await
        .expect("told to continue before the client's own timeout")
        .unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(body.as_bytes()).await.unwrap();
    let mut pending = Vec::new();
    let reply = crate::raw::read_response(&mut stream, &mut pending).await;
    assert_eq!((reply.status, reply.body["id"].as_i64()), (200, Some(7)), "{}", reply.head);
    let seen = reply.body["result"]["content"][0]["text"].as_str().unwrap();
    assert!(!seen.to_ascii_lowercase().contains("expect:"), "the upstream was asked to continue again:\n{seen}");
    assert!(seen.contains("mcp-name: request_headers\n"), "{seen}");
    assert_ne!(reply.header("connection"), Some("close"), "{}", reply.head);
    // The same connection takes the next request.
    stream.write_all(head(body.len()).as_bytes()).await.unwrap();
    stream.write_all(body.as_bytes()).await.unwrap();
    let mut interim = [0u8; 25];
    stream.read_exact(&mut interim).await.unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    assert_eq!(crate::raw::read_response(&mut stream, &mut pending).await.status, 200);

    let mut refused = crate::raw::connect(&proxy).await;
    refused.write_all(head(100 << 20).as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), refused.read_to_end(&mut answer)).await.unwrap().unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413 "), "{answer}");
}

/// A batch (2025-03-26) is carried to the upstream as the client wrote it, and its answer
/// back, never from the cache: here the demo refuses batches as the Python SDK does.
#[tokio::test]
async fn a_batch_is_carried_through_and_never_cached() {
    let upstream = demo_upstream("a", &[]).await;
    let proxy = proxy(&route(&[&upstream], "")).await;
    let read =
        |id: u64| json!({"jsonrpc": "2.0", "id": id, "method": "resources/read", "params": {"uri": "demo://docs/1"}});
    let batch = serde_json::to_string(&json!([read(1), read(2)])).unwrap();
    let direct = Mcp::new(&upstream.url()).post(batch.clone(), &[]).await;
    assert_eq!((direct.status, direct.json()["error"]["code"].clone()), (400, json!(-32600)));
    for _ in 0..2 {
        let through = proxy.mcp().post(batch.clone(), &[]).await;
        assert_eq!((through.status, through.json()), (direct.status, direct.json()));
        assert_eq!(x_cache(&through), "BYPASS");
    }
}
