//! The shared tier (`[cache.shared]`): several mcp-edge nodes and one real `redis-server`
//! (Debian's, started by each test on a port of its own). Answers fetched by one node are
//! served by the others; invalidations on one reach the others; Redis going away fails no
//! request.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use crate::harness::*;

mod cluster;
mod trust;

/// A `redis-server` of its own, without persistence (a restart loses everything, as a crash
/// of a cache-only Redis does).
struct Redis {
    process: Process,
    port: u16,
}

impl Redis {
    async fn start() -> Redis {
        Redis::start_on(free_port()).await
    }

    async fn start_on(port: u16) -> Redis {
        Redis::start_with(port, &[]).await
    }

    /// A server on `port` with more options (e.g. `--requirepass`).
    async fn start_with(port: u16, options: &[&str]) -> Redis {
        let port_text = port.to_string();
        let base = ["--port", &port_text, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"];
        let process = Process::spawn("redis-server", Command::new(redis_server()).args(base).args(options));
        wait_listening(port, &process).await;
        Redis { process, port }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Runs one command through `redis-cli`, which must succeed.
    fn cli(&self, args: &[&str]) {
        let out =
            Command::new("redis-cli").args(["-p", &self.port.to_string()]).args(args).output().expect("redis-cli");
        assert!(out.status.success() && !out.stdout.starts_with(b"ERR"), "redis-cli {args:?}: {out:?}");
    }

    /// Every key in the server (`redis-cli --scan`).
    fn keys(&self) -> Vec<String> {
        let out = Command::new("redis-cli").args(["-p", &self.port.to_string(), "--scan"]).output().expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
    }
}

/// The server the tests start: `redis-server`, or what `MCP_EDGE_TEST_REDIS_SERVER` names
/// (e.g. a `valkey-server`, to run the same tests on Valkey).
fn redis_server() -> String {
    std::env::var("MCP_EDGE_TEST_REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_string())
}

fn shared_section(url: &str) -> String {
    format!("[cache.shared]\nurl = {url:?}\n")
}

/// A node on `upstream` sharing through `url`, with a route named `docs`.
async fn node(upstream: &Upstream, url: &str) -> Proxy {
    node_with(upstream, shared_section(url)).await
}

/// A node on `upstream` with the `[cache.shared]` section given, with a route named `docs`.
async fn node_with(upstream: &Upstream, section: String) -> Proxy {
    let routes = format!("[[route]]\nname = \"docs\"\npath = \"/mcp\"\nupstreams = [{:?}]\n", upstream.url());
    let proxy = proxy_full(&routes, "", |_| section).await;
    wait_shared_state(&proxy, "up").await;
    proxy
}

async fn readiness(proxy: &Proxy) -> (u16, Value) {
    let reply = read_reply(reqwest::get(proxy.admin_url("/readyz")).await.unwrap()).await;
    (reply.status, serde_json::from_str(&reply.body).unwrap())
}

/// Waits until `/readyz` reports the shared tier in `state` (within 15 s).
async fn wait_shared_state(proxy: &Proxy, state: &str) -> Value {
    wait_shared(proxy, state, Duration::from_secs(15), |shared| shared["state"] == state).await
}

/// Waits until `/readyz`'s `shared_tier` detail is `what` (as `seen` tells), within `limit`;
/// returns the whole `/readyz` body.
async fn wait_shared(proxy: &Proxy, what: &str, limit: Duration, seen: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let (_, body) = readiness(proxy).await;
        if seen(&body["shared_tier"]) {
            return body;
        }
        assert!(tokio::time::Instant::now() < deadline, "shared tier never {what}: {body}\n{}", proxy.process.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads `uri` through `a`, then through `b` once `a` has written it: the shared tier answers.
async fn cached_on_both(a: &Proxy, b: &Proxy, uri: &str) {
    read(&a.mcp(), uri, None).await;
    wait_written(a, 1).await;
    assert_eq!(x_cache(&read(&b.mcp(), uri, None).await), "HIT");
}

/// Waits until `proxy` holds invalidations it could not announce (within 5 s).
async fn wait_holding_invalidations(proxy: &Proxy) -> Value {
    let holding = |shared: &Value| shared["pending_invalidations"] == true;
    wait_shared(proxy, "holding an invalidation", Duration::from_secs(5), holding).await
}

/// Reads `uri` through `reader` until it is no hit (`purger`'s invalidation reached it),
/// for at most `limit`.
async fn wait_until_not_a_hit(reader: &Proxy, purger: &Proxy, uri: &str, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    while x_cache(&read(&reader.mcp(), uri, None).await) == "HIT" {
        assert!(tokio::time::Instant::now() < deadline, "the purge never arrived\n{}", purger.process.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn purge(proxy: &Proxy, body: Value) {
    let request = reqwest::Client::new()
        .post(proxy.admin_url("/purge"))
        .header("content-type", "application/json")
        .body(body.to_string());
    let reply = read_reply(request.send().await.unwrap()).await;
    assert_eq!(reply.status, 200, "{reply:?}");
}

/// Whom a private answer says it was fetched for.
fn fetched_for(reply: &Reply) -> String {
    reply.json()["result"]["_meta"]["fetchedFor"]["authorization"].as_str().unwrap_or("(none)").to_string()
}

/// How many entries `proxy` has written to the shared tier.
async fn written(proxy: &Proxy) -> u32 {
    let sample = "mcp_cache_operations_total{operation=\"write\",result=\"ok\",tier=\"shared\"}";
    metric(proxy, sample).await as u32
}

/// Waits until `proxy` has written `count` entries to the shared tier (it writes in the
/// background, after answering), within 5 s.
async fn wait_written(proxy: &Proxy, count: u32) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while written(proxy).await < count {
        if tokio::time::Instant::now() >= deadline {
            let metrics = reqwest::get(proxy.admin_url("/metrics")).await.unwrap().text().await.unwrap();
            let shared: Vec<&str> = metrics.lines().filter(|line| line.contains("shared")).collect();
            let status = readiness(proxy).await.1;
            panic!("never wrote {count} entries\n{}\n{status}\n{}", shared.join("\n"), proxy.process.log());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_read_through_one_node_is_answered_by_another_without_reaching_the_upstream() {
    let redis = Redis::start().await;
    let upstream = demo_upstream("u", &[]).await;
    let (a, b) = (node(&upstream, &redis.url()).await, node(&upstream, &redis.url()).await);
    assert_eq!(x_cache(&read(&a.mcp(), "demo://docs/1", None).await), "MISS");
    // B has never seen it: the shared tier answers, once; then B's own memory does.
    wait_written(&a, 1).await;
    let from_shared = read(&b.mcp(), "demo://docs/1", None).await;
    assert_eq!(x_cache(&from_shared), "HIT", "{from_shared:?}\n{}", b.process.log());
    assert!(from_shared.body.contains("docs/1"), "{}", from_shared.body);
    assert_eq!(x_cache(&read(&b.mcp(), "demo://docs/1", None).await), "HIT");
    assert_eq!(upstream_reads(&upstream).await, 1, "only A's miss reached the upstream");
    assert_eq!(
        metric(&b, "mcp_cache_operations_total{operation=\"lookup\",result=\"hit\",tier=\"shared\"}").await,
        1.0
    );
    assert_eq!(
        metric(&b, "mcp_cache_operations_total{operation=\"lookup\",result=\"hit\",tier=\"memory\"}").await,
        1.0
    );
    assert_eq!(metric(&b, "mcp_shared_tier_up").await, 1.0);
    // What the packaged dashboard and alerts name of the shared tier, a node with one exports.
    let exported = reqwest::get(b.admin_url("/metrics")).await.unwrap().text().await.unwrap();
    for file in ["grafana-dashboard.json", "mcp-edge-alerts.yml"] {
        let text = std::fs::read_to_string(workspace().join("packaging/monitoring").join(file)).unwrap();
        let shared: Vec<String> =
            crate::operator::metric_names(&text).into_iter().filter(|n| n.starts_with("mcp_shared_tier_")).collect();
        assert!(!shared.is_empty(), "{file}");
        for name in shared {
            assert!(exported.contains(&format!("# TYPE {name} ")), "{file}: {name} is not exported");
        }
    }
    assert!(
        b.process.log().contains("tier=\"shared\"") || b.process.log().contains("tier=shared"),
        "access log names the tier"
    );

    // Lists and a new node started later: still answered from the shared tier.
    a.mcp().stateless("resources/list", json!({}), &[]).await;
    let c = node(&upstream, &redis.url()).await;
    wait_written(&a, 2).await;
    assert_eq!(x_cache(&c.mcp().stateless("resources/list", json!({}), &[]).await), "HIT");
    assert_eq!(x_cache(&read(&c.mcp(), "demo://docs/1", None).await), "HIT");

    // Nothing readable in Redis: keys are digests under the prefix.
    let keys = redis.keys();
    assert!(keys.len() >= 2, "{keys:?}");
    for key in &keys {
        assert!(key.starts_with("mcp-edge:"), "{key}");
        assert!(!key.contains("demo") && !key.contains("docs") && !key.contains("Bearer"), "{key}");
    }
}

#[tokio::test]
async fn an_idle_subscription_stays_up_and_local_entries_stay_trusted() {
    let redis = Redis::start().await;
    let upstream = demo_upstream("u", &[]).await;
    let a = node(&upstream, &redis.url()).await;
    read(&a.mcp(), "demo://docs/1", None).await;
    // Past the subscription's idle check (a PING every 5 s).
    tokio::time::sleep(Duration::from_millis(6500)).await;
    assert_eq!(x_cache(&read(&a.mcp(), "demo://docs/1", None).await), "HIT");
    assert_eq!(
        metric(&a, "mcp_cache_operations_total{operation=\"lookup\",result=\"hit\",tier=\"memory\"}").await,
        1.0
    );
    assert_eq!(
        metric(&a, "mcp_cache_operations_total{operation=\"lookup\",result=\"hit\",tier=\"shared\"}").await,
        0.0
    );
    assert!(!a.process.log().contains("shared tier: lost"), "{}", a.process.log());
}

/// What Redis holds is on the node's `/readyz`, `/stats` and metrics (read at once, then every
/// 10 s): the operator sees the shared tier fill up against its `maxmemory`.
#[tokio::test]
async fn the_shared_tiers_memory_is_reported() {
    let redis = Redis::start_with(free_port(), &["--maxmemory", "64mb"]).await;
    let upstream = demo_upstream("u", &[]).await;
    let a = node(&upstream, &redis.url()).await;
    let reported = |shared: &Value| shared["memory_bytes"].as_u64().is_some_and(|used| used > 0);
    let body = wait_shared(&a, "reporting its memory", Duration::from_secs(5), reported).await;
    let shared = &body["shared_tier"];
    assert_eq!(shared["max_memory_bytes"], 64 << 20, "{shared}");
    let stats: Value =
        serde_json::from_str(&read_reply(reqwest::get(a.admin_url("/stats")).await.unwrap()).await.body).unwrap();
    assert!(stats["cache"]["shared"]["memory_bytes"].as_u64().unwrap() > 0, "{}", stats["cache"]);
    assert!(metric(&a, "mcp_shared_tier_memory_bytes").await > 0.0);
}

#[tokio::test]
async fn private_answers_stay_with_their_identity_across_nodes() {
    let redis = Redis::start().await;
    let upstream = demo_upstream("u", &["--scope", "private", "--echo-caller"]).await;
    let (a, b) = (node(&upstream, &redis.url()).await, node(&upstream, &redis.url()).await);
    let uri = "demo://docs/7";
    assert_eq!(fetched_for(&read(&a.mcp(), uri, Some("Bearer alice")).await), "Bearer alice");
    wait_written(&a, 1).await;
    let bob = read(&b.mcp(), uri, Some("Bearer bob")).await;
    assert_eq!((x_cache(&bob), fetched_for(&bob).as_str()), ("MISS", "Bearer bob"));
    let anonymous = read(&b.mcp(), uri, None).await;
    assert_eq!((x_cache(&anonymous), fetched_for(&anonymous).as_str()), ("MISS", "(none)"));
    let alice = read(&b.mcp(), uri, Some("Bearer alice")).await;
    assert_eq!((x_cache(&alice), fetched_for(&alice).as_str()), ("HIT", "Bearer alice"));
    // Bob's answer, fetched on B, is his on A too; and Alice's stays hers.
    // B stored Bob's answer only: a private answer without an identity is not stored.
    wait_written(&b, 1).await;
    let bob_on_a = read(&a.mcp(), uri, Some("Bearer bob")).await;
    assert_eq!((x_cache(&bob_on_a), fetched_for(&bob_on_a).as_str()), ("HIT", "Bearer bob"));
    assert_eq!(fetched_for(&read(&a.mcp(), uri, Some("Bearer alice")).await), "Bearer alice");
    let eve = read(&a.mcp(), uri, Some("Bearer eve")).await;
    assert_eq!((x_cache(&eve), fetched_for(&eve).as_str()), ("MISS", "Bearer eve"));
}

#[tokio::test]
async fn a_notification_or_a_purge_on_one_node_stops_the_others_serving_the_old_answer_within_100ms() {
    let redis = Redis::start().await;
    let upstream = demo_upstream("u", &[]).await;
    let (a, b) = (node(&upstream, &redis.url()).await, node(&upstream, &redis.url()).await);
    let x = "demo://versioned/x";
    assert!(read(&a.mcp(), x, None).await.body.contains("x at version 1"));
    // B holds x in its own memory now.
    wait_written(&a, 1).await;
    assert_eq!(x_cache(&read(&b.mcp(), x, None).await), "HIT");
    assert_eq!(x_cache(&read(&b.mcp(), x, None).await), "HIT");
    read(&b.mcp(), "demo://docs/2", None).await;

    // The touch's SSE answer passes through A carrying notifications/resources/updated for x.
    let touched = a.mcp().stateless("tools/call", json!({"name": "touch", "arguments": {"uri": x}}), &[]).await;
    assert_eq!(touched.tool_text(), "version 2");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let after = read(&b.mcp(), x, None).await;
    assert_eq!(x_cache(&after), "MISS", "{after:?}");
    assert!(after.body.contains("x at version 2"), "{}", after.body);
    assert_eq!(x_cache(&read(&b.mcp(), "demo://docs/2", None).await), "HIT", "other URIs stay cached");

    // A purge on A: B's copy and the shared copy are dead within 100 ms.
    assert_eq!(x_cache(&read(&b.mcp(), "demo://docs/2", None).await), "HIT");
    purge(&a, json!({"route": "docs", "uri": "demo://docs/2"})).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(x_cache(&read(&b.mcp(), "demo://docs/2", None).await), "MISS");
    // Purge everything on B: A's copies go too.
    assert_eq!(x_cache(&read(&a.mcp(), x, None).await), "HIT");
    purge(&b, json!({"route": "docs", "all": true})).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(x_cache(&read(&a.mcp(), x, None).await), "MISS");
    // A node started after the purge finds the marker in Redis: B's shared copy of docs/2 is
    // from before it, A's copy of x from after.
    wait_written(&a, 2).await;
    let fresh = node(&upstream, &redis.url()).await;
    assert_eq!(x_cache(&read(&fresh.mcp(), "demo://docs/2", None).await), "MISS", "purged, though still in Redis");
    assert_eq!(x_cache(&read(&fresh.mcp(), x, None).await), "HIT", "fetched after the purge");
}

/// A TCP relay to Redis that a test can cut (dropping every connection and refusing new ones)
/// and restore: one node losing Redis while the others keep it.
struct Relay {
    port: u16,
    cut: Arc<AtomicBool>,
    generation: Arc<AtomicU64>,
}

impl Relay {
    async fn start(target: u16) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (cut, generation) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
        let (cut_flag, generations) = (cut.clone(), generation.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else { return };
                if cut_flag.load(Ordering::SeqCst) {
                    let _ = client.shutdown().await;
                    continue;
                }
                let (born, generations) = (generations.load(Ordering::SeqCst), generations.clone());
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(("127.0.0.1", target)).await else { return };
                    let relay = tokio::io::copy_bidirectional(&mut client, &mut server);
                    let watch = async {
                        while generations.load(Ordering::SeqCst) == born {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    };
                    tokio::select! { _ = relay => {}, _ = watch => {} }
                });
            }
        });
        Relay { port, cut, generation }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn an_invalidation_made_while_cut_off_from_redis_reaches_the_others_once_back() {
    let redis = Redis::start().await;
    let relay = Relay::start(redis.port).await;
    let upstream = demo_upstream("u", &[]).await;
    let (a, b) = (node(&upstream, &relay.url()).await, node(&upstream, &redis.url()).await);
    let uri = "demo://docs/3";
    cached_on_both(&a, &b, uri).await;

    relay.cut();
    let degraded = wait_shared_state(&a, "degraded").await;
    assert_eq!(degraded["ready"], true, "a node without its shared tier still serves: {degraded}");
    assert!(degraded["shared_tier"]["last_error"].is_string(), "{degraded}");
    assert_eq!(metric(&a, "mcp_shared_tier_up").await, 0.0);
    purge(&a, json!({"route": "docs", "uri": uri})).await;
    assert_eq!(x_cache(&read(&a.mcp(), uri, None).await), "MISS", "A applied its own purge at once");
    assert_eq!(x_cache(&read(&b.mcp(), uri, None).await), "HIT", "B cannot know yet");
    wait_holding_invalidations(&a).await;

    relay.restore();
    wait_shared_state(&a, "up").await;
    wait_until_not_a_hit(&b, &a, uri, Duration::from_secs(2)).await;
    assert_eq!(
        metric(&a, "mcp_cache_operations_total{operation=\"invalidate\",result=\"queued\",tier=\"shared\"}").await,
        1.0
    );
}

/// Redis refusing writes (out of memory under `noeviction`) while every node stays
/// subscribed: the announcement still goes out (`PUBLISH` is allowed out of memory) and the
/// others stop serving the old answer at once; the marker the server refused is written again
/// until it takes it, so a node started later finds it. The refused writes do not stop reads.
#[tokio::test]
async fn an_invalidation_reaches_the_others_while_redis_refuses_writes_and_its_marker_is_written_once_it_takes_them() {
    let redis = Redis::start().await;
    let upstream = demo_upstream("u", &[]).await;
    let (a, b) = (node(&upstream, &redis.url()).await, node(&upstream, &redis.url()).await);
    let uri = "demo://docs/4";
    cached_on_both(&a, &b, uri).await;
    // B holds it in memory too, so only the announcement can stop it serving it.
    assert_eq!(x_cache(&read(&b.mcp(), uri, None).await), "HIT");
    // Only in Redis, for A to read while writes are refused.
    read(&b.mcp(), "demo://docs/40", None).await;
    wait_written(&b, 1).await;

    redis.cli(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    redis.cli(&["CONFIG", "SET", "maxmemory", "1"]);
    purge(&a, json!({"route": "docs", "uri": uri})).await;
    wait_until_not_a_hit(&b, &a, uri, Duration::from_millis(150)).await;
    let status = wait_holding_invalidations(&a).await;
    assert_eq!(status["shared_tier"]["subscribed"], true, "{status}");

    // Writes fail (A misses new URIs and cannot share them); reads go on.
    for n in 0..5 {
        assert_eq!(x_cache(&read(&a.mcp(), &format!("demo://docs/{}", 100 + n), None).await), "MISS");
    }
    let failed = |shared: &Value| shared["breaker_open"] == false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while metric(&a, "mcp_cache_operations_total{operation=\"write\",result=\"error\",tier=\"shared\"}").await < 5.0 {
        assert!(tokio::time::Instant::now() < deadline, "the writes never failed\n{}", a.process.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(failed(&readiness(&a).await.1["shared_tier"]), "write errors opened the breaker");
    assert_eq!(x_cache(&read(&a.mcp(), "demo://docs/40", None).await), "HIT", "read from Redis");
    assert_eq!(readiness(&a).await.1["shared_tier"]["state"], "up");

    redis.cli(&["CONFIG", "SET", "maxmemory", "0"]);
    let empty = |shared: &Value| shared["pending_invalidations"] == false;
    wait_shared(&a, "done with the purge", Duration::from_secs(1), empty).await;
    // The entry A purged is still in Redis; its marker, written late, kills it for a new node.
    let c = node(&upstream, &redis.url()).await;
    assert_eq!(x_cache(&read(&c.mcp(), uri, None).await), "MISS", "the marker was written once Redis took it");
}

/// Redis down for a while (long enough for any reconnection backoff to grow): a purge made
/// meanwhile reaches the other node within half a second of Redis answering again.
#[tokio::test]
async fn a_purge_made_while_redis_was_down_reaches_the_others_within_500ms_of_its_return() {
    let mut redis = Redis::start().await;
    let upstream = demo_upstream("u", &[]).await;
    let (a, b) = (node(&upstream, &redis.url()).await, node(&upstream, &redis.url()).await);
    let uri = "demo://docs/6";
    cached_on_both(&a, &b, uri).await;
    assert_eq!(x_cache(&read(&b.mcp(), uri, None).await), "HIT");
    let port = redis.port;
    redis.process.kill();
    wait_shared_state(&a, "degraded").await;
    wait_shared_state(&b, "degraded").await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    purge(&a, json!({"route": "docs", "uri": uri})).await;
    wait_holding_invalidations(&a).await;
    assert_eq!(x_cache(&read(&b.mcp(), uri, None).await), "HIT", "B cannot know yet");
    drop(redis);
    let _redis = Redis::start_on(port).await;
    let back = tokio::time::Instant::now();
    while x_cache(&read(&b.mcp(), uri, None).await) == "HIT" {
        assert!(back.elapsed() < Duration::from_millis(500), "B still serves the purged answer\n{}", b.process.log());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn redis_killed_under_load_fails_no_request_and_the_node_recovers() {
    let mut redis = Redis::start().await;
    let upstream = demo_upstream("u", &[]).await;
    let a = node(&upstream, &redis.url()).await;
    let errors = Arc::new(AtomicU64::new(0));
    let served = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for client in 0..8u32 {
        let (mcp, errors, served, stop) = (a.mcp(), errors.clone(), served.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let mut n = 0u32;
            while !stop.load(Ordering::SeqCst) {
                // Half hits, half new URIs (misses that write to the shared tier).
                let uri = if n.is_multiple_of(2) {
                    format!("demo://docs/{client}")
                } else {
                    format!("demo://docs/{}", 1000 + client * 100_000 + n)
                };
                let reply = read(&mcp, &uri, None).await;
                let ok = reply.status == 200 && reply.json()["result"]["contents"].is_array();
                if !ok && errors.fetch_add(1, Ordering::SeqCst) < 3 {
                    eprintln!("failed: {reply:?}");
                }
                if ok {
                    served.fetch_add(1, Ordering::SeqCst);
                }
                n += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.process.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let during = wait_shared_state(&a, "degraded").await;
    assert_eq!(during["ready"], true, "{during}");
    let port = redis.port;
    drop(redis);
    let redis = Redis::start_on(port).await;
    wait_shared_state(&a, "up").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.await.unwrap();
    }
    assert_eq!(errors.load(Ordering::SeqCst), 0, "no request failed ({} served)", served.load(Ordering::SeqCst));
    assert!(served.load(Ordering::SeqCst) > 100, "the load ran");
    // Writing again after the outage: a second node reads what A fetches now (once the
    // load's last background writes have landed, so that A's count names this one).
    let mut before = written(&a).await;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = written(&a).await;
        if now == before {
            break;
        }
        before = now;
    }
    read(&a.mcp(), "demo://docs/999999999", None).await;
    wait_written(&a, before + 1).await;
    let b = node(&upstream, &redis.url()).await;
    assert_eq!(x_cache(&read(&b.mcp(), "demo://docs/999999999", None).await), "HIT");
}

#[tokio::test]
async fn what_a_node_cached_while_redis_was_away_is_fetched_again_once_it_is_back() {
    let mut redis = Redis::start().await;
    let upstream = demo_upstream("u", &[]).await;
    let a = node(&upstream, &redis.url()).await;
    let port = redis.port;
    redis.process.kill();
    wait_shared_state(&a, "degraded").await;
    // Cached locally while nobody could tell A of another node's invalidation.
    assert_eq!(x_cache(&read(&a.mcp(), "demo://docs/9", None).await), "MISS");
    assert_eq!(x_cache(&read(&a.mcp(), "demo://docs/9", None).await), "HIT", "the local tiers still serve");
    drop(redis);
    let _redis = Redis::start_on(port).await;
    wait_shared_state(&a, "up").await;
    let reads = upstream_reads(&upstream).await;
    assert_eq!(x_cache(&read(&a.mcp(), "demo://docs/9", None).await), "MISS", "may have missed an invalidation");
    assert_eq!(upstream_reads(&upstream).await, reads + 1);
    assert_eq!(x_cache(&read(&a.mcp(), "demo://docs/9", None).await), "HIT");
}

#[tokio::test]
async fn a_shared_tier_that_is_down_at_start_is_joined_once_it_is_up() {
    let port = free_port();
    let upstream = demo_upstream("u", &[]).await;
    let routes = format!("[[route]]\nname = \"docs\"\npath = \"/mcp\"\nupstreams = [{:?}]\n", upstream.url());
    let section = shared_section(&format!("redis://127.0.0.1:{port}"));
    let a = proxy_full(&routes, "", |_| section).await;
    let (status, body) = readiness(&a).await;
    assert_eq!((status, &body["shared_tier"]["state"]), (200, &json!("degraded")), "{body}");
    assert_eq!(x_cache(&read(&a.mcp(), "demo://docs/1", None).await), "MISS");
    let redis = Redis::start_on(port).await;
    wait_shared_state(&a, "up").await;
    read(&a.mcp(), "demo://docs/2", None).await;
    let b = node(&upstream, &redis.url()).await;
    wait_written(&a, 1).await;
    assert_eq!(x_cache(&read(&b.mcp(), "demo://docs/2", None).await), "HIT");
}

#[tokio::test]
async fn a_password_file_is_used_and_a_missing_one_is_refused_at_start() {
    let redis = Redis::start_with(free_port(), &["--requirepass", "s3cret"]).await;
    let port = redis.port;
    let upstream = demo_upstream("u", &[]).await;
    let routes = format!("[[route]]\npath = \"/mcp\"\nupstreams = [{:?}]\n", upstream.url());
    let a = proxy_full(&routes, "", |dir| {
        std::fs::write(dir.join("redis.password"), "s3cret\n").unwrap();
        format!(
            "[cache.shared]\nurl = \"redis://127.0.0.1:{port}\"\npassword_file = {:?}\n",
            dir.join("redis.password")
        )
    })
    .await;
    wait_shared_state(&a, "up").await;
    read(&a.mcp(), "demo://docs/1", None).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(metric(&a, "mcp_cache_operations_total{operation=\"write\",result=\"ok\",tier=\"shared\"}").await, 1.0);

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mcp-edge.toml");
    std::fs::write(
        &config,
        format!("[cache.shared]\nurl = \"redis://127.0.0.1:{port}\"\npassword_file = \"/nonexistent/redis.password\"\n{routes}"),
    )
    .unwrap();
    for command in ["check", "run"] {
        let out = Command::new(bin()).args([command, "--config"]).arg(&config).output().unwrap();
        assert!(!out.status.success(), "{command}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let named = stderr.contains("cache.shared.password_file") && stderr.contains("/nonexistent/redis.password");
        assert!(named, "{command}: {stderr}");
    }
}

#[tokio::test]
async fn garbage_in_redis_is_ignored_and_answered_from_the_upstream() {
    let redis = Redis::start().await;
    let upstream = demo_upstream("u", &[]).await;
    let a = node(&upstream, &redis.url()).await;
    read(&a.mcp(), "demo://docs/1", None).await;
    wait_written(&a, 1).await;
    let entries: Vec<String> = redis.keys().into_iter().filter(|k| k.starts_with("mcp-edge:e:")).collect();
    assert!(!entries.is_empty());
    for key in &entries {
        redis.cli(&["SET", key, "\u{e2}not an entry"]);
    }
    // Strangers on the channel, and a marker that is no number.
    redis.cli(&["PUBLISH", "mcp-edge:invalidations", "hello"]);
    redis.cli(&["SET", "mcp-edge:m:everything", "soon"]);
    let b = node(&upstream, &redis.url()).await;
    let reply = read(&b.mcp(), "demo://docs/1", None).await;
    assert_eq!((reply.status, x_cache(&reply)), (200, "MISS"), "{reply:?}");
    assert!(reply.body.contains("docs/1"), "{}", reply.body);
    assert!(
        metric(&b, "mcp_cache_operations_total{operation=\"lookup\",result=\"unreadable\",tier=\"shared\"}").await
            >= 1.0
    );
    // B's own answer replaced the garbage: a third node reads it.
    wait_written(&b, 1).await;
    let c = node(&upstream, &redis.url()).await;
    assert_eq!(x_cache(&read(&c.mcp(), "demo://docs/1", None).await), "HIT");
    assert_eq!(readiness(&a).await.1["shared_tier"]["state"], "up", "the stranger's message broke nothing");
}

#[tokio::test]
async fn a_tls_redis_is_reached_over_rediss_with_a_private_ca() {
    let pki = crate::tls::pki("redis");
    let dir = tempfile::tempdir().unwrap();
    for (name, pem) in [("ca.pem", &pki.ca_pem), ("cert.pem", &pki.cert_pem), ("key.pem", &pki.key_pem)] {
        std::fs::write(dir.path().join(name), pem).unwrap();
    }
    let path = |name: &str| dir.path().join(name).display().to_string();
    let port = free_port();
    let (cert, key, ca) = (path("cert.pem"), path("key.pem"), path("ca.pem"));
    let tls = ["--port", "0", "--tls-port", &port.to_string(), "--tls-cert-file", &cert, "--tls-key-file", &key];
    let redis = Process::spawn(
        "redis-server (TLS)",
        Command::new(redis_server()).args(tls).args([
            "--tls-ca-cert-file",
            &ca,
            "--tls-auth-clients",
            "no",
            "--save",
            "",
        ]),
    );
    wait_listening(port, &redis).await;
    let upstream = demo_upstream("u", &[]).await;
    let routes = format!("[[route]]\npath = \"/mcp\"\nupstreams = [{:?}]\n", upstream.url());
    let section = format!("[cache.shared]\nurl = \"rediss://127.0.0.1:{port}\"\nca_file = {ca:?}\n");
    let (a, b) =
        (proxy_full(&routes, "", |_| section.clone()).await, proxy_full(&routes, "", |_| section.clone()).await);
    wait_shared_state(&a, "up").await;
    wait_shared_state(&b, "up").await;
    read(&a.mcp(), "demo://docs/4", None).await;
    wait_written(&a, 1).await;
    assert_eq!(x_cache(&read(&b.mcp(), "demo://docs/4", None).await), "HIT");
    assert_eq!(upstream_reads(&upstream).await, 1);

    // Without the CA, the server's certificate is not trusted: the node serves without the tier.
    let untrusting = format!("[cache.shared]\nurl = \"rediss://127.0.0.1:{port}\"\n");
    let c = proxy_full(&routes, "", |_| untrusting).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, body) = readiness(&c).await;
    assert_eq!((status, &body["shared_tier"]["state"]), (200, &json!("degraded")), "{body}");
    assert_eq!(x_cache(&read(&c.mcp(), "demo://docs/4", None).await), "MISS");
}

#[tokio::test]
async fn a_stalled_redis_costs_a_request_at_most_its_timeout() {
    let redis = Redis::start_with(free_port(), &["--enable-debug-command", "yes"]).await;
    let upstream = demo_upstream("u", &[]).await;
    let a = node(&upstream, &redis.url()).await;
    read(&a.mcp(), "demo://docs/1", None).await;
    // Redis answers nothing for 3 s (the connection stays open: no error, only silence).
    let port = redis.port.to_string();
    let stall = std::thread::spawn(move || {
        Command::new("redis-cli").args(["-p", &port, "DEBUG", "SLEEP", "3"]).output().unwrap();
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    for n in 2..20 {
        let started = std::time::Instant::now();
        let reply = read(&a.mcp(), &format!("demo://docs/{n}"), None).await;
        assert_eq!((reply.status, x_cache(&reply)), (200, "MISS"), "{reply:?}");
        // The 20 ms timeout, then the upstream; the breaker stops asking after 3 timeouts.
        assert!(started.elapsed() < Duration::from_millis(500), "read {n} took {:?}", started.elapsed());
    }
    assert_eq!(x_cache(&read(&a.mcp(), "demo://docs/1", None).await), "HIT", "the local tiers still answer");
    let degraded = readiness(&a).await.1;
    assert_eq!(degraded["shared_tier"]["breaker_open"], true, "{degraded}");
    let counted = |result: &str| {
        let sample = format!("mcp_cache_operations_total{{operation=\"lookup\",result=\"{result}\",tier=\"shared\"}}");
        let a = &a;
        async move { metric(a, &sample).await }
    };
    assert!(counted("timeout").await >= 1.0, "timed out, then");
    assert!(counted("skipped").await >= 10.0, "not asked while the breaker is open");
    stall.join().unwrap();
    // Once it answers again, one probe closes the breaker.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut n = 100;
    while readiness(&a).await.1["shared_tier"]["state"] != "up" {
        assert!(tokio::time::Instant::now() < deadline, "the breaker never closed");
        read(&a.mcp(), &format!("demo://docs/{n}"), None).await;
        n += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The Python SDK's server behind two nodes: its private answers cross nodes only to the user
/// they were fetched for.
#[tokio::test]
async fn python_sdk_private_answers_cross_nodes_only_to_their_user() {
    let redis = Redis::start().await;
    let (_server, port) = crate::peers::python_server(&["--hints", "private"]).await;
    let routes = format!("[[route]]\npath = \"/mcp\"\nupstreams = [\"http://127.0.0.1:{port}/mcp\"]\n");
    let section = shared_section(&redis.url());
    let (a, b) =
        (proxy_full(&routes, "", |_| section.clone()).await, proxy_full(&routes, "", |_| section.clone()).await);
    wait_shared_state(&a, "up").await;
    wait_shared_state(&b, "up").await;
    let text = |reply: &Reply| reply.json()["result"]["contents"][0]["text"].as_str().unwrap_or_default().to_string();
    let ann_on_a = read(&a.mcp(), "docs://mine/3", Some("Bearer ann")).await;
    assert_eq!((x_cache(&ann_on_a), text(&ann_on_a).as_str()), ("MISS", "page 3 of Bearer ann"), "{ann_on_a:?}");
    wait_written(&a, 1).await;
    let ann_on_b = read(&b.mcp(), "docs://mine/3", Some("Bearer ann")).await;
    assert_eq!((x_cache(&ann_on_b), text(&ann_on_b).as_str()), ("HIT", "page 3 of Bearer ann"));
    let ben_on_b = read(&b.mcp(), "docs://mine/3", Some("Bearer ben")).await;
    assert_eq!((x_cache(&ben_on_b), text(&ben_on_b).as_str()), ("MISS", "page 3 of Bearer ben"));
    let nobody = read(&b.mcp(), "docs://mine/3", Some("")).await;
    assert_ne!(text(&nobody), "page 3 of Bearer ann", "an empty credential is nobody's: {nobody:?}");
}
