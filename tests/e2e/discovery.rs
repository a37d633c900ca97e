//! DNS discovery (`[route.discovery]`): a real DNS server under the test's control
//! (`tests/peers/python/peer_dns.py`), replicas on loopback addresses 127.0.0.2… sharing one
//! port, so a name's A records pick them.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::*;
use crate::peers::{peer_script, python};

/// The DNS server and the records file it reads at every query.
struct Dns {
    process: Process,
    port: u16,
    records: PathBuf,
    _dir: tempfile::TempDir,
}

impl Dns {
    async fn start(records: Value) -> Dns {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("records.json");
        std::fs::write(&path, records.to_string()).unwrap();
        let port = free_port();
        let process = Dns::spawn(port, &path);
        let dns = Dns { process, port, records: path, _dir: dir };
        wait_listening(port, &dns.process).await;
        dns
    }

    fn spawn(port: u16, records: &std::path::Path) -> Process {
        let script = peer_script("peer_dns.py");
        Process::spawn("dns", Command::new(python()).arg(script).arg(port.to_string()).arg(records))
    }

    fn set(&self, records: Value) {
        std::fs::write(&self.records, records.to_string()).unwrap();
    }

    fn resolver(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// `mcp.test.`'s A records.
fn a_records(addresses: &[&str]) -> Value {
    json!({"ttl": 1, "records": {"mcp.test.": {"A": addresses}}})
}

/// A route on `upstream`, discovering through `dns` every 300 ms.
fn discovering_route(upstream: &str, dns: &Dns) -> String {
    format!(
        "[[route]]\nname = \"d\"\npath = \"/mcp\"\nupstreams = [{upstream:?}]\n[route.discovery]\ninterval = \"300ms\"\nresolver = {:?}\n[route.health]\ninterval = \"300ms\"\n",
        dns.resolver()
    )
}

/// Which replicas `count` stateless `whoami` calls reach.
async fn reached(proxy: &Proxy, count: usize) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for _ in 0..count {
        *seen.entry(whoami(&proxy.mcp()).await).or_default() += 1;
    }
    seen
}

fn names(seen: &HashMap<String, usize>) -> BTreeSet<&str> {
    seen.keys().map(String::as_str).collect()
}

/// Waits (4 s at most) until `count` calls reach exactly `expected`.
async fn wait_reaching(proxy: &Proxy, expected: &[&str]) {
    let expected: BTreeSet<&str> = expected.iter().copied().collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
    loop {
        let seen = reached(proxy, 16).await;
        if names(&seen) == expected {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "reached {seen:?}, not {expected:?}\n{}", proxy.process.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Stateless calls on 4 clients until stopped; counts failures.
struct Load {
    failed: Arc<AtomicU64>,
    served: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    clients: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(proxy: &Proxy) -> Load {
        let (failed, served, stop) = (Arc::default(), Arc::default(), Arc::new(AtomicBool::new(false)));
        let clients = (0..4)
            .map(|_| {
                let (mcp, failed, served, stop): (Mcp, Arc<AtomicU64>, Arc<AtomicU64>, Arc<AtomicBool>) =
                    (proxy.mcp(), Arc::clone(&failed), Arc::clone(&served), Arc::clone(&stop));
                tokio::spawn(async move {
                    while !stop.load(Ordering::SeqCst) {
                        let reply = mcp.stateless("tools/call", json!({"name": "whoami", "arguments": {}}), &[]).await;
                        if reply.status != 200 && failed.fetch_add(1, Ordering::SeqCst) < 3 {
                            eprintln!("failed: {reply:?}");
                        }
                        served.fetch_add(u64::from(reply.status == 200), Ordering::SeqCst);
                    }
                })
            })
            .collect();
        Load { failed, served, stop, clients }
    }

    async fn stop_and_check(self) {
        self.stop.store(true, Ordering::SeqCst);
        for client in self.clients {
            client.await.unwrap();
        }
        let served = self.served.load(Ordering::SeqCst);
        assert_eq!(self.failed.load(Ordering::SeqCst), 0, "no request failed ({served} served)");
        assert!(served > 50, "the load ran: {served}");
    }
}

#[tokio::test]
async fn a_name_spreads_load_over_its_addresses_and_follows_them_as_records_change() {
    let port = free_port();
    let mut replicas = Vec::new();
    for n in 2..=5 {
        // r3 answers slowly: a call in flight when it leaves must still finish.
        let extra: &[&str] = if n == 3 { &["--latency-ms", "1000"] } else { &[] };
        replicas.push(demo_upstream_at(&format!("127.0.0.{n}"), port, &format!("r{n}"), extra).await);
    }
    let dns = Dns::start(a_records(&["127.0.0.2", "127.0.0.3", "127.0.0.4"])).await;
    let routes = discovering_route(&format!("http://mcp.test:{port}/mcp"), &dns);
    let proxy = proxy(&routes).await;

    // Three addresses, three replicas.
    wait_reaching(&proxy, &["r2", "r3", "r4"]).await;
    let ready = reqwest::get(proxy.admin_url("/readyz")).await.unwrap().json::<Value>().await.unwrap();
    assert_eq!(ready["discovery"]["d"][0]["addresses"], 3, "{ready}");

    // A session opened on each replica, to see which ones a replica's leaving ends.
    let mut sessions = HashMap::new();
    for _ in 0..12 {
        let session = proxy.mcp().initialize().await;
        let reply = proxy.mcp().in_session(&session, 1, "tools/call", json!({"name": "whoami", "arguments": {}})).await;
        sessions.insert(reply.tool_text(), session);
    }
    assert_eq!(sessions.len(), 3, "sessions on every replica: {sessions:?}");

    // A fourth record: the new replica gets traffic within an interval or two, nothing fails.
    let load = Load::start(&proxy);
    dns.set(a_records(&["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"]));
    wait_reaching(&proxy, &["r2", "r3", "r4", "r5"]).await;

    // r3's record goes while a call to it is in flight: the call finishes, new calls go
    // elsewhere, r3's session is told to start again (404), the others' sessions live on.
    let mcp = proxy.mcp();
    let in_flight = tokio::spawn({
        let session = sessions["r3"].clone();
        async move { mcp.in_session(&session, 2, "tools/call", json!({"name": "whoami", "arguments": {}})).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    dns.set(a_records(&["127.0.0.2", "127.0.0.4", "127.0.0.5"]));
    wait_reaching(&proxy, &["r2", "r4", "r5"]).await;
    let finished = in_flight.await.unwrap();
    assert_eq!((finished.status, finished.tool_text().as_str()), (200, "r3"), "{finished:?}");
    let gone =
        proxy.mcp().in_session(&sessions["r3"], 3, "tools/call", json!({"name": "whoami", "arguments": {}})).await;
    assert_eq!(gone.status, 404, "{gone:?}");
    let kept =
        proxy.mcp().in_session(&sessions["r2"], 3, "tools/call", json!({"name": "whoami", "arguments": {}})).await;
    assert_eq!((kept.status, kept.tool_text().as_str()), (200, "r2"), "{kept:?}");
    load.stop_and_check().await;

    // The DNS server goes down: the last set stays, and /readyz says why.
    let load = Load::start(&proxy);
    let mut dns = dns;
    dns.process.kill();
    tokio::time::sleep(Duration::from_secs(4)).await;
    wait_reaching(&proxy, &["r2", "r4", "r5"]).await;
    // A reload now builds the pool afresh: it starts from what the name last resolved to.
    proxy.reload_with(&routes);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(proxy.process.log().contains("configuration reloaded"), "{}", proxy.process.log());
    wait_reaching(&proxy, &["r2", "r4", "r5"]).await;
    load.stop_and_check().await;
    let ready = reqwest::get(proxy.admin_url("/readyz")).await.unwrap().json::<Value>().await.unwrap();
    let name = &ready["discovery"]["d"][0];
    assert!(name["addresses"] == 3 && name["error"].is_string(), "{ready}");
    assert_eq!(ready["ready"], true, "{ready}");
    assert!(proxy.process.log().contains("keeping its last addresses"), "{}", proxy.process.log());

    // Back: it follows the records again.
    dns.process = Dns::spawn(dns.port, &dns.records);
    wait_listening(dns.port, &dns.process).await;
    dns.set(a_records(&["127.0.0.2"]));
    wait_reaching(&proxy, &["r2"]).await;
}

#[tokio::test]
async fn srv_records_give_each_replica_its_port_and_weight() {
    let (light, heavy) = (demo_upstream("light", &[]).await, demo_upstream("heavy", &[]).await);
    let dns = Dns::start(json!({"ttl": 1, "records": {
        // A target that does not resolve is left out; one of a higher priority is a backup.
        "_mcp._tcp.mcp.test.": {"SRV": [[0, 1, light.port, "a.mcp.test."], [0, 3, heavy.port, "b.mcp.test."],
                                        [0, 5, 9, "nowhere.mcp.test."], [10, 100, 1, "backup.mcp.test."]]},
        "a.mcp.test.": {"A": ["127.0.0.1"]},
        "b.mcp.test.": {"A": ["127.0.0.1"]},
        "backup.mcp.test.": {"A": ["127.0.0.1"]},
    }}))
    .await;
    let proxy = proxy(&discovering_route("srv+http://_mcp._tcp.mcp.test/mcp", &dns)).await;
    let seen = reached(&proxy, 400).await;
    assert_eq!(names(&seen), BTreeSet::from(["heavy", "light"]), "the lowest priority only: {seen:?}");
    let ratio = seen["heavy"] as f64 / seen["light"] as f64;
    assert!((2.5..3.5).contains(&ratio), "weights 3:1, got {seen:?}");
}

#[tokio::test]
async fn check_warns_of_a_name_that_does_not_resolve_when_discovery_is_on() {
    let dns = Dns::start(a_records(&[])).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("edge.toml");
    std::fs::write(&config, discovering_route("http://nowhere.test:9/mcp", &dns)).unwrap();
    let out = Command::new(bin()).args(["check", "--config", config.to_str().unwrap()]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "a warning, not a failure: {out:?}");
    assert!(stdout.contains("http://nowhere.test:9/mcp does not resolve") && stdout.contains("OK"), "{stdout}");
}

#[tokio::test]
async fn scaling_signals_show_requests_in_flight_waiting_and_the_capacity_used() {
    let upstream = demo_upstream("slow", &["--latency-ms", "800"]).await;
    let limits = "[route.limits]\nmax_concurrent = 10\n[route.scaling]\nlatency_target = \"250ms\"";
    let proxy = proxy(&route(&[&upstream], limits)).await;
    let mut calls = Vec::new();
    // One fetch of demo://docs/1 leads, three wait for it; two tool calls pass through.
    for _ in 0..4 {
        let mcp = proxy.mcp();
        calls.push(tokio::spawn(async move { read(&mcp, "demo://docs/1", None).await.status }));
    }
    for _ in 0..2 {
        let mcp = proxy.mcp();
        calls.push(tokio::spawn(async move { whoami(&mcp).await.len() as u16 }));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let labels = format!("route=\"/mcp\",upstream=\"{}\"", upstream.url());
    let sample = |name: &str, labels: &str| format!("{name}{{{labels}}}");
    assert_eq!(metric(&proxy, &sample("mcp_upstream_in_flight", &labels)).await, 3.0, "one fetch, two calls");
    assert_eq!(metric(&proxy, &sample("mcp_requests_waiting", "reason=\"coalescing\",route=\"/mcp\"")).await, 3.0);
    assert_eq!(metric(&proxy, &sample("mcp_route_capacity_used_ratio", "route=\"/mcp\"")).await, 0.3);
    assert_eq!(metric(&proxy, &sample("mcp_route_latency_target_seconds", "route=\"/mcp\"")).await, 0.25);
    for call in calls {
        assert!(call.await.unwrap() > 0);
    }
    assert_eq!(metric(&proxy, &sample("mcp_upstream_in_flight", &labels)).await, 0.0);
    assert_eq!(metric(&proxy, &sample("mcp_requests_waiting", "reason=\"coalescing\",route=\"/mcp\"")).await, 0.0);
}

#[tokio::test]
async fn a_name_that_leads_back_to_the_edge_itself_is_a_508_not_a_loop() {
    // The SRV record names the edge's own listener: a request would be forwarded to itself.
    let dns = Dns::start(json!({"ttl": 1, "records": {}})).await;
    let proxy =
        proxy_with(&discovering_route("srv+http://_mcp._tcp.mcp.test/mcp", &dns), "allowed_hosts = [\"*\"]").await;
    dns.set(json!({"ttl": 1, "records": {
        "_mcp._tcp.mcp.test.": {"SRV": [[0, 1, proxy.port, "edge.mcp.test."]]},
        "edge.mcp.test.": {"A": ["127.0.0.1"]},
    }}));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let reply = proxy.mcp().stateless("tools/call", json!({"name": "whoami", "arguments": {}}), &[]).await;
    assert_eq!(reply.status, 508, "{reply:?}");
    assert!(reply.json()["error"]["message"].as_str().unwrap().contains("Loop Detected"), "{reply:?}");
    tokio::time::sleep(Duration::from_millis(300)).await; // the access lines, written after the answers
    let log = proxy.process.log();
    // The call's two hops (the edge as client, the edge as server), not thousands.
    let hops =
        log.lines().filter(|l| l.contains("mcp_edge::access") && l.contains("mcp_method=\"tools/call\"")).count();
    assert_eq!(hops, 2, "{hops} hops:\n{log}");
}
