//! Whose walks steer whose prefetches, and what waiting prefetches may hold: an upstream that
//! logs who read what (method, URI, `Authorization`) shows every read made under a credential.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::*;

/// One request the logging upstream answered.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    method: String,
    uri: String,
    authorization: String,
}

#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<Seen>>>);

impl Log {
    /// How many reads of `uri` the upstream got under `authorization`.
    fn reads(&self, uri: &str, authorization: &str) -> usize {
        let seen = self.0.lock().unwrap();
        seen.iter().filter(|s| s.method == "resources/read" && s.uri == uri && s.authorization == authorization).count()
    }

    fn dump(&self) -> String {
        format!("{:#?}", self.0.lock().unwrap())
    }
}

/// A stateless-era upstream that answers every `resources/read` with a private result fresh for
/// `ttl_ms`, and logs it. It refuses (401 and a JSON-RPC error, which nothing stores) a
/// credential containing `forged`, and a URI containing `deny=TOKEN` to `Bearer TOKEN`.
async fn logging_upstream(ttl_ms: u64) -> (u16, Log) {
    let log = Log::default();
    let kept = log.clone();
    let port = raw_upstream_with(move |request| {
        let (head, body) = request.split_once("\r\n\r\n").unwrap_or((request, ""));
        if !head.starts_with("POST ") {
            return b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n".to_vec();
        }
        let authorization = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("authorization").then(|| value.trim().to_string())
            })
            .unwrap_or_default();
        let message: Value = serde_json::from_str(body).unwrap_or_default();
        let method = message["method"].as_str().unwrap_or_default().to_string();
        let uri = message["params"]["uri"].as_str().unwrap_or_default().to_string();
        kept.0.lock().unwrap().push(Seen { method, uri: uri.clone(), authorization: authorization.clone() });
        let token = authorization.strip_prefix("Bearer ").unwrap_or_default();
        let refused = authorization.contains("forged") || uri.contains(&format!("deny={token}"));
        let (status, answer) = if refused {
            (
                "401 Unauthorized",
                json!({"jsonrpc": "2.0", "id": message["id"], "error": {"code": -32001, "message": "unauthorized"}}),
            )
        } else {
            let contents =
                [json!({"uri": uri, "mimeType": "text/plain", "text": format!("{uri} for {authorization}")})];
            let result =
                json!({"contents": contents, "resultType": "complete", "ttlMs": ttl_ms, "cacheScope": "private"});
            ("200 OK", json!({"jsonrpc": "2.0", "id": message["id"], "result": result}))
        };
        let answer = answer.to_string();
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
            answer.len()
        )
        .into_bytes()
    })
    .await;
    (port, log)
}

/// A route in front of the logging upstream, prefetching with `prefetch` keys.
async fn proxy_to(port: u16, prefetch: &str) -> Proxy {
    proxy(&format!(
        "[[route]]\npath = \"/mcp\"\nupstreams = [\"http://127.0.0.1:{port}/mcp\"]\n[route.prefetch]\nenabled = true\n{prefetch}\n"
    ))
    .await
}

const A: &str = "docs://a";
const B: &str = "docs://b";

