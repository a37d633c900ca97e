//! The command line: `check` finds every problem, `run` refuses a bad config, SIGHUP reloads.

use std::process::Command;
use std::time::Duration;

use crate::harness::*;

#[test]
fn check_accepts_the_shipped_config() {
    let output =
        Command::new(bin()).args(["check", "--config"]).arg(workspace().join("conf/mcp-edge.toml")).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).contains("OK"));
}

#[test]
fn check_lists_every_problem_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[server]\nmax_body = \"lots\"\n\n[[route]]\npath = \"/mcp\"\nupstreams = []\ncolour = \"blue\"\n\n[[route]]\npath = \"/mcp\"\nupstreams = [\"ftp://x/mcp\"]\n",
    )
    .unwrap();
    let output = Command::new(bin()).args(["check", "--config"]).arg(&path).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for expected in [
        "bad.toml: line 2, column 12: server.max_body",
        "bad.toml: line 6, column 13: route \"/mcp\" has an empty upstream list",
        "bad.toml: line 7, column 1: unknown key \"colour\" in [route]",
        "bad.toml: line 10, column 8: route path \"/mcp\" is used by more than one route",
        "bad.toml: line 11, column 14: upstream \"ftp://x/mcp\" has scheme \"ftp\"",
    ] {
        assert!(stderr.contains(expected), "missing {expected:?} in:\n{stderr}");
    }
    let missing = Command::new(bin()).args(["check", "--config", "/nonexistent/mcp-edge.toml"]).output().unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read"));
}

#[test]
fn run_refuses_an_invalid_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[[route]]\npath = \"mcp\"\nupstreams = [\"http://127.0.0.1:1/mcp\"]\n").unwrap();
    let mut process = Process::spawn("mcp-edge", Command::new(bin()).args(["run", "--config"]).arg(&path));
    assert_eq!(process.wait_exit(Duration::from_secs(10)), Some(1));
    assert!(process.log().contains("must start with \"/\""), "{}", process.log());
}

#[tokio::test]
async fn sighup_swaps_upstreams_and_refuses_a_bad_file() {
    let (a, b) = (demo_upstream("a", &[]).await, demo_upstream("b", &[]).await);
    let proxy = proxy(&route(&[&a], "")).await;
    let mcp = proxy.mcp();
    assert_eq!(whoami(&mcp).await, "a");
    let session = mcp.initialize().await;

    proxy.reload_with(&route(&[&b], ""));
    wait_for(|| proxy.process.log().contains("configuration reloaded")).await;
    assert_eq!(whoami(&mcp).await, "b", "new requests go to the new pool");
    // a is not in the pool any more: its session must re-initialize.
    let old = mcp.in_session(&session, 1, "ping", serde_json::json!({})).await;
    assert_eq!(old.status, 404);

    proxy.reload_with("[[route]]\npath = \"/mcp\"\nupstreams = []\n");
    wait_for(|| proxy.process.log().contains("configuration refused")).await;
    assert!(proxy.process.log().contains("empty upstream list"));
    assert_eq!(whoami(&mcp).await, "b", "the old config keeps serving");
    let metrics = reqwest::get(proxy.admin_url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("mcp_config_reloads_total{result=\"ok\"} 1"), "{metrics}");
    assert!(metrics.contains("mcp_config_reloads_total{result=\"error\"} 1"), "{metrics}");
    // Logs to a file (or the journal) are plain text: no terminal colour codes.
    assert!(!proxy.process.log().contains('\u{1b}'), "ANSI escapes in a non-terminal log");
}

async fn wait_for(condition: impl Fn() -> bool) {
    for _ in 0..200 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("condition not met in 5 s");
}

