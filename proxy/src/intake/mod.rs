//! The intake: every request is read, checked and understood here, once, whichever front
//! received it (HTTP/1.1 or HTTP/2), and leaves it as one of three verdicts:
//!
//! - [`Verdict::Refuse`]: answered with a JSON-RPC error (a bad head or body, a route or
//!   session that does not exist, a client over its rate, a full upstream);
//! - [`Verdict::Hit`]: answered from the cache (see [`hit`]);
//! - [`Verdict::Forward`]: forwarded by Pingora, with what the intake understood of it
//!   ([`Understood`], see [`handover`]); the proxy service reads nothing of the request again.
//!
//! It runs in two steps, because a client that sends `Expect: 100-continue` is told to send
//! its body only once its head passed: [`admit_head`] (route, method, host, origin, path,
//! rate, session, framing) and [`Intake::understand`] (the JSON-RPC body, the caller, the
//! cache, admission upstream).

pub mod handover;
pub mod hit;

use std::net::IpAddr;
use std::sync::Arc;

use mcp_edge_policies::cache::{Caller, Lookup, is_write};
use mcp_edge_policies::jsonrpc::Message;
use mcp_edge_policies::method::Method;
use mcp_edge_policies::prefetch::Kind;
use mcp_edge_policies::prefetch::sequence::Context;

use crate::body_coding::Coding;
use crate::error::EdgeError;
use crate::guards;
use crate::known_headers::KnownHeaders;
use crate::limits;
use crate::prefetch::Prefetcher;
use crate::request_cache::{self, LookupInput, Prepared};
use crate::request_id::RequestId;
use crate::runtime::{Route, Runtime};
use crate::store::{EdgeCache, Found, Fresh};

pub use handover::{Admission, Understood};
pub use hit::Hit;

/// Bodies up to this size are read and understood before forwarding. Larger ones (never
/// cacheable reads) stream through, held back until whole and then checked (see the service's
/// `request_body_filter`): Pingora's retry buffer, which replays a body read before
/// forwarding, holds at most 64 KiB.
pub const INSPECT_LIMIT: u64 = 64 * 1024;

/// A request's head as a front read it.
pub struct Request<'a> {
    /// The HTTP method.
    pub method: &'a str,
    pub version: http::Version,
    /// The target's path (without its query).
    pub path: &'a str,
    /// An absolute-form target's authority (HTTP/1.1), or the `:authority` (HTTP/2).
    pub authority: Option<&'a str>,
    /// The headers the checks read (with the route's identity header).
    pub known: &'a KnownHeaders<'a>,
    pub client: Option<IpAddr>,
    /// Sent on one of the prefetcher's in-process connections (no client can open one).
    pub internal: bool,
    /// Its `X-Request-ID` (the client's, or one made for it).
    pub request_id: RequestId,
    /// It has no body: none declared (HTTP/1.1), or its stream ended with its head (HTTP/2).
    pub bodiless: bool,
}

/// What became of a request. (Returned once per request, on the stack: boxing a hit would
/// allocate per hit instead.)
#[allow(clippy::large_enum_variant)]
pub enum Verdict {
    Refuse(EdgeError),
    Hit(Hit),
    Forward(Box<Understood>),
}

/// What a request's body is to the intake, once its head passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyPlan {
    /// None expected (not a POST).
    None,
    /// A POST body of this length, small enough to be read whole and understood first.
    Read(u64),
    /// A POST body too large to read first, or chunked: it streams through, held back until
    /// whole, then checked as a small body is (see the service's `request_body_filter`).
    Streamed,
}

