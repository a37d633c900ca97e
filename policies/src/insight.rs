//! Per-operation insight: which tools and resources a route's clients call most, how those
//! calls fare (calls per second, latency, hits), and what would make them cheaper, as advice.
//!
//! Metrics labels stay bounded (route, MCP method), so they cannot say which tool is slow or
//! which resource never hits. This keeps, per route, a table of the operations called most: a
//! Space-Saving heavy-hitters table of [`CAPACITY`] entries (Metwally et al., 2005). Its memory
//! is fixed, whatever the clients call: an operation not in the table takes the place of the
//! least-called one, inheriting its count (so a count is an upper bound, exact for operations
//! that stayed in the table, and any operation called more than 1/[`CAPACITY`] of all calls is
//! in it). Each entry keeps its own figures since it entered the table, and its last few calls
//! (arguments' and answer's hashes) to tell repeated calls and identical answers.

use std::collections::VecDeque;
use std::hash::BuildHasher;

use serde::Serialize;

/// Operations tracked per route.
pub const CAPACITY: usize = 32;
/// Calls within this long of a call with the same arguments are repeats.
pub const REPEAT_WINDOW_MS: u64 = 60_000;
/// Calls remembered per operation, to find repeats.
const RECENT: usize = 16;
/// Longer names are cut (a URI can be long; what is kept per route stays bounded).
const MAX_NAME: usize = 256;
/// Fewer calls than this give no advice.
pub const MIN_CALLS_FOR_ADVICE: u64 = 20;
/// Latency buckets: bucket `i` holds latencies up to 10 µs × 1.5^i (the last: 73 s and over).
const BUCKETS: usize = 40;

/// What an operation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    /// A `tools/call`, by tool name.
    Tool,
    /// A `resources/read`, by URI.
    Resource,
}

/// How a call was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    Hit,
    /// Forwarded, its answer may be stored.
    Miss,
    /// Forwarded, never cached.
    Bypass,
    /// Answered with an error (by mcp-edge or the upstream's HTTP status).
    Failed,
}

/// One answered call.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    pub kind: OpKind,
    pub name: &'a str,
    /// Hash of its arguments (see [`hash_of`]).
    pub args: u64,
    pub at_ms: u64,
    pub latency_us: u64,
    pub outcome: CallOutcome,
    /// Hash of the answer's result, when it was read (a hit's is the entry's).
    pub answer: Option<u64>,
    /// The `ttlMs` the server put on its answer.
    pub server_ttl_ms: Option<u64>,
    /// Until when the answer stays fresh in the cache (stored, or the hit's entry).
    pub fresh_until_ms: Option<u64>,
}

/// A hash of what identifies a call's arguments or answer (stable within a process). Not
/// keyed: a client that makes two arguments collide only blurs its own route's figures.
pub fn hash_of(text: &str) -> u64 {
    foldhash::fast::FixedState::default().hash_one(text)
}

#[derive(Debug, Clone, Copy)]
struct Remembered {
    args: u64,
    answer: Option<u64>,
    at_ms: u64,
    fresh_until_ms: Option<u64>,
}

/// One tracked operation.
#[derive(Debug, Clone)]
struct Operation {
    kind: OpKind,
    name: String,
    inherited: u64,
    since_ms: u64,
    figures: Figures,
    latency: [u32; BUCKETS],
    recent: VecDeque<Remembered>,
}

/// What an operation's calls came to, since it entered the table.
#[derive(Debug, Clone, Default)]
struct Figures {
    calls: u64,
    hits: u64,
    forwarded_cacheable: u64,
    failed: u64,
    repeats: u64,
    repeats_answered_alike: u64,
    server_ttl_zero: u64,
    /// Misses of arguments whose answer had expired within the repeat window: what
    /// refresh-ahead would have kept fresh.
    expired_misses: u64,
}

impl Operation {
    fn new(kind: OpKind, name: &str, inherited: u64, at_ms: u64) -> Operation {
        let mut operation = Operation {
            kind,
            name: String::new(),
            inherited: 0,
            since_ms: 0,
            figures: Figures::default(),
            latency: [0; BUCKETS],
            recent: VecDeque::with_capacity(RECENT),
        };
        operation.start(kind, name, inherited, at_ms);
        operation
    }

