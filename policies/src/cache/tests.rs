//! The cache decisions' unit tests (keys, scopes, storing, entries, invalidation together:
//! most cases cross them).

use std::time::Duration;

use super::*;
use crate::config::{CachePolicy, Config};
use crate::jsonrpc::{Message, parse};
use sha2::{Digest, Sha256};

fn policy() -> CachePolicy {
    let config = Config::from_toml("[[route]]\npath = \"/mcp\"\nupstreams = [\"http://h:1/mcp\"]\n").unwrap();
    config.routes[0].policy.clone()
}

fn read(uri: &str) -> Message {
    parse(
        format!(r#"{{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{{"uri":"{uri}","_meta":{{"progressToken":1}}}}}}"#)
            .as_bytes(),
    )
    .unwrap()
}

fn stateless(identity: Option<&str>) -> Caller {
    Caller {
        identity: identity.map(|i| identity_hash(i.as_bytes())),
        session: None,
        stateless: true,
        protocol_version: Some("2026-07-28".into()),
        capabilities: None,
        session_alive: false,
    }
}

fn legacy(session: &str) -> Caller {
    Caller {
        identity: None,
        session: Some(session.into()),
        stateless: false,
        protocol_version: Some("2025-11-25".into()),
        capabilities: None,
        session_alive: false,
    }
}

fn facts(result: &str) -> ResultFacts {
    result_facts(result).unwrap()
}

#[test]
fn only_reads_and_lists_are_cacheable_by_default() {
    let p = policy();
    assert!(lookup_for("r", &read("a://1"), &stateless(None), &p, |_| false).is_some());
    for body in [
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#,
        r#"{"jsonrpc":"2.0","method":"notifications/resources/list_changed"}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"a","inputResponses":{}}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{}}"#,
    ] {
        assert!(lookup_for("r", &parse(body.as_bytes()).unwrap(), &stateless(None), &p, |_| true).is_none(), "{body}");
    }
}

#[test]
fn tools_are_cached_only_when_opted_in() {
    let call =
        parse(br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add","arguments":{"b":2,"a":1}}}"#)
            .unwrap();
    let same =
        parse(br#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"add","arguments":{"a":1,"b":2}}}"#)
            .unwrap();
    let mut p = policy();
    p.cache_tools = vec!["add".into()];
    let a = lookup_for("r", &call, &stateless(None), &p, |_| false).unwrap();
    let b = lookup_for("r", &same, &stateless(None), &p, |_| false).unwrap();
    let anyone = Scope::Public(Audience::Anonymous);
    assert_eq!(a.key(&anyone), b.key(&anyone), "argument order does not matter");
    let mut p = policy();
    p.readonly_tools = true;
    assert!(lookup_for("r", &call, &stateless(None), &p, |name| name == "add").is_some());
    assert!(lookup_for("r", &call, &stateless(None), &p, |_| false).is_none());
}

#[test]
fn keys_are_the_digests_disk_caches_were_written_with() {
    // A key is SHA-256 of "<route>\0<method>\0<params>\0<version>\0meta=<_meta>\0<scope>":
    // entries on disk from earlier versions are found only while this holds. (Public entries
    // were keyed `public` before audiences split them, and every entry without `_meta` before
    // `_meta` was keyed; those are left behind on purpose: any of them may have been fetched
    // without a credential, or for other client capabilities.)
    let lookup = lookup_for("r", &read("a://1"), &stateless(None), &policy(), |_| false).unwrap();
    let expect = |scope: &str| -> Key {
        Sha256::digest(format!("r\0resources/read\0uri=a://1\02026-07-28\0meta=\0{scope}")).into()
    };
    assert_eq!(lookup.key(&Scope::Public(Audience::Anonymous)), expect("public:anonymous"));
    assert_eq!(lookup.key(&Scope::Public(Audience::Authenticated)), expect("public:authenticated"));
    assert_eq!(lookup.key(&Scope::Private("h".into())), expect("private:h"));
    // Session entries are bound to the caller's identity since a leaked session id unlocked
    // them: older session entries on disk are left behind on purpose.
    let session = |identity: Option<&str>| Scope::Session { id: "s".into(), identity: identity.map(String::from) };
    assert_eq!(lookup.key(&session(None)), expect("session:s\0as:-"));
    assert_eq!(lookup.key(&session(Some("h"))), expect("session:s\0as:h"));
}

#[test]
fn a_session_id_alone_unlocks_nothing_cached_for_another_identity() {
    let p = policy();
    let list = parse(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#).unwrap();
    let alice = Caller { identity: Some(identity_hash(b"Bearer alice")), ..legacy("s1") };
    let mallory = Caller { identity: Some(identity_hash(b"Bearer mallory")), ..legacy("s1") };
    let anonymous = legacy("s1");
    let stored =
        store_decision(&lookup_for("r", &list, &alice, &p, |_| false).unwrap(), &alice, &facts(r#"{"tools":[]}"#), &p)
            .unwrap();
    let stored_key = lookup_for("r", &list, &alice, &p, |_| false).unwrap().key(&stored.scope);
    for (who, caller) in [("mallory", &mallory), ("anonymous", &anonymous)] {
        let theirs = lookup_for("r", &list, caller, &p, |_| false).unwrap();
        let keys: Vec<Key> = theirs.scopes.iter().map(|scope| theirs.key(scope)).collect();
        assert!(!keys.contains(&stored_key), "{who} with alice's session id probes her entry");
    }
    let again = lookup_for("r", &list, &alice, &p, |_| false).unwrap();
    assert!(again.scopes.iter().any(|scope| again.key(scope) == stored_key), "alice finds her own");
}

#[test]
fn meta_is_keyed_but_for_what_never_changes_an_answer() {
    let p = policy();
    let caller = stateless(None);
    let key = |meta: &str, policy: &CachePolicy| {
        let body = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{{"_meta":{meta}}}}}"#);
        lookup_for("r", &parse(body.as_bytes()).unwrap(), &caller, policy, |_| false)
            .map(|lookup| lookup.key(&Scope::Public(Audience::Anonymous)))
    };
    let base = r#"{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{"sampling":{}}}"#;
    let base_key = key(base, &p).unwrap();
    // Other capabilities, other client information, unknown members: other answers maybe.
    for other in [
        r#"{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}"#,
        r#"{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{"sampling":{}},"io.modelcontextprotocol/clientInfo":{"name":"x"}}"#,
        r#"{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{"sampling":{}},"com.example/tenant":"b"}"#,
        r#"{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}"#,
    ] {
        assert_ne!(key(other, &p), Some(base_key), "{other}");
    }
    // The same members in another order or spacing, or with only a progress token or trace
    // context added: the same answer.
    for same in [
        r#"{ "io.modelcontextprotocol/clientCapabilities" : {"sampling":{}}, "io.modelcontextprotocol/protocolVersion":"2026-07-28"}"#,
        r#"{"progressToken":7,"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{"sampling":{}}}"#,
        r#"{"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01","tracestate":"a=b","baggage":"k=v","io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{"sampling":{}}}"#,
    ] {
        assert_eq!(key(same, &p), Some(base_key), "{same}");
    }
    // What the operator vouches for is left out too.
    let mut vouched = policy();
    vouched.unkeyed_meta = vec!["io.modelcontextprotocol/clientInfo".into()];
    let with_info = r#"{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{"sampling":{}},"io.modelcontextprotocol/clientInfo":{"name":"x"}}"#;
    assert_eq!(key(with_info, &vouched), key(base, &vouched));
    assert_ne!(key(with_info, &p), key(base, &p));
    // A `_meta` that is not an object read exactly is never keyed on a guess.
    assert_eq!(key(r#"{"a":1,"a":2}"#, &p), None);
    assert_eq!(key("[1]", &p), None);
    // The body's protocol version is keyed when it is not the header's.
    let header_version = Caller { protocol_version: Some("2025-11-25".into()), ..stateless(None) };
    let versioned = |body: &str| {
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{{"_meta":{{"io.modelcontextprotocol/protocolVersion":"{body}"}}}}}}"#
        );
        lookup_for("r", &parse(body.as_bytes()).unwrap(), &header_version, &p, |_| false)
            .unwrap()
            .key(&Scope::Public(Audience::Anonymous))
    };
    assert_ne!(versioned("2026-07-28"), versioned("2025-11-25"));
    // Values are keyed as written: another spelling of the same value is another entry (a
    // miss), never the same entry for another value.
    assert_ne!(key(r#"{"x":"\u0041"}"#, &p), key(r#"{"x":"A"}"#, &p));
    assert_ne!(key(r#"{"x":1.0}"#, &p), key(r#"{"x":1}"#, &p));
}

#[test]
fn keys_ignore_the_id_but_not_params_scope_or_version() {
    let p = policy();
    #[allow(non_snake_case)]
    let Public = Scope::Public(Audience::Anonymous);
    let caller = stateless(None);
    let a = lookup_for("r", &read("a://1"), &caller, &p, |_| false).unwrap();
    let other_id = parse(br#"{"jsonrpc":"2.0","id":"zz","method":"resources/read","params":{"uri":"a://1"}}"#).unwrap();
    assert_eq!(a.key(&Public), lookup_for("r", &other_id, &caller, &p, |_| false).unwrap().key(&Public));
    assert_ne!(a.key(&Public), lookup_for("r", &read("a://2"), &caller, &p, |_| false).unwrap().key(&Public));
    assert_ne!(a.key(&Public), lookup_for("other", &read("a://1"), &caller, &p, |_| false).unwrap().key(&Public));
    assert_ne!(a.key(&Public), a.key(&Scope::Private("x".into())));
    let old = Caller { protocol_version: Some("2025-06-18".into()), ..caller };
    assert_ne!(a.key(&Public), lookup_for("r", &read("a://1"), &old, &p, |_| false).unwrap().key(&Public));
}

#[test]
fn lookups_probe_the_callers_own_scopes_then_its_audiences_public_one() {
    let p = policy();
    let l = lookup_for("r", &read("a://1"), &stateless(Some("Bearer t")), &p, |_| false).unwrap();
    assert_eq!(l.scopes, vec![Scope::Private(identity_hash(b"Bearer t")), Scope::Public(Audience::Authenticated)]);
    let l = lookup_for("r", &read("a://1"), &legacy("s1"), &p, |_| false).unwrap();
    let session = Scope::Session { id: "s1".into(), identity: None };
    assert_eq!(l.scopes, vec![session, Scope::Public(Audience::Anonymous)]);
    let l = lookup_for("r", &read("a://1"), &stateless(None), &p, |_| false).unwrap();
    assert_eq!(l.scopes, vec![Scope::Public(Audience::Anonymous)]);
    assert!(!identity_hash(b"Bearer secret").contains("secret"));
}

#[test]
fn a_public_answer_fetched_anonymously_never_reaches_a_credential() {
    let p = policy();
    let anonymous = stateless(None);
    let user = stateless(Some("Bearer u"));
    let please_log_in = facts(r#"{"contents":[],"ttlMs":60000,"cacheScope":"public"}"#);
    let l = lookup_for("r", &read("a://1"), &anonymous, &p, |_| false).unwrap();
    let stored = store_decision(&l, &anonymous, &please_log_in, &p).unwrap().scope;
    let users_lookup = lookup_for("r", &read("a://1"), &user, &p, |_| false).unwrap();
    assert!(!users_lookup.scopes.contains(&stored), "the user never looks where the anonymous answer is");
    let users_answer = store_decision(&users_lookup, &user, &please_log_in, &p).unwrap().scope;
    assert!(!l.scopes.contains(&users_answer), "nor the other way round");
}

#[test]
fn blank_credentials_are_no_identity() {
    for blank in [&b""[..], b" ", b"\t  ", b";", b" ; , ;"] {
        assert_eq!(identity_of("authorization", Some(blank)), None, "{blank:?}");
        assert_eq!(identity_of("cookie", Some(blank)), None, "{blank:?}");
    }
    assert_eq!(identity_of("authorization", None), None);
    assert_eq!(identity_of("authorization", Some(b" Bearer t ")), identity_of("authorization", Some(b"Bearer t")));
    assert_ne!(identity_of("authorization", Some(b"Bearer t")), identity_of("authorization", Some(b"Bearer u")));
}

#[test]
fn one_credential_spelled_otherwise_is_one_identity() {
    let of = |value: &[u8]| identity_of("authorization", Some(value));
    for spelling in [&b"bearer mallory"[..], b"BEARER mallory", b"Bearer  mallory", b"Bearer\tmallory"] {
        assert_eq!(of(spelling), of(b"Bearer mallory"), "{:?}", String::from_utf8_lossy(spelling));
    }
    assert_ne!(of(b"Bearer Mallory"), of(b"Bearer mallory"), "the credentials themselves are kept as written");
    assert_ne!(of(b"Basic mallory"), of(b"Bearer mallory"));
    // A one-word value (a bare API key) is no scheme: its case is the key's own.
    assert_ne!(of(b"SK-ABCDEF0123"), of(b"sk-AbCdEf0123"), "bare keys that differ in case are two identities");
    assert_ne!(of(b"ALICE"), of(b"alice"));
    assert_eq!(of(b" alice "), of(b"alice"));
    // Other identity headers are taken as written: cookie names are case-sensitive.
    assert_ne!(identity_of("cookie", Some(b"A=1; b=2")), identity_of("cookie", Some(b"a=1; b=2")));
}

#[test]
fn params_that_are_not_understood_exactly_are_not_keyed() {
    let p = policy();
    let caller = stateless(Some("u"));
    let mut tools = policy();
    tools.cache_tools = vec!["add".into()];
    for (body, why) in [
        (r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"cursor":"p2","cursor":"p2"}}"#, "duplicate"),
        (r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"cursor":"p2","name":5}}"#, "wrong type"),
        (r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"cursor":null}}"#, "null cursor"),
        (r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"cursor":""}}"#, "empty cursor"),
        (r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"cursor":"p2","filter":"x"}}"#, "unknown member"),
        (r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"uri":"a://1"}}"#, "a member lists do not take"),
        (r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"a":1,"a":2}}}"#, "duplicate in _meta"),
        (r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":[]}"#, "not an object"),
        (r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"a","uri":"b"}}"#, "duplicate uri"),
        (r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"a","cursor":"c"}}"#, "cursor on a read"),
        (r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":["a"]}}"#, "uri not a string"),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add","arguments":{"a":1,"a":2}}}"#,
            "duplicate argument",
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add","arguments":{"a":{"x":1,"x":2}}}}"#,
            "nested duplicate",
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add","arguments":[1]}}"#,
            "arguments not an object",
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add","arguments":{},"task":{"ttl":1}}}"#,
            "task-augmented",
        ),
    ] {
        let message = parse(body.as_bytes()).unwrap();
        assert!(lookup_for("r", &message, &caller, &tools, |_| false).is_none(), "{why}: {body}");
        assert!(lookup_for("r", &message, &caller, &p, |_| false).is_none(), "{why}: {body}");
    }
    let page2 =
        parse(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"cursor":"p2","_meta":{"x":{"y":1}}}}"#)
            .unwrap();
    let first = parse(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}"#).unwrap();
    let page2 = lookup_for("r", &page2, &caller, &p, |_| false).unwrap();
    let first = lookup_for("r", &first, &caller, &p, |_| false).unwrap();
    assert_ne!(page2.key(&Scope::Public(Audience::Anonymous)), first.key(&Scope::Public(Audience::Anonymous)));
}

