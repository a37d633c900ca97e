//! The messages of the edge's own subscriptions: what it sends (no credential, no client's
//! capabilities: it declares none), what the server's capabilities let it ask for, and what an
//! event on a subscription stream means.

use serde_json::{Map, Value, json};

use super::{Lists, Wanted};
use crate::cache::Target;

/// The handshake-era version the edge's own sessions propose (the server may answer another).
pub const HANDSHAKE_VERSION: &str = "2025-11-25";
/// The stateless era's version.
pub const STATELESS_VERSION: &str = "2026-07-28";

const SUBSCRIPTION_ID: &str = "io.modelcontextprotocol/subscriptionId";

fn client_info() -> Value {
    json!({"name": "mcp-edge", "version": env!("CARGO_PKG_VERSION")})
}

/// The stateless era's per-request `_meta`: the edge declares no client capability.
fn stateless_meta() -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": STATELESS_VERSION,
        "io.modelcontextprotocol/clientInfo": client_info(),
        "io.modelcontextprotocol/clientCapabilities": {},
    })
}

fn request(id: &str, method: &str, params: Value) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string()
}

/// A handshake-era `initialize` of the edge's own session.
pub fn initialize_body(id: &str) -> String {
    let params = json!({"protocolVersion": HANDSHAKE_VERSION, "capabilities": {}, "clientInfo": client_info()});
    request(id, "initialize", params)
}

/// `notifications/initialized`, sent once the server answered `initialize`.
pub fn initialized_body() -> String {
    json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string()
}

/// `resources/subscribe` (or, `subscribe` false, `resources/unsubscribe`) of one URI.
pub fn subscribe_body(id: &str, uri: &str, subscribe: bool) -> String {
    let method = if subscribe { "resources/subscribe" } else { "resources/unsubscribe" };
    request(id, method, json!({"uri": uri}))
}

/// A stateless-era `server/discover`: what the server supports.
pub fn discover_body(id: &str) -> String {
    request(id, "server/discover", json!({"_meta": stateless_meta()}))
}

/// The `subscriptions/listen` request for what is `wanted`, as far as the server `support`s it;
/// `None` when that leaves nothing to listen for.
pub fn listen_body(id: &str, wanted: &Wanted, support: &Support) -> Option<String> {
    let mut notifications = Map::new();
    let lists = wanted.lists.and(&support.lists);
    for (wanted, name) in [
        (lists.resources, "resourcesListChanged"),
        (lists.tools, "toolsListChanged"),
        (lists.prompts, "promptsListChanged"),
    ] {
        if wanted {
            notifications.insert(name.into(), Value::Bool(true));
        }
    }
    if support.subscribe && !wanted.uris.is_empty() {
        notifications.insert("resourceSubscriptions".into(), json!(wanted.uris));
    }
    if notifications.is_empty() {
        return None;
    }
    Some(request(id, "subscriptions/listen", json!({"_meta": stateless_meta(), "notifications": notifications})))
}

/// The answer to a request the server sent on a stream: `ping` gets `{}`, anything else
/// "method not found" (the edge declares no capability a server could use).
pub fn answer_body(id: &Value, method: &str) -> String {
    match method {
        "ping" => json!({"jsonrpc": "2.0", "id": id, "result": {}}).to_string(),
        _ => json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": "Method not found"}}).to_string(),
    }
}

/// What a server can tell the edge of, from its capabilities (an `initialize` or
/// `server/discover` result's `capabilities`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Support {
    /// `resources.subscribe`: `notifications/resources/updated` for URIs asked for.
    pub subscribe: bool,
    /// The `listChanged` of `resources`, `tools`, `prompts`.
    pub lists: Lists,
}

impl Support {
    /// Read from a result holding `capabilities`; anything not `true` is not supported.
    pub fn of_result(result: &Value) -> Support {
        let capabilities = &result["capabilities"];
        let flag = |kind: &str, name: &str| capabilities[kind][name] == Value::Bool(true);
        Support {
            subscribe: flag("resources", "subscribe"),
            lists: Lists {
                resources: flag("resources", "listChanged"),
                tools: flag("tools", "listChanged"),
                prompts: flag("prompts", "listChanged"),
            },
        }
    }

