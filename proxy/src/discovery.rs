//! DNS discovery of a route's replicas (`[route.discovery]`), as pingora-lb's
//! `ServiceDiscovery`: each upstream written as a host name is resolved to every address (A
//! and AAAA), an `srv+http(s)://` upstream to its SRV records (targets, ports, weights), and
//! addresses written as such stay as they are. pingora-lb's `Backends` keeps each address's
//! health across updates; `Pool::rediscover` follows the new membership.
//!
//! A name that fails to resolve, or resolves to nothing, keeps its last good set (logged once
//! when it starts failing and once when it recovers, shown in `/readyz`): a DNS outage must
//! not empty a route, not even when a reload builds its pool afresh ([`LAST_GOOD`]). At most
//! [`MAX_ADDRESSES`] per name, so one answer cannot make the pool (and its metric series) grow
//! without bound; addresses no replica can have (unspecified, multicast, port 0) are left out.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use hickory_resolver::config::{LookupIpStrategy, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::{Resolver, TokioResolver};
use mcp_edge_policies::config::DiscoveryConfig;
use mcp_edge_policies::upstream::UpstreamUrl;
use pingora::lb::Backend;
use pingora::lb::discovery::ServiceDiscovery;
use serde::Serialize;

/// The most addresses one name contributes (the lowest, in address order).
pub const MAX_ADDRESSES: usize = 64;
/// How long one round of lookups may take; the first (while the pool is built, at start or on
/// a reload, one route after another) shorter: a resolver that is down must not hold a start
/// for long (the pool then begins with what the name last resolved to, and the next round
/// follows at once).
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);
const FIRST_LOOKUP_TIMEOUT: Duration = Duration::from_millis(500);

/// The last good set of each upstream URL (with its resolver), for the whole process: a pool
/// built by a reload while DNS is down starts from what the old one had. Entries of URLs no
/// longer configured are dropped when a pool is built.
type Remembered = HashMap<(String, Option<SocketAddr>), BTreeSet<Backend>>;
static LAST_GOOD: LazyLock<Mutex<Remembered>> = LazyLock::new(Default::default);

/// Which configured upstream (its index in the route's `upstreams`) a backend came from,
/// carried in `Backend::ext`.
#[derive(Clone, Copy, Debug)]
pub struct FromUpstream(pub usize);

/// What one upstream entry is resolved as.
enum Source {
    /// An address written as such.
    Fixed(SocketAddr),
    /// A host name: its A and AAAA records, with the URL's port.
    Name { host: String, port: u16 },
    /// An SRV name: its records' targets, ports and weights (lowest priority only).
    Srv { name: String },
}

/// The state of one upstream entry's resolution, for `/readyz` and `check`.
#[derive(Debug, Clone, Serialize)]
pub struct NameStatus {
    pub upstream: String,
    /// Addresses in use (the last good answer's).
    pub addresses: usize,
    /// Why the last lookup gave nothing, while it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Default)]
struct State {
    /// The last good set of each source.
    last_good: Vec<Option<BTreeSet<Backend>>>,
    /// Why each source's last lookup failed, while it does.
    failing: Vec<Option<String>>,
    /// Sources whose answer was cut to [`MAX_ADDRESSES`] (logged once).
    truncated: Vec<bool>,
    /// When the next round is due (the interval, or the soonest TTL).
    next_due: Option<Instant>,
}

pub struct DnsDiscovery {
    urls: Vec<UpstreamUrl>,
    sources: Vec<Source>,
    config: DiscoveryConfig,
    state: Mutex<State>,
}

impl DnsDiscovery {
    pub fn new(urls: &[UpstreamUrl], config: &DiscoveryConfig) -> DnsDiscovery {
        let sources = urls
            .iter()
            .map(|url| match url.host.parse::<IpAddr>() {
                _ if url.srv.is_some() => Source::Srv { name: url.srv.clone().unwrap_or_default() },
                Ok(ip) => Source::Fixed(SocketAddr::new(ip, url.port)),
                Err(_) => Source::Name { host: url.host.clone(), port: url.port },
            })
            .collect();
        let known = LAST_GOOD.lock().expect("last good");
        let last_good = urls.iter().map(|url| known.get(&(url.url.clone(), config.resolver)).cloned()).collect();
        drop(known);
        let state =
            State { last_good, failing: vec![None; urls.len()], truncated: vec![false; urls.len()], next_due: None };
        DnsDiscovery { urls: urls.to_vec(), sources, config: config.clone(), state: Mutex::new(state) }
    }

