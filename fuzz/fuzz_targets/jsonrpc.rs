#![no_main]
//! Any POST body: parsing never panics, reads the body exactly as the two-pass reference
//! does, and a cacheable request's lookup and key are built without panicking either.
use libfuzzer_sys::fuzz_target;
use mcp_edge_policies::cache::{Caller, lookup_for};
use mcp_edge_policies::config::Config;

fuzz_target!(|body: &[u8]| {
    let parsed = mcp_edge_policies::jsonrpc::parse(body);
    assert_eq!(parsed, mcp_edge_policies::jsonrpc::parse_in_two_passes(body));
    let Ok(message) = parsed else { return };
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
