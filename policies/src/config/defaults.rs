//! The default of every optional key, written once. The checker falls back to these values,
//! and the tests hold the README's configuration table and the shipped sample configurations
//! to them (`docs_tests`).

use std::net::SocketAddr;
use std::time::Duration;

use super::*;
use crate::subscriptions::DEFAULT_MAX_SUBSCRIPTIONS;

/// The Host names a listener accepts unless configured: loopback names when it listens on
/// loopback only (what a local client sends), else any.
pub(super) fn default_allowed_hosts(loopback_only: bool) -> Vec<String> {
    if loopback_only { LOOPBACK_HOSTS.map(str::to_string).to_vec() } else { vec!["*".to_string()] }
}

impl Default for ServerConfig {
    fn default() -> Self {
        let mut server = ServerConfig {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 8080))],
            threads: 2,
            max_body: 4 << 20,
            allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            allowed_hosts_default: true,
            header_timeout: Duration::from_secs(10),
            max_streams_per_client: 64,
            tls: None,
        };
        server.allowed_hosts = default_allowed_hosts(server.loopback_only());
        server
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        let listen = SocketAddr::from(([127, 0, 0, 1], 9090));
        AdminConfig {
            allowed_hosts: default_allowed_hosts(listen.ip().is_loopback()),
            listen: Some(listen),
            token_file: None,
            operation_metrics: false,
        }
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig { memory: 256 << 20, disk_path: None, disk_size: 4 << 30, max_entry_size: 8 << 20, shared: None }
    }
}

impl SharedConfig {
    /// The shared tier at `url` (its one required key), every other key at its default.
    pub fn for_url(url: String) -> Self {
        SharedConfig::for_servers(SharedServers::One(url))
    }

    /// The shared tier on `servers`, every other key at its default.
    pub fn for_servers(servers: SharedServers) -> Self {
        SharedConfig {
            servers,
            cluster_allow: None,
            password_file: None,
            secret_file: None,
            ca_file: None,
            timeout: Duration::from_millis(20),
            max_entry_size: 1 << 20,
            ttl_cap: Duration::from_secs(3600),
            key_prefix: "mcp-edge".to_string(),
        }
    }
}

impl Default for CompressionConfig {
    fn default() -> Self {
        CompressionConfig { gzip: true, min_size: 1024, sse: false }
    }
}

impl RouteConfig {
    /// A route from its required keys (and its name, which defaults to its path), every other
    /// key at its default.
    pub fn new(name: String, path: String, upstreams: Vec<UpstreamUrl>) -> Self {
        RouteConfig {
            name,
            path,
            upstreams,
            balance: Balance::default(),
            connect_timeout: Duration::from_secs(3),
            read_timeout: Duration::from_secs(60),
            ca_file: None,
            policy: CachePolicy::default(),
            prefetch: PrefetchConfig::default(),
            health: HealthConfig::default(),
            discovery: DiscoveryConfig::default(),
            scaling: ScalingConfig::default(),
            limits: LimitsConfig::default(),
            subscriptions: SubscriptionsConfig::default(),
            auth: None,
        }
    }
}

impl Default for SubscriptionsConfig {
    fn default() -> Self {
        SubscriptionsConfig { enabled: true, max_subscriptions: DEFAULT_MAX_SUBSCRIPTIONS }
    }
}

impl Default for CachePolicy {
    fn default() -> Self {
        CachePolicy {
            resource_ttl: UNHINTED_TTL,
            list_ttl: UNHINTED_TTL,
            tool_ttl: UNHINTED_TTL,
            max_ttl: Duration::from_secs(86_400),
            honor_server_hints: true,
            shared: false,
            identity_header: "authorization".to_string(),
            cache_tools: Vec::new(),
            readonly_tools: false,
            stale_if_error: Duration::from_secs(600),
            unkeyed_meta: Vec::new(),
            invalidate_on_write: WriteInvalidation::default(),
        }
    }
}

impl Default for PrefetchConfig {
    fn default() -> Self {
        PrefetchConfig {
            enabled: false,
            immediate_confidence: 0.7,
            min_confidence: 0.4,
            min_identities: 3,
            delay: Duration::from_secs(5),
            max_inflight: 4,
            max_share: 0.2,
            refresh_ahead: 0.2,
            warm: Vec::new(),
        }
    }
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        DiscoveryConfig { enabled: false, interval: Duration::from_secs(5), resolver: None }
    }
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig { interval: Duration::from_secs(5), timeout: Duration::from_secs(1) }
    }
}