    /// When the next round is due.
    pub fn next_due(&self) -> Instant {
        self.state.lock().expect("discovery state").next_due.unwrap_or_else(Instant::now)
    }

    /// The upstream entry a backend came from ([`FromUpstream`]).
    pub fn url(&self, index: usize) -> Option<&UpstreamUrl> {
        self.urls.get(index)
    }

    /// Each upstream entry's resolution.
    pub fn status(&self) -> Vec<NameStatus> {
        let state = self.state.lock().expect("discovery state");
        self.urls
            .iter()
            .enumerate()
            .map(|(i, url)| NameStatus {
                upstream: url.url.clone(),
                addresses: state.last_good[i].as_ref().map_or(0, BTreeSet::len),
                error: state.failing[i].clone(),
            })
            .collect()
    }

    /// A resolver for one round: the route's DNS server or the system's. Made afresh each
    /// round (a few microseconds; rounds are seconds apart), so it lives on whichever runtime
    /// runs the round, the first one at start included.
    fn resolver(&self) -> Result<TokioResolver, String> {
        let mut options = ResolverOpts::default();
        options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        options.timeout = Duration::from_secs(1);
        options.attempts = 2;
        let builder = match self.config.resolver {
            Some(server) => {
                let mut name_server = NameServerConfig::udp_and_tcp(server.ip());
                for connection in &mut name_server.connections {
                    connection.port = server.port();
                }
                let config = ResolverConfig::from_name_servers(vec![name_server]);
                Resolver::builder_with_config(config, TokioRuntimeProvider::default())
            }
            None => Resolver::builder_tokio().map_err(|e| format!("the system's resolver configuration: {e}"))?,
        };
        builder.with_options(options).build().map_err(|e| e.to_string())
    }

    /// The backends of source `index`, and until when the answer is valid.
    async fn lookup(&self, resolver: &TokioResolver, index: usize) -> Result<(BTreeSet<Backend>, Instant), String> {
        let tagged = |addr: SocketAddr, weight: usize| {
            let mut backend = Backend { addr: addr.into(), weight, ext: Default::default() };
            backend.ext.insert(FromUpstream(index));
            backend
        };
        let far = Instant::now() + Duration::from_secs(3600);
        match &self.sources[index] {
            Source::Fixed(addr) => Ok((BTreeSet::from([tagged(*addr, 1)]), far)),
            Source::Name { host, port } => {
                let found = resolver.lookup_ip(host.as_str()).await.map_err(|e| e.to_string())?;
                let addresses = found.iter().map(|ip| SocketAddr::new(ip, *port)).filter(could_be_a_replica);
                Ok((addresses.map(|addr| tagged(addr, 1)).collect(), found.valid_until()))
            }
            Source::Srv { name } => {
                let found = resolver.srv_lookup(name.as_str()).await.map_err(|e| e.to_string())?;
                let records: Vec<_> = found
                    .answers()
                    .iter()
                    .filter_map(|record| match &record.data {
                        RData::SRV(srv) => Some(srv.clone()),
                        _ => None,
                    })
                    .collect();
                // RFC 2782: the lowest priority that has targets; weight 0 still serves.
                let lowest = records.iter().map(|srv| srv.priority).min();
                let mut set = BTreeSet::new();
                let mut valid_until = found.valid_until();
                let mut unresolved = Vec::new();
                // A target that does not resolve is left out; the others still count.
                for srv in records.iter().filter(|srv| Some(srv.priority) == lowest) {
                    let target = srv.target.to_ascii();
                    match resolver.lookup_ip(target.as_str()).await {
                        Ok(ips) => {
                            valid_until = valid_until.min(ips.valid_until());
                            let addresses =
                                ips.iter().map(|ip| SocketAddr::new(ip, srv.port)).filter(could_be_a_replica);
                            set.extend(addresses.map(|addr| tagged(addr, usize::from(srv.weight.max(1)))));
                        }
                        Err(e) => unresolved.push(format!("{target}: {e}")),
                    }
                }
                if set.is_empty() && !unresolved.is_empty() {
                    return Err(unresolved.join("; "));
                }
                Ok((set, valid_until))
            }
        }
    }

