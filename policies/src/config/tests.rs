//! The configuration model's unit tests.

use super::*;

const MINIMAL: &str = "[[route]]\npath = \"/mcp\"\nupstreams = [\"http://127.0.0.1:3001/mcp\"]\n";

fn problems(source: &str) -> Vec<Problem> {
    Config::from_toml(source).expect_err("should be refused")
}

#[test]
fn the_shipped_default_config_is_valid() {
    let config = Config::from_toml(include_str!("../../../conf/mcp-edge.toml")).unwrap();
    assert_eq!(config.server.max_body, 4 << 20);
    assert_eq!(config.routes[0].name, "default");
    assert_eq!(config.routes[0].policy.resource_ttl, UNHINTED_TTL);
    assert_eq!(config.routes[0].policy.invalidate_on_write, WriteInvalidation::Unhinted);
    assert_eq!(config.routes[0].health.interval, Duration::from_secs(5));
    assert_eq!(config.admin.listen, Some("127.0.0.1:9090".parse().unwrap()));
    let packaged = Config::from_toml(include_str!("../../../packaging/mcp-edge.toml")).unwrap();
    assert_eq!(packaged.cache.disk_path, Some(PathBuf::from("/var/cache/mcp-edge")));
    assert_eq!(Config { cache: config.cache.clone(), ..packaged }, config, "only the disk cache differs");
}

#[test]
fn write_invalidation_is_read_and_an_unknown_breadth_refused() {
    let with = |value: &str| format!("{MINIMAL}[route.policy]\ninvalidate_on_write = \"{value}\"\n");
    let breadth = |value: &str| Config::from_toml(&with(value)).unwrap().routes[0].policy.invalidate_on_write;
    assert_eq!(breadth("named"), WriteInvalidation::Named);
    assert_eq!(breadth("none"), WriteInvalidation::None);
    assert_eq!(breadth("unhinted"), WriteInvalidation::Unhinted);
    let refused = problems(&with("sometimes"));
    assert_eq!(refused.len(), 1);
    assert!(refused[0].to_string().contains("invalidate_on_write \"sometimes\" is unknown"), "{}", refused[0]);
    assert!(refused[0].to_string().starts_with("line 5"), "{}", refused[0]);
}

#[test]
fn defaults_fill_a_minimal_config() {
    let config = Config::from_toml(MINIMAL).unwrap();
    assert_eq!(config.server.listen, vec!["127.0.0.1:8080".parse().unwrap()]);
    assert_eq!(config.server.threads, 2);
    assert_eq!(config.routes[0].name, "/mcp");
    assert_eq!(config.routes[0].balance, Balance::RoundRobin);
    assert_eq!(config.routes[0].upstreams[0].port, 3001);
    assert_eq!(config.cache.disk_path, None);
    assert!(config.compression.gzip);
}

#[test]
fn the_models_defaults_are_what_an_unwritten_key_reads_as() {
    let config = Config::from_toml(MINIMAL).unwrap();
    assert_eq!(config.server, ServerConfig::default());
    assert_eq!(config.admin, AdminConfig::default());
    assert_eq!(config.cache, CacheConfig::default());
    assert_eq!(config.compression, CompressionConfig::default());
    let route = &config.routes[0];
    assert_eq!(*route, RouteConfig::new("/mcp".into(), "/mcp".into(), route.upstreams.clone()));
    let shared =
        Config::from_toml(&format!("[cache.shared]\nurl = \"redis://cache\"\n{MINIMAL}")).unwrap().cache.shared;
    assert_eq!(shared, Some(SharedConfig::for_url("redis://cache".into())));
}

