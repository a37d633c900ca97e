//! Prefetching (`[route.prefetch]`): learned page walks, the next page of a list, refresh-ahead
//! of hot entries; each prefetch under the triggering client's own credentials and session.

use std::time::Duration;

use serde_json::json;

use crate::harness::*;

const PREFETCH: &str = "[route.prefetch]\nenabled = true\n";
/// The list calls a client makes at the start of a session (with their JSON-RPC ids).
const START_UP_LISTS: [(u64, &str); 4] =
    [(1, "tools/list"), (2, "resources/list"), (3, "resources/templates/list"), (4, "prompts/list")];

fn doc(n: u32) -> String {
    format!("demo://docs/{n}")
}

/// Whom a private answer says it was fetched for.
fn fetched_for(reply: &Reply) -> String {
    reply.json()["result"]["_meta"]["fetchedFor"]["authorization"].as_str().unwrap_or("(none)").to_string()
}

async fn walk(mcp: &Mcp, user: &str, pages: std::ops::Range<u32>, think: Duration) -> Vec<Reply> {
    let mut replies = Vec::new();
    for n in pages {
        let reply = read(mcp, &doc(n), Some(user)).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        replies.push(reply);
        tokio::time::sleep(think).await;
    }
    replies
}

#[tokio::test]
async fn a_walk_learned_from_a_few_users_is_prefetched_for_the_next_with_their_own_credentials() {
    let upstream = demo_upstream("u", &["--scope", "private", "--echo-caller"]).await;
    let proxy = proxy(&route(&[&upstream], PREFETCH)).await;
    let mcp = proxy.mcp();
    for user in ["Bearer u1", "Bearer u2", "Bearer u3"] {
        walk(&mcp, user, 0..10, Duration::from_millis(20)).await;
    }
    let replies = walk(&mcp, "Bearer newcomer", 0..10, Duration::from_millis(150)).await;
    let hits: Vec<usize> = (1..10).filter(|&n| x_cache(&replies[n]) == "HIT").collect();
    assert!(hits.len() >= 7, "next pages served from the cache: {hits:?} of 1..10");
    for reply in &replies {
        assert_eq!(fetched_for(reply), "Bearer newcomer", "{reply:?}");
    }
    let used = metric(&proxy, "mcp_prefetch_total{kind=\"sequence\",outcome=\"used\",route=\"/mcp\"}").await;
    assert!(used >= 7.0, "{used} prefetches used\n{}", proxy.process.log());
    // Another user who walks nothing in order gets nothing prefetched for them.
    let before = upstream_reads(&upstream).await;
    read(&mcp, &doc(9), Some("Bearer loner")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(upstream_reads(&upstream).await, before + 1, "the last page leads nowhere");
}

#[tokio::test]
async fn nothing_is_prefetched_unless_enabled() {
    let upstream = demo_upstream("u", &["--scope", "private"]).await;
    let proxy = proxy(&route(&[&upstream], "")).await;
    let mcp = proxy.mcp();
    for user in ["Bearer u1", "Bearer u2", "Bearer u3", "Bearer u4"] {
        walk(&mcp, user, 0..5, Duration::from_millis(20)).await;
    }
    assert_eq!(upstream_reads(&upstream).await, 20, "one read per page and user, none more");
}

#[tokio::test]
async fn a_hot_entry_read_continuously_never_misses_after_its_first_read() {
    let upstream = demo_upstream("u", &["--ttl-ms", "2000"]).await;
    let proxy = proxy(&route(&[&upstream], PREFETCH)).await;
    let mcp = proxy.mcp();
    let first = read(&mcp, &doc(1), None).await;
    assert_eq!(x_cache(&first), "MISS");
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut reads = 0;
    while tokio::time::Instant::now() < until {
        let reply = read(&mcp, &doc(1), None).await;
        assert_eq!(x_cache(&reply), "HIT", "read {reads} after the first\n{}", proxy.process.log());
        reads += 1;
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let upstream_count = upstream_reads(&upstream).await;
    assert!((2..=5).contains(&upstream_count), "{upstream_count} upstream reads in 5 s of a 2 s entry");
    let refreshed = metric(&proxy, "mcp_prefetch_total{kind=\"refresh\",outcome=\"issued\",route=\"/mcp\"}").await;
    assert!(refreshed >= 2.0, "{refreshed} refreshes");
}

#[tokio::test]
async fn the_next_page_of_a_list_is_prefetched() {
    let upstream = demo_upstream("u", &[]).await;
    let proxy = proxy(&route(&[&upstream], PREFETCH)).await;
    let mcp = proxy.mcp();
    let first = mcp.stateless("resources/list", json!({}), &[]).await;
    assert_eq!(first.json()["result"]["nextCursor"], "p2");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = mcp.stateless("resources/list", json!({"cursor": "p2"}), &[]).await;
    assert_eq!(x_cache(&second), "HIT", "{second:?}");
    assert_eq!(second.json()["result"]["nextCursor"], "p3");
    let pages = metric(&proxy, "mcp_prefetch_total{kind=\"page\",outcome=\"issued\",route=\"/mcp\"}").await;
    assert!(pages >= 1.0, "{pages}");
}

#[tokio::test]
async fn a_prefetch_goes_to_the_replica_that_owns_the_session() {
    let (a, b) = (demo_upstream("a", &["--json"]).await, demo_upstream("b", &["--json"]).await);
    let proxy = proxy(&route(&[&a, &b], &format!("balance = \"round_robin\"\n{PREFETCH}"))).await;
    let mcp = proxy.mcp();
    // Sessions learn the walk (handshake era: the context is the session). Each lists what a
    // client lists at start (fetched for it by then: unused, those prefetches would count
    // against the route's share and leave no room for the walk's).
    let mut sessions = Vec::new();
    for _ in 0..4 {
        let session = mcp.initialize().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        for (id, method) in START_UP_LISTS {
            assert_eq!(mcp.in_session(&session, id, method, json!({})).await.status, 200);
        }
        sessions.push(session);
    }
    for session in &sessions[..3] {
        for n in 0..6 {
            let reply = mcp.in_session(session, u64::from(n) + 10, "resources/read", json!({"uri": doc(n)})).await;
            assert_eq!(reply.status, 200, "{reply:?}");
        }
    }
    let last = &sessions[3];
    let owner_is_a =
        mcp.in_session(last, 1, "tools/call", json!({"name": "whoami", "arguments": {}})).await.tool_text() == "a";
    let (owner, other) = if owner_is_a { (&a, &b) } else { (&b, &a) };
    let (owner_before, other_before) = (upstream_reads(owner).await, upstream_reads(other).await);
    for n in 0..6 {
        mcp.in_session(last, u64::from(n) + 100, "resources/read", json!({"uri": doc(n)})).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(upstream_reads(other).await, other_before, "nothing of this session went to the other replica");
    assert!(upstream_reads(owner).await > owner_before);
    let used = metric(&proxy, "mcp_prefetch_total{kind=\"sequence\",outcome=\"used\",route=\"/mcp\"}").await;
    assert!(used >= 3.0, "{used}\n{}", proxy.process.log());
}

/// The Python SDK's server, private results: a user who walks pages others walked before gets
/// most next pages from the cache, each fetched with their own credential.
#[tokio::test]
async fn python_sdk_private_pages_are_prefetched_per_user() {
    let (_server, port) = crate::peers::python_server(&["--hints", "private"]).await;
    let routes = format!("[[route]]\npath = \"/mcp\"\nupstreams = [\"http://127.0.0.1:{port}/mcp\"]\n{PREFETCH}");
    let proxy = proxy(&routes).await;
    let mcp = proxy.mcp();
    let page = |n: u32| format!("docs://mine/{n}");
    for user in ["Bearer ann", "Bearer ben", "Bearer cat"] {
        for n in 0..10 {
            let reply = read(&mcp, &page(n), Some(user)).await;
            assert_eq!(reply.status, 200, "{reply:?}");
        }
    }
    let mut hits = 0;
    for n in 0..10 {
        let reply = read(&mcp, &page(n), Some("Bearer dan")).await;
        let text = reply.json()["result"]["contents"][0]["text"].as_str().unwrap_or_default().to_string();
        assert_eq!(text, format!("page {n} of Bearer dan"), "{reply:?}");
        hits += usize::from(n > 0 && x_cache(&reply) == "HIT");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(hits >= 7, "{hits} of 9 next pages were hits\n{}", proxy.process.log());
}

#[tokio::test]
async fn what_was_learned_survives_a_restart() {
    let upstream = demo_upstream("u", &["--scope", "private", "--echo-caller"]).await;
    let mut proxy = proxy_full(&route(&[&upstream], PREFETCH), "", |dir| {
        format!("[cache]\nmemory = \"8MiB\"\ndisk_path = {:?}\ndisk_size = \"64MiB\"\n", dir.join("cache"))
    })
    .await;
    let mcp = proxy.mcp();
    for user in ["Bearer u1", "Bearer u2", "Bearer u3"] {
        walk(&mcp, user, 0..10, Duration::from_millis(20)).await;
    }
    proxy.restart().await;
    let replies = walk(&proxy.mcp(), "Bearer after-restart", 0..10, Duration::from_millis(150)).await;
    let hits = (1..10).filter(|&n| x_cache(&replies[n]) == "HIT").count();
    assert!(hits >= 7, "{hits} of 9 next pages were hits after the restart\n{}", proxy.process.log());
    assert!(replies.iter().all(|reply| fetched_for(reply) == "Bearer after-restart"));
}

#[tokio::test]
async fn warm_uris_are_cached_before_anyone_asks_and_kept_fresh() {
    let upstream = demo_upstream("u", &["--ttl-ms", "2000"]).await;
    // Warm requests name mcp-edge as their client: the route vouches client names change no
    // answer, so clients of other names share what was warmed.
    let unkeyed = "[route.policy]\nunkeyed_meta = [\"io.modelcontextprotocol/clientInfo\"]\n";
    let warm = format!("{unkeyed}{PREFETCH}warm = [\"demo://docs/3\"]\n");
    let proxy = proxy(&route(&[&upstream], &warm)).await;
    let mcp = proxy.mcp();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let until = tokio::time::Instant::now() + Duration::from_secs(4);
    while tokio::time::Instant::now() < until {
        let reply = read(&mcp, &doc(3), None).await;
        assert_eq!(x_cache(&reply), "HIT", "{reply:?}\n{}", proxy.process.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let warmed = metric(&proxy, "mcp_prefetch_total{kind=\"warm\",outcome=\"issued\",route=\"/mcp\"}").await;
    assert!(warmed >= 1.0, "{warmed}");
}

/// A new handshake-era session: once its client says it is initialized, the list calls its
/// server's capabilities offer are fetched for that session (and only for it).
#[tokio::test]
async fn a_new_sessions_start_up_lists_are_fetched_for_it() {
    for json in [true, false] {
        let upstream = demo_upstream("u", if json { &["--json"] } else { &[] }).await;
        let proxy = proxy(&route(&[&upstream], PREFETCH)).await;
        let mcp = proxy.mcp();
        let session = mcp.initialize().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        for (id, method) in START_UP_LISTS {
            let reply = mcp.in_session(&session, id, method, json!({})).await;
            assert_eq!(reply.status, 200, "{reply:?}");
            assert_eq!(x_cache(&reply), "HIT", "json {json}: {method} of a new session\n{}", proxy.process.log());
            assert_eq!(reply.json()["id"], id, "the client's own id");
        }
        // Another session's lists are its own: nothing of the first is served to it.
        let other = mcp.initialize().await;
        let reply = mcp.in_session(&other, 9, "tools/list", json!({})).await;
        assert_eq!(reply.status, 200);
        let started =
            metric(&proxy, "mcp_prefetch_total{kind=\"session_start\",outcome=\"issued\",route=\"/mcp\"}").await;
        assert!(started >= 4.0, "{started}");
    }
}

/// Hostile or odd callers get nothing prefetched for somebody else: an empty credential is no
/// identity (nothing learned, nothing prefetched, private answers not cached), and a body with
/// a duplicate `uri` is never keyed, so a walk through such reads teaches nothing.
#[tokio::test]
async fn empty_credentials_and_duplicate_keys_get_nothing_fetched_for_another() {
    let upstream = demo_upstream("u", &["--scope", "private", "--echo-caller"]).await;
    let proxy = proxy(&route(&[&upstream], PREFETCH)).await;
    let mcp = proxy.mcp();
    for user in ["Bearer u1", "Bearer u2", "Bearer u3"] {
        walk(&mcp, user, 0..5, Duration::from_millis(20)).await;
    }
    let used_sample = "mcp_prefetch_total{kind=\"sequence\",outcome=\"used\",route=\"/mcp\"}";
    tokio::time::sleep(Duration::from_millis(200)).await;
    let used_before = metric(&proxy, used_sample).await;
    for n in 0..5 {
        let reply = read(&mcp, &doc(n), Some("")).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_ne!(x_cache(&reply), "HIT", "an empty credential is nobody's: {reply:?}");
        assert_eq!(fetched_for(&reply), "", "{reply:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for n in 0..5 {
        let uri = doc(n);
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{{"uri":"demo://docs/9","uri":"{uri}","_meta":{{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}}}}"#
        );
        let headers = [
            ("authorization", "Bearer dup"),
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "resources/read"),
            ("mcp-name", uri.as_str()),
        ];
        let reply = mcp.post(body, &headers).await;
        assert_ne!(x_cache(&reply), "HIT", "a duplicate key is never a cache key: {reply:?}");
        if reply.status == 200 {
            assert_eq!(fetched_for(&reply), "Bearer dup", "{reply:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(metric(&proxy, used_sample).await, used_before, "nothing prefetched was used by these callers");
}

/// A `warm` URI the upstream refuses is not asked again every second: it waits 2 s after the
/// first failure, doubling, and the gauge says it is backing off. The others go on.
#[tokio::test]
async fn a_warm_uri_that_fails_backs_off() {
    let upstream = demo_upstream("u", &[]).await;
    let unkeyed = "[route.policy]\nunkeyed_meta = [\"io.modelcontextprotocol/clientInfo\"]\n";
    let warm = format!("{unkeyed}{PREFETCH}warm = [\"demo://nope\", \"demo://docs/3\"]\n");
    let proxy = proxy(&route(&[&upstream], &warm)).await;
    tokio::time::sleep(Duration::from_millis(6500)).await;
    let failed = metric(&proxy, "mcp_prefetch_total{kind=\"warm\",outcome=\"failed\",route=\"/mcp\"}").await;
    // Asked at about 1 s, then 3 s, then 7 s: two or three times, not six.
    assert!((1.0..=3.0).contains(&failed), "{failed} failed warm reads in 6.5 s");
    assert_eq!(metric(&proxy, "mcp_prefetch_warm_backing_off").await, 1.0);
    let reply = read(&proxy.mcp(), "demo://docs/3", None).await;
    assert_eq!(x_cache(&reply), "HIT", "the other warm URI is kept: {reply:?}");
}