    /// Whether it can tell of anything `wanted` holds.
    pub fn serves(&self, wanted: &Wanted) -> bool {
        (self.subscribe && !wanted.uris.is_empty()) || wanted.lists.and(&self.lists).any()
    }

    /// Whether it can tell of anything at all.
    pub fn any(&self) -> bool {
        self.subscribe || self.lists.any()
    }
}

/// The server's answer to a request of the edge's.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Result(Value),
    Error { code: i64, message: String },
}

impl Reply {
    /// JSON-RPC "method not found": the server does not offer it.
    pub fn is_method_not_found(&self) -> bool {
        matches!(self, Reply::Error { code: -32601, .. })
    }
}

/// The answer to request `id` in `message`, if `message` is one.
pub fn reply_to(message: &Value, id: &str) -> Option<Reply> {
    if message["id"].as_str() != Some(id) {
        return None;
    }
    if let Some(error) = message.get("error") {
        let code = error["code"].as_i64().unwrap_or(0);
        let text = error["message"].as_str().unwrap_or_default();
        return Some(Reply::Error { code, message: text.chars().take(200).collect() });
    }
    message.get("result").map(|result| Reply::Result(result.clone()))
}

/// What one event on a subscription stream (a handshake-era GET stream, or a
/// `subscriptions/listen` answer) means to the edge.
#[derive(Debug, Clone, PartialEq)]
pub enum Heard {
    /// A change notification: entries of this target are stale.
    Invalidate(Target),
    /// `notifications/subscriptions/acknowledged`: the listen stream is established, with what
    /// the server agreed to tell of (how many URIs, which lists).
    Acknowledged { uris: usize, lists: Lists },
    /// The answer to the `subscriptions/listen` request: the server ended the stream (`Ok`:
    /// gracefully, `Err`: it refused or failed it).
    Ended(Reply),
    /// A request from the server (it must be answered).
    Request { id: Value, method: String },
    /// Anything else (log messages, priming events, garbage): ignored.
    Nothing,
}

/// Reads one event's data. `listen_id`: the id of the `subscriptions/listen` request whose
/// stream this is (`None` on a handshake-era GET stream). Never fails: what cannot be read is
/// [`Heard::Nothing`].
pub fn hear(data: &str, listen_id: Option<&str>) -> Heard {
    let Ok(message) = serde_json::from_str::<Value>(data) else { return Heard::Nothing };
    let Some(method) = message["method"].as_str() else {
        return match listen_id.and_then(|id| reply_to(&message, id)) {
            Some(reply) => Heard::Ended(reply),
            None => Heard::Nothing,
        };
    };
    let params = &message["params"];
    // On a listen stream, whatever names another subscription is not this one's.
    let subscription = &params["_meta"][SUBSCRIPTION_ID];
    if let Some(id) = listen_id
        && !subscription.is_null()
        && subscription.as_str() != Some(id)
    {
        return Heard::Nothing;
    }
    if method == "notifications/subscriptions/acknowledged" {
        let honored = &params["notifications"];
        let flag = |name: &str| honored[name] == Value::Bool(true);
        let uris = honored["resourceSubscriptions"].as_array().map_or(0, Vec::len);
        let lists = Lists {
            resources: flag("resourcesListChanged"),
            tools: flag("toolsListChanged"),
            prompts: flag("promptsListChanged"),
        };
        return Heard::Acknowledged { uris, lists };
    }
    if let Some(id) = message.get("id").filter(|id| id.is_string() || id.is_number()) {
        return Heard::Request { id: id.clone(), method: method.to_string() };
    }
    match Target::from_notification(method, params["uri"].as_str()) {
        Some(target) => Heard::Invalidate(target),
        None => Heard::Nothing,
    }
}
