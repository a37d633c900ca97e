//! Request coalescing: concurrent misses for one key make one upstream request, the leader's;
//! the others wait until its answer is stored, then read it from the cache.
//!
//! A key whose last answer could not be cached (`ttlMs: 0`, an error result, a private answer
//! with no identity to key it by, …) is *passed* for a while, as Varnish's hit-for-pass does:
//! its misses go upstream at once. Waiting on a leader whose answer cannot serve them would
//! only add the leader's round trip to their own.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use mcp_edge_policies::cache::Key;
use prometheus::IntCounter;
use tokio::sync::watch;

use crate::metrics::cache_operation;

/// How long waiters still wait once the leader's upstream has begun to answer. The rest of the
/// leader's fetch is the transfer to its own client, which may read slowly or not at all: that
/// must not hold anybody else (they go upstream on their own instead).
pub const AFTER_ANSWER_BEGAN: Duration = Duration::from_millis(500);

/// How long a key whose answer could not be cached skips coalescing. Every uncacheable answer
/// renews it; a stored answer ends it.
const PASS_FOR: Duration = Duration::from_secs(30);
/// At most this many passed keys are remembered (a few MiB). When full, the expired ones are
/// dropped, and if none has expired, all of them: forgetting a pass only costs one wait.
const MAX_PASSES: usize = 65_536;

#[derive(Default)]
pub struct Coalescer {
    flights: Mutex<Flights>,
}

#[derive(Default)]
struct Flights {
    /// Keys being fetched, with what their waiters wait on (`true` once the upstream answers).
    inflight: HashMap<Key, watch::Receiver<bool>>,
    /// Keys whose last answer could not be cached, and until when they skip coalescing.
    passes: HashMap<Key, Instant>,
}

/// Held by the request that fetches a coalesced key; dropping it releases the waiters.
pub struct Leader {
    key: Key,
    progress: watch::Sender<bool>,
}

impl Leader {
    /// The upstream has begun to answer: waiters now wait [`AFTER_ANSWER_BEGAN`] at most.
    pub fn answer_began(&self) {
        self.progress.send_replace(true);
    }
}

pub enum Coalesce {
    Lead(Leader),
    /// Another request is fetching the same thing: wait on this ([`wait_for_leader`]), then
    /// look up again.
    Wait(watch::Receiver<bool>),
    /// The key's last answer could not be cached: go upstream without waiting.
    Pass,
}

impl Coalescer {
    /// Leads, joins or passes the fetch of `key`.
    pub fn coalesce(&self, key: Key) -> Coalesce {
        let mut flights = self.flights.lock().expect("coalescer");
        if flights.passed(&key) {
            COUNTERS.pass.inc();
            return Coalesce::Pass;
        }
        if let Some(waiting) = flights.inflight.get(&key)
            && waiting.has_changed().is_ok()
        {
            COUNTERS.wait.inc();
            return Coalesce::Wait(waiting.clone());
        }
        let (progress, receiver) = watch::channel(false);
        flights.inflight.insert(key, receiver);
        COUNTERS.lead.inc();
        Coalesce::Lead(Leader { key, progress })
    }

    /// Records what became of an upstream answer for `key`: stored in the cache, or not
    /// cacheable (then the key's next misses pass); and ends the lead, if this was the
    /// leader's answer (one lock for both).
    pub fn answered(&self, key: Key, stored: bool, leader: Option<Leader>) {
        let mut flights = self.flights.lock().expect("coalescer");
        if stored {
            flights.passes.remove(&key);
        } else {
            flights.pass(key, Instant::now() + PASS_FOR);
        }
        if let Some(leader) = leader {
            flights.inflight.remove(&leader.key);
        }
    }

    /// Ends a lead without an answer (the fetch failed): waiters wake up (the sender drops
    /// with the leader) and look up again.
    pub fn release(&self, leader: Leader) {
        self.flights.lock().expect("coalescer").inflight.remove(&leader.key);
    }
}

/// Waits until the leader is done (answered, failed or gone), for `limit` at most, and for
/// [`AFTER_ANSWER_BEGAN`] at most once its upstream has begun to answer.
pub async fn wait_for_leader(progress: &mut watch::Receiver<bool>, limit: Duration) {
    let mut deadline = tokio::time::Instant::now() + limit;
    loop {
        if *progress.borrow_and_update() {
            deadline = deadline.min(tokio::time::Instant::now() + AFTER_ANSWER_BEGAN);
        }
        match tokio::time::timeout_at(deadline, progress.changed()).await {
            Ok(Ok(())) => continue,
            // The leader is gone (done) or the time is up.
            Ok(Err(_)) | Err(_) => return,
        }
    }
}

impl Flights {
    fn passed(&mut self, key: &Key) -> bool {
        match self.passes.get(key) {
            None => false,
            Some(until) if Instant::now() < *until => true,
            Some(_) => {
                self.passes.remove(key);
                false
            }
        }
    }

