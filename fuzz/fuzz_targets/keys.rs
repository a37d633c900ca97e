#![no_main]
//! Two bodies (split at the first 0xFF byte): if they share a cache key, the upstream reads
//! the same method and params from both, whichever value of a duplicate key it keeps.
use libfuzzer_sys::fuzz_target;
use mcp_edge_policies::config::Config;
use mcp_edge_policies::key_property::same_key_means_same_reading;

fuzz_target!(|data: &[u8]| {
    let Some(split) = data.iter().position(|&b| b == 0xFF) else { return };
    let config = Config::from_toml("[[route]]\npath = \"/mcp\"\nupstreams = [\"http://h:1/mcp\"]\n").unwrap();
    let mut policy = config.routes[0].policy.clone();
    policy.readonly_tools = true;
    if let Err(problem) = same_key_means_same_reading(&data[..split], &data[split + 1..], &policy) {
        panic!("{problem}");
    }
});