#[test]
fn every_problem_is_reported_with_its_line() {
    let source = r#"
[server]
max_body = "4 parsecs"
listen = ["localhost"]

[[route]]
path = "/mcp"
upstreams = ["127.0.0.1:3001/mcp"]
balance = "random"

[route.policy]
resouce_ttl = "1h"

[[route]]
path = "/mcp"
upstreams = []
"#;
    let found = problems(source);
    let text: Vec<String> = found.iter().map(|p| p.to_string()).collect();
    let has = |line: usize, needle: &str| {
        assert!(
            text.iter().any(|t| t.starts_with(&format!("line {line},")) && t.contains(needle)),
            "no line {line} {needle:?} in {text:#?}"
        );
    };
    has(3, "max_body");
    has(4, "not an IP address with a port");
    has(8, "needs a scheme");
    has(9, "balance \"random\" is unknown");
    has(12, "unknown key \"resouce_ttl\" in [route.policy]");
    has(15, "used by more than one route");
    has(16, "empty upstream list");
    assert_eq!(found.len(), 7, "{text:#?}");
}

#[test]
fn syntax_errors_have_a_place() {
    let found = problems("[server\nlisten = 1");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].location.map(|l| l.0), Some(1));
}

#[test]
fn type_errors_have_a_place() {
    let found = problems(&format!("[server]\nthreads = \"two\"\n{MINIMAL}"));
    assert_eq!(found[0].location.map(|l| l.0), Some(2), "{found:?}");
    let zero = problems(&format!("[server]\nthreads = 0\n{MINIMAL}"));
    assert!(zero[0].message.contains("positive"));
}

#[test]
fn a_config_needs_routes_and_upstreams() {
    assert!(problems("").iter().any(|p| p.message.contains("no [[route]]")));
    assert!(problems("[[route]]\npath = \"/mcp\"\n").iter().any(|p| p.message.contains("needs upstreams")));
    assert!(problems("[[route]]\nupstreams = [\"http://h/mcp\"]\n").iter().any(|p| p.message.contains("needs path")));
    let twice = "[[route]]\npath=\"/a\"\nupstreams=[\"http://h/mcp\",\"http://h/mcp\"]\n";
    assert!(problems(twice).iter().any(|p| p.message.contains("listed twice")));
}

#[test]
fn tls_needs_cert_and_key() {
    let found = problems(&format!("[server.tls]\nlisten = [\"127.0.0.1:8443\"]\n{MINIMAL}"));
    assert!(found.iter().any(|p| p.message.contains("needs cert")));
    assert!(found.iter().any(|p| p.message.contains("needs key")));
}

#[test]
fn routes_resolve_by_longest_prefix() {
    let config = Config::from_toml(&format!(
        "{MINIMAL}[[route]]\npath = \"/mcp/docs\"\nname = \"docs\"\nupstreams = [\"http://127.0.0.1:3002/mcp\"]\n"
    ))
    .unwrap();
    assert_eq!(config.route_for("/mcp/docs").unwrap().name, "docs");
    assert_eq!(config.route_for("/mcp").unwrap().name, "/mcp");
    assert!(config.route_for("/other").is_none());
}

#[test]
fn prefetch_keys_are_checked() {
    let config = Config::from_toml(&format!(
        "{MINIMAL}[route.prefetch]\nenabled = true\nimmediate_confidence = 0.8\nmin_confidence = 0.5\ndelay = \"2s\"\nmax_share = 0.1\nrefresh_ahead = 0.25\nwarm = [\"docs://index\"]\n"
    ))
    .unwrap();
    let prefetch = &config.routes[0].prefetch;
    assert!(prefetch.enabled);
    assert_eq!((prefetch.immediate_confidence, prefetch.min_confidence), (0.8, 0.5));
    assert_eq!(prefetch.delay, Duration::from_secs(2));
    assert_eq!((prefetch.max_share, prefetch.refresh_ahead), (0.1, 0.25));
    assert_eq!(prefetch.warm, vec!["docs://index".to_string()]);
    assert_eq!(prefetch.min_identities, 3, "by default");
    assert!(!Config::from_toml(MINIMAL).unwrap().routes[0].prefetch.enabled, "off unless enabled");

    for (bad, says) in [
        ("min_confidence = 1.5", "prefetch.min_confidence must be between 0 and 1"),
        ("immediate_confidence = 0.3", "prefetch.min_confidence must not exceed prefetch.immediate_confidence"),
        ("max_share = -0.1", "prefetch.max_share must be between 0 and 1"),
        ("refresh_ahead = 1.0", "prefetch.refresh_ahead must be below 1"),
        ("delay = \"soon\"", "prefetch.delay"),
        ("warm = [\"\"]", "prefetch.warm: a URI cannot be empty"),
        ("max_inflight = 0", "prefetch.max_inflight must be a positive whole number"),
        ("min_identities = 0", "prefetch.min_identities must be a positive whole number"),
        ("min_identities = 9", "prefetch.min_identities must be at most 8"),
    ] {
        let problems = Config::from_toml(&format!("{MINIMAL}[route.prefetch]\n{bad}\n")).unwrap_err();
        assert!(problems.iter().any(|p| p.to_string().contains(says)), "{bad}: {problems:?}");
    }
}

