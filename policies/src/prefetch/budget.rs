//! Whether a prefetch may go upstream now. A prefetch never competes with clients: it has its
//! own cap in flight, its own share of the upstream's traffic, and it stays home while the
//! upstream is unhealthy, slower than its normal, or answering errors.

/// Why a prefetch was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `max_inflight` prefetches of the route are under way.
    Busy,
    /// Prefetches no client has used yet already make `max_share` of the route's recent
    /// upstream requests.
    OverShare,
    /// The upstream answers slower than its normal.
    Slow,
    /// The upstream answers errors.
    Failing,
}

/// How long the share of prefetches is measured over (two halves, so it slides).
pub const SHARE_WINDOW_MS: u64 = 10_000;
/// Latency samples before the upstream's normal is trusted.
const WARM_SAMPLES: u64 = 20;
/// Slower than this many times its normal: slow.
const SLOW_FACTOR: f64 = 2.0;
/// Recent error rate above this: failing.
const FAILING_RATE: f64 = 0.2;

/// Upstream requests of a route and how many were prefetches, over a sliding window.
#[derive(Debug, Clone, Default)]
pub struct Share {
    half_started_ms: u64,
    current: (u64, u64),
    previous: (u64, u64),
}

impl Share {
    fn roll(&mut self, now_ms: u64) {
        let half = SHARE_WINDOW_MS / 2;
        if now_ms.saturating_sub(self.half_started_ms) >= 2 * half {
            self.previous = (0, 0);
            self.current = (0, 0);
            self.half_started_ms = now_ms;
        } else if now_ms.saturating_sub(self.half_started_ms) >= half {
            self.previous = self.current;
            self.current = (0, 0);
            self.half_started_ms = now_ms;
        }
    }

    /// Counts one upstream request (`prefetch`: one of ours).
    pub fn record(&mut self, now_ms: u64, prefetch: bool) {
        self.roll(now_ms);
        self.current.0 += 1;
        self.current.1 += u64::from(prefetch);
    }

    /// A prefetch's answer was used by a client: it stood for a request the client would have
    /// sent anyway, so it no longer counts as extra (the cap bounds the load prefetching adds).
    pub fn used(&mut self, now_ms: u64) {
        self.roll(now_ms);
        if self.current.1 > 0 {
            self.current.1 -= 1;
        } else if self.previous.1 > 0 {
            self.previous.1 -= 1;
        }
    }

    /// Whether one more prefetch keeps unused prefetches within `max_share` of upstream requests
    /// (`burst`: prefetches allowed however few the requests, so a quiet route can still warm).
    pub fn allows(&mut self, now_ms: u64, max_share: f64, burst: u64) -> bool {
        self.roll(now_ms);
        let total = self.current.0 + self.previous.0;
        let prefetches = self.current.1 + self.previous.1;
        prefetches < burst || (prefetches + 1) as f64 <= max_share * (total + 1) as f64
    }
}

/// The upstream's recent latency against its normal, and its recent error rate.
#[derive(Debug, Clone, Default)]
pub struct Weather {
    samples: u64,
    /// Moving averages of latency (ms): recent (alpha 0.2) and normal (alpha 0.02).
    recent_ms: f64,
    normal_ms: f64,
    error_rate: f64,
}

impl Weather {
    /// One upstream answer: its latency to the response head, and whether it failed (5xx, no
    /// answer).
    pub fn record(&mut self, latency_ms: f64, failed: bool) {
        if self.samples == 0 {
            self.recent_ms = latency_ms;
            self.normal_ms = latency_ms;
        } else {
            self.recent_ms += 0.2 * (latency_ms - self.recent_ms);
            self.normal_ms += 0.02 * (latency_ms - self.normal_ms);
        }
        self.error_rate += 0.1 * (f64::from(u8::from(failed)) - self.error_rate);
        self.samples += 1;
    }

    pub fn check(&self) -> Result<(), Refusal> {
        if self.error_rate > FAILING_RATE {
            return Err(Refusal::Failing);
        }
        if self.samples >= WARM_SAMPLES && self.recent_ms > SLOW_FACTOR * self.normal_ms.max(1.0) {
            return Err(Refusal::Slow);
        }
        Ok(())
    }
}

/// One route's prefetch budget.
#[derive(Debug, Clone, Default)]
pub struct Budget {
    pub inflight: usize,
    pub share: Share,
    pub weather: Weather,
}

/// The limits a route's configuration sets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Caps {
    pub max_inflight: usize,
    pub max_share: f64,
}

impl Budget {
    /// Takes a slot for one prefetch, or says why not. The caller gives it back with
    /// [`Budget::finish`].
    pub fn start(&mut self, now_ms: u64, caps: Caps) -> Result<(), Refusal> {
        if self.inflight >= caps.max_inflight {
            return Err(Refusal::Busy);
        }
        self.weather.check()?;
        if !self.share.allows(now_ms, caps.max_share, caps.max_inflight as u64) {
            return Err(Refusal::OverShare);
        }
        self.inflight += 1;
        Ok(())
    }

    pub fn finish(&mut self) {
        self.inflight = self.inflight.saturating_sub(1);
    }
}
