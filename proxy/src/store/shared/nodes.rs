//! On a cluster: the resolver every node connection goes through (seeds, nodes learned from
//! `CLUSTER SLOTS`, `MOVED` and `ASK` targets). It connects only where the rule in
//! `mcp_edge_policies::cluster_nodes` admits: a node announcing an address outside the
//! operator's `cluster_allow` (or the seeds' kind of network) gets no connection, so neither
//! the tier's password nor its entries. A refusal is counted and logged once per address.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mcp_edge_policies::cluster_nodes::{ClusterNodeRule, NetworkKind, Refusal, network_kind};
use redis::io::AsyncDNSResolver;
use redis::{ErrorKind, RedisError, RedisFuture};

use crate::metrics::METRICS;

/// Distinct refused addresses logged (later ones are only counted).
const MAX_LOGGED: usize = 64;
/// Distinct node addresses (other than the seeds') connected to per [`NEW_NODES_WINDOW`]: far
/// more masters than a cluster has (the client connects to masters only).
const MAX_NEW_NODES: usize = 256;
const NEW_NODES_WINDOW: Duration = Duration::from_secs(600);

pub(super) struct NodeGuard {
    rule: ClusterNodeRule,
    /// The kinds of network the seeds resolved to so far.
    seed_kinds: Mutex<Vec<NetworkKind>>,
    logged: Mutex<HashSet<SocketAddr>>,
    /// The addresses connected to in the current window, and when it began.
    admitted: Mutex<(Instant, HashSet<SocketAddr>)>,
}

impl NodeGuard {
    pub(super) fn new(rule: ClusterNodeRule) -> Arc<NodeGuard> {
        Arc::new(NodeGuard {
            rule,
            seed_kinds: Mutex::default(),
            logged: Mutex::default(),
            admitted: Mutex::new((Instant::now(), HashSet::new())),
        })
    }

    /// Whether a node at `address` (`ip:port` as `CLUSTER NODES` gives it) would be refused.
    pub(super) fn refuses(&self, address: &str) -> bool {
        let Some((host, _)) = address.rsplit_once(':') else { return false };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let Ok(ip) = host.parse() else { return false };
        !self.rule.is_seed(host) && self.rule.admits(ip, &self.seed_kinds()).is_err()
    }

    fn seed_kinds(&self) -> Vec<NetworkKind> {
        self.seed_kinds.lock().expect("seed kinds").clone()
    }

    /// The addresses of `host` the tier may connect to.
    fn admitted(&self, host: &str, resolved: Vec<SocketAddr>) -> Result<Vec<SocketAddr>, RedisError> {
        if self.rule.is_seed(host) {
            let mut kinds = self.seed_kinds.lock().expect("seed kinds");
            for address in &resolved {
                let kind = network_kind(address.ip());
                if !kinds.contains(&kind) {
                    kinds.push(kind);
                }
            }
            return Ok(resolved);
        }
        let kinds = self.seed_kinds();
        let (admitted, refused): (Vec<_>, Vec<_>) = resolved
            .into_iter()
            .map(|address| (address, self.rule.admits(address.ip(), &kinds).map_err(Some)))
            .map(|(address, admitted)| (address, admitted.and_then(|()| self.within_new_nodes(address))))
            .partition(|(_, r)| r.is_ok());
        for (address, refusal) in &refused {
            self.note_refused(host, *address, refusal.expect_err("refused"));
        }
        if admitted.is_empty() && !refused.is_empty() {
            return Err(RedisError::from((
                ErrorKind::InvalidClientConfig,
                "cluster node refused",
                format!("{host} is refused (see cache.shared.cluster_allow)"),
            )));
        }
        Ok(admitted.into_iter().map(|(address, _)| address).collect())
    }

    /// Whether `address` is one of the [`MAX_NEW_NODES`] admitted in the current window (`None`
    /// when past it).
    fn within_new_nodes(&self, address: SocketAddr) -> Result<(), Option<Refusal>> {
        let mut admitted = self.admitted.lock().expect("admitted nodes");
        if admitted.0.elapsed() >= NEW_NODES_WINDOW {
            *admitted = (Instant::now(), HashSet::new());
        }
        if admitted.1.contains(&address) || admitted.1.len() < MAX_NEW_NODES {
            admitted.1.insert(address);
            return Ok(());
        }
        Err(None)
    }

    /// `refusal`: by the rule, or (`None`) past the window's count of new nodes.
    fn note_refused(&self, host: &str, address: SocketAddr, refusal: Option<Refusal>) {
        METRICS.shared_tier_nodes_refused.inc();
        let mut logged = self.logged.lock().expect("logged refusals");
        if logged.len() >= MAX_LOGGED || !logged.insert(address) {
            return;
        }
        let why = match refusal {
            Some(Refusal::NotAllowed) => "not in cache.shared.cluster_allow",
            Some(Refusal::OtherNetwork) => {
                "in another kind of network than the seeds (set cache.shared.cluster_allow to allow it)"
            }
            None => "past the 256 new nodes a cluster may name in 10 minutes",
        };
        tracing::warn!("shared tier: the cluster named node {host} ({address}), {why}: not connecting to it");
    }
}

/// The resolver handed to the cluster client.
pub(super) struct GuardedResolver(pub(super) Arc<NodeGuard>);

impl AsyncDNSResolver for GuardedResolver {
    fn resolve<'a, 'b: 'a>(
        &'a self,
        host: &'b str,
        port: u16,
    ) -> RedisFuture<'a, Box<dyn Iterator<Item = SocketAddr> + Send + 'a>> {
        Box::pin(async move {
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
            let admitted = self.0.admitted(host, resolved)?;
            Ok(Box::new(admitted.into_iter()) as Box<dyn Iterator<Item = SocketAddr> + Send>)
        })
    }
}
