//! The configuration model: TOML text in, a validated [`Config`] or every [`Problem`] out.
//!
//! Parsing happens in three passes so that `mcp-edge check` can list every problem at once:
//! 1. TOML syntax (stops at the first syntax error, with its place);
//! 2. typed values, with every key the model does not know reported at its line (see
//!    `schema`; serde stops at the first value of the wrong type, which is reported instead);
//! 3. the meaning of each value (sizes, durations, URLs, duplicates …: see `check`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

mod auth;
mod check;
mod defaults;
#[cfg(test)]
mod docs_tests;
mod raw;
#[cfg(test)]
mod tests;
mod values;

use check::Checker;
use raw::RawConfig;

use crate::problem::{Problem, SourceMap, unplaced};
use crate::schema;
use crate::upstream::UpstreamUrl;

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub server: ServerConfig,
    pub admin: AdminConfig,
    pub cache: CacheConfig,
    pub compression: CompressionConfig,
    pub log: LogConfig,
    pub tracing: TracingConfig,
    pub routes: Vec<RouteConfig>,
}

/// `[tracing]`: spans exported over OTLP/HTTP (protobuf), one per request.
#[derive(Debug, Clone, PartialEq)]
pub struct TracingConfig {
    /// Where spans are sent: the collector's traces URL (`http://host:4318` gets `/v1/traces`
    /// appended, as OTLP's base endpoint does); `None`: spans are not made at all.
    pub otlp: Option<String>,
    /// Share of new traces (no sampled parent) whose spans are exported, 0 to 1.
    pub sample_ratio: f64,
    /// The `service.name` spans are exported under.
    pub service_name: String,
}

impl Default for TracingConfig {
    fn default() -> Self {
        TracingConfig { otlp: None, sample_ratio: 1.0, service_name: "mcp-edge".into() }
    }
}

/// `[log]`: how log lines are written (on standard error; journald keeps them).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LogConfig {
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// `key=value` lines, as `tracing` writes them.
    #[default]
    Text,
    /// One JSON object per line (for log shippers: Loki, Elasticsearch, CloudWatch).
    Json,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    pub listen: Vec<SocketAddr>,
    pub threads: usize,
    pub max_body: u64,
    /// Origins allowed to call besides the request's own (same-origin); a request with any
    /// other `Origin` header gets 403.
    pub allowed_origins: Vec<String>,
    /// Host names (without port) a request's `Host` may name; `"*"` allows any. When not
    /// configured: loopback names only if every listener is on a loopback address, else any.
    pub allowed_hosts: Vec<String>,
    /// `allowed_hosts` was not configured, and is the default described above.
    pub allowed_hosts_default: bool,
    /// How long a request's head may take to arrive once its first byte has (then `408`).
    pub header_timeout: Duration,
    /// Server-to-client streams (GET, `subscriptions/listen`) one client address may hold
    /// open at once (0: no limit).
    pub max_streams_per_client: usize,
    pub tls: Option<TlsConfig>,
}

/// The Host names a proxy listening only on loopback addresses accepts by default.
pub const LOOPBACK_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "[::1]"];

