//! What the intake hands the proxy service with a request it forwards: everything it
//! established of it ([`Understood`]), so that the service reads nothing of it again.
//!
//! It travels in a task-local slot around the call into Pingora for that one request
//! ([`forward_with`]): the service takes it in its first phase ([`take`]). One way for both
//! protocols (Pingora's connection user context exists for HTTP/1 only).

use std::cell::RefCell;

use mcp_edge_policies::method::Method;
use mcp_edge_policies::prefetch::sequence::Context;

use super::Admitted;
use crate::limits;
use crate::request_cache::RequestCache;
use crate::runtime::Route;

/// A request the intake forwards, and all it established of it.
pub struct Understood {
    /// Its configuration snapshot, route, era, session and framing.
    pub admitted: Admitted,
    /// The client accepts gzip (and the configuration allows it).
    pub accepts_gzip: bool,
    /// The handshake-era session id the client sent.
    pub edge_session: Option<String>,
    /// The JSON-RPC method and raw id, when the body was read.
    pub rpc_method: Option<String>,
    pub rpc_id: Option<String>,
    /// Its cache state, when its answer may be stored.
    pub cache: Option<Box<RequestCache>>,
    /// A client's `resources/read` for the prefetcher to learn once its answer is stored.
    pub learn: Option<(Context, String)>,
    /// A write whose invalidation waits for its answer (see the service's `writes`).
    pub write_pending: bool,
    /// Its place among the route's requests upstream, or among its client's open streams.
    pub admission: Admission,
    /// The client's `Expect: 100-continue` was met (HTTP/1.1: it was told `100 Continue`;
    /// HTTP/2 can send no interim head, its body was read all the same): not forwarded.
    pub body_invited: bool,
    /// A compressed body the intake read, decoded: what the upstream is sent instead (plain,
    /// with its length), and what anything else reading the body reads.
    pub decoded_body: Option<bytes::Bytes>,
    /// The tool or resource it calls, for the route's insight (see `insight`).
    pub op: Option<crate::insight::Op>,
}

/// A forwarded request's place under the limits, held (never read) until the request ends.
pub enum Admission {
    None,
    Forwarding(#[allow(dead_code)] limits::Forwarding),
    Stream(#[allow(dead_code)] limits::OpenStream),
}

impl Understood {
    pub fn route(&self) -> &Route {
        self.admitted.route()
    }

    pub fn mcp_method(&self) -> Option<Method> {
        self.rpc_method.as_deref().and_then(Method::named)
    }

    /// Counts the call in its route's insight (if it calls a tool or reads a resource).
    pub fn count_call(&self, call: impl FnOnce(&crate::insight::Op) -> mcp_edge_policies::insight::Call<'_>) {
        if let Some(op) = &self.op {
            self.route().operations.record(&call(op));
        }
    }

    /// Who asked for what, for the access log (`http_method`, `path`: the request's).
    pub fn asked<'a>(&'a self, http_method: &'a str, path: &'a str) -> crate::served::Asked<'a> {
        crate::served::Asked {
            route: &self.route().config.name,
            http_method,
            path,
            client: self.admitted.client,
            session: self.edge_session.as_deref(),
            request_id: self.admitted.request_id,
            trace: self.admitted.trace.as_deref(),
            prefetch: self.admitted.prefetch.map(|kind| kind.label()),
        }
    }
}

tokio::task_local! {
    static HANDED: RefCell<Option<Box<Understood>>>;
}

/// Runs `forwarding` (Pingora serving one request) with `understood` for the service to take.
pub async fn forward_with<F: Future>(understood: Box<Understood>, forwarding: F) -> F::Output {
    HANDED.scope(RefCell::new(Some(understood)), forwarding).await
}

/// The request the intake handed over (once: the first phase takes it).
pub fn take() -> Option<Box<Understood>> {
    HANDED.try_with(|slot| slot.borrow_mut().take()).ok().flatten()
}
