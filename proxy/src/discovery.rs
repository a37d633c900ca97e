//! DNS discovery of a route's replicas (`[route.discovery]`), as pingora-lb's
//! `ServiceDiscovery`: each upstream written as a host name is resolved to every address (A
//! and AAAA), an `srv+http(s)://` upstream to its SRV records (targets, ports, weights), and
//! addresses written as such stay as they are. pingora-lb's `Backends` keeps each address's
//! health across updates; `Pool::rediscover` follows the new membership.
//!
//! A name that fails to resolve, or resolves to nothing, keeps its last good set (logged once
//! when it starts failing and once when it recovers, shown in `/readyz`): a DNS outage must
//! not empty a route. At most [`MAX_ADDRESSES`] per name, so one answer cannot make the pool
//! (and its metric series) grow without bound.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
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
/// How long one round of lookups may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);

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
                _ if url.srv => Source::Srv { name: url.host.clone() },
                Ok(ip) => Source::Fixed(SocketAddr::new(ip, url.port)),
                Err(_) => Source::Name { host: url.host.clone(), port: url.port },
            })
            .collect();
        let state = State { last_good: vec![None; urls.len()], failing: vec![None; urls.len()], next_due: None };
        DnsDiscovery { urls: urls.to_vec(), sources, config: config.clone(), state: Mutex::new(state) }
    }

    /// When the next round is due.
    pub fn next_due(&self) -> Instant {
        self.state.lock().expect("discovery state").next_due.unwrap_or_else(Instant::now)
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
                let set = found.iter().map(|ip| tagged(SocketAddr::new(ip, *port), 1)).collect();
                Ok((set, found.valid_until()))
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
                for srv in records.iter().filter(|srv| Some(srv.priority) == lowest) {
                    let target = srv.target.to_ascii();
                    let ips = resolver.lookup_ip(target.as_str()).await.map_err(|e| format!("{target}: {e}"))?;
                    valid_until = valid_until.min(ips.valid_until());
                    set.extend(
                        ips.iter().map(|ip| tagged(SocketAddr::new(ip, srv.port), usize::from(srv.weight.max(1)))),
                    );
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
                if set.len() > MAX_ADDRESSES {
                    tracing::warn!(upstream = %url, "the name has {} addresses; using the first {MAX_ADDRESSES}", set.len());
                    set = set.into_iter().take(MAX_ADDRESSES).collect();
                }
                if state.failing[index].take().is_some() {
                    tracing::info!(upstream = %url, addresses = set.len(), "the upstream name resolves again");
                }
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

#[async_trait]
impl ServiceDiscovery for DnsDiscovery {
    async fn discover(&self) -> pingora::Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        let resolver = &self.resolver();
        let lookups = (0..self.sources.len()).map(|index| async move {
            let resolver = resolver.as_ref().map_err(Clone::clone)?;
            match tokio::time::timeout(LOOKUP_TIMEOUT, self.lookup(resolver, index)).await {
                Ok(answer) => answer,
                Err(_) => Err(format!("no answer within {LOOKUP_TIMEOUT:?}")),
            }
        });
        let answers = futures_util::future::join_all(lookups).await;
        let mut state = self.state.lock().expect("discovery state");
        let mut due = Instant::now() + self.config.interval;
        let mut all = BTreeSet::new();
        let mut addresses = std::collections::HashSet::new();
        for (index, answer) in answers.into_iter().enumerate() {
            let answer = answer.map(|(set, valid_until)| {
                // Asked again when the records expire, not more often than every 100 ms.
                due = due.min(valid_until.max(Instant::now() + Duration::from_millis(100)));
                set
            });
            self.settle(&mut state, index, answer);
            // An address two entries (or two SRV records) name is one replica: the first's.
            for backend in state.last_good[index].iter().flatten() {
                if addresses.insert(backend.addr.clone()) {
                    all.insert(backend.clone());
                }
            }
        }
        state.next_due = Some(due);
        Ok((all, HashMap::new()))
    }
}
