use serde_json::{Value, json};

use super::messages::*;
use super::*;
use crate::cache::{ListKind, Target};

#[test]
fn a_route_watches_at_most_its_limit_and_refuses_the_rest() {
    let mut watched = Watched::new(2);
    assert_eq!(watched.note_uri("demo://a", 10_000), Noted::Added);
    assert_eq!(watched.note_uri("demo://b", 10_000), Noted::Added);
    assert_eq!(watched.note_uri("demo://c", 10_000), Noted::Full, "full: refused, not swapped in");
    assert!(watched.contains("demo://a") && watched.contains("demo://b") && !watched.contains("demo://c"));
    assert_eq!(watched.note_uri("demo://a", 20_000), Noted::Known, "a URI already watched is not refused");
    let grown = watched.grown();
    for n in 0..10_000 {
        assert_eq!(watched.note_uri(&format!("demo://flood/{n}"), 10_000), Noted::Full);
    }
    assert_eq!((watched.len(), watched.grown()), (2, grown), "a flood of new URIs changes nothing");
}

#[test]
fn overlong_uris_are_not_watched() {
    let mut watched = Watched::new(10);
    assert_eq!(watched.note_uri(&"x".repeat(MAX_URI + 1), 10_000), Noted::TooLong);
    assert_eq!(watched.note_uri(&"x".repeat(MAX_URI), 10_000), Noted::Added);
}

#[test]
fn watched_uris_follow_their_entries_lives() {
    let mut watched = Watched::new(2);
    watched.note_uri("demo://short", 1_000);
    watched.note_uri("demo://long", 5_000);
    watched.note_uri("demo://short", 500);
    assert!(watched.note_list(ListKind::Tools, 2_000, 0));
    assert!(!watched.note_list(ListKind::Tools, 3_000, 0), "already listening for tools");
    let changed = watched.changed();
    assert_eq!(watched.prune(999), 0, "a store never shortens a life");
    assert_eq!(watched.changed(), changed, "nothing pruned, nothing changed");
    assert_eq!(watched.prune(1_000), 1);
    assert!(!watched.contains("demo://short") && watched.contains("demo://long"));
    assert!(watched.changed() > changed);
    assert_eq!(watched.note_uri("demo://new", 6_000), Noted::Added, "room again once an entry expired");
    assert!(watched.lists(2_999).tools && !watched.lists(3_000).tools);
    watched.prune(6_000);
    assert!(!watched.wants_anything(6_000), "nothing cached: no subscription needed");
    assert!(watched.note_list(ListKind::Tools, 9_000, 6_000), "a list kind comes back as new");
}

#[test]
fn wanted_is_sorted_and_says_what_grew() {
    let mut watched = Watched::new(10);
    watched.note_uri("demo://b", 10_000);
    watched.note_uri("demo://a", 10_000);
    watched.note_list(ListKind::Resources, 10_000, 0);
    let wanted = watched.wanted(0);
    assert_eq!(wanted.uris, ["demo://a", "demo://b"]);
    assert_eq!(wanted.lists, Lists { resources: true, tools: false, prompts: false });
    watched.note_uri("demo://a", 20_000);
    assert_eq!(watched.wanted(0).grown, wanted.grown, "a refreshed URI is no growth");
    watched.note_uri("demo://c", 10_000);
    assert!(watched.wanted(0).grown > wanted.grown);
}

#[test]
fn a_smaller_limit_keeps_the_longest_lived_uris() {
    let mut watched = Watched::new(10);
    for (uri, until) in [("a", 5), ("b", 9), ("c", 7), ("d", 7), ("e", 1)] {
        watched.note_uri(uri, until);
    }
    watched.set_limit(3);
    assert_eq!(watched.len(), 3);
    assert!(watched.contains("b"));
    assert!(!watched.contains("a") && !watched.contains("e"));
    assert_eq!(watched.note_uri("f", 100), Noted::Full);
    watched.set_limit(1);
    assert_eq!(watched.wanted(0).uris, ["b"]);
}

