//! `mcp-edge status`: the dashboard's numbers (`GET /stats` of the admin listener) as one
//! screen of text, for a terminal over SSH (what `varnishstat -1` gives).

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::Value;

pub fn run(admin: &str, token_file: Option<&Path>) -> ExitCode {
    let token = match token_file.map(std::fs::read_to_string).transpose() {
        Ok(token) => token.map(|t| t.lines().next().unwrap_or_default().trim().to_string()),
        Err(e) => {
            eprintln!("cannot read the token file: {e}");
            return ExitCode::FAILURE;
        }
    };
    match fetch_stats(admin, token.as_deref()) {
        Ok(stats) => {
            print!("{}", render(admin, &stats));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mcp-edge status: {admin}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `GET /stats` over a plain HTTP/1.1 connection.
fn fetch_stats(admin: &str, token: Option<&str>) -> Result<Value, String> {
    let addr = admin
        .to_socket_addrs()
        .map_err(|e| format!("not an address: {e}"))?
        .next()
        .ok_or("the address resolves to nothing")?;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
        .map_err(|e| format!("cannot connect ({e}); is mcp-edge running with admin.listen = {admin:?}?"))?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
    let authorization = token.map(|t| format!("authorization: Bearer {t}\r\n")).unwrap_or_default();
    let request = format!("GET /stats HTTP/1.1\r\nhost: {admin}\r\n{authorization}connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).map_err(|e| e.to_string())?;
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer.split_once("\r\n\r\n").ok_or("no HTTP answer")?;
    let status = head.split_whitespace().nth(1).unwrap_or_default();
    match status {
        "200" => serde_json::from_str(body).map_err(|e| format!("/stats is not JSON: {e}")),
        "401" => Err("the admin listener wants a token: pass --token-file (admin.token_file)".into()),
        other => Err(format!("/stats answered {other}: {body}")),
    }
}

/// The snapshot as text.
pub fn render(admin: &str, stats: &Value) -> String {
    let mut out = String::new();
    let routes = stats["routes"].as_array().cloned().unwrap_or_default();
    let down = routes.iter().filter(|r| r["healthy"] == false).count();
    let shared = &stats["cache"]["shared"];
    let state = match (down, shared["state"].as_str()) {
        (0, Some("degraded")) => "serving, shared tier degraded".to_string(),
        (0, _) => "serving".to_string(),
        (n, _) => format!("{n} route(s) without a healthy upstream"),
    };
    let _ = writeln!(out, "mcp-edge at {admin}: {state}");
    let cache = &stats["cache"];
    let disk = match cache["disk_capacity_bytes"].as_u64() {
        Some(capacity) => format!(
            "{} (read {}, written {})",
            bytes(capacity),
            bytes(cache["disk_read_bytes"].as_u64().unwrap_or(0)),
            bytes(cache["disk_write_bytes"].as_u64().unwrap_or(0))
        ),
        None => "off".to_string(),
    };
    let mut shared_text = shared["state"].as_str().unwrap_or("off").to_string();
    if let Some(used) = shared["memory_bytes"].as_u64() {
        let _ = write!(shared_text, " (Redis {}", bytes(used));
        if let Some(limit) = shared["max_memory_bytes"].as_u64() {
            let _ = write!(shared_text, " of {}", bytes(limit));
        }
        shared_text.push(')');
    }
    let _ = writeln!(
        out,
        "cache     memory {} of {}, disk {}, shared {}",
        bytes(cache["memory_bytes"].as_u64().unwrap_or(0)),
        bytes(cache["memory_capacity_bytes"].as_u64().unwrap_or(0)),
        disk,
        shared_text,
    );
    let reloads = &stats["reloads"];
    let _ = writeln!(
        out,
        "reloads   {} ok, {} failed; configuration loaded at {}",
        reloads["ok"],
        reloads["failed"],
        clock(reloads["last_ok_at_ms"].as_u64().unwrap_or(0))
    );
    let _ = writeln!(out, "figures over the last {:.0} s", stats["window_seconds"].as_f64().unwrap_or(0.0));
    for route in &routes {
        render_route(&mut out, route);
    }
    out
}

fn render_route(out: &mut String, route: &Value) {
    let (now, totals) = (&route["now"], &route["totals"]);
    let health = if route["healthy"] == true { "healthy" } else { "NO HEALTHY UPSTREAM" };
    let _ = writeln!(out, "\nroute {} ({}): {health}", text(&route["name"]), text(&route["path"]));
    if let Some(doubtful) = route["cached_tools_that_change_state"].as_array().filter(|tools| !tools.is_empty()) {
        let names: Vec<&str> = doubtful.iter().filter_map(Value::as_str).collect();
        let _ =
            writeln!(out, "  WARNING: cache_tools caches tools the upstream says change state: {}", names.join(", "));
    }
    let _ = writeln!(
        out,
        "  requests/s    {:>9}   in all {}: {} hits, {} misses, {} failed",
        number(&now["requests_per_s"]),
        totals["requests"],
        totals["hits"],
        totals["misses"],
        totals["failed"]
    );
    let tiers: Vec<String> = now["hits_by_tier"]
        .as_object()
        .map(|tiers| tiers.iter().map(|(tier, share)| format!("{tier} {}", percent(share))).collect())
        .unwrap_or_default();
    let _ = writeln!(out, "  hit ratio     {:>9}   {}", percent(&now["hit_ratio"]), tiers.join(", "));
    let _ = writeln!(out, "  hit  p50/p99  {:>9} / {}", ms(&now["hit_p50_ms"]), ms(&now["hit_p99_ms"]));
    let _ = writeln!(out, "  miss p50/p99  {:>9} / {}", ms(&now["miss_p50_ms"]), ms(&now["miss_p99_ms"]));
    let _ = writeln!(out, "  failed/s      {:>9}", number(&now["failed_per_s"]));
    let prefetch = &totals["prefetch"];
    if prefetch.as_object().is_some_and(|p| !p.is_empty()) {
        let count = |what: &str| prefetch[what].as_u64().unwrap_or(0);
        let _ = writeln!(
            out,
            "  prefetch      issued {}, used {}, wasted {}, dropped {}",
            count("issued"),
            count("used"),
            count("wasted"),
            count("dropped")
        );
    }
    render_subscriptions(out, &route["subscriptions"]);
    for upstream in route["upstreams"].as_array().into_iter().flatten() {
        let url = text(&upstream["url"]);
        let window = &now["upstreams"][url.as_str()];
        let _ = writeln!(
            out,
            "  upstream {url}  {}  in flight {}, {} req/s, errors {}",
            if upstream["healthy"] == true { "healthy" } else { "DOWN" },
            upstream["in_flight"],
            number(&window["requests_per_s"]),
            percent(&window["error_ratio"]),
        );
    }
    render_operations(out, &route["operations"]);
}

/// The route's most called tools and resources (the first five), and the advice they give.
fn render_operations(out: &mut String, operations: &Value) {
    let top = operations["top"].as_array().map_or(&[][..], Vec::as_slice);
    if !top.is_empty() {
        let _ = writeln!(out, "  top operations      calls/s  p50 / p99           hits  repeated  alike");
    }
    for op in top.iter().take(5) {
        let name = format!("{} {}", text(&op["kind"]), text(&op["name"]));
        let name =
            if name.chars().count() > 22 { format!("{}…", name.chars().take(21).collect::<String>()) } else { name };
        let _ = writeln!(
            out,
            "    {name:<22} {:>6}  {:>8} / {:<8} {:>6}  {:>8}  {:>5}",
            number(&op["calls_per_second"]),
            ms(&op["p50_ms"]),
            ms(&op["p99_ms"]),
            percent(&op["hit_ratio"]),
            percent(&op["repeated_share"]),
            percent(&op["identical_share"]),
        );
    }
    for advice in operations["advice"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "  ADVICE: {}", text(advice));
    }
}

/// The route's own subscriptions (nothing when they are off).
fn render_subscriptions(out: &mut String, subscriptions: &Value) {
    let Some(uris) = subscriptions["uris"].as_object() else { return };
    let streams = subscriptions["streams"].as_array().map_or(&[][..], Vec::as_slice);
    let open = streams.iter().filter(|s| s["state"] == "open").count();
    let _ = writeln!(
        out,
        "  watched       {} URIs (at most {} per era), {open} of {} subscriptions open, {} not watched",
        uris.values().filter_map(Value::as_u64).sum::<u64>(),
        subscriptions["max_subscriptions"],
        streams.len(),
        subscriptions["not_subscribed"],
    );
}

/// A string of `/stats` as printed: control characters (a client's tool name or URI may hold
/// terminal escapes or line feeds) written as escapes, so nothing reaches the terminal raw.
fn text(value: &Value) -> String {
    let raw = value.as_str().unwrap_or("-");
    if !raw.chars().any(char::is_control) {
        return raw.to_string();
    }
    raw.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

fn number(value: &Value) -> String {
    value.as_f64().map_or("-".into(), |n| format!("{n:.1}"))
}

fn percent(value: &Value) -> String {
    value.as_f64().map_or("-".into(), |r| format!("{:.1}%", r * 100.0))
}

fn ms(value: &Value) -> String {
    match value.as_f64() {
        None => "-".into(),
        Some(v) if v < 1.0 => format!("{:.0} µs", v * 1000.0),
        Some(v) => format!("{v:.1} ms"),
    }
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let (mut value, mut unit) = (n as f64, 0);
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

/// Milliseconds since the epoch as a UTC time of day.
fn clock(at_ms: u64) -> String {
    let seconds = at_ms / 1000 % 86_400;
    format!("{:02}:{:02}:{:02} UTC", seconds / 3600, seconds / 60 % 60, seconds % 60)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn names_from_clients_reach_the_terminal_escaped() {
        assert_eq!(text(&json!("\u{1b}[31mRED\nfake line")), "\\u{1b}[31mRED\\nfake line");
        assert_eq!(text(&json!("plain")), "plain");
    }

    #[test]
    fn a_snapshot_reads_as_one_screen() {
        let stats = json!({
            "at_ms": 1_800_000_000_000u64, "window_seconds": 5.0,
            "cache": {"memory_bytes": 3 << 20, "memory_capacity_bytes": 256 << 20, "disk_capacity_bytes": null,
                      "disk_read_bytes": 0, "disk_write_bytes": 0, "shared": {"state": "degraded", "memory_bytes": 2097152, "max_memory_bytes": null}},
            "reloads": {"ok": 2, "failed": 1, "last_ok_at_ms": 1_800_000_000_000u64},
            "routes": [{
                "name": "docs", "path": "/mcp", "healthy": false,
                "totals": {"requests": 120, "hits": 100, "misses": 20, "failed": 3, "prefetch": {"issued": 4, "used": 3}},
                "now": {"requests_per_s": 24.0, "hit_ratio": 0.9, "hits_by_tier": {"memory": 0.75, "shared": 0.25},
                        "failed_per_s": 0.2, "hit_p50_ms": 0.04, "hit_p99_ms": 0.3, "miss_p50_ms": 21.5, "miss_p99_ms": null,
                        "upstreams": {"http://a/mcp": {"requests_per_s": 2.0, "error_ratio": 0.5}}},
                "upstreams": [{"url": "http://a/mcp", "healthy": false, "in_flight": 1}],
                "subscriptions": {"max_subscriptions": 1000, "uris": {"handshake": 2, "stateless": 3}, "not_subscribed": 4,
                                  "streams": [{"state": "open"}, {"state": "unsupported"}]},
                "operations": {"top": [{"kind": "tool", "name": "weather.get", "calls_per_second": 40.0, "p50_ms": 12.0,
                                        "p99_ms": 80.5, "hit_ratio": null, "repeated_share": 0.95, "identical_share": 0.92}],
                               "advice": ["tool `weather.get`: 40/s, 92% identical calls with identical answers within 60 s, marked read-only: add it to `cache_tools`"]}
            }],
            "history": []
        });
        let text = render("127.0.0.1:9090", &stats);
        for expected in [
            "mcp-edge at 127.0.0.1:9090: 1 route(s) without a healthy upstream",
            "memory 3.0 MiB of 256.0 MiB, disk off, shared degraded (Redis 2.0 MiB)",
            "2 ok, 1 failed; configuration loaded at 08:00:00 UTC",
            "route docs (/mcp): NO HEALTHY UPSTREAM",
            "requests/s         24.0   in all 120: 100 hits, 20 misses, 3 failed",
            "hit ratio         90.0%   memory 75.0%, shared 25.0%",
            "hit  p50/p99      40 µs / 300 µs",
            "miss p50/p99    21.5 ms / -",
            "prefetch      issued 4, used 3, wasted 0, dropped 0",
            "upstream http://a/mcp  DOWN  in flight 1, 2.0 req/s, errors 50.0%",
            "watched       5 URIs (at most 1000 per era), 1 of 2 subscriptions open, 4 not watched",
            "tool weather.get         40.0   12.0 ms / 80.5 ms       -     95.0%  92.0%",
            "ADVICE: tool `weather.get`: 40/s, 92% identical calls",
        ] {
            assert!(text.contains(expected), "no {expected:?} in\n{text}");
        }
        assert!(text.lines().count() < 28, "one screen");
    }
}
