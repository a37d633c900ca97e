//! Which resource a client reads next: first-order transitions between consecutive reads of one
//! client context (its authorization context, else its session), counted across every client
//! of a route and decayed over time.
//!
//! - Confidence of `B` after `A` is the decayed count of `A → B` over the decayed count of every
//!   transition out of `A`: P(next = B | just read A).
//! - One context counts once: a transition it made is counted again only after `half_life`, so
//!   one context's weight on a transition stays under 2 however often it repeats it, and it can
//!   neither raise a successor's confidence nor dilute the others' by repetition.
//! - Who may be steered by what (the trust rule): a prediction is made for context X only from
//!   X's own history (its own recent transitions, [`own`](super::own)), or from a transition
//!   that at least `min_identities` distinct contexts made (its *witnesses*). A context with a
//!   credential is corroborated only by witnesses with a credential: anonymous sessions cost
//!   nothing to open, so they never vouch for a credential's fetches (nor push a credential
//!   out of a full set of witnesses).
//! - A source needs recent evidence (`MIN_SUPPORT` decayed transitions) to predict anything, so
//!   an old habit no longer observed fades out: counts halve every `half_life`.
//! - Memory is bounded: at most `max_sources` sources, `MAX_SUCCESSORS` successors each (the
//!   weakest is replaced, as in the Space-Saving sketch) with `MAX_WITNESSES` witnesses each
//!   (8 bytes apiece), and `max_contexts` clients' last reads and own steps. A full table drops
//!   its least recently used tenth at once (amortised O(1)).
//! - URIs longer than `MAX_URI` are never learned (nor predicted).

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::own::OwnSteps;

/// Successors kept per source: enough for a page with a few likely next reads; a hub with many
/// children spreads its counts and predicts nothing anyway.
pub const MAX_SUCCESSORS: usize = 8;
/// Decayed transitions a source needs before it predicts.
pub const MIN_SUPPORT: f64 = 2.0;
/// Distinct contexts remembered per successor: the largest `min_identities` there can be.
pub const MAX_WITNESSES: usize = 8;
/// The longest URI learned.
pub const MAX_URI: usize = 1024;
/// Reads further apart than this (ms) in one context are not a sequence.
pub const MAX_GAP_MS: u64 = 10 * 60 * 1000;

/// A URI the model holds; shared between the sources that name it.
pub type Uri = Arc<str>;

/// How a route's model is sized and how fast it forgets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub max_sources: usize,
    pub max_contexts: usize,
    pub half_life: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_sources: 50_000, max_contexts: 50_000, half_life: Duration::from_secs(30 * 60) }
    }
}

/// The client context a read came from (see [`super::context_of`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Context {
    pub id: u64,
    /// It has a credential (an authorization context), not only a session.
    pub credentialed: bool,
}

impl Context {
    /// A witness's fingerprint: 31 bits of the id (mixed, so that nearby ids differ), the
    /// lowest bit telling a credential.
    fn print(self) -> u32 {
        let mixed = (self.id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as u32;
        (mixed & !1) | u32::from(self.credentialed)
    }
}

/// A context that made a transition, and when it was last counted (s).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Witness {
    print: u32,
    counted_at_s: u32,
}

impl Witness {
    fn credentialed(&self) -> bool {
        self.print & 1 == 1
    }
}

/// One likely next read.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    pub uri: Uri,
    pub confidence: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Successor {
    uri: Uri,
    weight: f64,
    /// Who made this transition (saved models from before witnesses have none: they predict
    /// for nobody until walked again).
    #[serde(default)]
    witnesses: Vec<Witness>,
}

impl Successor {
    /// Records `who` as a witness at `now_s`; `false` if it was counted less than
    /// `half_life_s` ago (then the transition is not counted again).
    fn witnessed(&mut self, who: Context, now_s: u32, half_life_s: u32) -> bool {
        let print = who.print();
        if let Some(known) = self.witnesses.iter_mut().find(|w| w.print == print) {
            if now_s.saturating_sub(known.counted_at_s) < half_life_s {
                return false;
            }
            known.counted_at_s = now_s;
            return true;
        }
        let witness = Witness { print, counted_at_s: now_s };
        if self.witnesses.len() < MAX_WITNESSES {
            self.witnesses.push(witness);
            return true;
        }
        // Full: the newcomer takes the place of the least recently counted witness of no more
        // standing than its own (anonymous sessions never push out credentials); with none
        // such it is not counted (so it cannot count again and again either).
        let place = self
            .witnesses
            .iter_mut()
            .filter(|w| who.credentialed || !w.credentialed())
            .min_by_key(|w| (w.credentialed(), w.counted_at_s));
        match place {
            Some(place) => *place = witness,
            None => return false,
        }
        true
    }

