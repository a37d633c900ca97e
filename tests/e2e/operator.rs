//! The operator's view: `GET /stats` against `/metrics`, the dashboard in a real browser
//! (Debian's headless Chromium), `mcp-edge status`, and the shipped Grafana dashboard and alert
//! rules naming only metrics mcp-edge exports.

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::*;

async fn get_stats(proxy: &Proxy) -> Value {
    reqwest::get(proxy.admin_url("/stats")).await.unwrap().json().await.unwrap()
}

async fn metrics_text(proxy: &Proxy) -> String {
    reqwest::get(proxy.admin_url("/metrics")).await.unwrap().text().await.unwrap()
}

/// The sum of every sample of `name` whose labels include all of `labels`.
fn metric_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|line| line.starts_with(&format!("{name}{{")) && labels.iter().all(|l| line.contains(l)))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Reads a few documents twice each (misses, then hits) and calls a tool.
async fn traffic(mcp: &Mcp, documents: u32) {
    for n in 0..documents {
        read(mcp, &format!("demo://docs/{n}"), None).await;
        read(mcp, &format!("demo://docs/{n}"), None).await;
    }
    whoami(mcp).await;
}

/// Keeps reading until told to stop.
fn background_traffic(mcp: Mcp) -> (Arc<AtomicBool>, tokio::task::JoinHandle<()>) {
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = stop.clone();
    let task = tokio::spawn(async move {
        let mut n = 0u32;
        while !stopping.load(Ordering::SeqCst) {
            read(&mcp, &format!("demo://docs/{}", n % 50), None).await;
            n += 1;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    (stop, task)
}

#[tokio::test]
async fn stats_agree_with_metrics() {
    let upstream = demo_upstream("u", &[]).await;
    let routes = format!("[[route]]\nname = \"docs\"\npath = \"/mcp\"\nupstreams = [{:?}]\n", upstream.url());
    let proxy = proxy(&routes).await;
    traffic(&proxy.mcp(), 20).await;
    // The sampler reads the metrics every second: at rest, two seconds on, both agree.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let (stats, metrics) = (get_stats(&proxy).await, metrics_text(&proxy).await);
    let route = &stats["routes"][0];
    assert_eq!(route["name"], "docs");
    assert_eq!(route["healthy"], true);
    let totals = &route["totals"];
    let route_label = "route=\"docs\"";
    assert_eq!(totals["requests"].as_f64().unwrap(), metric_sum(&metrics, "mcp_requests_total", &[route_label]));
    assert_eq!(totals["requests"], 41);
    assert_eq!(
        totals["hits"].as_f64().unwrap(),
        metric_sum(&metrics, "mcp_requests_total", &[route_label, "cache=\"HIT\""])
    );
    assert_eq!(totals["hits"], 20);
    assert_eq!(totals["hits_by_tier"]["memory"], 20);
    assert_eq!(
        metric_sum(&metrics, "mcp_cache_hits_total", &[route_label, "tier=\"memory\""]),
        20.0,
        "the same hits by tier in /metrics"
    );
    assert_eq!(totals["misses"], 20);
    assert_eq!(route["upstreams"][0]["url"], upstream.url());
    assert_eq!(route["upstreams"][0]["healthy"], true);
    assert_eq!(stats["reloads"]["ok"].as_f64().unwrap(), metric_sum(&metrics, "mcp_config_reloads_total", &["ok"]));
    assert!(stats["reloads"]["last_ok_at_ms"].as_u64().unwrap() > 1_700_000_000_000);
    assert!(stats["cache"]["memory_bytes"].as_u64().unwrap() > 0);
    assert!(!stats["history"].as_array().unwrap().is_empty());

    // With traffic running the rates move, and the hits' latency is known.
    let (stop, task) = background_traffic(proxy.mcp());
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let busy = get_stats(&proxy).await;
    stop.store(true, Ordering::SeqCst);
    task.await.unwrap();
    let now = &busy["routes"][0]["now"];
    assert!(now["requests_per_s"].as_f64().unwrap() > 10.0, "{now}");
    assert!(now["hit_ratio"].as_f64().unwrap() > 0.5, "{now}");
    assert!(now["hit_p50_ms"].as_f64().unwrap() < 50.0, "{now}");
    assert_eq!(now["hits_by_tier"]["memory"], 1.0, "{now}");
    let points = busy["history"].as_array().unwrap();
    assert!(points.iter().any(|p| p["routes"]["docs"]["requests_per_s"].as_f64().unwrap_or(0.0) > 10.0));
}

/// Chromium's view of the dashboard after `budget_ms` of its (virtual) time: the DOM as
/// rendered, and optionally a screenshot.
pub fn browse(url: &str, budget_ms: u32, screenshot: Option<&std::path::Path>) -> String {
    let mut command = Command::new("chromium");
    command.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--window-size=1280,1000",
        &format!("--virtual-time-budget={budget_ms}"),
    ]);
    match screenshot {
        Some(path) => command.arg(format!("--screenshot={}", path.display())),
        None => command.arg("--dump-dom"),
    };
    let out = command.arg(url).output().expect("chromium (Debian's package chromium) runs");
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The text of the element carrying `data-stat="<stat>"` in a dumped DOM.
pub fn rendered(dom: &str, stat: &str) -> Option<String> {
    let at = dom.find(&format!("data-stat=\"{stat}\""))?;
    let text = &dom[at..];
    let start = text.find('>')? + 1;
    let end = text[start..].find('<')?;
    Some(text[start..start + end].trim().to_string())
}

fn rendered_number(dom: &str, stat: &str) -> f64 {
    let text = rendered(dom, stat).unwrap_or_else(|| panic!("no {stat} in the page:\n{dom}"));
    text.replace(',', "").parse().unwrap_or_else(|_| panic!("{stat} is {text:?}"))
}

#[tokio::test]
async fn the_dashboard_shows_live_numbers_in_a_real_browser() {
    let upstream = demo_upstream("u", &[]).await;
    let routes = format!("[[route]]\nname = \"docs\"\npath = \"/mcp\"\nupstreams = [{:?}]\n", upstream.url());
    let proxy = proxy(&routes).await;
    let page = reqwest::get(proxy.admin_url("/")).await.unwrap();
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    assert!(page.headers()["content-security-policy"].to_str().unwrap().contains("default-src 'none'"));
    let html = page.text().await.unwrap();
    assert!(
        !html.contains("http://") && !html.contains("https://") && !html.contains("src="),
        "no asset from elsewhere"
    );

    let (stop, task) = background_traffic(proxy.mcp());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let url = proxy.admin_url("/");
    let before = get_stats(&proxy).await["routes"][0]["totals"]["requests"].as_f64().unwrap();
    let first = browse(&url, 2500, None);
    let after = get_stats(&proxy).await["routes"][0]["totals"]["requests"].as_f64().unwrap();
    let shown = rendered_number(&first, "route:docs:requests_total");
    assert!(before <= shown && shown <= after, "the page shows {shown}, /stats said {before} then {after}");
    assert!(rendered_number(&first, "route:docs:requests_per_s") > 0.0);
    assert!(rendered(&first, "route:docs:hit_ratio").unwrap().ends_with('%'));
    assert_eq!(rendered(&first, &format!("upstream:{}:health", upstream.url())).as_deref(), Some("healthy"));
    assert_eq!(rendered(&first, "node:state").as_deref(), Some("serving"));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let second = browse(&url, 2500, None);
    assert!(rendered_number(&second, "route:docs:requests_total") > shown, "the numbers move");
    let screenshot = workspace().join("target/dashboard.png");
    browse(&url, 3000, Some(&screenshot));
    assert!(std::fs::metadata(&screenshot).unwrap().len() > 10_000, "a screenshot in {}", screenshot.display());
    stop.store(true, Ordering::SeqCst);
    task.await.unwrap();

    // Every replica down: the route turns red.
    drop(upstream);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while get_stats(&proxy).await["routes"][0]["healthy"] == true {
        assert!(tokio::time::Instant::now() < deadline, "the health check never saw the upstream go");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let down = browse(&url, 2000, None);
    assert!(down.contains("data-state=\"down\"") && down.contains("NO HEALTHY UPSTREAM"), "{down}");
    assert_eq!(rendered(&down, "node:state").as_deref(), Some("1 route down"));
}

#[tokio::test]
async fn status_prints_the_numbers_on_one_screen_and_asks_for_the_token() {
    let upstream = demo_upstream("u", &[]).await;
    let routes = format!("[[route]]\nname = \"docs\"\npath = \"/mcp\"\nupstreams = [{:?}]\n", upstream.url());
    let token = "status-token-0123456789";
    let proxy = proxy_full(&routes, "", |dir| {
        std::fs::write(dir.join("admin.token"), format!("{token}\n")).unwrap();
        format!("token_file = {:?}\n", dir.join("admin.token").display().to_string())
    })
    .await;
    traffic(&proxy.mcp(), 5).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let admin = format!("127.0.0.1:{}", proxy.admin_port);
    let refused = Command::new(bin()).args(["status", "--admin", &admin]).output().unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--token-file"), "{refused:?}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), token).unwrap();
    let out = Command::new(bin())
        .args(["status", "--admin", &admin, "--token-file"])
        .arg(dir.path().join("token"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    for expected in [
        format!("mcp-edge at {admin}: serving"),
        "route docs (/mcp): healthy".to_string(),
        "in all 11: 5 hits, 5 misses, 0 failed".to_string(),
        format!("upstream {}  healthy", upstream.url()),
        "reloads   0 ok, 0 failed".to_string(),
    ] {
        assert!(text.contains(&expected), "no {expected:?} in\n{text}");
    }
    let nobody =
        Command::new(bin()).args(["status", "--admin", &format!("127.0.0.1:{}", free_port())]).output().unwrap();
    assert!(!nobody.status.success());
    assert!(String::from_utf8_lossy(&nobody.stderr).contains("cannot connect"), "{nobody:?}");
}

/// Every `mcp_…` name in a monitoring file (a histogram's `_bucket` named by its family; not
/// the recording rules' own `route:mcp_…:…` names).
pub fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut at = 0;
    while let Some(found) = text[at..].find("mcp_") {
        let start = at + found;
        let preceded = start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || b"_:".contains(&bytes[start - 1]));
        let end =
            text[start..].find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).map_or(text.len(), |n| start + n);
        if !preceded {
            let name = &text[start..end];
            names.insert(name.strip_suffix("_bucket").unwrap_or(name).to_string());
        }
        at = end;
    }
    names
}