#[test]
fn a_shared_tiers_secret_file_is_kept_with_its_line() {
    let text =
        format!("[cache.shared]\nurl = \"redis://10.0.0.5\"\n\nsecret_file = \"/etc/mcp-edge/shared.key\"\n{MINIMAL}");
    let shared = Config::from_toml(&text).unwrap().cache.shared.expect("configured");
    let file = shared.secret_file.expect("a secret file");
    assert_eq!((file.path, file.line), (std::path::PathBuf::from("/etc/mcp-edge/shared.key"), 4));
    let none = Config::from_toml(&format!("[cache.shared]\nurl = \"redis://10.0.0.5\"\nsecret_file = \"\"\n{MINIMAL}"));
    assert_eq!(none.unwrap().cache.shared.unwrap().secret_file, None, "empty: none");
}

#[test]
fn a_shared_tier_on_a_cluster_takes_seed_nodes_and_refuses_what_a_cluster_cannot_be() {
    let table = "[cache.shared]\ncluster = [\"redis://10.0.0.5:7000\", \"redis://10.0.0.6:7000/0\"]\n";
    let shared = Config::from_toml(&format!("{table}{MINIMAL}")).unwrap().cache.shared.expect("configured");
    let seeds = vec!["redis://10.0.0.5:7000".to_string(), "redis://10.0.0.6:7000/0".to_string()];
    assert_eq!(shared.servers, SharedServers::Cluster(seeds));
    assert_eq!(shared.timeout, Duration::from_millis(20), "every other key as for one server");
    assert_eq!(shared.cluster_allow, None, "nodes in the seeds' network");
    let allowed = "[cache.shared]\ncluster = [\"redis://a:7000\"]\ncluster_allow = [\"10.1.0.0/16\", \"fd00::7\"]\n";
    let shared = Config::from_toml(&format!("{allowed}{MINIMAL}")).unwrap().cache.shared.unwrap();
    let nets: Vec<String> = shared.cluster_allow.unwrap().iter().map(ToString::to_string).collect();
    assert_eq!(nets, ["10.1.0.0/16", "fd00::7/128"]);
    let tls = "[cache.shared]\ncluster = [\"rediss://a:7000\"]\nca_file = \"/ca.pem\"\n";
    assert!(Config::from_toml(&format!("{tls}{MINIMAL}")).is_ok(), "ca_file with rediss:// seeds");

    let refused = |table: &str, needle: &str| {
        let text: Vec<String> =
            problems(&format!("[cache.shared]\n{table}\n{MINIMAL}")).iter().map(|p| p.to_string()).collect();
        assert!(text.iter().any(|t| t.contains(needle)), "{table}: no {needle:?} in {text:#?}");
    };
    refused("url = \"redis://a\"\ncluster = [\"redis://b:7000\"]", "not both");
    refused("cluster = []", "at least one seed");
    refused("cluster = [\"redis://a:7000/3\"]", "only database 0");
    refused("cluster = [\"redis://:pw@a:7000\"]", "password_file");
    refused("cluster = [\"http://a:7000\"]", "redis:// or rediss://");
    refused("cluster = [\"redis://a:7000\", \"rediss://b:7000\"]", "mixes");
    refused("cluster = [\"redis://a:7000\"]\nca_file = \"/ca.pem\"", "rediss://");
    refused("timeout = \"20ms\"", "or cluster");
    refused("cluster = [\"redis://a:7000\"]\nkey_prefix = \"a{b}\"", "must not contain {");
    refused("url = \"redis://a\"\ncluster_allow = [\"10.0.0.0/8\"]", "cluster_allow is for a cluster");
    refused("cluster = [\"redis://a:7000\"]\ncluster_allow = []", "cluster_allow is empty");
    refused("cluster = [\"redis://a:7000\"]\ncluster_allow = [\"redis.internal\"]", "not an address or a CIDR");
    refused("cluster = [\"redis://a:7000\"]\ncluster_allow = [\"10.1.2.3/16\"]", "did you mean 10.1.0.0/16");
    refused("cluster = [\"redis://a:7000\"]\ncluster_allow = [\"010.1.0.0/16\"]", "not an address or a CIDR");
    refused("cluster = [\"redis://a:7000\", \"redis://a:7000/0\"]", "a seed twice");
    refused("cluster = [\"redis://127.0.0.1:7000\", \"redis://8.8.8.8:7000\"]", "several kinds of network");
    let mixed = "cluster = [\"redis://127.0.0.1:7000\", \"redis://10.0.0.1:7000\"]\ncluster_allow = [\"10.0.0.0/8\"]";
    assert!(Config::from_toml(&format!("[cache.shared]\n{mixed}\n{MINIMAL}")).is_ok(), "kinds mixed, nodes allowed");
}