/// A request whose head passed ([`admit_head`]).
pub struct Admitted {
    pub snapshot: Arc<Runtime>,
    pub route: usize,
    pub stateless: bool,
    /// The upstream owning its MCP session and that upstream's session id.
    pub pinned: Option<(Arc<crate::pool::Upstream>, String)>,
    pub body: BodyPlan,
    /// How its body is compressed (it is decoded, read and forwarded plain: `body_coding`).
    pub coding: Option<Coding>,
    /// The kind of prefetch it is (only on the prefetcher's own connections).
    pub prefetch: Option<Kind>,
    pub request_id: RequestId,
    pub client: Option<IpAddr>,
    /// Its place in a trace, while spans are exported (see `spans`).
    pub trace: Option<Box<crate::spans::Trace>>,
    /// Its bearer token, verified (on a route with `[route.auth]`).
    pub verified: Option<Arc<mcp_edge_policies::auth::Verified>>,
}

impl Admitted {
    pub fn route(&self) -> &Route {
        &self.snapshot.routes[self.route]
    }
}

/// The checks of a request's head, in the order a client is told of them: its route, its
/// method, its head (path, host, origin, headers sent twice), its client's rate, its bearer
/// token and its subject's rate (on a protected route), its session, a POST's framing.
pub async fn admit_head(
    snapshot: &Arc<Runtime>,
    route: Option<usize>,
    request: &Request<'_>,
) -> Result<Admitted, EdgeError> {
    if request.method == "CONNECT" {
        return Err(EdgeError::MethodNotAllowed { method: "CONNECT".into() });
    }
    let Some(route_index) = route else {
        return Err(EdgeError::NoRoute { path: request.path.to_string() });
    };
    let post = request.method == "POST";
    if !(post || matches!(request.method, "GET" | "DELETE" | "OPTIONS")) {
        return Err(EdgeError::MethodNotAllowed { method: request.method.to_string() });
    }
    let known = request.known;
    if request.version == http::Version::HTTP_11 && known.host_lines == 0 {
        return Err(EdgeError::bad_request("an HTTP/1.1 request must carry a Host header"));
    }
    let route = &snapshot.routes[route_index];
    guards::check_request_head(&snapshot.config.server, request.path, request.authority, known)?;
    route.limits.admit(request.client)?;
    let verified = match &route.auth {
        Some(_) if is_preflight(request) => None,
        Some(auth) => auth.authorize(known.identity.bytes()).await?,
        None => None,
    };
    if let Some(verified) = verified.as_ref().filter(|_| !request.internal) {
        route.limits.admit_subject(&verified.subject)?;
    }
    let stateless = guards::is_stateless(known);
    let pinned = guards::pin_session(route, known, stateless)?;
    let (body, coding) = match post {
        false => (BodyPlan::None, None),
        true => {
            let post = guards::check_post(known, snapshot.config.server.max_body)?;
            let plan = match post.length {
                Some(length) if length <= INSPECT_LIMIT => BodyPlan::Read(length),
                _ => BodyPlan::Streamed,
            };
            (plan, post.coding)
        }
    };
    let prefetch = if request.internal { known.prefetch.text().and_then(Kind::parse) } else { None };
    let (request_id, client) = (request.request_id, request.client);
    let trace = crate::spans::Trace::begin(known.trace_parent());
    let route = route_index;
    Ok(Admitted {
        snapshot: snapshot.clone(),
        route,
        stateless,
        pinned,
        body,
        coding,
        prefetch,
        request_id,
        client,
        trace,
        verified,
    })
}

/// Whether a request is a CORS preflight, which browsers send without credentials: an `OPTIONS`
/// without a body. On a protected route it passes unchecked, and reaches the upstream without
/// credentials, session or subject (see the service's `upstream_request`).
pub fn is_preflight(request: &Request<'_>) -> bool {
    request.method == "OPTIONS" && request.bodiless
}

/// Understands requests and answers them from the cache; shared by the fronts.
pub struct Intake {
    pub cache: Arc<EdgeCache>,
    pub prefetch: Arc<Prefetcher>,
}

