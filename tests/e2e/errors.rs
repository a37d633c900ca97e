//! Bad input and failing upstreams get a clear HTTP status and JSON-RPC error, never a hang.

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::*;

fn error_code(reply: &Reply) -> i64 {
    assert_eq!(reply.header("content-type"), Some("application/json"), "{reply:?}");
    reply.json()["error"]["code"].as_i64().unwrap_or_else(|| panic!("no error code in {}", reply.body))
}

#[tokio::test]
async fn malformed_and_invalid_bodies() {
    let upstream = demo_upstream("a", &[]).await;
    let proxy = proxy(&route(&[&upstream], "")).await;
    let mcp = proxy.mcp();
    for (body, code) in [
        ("{not json", -32700),
        ("", -32700),
        (r#"{"jsonrpc":"2.0","id":5}"#, -32600),
        (r#"{"jsonrpc":"1.0","id":5,"method":"ping"}"#, -32600),
        ("[]", -32600),
        // MCP request ids must not be null: not a notification either.
        (r#"{"jsonrpc":"2.0","id":null,"method":"tools/list"}"#, -32600),
    ] {
        let reply = mcp.post(body, &[]).await;
        assert_eq!(reply.status, 400, "{body:?}: {reply:?}");
        assert_eq!(error_code(&reply), code, "{body:?}");
    }
    let reply = mcp.post(r#"{"jsonrpc":"1.0","id":"q-7","method":"ping"}"#, &[]).await;
    assert_eq!(reply.json()["id"], "q-7", "the error answers the request's id");
}

/// How a body is framed (Content-Length, chunked, too large to read before forwarding) does not
/// change what is accepted: an invalid message is refused before the upstream in every framing,
/// in both eras.
#[tokio::test]
async fn invalid_messages_are_refused_whatever_their_framing() {
    let upstream = demo_upstream("a", &[]).await;
    let proxy = proxy(&route(&[&upstream], "")).await;
    let chunked = |body: &str| format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len());
    // Over the 64 KiB read before forwarding: JSON allows the padding after the value.
    let large = |body: &str| format!("{body}{}", " ".repeat(70_000));
    let ids = ["null", "true", "{}", "[1]", r#"{"a":1}"#];
    let eras: [&[&str]; 2] = [&[], &["MCP-Protocol-Version: 2026-07-28", "Mcp-Method: tools/list"]];
    for era in eras {
        for id in ids {
            let body = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/list"}}"#);
            let framings = [
                ("content-length", crate::raw::raw_post(&body, era)),
                ("chunked", crate::raw::raw_post(&chunked(&body), &[era, &["Transfer-Encoding: chunked"]].concat())),
                ("large", crate::raw::raw_post(&large(&body), era)),
            ];
            for (framing, request) in framings {
                let reply = crate::raw::raw_exchange(&proxy, &request).await;
                assert_eq!(
                    (reply.status, reply.body["error"]["code"].as_i64()),
                    (400, Some(-32600)),
                    "id {id}, {framing}, {era:?}: {}",
                    reply.body
                );
            }
        }
    }
    // A client that waits before sending its body is told to go on, then refused all the same.
    let null_id = r#"{"jsonrpc":"2.0","id":null,"method":"tools/list"}"#;
    for request in [
        crate::raw::raw_post(
            &chunked(null_id),
            &["Expect: 100-continue", "Transfer-Encoding: chunked", "Connection: close"],
        ),
        crate::raw::raw_post(&large(null_id), &["Expect: 100-continue", "Connection: close"]),
    ] {
        let mut stream = crate::raw::connect(&proxy).await;
        stream.write_all(&request).await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await.unwrap().unwrap();
        let answer = String::from_utf8_lossy(&answer);
        let last = answer.rsplit("HTTP/1.1 ").next().unwrap_or_default();
        assert!(answer.starts_with("HTTP/1.1 100"), "{answer}");
        assert!(last.starts_with("400") && last.contains("-32600"), "the refusal follows the 100: {answer}");
    }

    // A valid message still goes through in each framing.
    let body = r#"{"jsonrpc":"2.0","id":7,"method":"tools/list"}"#;
    let stateless = eras[1];
    for request in [
        crate::raw::raw_post(&chunked(body), &[stateless, &["Transfer-Encoding: chunked"]].concat()),
        crate::raw::raw_post(&large(body), stateless),
    ] {
        let reply = crate::raw::raw_exchange(&proxy, &request).await;
        assert_eq!((reply.status, &reply.body["id"]), (200, &json!(7)), "{}", reply.body);
        assert!(reply.body["result"]["tools"].is_array(), "{}", reply.body);
    }
}

#[tokio::test]
async fn mirrored_header_mismatch_is_400_with_32020() {
    let upstream = demo_upstream("a", &[]).await;
    let proxy = proxy(&route(&[&upstream], "")).await;
    let mcp = proxy.mcp();
    let (body, _) = stateless_body("resources/read", json!({"uri": "demo://docs/1"}), json!(4));
    for headers in [
        vec![("mcp-method", "resources/read"), ("mcp-name", "demo://docs/2")],
        vec![("mcp-method", "tools/call"), ("mcp-name", "demo://docs/1")],
        vec![("mcp-name", "demo://docs/1")],
        vec![("mcp-method", "resources/read")],
    ] {
        let mut all = vec![("mcp-protocol-version", "2026-07-28")];
        all.extend(headers.iter().copied());
        let reply = mcp.post(body.clone(), &all).await;
        assert_eq!(reply.status, 400, "{headers:?}");
        assert_eq!(error_code(&reply), -32020, "{headers:?}");
        assert_eq!(reply.json()["id"], 4);
    }
    // The base64 sentinel form is decoded before comparing.
    let encoded = "=?base64?ZGVtbzovL2RvY3MvMQ==?=";
    let reply = mcp
        .post(body, &[("mcp-protocol-version", "2026-07-28"), ("mcp-method", "resources/read"), ("mcp-name", encoded)])
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
}

/// A body that names its resource twice, differently, is read one way by one JSON parser and
/// the other way by another (the SDK servers keep the last): no `Mcp-Name` can vouch for it,
/// so it never reaches the upstream. Named twice alike, it is carried, uncached.
#[tokio::test]
async fn a_resource_named_twice_differently_matches_no_header() {
    let upstream = demo_upstream("a", &[]).await;
    let proxy = proxy(&route(&[&upstream], "")).await;
    let mcp = proxy.mcp();
    let read = |uris: [&str; 2]| {
        format!(
            r#"{{"jsonrpc":"2.0","id":3,"method":"resources/read","params":{{"uri":"{}","uri":"{}","_meta":{{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}}}}"#,
            uris[0], uris[1]
        )
    };
    let headers = |name| [("mcp-protocol-version", "2026-07-28"), ("mcp-method", "resources/read"), ("mcp-name", name)];
    let reads_before = upstream_reads(&upstream).await;
    for name in ["demo://docs/1", "demo://docs/2"] {
        let reply = mcp.post(read(["demo://docs/1", "demo://docs/2"]), &headers(name)).await;
        assert_eq!(reply.status, 400, "{reply:?}");
        assert_eq!(error_code(&reply), -32020);
        assert_eq!(reply.json()["id"], 3);
    }
    assert_eq!(upstream_reads(&upstream).await, reads_before, "refused before the upstream");
    let reply = mcp.post(read(["demo://docs/1", "demo://docs/1"]), &headers("demo://docs/1")).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(x_cache(&reply), "BYPASS", "never keyed on a body read leniently");
    assert_eq!(reply.json()["result"]["contents"][0]["uri"], "demo://docs/1");
}

/// A client still sending a body it was refused for reads the whole refusal: the proxy reads
/// on after answering (lingering close, as nginx does) instead of closing on unread bytes,
/// which resets the connection and can destroy the answer before the client reads it.
#[tokio::test]
async fn a_client_still_sending_a_refused_body_reads_the_whole_refusal() {
    let upstream = demo_upstream("a", &[]).await;
    let proxy = proxy_with(&route(&[&upstream], ""), "max_body = \"64KiB\"").await;
    let big = "x".repeat(8 << 20);
    let (body, _) = stateless_body("tools/call", json!({"name": "echo", "arguments": {"message": big}}), json!(1));
    let chunked = format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len());
    let cases = [
        // Refused by the hit path, on its Content-Length, before the body is read.
        ("content-length", crate::raw::raw_post(&body, &[])),
        // Refused by the proxy service, while the body streams in.
        ("chunked", crate::raw::raw_post(&chunked, &["Transfer-Encoding: chunked"])),
        // Refused on its head (a host not allowed): the body is unread too.
        ("head", crate::raw::raw_post(&body, &["Host: elsewhere.example"])),
    ];
    for (case, request) in cases {
        for attempt in 0..4 {
            let (mut reading, mut writing) = crate::raw::connect(&proxy).await.into_split();
            let request = request.clone();
            let sender = tokio::spawn(async move {
                // Fails once the proxy closes: the client is told of that after the answer.
                let _ = writing.write_all(&request).await;
                writing
            });
            let mut answer = Vec::new();
            let read = tokio::time::timeout(Duration::from_secs(40), reading.read_to_end(&mut answer)).await;
            let text = String::from_utf8_lossy(&answer);
            let read = read.unwrap_or_else(|_| panic!("{case} #{attempt}: no end of the answer\n{text}"));
            assert!(read.is_ok(), "{case} #{attempt}: {read:?} after reading\n{text}");
            let (head, json) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("{case}: {text}"));
            let expected = if case == "head" { " 403 " } else { " 413 " };
            assert!(head.starts_with("HTTP/1.1") && head.contains(expected), "{case}: {head}");
            let error: serde_json::Value = serde_json::from_str(json).unwrap_or_else(|_| panic!("{case}: {json}"));
            assert!(error["error"]["code"].is_i64(), "{case}: {json}");
            drop(sender.await.unwrap());
        }
    }
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let upstream = demo_upstream("a", &[]).await;
    let proxy = proxy_with(&route(&[&upstream], ""), "max_body = \"256KiB\"").await;
    let mcp = proxy.mcp();
    let big = "x".repeat(300 * 1024);
    let (body, _) = stateless_body("tools/call", json!({"name": "echo", "arguments": {"message": big}}), json!(1));
    let reply = mcp.post(body.clone(), &[]).await;
    assert_eq!(reply.status, 413, "{:?}", reply.status);
    assert_eq!(error_code(&reply), -32600);
    // Without Content-Length the limit is enforced while streaming.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        body.into_bytes().chunks(32 * 1024).map(|c| Ok(c.to_vec())).collect();
    let reply = mcp.post(reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)), &[]).await;
    assert_eq!(reply.status, 413, "chunked: {reply:?}");
    let message = reply.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(message.contains("262144 bytes"), "names the limit: {message}");
    assert!(!message.contains(&upstream.port.to_string()), "never the upstream's address: {message}");
    // Under the limit is fine.
    let reply = mcp
        .stateless("tools/call", json!({"name": "echo", "arguments": {"message": "x".repeat(200 * 1024)}}), &[])
        .await;
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn guards_reject_what_an_mcp_endpoint_must_not_take() {
    let upstream = demo_upstream("a", &[]).await;
    let proxy = proxy_with(&route(&[&upstream], ""), "allowed_origins = [\"https://app.example\"]").await;
    let mcp = proxy.mcp();
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}).to_string();

    let foreign = mcp.post(ping.clone(), &[("origin", "https://evil.example")]).await;
    assert_eq!(foreign.status, 403);
    error_code(&foreign);
    let session = mcp.initialize().await;
    let allowed = mcp.post(ping.clone(), &[("origin", "https://app.example"), ("mcp-session-id", &session)]).await;
    assert_eq!(allowed.status, 200, "{allowed:?}");

    let wrong_type =
        mcp.client.post(&mcp.url).header("content-type", "text/plain").body(ping.clone()).send().await.unwrap();
    assert_eq!(wrong_type.status(), 415);
    // A body in a coding mcp-edge does not decode: 415, naming the codings it takes; one that
    // says gzip and is not: 400.
    let encoded = mcp.post(ping.clone(), &[("content-encoding", "zstd"), ("mcp-session-id", &session)]).await;
    let takes = Some("gzip, deflate, br, identity");
    assert_eq!((encoded.status, encoded.header("accept-encoding")), (415, takes), "{encoded:?}");
    assert!(error_code(&encoded) != 0);
    let not_gzip = mcp.post(ping.clone(), &[("content-encoding", "gzip"), ("mcp-session-id", &session)]).await;
    assert_eq!(not_gzip.status, 400, "{not_gzip:?}");
    let plain = mcp.post(ping.clone(), &[("content-encoding", "identity"), ("mcp-session-id", &session)]).await;
    assert_eq!(plain.status, 200, "{plain:?}");
    let put = mcp.client.put(&mcp.url).body(ping.clone()).send().await.unwrap();
    assert_eq!(put.status(), 405);
    assert!(put.headers().contains_key("allow"));
    let nowhere = Mcp::new(&proxy.url("/elsewhere")).post(ping.clone(), &[]).await;
    assert_eq!(nowhere.status, 404);
    assert!(error_code(&nowhere) != 0);
}

