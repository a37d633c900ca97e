//! The common case read in one pass: the envelope and its params together. The two-pass
//! reader ([`super::parse_in_two_passes`]) first keeps `params` as raw text and then parses
//! that text again; on a `tools/call` that was about a third of the proxy's JSON work.
//!
//! This pass gives up (`None`) on anything it would not read exactly as the two-pass reader
//! does: a repeated envelope member, params that are not read strictly ([`ExactParams`]), a body
//! that is not UTF-8, invalid JSON. The caller then reads the body the other way, which also
//! words the error.

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::{ExactParams, Params, Parts};
use crate::canonical::Key;

/// The body's members, if this pass can take the body as it is.
pub(super) fn read(body: &[u8]) -> Option<Parts<'_>> {
    // Checked as UTF-8 once here (JSON text is UTF-8 throughout), so the reader need not check
    // each string again as it does reading bytes. Not UTF-8: the other reader decides.
    let text = std::str::from_utf8(body).ok()?;
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let parts = deserializer.deserialize_map(EnvelopeVisitor).ok()?;
    deserializer.end().ok()?;
    Some(parts)
}

struct EnvelopeVisitor;

impl<'de> Visitor<'de> for EnvelopeVisitor {
    type Value = Parts<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON-RPC message")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Parts<'de>, A::Error> {
        // Each member once (serde's derived reader refuses a repeated known member too).
        let mut jsonrpc: Option<Option<&'de str>> = None;
        let mut id: Option<&'de RawValue> = None;
        let mut method: Option<Option<String>> = None;
        let mut params: Option<Params> = None;
        let mut result: Option<Option<&'de RawValue>> = None;
        let mut error: Option<Option<&'de RawValue>> = None;
        while let Some(name) = map.next_key_seed(Key)? {
            match name.as_ref() {
                "jsonrpc" => once(&mut jsonrpc, map.next_value()?)?,
                // Any id written, `null` included (see `written`).
                "id" => once(&mut id, map.next_value()?)?,
                "method" => once(&mut method, map.next_value()?)?,
                "params" => once(&mut params, map.next_value_seed(StrictParams)?)?,
                "result" => once(&mut result, map.next_value()?)?,
                "error" => once(&mut error, map.next_value()?)?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Parts {
            jsonrpc: jsonrpc.flatten(),
            id,
            method: method.flatten(),
            answered: result.flatten().is_some() || error.flatten().is_some(),
            params: params.unwrap_or_default(),
        })
    }
}

fn once<T, E: de::Error>(slot: &mut Option<T>, value: T) -> Result<(), E> {
    match slot.replace(value) {
        Some(_) => Err(E::custom("repeated member")),
        None => Ok(()),
    }
}

/// `params`: absent or `null` reads as no params (as `Option<&RawValue>` does), an object
/// strictly; anything else fails this pass.
struct StrictParams;

impl<'de> DeserializeSeed<'de> for StrictParams {
    type Value = Params;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Params, D::Error> {
        deserializer.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for StrictParams {
    type Value = Params;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("params")
    }

    fn visit_none<E>(self) -> Result<Params, E> {
        Ok(Params::default())
    }

    fn visit_unit<E>(self) -> Result<Params, E> {
        Ok(Params::default())
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Params, D::Error> {
        deserializer.deserialize_map(ExactParams)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{parse, parse_in_two_passes};

    /// Bodies the one-pass reader takes, and bodies it must leave to the two-pass reader;
    /// either way `parse` answers exactly as the two-pass reader does.
    const BODIES: &[&str] = &[
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"message":"hi"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#,
        r#"{"jsonrpc":"2.0","id":"a\u00e9","method":"resources/read","params":{"uri":"docs://a"}}"#,
        r#" {"method":"ping","id":-3.5e2,"jsonrpc":"2.0","extra":[1,{"x":2}]} "#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":null}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"cursor":"p2","_meta":{"a":{"b":1}}}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":null}"#,
        r#"{"jsonrpc":"2.0","id":1,"result":{"x":1}}"#,
        r#"{"jsonrpc":"2.0","id":1,"result":null}"#,
        r#"{"jsonrpc":"2.0","id":1,"error":{"code":1,"message":"m"}}"#,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        r#"{"jsonrpc":"2.0","id":null,"method":"tools/list"}"#,
        r#"{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}"#,
        r#"{"jsonrpc":"2.0","id":true,"method":"ping"}"#,
        r#"{"jsonrpc":"1.0","id":"x","method":"ping"}"#,
        r#"{"jsonrpc":null,"id":1,"method":"ping"}"#,
        r#"{"jsonrpc":"2.\u0030","id":1,"method":"ping"}"#,
        r#"{"jsonrpc":"2.0","id":1,"meth\u006fd":"ping"}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"a","method":"b"}"#,
        r#"{"jsonrpc":"2.0","id":1,"id":2,"method":"ping"}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"ping","x":1,"x":2}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":{},"params":{}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","name":"b"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","name":"a"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"a://1","x":{"k":1,"k":2}}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"cursor":"p2","name":5}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"arguments":{"a":[{"k":1,"k":2}]}}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"arguments":"text"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":[1,2]}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":7}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"inputResponses":{}}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":1}}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"uri":"a","task":{"t":1}}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"ping"} trailing"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"ping""#,
        r#"{"jsonrpc":"2.0","id":01,"method":"ping"}"#,
        r#"{not json"#,
        r#""#,
        r#"42"#,
        r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#,
        r#"[]"#,
    ];

    #[test]
    fn answers_exactly_as_the_two_pass_reader() {
        for body in BODIES {
            assert_eq!(parse(body.as_bytes()), parse_in_two_passes(body.as_bytes()), "{body}");
        }
        // Bytes that are not UTF-8, inside a string the proxy reads and one it skips.
        for body in [
            &b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"\xff\"}}"[..],
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"other\":\"\xff\"}}",
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"arguments\":{\"a\":\"\xff\"}}}",
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"skipped\":\"\xff\"}",
        ] {
            assert_eq!(parse(body), parse_in_two_passes(body), "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn takes_the_common_requests_in_one_pass() {
        for body in &BODIES[..6] {
            assert!(super::read(body.as_bytes()).is_some(), "{body}");
        }
        // A repeated member (an unknown one is skipped, as serde's derived reader skips it).
        assert!(super::read(BODIES[20].as_bytes()).is_some());
        for at in [18, 19, 21, 22, 23] {
            assert!(super::read(BODIES[at].as_bytes()).is_none(), "{}", BODIES[at]);
        }
    }
}
