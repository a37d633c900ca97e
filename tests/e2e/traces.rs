//! Spans over OTLP (`[tracing] otlp`), received by a real OTLP/HTTP receiver that decodes the
//! protobuf with the OpenTelemetry project's definitions (`tests/peers/python/otlp_receiver.py`),
//! and W3C trace context on the way upstream.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::*;
use crate::peers::python_peer;

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

async fn otlp_receiver() -> (Process, u16) {
    otlp_receiver_answering("200").await
}

async fn otlp_receiver_answering(mode: &str) -> (Process, u16) {
    python_peer("OTLP receiver", "otlp_receiver.py", &[mode]).await
}

/// The spans the receiver printed so far.
fn spans(receiver: &Process) -> Vec<Value> {
    receiver.log().lines().filter_map(|line| serde_json::from_str(line).ok()).collect()
}

/// Waits (the SDK exports in batches, every 5 s) until a span satisfies `wanted`.
async fn wait_for_span(receiver: &Process, wanted: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..300 {
        if let Some(span) = spans(receiver).into_iter().find(&wanted) {
            return span;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no such span; received:\n{}", receiver.log());
}

/// What the upstream said it received as `name` (the demo's `request_headers` tool).
fn seen_header(reply: &Reply, name: &str) -> Option<String> {
    let text = reply.tool_text();
    let prefix = format!("{name}: ");
    text.lines().find_map(|line| line.strip_prefix(&prefix).map(str::to_string))
}

async fn request_headers(mcp: &Mcp, headers: &[(&str, &str)]) -> Reply {
    mcp.stateless("tools/call", json!({"name": "request_headers", "arguments": {}}), headers).await
}

#[tokio::test]
async fn spans_reach_a_real_otlp_receiver_and_the_upstream_hears_of_them() {
    let (receiver, receiver_port) = otlp_receiver().await;
    let upstream = demo_upstream("a", &[]).await;
    let proxy = proxy(&route(&[&upstream], "")).await;
    let mcp = proxy.mcp();
    let client_parent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");

    // Without [tracing], trace context passes through untouched and nothing is exported.
    let untouched = request_headers(&mcp, &[("traceparent", &client_parent), ("tracestate", "vendor=1")]).await;
    assert_eq!(seen_header(&untouched, "traceparent").as_deref(), Some(client_parent.as_str()), "{untouched:?}");

    // Switched on by a reload.
    let mut config = std::fs::read_to_string(&proxy.config_path).unwrap();
    config
        .push_str(&format!("\n[tracing]\notlp = \"http://127.0.0.1:{receiver_port}\"\nservice_name = \"edge-test\"\n"));
    std::fs::write(&proxy.config_path, config).unwrap();
    proxy.process.signal("HUP");
    for _ in 0..200 {
        if proxy.process.log().contains("configuration reloaded") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A sampled client trace: the upstream is sent the same trace with mcp-edge's span as the
    // parent, and tracestate as it was.
    let forwarded = request_headers(&mcp, &[("traceparent", &client_parent), ("tracestate", "vendor=1")]).await;
    assert_eq!(forwarded.status, 200);
    let upstream_parent = seen_header(&forwarded, "traceparent").expect("a traceparent upstream");
    let fields: Vec<&str> = upstream_parent.split('-').collect();
    assert_eq!((fields[0], fields[1], fields[3]), ("00", CLIENT_TRACE, "01"), "{upstream_parent}");
    assert_ne!(fields[2], CLIENT_SPAN, "mcp-edge's own span is the upstream's parent");
    assert_eq!(seen_header(&forwarded, "tracestate").as_deref(), Some("vendor=1"));
    let exchange_span = fields[2].to_string();

    // A miss and a hit of a new trace, a refusal, and a client that does not sample.
    assert_eq!(x_cache(&read(&mcp, "demo://docs/7", None).await), "MISS");
    let hit = mcp.stateless("resources/read", json!({"uri": "demo://docs/7"}), &[("x-request-id", "hit-7")]).await;
    assert_eq!(x_cache(&hit), "HIT");
    assert_eq!(mcp.post("{", &[("x-request-id", "bad-7")]).await.status, 400);
    let unsampled_parent = format!("00-{}-{CLIENT_SPAN}-00", "1".repeat(32));
    let unsampled = request_headers(&mcp, &[("traceparent", &unsampled_parent)]).await;
    let passed_on = seen_header(&unsampled, "traceparent").unwrap();
    assert!(passed_on.starts_with(&format!("00-{}-", "1".repeat(32))) && passed_on.ends_with("-00"), "{passed_on}");
    // Sent twice, or malformed: a new trace, and the client's tracestate stays behind.
    let twice = request_headers(&mcp, &[("traceparent", &client_parent), ("traceparent", &unsampled_parent)]).await;
    assert!(!seen_header(&twice, "traceparent").unwrap().contains(CLIENT_TRACE), "{twice:?}");
    let malformed = request_headers(&mcp, &[("traceparent", "00-XYZ"), ("tracestate", "evil=2")]).await;
    assert_eq!(seen_header(&malformed, "traceparent").map(|t| t.len()), Some(55), "{malformed:?}");
    assert_eq!(seen_header(&malformed, "tracestate"), None, "{malformed:?}");
    // What a client chose stays out of the spans: a refusal quoting its URIs, an unknown method.
    let mismatch = mcp
        .post(
            r#"{"jsonrpc":"2.0","id":9,"method":"resources/read","params":{"uri":"demo://docs/BODYSECRET","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#,
            &[
                ("mcp-protocol-version", "2026-07-28"),
                ("mcp-method", "resources/read"),
                ("mcp-name", "demo://docs/HEADERSECRET"),
                ("x-request-id", "mismatch-9"),
            ],
        )
        .await;
    assert_eq!(mismatch.status, 400, "{mismatch:?}");
    let odd = mcp.stateless("x/METHODSECRET", json!({}), &[("x-request-id", "odd-9")]).await;
    assert!(odd.status < 500, "{odd:?}");

    // The request's span: a server span, child of the client's, with what the edge did.
    let server = wait_for_span(&receiver, |s| s["trace_id"] == CLIENT_TRACE && s["kind"] == 2).await;
    assert_eq!(server["parent_span_id"], CLIENT_SPAN, "{server}");
    assert_eq!(server["name"], "tools/call", "{server}");
    assert_eq!(server["service"], "edge-test");
    let attributes = &server["attributes"];
    assert_eq!(attributes["mcp.method.name"], "tools/call", "{server}");
    assert_eq!(attributes["mcp_edge.route"], "/mcp", "{server}");
    assert_eq!(attributes["http.response.status_code"], 200, "{server}");
    assert_eq!(attributes["http.request.method"], "POST", "{server}");
    assert!(attributes["mcp_edge.request_id"].as_str().is_some_and(|id| id.len() == 32), "{server}");
    // Its upstream exchange: a client span, the upstream's parent.
    let exchange = wait_for_span(&receiver, |s| s["trace_id"] == CLIENT_TRACE && s["kind"] == 3).await;
    assert_eq!(exchange["span_id"], exchange_span.as_str(), "{exchange}");
    assert_eq!(exchange["parent_span_id"], server["span_id"], "{exchange}");
    assert_eq!(exchange["attributes"]["mcp_edge.upstream.attempts"], 1, "{exchange}");
    assert!(
        exchange["attributes"]["mcp_edge.upstream"].as_str().is_some_and(|u| u.contains("127.0.0.1")),
        "{exchange}"
    );
    let (start, end) = (exchange["start"].as_u64().unwrap(), exchange["end"].as_u64().unwrap());
    assert!(server["start"].as_u64().unwrap() <= start && start <= end && end <= server["end"].as_u64().unwrap());

    // The hit: a span of a new trace (no parent), its cache outcome and tier, no upstream span.
    let hit_span =
        wait_for_span(&receiver, |s| s["attributes"]["mcp_edge.request_id"] == "hit-7" && s["kind"] == 2).await;
    assert_eq!(hit_span["parent_span_id"], "", "{hit_span}");
    assert_eq!(hit_span["attributes"]["mcp_edge.cache"], "HIT", "{hit_span}");
    assert_eq!(hit_span["attributes"]["mcp_edge.cache.tier"], "memory", "{hit_span}");
    let hit_trace = hit_span["trace_id"].clone();
    // The refusal: an error span.
    let refused = wait_for_span(&receiver, |s| s["attributes"]["mcp_edge.request_id"] == "bad-7").await;
    assert_eq!(refused["attributes"]["http.response.status_code"], 400, "{refused}");
    assert_eq!(refused["status"], 2, "an error: {refused}");

    let quoted = wait_for_span(&receiver, |s| s["attributes"]["mcp_edge.request_id"] == "mismatch-9").await;
    assert_eq!(quoted["status_message"], "HTTP 400", "{quoted}");
    let odd = wait_for_span(&receiver, |s| s["attributes"]["mcp_edge.request_id"] == "odd-9").await;
    assert_eq!((&odd["name"], &odd["attributes"]["mcp.method.name"]), (&json!("other"), &json!("other")), "{odd}");
    assert!(!receiver.log().contains("SECRET"), "{}", receiver.log());

    // Give the exporter one more batch: nothing of the unsampled trace, nothing else of the hit's.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let all = spans(&receiver);
    assert!(!all.iter().any(|s| s["trace_id"] == "1".repeat(32).as_str()), "an unsampled trace was exported");
    assert_eq!(all.iter().filter(|s| s["trace_id"] == hit_trace).count(), 1, "{all:?}");
    assert_eq!(metric(&proxy, "mcp_spans_total{result=\"exported\"}").await, all.len() as f64);
}

#[tokio::test]
async fn a_collector_that_is_down_costs_requests_nothing() {
    let dead = free_port();
    let upstream = demo_upstream("a", &[]).await;
    let proxy =
        proxy_full(&route(&[&upstream], ""), "", |_| format!("[tracing]\notlp = \"http://127.0.0.1:{dead}\"\n")).await;
    let mcp = proxy.mcp();
    for n in 0..50 {
        let reply = read(&mcp, &format!("demo://docs/{}", n % 5), None).await;
        assert_eq!(reply.status, 200, "{reply:?}");
    }
    let sent = request_headers(&mcp, &[]).await;
    assert!(seen_header(&sent, "traceparent").is_some_and(|t| t.len() == 55), "a new trace is propagated: {sent:?}");
    // Said once (not per batch), and counted.
    let said = "spans could not be exported";
    for _ in 0..300 {
        if proxy.process.log().contains(said) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = proxy.process.log();
    assert_eq!(log.matches(said).count(), 1, "{log}");
    assert!(metric(&proxy, "mcp_spans_total{result=\"failed\"}").await >= 50.0);
    assert!(!log.contains("panicked"), "{log}");
}

#[tokio::test]
async fn a_collector_answering_a_huge_body_is_not_read_whole() {
    let (receiver, receiver_port) = otlp_receiver_answering("huge").await;
    let upstream = demo_upstream("a", &[]).await;
    let otlp = format!("[tracing]\notlp = \"http://127.0.0.1:{receiver_port}\"\n");
    let proxy = proxy_full(&route(&[&upstream], ""), "", |_| otlp).await;
    for n in 0..20 {
        assert_eq!(read(&proxy.mcp(), &format!("demo://docs/{n}"), None).await.status, 200);
    }
    wait_for_span(&receiver, |s| s["kind"] == 2).await;
    // The receiver streams its gigabyte as fast as it is read: give it a moment, then look.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status = std::fs::read_to_string(format!("/proc/{}/status", proxy.process.pid())).unwrap();
    let rss_kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches(" kB").parse().ok())
        .expect("VmHWM");
    assert!(rss_kib < 300 * 1024, "mcp-edge's peak memory reached {rss_kib} KiB");
}
