//! A small, fast MCP server speaking both protocol eras: the upstream of `mcp-edge demo`, and
//! the in-process mock upstream of the end-to-end tests and benchmarks.
//!
//! - Handshake era: `initialize` mints an `Mcp-Session-Id`; later requests must carry it
//!   (unknown → 404, missing → 400); POSTs are answered with SSE (or JSON with `--json`);
//!   GET opens a server-to-client SSE stream; DELETE ends the session.
//! - Stateless era (`MCP-Protocol-Version` ≥ 2026-07-28): no sessions; mirrored headers are
//!   checked; results carry `resultType`, and cacheable ones `ttlMs`/`cacheScope`.
//!
//! Resources: `demo://docs/{n}`, `demo://clock` (the time), `demo://me` (echoes the caller's
//! `Authorization`), `demo://account` (a public "please log in" without `Authorization`, the
//! caller's private account with one), `demo://slow` (answers after 500 ms), `demo://versioned/{name}` (shows a
//! version the `touch` tool bumps), `demo://kib/{n}` (1 KiB of text, for benchmarks),
//! `demo://large/{k}` (`k` KiB of text, at most 6 MiB: answers larger than a socket takes at once),
//! `demo://cache-control/{directives}` (answered with that HTTP `Cache-Control`),
//! `demo://vary/{names}` (answered with that HTTP `Vary`),
//! `demo://set-cookie` (answered with a `Set-Cookie`).
//! Tools: `echo`, `add` (read-only), `whoami` (the server's name), `reads` (how many
//! `resources/read` it served), `request_headers` (what arrived), `sleep {ms}`,
//! `slow_events {delay_ms}` (an SSE progress event, a pause, then the result), `touch {uri}`
//! (bumps the version; its SSE answer carries `notifications/resources/updated` for `uri`),
//! `bump {link?}` (bumps the version silently; its result names `link` as a `resource_link`),
//! `retire_cursors` (`resources/list` refuses `p2`, `p3` from then on and pages with `q2`, `q3`),
//! `ask_client` (handshake era: asks the client `elicitation/create` on the session's GET
//! stream, then answers). `resources/list` pages through `cursor` `p2`, `p3` (`nextCursor`).
//!
//! With `subscriptions` (`--subscriptions`) it declares `resources.subscribe` and `listChanged`
//! and serves `resources/subscribe` (notifications on the session's GET stream) and
//! `subscriptions/listen` (see `subscriptions`); `touch` then tells the subscribers of its `uri`,
//! `list_changed {kind}` tells of a list change, and `subscriptions` reports who subscribed to
//! what. Without it, it declares neither and answers those methods "method not found".

use std::collections::HashSet;
use std::convert::Infallible;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use mcp_edge_policies::headers::{Mirrored, check_mirrored, is_stateless_era};
use mcp_edge_policies::jsonrpc;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

mod content;
mod responses;
mod subscriptions;

use content::*;
use responses::*;

/// How a demo upstream behaves: `mcp-edge upstream`'s options (their doc comments are its
/// `--help`), whose defaults are [`DemoOptions::default`].
#[derive(Debug, Clone, clap::Args)]
pub struct DemoOptions {
    /// Reported by its `whoami` tool.
    // And in `serverInfo`.
    #[arg(long, default_value = "demo")]
    pub name: String,
    /// Answer handshake-era POSTs with JSON instead of SSE.
    #[arg(long)]
    pub json: bool,
    /// `ttlMs` on cacheable stateless-era results.
    #[arg(long, default_value_t = 60_000)]
    pub ttl_ms: u64,
    /// `cacheScope` on cacheable stateless-era results (`none`: no hints at all).
    #[arg(long, default_value = "public")]
    pub scope: String,
    /// Answer every POST with this HTTP status (a broken replica).
    // For failover tests.
    #[arg(long)]
    pub fail_status: Option<u16>,
    /// Put `ttlMs`/`cacheScope` on handshake-era results too.
    // SDK servers do not; a server may.
    #[arg(long)]
    pub hint_handshake: bool,
    /// Put `_meta.fetchedFor` (Authorization and session) on every result.
    // So tests can tell an answer served to anybody else.
    #[arg(long)]
    pub echo_caller: bool,
    /// Wait this long before answering each POST: `MS`, or `MIN-MAX` for a uniform draw (an
    /// upstream doing real work, for benchmarks).
    #[arg(long, value_parser = parse_latency, default_value = "0")]
    pub latency_ms: (u64, u64),
    /// Declare and serve change subscriptions (`resources/subscribe`, `subscriptions/listen`).
    #[arg(long)]
    pub subscriptions: bool,
}

