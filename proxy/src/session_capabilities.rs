//! The capabilities each handshake-era session declared in its `initialize`, by the session id
//! the client was given: lists may depend on them, so a route that shares answers
//! (`shared = true`) shares a list only among sessions that declared the same (see
//! `mcp_edge_policies::cache::declared_capabilities`).
//!
//! Bounded: the oldest sessions are forgotten first. A session this node does not know (one
//! forgotten, or initialized through another node) keeps its lists to itself.

use std::collections::{HashMap, VecDeque};
use std::sync::{LazyLock, Mutex};

/// Sessions remembered at most.
const MAX_SESSIONS: usize = 1 << 16;

#[derive(Default)]
pub struct SessionCapabilities {
    inner: Mutex<Remembered>,
}

#[derive(Default)]
struct Remembered {
    by_session: HashMap<String, String>,
    order: VecDeque<String>,
}

impl SessionCapabilities {
    /// `session` (as the client sees it) declared capabilities hashing to `capabilities`.
    pub fn remember(&self, session: &str, capabilities: String) {
        let mut inner = self.inner.lock().expect("session capabilities");
        if inner.by_session.insert(session.to_string(), capabilities).is_some() {
            return;
        }
        inner.order.push_back(session.to_string());
        if inner.order.len() > MAX_SESSIONS
            && let Some(oldest) = inner.order.pop_front()
        {
            inner.by_session.remove(&oldest);
        }
    }

    /// What `session` declared, if this node knows.
    pub fn of(&self, session: &str) -> Option<String> {
        self.inner.lock().expect("session capabilities").by_session.get(session).cloned()
    }
}

/// The process's one table.
pub static SESSION_CAPABILITIES: LazyLock<SessionCapabilities> = LazyLock::new(SessionCapabilities::default);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_remembered_up_to_a_bound_oldest_forgotten_first() {
        let table = SessionCapabilities::default();
        for n in 0..MAX_SESSIONS + 2 {
            table.remember(&format!("s{n}"), format!("caps{}", n % 2));
        }
        assert_eq!(table.of("s0"), None);
        assert_eq!(table.of("s1"), None);
        assert_eq!(table.of("s2").as_deref(), Some("caps0"));
        assert_eq!(table.of(&format!("s{}", MAX_SESSIONS + 1)).as_deref(), Some("caps1"));
    }
}
