//! TLS termination: HTTP/1.1 and h2 with a certificate made here, the SDK client over https,
//! certificates rotated by SIGHUP while a stream stays open, and clear `check` errors.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use futures_util::StreamExt;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

use crate::harness::*;

/// A CA and a server certificate for 127.0.0.1 / localhost signed by it (ECDSA P-256).
pub struct Pki {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

pub fn pki(name: &str) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, format!("mcp-edge test CA {name}"));
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    Pki { ca_pem: ca.pem(), cert_pem: cert.pem(), key_pem: key.serialize_pem() }
}

fn install(pki: &Pki, dir: &Path) {
    std::fs::write(dir.join("cert.pem"), &pki.cert_pem).unwrap();
    std::fs::write(dir.join("key.pem"), &pki.key_pem).unwrap();
}

fn client_trusting(pki: &Pki, h2: bool) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap();
    let builder = reqwest::Client::builder().tls_built_in_root_certs(false).add_root_certificate(ca);
    let builder = if h2 { builder } else { builder.http1_only() };
    builder.timeout(Duration::from_secs(10)).build().unwrap()
}

async fn tls_proxy(upstream: &Upstream, first: &Pki) -> (Proxy, u16) {
    tls_proxy_with(upstream, first, "").await
}

async fn tls_proxy_with(upstream: &Upstream, first: &Pki, route_extra: &str) -> (Proxy, u16) {
    let tls_port = free_port();
    let proxy = proxy_full(&route(&[upstream], route_extra), "", |dir| {
        install(first, dir);
        format!(
            "[server.tls]\nlisten = [\"127.0.0.1:{tls_port}\"]\ncert = {:?}\nkey = {:?}\n",
            dir.join("cert.pem").display().to_string(),
            dir.join("key.pem").display().to_string()
        )
    })
    .await;
    wait_listening(tls_port, &proxy.process).await;
    (proxy, tls_port)
}

#[tokio::test]
async fn https_with_http1_and_h2() {
    let upstream = demo_upstream("a", &[]).await;
    let first = pki("one");
    let (_proxy, tls_port) = tls_proxy(&upstream, &first).await;
    let url = format!("https://127.0.0.1:{tls_port}/mcp");
    for (h2, version) in [(false, reqwest::Version::HTTP_11), (true, reqwest::Version::HTTP_2)] {
        let mcp = Mcp { client: client_trusting(&first, h2), url: url.clone() };
        let response =
            mcp.client.post(&url).header("content-type", "application/json").body("{}").send().await.unwrap();
        assert_eq!(response.version(), version);
        let reply = read(&mcp, "demo://docs/1", None).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(reply.json()["result"]["contents"][0]["text"], "Document 1, served by a.");
        let seen =
            mcp.stateless("tools/call", serde_json::json!({"name": "request_headers", "arguments": {}}), &[]).await;
        assert!(seen.tool_text().contains("x-forwarded-proto: https\n"), "{}", seen.tool_text());
    }
    // TLS 1.2 as well as 1.3.
    let ca = reqwest::Certificate::from_pem(first.ca_pem.as_bytes()).unwrap();
    let tls12 = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .max_tls_version(reqwest::tls::Version::TLS_1_2)
        .build()
        .unwrap();
    let reply = read(&Mcp { client: tls12, url: url.clone() }, "demo://docs/1", None).await;
    assert_eq!(reply.status, 200, "TLS 1.2: {reply:?}");
}

