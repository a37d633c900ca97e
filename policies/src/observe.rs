//! What an upstream answer tells the cache, read as it streams past: the final JSON-RPC
//! response to the request (from `application/json`, or from the SSE event carrying the
//! request's id), whether a server-to-client request appeared (then the result depends on the
//! client: not cacheable), whether the server sent anything else beside the result (progress,
//! log messages: a hit would silently drop them, so not cacheable either), and every change
//! notification (to invalidate).

use serde::Deserialize;
use serde::de::{Deserializer, Visitor};
use serde_json::value::RawValue;

use crate::cache::{ResultFacts, Target, read_result};
use crate::sse::SseParser;

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    method: Option<String>,
    /// Read as it is parsed (one pass). `null` or absent: `None`; any other value that is not
    /// an object: `Some(None)`.
    #[serde(default, deserialize_with = "result_if_any")]
    result: Option<Option<ResultFacts>>,
    #[serde(borrow)]
    params: Option<&'a RawValue>,
}

/// A `result` member: `null` is none (as `Option` reads it), anything else is read once.
fn result_if_any<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Option<ResultFacts>>, D::Error> {
    struct IfAny;
    impl<'de> Visitor<'de> for IfAny {
        type Value = Option<Option<ResultFacts>>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON-RPC result")
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
            read_result(deserializer).map(Some)
        }
    }
    deserializer.deserialize_option(IfAny)
}

#[derive(Deserialize)]
struct UriParam {
    uri: Option<String>,
}

/// Observes one response body.
#[derive(Debug)]
pub struct Observer {
    /// Raw id of the request whose result is wanted (`None`: only watch notifications).
    want_id: Option<String>,
    sse: Option<SseParser>,
    json: Vec<u8>,
    /// The JSON answer was read whole (what follows is not read).
    json_read: bool,
    /// The buffer's length when it was last tried and did not parse (see `read_json_if_whole`).
    json_tried_at: usize,
    /// The body ended ([`Self::finish`]).
    finished: bool,
    limit: usize,
    /// The wanted response's `result`, once seen; inside, its facts if it is an object (the
    /// only results the cache keeps or the proxy reads).
    result: Option<Option<ResultFacts>>,
    /// Server-to-client requests seen so far (sampling, elicitation, roots): the proxy tells
    /// the other requests of the same session (see `session_signals` in the proxy).
    pub server_requests: u64,
    /// A notification other than a change notification arrived with the answer (progress, a
    /// log message, …): the client's handlers expect it, a cached result would not carry it.
    pub side_notification_seen: bool,
    pub too_large: bool,
    /// More than one response carried the wanted id. A client takes the first (and mcp-edge
    /// keeps only that one); another client library may take the last: such an answer is
    /// passed through, not cached.
    answered_again: bool,
    responses_seen: bool,
    /// Invalidation targets named by notifications seen so far, drained by the caller.
    pub invalidations: Vec<Target>,
}

impl Observer {
    /// `sse`: the body is `text/event-stream` (else one JSON document). `limit`: the largest
    /// answer that may be captured.
    pub fn new(want_id: Option<String>, sse: bool, limit: usize) -> Self {
        Observer {
            want_id,
            sse: sse.then(|| SseParser::new(limit)),
            json: Vec::new(),
            json_read: false,
            json_tried_at: 0,
            finished: false,
            limit,
            result: None,
            server_requests: 0,
            side_notification_seen: false,
            too_large: false,
            answered_again: false,
            responses_seen: false,
            invalidations: Vec::new(),
        }
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        match &mut self.sse {
            Some(parser) => {
                for data in parser.feed(chunk) {
                    self.message(data.as_bytes());
                }
            }
            // Anything past a whole JSON answer makes it no one answer.
            None if self.json_read => self.answered_again |= !chunk.trim_ascii().is_empty(),
            None if self.want_id.is_some() && !self.too_large => {
                if self.json.len() + chunk.len() > self.limit {
                    self.too_large = true;
                    self.json = Vec::new();
                } else {
                    self.json.extend_from_slice(chunk);
                    self.read_json_if_whole();
                }
            }
            None => {}
        }
    }

    /// Call at the end of the body.
    pub fn finish(&mut self) {
        self.finished = true;
        if self.sse.is_none() && !self.json.is_empty() && !self.json_read {
            let body = std::mem::take(&mut self.json);
            self.message(&body);
        }
    }

    /// Reads a JSON answer as soon as it is whole (an object closed), not at the end of the
    /// body: the last chunk of a chunked body comes before its end, and what the answer says
    /// (a write's outcome) must be acted on before the client is given it. Parsed once when
    /// whole; a buffer that does not parse yet is kept for the chunks to come, and tried again
    /// only once it has doubled (an answer cut into many chunks ending in `}` costs linear
    /// time, and is read at the end at the latest).
    fn read_json_if_whole(&mut self) {
        if self.json.trim_ascii_end().last() != Some(&b'}') || self.json.len() < 2 * self.json_tried_at {
            return;
        }
        let body = std::mem::take(&mut self.json);
        match serde_json::from_slice::<Envelope>(&body) {
            Ok(envelope) => {
                self.json_read = true;
                self.envelope(envelope);
            }
            Err(_) => {
                self.json_tried_at = body.len();
                self.json = body;
            }
        }
    }