/// `user` reads A, then B.
async fn walk_a_to_b(mcp: &Mcp, user: &str, b: &str) {
    for uri in [A, b] {
        let reply = read(mcp, uri, Some(user)).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the upstream has read `uri` under `authorization` `at_least` times, or `limit`.
async fn wait_for_reads(log: &Log, uri: &str, authorization: &str, at_least: usize, limit: Duration) -> usize {
    let until = tokio::time::Instant::now() + limit;
    while log.reads(uri, authorization) < at_least && tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    log.reads(uri, authorization)
}

/// The confused deputy (issue #32): one identity walking A → B, however often, never makes the
/// proxy read B under another's credential; three distinct identities do (the feature works).
#[tokio::test]
async fn one_identity_never_steers_a_read_under_anothers_credential() {
    let (port, log) = logging_upstream(60_000).await;
    let proxy = proxy_to(port, "delay = \"200ms\"").await;
    let mcp = proxy.mcp();
    for _ in 0..10 {
        walk_a_to_b(&mcp, "Bearer mallory", B).await;
    }
    read(&mcp, A, Some("Bearer alice")).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(log.reads(B, "Bearer alice"), 0, "mallory steered a read as alice:\n{}", log.dump());
    // Two more identities make three: now alice's read of A prefetches B, as alice.
    for user in ["Bearer u1", "Bearer u2"] {
        walk_a_to_b(&mcp, user, B).await;
    }
    read(&mcp, A, Some("Bearer alice")).await;
    assert_eq!(wait_for_reads(&log, B, "Bearer alice", 1, Duration::from_secs(2)).await, 1, "{}", log.dump());
    let reply = read(&mcp, B, Some("Bearer alice")).await;
    assert_eq!(x_cache(&reply), "HIT", "{reply:?}");
    assert_eq!(reply.json()["result"]["contents"][0]["text"], format!("{B} for Bearer alice"));
    assert_eq!(log.reads(B, "Bearer mallory"), 1, "mallory's own walks were hits");
}

/// One credential spelled several ways (the scheme's case, the whitespace after it) is one
/// credential to a server, and one identity here: it cannot make up `min_identities` alone.
#[tokio::test]
async fn one_credential_spelled_three_ways_is_one_identity() {
    let (port, log) = logging_upstream(60_000).await;
    let proxy = proxy_to(port, "delay = \"200ms\"").await;
    let mcp = proxy.mcp();
    for spelling in ["Bearer mallory", "bearer mallory", "BEARER  mallory", "Bearer\tmallory"] {
        walk_a_to_b(&mcp, spelling, B).await;
    }
    read(&mcp, A, Some("Bearer alice")).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(log.reads(B, "Bearer alice"), 0, "mallory steered a read as alice:\n{}", log.dump());
}

/// Credentials the upstream refuses are no witnesses: a read teaches only once its answer is
/// in the cache, so three forged identities steer nothing.
#[tokio::test]
async fn forged_credentials_the_upstream_refuses_teach_nothing() {
    let (port, log) = logging_upstream(60_000).await;
    let proxy = proxy_to(port, "delay = \"200ms\"").await;
    let mcp = proxy.mcp();
    for user in ["Bearer forged-1", "Bearer forged-2", "Bearer forged-3", "Bearer forged-4"] {
        for uri in [A, B] {
            assert_eq!(read(&mcp, uri, Some(user)).await.status, 401);
        }
    }
    read(&mcp, A, Some("Bearer alice")).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(log.reads(B, "Bearer alice"), 0, "{}", log.dump());
}

/// A client's own walk is prefetched for it alone (its entries expire between walks, so each
/// read reaches the upstream).
#[tokio::test]
async fn a_clients_own_walk_is_prefetched_for_it_alone() {
    let (port, log) = logging_upstream(300).await;
    let proxy = proxy_to(port, "delay = \"200ms\"\nrefresh_ahead = 0.0").await;
    let mcp = proxy.mcp();
    for _ in 0..2 {
        walk_a_to_b(&mcp, "Bearer alice", B).await;
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert_eq!(log.reads(B, "Bearer alice"), 2);
    read(&mcp, A, Some("Bearer alice")).await;
    assert_eq!(wait_for_reads(&log, B, "Bearer alice", 3, Duration::from_secs(2)).await, 3, "{}", log.dump());
    read(&mcp, A, Some("Bearer bob")).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(log.reads(B, "Bearer bob"), 0, "alice's walk is hers: {}", log.dump());
}

/// A prefetch the upstream refuses reaches no client and is counted `failed` (the walk is
/// learned from those the upstream answers; it refuses `b?deny=u4` to u4 alone).
#[tokio::test]
async fn a_failed_prefetch_reaches_no_client_and_is_counted() {
    let (port, log) = logging_upstream(60_000).await;
    let proxy = proxy_to(port, "").await;
    let mcp = proxy.mcp();
    let denied = "docs://b?deny=u4";
    for user in ["Bearer u1", "Bearer u2", "Bearer u3"] {
        walk_a_to_b(&mcp, user, denied).await;
    }
    read(&mcp, A, Some("Bearer u4")).await;
    assert_eq!(wait_for_reads(&log, denied, "Bearer u4", 1, Duration::from_secs(2)).await, 1, "{}", log.dump());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let failed = metric(&proxy, "mcp_prefetch_total{kind=\"sequence\",outcome=\"failed\",route=\"/mcp\"}").await;
    assert!(failed >= 1.0, "{failed}\n{}", proxy.process.log());
    let reply = read(&mcp, denied, Some("Bearer u4")).await;
    assert_eq!(x_cache(&reply), "MISS", "errors are never stored, a prefetched one neither");
    assert!(reply.json()["error"].is_object(), "{reply:?}");
}

/// Issue #32, defect 2: reads whose prediction waits for its delay, each carrying a 60 KB
/// header, hold no more than the pending set's bounds (1 000 / 16 MiB, 16 / 1 MiB a client);
/// the rest are dropped and counted.
#[tokio::test]
async fn deferred_predictions_hold_bounded_memory() {
    let (port, _log) = logging_upstream(600_000).await;
    // P(B | A) = 3/4: between min_confidence and immediate_confidence, so it waits (long).
    let proxy = proxy_to(port, "delay = \"60s\"\nimmediate_confidence = 0.9\nmin_confidence = 0.4").await;
    let mcp = proxy.mcp();
    for user in ["Bearer u1", "Bearer u2", "Bearer u3"] {
        walk_a_to_b(&mcp, user, B).await;
    }
    walk_a_to_b(&mcp, "Bearer u1", "docs://c").await;
    let padding = "p".repeat(60_000);
    let mut flood = Vec::new();
    for n in 0..45 {
        let mcp = mcp.clone();
        let padding = padding.clone();
        flood.push(tokio::spawn(async move {
            let user = format!("Bearer flood-{n}");
            let reads = if n == 0 { 40 } else { 10 };
            for _ in 0..reads {
                let headers = [("authorization", user.as_str()), ("x-padding", padding.as_str())];
                let reply = mcp.stateless("resources/read", json!({"uri": A}), &headers).await;
                assert_eq!(reply.status, 200, "{reply:?}");
            }
        }));
    }
    for reader in flood {
        reader.await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pending = metric(&proxy, "mcp_prefetch_pending").await;
    let pending_bytes = metric(&proxy, "mcp_prefetch_pending_bytes").await;
    let dropped = metric(&proxy, "mcp_prefetch_total{kind=\"sequence\",outcome=\"dropped\",route=\"/mcp\"}").await;
    let log = proxy.process.log();
    assert!(pending_bytes > 0.0 && pending > 0.0, "predictions wait: {pending} ({pending_bytes} bytes)\n{log}");
    assert!(pending <= 1_000.0, "{pending}");
    assert!(pending_bytes <= (16 << 20) as f64, "{pending_bytes} bytes pending");
    assert!(dropped >= 50.0, "{dropped} dropped ({pending} pending, {pending_bytes} bytes)");
    assert!(metric(&proxy, "mcp_prefetch_queued_bytes").await <= (4 << 20) as f64);
}

/// Refresh-ahead sends a hit's request again before its entry expires, but never a tool call,
/// even on a route that caches that tool: a prefetch calls no tool. Every call the upstream
/// gets is one a client made (a miss).
#[tokio::test]
async fn refresh_ahead_never_calls_a_tool_again() {
    let (port, log) = logging_upstream(600).await;
    let proxy = proxy(&format!(
        "[[route]]\npath = \"/mcp\"\nupstreams = [\"http://127.0.0.1:{port}/mcp\"]\n\
         [route.policy]\ncache_tools = [\"probe\"]\n[route.prefetch]\nenabled = true\nrefresh_ahead = 0.9\n"
    ))
    .await;
    let mcp = proxy.mcp();
    let (mut misses, mut hits) = (0, 0);
    let until = tokio::time::Instant::now() + Duration::from_millis(2000);
    while tokio::time::Instant::now() < until {
        let call = json!({"name": "probe", "arguments": {}});
        let reply = mcp.stateless("tools/call", call, &[("authorization", "Bearer alice")]).await;
        match x_cache(&reply) {
            "MISS" => misses += 1,
            "HIT" => hits += 1,
            other => panic!("{other}: {reply:?}"),
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let calls = log.0.lock().unwrap().iter().filter(|seen| seen.method == "tools/call").count();
    assert!(hits > 0, "the tool's answers are cached");
    assert_eq!(calls, misses, "every call upstream is a client's miss:\n{}", log.dump());
}

/// The prefetch models saved beside the disk cache hold URIs, never a credential: identities
/// are kept as hashes.
#[tokio::test]
async fn the_saved_models_hold_no_credential() {
    let upstream = demo_upstream("a", &["--scope", "private"]).await;
    let routes = route(&[&upstream], "[route.prefetch]\nenabled = true\n");
    let mut proxy = proxy_full(&routes, "", |dir| {
        format!("[cache]\ndisk_path = {:?}\ndisk_size = \"64MiB\"\n", dir.join("cache").display().to_string())
    })
    .await;
    let mcp = proxy.mcp();
    for user in ["Bearer s3cret-credential-1", "Bearer s3cret-credential-2", "Bearer s3cret-credential-3"] {
        for uri in ["demo://docs/1", "demo://docs/2"] {
            assert_eq!(read(&mcp, uri, Some(user)).await.status, 200);
        }
    }
    proxy.process.signal("TERM");
    assert_eq!(proxy.process.wait_exit(Duration::from_secs(15)), Some(0), "{}", proxy.process.log());
    let saved = proxy.config_path.with_file_name("cache").join("mcp-edge-prefetch.json");
    let text = std::fs::read_to_string(&saved).unwrap_or_else(|e| panic!("{}: {e}", saved.display()));
    assert!(text.contains("demo://docs/2"), "the walk was saved: {text}");
    assert!(!text.contains("s3cret") && !text.contains("Bearer"), "a credential in {}: {text}", saved.display());
}
