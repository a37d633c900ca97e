//! A route's pool of upstream replicas: pingora-lb selection (round robin or Ketama),
//! active HTTP health checks, passive ejection on connect failures, and in-flight counts
//! for `least_conn`.

use std::collections::{BTreeSet, HashMap};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use mcp_edge_policies::affinity;
use mcp_edge_policies::balance::least_loaded;
use mcp_edge_policies::config::{Balance, RouteConfig};
use mcp_edge_policies::upstream::UpstreamUrl;

use crate::error::SetupError;
use crate::health::McpHealthCheck;
use pingora::lb::discovery::ServiceDiscovery;
use pingora::lb::selection::{Consistent, RoundRobin};
use pingora::lb::{Backend, Backends, LoadBalancer, discovery};

use crate::discovery::{DnsDiscovery, FromUpstream, NameStatus};
use pingora::protocols::tls::CaType;
use pingora::utils::tls::{WrappedX509, parse_x509};
use std::path::Path;

/// One upstream replica.
pub struct Upstream {
    /// The upstream URL it was configured (or discovered) under.
    pub url: UpstreamUrl,
    /// Stable id named in edge session ids (see `affinity`): the URL's for a fixed address,
    /// the URL's and the address's for a discovered one.
    pub id: String,
    /// How metrics and logs name it: the URL, and for a discovered replica its address too.
    pub label: String,
    /// `url.authority` as the `Host` header value, made once (sent with every request).
    pub host_header: http::HeaderValue,
    pub addr: SocketAddr,
    pub backend: Backend,
    /// Requests currently proxied to it (for `least_conn` and metrics).
    pub inflight: AtomicUsize,
    /// 5xx answers in a row (passive health).
    consecutive_5xx: AtomicUsize,
    /// Ejections so far: a readmission timer acts only if no later ejection started its own.
    ejections: AtomicUsize,
}

impl Upstream {
    /// A replica of `url` at `backend`'s address; `discovered`: one of the addresses a name
    /// resolved to (its id and label then name the address).
    fn new(url: &UpstreamUrl, backend: Backend, discovered: bool) -> Result<Upstream, SetupError> {
        let addr = *backend.addr.as_inet().ok_or_else(|| SetupError::Upstream {
            url: url.url.clone(),
            reason: "a replica without an IP address".into(),
        })?;
        let host_header = http::HeaderValue::from_str(&url.authority).map_err(|e| SetupError::Upstream {
            url: url.url.clone(),
            reason: format!("its authority is not a valid Host header: {e}"),
        })?;
        let (id, label) = match discovered {
            true => (affinity::replica_id(&url.id, &addr.to_string()), format!("{}@{addr}", url.url)),
            false => (url.id.clone(), url.url.clone()),
        };
        Ok(Upstream {
            url: url.clone(),
            id,
            label,
            host_header,
            addr,
            backend,
            inflight: AtomicUsize::new(0),
            consecutive_5xx: AtomicUsize::new(0),
            ejections: AtomicUsize::new(0),
        })
    }
}

/// The replicas of a pool at one time. A request keeps the `Arc<Upstream>`s it picked, so a
/// replica leaving the pool finishes what it was sent.
#[derive(Default)]
pub struct Members {
    pub upstreams: Vec<Arc<Upstream>>,
    by_addr: HashMap<SocketAddr, usize>,
}

impl Members {
    fn new(upstreams: Vec<Arc<Upstream>>) -> Members {
        let by_addr = upstreams.iter().enumerate().map(|(i, u)| (u.addr, i)).collect();
        Members { upstreams, by_addr }
    }

    pub fn get(&self, addr: &SocketAddr) -> Option<&Arc<Upstream>> {
        self.by_addr.get(addr).map(|&i| &self.upstreams[i])
    }
}

enum Selector {
    RoundRobin(LoadBalancer<RoundRobin>),
    Consistent(LoadBalancer<Consistent>),
}

pub struct Pool {
    /// Shared with the health check, which probes each replica at its own URL.
    members: Arc<ArcSwap<Members>>,
    /// With `[route.discovery]`: the names' resolution, re-run by `rediscover`.
    discovery: Option<Arc<SharedDiscovery>>,
    route_name: String,
    /// The route's own CA for `https://` upstreams (`ca_file`); `None`: the system roots.
    pub ca: Option<Arc<CaType>>,
    selector: Selector,
    balance: Balance,
    rotation: AtomicUsize,
    /// How long a replica that refused a connection stays out of rotation.
    eject_for: Duration,
}