#[tokio::test]
async fn twenty_reloads_during_load_lose_no_request() {
    let (a, b) = (demo_upstream("a", &[]).await, demo_upstream("b", &[]).await);
    let proxy = proxy(&route(&[&a], "")).await;
    let mcp = proxy.mcp();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (mcp, stop) = (mcp.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut answered, mut failures) = (0, Vec::new());
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let reply =
                        mcp.stateless("tools/call", serde_json::json!({"name": "whoami", "arguments": {}}), &[]).await;
                    match (reply.status, reply.json()["result"]["content"][0]["text"].as_str()) {
                        (200, Some("a" | "b")) => answered += 1,
                        _ => failures.push(format!("{reply:?}")),
                    }
                }
                (answered, failures)
            })
        })
        .collect();
    for reload in 0..20 {
        let next = if reload % 2 == 0 { &b } else { &a };
        proxy.reload_with(&route(&[next], ""));
        // One reload at a time: signals sent faster than they are handled would coalesce.
        wait_for(|| proxy.process.log().matches("configuration reloaded").count() == reload + 1).await;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for worker in workers {
        let (answered, failures) = worker.await.unwrap();
        assert!(failures.is_empty(), "requests lost during reloads: {failures:#?}");
        total += answered;
    }
    assert!(total > 100, "the load ran: {total} requests");
}

/// `THP_enabled` of a running process (`/proc/PID/status`): 0 when huge pages are off for it.
fn thp_enabled(process: &Process) -> String {
    let status = std::fs::read_to_string(format!("/proc/{}/status", process.pid())).expect("a live process");
    status.lines().find_map(|line| line.strip_prefix("THP_enabled:")).expect("THP_enabled").trim().to_string()
}

#[tokio::test]
async fn transparent_huge_pages_are_off_unless_asked_for() {
    let upstream = demo_upstream("a", &[]).await;
    let proxy = proxy(&route(&[&upstream], "")).await;
    assert_eq!(thp_enabled(&proxy.process), "0", "first touches of huge pages stall a worker");
    assert_eq!(thp_enabled(&upstream.process), "0");

    let port = free_port();
    let asked = Process::spawn(
        "upstream with THP",
        Command::new(bin()).args(["upstream", "--listen", &format!("127.0.0.1:{port}")]).env("MIMALLOC_ALLOW_THP", "1"),
    );
    wait_listening(port, &asked).await;
    assert_eq!(thp_enabled(&asked), "1", "MIMALLOC_ALLOW_THP=1 keeps them");
}

#[test]
fn check_refuses_two_routes_with_one_name() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("twice.toml");
    // The second route's name is taken from its path, and is the first route's name.
    std::fs::write(
        &config,
        "[[route]]\nname = \"/b\"\npath = \"/a\"\nupstreams = [\"http://127.0.0.1:1/mcp\"]\n\n\
         [[route]]\npath = \"/b\"\nupstreams = [\"http://127.0.0.1:2/mcp\"]\n",
    )
    .unwrap();
    let output = std::process::Command::new(bin()).args(["check", "--config"]).arg(&config).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("route name \"/b\"") && stderr.contains("line 7"), "{stderr}");
}

#[test]
fn check_explains_who_may_call() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("open.toml");
    std::fs::write(
        &config,
        "[server]\nlisten = [\"0.0.0.0:8080\"]\n[admin]\nlisten = \"0.0.0.0:9090\"\n\
         [[route]]\npath = \"/mcp\"\nupstreams = [\"http://127.0.0.1:1/mcp\"]\n",
    )
    .unwrap();
    let output = std::process::Command::new(bin()).args(["check", "--config"]).arg(&config).output().unwrap();
    assert_eq!(output.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("any Host is served"), "{stdout}");
    assert!(stdout.contains("same origin") || stdout.contains("own origin"), "{stdout}");
    let warning = format!("{}: warning: admin.listen 0.0.0.0:9090 is not loopback", config.display());
    assert!(stdout.contains(&warning), "a warning is said as one: {stdout}");
    assert!(!stdout.contains("note: warning"), "{stdout}");
}

