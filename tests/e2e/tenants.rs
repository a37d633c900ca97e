//! The cross-tenant matrix: (public / private / no hint) × (credential / empty credential /
//! none / another's session id) × (handshake / stateless era) × (memory / disk tier) × (read /
//! list / tool). Every answer says whom the upstream fetched it for (`--echo-caller`); none may
//! reach an identity it was not fetched for.

use serde_json::{Value, json};

use crate::harness::*;

const CREDENTIALS: [Option<&str>; 4] = [Some("Bearer alice"), Some("Bearer bob"), Some(""), None];
const SCOPES: [&str; 3] = ["public", "private", "none"];

/// One caller: a credential (or none) in one era; handshake-era callers have a session.
struct Tenant {
    credential: Option<&'static str>,
    session: Option<String>,
}

impl Tenant {
    /// The credential that counts: an empty one is none.
    fn identity(&self) -> Option<&str> {
        self.credential.filter(|c| !c.trim().is_empty())
    }

    fn headers(&self) -> Vec<(&str, &str)> {
        let mut headers: Vec<(&str, &str)> = self.credential.map(|c| ("authorization", c)).into_iter().collect();
        match &self.session {
            Some(session) => {
                headers.extend([("mcp-session-id", session.as_str()), ("mcp-protocol-version", "2025-11-25")])
            }
            None => headers.push(("mcp-protocol-version", "2026-07-28")),
        }
        headers
    }

    async fn ask(&self, mcp: &Mcp, method: &str, params: Value) -> Reply {
        let mut headers = self.headers();
        if self.session.is_some() {
            let body = json!({"jsonrpc": "2.0", "id": 7, "method": method, "params": params});
            return mcp.post(body.to_string(), &headers).await;
        }
        let (body, name) = stateless_body(method, params, json!(7));
        headers.push(("mcp-method", method));
        if let Some(name) = name.as_deref() {
            headers.push(("mcp-name", name));
            return mcp.post(body, &headers).await;
        }
        mcp.post(body, &headers).await
    }
}

async fn handshake_tenant(mcp: &Mcp, credential: Option<&'static str>) -> Tenant {
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "tenant", "version": "0"}}});
    let auth: Vec<(&str, &str)> = credential.map(|c| ("authorization", c)).into_iter().collect();
    let reply = mcp.post(init.to_string(), &auth).await;
    let session = reply.header("mcp-session-id").expect("a session").to_string();
    let mut headers = auth.clone();
    headers.extend([("mcp-session-id", session.as_str()), ("mcp-protocol-version", "2025-11-25")]);
    mcp.post(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string(), &headers).await;
    Tenant { credential, session: Some(session) }
}

/// Checks one answer against whom it was fetched for; returns its x-cache.
fn check(tenant: &Tenant, method: &str, reply: &Reply) -> String {
    assert_eq!(reply.status, 200, "{reply:?}");
    let result = &reply.json()["result"];
    let fetched = &result["_meta"]["fetchedFor"];
    let fetched_for = fetched["authorization"].as_str().filter(|c| !c.trim().is_empty());
    let public = result["cacheScope"] == "public";
    let context = format!(
        "{} {:?} {method}: fetched for {fetched}",
        tenant.session.as_deref().unwrap_or("stateless"),
        tenant.credential
    );
    match tenant.identity() {
        Some(mine) => {
            assert!(fetched_for.is_some(), "a signed-in caller got an answer fetched anonymously: {context}");
            if !public {
                assert_eq!(fetched_for, Some(mine), "a private answer of another user: {context}");
            }
        }
        None => assert_eq!(fetched_for, None, "an anonymous caller got a signed-in answer: {context}"),
    }
    // Kept per session: anonymous answers, and handshake-era lists without a hint (their
    // content may follow the session's declared capabilities).
    let per_session = tenant.identity().is_none() || (method == "tools/list" && result.get("cacheScope").is_none());
    if let (Some(session), false, true) = (&tenant.session, public, per_session) {
        let upstream_session = session.split_once('.').map_or(session.as_str(), |(_, s)| s);
        assert_eq!(fetched["session"].as_str(), Some(upstream_session), "another session's answer: {context}");
    }
    reply.header("x-cache").unwrap_or_default().to_string()
}

async fn matrix(disk: bool) {
    let mut upstreams = Vec::new();
    for scope in SCOPES {
        upstreams.push(demo_upstream(scope, &["--scope", scope, "--echo-caller", "--hint-handshake"]).await);
    }
    let routes: String = SCOPES
        .iter()
        .zip(&upstreams)
        .map(|(scope, upstream)| {
            format!(
                "[[route]]\nname = \"{scope}\"\npath = \"/{scope}\"\nupstreams = [{:?}]\n[route.policy]\ncache_tools = [\"add\"]\n\n",
                upstream.url()
            )
        })
        .collect();
    let mut proxy = proxy_full(&routes, "", |dir| match disk {
        true => format!("[cache]\nmemory = \"8MiB\"\ndisk_path = {:?}\n", dir.join("cache").display().to_string()),
        false => String::new(),
    })
    .await;
    let mut tenants = Vec::new();
    for scope in SCOPES {
        let mcp = Mcp::new(&proxy.url(&format!("/{scope}")));
        let mut of_route = Vec::new();
        for credential in CREDENTIALS {
            of_route.push(Tenant { credential, session: None });
            for _ in 0..2 {
                of_route.push(handshake_tenant(&mcp, credential).await);
            }
        }
        // A leaked session id: another credential, or none, presenting alice's session (after
        // her, so that her answers are cached by then). A session id is no credential.
        let alice = of_route.iter().find(|t| t.session.is_some() && t.credential == Some("Bearer alice"));
        let leaked = alice.and_then(|t| t.session.clone()).expect("alice has a session");
        for credential in [Some("Bearer mallory"), None] {
            of_route.push(Tenant { credential, session: Some(leaked.clone()) });
        }
        tenants.push((mcp, of_route));
    }
    let requests = [
        ("resources/read", json!({"uri": "demo://docs/1"})),
        ("tools/list", json!({})),
        ("tools/call", json!({"name": "add", "arguments": {"a": 2, "b": 3}})),
    ];
    let mut hits = 0;
    for phase in 0..2 {
        if phase == 1 && disk {
            // The memory tier starts empty: every hit now comes from the disk.
            proxy.restart().await;
        }
        for (mcp, of_route) in &tenants {
            for tenant in of_route {
                for (method, params) in &requests {
                    let reply = tenant.ask(mcp, method, params.clone()).await;
                    hits += (check(tenant, method, &reply) == "HIT") as usize;
                }
            }
        }
    }
    assert!(hits >= 30, "the matrix must exercise hits, saw {hits}");
}

#[tokio::test]
async fn no_answer_reaches_an_identity_it_was_not_fetched_for_memory_tier() {
    matrix(false).await;
}

#[tokio::test]
async fn no_answer_reaches_an_identity_it_was_not_fetched_for_disk_tier() {
    matrix(true).await;
}