    /// (Re)starts the entry for operation `name`, keeping its buffers: an entry is handed over
    /// to another operation (Space-Saving) on most calls when clients call many.
    fn start(&mut self, kind: OpKind, name: &str, inherited: u64, at_ms: u64) {
        self.kind = kind;
        self.name.clear();
        self.name.push_str(name);
        self.inherited = inherited;
        self.since_ms = at_ms;
        self.figures = Figures::default();
        self.latency = [0; BUCKETS];
        self.recent.clear();
    }

    fn record(&mut self, call: &Call<'_>) {
        let figures = &mut self.figures;
        figures.calls += 1;
        match call.outcome {
            CallOutcome::Hit => figures.hits += 1,
            CallOutcome::Miss => figures.forwarded_cacheable += 1,
            CallOutcome::Bypass => {}
            CallOutcome::Failed => figures.failed += 1,
        }
        if call.server_ttl_ms == Some(0) {
            figures.server_ttl_zero += 1;
        }
        self.latency[bucket_of(call.latency_us)] += 1;
        let window_start = call.at_ms.saturating_sub(REPEAT_WINDOW_MS);
        let previous = self.recent.iter().rev().find(|r| r.args == call.args && r.at_ms >= window_start).copied();
        if let Some(previous) = previous {
            figures.repeats += 1;
            let alike = call.outcome == CallOutcome::Hit || (call.answer.is_some() && call.answer == previous.answer);
            figures.repeats_answered_alike += u64::from(alike);
            let expired_lately = previous.fresh_until_ms.is_some_and(|until| until <= call.at_ms);
            figures.expired_misses += u64::from(call.outcome == CallOutcome::Miss && expired_lately);
        }
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        // A hit is its entry's answer: the one remembered for those arguments.
        let answer =
            call.answer.or_else(|| previous.and_then(|p| p.answer).filter(|_| call.outcome == CallOutcome::Hit));
        let fresh_until_ms = call.fresh_until_ms.or(previous.and_then(|p| p.fresh_until_ms));
        self.recent.push_back(Remembered { args: call.args, answer, at_ms: call.at_ms, fresh_until_ms });
    }

    fn now(&self, now_ms: u64) -> OperationNow {
        let figures = &self.figures;
        let calls = figures.calls.max(1) as f64;
        let seconds = (now_ms.saturating_sub(self.since_ms) as f64 / 1000.0).max(1.0);
        let cacheable = figures.hits + figures.forwarded_cacheable;
        OperationNow {
            kind: self.kind,
            name: self.name.clone(),
            calls: figures.calls,
            approximate: self.inherited > 0,
            calls_per_second: round(figures.calls as f64 / seconds, 2),
            p50_ms: percentile_ms(&self.latency, figures.calls, 0.50),
            p99_ms: percentile_ms(&self.latency, figures.calls, 0.99),
            hit_ratio: (cacheable > 0).then(|| round(figures.hits as f64 / cacheable as f64, 3)),
            repeated_share: round(figures.repeats as f64 / calls, 3),
            identical_share: round(figures.repeats_answered_alike as f64 / calls, 3),
            failed_share: round(figures.failed as f64 / calls, 3),
            server_ttl_zero_share: round(figures.server_ttl_zero as f64 / calls, 3),
            expired_misses: figures.expired_misses,
        }
    }
}

/// A route's table of its most called operations. `keys[i]` (a hash of kind and name) finds
/// `table[i]`, `counts[i]` is its Space-Saving count: kept apart from the figures, so that
/// finding an entry, or the least counted (under many distinct operations most calls do
/// both), reads two short arrays, not a cache line per entry.
#[derive(Debug, Default)]
pub struct Operations {
    keys: [u64; CAPACITY],
    /// Calls, plus what the entry inherited from the one it replaced.
    counts: [u64; CAPACITY],
    table: Vec<Operation>,
}

impl Operations {
    /// Counts one answered call.
    pub fn record(&mut self, call: &Call<'_>) {
        let name = cut(call.name);
        let key = hash_of(name) ^ call.kind as u64;
        let index = match self.find(key, call.kind, name) {
            Ok(index) => index,
            Err(_) if self.table.len() < CAPACITY => {
                self.keys[self.table.len()] = key;
                self.table.push(Operation::new(call.kind, name, 0, call.at_ms));
                self.table.len() - 1
            }
            Err(least) => {
                // Space-Saving: the least counted gives its place, and its count, to the newcomer.
                self.keys[least] = key;
                self.table[least].start(call.kind, name, self.counts[least], call.at_ms);
                least
            }
        };
        self.counts[index] += 1;
        self.table[index].record(call);
    }

