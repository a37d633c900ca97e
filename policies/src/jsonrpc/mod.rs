//! Just enough JSON-RPC parsing for a proxy: what kind of message, which method, which id,
//! and the few params that decide routing and caching. Values the proxy only carries
//! (the id, tool arguments) stay raw JSON text, never re-serialised.

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::canonical::{self, Key, KeySet, UniqueKeys};

mod lenient;
mod meta;
mod one_pass;

pub use meta::{KeyedMeta, META_NEVER_KEYED};

/// JSON-RPC error codes the proxy itself emits.
pub mod codes {
    pub const PARSE_ERROR: i64 = -32700;
    pub const INVALID_REQUEST: i64 = -32600;
    /// Implementation-defined server error: upstream unreachable, timed out, session unknown.
    pub const SERVER_ERROR: i64 = -32000;
    pub const HEADER_MISMATCH: i64 = -32020;
    /// A handshake-era session the server (or the proxy) does not know: start a new one.
    pub const SESSION_NOT_FOUND: i64 = -32001;
}

/// The `_meta` key that carries the protocol version in the stateless era.
pub const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Request,
    Notification,
    Response,
    /// A JSON array of messages (2025-03-26 batching): carried as is, never cached.
    Batch,
}

/// What the proxy knows about one POST body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub kind: Kind,
    pub method: Option<String>,
    /// The request id exactly as the client wrote it (`1`, `"abc"`, …).
    pub id: Option<String>,
    pub params: Params,
}

/// The params that matter to routing and caching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    pub uri: Option<String>,
    pub name: Option<String>,
    pub cursor: Option<String>,
    /// Raw JSON of `params.arguments` (tools/call, prompts/get).
    pub arguments: Option<String>,
    /// `params._meta["io.modelcontextprotocol/protocolVersion"]`.
    pub protocol_version: Option<String>,
    /// The members of `params._meta` that may change an answer, when it was read strictly:
    /// part of a cache key (see [`crate::cache::lookup_for`]).
    pub keyed_meta: KeyedMeta,
    /// The request carries `inputResponses` or `requestState` (MRTR retry): never cacheable.
    pub has_input_responses: bool,
    /// `params` was understood completely: absent, or an object without a duplicate key at
    /// any depth whose `uri`, `name` and `cursor` are strings, `arguments` and `_meta` objects.
    /// Only then may a cache key be built from it (see [`crate::cache::lookup_for`]).
    pub exact: bool,
    /// `params` has members other than `uri`, `name`, `cursor`, `arguments`, `_meta`,
    /// `inputResponses` and `requestState` (their effect on the answer is unknown).
    pub other_members: bool,
    /// Members written more than once with different values (of `uri`, `name`, `cursor` and
    /// the `_meta` protocol version): which one the upstream reads depends on its JSON parser,
    /// so no header may be checked against either (see `lenient`).
    pub ambiguous: Vec<&'static str>,
}

impl Default for Params {
    /// No params at all: understood.
    fn default() -> Self {
        Params {
            uri: None,
            name: None,
            cursor: None,
            arguments: None,
            protocol_version: None,
            keyed_meta: KeyedMeta::default(),
            has_input_responses: false,
            exact: true,
            other_members: false,
            ambiguous: Vec::new(),
        }
    }
}

/// Why a body is not an acceptable JSON-RPC message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub code: i64,
    pub message: String,
    /// The id, when it could be read, so the error answers the right request.
    pub id: Option<String>,
}

#[derive(Deserialize)]
struct Envelope<'a> {
    jsonrpc: Option<&'a str>,
    #[serde(borrow, default, deserialize_with = "written")]
    id: Option<&'a RawValue>,
    method: Option<String>,
    #[serde(borrow)]
    params: Option<&'a RawValue>,
    #[serde(borrow)]
    result: Option<&'a RawValue>,
    #[serde(borrow)]
    error: Option<&'a RawValue>,
}