#[test]
fn a_shared_tier_takes_defaults_and_refuses_a_password_in_its_url() {
    let config = Config::from_toml(&format!("[cache.shared]\nurl = \"redis://10.0.0.5:6379/2\"\n{MINIMAL}")).unwrap();
    let shared = config.cache.shared.expect("configured");
    assert_eq!(shared.servers, SharedServers::One("redis://10.0.0.5:6379/2".into()));
    assert_eq!(shared.timeout, Duration::from_millis(20));
    assert_eq!(shared.max_entry_size, 1 << 20);
    assert_eq!(shared.ttl_cap, Duration::from_secs(3600));
    assert_eq!(shared.key_prefix, "mcp-edge");
    assert_eq!(Config::from_toml(MINIMAL).unwrap().cache.shared, None, "off unless configured");

    let refused = |table: &str, needle: &str| {
        let text: Vec<String> =
            problems(&format!("[cache.shared]\n{table}\n{MINIMAL}")).iter().map(|p| p.to_string()).collect();
        assert!(text.iter().any(|t| t.contains(needle)), "{table}: no {needle:?} in {text:#?}");
    };
    refused("url = \"redis://:secret@cache:6379\"", "password_file");
    refused("url = \"redis://user:secret@cache:6379\"", "password_file");
    refused("url = \"http://cache:6379\"", "redis:// or rediss://");
    refused("url = \"redis://\"", "no valid host");
    refused("url = \"redis://cache:6379/zero\"", "is not a number");
    refused("url = \"redis://127.0.0.1:99999\"", "not a port to connect to");
    refused("url = \"redis://cache:0\"", "not a port to connect to");
    refused("url = \"rediss://cache:6379/#insecure\"", "no query or fragment");
    refused("url = \"rediss://cache:6379?insecure=true\"", "no query or fragment");
    let v6 = format!("[cache.shared]\nurl = \"redis://[fd00::1]:6379/2\"\n{MINIMAL}");
    assert!(Config::from_toml(&v6).is_ok(), "an IPv6 literal with its port");
    refused("timeout = \"20ms\"", "needs url");
    refused("url = \"redis://cache\"\ntimeout = \"0s\"", "between 1ms and 5s");
    refused("url = \"redis://cache\"\nkey_prefix = \"a b\"", "key_prefix");
    refused("url = \"redis://cache\"\npasword_file = \"/x\"", "pasword_file");
    refused("url = \"redis://cache\"\nca_file = \"/ca.pem\"", "rediss://");
    let tls = Config::from_toml(&format!("[cache.shared]\nurl = \"rediss://user@cache\"\n{MINIMAL}")).unwrap();
    assert_eq!(tls.cache.shared.unwrap().servers, SharedServers::One("rediss://user@cache".into()));
}