impl ServerConfig {
    /// Every listener (plain and TLS) is on a loopback address.
    pub fn loopback_only(&self) -> bool {
        let tls = self.tls.iter().flat_map(|t| t.listen.iter());
        self.listen.iter().chain(tls).all(|addr| addr.ip().is_loopback())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TlsConfig {
    pub listen: Vec<SocketAddr>,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    pub listen: Option<SocketAddr>,
    /// A file holding the bearer token every admin request must carry (`Authorization: Bearer
    /// <token>`); read at start and on reload. Meant for admin listeners beyond loopback.
    pub token_file: Option<PathBuf>,
    /// Host names (without port) an admin request's `Host` may name (DNS-rebinding
    /// protection, as `server.allowed_hosts`); `"*"` allows any. When not configured:
    /// loopback names if the admin listener is on loopback, else any.
    pub allowed_hosts: Vec<String>,
    /// `/metrics` also exports each route's most called tools and resources by name
    /// (`mcp_operation_*`, bounded by the top-K table; see `insight`).
    pub operation_metrics: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CacheConfig {
    pub memory: u64,
    pub disk_path: Option<PathBuf>,
    pub disk_size: u64,
    pub max_entry_size: u64,
    /// The tier shared by every node (`[cache.shared]`), between the local tiers and the
    /// upstream.
    pub shared: Option<SharedConfig>,
}

/// `[cache.shared]`: a Redis (or Valkey) server that nodes share answers and invalidations
/// through.
#[derive(Debug, Clone, PartialEq)]
pub struct SharedConfig {
    /// Where the tier lives: one server (`url`) or a Redis/Valkey Cluster (`cluster`).
    pub servers: SharedServers,
    /// On a cluster, the networks (`cluster_allow`) its nodes may be in, besides the seeds;
    /// none: the kind of network the seeds are in (see `cluster_nodes`).
    pub cluster_allow: Option<Vec<ipnet::IpNet>>,
    /// A file holding the server's password (`AUTH`), read at start.
    pub password_file: Option<PathBuf>,
    /// A file holding the secret the nodes share (keyed names, sealed values, signed
    /// announcements), read at start; none: the tier trusts whoever can write to the server.
    pub secret_file: Option<SecretFile>,
    /// PEM CA certificates a `rediss://` server is verified against (instead of the system
    /// roots).
    pub ca_file: Option<PathBuf>,
    /// Longest wait for one shared-tier operation before it counts as failed and the request
    /// goes on without it.
    pub timeout: Duration,
    /// Larger answers are kept only in the local tiers.
    pub max_entry_size: u64,
    /// Longest life of a shared entry (and of an invalidation marker, plus a margin).
    pub ttl_cap: Duration,
    /// Prefix of every key and of the invalidation channel: deployments that share one
    /// server keep apart by it.
    pub key_prefix: String,
}

/// Where the shared tier lives.
#[derive(Debug, Clone, PartialEq)]
pub enum SharedServers {
    /// `url`: `redis://host:port/db` or `rediss://…` (TLS), without a password.
    One(String),
    /// `cluster`: seed nodes of a Redis or Valkey Cluster (`redis://host:port` or
    /// `rediss://…`, all of one scheme); the client learns the rest of the cluster from them.
    Cluster(Vec<String>),
}

impl SharedServers {
    /// Whether the servers are reached over TLS (`rediss://`).
    pub fn over_tls(&self) -> bool {
        match self {
            SharedServers::One(url) => url.starts_with("rediss://"),
            SharedServers::Cluster(seeds) => seeds.iter().any(|seed| seed.starts_with("rediss://")),
        }
    }
}

/// `cache.shared.secret_file`: the file, and the line of the configuration naming it (for
/// `check`'s messages about its content).
#[derive(Debug, Clone, PartialEq)]
pub struct SecretFile {
    pub path: PathBuf,
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CompressionConfig {
    pub gzip: bool,
    pub min_size: u64,
    /// Compress `text/event-stream` responses too (flushed per event).
    pub sse: bool,
}

/// How a route picks an upstream for requests not pinned to a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Balance {
    #[default]
    RoundRobin,
    LeastConn,
    /// Consistent hashing on the client's identity (authorization context, else address).
    Consistent,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    pub name: String,
    /// Path prefix this route serves (longest prefix wins).
    pub path: String,
    pub upstreams: Vec<UpstreamUrl>,
    pub balance: Balance,
    pub connect_timeout: Duration,
    /// Longest silence allowed while reading an upstream answer to a POST. Server-to-client
    /// streams (GET, `subscriptions/listen`) have no read timeout.
    pub read_timeout: Duration,
    /// PEM CA certificates that `https://` upstreams are verified against (instead of the
    /// system roots).
    pub ca_file: Option<PathBuf>,
    pub policy: CachePolicy,
    pub prefetch: PrefetchConfig,
    pub health: HealthConfig,
    /// `[route.discovery]`: upstreams written as names re-resolved to every address.
    pub discovery: DiscoveryConfig,
    /// `[route.scaling]`: what the route's scaling signals are measured against.
    pub scaling: ScalingConfig,
    pub limits: LimitsConfig,
    pub subscriptions: SubscriptionsConfig,
    /// `[route.auth]`: bearer tokens checked at the edge (`None`: passed through unchecked).
    pub auth: Option<AuthConfig>,
}

/// `[route.auth]`: the route is an OAuth 2.1 protected resource; mcp-edge checks each
/// request's bearer token (see [`crate::auth`]).
#[derive(Debug, Clone, PartialEq)]
pub struct AuthConfig {
    /// What tokens must satisfy (issuer, audience, algorithms, skew, scopes).
    pub requirements: crate::auth::Requirements,
    /// Where the issuer's signing keys are read from.
    pub keys: KeySource,
    /// Whether a request without a token is refused (else it passes, as no one).
    pub required: bool,
    /// The metadata's `authorization_servers` (the issuer unless listed).
    pub authorization_servers: Vec<String>,
    /// The metadata's `scopes_supported` (the required scopes unless listed).
    pub scopes_supported: Vec<String>,
    /// When set, the upstream gets this header naming the verified subject instead of the
    /// client's token (for upstreams that trust the edge).
    pub subject_header: Option<String>,
    /// How often a fetched key set is fetched again.
    pub jwks_refresh: Duration,
}

impl AuthConfig {
    /// The route as a protected resource (its metadata).
    pub fn resource(&self) -> crate::auth::metadata::Resource {
        crate::auth::metadata::Resource {
            resource: self.requirements.audience.clone(),
            authorization_servers: self.authorization_servers.clone(),
            scopes_supported: self.scopes_supported.clone(),
        }
    }
}

/// Where a route's verification keys come from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeySource {
    /// A JWKS URL, fetched at start, again every `jwks_refresh`, and when a token names a key
    /// the set lacks (at a bounded rate).
    Url(String),
    /// A JWKS file, read at start and on reload.
    File(PathBuf),
}

/// `[route.subscriptions]`: the edge's own subscriptions to the public entries it caches (see
/// [`crate::subscriptions`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriptionsConfig {
    pub enabled: bool,
    /// Resource URIs the route subscribes to, per protocol era; more are not subscribed.
    pub max_subscriptions: usize,
}

/// A route's admission limits; 0 means no limit. Refusals are `429` with `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LimitsConfig {
    /// Requests of this route being forwarded upstream at once.
    pub max_concurrent: usize,
    /// Requests per second from one client address (hits included).
    pub rate_per_client: usize,
    /// Requests per second from one verified subject (`[route.auth]`), hits included.
    pub rate_per_subject: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CachePolicy {
    pub resource_ttl: Duration,
    pub list_ttl: Duration,
    pub tool_ttl: Duration,
    pub max_ttl: Duration,
    pub honor_server_hints: bool,
    pub shared: bool,
    /// Lower-case name of the header that identifies the caller's authorization context.
    pub identity_header: String,
    pub cache_tools: Vec<String>,
    pub readonly_tools: bool,
    pub stale_if_error: Duration,
    /// `_meta` members the operator vouches never change an answer, left out of cache keys
    /// besides those the specification defines so ([`crate::jsonrpc::META_NEVER_KEYED`]).
    pub unkeyed_meta: Vec<String>,
    /// What a successful `tools/call` of a tool not known to be read-only invalidates.
    pub invalidate_on_write: WriteInvalidation,
}

/// The lifetime of an answer the server gave no `ttlMs` for, unless the route says otherwise
/// (`resource_ttl`, `list_ttl`, `tool_ttl`): a guess, so a short one. Varnish's default TTL
/// for answers without cache headers is 120 s; nginx keeps nothing without a stated lifetime.
pub const UNHINTED_TTL: Duration = Duration::from_secs(120);

/// `route.policy.invalidate_on_write`: how much a write (a successful `tools/call` of a tool
/// the upstream does not call read-only) invalidates, as an unsafe method does in an HTTP
/// cache (RFC 9111 §4.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WriteInvalidation {
    /// The resources its result names, and every entry of the route kept on mcp-edge's own
    /// TTL (without a server hint): what the server did not vouch for may have changed.
    #[default]
    Unhinted,
    /// Only the resources its result names (`resource_link` and embedded resource URIs).
    Named,
    /// Nothing: entries live by their TTLs and the notifications seen.
    None,
}

