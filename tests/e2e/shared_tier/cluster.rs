//! The shared tier on a Redis Cluster (`cache.shared.cluster`): a real local cluster of six
//! `redis-server --cluster-enabled yes` (three masters, three replicas, made by
//! `redis-cli --cluster create`), nodes sharing through it, a master killed under load.

use super::*;

/// A local cluster: three masters and a replica each, a short node timeout (failover within
/// a few seconds), no persistence.
struct Cluster {
    servers: Vec<Redis>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    async fn start() -> Cluster {
        Cluster::start_with(6, 1, None).await
    }

    /// `count` servers, `replicas` per master; the first, if `first_announces` is given,
    /// listening on that address too and announcing it to the cluster instead of 127.0.0.1.
    async fn start_with(count: usize, replicas: u8, first_announces: Option<&str>) -> Cluster {
        let dir = tempfile::tempdir().expect("cluster dir");
        let mut servers = Vec::new();
        for index in 0..count {
            let port = free_port();
            let config_file = format!("nodes-{port}.conf");
            // The bus port on a free port of its own (by default port + 10 000: maybe taken by
            // another test, or past 65 535).
            let bus_port = free_port().to_string();
            let options = [
                "--cluster-enabled",
                "yes",
                "--cluster-port",
                &bus_port,
                "--cluster-config-file",
                &config_file,
                "--cluster-node-timeout",
                "1500",
                // Replicas in sync at once (not after the default 5 s): one can take over.
                "--repl-diskless-sync-delay",
                "0",
                "--dir",
                dir.path().to_str().unwrap(),
            ];
            let announced = match first_announces {
                Some(ip) if index == 0 => vec!["--bind", "127.0.0.1", ip, "--cluster-announce-ip", ip],
                _ => vec![],
            };
            servers.push(Redis::start_with(port, &[&options[..], &announced].concat()).await);
        }
        let addresses: Vec<String> = servers
            .iter()
            .enumerate()
            .map(|(index, s)| format!("{}:{}", first_announces.filter(|_| index == 0).unwrap_or("127.0.0.1"), s.port))
            .collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .expect("redis-cli --cluster create");
        assert!(created.status.success(), "cluster create: {created:?}");
        let cluster = Cluster { servers, _dir: dir };
        cluster.wait_ok(None).await;
        cluster
    }

    /// The seed nodes, as `cache.shared.cluster` takes them: every server.
    fn section(&self) -> String {
        let seeds: Vec<String> = self.servers.iter().map(Redis::url).collect();
        format!("[cache.shared]\ncluster = {seeds:?}\n")
    }