#[test]
fn zero_timeouts_are_refused() {
    for (section, key) in [
        (format!("[server]\nheader_timeout = \"0s\"\n{MINIMAL}"), "server.header_timeout"),
        (format!("{MINIMAL}connect_timeout = \"0ms\"\n"), "connect_timeout"),
        (format!("{MINIMAL}read_timeout = \"0s\"\n"), "read_timeout"),
        (format!("{MINIMAL}[route.health]\ninterval = \"0s\"\n"), "health.interval"),
        (
            format!("[cache.shared]\nurl = \"redis://127.0.0.1:6379\"\nttl_cap = \"0s\"\n{MINIMAL}"),
            "cache.shared.ttl_cap",
        ),
    ] {
        let found = problems(&section);
        assert_eq!(found.len(), 1, "{section}: {found:?}");
        let text = found[0].to_string();
        assert!(text.contains(&format!("{key} must be longer than 0")), "{text}");
    }
}

#[test]
fn listeners_need_addresses_of_their_own() {
    for (server, admin) in [
        ("listen = [\"127.0.0.1:8080\", \"127.0.0.1:8080\"]", "\"127.0.0.1:9090\""),
        ("listen = [\"127.0.0.1:8080\"]", "\"127.0.0.1:8080\""),
        ("listen = [\"0.0.0.0:8080\"]", "\"127.0.0.1:8080\""),
        ("listen = [\"127.0.0.1:8080\"]\n[server.tls]\nlisten = [\"[::]:8080\"]\ncert = \"c\"\nkey = \"k\"", "\"\""),
    ] {
        let source = format!("[server]\n{server}\n[admin]\nlisten = {admin}\n{MINIMAL}");
        let found = problems(&source);
        assert_eq!(found.len(), 1, "{source}: {found:?}");
        assert!(found[0].to_string().contains("each listener needs its own address"), "{}", found[0]);
    }
    let apart = format!(
        "[server]\nlisten = [\"127.0.0.1:8080\", \"127.0.0.2:8080\"]\n[admin]\nlisten = \"127.0.0.1:9090\"\n{MINIMAL}"
    );
    assert!(Config::from_toml(&apart).is_ok(), "two IPs on one port are two addresses");
}

#[test]
fn threads_are_bounded() {
    let found = problems(&format!("[server]\nthreads = 100000\n{MINIMAL}"));
    assert!(found[0].to_string().contains("server.threads must be at most 1024"), "{}", found[0]);
    assert_eq!(Config::from_toml(&format!("[server]\nthreads = 64\n{MINIMAL}")).unwrap().server.threads, 64);
}

