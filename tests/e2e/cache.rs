//! The cache: hits without reaching the upstream when allowed, misses when not; scopes that
//! never leak; id splicing; coalescing; invalidation by notification and purge; stale answers
//! when upstreams fail; persistence across a restart.

use std::collections::HashSet;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::*;

#[tokio::test]
async fn repeated_reads_are_answered_from_the_cache() {
    let upstream = demo_upstream("a", &[]).await;
    let proxy = proxy(&route(&[&upstream], "")).await;
    let mcp = proxy.mcp();
    let first = read(&mcp, "demo://docs/1", None).await;
    assert_eq!(x_cache(&first), "MISS");
    assert_eq!(first.json()["result"]["ttlMs"], 60000);
    tokio::time::sleep(Duration::from_millis(50)).await;
    for _ in 0..5 {
        let again = read(&mcp, "demo://docs/1", None).await;
        assert_eq!((again.status, x_cache(&again)), (200, "HIT"));
        let result = &again.json()["result"];
        assert_eq!(result["contents"], first.json()["result"]["contents"]);
        let ttl = result["ttlMs"].as_u64().unwrap();
        assert!(ttl < 60000 && ttl > 50000, "a hit restates the remaining ttl, got {ttl}");
    }
    assert_eq!(upstream_reads(&upstream).await, 1, "only the first read reached the upstream");
    assert_eq!(x_cache(&read(&mcp, "demo://docs/2", None).await), "MISS", "another URI is another entry");
    let call = mcp.stateless("tools/call", json!({"name": "whoami", "arguments": {}}), &[]).await;
    assert_eq!(x_cache(&call), "BYPASS", "tools are not cached unless opted in");
}