    /// The entry of operation `name`, else the least counted: one pass over the keys and counts.
    fn find(&self, key: u64, kind: OpKind, name: &str) -> Result<usize, usize> {
        let (mut least, mut least_count) = (0, u64::MAX);
        for (i, op) in self.table.iter().enumerate() {
            if self.keys[i] == key && op.kind == kind && op.name == name {
                return Ok(i);
            }
            if self.counts[i] < least_count {
                (least, least_count) = (i, self.counts[i]);
            }
        }
        Err(least)
    }

    /// The `n` most called operations, most called first.
    pub fn top(&self, now_ms: u64, n: usize) -> Vec<OperationNow> {
        let mut ranked: Vec<usize> = (0..self.table.len()).collect();
        ranked.sort_by(|&a, &b| {
            let (a, b) = ((self.counts[a], &self.table[a].name), (self.counts[b], &self.table[b].name));
            b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1))
        });
        ranked.into_iter().take(n).map(|i| self.table[i].now(now_ms)).collect()
    }

    /// Misses refresh-ahead would have saved, over every tracked operation.
    pub fn expired_misses(&self) -> u64 {
        self.table.iter().map(|op| op.figures.expired_misses).sum()
    }
}

/// One operation's figures, since it entered its route's table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OperationNow {
    pub kind: OpKind,
    pub name: String,
    pub calls: u64,
    /// It took the place of another operation: its count may include some of that one's.
    pub approximate: bool,
    pub calls_per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Hits among the calls that could be answered from the cache (`None`: never cacheable).
    pub hit_ratio: Option<f64>,
    /// Calls repeating arguments seen within the last minute.
    pub repeated_share: f64,
    /// Calls repeating arguments within the last minute and getting the same answer.
    pub identical_share: f64,
    pub failed_share: f64,
    /// Calls whose answer carried `ttlMs: 0` (never stored).
    pub server_ttl_zero_share: f64,
    pub expired_misses: u64,
}

/// What the advice needs to know of a route beside its operations.
pub struct RouteFacts<'a> {
    pub route: &'a str,
    /// `[route.prefetch] refresh_ahead` is on.
    pub refresh_ahead: bool,
    /// The route caches calls of this tool (`cache_tools`, or `readonly_tools` and marked so).
    pub caches_tool: &'a dyn Fn(&str) -> bool,
    /// What the upstream's `tools/list` says of this tool: read-only and idempotent.
    pub marked_read_only: &'a dyn Fn(&str) -> Option<bool>,
}

/// Advice for the operator, from a route's most called operations (`expired_misses`: over
/// all of them).
pub fn advice(facts: &RouteFacts<'_>, top: &[OperationNow], expired_misses: u64) -> Vec<String> {
    let mut advice = Vec::new();
    for op in top.iter().filter(|op| op.calls >= MIN_CALLS_FOR_ADVICE) {
        let identical = percent(op.identical_share);
        match op.kind {
            OpKind::Tool if !(facts.caches_tool)(&op.name) && op.identical_share >= 0.5 => {
                let head = format!(
                    "tool `{}`: {}/s, {identical} identical calls with identical answers within 60 s",
                    op.name, op.calls_per_second
                );
                advice.push(match (facts.marked_read_only)(&op.name) {
                    Some(true) => format!("{head}, marked read-only: add it to `cache_tools`"),
                    _ => format!(
                        "{head}, not marked read-only by the server: add it to `cache_tools` only if calling it changes nothing"
                    ),
                });
            }
            OpKind::Resource if op.hit_ratio.unwrap_or(0.0) < 0.1 && op.server_ttl_zero_share >= 0.5 => {
                advice.push(format!(
                    "resource `{}`: {} hits, the server says `ttlMs: 0` on {} of its answers (never stored): ask its server for a TTL",
                    op.name,
                    percent(op.hit_ratio.unwrap_or(0.0)),
                    percent(op.server_ttl_zero_share)
                ));
            }
            _ => {}
        }
    }
    if expired_misses > 0 && !facts.refresh_ahead {
        advice.push(format!(
            "route `{}`: refresh-ahead would have saved {expired_misses} misses (reads repeated within a minute of their entry expiring): set `[route.prefetch] enabled = true` and `refresh_ahead`",
            facts.route
        ));
    }
    advice
}