/// HTTP/2 clients may split `cookie` into a field per crumb (RFC 9113 §8.2.3): on a route whose
/// identity header is `cookie` that is one identity, not a header sent twice, and the upstream
/// gets it as one line.
#[tokio::test]
async fn h2_cookie_crumbs_are_one_header() {
    let upstream = demo_upstream("a", &["--scope", "private"]).await;
    let pki = pki("one");
    let (_proxy, tls_port) = tls_proxy_with(&upstream, &pki, "[route.policy]\nidentity_header = \"cookie\"").await;
    let url = format!("https://127.0.0.1:{tls_port}/mcp");
    let crumbs = [("cookie", "session=alice"), ("cookie", "theme=dark")];
    let h2 = Mcp { client: client_trusting(&pki, true), url: url.clone() };
    let seen =
        h2.stateless("tools/call", serde_json::json!({"name": "request_headers", "arguments": {}}), &crumbs).await;
    assert_eq!(seen.status, 200, "{seen:?}");
    assert!(seen.tool_text().contains("cookie: session=alice; theme=dark\n"), "{}", seen.tool_text());

    // The same identity as the joined line an HTTP/1.1 client sends: its private entry is shared.
    let first = h2.stateless("resources/read", serde_json::json!({"uri": "demo://me"}), &crumbs).await;
    assert_eq!((first.status, x_cache(&first)), (200, "MISS"), "{first:?}");
    let h1 = Mcp { client: client_trusting(&pki, false), url };
    let again = h1
        .stateless(
            "resources/read",
            serde_json::json!({"uri": "demo://me"}),
            &[("cookie", "session=alice; theme=dark")],
        )
        .await;
    assert_eq!((again.status, x_cache(&again)), (200, "HIT"), "{again:?}");
    let other = h1
        .stateless("resources/read", serde_json::json!({"uri": "demo://me"}), &[("cookie", "session=bob; theme=dark")])
        .await;
    assert_eq!((other.status, x_cache(&other)), (200, "MISS"), "another identity: {other:?}");
}

