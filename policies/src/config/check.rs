//! The meaning of each configured value: sizes, durations, URLs, addresses, duplicates. Turns
//! the raw configuration into a validated one, collecting every problem on the way.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;

use super::defaults::default_allowed_hosts;
use super::raw::*;
use super::*;
use crate::prefetch::sequence::MAX_WITNESSES;
use crate::problem::{Problem, SourceMap, unplaced};
use crate::upstream::UpstreamUrl;

/// The most URIs one route may subscribe to per era: a subscription set is held in memory and
/// sent whole (a stateless-era stream names every URI), so it must stay small beside the cache.
const MAX_SUBSCRIPTIONS_LIMIT: usize = 100_000;

/// A Redis URL mcp-edge accepts: `redis://` or `rediss://`, a host, and no password (it
/// belongs in `password_file`, never in the configuration).
/// The URL spans are posted to, from `tracing.otlp`: an `http://` or `https://` URL of a
/// collector; one without a path (OTLP's base endpoint) gets the traces path, `/v1/traces`.
pub fn otlp_traces_url(url: &str) -> Result<String, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("is not a URL ({e}): {url:?}"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(format!("must be an http:// or https:// URL of an OTLP/HTTP collector, not {url:?}"));
    }
    let Some(authority) = uri.authority() else { return Err(format!("names no host: {url:?}")) };
    if authority.as_str().contains('@') {
        return Err("must not carry credentials (user:password@)".into());
    }
    // The text after the host's last `:` (an IPv6 host is bracketed): `http` parses any digits.
    let port = authority.as_str().rsplit_once(':').filter(|_| !authority.as_str().ends_with(']'));
    if port.is_some_and(|(_, port)| !port.parse::<u16>().is_ok_and(|port| port > 0)) {
        return Err(format!("names no usable port (1-65535): {url:?}"));
    }
    if uri.query().is_some() {
        return Err(format!("must not have a query: {url:?}"));
    }
    Ok(match uri.path() {
        "" | "/" => format!("{}://{}/v1/traces", uri.scheme_str().unwrap_or("http"), authority),
        _ => url.to_string(),
    })
}

fn check_redis_url(url: &str) -> Result<(), String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!("{url:?} is not a URL like \"redis://127.0.0.1:6379\""));
    };
    if scheme != "redis" && scheme != "rediss" {
        return Err(format!("scheme {scheme:?} is not redis:// or rediss://"));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = match authority.rsplit_once('@') {
        Some((user, _)) if user.contains(':') => {
            return Err("the URL carries a password: put it in cache.shared.password_file".into());
        }
        Some((_, host)) => host,
        None => authority,
    };
    if host.is_empty() || host.parse::<http::uri::Authority>().is_err() {
        return Err(format!("{url:?} has no valid host"));
    }
    let port = match host.strip_prefix('[') {
        Some(v6) => v6.split_once("]:").map(|(_, port)| port),
        None => host.rsplit_once(':').map(|(_, port)| port),
    };
    if let Some(port) = port
        && port.parse::<u16>().map_or(true, |port| port == 0)
    {
        return Err(format!("{url:?}: port {port:?} is not a port to connect to (1 to 65535)"));
    }
    // The redis crate reads options there (`#insecure` turns certificate checks off).
    if rest.contains(['?', '#']) {
        return Err(format!("{url:?}: mcp-edge takes no query or fragment in a Redis URL"));
    }
    let database = rest[authority.len()..].split(['?', '#']).next().unwrap_or_default().trim_start_matches('/');
    if !database.is_empty() && database.parse::<u16>().is_err() {
        return Err(format!("database {database:?} is not a number (e.g. redis://host:6379/0)"));
    }
    Ok(())
}

/// A cluster has one database (0): a seed naming another is a mistake worth telling.
fn check_cluster_seed(url: &str) -> Result<(), String> {
    let rest = url.split_once("://").map_or("", |(_, rest)| rest);
    let path = rest.split(['?', '#']).next().unwrap_or_default();
    match path.split_once('/').map(|(_, database)| database) {
        Some(database) if !database.is_empty() && database != "0" => {
            Err(format!("{url:?} names database {database}: a cluster has only database 0"))
        }
        _ => Ok(()),
    }
}