#[tokio::test]
async fn the_grafana_dashboard_and_alert_rules_name_only_exported_metrics() {
    let upstream = demo_upstream("u", &[]).await;
    let routes = format!(
        "[[route]]\nname = \"docs\"\npath = \"/mcp\"\nupstreams = [{:?}]\n[route.prefetch]\nenabled = true\nwarm = [\"demo://docs/1\"]\n[route.limits]\nmax_concurrent = 64\n[route.scaling]\nlatency_target = \"500ms\"\n",
        upstream.url()
    );
    let proxy = proxy(&routes).await;
    traffic(&proxy.mcp(), 3).await;
    proxy.mcp().stateless("tools/call", json!({"name": "whoami", "arguments": {}}), &[]).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let exported: BTreeSet<String> = metrics_text(&proxy)
        .await
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE ")?.split(' ').next().map(str::to_string))
        .collect();
    let monitoring = workspace().join("packaging/monitoring");
    let dashboard = std::fs::read_to_string(monitoring.join("grafana-dashboard.json")).unwrap();
    let parsed: Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    assert!(parsed["panels"].as_array().unwrap().len() >= 10);
    let rules = std::fs::read_to_string(monitoring.join("mcp-edge-alerts.yml")).unwrap();
    let scaling = std::fs::read_to_string(monitoring.join("mcp-edge-scaling.yml")).unwrap();
    let files =
        [("grafana-dashboard.json", &dashboard), ("mcp-edge-alerts.yml", &rules), ("mcp-edge-scaling.yml", &scaling)];
    for (file, text) in files {
        let named = metric_names(text);
        assert!(named.len() >= 5, "{file}: {named:?}");
        // The shared tier's series exist only on a node with one: `shared_tier.rs` checks them.
        let unknown: Vec<&String> =
            named.iter().filter(|name| !exported.contains(*name) && !name.starts_with("mcp_shared_tier_")).collect();
        assert!(
            unknown.is_empty(),
            "{file} names metrics /metrics does not export: {unknown:?}\nexported: {exported:?}"
        );
    }
}

