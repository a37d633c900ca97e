//! Identity at the edge (`[route.auth]`): real JWT access tokens signed by PyJWT with
//! `cryptography` (`tests/peers/python/auth_server.py`, which also publishes the JWKS and acts
//! as the authorization server), checked by mcp-edge before its cache and its upstream.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::*;
use crate::peers::{peer_script, python, python_peer};

const AUDIENCE: &str = "https://mcp.test/mcp";

struct Issuer {
    process: Process,
    port: u16,
    http: reqwest::Client,
}

impl Issuer {
    async fn start() -> Issuer {
        let (process, port) = python_peer("authorization server", "auth_server.py", &[]).await;
        Issuer { process, port, http: reqwest::Client::new() }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let response = self.http.post(format!("{}{path}", self.url())).json(&body).send().await.unwrap();
        assert!(response.status().is_success(), "{path}: {}", self.process.log());
        response.json().await.unwrap()
    }

    /// A token for `AUDIENCE` with these claims over the defaults (sub alice, scope mcp:read).
    async fn token(&self, claims: Value) -> String {
        self.mint(json!({"claims": claims, "aud": AUDIENCE})).await
    }

    async fn mint(&self, request: Value) -> String {
        self.post("/mint", request).await["token"].as_str().unwrap().to_string()
    }

    async fn jwks_fetches(&self) -> u64 {
        let stats: Value = self.http.get(format!("{}/stats", self.url())).send().await.unwrap().json().await.unwrap();
        stats["jwks_fetches"].as_u64().unwrap()
    }

