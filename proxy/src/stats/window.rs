//! What the dashboard shows, from two readings of the cumulative metrics: rates over the time
//! between them, the hit ratio and its split by tier, latency percentiles from the histogram
//! buckets that moved (as Prometheus' `histogram_quantile` does). Pure: unit-tested below.

use std::collections::BTreeMap;

use serde::Serialize;

/// The cumulative counters of one route at one instant.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RouteReading {
    /// Requests answered, by `x-cache` outcome (`HIT`, `MISS`, `STALE`, `BYPASS`).
    pub by_outcome: BTreeMap<String, u64>,
    /// Requests answered with a 5xx, or not answered at all.
    pub failed: u64,
    /// Hits by the tier that answered them (`memory`, `disk`, `shared`).
    pub hits_by_tier: BTreeMap<String, u64>,
    pub hit_latency: Histogram,
    pub miss_latency: Histogram,
    /// Requests sent to each upstream replica, and how many failed (5xx or no answer).
    pub upstreams: BTreeMap<String, (u64, u64)>,
    /// Prefetches by outcome (`issued`, `used`, `wasted`, `failed`, `dropped`).
    pub prefetch: BTreeMap<String, u64>,
}

/// A cumulative latency histogram: bucket upper bounds (seconds) and how many observations
/// fell at or below each.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    pub bounds: Vec<f64>,
    pub cumulative: Vec<u64>,
    pub count: u64,
}

impl Histogram {
    /// Adds another histogram with the same bounds (several methods of one route).
    pub fn add(&mut self, other: &Histogram) {
        if self.bounds.is_empty() {
            *self = other.clone();
            return;
        }
        if self.bounds != other.bounds {
            return;
        }
        for (mine, theirs) in self.cumulative.iter_mut().zip(&other.cumulative) {
            *mine += theirs;
        }
        self.count += other.count;
    }

    /// The `q` quantile (0..1) in milliseconds of what was observed between `earlier` and
    /// `self`, interpolated inside its bucket; the largest bound when it lies beyond it.
    /// `None` when nothing was observed.
    pub fn quantile_since(&self, earlier: &Histogram, q: f64) -> Option<f64> {
        let count = self.count.checked_sub(earlier.count).filter(|&c| c > 0)?;
        let moved = |i: usize| {
            let before = if earlier.bounds == self.bounds { earlier.cumulative[i] } else { 0 };
            self.cumulative[i].saturating_sub(before)
        };
        let target = q.clamp(0.0, 1.0) * count as f64;
        let (mut lower_bound, mut below) = (0.0, 0u64);
        for (i, &bound) in self.bounds.iter().enumerate() {
            let at_or_below = moved(i);
            if at_or_below as f64 >= target && at_or_below > below {
                let share = (target - below as f64) / (at_or_below - below) as f64;
                return Some((lower_bound + (bound - lower_bound) * share.clamp(0.0, 1.0)) * 1000.0);
            }
            (lower_bound, below) = (bound, at_or_below);
        }
        self.bounds.last().map(|bound| bound * 1000.0)
    }
}

/// A route over one window.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RouteWindow {
    pub requests_per_s: f64,
    /// Hits among requests that could be (hits, misses and stale answers); `None`: none came.
    pub hit_ratio: Option<f64>,
    /// Each tier's share of the hits.
    pub hits_by_tier: BTreeMap<String, f64>,
    pub failed_per_s: f64,
    pub hit_p50_ms: Option<f64>,
    pub hit_p99_ms: Option<f64>,
    pub miss_p50_ms: Option<f64>,
    pub miss_p99_ms: Option<f64>,
    /// Per upstream replica: requests per second and the share that failed.
    pub upstreams: BTreeMap<String, UpstreamWindow>,
    /// Prefetches by outcome, per second.
    pub prefetch_per_s: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct UpstreamWindow {
    pub requests_per_s: f64,
    pub error_ratio: Option<f64>,
}

