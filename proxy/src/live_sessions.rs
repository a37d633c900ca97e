//! The handshake-era sessions this node has seen alive, by the session id the client was given,
//! with the capabilities each declared in its `initialize` when this node saw it.
//!
//! - A cached answer is served to a handshake-era request only if its session is known alive
//!   here: minted through this node, or answered by its upstream through this node since, and
//!   not ended (a `DELETE`, or a `404`/`400` from the upstream for it). Any other session id
//!   (one that ended, one the upstream restarted away, one never minted) goes to the upstream,
//!   which answers it as it would without mcp-edge (its `404` tells the client to initialize
//!   again). A session known alive elsewhere (another node) costs one trip to the upstream.
//! - Lists may depend on the declared capabilities: a route that shares answers
//!   (`shared = true`) shares a list only among sessions that declared the same (see
//!   `mcp_edge_policies::cache::declared_capabilities`).
//!
//! Bounded: the oldest sessions are forgotten first (their next request goes upstream once).

use std::collections::{HashMap, VecDeque};
use std::sync::{LazyLock, Mutex};

/// Sessions remembered at most.
const MAX_SESSIONS: usize = 1 << 16;

#[derive(Default)]
pub struct LiveSessions {
    inner: Mutex<Book>,
}

#[derive(Default)]
struct Book {
    /// Session → the hash of the capabilities it declared, if this node saw its `initialize`.
    alive: HashMap<String, Option<String>>,
    /// In the order first seen (stale names of ended sessions are skipped when they come up).
    order: VecDeque<String>,
}

impl LiveSessions {
    /// `session` was minted through this node for an `initialize` declaring `capabilities`
    /// (their hash; `None`: not read).
    pub fn minted(&self, session: &str, capabilities: Option<String>) {
        let mut book = self.inner.lock().expect("live sessions");
        if book.alive.insert(session.to_string(), capabilities).is_none() {
            book.remember_order(session);
        }
    }

    /// The upstream answered a request of `session` (2xx): it is alive.
    pub fn answered(&self, session: &str) {
        let mut book = self.inner.lock().expect("live sessions");
        if !book.alive.contains_key(session) {
            book.alive.insert(session.to_string(), None);
            book.remember_order(session);
        }
    }

    /// `session` ended (deleted, or refused by its upstream).
    pub fn ended(&self, session: &str) {
        self.inner.lock().expect("live sessions").alive.remove(session);
    }

    /// Whether `session` is known alive here, and the capabilities it declared if known.
    pub fn lookup(&self, session: &str) -> Option<Option<String>> {
        self.inner.lock().expect("live sessions").alive.get(session).cloned()
    }
}

impl Book {
    fn remember_order(&mut self, session: &str) {
        self.order.push_back(session.to_string());
        while self.order.len() > MAX_SESSIONS {
            if let Some(oldest) = self.order.pop_front() {
                self.alive.remove(&oldest);
            }
        }
    }
}

/// The process's one book.
pub static LIVE_SESSIONS: LazyLock<LiveSessions> = LazyLock::new(LiveSessions::default);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_alive_from_its_mint_or_an_answer_until_it_ends() {
        let book = LiveSessions::default();
        assert_eq!(book.lookup("s"), None, "never seen");
        book.minted("s", Some("caps".into()));
        assert_eq!(book.lookup("s"), Some(Some("caps".into())));
        book.answered("s");
        assert_eq!(book.lookup("s"), Some(Some("caps".into())), "an answer keeps what it declared");
        book.ended("s");
        assert_eq!(book.lookup("s"), None);
        book.answered("t");
        assert_eq!(book.lookup("t"), Some(None), "alive, its declaration unknown here");
    }

    #[test]
    fn sessions_are_remembered_up_to_a_bound_oldest_forgotten_first() {
        let book = LiveSessions::default();
        for n in 0..MAX_SESSIONS + 2 {
            book.minted(&format!("s{n}"), Some(format!("caps{}", n % 2)));
        }
        assert_eq!(book.lookup("s0"), None);
        assert_eq!(book.lookup("s1"), None);
        assert_eq!(book.lookup("s2"), Some(Some("caps0".into())));
        assert_eq!(book.lookup(&format!("s{}", MAX_SESSIONS + 1)), Some(Some("caps1".into())));
    }
}
