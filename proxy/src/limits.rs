//! Admission limits, answered `429` with `Retry-After`: a route's requests forwarded upstream
//! at once (`limits.max_concurrent`), a client address's requests per second on a route
//! (`limits.rate_per_client`, hits included), and the server-to-client streams one address may
//! hold open (`server.max_streams_per_client`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use mcp_edge_policies::config::LimitsConfig;
use pingora_limits::rate::Rate;

use crate::error::EdgeError;
use crate::metrics::METRICS;

/// Hashes and columns of the per-client rate estimator (a count-min sketch, two of them): it
/// never undercounts, and overcounts little below tens of thousands of active clients per
/// second. About 1 MiB per route that limits rates.
const RATE_HASHES: usize = 4;
const RATE_SLOTS: usize = 16 * 1024;

pub struct RouteLimits {
    config: LimitsConfig,
    forwarded: AtomicUsize,
    rate: Option<Rate>,
    subject_rate: Option<Rate>,
}

impl RouteLimits {
    pub fn new(config: LimitsConfig) -> RouteLimits {
        let per_second = |limit: usize| {
            (limit > 0).then(|| Rate::new_with_estimator_config(Duration::from_secs(1), RATE_HASHES, RATE_SLOTS))
        };
        let (rate, subject_rate) = (per_second(config.rate_per_client), per_second(config.rate_per_subject));
        RouteLimits { config, forwarded: AtomicUsize::new(0), rate, subject_rate }
    }

    /// Counts a request of the verified `subject` (`[route.auth]`); refused past
    /// `rate_per_subject` in the current second, from whatever addresses it comes.
    pub fn admit_subject(&self, subject: &str) -> Result<(), EdgeError> {
        let Some(rate) = &self.subject_rate else { return Ok(()) };
        if rate.observe(&subject, 1) as usize > self.config.rate_per_subject {
            let limit = self.config.rate_per_subject;
            return Err(EdgeError::TooManyRequests(format!("more than {limit} per second for one subject")));
        }
        Ok(())
    }

    /// Counts a request of `client`; refused past `rate_per_client` in the current second.
    pub fn admit(&self, client: Option<IpAddr>) -> Result<(), EdgeError> {
        let (Some(rate), Some(client)) = (&self.rate, client) else { return Ok(()) };
        if rate.observe(&client, 1) as usize > self.config.rate_per_client {
            let limit = self.config.rate_per_client;
            return Err(EdgeError::TooManyRequests(format!("more than {limit} per second from {client}")));
        }
        Ok(())
    }

    /// The share of `max_concurrent` in use (`None`: the route sets no limit).
    pub fn capacity_used(&self) -> Option<f64> {
        let limit = self.config.max_concurrent;
        (limit > 0).then(|| self.forwarded.load(Ordering::Relaxed) as f64 / limit as f64)
    }

    /// A place among the route's requests forwarded upstream, held until dropped; refused
    /// when `max_concurrent` are under way.
    pub fn forward(self: &Arc<Self>) -> Result<Option<Forwarding>, EdgeError> {
        let limit = self.config.max_concurrent;
        if limit == 0 {
            return Ok(None);
        }
        let taken = self.forwarded.fetch_add(1, Ordering::AcqRel);
        let forwarding = Forwarding(self.clone());
        if taken >= limit {
            drop(forwarding);
            return Err(EdgeError::TooManyRequests(format!(
                "the route's {limit} concurrent requests are all under way"
            )));
        }
        Ok(Some(forwarding))
    }
}

/// One request forwarded upstream, counted against `max_concurrent` while it lives.
pub struct Forwarding(Arc<RouteLimits>);

impl std::fmt::Debug for Forwarding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Forwarding")
    }
}

