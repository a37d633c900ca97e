//! The shared tier does not trust whoever can write to Redis: with `secret_file`, values are
//! sealed under their names and announcements signed; with or without it, no time read back
//! from Redis is later than now plus the clock skew, and an entry lives no longer than the
//! route's `max_ttl`.

use std::time::{SystemTime, UNIX_EPOCH};

use mcp_edge_policies::cache::Entry;
use mcp_edge_policies::shared_tier::{Announcement, Invalidated};

use super::*;

const SECRET: &str = "every node of this test shares these 48 bytes!!";

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// A connection of the test's own, for binary values (`redis-cli` mangles them).
async fn connect(redis: &Redis) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url()).unwrap().get_multiplexed_async_connection().await.unwrap()
}

async fn get(connection: &mut redis::aio::MultiplexedConnection, name: &str) -> Vec<u8> {
    redis::cmd("GET").arg(name).query_async::<Option<Vec<u8>>>(connection).await.unwrap().unwrap_or_default()
}

async fn set(connection: &mut redis::aio::MultiplexedConnection, name: &str, value: &[u8]) {
    redis::cmd("SET").arg(name).arg(value).query_async::<()>(connection).await.unwrap();
}

async fn publish(connection: &mut redis::aio::MultiplexedConnection, message: &[u8]) {
    redis::cmd("PUBLISH").arg("mcp-edge:invalidations").arg(message).query_async::<i64>(connection).await.unwrap();
}

/// The names of the entries in Redis.
fn entry_names(redis: &Redis) -> Vec<String> {
    redis.keys().into_iter().filter(|name| name.starts_with("mcp-edge:e:")).collect()
}

/// A node on `upstream` sharing through `url`, with `secret` in its `secret_file` when given
/// and `policy` in its route's `[route.policy]`.
async fn node_with(upstream: &Upstream, url: &str, secret: Option<&str>, policy: &str) -> Proxy {
    let routes = format!(
        "[[route]]\nname = \"docs\"\npath = \"/mcp\"\nupstreams = [{:?}]\n[route.policy]\n{policy}\n",
        upstream.url()
    );
    let (url, secret) = (url.to_string(), secret.map(str::to_string));
    let proxy = proxy_full(&routes, "", move |dir| {
        let mut section = shared_section(&url);
        if let Some(secret) = secret {
            let path = dir.join("shared.key");
            std::fs::write(&path, format!("{secret}\n")).unwrap();
            section.push_str(&format!("secret_file = {path:?}\n"));
        }
        section
    })
    .await;
    wait_shared_state(&proxy, "up").await;
    proxy
}

/// What `proxy` counted of `operation` in the shared tier with `result`.
async fn shared_count(proxy: &Proxy, operation: &str, result: &str) -> f64 {
    let sample = format!("mcp_cache_operations_total{{operation=\"{operation}\",result=\"{result}\",tier=\"shared\"}}");
    metric(proxy, &sample).await
}

