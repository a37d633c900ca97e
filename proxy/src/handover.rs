//! What the hit path hands the proxy service with a request it did not answer from the cache.
//!
//! The hit path reads, checks and looks up every cacheable-looking POST. When it cannot answer
//! one (a miss, a stale entry, an uncacheable method), the service takes the request over with
//! everything the hit path learned, as one [`Understood`] request: its route and configuration
//! snapshot, the guards' verdict (it passed them), its parsed JSON-RPC message, its caller and
//! what the cache lookup found. The service then does none of that again: no second JSON parse,
//! no second set of checks, no second lookup.
//!
//! It travels through Pingora's connection user context, which Pingora hands to
//! `ProxyHttp::on_connection_reuse` before the request's first phase (a hook meant for
//! keep-alive state; the hit path gives every handed-over request a fresh Pingora session).

use std::sync::Arc;

use mcp_edge_policies::cache::Caller;
use mcp_edge_policies::jsonrpc::Message;
use mcp_edge_policies::prefetch::Kind;

use crate::request_cache::Prelooked;
use crate::runtime::Runtime;

/// A request that passed every check of the service's `request_filter` up to reading its body.
pub struct Understood {
    /// The configuration it was checked against; the service keeps it for the request.
    pub snapshot: Arc<Runtime>,
    /// The index of its route in `snapshot`.
    pub route: usize,
    pub message: Message,
    pub stateless: bool,
    /// The upstream owning its MCP session (pool index) and that upstream's session id.
    pub pinned: Option<(usize, String)>,
    /// Who is asking (with the session id the client sent).
    pub caller: Caller,
    /// The client accepts gzip (and the configuration allows it).
    pub accepts_gzip: bool,
    /// The cache lookup and what it found; `None`: not cacheable.
    pub prelooked: Option<Prelooked>,
    /// The kind of prefetch this is, if it is one (see `prefetch`).
    pub prefetch: Option<Kind>,
}
