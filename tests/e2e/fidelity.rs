//! What a server sends beside a result reaches every client: an answer that came with progress
//! or log notifications, or while the server asked the session's client something on any of
//! its streams, is never stored, nor one a server answered twice; health checks work for every
//! upstream as written.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::*;

#[tokio::test]
async fn answers_sent_with_progress_are_not_stored() {
    let upstream = demo_upstream("a", &[]).await;
    let proxy = proxy(&route(&[&upstream], "[route.policy]\ncache_tools = [\"slow_events\", \"echo\"]")).await;
    let mcp = proxy.mcp();
    let session = mcp.initialize().await;
    for id in [1, 2] {
        let reply = mcp
            .in_session(&session, id, "tools/call", json!({"name": "slow_events", "arguments": {"delay_ms": 10}}))
            .await;
        assert_eq!(x_cache(&reply), "MISS", "call {id}");
        let progress =
            sse_messages(&reply.body).into_iter().filter(|m| m["method"] == "notifications/progress").count();
        assert_eq!(progress, 1, "each call gets its progress notification: {}", reply.body);
    }
    // A plain answer of the same route is stored as before.
    let echo = json!({"name": "echo", "arguments": {"message": "hi"}});
    assert_eq!(x_cache(&mcp.in_session(&session, 3, "tools/call", echo.clone()).await), "MISS");
    assert_eq!(x_cache(&mcp.in_session(&session, 4, "tools/call", echo).await), "HIT");
}

#[tokio::test]
async fn a_server_request_on_the_sessions_get_stream_keeps_the_calls_answer_out_of_the_cache() {
    let upstream = demo_upstream("a", &[]).await;
    let proxy = proxy(&route(&[&upstream], "[route.policy]\ncache_tools = [\"ask_client\"]")).await;
    let mcp = proxy.mcp();
    let asked = mcp.initialize().await;
    let stream = mcp.open_stream(&asked, &[]).await;
    assert_eq!(stream.status(), 200);
    let mut events = stream.bytes_stream();
    let first = tokio::time::timeout(Duration::from_secs(5), events.next()).await.unwrap();
    assert!(first.is_some(), "the GET stream is open");
    let call = json!({"name": "ask_client", "arguments": {}});
    for id in [1, 2] {
        let reply = mcp.in_session(&asked, id, "tools/call", call.clone()).await;
        assert_eq!((reply.status, x_cache(&reply)), (200, "MISS"), "call {id}: {}", reply.body);
    }
    let mut seen = String::new();
    while !seen.contains("elicitation/create") {
        let chunk = tokio::time::timeout(Duration::from_secs(5), events.next()).await.unwrap().unwrap().unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    // Without a GET stream the server asks nothing, and the answer is cached.
    let quiet = mcp.initialize().await;
    assert_eq!(x_cache(&mcp.in_session(&quiet, 1, "tools/call", call.clone()).await), "MISS");
    assert_eq!(x_cache(&mcp.in_session(&quiet, 2, "tools/call", call).await), "HIT");
}

#[tokio::test]
async fn handshake_era_lists_are_per_session_unless_the_server_says_public() {
    // No hint (what SDK servers send in the handshake era): one entry per session.
    let upstream = demo_upstream("a", &[]).await;
    let per_session = proxy(&route(&[&upstream], "")).await;
    let mcp = per_session.mcp();
    let (first, second) = (mcp.initialize().await, mcp.initialize().await);
    assert_eq!(x_cache(&mcp.in_session(&first, 1, "tools/list", json!({})).await), "MISS");
    assert_eq!(x_cache(&mcp.in_session(&first, 2, "tools/list", json!({})).await), "HIT");
    assert_eq!(x_cache(&mcp.in_session(&second, 1, "tools/list", json!({})).await), "MISS", "no hint: per session");
    // An explicit `cacheScope: "public"` is the server's word: shared across sessions.
    let hinting = demo_upstream("b", &["--hint-handshake"]).await;
    let shared = proxy(&route(&[&hinting], "")).await;
    let mcp = shared.mcp();
    let (first, second) = (mcp.initialize().await, mcp.initialize().await);
    assert_eq!(x_cache(&mcp.in_session(&first, 1, "tools/list", json!({})).await), "MISS");
    assert_eq!(x_cache(&mcp.in_session(&second, 1, "tools/list", json!({})).await), "HIT", "public hint: shared");
}

#[tokio::test]
async fn reload_counters_exist_before_the_first_reload() {
    let upstream = demo_upstream("a", &[]).await;
    let proxy = proxy(&route(&[&upstream], "")).await;
    let text = reqwest::get(proxy.admin_url("/metrics")).await.unwrap().text().await.unwrap();
    for result in ["ok", "error"] {
        let sample = format!("mcp_config_reloads_total{{result=\"{result}\"}}");
        assert_eq!(sample_value(&text, &sample), Some(0.0), "{sample} in\n{text}");
    }
}

#[tokio::test]
async fn active_connections_count_connections_and_requests_in_flight_count_requests() {
    let upstream = demo_upstream("a", &[]).await;
    let proxy = proxy(&route(&[&upstream], "")).await;
    let idle: Vec<_> = futures_util::future::join_all((0..3).map(|_| connect(&proxy))).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(metric(&proxy, "mcp_active_connections").await, 3.0, "three idle connections");
    assert_eq!(metric(&proxy, "mcp_requests_in_flight").await, 0.0, "and no request");
    drop(idle);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(metric(&proxy, "mcp_active_connections").await, 0.0);
}

/// An upstream's answer to any request: one SSE body carrying two cacheable results for its
/// id, "first" then "second" (a protocol violation).
fn answers_twice(request: &str) -> Vec<u8> {
    let (_, body) = request.split_once("\r\n\r\n").unwrap_or_default();
    let id = serde_json::from_str::<Value>(body).map(|message| message["id"].clone()).unwrap_or(Value::Null);
    let result = |text: &str| {
        json!({"jsonrpc": "2.0", "id": id, "result": {"contents": [{"uri": "a://x", "text": text}],
            "ttlMs": 60000, "cacheScope": "public", "resultType": "complete"}})
    };
    let events = format!("data: {}\n\ndata: {}\n\n", result("first"), result("second"));
    let head =
        format!("HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\n\r\n", events.len());
    format!("{head}{events}").into_bytes()
}

#[tokio::test]
async fn an_answer_the_server_sent_twice_is_passed_through_not_stored() {
    let port = raw_upstream(answers_twice).await;
    let proxy = proxy(&format!("[[route]]\npath = \"/mcp\"\nupstreams = [\"http://127.0.0.1:{port}/mcp\"]\n")).await;
    let mcp = proxy.mcp();
    for _ in 0..2 {
        let reply = read(&mcp, "a://x", None).await;
        assert_eq!((reply.status, x_cache(&reply)), (200, "MISS"), "{}", reply.body);
        let texts: Vec<_> =
            sse_messages(&reply.body).iter().map(|m| m["result"]["contents"][0]["text"].clone()).collect();
        assert_eq!(texts, [json!("first"), json!("second")], "the client gets what the server sent");
    }
}

/// A `204` that came with body framing (here `Transfer-Encoding: chunked`, which some servers
/// send with it) reaches the client without it: a `204` has no body (RFC 9110 §15.3.5), and a
/// client that believed the header would wait for chunks that never come.
#[tokio::test]
async fn a_204_reaches_the_client_without_body_framing() {
    let port =
        raw_upstream(|_| b"HTTP/1.1 204 No Content\r\ntransfer-encoding: chunked\r\nx-seen: yes\r\n\r\n".to_vec())
            .await;
    let proxy = proxy(&format!("[[route]]\npath = \"/mcp\"\nupstreams = [\"http://127.0.0.1:{port}/mcp\"]\n")).await;
    let notification = json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}});
    let request = raw_post(&notification.to_string(), &["MCP-Protocol-Version: 2025-06-18"]);
    let mut stream = connect(&proxy).await;
    for turn in 0..2 {
        stream.write_all(&request).await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte)).await;
            assert!(
                matches!(read, Ok(Ok(1))),
                "turn {turn}: the answer ended early: {:?}",
                String::from_utf8_lossy(&head)
            );
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 204"), "turn {turn}: {head}");
        assert!(head.contains("x-seen: yes"), "the upstream's own headers pass: {head}");
        assert!(!head.contains("transfer-encoding") && !head.contains("content-length"), "turn {turn}: {head}");
    }
}

