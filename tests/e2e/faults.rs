//! Upstream and disk faults: an upstream killed mid-answer, answering garbage, or flapping
//! under load; the disk tier failing at run time. Nothing hangs, errors are clear, and no
//! request that could safely be retried is lost.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::*;

#[tokio::test]
async fn an_upstream_killed_mid_answer_ends_it_and_the_next_request_fails_over() {
    let mut replicas = [Some(demo_upstream("first", &[]).await), Some(demo_upstream("second", &[]).await)];
    let proxy = proxy(&route(&[replicas[0].as_ref().unwrap(), replicas[1].as_ref().unwrap()], "")).await;
    let mcp = proxy.mcp();
    let session = mcp.initialize().await;
    let whoami = json!({"name": "whoami", "arguments": {}});
    let owner = mcp.in_session(&session, 1, "tools/call", whoami).await.tool_text();
    // A handshake-era call whose SSE answer pauses after its first event; its upstream dies.
    let body = json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call",
        "params": {"name": "slow_events", "arguments": {"delay_ms": 3000}}});
    let headers = [("mcp-session-id", session.as_str()), ("mcp-protocol-version", "2025-11-25")];
    let response = mcp.post_streaming(body.to_string(), &headers).await;
    assert_eq!(response.status(), 200);
    let started = Instant::now();
    let reading = tokio::spawn(async move { response.bytes().await.map(|b| String::from_utf8_lossy(&b).into_owned()) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    replicas[if owner == "first" { 0 } else { 1 }] = None;
    let received = tokio::time::timeout(Duration::from_secs(10), reading).await.expect("the answer ends, never hangs");
    assert!(started.elapsed() < Duration::from_secs(3), "ended after {:?}", started.elapsed());
    if let Ok(Ok(text)) = received {
        assert!(!text.contains("\"result\""), "no result can have come: {text}");
    }
    // The session's upstream is gone: 404 tells the client to start over.
    let gone = mcp.in_session(&session, 6, "tools/list", json!({})).await;
    assert_eq!(gone.status, 404, "{gone:?}");
    // Stateless requests carry on on the replica that is left.
    for n in 0..4 {
        let reply = read(&mcp, &format!("demo://docs/{n}"), None).await;
        assert_eq!(reply.status, 200, "{reply:?}");
    }
}

#[tokio::test]
async fn garbage_from_an_upstream_is_a_clear_502() {
    let port = raw_upstream(|_| b"SSH-2.0-OpenSSH_9.2\r\n\x00\xff\xfe garbage\r\n\r\n".to_vec()).await;
    let proxy =
        proxy(&format!("[[route]]\nname = \"junk\"\npath = \"/mcp\"\nupstreams = [\"http://127.0.0.1:{port}/mcp\"]\n"))
            .await;
    let started = Instant::now();
    let reply = proxy.mcp().stateless("tools/list", json!({}), &[]).await;
    // 502, or 503 once its health check (which gets the same garbage) has found it unhealthy.
    assert!(matches!(reply.status, 502 | 503), "{reply:?}");
    assert!(reply.json()["error"]["message"].as_str().unwrap().contains("route junk"), "{}", reply.body);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_flapping_replica_loses_no_read() {
    let steady = demo_upstream("steady", &["--ttl-ms", "0"]).await;
    let flapping_port = free_port();
    let mut flapping = Some(demo_upstream_on(flapping_port, "flapping", &["--ttl-ms", "0"]).await);
    let proxy = proxy(&route(&[&steady, flapping.as_ref().unwrap()], "[route.health]\ninterval = \"200ms\"")).await;
    let mcp = proxy.mcp();
    let load: Vec<_> = (0..4)
        .map(|worker| {
            let mcp = mcp.clone();
            tokio::spawn(async move {
                let mut failures = Vec::new();
                let deadline = Instant::now() + Duration::from_secs(4);
                let mut n = 0;
                while Instant::now() < deadline {
                    let reply = read(&mcp, &format!("demo://docs/{}", worker * 1000 + n), None).await;
                    if reply.status != 200 {
                        failures.push(format!("{} {}", reply.status, reply.body));
                    }
                    n += 1;
                }
                (n, failures)
            })
        })
        .collect();
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        drop(flapping.take()); // killed
        tokio::time::sleep(Duration::from_millis(400)).await;
        flapping = Some(demo_upstream_on(flapping_port, "flapping", &["--ttl-ms", "0"]).await);
    }
    drop(flapping);
    let mut total = 0;
    for worker in load {
        let (n, failures) = worker.await.unwrap();
        total += n;
        assert!(failures.is_empty(), "reads lost while a replica flapped: {failures:?}");
    }
    assert!(total > 100, "the load ran: {total} reads");
}

#[tokio::test]
async fn a_disk_tier_that_fails_at_run_time_leaves_the_memory_tier_serving() {
    let upstream = demo_upstream("a", &[]).await;
    let proxy = proxy_full(&route(&[&upstream], ""), "", |dir| {
        format!("[cache]\ndisk_path = {:?}\n", dir.join("cache").display().to_string())
    })
    .await;
    let mcp = proxy.mcp();
    assert_eq!(read(&mcp, "demo://docs/1", None).await.header("x-cache"), Some("MISS"));
    // From now on every write of the process past its first byte fails (EFBIG), as on a
    // full or failing disk.
    let status = std::process::Command::new("prlimit")
        .args(["--pid", &proxy.process.pid().to_string(), "--fsize=1"])
        .status()
        .unwrap();
    assert!(status.success());
    for n in 2..40 {
        let reply = read(&mcp, &format!("demo://docs/{n}"), None).await;
        assert_eq!(reply.status, 200, "{reply:?}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for n in [1, 2, 39] {
        let reply = read(&mcp, &format!("demo://docs/{n}"), None).await;
        assert_eq!((reply.status, reply.header("x-cache")), (200, Some("HIT")), "the memory tier serves on");
    }
    assert!(reqwest::get(proxy.admin_url("/healthz")).await.unwrap().status().is_success(), "still up");
    let errors = r#"mcp_cache_operations_total{operation="write",result="error",tier="disk"}"#;
    assert!(metric(&proxy, errors).await > 0.0, "the failed writes are counted:\n{}", proxy.process.log());
}

/// CPU time (user + system, in clock ticks) a process has used.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[tokio::test]
async fn an_admin_listener_out_of_descriptors_waits_instead_of_spinning() {
    let upstream = demo_upstream("a", &[]).await;
    let proxy = proxy(&route(&[&upstream], "")).await;
    let pid = proxy.process.pid();
    let open = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count();
    let limit = format!("--nofile={}", open + 2);
    assert!(
        std::process::Command::new("prlimit").args(["--pid", &pid.to_string(), &limit]).status().unwrap().success()
    );
    // Connections the kernel takes into the admin listener's backlog, which it cannot accept.
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(tokio::net::TcpStream::connect(("127.0.0.1", proxy.admin_port)).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = cpu_ticks(pid);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let used = cpu_ticks(pid) - before;
    assert!(used < 30, "{used} ticks of 100 in one second while accept() fails");
    drop(held);
}

#[tokio::test]
async fn a_reload_stuck_reading_a_file_does_not_stop_health_checks() {
    let mut upstream = Some(demo_upstream("a", &[]).await);
    let health = "[route.health]\ninterval = \"200ms\"\ntimeout = \"200ms\"\n";
    let proxy = proxy(&route(&[upstream.as_ref().unwrap()], health)).await;
    let ready = || async { reqwest::get(proxy.admin_url("/readyz")).await.unwrap().status().as_u16() };
    assert_eq!(ready().await, 200);
    // A reload whose CA file is a FIFO nobody writes: reading it blocks until somebody does.
    let fifo = proxy.config_path.with_file_name("ca.fifo");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let stuck = format!(
        "{}[[route]]\nname = \"stuck\"\npath = \"/stuck\"\nupstreams = [\"https://127.0.0.1:1/mcp\"]\nca_file = {:?}\n",
        route(&[upstream.as_ref().unwrap()], health),
        fifo.display().to_string()
    );
    proxy.reload_with(&stuck);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The upstream dies: health checks, which run beside reloads, must notice.
    drop(upstream.take());
    let deadline = Instant::now() + Duration::from_secs(3);
    while ready().await != 503 {
        assert!(Instant::now() < deadline, "health checks stopped while a reload was stuck");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Unblock the reload (an empty CA file: refused, the old configuration keeps serving).
    std::fs::write(&fifo, b"").unwrap();
}