fn percent(share: f64) -> String {
    format!("{}%", (share * 100.0).round())
}

fn round(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

fn cut(name: &str) -> &str {
    &name[..name.floor_char_boundary(MAX_NAME)]
}

/// Each bucket's upper bound, in microseconds: 10 × 1.5^i.
const BUCKET_BOUNDS_US: [f64; BUCKETS] = {
    let mut bounds = [10.0; BUCKETS];
    let mut i = 1;
    while i < BUCKETS {
        bounds[i] = bounds[i - 1] * 1.5;
        i += 1;
    }
    bounds
};

/// The upper bound of bucket `i`, in microseconds.
fn bucket_bound_us(i: usize) -> f64 {
    BUCKET_BOUNDS_US[i]
}

/// The bucket of a latency: a binary search of the bounds (this runs once per call, hits
/// included: a few comparisons, no floating-point function).
fn bucket_of(latency_us: u64) -> usize {
    BUCKET_BOUNDS_US.partition_point(|&bound| bound < latency_us as f64).min(BUCKETS - 1)
}

/// The latency under which `quantile` of the `calls` fall (a bucket's upper bound), in ms.
fn percentile_ms(latency: &[u32; BUCKETS], calls: u64, quantile: f64) -> f64 {
    let wanted = ((calls as f64 * quantile).ceil() as u64).max(1);
    let mut seen = 0u64;
    for (i, &count) in latency.iter().enumerate() {
        seen += u64::from(count);
        if seen >= wanted {
            return round(bucket_bound_us(i) / 1000.0, 3);
        }
    }
    0.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(
        kind: OpKind,
        name: &str,
        args: &str,
        at_ms: u64,
        outcome: CallOutcome,
        answer: Option<&str>,
    ) -> Call<'static> {
        Call {
            kind,
            name: Box::leak(name.to_string().into_boxed_str()),
            args: hash_of(args),
            at_ms,
            latency_us: 2_000,
            outcome,
            answer: answer.map(hash_of),
            server_ttl_ms: None,
            fresh_until_ms: None,
        }
    }

    #[test]
    fn the_most_called_operations_are_kept_in_fixed_memory() {
        let mut ops = Operations::default();
        // Two heavy hitters among 10 000 operations each called once.
        for i in 0..10_000u64 {
            ops.record(&call(OpKind::Resource, &format!("file:///{i}"), "", i, CallOutcome::Miss, None));
            if i % 10 == 0 {
                ops.record(&call(OpKind::Tool, "weather.get", "{}", i, CallOutcome::Bypass, None));
            }
            if i % 20 == 0 {
                ops.record(&call(OpKind::Resource, "file:///hot", "", i, CallOutcome::Hit, None));
            }
        }
        assert!(ops.table.len() <= CAPACITY);
        let top = ops.top(10_000, 2);
        assert_eq!((top[0].kind, top[0].name.as_str(), top[0].calls), (OpKind::Tool, "weather.get", 1000));
        assert_eq!((top[1].name.as_str(), top[1].calls), ("file:///hot", 500));
        assert!(!top[0].approximate);
    }

    #[test]
    fn repeated_calls_with_identical_answers_advise_caching_a_read_only_tool() {
        let mut ops = Operations::default();
        for i in 0..40u64 {
            // Four distinct arguments, each repeated every 100 ms, always the same answer.
            let args = format!("{{\"city\":{}}}", i % 4);
            let answer = format!("sunny {}", i % 4);
            ops.record(&call(OpKind::Tool, "weather.get", &args, i * 100, CallOutcome::Bypass, Some(&answer)));
            // A tool whose answers change every time.
            let changing = format!("{i}");
            ops.record(&call(OpKind::Tool, "clock.now", "{}", i * 100, CallOutcome::Bypass, Some(&changing)));
        }
        let top = ops.top(4_000, 10);
        let weather = top.iter().find(|op| op.name == "weather.get").unwrap();
        assert_eq!((weather.repeated_share, weather.identical_share), (0.9, 0.9));
        let clock = top.iter().find(|op| op.name == "clock.now").unwrap();
        assert_eq!((clock.repeated_share, clock.identical_share), (0.975, 0.0));
        let read_only = |name: &str| Some(name == "weather.get");
        let facts =
            RouteFacts { route: "docs", refresh_ahead: false, caches_tool: &|_| false, marked_read_only: &read_only };
        let advice = advice(&facts, &top, 0);
        assert_eq!(advice.len(), 1, "{advice:?}");
        assert!(advice[0].starts_with("tool `weather.get`: 10/s, 90% identical calls"), "{advice:?}");
        assert!(advice[0].ends_with("marked read-only: add it to `cache_tools`"), "{advice:?}");
        // Already cached: nothing to advise.
        let cached = RouteFacts { caches_tool: &|name| name == "weather.get", ..facts };
        assert!(super::advice(&cached, &top, 0).is_empty());
    }

    #[test]
    fn a_resource_the_server_forbids_caching_and_misses_after_expiry_are_named() {
        let mut ops = Operations::default();
        for i in 0..30u64 {
            let mut read = call(OpKind::Resource, "db://live", "", i * 1000, CallOutcome::Miss, Some("x"));
            read.server_ttl_ms = Some(0);
            ops.record(&read);
            // Read every second, its entry living 500 ms: each read after the first is a miss
            // of an entry that expired half a second earlier.
            let mut doc = call(OpKind::Resource, "doc://a", "", i * 1000, CallOutcome::Miss, Some("same"));
            doc.fresh_until_ms = Some(i * 1000 + 500);
            ops.record(&doc);
        }
        let top = ops.top(30_000, 10);
        assert_eq!(ops.expired_misses(), 29);
        let facts =
            RouteFacts { route: "docs", refresh_ahead: false, caches_tool: &|_| false, marked_read_only: &|_| None };
        let advice = advice(&facts, &top, ops.expired_misses());
        assert!(
            advice.iter().any(|a| a.starts_with("resource `db://live`: 0% hits, the server says `ttlMs: 0`")),
            "{advice:?}"
        );
        assert!(
            advice.iter().any(|a| a.starts_with("route `docs`: refresh-ahead would have saved 29 misses")),
            "{advice:?}"
        );
        let refreshing = RouteFacts { refresh_ahead: true, ..facts };
        assert!(!super::advice(&refreshing, &top, ops.expired_misses()).iter().any(|a| a.contains("refresh-ahead")));
    }

    #[test]
    fn percentiles_and_rates() {
        let mut ops = Operations::default();
        for i in 0..100u64 {
            let mut c = call(OpKind::Tool, "t", "{}", i * 100, CallOutcome::Hit, None);
            c.latency_us = if i < 98 { 1_000 } else { 500_000 };
            ops.record(&c);
        }
        let top = ops.top(10_000, 1);
        assert!(top[0].p50_ms >= 1.0 && top[0].p50_ms < 1.6, "{top:?}");
        assert!(top[0].p99_ms >= 500.0 && top[0].p99_ms < 760.0, "{top:?}");
        assert_eq!(top[0].calls_per_second, 10.0);
        assert_eq!(top[0].hit_ratio, Some(1.0));
    }

    #[test]
    fn buckets_hold_what_their_bounds_say() {
        for latency in [0u64, 1, 10, 11, 15, 16, 1_000, 1_297, 1_298, 500_000, 10_000_000_000] {
            let i = bucket_of(latency);
            assert!(i == BUCKETS - 1 || latency as f64 <= bucket_bound_us(i), "{latency} in {i}");
            assert!(i == 0 || latency as f64 > bucket_bound_us(i - 1), "{latency} in {i}");
        }
    }

    #[test]
    fn long_names_are_cut() {
        let mut ops = Operations::default();
        let long = "é".repeat(400);
        ops.record(&call(OpKind::Resource, &long, "", 0, CallOutcome::Miss, None));
        ops.record(&call(OpKind::Resource, &long, "", 1, CallOutcome::Miss, None));
        let top = ops.top(1, 5);
        assert_eq!(top.len(), 1);
        assert!(top[0].name.len() <= MAX_NAME);
        assert_eq!(top[0].calls, 2);
    }
}