    fn pass(&mut self, key: Key, until: Instant) {
        if self.passes.len() >= MAX_PASSES && !self.passes.contains_key(&key) {
            let now = Instant::now();
            self.passes.retain(|_, until| now < *until);
            if self.passes.len() >= MAX_PASSES {
                self.passes.clear();
            }
        }
        self.passes.insert(key, until);
    }
}

/// The coalescing outcomes of `mcp_cache_operations_total`, resolved once (one per miss).
struct Counters {
    lead: IntCounter,
    wait: IntCounter,
    pass: IntCounter,
}

static COUNTERS: LazyLock<Counters> = LazyLock::new(|| {
    let coalesce = |result| cache_operation("coalesce", "-", result);
    Counters { lead: coalesce("lead"), wait: coalesce("wait"), pass: coalesce("pass") }
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_miss_leads_and_the_next_ones_wait_until_it_is_released() {
        let coalescer = Coalescer::default();
        let Coalesce::Lead(leader) = coalescer.coalesce([1; 32]) else { panic!("the first miss leads") };
        let Coalesce::Wait(done) = coalescer.coalesce([1; 32]) else { panic!("the second waits") };
        assert!(matches!(coalescer.coalesce([2; 32]), Coalesce::Lead(_)), "another key has its own leader");
        coalescer.answered([1; 32], true, Some(leader));
        assert!(done.has_changed().is_err(), "the waiter is released with the leader");
        assert!(matches!(coalescer.coalesce([1; 32]), Coalesce::Lead(_)), "a stored answer leaves no pass");
    }

    #[test]
    fn an_uncacheable_answer_passes_the_key_until_one_is_stored() {
        let coalescer = Coalescer::default();
        let Coalesce::Lead(leader) = coalescer.coalesce([1; 32]) else { panic!("the first miss leads") };
        coalescer.answered([1; 32], false, Some(leader));
        assert!(matches!(coalescer.coalesce([1; 32]), Coalesce::Pass));
        assert!(matches!(coalescer.coalesce([1; 32]), Coalesce::Pass), "every miss passes, none leads");
        assert!(matches!(coalescer.coalesce([2; 32]), Coalesce::Lead(_)), "other keys still coalesce");
        coalescer.answered([1; 32], true, None);
        assert!(matches!(coalescer.coalesce([1; 32]), Coalesce::Lead(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_wait_for_the_leader_but_not_for_its_client() {
        let coalescer = Coalescer::default();
        let Coalesce::Lead(leader) = coalescer.coalesce([1; 32]) else { panic!("the first miss leads") };
        let Coalesce::Wait(mut progress) = coalescer.coalesce([1; 32]) else { panic!("the second waits") };
        let started = tokio::time::Instant::now();
        let waiter = tokio::spawn(async move { wait_for_leader(&mut progress, Duration::from_secs(60)).await });
        // A slow upstream is waited for...
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert!(!waiter.is_finished(), "the upstream has not answered yet: keep waiting");
        // ...but once it answers, the leader's own delivery is not.
        leader.answer_began();
        waiter.await.unwrap();
        let waited = started.elapsed();
        assert!(waited >= Duration::from_secs(20) && waited <= Duration::from_secs(20) + AFTER_ANSWER_BEGAN);
        drop(leader);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_is_released_when_the_leader_ends() {
        let coalescer = Coalescer::default();
        let Coalesce::Lead(leader) = coalescer.coalesce([1; 32]) else { panic!("the first miss leads") };
        let Coalesce::Wait(mut progress) = coalescer.coalesce([1; 32]) else { panic!("the second waits") };
        let started = tokio::time::Instant::now();
        let waiter = tokio::spawn(async move { wait_for_leader(&mut progress, Duration::from_secs(60)).await });
        tokio::time::sleep(Duration::from_millis(5)).await;
        coalescer.release(leader);
        waiter.await.unwrap();
        assert!(started.elapsed() < Duration::from_millis(10));
    }

    #[test]
    fn a_pass_ends_with_its_time() {
        let mut flights = Flights::default();
        flights.pass([1; 32], Instant::now() - Duration::from_millis(1));
        assert!(!flights.passed(&[1; 32]));
        assert!(flights.passes.is_empty(), "an expired pass is forgotten");
    }

    #[test]
    fn passes_are_bounded() {
        let mut flights = Flights::default();
        let later = Instant::now() + PASS_FOR;
        for n in 0..MAX_PASSES as u32 {
            let mut key = [0; 32];
            key[..4].copy_from_slice(&n.to_le_bytes());
            flights.pass(key, later);
        }
        flights.pass([0xff; 32], later);
        assert!(flights.passes.len() <= MAX_PASSES);
        assert!(flights.passed(&[0xff; 32]), "the newest pass is kept");
    }
}
