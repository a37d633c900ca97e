//! What the demo upstream serves: its resources, lists, tools and their answers.

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::{Value, json};

use super::*;

/// `scope` "none": no hints at all (the cache's defaults decide).
pub(super) fn stamp_cache_hints(ttl_ms: u64, scope: &str, method: &str, result: &mut Value) {
    let cacheable = matches!(
        method,
        "resources/read"
            | "resources/list"
            | "resources/templates/list"
            | "tools/list"
            | "prompts/list"
            | "server/discover"
    );
    if let Value::Object(map) = result {
        map.insert("resultType".into(), json!("complete"));
        if cacheable && scope != "none" {
            map.insert("ttlMs".into(), json!(ttl_ms));
            map.insert("cacheScope".into(), json!(scope));
        }
    }
}

/// What the server declares: change notifications only when it serves them.
fn capabilities(state: &State) -> Value {
    let on = state.options.subscriptions;
    json!({"resources": {"subscribe": on, "listChanged": on}, "tools": {"listChanged": on}, "prompts": {"listChanged": on}})
}

pub(super) fn dispatch(state: &State, call: Call<'_>) -> Result<Value, (i64, String)> {
    let (method, params) = (call.method, call.params);
    let name = &state.options.name;
    match method {
        "initialize" => Ok(json!({
            "protocolVersion": params["protocolVersion"].as_str().unwrap_or("2025-11-25"),
            "capabilities": capabilities(state),
            "serverInfo": {"name": name, "version": env!("CARGO_PKG_VERSION")},
        })),
        "ping" => Ok(json!({})),
        // What the server supports, as a stateless-era client first asks; `instructions` say
        // which client capabilities it was asked with (answers depend on them).
        "server/discover" => Ok(json!({
            "supportedVersions": ["2026-07-28"],
            "capabilities": capabilities(state),
            "serverInfo": {"name": name, "version": env!("CARGO_PKG_VERSION")},
            "instructions": format!("asked with {}", params["_meta"]["io.modelcontextprotocol/clientCapabilities"]),
        })),
        "resources/list" => list_page(params["cursor"].as_str(), state.cursors_retired.load(Ordering::Relaxed)),
        "resources/templates/list" => Ok(json!({"resourceTemplates": [
            {"uriTemplate": "demo://docs/{n}", "name": "doc", "mimeType": "text/plain"}
        ]})),
        "resources/read" => read_resource(state, call),
        "tools/list" => Ok(json!({"tools": tool_list()})),
        "tools/call" => call_tool(state, call),
        "prompts/list" => {
            Ok(json!({"prompts": [{"name": "greet", "arguments": [{"name": "who", "required": false}]}]}))
        }
        "prompts/get" => Ok(json!({"messages": [{"role": "user", "content": {"type": "text",
            "text": format!("Hello, {}!", params["arguments"]["who"].as_str().unwrap_or("world"))}}]})),
        _ => Err((-32601, format!("Method not found: {method}"))),
    }
}

/// `resources/list`: the first page (no cursor) lists docs 1-5 and the clock; `p2` and `p3`
/// list docs 6-10 and 11-15, each page naming the next. Once `retired` (the `retire_cursors`
/// tool), the cursors are `q2` and `q3`, and `p2` and `p3` are refused.
pub(super) fn list_page(cursor: Option<&str>, retired: bool) -> Result<Value, (i64, String)> {
    let prefix = if retired { "q" } else { "p" };
    let page = match cursor.map(|c| c.split_at_checked(1).filter(|(p, _)| *p == prefix).map(|(_, n)| n)) {
        None => 1,
        Some(Some("2")) => 2,
        Some(Some("3")) => 3,
        Some(_) => return Err((-32602, format!("Invalid cursor {:?}", cursor.unwrap_or_default()))),
    };
    let docs = (page * 5 - 4..=page * 5)
        .map(|n| json!({"uri": format!("demo://docs/{n}"), "name": format!("doc-{n}"), "mimeType": "text/plain"}));
    let clock = (page == 1).then(|| json!({"uri": "demo://clock", "name": "clock", "mimeType": "text/plain"}));
    let mut result = json!({"resources": docs.chain(clock).collect::<Vec<_>>()});
    if page < 3 {
        result["nextCursor"] = json!(format!("{prefix}{}", page + 1));
    }
    Ok(result)
}

