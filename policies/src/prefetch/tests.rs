use std::time::Duration;

use super::budget::{Budget, Caps, Refusal, Share, Weather};
use super::sequence::{Context, Limits, MIN_SUPPORT, Prediction, SequenceModel};
use super::tracker::Tracker;
use super::*;

/// The route's default: transitions fetched for others once 3 contexts made them.
const MIN_IDENTITIES: usize = 3;

/// A client context with a credential.
fn user(id: u64) -> Context {
    Context { id, credentialed: true }
}

/// A client context with only a session.
fn session(id: u64) -> Context {
    Context { id, credentialed: false }
}

/// Someone who never read anything before.
const NEWCOMER: Context = Context { id: u64::MAX - 1, credentialed: true };

fn predict(model: &SequenceModel, uri: &str, now: u64, min_confidence: f64) -> Vec<Prediction> {
    model.predict(NEWCOMER, uri, now, min_confidence, MIN_IDENTITIES)
}

fn page(n: usize) -> String {
    format!("docs://book/page/{n}")
}

/// `users` contexts each walk pages 0..10, one read per second.
fn walked(model: &mut SequenceModel, users: u64, start_ms: u64) -> u64 {
    let mut now = start_ms;
    for u in 0..users {
        for n in 0..10 {
            model.observe(user(u), &page(n), now);
            now += 1000;
        }
    }
    now
}

#[test]
fn a_chain_walked_by_a_few_users_is_predicted() {
    let mut model = SequenceModel::new(Limits::default());
    let now = walked(&mut model, 3, 0);
    for n in 0..9 {
        let predicted = predict(&model, &page(n), now, 0.4);
        assert_eq!(predicted.len(), 1, "after page {n}: {predicted:?}");
        assert_eq!(&*predicted[0].uri, page(n + 1));
        assert!(predicted[0].confidence > 0.99);
    }
    assert!(predict(&model, &page(9), now, 0.4).is_empty(), "the last page leads nowhere");
}

#[test]
fn one_walk_is_not_evidence_enough() {
    let mut model = SequenceModel::new(Limits::default());
    let now = walked(&mut model, 1, 0);
    const { assert!(MIN_SUPPORT > 1.0) };
    assert!(predict(&model, &page(0), now, 0.4).is_empty());
}

#[test]
fn a_habit_no_longer_seen_is_forgotten() {
    let half_life = Duration::from_secs(60);
    let mut model = SequenceModel::new(Limits { half_life, ..Limits::default() });
    let now = walked(&mut model, 3, 0);
    assert!(!predict(&model, &page(4), now, 0.4).is_empty());
    let later = now + 2 * half_life.as_millis() as u64;
    assert!(predict(&model, &page(4), later, 0.4).is_empty(), "3 walks halved twice is below the support");
}

#[test]
fn a_new_habit_replaces_an_old_one() {
    let half_life = Duration::from_secs(60);
    let mut model = SequenceModel::new(Limits { half_life, ..Limits::default() });
    let mut now = 0;
    for u in 0..5 {
        model.observe(user(u), "a", now);
        model.observe(user(u), "b", now + 100);
        now += 1000;
    }
    now += 5 * 60_000;
    for u in 10..15 {
        model.observe(user(u), "a", now);
        model.observe(user(u), "c", now + 100);
        now += 1000;
    }
    let predicted = predict(&model, "a", now, 0.4);
    assert_eq!(predicted.len(), 1, "{predicted:?}");
    assert_eq!(&*predicted[0].uri, "c");
}

#[test]
fn a_hub_read_before_random_children_predicts_nothing() {
    let mut model = SequenceModel::new(Limits::default());
    let mut seed = 7u64;
    let mut now = 0;
    for u in 0..400 {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let child = (seed >> 33) % 20;
        model.observe(user(u), "docs://index", now);
        model.observe(user(u), &format!("docs://child/{child}"), now + 500);
        now += 1000;
    }
    assert!(predict(&model, "docs://index", now, 0.4).is_empty());
    let guesses = predict(&model, "docs://index", now, 0.0);
    assert!(guesses.iter().all(|p| p.confidence < 0.2), "{guesses:?}");
}

#[test]
fn memory_stays_bounded_under_a_million_distinct_uris() {
    let limits = Limits { max_sources: 10_000, max_contexts: 1_000, ..Limits::default() };
    let mut model = SequenceModel::new(limits);
    for i in 0..1_000_000u64 {
        model.observe(user(i % 5_000), &format!("docs://item/{i}"), i);
    }
    let (sources, contexts) = model.len();
    assert!(sources <= 10_000, "{sources} sources");
    assert!(contexts <= 1_001, "{contexts} contexts");
    // What was read recently is still learned.
    for u in 0..3 {
        model.observe(user(100_000 + u), "x", 2_000_000);
        model.observe(user(100_000 + u), "y", 2_000_001);
    }
    assert_eq!(&*predict(&model, "x", 2_000_002, 0.4)[0].uri, "y");
}

