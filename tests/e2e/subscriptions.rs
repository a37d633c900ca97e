//! The edge subscribes to what it caches publicly: a change the upstream announces reaches the
//! cache although no client is subscribed (the change is made directly on the upstream, past
//! the proxy), in both eras; the subscriptions are bounded, come back after the upstream
//! restarts, follow reloads, and are not made where the server offers none.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::*;
use crate::peers::python_server;

/// How soon after a change the proxy must serve the new answer.
const FRESH_WITHIN: Duration = Duration::from_secs(2);

/// What the demo upstream at `url` says of who subscribed (its `subscriptions` tool, asked
/// directly).
async fn subscribers(url: &str) -> Value {
    let direct = Mcp::new(url);
    let reply = direct.stateless("tools/call", json!({"name": "subscriptions", "arguments": {}}), &[]).await;
    serde_json::from_str(&reply.tool_text()).expect("the report is JSON")
}

/// Changes `uri` directly on the upstream at `url` (`touch`), so no client of the proxy hears
/// of it.
async fn touch_directly(url: &str, uri: &str) {
    let direct = Mcp::new(url);
    let reply = direct.stateless("tools/call", json!({"name": "touch", "arguments": {"uri": uri}}), &[]).await;
    assert_eq!(reply.status, 200, "{reply:?}");
}