impl Default for DemoOptions {
    /// The command line's defaults (`mcp-edge upstream` with no options): written once, there.
    fn default() -> Self {
        use clap::{Args, FromArgMatches};
        let command = DemoOptions::augment_args(clap::Command::new("upstream"));
        let matches = command.try_get_matches_from(["upstream"]).expect("no options is valid");
        DemoOptions::from_arg_matches(&matches).expect("the defaults are valid")
    }
}

/// `MS` or `MIN-MAX` (milliseconds).
fn parse_latency(text: &str) -> Result<(u64, u64), String> {
    let number = |n: &str| n.trim().parse::<u64>().map_err(|_| format!("{n:?} is not a number of milliseconds"));
    let (min, max) = match text.split_once('-') {
        Some((min, max)) => (number(min)?, number(max)?),
        None => (number(text)?, number(text)?),
    };
    if min > max {
        return Err(format!("{min}-{max}: the minimum is above the maximum"));
    }
    Ok((min, max))
}

struct State {
    options: DemoOptions,
    sessions: Mutex<HashSet<String>>,
    /// The open GET stream of each session that has one (for `ask_client`).
    streams: Mutex<std::collections::HashMap<String, mpsc::Sender<Bytes>>>,
    reads: AtomicU64,
    random: std::collections::hash_map::RandomState,
    counter: AtomicU64,
    /// Bumped by the `touch` tool: `demo://versioned/*` resources show it.
    version: AtomicU64,
    /// The `retire_cursors` tool was called: `resources/list` cursors change.
    cursors_retired: std::sync::atomic::AtomicBool,
    /// Who subscribed to changes (with `subscriptions`).
    subscribers: subscriptions::Subscribers,
}

impl State {
    fn new_session_id(&self) -> String {
        let mut hasher = self.random.build_hasher();
        hasher.write_u64(self.counter.fetch_add(1, Ordering::Relaxed));
        let mut second = self.random.build_hasher();
        second.write_u64(hasher.finish());
        format!("{:016x}{:016x}", hasher.finish(), second.finish())
    }
}

type DemoBody = Pin<Box<dyn Body<Data = Bytes, Error = Infallible> + Send>>;

/// Serves the demo MCP endpoint (`/mcp`) on `listener` until the process ends.
pub async fn serve(listener: TcpListener, options: DemoOptions) {
    let state = Arc::new(State {
        options,
        sessions: Mutex::new(HashSet::new()),
        streams: Mutex::new(std::collections::HashMap::new()),
        reads: AtomicU64::new(0),
        random: std::collections::hash_map::RandomState::new(),
        counter: AtomicU64::new(0),
        version: AtomicU64::new(1),
        cursors_retired: Default::default(),
        subscribers: subscriptions::Subscribers::default(),
    });
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(state, req).await) }
            });
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

/// Binds `addr` and serves on a runtime of its own in a background thread.
pub fn spawn_in_thread(addr: SocketAddr, options: DemoOptions) -> std::io::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    std::thread::Builder::new().name("demo-upstream".into()).spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("demo upstream runtime");
        runtime.block_on(async move {
            let listener = TcpListener::from_std(listener).expect("demo upstream listener");
            serve(listener, options).await
        });
    })?;
    Ok(bound)
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Response<DemoBody> {
    if req.uri().path() != "/mcp" {
        return plain(StatusCode::NOT_FOUND, "not found");
    }
    let version = header(&req, "mcp-protocol-version").unwrap_or_default();
    let stateless = is_stateless_era(&version);
    match *req.method() {
        hyper::Method::POST => post(state, req, stateless).await,
        hyper::Method::GET if !stateless => get_stream(state, &req),
        hyper::Method::DELETE if !stateless => delete(state, &req),
        hyper::Method::OPTIONS => preflight(&req),
        _ => plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
    }
}

