//! Real MCP peers behind mcp-edge: the official Python SDK (server and client, both eras)
//! and `@modelcontextprotocol/server-everything` from npm. Results through the proxy must
//! equal results direct.

use std::path::PathBuf;
use std::process::Command;

use crate::harness::*;

pub fn python() -> PathBuf {
    let path =
        std::env::var_os("MCP_EDGE_PYTHON").map(PathBuf::from).unwrap_or_else(|| workspace().join(".venv/bin/python"));
    assert!(
        path.exists(),
        "no Python with the MCP SDK at {} (run scripts/setup-peers.sh, or set MCP_EDGE_PYTHON)",
        path.display()
    );
    path
}

pub fn peer_script(name: &str) -> PathBuf {
    workspace().join("tests/peers/python").join(name)
}

pub async fn python_server(extra: &[&str]) -> (Process, u16) {
    python_peer("python MCP server", "peer_server.py", extra).await
}

/// Starts `script` (in `tests/peers/python`) on a free port, given as its first argument.
pub async fn python_peer(name: &str, script: &str, extra: &[&str]) -> (Process, u16) {
    let port = free_port();
    let process =
        Process::spawn(name, Command::new(python()).arg(peer_script(script)).arg(port.to_string()).args(extra));
    wait_listening(port, &process).await;
    (process, port)
}

async fn everything_server() -> (Process, u16) {
    let dir = workspace().join("tests/peers/node");
    let entry = dir.join("node_modules/@modelcontextprotocol/server-everything/dist/index.js");
    assert!(entry.exists(), "server-everything is not installed (run scripts/setup-peers.sh)");
    let port = free_port();
    let process = Process::spawn(
        "server-everything",
        Command::new("node")
            .current_dir(&dir)
            .args(["-r", "./loopback.cjs"])
            .arg(entry)
            .arg("streamableHttp")
            .env("PORT", port.to_string()),
    );
    wait_listening(port, &process).await;
    (process, port)
}

