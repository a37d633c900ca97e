//! Prefetching, the proxy's side: what the request paths tell the prefetcher, and how a
//! prefetch is sent (the decisions are `mcp_edge_policies::prefetch`'s).
//!
//! A prefetch is an ordinary request, served by the proxy itself: the prefetcher writes it on
//! an in-process connection ([`internal`]) to the same app that serves clients, with the
//! triggering request's path and headers (its credentials, identity header, protocol version
//! and session: so the same route, the same pinned replica, the same cache scope), a JSON-RPC
//! id of its own, and `x-mcp-edge-prefetch: KIND`. So it is checked, balanced, coalesced with
//! client requests for the same key, and stored by exactly the rules of a client's miss; its
//! answer goes back to the prefetcher, never to a client. The header is trusted only on those
//! in-process connections (a client cannot open one), and never forwarded upstream.
//!
//! The request paths only send events ([`Prefetcher`]'s methods, each a `try_send`; nothing
//! waits, and a full queue drops the event): the [`worker`] learns, decides and issues. The
//! queue is bounded in events and in the bytes of the requests they copy (`QUEUE_BYTES`).
//!
//! - [`Prefetcher::client_read`]: a client's `resources/read` answered from the cache or
//!   stored (learned; may predict the next);
//! - [`Prefetcher::hit`]: a hit (a prefetched entry used by a client; refresh-ahead);
//! - [`Prefetcher::list_answered`]: a list page with `nextCursor` (the next page);
//! - [`Prefetcher::prefetch_stored`]: where a prefetch's answer was stored (used or wasted later);
//! - [`Prefetcher::upstream_answered`]: the upstream's latency and errors (its weather);
//! - [`Prefetcher::session_initialized`], [`Prefetcher::session_ready`]: a new handshake-era
//!   session, whose start-up list calls are fetched once its client has said it is initialized.

mod internal;
mod models;
mod replay;
mod sequence;
mod worker;

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;
use mcp_edge_policies::cache::{Caller, Key};
use mcp_edge_policies::method::Method;
use mcp_edge_policies::prefetch::sequence::Context;
use mcp_edge_policies::prefetch::{Kind, context_of};
use tokio::sync::mpsc;

pub use internal::is_internal;
pub use replay::{Mirror, Replay};
pub use worker::PrefetchService;

use crate::request_cache::StoredAs;
use crate::runtime::Route;
use crate::store::Life;

/// The header naming an internal prefetch's kind.
pub const KIND_HEADER: &str = "x-mcp-edge-prefetch";
/// Events waiting for the worker before new ones are dropped.
const QUEUE: usize = 4096;
/// Bytes of requests (heads, bodies) the waiting events may copy before new ones are dropped:
/// the worker takes an event in microseconds, so the queue fills only while it lags, and then
/// 4 MiB is a thousand typical heads of 4 KiB, or 64 of the largest (64 KiB).
const QUEUE_BYTES: usize = 4 << 20;

/// What the request paths tell the worker.
pub(crate) enum Event {
    /// A client read `uri` (its context, for sequences).
    Read { route: String, context: Context, uri: String, replay: Replay },
    /// A client hit the entry `key` (refresh: the request to send again, if its entry is near
    /// its end).
    Hit { route: String, key: Key, client: bool, refresh: Option<(Replay, Bytes)> },
    /// A client's list answer named a next page.
    Page { route: String, method: &'static str, cursor: String, replay: Replay },
    /// A prefetch's answer (to `method`) was stored.
    Stored { route: String, kind: Kind, stored: StoredAs, method: Method },
    /// The upstream answered a request of the route (or failed to).
    Upstream { route: String, latency_ms: f64, failed: bool, prefetch: bool },
    /// A handshake-era session began; its server offers these list calls.
    SessionOffers { session: String, lists: Vec<Method> },
    /// The session's client said `notifications/initialized`: the session may be asked now.
    SessionReady { route: String, session: String, replay: Replay },
}

impl Event {
    /// What the event holds of a client's request (what `QUEUE_BYTES` bounds).
    fn bytes(&self) -> usize {
        match self {
            Event::Read { uri, replay, .. } => uri.len() + replay.bytes(),
            Event::Hit { refresh: Some((replay, body)), .. } => body.len() + replay.bytes(),
            Event::Page { cursor, replay, .. } => cursor.len() + replay.bytes(),
            Event::SessionReady { replay, .. } => replay.bytes(),
            _ => 0,
        }
    }
}

/// The request paths' handle on prefetching.
pub struct Prefetcher {
    events: mpsc::Sender<Event>,
    receiver: Mutex<Option<mpsc::Receiver<Event>>>,
    /// Bytes the queued events hold (see `QUEUE_BYTES`).
    queued_bytes: AtomicUsize,
    /// Entries whose refresh is under way, by a slot per key hash: a hot entry in the last part
    /// of its lifetime is hit many times before its refresh lands, and each hit must not copy
    /// its request to ask again.
    refreshing: RefreshGate,
}

impl Default for Prefetcher {
    fn default() -> Self {
        let (events, receiver) = mpsc::channel(QUEUE);
        let queued_bytes = AtomicUsize::new(0);
        Prefetcher { events, receiver: Mutex::new(Some(receiver)), queued_bytes, refreshing: RefreshGate::default() }
    }
}

impl Prefetcher {
    fn send(&self, event: Event) -> bool {
        let bytes = event.bytes();
        let queued = self.queued_bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        let sent = queued <= QUEUE_BYTES && self.events.try_send(event).is_ok();
        if !sent {
            self.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
        }
        sent
    }