/// Sends `elicitation/create` on the session's GET stream (if open), then lets the answer wait
/// a moment, as a server awaiting the client would.
pub(super) async fn ask_client(state: &State, session: Option<&str>) {
    let stream = session.and_then(|s| state.streams.lock().unwrap().get(s).cloned());
    if let Some(stream) = stream {
        let id = state.counter.fetch_add(1, Ordering::Relaxed);
        let ask = json!({"jsonrpc": "2.0", "id": format!("ask-{id}"), "method": "elicitation/create",
            "params": {"message": "Which colour?", "requestedSchema": {"type": "object", "properties": {}}}});
        let _ = stream.send(Bytes::from(format!("event: message\ndata: {ask}\n\n"))).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
}

pub(super) fn read_resource(state: &State, call: Call<'_>) -> Result<Value, (i64, String)> {
    let uri = call.params["uri"].as_str().unwrap_or_default();
    let caller = call.seen_headers.lines().find_map(|l| l.strip_prefix("authorization: "));
    let text = if uri == "demo://me" {
        format!("you are {}", caller.unwrap_or("anonymous"))
    } else if uri == "demo://account" {
        caller.map_or("please log in".to_string(), |who| format!("the account of {who}"))
    } else if let Some(n) = uri.strip_prefix("demo://kib/") {
        // 1 KiB of text (benchmarks).
        format!("{n:<1024}")
    } else if let Some(kib) = uri.strip_prefix("demo://large/").and_then(|k| k.parse::<usize>().ok()) {
        // Text that differs along its length, so a part lost or repeated shows.
        (0..kib.min(6 * 1024)).map(|k| format!("{k:<1023}\n")).collect()
    } else if uri == "demo://set-cookie" {
        // Answered with a `Set-Cookie` (see `answer`).
        "served with a cookie".to_string()
    } else if let Some(directives) = uri.strip_prefix("demo://cache-control/") {
        // Answered with this `Cache-Control` (see `answer`).
        format!("served with Cache-Control: {directives}")
    } else if let Some(names) = uri.strip_prefix("demo://vary/") {
        // Answered with this `Vary` (see `answer`).
        format!("served with Vary: {names}")
    } else if uri == "demo://slow" {
        "slow resource".to_string()
    } else if let Some(name) = uri.strip_prefix("demo://versioned/") {
        format!("{name} at version {}", state.version.load(Ordering::Relaxed))
    } else if uri == "demo://clock" {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        format!("{} ms since the epoch", now.as_millis())
    } else if let Some(n) = uri.strip_prefix("demo://docs/").and_then(|n| n.parse::<u32>().ok()) {
        format!("Document {n}, served by {}.", state.options.name)
    } else {
        return Err((-32602, format!("Resource {uri} not found")));
    };
    state.reads.fetch_add(1, Ordering::Relaxed);
    Ok(json!({"contents": [{"uri": uri, "mimeType": "text/plain", "text": text}]}))
}

pub(super) fn tool_list() -> Value {
    let read_only =
        json!({"readOnlyHint": true, "idempotentHint": true, "destructiveHint": false, "openWorldHint": false});
    let object = |props: Value| json!({"type": "object", "properties": props});
    json!([
        {"name": "echo", "description": "Echoes the message", "inputSchema": object(json!({"message": {"type": "string"}}))},
        {"name": "add", "description": "Adds a and b", "annotations": read_only,
         "inputSchema": object(json!({"a": {"type": "integer"}, "b": {"type": "integer"}}))},
        {"name": "whoami", "description": "Names the server that answers", "inputSchema": object(json!({}))},
        {"name": "reads", "description": "How many resources/read this server answered", "inputSchema": object(json!({}))},
        {"name": "request_headers", "description": "The request's headers as received, one per line",
         "inputSchema": object(json!({}))},
        {"name": "touch", "description": "Changes demo://versioned/* and notifies resources/updated for uri",
         "annotations": {"readOnlyHint": false, "destructiveHint": true},
         "inputSchema": object(json!({"uri": {"type": "string"}}))},
        {"name": "bump", "description": "Changes demo://versioned/* and tells nobody; names link in its result if given",
         "inputSchema": object(json!({"link": {"type": "string"}}))},
        {"name": "retire_cursors", "description": "Refuses the list cursors handed out so far; hands out others",
         "inputSchema": object(json!({}))},
        {"name": "sleep", "description": "Waits ms milliseconds", "inputSchema": object(json!({"ms": {"type": "integer"}}))},
        {"name": "slow_events", "description": "Sends a progress event, waits delay_ms, answers",
         "inputSchema": object(json!({"delay_ms": {"type": "integer"}}))},
        {"name": "ask_client", "description": "Asks the client on the session's GET stream, then answers",
         "inputSchema": object(json!({}))},
    ])
}

pub(super) fn call_tool(state: &State, call: Call<'_>) -> Result<Value, (i64, String)> {
    let (params, args) = (call.params, &call.params["arguments"]);
    let text = match params["name"].as_str().unwrap_or_default() {
        "echo" => args["message"].as_str().unwrap_or_default().to_string(),
        "add" => {
            let sum = args["a"].as_i64().unwrap_or(0) + args["b"].as_i64().unwrap_or(0);
            return Ok(
                json!({"content": [{"type": "text", "text": sum.to_string()}], "structuredContent": {"result": sum}}),
            );
        }
        "whoami" => state.options.name.clone(),
        "retire_cursors" => {
            state.cursors_retired.store(true, Ordering::Relaxed);
            "cursors p2 and p3 are refused from now on".to_string()
        }
        "bump" => {
            let version = state.version.fetch_add(1, Ordering::Relaxed) + 1;
            let mut content = vec![json!({"type": "text", "text": format!("now at version {version}")})];
            if let Some(link) = args["link"].as_str() {
                content.push(json!({"type": "resource_link", "uri": link, "name": "changed"}));
            }
            return Ok(json!({"content": content}));
        }
        "reads" => state.reads.load(Ordering::Relaxed).to_string(),
        "sleep" => "slept".to_string(),
        "ask_client" => "asked".to_string(),
        "request_headers" => call.seen_headers.to_string(),
        other => {
            return Ok(
                json!({"content": [{"type": "text", "text": format!("Unknown tool: {other}")}], "isError": true}),
            );
        }
    };
    Ok(json!({"content": [{"type": "text", "text": text}]}))
}
