//! The demo upstream's change notifications (with `--subscriptions`): `resources/subscribe`
//! per session, delivered on the session's GET stream (handshake era), and
//! `subscriptions/listen` streams (stateless era). The `touch` and `list_changed` tools announce
//! changes to whoever subscribed, and the `subscriptions` tool says who did (for tests that
//! check what a proxy subscribes to).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::*;

/// Who subscribed to what.
#[derive(Default)]
pub(super) struct Subscribers {
    /// Handshake era: each session's subscribed URIs.
    sessions: Mutex<HashMap<String, HashSet<String>>>,
    /// Stateless era: the open listen streams.
    listeners: Mutex<Vec<Listener>>,
    next_listener: AtomicU64,
    /// Requests seen: `initialize`, `server/discover`, `subscriptions/listen`,
    /// `resources/subscribe`.
    pub(super) initializes: AtomicU64,
    pub(super) discovers: AtomicU64,
    listens: AtomicU64,
    subscribes: AtomicU64,
    /// `server/discover`, `subscriptions/listen` and `resources/subscribe` requests that carried
    /// an `Authorization` or a `Cookie`.
    pub(super) credentialed: AtomicU64,
}

struct Listener {
    number: u64,
    /// The listen request's id (raw JSON), stamped on every event as the subscription id.
    id: String,
    uris: HashSet<String>,
    /// `resourcesListChanged`, `toolsListChanged`, `promptsListChanged`.
    lists: [bool; 3],
    sender: mpsc::Sender<Bytes>,
}

fn event(message: &Value) -> Bytes {
    Bytes::from(format!("event: message\ndata: {message}\n\n"))
}

fn list_index(kind: &str) -> Option<usize> {
    ["resources", "tools", "prompts"].iter().position(|k| *k == kind)
}

impl Subscribers {
    /// `resources/subscribe` (or unsubscribe) of `uri` in `session`.
    pub(super) fn subscribe(&self, session: &str, uri: &str, on: bool) {
        let mut sessions = self.sessions.lock().unwrap();
        let uris = sessions.entry(session.to_string()).or_default();
        if on {
            self.subscribes.fetch_add(1, Ordering::Relaxed);
            uris.insert(uri.to_string());
        } else {
            uris.remove(uri);
        }
    }

    /// A session ended: its subscriptions go with it.
    pub(super) fn session_ended(&self, session: &str) {
        self.sessions.lock().unwrap().remove(session);
    }