#[test]
fn failures_back_off_from_one_second_doubling_to_a_minute_and_reset_after_a_healthy_spell() {
    let mut backoff = Backoff::default();
    let waits: Vec<u64> = (0..9).map(|_| backoff.down(0)).collect();
    assert_eq!(waits, [1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000, 60_000]);
    backoff.up(100_000);
    assert_eq!(backoff.down(100_000 + HEALTHY_AFTER_MS - 1), 60_000, "up too briefly: still backing off");
    backoff.up(200_000);
    assert_eq!(backoff.down(200_000 + HEALTHY_AFTER_MS), 1_000, "a healthy spell resets the wait");
    assert_eq!(backoff.down(200_000 + HEALTHY_AFTER_MS), 2_000);
    for _ in 0..100 {
        backoff.down(0);
    }
    assert_eq!(backoff.down(0), LONGEST_RETRY_MS, "no overflow however long it fails");
}

#[test]
fn a_stream_is_replaced_at_most_once_a_second() {
    assert_eq!(switch_wait_ms(10_000, 9_000), 0);
    assert_eq!(switch_wait_ms(10_000, 9_700), 700);
    assert_eq!(switch_wait_ms(10_000, 20_000), 11_000, "a clock that moved back waits, never opens at once");
}

#[test]
fn capabilities_say_what_a_server_can_tell_of() {
    let everything = json!({"capabilities": {"resources": {"subscribe": true, "listChanged": true},
        "tools": {"listChanged": true}, "prompts": {"listChanged": true}}});
    let support = Support::of_result(&everything);
    assert!(support.subscribe && support.lists.resources && support.lists.tools && support.lists.prompts);
    let nothing = Support::of_result(&json!({"capabilities": {"resources": {}, "tools": {}}}));
    assert!(!nothing.any());
    // Not `true` is not supported: strings, numbers, garbage.
    let odd = json!({"capabilities": {"resources": {"subscribe": "yes", "listChanged": 1}, "tools": []}});
    assert!(!Support::of_result(&odd).any());
    assert!(!Support::of_result(&json!("garbage")).any());
    let wanted = Wanted { uris: vec!["demo://a".into()], lists: Lists::default(), grown: 1 };
    let only_lists = Support { subscribe: false, lists: Lists { resources: true, tools: true, prompts: true } };
    assert!(!only_lists.serves(&wanted), "URIs need resources.subscribe");
    assert!(support.serves(&wanted));
}

#[test]
fn the_listen_request_asks_for_what_is_cached_and_supported_and_nothing_else() {
    let wanted = Wanted {
        uris: vec!["demo://a".into(), "demo://b".into()],
        lists: Lists { resources: false, tools: true, prompts: true },
        grown: 3,
    };
    let support = Support { subscribe: true, lists: Lists { resources: true, tools: true, prompts: false } };
    let body: Value = serde_json::from_str(&listen_body("listen-1", &wanted, &support).unwrap()).unwrap();
    assert_eq!(body["method"], "subscriptions/listen");
    assert_eq!(body["id"], "listen-1");
    assert_eq!(
        body["params"]["notifications"],
        json!({"toolsListChanged": true, "resourceSubscriptions": ["demo://a", "demo://b"]})
    );
    let meta = &body["params"]["_meta"];
    assert_eq!(meta["io.modelcontextprotocol/protocolVersion"], "2026-07-28");
    assert_eq!(meta["io.modelcontextprotocol/clientCapabilities"], json!({}), "the edge declares no capability");
    assert_eq!(meta["io.modelcontextprotocol/clientInfo"]["name"], "mcp-edge");
    let no_subscribe = Support { subscribe: false, lists: Lists::default() };
    assert_eq!(listen_body("listen-2", &wanted, &no_subscribe), None, "nothing to listen for: no request");
}