/// `Some` for any id written, `null` included: MCP request ids must not be null, and serde's
/// `Option` would read a `null` id as no id (a notification).
fn written<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(deserializer).map(Some)
}

/// Parses one POST body.
///
/// A well-formed request is read in one pass ([`one_pass`]); anything that pass does not take
/// as it is (a duplicate member, an unexpected type, invalid JSON) is read again by
/// [`parse_in_two_passes`], which is the reference and words every error.
pub fn parse(body: &[u8]) -> Result<Message, Invalid> {
    if is_batch(body) {
        return parse_batch(body);
    }
    match one_pass::read(body) {
        Some(parts) => parts.into_message(),
        None => parse_message_in_two_passes(body),
    }
}

/// [`parse`] as it was before the one-pass reader: the envelope first (params kept as raw
/// text), then the params. Public so tests and the fuzzer can hold the one-pass reader to it.
#[doc(hidden)]
pub fn parse_in_two_passes(body: &[u8]) -> Result<Message, Invalid> {
    if is_batch(body) {
        return parse_batch(body);
    }
    parse_message_in_two_passes(body)
}

/// A JSON array of messages (its first character other than whitespace is `[`).
fn is_batch(body: &[u8]) -> bool {
    body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[')
}

/// One message (not a batch): the envelope first (params kept as raw text), then the params.
fn parse_message_in_two_passes(body: &[u8]) -> Result<Message, Invalid> {
    let envelope: Envelope = serde_json::from_slice(body).map_err(|e| parse_failure(body, &e))?;
    Parts {
        jsonrpc: envelope.jsonrpc,
        id: envelope.id,
        method: envelope.method,
        answered: envelope.result.is_some() || envelope.error.is_some(),
        params: parse_params(envelope.params),
    }
    .into_message()
}

/// A message's members as read, before they are checked.
struct Parts<'a> {
    jsonrpc: Option<&'a str>,
    id: Option<&'a RawValue>,
    method: Option<String>,
    /// A `result` or an `error` (neither `null`).
    answered: bool,
    params: Params,
}

impl Parts<'_> {
    fn into_message(self) -> Result<Message, Invalid> {
        let id = self.id.map(|raw| raw.get().to_string());
        let invalid = |message: &str| Invalid { code: codes::INVALID_REQUEST, message: message.into(), id: id.clone() };
        if self.jsonrpc != Some("2.0") {
            return Err(invalid("Invalid Request: \"jsonrpc\" must be \"2.0\""));
        }
        if let Some(raw) = self.id
            && !(raw.get().starts_with('"') || raw.get().starts_with(|c: char| c == '-' || c.is_ascii_digit()))
        {
            return Err(invalid("Invalid Request: \"id\" must be a string or a number"));
        }
        let kind = match (&self.method, &self.id, self.answered) {
            (Some(_), Some(_), _) => Kind::Request,
            (Some(_), None, _) => Kind::Notification,
            (None, Some(_), true) => Kind::Response,
            _ => {
                return Err(invalid(
                    "Invalid Request: a message needs a \"method\", or an \"id\" with a \"result\" or \"error\"",
                ));
            }
        };
        Ok(Message { kind, method: self.method, id, params: self.params })
    }
}

fn parse_batch(body: &[u8]) -> Result<Message, Invalid> {
    let items: Vec<&RawValue> = serde_json::from_slice(body).map_err(|e| parse_failure(body, &e))?;
    if items.is_empty() {
        return Err(Invalid { code: codes::INVALID_REQUEST, message: "Invalid Request: empty batch".into(), id: None });
    }
    Ok(Message { kind: Kind::Batch, method: None, id: None, params: Params::default() })
}

/// Syntax errors are -32700; well-formed JSON of the wrong shape is -32600.
fn parse_failure(body: &[u8], error: &serde_json::Error) -> Invalid {
    let well_formed = serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok();
    if well_formed {
        Invalid { code: codes::INVALID_REQUEST, message: format!("Invalid Request: {error}"), id: None }
    } else {
        Invalid { code: codes::PARSE_ERROR, message: format!("Parse error: {error}"), id: None }
    }
}

