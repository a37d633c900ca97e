#![no_main]
//! Any POST body: parsing never panics, and a cacheable request's lookup and key are built
//! without panicking either.
use libfuzzer_sys::fuzz_target;
use mcp_edge_policies::cache::{Caller, lookup_for};
use mcp_edge_policies::config::Config;

fuzz_target!(|body: &[u8]| {
    let Ok(message) = mcp_edge_policies::jsonrpc::parse(body) else { return };
    let config = Config::from_toml(
        "[[route]]\npath = \"/mcp\"\nupstreams = [\"http://h:1/mcp\"]\n[route.policy]\nreadonly_tools = true\n",
    )
    .unwrap();
    let caller =
        Caller { identity: Some("u".into()), session: Some("s".into()), stateless: false, protocol_version: None };
    if let Some(lookup) = lookup_for("r", &message, &caller, &config.routes[0].policy, |_| true) {
        for scope in &lookup.scopes {
            let _ = lookup.key(scope);
        }
    }
});