    /// The worker took `event` off the queue (and shows what the queue still holds: the
    /// worker's view, so the gauge settles on the truth whenever the queue is drained).
    pub(crate) fn taken(&self, event: &Event) {
        self.queued_bytes.fetch_sub(event.bytes(), Ordering::Relaxed);
        let queued = self.queued_bytes.load(Ordering::Relaxed);
        crate::metrics::METRICS.prefetch_queued_bytes.set(queued as i64);
    }

    /// The context whose read of a `resources/read` on `route` is learned (`None`: prefetching
    /// is off, or the caller is an anonymous stateless client).
    pub fn context(&self, route: &Route, caller: &Caller) -> Option<Context> {
        route.config.prefetch.enabled.then(|| context_of(caller)).flatten()
    }

    /// A client's `resources/read` of `uri` on `route` whose answer is in the cache (a hit, or a
    /// miss whose answer was stored): a read the upstream refused teaches nothing, so a forged
    /// credential is no witness.
    pub fn client_read(&self, route: &Route, context: Context, uri: &str, replay: impl FnOnce() -> Option<Replay>) {
        let Some(replay) = replay() else { return };
        let route = route.config.name.clone();
        self.send(Event::Read { route, context, uri: uri.to_string(), replay });
    }

    /// A hit on the entry `fresh`: a client's counts a prefetched entry used (`client`; else a `warm`
    /// prefetch's own hit); either asks for a refresh when the entry is in the last
    /// `refresh_ahead` of its lifetime (`request`: the hitting request, sent again with its own
    /// credentials, never kept beyond that).
    pub fn hit(&self, route: &Route, fresh: &Life, client: bool, request: impl FnOnce() -> Option<(Replay, Bytes)>) {
        let prefetch = &route.config.prefetch;
        if !prefetch.enabled {
            return;
        }
        let now = crate::store::now_ms();
        let due = mcp_edge_policies::prefetch::refresh_due(
            fresh.fetched_at_ms,
            fresh.expires_at_ms,
            now,
            prefetch.refresh_ahead,
        );
        let refresh = if due && self.refreshing.claim(&fresh.key) { request() } else { None };
        let claimed = refresh.is_some();
        if !client && !claimed {
            return;
        }
        let sent = self.send(Event::Hit { route: route.config.name.clone(), key: fresh.key, client, refresh });
        if claimed && !sent {
            self.refreshing.release(&fresh.key);
        }
    }

    /// A client's list answer that names a next page (`cursor`).
    pub fn list_answered(&self, route: &Route, method: &'static str, cursor: String, replay: impl FnOnce() -> Replay) {
        if !route.config.prefetch.enabled {
            return;
        }
        let route = route.config.name.clone();
        self.send(Event::Page { route, method, cursor, replay: replay() });
    }

    /// A handshake-era `initialize` answered with `result` and gave the client `session`: the
    /// list calls its capabilities allow are the session's start-up calls.
    pub fn session_initialized(&self, route: &Route, session: &str, result: &str) {
        if !route.config.prefetch.enabled {
            return;
        }
        let lists = start_up_lists(result);
        if !lists.is_empty() {
            self.send(Event::SessionOffers { session: session.to_string(), lists });
        }
    }

    /// The client of `session` has said `notifications/initialized` (and the upstream took it).
    pub fn session_ready(&self, route: &Route, session: &str, replay: impl FnOnce() -> Replay) {
        if route.config.prefetch.enabled {
            let (route, session) = (route.config.name.clone(), session.to_string());
            self.send(Event::SessionReady { route, session, replay: replay() });
        }
    }

