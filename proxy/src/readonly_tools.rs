//! What an upstream's `tools/list` says about its tools' safety, learned per route: a tool
//! annotated read-only, idempotent and closed-world may be cached (`readonly_tools = true`).

use std::collections::HashSet;
use std::sync::Mutex;

/// Tools an upstream declared read-only, idempotent and closed-world in its `tools/list`.
#[derive(Default)]
pub struct ReadonlyTools(Mutex<HashSet<String>>);

impl ReadonlyTools {
    pub fn contains(&self, name: &str) -> bool {
        self.0.lock().expect("readonly tools").contains(name)
    }

    /// Learns from a `tools/list` result.
    pub fn learn(&self, result: &str) {
        let Ok(list) = serde_json::from_str::<serde_json::Value>(result) else { return };
        let Some(tools) = list["tools"].as_array() else { return };
        let mut known = self.0.lock().expect("readonly tools");
        for tool in tools {
            let (Some(name), hints) = (tool["name"].as_str(), &tool["annotations"]) else { continue };
            let safe =
                hints["readOnlyHint"] == true && hints["idempotentHint"] == true && hints["openWorldHint"] == false;
            if safe {
                known.insert(name.to_string());
            } else {
                known.remove(name);
            }
        }
    }
}
