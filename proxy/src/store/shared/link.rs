//! The shared tier's command connection: one server through the redis crate's reconnecting
//! `ConnectionManager`, or a Redis/Valkey Cluster through its cluster client (slot map,
//! `MOVED`/`ASK`, failover and resharding are the client's), behind one type the rest of the
//! tier sends commands through. Both connect lazily: a server or cluster down at start is
//! reached once it is up.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, IntoConnectionInfo, Pipeline, RedisFuture, Value};

use mcp_edge_policies::cluster_nodes::ClusterNodeRule;
use mcp_edge_policies::config::{SharedConfig, SharedServers};

use super::nodes::{GuardedResolver, NodeGuard};

/// Where the tier's commands go.
#[derive(Clone)]
pub(super) enum Link {
    One(ConnectionManager),
    Cluster(ClusterConnection),
}

/// How the tier reaches its servers: the command connection, and one client per server a
/// subscription may be made to (any node of a cluster hears every announcement: classic
/// pub/sub is broadcast over the cluster bus).
pub(super) struct Reach {
    pub(super) link: Link,
    pub(super) subscribers: Vec<redis::Client>,
    /// On a cluster, the client its connection came from (to make a new one: see
    /// `SharedTier::on_cluster_answer`).
    pub(super) cluster: Option<redis::cluster::ClusterClient>,
    /// On a cluster, which nodes it may connect to.
    pub(super) guard: Option<Arc<NodeGuard>>,
}

/// A new (lazy) connection from a cluster client, its background work on the current runtime.
pub(super) fn cluster_connection(client: &redis::cluster::ClusterClient) -> Link {
    Link::Cluster(client.get_pending_async_connection_with_config(ClusterConfig::new()))
}

impl ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Link::One(connection) => connection.req_packed_command(cmd),
            Link::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Link::One(connection) => connection.req_packed_commands(pipeline, offset, count),
            Link::Cluster(connection) => connection.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Link::One(connection) => connection.get_db(),
            Link::Cluster(connection) => connection.get_db(),
        }
    }
}

/// Opens (lazily) the connection `config` describes, on the current runtime. Fails only on
/// configuration: an unreadable password or CA file, a URL the client refuses.
pub(super) fn reach(config: &SharedConfig, max_delay: Duration) -> Result<Reach, String> {
    let password = read_password(config)?;
    let root_cert = read_ca(config)?;
    match &config.servers {
        SharedServers::One(url) => {
            let client = client(url, password.as_deref(), root_cert.clone(), "cache.shared.url")?;
            let connection_config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(config.timeout.max(Duration::from_millis(250))))
                .set_response_timeout(Some(config.timeout))
                .set_min_delay(Duration::from_millis(50))
                .set_max_delay(max_delay);
            let connection = ConnectionManager::new_lazy_with_config(client.clone(), connection_config)
                .map_err(|e| e.to_string())?;
            Ok(Reach { link: Link::One(connection), subscribers: vec![client], cluster: None, guard: None })
        }
        SharedServers::Cluster(seeds) => {
            let guard = NodeGuard::new(ClusterNodeRule::new(seeds, config.cluster_allow.clone()));
            let mut builder = ClusterClientBuilder::new(seeds.iter().map(String::as_str))
                .async_dns_resolver(GuardedResolver(guard.clone()));
            if let Some(password) = &password {
                builder = builder.password(password);
            }
            if let Some(pem) = &root_cert {
                builder = builder.certs(redis::TlsCertificates { client_tls: None, root_cert: Some(pem.clone()) });
            }
            // The tier's own deadline bounds every operation; the client's retries (after
            // MOVED, ASK, TRYAGAIN or a lost node) happen within it.
            let cluster = builder
                .connection_timeout(config.timeout.max(Duration::from_millis(250)))
                .response_timeout(config.timeout.max(Duration::from_millis(250)))
                .retries(3)
                .min_retry_wait(10)
                .max_retry_wait(max_delay.as_millis() as u64)
                .build()
                .map_err(|e| format!("cache.shared.cluster: {e}"))?;
            let subscribers = seeds
                .iter()
                .map(|seed| client(seed, password.as_deref(), root_cert.clone(), "cache.shared.cluster"))
                .collect::<Result<_, _>>()?;
            Ok(Reach { link: cluster_connection(&cluster), subscribers, cluster: Some(cluster), guard: Some(guard) })
        }
    }
}

/// Checks what opening would check (`mcp-edge check`): URLs, password and CA files.
pub(super) fn check(config: &SharedConfig) -> Result<(), String> {
    let password = read_password(config)?;
    let root_cert = read_ca(config)?;
    let (urls, what) = match &config.servers {
        SharedServers::One(url) => (std::slice::from_ref(url), "cache.shared.url"),
        SharedServers::Cluster(seeds) => (&seeds[..], "cache.shared.cluster"),
    };
    for url in urls {
        client(url, password.as_deref(), root_cert.clone(), what)?;
    }
    Ok(())
}

/// The client for one server at `url`, with the password from its file (never in the
/// configuration).
fn client(url: &str, password: Option<&str>, root_cert: Option<Vec<u8>>, what: &str) -> Result<redis::Client, String> {
    let mut info = url.into_connection_info().map_err(|e| format!("{what}: {e}"))?;
    if let Some(password) = password {
        let redis = info.redis_settings().clone().set_password(password);
        info = info.set_redis_settings(redis);
    }
    match root_cert {
        Some(pem) => {
            let certificates = redis::TlsCertificates { client_tls: None, root_cert: Some(pem) };
            redis::Client::build_with_tls(info, certificates).map_err(|e| format!("cache.shared.ca_file: {e}"))
        }
        None => redis::Client::open(info).map_err(|e| format!("{what}: {e}")),
    }
}

fn read_password(config: &SharedConfig) -> Result<Option<String>, String> {
    let Some(path) = &config.password_file else { return Ok(None) };
    let password =
        std::fs::read_to_string(path).map_err(|e| format!("cache.shared.password_file {}: {e}", path.display()))?;
    let password = password.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        return Err(format!("cache.shared.password_file {} is empty", path.display()));
    }
    Ok(Some(password.to_string()))
}

fn read_ca(config: &SharedConfig) -> Result<Option<Vec<u8>>, String> {
    let Some(path) = &config.ca_file else { return Ok(None) };
    std::fs::read(path).map(Some).map_err(|e| format!("cache.shared.ca_file {}: {e}", path.display()))
}