impl Intake {
    /// Understands an admitted request (`body`: its body, when [`BodyPlan::Read`]) and decides
    /// what becomes of it.
    pub async fn understand(&self, admitted: Admitted, request: &Request<'_>, body: &[u8]) -> Verdict {
        let known = request.known;
        // What the message says, noted apart from `admitted` (whose route it is read against)
        // until the verdict: nothing is cloned or moved twice on the way to a hit.
        let mut noted = Noted::default();
        if let BodyPlan::Read(_) = admitted.body {
            let route = admitted.route();
            if let Some(coding) = admitted.coding {
                match crate::body_coding::decode(coding, body, admitted.snapshot.config.server.max_body).await {
                    Ok(decoded) => noted.decoded = Some(decoded),
                    Err(refused) => return Verdict::Refuse(refused),
                }
            }
            let body = noted.decoded.as_deref().unwrap_or(body);
            let message = match guards::understand(body, known, admitted.stateless) {
                Ok(message) => message,
                Err(refused) => return Verdict::Refuse(refused),
            };
            // On a protected route, the verified authorization context, not the token's bytes:
            // a refreshed token keeps its user's private entries (`mcp_edge_policies::auth`).
            let identity = match &route.auth {
                Some(_) => guards::Identity::Verified(admitted.verified.as_ref().map(|v| v.context.as_str())),
                None => guards::Identity::Header(&route.config.policy.identity_header),
            };
            let caller = guards::caller(known, admitted.stateless, identity);
            // The message itself is not held across the lookup (a smaller future).
            let lookup = noted.note(self, route, admitted.prefetch, message, &caller);
            if let Some(lookup) = lookup {
                let method = Method::label(noted.rpc_method.as_deref());
                let looked = self.consult_cache(route, admitted.prefetch, method, lookup, caller).await;
                match looked {
                    Looked::Hit(fresh) => {
                        let request = noted.into_understood(admitted, known);
                        return Verdict::Hit(Hit { request, fresh, mcp_method: method });
                    }
                    Looked::Forward(cache) => noted.cache = Some(cache),
                }
            }
        }
        let mut understood = noted.into_understood(admitted, known);
        let route = understood.route();
        understood.admission = match admit_upstream(route, &understood, request.method, request.client) {
            Ok(admission) => admission,
            Err(refused) => return Verdict::Refuse(refused),
        };
        Verdict::Forward(Box::new(understood))
    }

    /// Answers a request from the cache when it can (a fresh entry, or one a fetch of the same
    /// answer under way stores meanwhile), else prepares to store its answer.
    async fn consult_cache(
        &self,
        route: &Route,
        prefetch: Option<Kind>,
        method: &'static str,
        lookup: Lookup,
        caller: Caller,
    ) -> Looked {
        let policy = &route.config.policy;
        let found = if prefetch.is_some_and(Kind::bypasses_cache) {
            // A refresh replaces the entry, whatever the cache holds.
            Found::Nothing
        } else if !caller.may_take_hits(route.sessions.known_sessionless()) {
            // A caller the upstream would refuse is its to answer (see `live_sessions`).
            Found::Nothing
        } else {
            self.cache.lookup(&route.config.name, &lookup, policy.stale_if_error, policy.max_ttl).await
        };
        let name = route.config.name.as_str();
        let fresh = match found {
            // The common hit: no coalescing to join, nothing to prepare.
            Found::Fresh(fresh) => fresh,
            found => {
                let wait_limit = route.config.read_timeout;
                let looked = (lookup, Some(found));
                match request_cache::prepare(&self.cache, (name, policy), looked, caller, wait_limit).await {
                    Prepared::Hit(fresh) => fresh,
                    Prepared::Forward(cache) => return Looked::Forward(cache),
                }
            }
        };
        if method == Method::ToolsList.as_str() {
            route.readonly.learn_from_hit(&fresh.stored, name, &policy.cache_tools);
        }
        Looked::Hit(fresh)
    }