/// A handshake-era request gets a cached answer only in a session this node knows alive: one
/// that ended, or that the upstream never minted, or none at all (where the upstream gives
/// sessions) is the upstream's to answer, as it would without mcp-edge.
#[tokio::test]
async fn cached_answers_go_only_to_sessions_the_upstream_would_answer() {
    // Public hints on handshake-era answers: one entry that every session could be served.
    let upstream = demo_upstream("u", &["--hint-handshake"]).await;
    let proxy = proxy(&route(&[&upstream], "")).await;
    let mcp = proxy.mcp();
    let session = mcp.initialize().await;
    let read_in = |session: String| {
        let mcp = proxy.mcp();
        async move { mcp.in_session(&session, 3, "resources/read", json!({"uri": "demo://docs/1"})).await }
    };
    assert_eq!(x_cache(&read_in(session.clone()).await), "MISS");
    assert_eq!(x_cache(&read_in(session.clone()).await), "HIT");

    // A session id the upstream never minted, on the same replica.
    let (replica, _) = session.split_once('.').unwrap();
    let forged = read_in(format!("{replica}.never-minted")).await;
    assert_eq!((forged.status, x_cache(&forged)), (404, "MISS"), "{forged:?}");
    // No session at all: the upstream wants one.
    let sessionless = mcp
        .post(
            json!({"jsonrpc": "2.0", "id": 4, "method": "resources/read", "params": {"uri": "demo://docs/1"}})
                .to_string(),
            &[("mcp-protocol-version", "2025-11-25")],
        )
        .await;
    assert_eq!(sessionless.status, 400, "{sessionless:?}");

    // The session ends: its cached answers end with it.
    let deleted = mcp.client.delete(&mcp.url).header("mcp-session-id", &session).send().await.unwrap();
    assert_eq!(deleted.status(), 200);
    let after = read_in(session.clone()).await;
    assert_eq!((after.status, x_cache(&after)), (404, "MISS"), "{after:?}");
    // A live session is served the public entry.
    let other = mcp.initialize().await;
    assert_eq!(x_cache(&read_in(other).await), "HIT");
}