#[test]
fn overlong_uris_are_not_learned() {
    let mut model = SequenceModel::new(Limits::default());
    let long = "x".repeat(sequence::MAX_URI + 1);
    for u in 0..5 {
        model.observe(user(u), "a", 0);
        model.observe(user(u), &long, 1);
    }
    assert!(predict(&model, "a", 2, 0.0).is_empty());
}

#[test]
fn a_snapshot_restores_what_was_learned() {
    let mut model = SequenceModel::new(Limits::default());
    let now = walked(&mut model, 3, 0);
    let saved = serde_json::to_string(&model.snapshot()).unwrap();
    let mut restored = SequenceModel::new(Limits::default());
    restored.restore(serde_json::from_str(&saved).unwrap());
    assert_eq!(predict(&model, &page(2), now, 0.4), predict(&restored, &page(2), now, 0.4));
}

#[test]
fn a_late_frequent_successor_takes_the_weakest_slot() {
    let mut model = SequenceModel::new(Limits::default());
    let mut u = 0;
    for n in 0..sequence::MAX_SUCCESSORS {
        model.observe(user(u), "hub", 0);
        model.observe(user(u), &format!("once/{n}"), 1);
        u += 1;
    }
    for _ in 0..30 {
        model.observe(user(u), "hub", 2);
        model.observe(user(u), "often", 3);
        u += 1;
    }
    let predicted = predict(&model, "hub", 4, 0.7);
    assert_eq!(predicted.len(), 1);
    assert_eq!(&*predicted[0].uri, "often");
}

#[test]
fn refresh_is_due_in_the_last_share_of_a_lifetime() {
    assert!(!refresh_due(0, 1000, 500, 0.2));
    assert!(!refresh_due(0, 1000, 799, 0.2));
    assert!(refresh_due(0, 1000, 800, 0.2));
    assert!(refresh_due(0, 1000, 999, 0.2));
    assert!(!refresh_due(0, 1000, 1000, 0.2), "expired: a miss, not a refresh");
    assert!(!refresh_due(0, 1000, 900, 0.0), "off");
}

#[test]
fn confidence_decides_when() {
    let thresholds = Thresholds { immediate: 0.7, later: 0.4 };
    assert_eq!(thresholds.when(0.9), Some(When::Now));
    assert_eq!(thresholds.when(0.5), Some(When::Later));
    assert_eq!(thresholds.when(0.1), None);
}

#[test]
fn contexts_are_the_identity_else_the_session() {
    let caller = |identity: Option<&str>, session: Option<&str>| Caller {
        identity: identity.map(str::to_string),
        session: session.map(str::to_string),
        stateless: false,
        protocol_version: None,
        capabilities: None,
        session_alive: false,
    };
    assert_eq!(context_of(&caller(None, None)), None);
    assert_eq!(context_of(&caller(Some("a"), Some("s"))), context_of(&caller(Some("a"), None)));
    assert_ne!(context_of(&caller(Some("a"), None)), context_of(&caller(None, Some("a"))));
}

#[test]
fn the_budget_caps_prefetches_in_flight() {
    let caps = Caps { max_inflight: 2, max_share: 1.0 };
    let mut budget = Budget::default();
    assert_eq!(budget.start(0, caps), Ok(()));
    assert_eq!(budget.start(0, caps), Ok(()));
    assert_eq!(budget.start(0, caps), Err(Refusal::Busy));
    budget.finish();
    assert_eq!(budget.start(0, caps), Ok(()));
}

#[test]
fn prefetches_keep_to_their_share_of_upstream_requests() {
    let mut share = Share::default();
    for _ in 0..100 {
        share.record(0, false);
    }
    let mut allowed = 0;
    while share.allows(0, 0.2, 4) {
        share.record(0, true);
        allowed += 1;
    }
    assert_eq!(allowed, 25, "20% of 125");
    // A used prefetch stood for a client's request: room for one more.
    share.used(0);
    assert!(share.allows(0, 0.2, 4));
    // The window slides: the same requests no longer count after it.
    assert!(share.allows(budget::SHARE_WINDOW_MS + 1, 0.2, 4));
}