impl WriteInvalidation {
    pub fn named(name: &str) -> Option<WriteInvalidation> {
        match name {
            "unhinted" => Some(WriteInvalidation::Unhinted),
            "named" => Some(WriteInvalidation::Named),
            "none" => Some(WriteInvalidation::None),
            _ => None,
        }
    }
}

/// `[route.prefetch]`: fetching what a client is likely to read next (see
/// [`crate::prefetch`]). Off unless enabled: it sends the upstream requests no client made.
#[derive(Debug, Clone, PartialEq)]
pub struct PrefetchConfig {
    pub enabled: bool,
    /// A predicted read at least this likely is fetched at once.
    pub immediate_confidence: f64,
    /// At least this likely: fetched after `delay`, if the client has not asked meanwhile.
    pub min_confidence: f64,
    /// Distinct client contexts that must have made a transition before it is fetched for a
    /// context that did not make it itself (1 ..= `prefetch::sequence::MAX_WITNESSES`).
    pub min_identities: usize,
    pub delay: Duration,
    /// Prefetches of the route in flight at once.
    pub max_inflight: usize,
    /// Prefetches no client has used (yet), as a share of the route's upstream requests over
    /// the last 10 s: the extra load prefetching may add.
    pub max_share: f64,
    /// A hit in this last share of its entry's lifetime refreshes the entry (0: off).
    pub refresh_ahead: f64,
    /// URIs read at start (and kept fresh) with no client's credentials: public resources.
    pub warm: Vec<String>,
}