/// Collects problems while turning raw values into validated ones.
pub(super) struct Checker<'a> {
    pub(super) map: &'a SourceMap,
    pub(super) problems: Vec<Problem>,
}

impl Checker<'_> {
    pub(super) fn report(&mut self, span: std::ops::Range<usize>, message: String) {
        self.problems.push(self.map.problem(span, message));
    }

    pub(super) fn config(&mut self, raw: RawConfig) -> Config {
        let config = Config {
            server: self.server(&raw.server),
            admin: self.admin(&raw.admin),
            cache: self.cache(&raw.cache),
            compression: self.compression(&raw.compression),
            log: self.log(&raw.log),
            tracing: self.tracing(&raw.tracing),
            routes: raw.route.iter().map(|r| self.route(r)).collect(),
        };
        if raw.route.is_empty() {
            self.problems
                .push(unplaced("no [[route]] is configured: add at least one route with a path and upstreams"));
        }
        self.check_unique_routes(&raw.route, &config.routes);
        self.check_distinct_listeners(&raw);
        config
    }

    /// Each listener needs an address of its own (an unspecified IP covers every one on its
    /// port): a clash would leave Pingora retrying the bind for ever, or panicking.
    fn check_distinct_listeners(&mut self, raw: &RawConfig) {
        let plain = raw.server.listen.iter().flatten().map(|a| (a, "server.listen"));
        let tls = raw.server.tls.iter().flat_map(|t| &t.get_ref().listen).map(|a| (a, "server.tls.listen"));
        let admin = raw.admin.listen.iter().map(|a| (a, "admin.listen"));
        let mut taken: Vec<(SocketAddr, &str)> = Vec::new();
        for (text, key) in plain.chain(tls).chain(admin) {
            let Ok(addr) = text.get_ref().parse::<SocketAddr>() else { continue };
            let clash = |(other, _): &&(SocketAddr, &str)| {
                other.port() == addr.port()
                    && (other.ip() == addr.ip() || other.ip().is_unspecified() || addr.ip().is_unspecified())
            };
            if let Some((other, other_key)) = taken.iter().find(clash) {
                let message =
                    format!("{key}: {addr} clashes with {other_key} {other}: each listener needs its own address");
                self.report(text.span(), message);
            }
            taken.push((addr, key));
        }
    }

    fn server(&mut self, raw: &RawServer) -> ServerConfig {
        let defaults = ServerConfig::default();
        let listen = match &raw.listen {
            Some(addrs) => addrs.iter().filter_map(|a| self.socket_addr(a, "server.listen")).collect(),
            None => defaults.listen,
        };
        let tls = raw.tls.as_ref().map(|tls| self.tls(tls));
        let has_tls_listener = tls.as_ref().is_some_and(|t: &TlsConfig| !t.listen.is_empty());
        let listed_nothing = raw.listen.as_ref().is_some_and(|l| l.is_empty());
        if listed_nothing && !has_tls_listener {
            self.problems
                .push(unplaced("server.listen is empty and no [server.tls] listener is set: nothing would serve"));
        }
        let max_body = self.size(&raw.max_body, defaults.max_body, "server.max_body");
        if let Some(text) = &raw.max_body
            && max_body < 1024
        {
            self.report(text.span(), "server.max_body must be at least 1KiB".into());
        }
        let mut server = ServerConfig {
            listen,
            threads: self.threads(&raw.threads, defaults.threads),
            max_body,
            allowed_origins: raw
                .allowed_origins
                .iter()
                .map(|o| o.get_ref().trim_end_matches('/').to_string())
                .collect(),
            allowed_hosts: Vec::new(),
            allowed_hosts_default: raw.allowed_hosts.is_none(),
            header_timeout: self.nonzero_duration(
                &raw.header_timeout,
                defaults.header_timeout,
                "server.header_timeout",
            ),
            max_streams_per_client: self.count(
                &raw.max_streams_per_client,
                defaults.max_streams_per_client,
                "server.max_streams_per_client",
            ),
            tls,
        };
        server.allowed_hosts = self.allowed_hosts(&raw.allowed_hosts, "server.allowed_hosts", server.loopback_only());
        server
    }

    /// A listener's `allowed_hosts`: the names listed, else loopback names when it listens on
    /// loopback only, else any (`"*"`).
    fn allowed_hosts(&mut self, raw: &Option<Vec<Spanned<String>>>, key: &str, loopback_only: bool) -> Vec<String> {
        match raw {
            Some(hosts) => hosts.iter().map(|h| self.allowed_host(h, key)).collect(),
            None => default_allowed_hosts(loopback_only),
        }
    }

    /// One `server.allowed_hosts` (or `admin.allowed_hosts`) entry: a host name or address
    /// without port, or `"*"`.
    fn allowed_host(&mut self, text: &Spanned<String>, key: &str) -> String {
        let host = text.get_ref().trim().to_ascii_lowercase();
        // A wildcard is the whole list's "*" alone: `*.example.com` would match nothing.
        let valid = host == "*"
            || (!host.is_empty()
                && !host.contains(['@', '/', ' ', '*'])
                && host.parse::<http::uri::Authority>().is_ok());
        if !valid || (host.contains(':') && !host.starts_with('[')) {
            self.report(
                text.span(),
                format!(
                    "{key}: {:?} is not a host name without port (e.g. \"mcp.example.com\", \"[::1]\", or \"*\")",
                    text.get_ref()
                ),
            );
        }
        host
    }

    /// Worker threads: at least one, and not so many that the process cannot start them.
    fn threads(&mut self, raw: &Option<Spanned<i64>>, default: usize) -> usize {
        const MOST: i64 = 1024;
        match raw {
            Some(number) if *number.get_ref() > MOST => {
                self.report(number.span(), format!("server.threads must be at most {MOST}"));
                default
            }
            _ => self.positive(raw, default, "server.threads"),
        }
    }

    fn tls(&mut self, raw: &Spanned<RawTls>) -> TlsConfig {
        let tls = raw.get_ref();
        let mut path = |value: &Text, key: &str| match value {
            Some(p) if !p.get_ref().is_empty() => PathBuf::from(p.get_ref()),
            _ => {
                self.report(raw.span(), format!("[server.tls] needs {key} = \"/path/to/{key}.pem\""));
                PathBuf::new()
            }
        };
        let cert = path(&tls.cert, "cert");
        let key = path(&tls.key, "key");
        let listen = tls.listen.iter().filter_map(|a| self.socket_addr(a, "server.tls.listen")).collect();
        TlsConfig { listen, cert, key }
    }

    fn admin(&mut self, raw: &RawAdmin) -> AdminConfig {
        let listen = match &raw.listen {
            Some(text) if text.get_ref().is_empty() => None,
            Some(text) => self.socket_addr(text, "admin.listen"),
            None => AdminConfig::default().listen,
        };
        let on_loopback = listen.is_none_or(|addr| addr.ip().is_loopback());
        let allowed_hosts = self.allowed_hosts(&raw.allowed_hosts, "admin.allowed_hosts", on_loopback);
        let token_file = raw.token_file.as_ref().filter(|p| !p.is_empty()).map(PathBuf::from);
        let operation_metrics = raw.operation_metrics.unwrap_or(AdminConfig::default().operation_metrics);
        AdminConfig { listen, token_file, allowed_hosts, operation_metrics }
    }

    fn cache(&mut self, raw: &RawCache) -> CacheConfig {
        let defaults = CacheConfig::default();
        CacheConfig {
            memory: self.size(&raw.memory, defaults.memory, "cache.memory"),
            disk_path: raw.disk_path.as_ref().filter(|p| !p.is_empty()).map(PathBuf::from),
            disk_size: self.size(&raw.disk_size, defaults.disk_size, "cache.disk_size"),
            max_entry_size: self.size(&raw.max_entry_size, defaults.max_entry_size, "cache.max_entry_size"),
            shared: raw.shared.as_ref().map(|shared| self.shared(shared)),
        }
    }

    fn shared(&mut self, raw: &Spanned<RawShared>) -> SharedConfig {
        let shared = raw.get_ref();
        let servers = self.shared_servers(raw);
        let over_tls = servers.over_tls();
        let defaults = SharedConfig::for_servers(servers);
        let timeout = self.duration(&shared.timeout, defaults.timeout, "cache.shared.timeout");
        if let Some(text) = &shared.timeout
            && (timeout.is_zero() || timeout > Duration::from_secs(5))
        {
            self.report(text.span(), "cache.shared.timeout must be between 1ms and 5s".into());
        }
        let ttl_cap = self.nonzero_duration(&shared.ttl_cap, defaults.ttl_cap, "cache.shared.ttl_cap");
        if let Some(text) = &shared.ttl_cap
            && ttl_cap < Duration::from_secs(1)
        {
            self.report(text.span(), "cache.shared.ttl_cap must be at least 1s".into());
        }
        let key_prefix = shared.key_prefix.as_ref().map_or(defaults.key_prefix.as_str(), |p| p.get_ref()).to_string();
        if let Some(text) = &shared.key_prefix
            && (key_prefix.is_empty() || key_prefix.len() > 64 || !key_prefix.bytes().all(|b| b.is_ascii_graphic()))
        {
            self.report(text.span(), "cache.shared.key_prefix must be 1 to 64 printable characters, no spaces".into());
        }
        if let (Some(text), SharedServers::Cluster(_)) = (&shared.key_prefix, &defaults.servers)
            && key_prefix.contains(['{', '}'])
        {
            // A brace would become the names' hash tag: every name in one slot.
            self.report(text.span(), "cache.shared.key_prefix on a cluster must not contain { or }".into());
        }
        let ca_file = shared.ca_file.as_ref().filter(|p| !p.is_empty()).map(PathBuf::from);
        if ca_file.is_some() && !over_tls {
            self.report(raw.span(), "cache.shared.ca_file is for a rediss:// (TLS) url".into());
        }
        let cluster_allow = self.cluster_allow(shared, &defaults.servers);
        SharedConfig {
            cluster_allow,
            password_file: shared.password_file.as_ref().filter(|p| !p.is_empty()).map(PathBuf::from),
            secret_file: shared.secret_file.as_ref().filter(|p| !p.get_ref().is_empty()).map(|path| SecretFile {
                path: PathBuf::from(path.get_ref()),
                line: self.map.location(path.span().start).0,
            }),
            ca_file,
            timeout,
            max_entry_size: self.size(&shared.max_entry_size, defaults.max_entry_size, "cache.shared.max_entry_size"),
            ttl_cap,
            key_prefix,
            ..defaults
        }
    }

    /// `cluster_allow`: addresses or CIDRs, on a cluster only.
    fn cluster_allow(&mut self, shared: &RawShared, servers: &SharedServers) -> Option<Vec<ipnet::IpNet>> {
        let listed = shared.cluster_allow.as_ref()?;
        if !matches!(servers, SharedServers::Cluster(_)) {
            self.report(listed.span(), "cache.shared.cluster_allow is for a cluster (cache.shared.cluster)".into());
            return None;
        }
        if listed.get_ref().is_empty() {
            self.report(
                listed.span(),
                "cache.shared.cluster_allow is empty: leave it out to allow the seeds' network".into(),
            );
        }
        let mut nets = Vec::new();
        for entry in listed.get_ref() {
            match crate::cluster_nodes::parse_allowed(entry.get_ref()) {
                Ok(net) => nets.push(net),
                Err(e) => self.report(entry.span(), format!("cache.shared.cluster_allow: {e}")),
            }
        }
        Some(nets)
    }

    /// `url` or `cluster`: exactly one of them.
    fn shared_servers(&mut self, raw: &Spanned<RawShared>) -> SharedServers {
        let shared = raw.get_ref();
        match (&shared.url, &shared.cluster) {
            (Some(url), None) => {
                if let Err(e) = check_redis_url(url.get_ref()) {
                    self.report(url.span(), format!("cache.shared.url: {e}"));
                }
                SharedServers::One(url.get_ref().clone())
            }
            (None, Some(seeds)) => {
                if seeds.get_ref().is_empty() {
                    self.report(seeds.span(), "cache.shared.cluster needs at least one seed node".into());
                }
                for seed in seeds.get_ref() {
                    let checked = check_redis_url(seed.get_ref()).and_then(|()| check_cluster_seed(seed.get_ref()));
                    if let Err(e) = checked {
                        self.report(seed.span(), format!("cache.shared.cluster: {e}"));
                    }
                }
                let urls: Vec<String> = seeds.get_ref().iter().map(|seed| seed.get_ref().clone()).collect();
                let without_database = |url: &String| url.trim_end_matches('/').trim_end_matches("/0").to_string();
                let mut distinct: Vec<String> = urls.iter().map(without_database).collect();
                distinct.sort();
                distinct.dedup();
                if distinct.len() != urls.len() {
                    self.report(seeds.span(), "cache.shared.cluster lists a seed twice".into());
                }
                if shared.cluster_allow.is_none() && crate::cluster_nodes::seed_literal_kinds(&urls).len() > 1 {
                    // The default rule follows the seeds' kinds of network: mixed, it would
                    // let a cluster send the node to any of them.
                    self.report(
                        seeds.span(),
                        "cache.shared.cluster has seeds in several kinds of network (loopback, private, public): \
                         set cluster_allow to the nodes' networks"
                            .into(),
                    );
                }
                let schemes = seeds.get_ref().iter().map(|seed| seed.get_ref().starts_with("rediss://"));
                if schemes.clone().any(|tls| tls) && !schemes.clone().all(|tls| tls) {
                    self.report(seeds.span(), "cache.shared.cluster mixes redis:// and rediss:// seeds".into());
                }
                SharedServers::Cluster(seeds.get_ref().iter().map(|seed| seed.get_ref().clone()).collect())
            }
            (Some(_), Some(seeds)) => {
                self.report(
                    seeds.span(),
                    "cache.shared takes url (one server) or cluster (seed nodes), not both".into(),
                );
                SharedServers::One(String::new())
            }
            (None, None) => {
                self.report(
                    raw.span(),
                    "[cache.shared] needs url = \"redis://host:6379\" or cluster = [\"redis://host:7000\", …]".into(),
                );
                SharedServers::One(String::new())
            }
        }
    }

    fn tracing(&mut self, raw: &RawTracing) -> TracingConfig {
        let defaults = TracingConfig::default();
        let otlp = raw.otlp.as_ref().filter(|url| !url.get_ref().is_empty()).and_then(|url| {
            match otlp_traces_url(url.get_ref()) {
                Ok(traces) => Some(traces),
                Err(problem) => {
                    self.report(url.span(), format!("tracing.otlp {problem}"));
                    None
                }
            }
        });
        let sample_ratio = match &raw.sample_ratio {
            Some(ratio) if !(0.0..=1.0).contains(ratio.get_ref()) => {
                self.report(ratio.span(), "tracing.sample_ratio must be between 0 and 1".into());
                defaults.sample_ratio
            }
            Some(ratio) => *ratio.get_ref(),
            None => defaults.sample_ratio,
        };
        let service_name = match &raw.service_name {
            Some(name) if name.get_ref().trim().is_empty() || name.get_ref().chars().any(char::is_control) => {
                self.report(
                    name.span(),
                    "tracing.service_name must be a non-empty name without control characters".into(),
                );
                defaults.service_name
            }
            Some(name) => name.get_ref().clone(),
            None => defaults.service_name,
        };
        TracingConfig { otlp, sample_ratio, service_name }
    }

    fn log(&mut self, raw: &RawLog) -> LogConfig {
        let format = match &raw.format {
            None => LogFormat::default(),
            Some(format) => match format.get_ref().as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                other => {
                    self.report(format.span(), format!("log.format must be \"text\" or \"json\", not {other:?}"));
                    LogFormat::default()
                }
            },
        };
        LogConfig { format }
    }

    fn compression(&mut self, raw: &RawCompression) -> CompressionConfig {
        let defaults = CompressionConfig::default();
        let min_size = match &raw.min_size {
            Some(n) if *n.get_ref() < 0 => {
                self.report(n.span(), "compression.min_size must not be negative".into());
                defaults.min_size
            }
            Some(n) => *n.get_ref() as u64,
            None => defaults.min_size,
        };
        CompressionConfig { gzip: raw.gzip.unwrap_or(defaults.gzip), min_size, sse: raw.sse.unwrap_or(defaults.sse) }
    }

    fn route(&mut self, raw: &Spanned<RawRoute>) -> RouteConfig {
        let route = raw.get_ref();
        let path = match &route.path {
            Some(p) if p.get_ref().starts_with('/') => p.get_ref().clone(),
            Some(p) => {
                self.report(p.span(), format!("route path {:?} must start with \"/\"", p.get_ref()));
                p.get_ref().clone()
            }
            None => {
                self.report(raw.span(), "[[route]] needs path = \"/mcp\" (the path prefix it serves)".into());
                String::new()
            }
        };
        let name = route.name.as_ref().map(|n| n.get_ref().clone()).unwrap_or_else(|| path.clone());
        let upstreams = self.upstreams(raw, &name);
        let defaults = RouteConfig::new(name, path, upstreams);
        let balance = match &route.balance {
            None => defaults.balance,
            Some(b) => match b.get_ref().as_str() {
                "round_robin" => Balance::RoundRobin,
                "least_conn" => Balance::LeastConn,
                "consistent" => Balance::Consistent,
                other => {
                    self.report(
                        b.span(),
                        format!("balance {other:?} is unknown (use round_robin, least_conn or consistent)"),
                    );
                    defaults.balance
                }
            },
        };
        if route.auth.is_some()
            && let Some(header) = &route.policy.identity_header
            && !header.get_ref().eq_ignore_ascii_case("authorization")
        {
            let message = "with [route.auth], private answers are keyed on the verified token: identity_header must stay \"authorization\"";
            self.report(header.span(), message.into());
        }
        if let (Some(auth), Some(first)) = (&route.auth, route.prefetch.warm.first())
            && auth.get_ref().required != Some(false)
        {
            let message = "prefetch.warm reads without a token, for callers without one: a route whose [route.auth] requires a token has none (set auth.required = false, or drop warm)";
            self.report(first.span(), message.into());
        }
        RouteConfig {
            connect_timeout: self.nonzero_duration(&route.connect_timeout, defaults.connect_timeout, "connect_timeout"),
            read_timeout: self.nonzero_duration(&route.read_timeout, defaults.read_timeout, "read_timeout"),
            ca_file: route.ca_file.as_ref().filter(|p| !p.is_empty()).map(PathBuf::from),
            policy: self.policy(&route.policy),
            prefetch: self.prefetch(&route.prefetch),
            health: self.health(&route.health),
            discovery: self.discovery(route.discovery.as_ref(), &defaults.upstreams),
            scaling: self.scaling(&route.scaling),
            limits: self.limits(&route.limits),
            subscriptions: self.subscriptions(&route.subscriptions),
            auth: route.auth.as_ref().map(|auth| self.auth(auth)),
            balance,
            ..defaults
        }
    }

    fn limits(&mut self, raw: &RawLimits) -> LimitsConfig {
        let defaults = LimitsConfig::default();
        LimitsConfig {
            max_concurrent: self.count(&raw.max_concurrent, defaults.max_concurrent, "limits.max_concurrent"),
            rate_per_client: self.count(&raw.rate_per_client, defaults.rate_per_client, "limits.rate_per_client"),
            rate_per_subject: self.count(&raw.rate_per_subject, defaults.rate_per_subject, "limits.rate_per_subject"),
        }
    }

    fn upstreams(&mut self, raw: &Spanned<RawRoute>, name: &str) -> Vec<UpstreamUrl> {
        let Some(list) = &raw.get_ref().upstreams else {
            self.report(raw.span(), format!("route {name:?} needs upstreams = [\"http://host:port/mcp\", …]"));
            return Vec::new();
        };
        if list.get_ref().is_empty() {
            self.report(list.span(), format!("route {name:?} has an empty upstream list"));
        }
        let mut seen = HashSet::new();
        let mut parsed = Vec::new();
        for url in list.get_ref() {
            match UpstreamUrl::parse(url.get_ref()) {
                Ok(u) if !seen.insert(u.url.clone()) => {
                    self.report(url.span(), format!("upstream {:?} is listed twice in route {name:?}", u.url));
                }
                Ok(u) => parsed.push(u),
                Err(e) => self.report(url.span(), e),
            }
        }
        parsed
    }

    fn policy(&mut self, raw: &RawPolicy) -> CachePolicy {
        let defaults = CachePolicy::default();
        let identity_header = match &raw.identity_header {
            Some(h) if http::HeaderName::from_bytes(h.get_ref().as_bytes()).is_err() => {
                self.report(h.span(), format!("identity_header {:?} is not a valid header name", h.get_ref()));
                defaults.identity_header
            }
            Some(h) => h.get_ref().to_ascii_lowercase(),
            None => defaults.identity_header,
        };
        CachePolicy {
            resource_ttl: self.duration(&raw.resource_ttl, defaults.resource_ttl, "resource_ttl"),
            list_ttl: self.duration(&raw.list_ttl, defaults.list_ttl, "list_ttl"),
            tool_ttl: self.duration(&raw.tool_ttl, defaults.tool_ttl, "tool_ttl"),
            max_ttl: self.duration(&raw.max_ttl, defaults.max_ttl, "max_ttl"),
            honor_server_hints: raw.honor_server_hints.unwrap_or(defaults.honor_server_hints),
            shared: raw.shared.unwrap_or(defaults.shared),
            identity_header,
            cache_tools: raw.cache_tools.clone(),
            readonly_tools: raw.readonly_tools.unwrap_or(defaults.readonly_tools),
            stale_if_error: self.duration(&raw.stale_if_error, defaults.stale_if_error, "stale_if_error"),
            unkeyed_meta: raw.unkeyed_meta.clone(),
            invalidate_on_write: self.write_invalidation(&raw.invalidate_on_write, defaults.invalidate_on_write),
        }
    }

    fn write_invalidation(&mut self, raw: &Text, default: WriteInvalidation) -> WriteInvalidation {
        let Some(text) = raw else { return default };
        WriteInvalidation::named(text.get_ref()).unwrap_or_else(|| {
            let message = format!(
                "invalidate_on_write {:?} is unknown (use \"unhinted\", \"named\" or \"none\")",
                text.get_ref()
            );
            self.report(text.span(), message);
            default
        })
    }

    fn prefetch(&mut self, raw: &RawPrefetch) -> PrefetchConfig {
        let defaults = PrefetchConfig::default();
        let immediate_confidence =
            self.fraction(&raw.immediate_confidence, defaults.immediate_confidence, "prefetch.immediate_confidence");
        let mut min_confidence = self.fraction(&raw.min_confidence, defaults.min_confidence, "prefetch.min_confidence");
        if min_confidence > immediate_confidence {
            let written = raw.min_confidence.as_ref().or(raw.immediate_confidence.as_ref());
            self.report(
                written.map_or(0..0, |c| c.span()),
                "prefetch.min_confidence must not exceed prefetch.immediate_confidence".into(),
            );
            min_confidence = immediate_confidence;
        }
        let mut refresh_ahead = self.fraction(&raw.refresh_ahead, defaults.refresh_ahead, "prefetch.refresh_ahead");
        if refresh_ahead >= 1.0 {
            let span = raw.refresh_ahead.as_ref().map_or(0..0, |c| c.span());
            self.report(span, "prefetch.refresh_ahead must be below 1 (0: off)".into());
            refresh_ahead = defaults.refresh_ahead;
        }
        let mut min_identities = self.positive(&raw.min_identities, defaults.min_identities, "prefetch.min_identities");
        if min_identities > MAX_WITNESSES {
            let span = raw.min_identities.as_ref().map_or(0..0, |c| c.span());
            self.report(span, format!("prefetch.min_identities must be at most {MAX_WITNESSES}"));
            min_identities = defaults.min_identities;
        }
        let warm = raw
            .warm
            .iter()
            .filter_map(|uri| match uri.get_ref().trim() {
                "" => {
                    self.report(uri.span(), "prefetch.warm: a URI cannot be empty".into());
                    None
                }
                text => Some(text.to_string()),
            })
            .collect();
        PrefetchConfig {
            enabled: raw.enabled.unwrap_or(defaults.enabled),
            immediate_confidence,
            min_confidence,
            min_identities,
            delay: self.duration(&raw.delay, defaults.delay, "prefetch.delay"),
            max_inflight: self.positive(&raw.max_inflight, defaults.max_inflight, "prefetch.max_inflight"),
            max_share: self.fraction(&raw.max_share, defaults.max_share, "prefetch.max_share"),
            refresh_ahead,
            warm,
        }
    }

    fn subscriptions(&mut self, raw: &RawSubscriptions) -> SubscriptionsConfig {
        let defaults = SubscriptionsConfig::default();
        let mut max_subscriptions =
            self.positive(&raw.max_subscriptions, defaults.max_subscriptions, "subscriptions.max_subscriptions");
        if max_subscriptions > MAX_SUBSCRIPTIONS_LIMIT {
            let span = raw.max_subscriptions.as_ref().map_or(0..0, |n| n.span());
            self.report(
                span,
                format!(
                    "subscriptions.max_subscriptions must be at most {MAX_SUBSCRIPTIONS_LIMIT} (each URI is a subscription the upstream keeps)"
                ),
            );
            max_subscriptions = defaults.max_subscriptions;
        }
        SubscriptionsConfig { enabled: raw.enabled.unwrap_or(defaults.enabled), max_subscriptions }
    }

    /// `[route.discovery]`; on without the table when an upstream is an SRV URL.
    fn discovery(&mut self, raw: Option<&Spanned<RawDiscovery>>, upstreams: &[UpstreamUrl]) -> DiscoveryConfig {
        let defaults = DiscoveryConfig::default();
        let enabled = raw.is_some() || upstreams.iter().any(|u| u.srv.is_some());
        let Some(raw) = raw else { return DiscoveryConfig { enabled, ..defaults } };
        let interval = self.nonzero_duration(&raw.get_ref().interval, defaults.interval, "discovery.interval");
        if let Some(text) = &raw.get_ref().interval
            && !(Duration::from_millis(100)..=Duration::from_secs(3600)).contains(&interval)
        {
            self.report(text.span(), "discovery.interval must be between 100ms and 1h".into());
        }
        let resolver = raw.get_ref().resolver.as_ref().and_then(|text| {
            let parsed = text.get_ref().parse::<std::net::SocketAddr>().ok();
            let usable =
                parsed.filter(|addr| addr.port() != 0 && !addr.ip().is_unspecified() && !addr.ip().is_multicast());
            if usable.is_none() {
                let message = format!(
                    "discovery.resolver {:?} is not a DNS server's ip:port (e.g. \"10.0.0.2:53\")",
                    text.get_ref()
                );
                self.report(text.span(), message);
            }
            usable
        });
        DiscoveryConfig { enabled, interval, resolver }
    }

    fn scaling(&mut self, raw: &RawScaling) -> ScalingConfig {
        let text = raw.latency_target.as_ref();
        let target = text.map(|_| self.duration(&raw.latency_target, Duration::from_secs(1), "scaling.latency_target"));
        if let (Some(text), Some(target)) = (text, target)
            && !(Duration::from_millis(1)..=Duration::from_secs(3600)).contains(&target)
        {
            self.report(text.span(), "scaling.latency_target must be between 1ms and 1h".into());
        }
        ScalingConfig { latency_target: target }
    }

    fn health(&mut self, raw: &RawHealth) -> HealthConfig {
        let defaults = HealthConfig::default();
        HealthConfig {
            interval: self.nonzero_duration(&raw.interval, defaults.interval, "health.interval"),
            timeout: self.nonzero_duration(&raw.timeout, defaults.timeout, "health.timeout"),
        }
    }

    fn check_unique_routes(&mut self, raw: &[Spanned<RawRoute>], routes: &[RouteConfig]) {
        let mut paths = HashSet::new();
        let mut names = HashSet::new();
        for (raw, route) in raw.iter().zip(routes) {
            let path_span = raw.get_ref().path.as_ref().map_or(raw.span(), |p| p.span());
            let duplicate_path = !route.path.is_empty() && !paths.insert(route.path.as_str());
            if duplicate_path {
                self.report(path_span.clone(), format!("route path {:?} is used by more than one route", route.path));
            }
            // Names key cache entries and metrics: two routes must never share one, whether
            // written or taken from the path (a duplicate path is already reported as such).
            if route.name.is_empty() || names.insert(route.name.as_str()) {
                continue;
            }
            match &raw.get_ref().name {
                Some(name) => {
                    self.report(name.span(), format!("route name {:?} is used by more than one route", route.name))
                }
                None if !duplicate_path => self.report(
                    path_span,
                    format!(
                        "route name {:?} (taken from this route's path) is used by another route: give one of them a name",
                        route.name
                    ),
                ),
                None => {}
            }
        }
    }
}
