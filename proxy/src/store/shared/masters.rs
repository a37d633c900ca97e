//! On a Redis Cluster: which masters the cluster reports reachable (`CLUSTER NODES`, asked of
//! any node), read every 2 s (see `SharedTier::watch`), for `/stats`, `/readyz`, the dashboard and
//! `mcp_shared_tier_master_up{master}`.

use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

use super::link::Link;
use super::nodes::NodeGuard;
use crate::metrics::METRICS;

/// One master, as the cluster last reported it.
#[derive(Debug, Clone, Serialize)]
pub struct Master {
    /// `host:port`.
    pub address: String,
    /// Reported reachable by the cluster, and not refused by this node.
    pub reachable: bool,
    /// Its address is outside `cache.shared.cluster_allow` (or the seeds' network): this node
    /// does not connect to it, and misses what lives there.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub refused: bool,
}

#[derive(Default)]
pub(super) struct Masters {
    last: Mutex<Vec<Master>>,
}

impl Masters {
    pub(super) fn list(&self) -> Vec<Master> {
        self.last.lock().expect("masters").clone()
    }

    /// Reads the report; the slots of the masters this node refuses to connect to, if it was
    /// answered.
    pub(super) async fn read(&self, link: &mut Link, guard: &NodeGuard) -> Option<Vec<(u16, u16)>> {
        let mut command = redis::cmd("CLUSTER");
        command.arg("NODES");
        let asked = command.query_async::<String>(link);
        let Ok(Ok(nodes)) = tokio::time::timeout(Duration::from_secs(1), asked).await else {
            // Unanswered: the last report stands (and the breaker tells whether reads fail).
            return None;
        };
        let mut refused_slots = Vec::new();
        let masters: Vec<Master> = mcp_edge_policies::shared_tier::cluster_masters(&nodes)
            .into_iter()
            .map(|master| {
                let refused = guard.refuses(&master.address);
                if refused {
                    refused_slots.extend(master.slots);
                }
                Master { reachable: master.reachable && !refused, refused, address: master.address }
            })
            .collect();
        // Series of masters no longer listed go with them.
        METRICS.shared_tier_master_up.reset();
        for master in &masters {
            METRICS.shared_tier_master_up.with_label_values(&[&master.address]).set(master.reachable as i64);
        }
        *self.last.lock().expect("masters") = masters;
        Some(refused_slots)
    }
}
