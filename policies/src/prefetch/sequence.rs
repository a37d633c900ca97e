//! Which resource a client reads next: first-order transitions between consecutive reads of one
//! client context (its authorization context, else its session), counted across every client
//! of a route and decayed over time.
//!
//! - Confidence of `B` after `A` is the decayed count of `A → B` over the decayed count of every
//!   transition out of `A`: P(next = B | just read A).
//! - A source needs recent evidence (`MIN_SUPPORT` decayed transitions) to predict anything, so
//!   an old habit no longer observed fades out: counts halve every `half_life`.
//! - Memory is bounded: at most `max_sources` sources, `MAX_SUCCESSORS` successors each (the
//!   weakest is replaced, as in the Space-Saving sketch), and `max_contexts` clients' last
//!   reads. A full table drops its least recently used tenth at once (amortised O(1)).
//! - URIs longer than `MAX_URI` are never learned (nor predicted).

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Successors kept per source: enough for a page with a few likely next reads; a hub with many
/// children spreads its counts and predicts nothing anyway.
pub const MAX_SUCCESSORS: usize = 8;
/// Decayed transitions a source needs before it predicts.
pub const MIN_SUPPORT: f64 = 2.0;
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

    fn count(&mut self, next: &Uri) {
        self.total += 1.0;
        if let Some(known) = self.successors.iter_mut().find(|s| s.uri == *next) {
            known.weight += 1.0;
            return;
        }
        if self.successors.len() < MAX_SUCCESSORS {
            self.successors.push(Successor { uri: next.clone(), weight: 1.0 });
            return;
        }
        // Space-Saving: the newcomer takes the weakest slot and inherits its weight, so a
        // frequent successor that arrives late still rises above the rest.
        let weakest = self.successors.iter_mut().min_by(|a, b| a.weight.total_cmp(&b.weight)).expect("full");
        weakest.uri = next.clone();
        weakest.weight += 1.0;
    }
}

#[derive(Debug, Clone, Copy)]
struct LastRead {
    uri: u64,
    at_ms: u64,
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

    fn hash_of(&self, uri: &str) -> u64 {
        self.hasher.hash_one(uri)
    }

    /// Records that `context` read `uri` at `now_ms`, counting the transition from the
    /// context's previous read.
    pub fn observe(&mut self, context: u64, uri: &str, now_ms: u64) {
        if uri.len() > MAX_URI {
            self.contexts.remove(&context);
            return;
        }
        let current = self.hash_of(uri);
        let next = self.touch_source(current, uri, now_ms);
        let previous = self.contexts.insert(context, LastRead { uri: current, at_ms: now_ms });
        if previous.is_none() && self.contexts.len() > self.limits.max_contexts {
            evict_oldest_tenth(&mut self.contexts, |read| read.at_ms);
        }
        let Some(previous) = previous else { return };
        if previous.uri == current || now_ms.saturating_sub(previous.at_ms) > MAX_GAP_MS {
            return;
        }
        let half_life_ms = self.half_life_ms();
        if let Some((_, source)) = self.sources.get_mut(&previous.uri) {
            source.decay_to(now_ms, half_life_ms);
            source.count(&next);
        }
    }

    /// What is likely read after `uri` (confidence at least `min_confidence`), most likely first.
    pub fn predict(&self, uri: &str, now_ms: u64, min_confidence: f64) -> Vec<Prediction> {
        let Some((_, source)) = self.sources.get(&self.hash_of(uri)) else { return Vec::new() };
        // Decay without mutating: the ratios do not change with it, the support does.
        let elapsed = now_ms.saturating_sub(source.decayed_at_ms) as f64;
        let factor = 0.5f64.powf(elapsed / self.half_life_ms());
        if source.total * factor < MIN_SUPPORT {
            return Vec::new();
        }
        let mut predictions: Vec<Prediction> = source
            .successors
            .iter()
            .map(|s| Prediction { uri: s.uri.clone(), confidence: s.weight / source.total })
            .filter(|p| p.confidence >= min_confidence)
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