#[tokio::test]
async fn with_a_secret_a_value_moved_to_another_identitys_name_is_refused_and_redis_shows_no_private_answer() {
    let redis = Redis::start().await;
    let upstream = demo_upstream("u", &["--scope", "private", "--echo-caller"]).await;
    let (a, b) = (
        node_with(&upstream, &redis.url(), Some(SECRET), "").await,
        node_with(&upstream, &redis.url(), Some(SECRET), "").await,
    );
    let uri = "demo://docs/7";
    assert_eq!(fetched_for(&read(&a.mcp(), uri, Some("Bearer alice")).await), "Bearer alice");
    wait_written(&a, 1).await;
    let alices = entry_names(&redis);
    assert_eq!(alices.len(), 1, "{alices:?}");
    let bob = read(&b.mcp(), uri, Some("Bearer bob")).await;
    assert_eq!((x_cache(&bob), fetched_for(&bob).as_str()), ("MISS", "Bearer bob"));
    wait_written(&b, 1).await;
    let bobs: Vec<String> = entry_names(&redis).into_iter().filter(|name| !alices.contains(name)).collect();
    assert_eq!(bobs.len(), 1, "{bobs:?}");

    // A dump of Redis: no private answer, no URI, no credential.
    let mut connection = connect(&redis).await;
    for name in redis.keys() {
        let value = get(&mut connection, &name).await;
        for secret_text in [&b"alice"[..], b"bob", b"docs/7", b"Bearer", b"contents"] {
            assert!(!value.windows(secret_text.len()).any(|w| w == secret_text), "{name} shows {secret_text:?}");
        }
    }

    // Alice's sealed value copied onto Bob's name: it opens under hers only.
    let alices_value = get(&mut connection, &alices[0]).await;
    set(&mut connection, &bobs[0], &alices_value).await;
    let c = node_with(&upstream, &redis.url(), Some(SECRET), "").await;
    let bob_on_c = read(&c.mcp(), uri, Some("Bearer bob")).await;
    assert_eq!((x_cache(&bob_on_c), fetched_for(&bob_on_c).as_str()), ("MISS", "Bearer bob"), "{bob_on_c:?}");
    assert_eq!(shared_count(&c, "lookup", "refused").await, 1.0);
    let alice_on_c = read(&c.mcp(), uri, Some("Bearer alice")).await;
    assert_eq!((x_cache(&alice_on_c), fetched_for(&alice_on_c).as_str()), ("HIT", "Bearer alice"));

    // A node with another secret names everything differently and opens nothing: no sharing.
    let other = node_with(&upstream, &redis.url(), Some("another secret, also at least 32 bytes"), "").await;
    let alice_elsewhere = read(&other.mcp(), uri, Some("Bearer alice")).await;
    assert_eq!((x_cache(&alice_elsewhere), fetched_for(&alice_elsewhere).as_str()), ("MISS", "Bearer alice"));
}

#[tokio::test]
async fn with_a_secret_a_forged_entry_or_announcement_is_refused() {
    let redis = Redis::start().await;
    let upstream = demo_upstream("u", &[]).await;
    let a = node_with(&upstream, &redis.url(), Some(SECRET), "").await;
    let uri = "demo://docs/5";
    read(&a.mcp(), uri, None).await;
    wait_written(&a, 1).await;
    let names = entry_names(&redis);
    let mut connection = connect(&redis).await;
    // A well-formed entry, as a node without the secret would write it.
    let forged = Entry {
        fetched_at_ms: now_ms(),
        expires_at_ms: now_ms() + 3_600_000,
        restate_ttl: false,
        own_ttl: false,
        result: br#"{"contents":[{"uri":"demo://docs/5","text":"forged"}]}"#,
        deflated: None,
    };
    set(&mut connection, &names[0], &forged.encode()).await;
    let b = node_with(&upstream, &redis.url(), Some(SECRET), "").await;
    let on_b = read(&b.mcp(), uri, None).await;
    assert_eq!(x_cache(&on_b), "MISS", "{on_b:?}");
    assert!(!on_b.body.contains("forged"), "{}", on_b.body);
    assert_eq!(shared_count(&b, "lookup", "refused").await, 1.0);

    // An announcement without the secret's tag (a fair time, everything): ignored, counted.
    assert_eq!(x_cache(&read(&b.mcp(), uri, None).await), "HIT");
    publish(&mut connection, &Announcement { node: 1, at_ms: now_ms(), what: Invalidated::Everything }.encode()).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(x_cache(&read(&b.mcp(), uri, None).await), "HIT", "still cached");
    assert_eq!(shared_count(&b, "announcement", "refused").await, 1.0);
    // A's own, signed, purge still reaches B.
    purge(&a, json!({"route": "docs", "uri": uri})).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(x_cache(&read(&b.mcp(), uri, None).await), "MISS");
    assert_eq!(shared_count(&b, "announcement", "applied").await, 1.0);
}

