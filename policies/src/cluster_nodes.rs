//! Which Redis Cluster nodes the shared tier may connect to.
//!
//! A cluster tells its clients where its nodes are (`CLUSTER SLOTS`, `MOVED`, `ASK`), and the
//! client connects there and sends the tier's password. The tier trusts Redis no further than
//! it must: a node (or whoever can write `CLUSTER MEET` / `cluster-announce-ip` on one) could
//! otherwise send the edge, its password and its entries to any host. So a node is reached
//! only if it is a seed the operator listed, or its address is in `cache.shared.cluster_allow`
//! (CIDRs), or, without that list, in the same kind of network as the seeds (loopback,
//! private or public): a cluster on a private network cannot send the edge to the Internet,
//! nor to a service on the edge's own loopback.

use std::net::IpAddr;

use ipnet::IpNet;

/// The kind of network an address belongs to, as far as redirects are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NetworkKind {
    /// `127.0.0.0/8`, `::1`, and the unspecified address (which reaches the local host).
    Loopback,
    /// RFC 1918, shared address space (`100.64.0.0/10`), link-local, unique local (`fc00::/7`).
    Private,
    /// Everything else.
    Public,
}

/// The kind of network `ip` belongs to (an IPv4-mapped IPv6 address as its IPv4 one).
pub fn network_kind(ip: IpAddr) -> NetworkKind {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            if v4.is_loopback() || v4.is_unspecified() {
                NetworkKind::Loopback
            } else if v4.is_private() || v4.is_link_local() || (a == 100 && (64..128).contains(&b)) {
                NetworkKind::Private
            } else {
                NetworkKind::Public
            }
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            if v6.is_loopback() || v6.is_unspecified() {
                NetworkKind::Loopback
            } else if first & 0xfe00 == 0xfc00 || first & 0xffc0 == 0xfe80 {
                NetworkKind::Private
            } else {
                NetworkKind::Public
            }
        }
    }
}

/// The rule: the seeds' host names, and the operator's allow list if any.
#[derive(Debug, Clone)]
pub struct ClusterNodeRule {
    seed_hosts: Vec<String>,
    allow: Option<Vec<IpNet>>,
}

/// Why an address is refused, for the log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Outside `cache.shared.cluster_allow`.
    NotAllowed,
    /// No allow list, and in another kind of network than the seeds.
    OtherNetwork,
}

impl ClusterNodeRule {
    /// `seeds`: the `redis://host:port` URLs of `cache.shared.cluster`; `allow`: its
    /// `cluster_allow`.
    pub fn new(seeds: &[String], allow: Option<Vec<IpNet>>) -> ClusterNodeRule {
        ClusterNodeRule { seed_hosts: seeds.iter().filter_map(|seed| seed_host(seed)).collect(), allow }
    }

    /// Whether `host` is one of the seeds (reached whatever it resolves to: the operator
    /// named it).
    pub fn is_seed(&self, host: &str) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        self.seed_hosts.iter().any(|seed| seed.eq_ignore_ascii_case(host))
    }

    /// Whether the tier may connect to `ip` (of a host that is not a seed), given the kinds
    /// of network the seeds resolved to.
    pub fn admits(&self, ip: IpAddr, seed_kinds: &[NetworkKind]) -> Result<(), Refusal> {
        match &self.allow {
            Some(allow) if allow.iter().any(|net| net.contains(&ip.to_canonical())) => Ok(()),
            Some(_) => Err(Refusal::NotAllowed),
            None if seed_kinds.contains(&network_kind(ip)) => Ok(()),
            None => Err(Refusal::OtherNetwork),
        }
    }
}

/// The host of a `redis://[user@]host[:port][/db]` URL (brackets of an IPv6 literal removed).
fn seed_host(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        host_port.rsplit_once(':').map_or(host_port, |(host, _)| host)
    };
    (!host.is_empty()).then(|| host.to_string())
}

/// Parses one `cluster_allow` entry: a CIDR (`10.0.0.0/8`, `fd00::/8`) or one address.
/// Refused: leading zeros (`010.1.0.0`: octal to some tools), bits past the prefix
/// (`10.1.2.3/16`: which was meant?).
pub fn parse_allowed(text: &str) -> Result<IpNet, String> {
    let not_one = || format!("{text:?} is not an address or a CIDR (10.0.0.0/8, fd00::/8)");
    let address = text.split('/').next().unwrap_or_default();
    let leading_zero =
        address.contains('.') && address.split('.').any(|octet| octet.len() > 1 && octet.starts_with('0'));
    if leading_zero {
        return Err(not_one());
    }
    if let Ok(net) = text.parse::<IpNet>() {
        if net.trunc() != net {
            return Err(format!("{text:?} has bits set past its prefix: did you mean {}?", net.trunc()));
        }
        return Ok(net);
    }
    text.parse::<IpAddr>().map(IpNet::from).map_err(|_| not_one())
}