    /// A prefetch's answer was stored as `stored`.
    pub fn prefetch_stored(&self, route: &Route, kind: Kind, stored: StoredAs, method: Method) {
        self.send(Event::Stored { route: route.config.name.clone(), kind, stored, method });
    }

    /// The upstream answered a request of `route` after `latency_ms` (or failed it).
    pub fn upstream_answered(&self, route: &Route, latency_ms: f64, failed: bool, prefetch: bool) {
        if route.config.prefetch.enabled {
            self.send(Event::Upstream { route: route.config.name.clone(), latency_ms, failed, prefetch });
        }
    }

    pub(crate) fn take_receiver(&self) -> Option<mpsc::Receiver<Event>> {
        self.receiver.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// The list calls a client makes at the start of a session, as far as the server's
/// capabilities (in its `initialize` result) offer them.
fn start_up_lists(result: &str) -> Vec<Method> {
    #[derive(serde::Deserialize)]
    struct Initialized {
        capabilities: Option<serde_json::Map<String, serde_json::Value>>,
    }
    let Ok(Initialized { capabilities: Some(offered) }) = serde_json::from_str(result) else { return Vec::new() };
    let mut lists = Vec::new();
    if offered.contains_key("tools") {
        lists.push(Method::ToolsList);
    }
    if offered.contains_key("prompts") {
        lists.push(Method::PromptsList);
    }
    if offered.contains_key("resources") {
        lists.extend([Method::ResourcesList, Method::ResourcesTemplatesList]);
    }
    lists
}

/// A claim per key-hash slot (collisions only delay a refresh).
struct RefreshGate {
    slots: Box<[AtomicU64]>,
}

impl Default for RefreshGate {
    fn default() -> Self {
        RefreshGate { slots: (0..1024).map(|_| AtomicU64::new(0)).collect() }
    }
}

impl RefreshGate {
    fn slot(&self, key: &Key) -> (&AtomicU64, u64) {
        let hash = u64::from_le_bytes(key[..8].try_into().expect("keys are 32 bytes")) | 1;
        (&self.slots[hash as usize % self.slots.len()], hash)
    }

    /// Claims `key`'s refresh; `false` if one is under way (or its slot is taken).
    fn claim(&self, key: &Key) -> bool {
        let (slot, hash) = self.slot(key);
        slot.compare_exchange(0, hash, Ordering::AcqRel, Ordering::Relaxed).is_ok()
    }

    fn release(&self, key: &Key) {
        let (slot, hash) = self.slot(key);
        let _ = slot.compare_exchange(hash, 0, Ordering::AcqRel, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_starts_with_the_lists_its_server_offers() {
        let result = r#"{"protocolVersion":"2025-11-25","capabilities":{"tools":{},"resources":{"subscribe":true},"logging":{}},"serverInfo":{"name":"s","version":"1"}}"#;
        assert_eq!(start_up_lists(result), [Method::ToolsList, Method::ResourcesList, Method::ResourcesTemplatesList]);
        assert!(start_up_lists(r#"{"capabilities":{}}"#).is_empty());
        assert!(start_up_lists("not json").is_empty());
    }

    #[test]
    fn queued_events_hold_at_most_queue_bytes_of_requests() {
        let prefetcher = Prefetcher::default();
        let padding = vec![b'p'; 60_000];
        let read = || {
            let replay = Replay::new("/mcp", [("authorization", &b"Bearer a"[..]), ("x-padding", &padding[..])]);
            let context = Context { id: 1, credentialed: true };
            Event::Read { route: "r".into(), context, uri: "docs://a".into(), replay }
        };
        let sent = (0..1_000).take_while(|_| prefetcher.send(read())).count();
        assert_eq!(sent, QUEUE_BYTES / read().bytes(), "a 4 MiB queue holds about 70 of them, not 1 000");
        assert!(prefetcher.queued_bytes.load(Ordering::Relaxed) <= QUEUE_BYTES);
        // Taking one off the queue makes room for one more.
        let mut receiver = prefetcher.take_receiver().unwrap();
        prefetcher.taken(&receiver.try_recv().unwrap());
        assert!(prefetcher.send(read()));
        assert!(!prefetcher.send(read()));
    }

    #[test]
    fn a_refresh_is_claimed_once_until_released() {
        let gate = RefreshGate::default();
        assert!(gate.claim(&[7; 32]));
        assert!(!gate.claim(&[7; 32]));
        gate.release(&[7; 32]);
        assert!(gate.claim(&[7; 32]));
    }
}