/// Without a secret a Redis writer can still serve what it likes, but not for longer than the
/// route's `max_ttl`, not past a purge, and never from the future.
#[tokio::test]
async fn without_a_secret_a_forged_entry_dies_within_max_ttl_and_at_a_purge_and_future_times_are_refused() {
    let redis = Redis::start().await;
    let upstream = demo_upstream("u", &[]).await;
    let max_ttl = "max_ttl = \"4s\"";
    let a = node_with(&upstream, &redis.url(), None, max_ttl).await;
    let uri = "demo://docs/5";
    read(&a.mcp(), uri, None).await;
    wait_written(&a, 1).await;
    let name = entry_names(&redis).remove(0);
    let mut connection = connect(&redis).await;
    let forged = |fetched_at_ms: u64| {
        Entry {
            fetched_at_ms,
            expires_at_ms: u64::MAX / 2,
            restate_ttl: false,
            own_ttl: false,
            result: br#"{"contents":[{"uri":"demo://docs/5","text":"forged"}]}"#,
            deflated: None,
        }
        .encode()
    };

    // Fetched a year from now: refused (it would have outlived every purge).
    set(&mut connection, &name, &forged(now_ms() + 365 * 86_400_000)).await;
    let b = node_with(&upstream, &redis.url(), None, max_ttl).await;
    let on_b = read(&b.mcp(), uri, None).await;
    assert!(!on_b.body.contains("forged") && x_cache(&on_b) == "MISS", "{on_b:?}");
    assert_eq!(shared_count(&b, "lookup", "refused").await, 1.0);
    // B's own answer replaces it in Redis (in the background: wait, not to overwrite ours).
    wait_written(&b, 1).await;

    // Fetched now, expiring in ages: served (nothing tells it from a real one), but only
    // until max_ttl after its fetch.
    let fetched_at = now_ms();
    set(&mut connection, &name, &forged(fetched_at)).await;
    let c = node_with(&upstream, &redis.url(), None, max_ttl).await;
    let on_c = read(&c.mcp(), uri, None).await;
    assert!(on_c.body.contains("forged") && x_cache(&on_c) == "HIT", "{on_c:?}");
    let dead_at = UNIX_EPOCH + Duration::from_millis(fetched_at + 4_100);
    tokio::time::sleep(dead_at.duration_since(SystemTime::now()).unwrap_or_default()).await;
    let later = read(&c.mcp(), uri, None).await;
    assert!(!later.body.contains("forged") && x_cache(&later) == "MISS", "{later:?}");

    // And a purge kills it on every node, in Redis too.
    wait_written(&c, 1).await;
    set(&mut connection, &name, &forged(now_ms() - 1_000)).await;
    let d = node_with(&upstream, &redis.url(), None, max_ttl).await;
    assert!(read(&d.mcp(), uri, None).await.body.contains("forged"));
    purge(&a, json!({"route": "docs", "uri": uri})).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let after = read(&d.mcp(), uri, None).await;
    assert!(!after.body.contains("forged") && x_cache(&after) == "MISS", "{after:?}");
}

#[tokio::test]
async fn an_announcement_with_a_huge_time_turns_nothing_off() {
    for secret in [None, Some(SECRET)] {
        let redis = Redis::start().await;
        let upstream = demo_upstream("u", &[]).await;
        let a = node_with(&upstream, &redis.url(), secret, "").await;
        let b = node_with(&upstream, &redis.url(), secret, "").await;
        cached_on_both(&a, &b, "demo://docs/1").await;
        let mut connection = connect(&redis).await;
        // The 18 bytes: everything invalidated as of the end of time.
        let huge = Announcement { node: 1, at_ms: u64::MAX, what: Invalidated::Everything }.encode();
        assert_eq!(huge.len(), 18);
        publish(&mut connection, &huge).await;
        let marker = Announcement { node: 1, at_ms: u64::MAX / 2, what: Invalidated::Markers(vec![[0; 32]]) };
        publish(&mut connection, &marker.encode()).await;
        // And the same in Redis, as markers a new node reads.
        set(&mut connection, "mcp-edge:m:everything", u64::MAX.to_string().as_bytes()).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(x_cache(&read(&b.mcp(), "demo://docs/1", None).await), "HIT", "secret: {secret:?}");
        assert_eq!(shared_count(&b, "announcement", "refused").await, 2.0, "secret: {secret:?}");
        assert_eq!(x_cache(&read(&b.mcp(), "demo://docs/2", None).await), "MISS");
        assert_eq!(x_cache(&read(&b.mcp(), "demo://docs/2", None).await), "HIT", "caching is on");
        let c = node_with(&upstream, &redis.url(), secret, "").await;
        wait_written(&b, 1).await;
        assert_eq!(x_cache(&read(&c.mcp(), "demo://docs/2", None).await), "HIT", "the future marker is ignored");
        // A purge still works after.
        purge(&a, json!({"route": "docs", "uri": "demo://docs/1"})).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(x_cache(&read(&b.mcp(), "demo://docs/1", None).await), "MISS");
    }
}

