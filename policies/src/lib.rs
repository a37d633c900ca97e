//! Pure decision logic of mcp-edge: no I/O, so every rule is unit-testable and benchmarkable.
//!
//! - [`config`]: the TOML configuration model and its validation (`mcp-edge check`);
//! - [`jsonrpc`]: what a POST body is (method, id, params), JSON-RPC error bodies;
//! - [`method`]: the MCP methods and notifications mcp-edge tells apart;
//! - [`canonical`]: exact JSON for keys (no duplicate keys, numbers by their text);
//! - [`headers`]: protocol eras and the stateless era's mirrored headers;
//! - [`affinity`]: session ids that name the upstream owning the session;
//! - [`routing`]: longest-prefix routes and upstream paths;
//! - [`balance`]: least-connections and consistent-hash key choice;
//! - [`admission`]: which disk-tier hits earn a copy in the memory tier;
//! - [`prefetch`]: what to fetch before a client asks (learned sequences, budgets);
//! - [`shared_tier`]: the tier nodes share on Redis (names, lives, announcements, breaker);
//! - [`subscriptions`]: the edge's own subscriptions to what it caches publicly;
//! - [`auth`]: bearer tokens checked at the edge, and the authorization context they carry.

pub mod admission;
pub mod affinity;
pub mod auth;
pub mod balance;
pub mod cache;
pub mod canonical;
pub mod cluster_nodes;
pub mod config;
pub mod headers;
pub mod hex;
pub mod insight;
pub mod jsonrpc;
pub mod key_property;
pub mod method;
pub mod observe;
pub mod prefetch;
pub mod problem;
pub mod routing;
pub mod schema;
pub mod shared_tier;
pub mod sse;
pub mod subscriptions;
pub mod trace_context;
pub mod units;
pub mod upstream;

pub use config::Config;
pub use problem::Problem;