/// `cache_tools` is the operator's word, but when the upstream's `tools/list` marks a listed
/// tool as changing state, mcp-edge says so: one warning in the log per configuration, the
/// tools in `/stats` (hence the dashboard) and in `mcp-edge status`.
#[tokio::test]
async fn cached_tools_the_upstream_says_change_state_are_pointed_out() {
    let upstream = demo_upstream("a", &[]).await;
    let routes = route(&[&upstream], "[route.policy]\ncache_tools = [\"add\", \"touch\", \"echo\"]");
    let proxy = proxy(&routes).await;
    for _ in 0..2 {
        let list = proxy.mcp().stateless("tools/list", json!({}), &[]).await;
        assert_eq!(list.status, 200, "{list:?}");
    }
    let doubtful = |stats: &Value| stats["routes"][0]["cached_tools_that_change_state"].clone();
    assert_eq!(doubtful(&get_stats(&proxy).await), json!(["echo", "touch"]), "add is read-only");
    let log = proxy.process.log();
    assert_eq!(log.matches("cache_tools names \"touch\"").count(), 1, "once per configuration:\n{log}");
    assert!(log.contains("marks destructive") && log.contains("marks not read-only"), "{log}");
    let admin = format!("127.0.0.1:{}", proxy.admin_port);
    let status = Command::new(bin()).args(["status", "--admin", &admin]).output().unwrap();
    let screen = String::from_utf8_lossy(&status.stdout);
    assert!(
        screen.contains("WARNING: cache_tools caches tools the upstream says change state: echo, touch"),
        "{screen}"
    );
}