#[test]
fn a_slow_or_failing_upstream_gets_no_prefetches() {
    let mut weather = Weather::default();
    for _ in 0..50 {
        weather.record(30.0, false);
    }
    assert_eq!(weather.check(), Ok(()));
    for _ in 0..10 {
        weather.record(200.0, false);
    }
    assert_eq!(weather.check(), Err(Refusal::Slow));
    let mut failing = Weather::default();
    for _ in 0..5 {
        failing.record(30.0, true);
    }
    assert_eq!(failing.check(), Err(Refusal::Failing));
}

#[test]
fn the_tracker_counts_reads_once_and_expiries_as_waste() {
    let mut tracker = Tracker::new(2);
    assert!(tracker.stored([1; 32], Kind::Sequence, 100).is_empty());
    assert!(tracker.stored([2; 32], Kind::Page, 200).is_empty());
    assert_eq!(tracker.read(&[1; 32]), Some(Kind::Sequence));
    assert_eq!(tracker.read(&[1; 32]), None, "used once");
    assert_eq!(tracker.expire(150), Vec::<Kind>::new());
    assert_eq!(tracker.expire(200), vec![Kind::Page]);
    assert!(tracker.is_empty());
    tracker.stored([3; 32], Kind::Refresh, 300);
    tracker.stored([4; 32], Kind::Refresh, 400);
    assert_eq!(tracker.stored([5; 32], Kind::Sequence, 500), vec![Kind::Refresh], "full: the first to expire goes");
    assert_eq!(tracker.len(), 2);
}

/// `who` walks a → b, `times` times, a read a second.
fn walks_a_to_b(model: &mut SequenceModel, who: Context, times: u64, start_ms: u64) -> u64 {
    let mut now = start_ms;
    for _ in 0..times {
        model.observe(who, "a", now);
        model.observe(who, "b", now + 1000);
        now += 2000;
    }
    now
}

#[test]
fn one_identity_repeating_a_walk_steers_nobody_else() {
    let mut model = SequenceModel::new(Limits::default());
    let mallory = user(666);
    let now = walks_a_to_b(&mut model, mallory, 50, 0);
    assert!(predict(&model, "a", now, 0.0).is_empty(), "nothing for anybody else");
    let own = model.predict(mallory, "a", now, 0.4, MIN_IDENTITIES);
    assert_eq!(own.len(), 1, "mallory's own walk is predicted for mallory: {own:?}");
    assert_eq!(&*own[0].uri, "b");
    // Mallory and one other are two identities; a third makes three.
    let now = walks_a_to_b(&mut model, user(1), 1, now);
    assert!(predict(&model, "a", now, 0.0).is_empty(), "two identities");
    let now = walks_a_to_b(&mut model, user(2), 1, now);
    let predicted = predict(&model, "a", now, 0.4);
    assert_eq!(predicted.len(), 1, "three identities: {predicted:?}");
    assert_eq!(&*predicted[0].uri, "b");
    assert!(model.predict(NEWCOMER, "a", now, 0.0, 5).is_empty(), "min_identities 5");
}

#[test]
fn repetition_neither_raises_nor_dilutes_a_confidence() {
    let mut model = SequenceModel::new(Limits::default());
    let mut now = 0;
    for u in 0..4 {
        model.observe(user(u), "a", now);
        model.observe(user(u), "b", now + 1);
        now += 10;
    }
    let honest = predict(&model, "a", now, 0.0)[0].confidence;
    // Mallory and two friends walk a → c over and over, within one half-life.
    for _ in 0..100 {
        for u in 100..103 {
            model.observe(user(u), "a", now);
            model.observe(user(u), "c", now + 1);
            now += 10;
        }
    }
    let predicted = predict(&model, "a", now, 0.0);
    let confidence = |uri: &str| predicted.iter().find(|p| &*p.uri == uri).map_or(0.0, |p| p.confidence);
    assert!((honest - 1.0).abs() < 1e-9);
    assert!((confidence("b") - 4.0 / 7.0).abs() < 0.01, "each identity counted once: {predicted:?}");
    assert!((confidence("c") - 3.0 / 7.0).abs() < 0.01, "{predicted:?}");
}

#[test]
fn an_identity_counts_again_after_a_half_life() {
    let half_life = Duration::from_secs(60);
    let mut model = SequenceModel::new(Limits { half_life, ..Limits::default() });
    let mut now = 0;
    for _ in 0..10 {
        for u in 0..3 {
            model.observe(user(u), "a", now);
            model.observe(user(u), "b", now + 1000);
        }
        // Three walks a half-life apart keep the habit alive (one count each per half-life).
        now += half_life.as_millis() as u64;
    }
    let predicted = predict(&model, "a", now, 0.4);
    assert_eq!(predicted.len(), 1, "{predicted:?}");
}