    /// Keeps what source `index` answered (at most [`MAX_ADDRESSES`]) or, when it failed or
    /// answered nothing, its last good set; logs when it starts and stops failing.
    fn settle(&self, state: &mut State, index: usize, answer: Result<BTreeSet<Backend>, String>) {
        let url = &self.urls[index].url;
        match answer {
            Ok(mut set) if !set.is_empty() => {
                let cut = set.len() > MAX_ADDRESSES;
                if cut && !state.truncated[index] {
                    tracing::warn!(upstream = %url, "the name has {} addresses; using the first {MAX_ADDRESSES}", set.len());
                }
                state.truncated[index] = cut;
                set = set.into_iter().take(MAX_ADDRESSES).collect();
                if state.failing[index].take().is_some() {
                    tracing::info!(upstream = %url, addresses = set.len(), "the upstream name resolves again");
                }
                LAST_GOOD.lock().expect("last good").insert((url.clone(), self.config.resolver), set.clone());
                state.last_good[index] = Some(set);
            }
            answer => {
                let error = answer.err().unwrap_or_else(|| "no address".to_string());
                if state.failing[index].is_none() {
                    let kept = state.last_good[index].as_ref().map_or(0, BTreeSet::len);
                    tracing::warn!(upstream = %url, %error, kept, "the upstream name does not resolve; keeping its last addresses");
                }
                state.failing[index] = Some(error);
            }
        }
    }
}

/// Whether a replica could listen at `addr`: not an unspecified, multicast or broadcast
/// address (`0.0.0.0` would reach the edge's own host), not port 0.
fn could_be_a_replica(addr: &SocketAddr) -> bool {
    let ip = addr.ip().to_canonical();
    let broadcast = matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
    addr.port() != 0 && !ip.is_unspecified() && !ip.is_multicast() && !broadcast
}

/// Drops the remembered sets of URLs no configuration names any more.
pub fn forget_all_but(urls: &[&UpstreamUrl]) {
    LAST_GOOD.lock().expect("last good").retain(|(url, _), _| urls.iter().any(|u| &u.url == url));
}

#[async_trait]
impl ServiceDiscovery for DnsDiscovery {
    async fn discover(&self) -> pingora::Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        let resolver = &self.resolver();
        let first = self.state.lock().expect("discovery state").next_due.is_none();
        let limit = if first { FIRST_LOOKUP_TIMEOUT } else { LOOKUP_TIMEOUT };
        let lookups = (0..self.sources.len()).map(|index| async move {
            let resolver = resolver.as_ref().map_err(Clone::clone)?;
            match tokio::time::timeout(limit, self.lookup(resolver, index)).await {
                Ok(answer) => answer,
                Err(_) => Err(format!("no answer within {limit:?}")),
            }
        });
        let answers = futures_util::future::join_all(lookups).await;
        let mut state = self.state.lock().expect("discovery state");
        let mut due = Instant::now() + self.config.interval;
        let mut first_failed = false;
        let mut all = BTreeSet::new();
        let mut addresses = std::collections::HashSet::new();
        for (index, answer) in answers.into_iter().enumerate() {
            let answer = answer.map(|(set, valid_until)| {
                // Asked again when the records expire, not more often than every 100 ms.
                due = due.min(valid_until.max(Instant::now() + Duration::from_millis(100)));
                set
            });
            first_failed |= first && answer.is_err();
            self.settle(&mut state, index, answer);
            // An address two entries (or two SRV records) name is one replica: the first's.
            for backend in state.last_good[index].iter().flatten() {
                if addresses.insert(backend.addr.clone()) {
                    all.insert(backend.clone());
                }
            }
        }
        // After a first round that failed, the next follows at once (from the loop).
        state.next_due = Some(if first_failed { Instant::now() } else { due });
        Ok((all, HashMap::new()))
    }
}