#[test]
fn the_admin_listener_serves_its_own_names() {
    let admin = |section: &str| Config::from_toml(&format!("[admin]\n{section}\n{MINIMAL}")).unwrap().admin;
    let loopback: Vec<String> = LOOPBACK_HOSTS.map(str::to_string).to_vec();
    assert_eq!(admin("").allowed_hosts, loopback, "loopback by default");
    assert_eq!(admin("listen = \"[::1]:9090\"").allowed_hosts, loopback);
    assert_eq!(admin("listen = \"0.0.0.0:9090\"").allowed_hosts, ["*"], "beyond loopback: any, as the main listener");
    let listed = admin("listen = \"0.0.0.0:9090\"\nallowed_hosts = [\"Admin.Internal\"]");
    assert_eq!(listed.allowed_hosts, ["admin.internal"]);
    let wildcard = problems(&format!("[admin]\nallowed_hosts = [\"*.example.com\"]\n{MINIMAL}"));
    assert!(wildcard[0].to_string().contains("\"*.example.com\" is not a host name"), "{}", wildcard[0]);
    let found = problems(&format!("[admin]\nallowed_hosts = [\"admin.internal:9090\"]\n{MINIMAL}"));
    assert!(
        found[0].to_string().contains("admin.allowed_hosts: \"admin.internal:9090\" is not a host name"),
        "{}",
        found[0]
    );
}

#[test]
fn subscription_keys_are_checked() {
    let defaults = Config::from_toml(MINIMAL).unwrap().routes[0].subscriptions;
    assert_eq!(defaults, SubscriptionsConfig { enabled: true, max_subscriptions: 1000 }, "on by default");
    let config =
        Config::from_toml(&format!("{MINIMAL}[route.subscriptions]\nenabled = false\nmax_subscriptions = 20\n"))
            .unwrap();
    assert_eq!(config.routes[0].subscriptions, SubscriptionsConfig { enabled: false, max_subscriptions: 20 });
    for (bad, says) in [
        ("max_subscriptions = 0", "line 5, column 21: subscriptions.max_subscriptions must be a positive whole number"),
        ("max_subscriptions = -3", "subscriptions.max_subscriptions must be a positive whole number"),
        ("max_subscriptions = 100001", "subscriptions.max_subscriptions must be at most 100000"),
        ("max_uris = 5", "unknown key \"max_uris\" in [route.subscriptions]"),
    ] {
        let problems = Config::from_toml(&format!("{MINIMAL}[route.subscriptions]\n{bad}\n")).unwrap_err();
        assert!(problems.iter().any(|p| p.to_string().contains(says)), "{bad}: {problems:?}");
    }
    let problems = Config::from_toml(&format!("{MINIMAL}[route.subscriptions]\nenabled = \"yes\"\n")).unwrap_err();
    assert!(problems.iter().any(|p| p.to_string().contains("line 5")), "a wrong type has its line: {problems:?}");
}

#[test]
fn discovery_is_on_with_its_table_or_an_srv_upstream_and_checks_its_keys() {
    let route =
        |extra: &str, upstream: &str| format!("[[route]]\npath = \"/mcp\"\nupstreams = [{upstream:?}]\n{extra}");
    let off = Config::from_toml(&route("", "http://mcp.svc:8080/mcp")).unwrap();
    assert!(!off.routes[0].discovery.enabled);
    let on = Config::from_toml(&route(
        "[route.discovery]\ninterval = \"2s\"\nresolver = \"127.0.0.1:5353\"\n",
        "http://mcp.svc:8080/mcp",
    ))
    .unwrap();
    let discovery = &on.routes[0].discovery;
    assert!(discovery.enabled);
    assert_eq!(
        (discovery.interval, discovery.resolver),
        (Duration::from_secs(2), Some("127.0.0.1:5353".parse().unwrap()))
    );
    let srv = Config::from_toml(&route("", "srv+http://_mcp._tcp.mcp.svc/mcp")).unwrap();
    assert!(srv.routes[0].discovery.enabled && srv.routes[0].discovery.interval == Duration::from_secs(5));
    let refused = |extra: &str, needle: &str| {
        let text: Vec<String> = problems(&route(extra, "http://mcp.svc/mcp")).iter().map(|p| p.to_string()).collect();
        assert!(text.iter().any(|t| t.contains(needle)), "{extra}: no {needle:?} in {text:#?}");
    };
    refused("[route.discovery]\nresolver = \"dns.internal\"\n", "is not a DNS server's ip:port");
    refused("[route.discovery]\nresolver = \"0.0.0.0:53\"\n", "is not a DNS server's ip:port");
    refused("[route.discovery]\nresolver = \"10.0.0.2:0\"\n", "is not a DNS server's ip:port");
    refused("[route.discovery]\ninterval = \"10ms\"\n", "between 100ms and 1h");
    refused("[route.discovery]\ninterval = \"1000h\"\n", "between 100ms and 1h");
    refused("[route.scaling]\nlatency_target = \"1000h\"\n", "between 1ms and 1h");
    let once = problems(&route("[route.scaling]\nlatency_target = \"soon\"\n", "http://mcp.svc/mcp"));
    assert_eq!(once.len(), 1, "one message for a malformed target: {once:?}");
    refused("[route.discovery]\nintervall = \"1s\"\n", "intervall");
}