impl Pool {
    /// Resolves the route's upstream URLs and builds its balancer and health check.
    pub fn build(route: &RouteConfig) -> Result<Pool, SetupError> {
        if route.discovery.enabled {
            return Self::discovered(route);
        }
        let mut upstreams: Vec<Arc<Upstream>> = Vec::new();
        for url in &route.upstreams {
            let addr = resolve(url)?;
            if let Some(other) = upstreams.iter().find(|u| u.addr == addr) {
                return Err(SetupError::Upstream {
                    url: url.url.clone(),
                    reason: format!(
                        "resolves to {addr}, as upstream {:?} of route {:?} does",
                        other.url.url, route.name
                    ),
                });
            }
            upstreams.push(Arc::new(Upstream::new(url, crate::health::backend_for(addr), false)?));
        }
        let set: BTreeSet<Backend> = upstreams.iter().map(|u| u.backend.clone()).collect();
        let pool = Self::assemble(route, Members::new(upstreams), || discovery::Static::new(set.clone()), None)?;
        // Static discovery never waits, so the first update completes at once.
        use futures_util::FutureExt;
        let done = pool.update().now_or_never();
        debug_assert!(matches!(done, Some(Ok(()))), "static discovery completes synchronously");
        Ok(pool)
    }

    /// A pool whose names are resolved to every address now and again (`[route.discovery]`).
    /// The first round runs before the pool serves (on a runtime of its own: building is
    /// synchronous, at start and on a reload's blocking thread); a name that does not resolve
    /// yet leaves the pool without its replicas until it does.
    fn discovered(route: &RouteConfig) -> Result<Pool, SetupError> {
        let dns = Arc::new(DnsDiscovery::new(&route.upstreams, &route.discovery));
        let shared = Arc::new(SharedDiscovery { dns, prepared: Mutex::default() });
        let boxed = || Box::new(Handle(shared.clone())) as Box<dyn ServiceDiscovery + Send + Sync>;
        let pool = Self::assemble(route, Members::default(), boxed, Some(shared.clone()))?;
        let first_round = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| SetupError::Upstream { url: route.name.clone(), reason: format!("resolving: {e}") })?
            .block_on(pool.update());
        if let Err(e) = first_round {
            tracing::warn!(route = %route.name, error = %e, "upstream discovery failed");
        }
        pool.follow_backends();
        Ok(pool)
    }

    /// The pool around `members`, its balancer fed by `discovery` (called once per balancer).
    fn assemble(
        route: &RouteConfig,
        members: Members,
        discovery: impl Fn() -> Box<dyn ServiceDiscovery + Send + Sync>,
        dns: Option<Arc<SharedDiscovery>>,
    ) -> Result<Pool, SetupError> {
        let ca = route.ca_file.as_deref().map(load_ca).transpose()?;
        let members = Arc::new(ArcSwap::from_pointee(members));
        let backends = || {
            let mut backends = Backends::new(discovery());
            let check = McpHealthCheck::new(&route.name, members.clone(), route.health.timeout, ca.clone());
            backends.set_health_check(Box::new(check));
            backends
        };
        let selector = match route.balance {
            Balance::Consistent => Selector::Consistent(LoadBalancer::from_backends(backends())),
            Balance::RoundRobin | Balance::LeastConn => Selector::RoundRobin(LoadBalancer::from_backends(backends())),
        };
        Ok(Pool {
            members,
            discovery: dns,
            route_name: route.name.clone(),
            ca,
            selector,
            balance: route.balance,
            rotation: AtomicUsize::new(0),
            eject_for: route.health.interval.max(Duration::from_secs(1)),
        })
    }

    async fn update(&self) -> pingora::Result<()> {
        match &self.selector {
            Selector::RoundRobin(lb) => lb.update().await,
            Selector::Consistent(lb) => lb.update().await,
        }
    }

    /// With discovery: resolves the names again and follows the answers. Replicas that left
    /// get no new request; those they are answering finish (each holds its `Arc<Upstream>`);
    /// sessions pinned to them get `404` (their id is no longer found).
    ///
    /// The answer is read first and its new replicas joined to the members before the balancer
    /// is given it: a balancer that picks a backend the members do not have yet would find no
    /// replica (a `503` in the instant between the two).
    pub async fn rediscover(&self) {
        let Some(shared) = &self.discovery else { return };
        match shared.dns.discover().await {
            Ok(answer) => {
                self.widen_members(&answer.0);
                *shared.prepared.lock().expect("prepared answer") = Some(answer);
                if let Err(e) = self.update().await {
                    tracing::warn!(route = %self.route_name, error = %e, "upstream discovery failed");
                }
            }
            Err(e) => tracing::warn!(route = %self.route_name, error = %e, "upstream discovery failed"),
        }
        self.follow_backends();
    }

    /// Adds to the members the replicas of `backends` at addresses they do not have yet.
    fn widen_members(&self, backends: &BTreeSet<Backend>) {
        let current = self.members.load_full();
        let new: Vec<&Backend> =
            backends.iter().filter(|b| b.addr.as_inet().is_some_and(|a| current.get(a).is_none())).collect();
        if new.is_empty() {
            return;
        }
        let mut upstreams = current.upstreams.clone();
        upstreams.extend(new.into_iter().filter_map(|backend| self.replica_of(backend, "joined")));
        self.members.store(Arc::new(Members::new(upstreams)));
    }

    /// A new replica for `backend`, made from the URL of the entry it came from (logged as
    /// `event`: joined, or reweighted when only its weight changed).
    fn replica_of(&self, backend: &Backend, event: &str) -> Option<Arc<Upstream>> {
        let FromUpstream(index) = backend.ext.get::<FromUpstream>().copied()?;
        let url = self.discovery.as_ref()?.dns.url(index)?;
        let discovered = url.srv.is_some() || url.host.parse::<std::net::IpAddr>().is_err();
        match Upstream::new(url, backend.clone(), discovered) {
            Ok(upstream) => {
                tracing::info!(route = %self.route_name, upstream = %upstream.label, weight = backend.weight, "replica {event}");
                Some(Arc::new(upstream))
            }
            Err(e) => {
                tracing::warn!(route = %self.route_name, error = %e, "replica refused");
                None
            }
        }
    }

    /// When discovery should run next (`None`: the pool has none).
    pub fn discovery_due(&self) -> Option<std::time::Instant> {
        self.discovery.as_ref().map(|shared| shared.dns.next_due())
    }

    /// Each upstream entry's resolution (empty without discovery).
    pub fn discovery_status(&self) -> Vec<NameStatus> {
        self.discovery.as_ref().map_or_else(Vec::new, |shared| shared.dns.status())
    }

    /// Makes the members what the balancer's backends now are: replicas kept by address (with
    /// their counters), new ones made from their entry's URL.
    fn follow_backends(&self) {
        let backends = self.backends().get_backend();
        let current = self.members.load_full();
        let same = backends.len() == current.upstreams.len()
            && backends.iter().all(|b| b.addr.as_inet().and_then(|a| current.get(a)).is_some_and(|u| u.backend == *b));
        if same {
            return;
        }
        let mut upstreams = Vec::with_capacity(backends.len());
        for backend in backends.iter() {
            let kept = backend.addr.as_inet().and_then(|a| current.get(a)).filter(|u| u.backend == *backend);
            let reweighted = backend.addr.as_inet().is_some_and(|a| current.get(a).is_some());
            match kept {
                Some(upstream) => upstreams.push(upstream.clone()),
                None => upstreams.extend(self.replica_of(backend, if reweighted { "reweighted" } else { "joined" })),
            }
        }
        let next = Members::new(upstreams);
        for gone in current.upstreams.iter().filter(|u| next.get(&u.addr).is_none()) {
            tracing::info!(route = %self.route_name, upstream = %gone.label, "replica left");
        }
        self.members.store(Arc::new(next));
    }

    fn backends(&self) -> &Backends {
        match &self.selector {
            Selector::RoundRobin(lb) => lb.backends(),
            Selector::Consistent(lb) => lb.backends(),
        }
    }

    /// The replicas now.
    pub fn members(&self) -> Arc<Members> {
        self.members.load_full()
    }

    /// Whether `select` reads its key (only consistent hashing does): the key, the caller's
    /// identity or address, is then made only where it is used.
    pub fn hashes_callers(&self) -> bool {
        self.balance == Balance::Consistent
    }

    /// Whether the replica is healthy and not ejected.
    pub fn is_ready(&self, upstream: &Upstream) -> bool {
        self.backends().ready(&upstream.backend)
    }

    /// Whether any replica is ready.
    pub fn any_ready(&self) -> bool {
        self.members().upstreams.iter().any(|u| self.is_ready(u))
    }

    /// The replica whose id is `id` (see `affinity`), if it is still in the pool.
    pub fn find_by_id(&self, id: &str) -> Option<Arc<Upstream>> {
        self.members().upstreams.iter().find(|u| u.id == id).cloned()
    }

    /// Picks a ready replica not in `exclude`. `key` feeds consistent hashing. When no replica
    /// is ready, any replica not yet tried is picked (as Envoy's panic threshold does): a
    /// health check that ran before the upstream came up must not refuse every request.
    pub fn select(&self, key: &[u8], exclude: &[Arc<Upstream>]) -> Option<Arc<Upstream>> {
        let members = self.members.load();
        let excluded = |u: &Upstream| exclude.iter().any(|e| e.addr == u.addr);
        // One replica: it is the pick whether ready or not, unless it was tried already.
        if let [only] = &members.upstreams[..] {
            return (!excluded(only)).then(|| only.clone());
        }
        let index = self
            .select_among(&members, key, &excluded, true)
            .or_else(|| self.select_among(&members, key, &excluded, false))?;
        Some(members.upstreams[index].clone())
    }

    fn select_among(
        &self,
        members: &Members,
        key: &[u8],
        excluded: &dyn Fn(&Upstream) -> bool,
        ready_only: bool,
    ) -> Option<usize> {
        let accept = |index: usize, ready: bool| (ready || !ready_only) && !excluded(&members.upstreams[index]);
        let count = members.upstreams.len();
        match (&self.selector, self.balance) {
            (Selector::RoundRobin(_), Balance::LeastConn) => {
                let candidates: Vec<(usize, usize)> = (0..count)
                    .filter(|&i| accept(i, self.is_ready(&members.upstreams[i])))
                    .map(|i| (i, members.upstreams[i].inflight.load(Ordering::Relaxed)))
                    .collect();
                least_loaded(&candidates, self.rotation.fetch_add(1, Ordering::Relaxed))
            }
            (Selector::RoundRobin(lb), _) => Self::pick(members, |f| lb.select_with(key, count, f), accept),
            (Selector::Consistent(lb), _) => Self::pick(members, |f| lb.select_with(key, count * 4, f), accept),
        }
    }

    fn pick(
        members: &Members,
        select_with: impl FnOnce(&dyn Fn(&Backend, bool) -> bool) -> Option<Backend>,
        accept: impl Fn(usize, bool) -> bool,
    ) -> Option<usize> {
        let index_of = |backend: &Backend| backend.addr.as_inet().and_then(|addr| members.by_addr.get(addr).copied());
        let filter = |backend: &Backend, ready: bool| index_of(backend).is_some_and(|i| accept(i, ready));
        select_with(&filter).and_then(|b| index_of(&b))
    }

    /// Takes a replica out of rotation (a refused connection, or 5xx in a row); it comes back
    /// after `eject_for`, and stays out longer only if the active health check also fails.
    pub fn eject(self: &Arc<Self>, upstream: &Arc<Upstream>) {
        let ejection = upstream.ejections.fetch_add(1, Ordering::AcqRel) + 1;
        self.backends().set_enable(&upstream.backend, false);
        let (pool, upstream) = (Arc::downgrade(self), Arc::downgrade(upstream));
        let delay = self.eject_for;
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if let (Some(pool), Some(upstream)) = (pool.upgrade(), upstream.upgrade()) {
                pool.readmit(&upstream, ejection);
            }
        });
    }

    /// Ends ejection number `ejection` of a replica, unless a later one is running.
    fn readmit(&self, upstream: &Upstream, ejection: usize) {
        if upstream.ejections.load(Ordering::Acquire) == ejection {
            self.backends().set_enable(&upstream.backend, true);
        }
    }

    /// Passive health: a replica answering 5xx this many times in a row is ejected like one
    /// that refuses connections (Envoy's outlier detection uses the same default).
    pub const EJECT_AFTER_5XX: usize = 5;

    /// Records an answer's status; returns whether the replica was just ejected.
    pub fn record_status(self: &Arc<Self>, upstream: &Arc<Upstream>, status: u16) -> bool {
        if !(500..600).contains(&status) {
            upstream.consecutive_5xx.store(0, Ordering::Relaxed);
            return false;
        }
        if upstream.consecutive_5xx.fetch_add(1, Ordering::Relaxed) + 1 < Self::EJECT_AFTER_5XX {
            return false;
        }
        upstream.consecutive_5xx.store(0, Ordering::Relaxed);
        self.eject(upstream);
        true
    }

    /// One round of active health checks over every replica.
    pub async fn run_health_check(&self) {
        self.backends().run_health_check(true).await;
    }
}