#[test]
fn big_integer_arguments_do_not_collide() {
    let mut p = policy();
    p.cache_tools = vec!["add".into()];
    let call = |n: &str| {
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"add","arguments":{{"a":{n}}}}}}}"#
        );
        lookup_for("r", &parse(body.as_bytes()).unwrap(), &stateless(None), &p, |_| false)
            .unwrap()
            .key(&Scope::Public(Audience::Anonymous))
    };
    assert_ne!(call("9007199254740993"), call("9007199254740992"));
    assert_ne!(call("12345678901234567890123"), call("12345678901234567890124"));
    assert_eq!(call("5"), call("5"));
}

#[test]
fn hints_decide_ttl_and_scope() {
    let p = policy();
    let caller = stateless(Some("Bearer t"));
    let l = lookup_for("r", &read("a://1"), &caller, &p, |_| false).unwrap();
    let public =
        store_decision(&l, &caller, &facts(r#"{"contents":[],"ttlMs":60000,"cacheScope":"public"}"#), &p).unwrap();
    assert_eq!(
        (public.scope, public.ttl, public.restate_ttl),
        (Scope::Public(Audience::Authenticated), Duration::from_secs(60), true)
    );
    let private =
        store_decision(&l, &caller, &facts(r#"{"contents":[],"ttlMs":5000,"cacheScope":"private"}"#), &p).unwrap();
    assert_eq!(private.scope, Scope::Private(identity_hash(b"Bearer t")));
    assert!(store_decision(&l, &caller, &facts(r#"{"contents":[],"ttlMs":0,"cacheScope":"public"}"#), &p).is_none());
    let capped = store_decision(&l, &caller, &facts(r#"{"ttlMs":999999999999,"cacheScope":"public"}"#), &p).unwrap();
    assert_eq!(capped.ttl, p.max_ttl);
    assert!(!public.own_ttl && !capped.own_ttl, "the server's TTL, capped or not");
    // No hint: the policy's TTL, private.
    let unhinted = store_decision(&l, &caller, &facts(r#"{"contents":[]}"#), &p).unwrap();
    assert_eq!((unhinted.ttl, unhinted.restate_ttl, unhinted.own_ttl), (p.resource_ttl, false, true));
    assert_eq!(p.resource_ttl, Duration::from_secs(120), "a guess lives two minutes by default");
    let mut unheard = p.clone();
    unheard.honor_server_hints = false;
    let ignored = store_decision(&l, &caller, &facts(r#"{"contents":[],"ttlMs":60000}"#), &unheard).unwrap();
    assert!(ignored.own_ttl, "a hint the route does not honour is no server TTL");
    assert!(matches!(unhinted.scope, Scope::Private(_)));
}

#[test]
fn private_answers_without_a_credential_are_not_shared() {
    let p = policy();
    let anonymous = stateless(None);
    let l = lookup_for("r", &read("a://1"), &anonymous, &p, |_| false).unwrap();
    assert!(store_decision(&l, &anonymous, &facts(r#"{"ttlMs":5000,"cacheScope":"private"}"#), &p).is_none());
    assert!(store_decision(&l, &anonymous, &facts(r#"{"contents":[]}"#), &p).is_none());
    let mut shared = policy();
    shared.shared = true;
    assert_eq!(
        store_decision(&l, &anonymous, &facts(r#"{"contents":[]}"#), &shared).unwrap().scope,
        Scope::Public(Audience::Anonymous)
    );
    // Handshake era: per session.
    let caller = legacy("s1");
    let l = lookup_for("r", &read("a://1"), &caller, &p, |_| false).unwrap();
    assert_eq!(
        store_decision(&l, &caller, &facts(r#"{"contents":[]}"#), &p).unwrap().scope,
        Scope::Session { id: "s1".into(), identity: None }
    );
}

#[test]
fn handshake_era_lists_are_per_session_unless_shared() {
    let p = policy();
    let caller = Caller { identity: Some("u".into()), ..legacy("s1") };
    let list = parse(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#).unwrap();
    let l = lookup_for("r", &list, &caller, &p, |_| false).unwrap();
    let session = Scope::Session { id: "s1".into(), identity: Some("u".into()) };
    assert_eq!(store_decision(&l, &caller, &facts(r#"{"tools":[]}"#), &p).unwrap().scope, session);
    let mut shared = policy();
    shared.shared = true;
    assert_eq!(
        store_decision(&l, &caller, &facts(r#"{"tools":[]}"#), &shared).unwrap().scope,
        session,
        "capabilities unknown: kept for the session even when shared"
    );
    let declared = |body: &[u8]| declared_capabilities(body).unwrap();
    let sampling =
        declared(br#"{"method":"initialize","params":{"capabilities":{"sampling":{},"roots":{"listChanged":true}}}}"#);
    let sampling_again = declared(br#"{"params":{"capabilities":{"roots":{ "listChanged" : true},"sampling":{}}}}"#);
    assert_eq!(sampling, sampling_again, "member order and spacing do not count");
    let none = declared(br#"{"params":{"capabilities":{}}}"#);
    assert_ne!(sampling, none);
    assert_eq!(declared(br#"{"params":{}}"#), none, "no capabilities declared: none");
    assert_eq!(declared_capabilities(b"not json"), None);
    let with = |caps: &str, session: &str| Caller { capabilities: Some(caps.into()), ..legacy(session) };
    let public_key = |caller: &Caller| {
        let l = lookup_for("r", &list, caller, &shared, |_| false).unwrap();
        let stored = store_decision(&l, caller, &facts(r#"{"tools":[]}"#), &shared).unwrap();
        assert_eq!(stored.scope, Scope::Public(Audience::Anonymous));
        l.key(&stored.scope)
    };
    assert_eq!(public_key(&with(&sampling, "s1")), public_key(&with(&sampling, "s2")), "same declaration: shared");
    assert_ne!(
        public_key(&with(&sampling, "s1")),
        public_key(&with(&none, "s2")),
        "another declaration: another entry"
    );
    let sessionless = Caller { session: None, ..legacy("s") };
    let l = lookup_for("r", &list, &sessionless, &shared, |_| false).unwrap();
    assert_eq!(
        store_decision(&l, &sessionless, &facts(r#"{"tools":[]}"#), &shared).unwrap().scope,
        Scope::Public(Audience::Anonymous),
        "without sessions a server cannot tell its clients' capabilities apart"
    );
}

#[test]
fn errors_and_input_required_are_never_stored() {
    let p = policy();
    let caller = stateless(Some("u"));
    let l = lookup_for("r", &read("a://1"), &caller, &p, |_| false).unwrap();
    assert!(
        store_decision(
            &l,
            &caller,
            &facts(r#"{"resultType":"input_required","ttlMs":5000,"cacheScope":"public"}"#),
            &p
        )
        .is_none()
    );
    assert!(store_decision(&l, &caller, &facts(r#"{"content":[],"isError":true}"#), &p).is_none());
}

#[test]
fn the_stored_result_is_the_results_members_but_ttl_ms_written_back_as_they_came() {
    let stored = |result: &str| facts(result).stored_result;
    // Values keep their text (spacing, number forms, escapes); names are written back as JSON.
    assert_eq!(
        stored(r#" { "contents" : [ {"text":"a\u00e9\n"} ], "ttlMs": 5, "n":1.50e3, "k\u0065y":null } "#),
        r#"{"contents":[ {"text":"a\u00e9\n"} ],"n":1.50e3,"key":null}"#
    );
    // Every ttlMs goes (the last one read decides the freshness), whatever its place.
    let twice = facts(r#"{"ttlMs":1,"a":true,"ttlMs":2500.9}"#);
    assert_eq!(twice.ttl_ms, Some(2500));
    assert_eq!(twice.stored_result, r#"{"a":true}"#);
    // Names that need escaping are escaped again (serde_json's forms).
    assert_eq!(stored(r#"{"a\"b":1,"c\\d":2,"e\u0001":3,"\n":4}"#), r#"{"a\"b":1,"c\\d":2,"e\u0001":3,"\n":4}"#);
    assert_eq!(stored(r#"{"ttlMs":-4}"#), "{}");
    assert_eq!(facts(r#"{"ttlMs":-4}"#).ttl_ms, Some(0));
    assert_eq!(stored("{}"), "{}");
    // Not one JSON object: nothing to store.
    for not_an_object in [r#"{"a":1} {"b":2}"#, r#"{"a":1}x"#, "[1]", "7", r#""s""#, r#"{"a":}"#, "", "{"] {
        assert!(result_facts(not_an_object).is_none(), "{not_an_object}");
    }
}

#[test]
fn hits_splice_the_id_and_restate_the_ttl() {
    let f = facts(r#"{"contents":[{"text":"é \"q\""}],"ttlMs":60000,"cacheScope":"public","resultType":"complete"}"#);
    assert!(!f.stored_result.contains("ttlMs"));
    let entry = Entry {
        fetched_at_ms: 1_000,
        expires_at_ms: 61_000,
        restate_ttl: true,
        own_ttl: true,
        result: f.stored_result.as_bytes(),
        deflated: Some(Deflated { crc32: 7, bytes: b"\x01\x02" }),
    };
    let encoded = entry.encode();
    let decoded = Entry::decode(&encoded).unwrap();
    assert_eq!(decoded, entry);
    for id in ["7", r#""abc""#, "123456789012345678901234567890", r#""\u00e9ü""#, "0", "-5"] {
        let answer = decoded.answer(id, 21_000).to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&answer).unwrap();
        assert_eq!(v["id"], serde_json::from_str::<serde_json::Value>(id).unwrap(), "{id}");
        assert_eq!(v["result"]["ttlMs"], 40_000);
        assert_eq!(v["result"]["contents"][0]["text"], "é \"q\"");
        assert_eq!(v["result"]["cacheScope"], "public");
    }
    let expired = decoded.answer("1", 99_000).to_bytes();
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&expired).unwrap()["result"]["ttlMs"], 0);
    let empty = Entry { restate_ttl: true, result: b"{}", ..entry.clone() }.answer("1", 0).to_bytes();
    assert!(serde_json::from_slice::<serde_json::Value>(&empty).is_ok(), "{}", String::from_utf8_lossy(&empty));
    let plain = Entry { restate_ttl: false, deflated: None, ..entry }.answer("1", 0).to_bytes();
    assert!(!String::from_utf8_lossy(&plain).contains("ttlMs"));
    assert!(Entry::decode(b"garbage").is_none());
    assert_eq!(Entry::decode(&Entry { deflated: None, ..entry.clone() }.encode()).unwrap().deflated, None);
    let mut truncated = entry.encode();
    truncated.pop();
    assert!(Entry::decode(&truncated).is_none(), "a truncated record is refused");
}

#[test]
fn notifications_name_targets() {
    assert_eq!(
        Target::from_notification("notifications/resources/updated", Some("a://1")),
        Some(Target::Resource("a://1".into()))
    );
    assert_eq!(
        Target::from_notification("notifications/tools/list_changed", None),
        Some(Target::List(ListKind::Tools))
    );
    assert_eq!(Target::from_notification("notifications/progress", None), None);
    assert_ne!(marker_key("r", &Target::Route), marker_key("r2", &Target::Route));
}

#[test]
fn a_confirmed_entry_keeps_its_content_and_carries_when_it_was_confirmed() {
    let entry = Entry {
        fetched_at_ms: 1_000,
        expires_at_ms: 61_000,
        restate_ttl: true,
        own_ttl: false,
        result: br#"{"contents":[]}"#,
        deflated: Some(Deflated { crc32: 7, bytes: b"\x01\x02" }),
    };
    let plain = entry.encode();
    assert_eq!(entry::confirmed_at_ms(&plain), None, "an answer as fetched is not confirmed");
    let confirmed = entry::confirmed(&plain, 5_000).unwrap();
    assert_eq!(entry::confirmed_at_ms(&confirmed), Some(5_000));
    assert_eq!(Entry::decode(&confirmed).unwrap(), entry, "same entry, same fetch time");
    let again = entry::confirmed(&confirmed, 9_000).unwrap();
    assert_eq!((entry::confirmed_at_ms(&again), again.len()), (Some(9_000), confirmed.len()), "replaced, not stacked");
    let without_deflated = Entry { deflated: None, restate_ttl: false, ..entry.clone() };
    let confirmed = entry::confirmed(&without_deflated.encode(), 5_000).unwrap();
    assert_eq!(Entry::decode(&confirmed).unwrap(), without_deflated);
    assert_eq!(entry::confirmed(b"garbage", 1), None);
    let mut truncated = confirmed.clone();
    truncated.pop();
    assert!(Entry::decode(&truncated).is_none(), "a confirmed record missing a byte is refused");
}

#[test]
fn an_upstreams_no_store_or_private_forbids_storing_and_its_other_directives_do_not() {
    let forbids = |lines: &[&str]| http_forbids_storing(lines.iter().map(|line| line.as_bytes()));
    for lines in [
        &["no-store"][..],
        &["No-Store"],
        &["max-age=60, private"],
        &["private=\"set-cookie\""],
        &["public", " PRIVATE "],
        &["no-cache,no-store"],
    ] {
        assert!(forbids(lines), "{lines:?}");
    }
    for lines in [&[][..], &["no-cache, no-transform"], &["public, max-age=0"], &["x-private-thing=1", "no-storey"]] {
        assert!(!forbids(lines), "{lines:?}");
    }
}

#[test]
fn a_vary_on_a_header_the_key_does_not_hold_forbids_storing() {
    let forbids = |lines: &[&str]| http_vary_forbids_storing(lines.iter().map(|line| line.as_bytes()));
    for lines in [&["*"][..], &["Authorization"], &["accept-encoding, Accept-Language"], &["Accept-Encoding", "Origin"]]
    {
        assert!(forbids(lines), "{lines:?}");
    }
    for lines in [&[][..], &[""], &["Accept-Encoding"], &["MCP-Protocol-Version, mcp-method ,Mcp-Name"]] {
        assert!(!forbids(lines), "{lines:?}");
    }
}

#[test]
fn server_discover_is_kept_by_its_hints_in_the_stateless_era_only() {
    let p = policy();
    let discover = |meta: &str| {
        let body = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"server/discover","params":{{"_meta":{meta}}}}}"#);
        parse(body.as_bytes()).unwrap()
    };
    let plain = discover(r#"{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}"#);
    let sampling = discover(
        r#"{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{"sampling":{}}}"#,
    );
    let caller = stateless(None);
    let lookup = lookup_for("r", &plain, &caller, &p, |_| false).expect("cacheable");
    assert_eq!(lookup.targets, vec![Target::Route]);
    let other = lookup_for("r", &sampling, &caller, &p, |_| false).unwrap();
    let public = Scope::Public(Audience::Anonymous);
    assert_ne!(lookup.key(&public), other.key(&public), "keyed by the capabilities it is asked with");
    assert!(lookup_for("r", &plain, &legacy("s1"), &p, |_| false).is_none(), "no discover in the handshake era");
    let hinted = facts(r#"{"supportedVersions":["2026-07-28"],"ttlMs":60000,"cacheScope":"public"}"#);
    assert_eq!(store_decision(&lookup, &caller, &hinted, &p).unwrap().scope, public);
    let unhinted = facts(r#"{"supportedVersions":["2026-07-28"]}"#);
    let mut shared = policy();
    shared.shared = true;
    assert!(store_decision(&lookup, &caller, &unhinted, &shared).is_none(), "not on the route's own TTLs");
}