/// Problems found past parsing (a file the configuration names, an upstream) are placed at
/// their line too, as parsing problems are.
#[test]
fn check_places_every_problem_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("files.toml");
    let cases = [
        (
            "[[route]]\npath = \"/mcp\"\nupstreams = [\"http://127.0.0.1:1/mcp\"]\nca_file = \"/nonexistent/ca.pem\"\n",
            4,
        ),
        (
            "[[route]]\npath = \"/mcp\"\nupstreams = [\"http://127.0.0.1:1/mcp\"]\n\n[cache.shared]\nurl = \"redis://127.0.0.1:1\"\npassword_file = \"/nonexistent/pw\"\n",
            7,
        ),
        (
            "[[route]]\npath = \"/mcp\"\nupstreams = [\"http://127.0.0.1:1/mcp\"]\n[route.auth]\nissuer = \"https://idp.test\"\naudience = \"https://mcp.test/mcp\"\njwks_file = \"/nonexistent/jwks.json\"\n",
            7,
        ),
    ];
    for (text, line) in cases {
        std::fs::write(&config, text).unwrap();
        let output = std::process::Command::new(bin()).args(["check", "--config"]).arg(&config).output().unwrap();
        assert_eq!(output.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.starts_with(&format!("{}:{line}: ", config.display())), "{stderr}");
        assert!(stderr.contains("/nonexistent/"), "{stderr}");
    }
}

/// SIGTERM stops mcp-edge with exit code 0 and nothing panicking, also without an admin
/// listener (whose thread otherwise keeps the cache alive to the end): the last handle to the
/// cache then goes on a service's async thread, where dropping foyer's runtime used to panic.
#[tokio::test]
async fn sigterm_stops_cleanly_without_an_admin_listener() {
    let upstream = demo_upstream("a", &[]).await;
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("edge.toml");
    let routes = route(&[&upstream], "");
    let text = format!(
        "[server]\nlisten = [\"127.0.0.1:{port}\"]\nthreads = 1\n[admin]\nlisten = \"\"\n[cache]\ndisk_path = {:?}\ndisk_size = \"64MiB\"\n{routes}",
        dir.path().join("cache")
    );
    std::fs::write(&config, text).unwrap();
    let mut edge = Process::spawn("mcp-edge", Command::new(bin()).args(["run", "--config"]).arg(&config));
    wait_listening(port, &edge).await;
    let reply =
        Mcp::new(&format!("http://127.0.0.1:{port}/mcp")).stateless("tools/list", serde_json::json!({}), &[]).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    edge.signal("TERM");
    let code = edge.wait_exit(Duration::from_secs(15));
    let log = edge.log();
    assert_eq!(code, Some(0), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}

/// A client connection kept alive and idle between requests is closed as soon as mcp-edge
/// begins to stop (not after the keep-alive timeout, nor the graceful-shutdown timeout of
/// 5 s), and mcp-edge exits cleanly.
#[tokio::test]
async fn sigterm_closes_an_idle_kept_alive_connection_at_once() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut edge = one_route_edge().await;
    let port = edge.port;
    let mut client = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#;
    let request = format!(
        "POST /mcp HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
         accept: application/json, text/event-stream\r\nmcp-protocol-version: 2026-07-28\r\n\
         mcp-method: tools/list\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    client.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    while !String::from_utf8_lossy(&answer).contains("\"jsonrpc\"") {
        let read = tokio::time::timeout(Duration::from_secs(5), client.read(&mut chunk)).await.unwrap().unwrap();
        assert!(read > 0, "closed before answering: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&chunk[..read]);
    }
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));
    // The connection now waits for its next request.
    tokio::time::sleep(Duration::from_millis(200)).await;
    edge.process.signal("TERM");
    let closed = tokio::time::timeout(Duration::from_secs(3), client.read(&mut chunk)).await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "the idle connection was not closed at once: {closed:?}");
    assert_eq!(edge.process.wait_exit(Duration::from_secs(15)), Some(0), "{}", edge.process.log());
}

