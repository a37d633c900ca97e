//! Real processes on ephemeral ports: the mcp-edge binary, demo upstreams, SDK peers.
//! Every process is killed when its handle drops, so a failing test leaves nothing behind.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use serde_json::{Value, json};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_mcp-edge")
}

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// A port no other test of this run will get. Ports come from a counter below Linux's
/// ephemeral range (32768+), which the kernel never hands out on its own: a port freed here and
/// bound a moment later by a slow-starting child (the Python server takes a second or two)
/// cannot meanwhile go to another test.
pub fn free_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let _ =
        NEXT.compare_exchange(0, 20_000 + (std::process::id() % 600) as u16 * 20, Ordering::SeqCst, Ordering::SeqCst);
    loop {
        let port = NEXT.fetch_add(1, Ordering::SeqCst);
        assert!(port < 32_768, "ran out of test ports");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A child process, killed on drop. Its stderr/stdout go to a log file shown on failure.
pub struct Process {
    child: Option<Child>,
    pub name: String,
    log: tempfile::NamedTempFile,
}

impl Process {
    pub fn spawn(name: &str, command: &mut Command) -> Process {
        let log = tempfile::NamedTempFile::new().expect("log file");
        // Both streams append: each write lands at the end, none over the other's.
        let appending = || std::fs::OpenOptions::new().append(true).open(log.path()).expect("log");
        let child = command
            .stdin(Stdio::null())
            .stdout(appending())
            .stderr(appending())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Process { child: Some(child), name: name.to_string(), log }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill").arg(format!("-{signal}")).arg(self.pid().to_string()).status().expect("kill");
        assert!(status.success(), "kill -{signal} {} failed", self.name);
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits for the process to exit by itself; returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut()?;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("----- log of {} -----\n{}", self.name, self.log());
        }
        self.kill();
    }
}

pub async fn wait_listening(port: u16, process: &Process) {
    wait_listening_at("127.0.0.1", port, process).await
}

/// Waits until `process` listens on `ip:port`.
pub async fn wait_listening_at(ip: &str, port: u16, process: &Process) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if tokio::net::TcpStream::connect((ip, port)).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{} did not listen on {port}:\n{}", process.name, process.log());
}

/// A demo MCP upstream (`mcp-edge upstream`).
pub struct Upstream {
    pub process: Process,
    pub port: u16,
}

impl Upstream {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }
}

pub async fn demo_upstream(name: &str, extra: &[&str]) -> Upstream {
    demo_upstream_on(free_port(), name, extra).await
}

/// A demo upstream on a given port (e.g. to replace one that was stopped).
pub async fn demo_upstream_on(port: u16, name: &str, extra: &[&str]) -> Upstream {
    demo_upstream_at("127.0.0.1", port, name, extra).await
}

/// A demo upstream on `ip:port` (replicas of one name: other loopback addresses, one port).
pub async fn demo_upstream_at(ip: &str, port: u16, name: &str, extra: &[&str]) -> Upstream {
    let process = Process::spawn(
        &format!("upstream {name}"),
        Command::new(bin()).args(["upstream", "--listen", &format!("{ip}:{port}"), "--name", name]).args(extra),
    );
    wait_listening_at(ip, port, &process).await;
    Upstream { process, port }
}

/// A running mcp-edge with a config file it can be told to reload.
pub struct Proxy {
    pub process: Process,
    pub port: u16,
    pub admin_port: u16,
    pub config_path: PathBuf,
    sections: String,
    _dir: tempfile::TempDir,
}

impl Proxy {
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn mcp(&self) -> Mcp {
        Mcp::new(&self.url("/mcp"))
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    /// Writes a new config (same listeners and sections) and sends SIGHUP.
    pub fn reload_with(&self, routes: &str) {
        let text = config_text(self.port, self.admin_port, "", &self.sections, routes);
        std::fs::write(&self.config_path, text).expect("write config");
        self.process.signal("HUP");
    }

    /// Stops this mcp-edge (SIGTERM) and starts another on the same port and config.
    pub async fn restart(&mut self) {
        self.process.signal("TERM");
        let code = self.process.wait_exit(Duration::from_secs(15));
        let log = self.process.log();
        assert_eq!(code, Some(0), "mcp-edge did not stop cleanly on SIGTERM:\n{log}");
        // A panic while stopping (or before) is a bug even when the exit code hides it.
        assert!(!log.contains("panicked"), "mcp-edge panicked:\n{log}");
        self.process = spawn_proxy(&self.config_path);
        wait_listening(self.port, &self.process).await;
    }
}

fn config_text(port: u16, admin_port: u16, server_extra: &str, sections: &str, routes: &str) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:{port}\"]\nthreads = 1\n{server_extra}\n\
         [admin]\nlisten = \"127.0.0.1:{admin_port}\"\n\n{sections}\n{routes}"
    )
}