/// What `discover` answers: a discovery's answer and the enablement of its backends.
type Discovered = (BTreeSet<Backend>, HashMap<u64, bool>);

/// The pool's `DnsDiscovery`, shared with the balancer (which takes a boxed discovery), and
/// an answer already read for the balancer's next update (see `Pool::rediscover`).
struct SharedDiscovery {
    dns: Arc<DnsDiscovery>,
    prepared: Mutex<Option<Discovered>>,
}

/// The balancer's handle on the shared discovery.
struct Handle(Arc<SharedDiscovery>);

#[async_trait::async_trait]
impl ServiceDiscovery for Handle {
    async fn discover(&self) -> pingora::Result<Discovered> {
        let prepared = self.0.prepared.lock().expect("prepared answer").take();
        match prepared {
            Some(answer) => Ok(answer),
            None => self.0.dns.discover().await,
        }
    }
}

/// Reads the PEM certificates of a CA file.
fn load_ca(path: &Path) -> Result<Arc<CaType>, SetupError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let refused = |reason: String| SetupError::CaFile { path: path.display().to_string(), reason };
    let certificates: Vec<WrappedX509> = CertificateDer::pem_file_iter(path)
        .map_err(|e| refused(e.to_string()))?
        .map(|cert| {
            let der = cert.map_err(|e| refused(e.to_string()))?;
            // Parse first: pingora's wrapper panics on a certificate it cannot parse.
            x509_parser::parse_x509_certificate(&der)
                .map_err(|e| refused(format!("a certificate does not parse: {e}")))?;
            Ok(WrappedX509::new(der.to_vec(), parse_x509))
        })
        .collect::<Result<_, SetupError>>()?;
    if certificates.is_empty() {
        return Err(refused("no certificate found".into()));
    }
    Ok(Arc::from(certificates.into_boxed_slice()))
}