#[test]
fn handshake_messages_carry_no_credential_or_capability() {
    let init: Value = serde_json::from_str(&initialize_body("init-1")).unwrap();
    assert_eq!(init["params"]["capabilities"], json!({}));
    assert_eq!(init["params"]["protocolVersion"], HANDSHAKE_VERSION);
    let subscribe: Value = serde_json::from_str(&subscribe_body("s-1", "demo://\"quoted\"", true)).unwrap();
    assert_eq!(
        (subscribe["method"].as_str(), subscribe["params"]["uri"].as_str()),
        (Some("resources/subscribe"), Some("demo://\"quoted\""))
    );
    let unsubscribe: Value = serde_json::from_str(&subscribe_body("s-2", "demo://a", false)).unwrap();
    assert_eq!(unsubscribe["method"], "resources/unsubscribe");
    let pong: Value = serde_json::from_str(&answer_body(&json!(7), "ping")).unwrap();
    assert_eq!((pong["id"].clone(), pong["result"].clone()), (json!(7), json!({})));
    let refused: Value = serde_json::from_str(&answer_body(&json!("x"), "sampling/createMessage")).unwrap();
    assert_eq!(refused["error"]["code"], -32601);
}

#[test]
fn stream_events_are_heard_for_what_they_mean() {
    let updated = r#"{"jsonrpc":"2.0","method":"notifications/resources/updated","params":{"uri":"demo://a"}}"#;
    assert_eq!(hear(updated, None), Heard::Invalidate(Target::Resource("demo://a".into())));
    let tools = r#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}"#;
    assert_eq!(hear(tools, None), Heard::Invalidate(Target::List(ListKind::Tools)));
    let ack = json!({"jsonrpc": "2.0", "method": "notifications/subscriptions/acknowledged", "params": {
        "_meta": {"io.modelcontextprotocol/subscriptionId": "listen-1"},
        "notifications": {"toolsListChanged": true, "resourceSubscriptions": ["demo://a", "demo://b"]}}})
    .to_string();
    assert_eq!(
        hear(&ack, Some("listen-1")),
        Heard::Acknowledged { uris: 2, lists: Lists { resources: false, tools: true, prompts: false } }
    );
    assert_eq!(hear(&ack, Some("listen-2")), Heard::Nothing, "another subscription's acknowledgment");
    let end = r#"{"jsonrpc":"2.0","id":"listen-1","result":{"resultType":"complete"}}"#;
    assert!(matches!(hear(end, Some("listen-1")), Heard::Ended(Reply::Result(_))));
    assert_eq!(hear(end, None), Heard::Nothing, "a response on a GET stream is none of the edge's");
    let refused = r#"{"jsonrpc":"2.0","id":"listen-1","error":{"code":-32601,"message":"Method not found"}}"#;
    assert!(matches!(hear(refused, Some("listen-1")), Heard::Ended(reply) if reply.is_method_not_found()));
    let ping = r#"{"jsonrpc":"2.0","id":5,"method":"ping"}"#;
    assert_eq!(hear(ping, None), Heard::Request { id: json!(5), method: "ping".into() });
}

#[test]
fn garbage_on_a_stream_is_ignored_never_a_panic() {
    for data in [
        "",
        "not json",
        "[]",
        "null",
        "42",
        r#"{"method":5}"#,
        r#"{"method":"notifications/resources/updated"}"#,
        r#"{"method":"notifications/resources/updated","params":{"uri":7}}"#,
        r#"{"method":"notifications/resources/updated","params":"x"}"#,
        r#"{"method":"notifications/subscriptions/acknowledged","params":{"notifications":"all"}}"#,
        r#"{"id":null,"method":"ping"}"#,
        r#"{"id":{"a":1},"result":{}}"#,
        r#"{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"hi"}}"#,
    ] {
        let heard = hear(data, Some("listen-1"));
        assert!(
            matches!(heard, Heard::Nothing | Heard::Acknowledged { uris: 0, .. }),
            "{data:?} was heard as {heard:?}"
        );
    }
}

#[test]
fn replies_are_matched_by_id() {
    let ok = json!({"jsonrpc": "2.0", "id": "init-1", "result": {"capabilities": {}}});
    assert_eq!(reply_to(&ok, "init-1"), Some(Reply::Result(json!({"capabilities": {}}))));
    assert_eq!(reply_to(&ok, "init-2"), None);
    let error = json!({"jsonrpc": "2.0", "id": "s-1", "error": {"code": -32601, "message": "nope"}});
    assert!(reply_to(&error, "s-1").is_some_and(|reply| reply.is_method_not_found()));
    assert_eq!(reply_to(&json!({"id": 1, "result": {}}), "1"), None, "ids are the edge's strings");
}
