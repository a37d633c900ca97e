//! What an upstream's `tools/list` says about its tools' safety, learned per route: a tool
//! annotated read-only, idempotent and closed-world may be cached (`readonly_tools = true`);
//! a call of a tool not annotated read-only is a write, which invalidates
//! (`invalidate_on_write`);
//! a tool the route caches by name (`cache_tools`) that the upstream marks as changing state
//! is said plainly (a warning once per configuration, `/stats`, the dashboard, `status`).

use std::collections::{BTreeSet, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// What the upstream's `tools/list` said: the tools it declared read-only, idempotent and
/// closed-world, and those of `cache_tools` it marks as not read-only or destructive.
#[derive(Default)]
pub struct ReadonlyTools {
    known: Mutex<Known>,
    /// A `tools/list` result has been learned from (since the configuration was loaded).
    learned: AtomicBool,
    doubtful: Mutex<BTreeSet<String>>,
}

#[derive(Default)]
struct Known {
    /// Annotated read-only, idempotent and closed-world: may be cached.
    safe: HashSet<String>,
    /// Annotated `readOnlyHint: true` (the safe ones among them): calling them is no write.
    read_only: HashSet<String>,
}

impl ReadonlyTools {
    pub fn contains(&self, name: &str) -> bool {
        self.known.lock().expect("readonly tools").safe.contains(name)
    }

    /// Whether the upstream annotated `name` `readOnlyHint: true` (calling it is no write).
    pub fn declared_read_only(&self, name: &str) -> bool {
        self.known.lock().expect("readonly tools").read_only.contains(name)
    }

    /// Whether no `tools/list` result was learned from yet (a cached one, answered as a hit,
    /// is then read once: after a reload or restart the list may never reach the upstream).
    fn unlearned(&self) -> bool {
        !self.learned.load(Ordering::Relaxed)
    }

    /// The tools `cache_tools` names that the upstream marks as changing state, by name.
    pub fn doubtful(&self) -> Vec<String> {
        self.doubtful.lock().expect("doubtful tools").iter().cloned().collect()
    }

    /// Learns from a `tools/list` result of route `route`, whose `cache_tools` are given.
    pub fn learn(&self, result: &str, route: &str, cache_tools: &[String]) {
        let Ok(list) = serde_json::from_str::<serde_json::Value>(result) else { return };
        let Some(tools) = list["tools"].as_array() else { return };
        self.learned.store(true, Ordering::Relaxed);
        for tool in tools {
            let (Some(name), hints) = (tool["name"].as_str(), &tool["annotations"]) else { continue };
            let read_only = hints["readOnlyHint"] == true;
            let safe = read_only && hints["idempotentHint"] == true && hints["openWorldHint"] == false;
            let mut known = self.known.lock().expect("readonly tools");
            let Known { safe: safe_set, read_only: read_only_set } = &mut *known;
            for (set, member) in [(safe_set, safe), (read_only_set, read_only)] {
                if member {
                    set.insert(name.to_string());
                } else {
                    set.remove(name);
                }
            }
            drop(known);
            if cache_tools.iter().any(|listed| listed == name) {
                self.judge_listed(name, hints, route);
            }
        }
    }

    /// Learns from a cached `tools/list` answer (`stored`: an encoded entry) served as a hit,
    /// if nothing was learned yet.
    pub fn learn_from_hit(&self, stored: &[u8], route: &str, cache_tools: &[String]) {
        if self.unlearned()
            && let Some(entry) = mcp_edge_policies::cache::Entry::decode(stored)
            && let Ok(result) = std::str::from_utf8(entry.result)
        {
            self.learn(result, route, cache_tools);
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