fn resolve(url: &UpstreamUrl) -> Result<SocketAddr, SetupError> {
    let refused = |reason: String| SetupError::Upstream { url: url.url.clone(), reason };
    (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|e| refused(format!("cannot resolve {}: {e}", url.host)))?
        .next()
        .ok_or_else(|| refused(format!("{} has no address", url.host)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> Arc<Pool> {
        pool_of(&["http://127.0.0.1:1/mcp", "http://127.0.0.1:2/mcp"], "round_robin")
    }

    fn pool_of(upstreams: &[&str], balance: &str) -> Arc<Pool> {
        let upstreams = upstreams.iter().map(|u| format!("{u:?}")).collect::<Vec<_>>().join(", ");
        let source = format!(
            "[[route]]\npath = \"/mcp\"\nupstreams = [{upstreams}]\nbalance = \"{balance}\"\n[route.health]\ninterval = \"2s\"\n"
        );
        let config = mcp_edge_policies::Config::from_toml(&source).unwrap();
        Arc::new(Pool::build(&config.routes[0]).unwrap())
    }

    #[tokio::test(start_paused = true)]
    async fn a_single_replica_is_picked_ready_or_not_until_it_was_tried() {
        let pool = pool_of(&["http://127.0.0.1:1/mcp"], "round_robin");
        let only = pool.select(b"", &[]).expect("picked");
        pool.eject(&only);
        assert!(!pool.is_ready(&only));
        assert_eq!(pool.select(b"", &[]).map(|u| u.addr), Some(only.addr), "an ejected lone replica is still tried");
        assert!(pool.select(b"", &[only]).is_none(), "but not twice for one request");
    }

    #[test]
    fn only_consistent_hashing_reads_the_callers_key() {
        let two = ["http://127.0.0.1:1/mcp", "http://127.0.0.1:2/mcp"];
        assert!(pool_of(&two, "consistent").hashes_callers());
        assert!(!pool_of(&two, "round_robin").hashes_callers());
        assert!(!pool_of(&two, "least_conn").hashes_callers());
    }

    #[test]
    fn the_host_header_is_the_upstream_urls_authority() {
        let pool = pool_of(&["http://localhost:3001/mcp"], "round_robin");
        assert_eq!(pool.members().upstreams[0].host_header, "localhost:3001");
    }

    #[tokio::test(start_paused = true)]
    async fn an_earlier_ejections_timer_does_not_end_a_later_one() {
        let pool = pool();
        let [first, second] = [0, 1].map(|i| pool.members().upstreams[i].clone());
        assert!(pool.is_ready(&first));
        pool.eject(&first);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        pool.eject(&first);
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(!pool.is_ready(&first), "the first ejection's window ended, the second's has not");
        assert!(pool.is_ready(&second), "the other replica was never ejected");
        tokio::time::sleep(Duration::from_millis(1400)).await;
        assert!(pool.is_ready(&first), "readmitted when the latest ejection ends");
    }
}