async fn post(state: Arc<State>, req: Request<Incoming>, stateless: bool) -> Response<DemoBody> {
    let (min, max) = state.options.latency_ms;
    if max > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(min + draw() % (max - min + 1))).await;
    }
    if let Some(status) = state.options.fail_status.and_then(|s| StatusCode::from_u16(s).ok()) {
        return json_error(status, None, -32603, "this replica is broken on purpose", None);
    }
    let session = header(&req, "mcp-session-id");
    let seen_headers = describe_headers(&req);
    let mirrored = (header(&req, "mcp-protocol-version"), header(&req, "mcp-method"), header(&req, "mcp-name"));
    let body = match Limited::new(req.into_body(), 16 << 20).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return plain(StatusCode::PAYLOAD_TOO_LARGE, "body too large"),
    };
    let message = match jsonrpc::parse(&body) {
        Ok(m) => m,
        Err(e) => {
            return json_error(StatusCode::BAD_REQUEST, e.id.as_deref(), e.code, &e.message, None);
        }
    };
    match message.kind {
        jsonrpc::Kind::Request => {}
        // As the Python SDK: batching left MCP after 2025-03-26.
        jsonrpc::Kind::Batch => {
            let refusal = "Invalid Request: batches are not supported (MCP 2025-06-18 and later)";
            return json_error(StatusCode::BAD_REQUEST, None, jsonrpc::codes::INVALID_REQUEST, refusal, None);
        }
        jsonrpc::Kind::Notification | jsonrpc::Kind::Response => {
            return empty(StatusCode::ACCEPTED, session.as_deref());
        }
    }
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let id = message.id.clone();
    let method = message.method.clone().unwrap_or_default();
    let call = Call { method: &method, params: &request["params"], seen_headers: &seen_headers };
    if stateless {
        let headers = Mirrored {
            protocol_version: mirrored.0.as_deref(),
            method: mirrored.1.as_deref(),
            name: mirrored.2.as_deref(),
        };
        if let Err(reason) = check_mirrored(headers, &message) {
            return json_error(StatusCode::BAD_REQUEST, id.as_deref(), jsonrpc::codes::HEADER_MISMATCH, &reason, None);
        }
        return answer(state, call, id, None, true).await;
    }
    let session = if method == "initialize" {
        let new_id = state.new_session_id();
        state.sessions.lock().unwrap().insert(new_id.clone());
        new_id
    } else {
        match session {
            None => {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    id.as_deref(),
                    -32000,
                    "Bad Request: missing session",
                    None,
                );
            }
            Some(s) if !state.sessions.lock().unwrap().contains(&s) => {
                return json_error(StatusCode::NOT_FOUND, id.as_deref(), -32001, "Session not found", None);
            }
            Some(s) => s,
        }
    };
    answer(state, call, id, Some(session), false).await
}

/// One request as the demo server sees it.
#[derive(Clone, Copy)]
struct Call<'a> {
    method: &'a str,
    params: &'a Value,
    /// The request's headers, reported by the `request_headers` tool.
    seen_headers: &'a str,
}

