//! The hit path answers cache hits straight off the connection and hands everything else to
//! the proxy service: on one kept-alive connection the two must interleave without a byte
//! lost or an answer out of order, whatever the client's framing.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::*;

/// A raw HTTP/1.1 request for a stateless-era `resources/read`.
fn read_request(uri: &str, id: Value, extra_headers: &str) -> String {
    let (body, _) = stateless_body("resources/read", json!({"uri": uri}), id);
    format!(
        "POST /mcp HTTP/1.1\r\nHost: localhost:8080\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\n\
         MCP-Protocol-Version: 2026-07-28\r\nMcp-Method: resources/read\r\nMcp-Name: {uri}\r\n{extra_headers}\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

async fn warmed_proxy() -> (Upstream, Proxy) {
    let upstream = demo_upstream("a", &[]).await;
    let proxy = proxy(&route(&[&upstream], "")).await;
    assert_eq!(read(&proxy.mcp(), "demo://docs/1", None).await.header("x-cache"), Some("MISS"));
    tokio::time::sleep(Duration::from_millis(50)).await;
    (upstream, proxy)
}

#[tokio::test]
async fn one_connection_interleaves_hits_misses_and_errors_in_order() {
    let (upstream, proxy) = warmed_proxy().await;
    let mut stream = connect(&proxy).await;
    let mut pending = Vec::new();
    let malformed = "POST /mcp HTTP/1.1\r\nHost: localhost:8080\r\nContent-Type: application/json\r\nContent-Length: 5\r\n\r\n{\"a\":";
    let steps: Vec<(String, u16, Option<&str>, Value)> = vec![
        (read_request("demo://docs/1", json!(1), ""), 200, Some("HIT"), json!(1)),
        (read_request("demo://docs/2", json!("two"), ""), 200, Some("MISS"), json!("two")),
        (malformed.to_string(), 400, Some("BYPASS"), Value::Null),
        (read_request("demo://docs/2", json!(3), ""), 200, Some("HIT"), json!(3)),
        (read_request("demo://docs/1", json!("ü"), "Accept-Encoding: identity\r\n"), 200, Some("HIT"), json!("ü")),
    ];
    for (index, (request, status, x_cache, id)) in steps.into_iter().enumerate() {
        stream.write_all(request.as_bytes()).await.unwrap();
        let reply = read_response(&mut stream, &mut pending).await;
        assert_eq!((reply.status, reply.header("x-cache")), (status, x_cache), "step {index}: {}", reply.head);
        assert_eq!(reply.body["id"], id, "step {index}");
        if status == 400 {
            assert_eq!(reply.body["error"]["code"], -32700);
            // Pingora closes after an error it answered before reading the body; reconnect.
            stream = connect(&proxy).await;
            pending.clear();
        } else {
            assert!(reply.body["result"]["contents"][0]["text"].as_str().unwrap().starts_with("Document"));
        }
    }
    assert_eq!(upstream_reads(&upstream).await, 2, "docs/1 once to warm up, docs/2 once");
}

#[tokio::test]
async fn pipelined_and_fragmented_requests_are_answered_in_order() {
    let (_upstream, proxy) = warmed_proxy().await;
    let mut stream = connect(&proxy).await;
    let mut pending = Vec::new();
    // Three hits in one write.
    let batch: String = (0..3).map(|i| read_request("demo://docs/1", json!(i), "")).collect();
    stream.write_all(batch.as_bytes()).await.unwrap();
    for i in 0..3 {
        let reply = read_response(&mut stream, &mut pending).await;
        assert_eq!((reply.status, reply.header("x-cache"), reply.body["id"].clone()), (200, Some("HIT"), json!(i)));
    }
    // Misses and hits in one write: each miss goes upstream with only its own bytes, and the
    // requests behind it are still answered, in order (Pingora alone would drop them).
    let mixed: String =
        [("demo://docs/7", "m1"), ("demo://docs/1", "h1"), ("demo://docs/8", "m2"), ("demo://docs/9", "m3")]
            .iter()
            .map(|(uri, id)| read_request(uri, json!(id), ""))
            .collect();
    stream.write_all(mixed.as_bytes()).await.unwrap();
    for (id, cache) in [("m1", "MISS"), ("h1", "HIT"), ("m2", "MISS"), ("m3", "MISS")] {
        let reply = read_response(&mut stream, &mut pending).await;
        assert_eq!((reply.status, reply.header("x-cache"), reply.body["id"].clone()), (200, Some(cache), json!(id)));
    }
    // Requests the hit path leaves to the service (HTTP/1.0 asking to keep alive, an
    // absolute-form target) keep the requests behind them too.
    let old_http =
        read_request("demo://docs/1", json!("h10"), "Connection: keep-alive\r\n").replacen("HTTP/1.1", "HTTP/1.0", 1);
    let absolute = read_request("demo://docs/7", json!("abs"), "").replacen("/mcp", "http://localhost:8080/mcp", 1);
    let left: String = [old_http, read_request("demo://docs/1", json!("h2"), ""), absolute]
        .into_iter()
        .chain([read_request("demo://docs/1", json!("h3"), "")])
        .collect();
    stream.write_all(left.as_bytes()).await.unwrap();
    for (id, cache) in [("h10", "HIT"), ("h2", "HIT"), ("abs", "HIT"), ("h3", "HIT")] {
        let reply = read_response(&mut stream, &mut pending).await;
        let seen = (reply.status, reply.header("x-cache"), reply.body["id"].clone());
        assert_eq!(seen, (200, Some(cache), json!(id)), "{}", reply.body);
    }
    // One hit dribbled out a few bytes at a time, head and body split anywhere.
    let request = read_request("demo://docs/1", json!("slow"), "");
    for piece in request.as_bytes().chunks(7) {
        stream.write_all(piece).await.unwrap();
        stream.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let reply = read_response(&mut stream, &mut pending).await;
    assert_eq!((reply.header("x-cache"), reply.body["id"].clone()), (Some("HIT"), json!("slow")));
    assert!(pending.is_empty(), "nothing beyond the answers");
}

/// Requests that arrive while the one before them is being forwarded (Pingora reads them
/// then, not the hit path) are answered after it, in order, and the connection goes on.
#[tokio::test]
async fn requests_pipelined_behind_a_forwarded_one_are_answered_after_it() {
    let (_upstream, proxy) = warmed_proxy().await;
    let mut stream = connect(&proxy).await;
    let mut pending = Vec::new();
    // The slow read is still upstream (500 ms) when the next two arrive.
    stream.write_all(read_request("demo://slow", json!("slow"), "").as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let behind = read_request("demo://docs/1", json!("h1"), "") + &read_request("demo://docs/5", json!("m1"), "");
    stream.write_all(behind.as_bytes()).await.unwrap();
    // A body too large for the hit path to read whole, with a hit right behind it.
    let (large, _) = stateless_body(
        "tools/call",
        json!({"name": "echo", "arguments": {"message": "x".repeat(70_000)}}),
        json!("big"),
    );
    let mut large = raw_post(&large, &["MCP-Protocol-Version: 2026-07-28", "Mcp-Method: tools/call", "Mcp-Name: echo"]);
    large.extend(read_request("demo://docs/1", json!("h2"), "").as_bytes());
    stream.write_all(&large).await.unwrap();
    for (id, cache) in [("slow", "MISS"), ("h1", "HIT"), ("m1", "MISS"), ("big", "BYPASS"), ("h2", "HIT")] {
        let reply = read_response(&mut stream, &mut pending).await;
        let seen = (reply.status, reply.header("x-cache"), reply.body["id"].clone());
        assert_eq!(seen, (200, Some(cache), json!(id)), "{}", reply.body);
    }
    // The connection goes on.
    stream.write_all(read_request("demo://docs/1", json!("h3"), "").as_bytes()).await.unwrap();
    let reply = read_response(&mut stream, &mut pending).await;
    assert_eq!((reply.header("x-cache"), reply.body["id"].clone()), (Some("HIT"), json!("h3")));
    assert!(pending.is_empty(), "nothing beyond the answers");
}

/// A head pipelined behind a forwarded request and then left unfinished holds the
/// connection no longer than `server.header_timeout` (not a whole keep-alive period).
#[tokio::test]
async fn an_unfinished_head_pipelined_behind_a_forwarded_request_is_not_waited_for() {
    let upstream = demo_upstream("a", &[]).await;
    let proxy = proxy_with(&route(&[&upstream], ""), "header_timeout = \"1s\"").await;
    let mut stream = connect(&proxy).await;
    stream.write_all(read_request("demo://slow", json!("slow"), "").as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    stream.write_all(b"POST /mcp HTTP/1.1\r\nHost: loc").await.unwrap();
    let reply = read_response(&mut stream, &mut Vec::new()).await;
    assert_eq!((reply.status, reply.body["id"].clone()), (200, json!("slow")));
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest)).await;
    assert!(matches!(closed, Ok(Ok(_))), "still open after 10 s: {closed:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "closed after {:?}", started.elapsed());
    // Refused as a head trickling in on its own would be: a JSON-RPC 408.
    let refusal = read_response(&mut stream, &mut rest).await;
    assert_eq!((refusal.status, refusal.body["error"]["code"].clone()), (408, json!(-32600)), "{}", refusal.body);
}

/// A malformed head pipelined behind a forwarded request, in the same packet or arriving
/// while that request is upstream, is refused as the hit path refuses one on its own (a
/// JSON-RPC 400, not Pingora's bare one), after the answer of the request before it.
#[tokio::test]
async fn a_malformed_head_pipelined_behind_a_forwarded_request_gets_a_json_rpc_400() {
    let (_upstream, proxy) = warmed_proxy().await;
    for arrives_while_upstream in [false, true] {
        let mut stream = connect(&proxy).await;
        let mut pending = Vec::new();
        let forwarded = read_request("demo://slow", json!("slow"), "");
        let malformed = "POST /mcp HTTP/1.1\r\nHost localhost\r\n\r\n";
        if arrives_while_upstream {
            stream.write_all(forwarded.as_bytes()).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
            stream.write_all(malformed.as_bytes()).await.unwrap();
        } else {
            stream.write_all((forwarded + malformed).as_bytes()).await.unwrap();
        }
        let reply = read_response(&mut stream, &mut pending).await;
        assert_eq!((reply.status, reply.body["id"].clone()), (200, json!("slow")));
        let refusal = read_response(&mut stream, &mut pending).await;
        let seen = (refusal.status, refusal.header("x-cache"), refusal.body["error"]["code"].clone());
        assert_eq!(seen, (400, Some("BYPASS"), json!(-32600)), "{}", refusal.body);
    }
}

#[tokio::test]
async fn a_hit_honours_connection_close() {
    let (_upstream, proxy) = warmed_proxy().await;
    let mut stream = connect(&proxy).await;
    let mut pending = Vec::new();
    stream.write_all(read_request("demo://docs/1", json!(9), "Connection: close\r\n").as_bytes()).await.unwrap();
    let reply = read_response(&mut stream, &mut pending).await;
    assert_eq!((reply.header("x-cache"), reply.header("connection")), (Some("HIT"), Some("close")));
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
    assert!(matches!(closed, Ok(Ok(0))), "the server closes after answering: {closed:?} {rest:?}");
}

#[tokio::test]
async fn hits_pass_the_same_checks_as_forwarded_requests() {
    let (_upstream, proxy) = warmed_proxy().await;
    let mut stream = connect(&proxy).await;
    let mut pending = Vec::new();
    // Mirrored header disagreeing with the body: the cached answer is not served.
    let mismatched = read_request("demo://docs/1", json!(5), "").replace("Mcp-Name: demo://docs/1", "Mcp-Name: x");
    stream.write_all(mismatched.as_bytes()).await.unwrap();
    let reply = read_response(&mut stream, &mut pending).await;
    assert_eq!((reply.status, reply.body["error"]["code"].clone()), (400, json!(-32020)));
    // A browser origin that is not allowed.
    let mut stream = connect(&proxy).await;
    pending.clear();
    stream
        .write_all(read_request("demo://docs/1", json!(6), "Origin: https://evil.example\r\n").as_bytes())
        .await
        .unwrap();
    let reply = read_response(&mut stream, &mut pending).await;
    assert_eq!(reply.status, 403);
    // A handshake-era session id that is not one of ours.
    let mut stream = connect(&proxy).await;
    pending.clear();
    let foreign_session = read_request("demo://docs/1", json!(7), "Mcp-Session-Id: nope\r\n")
        .replace("MCP-Protocol-Version: 2026-07-28", "MCP-Protocol-Version: 2025-11-25");
    stream.write_all(foreign_session.as_bytes()).await.unwrap();
    let reply = read_response(&mut stream, &mut pending).await;
    assert_eq!(reply.status, 404);
}

#[tokio::test]
async fn a_large_hit_reaches_a_slow_reader_whole_and_in_order() {
    let (_upstream, proxy) = warmed_proxy().await;
    let uri = "demo://large/5120";
    let miss = read(&proxy.mcp(), uri, None).await;
    assert_eq!(miss.header("x-cache"), Some("MISS"));
    let text = miss.json()["result"]["contents"][0]["text"].as_str().unwrap().to_string();
    assert_eq!(text.len(), 5 << 20);
    let mut stream = connect(&proxy).await;
    let requests = [read_request(uri, json!(1), ""), read_request("demo://docs/1", json!(2), "")].concat();
    stream.write_all(requests.as_bytes()).await.unwrap();
    // Far more than the sockets hold: the proxy's writes stall and resume while we wait.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut pending = Vec::new();
    let large = read_response(&mut stream, &mut pending).await;
    assert_eq!((large.header("x-cache"), large.body["id"].clone()), (Some("HIT"), json!(1)));
    assert!(large.body["result"]["contents"][0]["text"] == text.as_str(), "the hit carries the miss's text");
    let small = read_response(&mut stream, &mut pending).await;
    assert_eq!((small.header("x-cache"), small.body["id"].clone()), (Some("HIT"), json!(2)));
}

/// `Upgrade` is never granted (`curl --http2` sends `Upgrade: h2c` on plain HTTP): a forwarded
/// request carrying it is a plain request, its connection kept alive and requests pipelined
/// behind it answered in order; the upstream is not asked to upgrade.
#[tokio::test]
async fn an_upgrade_header_leaves_a_plain_request_on_a_kept_connection() {
    let (_upstream, proxy) = warmed_proxy().await;
    let mut stream = connect(&proxy).await;
    let mut pending = Vec::new();
    let upgrade = "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n";
    let (call, _) = stateless_body("tools/call", json!({"name": "request_headers", "arguments": {}}), json!("up"));
    let forwarded = format!(
        "POST /mcp HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\n\
         MCP-Protocol-Version: 2026-07-28\r\nMcp-Method: tools/call\r\nMcp-Name: request_headers\r\n{upgrade}\
         Content-Length: {}\r\n\r\n{call}",
        call.len()
    );
    // Pipelined behind it: a miss and a hit, and the upgrade asked again on a hit.
    let behind = read_request("demo://docs/7", json!("m"), "") + &read_request("demo://docs/1", json!("h"), upgrade);
    stream.write_all((forwarded + &behind).as_bytes()).await.unwrap();
    let reply = read_response(&mut stream, &mut pending).await;
    assert_eq!((reply.status, reply.body["id"].clone()), (200, json!("up")), "{}", reply.head);
    let seen = reply.body["result"]["content"][0]["text"].as_str().unwrap().to_ascii_lowercase();
    assert!(
        !seen.contains("upgrade") && !seen.contains("http2-settings"),
        "the upstream was asked to upgrade:\n{seen}"
    );
    for (id, cache) in [("m", "MISS"), ("h", "HIT")] {
        let reply = read_response(&mut stream, &mut pending).await;
        assert_eq!((reply.status, reply.header("x-cache"), reply.body["id"].clone()), (200, Some(cache), json!(id)));
    }
    stream.write_all(read_request("demo://docs/1", json!("again"), "").as_bytes()).await.unwrap();
    let reply = read_response(&mut stream, &mut pending).await;
    assert_eq!(reply.body["id"], json!("again"), "the connection was kept");
}

/// An HTTP/1.0 client gets its hit and the connection closes (it may read until it does); a
/// `HEAD` is refused without a body.
#[tokio::test]
async fn http10_hits_close_and_head_refusals_have_no_body() {
    let (_upstream, proxy) = warmed_proxy().await;
    let mut stream = connect(&proxy).await;
    let request = read_request("demo://docs/1", json!(1), "").replacen("HTTP/1.1", "HTTP/1.0", 1);
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await.expect("closed").unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.contains("x-cache: HIT") && answer.contains("connection: close"), "{answer}");

    let mut stream = connect(&proxy).await;
    stream.write_all(b"HEAD /mcp HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await.expect("closed").unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    assert!(answer.ends_with("\r\n\r\n"), "a HEAD answer has no body: {answer}");
}
