#![no_main]
//! An upstream answer's bytes, cut into two chunks anywhere: the SSE parser and the observer
//! never panic, and where the cut falls changes nothing they see; a result the cache would
//! keep is stored as one JSON object.
use libfuzzer_sys::fuzz_target;
use mcp_edge_policies::observe::Observer;
use mcp_edge_policies::sse::SseParser;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, body)) = data.split_first() else { return };
    let at = cut as usize % (body.len() + 1);
    let mut whole = SseParser::new(1 << 16);
    let mut split = SseParser::new(1 << 16);
    let mut events = split.feed(&body[..at]);
    events.extend(split.feed(&body[at..]));
    assert_eq!(whole.feed(body), events);
    for sse in [true, false] {
        let mut observer = Observer::new(Some("1".into()), sse, 1 << 16);
        observer.feed(&body[..at]);
        observer.feed(&body[at..]);
        observer.finish();
        // What would be stored is one JSON object, and it restates no freshness of its own.
        if let Some(facts) = observer.cacheable_result() {
            // (Values are read past, not into numbers: the upstream's 1e999 is carried as is.)
            let members: std::collections::BTreeMap<String, serde::de::IgnoredAny> =
                serde_json::from_str(&facts.stored_result).expect("the stored form is one JSON object");
            assert!(!members.contains_key("ttlMs"));
        }
    }
});
