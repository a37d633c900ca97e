//! What operators read: request ids end to end, the access log's fields, one line per event
//! (a refused request, a health change each way), no error for a client leaving its stream,
//! the JSON format, and no shared-tier series on a node without the tier.

use std::time::Duration;

use serde_json::json;

use crate::harness::*;

/// The access log lines (text format) of `log` that carry `needle`.
fn access_lines<'a>(log: &'a str, needle: &str) -> Vec<&'a str> {
    log.lines().filter(|line| line.contains("mcp_edge::access") && line.contains(needle)).collect()
}

/// The value of `field` in a text log line (`field="value"` or `field=value`).
fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let start = line.find(&format!(" {name}="))? + name.len() + 2;
    let rest = &line[start..];
    match rest.strip_prefix('"') {
        Some(quoted) => quoted.split('"').next(),
        None => rest.split(' ').next(),
    }
}

/// Waits until the log holds `needle` (or fails after 10 s).
async fn wait_for_log(proxy: &Proxy, needle: &str) -> String {
    for _ in 0..200 {
        let log = proxy.process.log();
        if log.contains(needle) {
            return log;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the log never said {needle:?}:\n{}", proxy.process.log());
}

#[tokio::test]
async fn request_ids_are_kept_or_made_sent_upstream_returned_and_logged() {
    let upstream = demo_upstream("a", &[]).await;
    let proxy = proxy(&route(&[&upstream], "")).await;
    let mcp = proxy.mcp();

    let seen = mcp
        .stateless(
            "tools/call",
            json!({"name": "request_headers", "arguments": {}}),
            &[("x-request-id", "trace-me-42")],
        )
        .await;
    assert_eq!(seen.header("x-request-id"), Some("trace-me-42"), "{seen:?}");
    assert!(seen.tool_text().contains("x-request-id: trace-me-42"), "the upstream saw it: {}", seen.tool_text());

    // None sent, or one that could break a log line: one is made, and the upstream gets it.
    for sent in [None, Some("two words"), Some("quote\"d")] {
        let extra: Vec<(&str, &str)> = sent.iter().map(|id| ("x-request-id", *id)).collect();
        let reply = mcp.stateless("tools/call", json!({"name": "request_headers", "arguments": {}}), &extra).await;
        let made = reply.header("x-request-id").expect("an id made").to_string();
        assert!(made.len() == 32 && made.bytes().all(|b| b.is_ascii_hexdigit()), "{made}");
        assert!(reply.tool_text().contains(&format!("x-request-id: {made}")), "{}", reply.tool_text());
    }

    // A hit and a refusal carry theirs too; each is in its access line.
    let miss = read(&mcp, "demo://docs/1", None).await;
    assert_eq!(x_cache(&miss), "MISS");
    let hit = mcp.stateless("resources/read", json!({"uri": "demo://docs/1"}), &[("x-request-id", "hit-1")]).await;
    assert_eq!((x_cache(&hit), hit.header("x-request-id")), ("HIT", Some("hit-1")));
    let refused = mcp.post("{", &[("x-request-id", "bad-1")]).await;
    assert_eq!((refused.status, refused.header("x-request-id")), (400, Some("bad-1")));
    let nowhere = Mcp::new(&proxy.url("/nowhere")).post("{}", &[("x-request-id", "lost-1")]).await;
    assert_eq!((nowhere.status, nowhere.header("x-request-id")), (404, Some("lost-1")));
    let log = wait_for_log(&proxy, "lost-1").await;
    for id in ["trace-me-42", "hit-1", "bad-1", "lost-1"] {
        let lines = access_lines(&log, &format!("request_id=\"{id}\""));
        assert_eq!(lines.len(), 1, "{id}: {lines:?}");
    }
}

#[tokio::test]
async fn the_access_log_says_who_asked_what_and_how_it_went() {
    let upstream = demo_upstream("a", &[]).await;
    let proxy = proxy(&route(&[&upstream], "")).await;
    let mcp = proxy.mcp();
    let session = mcp.initialize().await;
    let listed = mcp.in_session(&session, 2, "tools/list", json!({})).await;
    assert_eq!(listed.status, 200);
    let log = wait_for_log(&proxy, "mcp_method=\"tools/list\"").await;
    let line = access_lines(&log, "mcp_method=\"tools/list\"")[0];
    assert_eq!(field(line, "client"), Some("127.0.0.1"), "{line}");
    assert_eq!(field(line, "path"), Some("/mcp"), "{line}");
    assert_eq!(field(line, "method"), Some("POST"), "{line}");
    assert_eq!(field(line, "status"), Some("200"), "{line}");
    let bytes_in: usize = field(line, "bytes_in").unwrap().parse().unwrap();
    let bytes_out: usize = field(line, "bytes_out").unwrap().parse().unwrap();
    assert!(bytes_in > 30 && bytes_out >= listed.body.len(), "{line}");
    // The session by a fingerprint only: the log does not hand out a usable session.
    let logged_session = field(line, "session").unwrap();
    assert_eq!(logged_session.len(), 12, "{line}");
    assert!(!line.contains(&session), "{line}");
    // Durations to the microsecond, without a float's binary noise.
    let duration = field(line, "duration_ms").unwrap();
    let decimals = duration.split('.').nth(1).unwrap_or("");
    assert!(decimals.len() <= 3 && duration.parse::<f64>().is_ok(), "{line}");
    // foyer's notes at start are not for operators.
    assert!(!log.contains("foyer"), "{log}");
}

#[tokio::test]
async fn a_client_leaving_its_stream_is_no_error() {
    let upstream = demo_upstream("a", &[]).await;
    let proxy = proxy(&route(&[&upstream], "")).await;
    let mcp = proxy.mcp();
    let session = mcp.initialize().await;
    let stream = mcp.open_stream(&session, &[]).await;
    assert_eq!(stream.status(), 200);
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(stream);
    let log = wait_for_log(&proxy, "method=\"GET\"").await;
    let line = access_lines(&log, "method=\"GET\"")[0];
    assert_eq!(field(line, "status"), Some("200"), "{line}");
    assert!(line.ends_with("error=\"\""), "{line}");
    assert!(!log.contains("ERROR") && !log.contains("WARN"), "{log}");
}

#[tokio::test]
async fn a_refused_request_is_one_line_and_upstream_trouble_one_line_per_event() {
    let upstream = demo_upstream("a", &[]).await;
    let dead = free_port();
    let routes = format!(
        "[[route]]\nname = \"pair\"\npath = \"/mcp\"\nupstreams = [{:?}, \"http://127.0.0.1:{dead}/mcp\"]\n\
         [route.health]\ninterval = \"200ms\"\ntimeout = \"200ms\"\n",
        upstream.url()
    );
    let proxy = proxy(&routes).await;
    let mcp = proxy.mcp();
    let refused = mcp
        .client
        .post(&mcp.url)
        .header("content-type", "text/plain")
        .header("x-request-id", "refused-1")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 415);
    let log = wait_for_log(&proxy, "refused-1").await;
    let about_it: Vec<&str> = log.lines().filter(|l| l.contains("refused-1") || l.contains("Media Type")).collect();
    assert_eq!(about_it.len(), 1, "{about_it:?}");

    // The dead replica: one line, with the route and its URL, not Rust's debug form.
    let dead_url = format!("http://127.0.0.1:{dead}/mcp");
    let log = wait_for_log(&proxy, "failed its health check").await;
    let down: Vec<&str> = log.lines().filter(|l| l.contains("failed its health check")).collect();
    assert_eq!(down.len(), 1, "{down:?}");
    assert!(down[0].contains("route=pair") && down[0].contains(&dead_url), "{}", down[0]);
    assert!(!log.contains("Backend {"), "{log}");

    // It comes up: one line the other way.
    let _revived = demo_upstream_on(dead, "revived", &[]).await;
    let log = wait_for_log(&proxy, "healthy again").await;
    let up: Vec<&str> = log.lines().filter(|l| l.contains("healthy again")).collect();
    assert_eq!(up.len(), 1, "{up:?}");
    assert!(up[0].contains("route=pair") && up[0].contains(&dead_url), "{}", up[0]);
    assert!(!log.contains("ERROR"), "{log}");
}

#[tokio::test]
async fn with_no_upstream_healthy_a_request_gets_503() {
    let (one, two) = (free_port(), free_port());
    let routes = format!(
        "[[route]]\nname = \"gone\"\npath = \"/mcp\"\nupstreams = [\"http://127.0.0.1:{one}/mcp\", \"http://127.0.0.1:{two}/mcp\"]\n\
         [route.health]\ninterval = \"200ms\"\ntimeout = \"200ms\"\n"
    );
    let proxy = proxy(&routes).await;
    wait_for_log(&proxy, &format!("127.0.0.1:{two}/mcp")).await;
    wait_for_log(&proxy, &format!("127.0.0.1:{one}/mcp")).await;
    let reply = proxy.mcp().stateless("tools/list", json!({}), &[]).await;
    assert_eq!(reply.status, 503, "{reply:?}");
    // Replicas already out are tried all the same, and fail again: that is not said again
    // per request (it was said once, when each failed its health check).
    for _ in 0..5 {
        proxy.mcp().stateless("tools/list", json!({}), &[]).await;
    }
    let log = proxy.process.log();
    let ejections = log.lines().filter(|line| line.contains("ejecting it")).count();
    assert!(ejections <= 2, "{ejections} ejection lines for 6 requests:\n{log}");
    let message = reply.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(message.starts_with("route gone: no healthy upstream is available"), "{message}");
}

#[tokio::test]
async fn json_log_lines_switch_on_reload() {
    let upstream = demo_upstream("a", &[]).await;
    let routes = route(&[&upstream], "");
    let proxy = proxy_full(&routes, "", |_| "[log]\nformat = \"json\"\n".to_string()).await;
    let mcp = proxy.mcp();
    let reply = mcp.stateless("tools/list", json!({}), &[("x-request-id", "json-1")]).await;
    assert_eq!(reply.status, 200);
    let log = wait_for_log(&proxy, "json-1").await;
    let lines: Vec<serde_json::Value> =
        log.lines().map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"))).collect();
    let access = lines.iter().find(|line| line["request_id"] == "json-1").expect("the access line");
    assert_eq!(access["target"], "mcp_edge::access");
    assert_eq!(access["status"], 200);
    assert_eq!(access["mcp_method"], "tools/list");
    assert!(access["duration_ms"].is_number() && access["bytes_out"].as_u64().unwrap() > 0, "{access}");

    // A reload to text switches the format, without a restart.
    let text_config =
        std::fs::read_to_string(&proxy.config_path).unwrap().replace("format = \"json\"", "format = \"text\"");
    std::fs::write(&proxy.config_path, text_config).unwrap();
    proxy.process.signal("HUP");
    wait_for_log(&proxy, "configuration reloaded").await;
    mcp.stateless("tools/list", json!({}), &[("x-request-id", "text-1")]).await;
    let log = wait_for_log(&proxy, "text-1").await;
    let line = log.lines().find(|line| line.contains("text-1")).unwrap();
    assert!(line.contains("request_id=\"text-1\"") && !line.starts_with('{'), "{line}");
}

#[tokio::test]
async fn no_shared_tier_series_without_a_shared_tier() {
    let upstream = demo_upstream("a", &[]).await;
    let proxy = proxy(&route(&[&upstream], "")).await;
    let metrics = reqwest::get(proxy.admin_url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("mcp_requests_in_flight"), "{metrics}");
    assert!(!metrics.contains("mcp_shared_tier_"), "{metrics}");
}