/// Params are read twice over if need be. Strictly first ([`ExactParams`]): every member the
/// proxy reads of its expected type and no duplicate key anywhere. What fails that is carried,
/// not refused (the upstream is the judge of its own methods), read leniently for the header
/// checks ([`lenient`]), and marked inexact so that no cache key is built from a guess.
fn parse_params(raw: Option<&RawValue>) -> Params {
    let Some(raw) = raw else {
        return Params::default();
    };
    let mut deserializer = serde_json::Deserializer::from_str(raw.get());
    deserializer.deserialize_map(ExactParams).unwrap_or_else(|_| lenient::read(raw.get()))
}

/// Reads `params` strictly, in one pass: fails on a duplicate key at any depth or a member the
/// proxy reads that has another type than it expects.
struct ExactParams;

impl<'de> Visitor<'de> for ExactParams {
    type Value = Params;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a params object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Params, A::Error> {
        let mut seen = KeySet::default();
        let mut params = Params::default();
        while let Some(name) = map.next_key_seed(Key)? {
            if !seen.insert(name.clone()) {
                return Err(de::Error::custom("duplicate key"));
            }
            match name.as_ref() {
                "uri" => params.uri = Some(map.next_value()?),
                "name" => params.name = Some(map.next_value()?),
                "cursor" => params.cursor = Some(map.next_value()?),
                "arguments" => {
                    let arguments: &RawValue = map.next_value()?;
                    if !arguments.get().starts_with('{') || !canonical::unique_keys(arguments.get()) {
                        return Err(de::Error::custom("arguments must be an object without duplicate keys"));
                    }
                    params.arguments = Some(arguments.get().to_string());
                }
                "_meta" => {
                    let meta = map.next_value_seed(meta::ReadMeta)?;
                    params.protocol_version = meta.protocol_version;
                    params.keyed_meta = meta.keyed;
                }
                "inputResponses" | "requestState" => {
                    map.next_value_seed(UniqueKeys)?;
                    params.has_input_responses = true;
                }
                _ => {
                    map.next_value_seed(UniqueKeys)?;
                    params.other_members = true;
                }
            }
        }
        Ok(params)
    }
}

