//! Balancing across replicas, session affinity, health checks and failover.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde_json::json;

use crate::harness::*;

async fn three_upstreams() -> Vec<Upstream> {
    vec![demo_upstream("a", &[]).await, demo_upstream("b", &[]).await, demo_upstream("c", &[]).await]
}

async fn whoami_in_session(mcp: &Mcp, session: &str, id: u64) -> Reply {
    mcp.in_session(session, id, "tools/call", json!({"name": "whoami", "arguments": {}})).await
}

#[tokio::test]
async fn sessions_stick_to_their_upstream_and_stateless_requests_spread() {
    let upstreams = three_upstreams().await;
    let proxy = proxy(&route(&upstreams.iter().collect::<Vec<_>>(), "")).await;
    let mcp = proxy.mcp();
    let mut owners = HashMap::new();
    for _ in 0..50 {
        let session = mcp.initialize().await;
        let owner = whoami_in_session(&mcp, &session, 1).await.tool_text();
        owners.insert(session, owner);
    }
    let per_owner: HashSet<&String> = owners.values().collect();
    assert_eq!(per_owner.len(), 3, "new sessions should spread over all upstreams");
    for round in 2..6 {
        for (session, owner) in &owners {
            let reply = whoami_in_session(&mcp, session, round).await;
            assert_eq!(reply.status, 200, "{reply:?}");
            assert_eq!(&reply.tool_text(), owner, "session {session} left its upstream");
        }
    }
    let mut seen = HashMap::<String, usize>::new();
    for _ in 0..30 {
        *seen.entry(whoami(&mcp).await).or_default() += 1;
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(seen.values().all(|&n| n >= 5), "round robin should spread evenly: {seen:?}");
}

#[tokio::test]
async fn least_conn_avoids_the_busy_upstream() {
    let (a, b) = (demo_upstream("a", &["--json"]).await, demo_upstream("b", &["--json"]).await);
    let proxy = proxy(&route(&[&a, &b], "balance = \"least_conn\"")).await;
    let mcp = proxy.mcp();
    let busy = {
        let mcp = mcp.clone();
        tokio::spawn(async move {
            mcp.stateless("tools/call", json!({"name": "sleep", "arguments": {"ms": 1500}}), &[]).await
        })
    };
    // Let the slow call reach its upstream, then find out which one is idle.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // One at a time: each finds one upstream busy (1 in flight) and the other idle (0).
    let mut names = Vec::new();
    for _ in 0..6 {
        names.push(whoami(&mcp).await);
    }
    let distinct: HashSet<&String> = names.iter().collect();
    assert_eq!(distinct.len(), 1, "while one upstream is busy, least_conn sends everything to the other: {names:?}");
    assert_eq!(busy.await.unwrap().status, 200);
}

#[tokio::test]
async fn consistent_hashing_keeps_a_user_on_one_upstream() {
    let upstreams = three_upstreams().await;
    let proxy = proxy(&route(&upstreams.iter().collect::<Vec<_>>(), "balance = \"consistent\"")).await;
    let mcp = proxy.mcp();
    let mut placements = HashSet::new();
    for user in 0..20 {
        let token = format!("Bearer user-{user}");
        let mut names = HashSet::new();
        for _ in 0..4 {
            let reply = mcp
                .stateless("tools/call", json!({"name": "whoami", "arguments": {}}), &[("authorization", &token)])
                .await;
            names.insert(reply.tool_text());
        }
        assert_eq!(names.len(), 1, "user {user} moved between upstreams: {names:?}");
        placements.extend(names);
    }
    assert!(placements.len() >= 2, "users should land on different upstreams: {placements:?}");
}

#[tokio::test]
async fn killing_an_upstream_loses_no_request_of_a_live_session() {
    let mut upstreams = three_upstreams().await;
    let routes =
        route(&upstreams.iter().collect::<Vec<_>>(), "[route.health]\ninterval = \"300ms\"\ntimeout = \"200ms\"");
    let proxy = proxy(&routes).await;
    let mcp = proxy.mcp();
    let mut owners = Vec::new();
    for _ in 0..30 {
        let session = mcp.initialize().await;
        let owner = whoami_in_session(&mcp, &session, 1).await.tool_text();
        owners.push((session, owner));
    }
    let survivors: Vec<(String, String)> = owners.iter().filter(|(_, o)| o != "b").cloned().collect();
    assert!(survivors.len() < owners.len(), "some sessions must live on b");

    // Keep the survivors busy while b dies.
    let load = {
        let (mcp, survivors) = (mcp.clone(), survivors.clone());
        tokio::spawn(async move {
            let mut failures = Vec::new();
            for round in 0..15u64 {
                for (session, owner) in &survivors {
                    let reply = whoami_in_session(&mcp, session, 100 + round).await;
                    if reply.status != 200 || &reply.tool_text() != owner {
                        failures.push(format!("{session}: {} {}", reply.status, reply.body));
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            failures
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    upstreams[1].process.kill();
    let failures = load.await.unwrap();
    assert!(failures.is_empty(), "requests of live sessions were lost: {failures:#?}");

    // Sessions of the dead upstream are told to re-initialize, and land on the survivors.
    for (session, owner) in owners.iter().filter(|(_, o)| o == "b") {
        let reply = whoami_in_session(&mcp, session, 500).await;
        assert_eq!(reply.status, 404, "session of dead {owner}: {reply:?}");
        let fresh = mcp.initialize().await;
        let new_owner = whoami_in_session(&mcp, &fresh, 1).await.tool_text();
        assert_ne!(new_owner, "b");
    }
    // New stateless requests all succeed, on the survivors only.
    for _ in 0..20 {
        assert_ne!(whoami(&mcp).await, "b");
    }
}

#[tokio::test]
async fn a_refused_connection_is_retried_on_another_upstream() {
    let (a, mut b) = (demo_upstream("a", &[]).await, demo_upstream("b", &[]).await);
    // Health checks are too rare to notice b's death: only retries can save its requests.
    let proxy = proxy(&route(&[&a, &b], "[route.health]\ninterval = \"1h\"")).await;
    let mcp = proxy.mcp();
    tokio::time::sleep(Duration::from_millis(300)).await;
    b.process.kill();
    for _ in 0..10 {
        assert_eq!(whoami(&mcp).await, "a");
    }
    assert!(proxy.process.log().contains("cannot connect to the upstream"), "b was never tried");
}

#[tokio::test]
async fn a_replica_answering_5xx_is_ejected() {
    let good = demo_upstream("good", &[]).await;
    let broken = demo_upstream("broken", &["--fail-status", "503"]).await;
    // Active checks pass for the broken one (its GET answers 4xx): only passive health can see it.
    let proxy = proxy(&route(&[&good, &broken], "[route.health]\ninterval = \"1h\"")).await;
    let mcp = proxy.mcp();
    let mut failures = 0;
    for _ in 0..40 {
        let reply = mcp.stateless("tools/call", json!({"name": "whoami", "arguments": {}}), &[]).await;
        match reply.status {
            200 => assert_eq!(reply.tool_text(), "good"),
            503 => failures += 1,
            other => panic!("unexpected {other}: {reply:?}"),
        }
    }
    // Round robin sends every second request to the broken replica until it is ejected.
    assert_eq!(failures, 5, "the broken replica is ejected after 5 consecutive 5xx");
    assert!(proxy.process.log().contains("answered 5xx repeatedly"));
}