/// Heads past 64 KiB or 256 fields get 431 with a JSON-RPC error (Pingora alone takes 1 MiB,
/// and answers more fields with an empty 400); within the limits a large head is served.
#[tokio::test]
async fn oversized_request_heads_get_431() {
    let upstream = demo_upstream("a", &[]).await;
    let proxy = proxy(&route(&[&upstream], "")).await;
    let ping = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    let big = format!("X-Big: {}", "a".repeat(70 * 1024));
    let many: Vec<String> = (0..300).map(|n| format!("X-{n}: v")).collect();
    for headers in [vec![big.as_str()], many.iter().map(String::as_str).collect()] {
        let reply = raw_exchange(&proxy, &raw_post(ping, &headers)).await;
        assert_eq!(reply.status, 431, "{:?}", reply.body);
        assert_eq!(reply.body["error"]["code"], -32600);
        assert!(reply.body["error"]["message"].as_str().unwrap().starts_with("Request Header Fields Too Large"));
    }
    let mcp = proxy.mcp();
    let session = mcp.initialize().await;
    let within = "a".repeat(40 * 1024);
    // More fields than the hit path parses (48), fewer than the demo upstream takes (100).
    let names: Vec<String> = (0..80).map(|n| format!("x-{n}")).collect();
    let fields: Vec<(&str, &str)> = names.iter().map(|name| (name.as_str(), "v")).collect();
    for mut headers in [vec![("x-big", within.as_str())], fields] {
        headers.push(("mcp-session-id", &session));
        let reply = mcp.post(ping, &headers).await;
        assert_eq!(reply.status, 200, "{reply:?}");
    }
}