    /// A `subscriptions/listen` request: an SSE stream that acknowledges the filter, then
    /// carries what it asked for (and a comment every second, so a closed stream is noticed).
    pub(super) fn listen(state: &Arc<State>, id: &str, params: &Value) -> Response<DemoBody> {
        let subscribers = &state.subscribers;
        subscribers.listens.fetch_add(1, Ordering::Relaxed);
        let filter = &params["notifications"];
        let uris: HashSet<String> = filter["resourceSubscriptions"]
            .as_array()
            .map(|uris| uris.iter().filter_map(|u| u.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        let lists = ["resourcesListChanged", "toolsListChanged", "promptsListChanged"].map(|k| filter[k] == true);
        let subscription: Value = serde_json::from_str(id).unwrap_or(Value::Null);
        let mut honored = serde_json::Map::new();
        for (on, name) in lists.iter().zip(["resourcesListChanged", "toolsListChanged", "promptsListChanged"]) {
            if *on {
                honored.insert(name.into(), json!(true));
            }
        }
        if !uris.is_empty() {
            let mut sorted: Vec<&String> = uris.iter().collect();
            sorted.sort();
            honored.insert("resourceSubscriptions".into(), json!(sorted));
        }
        let ack = json!({"jsonrpc": "2.0", "method": "notifications/subscriptions/acknowledged", "params": {
            "_meta": {"io.modelcontextprotocol/subscriptionId": subscription}, "notifications": honored}});
        let (sender, body) = channel_body();
        let number = subscribers.next_listener.fetch_add(1, Ordering::Relaxed);
        let _ = sender.try_send(event(&ack));
        subscribers.listeners.lock().unwrap().push(Listener {
            number,
            id: id.to_string(),
            uris,
            lists,
            sender: sender.clone(),
        });
        let state = state.clone();
        tokio::spawn(async move {
            while sender.send(Bytes::from_static(b": keep-alive\n\n")).await.is_ok() {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            state.subscribers.listeners.lock().unwrap().retain(|l| l.number != number);
        });
        sse_headers(body, None)
    }

    /// `uri` changed: tells the sessions subscribed to it (on their GET streams) and the listen
    /// streams naming it.
    pub(super) fn updated(&self, streams: &Mutex<HashMap<String, mpsc::Sender<Bytes>>>, uri: &str) {
        let note = json!({"jsonrpc": "2.0", "method": "notifications/resources/updated", "params": {"uri": uri}});
        let sessions: Vec<String> = (self.sessions.lock().unwrap().iter())
            .filter(|(_, uris)| uris.contains(uri))
            .map(|(session, _)| session.clone())
            .collect();
        let streams = streams.lock().unwrap();
        for session in sessions {
            if let Some(stream) = streams.get(&session) {
                let _ = stream.try_send(event(&note));
            }
        }
        for listener in self.listeners.lock().unwrap().iter().filter(|l| l.uris.contains(uri)) {
            let _ = listener.sender.try_send(event(&stamped(&note, &listener.id)));
        }
    }

    /// The list of `kind` changed: tells every session's GET stream and the listen streams that
    /// asked.
    pub(super) fn list_changed(&self, streams: &Mutex<HashMap<String, mpsc::Sender<Bytes>>>, kind: &str) {
        let Some(index) = list_index(kind) else { return };
        let note = json!({"jsonrpc": "2.0", "method": format!("notifications/{kind}/list_changed")});
        for stream in streams.lock().unwrap().values() {
            let _ = stream.try_send(event(&note));
        }
        for listener in self.listeners.lock().unwrap().iter().filter(|l| l.lists[index]) {
            let _ = listener.sender.try_send(event(&stamped(&note, &listener.id)));
        }
    }

    /// What the `subscriptions` tool reports.
    pub(super) fn report(&self) -> Value {
        let sessions = self.sessions.lock().unwrap();
        let handshake: BTreeSet<&String> = sessions.values().flatten().collect();
        let listeners = self.listeners.lock().unwrap();
        let listening: Vec<Value> = listeners
            .iter()
            .filter(|l| !l.sender.is_closed())
            .map(|l| {
                let uris: BTreeSet<&String> = l.uris.iter().collect();
                let lists: Vec<&str> = ["resources", "tools", "prompts"]
                    .into_iter()
                    .zip(l.lists)
                    .filter_map(|(k, on)| on.then_some(k))
                    .collect();
                json!({"uris": uris, "lists": lists})
            })
            .collect();
        json!({
            "handshake_uris": handshake,
            "sessions_subscribed": sessions.values().filter(|uris| !uris.is_empty()).count(),
            "listeners": listening,
            "initializes": self.initializes.load(Ordering::Relaxed),
            "discovers": self.discovers.load(Ordering::Relaxed),
            "listens": self.listens.load(Ordering::Relaxed),
            "subscribes": self.subscribes.load(Ordering::Relaxed),
            "credentialed": self.credentialed.load(Ordering::Relaxed),
        })
    }
}

/// A notification as a listen stream carries it: with the subscription's id in `_meta`.
fn stamped(note: &Value, id: &str) -> Value {
    let mut note = note.clone();
    let subscription: Value = serde_json::from_str(id).unwrap_or(Value::Null);
    note["params"]["_meta"] = json!({"io.modelcontextprotocol/subscriptionId": subscription});
    note
}