#[test]
fn anonymous_sessions_never_vouch_for_a_credential() {
    let mut model = SequenceModel::new(Limits::default());
    let mut now = 0;
    for s in 0..10 {
        now = walks_a_to_b(&mut model, session(s), 1, now);
    }
    assert!(predict(&model, "a", now, 0.0).is_empty(), "ten sessions are not an identity");
    let for_a_session = model.predict(session(99), "a", now, 0.4, MIN_IDENTITIES);
    assert_eq!(for_a_session.len(), 1, "sessions corroborate for sessions: {for_a_session:?}");
    for u in 0..3 {
        now = walks_a_to_b(&mut model, user(u), 1, now);
    }
    assert_eq!(predict(&model, "a", now, 0.0).len(), 1, "three credentials do");
}

#[test]
fn anonymous_sessions_never_push_out_credentialed_witnesses() {
    let mut model = SequenceModel::new(Limits::default());
    let mut now = 0;
    for u in 0..sequence::MAX_WITNESSES as u64 {
        now = walks_a_to_b(&mut model, user(u), 1, now);
    }
    let before = predict(&model, "a", now, 0.0);
    for s in 0..100 {
        now = walks_a_to_b(&mut model, session(s), 1, now);
    }
    let after = model.predict(NEWCOMER, "a", now, 0.0, sequence::MAX_WITNESSES);
    assert_eq!(after.len(), 1, "the credentials still vouch: {after:?}");
    assert_eq!(before, after, "and the sessions, not counted, moved no confidence");
}

#[test]
fn a_walk_of_ones_own_is_predicted_for_oneself_alone() {
    let mut model = SequenceModel::new(Limits::default());
    let alice = user(7);
    let mut now = 0;
    for _ in 0..2 {
        for n in 0..10 {
            model.observe(alice, &page(n), now);
            now += 1000;
        }
    }
    for n in 0..9 {
        let predicted = model.predict(alice, &page(n), now, 0.7, MIN_IDENTITIES);
        assert_eq!(predicted.len(), 1, "after page {n}: {predicted:?}");
        assert_eq!(&*predicted[0].uri, page(n + 1));
    }
    assert!(predict(&model, &page(0), now, 0.0).is_empty());
    // Once is not a habit.
    model.observe(alice, "x", now);
    model.observe(alice, "y", now + 1);
    assert!(model.predict(alice, "x", now + 2, 0.0, MIN_IDENTITIES).is_empty());
}

#[test]
fn witnesses_and_own_steps_stay_bounded() {
    let mut model = SequenceModel::new(Limits::default());
    let mut now = 0;
    for u in 0..1_000 {
        now = walks_a_to_b(&mut model, user(u), 1, now);
    }
    let alice = user(5_000);
    for n in 0..1_000 {
        model.observe(alice, &page(n), now);
        now += 1;
    }
    assert_eq!(model.most_held(), (sequence::MAX_WITNESSES, own::OWN_STEPS));
    assert_eq!(predict(&model, "a", now, 0.4).len(), 1);
}

#[test]
fn witnesses_survive_a_restart_and_old_models_still_load() {
    let mut model = SequenceModel::new(Limits::default());
    let now = walked(&mut model, 3, 0);
    let saved = serde_json::to_string(&model.snapshot()).unwrap();
    let mut restored = SequenceModel::new(Limits::default());
    restored.restore(serde_json::from_str(&saved).unwrap());
    assert_eq!(predict(&restored, &page(2), now, 0.4).len(), 1, "corroborated after a restart");
    // A model saved before witnesses: it loads, and predicts for nobody until walked again.
    let old = r#"{"sources":[{"uri":"a","total":5.0,"decayed_at_ms":0,"read_at_ms":0,"successors":[{"uri":"b","weight":5.0}]}]}"#;
    let mut from_old = SequenceModel::new(Limits::default());
    from_old.restore(serde_json::from_str(old).unwrap());
    assert_eq!(from_old.len().0, 1);
    assert!(predict(&from_old, "a", 1, 0.0).is_empty());
}

#[test]
fn a_failing_warm_uri_backs_off_exponentially_to_five_minutes() {
    let waits: Vec<u64> = (1..=10).map(warm_backoff_ms).collect();
    assert_eq!(&waits[..4], &[2_000, 4_000, 8_000, 16_000]);
    assert!(waits.windows(2).all(|w| w[1] >= w[0]));
    assert_eq!(warm_backoff_ms(9), 300_000);
    assert_eq!(warm_backoff_ms(u32::MAX), 300_000);
}
