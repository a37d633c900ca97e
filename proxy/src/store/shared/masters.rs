//! On a Redis Cluster: which masters the cluster reports reachable (`CLUSTER NODES`, asked of
//! any node), read every [`READ_EVERY`], for `/stats`, `/readyz`, the dashboard and
//! `mcp_shared_tier_master_up{master}`.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use redis::cluster_async::ClusterConnection;
use serde::Serialize;

use super::SharedTier;
use super::link::Link;
use crate::metrics::METRICS;

const READ_EVERY: Duration = Duration::from_secs(2);

/// One master, as the cluster last reported it.
#[derive(Debug, Clone, Serialize)]
pub struct Master {
    /// `host:port`.
    pub address: String,
    pub reachable: bool,
}

#[derive(Default)]
pub(super) struct Masters {
    last: Mutex<Vec<Master>>,
}

impl Masters {
    pub(super) fn list(&self) -> Vec<Master> {
        self.last.lock().expect("masters").clone()
    }

    /// Reads the report now and every [`READ_EVERY`] on `runtime`, until the tier is dropped.
    pub(super) fn watch(self: &Arc<Self>, tier: Weak<SharedTier>, runtime: &tokio::runtime::Handle) {
        let masters = Arc::downgrade(self);
        runtime.spawn(async move {
            loop {
                let Some(masters) = masters.upgrade() else { return };
                let Some(Link::Cluster(mut connection)) = tier.upgrade().map(|tier| tier.link()) else { return };
                masters.read(&mut connection).await;
                drop(masters);
                tokio::time::sleep(READ_EVERY).await;
            }
        });
    }

    async fn read(&self, connection: &mut ClusterConnection) {
        let mut command = redis::cmd("CLUSTER");
        command.arg("NODES");
        let asked = command.query_async::<String>(connection);
        let Ok(Ok(nodes)) = tokio::time::timeout(Duration::from_secs(1), asked).await else {
            // Unanswered: the last report stands (and the breaker tells whether reads fail).
            return;
        };
        let masters: Vec<Master> = mcp_edge_policies::shared_tier::cluster_masters(&nodes)
            .into_iter()
            .map(|(address, reachable)| Master { address, reachable })
            .collect();
        // Series of masters no longer listed go with them.
        METRICS.shared_tier_master_up.reset();
        for master in &masters {
            METRICS.shared_tier_master_up.with_label_values(&[&master.address]).set(master.reachable as i64);
        }
        *self.last.lock().expect("masters") = masters;
    }
}