    fn message(&mut self, data: &[u8]) {
        if let Ok(envelope) = serde_json::from_slice::<Envelope>(data) {
            self.envelope(envelope);
        }
    }

    fn envelope(&mut self, envelope: Envelope<'_>) {
        match (&envelope.method, envelope.id) {
            (Some(_), Some(_)) => self.server_requests += 1,
            (Some(method), None) => {
                let uri =
                    envelope.params.and_then(|p| serde_json::from_str::<UriParam>(p.get()).ok()).and_then(|p| p.uri);
                match Target::from_notification(method, uri.as_deref()) {
                    Some(target) => self.invalidations.push(target),
                    None => self.side_notification_seen = true,
                }
            }
            (None, Some(id)) if self.want_id.as_deref() == Some(id.get()) => {
                // Every response to the request counts (an error, a `null` result); the first
                // result is the answer.
                self.answered_again |= self.responses_seen;
                self.responses_seen = true;
                if !self.answered_again {
                    self.result = envelope.result;
                }
            }
            (None, _) => {}
        }
    }

    /// Whether the wanted response's result has been seen and may be acted on: an SSE event
    /// as soon as it came, a JSON answer at the end of its body (nothing may follow it).
    pub fn answered(&self) -> bool {
        self.result.is_some() && (self.sse.is_some() || self.finished)
    }

    /// Whether a response to the wanted request has been seen (a result or an error).
    pub fn responded(&self) -> bool {
        self.responses_seen
    }

    /// The wanted response's result, once seen: inside, its facts if it is an object.
    pub fn any_result(&self) -> Option<Option<&ResultFacts>> {
        self.result.as_ref().map(Option::as_ref)
    }

    /// The wanted response's result, once seen, if it is an object.
    pub fn result(&self) -> Option<&ResultFacts> {
        self.result.as_ref()?.as_ref()
    }

