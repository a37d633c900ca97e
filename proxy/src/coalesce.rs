//! Request coalescing: concurrent misses for one key make one upstream request, the leader's;
//! the others wait until its answer is stored, then read it from the cache.
//!
//! A key whose last answer could not be cached (`ttlMs: 0`, an error result, a private answer
//! with no identity to key it by, …) is *passed* for a while, as Varnish's hit-for-pass does:
//! its misses go upstream at once. Waiting on a leader whose answer cannot serve them would
//! only add the leader's round trip to their own.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
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
    flights: Arc<Mutex<Flights>>,
}

#[derive(Default)]
struct Flights {
    /// Keys being fetched, with what their waiters wait on (`true` once the upstream answers).
    inflight: HashMap<Key, watch::Receiver<bool>>,
    /// Keys whose last answer could not be cached, and until when they skip coalescing.
    passes: HashMap<Key, Instant>,
}

/// Held by the request that fetches a coalesced key. The lead ends when the answer is recorded
/// ([`Leader::answered`]) or, whatever else happens to the request (an upstream failure, an
/// error answered, the client gone), when the leader is dropped: no path can forget it.
pub struct Leader {
    key: Key,
    progress: watch::Sender<bool>,
    flights: Arc<Mutex<Flights>>,
    /// The lead was ended by [`Leader::answered`]: dropping has nothing left to do.
    ended: bool,
}

impl Leader {
    /// The upstream has begun to answer: waiters now wait [`AFTER_ANSWER_BEGAN`] at most.
    pub fn answer_began(&self) {
        self.progress.send_replace(true);
    }

    /// Records what became of the leader's answer (see [`Coalescer::answered`]) and ends the
    /// lead (one lock for both): waiters wake up and look up again.
    pub fn answered(mut self, stored: bool) {
        let mut flights = self.flights.lock().expect("coalescer");
        flights.record(self.key, stored);
        flights.inflight.remove(&self.key);
        drop(flights);
        self.ended = true;
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        let mut flights = self.flights.lock().expect("coalescer");
        // Only this lead's own entry: a later leader of the same key keeps its own.
        if flights.inflight.get(&self.key).is_some_and(|waiting| waiting.same_channel(&self.progress.subscribe())) {
            flights.inflight.remove(&self.key);
        }
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
        Coalesce::Lead(Leader { key, progress, flights: self.flights.clone(), ended: false })
    }

    /// Records what became of an upstream answer for `key` fetched by a request that did not
    /// lead: stored in the cache, or not cacheable (then the key's next misses pass).
    pub fn answered(&self, key: Key, stored: bool) {
        self.flights.lock().expect("coalescer").record(key, stored);
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
    fn record(&mut self, key: Key, stored: bool) {
        if stored {
            self.passes.remove(&key);
        } else {
            self.pass(key, Instant::now() + PASS_FOR);
        }
    }

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
        leader.answered(true);
        assert!(done.has_changed().is_err(), "the waiter is released with the leader");
        assert!(matches!(coalescer.coalesce([1; 32]), Coalesce::Lead(_)), "a stored answer leaves no pass");
    }

    #[test]
    fn an_uncacheable_answer_passes_the_key_until_one_is_stored() {
        let coalescer = Coalescer::default();
        let Coalesce::Lead(leader) = coalescer.coalesce([1; 32]) else { panic!("the first miss leads") };
        leader.answered(false);
        assert!(matches!(coalescer.coalesce([1; 32]), Coalesce::Pass));
        assert!(matches!(coalescer.coalesce([1; 32]), Coalesce::Pass), "every miss passes, none leads");
        assert!(matches!(coalescer.coalesce([2; 32]), Coalesce::Lead(_)), "other keys still coalesce");
        coalescer.answered([1; 32], true);
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
        drop(leader);
        waiter.await.unwrap();
        assert!(started.elapsed() < Duration::from_millis(10));
        assert!(matches!(coalescer.coalesce([1; 32]), Coalesce::Lead(_)), "a dropped lead leaves the key free");
    }

    #[test]
    fn an_old_lead_dropped_late_leaves_a_newer_lead_alone() {
        let coalescer = Coalescer::default();
        let Coalesce::Lead(first) = coalescer.coalesce([1; 32]) else { panic!("the first miss leads") };
        // The first lead ends without being dropped (its request still finishing), and a new
        // miss leads the key.
        coalescer.flights.lock().unwrap().inflight.remove(&[1; 32]);
        let Coalesce::Lead(_second) = coalescer.coalesce([1; 32]) else { panic!("a new miss leads") };
        drop(first);
        assert!(matches!(coalescer.coalesce([1; 32]), Coalesce::Wait(_)), "the second lead still holds the key");
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