/// `later` against `earlier`, `seconds` apart.
pub fn route_window(earlier: &RouteReading, later: &RouteReading, seconds: f64) -> RouteWindow {
    let seconds = seconds.max(1e-3);
    let delta = |now: u64, then: u64| now.saturating_sub(then);
    let outcome = |name: &str| {
        delta(later.by_outcome.get(name).copied().unwrap_or(0), earlier.by_outcome.get(name).copied().unwrap_or(0))
    };
    let requests: u64 = later.by_outcome.keys().map(|name| outcome(name)).sum();
    let (hits, cacheable) = (outcome("HIT"), outcome("HIT") + outcome("MISS") + outcome("STALE"));
    let tier_hits: BTreeMap<String, u64> = later
        .hits_by_tier
        .iter()
        .map(|(tier, &n)| (tier.clone(), delta(n, earlier.hits_by_tier.get(tier).copied().unwrap_or(0))))
        .collect();
    let tier_total: u64 = tier_hits.values().sum();
    let upstreams = later
        .upstreams
        .iter()
        .map(|(url, &(sent, failed))| {
            let (sent_before, failed_before) = earlier.upstreams.get(url).copied().unwrap_or((0, 0));
            let (sent, failed) = (delta(sent, sent_before), delta(failed, failed_before));
            let window = UpstreamWindow {
                requests_per_s: sent as f64 / seconds,
                error_ratio: (sent > 0).then(|| failed as f64 / sent as f64),
            };
            (url.clone(), window)
        })
        .collect();
    RouteWindow {
        requests_per_s: requests as f64 / seconds,
        hit_ratio: (cacheable > 0).then(|| hits as f64 / cacheable as f64),
        hits_by_tier: tier_hits
            .into_iter()
            .filter(|_| tier_total > 0)
            .map(|(tier, n)| (tier, n as f64 / tier_total as f64))
            .collect(),
        failed_per_s: delta(later.failed, earlier.failed) as f64 / seconds,
        hit_p50_ms: later.hit_latency.quantile_since(&earlier.hit_latency, 0.5),
        hit_p99_ms: later.hit_latency.quantile_since(&earlier.hit_latency, 0.99),
        miss_p50_ms: later.miss_latency.quantile_since(&earlier.miss_latency, 0.5),
        miss_p99_ms: later.miss_latency.quantile_since(&earlier.miss_latency, 0.99),
        upstreams,
        prefetch_per_s: later
            .prefetch
            .iter()
            .map(|(what, &n)| {
                (what.clone(), delta(n, earlier.prefetch.get(what).copied().unwrap_or(0)) as f64 / seconds)
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histogram(bounds: &[f64], per_bucket: &[u64]) -> Histogram {
        let mut cumulative = Vec::new();
        let mut sum = 0;
        for n in per_bucket {
            sum += n;
            cumulative.push(sum);
        }
        Histogram { bounds: bounds.to_vec(), cumulative, count: sum }
    }

    #[test]
    fn quantiles_come_from_the_buckets_that_moved() {
        let bounds = [0.001, 0.01, 0.1];
        let earlier = histogram(&bounds, &[1000, 0, 0]);
        // Since then: 90 in (1, 10] ms, 10 in (10, 100] ms.
        let later = histogram(&bounds, &[1000, 90, 10]);
        let p50 = later.quantile_since(&earlier, 0.5).unwrap();
        assert!((p50 - 6.0).abs() < 1e-9, "{p50}: halfway through the second bucket's 90");
        let p99 = later.quantile_since(&earlier, 0.99).unwrap();
        assert!((p99 - 91.0).abs() < 1e-9, "{p99}");
        assert_eq!(later.quantile_since(&later, 0.5), None, "nothing observed");
        // Beyond the last bound: that bound.
        let slow = Histogram { bounds: bounds.to_vec(), cumulative: vec![0, 0, 0], count: 5 };
        assert_eq!(slow.quantile_since(&Histogram::default(), 0.5), Some(100.0));
        // From nothing (the first reading).
        let first = histogram(&bounds, &[10, 0, 0]);
        assert!((first.quantile_since(&Histogram::default(), 0.5).unwrap() - 0.5).abs() < 1e-9);
    }

    #[test]
    fn histograms_of_several_methods_add_up() {
        let bounds = [0.001, 0.01];
        let mut total = Histogram::default();
        total.add(&histogram(&bounds, &[1, 2]));
        total.add(&histogram(&bounds, &[3, 4]));
        assert_eq!(total, histogram(&bounds, &[4, 6]));
        total.add(&histogram(&[0.5], &[9]));
        assert_eq!(total.count, 10, "other bounds are not mixed in");
    }

    #[test]
    fn a_window_gives_rates_ratios_and_tier_shares() {
        let earlier = RouteReading {
            by_outcome: [("HIT".to_string(), 100), ("MISS".to_string(), 50)].into(),
            hits_by_tier: [("memory".to_string(), 100)].into(),
            upstreams: [("http://a/mcp".to_string(), (50, 0))].into(),
            prefetch: [("issued".to_string(), 4)].into(),
            ..RouteReading::default()
        };
        let later = RouteReading {
            by_outcome: [("HIT".to_string(), 190), ("MISS".to_string(), 60), ("BYPASS".to_string(), 10)].into(),
            failed: 4,
            hits_by_tier: [("memory".to_string(), 160), ("shared".to_string(), 30)].into(),
            upstreams: [("http://a/mcp".to_string(), (70, 4)), ("http://b/mcp".to_string(), (0, 0))].into(),
            prefetch: [("issued".to_string(), 14)].into(),
            ..RouteReading::default()
        };
        let window = route_window(&earlier, &later, 2.0);
        assert_eq!(window.requests_per_s, 55.0);
        assert_eq!(window.hit_ratio, Some(0.9), "90 hits of 100 cacheable; bypasses do not count");
        assert_eq!(window.hits_by_tier["memory"], 60.0 / 90.0);
        assert_eq!(window.hits_by_tier["shared"], 30.0 / 90.0);
        assert_eq!(window.failed_per_s, 2.0);
        assert_eq!(window.upstreams["http://a/mcp"], UpstreamWindow { requests_per_s: 10.0, error_ratio: Some(0.2) });
        assert_eq!(window.upstreams["http://b/mcp"].error_ratio, None, "nothing sent");
        assert_eq!(window.prefetch_per_s["issued"], 5.0);
        assert_eq!(window.hit_p50_ms, None);
        let idle = route_window(&later, &later, 1.0);
        assert_eq!((idle.requests_per_s, idle.hit_ratio), (0.0, None));
        assert!(idle.hits_by_tier.is_empty());
    }
}
