//! What an upstream's `tools/list` says about its tools' safety, learned per route: a tool
//! annotated read-only, idempotent and closed-world may be cached (`readonly_tools = true`);
//! a tool the route caches by name (`cache_tools`) that the upstream marks as changing state
//! is said plainly (a warning once per configuration, `/stats`, the dashboard, `status`).

use std::collections::{BTreeSet, HashSet};
use std::sync::Mutex;

/// What the upstream's `tools/list` said: the tools it declared read-only, idempotent and
/// closed-world, and those of `cache_tools` it marks as not read-only or destructive.
#[derive(Default)]
pub struct ReadonlyTools {
    safe: Mutex<HashSet<String>>,
    doubtful: Mutex<BTreeSet<String>>,
}

impl ReadonlyTools {
    pub fn contains(&self, name: &str) -> bool {
        self.safe.lock().expect("readonly tools").contains(name)
    }

    /// The tools `cache_tools` names that the upstream marks as changing state, by name.
    pub fn doubtful(&self) -> Vec<String> {
        self.doubtful.lock().expect("doubtful tools").iter().cloned().collect()
    }

    /// Learns from a `tools/list` result of route `route`, whose `cache_tools` are given.
    pub fn learn(&self, result: &str, route: &str, cache_tools: &[String]) {
        let Ok(list) = serde_json::from_str::<serde_json::Value>(result) else { return };
        let Some(tools) = list["tools"].as_array() else { return };
        for tool in tools {
            let (Some(name), hints) = (tool["name"].as_str(), &tool["annotations"]) else { continue };
            let safe =
                hints["readOnlyHint"] == true && hints["idempotentHint"] == true && hints["openWorldHint"] == false;
            let mut known = self.safe.lock().expect("readonly tools");
            if safe {
                known.insert(name.to_string());
            } else {
                known.remove(name);
            }
            drop(known);
            if cache_tools.iter().any(|listed| listed == name) {
                self.judge_listed(name, hints, route);
            }
        }
    }

    /// A tool `cache_tools` names: doubtful when its upstream does not call it read-only or
    /// calls it destructive (warned of once, until the configuration is reloaded).
    fn judge_listed(&self, name: &str, hints: &serde_json::Value, route: &str) {
        let why = match (hints["readOnlyHint"] == true, hints["destructiveHint"] == true) {
            (_, true) => "destructive",
            (false, _) => "not read-only",
            (true, false) => {
                self.doubtful.lock().expect("doubtful tools").remove(name);
                return;
            }
        };
        if self.doubtful.lock().expect("doubtful tools").insert(name.to_string()) {
            tracing::warn!(
                route,
                tool = name,
                "route.policy.cache_tools names {name:?}, which the upstream's tools/list marks {why}: its answers are cached as configured, so a second call within their TTL does not reach the server"
            );
        }
    }
}