#[tokio::test]
async fn the_sdk_client_works_over_https() {
    let upstream = demo_upstream("a", &[]).await;
    let first = pki("one");
    let (proxy, tls_port) = tls_proxy(&upstream, &first).await;
    let ca_file = proxy.config_path.with_file_name("ca.pem");
    std::fs::write(&ca_file, &first.ca_pem).unwrap();
    let output = tokio::process::Command::new(crate::peers::python())
        .arg(workspace().join("tests/peers/python/peer_client.py"))
        .args([&format!("https://127.0.0.1:{tls_port}/mcp"), "2026-07-28", "add", r#"{"a": 20, "b": 22}"#])
        .env("SSL_CERT_FILE", &ca_file)
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let seen: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(seen["call"]["text"], "42");
}

#[tokio::test]
async fn sighup_rotates_the_certificate_without_dropping_an_open_stream() {
    let upstream = demo_upstream("a", &[]).await;
    let (first, second) = (pki("one"), pki("two"));
    let (proxy, tls_port) = tls_proxy(&upstream, &first).await;
    let url = format!("https://127.0.0.1:{tls_port}/mcp");
    let old_client = Mcp { client: client_trusting(&first, false), url: url.clone() };
    let session = old_client.initialize().await;
    let stream = old_client.open_stream(&session, &[]).await;
    assert_eq!(stream.status(), 200);
    let mut events = stream.bytes_stream();
    events.next().await.expect("first event").unwrap();

    install(&second, proxy.config_path.parent().unwrap());
    proxy.process.signal("HUP");
    let new_client = Mcp { client: client_trusting(&second, false), url: url.clone() };
    let mut rotated = false;
    for _ in 0..100 {
        if new_client.client.post(&url).body("{}").send().await.is_ok() {
            rotated = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(rotated, "new handshakes must get the new certificate:\n{}", proxy.process.log());
    let fresh = Mcp { client: client_trusting(&first, false), url };
    assert!(fresh.client.post(&fresh.url).body("{}").send().await.is_err(), "the old certificate is no longer served");
    // The stream opened before the rotation still delivers (keep-alive comments every second).
    let later = tokio::time::timeout(Duration::from_secs(5), events.next()).await.expect("stream still open");
    assert!(later.is_some_and(|chunk| chunk.is_ok()));
}

#[test]
fn check_reports_an_unreadable_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mcp-edge.toml");
    std::fs::write(
        &config,
        "[server.tls]\nlisten = [\"127.0.0.1:8443\"]\ncert = \"/nonexistent/cert.pem\"\nkey = \"/nonexistent/key.pem\"\n\
         [[route]]\npath = \"/mcp\"\nupstreams = [\"http://127.0.0.1:1/mcp\"]\n",
    )
    .unwrap();
    let output = Command::new(bin()).args(["check", "--config"]).arg(&config).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot read /nonexistent/cert.pem"), "{stderr}");

    let first = pki("one");
    install(&first, dir.path());
    std::fs::write(dir.path().join("key.pem"), pki("other").key_pem).unwrap();
    let mismatched =
        std::fs::read_to_string(&config).unwrap().replace("/nonexistent", &dir.path().display().to_string());
    std::fs::write(&config, mismatched).unwrap();
    let output = Command::new(bin()).args(["check", "--config"]).arg(&config).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("do not belong together"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn https_upstreams_are_verified_against_the_route_ca() {
    let upstream = demo_upstream("inner", &[]).await;
    let pki = pki("upstream");
    let (inner, tls_port) = tls_proxy(&upstream, &pki).await;
    let ca_file = inner.config_path.with_file_name("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    let https_route = |extra: &str| {
        format!(
            "[[route]]\nname = \"secure\"\npath = \"/mcp\"\nupstreams = [\"https://127.0.0.1:{tls_port}/mcp\"]\n{extra}\n"
        )
    };
    let trusting = proxy(&https_route(&format!("ca_file = {:?}", ca_file.display().to_string()))).await;
    assert_eq!(whoami(&trusting.mcp()).await, "inner");
    let seen = trusting
        .mcp()
        .stateless("tools/call", serde_json::json!({"name": "request_headers", "arguments": {}}), &[])
        .await;
    assert!(seen.tool_text().contains("x-forwarded-proto: https"), "the inner edge saw TLS: {}", seen.tool_text());

    // The system roots do not know the test CA: the upstream is refused, clearly.
    let untrusting = proxy(&https_route("")).await;
    let reply = untrusting.mcp().stateless("tools/list", serde_json::json!({}), &[]).await;
    // 502, or 503 once its health check (refused the same way) has found it unhealthy.
    assert!(matches!(reply.status, 502 | 503), "{reply:?}");
    assert!(reply.json()["error"]["message"].as_str().unwrap().contains("route secure"));

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, https_route("ca_file = \"/nonexistent/ca.pem\"")).unwrap();
    let output = Command::new(bin()).args(["check", "--config"]).arg(&config).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("ca_file /nonexistent/ca.pem"));
}

/// An RSA CA and server certificate made with the openssl command line; the server key in
/// PKCS#8 or, with `pkcs1`, in the traditional PKCS#1 form.
fn rsa_pki(dir: &Path, pkcs1: bool) -> Pki {
    let run = |args: &[&str]| {
        let status = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl");
        assert!(status.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&status.stderr));
    };
    let days = ["-days", "2"];
    run(&[
        &["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem"][..],
        &days,
        &["-subj", "/CN=mcp-edge RSA test CA"],
    ]
    .concat());
    run(&["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=127.0.0.1"]);
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n").unwrap();
    run(&[
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "leaf.pem",
            "-extfile",
            "ext.cnf",
        ][..],
        &days,
    ]
    .concat());
    if pkcs1 {
        run(&["rsa", "-in", "leaf.key", "-traditional", "-out", "leaf.key"]);
    }
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
    Pki { ca_pem: read("ca.pem"), cert_pem: read("leaf.pem"), key_pem: read("leaf.key") }
}

#[tokio::test]
async fn rsa_certificates_work_with_pkcs8_and_pkcs1_keys() {
    let upstream = demo_upstream("a", &[]).await;
    for pkcs1 in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let pki = rsa_pki(dir.path(), pkcs1);
        assert_eq!(pki.key_pem.contains("BEGIN RSA PRIVATE KEY"), pkcs1);
        let (_proxy, tls_port) = tls_proxy(&upstream, &pki).await;
        for h2 in [false, true] {
            let mcp = Mcp { client: client_trusting(&pki, h2), url: format!("https://127.0.0.1:{tls_port}/mcp") };
            let reply = read(&mcp, "demo://docs/2", None).await;
            assert_eq!(reply.status, 200, "pkcs1 {pkcs1}, h2 {h2}: {reply:?}");
        }
    }
}

#[tokio::test]
async fn https_upstreams_written_with_a_port_pass_their_health_checks() {
    let upstream = demo_upstream("inner", &[]).await;
    let pki = pki("upstream");
    let (inner, tls_port) = tls_proxy(&upstream, &pki).await;
    let ca_file = inner.config_path.with_file_name("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    let outer = proxy(&format!(
        "[[route]]\nname = \"secure\"\npath = \"/mcp\"\nupstreams = [\"https://localhost:{tls_port}/mcp\"]\n\
         ca_file = {:?}\n[route.health]\ninterval = \"200ms\"\n",
        ca_file.display().to_string()
    ))
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let ready = reqwest::get(outer.admin_url("/readyz")).await.unwrap();
        if ready.status() == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never healthy: {}\n{}",
            ready.text().await.unwrap(),
            outer.process.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = reqwest::get(outer.admin_url("/metrics")).await.unwrap().text().await.unwrap();
    let up = text.lines().find(|l| l.starts_with("mcp_upstream_up{")).expect("an upstream_up sample");
    assert!(up.ends_with(" 1"), "{up}");
    assert!(!outer.process.log().contains("invalid dns name"), "{}", outer.process.log());
}