    fn info(port: u16, what: &[&str]) -> String {
        let out = Command::new("redis-cli").args(["-p", &port.to_string()]).args(what).output().expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// Waits (20 s at most) until every live server (all but `dead`) says the cluster is ok
    /// and three masters serve all slots.
    async fn wait_ok(&self, dead: Option<u16>) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let live = self.servers.iter().filter(|s| Some(s.port) != dead);
            let ok = live.clone().all(|s| {
                let info = Cluster::info(s.port, &["cluster", "info"]);
                info.contains("cluster_state:ok") && info.contains("cluster_slots_ok:16384")
            });
            let nodes = live.clone().next().map_or(String::new(), |s| Cluster::info(s.port, &["cluster", "nodes"]));
            let masters =
                nodes.lines().filter(|l| l.contains("master") && !l.contains("fail") && l.contains('-')).count();
            // The dead one is known failed (not only suspected) and its replica took over.
            let failed_over = dead.is_none_or(|port| {
                nodes.lines().any(|l| l.contains(&format!(":{port}@")) && l.contains("fail") && !l.contains("fail?"))
            });
            let replicas_in_sync = live.clone().all(|s| {
                let replication = Cluster::info(s.port, &["info", "replication"]);
                !replication.contains("role:slave") || replication.contains("master_link_status:up")
            });
            if ok && masters >= 3 && failed_over && replicas_in_sync {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "cluster never ok (dead: {dead:?}):\n{nodes}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The port of a master that holds slots.
    fn a_master(&self) -> u16 {
        let nodes = Cluster::info(self.servers[0].port, &["cluster", "nodes"]);
        let line = nodes.lines().find(|l| l.contains("master") && !l.contains("fail")).expect("a master");
        let address = line.split_whitespace().nth(1).unwrap();
        address.split(['@', ':']).nth(1).unwrap().parse().unwrap()
    }

    /// The port and id of the master holding slot 0, and the id of another master.
    fn slot_zero_and_another_master(&self) -> (u16, String, String) {
        let nodes = Cluster::info(self.servers[0].port, &["cluster", "nodes"]);
        let masters: Vec<Vec<&str>> = nodes
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .filter(|f| f.len() > 8 && f[2].contains("master"))
            .collect();
        let holder = masters.iter().find(|f| f[8..].iter().any(|r| r.starts_with("0-"))).expect("slot 0 held");
        let other = masters.iter().find(|f| f[0] != holder[0]).expect("another master");
        let port = holder[1].split(['@', ':']).nth(1).unwrap().parse().unwrap();
        (port, holder[0].to_string(), other[0].to_string())
    }

    /// Every key on every master.
    fn keys(&self) -> Vec<String> {
        self.servers
            .iter()
            .filter(|s| Cluster::info(s.port, &["role"]).starts_with("master"))
            .flat_map(|s| s.keys())
            .collect()
    }
}

/// Reads on other URIs than the tests' 48, by 8 clients spread over `nodes`, until stopped.
struct Load {
    errors: Arc<AtomicU64>,
    served: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    clients: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(nodes: &[&Proxy]) -> Load {
        let (errors, served, stop) =
            (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
        let clients = (0..8u32)
            .map(|client| {
                let node = nodes[client as usize % nodes.len()].mcp();
                let (errors, served, stop) = (errors.clone(), served.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut n = 0u32;
                    while !stop.load(Ordering::SeqCst) {
                        let uri = format!("demo://docs/{}", 1000 + client * 100_000 + n % 50);
                        let reply = read(&node, &uri, None).await;
                        let ok = reply.status == 200 && reply.json()["result"]["contents"].is_array();
                        if !ok && errors.fetch_add(1, Ordering::SeqCst) < 3 {
                            eprintln!("failed: {reply:?}");
                        }
                        served.fetch_add(ok as u64, Ordering::SeqCst);
                        n += 1;
                    }
                })
            })
            .collect();
        Load { errors, served, stop, clients }
    }

    /// Stops the clients: no request may have failed, and some must have been served.
    async fn stop_and_check(self) {
        self.stop.store(true, Ordering::SeqCst);
        for client in self.clients {
            client.await.unwrap();
        }
        let served = self.served.load(Ordering::SeqCst);
        assert_eq!(self.errors.load(Ordering::SeqCst), 0, "no request failed ({served} served)");
        assert!(served > 100, "the load ran: {served} served");
    }
}

/// `demo://docs/0` to `/47` (entries in every bucket, on every master) read through `a`, then
/// answered to `b` from the cluster.
async fn fetched_by_one_served_to_the_other(a: &Proxy, b: &Proxy) {
    for n in 0..48 {
        read(&a.mcp(), &format!("demo://docs/{n}"), None).await;
    }
    wait_written(a, 48).await;
    for n in 0..48 {
        let reply = read(&b.mcp(), &format!("demo://docs/{n}"), None).await;
        assert_eq!(x_cache(&reply), "HIT", "docs/{n}: {reply:?}\n{}", b.process.log());
    }
}

#[tokio::test]
async fn nodes_share_answers_and_purges_through_a_cluster_and_private_answers_stay_with_their_identity() {
    let cluster = Cluster::start().await;
    let upstream = demo_upstream("u", &[]).await;
    let (a, b) = (node_with(&upstream, cluster.section()).await, node_with(&upstream, cluster.section()).await);

    // Sharing: many URIs, so that entries land in every bucket, on every master.
    fetched_by_one_served_to_the_other(&a, &b).await;
    assert_eq!(upstream_reads(&upstream).await, 48, "only A's misses reached the upstream");
    let keys = cluster.keys();
    let masters_holding: std::collections::HashSet<&str> = keys.iter().filter_map(|k| k.split('}').next()).collect();
    assert!(masters_holding.len() >= 8, "entries spread over the buckets: {masters_holding:?}");
    for key in &keys {
        assert!(key.starts_with("mcp-edge:{") && !key.contains("docs"), "{key}");
    }
    let three_reachable = |shared: &Value| {
        let masters = shared["masters"].as_array().cloned().unwrap_or_default();
        masters.len() == 3 && masters.iter().all(|m| m["reachable"] == true)
    };
    wait_shared(&b, "reporting three masters", Duration::from_secs(5), three_reachable).await;
    let three = "mcp_shared_tier_master_up";
    let up = reqwest::get(b.admin_url("/metrics")).await.unwrap().text().await.unwrap();
    assert_eq!(up.lines().filter(|l| l.starts_with(three) && l.ends_with(" 1")).count(), 3, "{up}");
    assert_eq!(metric(&b, "mcp_shared_tier_up").await, 1.0);

    // Purge fan-out: B stops serving within 100 ms; a node started later finds the markers.
    assert_eq!(x_cache(&read(&b.mcp(), "demo://docs/5", None).await), "HIT");
    purge(&a, json!({"route": "docs", "uri": "demo://docs/5"})).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(x_cache(&read(&b.mcp(), "demo://docs/5", None).await), "MISS");
    let c = node_with(&upstream, cluster.section()).await;
    wait_written(&b, 1).await;
    assert_eq!(x_cache(&read(&c.mcp(), "demo://docs/6", None).await), "HIT", "shared");

    // Private answers: per identity, across nodes.
    let private = demo_upstream("p", &["--scope", "private", "--echo-caller"]).await;
    let (p, q) = (node_with(&private, cluster.section()).await, node_with(&private, cluster.section()).await);
    let uri = "demo://docs/7";
    assert_eq!(fetched_for(&read(&p.mcp(), uri, Some("Bearer alice")).await), "Bearer alice");
    wait_written(&p, 1).await;
    let bob = read(&q.mcp(), uri, Some("Bearer bob")).await;
    assert_eq!((x_cache(&bob), fetched_for(&bob).as_str()), ("MISS", "Bearer bob"));
    let alice = read(&q.mcp(), uri, Some("Bearer alice")).await;
    assert_eq!((x_cache(&alice), fetched_for(&alice).as_str()), ("HIT", "Bearer alice"));
}

#[tokio::test]
async fn a_master_killed_under_load_fails_no_request_and_a_purge_made_during_the_failover_is_not_lost() {
    let mut cluster = Cluster::start().await;
    let upstream = demo_upstream("u", &[]).await;
    let (a, b) = (node_with(&upstream, cluster.section()).await, node_with(&upstream, cluster.section()).await);
    fetched_by_one_served_to_the_other(&a, &b).await;

    let load = Load::start(&[&a, &b]);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A master dies; during its failover, A purges every cached URI.
    let master = cluster.a_master();
    let index = cluster.servers.iter().position(|s| s.port == master).unwrap();
    cluster.servers[index].process.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for n in 0..48 {
        purge(&a, json!({"route": "docs", "uri": format!("demo://docs/{n}")})).await;
    }
    cluster.wait_ok(Some(master)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    load.stop_and_check().await;

    // Nothing purged is served: not by B (it heard), not by a node started now (it did not:
    // the markers, written again once the replica took over, tell it). Each reads its own
    // half: what one fetches again is rightly served to the other.
    wait_shared(&a, "with nothing held back", Duration::from_secs(20), |s| s["pending_invalidations"] == false).await;
    let c = node_with(&upstream, cluster.section()).await;
    let reads_before = upstream_reads(&upstream).await;
    for n in 0..48 {
        let (reader, name) = if n < 24 { (&b, "B") } else { (&c, "C") };
        let uri = format!("demo://docs/{n}");
        assert_eq!(x_cache(&read(&reader.mcp(), &uri, None).await), "MISS", "{name} served purged {uri}");
    }
    assert_eq!(upstream_reads(&upstream).await - reads_before, 48, "each purged URI fetched again, once");
    // Sharing resumed: what A fetches now, a new node reads from the cluster.
    read(&a.mcp(), "demo://docs/999999", None).await;
    let before = written(&a).await;
    wait_written(&a, before).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let d = node_with(&upstream, cluster.section()).await;
    assert_eq!(x_cache(&read(&d.mcp(), "demo://docs/999999", None).await), "HIT", "{}", d.process.log());
}

#[tokio::test]
async fn a_node_announcing_an_address_outside_cluster_allow_gets_no_connection_and_requests_still_succeed() {
    // The first master announces 127.0.0.2; the edge allows only 127.0.0.1 (and its seeds,
    // which do not include that master).
    let cluster = Cluster::start_with(3, 0, Some("127.0.0.2")).await;
    let outsider = &cluster.servers[0];
    let seeds: Vec<String> = cluster.servers[1..].iter().map(Redis::url).collect();
    let section = format!("[cache.shared]\ncluster = {seeds:?}\ncluster_allow = [\"127.0.0.1/32\"]\n");
    let upstream = demo_upstream("u", &[]).await;
    let routes = format!("[[route]]\nname = \"docs\"\npath = \"/mcp\"\nupstreams = [{:?}]\n", upstream.url());
    let (a, b) =
        (proxy_full(&routes, "", |_| section.clone()).await, proxy_full(&routes, "", |_| section.clone()).await);

    // Every request is answered; what would live on the outsider is a miss everywhere.
    let mut hits = 0;
    for n in 0..48 {
        let uri = format!("demo://docs/{n}");
        let first = read(&a.mcp(), &uri, None).await;
        assert!(first.status == 200 && first.json()["result"]["contents"].is_array(), "{first:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
        let second = read(&b.mcp(), &uri, None).await;
        assert!(second.status == 200 && second.json()["result"]["contents"].is_array(), "{second:?}");
        hits += (x_cache(&second) == "HIT") as u32;
    }
    assert!(
        (8..48).contains(&hits),
        "the allowed masters' buckets shared, not the outsider's: {hits} hits of 48\n{}\n{}",
        a.process.log(),
        b.process.log()
    );
    let clients = Cluster::info(outsider.port, &["client", "list"]);
    assert_eq!(clients.lines().count(), 1, "only this redis-cli connected to the outsider:\n{clients}");

    // Operators are told: which master, a count, one log line.
    let refused = |shared: &Value| {
        let masters = shared["masters"].as_array().cloned().unwrap_or_default();
        masters.iter().any(|m| {
            m["address"] == format!("127.0.0.2:{}", outsider.port) && m["refused"] == true && m["reachable"] == false
        })
    };
    wait_shared(&a, "reporting the refused master", Duration::from_secs(5), refused).await;
    assert!(metric(&a, "mcp_shared_tier_nodes_refused_total").await >= 1.0);
    assert!(a.process.log().contains("not in cache.shared.cluster_allow"), "{}", a.process.log());

    // Without cluster_allow, a loopback node is in the seeds' kind of network: connected to.
    let c = node_with(&upstream, format!("[cache.shared]\ncluster = {seeds:?}\n")).await;
    for n in 0..48 {
        read(&c.mcp(), &format!("demo://docs/{n}"), None).await;
    }
    let clients = Cluster::info(outsider.port, &["client", "list"]);
    assert!(clients.lines().count() > 1, "C connected to the outsider:\n{clients}");
}

#[tokio::test]
async fn resharding_under_load_fails_no_request_keeps_the_entries_shared_and_loses_no_purge() {
    let cluster = Cluster::start().await;
    let upstream = demo_upstream("u", &[]).await;
    let (a, b) = (node_with(&upstream, cluster.section()).await, node_with(&upstream, cluster.section()).await);
    fetched_by_one_served_to_the_other(&a, &b).await;
    let load = Load::start(&[&a, &b]);

    // The lowest 2 100 slots (buckets 0, 1 and 2, with their entries and markers) move to
    // another master while A purges half of the entries: the client meets MOVED and ASK.
    let (port, from, to) = cluster.slot_zero_and_another_master();
    let receiver = to.clone();
    let started = std::time::Instant::now();
    let reshard = tokio::task::spawn_blocking(move || {
        Command::new("redis-cli")
            .args(["--cluster", "reshard", &format!("127.0.0.1:{port}"), "--cluster-from", &from, "--cluster-to", &to])
            .args(["--cluster-slots", "2100", "--cluster-yes", "--cluster-pipeline", "1"])
            .output()
            .expect("redis-cli --cluster reshard")
    });
    for n in 0..24 {
        purge(&a, json!({"route": "docs", "uri": format!("demo://docs/{n}")})).await;
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    let purged_in = started.elapsed();
    let resharded = reshard.await.unwrap();
    eprintln!("purges done after {purged_in:?}, reshard after {:?}", started.elapsed());
    assert!(resharded.status.success(), "reshard: {resharded:?}");
    assert_eq!(cluster.slot_zero_and_another_master().1, receiver, "slot 0 moved");
    tokio::time::sleep(Duration::from_millis(500)).await;
    load.stop_and_check().await;
    wait_shared(&a, "with nothing held back", Duration::from_secs(20), |s| s["pending_invalidations"] == false).await;

    // Nothing purged is served, by B (it heard) or by a node started now (the markers, moved
    // or not, tell it); the other half, moved or not, is still shared. Each reads its own part
    // of the purged half: what one fetches again is rightly served to the other.
    let c = node_with(&upstream, cluster.section()).await;
    for n in 0..48 {
        let (reader, name) = if n < 12 { (&b, "B") } else { (&c, "C") };
        let uri = format!("demo://docs/{n}");
        let expected = if n < 24 { "MISS" } else { "HIT" };
        assert_eq!(
            x_cache(&read(&reader.mcp(), &uri, None).await),
            expected,
            "{name}: {uri}\n{}",
            reader.process.log()
        );
    }
}
