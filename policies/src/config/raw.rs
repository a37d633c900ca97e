//! The configuration as written in the file (serde's view). Every value that needs more
//! checking keeps its span, so a problem can name its line.

use serde::Deserialize;
use toml::Spanned;

pub(super) type Text = Option<Spanned<String>>;

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RawConfig {
    pub(super) server: RawServer,
    pub(super) admin: RawAdmin,
    pub(super) cache: RawCache,
    pub(super) compression: RawCompression,
    pub(super) log: RawLog,
    pub(super) tracing: RawTracing,
    pub(super) route: Vec<Spanned<RawRoute>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RawTracing {
    pub(super) otlp: Text,
    pub(super) sample_ratio: Option<Spanned<f64>>,
    pub(super) service_name: Text,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RawLog {
    pub(super) format: Text,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RawServer {
    pub(super) listen: Option<Vec<Spanned<String>>>,
    pub(super) threads: Option<Spanned<i64>>,
    pub(super) max_body: Text,
    pub(super) allowed_origins: Vec<Spanned<String>>,
    pub(super) allowed_hosts: Option<Vec<Spanned<String>>>,
    pub(super) header_timeout: Text,
    pub(super) max_streams_per_client: Option<Spanned<i64>>,
    pub(super) tls: Option<Spanned<RawTls>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RawTls {
    pub(super) listen: Vec<Spanned<String>>,
    pub(super) cert: Text,
    pub(super) key: Text,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RawAdmin {
    pub(super) listen: Text,
    pub(super) token_file: Option<String>,
    pub(super) allowed_hosts: Option<Vec<Spanned<String>>>,
    pub(super) operation_metrics: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RawCache {
    pub(super) memory: Text,
    pub(super) disk_path: Option<String>,
    pub(super) disk_size: Text,
    pub(super) max_entry_size: Text,
    pub(super) shared: Option<Spanned<RawShared>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RawShared {
    pub(super) url: Text,
    pub(super) cluster: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) cluster_allow: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) password_file: Option<String>,
    pub(super) secret_file: Option<Spanned<String>>,
    pub(super) ca_file: Option<String>,
    pub(super) timeout: Text,
    pub(super) max_entry_size: Text,
    pub(super) ttl_cap: Text,
    pub(super) key_prefix: Text,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RawCompression {
    pub(super) gzip: Option<bool>,
    pub(super) min_size: Option<Spanned<i64>>,
    pub(super) sse: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RawRoute {
    pub(super) name: Text,
    pub(super) path: Text,
    pub(super) upstreams: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) balance: Text,
    pub(super) connect_timeout: Text,
    pub(super) read_timeout: Text,
    pub(super) ca_file: Option<String>,
    pub(super) policy: RawPolicy,
    pub(super) prefetch: RawPrefetch,
    pub(super) health: RawHealth,
    pub(super) discovery: Option<Spanned<RawDiscovery>>,
    pub(super) scaling: RawScaling,
    pub(super) limits: RawLimits,
    pub(super) subscriptions: RawSubscriptions,
    pub(super) auth: Option<Spanned<RawAuth>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RawAuth {
    pub(super) issuer: Text,
    pub(super) audience: Text,
    pub(super) jwks_url: Text,
    pub(super) jwks_file: Text,
    pub(super) required: Option<bool>,
    pub(super) algorithms: Option<Vec<Spanned<String>>>,
    pub(super) clock_skew: Text,
    pub(super) scopes: Vec<Spanned<String>>,
    pub(super) scopes_supported: Option<Vec<Spanned<String>>>,
    pub(super) authorization_servers: Option<Vec<Spanned<String>>>,
    pub(super) instance_claims: Vec<Spanned<String>>,
    pub(super) subject_header: Text,
    pub(super) jwks_refresh: Text,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RawSubscriptions {
    pub(super) enabled: Option<bool>,
    pub(super) max_subscriptions: Option<Spanned<i64>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RawLimits {
    pub(super) max_concurrent: Option<Spanned<i64>>,
    pub(super) rate_per_client: Option<Spanned<i64>>,
    pub(super) rate_per_subject: Option<Spanned<i64>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RawPolicy {
    pub(super) resource_ttl: Text,
    pub(super) list_ttl: Text,
    pub(super) tool_ttl: Text,
    pub(super) max_ttl: Text,
    pub(super) honor_server_hints: Option<bool>,
    pub(super) shared: Option<bool>,
    pub(super) identity_header: Text,
    pub(super) cache_tools: Vec<String>,
    pub(super) readonly_tools: Option<bool>,
    pub(super) stale_if_error: Text,
    pub(super) unkeyed_meta: Vec<String>,
    pub(super) invalidate_on_write: Text,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RawPrefetch {
    pub(super) enabled: Option<bool>,
    pub(super) immediate_confidence: Option<Spanned<f64>>,
    pub(super) min_confidence: Option<Spanned<f64>>,
    pub(super) min_identities: Option<Spanned<i64>>,
    pub(super) delay: Text,
    pub(super) max_inflight: Option<Spanned<i64>>,
    pub(super) max_share: Option<Spanned<f64>>,
    pub(super) refresh_ahead: Option<Spanned<f64>>,
    pub(super) warm: Vec<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RawScaling {
    pub(super) latency_target: Text,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RawDiscovery {
    pub(super) interval: Text,
    pub(super) resolver: Text,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RawHealth {
    pub(super) interval: Text,
    pub(super) timeout: Text,
}
