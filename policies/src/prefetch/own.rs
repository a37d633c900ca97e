//! What one client context walked itself: its own recent transitions, so that what it taught
//! the model can be fetched for it alone without anybody else's corroboration.
//!
//! Bounded: `OWN_STEPS` distinct transitions per context (a walk of that many pages), the least
//! recently made one replaced first, each held as two 32-bit fingerprints of the model's
//! (randomly keyed) URI hashes and a count: 12 bytes a step, under 200 bytes a context.

/// Distinct transitions remembered per context.
pub const OWN_STEPS: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Step {
    source: u32,
    next: u32,
    count: u32,
}

/// One context's own recent transitions, the most recent last.
#[derive(Debug, Clone, Default)]
pub struct OwnSteps {
    steps: Vec<Step>,
}

/// The low half of a model URI hash (the model's hasher is keyed at random: no one can aim a
/// collision at another's step).
fn print(hash: u64) -> u32 {
    hash as u32
}

impl OwnSteps {
    /// The context went from the URI hashed `source` to the one hashed `next`.
    pub fn record(&mut self, source: u64, next: u64) {
        let (source, next) = (print(source), print(next));
        let known = self.steps.iter().position(|s| s.source == source && s.next == next);
        let mut step = match known {
            Some(index) => self.steps.remove(index),
            None => Step { source, next, count: 0 },
        };
        step.count = step.count.saturating_add(1);
        if self.steps.len() >= OWN_STEPS {
            self.steps.remove(0);
        }
        self.steps.push(step);
    }

    /// How often the context went from `source` to `next`, and from `source` anywhere.
    pub fn evidence(&self, source: u64, next: u64) -> (u32, u32) {
        let (source, next) = (print(source), print(next));
        self.steps
            .iter()
            .filter(|s| s.source == source)
            .fold((0, 0), |(to_next, from), s| (to_next + if s.next == next { s.count } else { 0 }, from + s.count))
    }

    pub fn len(&self) -> usize {
        self.steps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_steps_are_counted_and_bounded() {
        let mut own = OwnSteps::default();
        own.record(1, 2);
        own.record(1, 2);
        own.record(1, 3);
        assert_eq!(own.evidence(1, 2), (2, 3));
        assert_eq!(own.evidence(2, 1), (0, 0));
        for n in 0..OWN_STEPS as u64 * 2 {
            own.record(100 + n, 200 + n);
        }
        assert_eq!(own.len(), OWN_STEPS);
        assert_eq!(own.evidence(1, 2), (0, 0), "the oldest steps went first");
        // A step made again is the most recent one: it stays.
        own.record(7, 8);
        for n in 0..OWN_STEPS as u64 - 1 {
            own.record(1000 + n, 7);
        }
        assert_eq!(own.evidence(7, 8), (1, 1));
    }
}
