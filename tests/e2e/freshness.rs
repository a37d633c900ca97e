//! Fresh by default. Writes through a route invalidate (`route.policy.invalidate_on_write`): a
//! successful `tools/call` of a tool the upstream does not call read-only drops the resources
//! its result names and, by default, the route's entries kept on mcp-edge's own TTL; entries
//! the server gave a `ttlMs` live by it. An error for a list cursor the upstream handed out
//! discards that list's pages.

use serde_json::json;

use crate::harness::*;

const UNHINTED: &str = "demo://versioned/a";
const HINTED: &str = "demo://versioned/b";

/// A handshake-era session's read (the demo gives those no hints: kept on the route's TTL).
async fn session_read(mcp: &Mcp, session: &str, uri: &str) -> Reply {
    mcp.in_session(session, 7, "resources/read", json!({"uri": uri})).await
}

fn text_of(reply: &Reply) -> String {
    let messages = sse_messages(&reply.body);
    let message = messages.last().cloned().unwrap_or_else(|| reply.json());
    message["result"]["contents"][0]["text"].as_str().unwrap_or_default().to_string()
}

async fn call(mcp: &Mcp, name: &str, arguments: serde_json::Value) -> Reply {
    let reply = mcp.stateless("tools/call", json!({"name": name, "arguments": arguments}), &[]).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    reply
}