    /// The result, if it may be cached: found, complete, and nothing but change notifications
    /// came with it (no server-to-client request, no progress, no log message).
    pub fn cacheable_result(&self) -> Option<&ResultFacts> {
        if self.server_requests > 0 || self.side_notification_seen || self.too_large || self.answered_again {
            return None;
        }
        self.result()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::ListKind;

    fn stored(o: &Observer) -> Option<&str> {
        o.cacheable_result().map(|facts| facts.stored_result.as_str())
    }

    #[test]
    fn json_answers_are_captured_whole() {
        let mut o = Observer::new(Some("7".into()), false, 1 << 20);
        o.feed(br#"{"jsonrpc":"2.0","id":7,"#);
        assert!(!o.responded());
        o.feed(br#""result":{"contents":[]}}"#);
        assert!(o.responded(), "read as soon as it is whole");
        assert!(!o.answered(), "stored only once nothing more can come");
        o.feed(b"\r\n");
        o.finish();
        assert_eq!(stored(&o), Some(r#"{"contents":[]}"#));
        let mut braces = Observer::new(Some("7".into()), false, 1 << 20);
        braces.feed(br#"{"jsonrpc":"2.0","id":7,"result":{"a":{}"#);
        braces.feed(b"}");
        braces.feed(b"}");
        assert!(!braces.responded(), "tried again only once the buffer has doubled");
        braces.finish();
        assert!(braces.responded(), "read at the end at the latest");
        assert_eq!(stored(&braces), Some(r#"{"a":{}}"#));
        let mut trailing = Observer::new(Some("7".into()), false, 1 << 20);
        trailing.feed(br#"{"jsonrpc":"2.0","id":7,"result":{"contents":[]}}"#);
        trailing.feed(br#"{"jsonrpc":"2.0","id":7,"result":{"contents":[1]}}"#);
        trailing.finish();
        assert_eq!(stored(&trailing), None, "two documents are no one answer");
    }

    #[test]
    fn sse_answers_yield_the_event_with_our_id() {
        let mut o = Observer::new(Some(r#""q""#.into()), true, 1 << 20);
        o.feed(b"id: p\r\ndata:\r\n\r\nevent: message\r\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/tools/list_changed\"}\r\n\r\n");
        o.feed(b"data: {\"jsonrpc\":\"2.0\",\"id\":\"q\",\"result\":{\"tools\":[]}}\r\n\r\n");
        o.finish();
        assert_eq!(stored(&o), Some(r#"{"tools":[]}"#), "a change notification is no part of the answer");
    }

    #[test]
    fn answers_sent_with_progress_or_log_messages_are_not_cacheable() {
        for method in ["notifications/progress", "notifications/message", "notifications/tasks/status"] {
            let mut o = Observer::new(Some("1".into()), true, 1 << 20);
            o.feed(format!("data: {{\"jsonrpc\":\"2.0\",\"method\":\"{method}\",\"params\":{{}}}}\n\n").as_bytes());
            o.feed(b"data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"content\":[]}}\n\n");
            assert!(o.answered() && o.result().is_some());
            assert_eq!(o.cacheable_result(), None, "{method}");
        }
    }

    #[test]
    fn server_requests_errors_and_oversize_are_not_cacheable() {
        let mut o = Observer::new(Some("1".into()), true, 1 << 20);
        o.feed(b"data: {\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"sampling/createMessage\",\"params\":{}}\n\n");
        o.feed(b"data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n\n");
        assert_eq!(o.cacheable_result(), None);
        assert_eq!(o.server_requests, 1);
        let mut e = Observer::new(Some("1".into()), false, 1 << 20);
        e.feed(br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"x"}}"#);
        e.finish();
        assert_eq!(e.cacheable_result(), None);
        let mut big = Observer::new(Some("1".into()), false, 10);
        big.feed(br#"{"jsonrpc":"2.0","id":1,"result":{}}"#);
        big.finish();
        assert_eq!(big.cacheable_result(), None);
        let mut broken = Observer::new(Some("1".into()), false, 1 << 20);
        broken.feed(br#"{"jsonrpc":"2.0","id":1,"result":{"contents":[}"#);
        broken.finish();
        assert_eq!(broken.cacheable_result(), None, "not valid JSON: passed through, not cached");
        let mut other = Observer::new(Some("1".into()), false, 1 << 20);
        other.feed(br#"{"jsonrpc":"2.0","id":2,"result":{}}"#);
        other.finish();
        assert_eq!(other.cacheable_result(), None, "a result for another id");
    }

    #[test]
    fn the_result_is_read_for_the_cache_as_it_is_parsed() {
        // The result before the id, as JSON allows: its facts and stored form come with it.
        let mut o = Observer::new(Some("3".into()), false, 1 << 20);
        o.feed(br#"{"result":{"ttlMs":500,"cacheScope":"public","contents":[1, 2]},"id":3,"jsonrpc":"2.0"}"#);
        o.finish();
        let facts = o.cacheable_result().unwrap();
        assert_eq!((facts.ttl_ms, facts.scope.as_deref()), (Some(500), Some("public")));
        assert_eq!(facts.stored_result, r#"{"cacheScope":"public","contents":[1, 2]}"#);
        // A result that is not an object answers the request, but nothing is kept of it.
        for odd in [r#"[{"a":1}]"#, r#""text""#, "7", "true"] {
            let mut o = Observer::new(Some("1".into()), false, 1 << 20);
            o.feed(format!(r#"{{"jsonrpc":"2.0","id":1,"result":{odd}}}"#).as_bytes());
            o.finish();
            assert!(o.answered() && o.result().is_none(), "{odd}");
        }
        // A null result is no result (as before), and a repeated one no response at all.
        for body in [r#"{"jsonrpc":"2.0","id":1,"result":null}"#, r#"{"jsonrpc":"2.0","id":1,"result":{},"result":{}}"#]
        {
            let mut o = Observer::new(Some("1".into()), false, 1 << 20);
            o.feed(body.as_bytes());
            o.finish();
            assert!(!o.answered(), "{body}");
        }
    }

    /// Two responses with the request's id (a misbehaving upstream): the first is the answer,
    /// and nothing is cached, since client libraries differ in which one they take.
    #[test]
    fn a_request_answered_twice_is_not_cacheable() {
        let result = |text: &str| format!("data: {{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{{\"t\":\"{text}\"}}}}\n\n");
        let error = "data: {\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"code\":1,\"message\":\"m\"}}\n\n";
        let null = "data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":null}\n\n";
        for (first, second) in [(result("a"), result("b")), (error.into(), result("b")), (null.into(), result("b"))] {
            let mut o = Observer::new(Some("1".into()), true, 1 << 20);
            o.feed(first.as_bytes());
            o.feed(second.as_bytes());
            o.finish();
            assert_eq!(o.cacheable_result(), None, "{first} then {second}");
        }
        let mut o = Observer::new(Some("1".into()), true, 1 << 20);
        o.feed(format!("{}{}", result("a"), result("b")).as_bytes());
        assert_eq!(
            o.result().map(|facts| facts.stored_result.as_str()),
            Some(r#"{"t":"a"}"#),
            "the first is the answer"
        );
        // A response to another id is none of this request's.
        let mut o = Observer::new(Some("1".into()), true, 1 << 20);
        o.feed(b"data: {\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{}}\n\n");
        o.feed(result("a").as_bytes());
        assert_eq!(stored(&o), Some(r#"{"t":"a"}"#));
    }

    #[test]
    fn notifications_become_invalidations() {
        let mut o = Observer::new(None, true, 1 << 20);
        o.feed(b"data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/resources/updated\",\"params\":{\"uri\":\"a://1\"}}\n\n");
        o.feed(b": keep-alive\n\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/tools/list_changed\"}\n\n");
        assert_eq!(o.invalidations, vec![Target::Resource("a://1".into()), Target::List(ListKind::Tools)]);
    }
}