/// Answers one request, as JSON or SSE per the era and options.
async fn answer(
    state: Arc<State>,
    call: Call<'_>,
    id: Option<String>,
    session: Option<String>,
    stateless: bool,
) -> Response<DemoBody> {
    let (method, params) = (call.method, call.params);
    let id = id.unwrap_or_else(|| "null".into());
    if method == "tools/call" && params["name"] == "slow_events" {
        let delay = Duration::from_millis(params["arguments"]["delay_ms"].as_u64().unwrap_or(1000));
        return slow_events(id, delay, session);
    }
    if method == "tools/call" && params["name"] == "touch" {
        return touch(&state, params["arguments"]["uri"].as_str().unwrap_or_default(), id, session);
    }
    if let Some(answered) = subscription_call(&state, call, &id, session.as_deref(), stateless) {
        return answered;
    }
    if method == "resources/read" && params["uri"] == "demo://slow" {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if method == "tools/call" && params["name"] == "ask_client" {
        ask_client(&state, session.as_deref()).await;
    }
    if method == "tools/call" && params["name"] == "sleep" {
        let ms = params["arguments"]["ms"].as_u64().unwrap_or(1000);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let outcome = dispatch(&state, call);
    let (status, text) = match outcome {
        Ok(mut result) => {
            if stateless || state.options.hint_handshake {
                let account = method == "resources/read" && params["uri"] == "demo://account";
                let signed_in = call.seen_headers.lines().any(|l| l.starts_with("authorization: "));
                let scope = match (account, signed_in) {
                    (true, true) => "private",
                    (true, false) => "public",
                    (false, _) => state.options.scope.as_str(),
                };
                stamp_cache_hints(state.options.ttl_ms, scope, method, &mut result);
            }
            if state.options.echo_caller {
                let authorization = call.seen_headers.lines().find_map(|l| l.strip_prefix("authorization: "));
                result["_meta"]["fetchedFor"] = json!({"authorization": authorization, "session": session});
            }
            (StatusCode::OK, format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{result}}}"#))
        }
        Err((code, message)) => {
            let status = if stateless && code == -32601 { StatusCode::NOT_FOUND } else { StatusCode::OK };
            (status, jsonrpc::error_body(Some(&id), code, &message))
        }
    };
    let mut response = if stateless || state.options.json || status != StatusCode::OK {
        json_response(status, text, session.as_deref())
    } else {
        sse_headers(full(format!("event: message\ndata: {text}\n\n")), session.as_deref())
    };
    if method == "resources/read" {
        // The resources answered with HTTP headers of their own (see `content::read_resource`).
        let (uri, headers) = (params["uri"].as_str().unwrap_or_default(), response.headers_mut());
        if let Some(Ok(value)) = uri.strip_prefix("demo://cache-control/").map(str::parse) {
            headers.insert("cache-control", value);
        }
        if let Some(Ok(value)) = uri.strip_prefix("demo://vary/").map(str::parse) {
            headers.insert("vary", value);
        }
        if uri == "demo://set-cookie" {
            headers.insert("set-cookie", "demo=1; Path=/; HttpOnly".parse().unwrap());
        }
    }
    response
}

/// The methods and tools of change subscriptions (`None`: not one of them, or subscriptions are
/// off: the ordinary dispatch answers "method not found" or "unknown tool").
fn subscription_call(
    state: &Arc<State>,
    call: Call<'_>,
    id: &str,
    session: Option<&str>,
    stateless: bool,
) -> Option<Response<DemoBody>> {
    let (method, params) = (call.method, call.params);
    let subscribers = &state.subscribers;
    match method {
        "initialize" => subscribers.initializes.fetch_add(1, Ordering::Relaxed),
        "server/discover" => subscribers.discovers.fetch_add(1, Ordering::Relaxed),
        _ => 0,
    };
    let credential = call.seen_headers.lines().any(|l| l.starts_with("authorization: ") || l.starts_with("cookie: "));
    if credential && matches!(method, "server/discover" | "subscriptions/listen" | "resources/subscribe") {
        subscribers.credentialed.fetch_add(1, Ordering::Relaxed);
    }
    let report = (method, params["name"].as_str()) == ("tools/call", Some("subscriptions"));
    if !state.options.subscriptions && !report {
        return None;
    }
    let result = match (method, params["name"].as_str()) {
        ("subscriptions/listen", _) if stateless => return Some(subscriptions::Subscribers::listen(state, id, params)),
        ("resources/subscribe" | "resources/unsubscribe", _) if !stateless => {
            let uri = params["uri"].as_str().unwrap_or_default();
            subscribers.subscribe(session.unwrap_or_default(), uri, method == "resources/subscribe");
            json!({})
        }
        ("tools/call", Some("list_changed")) => {
            subscribers.list_changed(&state.streams, params["arguments"]["kind"].as_str().unwrap_or_default());
            json!({"content": [{"type": "text", "text": "announced"}]})
        }
        ("tools/call", Some("subscriptions")) => {
            json!({"content": [{"type": "text", "text": subscribers.report().to_string()}]})
        }
        _ => return None,
    };
    let text = format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{result}}}"#);
    Some(json_response(StatusCode::OK, text, session))
}