/// HTTP/2 requests take the same intake as HTTP/1.1 ones: a hit is answered by the front (its
/// id the request's, dated), a refusal is a JSON-RPC error, and a hit late in its entry's life
/// refreshes it ahead, so a client reading steadily never waits on the upstream again.
#[tokio::test]
async fn h2_requests_take_the_same_intake_as_http1() {
    let upstream = demo_upstream("a", &["--ttl-ms", "800"]).await;
    let pki = pki("one");
    let prefetch = "[route.prefetch]\nenabled = true\nrefresh_ahead = 0.5";
    let (_proxy, tls_port) = tls_proxy_with(&upstream, &pki, prefetch).await;
    let url = format!("https://127.0.0.1:{tls_port}/mcp");
    let h2 = Mcp { client: client_trusting(&pki, true), url: url.clone() };
    let read_docs = || h2.stateless("resources/read", serde_json::json!({"uri": "demo://docs/1"}), &[]);
    let first = read_docs().await;
    assert_eq!((first.status, x_cache(&first)), (200, "MISS"), "{first:?}");
    let (mut hits, mut others) = (0, Vec::new());
    let until = tokio::time::Instant::now() + Duration::from_millis(2400);
    while tokio::time::Instant::now() < until {
        let reply = read_docs().await;
        match x_cache(&reply) {
            "HIT" => {
                hits += 1;
                assert_eq!(reply.json()["id"], 1, "{reply:?}");
                assert!(reply.header("date").is_some(), "{reply:?}");
            }
            other => others.push(other.to_string()),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(hits > 20 && others.is_empty(), "{hits} hits, then {others:?}: refresh-ahead kept the entry fresh");
    let reads = h2.stateless("tools/call", serde_json::json!({"name": "reads", "arguments": {}}), &[]).await;
    let reads: u64 = reads.tool_text().trim().parse().unwrap();
    assert!(reads >= 3, "the upstream was read {reads} times: the refreshes went through");

    let refused = h2
        .client
        .post(&url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!((refused.version(), refused.status().as_u16()), (reqwest::Version::HTTP_2, 400));
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], -32700, "{body}");

    // A gzipped body is decoded and forwarded plain over HTTP/2 too.
    let call =
        r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"echo","arguments":{"message":"zipped"}}}"#;
    let gzipped = h2
        .client
        .post(&url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("content-encoding", "gzip")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "echo")
        .body(crate::request_bodies::gzip(call.as_bytes()))
        .send()
        .await
        .unwrap();
    let status = (gzipped.version(), gzipped.status().as_u16());
    let text = gzipped.text().await.unwrap();
    assert_eq!(status, (reqwest::Version::HTTP_2, 200), "{text}");
    assert!(text.contains("zipped"), "{text}");
}

/// Over HTTP/2 a head is held to the same field limit as over HTTP/1.1 (Pingora's HTTP/2
/// server takes more), and refused with a JSON-RPC error.
#[tokio::test]
async fn h2_heads_are_held_to_the_same_field_limit() {
    let upstream = demo_upstream("a", &[]).await;
    let pki = pki("one");
    let (_proxy, tls_port) = tls_proxy(&upstream, &pki).await;
    let url = format!("https://127.0.0.1:{tls_port}/mcp");
    let client = client_trusting(&pki, true);
    let mut request = client.post(&url).header("content-type", "application/json").body("{}");
    for i in 0..300 {
        request = request.header(format!("x-field-{i}"), "v");
    }
    let refused = request.send().await.unwrap();
    assert_eq!((refused.version(), refused.status().as_u16()), (reqwest::Version::HTTP_2, 431));
    let body: serde_json::Value = refused.json().await.unwrap();
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("256")), "{body}");
}