/// SIGTERM lets the requests in flight finish before mcp-edge stops (Pingora alone cancelled
/// them at once: an empty reply), closes the connections of answers given meanwhile, and then
/// exits cleanly without waiting for the drain's limit.
#[tokio::test]
async fn sigterm_lets_the_requests_in_flight_finish() {
    let mut edge = one_route_edge().await;
    let port = edge.port;
    let url = format!("http://127.0.0.1:{port}/mcp");
    let mcp = Mcp::new(&url);
    let slow = call_sleep_in_background(&url, 1500);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let signalled = std::time::Instant::now();
    edge.process.signal("TERM");
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Draining: still answered, and told to close; not ready for new clients.
    let meanwhile = mcp.stateless("tools/list", serde_json::json!({}), &[]).await;
    assert_eq!(meanwhile.status, 200, "{meanwhile:?}");
    assert_eq!(meanwhile.header("connection"), Some("close"), "{meanwhile:?}");
    let ready = reqwest::get(format!("http://127.0.0.1:{}/readyz", edge.admin_port)).await.unwrap();
    assert_eq!(ready.status().as_u16(), 503);
    assert!(ready.text().await.unwrap().contains("\"draining\":true"));
    let slow = slow.await.unwrap();
    assert_eq!(slow.status, 200, "{slow:?}");
    assert!(slow.body.contains("slept"), "{slow:?}");
    assert_eq!(edge.process.wait_exit(Duration::from_secs(15)), Some(0), "{}", edge.process.log());
    // The drain waits at most 10 s; it ended with the slow call.
    assert!(signalled.elapsed() < Duration::from_secs(8), "stopped once nothing was in flight");
    assert!(edge.process.log().contains("finishing the requests in flight"), "{}", edge.process.log());
}

/// An open server-to-client stream (a handshake-era GET stream) does not hold a stop for the
/// drain's limit (10 s): it is not a request that finishes. A call in flight beside it still
/// gets its answer; the stream ends when mcp-edge stops, and its client reconnects.
#[tokio::test]
async fn sigterm_does_not_wait_for_an_open_stream() {
    use futures_util::StreamExt;
    let mut edge = one_route_edge().await;
    let url = format!("http://127.0.0.1:{}/mcp", edge.port);
    let mcp = Mcp::new(&url);
    let session = mcp.initialize().await;
    let stream = mcp.open_stream(&session, &[]).await;
    assert_eq!(stream.status(), 200);
    let mut events = stream.bytes_stream();
    let first = tokio::time::timeout(Duration::from_secs(5), events.next()).await.unwrap();
    assert!(matches!(first, Some(Ok(_))), "the GET stream is open: {first:?}");
    let metrics = reqwest::get(format!("http://127.0.0.1:{}/metrics", edge.admin_port)).await.unwrap();
    assert!(metrics.text().await.unwrap().contains("mcp_streams_open 1"), "the stream is counted");
    let slow = call_sleep_in_background(&url, 1000);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let signalled = std::time::Instant::now();
    edge.process.signal("TERM");
    let slow = slow.await.unwrap();
    assert_eq!(slow.status, 200, "the call in flight is answered: {slow:?}");
    assert_eq!(edge.process.wait_exit(Duration::from_secs(15)), Some(0), "{}", edge.process.log());
    assert!(signalled.elapsed() < Duration::from_secs(5), "the stop waited {:?}", signalled.elapsed());
    // The stream ended with mcp-edge (cut, or closed at the end of its data).
    let ended =
        tokio::time::timeout(Duration::from_secs(5), async { while let Some(Ok(_)) = events.next().await {} }).await;
    assert!(ended.is_ok(), "the stream outlived mcp-edge");
}

/// A `tools/call` of the demo's `sleep` tool for `ms`, sent in the background.
fn call_sleep_in_background(url: &str, ms: u64) -> tokio::task::JoinHandle<Reply> {
    let mcp = Mcp::new(url);
    tokio::spawn(async move {
        mcp.stateless("tools/call", serde_json::json!({"name": "sleep", "arguments": {"ms": ms}}), &[]).await
    })
}