/// Evaluates `check` (an expression that may `.await`) every 50 ms until it is true, at most
/// `within`; panics naming `what` otherwise.
macro_rules! eventually {
    ($within:expr, $what:expr, $check:expr) => {{
        let within: Duration = $within;
        let deadline = Instant::now() + within;
        loop {
            if $check {
                break;
            }
            assert!(Instant::now() < deadline, "not within {within:?}: {}", $what);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }};
}

/// The text of a `resources/read` result.
fn text(reply: &Reply) -> String {
    let json = reply.json();
    json["result"]["contents"][0]["text"].as_str().unwrap_or_else(|| panic!("no text in {json}")).to_string()
}

/// The URIs of the demo's open listen streams, one list per stream.
fn listeners(report: &Value) -> Vec<Vec<String>> {
    report["listeners"]
        .as_array()
        .expect("listeners")
        .iter()
        .map(|l| l["uris"].as_array().unwrap().iter().map(|u| u.as_str().unwrap().to_string()).collect())
        .collect()
}

fn handshake_uris(report: &Value) -> Vec<String> {
    report["handshake_uris"].as_array().unwrap().iter().map(|u| u.as_str().unwrap().to_string()).collect()
}

/// The route's subscriptions in `/stats`.
async fn stats_of(proxy: &Proxy) -> Value {
    let stats: Value = reqwest::get(proxy.admin_url("/stats")).await.unwrap().json().await.unwrap();
    stats["routes"][0]["subscriptions"].clone()
}

/// Stateless era: a public entry cached through mcp-edge is fresh again within 2 s of a change
/// made past the proxy, and so is a public list after its `list_changed`; metrics and `/stats`
/// show the subscription.
#[tokio::test]
async fn a_public_entry_changed_behind_the_proxys_back_is_fresh_at_once_stateless_era() {
    let upstream = demo_upstream("subscribed", &["--subscriptions"]).await;
    let proxy = proxy(&route(&[&upstream], "")).await;
    let mcp = proxy.mcp();
    let uri = "demo://versioned/a";
    let first = read(&mcp, uri, None).await;
    assert_eq!((x_cache(&first), text(&first).as_str()), ("MISS", "a at version 1"));
    assert_eq!(x_cache(&read(&mcp, uri, None).await), "HIT");
    let tools = mcp.stateless("tools/list", json!({}), &[]).await;
    assert_eq!(x_cache(&tools), "MISS");
    eventually!(Duration::from_secs(5), "the edge listens for the URI and tools", {
        let report = subscribers(&upstream.url()).await;
        report["listeners"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["uris"] == json!([uri]) && l["lists"] == json!(["tools"]))
    });
    assert_eq!(x_cache(&read(&mcp, uri, None).await), "HIT", "subscribing invalidates nothing");

    touch_directly(&upstream.url(), uri).await;
    let changed = Instant::now();
    eventually!(FRESH_WITHIN, "the change reaches the cache", {
        let reply = read(&mcp, uri, None).await;
        x_cache(&reply) == "MISS" && text(&reply) == "a at version 2"
    });
    println!("fresh {:?} after the change", changed.elapsed());
    // A read sent after the change but before the notification came is fetched before the
    // invalidation: its entry is dead too (conservative), so the next read may miss once more.
    eventually!(Duration::from_secs(1), "the new answer is cached again", {
        let reply = read(&mcp, uri, None).await;
        x_cache(&reply) == "HIT" && text(&reply) == "a at version 2"
    });

    assert_eq!(x_cache(&mcp.stateless("tools/list", json!({}), &[]).await), "HIT");
    let direct = Mcp::new(&upstream.url());
    direct.stateless("tools/call", json!({"name": "list_changed", "arguments": {"kind": "tools"}}), &[]).await;
    eventually!(FRESH_WITHIN, "the list change reaches the cache", {
        x_cache(&mcp.stateless("tools/list", json!({}), &[]).await) == "MISS"
    });

    let route = "route=\"/mcp\"";
    assert_eq!(metric(&proxy, &format!("mcp_subscription_uris{{era=\"stateless\",{route}}}")).await, 1.0);
    assert_eq!(metric(&proxy, &format!("mcp_subscription_streams{{{route},state=\"open\"}}")).await, 1.0);
    assert!(metric(&proxy, &format!("mcp_subscription_events_total{{kind=\"notification\",{route}}}")).await >= 2.0);
    assert!(metric(&proxy, &format!("mcp_invalidations_total{{cause=\"subscription\",{route}}}")).await >= 2.0);
    let stats = stats_of(&proxy).await;
    assert_eq!(stats["uris"]["stateless"], 1, "{stats}");
    assert_eq!(stats["streams"][0]["era"], "stateless", "{stats}");
    assert_eq!(stats["streams"][0]["state"], "open", "{stats}");
    assert_eq!(stats["streams"][0]["subscribed"], 1, "{stats}");
    assert!(stats["streams"][0]["notifications"].as_u64().unwrap() >= 2, "{stats}");
}

/// Handshake era: the edge's own session subscribes (`resources/subscribe`) to a public entry a
/// client cached; a change the client never hears of reaches the cache. On SIGTERM the edge
/// ends its session.
#[tokio::test]
async fn a_public_entry_changed_behind_the_proxys_back_is_fresh_at_once_handshake_era() {
    let upstream = demo_upstream("subscribed", &["--subscriptions", "--hint-handshake"]).await;
    let mut proxy = proxy(&route(&[&upstream], "")).await;
    let mcp = proxy.mcp();
    let session = mcp.initialize().await;
    let uri = "demo://versioned/b";
    let read_b = || mcp.in_session(&session, 7, "resources/read", json!({"uri": uri}));
    let first = read_b().await;
    assert_eq!((x_cache(&first), text(&first).as_str()), ("MISS", "b at version 1"));
    assert_eq!(x_cache(&read_b().await), "HIT");
    eventually!(Duration::from_secs(5), "the edge's session subscribes to the URI", {
        handshake_uris(&subscribers(&upstream.url()).await) == [uri]
    });
    let report = subscribers(&upstream.url()).await;
    assert_eq!(report["sessions_subscribed"], 1, "one session of the edge's own: {report}");
    assert_eq!(report["initializes"], 2, "the client's session and the edge's: {report}");

    touch_directly(&upstream.url(), uri).await;
    eventually!(FRESH_WITHIN, "the change reaches the cache", {
        let reply = read_b().await;
        x_cache(&reply) == "MISS" && text(&reply) == "b at version 2"
    });
    let stats = stats_of(&proxy).await;
    assert_eq!((stats["uris"]["handshake"].as_u64(), stats["uris"]["stateless"].as_u64()), (Some(1), Some(0)));
    assert_eq!(stats["streams"][0]["era"], "handshake", "{stats}");
    assert_eq!(stats["streams"][0]["state"], "open", "{stats}");

    proxy.restart().await;
    let report = subscribers(&upstream.url()).await;
    assert_eq!(report["sessions_subscribed"], 0, "stopping ends the edge's session: {report}");
}

/// One client reading many public URIs makes the edge hold at most `max_subscriptions` of them
/// per era, on one session and one listen stream per replica; the rest are counted.
#[tokio::test]
async fn subscriptions_are_bounded_per_route_and_era() {
    let upstream = demo_upstream("subscribed", &["--subscriptions", "--hint-handshake"]).await;
    let proxy = proxy(&route(&[&upstream], "[route.subscriptions]\nmax_subscriptions = 3\n")).await;
    let mcp = proxy.mcp();
    let session = mcp.initialize().await;
    for n in 1..=8 {
        let uri = format!("demo://docs/{n}");
        assert_eq!(x_cache(&read(&mcp, &uri, None).await), "MISS");
        assert_eq!(x_cache(&mcp.in_session(&session, n, "resources/read", json!({"uri": uri})).await), "MISS");
    }
    let first_three: Vec<String> = (1..=3).map(|n| format!("demo://docs/{n}")).collect();
    eventually!(Duration::from_secs(5), "three URIs subscribed in each era", {
        let report = subscribers(&upstream.url()).await;
        listeners(&report) == [first_three.clone()] && handshake_uris(&report) == first_three
    });
    // Settled: still one stream, one session.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let report = subscribers(&upstream.url()).await;
    assert_eq!(listeners(&report), std::slice::from_ref(&first_three), "one listen stream: {report}");
    assert_eq!(report["sessions_subscribed"], 1, "{report}");
    assert!(report["listens"].as_u64().unwrap() <= 3, "streams are replaced at most once a second: {report}");
    let route = "route=\"/mcp\"";
    for era in ["handshake", "stateless"] {
        assert_eq!(metric(&proxy, &format!("mcp_subscription_uris{{era=\"{era}\",{route}}}")).await, 3.0, "{era}");
    }
    assert_eq!(metric(&proxy, &format!("mcp_subscription_events_total{{kind=\"over_limit\",{route}}}")).await, 10.0);
    let stats = stats_of(&proxy).await;
    assert_eq!((stats["max_subscriptions"].as_u64(), stats["not_subscribed"].as_u64()), (Some(3), Some(10)), "{stats}");
    assert_eq!(upstream_reads(&upstream).await, 16, "subscribing reads nothing: only the clients' misses");
    let metrics = reqwest::get(proxy.admin_url("/metrics")).await.unwrap().text().await.unwrap();
    // (The route's most called operations, elsewhere in `/stats`, name theirs: see `insight`.)
    let subscriptions_text = stats_of(&proxy).await.to_string();
    assert!(!metrics.contains("demo://") && !subscriptions_text.contains("demo://"), "no URI in /metrics or /stats");
    // A URI not subscribed still lives by its TTL: served from the cache, as before.
    assert_eq!(x_cache(&read(&mcp, "demo://docs/8", None).await), "HIT");
    let long = format!("demo://versioned/{}", "x".repeat(1100));
    read(&mcp, &long, None).await;
    eventually!(Duration::from_secs(2), "an overlong URI is counted, not subscribed", {
        metric(&proxy, &format!("mcp_subscription_events_total{{kind=\"too_long\",{route}}}")).await == 1.0
    });
}

/// The upstream restarts (its subscriptions lost with it): the edge subscribes again within its
/// first back-off, in both eras (a new session in the handshake era), and what it watched is
/// fetched again (changes may have been missed meanwhile); later changes reach the cache.
#[tokio::test]
async fn subscriptions_come_back_after_the_upstream_restarts() {
    let mut upstream = demo_upstream("subscribed", &["--subscriptions", "--hint-handshake"]).await;
    let port = upstream.port;
    let proxy = proxy(&route(&[&upstream], "")).await;
    let mcp = proxy.mcp();
    let (stateless_uri, handshake_uri) = ("demo://versioned/s", "demo://versioned/h");
    read(&mcp, stateless_uri, None).await;
    let session = mcp.initialize().await;
    mcp.in_session(&session, 3, "resources/read", json!({"uri": handshake_uri})).await;
    let url = upstream.url();
    eventually!(Duration::from_secs(5), "subscribed in both eras", {
        subscribed_to(&url, stateless_uri, handshake_uri).await
    });

    upstream.process.kill();
    let upstream = demo_upstream_on(port, "subscribed", &["--subscriptions", "--hint-handshake"]).await;
    eventually!(Duration::from_secs(6), "subscribed again in both eras", {
        subscribed_to(&url, stateless_uri, handshake_uri).await
    });
    let route = "route=\"/mcp\"";
    eventually!(Duration::from_secs(2), "both eras reconnected", {
        metric(&proxy, &format!("mcp_subscription_events_total{{kind=\"reconnected\",{route}}}")).await == 2.0
    });
    assert_eq!(metric(&proxy, &format!("mcp_subscription_streams{{{route},state=\"open\"}}")).await, 2.0);

    // What was watched was invalidated on reconnecting; a new session of the client reads it.
    let session = mcp.initialize().await;
    let again = mcp.in_session(&session, 4, "resources/read", json!({"uri": handshake_uri})).await;
    assert_eq!(x_cache(&again), "MISS", "fetched again after the gap");
    assert_eq!(x_cache(&read(&mcp, stateless_uri, None).await), "MISS");
    eventually!(Duration::from_secs(1), "cached again", x_cache(&read(&mcp, stateless_uri, None).await) == "HIT");
    touch_directly(&upstream.url(), stateless_uri).await;
    eventually!(FRESH_WITHIN, "a change after the restart reaches the cache", {
        let reply = read(&mcp, stateless_uri, None).await;
        x_cache(&reply) == "MISS" && text(&reply) == "s at version 2"
    });
}

/// Whether the demo at `url` has exactly one listen stream, for `stateless`, and one session
/// subscribed, to `handshake`.
async fn subscribed_to(url: &str, stateless: &str, handshake: &str) -> bool {
    let report = subscribers(url).await;
    listeners(&report) == [vec![stateless.to_string()]] && handshake_uris(&report) == [handshake]
}

/// A server that declares neither `resources.subscribe` nor `listChanged` is asked once (its
/// `initialize` / `server/discover`), not subscribed, and not asked again while public entries
/// keep being cached.
#[tokio::test]
async fn a_server_without_subscriptions_is_not_subscribed_nor_asked_again() {
    let upstream = demo_upstream("plain", &["--hint-handshake"]).await;
    let proxy = proxy(&route(&[&upstream], "")).await;
    let mcp = proxy.mcp();
    let session = mcp.initialize().await;
    read(&mcp, "demo://docs/1", None).await;
    mcp.in_session(&session, 2, "resources/read", json!({"uri": "demo://docs/1"})).await;
    let route = "route=\"/mcp\"";
    eventually!(Duration::from_secs(5), "both eras found unsupported", {
        metric(&proxy, &format!("mcp_subscription_streams{{{route},state=\"unsupported\"}}")).await == 2.0
    });
    for n in 2..=6 {
        read(&mcp, &format!("demo://docs/{n}"), None).await;
        mcp.in_session(&session, n + 10, "resources/read", json!({"uri": format!("demo://docs/{n}")})).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let report = subscribers(&upstream.url()).await;
    assert_eq!(report["discovers"], 1, "asked once in the stateless era: {report}");
    assert_eq!(report["initializes"], 2, "the client's session and one of the edge's: {report}");
    assert_eq!((report["listens"].as_u64(), report["subscribes"].as_u64()), (Some(0), Some(0)), "{report}");
    assert_eq!(metric(&proxy, &format!("mcp_subscription_events_total{{kind=\"unsupported\",{route}}}")).await, 2.0);
    assert_eq!(metric(&proxy, &format!("mcp_subscription_events_total{{kind=\"connected\",{route}}}")).await, 0.0);
}

/// `[route.subscriptions] enabled = false`: nothing is subscribed.
#[tokio::test]
async fn a_route_with_subscriptions_off_subscribes_to_nothing() {
    let upstream = demo_upstream("subscribed", &["--subscriptions"]).await;
    let proxy = proxy(&route(&[&upstream], "[route.subscriptions]\nenabled = false\n")).await;
    let mcp = proxy.mcp();
    read(&mcp, "demo://docs/1", None).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let report = subscribers(&upstream.url()).await;
    assert_eq!((report["discovers"].as_u64(), report["listens"].as_u64()), (Some(0), Some(0)), "{report}");
    let stats: Value = reqwest::get(proxy.admin_url("/stats")).await.unwrap().json().await.unwrap();
    assert_eq!(stats["routes"][0]["subscriptions"], Value::Null);
}

/// A reload that points the route at another replica moves its subscription there (what it
/// watches carries over); one that turns subscriptions off ends them.
#[tokio::test]
async fn subscriptions_follow_reloads() {
    let (a, b) = (demo_upstream("a", &["--subscriptions"]).await, demo_upstream("b", &["--subscriptions"]).await);
    let proxy = proxy(&route(&[&a], "")).await;
    let mcp = proxy.mcp();
    read(&mcp, "demo://docs/1", None).await;
    let (a_url, b_url) = (a.url(), b.url());
    let one = vec![vec!["demo://docs/1".to_string()]];
    let none: Vec<Vec<String>> = vec![];
    eventually!(Duration::from_secs(5), "a listens", listeners(&subscribers(&a_url).await) == one);

    proxy.reload_with(&route(&[&b], ""));
    eventually!(Duration::from_secs(5), "b listens for what a did, a no more", {
        listeners(&subscribers(&b_url).await) == one && listeners(&subscribers(&a_url).await) == none
    });

    proxy.reload_with(&route(&[&b], "[route.subscriptions]\nenabled = false\n"));
    eventually!(Duration::from_secs(5), "nobody listens", listeners(&subscribers(&b_url).await) == none);
}

/// The Python SDK server serves `subscriptions/listen` (stateless era) and announces a change
/// its tool makes to the listen streams naming the resource: a public entry cached through
/// mcp-edge is fresh within 2 s of a change made directly on the server.
#[tokio::test]
async fn python_sdk_changes_reach_the_cache_through_the_edges_own_listen_stream() {
    let (_server, port) = python_server(&["--hints", "public"]).await;
    let proxy = proxy(&format!("[[route]]\npath = \"/mcp\"\nupstreams = [\"http://127.0.0.1:{port}/mcp\"]\n")).await;
    let mcp = proxy.mcp();
    let uri = "docs://watched";
    let first = read(&mcp, uri, None).await;
    assert_eq!((x_cache(&first), text(&first).as_str()), ("MISS", "the first text"));
    assert_eq!(x_cache(&read(&mcp, uri, None).await), "HIT");
    let route = "route=\"/mcp\"";
    eventually!(Duration::from_secs(5), "the edge's listen stream is acknowledged", {
        metric(&proxy, &format!("mcp_subscription_streams{{{route},state=\"open\"}}")).await == 1.0
    });

    let direct = Mcp::new(&format!("http://127.0.0.1:{port}/mcp"));
    let rewrite =
        direct.stateless("tools/call", json!({"name": "rewrite", "arguments": {"text": "the second text"}}), &[]).await;
    assert_eq!(rewrite.tool_text(), "rewritten", "{rewrite:?}");
    eventually!(FRESH_WITHIN, "the Python server's change reaches the cache", {
        let reply = read(&mcp, uri, None).await;
        x_cache(&reply) == "MISS" && text(&reply) == "the second text"
    });
    assert!(metric(&proxy, &format!("mcp_subscription_events_total{{kind=\"notification\",{route}}}")).await >= 1.0);
}

/// Private entries are never watched, and the edge's requests carry no credential: a public
/// entry fetched with one is subscribed to without it.
#[tokio::test]
async fn only_public_entries_are_subscribed_to_and_never_with_a_credential() {
    let private = demo_upstream("private", &["--subscriptions", "--scope", "private"]).await;
    let proxy_of_private = proxy(&route(&[&private], "")).await;
    let mcp = proxy_of_private.mcp();
    assert_eq!(x_cache(&read(&mcp, "demo://docs/1", Some("Bearer alice")).await), "MISS");
    assert_eq!(x_cache(&read(&mcp, "demo://docs/1", Some("Bearer alice")).await), "HIT", "cached, privately");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let report = subscribers(&private.url()).await;
    assert_eq!((report["discovers"].as_u64(), report["listens"].as_u64()), (Some(0), Some(0)), "{report}");

    let public = demo_upstream("public", &["--subscriptions"]).await;
    let proxy_of_public = proxy(&route(&[&public], "")).await;
    let mcp = proxy_of_public.mcp();
    read(&mcp, "demo://docs/1", Some("Bearer alice")).await;
    eventually!(Duration::from_secs(5), "the edge listens", listeners(&subscribers(&public.url()).await).len() == 1);
    let report = subscribers(&public.url()).await;
    assert_eq!(report["credentialed"], 0, "no credential on the edge's own requests: {report}");
}