    /// The `[route.auth]` table for this issuer.
    fn table(&self, audience: &str, extra: &str) -> String {
        format!(
            "[route.auth]\nissuer = \"{}\"\naudience = \"{audience}\"\njwks_url = \"{}/jwks.json\"\n{extra}\n",
            self.url(),
            self.url()
        )
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Who the upstream fetched an answer for (`--echo-caller`).
fn fetched_for(reply: &Reply) -> Option<String> {
    reply.json()["result"]["_meta"]["fetchedFor"]["authorization"].as_str().map(str::to_string)
}

fn challenge(reply: &Reply) -> String {
    reply.header("www-authenticate").unwrap_or_default().to_string()
}

async fn wait_reloads(proxy: &Proxy, count: usize) {
    for _ in 0..200 {
        if proxy.process.log().matches("configuration reloaded").count() >= count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no reload:\n{}", proxy.process.log());
}

#[tokio::test]
async fn bad_tokens_are_refused_before_the_cache_and_the_upstream() {
    let issuer = Issuer::start().await;
    let upstream = demo_upstream("a", &["--scope", "private", "--echo-caller"]).await;
    let auth = issuer.table(AUDIENCE, "");
    let proxy = proxy(&route(&[&upstream], &auth)).await;
    let mcp = proxy.mcp();
    let uri = "demo://docs/1";

    // A good token's answer is cached first: every refusal below could have been a hit.
    let alice = issuer.token(json!({})).await;
    let first = read(&mcp, uri, Some(&bearer(&alice))).await;
    assert_eq!((first.status, x_cache(&first)), (200, "MISS"), "{first:?}");
    assert_eq!(fetched_for(&first).as_deref(), Some(bearer(&alice).as_str()));
    assert_eq!(upstream_reads(&upstream).await, 1);

    let missing = read(&mcp, uri, None).await;
    assert_eq!(missing.status, 401, "{missing:?}");
    assert_eq!(
        challenge(&missing),
        "Bearer resource_metadata=\"https://mcp.test/.well-known/oauth-protected-resource/mcp\""
    );
    assert!(missing.json()["error"]["message"].as_str().unwrap().contains("bearer access token is required"));
    assert_eq!(x_cache(&missing), "BYPASS");

    let mut forged = alice.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    let wrong_signature = issuer.token(json!({})).await;
    let (signed_part, _) = wrong_signature.rsplit_once('.').unwrap();
    let (_, other_signature) = alice.rsplit_once('.').unwrap();
    let spliced = format!("{signed_part}.{other_signature}");
    let refused_tokens = [
        ("a bad signature", forged),
        ("another token's signature", spliced),
        ("a foreign audience", issuer.mint(json!({"aud": "https://other.test/mcp"})).await),
        ("another issuer", issuer.token(json!({"iss": "https://evil.test"})).await),
        ("an expired token", issuer.token(json!({"exp": 1_000_000_000})).await),
        ("a token not valid yet", issuer.token(json!({"nbf": 4_000_000_000u64})).await),
        ("a string nbf", issuer.token(json!({"nbf": "4000000000"})).await),
        ("alg none", issuer.mint(json!({"alg": "none", "aud": AUDIENCE})).await),
        ("HMAC keyed with the public key", issuer.mint(json!({"alg": "HS256-public", "aud": AUDIENCE})).await),
        ("not a JWT", "not-a-jwt".to_string()),
    ];
    for (what, token) in &refused_tokens {
        let refused = read(&mcp, uri, Some(&bearer(token))).await;
        assert_eq!(refused.status, 401, "{what}: {refused:?}");
        let told = challenge(&refused);
        assert!(told.contains("error=\"invalid_token\"") && told.contains("resource_metadata="), "{what}: {told}");
        assert!(!told.contains(token.as_str()), "the challenge never quotes the token");
    }
    assert_eq!(upstream_reads(&upstream).await, 1, "the upstream was never asked");
    assert!(metric(&proxy, "mcp_auth_total{result=\"expired\",route=\"/mcp\"}").await >= 1.0);
    assert!(metric(&proxy, "mcp_auth_total{result=\"missing\",route=\"/mcp\"}").await >= 1.0);

    // The same user and grants with a refreshed token: the same authorization context.
    let refreshed = issuer.token(json!({"iat": 1_700_000_000u64})).await;
    assert_ne!(refreshed, alice);
    let hit = read(&mcp, uri, Some(&bearer(&refreshed))).await;
    assert_eq!((hit.status, x_cache(&hit)), (200, "HIT"), "{hit:?}");
    // Other scopes: entries of its own. Another subject: never alice's.
    let wider = issuer.token(json!({"scope": "mcp:read mcp:write"})).await;
    let other_scopes = read(&mcp, uri, Some(&bearer(&wider))).await;
    assert_eq!((other_scopes.status, x_cache(&other_scopes)), (200, "MISS"));
    assert_eq!(fetched_for(&other_scopes).as_deref(), Some(bearer(&wider).as_str()));
    let bob = issuer.token(json!({"sub": "bob"})).await;
    let bobs = read(&mcp, uri, Some(&bearer(&bob))).await;
    assert_eq!((bobs.status, x_cache(&bobs)), (200, "MISS"));
    assert_eq!(fetched_for(&bobs).as_deref(), Some(bearer(&bob).as_str()), "bob never gets alice's answer");
    assert_eq!(upstream_reads(&upstream).await, 3);
}

#[tokio::test]
async fn a_rotated_key_is_fetched_at_a_bounded_rate() {
    let issuer = Issuer::start().await;
    let upstream = demo_upstream("a", &["--scope", "private"]).await;
    let proxy = proxy(&route(&[&upstream], &issuer.table(AUDIENCE, ""))).await;
    let mcp = proxy.mcp();
    let before = read(&mcp, "demo://docs/1", Some(&bearer(&issuer.token(json!({})).await))).await;
    assert_eq!(before.status, 200, "{before:?}");

    // The issuer starts signing with a key it has not published yet.
    let next = issuer.post("/rotate", json!({"publish": false})).await["kid"].as_str().unwrap().to_string();
    let token = issuer.token(json!({})).await;
    let fetches = issuer.jwks_fetches().await;
    for _ in 0..20 {
        let refused = read(&mcp, "demo://docs/2", Some(&bearer(&token))).await;
        assert_eq!(refused.status, 401, "{refused:?}");
        assert!(challenge(&refused).contains("does not publish"), "{}", challenge(&refused));
    }
    let asked = issuer.jwks_fetches().await - fetches;
    assert!(asked <= 1, "20 tokens with an unknown kid asked the issuer {asked} times");
    assert_eq!(upstream_reads(&upstream).await, 1, "the upstream was never asked");

    // Published: the next token naming it has the set fetched again (once the short wait
    // between such fetches is over) and passes.
    issuer.post("/publish", json!({"kid": next})).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let accepted = read(&mcp, "demo://docs/2", Some(&bearer(&token))).await;
    assert_eq!((accepted.status, x_cache(&accepted)), (200, "MISS"), "{accepted:?}");

    // The issuer goes down: the keys in use are kept.
    issuer.post("/fail", json!({"status": 503})).await;
    let still = read(&mcp, "demo://docs/2", Some(&bearer(&issuer.token(json!({})).await))).await;
    assert_eq!((still.status, x_cache(&still)), (200, "HIT"), "{still:?}");
}

#[tokio::test]
async fn metadata_scopes_and_reloads() {
    let issuer = Issuer::start().await;
    let upstream = demo_upstream("a", &["--scope", "private"]).await;
    let proxy = proxy(&route(&[&upstream], "")).await;
    let mcp = proxy.mcp();
    assert_eq!(read(&mcp, "demo://docs/1", None).await.status, 200, "no [route.auth]: tokens pass unchecked");

    // Switched on by a reload, with the URL clients use as the resource.
    let resource = proxy.url("/mcp");
    let auth = issuer.table(&resource, "scopes = [\"mcp:read\"]\n[route.limits]\nrate_per_subject = 5");
    proxy.reload_with(&route(&[&upstream], &auth));
    wait_reloads(&proxy, 1).await;
    let missing = read(&mcp, "demo://docs/1", None).await;
    assert_eq!(missing.status, 401, "{missing:?}");
    let metadata_url = format!("http://127.0.0.1:{}/.well-known/oauth-protected-resource/mcp", proxy.port);
    assert_eq!(challenge(&missing), format!("Bearer resource_metadata=\"{metadata_url}\", scope=\"mcp:read\""));

    for url in [metadata_url.clone(), proxy.url("/.well-known/oauth-protected-resource")] {
        let response = reqwest::get(&url).await.unwrap();
        assert_eq!(response.status(), 200, "{url}");
        assert_eq!(response.headers()["content-type"], "application/json");
        let document: Value = response.json().await.unwrap();
        assert_eq!(
            document,
            json!({
                "resource": resource,
                "authorization_servers": [issuer.url()],
                "scopes_supported": ["mcp:read"],
                "bearer_methods_supported": ["header"],
            }),
            "{url}"
        );
    }
    assert_eq!(reqwest::get(proxy.url("/.well-known/oauth-protected-resource/other")).await.unwrap().status(), 404);

    // A token without the scope: 403, and the scope to ask for.
    let narrow = issuer.mint(json!({"aud": resource, "claims": {"scope": "profile"}})).await;
    let forbidden = read(&mcp, "demo://docs/1", Some(&bearer(&narrow))).await;
    assert_eq!(forbidden.status, 403, "{forbidden:?}");
    let told = challenge(&forbidden);
    assert!(told.contains("error=\"insufficient_scope\"") && told.contains("scope=\"mcp:read\""), "{told}");

    // One subject's rate, whatever tokens it holds.
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let token = issuer.mint(json!({"aud": resource})).await;
        statuses.push(read(&mcp, "demo://docs/1", Some(&bearer(&token))).await.status);
    }
    assert!(statuses.contains(&200) && statuses.contains(&429), "{statuses:?}");

    // A configuration whose keys cannot be read is refused; the old one keeps serving.
    proxy.reload_with(&route(&[&upstream], "[route.auth]\nissuer = \"https://idp.test\"\naudience = \"https://mcp.test/mcp\"\njwks_file = \"/nonexistent/jwks.json\""));
    for _ in 0..200 {
        if proxy.process.log().contains("configuration refused") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(proxy.process.log().contains("/nonexistent/jwks.json"), "{}", proxy.process.log());
    assert_eq!(read(&mcp, "demo://docs/1", None).await.status, 401, "the old configuration serves");

    // Switched off again.
    proxy.reload_with(&route(&[&upstream], ""));
    wait_reloads(&proxy, 2).await;
    assert_eq!(read(&mcp, "demo://docs/1", None).await.status, 200);
    assert_eq!(reqwest::get(&metadata_url).await.unwrap().status(), 404);
}

#[tokio::test]
async fn the_upstream_may_be_sent_the_subject_instead_of_the_token() {
    let issuer = Issuer::start().await;
    let upstream = demo_upstream("a", &[]).await;
    let auth = issuer.table(AUDIENCE, "subject_header = \"x-auth-subject\"\nrequired = false");
    let proxy = proxy(&route(&[&upstream], &auth)).await;
    let mcp = proxy.mcp();
    let seen = |reply: &Reply| reply.tool_text();
    let call = |headers: Vec<(&'static str, String)>| {
        let mcp = &mcp;
        async move {
            let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            mcp.stateless("tools/call", json!({"name": "request_headers", "arguments": {}}), &headers).await
        }
    };
    let token = issuer.token(json!({"sub": "alice@example"})).await;
    let signed_in = call(vec![("authorization", bearer(&token)), ("x-auth-subject", "mallory".into())]).await;
    assert_eq!(signed_in.status, 200, "{signed_in:?}");
    assert!(seen(&signed_in).contains("x-auth-subject: alice@example"), "{}", seen(&signed_in));
    assert!(
        !seen(&signed_in).contains("mallory") && !seen(&signed_in).contains("authorization:"),
        "{}",
        seen(&signed_in)
    );
    // No token, on a route that does not require one: anonymous, and no client's say-so.
    let anonymous = call(vec![("x-auth-subject", "mallory".into())]).await;
    assert_eq!(anonymous.status, 200, "{anonymous:?}");
    assert!(!seen(&anonymous).contains("x-auth-subject"), "{}", seen(&anonymous));
    // A token sent is checked all the same, and another scheme is not taken unchecked.
    let expired = issuer.token(json!({"exp": 1_000_000_000})).await;
    assert_eq!(call(vec![("authorization", bearer(&expired))]).await.status, 401);
    let basic = call(vec![("authorization", "Basic YWRtaW46YWRtaW4=".into())]).await;
    assert_eq!(basic.status, 401, "{basic:?}");
    // The header's twin with underscores (one header to CGI-style servers) never passes either.
    let twin = call(vec![("authorization", bearer(&token)), ("x_auth_subject", "mallory".into())]).await;
    assert_eq!(twin.status, 200, "{twin:?}");
    assert!(!seen(&twin).contains("mallory"), "{}", seen(&twin));
    // A subject a header cannot carry as it is (a control character, outer spaces) is refused.
    for odd in ["alice\r\nx-evil: 1", " alice", "alice\u{a0}", "alice, bob"] {
        let token = issuer.token(json!({"sub": odd})).await;
        let refused = call(vec![("authorization", bearer(&token))]).await;
        assert_eq!(refused.status, 401, "{odd:?}: {refused:?}");
    }
}

#[tokio::test]
async fn a_cors_preflight_passes_without_credentials_and_nothing_else_does() {
    let issuer = Issuer::start().await;
    let upstream = demo_upstream("a", &[]).await;
    let auth = issuer.table(AUDIENCE, "subject_header = \"x-auth-subject\"");
    let proxy = proxy(&route(&[&upstream], &auth)).await;
    let http = reqwest::Client::new();
    let same_origin = proxy.url("");
    let options = |body: Option<&'static str>| {
        let mut request = http
            .request(reqwest::Method::OPTIONS, proxy.url("/mcp"))
            .header("origin", same_origin.as_str())
            .header("access-control-request-method", "POST")
            .header("authorization", "Bearer forged.token.here")
            .header("cookie", "session=stolen")
            .header("x-auth-subject", "admin");
        if let Some(body) = body {
            request = request.body(body);
        }
        request.send()
    };
    // A preflight (no body) passes unchecked, and the upstream gets no credential of the client's.
    let preflight = options(None).await.unwrap();
    assert_eq!(preflight.status(), 204);
    let seen = preflight.headers()["x-demo-seen-headers"].to_str().unwrap().to_string();
    for credential in ["authorization", "cookie", "x-auth-subject"] {
        assert!(!seen.split(',').any(|name| name == credential), "{credential} reached the upstream: {seen}");
    }
    assert!(seen.contains("access-control-request-method"), "{seen}");
    // An OPTIONS with a body is no preflight: it needs a token like any request.
    let with_body =
        options(Some(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}"#)).await.unwrap();
    assert_eq!(with_body.status(), 401);
}

#[tokio::test]
async fn the_python_sdk_client_signs_in_through_the_metadata() {
    let issuer = Issuer::start().await;
    let upstream = demo_upstream("a", &["--scope", "private"]).await;
    let proxy = proxy(&route(&[&upstream], "")).await;
    let resource = proxy.url("/mcp");
    proxy.reload_with(&route(&[&upstream], &issuer.table(&resource, "scopes = [\"mcp:read\"]")));
    wait_reloads(&proxy, 1).await;

    for mode in ["2026-07-28", "legacy"] {
        let output = tokio::process::Command::new(python())
            .arg(peer_script("oauth_client.py"))
            .args([resource.as_str(), issuer.url().as_str(), mode, "demo://docs/3"])
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{mode}: {stdout}\n{}", String::from_utf8_lossy(&output.stderr));
        let out: Value = serde_json::from_str(stdout.trim()).unwrap();
        assert_eq!(out["reads"], json!(["Document 3, served by a.", "Document 3, served by a."]), "{mode}");
    }
    let stats: Value = reqwest::get(format!("{}/stats", issuer.url())).await.unwrap().json().await.unwrap();
    let requests = stats["token_requests"].as_array().unwrap();
    assert!(!requests.is_empty() && requests.iter().all(|r| r["resource"] == resource.as_str()), "{stats}");
    assert!(metric(&proxy, "mcp_auth_total{result=\"ok\",route=\"/mcp\"}").await >= 4.0);
}