/// Bumps the version of `demo://versioned/*` and answers with SSE: a
/// `notifications/resources/updated` event for `uri`, then the result.
fn touch(state: &State, uri: &str, id: String, session: Option<String>) -> Response<DemoBody> {
    let version = state.version.fetch_add(1, Ordering::Relaxed) + 1;
    state.subscribers.updated(&state.streams, uri);
    let note = json!({"jsonrpc": "2.0", "method": "notifications/resources/updated", "params": {"uri": uri}});
    let result = json!({"content": [{"type": "text", "text": format!("version {version}")}]});
    let body = format!(
        "event: message\ndata: {note}\n\nevent: message\ndata: {{\"jsonrpc\":\"2.0\",\"id\":{id},\"result\":{result}}}\n\n"
    );
    sse_headers(full(body), session.as_deref())
}

/// An SSE answer whose events are sent apart in time: the proxy must flush each at once.
fn slow_events(id: String, delay: Duration, session: Option<String>) -> Response<DemoBody> {
    let (sender, body) = channel_body();
    tokio::spawn(async move {
        let progress = r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"slow","progress":1,"total":2}}"#;
        let _ = sender.send(Bytes::from(format!("event: message\ndata: {progress}\n\n"))).await;
        tokio::time::sleep(delay).await;
        let result =
            format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{{"content":[{{"type":"text","text":"done"}}]}}}}"#);
        let _ = sender.send(Bytes::from(format!("event: message\ndata: {result}\n\n"))).await;
    });
    sse_headers(body, session.as_deref())
}

/// The handshake era's server-to-client stream. Its first event echoes the `Last-Event-ID`
/// the client sent (so tests can see it crossed the proxy); then comments every second.
fn get_stream(state: Arc<State>, req: &Request<Incoming>) -> Response<DemoBody> {
    let Some(session) = header(req, "mcp-session-id") else {
        return json_error(StatusCode::BAD_REQUEST, None, -32000, "Bad Request: missing session", None);
    };
    if !state.sessions.lock().unwrap().contains(&session) {
        return json_error(StatusCode::NOT_FOUND, None, -32001, "Session not found", None);
    }
    let last_event_id = header(req, "last-event-id").unwrap_or_default();
    let (sender, body) = channel_body();
    state.streams.lock().unwrap().insert(session.clone(), sender.clone());
    tokio::spawn(async move {
        let hello = json!({"jsonrpc": "2.0", "method": "notifications/message",
            "params": {"level": "info", "data": {"last_event_id": last_event_id}}});
        let mut event = format!("id: 1\nevent: message\ndata: {hello}\n\n");
        loop {
            if sender.send(Bytes::from(event)).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            event = ": keep-alive\n\n".to_string();
        }
    });
    sse_headers(body, Some(&session))
}

fn delete(state: Arc<State>, req: &Request<Incoming>) -> Response<DemoBody> {
    match header(req, "mcp-session-id") {
        Some(s) if state.sessions.lock().unwrap().remove(&s) => {
            state.subscribers.session_ended(&s);
            state.streams.lock().unwrap().remove(&s);
            empty(StatusCode::OK, None)
        }
        _ => json_error(StatusCode::NOT_FOUND, None, -32001, "Session not found", None),
    }
}

// ---------------------------------------------------------------------------------------------
// Response helpers

/// A cheap pseudo-random number (xorshift on a shared counter): latency draws need no quality.
fn draw() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static STATE: AtomicU64 = AtomicU64::new(0x9e37_79b9_7f4a_7c15);
    let mut x = STATE.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
    x ^= x << 13;
    x ^= x >> 7;
    x ^ (x << 17)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_the_command_lines() {
        let options = DemoOptions::default();
        assert_eq!((options.name.as_str(), options.ttl_ms, options.scope.as_str()), ("demo", 60_000, "public"));
        assert_eq!((options.fail_status, options.latency_ms), (None, (0, 0)));
        assert!(!(options.json || options.hint_handshake || options.echo_caller || options.subscriptions));
    }
}