impl Drop for Forwarding {
    fn drop(&mut self) {
        self.0.forwarded.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Open server-to-client streams per client address.
static STREAMS: LazyLock<Mutex<HashMap<IpAddr, usize>>> = LazyLock::new(Default::default);

/// One open server-to-client stream, counted while it lives: in `mcp_streams_open`, and
/// against its client's limit when there is one.
#[derive(Debug)]
pub struct OpenStream {
    limited_client: Option<IpAddr>,
}

/// Opens a stream for `client`; refused when it already holds `max` (0: no limit).
pub fn open_stream(client: Option<IpAddr>, max: usize) -> Result<OpenStream, EdgeError> {
    let limited_client = client.filter(|_| max > 0);
    if let Some(client) = limited_client {
        let mut streams = STREAMS.lock().expect("streams");
        let open = streams.entry(client).or_insert(0);
        if *open >= max {
            return Err(EdgeError::TooManyRequests(format!("{client} already holds {max} open streams")));
        }
        *open += 1;
    }
    METRICS.streams_open.inc();
    Ok(OpenStream { limited_client })
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        METRICS.streams_open.dec();
        let Some(client) = self.limited_client else { return };
        let mut streams = STREAMS.lock().expect("streams");
        if let Some(open) = streams.get_mut(&client) {
            *open -= 1;
            if *open == 0 {
                streams.remove(&client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_concurrent: usize, rate_per_client: usize) -> Arc<RouteLimits> {
        Arc::new(RouteLimits::new(LimitsConfig { max_concurrent, rate_per_client, rate_per_subject: 0 }))
    }

    #[test]
    fn concurrency_is_capped_and_freed_on_drop() {
        let route = limits(2, 0);
        let first = route.forward().unwrap();
        let _second = route.forward().unwrap();
        assert_eq!(route.forward().unwrap_err().status(), 429);
        drop(first);
        assert!(route.forward().is_ok(), "a finished request frees its place");
        assert!(limits(0, 0).forward().unwrap().is_none(), "0: no limit, nothing counted");
    }

    #[test]
    fn each_client_has_its_own_rate() {
        let route = limits(0, 3);
        let (a, b) = (Some("10.0.0.1".parse().unwrap()), Some("10.0.0.2".parse().unwrap()));
        for _ in 0..3 {
            assert!(route.admit(a).is_ok());
        }
        assert_eq!(route.admit(a).unwrap_err().status(), 429);
        assert!(route.admit(b).is_ok(), "another client is not limited by the first");
        assert!(limits(0, 0).admit(a).is_ok());
    }

    #[test]
    fn each_subject_has_its_own_rate() {
        let route = RouteLimits::new(LimitsConfig { rate_per_subject: 2, ..LimitsConfig::default() });
        assert!(route.admit_subject("alice").is_ok() && route.admit_subject("alice").is_ok());
        assert_eq!(route.admit_subject("alice").unwrap_err().status(), 429);
        assert!(route.admit_subject("bob").is_ok(), "another subject is not limited by the first");
        assert!(limits(0, 0).admit_subject("alice").is_ok(), "0: no limit");
    }

    #[test]
    fn streams_per_client_are_capped_and_every_stream_is_counted() {
        let _alone = crate::metrics::IN_FLIGHT_GAUGES_IN_TEST.blocking_lock();
        let gauge = || METRICS.streams_open.get();
        let before = gauge();
        let address: IpAddr = "10.9.9.9".parse().unwrap();
        let client = Some(address);
        let first = open_stream(client, 2).unwrap();
        let second = open_stream(client, 2).unwrap();
        assert!(open_stream(client, 2).is_err());
        assert_eq!(gauge(), before + 2, "a refused stream is not counted");
        drop(first);
        let third = open_stream(client, 2).unwrap();
        // No limit, or no known address: not capped, still counted.
        let unlimited = open_stream(client, 0).unwrap();
        let anonymous = open_stream(None, 2).unwrap();
        assert_eq!(gauge(), before + 4);
        drop((second, third, unlimited, anonymous));
        assert_eq!(gauge(), before);
        assert!(STREAMS.lock().unwrap().get(&address).is_none(), "a client's count ends with its streams");
    }
}
