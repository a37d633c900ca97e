//! The cache cannot be poisoned: hostile requests that the proxy might read one way and the
//! upstream another are never keyed on a guess; no answer reaches an identity it was not
//! fetched for; one client cannot stall others; the admin API does not answer web pages.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::harness::*;

const STATELESS: &str = "MCP-Protocol-Version: 2026-07-28";

/// A stateless-era request body written by hand (so it may say what serde_json would not).
fn raw_body(method: &str, params: &str) -> String {
    format!(r#"{{"jsonrpc":"2.0","id":1,"method":"{method}","params":{params}}}"#)
}

fn uris(result: &Value) -> Vec<String> {
    result["resources"].as_array().unwrap().iter().map(|r| r["uri"].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn list_pages_cannot_be_poisoned_by_params_the_proxy_cannot_read_exactly() {
    let upstream = demo_upstream("a", &[]).await;
    let proxy = proxy(&route(&[&upstream], "")).await;
    let mcp = proxy.mcp();
    let headers = [("mcp-protocol-version", "2026-07-28"), ("mcp-method", "resources/list")];
    for hostile in
        [r#"{"cursor":"p2","cursor":"p2"}"#, r#"{"cursor":"p2","name":5}"#, r#"{"cursor":"p2","extra":{"a":1,"a":2}}"#]
    {
        let reply = mcp.post(raw_body("resources/list", hostile), &headers).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        assert!(uris(&reply.json()["result"]).contains(&"demo://docs/6".to_string()), "the upstream read page 2");
        assert_eq!(x_cache(&reply), "BYPASS", "{hostile} must not be keyed on a guess");
    }
    for expected in ["MISS", "HIT"] {
        let first = mcp.stateless("resources/list", json!({}), &[]).await;
        assert_eq!(x_cache(&first), expected);
        let listed = uris(&first.json()["result"]);
        assert!(
            listed.contains(&"demo://docs/1".to_string()) && !listed.contains(&"demo://docs/6".to_string()),
            "page 1: {listed:?}"
        );
    }
    let second = mcp.stateless("resources/list", json!({"cursor": "p2"}), &[]).await;
    assert_eq!((x_cache(&second), second.json()["result"]["nextCursor"].as_str()), ("MISS", Some("p3")));
}

#[tokio::test]
async fn an_anonymous_public_answer_never_reaches_a_signed_in_caller() {
    let upstream = demo_upstream("a", &[]).await;
    let proxy = proxy(&route(&[&upstream], "")).await;
    let mcp = proxy.mcp();
    let text = |reply: &Reply| reply.json()["result"]["contents"][0]["text"].as_str().unwrap().to_string();
    let alice = read(&mcp, "demo://account", Some("Bearer alice")).await;
    assert_eq!((x_cache(&alice), text(&alice).as_str()), ("MISS", "the account of Bearer alice"));
    let anonymous = read(&mcp, "demo://account", None).await;
    assert_eq!(
        (text(&anonymous).as_str(), anonymous.json()["result"]["cacheScope"].as_str()),
        ("please log in", Some("public"))
    );
    assert_eq!(x_cache(&read(&mcp, "demo://account", None).await), "HIT", "public for anonymous callers");
    let alice = read(&mcp, "demo://account", Some("Bearer alice")).await;
    assert_eq!((x_cache(&alice), text(&alice).as_str()), ("HIT", "the account of Bearer alice"));
    let bob = read(&mcp, "demo://account", Some("Bearer bob")).await;
    assert_eq!((x_cache(&bob), text(&bob).as_str()), ("MISS", "the account of Bearer bob"));
}

#[tokio::test]
async fn an_empty_credential_is_no_identity() {
    let upstream = demo_upstream("a", &["--scope", "private"]).await;
    let proxy = proxy(&route(&[&upstream], "")).await;
    let mcp = proxy.mcp();
    for blank in ["", "   "] {
        for _ in 0..2 {
            let reply = read(&mcp, "demo://me", Some(blank)).await;
            assert_eq!(reply.status, 200);
            assert_ne!(x_cache(&reply), "HIT", "a blank credential shares nothing");
        }
    }
    assert_eq!(upstream_reads(&upstream).await, 4);
    // Handshake era: two sessions with an empty credential keep their private answers apart.
    let (first, second) = (mcp.initialize().await, mcp.initialize().await);
    let legacy_read = |session: String| {
        let mcp = mcp.clone();
        async move {
            let body = json!({"jsonrpc": "2.0", "id": 3, "method": "resources/read", "params": {"uri": "demo://me"}});
            let headers =
                [("mcp-session-id", session.as_str()), ("mcp-protocol-version", "2025-11-25"), ("authorization", "")];
            mcp.post(body.to_string(), &headers).await
        }
    };
    assert_eq!(x_cache(&legacy_read(first.clone()).await), "MISS");
    assert_eq!(x_cache(&legacy_read(first).await), "HIT", "cached for its own session");
    assert_eq!(x_cache(&legacy_read(second).await), "MISS", "not for another session");
}

#[tokio::test]
async fn big_integer_arguments_are_different_requests() {
    let upstream = demo_upstream("a", &[]).await;
    let proxy = proxy(&route(&[&upstream], "[route.policy]\ncache_tools = [\"echo\"]")).await;
    let mcp = proxy.mcp();
    let call = |n: &'static str| {
        let mcp = mcp.clone();
        async move {
            let body = raw_body("tools/call", &format!(r#"{{"name":"echo","arguments":{{"message":"m","n":{n}}}}}"#));
            let headers = [
                ("mcp-protocol-version", "2026-07-28"),
                ("mcp-method", "tools/call"),
                ("mcp-name", "echo"),
                ("authorization", "Bearer t"),
            ];
            x_cache(&mcp.post(body, &headers).await).to_string()
        }
    };
    assert_eq!(call("9007199254740993").await, "MISS");
    assert_eq!(call("9007199254740992").await, "MISS", "2^53 and 2^53 + 1 are two requests");
    assert_eq!(call("9007199254740993").await, "HIT");
}

#[tokio::test]
async fn identity_headers_sent_twice_are_refused() {
    let upstream = demo_upstream("a", &[]).await;
    let proxy = proxy(&route(&[&upstream], "")).await;
    let body = raw_body("resources/read", r#"{"uri":"demo://me"}"#);
    let mirrored = [STATELESS, "Mcp-Method: resources/read", "Mcp-Name: demo://me"];
    for twice in
        [["Authorization: Bearer a", "Authorization: Bearer b"], ["Mcp-Session-Id: x.y", "Mcp-Session-Id: x.z"]]
    {
        let headers: Vec<&str> = mirrored.iter().chain(twice.iter()).copied().collect();
        let reply = raw_exchange(&proxy, &raw_post(&body, &headers)).await;
        assert_eq!((reply.status, reply.body["error"]["code"].as_i64()), (400, Some(-32600)), "{twice:?}");
    }
}

#[tokio::test]
async fn hits_refuse_what_the_proxy_service_refuses() {
    let upstream = demo_upstream("a", &[]).await;
    let proxy = proxy(&route(&[&upstream], "")).await;
    assert_eq!(x_cache(&read(&proxy.mcp(), "demo://docs/1", None).await), "MISS");
    let (body, _) = stateless_body("resources/read", json!({"uri": "demo://docs/1"}), json!(1));
    let mirrored = [STATELESS, "Mcp-Method: resources/read", "Mcp-Name: demo://docs/1"];
    let good = raw_exchange(&proxy, &raw_post(&body, &mirrored)).await;
    assert_eq!((good.status, good.header("x-cache")), (200, Some("HIT")));
    let with = |extra: &str| {
        let mut headers = mirrored.to_vec();
        headers.push(extra);
        raw_post(&body, &headers)
    };
    let plus_length = String::from_utf8(with(&format!("Content-Length: +{}", body.len()))).unwrap();
    let quoted_query =
        String::from_utf8(raw_post(&body, &mirrored)).unwrap().replacen("POST /mcp ", "POST /mcp?q=\"x\" ", 1);
    for (request, why) in [
        (plus_length.into_bytes(), "a signed Content-Length"),
        (with("Host: user@localhost"), "user info in Host"),
        (quoted_query.into_bytes(), "a quote in the query"),
        (
            String::from_utf8(raw_post(&body, &mirrored))
                .unwrap()
                .replacen("POST /mcp ", "POST /mcp/../mcp ", 1)
                .into_bytes(),
            "dot segments",
        ),
    ] {
        let reply = raw_exchange_or_closed(&proxy, &request).await;
        assert!(matches!(reply, Some(400) | None), "{why}: {reply:?}, never a hit");
    }
}

/// The status of the answer to `request`, `None` if the proxy closed without one.
async fn raw_exchange_or_closed(proxy: &Proxy, request: &[u8]) -> Option<u16> {
    use tokio::io::AsyncReadExt;
    let mut stream = connect(proxy).await;
    stream.write_all(request).await.unwrap();
    let mut received = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut received)).await;
    let text = String::from_utf8_lossy(&received);
    text.strip_prefix("HTTP/1.1 ").and_then(|rest| rest.get(..3)).map(|code| code.parse().unwrap())
}

#[tokio::test]
async fn dns_rebinding_is_refused_and_same_origin_browsers_are_served() {
    let upstream = demo_upstream("a", &[]).await;
    let proxy = proxy(&route(&[&upstream], "")).await;
    let own = format!("localhost:{}", proxy.port);
    let (body, _) = stateless_body("resources/read", json!({"uri": "demo://docs/1"}), json!(1));
    let mirrored = [STATELESS, "Mcp-Method: resources/read", "Mcp-Name: demo://docs/1"];
    let host = |host: String, origin: Option<String>| {
        let mut headers: Vec<String> = mirrored.iter().map(|h| h.to_string()).collect();
        headers.push(format!("Host: {host}"));
        headers.extend(origin.map(|o| format!("Origin: {o}")));
        headers
    };
    // A miss, then a hit: both paths refuse alike.
    for expected in ["MISS", "HIT"] {
        let headers = host(own.clone(), Some(format!("http://{own}")));
        let reply =
            raw_exchange(&proxy, &raw_post(&body, &headers.iter().map(String::as_str).collect::<Vec<_>>())).await;
        assert_eq!((reply.status, reply.header("x-cache")), (200, Some(expected)), "same origin is served");
        for (headers, refused) in [
            (host("evil.example.com".into(), None), "evil.example.com"),
            (host(own.clone(), Some("http://evil.example.com".into())), "http://evil.example.com"),
            (host(own.clone(), Some(format!("http://localhost:{}", proxy.port + 1))), "localhost"),
        ] {
            let reply =
                raw_exchange(&proxy, &raw_post(&body, &headers.iter().map(String::as_str).collect::<Vec<_>>())).await;
            assert_eq!(reply.status, 403, "{headers:?}");
            assert!(reply.body["error"]["message"].as_str().unwrap().contains(refused), "{}", reply.body);
        }
    }
    // Configured names and origins.
    let open = proxy_with(
        &route(&[&upstream], ""),
        "allowed_hosts = [\"mcp.example.com\"]\nallowed_origins = [\"https://app.example\"]",
    )
    .await;
    let headers = [
        "Host: mcp.example.com",
        "Origin: https://app.example",
        STATELESS,
        "Mcp-Method: resources/read",
        "Mcp-Name: demo://docs/1",
    ];
    assert_eq!(raw_exchange(&open, &raw_post(&body, &headers)).await.status, 200);
    let headers = ["Host: localhost", STATELESS, "Mcp-Method: resources/read", "Mcp-Name: demo://docs/1"];
    assert_eq!(raw_exchange(&open, &raw_post(&body, &headers)).await.status, 403, "only the listed names");
}

#[tokio::test]
async fn streamed_stateless_bodies_are_checked_against_their_headers() {
    let upstream = demo_upstream("a", &[]).await;
    let proxy = proxy(&route(&[&upstream], "")).await;
    let call =
        raw_body("tools/call", &format!(r#"{{"name":"echo","arguments":{{"message":"{}"}}}}"#, "x".repeat(70_000)));
    let chunked = |body: &str| format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len());
    for (framing, body) in [("Transfer-Encoding: chunked", chunked(&call)), ("X-Large: yes", call.clone())] {
        let lying = [STATELESS, "Mcp-Method: tools/list", framing];
        let reply = raw_exchange(&proxy, &raw_post(&body, &lying)).await;
        assert_eq!(
            (reply.status, reply.body["error"]["code"].as_i64()),
            (400, Some(-32020)),
            "{framing}: {}",
            reply.body
        );
        let honest = [STATELESS, "Mcp-Method: tools/call", "Mcp-Name: echo", framing];
        let reply = raw_exchange(&proxy, &raw_post(&body, &honest)).await;
        assert_eq!(reply.status, 200, "{framing}: {}", reply.body);
        assert_eq!(reply.body["result"]["content"][0]["text"].as_str().map(str::len), Some(70_000));
    }
}

#[tokio::test]
async fn a_client_that_stops_reading_does_not_stall_the_others() {
    let upstream = demo_upstream("a", &[]).await;
    let proxy = proxy(&route(&[&upstream], "")).await;
    // The leader asks for a 6 MiB answer and never reads it, on a tiny receive window.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut leader = socket.connect(([127, 0, 0, 1], proxy.port).into()).await.unwrap();
    let (body, _) = stateless_body("resources/read", json!({"uri": "demo://large/6000"}), json!(1));
    let headers = [STATELESS, "Mcp-Method: resources/read", "Mcp-Name: demo://large/6000"];
    leader.write_all(&raw_post(&body, &headers)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let other = read(&proxy.mcp(), "demo://large/6000", None).await;
    assert_eq!(other.status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "waited {:?} on a leader whose client stopped reading",
        started.elapsed()
    );
    drop(leader);
}

#[tokio::test]
async fn a_client_byte_during_a_miss_is_the_clients_doing() {
    let upstream = demo_upstream("a", &[]).await;
    let proxy = proxy(&route(&[&upstream], "")).await;
    let (body, _) = stateless_body("resources/read", json!({"uri": "demo://slow"}), json!(1));
    let headers = [STATELESS, "Mcp-Method: resources/read", "Mcp-Name: demo://slow"];
    let mut stream = connect(&proxy).await;
    stream.write_all(&raw_post(&body, &headers)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    stream.write_all(b"x").await.unwrap();
    use tokio::io::AsyncReadExt;
    let mut received = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut received)).await;
    let text = String::from_utf8_lossy(&received);
    for blamed_on_the_upstream in ["HTTP/1.1 502", "HTTP/1.1 503", "HTTP/1.1 504", "HTTP/1.1 404", "Session not found"]
    {
        assert!(!text.contains(blamed_on_the_upstream), "{text}");
    }
    assert!(
        text.starts_with("HTTP/1.1 200") || text.starts_with("HTTP/1.1 400"),
        "the answer or the client's error: {text}"
    );
}

/// In the stateless era `_meta` carries the client's capabilities and information, and servers
/// answer by them: a public entry fetched with one `_meta` is not served for another, except
/// for members that never change an answer (progress token, trace context).
#[tokio::test]
async fn an_entry_is_served_only_for_the_meta_it_was_fetched_with() {
    let upstream = demo_upstream("a", &["--scope", "public"]).await;
    let proxy = proxy(&route(&[&upstream], "")).await;
    let mcp = proxy.mcp();
    let ask = |meta: Value| {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": meta}});
        let headers = [("mcp-protocol-version", "2026-07-28"), ("mcp-method", "tools/list")];
        let mcp = &mcp;
        async move { x_cache(&mcp.post(body.to_string(), &headers).await).to_string() }
    };
    let version = "io.modelcontextprotocol/protocolVersion";
    let capabilities = "io.modelcontextprotocol/clientCapabilities";
    let plain = json!({version: "2026-07-28", capabilities: {}});
    assert_eq!(ask(plain.clone()).await, "MISS");
    assert_eq!(ask(plain.clone()).await, "HIT");
    for other in [
        json!({version: "2026-07-28", capabilities: {"sampling": {}, "elicitation": {}}}),
        json!({version: "2026-07-28", capabilities: {}, "com.example/tenant": "b"}),
        json!({version: "2026-07-28", capabilities: {}, "io.modelcontextprotocol/clientInfo": {"name": "x", "version": "1"}}),
        json!({version: "2026-07-28"}),
    ] {
        assert_eq!(ask(other.clone()).await, "MISS", "{other}");
        assert_eq!(ask(other.clone()).await, "HIT", "{other}: its own entry");
    }
    let mut unchanged = plain.clone();
    unchanged["progressToken"] = json!("p-1");
    unchanged["traceparent"] = json!("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    assert_eq!(ask(unchanged).await, "HIT", "a progress token and trace context change no answer");
}

/// A proxy drops the headers `Connection` names. Naming the identity header made the upstream
/// answer anonymously a request keyed as signed in: with a public answer, signed-in callers
/// were then served the anonymous one ("please log in"). A request whose `Connection` names a
/// header that decides who asks or what is asked is refused, hits and misses alike.
#[tokio::test]
async fn connection_cannot_strip_what_a_request_is_keyed_on() {
    let upstream = demo_upstream("a", &["--scope", "public", "--echo-caller"]).await;
    let proxy = proxy(&route(&[&upstream], "")).await;
    let mcp = proxy.mcp();
    let me = json!({"uri": "demo://me"});
    for named in
        ["authorization", "Authorization, keep-alive", "mcp-method", "mcp-name", "mcp-protocol-version", "host"]
    {
        let reply = mcp
            .stateless("resources/read", me.clone(), &[("authorization", "Bearer evil"), ("connection", named)])
            .await;
        assert_eq!(reply.status, 400, "Connection: {named}: {reply:?}");
        assert!(reply.body.contains("Connection names"), "{}", reply.body);
    }
    let alice = mcp.stateless("resources/read", me.clone(), &[("authorization", "Bearer alice")]).await;
    assert_eq!(alice.json()["result"]["contents"][0]["text"], "you are Bearer alice", "{alice:?}");
    // Once cached, a hit refuses it too.
    let hit =
        mcp.stateless("resources/read", me, &[("authorization", "Bearer bob"), ("connection", "authorization")]).await;
    assert_eq!(hit.status, 400, "{hit:?}");
    // Hop-by-hop names stay fine.
    let fine =
        mcp.stateless("resources/read", json!({"uri": "demo://docs/1"}), &[("connection", "keep-alive, te")]).await;
    assert_eq!(fine.status, 200, "{fine:?}");
}

/// `x-mcp-edge-prefetch` marks a prefetch only on the prefetcher's own in-process connections:
/// a client that sends it is served as any client, and nothing of its request is taken for a
/// prefetch (whose answer would go to the prefetcher, and whose entry would count as used).
#[tokio::test]
async fn a_client_cannot_pass_for_the_prefetcher() {
    let upstream = demo_upstream("a", &["--scope", "private"]).await;
    let proxy = proxy(&route(&[&upstream], "[route.prefetch]\nenabled = true\n")).await;
    let mcp = proxy.mcp();
    let credential = ("authorization", "Bearer alice");
    for kind in ["sequence", "page", "refresh", "warm", "session_start"] {
        let uri = format!("demo://docs/{}", kind.len());
        let forged =
            mcp.stateless("resources/read", json!({"uri": uri}), &[credential, ("x-mcp-edge-prefetch", kind)]).await;
        assert_eq!(forged.status, 200, "{kind}: {forged:?}");
        assert!(forged.json()["result"]["contents"][0]["text"].is_string(), "{kind}: the client's own answer");
        let again = mcp.stateless("resources/read", json!({"uri": uri}), &[credential]).await;
        assert_eq!(x_cache(&again), "HIT", "{kind}");
    }
    for outcome in ["issued", "used"] {
        for kind in ["sequence", "page", "refresh", "warm", "session_start"] {
            let sample = format!("mcp_prefetch_total{{kind=\"{kind}\",outcome=\"{outcome}\",route=\"/mcp\"}}");
            assert_eq!(metric(&proxy, &sample).await, 0.0, "{sample}");
        }
    }
}

#[tokio::test]
async fn the_admin_api_does_not_answer_web_pages() {
    let upstream = demo_upstream("a", &[]).await;
    let proxy = proxy(&route(&[&upstream], "")).await;
    let client = reqwest::Client::new();
    let purge = |content_type: &'static str, origin: Option<&'static str>| {
        let mut request = client.post(proxy.admin_url("/purge")).header("content-type", content_type);
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        async move { request.body(r#"{"route":"/mcp","all":true}"#).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(purge("text/plain", Some("https://evil.example")).await, 403);
    assert_eq!(purge("application/json", Some("http://127.0.0.1")).await, 403, "no Origin is the admin's own");
    assert_eq!(purge("text/plain", None).await, 415);
    assert_eq!(purge("application/json", None).await, 200);
}

#[tokio::test]
async fn the_admin_api_refuses_hosts_it_does_not_serve() {
    // DNS rebinding: a page on the operator's machine points its own name at 127.0.0.1 and
    // reads the admin listener as same-origin (no Origin header on a same-origin GET).
    let upstream = demo_upstream("a", &[]).await;
    let proxy = proxy(&route(&[&upstream], "")).await;
    let client = reqwest::Client::new();
    let get = |path: &'static str, host: &'static str| {
        let request = client.get(proxy.admin_url(path)).header("host", host);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    for path in ["/stats", "/metrics", "/", "/readyz"] {
        assert_eq!(get(path, "attacker.example").await, 403, "{path} for a foreign Host");
        assert_eq!(get(path, "attacker.example:9090").await, 403, "{path} for a foreign Host with a port");
        assert_eq!(get(path, "localhost:9090").await, 200, "{path} for the listener's own name");
        assert_eq!(get(path, "127.0.0.1").await, 200, "{path} for the listener's address");
    }
    assert_eq!(get("/healthz", "10.1.2.3:9090").await, 200, "liveness probes may name any address");
    let purge = client
        .post(proxy.admin_url("/purge"))
        .header("host", "attacker.example")
        .header("content-type", "application/json")
        .body(r#"{"route":"/mcp","all":true}"#);
    assert_eq!(purge.send().await.unwrap().status(), 403);

    // What the main listener refuses: two Hosts, none on HTTP/1.1; an absolute-form target
    // names the host instead of `Host` (RFC 9112 §3.2.2).
    for (head, expected) in [
        ("GET /stats HTTP/1.1\r\nHost: localhost\r\nHost: attacker.example\r\n", " 400 "),
        ("GET /stats HTTP/1.1\r\n", " 400 "),
        ("GET http://attacker.example/stats HTTP/1.1\r\nHost: localhost\r\n", " 403 "),
        ("GET http://localhost/stats HTTP/1.1\r\nHost: localhost\r\n", " 200 "),
    ] {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", proxy.admin_port)).await.unwrap();
        stream.write_all(format!("{head}Connection: close\r\n\r\n").as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut answer).await.unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1") && answer[8..13].contains(expected.trim()), "{head:?}: {answer}");
    }

    // Names the operator lists are served, and only those.
    let listed = proxy_full(&route(&[&upstream], ""), "", |_| "allowed_hosts = [\"admin.internal\"]\n".into()).await;
    let get = |host: &'static str| {
        let request = client.get(listed.admin_url("/stats")).header("host", host);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(get("admin.internal:9090").await, 200);
    assert_eq!(get("localhost").await, 403);
}

#[tokio::test]
async fn an_admin_token_guards_everything_but_healthz_and_the_dashboard_page() {
    let upstream = demo_upstream("a", &[]).await;
    // The sections follow `[admin]` in the harness's file: this line lands in it.
    let proxy = proxy_full(&route(&[&upstream], ""), "", |dir| {
        std::fs::write(dir.join("admin.token"), "s3cret-token-0123456789\n").unwrap();
        format!("token_file = {:?}\n", dir.join("admin.token").display().to_string())
    })
    .await;
    let client = reqwest::Client::new();
    let get = |path: &str, token: Option<&str>| {
        let mut request = client.get(proxy.admin_url(path));
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(get("/healthz", None).await, 200);
    assert_eq!(get("/", None).await, 200, "the dashboard page holds no data; it asks for the token");
    assert_eq!(get("/stats", None).await, 401);
    assert_eq!(get("/stats", Some("s3cret-token-0123456789")).await, 200);
    assert_eq!(get("/metrics", None).await, 401);
    assert_eq!(get("/readyz", Some("wrong-token-0123456789")).await, 401);
    assert_eq!(get("/metrics", Some("s3cret-token-0123456789")).await, 200);
}

#[tokio::test]
async fn malformed_heads_get_a_json_rpc_400() {
    let upstream = demo_upstream("a", &[]).await;
    let proxy = proxy(&route(&[&upstream], "")).await;
    let refused = r#"mcp_requests_total{cache="BYPASS",method="-",route="-",status="400"}"#;
    let heads = [
        "POST /mcp HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
        "GET /mcp?q=\"x\" HTTP/1.1\r\nHost: localhost\r\n\r\n",
        "POST /mcp HTTP/1.1\r\nHost: localhost\r\nBad Header: x\r\n\r\n",
        // What Pingora's own reader refuses (with a bare 400 no hook sees): an absolute target
        // naming another authority than Host, userinfo, a body framing that ends in no chunk.
        "POST http://localhost:1/mcp HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\n{}",
        "GET http://elsewhere/mcp HTTP/1.1\r\nHost: localhost\r\n\r\n",
        "GET /mcp HTTP/1.1\r\nHost: user@localhost\r\n\r\n",
        "POST /mcp HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
        "POST /mcp HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ];
    let refused_before = metric(&proxy, refused).await;
    for head in heads {
        let reply = raw_exchange(&proxy, head.as_bytes()).await;
        assert_eq!(reply.status, 400, "{head:?}");
        assert_eq!((reply.body["error"]["code"].as_i64(), reply.header("x-cache")), (Some(-32600), Some("BYPASS")));
    }
    assert_eq!(metric(&proxy, refused).await - refused_before, heads.len() as f64, "each refusal is counted");
    let connect = raw_exchange(&proxy, b"CONNECT localhost:443 HTTP/1.1\r\nHost: localhost:443\r\n\r\n").await;
    assert_eq!((connect.status, connect.header("allow")), (405, Some("GET, POST, DELETE, OPTIONS")));
    // HTTP/1.1 requires a Host (RFC 9112 §3.2), also with an absolute target; HTTP/1.0 does not.
    let (body, _) = stateless_body("tools/list", json!({}), json!(1));
    let without_host = |line: &str| {
        format!(
            "{line}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\n\
             Mcp-Protocol-Version: 2026-07-28\r\nMcp-Method: tools/list\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    for line in ["POST /mcp HTTP/1.1", "POST http://localhost/mcp HTTP/1.1"] {
        let reply = raw_exchange(&proxy, without_host(line).as_bytes()).await;
        assert_eq!(reply.status, 400, "{line}");
        assert!(reply.body["error"]["message"].as_str().unwrap().contains("Host"), "{line}: {}", reply.body);
    }
    assert_eq!(raw_exchange(&proxy, without_host("POST /mcp HTTP/1.0").as_bytes()).await.status, 200);
}

#[tokio::test]
async fn a_head_trickling_in_is_cut_off() {
    let upstream = demo_upstream("a", &[]).await;
    let proxy = proxy_with(&route(&[&upstream], ""), "header_timeout = \"1s\"").await;
    let mut stream = connect(&proxy).await;
    let started = Instant::now();
    let mut answer = Vec::new();
    use tokio::io::AsyncReadExt;
    for byte in b"POST /mcp HTTP/1.1\r\nHost: localhost\r\n".iter() {
        if stream.write_all(&[*byte]).await.is_err() {
            break;
        }
        let mut chunk = [0u8; 1024];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(300), stream.read(&mut chunk)).await {
            answer.extend_from_slice(&chunk[..n]);
            break;
        }
    }
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(3), "cut off after {:?}", started.elapsed());
}