/// A JSON-RPC error response body. `id` is the raw id text; `None` writes `null`
/// (allowed only when the request id is unknown).
pub fn error_body(id: Option<&str>, code: i64, message: &str) -> String {
    let message = serde_json::to_string(message).unwrap_or_else(|_| "\"error\"".into());
    format!(r#"{{"jsonrpc":"2.0","id":{},"error":{{"code":{code},"message":{message}}}}}"#, id.unwrap_or("null"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_resources_read_request() {
        let m = parse(br#"{"jsonrpc":"2.0","id":7,"method":"resources/read","params":{"uri":"docs://a","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#).unwrap();
        assert_eq!(m.kind, Kind::Request);
        assert_eq!(m.method.as_deref(), Some("resources/read"));
        assert_eq!(m.id.as_deref(), Some("7"));
        assert_eq!(m.params.uri.as_deref(), Some("docs://a"));
        assert_eq!(m.params.protocol_version.as_deref(), Some("2026-07-28"));
    }

    #[test]
    fn keeps_raw_ids_and_arguments() {
        let m = parse(br#"{"jsonrpc":"2.0","id":"a\u00e9","method":"tools/call","params":{"name":"add","arguments":{"b":2, "a":1}}}"#).unwrap();
        assert_eq!(m.id.as_deref(), Some(r#""a\u00e9""#));
        assert_eq!(m.params.name.as_deref(), Some("add"));
        assert_eq!(m.params.arguments.as_deref(), Some(r#"{"b":2, "a":1}"#));
        let big = parse(br#"{"jsonrpc":"2.0","id":123456789012345678901234567890,"method":"ping"}"#).unwrap();
        assert_eq!(big.id.as_deref(), Some("123456789012345678901234567890"));
    }

    #[test]
    fn classifies_notifications_responses_and_batches() {
        assert_eq!(
            parse(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).unwrap().kind,
            Kind::Notification
        );
        assert_eq!(parse(br#"{"jsonrpc":"2.0","id":1,"result":{}}"#).unwrap().kind, Kind::Response);
        assert_eq!(parse(br#" [{"jsonrpc":"2.0","id":1,"method":"ping"}]"#).unwrap().kind, Kind::Batch);
        assert!(
            parse(br#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"inputResponses":{}}}"#)
                .unwrap()
                .params
                .has_input_responses
        );
    }

    #[test]
    fn params_are_marked_exact_only_when_read_completely() {
        let params = |body: &str| parse(body.as_bytes()).unwrap().params;
        let clean =
            params(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"cursor":"p2","_meta":{"a":{"b":1}}}}"#);
        assert!(clean.exact && !clean.other_members);
        assert_eq!(clean.cursor.as_deref(), Some("p2"));
        for inexact in [
            r#"{"cursor":"p2","cursor":"p3"}"#,
            r#"{"cursor":"p2","name":5}"#,
            r#"{"_meta":{"x":1,"x":1}}"#,
            r#"{"arguments":{"a":[{"k":1,"k":2}]}}"#,
            r#"{"arguments":"text"}"#,
            r#"[1,2]"#,
        ] {
            let body = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{inexact}}}"#);
            assert!(!params(&body).exact, "{inexact}");
        }
        let other = params(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","task":{}}}"#);
        assert!(other.exact && other.other_members);
        // What is not exact is still read leniently for the mirrored-header checks.
        let lenient =
            params(r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"a://1","x":{"k":1,"k":2}}}"#);
        assert_eq!((lenient.exact, lenient.uri.as_deref()), (false, Some("a://1")));
    }

    #[test]
    fn malformed_json_is_a_parse_error() {
        for body in [&b"{not json"[..], b"", b"{\"jsonrpc\":\"2.0\",", b"[1,"] {
            assert_eq!(parse(body).unwrap_err().code, codes::PARSE_ERROR, "{body:?}");
        }
    }

    #[test]
    fn a_null_id_is_an_invalid_request_not_a_notification() {
        let refused = parse(br#"{"jsonrpc":"2.0","id":null,"method":"tools/list"}"#).unwrap_err();
        assert_eq!((refused.code, refused.id.as_deref()), (codes::INVALID_REQUEST, Some("null")));
        let response = parse(br#"{"jsonrpc":"2.0","id":null,"error":{"code":1,"message":"m"}}"#).unwrap_err();
        assert_eq!(response.code, codes::INVALID_REQUEST);
        let absent = parse(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).unwrap();
        assert_eq!((absent.kind, absent.id), (Kind::Notification, None));
    }

    #[test]
    fn wrong_shapes_are_invalid_requests() {
        for body in [
            &br#"42"#[..],
            br#"{"id":1,"method":"ping"}"#,
            br#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#,
            br#"{"jsonrpc":"2.0","id":1}"#,
            br#"{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}"#,
            br#"[]"#,
        ] {
            assert_eq!(parse(body).unwrap_err().code, codes::INVALID_REQUEST, "{}", String::from_utf8_lossy(body));
        }
        assert_eq!(parse(br#"{"jsonrpc":"1.0","id":"x","method":"ping"}"#).unwrap_err().id.as_deref(), Some("\"x\""));
    }

    #[test]
    fn error_bodies_are_valid_json() {
        let body = error_body(Some("\"q\""), codes::HEADER_MISMATCH, "Header \"x\" mismatch");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["id"], "q");
        assert_eq!(v["error"]["code"], -32020);
        assert_eq!(v["error"]["message"], "Header \"x\" mismatch");
        let v: serde_json::Value = serde_json::from_str(&error_body(None, -32700, "x")).unwrap();
        assert!(v["id"].is_null());
    }
}