#[test]
fn otlp_collectors_are_urls_and_a_base_endpoint_gets_the_traces_path() {
    let read = |tracing: &str| Config::from_toml(&format!("[tracing]\n{tracing}\n{MINIMAL}"));
    assert_eq!(read("").unwrap().tracing, super::TracingConfig::default());
    assert_eq!(read("otlp = \"\"").unwrap().tracing.otlp, None);
    assert_eq!(
        read("otlp = \"http://10.0.0.9:4318\"").unwrap().tracing.otlp.as_deref(),
        Some("http://10.0.0.9:4318/v1/traces")
    );
    assert_eq!(
        read("otlp = \"https://otel.example/\"").unwrap().tracing.otlp.as_deref(),
        Some("https://otel.example/v1/traces")
    );
    assert_eq!(
        read("otlp = \"http://c:4318/otlp/v1/traces\"").unwrap().tracing.otlp.as_deref(),
        Some("http://c:4318/otlp/v1/traces")
    );
    for (bad, says) in [
        ("otlp = \"grpc://c:4317\"", "must be an http:// or https:// URL"),
        ("otlp = \"c:4318\"", "must be an http:// or https:// URL"),
        ("otlp = \"http://user:pw@c:4318\"", "must not carry credentials"),
        ("otlp = \"http://c:4318/v1/traces?x=1\"", "must not have a query"),
        ("sample_ratio = 1.5", "tracing.sample_ratio must be between 0 and 1"),
        ("service_name = \"\"", "tracing.service_name must be a non-empty name"),
    ] {
        let found = problems(&format!("[tracing]\n{bad}\n{MINIMAL}"));
        assert_eq!(found.len(), 1, "{bad}: {found:?}");
        assert!(found[0].to_string().contains(says), "{bad}: {}", found[0]);
    }
}

#[test]
fn an_otlp_collector_needs_a_usable_port() {
    for bad in ["http://127.0.0.1:99999", "http://127.0.0.1:0", "http://c:70000/v1/traces"] {
        let found = problems(&format!("[tracing]\notlp = \"{bad}\"\n{MINIMAL}"));
        assert_eq!(found.len(), 1, "{bad}: {found:?}");
        assert!(found[0].to_string().contains("names no usable port"), "{bad}: {}", found[0]);
    }
}

#[test]
fn route_auth_is_read_with_its_defaults() {
    let source = format!(
        "{MINIMAL}[route.auth]\nissuer = \"https://idp.example\"\naudience = \"https://mcp.example/mcp\"\njwks_url = \"https://idp.example/jwks.json\"\n"
    );
    let auth = Config::from_toml(&source).unwrap().routes[0].auth.clone().expect("[route.auth]");
    assert_eq!(auth.keys, KeySource::Url("https://idp.example/jwks.json".into()));
    assert!(auth.required);
    assert_eq!(auth.requirements.algorithms, crate::auth::DEFAULT_ALGORITHMS);
    assert_eq!(auth.requirements.clock_skew, Duration::from_secs(60));
    assert_eq!(auth.authorization_servers, ["https://idp.example"]);
    assert_eq!(auth.jwks_refresh, Duration::from_secs(300));
    assert_eq!(auth.subject_header, None);
    assert!(Config::from_toml(MINIMAL).unwrap().routes[0].auth.is_none(), "off unless the table is there");
    let resource = auth.resource();
    assert_eq!(resource.metadata_url().unwrap(), "https://mcp.example/.well-known/oauth-protected-resource/mcp");
}

