//! What one route caches publicly in one era that a subscription can keep fresh.

use std::collections::HashMap;

use super::MAX_URI;
use crate::cache::ListKind;

/// Which kinds of list a subscription listens for (`list_changed`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Lists {
    pub resources: bool,
    pub tools: bool,
    pub prompts: bool,
}

impl Lists {
    pub fn contains(&self, kind: ListKind) -> bool {
        match kind {
            ListKind::Resources => self.resources,
            ListKind::Tools => self.tools,
            ListKind::Prompts => self.prompts,
        }
    }

    pub fn any(&self) -> bool {
        self.resources || self.tools || self.prompts
    }

    /// The kinds both hold.
    pub fn and(&self, other: &Lists) -> Lists {
        Lists {
            resources: self.resources && other.resources,
            tools: self.tools && other.tools,
            prompts: self.prompts && other.prompts,
        }
    }
}

/// What noting a public entry's URI did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Noted {
    /// Already watched (its life was extended).
    Known,
    /// Newly watched: the subscriptions grow.
    Added,
    /// Not watched: the route already watches `max_subscriptions` URIs. The entry lives by its
    /// TTL, as without subscriptions.
    Full,
    /// Not watched: longer than [`MAX_URI`].
    TooLong,
}

/// The resource URIs and kinds of list one route has public entries of, in one era, each until
/// its newest entry expires; at most `limit` URIs.
///
/// When full, new URIs are refused (and counted), not swapped for old ones: evicting would let
/// one client that reads many public URIs churn the subscriptions (each new URI an unsubscribe
/// and a subscribe upstream, and in the stateless era a new stream), while refusing leaves the
/// URIs already watched watched. What is refused is no worse off than without subscriptions (it
/// lives by its TTL), and room comes back as watched entries expire (see [`Watched::prune`]).
#[derive(Debug)]
pub struct Watched {
    /// Each URI and when its newest public entry expires (ms since the epoch).
    uris: HashMap<Box<str>, u64>,
    /// Each kind of list, until when a public entry of it lives (0: none).
    lists_until: [u64; 3],
    limit: usize,
    /// Bumped whenever something is added (a stateless-era stream must then be replaced).
    grown: u64,
    /// Bumped whenever anything is added or removed (a handshake-era session then subscribes
    /// or unsubscribes).
    changed: u64,
}

/// A snapshot of what is watched, for a subscription to ask for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wanted {
    /// Sorted, so that the same set always makes the same request.
    pub uris: Vec<String>,
    pub lists: Lists,
    /// The [`Watched`]'s growth count when taken.
    pub grown: u64,
}

impl Wanted {
    pub fn is_empty(&self) -> bool {
        self.uris.is_empty() && !self.lists.any()
    }
}

fn list_index(kind: ListKind) -> usize {
    match kind {
        ListKind::Resources => 0,
        ListKind::Tools => 1,
        ListKind::Prompts => 2,
    }
}

impl Watched {
    pub fn new(limit: usize) -> Watched {
        Watched { uris: HashMap::new(), lists_until: [0; 3], limit, grown: 0, changed: 0 }
    }

    /// A public entry of `uri`, fresh until `expires_at_ms`, was stored. Allocates only when the
    /// URI is new.
    pub fn note_uri(&mut self, uri: &str, expires_at_ms: u64) -> Noted {
        if uri.len() > MAX_URI {
            return Noted::TooLong;
        }
        if let Some(until) = self.uris.get_mut(uri) {
            *until = (*until).max(expires_at_ms);
            return Noted::Known;
        }
        if self.uris.len() >= self.limit {
            return Noted::Full;
        }
        self.uris.insert(uri.into(), expires_at_ms);
        self.grown += 1;
        self.changed += 1;
        Noted::Added
    }

    /// A public list of `kind`, fresh until `expires_at_ms`, was stored; whether the kind is new.
    pub fn note_list(&mut self, kind: ListKind, expires_at_ms: u64, now_ms: u64) -> bool {
        let until = &mut self.lists_until[list_index(kind)];
        let new = *until <= now_ms;
        *until = (*until).max(expires_at_ms);
        if new {
            self.grown += 1;
            self.changed += 1;
        }
        new
    }

    /// Forgets what no fresh entry needs any more (its newest entry expired by `now_ms`): a
    /// change to it can no longer make a served answer stale. How many URIs were forgotten.
    pub fn prune(&mut self, now_ms: u64) -> usize {
        let before = self.uris.len();
        self.uris.retain(|_, until| *until > now_ms);
        let lists_before = self.lists(now_ms);
        for until in &mut self.lists_until {
            if *until <= now_ms {
                *until = 0;
            }
        }
        let removed = before - self.uris.len();
        if removed > 0 || lists_before != self.lists(now_ms) {
            self.changed += 1;
        }
        removed
    }

    /// A new limit (on reload). Shrinking keeps the URIs whose entries live longest.
    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit;
        if self.uris.len() <= limit {
            return;
        }
        let mut lives: Vec<u64> = self.uris.values().copied().collect();
        lives.sort_unstable_by(|a, b| b.cmp(a));
        let cutoff = lives[limit - 1];
        // Ties at the cutoff: keep the first ones met, up to the limit.
        let mut kept = self.uris.values().filter(|&&until| until > cutoff).count();
        self.uris.retain(|_, until| match (*until).cmp(&cutoff) {
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Less => false,
            std::cmp::Ordering::Equal if kept < limit => {
                kept += 1;
                true
            }
            std::cmp::Ordering::Equal => false,
        });
        self.changed += 1;
    }

    /// The kinds of list with a fresh public entry at `now_ms`.
    pub fn lists(&self, now_ms: u64) -> Lists {
        let [resources, tools, prompts] = self.lists_until.map(|until| until > now_ms);
        Lists { resources, tools, prompts }
    }

    /// What a subscription should ask for now.
    pub fn wanted(&self, now_ms: u64) -> Wanted {
        let mut uris: Vec<String> = self.uris.keys().map(|uri| uri.to_string()).collect();
        uris.sort_unstable();
        Wanted { uris, lists: self.lists(now_ms), grown: self.grown }
    }

    /// Whether anything is watched at `now_ms` (else no subscription is needed).
    pub fn wants_anything(&self, now_ms: u64) -> bool {
        !self.uris.is_empty() || self.lists(now_ms).any()
    }

    /// URIs watched.
    pub fn len(&self) -> usize {
        self.uris.len()
    }

    pub fn is_empty(&self) -> bool {
        self.uris.is_empty()
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    pub fn contains(&self, uri: &str) -> bool {
        self.uris.contains_key(uri)
    }

    /// Growth count: bumped by every addition.
    pub fn grown(&self) -> u64 {
        self.grown
    }

    /// Change count: bumped by every addition and removal.
    pub fn changed(&self) -> u64 {
        self.changed
    }
}