/// The kinds of network the seeds written as addresses are in (host names are not resolved
/// here).
pub fn seed_literal_kinds(seeds: &[String]) -> Vec<NetworkKind> {
    let mut kinds = Vec::new();
    for host in seeds.iter().filter_map(|seed| seed_host(seed)) {
        if let Ok(ip) = host.parse::<IpAddr>()
            && !kinds.contains(&network_kind(ip))
        {
            kinds.push(network_kind(ip));
        }
    }
    kinds
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn addresses_fall_in_their_kind_of_network() {
        for loopback in ["127.0.0.1", "127.9.9.9", "0.0.0.0", "::1", "::", "::ffff:127.0.0.1"] {
            assert_eq!(network_kind(ip(loopback)), NetworkKind::Loopback, "{loopback}");
        }
        for private in [
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "169.254.1.1",
            "fd00::1",
            "fe80::1",
        ] {
            assert_eq!(network_kind(ip(private)), NetworkKind::Private, "{private}");
        }
        for public in ["8.8.8.8", "172.32.0.1", "100.128.0.1", "2001:db8::1", "::ffff:8.8.8.8"] {
            assert_eq!(network_kind(ip(public)), NetworkKind::Public, "{public}");
        }
    }

    #[test]
    fn without_an_allow_list_nodes_stay_in_the_seeds_kind_of_network() {
        let rule = ClusterNodeRule::new(&["redis://10.0.0.5:7000".into()], None);
        let seeds = [NetworkKind::Private];
        assert_eq!(rule.admits(ip("10.9.9.9"), &seeds), Ok(()));
        assert_eq!(rule.admits(ip("192.168.0.4"), &seeds), Ok(()));
        assert_eq!(rule.admits(ip("203.0.113.7"), &seeds), Err(Refusal::OtherNetwork));
        assert_eq!(rule.admits(ip("127.0.0.1"), &seeds), Err(Refusal::OtherNetwork), "not the edge's own services");
        // Nothing resolved yet: nothing but seeds.
        assert_eq!(rule.admits(ip("10.9.9.9"), &[]), Err(Refusal::OtherNetwork));
    }

    #[test]
    fn an_allow_list_is_the_whole_rule_for_nodes_that_are_not_seeds() {
        let allow = vec![parse_allowed("10.1.0.0/16").unwrap(), parse_allowed("fd00::7").unwrap()];
        let rule = ClusterNodeRule::new(&["redis://seed.internal:7000".into()], Some(allow));
        let seeds = [NetworkKind::Private];
        assert_eq!(rule.admits(ip("10.1.200.3"), &seeds), Ok(()));
        assert_eq!(rule.admits(ip("::ffff:10.1.0.9"), &seeds), Ok(()));
        assert_eq!(rule.admits(ip("fd00::7"), &seeds), Ok(()));
        assert_eq!(rule.admits(ip("fd00::8"), &seeds), Err(Refusal::NotAllowed));
        assert_eq!(rule.admits(ip("10.2.0.1"), &seeds), Err(Refusal::NotAllowed), "same kind, not listed");
        assert!(rule.is_seed("seed.internal") && rule.is_seed("SEED.internal") && !rule.is_seed("other"));
    }

    #[test]
    fn seed_hosts_are_read_from_every_url_form() {
        let seeds = ["redis://a:7000", "rediss://user@b.example:7001/0", "redis://[fd00::1]:7002", "redis://c"];
        let rule = ClusterNodeRule::new(&seeds.map(String::from), None);
        for host in ["a", "b.example", "fd00::1", "[fd00::1]", "c"] {
            assert!(rule.is_seed(host), "{host}");
        }
        assert!(!rule.is_seed("user"));
    }

    #[test]
    fn seeds_written_as_addresses_tell_their_kinds_of_network() {
        let seeds = ["redis://127.0.0.1:7000", "redis://10.0.0.1:7000", "redis://[::1]:7000", "redis://redis.internal"];
        assert_eq!(seed_literal_kinds(&seeds.map(String::from)), [NetworkKind::Loopback, NetworkKind::Private]);
    }

    #[test]
    fn allow_entries_are_cidrs_or_addresses() {
        assert_eq!(parse_allowed("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        assert!(parse_allowed("10.1.2.3/8").unwrap_err().contains("did you mean 10.0.0.0/8"));
        assert!(parse_allowed("010.1.0.0/16").is_err() && parse_allowed("10.01.0.0").is_err());
        assert_eq!(parse_allowed("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(parse_allowed("10.1.2.3").unwrap().to_string(), "10.1.2.3/32");
        assert_eq!(parse_allowed("fd00::/8").unwrap().to_string(), "fd00::/8");
        assert!(parse_allowed("10.0.0.0/33").is_err());
        assert!(parse_allowed("redis.internal").unwrap_err().contains("not an address or a CIDR"));
    }
}