fn spawn_proxy(config_path: &Path) -> Process {
    let mut command = Command::new(bin());
    // The log filter an operator gets (mcp-edge's default), whatever the test's environment says.
    command.args(["run", "--config"]).arg(config_path).env_remove("RUST_LOG");
    Process::spawn("mcp-edge", &mut command)
}

/// A route on `/mcp` in front of `upstreams`, with extra route keys.
pub fn route(upstreams: &[&Upstream], extra: &str) -> String {
    let urls: Vec<String> = upstreams.iter().map(|u| format!("{:?}", u.url())).collect();
    format!("[[route]]\npath = \"/mcp\"\nupstreams = [{}]\n{extra}\n", urls.join(", "))
}

pub async fn proxy(routes: &str) -> Proxy {
    proxy_with(routes, "").await
}

/// Starts mcp-edge with `[server]` extras (e.g. `max_body`) and the given routes.
pub async fn proxy_with(routes: &str, server_extra: &str) -> Proxy {
    proxy_full(routes, server_extra, |_| String::new()).await
}

/// Starts mcp-edge with `[server]` extras, other sections (made from the config directory,
/// e.g. a `[cache]` with a disk path inside it) and the given routes.
pub async fn proxy_full(routes: &str, server_extra: &str, sections: impl FnOnce(&Path) -> String) -> Proxy {
    let (port, admin_port) = (free_port(), free_port());
    let dir = tempfile::tempdir().expect("tempdir");
    let sections = sections(dir.path());
    let config_path = dir.path().join("mcp-edge.toml");
    std::fs::write(&config_path, config_text(port, admin_port, server_extra, &sections, routes)).expect("write config");
    let process = spawn_proxy(&config_path);
    wait_listening(port, &process).await;
    wait_listening(admin_port, &process).await;
    Proxy { process, port, admin_port, config_path, sections, _dir: dir }
}

/// An HTTP answer, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