/// `[route.discovery]`: DNS discovery of a route's replicas. On (the table is there, or an
/// upstream is an `srv+http(s)://` URL), every upstream written as a host name is resolved to
/// all its addresses (A and AAAA; SRV records for `srv+…` URLs) and again every `interval`, or
/// sooner when the records' TTL ends; replicas come and go with the answers.
#[derive(Debug, Clone, PartialEq)]
pub struct DiscoveryConfig {
    pub enabled: bool,
    pub interval: Duration,
    /// The DNS server asked (`ip:port`); none: the system's (`/etc/resolv.conf`).
    pub resolver: Option<std::net::SocketAddr>,
}

/// `[route.scaling]`: the target an autoscaler compares the route's upstream latency with
/// (exported as `mcp_route_latency_target_seconds`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ScalingConfig {
    pub latency_target: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HealthConfig {
    pub interval: Duration,
    pub timeout: Duration,
}

impl Config {
    /// Parses and validates a configuration; on failure returns every problem found.
    pub fn from_toml(source: &str) -> Result<Config, Vec<Problem>> {
        let map = SourceMap::new(source);
        let syntax_problem = |e: toml::de::Error| match e.span() {
            Some(span) => map.problem(span, e.message().to_string()),
            None => unplaced(e.message().to_string()),
        };
        let document = toml::de::DeTable::parse(source).map_err(|e| vec![syntax_problem(e)])?;
        let mut problems = Vec::new();
        match schema::read_reporting_unknown::<RawConfig>(source, document.get_ref(), &map, &mut problems) {
            Ok(raw) => {
                let mut checker = Checker { map: &map, problems };
                let config = checker.config(raw);
                if checker.problems.is_empty() { Ok(config) } else { Err(checker.problems) }
            }
            Err(e) => {
                problems.push(syntax_problem(e));
                Err(problems)
            }
        }
    }

    /// The route serving `path`: the one with the longest matching prefix.
    pub fn route_for(&self, path: &str) -> Option<&RouteConfig> {
        crate::routing::longest_prefix(&self.routes, path, |r| &r.path)
    }
}