    /// Whether at least `min_identities` distinct contexts, with a credential if `for_whom`
    /// has one, made this transition.
    fn corroborated(&self, for_whom: Context, min_identities: usize) -> bool {
        let counted = self.witnesses.iter().filter(|w| !for_whom.credentialed || w.credentialed()).count();
        counted >= min_identities
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Source {
    /// Decayed count of every transition out of this source (replaced successors included).
    total: f64,
    /// When `total` and the weights were last decayed (ms).
    decayed_at_ms: u64,
    /// When the source itself was last read (ms): the least recently read are evicted first.
    read_at_ms: u64,
    successors: Vec<Successor>,
}

impl Source {
    fn decay_to(&mut self, now_ms: u64, half_life_ms: f64) {
        let elapsed = now_ms.saturating_sub(self.decayed_at_ms) as f64;
        if elapsed > 0.0 {
            let factor = 0.5f64.powf(elapsed / half_life_ms);
            self.total *= factor;
            self.successors.iter_mut().for_each(|s| s.weight *= factor);
            self.decayed_at_ms = now_ms;
        }
    }

    /// Counts `who`'s transition to `next` (once per `half_life_s` per context).
    fn count(&mut self, next: &Uri, who: Context, now_s: u32, half_life_s: u32) {
        if let Some(known) = self.successors.iter_mut().find(|s| s.uri == *next) {
            if known.witnessed(who, now_s, half_life_s) {
                known.weight += 1.0;
                self.total += 1.0;
            }
            return;
        }
        self.total += 1.0;
        let witnesses = vec![Witness { print: who.print(), counted_at_s: now_s }];
        if self.successors.len() < MAX_SUCCESSORS {
            self.successors.push(Successor { uri: next.clone(), weight: 1.0, witnesses });
            return;
        }
        // Space-Saving: the newcomer takes the weakest slot and inherits its weight, so a
        // frequent successor that arrives late still rises above the rest (not its witnesses:
        // they made another transition).
        let weakest = self.successors.iter_mut().min_by(|a, b| a.weight.total_cmp(&b.weight)).expect("full");
        weakest.uri = next.clone();
        weakest.weight += 1.0;
        weakest.witnesses = witnesses;
    }
}

/// A context's last read and its own recent transitions.
#[derive(Debug, Clone)]
struct LastRead {
    uri: u64,
    at_ms: u64,
    own: OwnSteps,
}

/// The model of one route.
#[derive(Debug)]
pub struct SequenceModel {
    limits: Limits,
    sources: HashMap<u64, (Uri, Source)>,
    contexts: HashMap<u64, LastRead>,
    hasher: std::collections::hash_map::RandomState,
}

impl SequenceModel {
    pub fn new(limits: Limits) -> SequenceModel {
        SequenceModel {
            limits,
            sources: HashMap::new(),
            contexts: HashMap::new(),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Sources and contexts held (for tests and metrics).
    pub fn len(&self) -> (usize, usize) {
        (self.sources.len(), self.contexts.len())
    }

    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// The most witnesses any successor holds, and the most own steps any context holds.
    #[cfg(test)]
    pub(super) fn most_held(&self) -> (usize, usize) {
        let witnesses = self.sources.values().flat_map(|(_, s)| &s.successors).map(|s| s.witnesses.len()).max();
        let steps = self.contexts.values().map(|read| read.own.len()).max();
        (witnesses.unwrap_or(0), steps.unwrap_or(0))
    }

    fn hash_of(&self, uri: &str) -> u64 {
        self.hasher.hash_one(uri)
    }

    /// Records that `context` read `uri` at `now_ms`, counting the transition from the
    /// context's previous read.
    pub fn observe(&mut self, context: Context, uri: &str, now_ms: u64) {
        if uri.len() > MAX_URI {
            self.contexts.remove(&context.id);
            return;
        }
        let current = self.hash_of(uri);
        let next = self.touch_source(current, uri, now_ms);
        let known = self.contexts.contains_key(&context.id);
        if !known && self.contexts.len() >= self.limits.max_contexts {
            evict_oldest_tenth(&mut self.contexts, |read| read.at_ms);
        }
        let read = self.contexts.entry(context.id).or_insert(LastRead {
            uri: current,
            at_ms: now_ms,
            own: OwnSteps::default(),
        });
        let previous = std::mem::replace(&mut read.uri, current);
        let previous_at = std::mem::replace(&mut read.at_ms, now_ms);
        if !known || previous == current || now_ms.saturating_sub(previous_at) > MAX_GAP_MS {
            return;
        }
        read.own.record(previous, current);
        let half_life_ms = self.half_life_ms();
        let half_life_s = (half_life_ms / 1000.0).ceil() as u32;
        if let Some((_, source)) = self.sources.get_mut(&previous) {
            source.decay_to(now_ms, half_life_ms);
            source.count(&next, context, (now_ms / 1000) as u32, half_life_s);
        }
    }

    /// What `context` is likely to read after `uri` (confidence at least `min_confidence`),
    /// most likely first: successors it walked itself (with the confidence of its own walks),
    /// and successors `min_identities` distinct contexts walked (with the route's confidence).
    pub fn predict(
        &self,
        context: Context,
        uri: &str,
        now_ms: u64,
        min_confidence: f64,
        min_identities: usize,
    ) -> Vec<Prediction> {
        let source_hash = self.hash_of(uri);
        let Some((_, source)) = self.sources.get(&source_hash) else { return Vec::new() };
        // Decay without mutating: the ratios do not change with it, the support does.
        let elapsed = now_ms.saturating_sub(source.decayed_at_ms) as f64;
        let factor = 0.5f64.powf(elapsed / self.half_life_ms());
        let shared = source.total * factor >= MIN_SUPPORT;
        let own = self.contexts.get(&context.id).map(|read| &read.own);
        let mut predictions: Vec<Prediction> = source
            .successors
            .iter()
            .filter_map(|s| {
                let route_wide = (shared && s.corroborated(context, min_identities)).then(|| s.weight / source.total);
                let (to_next, from) = own.map_or((0, 0), |own| own.evidence(source_hash, self.hash_of(&s.uri)));
                let its_own = (f64::from(from) >= MIN_SUPPORT).then(|| f64::from(to_next) / f64::from(from));
                let confidence = route_wide.into_iter().chain(its_own).reduce(f64::max)?;
                Some(Prediction { uri: s.uri.clone(), confidence })
            })
            .filter(|p| p.confidence >= min_confidence && p.confidence > 0.0)
            .collect();
        predictions.sort_by(|a, b| b.confidence.total_cmp(&a.confidence));
        predictions
    }

    fn half_life_ms(&self) -> f64 {
        (self.limits.half_life.as_millis() as f64).max(1.0)
    }

    /// The source entry of `uri`, made if new and marked read now; returns the model's copy of
    /// the URI (shared by every source that names it as a successor).
    fn touch_source(&mut self, hash: u64, uri: &str, now_ms: u64) -> Uri {
        if let Some((known, source)) = self.sources.get_mut(&hash) {
            source.read_at_ms = now_ms;
            return known.clone();
        }
        if self.sources.len() >= self.limits.max_sources {
            evict_oldest_tenth(&mut self.sources, |(_, source)| source.read_at_ms);
        }
        let interned = Uri::from(uri);
        let source = Source { total: 0.0, decayed_at_ms: now_ms, read_at_ms: now_ms, successors: Vec::new() };
        self.sources.insert(hash, (interned.clone(), source));
        interned
    }

    /// The model's state, for keeping it across a restart.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            sources: self
                .sources
                .values()
                .map(|(uri, source)| SavedSource { uri: uri.clone(), source: source.clone() })
                .collect(),
        }
    }

    /// Restores a [`SequenceModel::snapshot`] (what does not fit the limits is dropped).
    pub fn restore(&mut self, snapshot: Snapshot) {
        for saved in snapshot.sources.into_iter().take(self.limits.max_sources) {
            let hash = self.hash_of(&saved.uri);
            self.sources.insert(hash, (saved.uri, saved.source));
        }
    }
}

/// A model's sources, serializable.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Snapshot {
    sources: Vec<SavedSource>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SavedSource {
    uri: Uri,
    #[serde(flatten)]
    source: Source,
}

/// Drops the least recently touched tenth of `table` (at least one entry).
fn evict_oldest_tenth<V>(table: &mut HashMap<u64, V>, touched_at: impl Fn(&V) -> u64) {
    let drop_count = (table.len() / 10).max(1);
    let mut ages: Vec<u64> = table.values().map(&touched_at).collect();
    let cutoff_index = drop_count.min(ages.len()) - 1;
    let (_, cutoff, _) = ages.select_nth_unstable(cutoff_index);
    let cutoff = *cutoff;
    let mut dropped = 0;
    table.retain(|_, value| {
        let old = touched_at(value) <= cutoff && dropped < drop_count;
        dropped += usize::from(old);
        !old
    });
}