/// The `x-cache` header of an answer (`(none)` when missing).
pub fn x_cache(reply: &Reply) -> &str {
    reply.header("x-cache").unwrap_or("(none)")
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The JSON-RPC response in the body, whether sent as JSON or as SSE events.
    pub fn json(&self) -> Value {
        if self.header("content-type").is_some_and(|c| c.starts_with("text/event-stream")) {
            return sse_messages(&self.body)
                .into_iter()
                .find(|m| m.get("result").is_some() || m.get("error").is_some())
                .unwrap_or_else(|| panic!("no response event in SSE body {:?}", self.body));
        }
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    /// The text of the first content block of a tools/call result.
    pub fn tool_text(&self) -> String {
        let json = self.json();
        json["result"]["content"][0]["text"].as_str().unwrap_or_else(|| panic!("no tool text in {json}")).to_string()
    }
}

/// The JSON messages of an SSE body (`data:` lines, joined per event).
pub fn sse_messages(body: &str) -> Vec<Value> {
    body.replace("\r\n", "\n")
        .split("\n\n")
        .filter_map(|event| {
            let data: Vec<&str> =
                event.lines().filter_map(|l| l.strip_prefix("data:")).map(|d| d.trim_start()).collect();
            (!data.is_empty()).then(|| serde_json::from_str(&data.join("\n")).ok()).flatten()
        })
        .collect()
}

/// A small MCP client over reqwest for both eras.
#[derive(Clone)]
pub struct Mcp {
    pub client: reqwest::Client,
    pub url: String,
}

impl Mcp {
    pub fn new(url: &str) -> Mcp {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
        Mcp { client, url: url.to_string() }
    }

    pub async fn post(&self, body: impl Into<reqwest::Body>, headers: &[(&str, &str)]) -> Reply {
        read_reply(self.post_streaming(body, headers).await).await
    }

    /// A POST whose answer is read by the caller as it streams.
    pub async fn post_streaming(&self, body: impl Into<reqwest::Body>, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut request = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(body).send().await.expect("request sent")
    }

    /// A stateless-era (2026-07-28) request with correct mirrored headers.
    pub async fn stateless(&self, method: &str, params: Value, extra: &[(&str, &str)]) -> Reply {
        let (body, name) = stateless_body(method, params, json!(1));
        let mut headers = vec![("mcp-protocol-version", "2026-07-28"), ("mcp-method", method)];
        if let Some(name) = name.as_deref() {
            headers.push(("mcp-name", name));
        }
        headers.extend_from_slice(extra);
        self.post(body, &headers).await
    }

    /// Initializes a handshake-era session; returns the session id the client sees.
    pub async fn initialize(&self) -> String {
        let reply = self
            .post(
                json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                    "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "e2e", "version": "0"}}})
                .to_string(),
                &[],
            )
            .await;
        assert_eq!(reply.status, 200, "initialize failed: {reply:?}");
        let session = reply.header("mcp-session-id").expect("session id").to_string();
        let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string();
        let ack = self.post(initialized, &[("mcp-session-id", &session), ("mcp-protocol-version", "2025-11-25")]).await;
        assert_eq!(ack.status, 202, "notifications/initialized: {ack:?}");
        session
    }

    /// Opens the handshake-era server-to-client stream (GET) of `session`.
    pub async fn open_stream(&self, session: &str, extra: &[(&str, &str)]) -> reqwest::Response {
        let mut request = self
            .client
            .get(&self.url)
            .header("accept", "text/event-stream")
            .header("mcp-session-id", session)
            .header("mcp-protocol-version", "2025-11-25");
        for (name, value) in extra {
            request = request.header(*name, *value);
        }
        request.send().await.expect("GET stream")
    }

    /// A handshake-era request within `session`.
    pub async fn in_session(&self, session: &str, id: u64, method: &str, params: Value) -> Reply {
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string();
        self.post(body, &[("mcp-session-id", session), ("mcp-protocol-version", "2025-11-25")]).await
    }
}

pub async fn read_reply(response: reqwest::Response) -> Reply {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.text().await.expect("body");
    Reply { status, headers, body }
}

/// The body of a 2026-07-28 request and its `Mcp-Name` value (when the method has one).
pub fn stateless_body(method: &str, mut params: Value, id: Value) -> (String, Option<String>) {
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "e2e", "version": "0"},
        "io.modelcontextprotocol/clientCapabilities": {},
    });
    let name = match method {
        "resources/read" => params["uri"].as_str().map(str::to_string),
        "tools/call" | "prompts/get" => params["name"].as_str().map(str::to_string),
        _ => None,
    };
    (json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string(), name)
}

/// Reads a resource in the stateless era with an optional Authorization; returns the reply.
pub async fn read(mcp: &Mcp, uri: &str, authorization: Option<&str>) -> Reply {
    let headers: Vec<(&str, &str)> = authorization.map(|a| ("authorization", a)).into_iter().collect();
    mcp.stateless("resources/read", json!({"uri": uri}), &headers).await
}

/// The value of `sample` (name and labels, the labels in the exporter's order) in a
/// Prometheus text exposition.
pub fn sample_value(text: &str, sample: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' '))
        .map(|value| value.parse().expect("a sample value"))
}

/// The proxy's current value of `sample`, 0 when it has not exported it.
pub async fn metric(proxy: &Proxy, sample: &str) -> f64 {
    let text = reqwest::get(proxy.admin_url("/metrics")).await.unwrap().text().await.unwrap();
    sample_value(&text, sample).unwrap_or(0.0)
}

/// How many `resources/read` the demo upstream answered (asked directly, not via the proxy).
pub async fn upstream_reads(upstream: &Upstream) -> u64 {
    let direct = Mcp::new(&upstream.url());
    let reply = direct.stateless("tools/call", json!({"name": "reads", "arguments": {}}), &[]).await;
    reply.tool_text().parse().expect("a count")
}

/// Calls the `whoami` tool (stateless era): the name of the upstream that answered.
pub async fn whoami(mcp: &Mcp) -> String {
    let reply = mcp.stateless("tools/call", json!({"name": "whoami", "arguments": {}}), &[]).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.tool_text()
}

pub use crate::raw::*;