#[tokio::test]
async fn hits_answer_each_request_with_its_own_id() {
    let upstream = demo_upstream("a", &[]).await;
    let proxy = proxy(&route(&[&upstream], "")).await;
    let mcp = proxy.mcp();
    read(&mcp, "demo://docs/1", None).await;
    for id in [json!(0), json!(-7), json!(42), json!("abc"), json!("ünï-cødé ✓"), json!(9007199254740993u64), json!("")]
    {
        let (body, _) = stateless_body("resources/read", json!({"uri": "demo://docs/1"}), id.clone());
        let headers =
            [("mcp-protocol-version", "2026-07-28"), ("mcp-method", "resources/read"), ("mcp-name", "demo://docs/1")];
        let reply = mcp.post(body, &headers).await;
        assert_eq!(x_cache(&reply), "HIT");
        assert_eq!(reply.json()["id"], id, "{}", reply.body);
    }
    // A huge integer id is copied byte for byte, never through a float.
    let raw = r#"{"jsonrpc":"2.0","id":123456789012345678901234567890,"method":"resources/read","params":{"uri":"demo://docs/1","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#;
    let reply = mcp
        .post(
            raw,
            &[("mcp-protocol-version", "2026-07-28"), ("mcp-method", "resources/read"), ("mcp-name", "demo://docs/1")],
        )
        .await;
    assert!(reply.body.starts_with(r#"{"jsonrpc":"2.0","id":123456789012345678901234567890,"#), "{}", reply.body);
}

#[tokio::test]
async fn what_must_not_be_cached_is_not() {
    let no_ttl = demo_upstream("zero", &["--ttl-ms", "0"]).await;
    let proxy_zero = proxy(&route(&[&no_ttl], "")).await;
    for _ in 0..2 {
        assert_eq!(x_cache(&read(&proxy_zero.mcp(), "demo://docs/1", None).await), "MISS");
    }
    assert_eq!(upstream_reads(&no_ttl).await, 2, "ttlMs 0 is never served from cache");

    let upstream = demo_upstream("a", &[]).await;
    let edge = proxy(&route(&[&upstream], "")).await;
    let mcp = edge.mcp();
    for _ in 0..2 {
        let missing = read(&mcp, "demo://nope", None).await;
        assert_eq!(missing.json()["error"]["code"], -32602);
        assert_eq!(x_cache(&missing), "MISS", "errors are not stored");
    }
    // Private results without a credential (stateless era) are not cached at all.
    let private = demo_upstream("p", &["--scope", "private"]).await;
    let proxy_private = proxy(&route(&[&private], "")).await;
    for _ in 0..2 {
        read(&proxy_private.mcp(), "demo://docs/1", None).await;
    }
    assert_eq!(upstream_reads(&private).await, 2);
}

/// An upstream's HTTP `Cache-Control: no-store` or `private`, or a `Set-Cookie`, keeps its
/// answer out of the cache whatever its MCP hints say (as nginx's `proxy_cache` does);
/// `no-cache`, which the SDK servers put on every SSE answer, does not.
#[tokio::test]
async fn an_upstreams_no_store_or_private_keeps_its_answer_out_of_the_cache() {
    let upstream = demo_upstream("a", &[]).await;
    let proxy = proxy(&route(&[&upstream], "")).await;
    let mcp = proxy.mcp();
    for directives in ["no-store", "max-age=60,private"] {
        let uri = format!("demo://cache-control/{directives}");
        for _ in 0..2 {
            let reply = read(&mcp, &uri, None).await;
            assert_eq!((reply.status, x_cache(&reply)), (200, "MISS"), "{uri}: {}", reply.body);
            assert!(
                reply.json()["result"]["ttlMs"].as_u64().is_some_and(|ttl| ttl > 0),
                "hinted cacheable: {}",
                reply.body
            );
        }
    }
    for _ in 0..2 {
        let reply = read(&mcp, "demo://set-cookie", None).await;
        assert_eq!(x_cache(&reply), "MISS", "{}", reply.body);
        assert_eq!(reply.header("set-cookie"), Some("demo=1; Path=/; HttpOnly"), "the cookie reaches its client");
    }
    assert_eq!(upstream_reads(&upstream).await, 6);
    let no_cache = "demo://cache-control/no-cache";
    assert_eq!(x_cache(&read(&mcp, no_cache, None).await), "MISS");
    assert_eq!(x_cache(&read(&mcp, no_cache, None).await), "HIT");
}

/// An answer that varies on a request header the cache key does not hold (`Vary: *`,
/// `Authorization`, `Accept-Language`) is not stored: a hit could give one client the variant
/// meant for another's headers. Varying on the encoding or the mirrored MCP headers is keyed.
#[tokio::test]
async fn an_answer_varying_on_an_unkeyed_header_is_not_stored() {
    let upstream = demo_upstream("a", &[]).await;
    let proxy = proxy(&route(&[&upstream], "")).await;
    let mcp = proxy.mcp();
    for names in ["*", "Authorization", "Accept-Encoding, Accept-Language"] {
        let uri = format!("demo://vary/{names}");
        for _ in 0..2 {
            let reply = read(&mcp, &uri, None).await;
            assert_eq!((reply.status, x_cache(&reply)), (200, "MISS"), "{uri}: {}", reply.body);
        }
    }
    assert_eq!(upstream_reads(&upstream).await, 6);
    let keyed = "demo://vary/Accept-Encoding, Mcp-Name";
    assert_eq!(x_cache(&read(&mcp, keyed, None).await), "MISS");
    assert_eq!(x_cache(&read(&mcp, keyed, None).await), "HIT");
}

#[tokio::test]
async fn private_entries_never_reach_another_user_under_concurrency() {
    let upstream = demo_upstream("p", &["--scope", "private"]).await;
    let proxy = proxy(&route(&[&upstream], "")).await;
    let mcp = proxy.mcp();
    let users: Vec<String> = (0..4).map(|u| format!("Bearer token-of-user-{u}")).collect();
    let requests = (0..1000).map(|i| {
        let (mcp, user) = (mcp.clone(), users[i % users.len()].clone());
        tokio::spawn(async move {
            let reply = read(&mcp, "demo://me", Some(&user)).await;
            (user, reply)
        })
    });
    let mut outcomes = HashSet::new();
    for handle in futures_util::future::join_all(requests).await {
        let (user, reply) = handle.unwrap();
        assert_eq!(reply.status, 200);
        let text = reply.json()["result"]["contents"][0]["text"].as_str().unwrap().to_string();
        assert_eq!(text, format!("you are {user}"), "a user was served another user's private entry");
        outcomes.insert(x_cache(&reply).to_string());
    }
    assert!(outcomes.contains("HIT"), "private entries are reused by their owner: {outcomes:?}");
    let reads = upstream_reads(&upstream).await;
    assert!(reads < 100, "each user's entry is fetched about once, got {reads} upstream reads");
}

#[tokio::test]
async fn concurrent_misses_make_one_upstream_request() {
    let upstream = demo_upstream("a", &[]).await;
    let proxy = proxy(&route(&[&upstream], "")).await;
    let mcp = proxy.mcp();
    let requests = (0..100).map(|_| {
        let mcp = mcp.clone();
        tokio::spawn(async move { read(&mcp, "demo://slow", None).await })
    });
    for handle in futures_util::future::join_all(requests).await {
        let reply = handle.unwrap();
        assert_eq!(reply.status, 200);
        assert_eq!(reply.json()["result"]["contents"][0]["text"], "slow resource");
    }
    assert_eq!(upstream_reads(&upstream).await, 1, "100 concurrent misses must coalesce into one fetch");
}

#[tokio::test]
async fn misses_of_an_uncacheable_read_do_not_wait_on_each_other() {
    // ttlMs 0: nothing from this upstream is cached. Once one answer has shown that, misses of
    // the same read go upstream at once instead of queueing behind a leader whose answer
    // could not serve them (hit-for-pass).
    let upstream = demo_upstream("zero", &["--ttl-ms", "0"]).await;
    let proxy = proxy(&route(&[&upstream], "")).await;
    let mcp = proxy.mcp();
    assert_eq!(x_cache(&read(&mcp, "demo://slow", None).await), "MISS");
    let requests = (0..10).map(|_| {
        let mcp = mcp.clone();
        tokio::spawn(async move { read(&mcp, "demo://slow", None).await })
    });
    for handle in futures_util::future::join_all(requests).await {
        let reply = handle.unwrap();
        assert_eq!(reply.json()["result"]["contents"][0]["text"], "slow resource");
        assert_eq!(x_cache(&reply), "MISS");
    }
    assert_eq!(upstream_reads(&upstream).await, 11);
    let coalesce =
        |result: &str| format!(r#"mcp_cache_operations_total{{operation="coalesce",result="{result}",tier="-"}}"#);
    assert_eq!(metric(&proxy, &coalesce("wait")).await, 0.0, "no miss waited on another");
    assert_eq!(metric(&proxy, &coalesce("pass")).await, 10.0);
    assert_eq!(metric(&proxy, &coalesce("lead")).await, 1.0, "only the first miss led");
}

#[tokio::test]
async fn notifications_on_a_passing_stream_invalidate() {
    let upstream = demo_upstream("a", &[]).await;
    let proxy = proxy(&route(&[&upstream], "")).await;
    let mcp = proxy.mcp();
    let before = read(&mcp, "demo://versioned/x", None).await;
    assert!(before.body.contains("x at version 1"));
    assert_eq!(x_cache(&read(&mcp, "demo://versioned/x", None).await), "HIT");
    read(&mcp, "demo://versioned/y", None).await;
    // The tool's SSE answer carries notifications/resources/updated for x only.
    let touched =
        mcp.stateless("tools/call", json!({"name": "touch", "arguments": {"uri": "demo://versioned/x"}}), &[]).await;
    assert_eq!(touched.tool_text(), "version 2");
    let after = read(&mcp, "demo://versioned/x", None).await;
    assert_eq!(x_cache(&after), "MISS");
    assert!(after.body.contains("x at version 2"), "{}", after.body);
    assert_eq!(x_cache(&read(&mcp, "demo://versioned/y", None).await), "HIT", "other URIs stay cached");
}

#[tokio::test]
async fn the_purge_api_invalidates_by_hand() {
    let upstream = demo_upstream("a", &[]).await;
    let routes = format!("[[route]]\nname = \"docs\"\npath = \"/mcp\"\nupstreams = [{:?}]\n", upstream.url());
    let proxy = proxy(&routes).await;
    let mcp = proxy.mcp();
    let client = reqwest::Client::new();
    let purge = |body: Value| {
        let (client, url) = (client.clone(), proxy.admin_url("/purge"));
        async move {
            let request = client.post(url).header("content-type", "application/json").body(body.to_string());
            read_reply(request.send().await.unwrap()).await
        }
    };
    for uri in ["demo://docs/1", "demo://docs/2"] {
        read(&mcp, uri, None).await;
    }
    mcp.stateless("resources/list", json!({}), &[]).await;
    assert_eq!(x_cache(&read(&mcp, "demo://docs/1", None).await), "HIT");

    let done = purge(json!({"route": "docs", "uri": "demo://docs/1"})).await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert_eq!(x_cache(&read(&mcp, "demo://docs/1", None).await), "MISS");
    assert_eq!(x_cache(&read(&mcp, "demo://docs/2", None).await), "HIT");

    assert_eq!(purge(json!({"route": "docs", "all": true})).await.status, 200);
    assert_eq!(x_cache(&read(&mcp, "demo://docs/2", None).await), "MISS");
    assert_eq!(x_cache(&mcp.stateless("resources/list", json!({}), &[]).await), "MISS");

    assert_eq!(purge(json!({"route": "nope", "all": true})).await.status, 404);
    assert_eq!(purge(json!({"route": "docs"})).await.status, 400);
    let garbage = client
        .post(proxy.admin_url("/purge"))
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(garbage.status(), 400);
}

#[tokio::test]
async fn stale_answers_are_served_when_every_upstream_is_down() {
    let mut upstream = demo_upstream("a", &["--ttl-ms", "300"]).await;
    let proxy = proxy(&route(&[&upstream], "[route.policy]\nstale_if_error = \"1m\"")).await;
    let mcp = proxy.mcp();
    let fresh = read(&mcp, "demo://docs/1", None).await;
    upstream.process.kill();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let stale = read(&mcp, "demo://docs/1", None).await;
    assert_eq!((stale.status, x_cache(&stale)), (200, "STALE"), "{stale:?}");
    assert_eq!(stale.json()["result"]["contents"], fresh.json()["result"]["contents"]);
    assert_eq!(stale.json()["result"]["ttlMs"], 0);
    let never_cached = read(&mcp, "demo://docs/2", None).await;
    assert!(never_cached.status >= 500, "nothing stale to serve: {never_cached:?}");
}

#[tokio::test]
async fn stale_answers_are_served_when_the_upstream_answers_5xx() {
    let mut healthy = demo_upstream("a", &["--ttl-ms", "300"]).await;
    let port = healthy.port;
    let proxy =
        proxy(&route(&[&healthy], "[route.policy]\nstale_if_error = \"1m\"\n[route.health]\ninterval = \"1h\"")).await;
    let mcp = proxy.mcp();
    let fresh = read(&mcp, "demo://docs/1", None).await;
    healthy.process.kill();
    let _broken = demo_upstream_on(port, "a", &["--fail-status", "503"]).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let stale = read(&mcp, "demo://docs/1", None).await;
    assert_eq!((stale.status, x_cache(&stale)), (200, "STALE"), "{stale:?}");
    assert_eq!(stale.json()["result"]["contents"], fresh.json()["result"]["contents"]);
    let uncached = read(&mcp, "demo://docs/9", None).await;
    assert_eq!(uncached.status, 503, "with nothing stale, the upstream's 5xx passes through");
}

#[tokio::test]
async fn entries_survive_a_restart_on_disk() {
    let upstream = demo_upstream("a", &[]).await;
    let mut proxy = proxy_full(&route(&[&upstream], ""), "", |dir| {
        format!(
            "[cache]\nmemory = \"8MiB\"\ndisk_path = {:?}\ndisk_size = \"64MiB\"\n",
            dir.join("cache").display().to_string()
        )
    })
    .await;
    assert_eq!(x_cache(&read(&proxy.mcp(), "demo://docs/3", None).await), "MISS");
    proxy.restart().await;
    let after = read(&proxy.mcp(), "demo://docs/3", None).await;
    assert_eq!(x_cache(&after), "HIT", "{:?}\n{}", after, proxy.process.log());
    assert_eq!(upstream_reads(&upstream).await, 1);
}

#[tokio::test]
async fn a_purge_before_a_restart_still_holds_after_it() {
    let upstream = demo_upstream("a", &[]).await;
    let routes = format!("[[route]]\nname = \"docs\"\npath = \"/mcp\"\nupstreams = [{:?}]\n", upstream.url());
    let mut proxy = proxy_full(&routes, "", |dir| {
        format!(
            "[cache]\nmemory = \"8MiB\"\ndisk_path = {:?}\ndisk_size = \"64MiB\"\n",
            dir.join("cache").display().to_string()
        )
    })
    .await;
    for uri in ["demo://docs/1", "demo://docs/2"] {
        read(&proxy.mcp(), uri, None).await;
    }
    let purge = reqwest::Client::new()
        .post(proxy.admin_url("/purge"))
        .header("content-type", "application/json")
        .body(json!({"route": "docs", "uri": "demo://docs/1"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(purge.status(), 200);
    proxy.restart().await;
    assert_eq!(x_cache(&read(&proxy.mcp(), "demo://docs/1", None).await), "MISS", "purged before the restart");
    assert_eq!(x_cache(&read(&proxy.mcp(), "demo://docs/2", None).await), "HIT");
    assert_eq!(x_cache(&read(&proxy.mcp(), "demo://docs/1", None).await), "HIT", "fetched after the purge");
}

#[tokio::test]
async fn an_unusable_cache_directory_still_starts_memory_only() {
    let upstream = demo_upstream("a", &[]).await;
    let proxy = proxy_full(&route(&[&upstream], ""), "", |dir| {
        let blocker = dir.join("not-a-directory");
        std::fs::write(&blocker, "a file where the cache directory should be").unwrap();
        format!("[cache]\ndisk_path = {:?}\n", blocker.join("cache").display().to_string())
    })
    .await;
    let mcp = proxy.mcp();
    read(&mcp, "demo://docs/1", None).await;
    assert_eq!(x_cache(&read(&mcp, "demo://docs/1", None).await), "HIT");
    assert!(proxy.process.log().contains("memory-only"), "{}", proxy.process.log());
}

#[tokio::test]
async fn handshake_era_answers_are_cached_per_session() {
    let upstream = demo_upstream("a", &[]).await;
    let proxy = proxy(&route(&[&upstream], "")).await;
    let mcp = proxy.mcp();
    let (s1, s2) = (mcp.initialize().await, mcp.initialize().await);
    let read_in = |session: String, id: u64| {
        let mcp = mcp.clone();
        async move { mcp.in_session(&session, id, "resources/read", json!({"uri": "demo://docs/4"})).await }
    };
    assert_eq!(x_cache(&read_in(s1.clone(), 1).await), "MISS");
    let hit = read_in(s1.clone(), 2).await;
    assert_eq!(x_cache(&hit), "HIT", "captured from the SSE answer");
    assert_eq!(hit.header("mcp-session-id"), Some(s1.as_str()));
    assert_eq!(hit.json()["id"], 2);
    assert_eq!(x_cache(&read_in(s2, 1).await), "MISS", "another session has its own entries");
}

#[tokio::test]
async fn metrics_count_what_happens() {
    let upstream = demo_upstream("a", &[]).await;
    let proxy = proxy(&route(&[&upstream], "")).await;
    let mcp = proxy.mcp();
    for _ in 0..3 {
        read(&mcp, "demo://docs/1", None).await;
    }
    let client = reqwest::Client::new();
    let hits_line = r#"mcp_requests_total{cache="HIT",method="resources/read",route="/mcp",status="200"} 2"#;
    let mut text = String::new();
    // A request is counted once its answer is written: the client can ask for the metrics
    // before the server has counted the last one.
    for _ in 0..50 {
        text = client.get(proxy.admin_url("/metrics")).send().await.unwrap().text().await.unwrap();
        if text.lines().any(|l| l == hits_line) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_prometheus_text(&text);
    let value = |needle: &str| sample_value(&text, needle).unwrap_or_else(|| panic!("no {needle} in:\n{text}"));
    assert_eq!(value(r#"mcp_requests_total{cache="HIT",method="resources/read",route="/mcp",status="200"}"#), 2.0);
    assert_eq!(value(r#"mcp_requests_total{cache="MISS",method="resources/read",route="/mcp",status="200"}"#), 1.0);
    assert_eq!(value(r#"mcp_cache_operations_total{operation="lookup",result="hit",tier="memory"}"#), 2.0);
    // The hit path's lookup of the miss is handed to the proxy service, not repeated.
    assert_eq!(value(r#"mcp_cache_operations_total{operation="lookup",result="miss",tier="-"}"#), 1.0);
    assert_eq!(value(&format!(r#"mcp_upstream_up{{route="/mcp",upstream="{}"}}"#, upstream.url())), 1.0);
    assert!(value("mcp_cache_bytes{tier=\"memory\"}") > 0.0);
    let health = client.get(proxy.admin_url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ready = client.get(proxy.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    // The check command also validates this file (a smoke test of the admin section).
    let check = Command::new(bin()).args(["check", "--config"]).arg(&proxy.config_path).output().unwrap();
    assert!(check.status.success());
}

#[tokio::test]
async fn tool_calls_are_cached_only_when_the_route_opts_in() {
    let upstream = demo_upstream("a", &[]).await;
    let call = |mcp: &Mcp, name: &'static str, args: Value| {
        let mcp = mcp.clone();
        async move {
            mcp.stateless("tools/call", json!({"name": name, "arguments": args}), &[("authorization", "Bearer u")])
                .await
        }
    };
    // Named tools.
    let named = proxy(&route(&[&upstream], "[route.policy]\ncache_tools = [\"echo\"]")).await;
    let mcp = named.mcp();
    assert_eq!(x_cache(&call(&mcp, "echo", json!({"message": "hi"})).await), "MISS");
    let hit = call(&mcp, "echo", json!({"message": "hi"})).await;
    assert_eq!((x_cache(&hit), hit.tool_text().as_str()), ("HIT", "hi"));
    assert_eq!(x_cache(&call(&mcp, "echo", json!({"message": "other"})).await), "MISS", "other arguments");
    assert_eq!(x_cache(&call(&mcp, "whoami", json!({})).await), "BYPASS");

    // Tools the upstream declares read-only, idempotent and closed-world, once its tools/list was seen.
    let learned = proxy(&route(&[&upstream], "[route.policy]\nreadonly_tools = true")).await;
    let mcp = learned.mcp();
    assert_eq!(x_cache(&call(&mcp, "add", json!({"a": 1, "b": 2})).await), "BYPASS", "not known read-only yet");
    // Not known read-only, that call was a write: it invalidated the route's un-hinted entries
    // as of its millisecond, and an entry fetched within that millisecond may predate it.
    tokio::time::sleep(Duration::from_millis(2)).await;
    mcp.stateless("tools/list", json!({}), &[]).await;
    assert_eq!(x_cache(&call(&mcp, "add", json!({"a": 1, "b": 2})).await), "MISS");
    let hit = call(&mcp, "add", json!({"b": 2, "a": 1})).await;
    assert_eq!((x_cache(&hit), hit.tool_text().as_str()), ("HIT", "3"));
    assert_eq!(x_cache(&call(&mcp, "echo", json!({"message": "x"})).await), "BYPASS", "echo is not read-only");
}

#[tokio::test]
async fn oversized_results_pass_through_uncached() {
    let upstream = demo_upstream("a", &[]).await;
    let proxy = proxy_full(&route(&[&upstream], ""), "", |_| "[cache]\nmax_entry_size = \"1KiB\"\n".into()).await;
    let mcp = proxy.mcp();
    for _ in 0..2 {
        let big = read(&mcp, "demo://kib/1", None).await;
        assert_eq!(big.status, 200);
        assert_eq!(x_cache(&big), "MISS", "a result over max_entry_size is not stored");
    }
    read(&mcp, "demo://docs/1", None).await;
    assert_eq!(x_cache(&read(&mcp, "demo://docs/1", None).await), "HIT", "small results still are");
}

/// Every line is a comment (`# HELP`, `# TYPE`) or `name{labels} value` with a valid metric name
/// and a number: the Prometheus text exposition format.
fn assert_prometheus_text(text: &str) {
    assert!(text.contains("# TYPE mcp_requests_total counter"), "{text}");
    for line in text.lines().filter(|l| !l.is_empty()) {
        if line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line:?}"));
        assert!(value.parse::<f64>().is_ok() || value == "+Inf", "bad value in {line:?}");
        let name = series.split('{').next().unwrap();
        let valid_name = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
        assert!(valid_name, "bad metric name in {line:?}");
        if let Some(labels) = series.strip_prefix(name) {
            assert!(labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')), "bad labels in {line:?}");
        }
    }
}

/// `server/discover`, which a stateless-era client sends first on every connection, is answered
/// from the cache by its hints, per the protocol version and capabilities it is asked with; a
/// server that gives no hint is asked every time.
#[tokio::test]
async fn server_discover_is_cached_by_its_hints_and_keyed_by_capabilities() {
    let hinted = demo_upstream("a", &[]).await;
    let silent = demo_upstream("b", &["--scope", "none"]).await;
    let routes = format!(
        "[[route]]\npath = \"/mcp\"\nupstreams = [{:?}]\n[[route]]\npath = \"/silent\"\nupstreams = [{:?}]\n",
        hinted.url(),
        silent.url()
    );
    let proxy = proxy(&routes).await;
    let discover = |mcp: Mcp, capabilities: Value| async move {
        let meta = json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": capabilities});
        let body = json!({"jsonrpc": "2.0", "id": 3, "method": "server/discover", "params": {"_meta": meta}});
        let reply = mcp
            .post(body.to_string(), &[("mcp-protocol-version", "2026-07-28"), ("mcp-method", "server/discover")])
            .await;
        assert_eq!(reply.status, 200, "{reply:?}");
        let instructions = reply.json()["result"]["instructions"].as_str().unwrap_or_default().to_string();
        (x_cache(&reply).to_string(), instructions)
    };
    let mcp = || Mcp::new(&proxy.url("/mcp"));
    assert_eq!(discover(mcp(), json!({})).await.0, "MISS");
    assert_eq!(discover(mcp(), json!({})).await, ("HIT".to_string(), "asked with {}".to_string()));
    let sampling = json!({"sampling": {}});
    assert_eq!(discover(mcp(), sampling.clone()).await.0, "MISS", "other capabilities, other answer");
    let (cache, instructions) = discover(mcp(), sampling).await;
    assert_eq!((cache.as_str(), instructions.as_str()), ("HIT", r#"asked with {"sampling":{}}"#));
    let silent = || Mcp::new(&proxy.url("/silent"));
    for _ in 0..2 {
        assert_eq!(discover(silent(), json!({})).await.0, "MISS", "no hint: asked every time");
    }
}