#[tokio::test]
async fn unknown_sessions_get_404() {
    let upstream = demo_upstream("a", &[]).await;
    let proxy = proxy(&route(&[&upstream], "")).await;
    let mcp = proxy.mcp();
    for session in ["not-ours", "deadbeef.abc", "0123abcd.", "0123abcd.x y"] {
        let reply = mcp.in_session(session, 1, "ping", json!({})).await;
        assert_eq!(reply.status, 404, "{session:?}");
        assert_eq!(error_code(&reply), -32001);
    }
    // An id that is not text (bytes past ASCII) is not one of ours either: 404, never
    // forwarded as if the request had no session.
    let ping = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    let reply = raw_exchange(&proxy, &raw_post(ping, &["Mcp-Session-Id: caf\u{e9}"])).await;
    assert_eq!(reply.status, 404, "{:?}", reply.body);
    // An id naming a real upstream but a session it never minted: the upstream says 404.
    let real = mcp.initialize().await;
    let (upstream_id, _) = real.split_once('.').unwrap();
    let reply = mcp.in_session(&format!("{upstream_id}.forged"), 1, "ping", json!({})).await;
    assert_eq!(reply.status, 404);
}

#[tokio::test]
async fn dead_upstreams_give_503_naming_the_route() {
    let dead_port = free_port();
    let routes =
        format!("[[route]]\nname = \"docs\"\npath = \"/mcp\"\nupstreams = [\"http://127.0.0.1:{dead_port}/mcp\"]\n");
    let proxy = proxy(&routes).await;
    let reply = proxy.mcp().stateless("tools/list", json!({}), &[]).await;
    assert!(reply.status == 502 || reply.status == 503, "{reply:?}");
    let json = reply.json();
    assert_eq!(json["error"]["code"], -32000);
    assert!(json["error"]["message"].as_str().unwrap().contains("route docs"), "{json}");
    assert_eq!(json["id"], 1);
    // The first health check finds it down: /readyz says so, naming the route.
    let mut readiness = None;
    for _ in 0..100 {
        let response = reqwest::get(proxy.admin_url("/readyz")).await.unwrap();
        if response.status() == 503 {
            readiness = Some(response.text().await.unwrap());
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let readiness = readiness.expect("/readyz turns 503");
    assert!(readiness.contains("\"docs\""), "{readiness}");
}

#[tokio::test]
async fn slow_upstreams_give_504() {
    let upstream = demo_upstream("a", &["--json"]).await;
    let proxy = proxy(&route(&[&upstream], "read_timeout = \"300ms\"")).await;
    let started = std::time::Instant::now();
    let reply = proxy.mcp().stateless("tools/call", json!({"name": "sleep", "arguments": {"ms": 3000}}), &[]).await;
    assert_eq!(reply.status, 504, "{reply:?}");
    assert_eq!(error_code(&reply), -32000);
    assert!(started.elapsed() < std::time::Duration::from_secs(2), "took {:?}", started.elapsed());
    let fast = proxy.mcp().stateless("tools/call", json!({"name": "sleep", "arguments": {"ms": 10}}), &[]).await;
    assert_eq!(fast.status, 200);
    // A read is tried on every replica (here the one) before it fails: still a timeout, 504.
    let slow_read = read(&proxy.mcp(), "demo://slow", None).await;
    assert_eq!(slow_read.status, 504, "{slow_read:?}");
}

/// Concurrent misses of one request wait for the first one's answer, but a leader whose
/// upstream stays silent holds them no longer than its own `read_timeout`: each gets its 504
/// within about two timeouts (the leader's, then its own attempt), not the upstream's silence.
#[tokio::test]
async fn waiters_behind_a_silent_leader_are_released_by_its_timeout() {
    let upstream = demo_upstream("a", &["--json"]).await;
    let routes = route(&[&upstream], "read_timeout = \"400ms\"\n[route.policy]\ncache_tools = [\"sleep\"]");
    let proxy = proxy(&routes).await;
    let started = std::time::Instant::now();
    let calls = (0..4).map(|_| {
        let mcp = proxy.mcp();
        tokio::spawn(async move {
            let call = json!({"name": "sleep", "arguments": {"ms": 8000}});
            let reply = mcp.stateless("tools/call", call, &[("authorization", "Bearer alice")]).await;
            (reply.status, started.elapsed())
        })
    });
    for call in calls.collect::<Vec<_>>() {
        let (status, took) = call.await.unwrap();
        assert_eq!(status, 504);
        assert!(took < Duration::from_millis(2500), "a waiter was held {took:?}");
    }
}