    /// A hit whose entry cannot be read (it is checked when stored and loaded, so this is for
    /// the unforeseen): forwarded instead, as a request the cache has nothing for.
    pub fn forward_instead(
        &self,
        hit: Hit,
        http_method: &str,
        client: Option<IpAddr>,
    ) -> Result<Box<Understood>, EdgeError> {
        let mut understood = hit.request;
        understood.admission = admit_upstream(understood.route(), &understood, http_method, client)?;
        Ok(Box::new(understood))
    }

    /// A client's `resources/read`, for the prefetcher to learn from once its answer is in the
    /// cache (a hit, or a miss whose answer was stored).
    pub fn read_to_learn(&self, route: &Route, message: &Message, caller: &Caller) -> Option<(Context, String)> {
        if message.method.as_deref() != Some(Method::ResourcesRead.as_str()) {
            return None;
        }
        Some((self.prefetch.context(route, caller)?, message.params.uri.clone()?))
    }
}

/// What the cache had for a request.
enum Looked {
    Hit(Fresh),
    /// Forwarded, its answer to be stored.
    Forward(Box<request_cache::RequestCache>),
}

/// What a request's message says, as far as the rest of its way needs.
#[derive(Default)]
struct Noted {
    write_pending: bool,
    learn: Option<(Context, String)>,
    rpc_method: Option<String>,
    rpc_id: Option<String>,
    cache: Option<Box<request_cache::RequestCache>>,
    decoded: Option<bytes::Bytes>,
    op: Option<crate::insight::Op>,
}

impl Noted {
    /// Notes what `message` says (whether it writes, what the prefetcher learns of it, its
    /// method and id) and returns its cache lookup (`None`: not cacheable).
    fn note(
        &mut self,
        intake: &Intake,
        route: &Route,
        prefetch: Option<Kind>,
        mut message: Message,
        caller: &Caller,
    ) -> Option<Lookup> {
        self.write_pending = is_write_on(route, &message);
        if prefetch.is_none() {
            self.learn = intake.read_to_learn(route, &message, caller);
        }
        let input = LookupInput {
            route: &route.config.name,
            policy: &route.config.policy,
            readonly: &route.readonly,
            message: &message,
            caller,
        };
        let lookup = input.lookup();
        // Last: it takes the operation's name out of the message.
        self.op = crate::insight::Op::take_from(&mut message);
        self.rpc_method = message.method;
        self.rpc_id = message.id;
        lookup
    }

    /// The request as the intake understood it.
    fn into_understood(self, admitted: Admitted, known: &KnownHeaders<'_>) -> Understood {
        let config = &admitted.snapshot.config;
        let accepts_gzip = config.compression.gzip && crate::compress::accepts_gzip(known.accept_encoding.text());
        let edge_session = (!admitted.stateless).then(|| known.session_id.text().map(str::to_string)).flatten();
        Understood {
            accepts_gzip,
            edge_session,
            rpc_method: self.rpc_method,
            rpc_id: self.rpc_id,
            cache: self.cache,
            learn: self.learn,
            write_pending: self.write_pending,
            admission: Admission::None,
            body_invited: false,
            decoded_body: self.decoded,
            op: self.op,
            admitted,
        }
    }
}

/// Whether `message` is a write to invalidate on, on `route` (see the service's `writes`).
pub fn is_write_on(route: &Route, message: &Message) -> bool {
    is_write(message, &route.config.policy, |name| route.readonly.declared_read_only(name))
}

/// Admits a request to the upstream: a long-lived stream against its client's open streams,
/// anything else against the route's concurrent requests.
fn admit_upstream(
    route: &Route,
    understood: &Understood,
    http_method: &str,
    client: Option<IpAddr>,
) -> Result<Admission, EdgeError> {
    let long_lived = http_method == "GET" || understood.mcp_method().is_some_and(Method::is_long_lived);
    if long_lived {
        let max = understood.admitted.snapshot.config.server.max_streams_per_client;
        return limits::open_stream(client, max).map(Admission::Stream);
    }
    route.limits.forward().map(|forwarding| forwarding.map_or(Admission::None, Admission::Forwarding))
}
