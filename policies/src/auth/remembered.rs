//! Tokens already verified, so a client's next request with the same token costs a lookup
//! instead of a signature check (an RSA or ECDSA verification is tens of microseconds).
//!
//! Only tokens that passed every check are remembered, each until its `exp`, under the key
//! set generation it was checked with: when the issuer's keys change, tokens are checked
//! again. The token itself is the key (compared whole), so no two tokens are ever confused.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use super::Verified;

/// Tokens remembered per route at most; past it the expired ones go, then all (a route's
/// active users hold a token or two each).
pub const CAPACITY: usize = 16_384;

/// Tokens longer than this are verified every time, never held.
const MAX_REMEMBERED_LEN: usize = 4096;

type Tokens = HashMap<Box<str>, (u64, Arc<Verified>)>;

#[derive(Default)]
pub struct Remembered {
    tokens: RwLock<Tokens>,
}

impl Remembered {
    /// The verification of `token` under key set `generation`, if remembered and still in its
    /// lifetime at `now` (seconds) give or take `skew`.
    pub fn get(&self, token: &str, generation: u64, now: u64, skew: Duration) -> Option<Arc<Verified>> {
        let tokens = self.tokens.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (checked_under, verified) = tokens.get(token)?;
        (*checked_under == generation && verified.is_current(now, skew)).then(|| verified.clone())
    }

    /// Remembers `verified` for `token`, verified under key set `generation`.
    pub fn put(&self, token: &str, generation: u64, verified: Arc<Verified>, now: u64) {
        if token.len() > MAX_REMEMBERED_LEN {
            return;
        }
        let mut tokens = self.tokens.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        if tokens.len() >= CAPACITY {
            tokens.retain(|_, (_, verified)| verified.expires_at >= now);
            if tokens.len() >= CAPACITY {
                tokens.clear();
            }
        }
        tokens.insert(token.into(), (generation, verified));
    }

    pub fn len(&self) -> usize {
        self.tokens.read().unwrap_or_else(|poisoned| poisoned.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
