//! End-to-end tests: the real mcp-edge binary, real sockets, real MCP servers.

mod balancing;
mod cache;
mod cli;
mod compression;
mod discovery;
mod errors;
mod faults;
mod fidelity;
mod freshness;
mod harness;
mod hit_path;
mod insight;
mod limits;
mod logs;
mod operator;
mod passthrough;
mod peers;
mod prefetch;
mod prefetch_trust;
mod raw;
mod request_bodies;
mod safety;
mod shared_tier;
mod subscriptions;
mod tenants;
pub mod tls;
mod traces;
