//! Admission limits: `429` with `Retry-After` and a JSON-RPC error past a route's concurrency,
//! a client's rate, or a client's open streams; what stays within them is served.

use serde_json::json;

use crate::harness::*;

fn refused(reply: &Reply) -> bool {
    reply.status == 429
        && reply.header("retry-after") == Some("1")
        && reply.json()["error"]["message"].as_str().is_some_and(|m| m.starts_with("Too Many Requests"))
}

#[tokio::test]
async fn a_clients_rate_is_capped_hits_included() {
    let upstream = demo_upstream("a", &[]).await;
    let proxy = proxy(&route(&[&upstream], "[route.limits]\nrate_per_client = 5")).await;
    let mcp = proxy.mcp();
    let mut replies = Vec::new();
    for _ in 0..12 {
        replies.push(read(&mcp, "demo://docs/1", None).await);
    }
    let served = replies.iter().filter(|r| r.status == 200).count();
    // Five a second; should the requests straddle a second's end, up to five more.
    assert!((5..=10).contains(&served), "served {served} of 12");
    assert!(replies.iter().filter(|r| r.status != 200).all(refused), "{replies:?}");
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_eq!(read(&mcp, "demo://docs/1", None).await.status, 200, "the next seconds are new");
}

#[tokio::test]
async fn a_routes_concurrency_is_capped() {
    let upstream = demo_upstream("a", &[]).await;
    let proxy = proxy(&route(&[&upstream], "[route.limits]\nmax_concurrent = 1")).await;
    let mcp = proxy.mcp();
    let slow = {
        let mcp = mcp.clone();
        tokio::spawn(async move {
            mcp.stateless("tools/call", json!({"name": "sleep", "arguments": {"ms": 800}}), &[]).await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let second = mcp.stateless("tools/call", json!({"name": "echo", "arguments": {"message": "x"}}), &[]).await;
    assert!(refused(&second), "{second:?}");
    assert_eq!(slow.await.unwrap().status, 200);
    let third = mcp.stateless("tools/call", json!({"name": "echo", "arguments": {"message": "x"}}), &[]).await;
    assert_eq!(third.status, 200, "the place is free again");
}

#[tokio::test]
async fn a_clients_open_streams_are_capped() {
    let upstream = demo_upstream("a", &[]).await;
    let proxy = proxy_with(&route(&[&upstream], ""), "max_streams_per_client = 2").await;
    let mcp = proxy.mcp();
    let sessions = [mcp.initialize().await, mcp.initialize().await, mcp.initialize().await];
    let first = mcp.open_stream(&sessions[0], &[]).await;
    let second = mcp.open_stream(&sessions[1], &[]).await;
    assert_eq!((first.status().as_u16(), second.status().as_u16()), (200, 200));
    let third = read_reply(mcp.open_stream(&sessions[2], &[]).await).await;
    assert!(refused(&third), "{third:?}");
    drop(first);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(mcp.open_stream(&sessions[2], &[]).await.status(), 200, "a closed stream frees its place");
}
