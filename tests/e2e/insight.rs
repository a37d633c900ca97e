//! Per-operation insight on a replayed workload: the most called tools and resources of each
//! route with their figures, and the advice they give, in `/stats`, `mcp-edge status`, the
//! dashboard (headless Chromium) and, when asked, `/metrics`.

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::*;

/// The workload: a read-only tool called again and again with the same few arguments (never
/// cached: the route does not cache tools), a document read every 100 ms whose entries live
/// 300 ms, and on another route a document its server forbids caching (`ttlMs: 0`).
async fn replay(docs: &Mcp, live: &Mcp) {
    let listed = docs.stateless("tools/list", json!({}), &[]).await;
    assert_eq!(listed.status, 200, "the route learns which tools are read-only");
    for i in 0..30 {
        let args = if i % 2 == 0 { json!({"a": 1, "b": 2}) } else { json!({"a": 2, "b": 3}) };
        let sum = docs.stateless("tools/call", json!({"name": "add", "arguments": args}), &[]).await;
        assert_eq!(sum.status, 200, "{sum:?}");
        read(docs, "demo://docs/1", None).await;
        read(live, "demo://docs/2", None).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn stats(proxy: &Proxy) -> Value {
    reqwest::get(proxy.admin_url("/stats")).await.unwrap().json().await.unwrap()
}

fn route_of<'a>(stats: &'a Value, name: &str) -> &'a Value {
    stats["routes"].as_array().unwrap().iter().find(|r| r["name"] == name).unwrap()
}

#[tokio::test]
async fn the_busiest_operations_and_advice_on_a_replayed_workload() {
    let (fresh, uncacheable) =
        (demo_upstream("docs", &["--ttl-ms", "300"]).await, demo_upstream("live", &["--ttl-ms", "0"]).await);
    let routes = format!(
        "[[route]]\nname = \"docs\"\npath = \"/mcp\"\nupstreams = [{:?}]\n\n[[route]]\nname = \"live\"\npath = \"/live\"\nupstreams = [{:?}]\n",
        fresh.url(),
        uncacheable.url()
    );
    let proxy = proxy_full(&routes, "", |_| "operation_metrics = true\n".to_string()).await;
    replay(&proxy.mcp(), &Mcp::new(&proxy.url("/live"))).await;

    let stats = stats(&proxy).await;
    let docs = &route_of(&stats, "docs")["operations"];
    let add = docs["top"].as_array().unwrap().iter().find(|op| op["name"] == "add").expect("add is tracked");
    assert_eq!((add["kind"].as_str(), add["calls"].as_u64()), (Some("tool"), Some(30)), "{add}");
    assert!(add["identical_share"].as_f64().unwrap() >= 0.9, "{add}");
    assert_eq!(add["hit_ratio"], Value::Null, "never cacheable on this route: {add}");
    let read = docs["top"].as_array().unwrap().iter().find(|op| op["name"] == "demo://docs/1").unwrap();
    assert_eq!(read["kind"], "resource");
    assert!(read["hit_ratio"].as_f64().unwrap() > 0.3, "{read}");
    assert!(read["p99_ms"].as_f64().unwrap() > 0.0, "{read}");
    let advice: Vec<&str> = docs["advice"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(
        advice
            .iter()
            .any(|a| a.starts_with("tool `add`: ") && a.ends_with("marked read-only: add it to `cache_tools`")),
        "{advice:?}"
    );
    assert!(advice.iter().any(|a| a.starts_with("route `docs`: refresh-ahead would have saved ")), "{advice:?}");
    let live = &route_of(&stats, "live")["operations"];
    let live_advice: Vec<&str> = live["advice"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(
        live_advice.iter().any(|a| a.starts_with("resource `demo://docs/2`: 0% hits, the server says `ttlMs: 0`")),
        "{live_advice:?}"
    );

    // The same in a terminal.
    let admin = format!("127.0.0.1:{}", proxy.admin_port);
    let status = Command::new(bin()).args(["status", "--admin", &admin]).output().unwrap();
    let printed = String::from_utf8_lossy(&status.stdout);
    assert!(printed.contains("top operations") && printed.contains("tool add"), "{printed}");
    assert!(printed.contains("ADVICE: tool `add`"), "{printed}");

    // Names in Prometheus labels, because this configuration asks for them.
    let metrics = reqwest::get(proxy.admin_url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains("mcp_operation_calls_per_second{route=\"docs\",kind=\"tool\",name=\"add\"} "),
        "{metrics}"
    );
    assert!(metrics.contains("mcp_operation_hit_ratio{route=\"docs\",kind=\"resource\",name=\"demo://docs/1\"} "));

    // And on the dashboard, in a real browser.
    let dom = crate::operator::browse(&proxy.admin_url("/"), 2500, None);
    assert!(dom.contains("data-stat=\"route:docs:operations\""), "{dom}");
    assert!(dom.contains("top operations") && dom.contains(">add<"), "{dom}");
    let shown_advice = crate::operator::rendered(&dom, "route:docs:operations:advice").expect("advice on the page");
    assert!(shown_advice.contains("cache_tools") || shown_advice.contains("refresh-ahead"), "{shown_advice}");
}

#[tokio::test]
async fn operation_names_stay_out_of_metrics_unless_asked() {
    let upstream = demo_upstream("u", &[]).await;
    let proxy = proxy(&route(&[&upstream], "")).await;
    read(&proxy.mcp(), "demo://docs/1", None).await;
    let metrics = reqwest::get(proxy.admin_url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(!metrics.contains("mcp_operation_") && !metrics.contains("demo://docs/1"), "{metrics}");
    let stats = stats(&proxy).await;
    assert_eq!(stats["routes"][0]["operations"]["top"][0]["name"], "demo://docs/1");
}