async fn writes_counted(proxy: &Proxy) -> f64 {
    metric(proxy, r#"mcp_invalidations_total{cause="write",route="/mcp"}"#).await
}

#[tokio::test]
async fn a_write_drops_the_routes_unhinted_entries_and_what_it_names_and_spares_hinted_ones() {
    let upstream = demo_upstream("u", &[]).await;
    let proxy = proxy(&route(&[&upstream], "")).await;
    let mcp = proxy.mcp();
    let session = mcp.initialize().await;
    assert_eq!(text_of(&session_read(&mcp, &session, UNHINTED).await), "a at version 1");
    assert_eq!(x_cache(&session_read(&mcp, &session, UNHINTED).await), "HIT");
    assert_eq!(x_cache(&read(&mcp, HINTED, None).await), "MISS");
    assert_eq!(x_cache(&read(&mcp, HINTED, None).await), "HIT");

    // A silent write: its result names nothing, and nobody is notified.
    assert_eq!(call(&mcp, "bump", json!({})).await.tool_text(), "now at version 2");
    let after = session_read(&mcp, &session, UNHINTED).await;
    assert_eq!((x_cache(&after), text_of(&after).as_str()), ("MISS", "a at version 2"), "kept on mcp-edge's TTL");
    let hinted = read(&mcp, HINTED, None).await;
    assert_eq!((x_cache(&hinted), text_of(&hinted).as_str()), ("HIT", "b at version 1"), "lives by its ttlMs");
    assert_eq!(writes_counted(&proxy).await, 1.0, "one target: the route's un-hinted entries");

    // A write whose result links the hinted resource drops it too.
    call(&mcp, "bump", json!({"link": HINTED})).await;
    let linked = read(&mcp, HINTED, None).await;
    assert_eq!((x_cache(&linked), text_of(&linked).as_str()), ("MISS", "b at version 3"));
    assert_eq!(writes_counted(&proxy).await, 3.0);
}

#[tokio::test]
async fn calls_that_change_nothing_invalidate_nothing() {
    let upstream = demo_upstream("u", &[]).await;
    let proxy = proxy(&route(&[&upstream], "[route.policy]\ncache_tools = [\"whoami\"]")).await;
    let mcp = proxy.mcp();
    // The upstream's tools/list says `add` is read-only.
    assert_eq!(mcp.stateless("tools/list", json!({}), &[]).await.status, 200);
    let session = mcp.initialize().await;
    session_read(&mcp, &session, UNHINTED).await;
    call(&mcp, "add", json!({"a": 1, "b": 2})).await;
    call(&mcp, "whoami", json!({})).await;
    // A tool error changed nothing: the demo answers an unknown tool with `isError: true`.
    assert_eq!(call(&mcp, "nope", json!({})).await.json()["result"]["isError"], true);
    assert_eq!(x_cache(&session_read(&mcp, &session, UNHINTED).await), "HIT");
    assert_eq!(writes_counted(&proxy).await, 0.0);
}

#[tokio::test]
async fn how_much_a_write_drops_is_the_operators_choice() {
    let upstream = demo_upstream("u", &[]).await;
    let named = proxy(&route(&[&upstream], "[route.policy]\ninvalidate_on_write = \"named\"")).await;
    let mcp = named.mcp();
    let session = mcp.initialize().await;
    session_read(&mcp, &session, UNHINTED).await;
    call(&mcp, "bump", json!({})).await;
    let kept = session_read(&mcp, &session, UNHINTED).await;
    assert_eq!((x_cache(&kept), text_of(&kept).as_str()), ("HIT", "a at version 1"), "names nothing: drops nothing");
    call(&mcp, "bump", json!({"link": UNHINTED})).await;
    let named_read = session_read(&mcp, &session, UNHINTED).await;
    assert_eq!((x_cache(&named_read), text_of(&named_read).as_str()), ("MISS", "a at version 3"));

    let none = proxy(&route(&[&upstream], "[route.policy]\ninvalidate_on_write = \"none\"")).await;
    let mcp = none.mcp();
    let session = mcp.initialize().await;
    session_read(&mcp, &session, UNHINTED).await;
    call(&mcp, "bump", json!({"link": UNHINTED})).await;
    assert_eq!(x_cache(&session_read(&mcp, &session, UNHINTED).await), "HIT");
    assert_eq!(writes_counted(&none).await, 0.0);
}

async fn list_page(mcp: &Mcp, cursor: Option<&str>) -> Reply {
    let params = cursor.map_or(json!({}), |cursor| json!({"cursor": cursor}));
    mcp.stateless("resources/list", params, &[]).await
}

#[tokio::test]
async fn an_error_for_a_cursor_the_upstream_handed_out_discards_the_lists_pages() {
    let upstream = demo_upstream("u", &[]).await;
    let proxy = proxy(&route(&[&upstream], "")).await;
    let mcp = proxy.mcp();
    let first = list_page(&mcp, None).await;
    assert_eq!(first.json()["result"]["nextCursor"], "p2");
    let second = list_page(&mcp, Some("p2")).await;
    assert_eq!((x_cache(&second), &second.json()["result"]["nextCursor"]), ("MISS", &json!("p3")));
    assert_eq!(x_cache(&list_page(&mcp, None).await), "HIT");
    assert_eq!(x_cache(&list_page(&mcp, Some("p2")).await), "HIT");

    // A made-up cursor's error says nothing of the list.
    let made_up = list_page(&mcp, Some("p9")).await;
    assert!(made_up.json()["error"].is_object(), "{made_up:?}");
    assert_eq!(x_cache(&list_page(&mcp, None).await), "HIT");

    // The list changes under its cursors: p3, which page 2 handed out, is refused now.
    call(&mcp, "retire_cursors", json!({})).await;
    assert_eq!(x_cache(&list_page(&mcp, None).await), "HIT", "hinted pages live by their ttlMs until then");
    let refused = list_page(&mcp, Some("p3")).await;
    assert!(refused.json()["error"].is_object(), "{refused:?}");
    let fresh = list_page(&mcp, None).await;
    assert_eq!((x_cache(&fresh), &fresh.json()["result"]["nextCursor"]), ("MISS", &json!("q2")), "pages discarded");
    assert_eq!(metric(&proxy, r#"mcp_invalidations_total{cause="cursor",route="/mcp"}"#).await, 1.0);
    assert_eq!(x_cache(&list_page(&mcp, Some("p2")).await), "MISS");
}

/// A write the proxy sent but whose answer it never read (here the upstream is slower than
/// `read_timeout`: the client gets a 504) may have been applied: it invalidates all the same,
/// and again once `read_timeout` has passed, for a write still under way upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn a_write_whose_answer_never_came_still_invalidates_now_and_once_more_later() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    let version = Arc::new(AtomicU64::new(1));
    let seen = version.clone();
    let port = raw_upstream_with(move |request| {
        let (_, body) = request.split_once("\r\n\r\n").unwrap_or_default();
        let message: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        let result = if message["method"] == "tools/call" {
            // Applied at once, applied again while still under way, answered too late.
            seen.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(800));
            seen.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(700));
            json!({"content": [{"type": "text", "text": "done"}]})
        } else {
            let text = format!("version {}", seen.load(Ordering::SeqCst));
            json!({"contents": [{"uri": "a://doc", "text": text}]})
        };
        let answer = json!({"jsonrpc": "2.0", "id": message["id"], "result": result}).to_string();
        format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}", answer.len())
            .into_bytes()
    })
    .await;
    let routes = format!(
        "[[route]]\npath = \"/mcp\"\nupstreams = [\"http://127.0.0.1:{port}/mcp\"]\nread_timeout = \"500ms\"\n[route.policy]\nshared = true\n"
    );
    let proxy = proxy(&routes).await;
    let mcp = proxy.mcp();
    let text = |reply: &Reply| reply.json()["result"]["contents"][0]["text"].as_str().unwrap_or_default().to_string();
    assert_eq!(text(&read(&mcp, "a://doc", None).await), "version 1");
    assert_eq!(x_cache(&read(&mcp, "a://doc", None).await), "HIT");

    let write = mcp.stateless("tools/call", json!({"name": "set", "arguments": {}}), &[]).await;
    assert_eq!(write.status, 504, "{write:?}");
    let answered_at = std::time::Instant::now();
    let after = read(&mcp, "a://doc", None).await;
    assert_eq!(x_cache(&after), "MISS", "applied though never answered: {after:?}");
    assert_ne!(text(&after), "version 1");
    // The write goes on upstream; the proxy invalidates again once read_timeout has passed:
    // whatever was read meanwhile is not served after it.
    while version.load(Ordering::SeqCst) < 3 || answered_at.elapsed() < std::time::Duration::from_millis(800) {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(text(&read(&mcp, "a://doc", None).await), "version 3");
}