/// mcp-edge with one route to a demo upstream and an admin listener, listening.
struct OneRouteEdge {
    port: u16,
    admin_port: u16,
    process: Process,
    _upstream: Upstream,
    _config_dir: tempfile::TempDir,
}

async fn one_route_edge() -> OneRouteEdge {
    let upstream = demo_upstream("a", &[]).await;
    let (port, admin_port) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("edge.toml");
    let text = format!(
        "[server]\nlisten = [\"127.0.0.1:{port}\"]\nthreads = 1\n[admin]\nlisten = \"127.0.0.1:{admin_port}\"\n{}",
        route(&[&upstream], "")
    );
    std::fs::write(&config, text).unwrap();
    let process = Process::spawn("mcp-edge", Command::new(bin()).args(["run", "--config"]).arg(&config));
    wait_listening(port, &process).await;
    OneRouteEdge { port, admin_port, process, _upstream: upstream, _config_dir: dir }
}

/// A listener address another process holds stops mcp-edge at once with its name (Pingora
/// alone retries for 30 s, then panics without exiting).
#[test]
fn run_stops_at_once_when_a_listener_address_is_taken() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("edge.toml");
    let text = format!(
        "[server]\nlisten = [\"127.0.0.1:{port}\"]\n[admin]\nlisten = \"\"\n[[route]]\npath = \"/mcp\"\nupstreams = [\"http://127.0.0.1:1/mcp\"]\n"
    );
    std::fs::write(&config, text).unwrap();
    let mut edge = Process::spawn("mcp-edge", Command::new(bin()).args(["run", "--config"]).arg(&config));
    let code = edge.wait_exit(Duration::from_secs(5));
    let log = edge.log();
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains(&format!("cannot listen on 127.0.0.1:{port}")), "{log}");
    drop(taken);
}

/// An admin token shorter than 16 characters guards nothing worth the name: `check` and the
/// start refuse it, naming the file.
#[test]
fn a_short_admin_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("admin.token");
    std::fs::write(&token, "short-token\n").unwrap();
    let config = dir.path().join("edge.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = [\"127.0.0.1:{}\"]\n[admin]\nlisten = \"127.0.0.1:{}\"\ntoken_file = {:?}\n\
             [[route]]\npath = \"/mcp\"\nupstreams = [\"http://127.0.0.1:1/mcp\"]\n",
            free_port(),
            free_port(),
            token.display().to_string()
        ),
    )
    .unwrap();
    for command in ["check", "run"] {
        let output = std::process::Command::new(bin()).args([command, "--config"]).arg(&config).output().unwrap();
        let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert_eq!(output.status.code(), Some(1), "{command}: {said}");
        assert!(said.contains("at least 16 characters") && said.contains("admin.token"), "{command}: {said}");
    }
}

/// The demo a newcomer starts shows where the dashboard is, and serves it.
#[tokio::test]
async fn the_demo_starts_its_dashboard_and_says_where() {
    let (port, upstream_port, admin_port) = (free_port(), free_port(), free_port());
    let mut command = Command::new(bin());
    command.args(["demo", "--port", &port.to_string(), "--upstream-port", &upstream_port.to_string()]);
    command.args(["--admin-port", &admin_port.to_string()]);
    let demo = Process::spawn("mcp-edge demo", &mut command);
    wait_listening(port, &demo).await;
    wait_listening(admin_port, &demo).await;
    let log = demo.log();
    let admin = format!("127.0.0.1:{admin_port}");
    assert!(log.contains(&format!("dashboard:         http://{admin}/")), "{log}");
    assert!(log.contains(&format!("mcp-edge status --admin {admin}")), "{log}");
    let page = reqwest::get(format!("http://{admin}/")).await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("<html"), "the dashboard page");
    let status = Command::new(bin()).args(["status", "--admin", &admin]).output().unwrap();
    assert!(status.status.success(), "{status:?}");
    assert!(String::from_utf8_lossy(&status.stdout).contains("demo"), "{status:?}");
}