/// Runs the SDK client against `url` and returns what it printed (JSON).
pub async fn sdk_client(url: &str, mode: &str, tool: &str, args: &str) -> serde_json::Value {
    let output = tokio::process::Command::new(python())
        .arg(peer_script("peer_client.py"))
        .args([url, mode, tool, args])
        .output()
        .await
        .expect("python client");
    assert!(
        output.status.success(),
        "client {mode} against {url} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("client prints JSON")
}

/// Runs `peer_mutable.py` (two clients, one writing `doc://mutable`) against `url`.
async fn mutable_rounds(url: &str, mode: &str) -> serde_json::Value {
    let output = tokio::process::Command::new(python())
        .arg(peer_script("peer_mutable.py"))
        .args([url, mode, "3"])
        .output()
        .await
        .expect("python client");
    assert!(output.status.success(), "{mode} against {url}:\n{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("client prints JSON")
}

fn upstream_route(port: u16) -> String {
    format!("[[route]]\npath = \"/mcp\"\nupstreams = [\"http://127.0.0.1:{port}/mcp\"]\n")
}

#[tokio::test]
async fn python_sdk_in_both_eras_through_the_proxy() {
    let (_server, port) = python_server(&[]).await;
    let proxy = proxy(&upstream_route(port)).await;
    let direct_url = format!("http://127.0.0.1:{port}/mcp");
    for mode in ["legacy", "2026-07-28"] {
        let direct = sdk_client(&direct_url, mode, "add", r#"{"a": 2, "b": 40}"#).await;
        let proxied = sdk_client(&proxy.url("/mcp"), mode, "add", r#"{"a": 2, "b": 40}"#).await;
        assert_eq!(proxied, direct, "mode {mode}");
        assert_eq!(proxied["call"]["text"], "42");
        assert_eq!(proxied["reads"]["docs://readme"]["text"], "hello from the static readme");
        assert_eq!(proxied["tools"]["add"]["read_only_hint"], true);
    }
}

#[tokio::test]
async fn python_sdk_json_and_stateless_server_modes() {
    for flags in [&["--json"][..], &["--json", "--stateless"][..]] {
        let (_server, port) = python_server(flags).await;
        let proxy = proxy(&upstream_route(port)).await;
        for mode in ["legacy", "2026-07-28"] {
            let direct = sdk_client(&format!("http://127.0.0.1:{port}/mcp"), mode, "add", r#"{"a": 1, "b": 2}"#).await;
            let proxied = sdk_client(&proxy.url("/mcp"), mode, "add", r#"{"a": 1, "b": 2}"#).await;
            assert_eq!(proxied, direct, "server {flags:?}, client {mode}");
            assert_eq!(proxied["call"]["text"], "3");
        }
    }
}

#[tokio::test]
async fn server_everything_through_the_proxy() {
    let (_server, port) = everything_server().await;
    let proxy = proxy(&upstream_route(port)).await;
    let direct = sdk_client(&format!("http://127.0.0.1:{port}/mcp"), "legacy", "get-sum", r#"{"a": 2, "b": 40}"#).await;
    let proxied = sdk_client(&proxy.url("/mcp"), "legacy", "get-sum", r#"{"a": 2, "b": 40}"#).await;
    assert_eq!(proxied, direct);
    assert_eq!(proxied["call"]["text"], "The sum of 2 and 40 is 42.");
    assert!(proxied["resources"].as_array().unwrap().len() >= 7, "{}", proxied["resources"]);

    // Raw: its SSE answers stream through, with the session id rewritten both ways.
    let mcp = proxy.mcp();
    let session = mcp.initialize().await;
    let reply = mcp
        .in_session(&session, 2, "tools/call", serde_json::json!({"name": "echo", "arguments": {"message": "hi"}}))
        .await;
    assert_eq!(reply.header("content-type"), Some("text/event-stream"));
    assert_eq!(reply.tool_text(), "Echo: hi");
    assert_eq!(reply.header("x-accel-buffering"), Some("no"));
}

/// A batch (which server-everything still takes on a 2025-11-25 session) reaches it whole, and
/// both answers come back in its one SSE stream with their ids, as they do direct.
#[tokio::test]
async fn a_batch_reaches_server_everything_and_both_answers_come_back() {
    let (_server, port) = everything_server().await;
    let proxy = proxy(&upstream_route(port)).await;
    let echo = |id: u64, message: &str| {
        serde_json::json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": "echo", "arguments": {"message": message}}})
    };
    let batch = serde_json::json!([echo(7, "a"), echo(8, "b")]).to_string();
    let mut answers = Vec::new();
    for mcp in [Mcp::new(&format!("http://127.0.0.1:{port}/mcp")), proxy.mcp()] {
        let session = mcp.initialize().await;
        let reply =
            mcp.post(batch.clone(), &[("mcp-session-id", &session), ("mcp-protocol-version", "2025-11-25")]).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        let mut messages: Vec<(u64, String)> = sse_messages(&reply.body)
            .iter()
            .filter_map(|m| Some((m["id"].as_u64()?, m["result"]["content"][0]["text"].as_str()?.to_string())))
            .collect();
        messages.sort();
        answers.push(messages);
    }
    assert_eq!(answers[0], vec![(7, "Echo: a".to_string()), (8, "Echo: b".to_string())]);
    assert_eq!(answers[1], answers[0], "through the proxy as direct");
}

/// The `reads` count the SDK client's last call reported (the Python server counts reads).
fn reads_reported(run: &serde_json::Value) -> &str {
    run["call"]["text"].as_str().expect("reads tool text")
}

#[tokio::test]
async fn python_sdk_public_hints_are_served_from_the_cache() {
    let (_server, port) = python_server(&["--hints", "public"]).await;
    let proxy = proxy(&upstream_route(port)).await;
    let first = sdk_client(&proxy.url("/mcp"), "2026-07-28", "reads", "{}").await;
    let second = sdk_client(&proxy.url("/mcp"), "2026-07-28", "reads", "{}").await;
    assert_eq!(reads_reported(&first), "1");
    assert_eq!(reads_reported(&second), "1", "the second pass must not reach the upstream");
    assert_eq!(first["reads"], second["reads"]);
    assert_eq!(first["tools"], second["tools"]);
}

#[tokio::test]
async fn python_sdk_unhinted_and_private_answers_reach_the_upstream() {
    for hints in ["none", "private"] {
        let (_server, port) = python_server(&["--hints", hints]).await;
        let proxy = proxy(&upstream_route(port)).await;
        sdk_client(&proxy.url("/mcp"), "2026-07-28", "reads", "{}").await;
        let second = sdk_client(&proxy.url("/mcp"), "2026-07-28", "reads", "{}").await;
        assert_eq!(reads_reported(&second), "2", "hints {hints}: no credential, nothing may be shared");
    }
}

#[tokio::test]
async fn python_sdk_private_answers_stay_with_their_credential() {
    let (_server, port) = python_server(&["--hints", "private"]).await;
    let proxy = proxy(&upstream_route(port)).await;
    let mcp = proxy.mcp();
    let outcome = |reply: &Reply| reply.header("x-cache").unwrap_or_default().to_string();
    assert_eq!(outcome(&read(&mcp, "docs://readme", Some("Bearer alice")).await), "MISS");
    let again = read(&mcp, "docs://readme", Some("Bearer alice")).await;
    assert_eq!(outcome(&again), "HIT");
    assert_eq!(again.json()["result"]["cacheScope"], "private");
    assert_eq!(outcome(&read(&mcp, "docs://readme", Some("Bearer bob")).await), "MISS", "bob never gets alice's entry");
    assert_eq!(outcome(&read(&mcp, "docs://readme", None).await), "MISS");
}

#[tokio::test]
async fn python_sdk_handshake_era_answers_are_per_session_unless_shared() {
    let (_server, port) = python_server(&["--hints", "public"]).await;
    let per_session = proxy(&upstream_route(port)).await;
    sdk_client(&per_session.url("/mcp"), "legacy", "reads", "{}").await;
    let second = sdk_client(&per_session.url("/mcp"), "legacy", "reads", "{}").await;
    assert_eq!(reads_reported(&second), "2", "handshake-era results carry no hints: private to each session");

    let (_server, port) = python_server(&[]).await;
    let shared = proxy(&format!("{}[route.policy]\nshared = true\n", upstream_route(port))).await;
    sdk_client(&shared.url("/mcp"), "legacy", "reads", "{}").await;
    let second = sdk_client(&shared.url("/mcp"), "legacy", "reads", "{}").await;
    assert_eq!(reads_reported(&second), "1", "shared = true: the operator vouches the answers are public");
}

#[tokio::test]
async fn server_everything_resource_updates_invalidate_the_cache() {
    let (_server, port) = everything_server().await;
    let proxy = proxy(&upstream_route(port)).await;
    let mcp = proxy.mcp();
    let session = mcp.initialize().await;
    let uri = "demo://resource/static/document/architecture.md";
    let read_it = |id: u64| {
        let (mcp, session) = (mcp.clone(), session.clone());
        async move { mcp.in_session(&session, id, "resources/read", serde_json::json!({"uri": uri})).await }
    };
    assert_eq!(read_it(1).await.header("x-cache"), Some("MISS"));
    assert_eq!(read_it(2).await.header("x-cache"), Some("HIT"));

    // Subscribe, open the server-to-client stream, and have the server send updates.
    let subscribed = mcp.in_session(&session, 3, "resources/subscribe", serde_json::json!({"uri": uri})).await;
    assert_eq!(subscribed.status, 200);
    let stream = mcp.open_stream(&session, &[]).await;
    assert_eq!(stream.status(), 200);
    let toggle = serde_json::json!({"name": "toggle-subscriber-updates", "arguments": {}});
    assert_eq!(mcp.in_session(&session, 4, "tools/call", toggle).await.status, 200);
    let mut events = stream.bytes_stream();
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    while !seen.contains("notifications/resources/updated") {
        let chunk = tokio::time::timeout_at(deadline, futures_util::StreamExt::next(&mut events))
            .await
            .expect("server-everything sends an update within 15 s")
            .expect("stream open")
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert_eq!(read_it(5).await.header("x-cache"), Some("MISS"), "the update notification invalidated the entry");
}

/// Runs `peer_side_channels.py`: `tool` called twice in one session, and per call what reached
/// the client beside the result (progress, log lines, requests for its roots).
async fn side_channels(url: &str, tool: &str, args: &str) -> serde_json::Value {
    let output = tokio::process::Command::new(python())
        .arg(peer_script("peer_side_channels.py"))
        .args([url, "legacy", tool, args, "file:///caller"])
        .output()
        .await
        .expect("python client");
    assert!(output.status.success(), "client against {url} failed:\n{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("client prints JSON")
}

/// A read-only tool's answer is cached (`readonly_tools`) unless the server sent something beside
/// it: the second call must see the same progress, log lines and roots request as the first.
#[tokio::test]
async fn python_sdk_progress_logs_and_roots_requests_reach_every_call() {
    let (_server, port) = python_server(&[]).await;
    let proxy = proxy(&format!("{}[route.policy]\nreadonly_tools = true\n", upstream_route(port))).await;
    for (tool, args) in [("countdown", r#"{"steps": 3}"#), ("caller_roots", "{}")] {
        let direct = side_channels(&format!("http://127.0.0.1:{port}/mcp"), tool, args).await;
        let proxied = side_channels(&proxy.url("/mcp"), tool, args).await;
        assert_eq!(proxied, direct, "{tool}: each call through the proxy sees what it sees direct");
        assert_eq!(proxied[0], proxied[1], "{tool}: the second call is not a stripped replay: {proxied}");
    }
    let countdown = side_channels(&proxy.url("/mcp"), "countdown", r#"{"steps": 3}"#).await;
    assert_eq!((countdown[1]["progress"].as_u64(), countdown[1]["logs"].as_u64()), (Some(3), Some(3)));
    let roots = side_channels(&proxy.url("/mcp"), "caller_roots", "{}").await;
    assert_eq!((roots[1]["roots_asked"].as_u64(), roots[1]["text"].as_str()), (Some(1), Some("file:///caller")));
    // The same route caches a read-only tool that sent nothing beside its result.
    let add = side_channels(&proxy.url("/mcp"), "add", r#"{"a": 1, "b": 1}"#).await;
    assert_eq!(add[1]["text"], "2");
    let tool_hits = r#"mcp_requests_total{cache="HIT",method="tools/call",route="/mcp",status="200"}"#;
    assert_eq!(metric(&proxy, tool_hits).await, 1.0, "add's second call, and no other, was a hit");
}

/// server-everything's `trigger-long-running-operation` is annotated read-only and idempotent;
/// annotations are hints, and its progress notifications keep its answer out of the cache.
#[tokio::test]
async fn server_everything_progress_reaches_every_call_of_a_read_only_tool() {
    let (_server, port) = everything_server().await;
    let proxy = proxy(&format!("{}[route.policy]\nreadonly_tools = true\n", upstream_route(port))).await;
    let calls =
        side_channels(&proxy.url("/mcp"), "trigger-long-running-operation", r#"{"duration": 0.3, "steps": 3}"#).await;
    for call in calls.as_array().unwrap() {
        assert_eq!(call["progress"], 3, "every call gets its progress: {calls}");
        assert_eq!(call["text"], "Long running operation completed. Duration: 0.3 seconds, Steps: 3.");
    }
    // Its quiet read-only neighbour is cached on the same route.
    let sums = side_channels(&proxy.url("/mcp"), "get-sum", r#"{"a": 2, "b": 3}"#).await;
    assert_eq!(sums[0], sums[1]);
    let tool_hits = r#"mcp_requests_total{cache="HIT",method="tools/call",route="/mcp",status="200"}"#;
    assert_eq!(metric(&proxy, tool_hits).await, 1.0, "get-sum's second call, and no other, was a hit");
}

/// A silent server (no hints, no notifications) in JSON response mode: a tool changes
/// `doc://mutable`. Through the default configuration both clients read the new text after
/// every write, as direct; with `invalidate_on_write = "none"` the other client's session
/// keeps the old text (so this test can fail).
#[tokio::test]
async fn python_sdk_silent_json_server_writes_are_seen_at_once_through_the_default_config() {
    let (_server, port) = python_server(&["--json"]).await;
    let direct_url = format!("http://127.0.0.1:{port}/mcp");
    let proxy = proxy(&upstream_route(port)).await;
    for mode in ["legacy", "2026-07-28"] {
        let direct = mutable_rounds(&direct_url, mode).await;
        let proxied = mutable_rounds(&proxy.url("/mcp"), mode).await;
        // Before and after each round's write; the first read sees what the last run left.
        let expected: Vec<serde_json::Value> = (0..3)
            .flat_map(|n: i32| [format!("text of round {}", n - 1), format!("text of round {n}")])
            .map(serde_json::Value::from)
            .collect();
        let after_the_first = |run: &serde_json::Value, who: &str| run[who].as_array().unwrap()[1..].to_vec();
        assert_eq!(after_the_first(&direct, "reader"), expected[1..], "{direct}");
        assert_eq!(after_the_first(&proxied, "reader"), expected[1..], "{mode}: the other client, through the proxy");
        assert_eq!(after_the_first(&proxied, "writer"), expected[1..], "{mode}: the writer, through the proxy");
    }
    assert!(metric(&proxy, r#"mcp_invalidations_total{cause="write",route="/mcp"}"#).await >= 3.0);

    let careless =
        super::harness::proxy(&format!("{}[route.policy]\ninvalidate_on_write = \"none\"\n", upstream_route(port)))
            .await;
    let stale = mutable_rounds(&careless.url("/mcp"), "legacy").await;
    let reader = stale["reader"].as_array().unwrap();
    assert_eq!(reader[1], reader[0], "without write invalidation the other session keeps the old text: {stale}");
}

/// Initializes a handshake-era session declaring `capabilities`; its session id.
async fn initialize_declaring(mcp: &Mcp, capabilities: serde_json::Value) -> String {
    let initialize = serde_json::json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": capabilities, "clientInfo": {"name": "e2e", "version": "0"}}});
    let reply = mcp.post(initialize.to_string(), &[]).await;
    let session = reply.header("mcp-session-id").expect("a session").to_string();
    let initialized = serde_json::json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string();
    mcp.post(initialized, &[("mcp-session-id", &session), ("mcp-protocol-version", "2025-11-25")]).await;
    session
}

/// The tools a session's `tools/list` answer names, and whether it was a hit.
async fn tools_of(mcp: &Mcp, session: &str) -> (usize, String) {
    let reply = mcp.in_session(session, 1, "tools/list", serde_json::json!({})).await;
    let messages = sse_messages(&reply.body);
    let message = messages.last().cloned().unwrap_or_else(|| reply.json());
    (message["result"]["tools"].as_array().map_or(0, Vec::len), x_cache(&reply).to_string())
}

/// server-everything lists more tools to a client declaring sampling, elicitation and roots:
/// with `shared = true` a list is shared only among sessions that declared the same.
#[tokio::test]
async fn server_everything_lists_are_shared_only_among_sessions_declaring_the_same_capabilities() {
    let (_server, port) = everything_server().await;
    let proxy = proxy(&format!("{}[route.policy]\nshared = true\n", upstream_route(port))).await;
    let mcp = proxy.mcp();
    let all = serde_json::json!({"sampling": {}, "elicitation": {}, "roots": {"listChanged": true}});
    let bare = initialize_declaring(&mcp, serde_json::json!({})).await;
    let (bare_tools, _) = tools_of(&mcp, &bare).await;
    let rich = initialize_declaring(&mcp, all.clone()).await;
    let (rich_tools, outcome) = tools_of(&mcp, &rich).await;
    assert!(rich_tools > bare_tools, "{rich_tools} tools with capabilities, {bare_tools} without");
    assert_eq!(outcome, "MISS", "another declaration, another entry");
    let bare_again = initialize_declaring(&mcp, serde_json::json!({})).await;
    assert_eq!(tools_of(&mcp, &bare_again).await, (bare_tools, "HIT".to_string()), "same declaration: shared");
    let rich_again = initialize_declaring(&mcp, all).await;
    assert_eq!(tools_of(&mcp, &rich_again).await, (rich_tools, "HIT".to_string()));
}