#[tokio::test]
async fn a_missing_or_short_secret_file_is_refused_by_check_and_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short.key");
    std::fs::write(&short, "only 20 bytes long!!\n").unwrap();
    let cases = [(dir.path().join("missing.key"), "cannot read"), (short, "must be at least 32")];
    for (secret_file, reason) in cases {
        let config = dir.path().join("mcp-edge.toml");
        let text = format!(
            "[cache.shared]\nurl = \"redis://127.0.0.1:1\"\nsecret_file = {secret_file:?}\n[server]\nlisten = [\"127.0.0.1:{}\"]\n[admin]\nlisten = \"\"\n\n[[route]]\npath = \"/mcp\"\nupstreams = [\"http://127.0.0.1:1/mcp\"]\n",
            free_port()
        );
        std::fs::write(&config, text).unwrap();
        let out = Command::new(bin()).args(["check", "--config"]).arg(&config).output().unwrap();
        let named = format!("{}:3: cache.shared.secret_file {}: ", config.display(), secret_file.display());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(&named) && stderr.contains(reason), "{stderr}");
        let mut run = Process::spawn("mcp-edge", Command::new(bin()).args(["run", "--config"]).arg(&config));
        assert_eq!(run.wait_exit(Duration::from_secs(10)), Some(1));
        assert!(run.log().contains(&named) && run.log().contains(reason), "{}", run.log());
    }
}

#[test]
fn check_warns_of_a_shared_tier_without_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mcp-edge.toml");
    let routes = "[[route]]\npath = \"/mcp\"\nupstreams = [\"http://127.0.0.1:1/mcp\"]\n";
    let notes = |shared: &str| {
        std::fs::write(&config, format!("[cache.shared]\nurl = \"redis://127.0.0.1:1\"\n{shared}\n{routes}")).unwrap();
        let out = Command::new(bin()).args(["check", "--config"]).arg(&config).output().unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert!(notes("").contains("warning: cache.shared.secret_file is not set"));
    std::fs::write(dir.path().join("shared.key"), SECRET).unwrap();
    let with_secret = notes(&format!("secret_file = {:?}", dir.path().join("shared.key")));
    assert!(!with_secret.contains("secret_file"), "{with_secret}");
}

/// The most memory (`VmHWM`, peak resident) `pid` has held, in bytes.
fn peak_resident(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

#[tokio::test]
async fn a_value_grown_huge_in_redis_is_never_read_into_a_node() {
    let redis = Redis::start().await;
    let upstream = demo_upstream("u", &[]).await;
    let a = node_with(&upstream, &redis.url(), None, "").await;
    read(&a.mcp(), "demo://docs/1", None).await;
    wait_written(&a, 1).await;
    // Whoever can write to Redis grows the entry and a marker every lookup reads to 64 MiB
    // (max_entry_size is 1 MiB).
    let entry = entry_names(&redis).pop().expect("an entry");
    let huge = (64 << 20).to_string();
    redis.cli(&["SETRANGE", &entry, &huge, "x"]);
    redis.cli(&["SETRANGE", "mcp-edge:m:everything", &huge, "x"]);
    let b = node_with(&upstream, &redis.url(), None, "").await;
    let before = peak_resident(b.process.pid());
    for _ in 0..20 {
        let reply = read(&b.mcp(), "demo://docs/1", None).await;
        assert_eq!((reply.status, x_cache(&reply)), (200, "MISS"), "{reply:?}");
        // Answered by the upstream, not stored locally by mistake: a later read looks again.
        purge(&b, json!({"route": "docs", "uri": "demo://docs/1"})).await;
    }
    let grown = peak_resident(b.process.pid()).saturating_sub(before);
    assert!(grown < 32 << 20, "B read the 64 MiB values: its peak grew by {grown} bytes");
    assert_eq!(readiness(&b).await.1["shared_tier"]["state"], "up", "{}", b.process.log());
}