#[test]
fn route_auth_problems_are_named_at_their_line() {
    let refused = |table: &str| {
        let source = format!("{MINIMAL}[route.auth]\n{table}");
        problems(&source).iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n")
    };
    let base = "issuer = \"https://idp.example\"\naudience = \"https://mcp.example/mcp\"\n";
    let told = refused("jwks_url = \"https://idp.example/jwks.json\"\n");
    assert!(told.contains("needs issuer") && told.contains("needs audience"), "{told}");
    let told = refused(base);
    assert!(told.contains("needs jwks_url"), "{told}");
    let told = refused(&format!("{base}jwks_url = \"http://idp.example/jwks.json\"\n"));
    assert!(told.contains("must be https://") && told.starts_with("line 7"), "{told}");
    assert!(
        Config::from_toml(&format!("{MINIMAL}[route.auth]\n{base}jwks_url = \"http://127.0.0.1:9/jwks.json\"\n"))
            .is_ok(),
        "loopback may be http"
    );
    let told = refused(&format!("{base}jwks_url = \"https://idp.example/j\"\njwks_file = \"/etc/jwks.json\"\n"));
    assert!(told.contains("not both"), "{told}");
    let told =
        refused(&format!("{base}jwks_url = \"https://idp.example/j\"\nalgorithms = [\"HS256\", \"none\", \"XYZ\"]\n"));
    assert!(told.contains("HS256 is an HMAC algorithm") && told.contains("\"none\" is not one"), "{told}");
    assert!(
        Config::from_toml(&format!(
            "{MINIMAL}[route.auth]\n{base}jwks_file = \"/etc/jwks.json\"\nalgorithms = [\"HS256\"]\n"
        ))
        .is_ok(),
        "HMAC with a key file the operator keeps"
    );
    let told = refused(&format!(
        "{base}jwks_url = \"https://idp.example/j\"\nclock_skew = \"1h\"\nscopes = [\"a b\"]\nsubject_header = \"authorization\"\n"
    ));
    assert!(
        told.contains("clock_skew must be at most")
            && told.contains("not a scope token")
            && told.contains("subject_header"),
        "{told}"
    );
    let told = refused(
        "audience = \"mcp.example/mcp\"\nissuer = \"https://idp.example?x=1\"\njwks_url = \"https://idp.example/j\"\n",
    );
    assert!(told.contains("auth.audience") && told.contains("auth.issuer"), "{told}");
    let source = format!(
        "{MINIMAL}[route.policy]\nidentity_header = \"cookie\"\n[route.auth]\n{base}jwks_url = \"https://idp.example/j\"\n"
    );
    let told = problems(&source).iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n");
    assert!(told.contains("identity_header must stay"), "{told}");
    let told = refused(&format!("{base}jwks_url = \"https://idp.example/j\"\ninstance_claims = [\"sid\", \"sub\"]\n"));
    assert!(told.contains("\"sub\" says who the caller is") && !told.contains("\"sid\""), "{told}");
    let warm = format!(
        "{MINIMAL}[route.prefetch]\nwarm = [\"docs://a\"]\n[route.auth]\n{base}jwks_url = \"https://idp.example/j\"\n"
    );
    let told = problems(&warm).iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n");
    assert!(told.contains("prefetch.warm reads without a token"), "{told}");
    assert!(
        Config::from_toml(&format!("{warm}required = false\n")).is_ok(),
        "anonymous callers exist: warm serves them"
    );
}
