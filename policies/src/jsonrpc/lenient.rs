//! The second reading of `params`, for a body the strict reading refused (a duplicate key, a
//! member of another type than expected). Such a request is carried, never keyed; what is read
//! here only feeds the mirrored-header checks, so it must never disagree with what the upstream
//! reads. A member written twice with different values is therefore reported as ambiguous
//! rather than resolved: JSON parsers differ on which duplicate wins (the SDKs' take the last,
//! others the first or refuse), and a check made against one value while the server acts on
//! the other would let `Mcp-Name` say one thing and the body do another.

use serde::Deserialize;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::{META_PROTOCOL_VERSION, Params};

/// Reads `params` leniently (see the module doc); `raw` failed the strict reading.
pub(super) fn read(raw: &str) -> Params {
    let mut deserializer = serde_json::Deserializer::from_str(raw);
    let mut params = deserializer.deserialize_map(LenientParams).unwrap_or_default();
    params.exact = false;
    params.other_members = true;
    params
}

/// Every occurrence of one member: its value when all occurrences are the same string.
#[derive(Default)]
struct Occurrences {
    value: Option<String>,
    seen: usize,
    conflicting: bool,
}

impl Occurrences {
    /// One more occurrence; a value that is not a JSON string counts as different from any.
    fn saw(&mut self, raw: &RawValue) {
        let value = string_of(raw);
        self.seen += 1;
        if self.seen > 1 && (value.is_none() || value != self.value) {
            self.conflicting = true;
        }
        self.value = value;
    }

    /// The value, unless the occurrences disagree (then the member joins `ambiguous`).
    fn settle(self, member: &'static str, ambiguous: &mut Vec<&'static str>) -> Option<String> {
        if self.conflicting {
            ambiguous.push(member);
            return None;
        }
        self.value
    }
}

/// A JSON string's text, `None` for any other value (the upstream judges those).
fn string_of(raw: &RawValue) -> Option<String> {
    serde_json::from_str(raw.get()).ok()
}

struct LenientParams;

impl<'de> Visitor<'de> for LenientParams {
    type Value = Params;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a params object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Params, A::Error> {
        let [mut uri, mut name, mut cursor, mut version]: [Occurrences; 4] = Default::default();
        let mut params = Params::default();
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match key.as_ref() {
                "uri" => uri.saw(map.next_value()?),
                "name" => name.saw(map.next_value()?),
                "cursor" => cursor.saw(map.next_value()?),
                "arguments" => params.arguments = Some(map.next_value::<&RawValue>()?.get().to_string()),
                "_meta" => map.next_value_seed(LenientMeta(&mut version))?,
                "inputResponses" | "requestState" => {
                    map.next_value::<IgnoredAny>()?;
                    params.has_input_responses = true;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let ambiguous = &mut params.ambiguous;
        params.uri = uri.settle("uri", ambiguous);
        params.name = name.settle("name", ambiguous);
        params.cursor = cursor.settle("cursor", ambiguous);
        params.protocol_version = version.settle(META_PROTOCOL_VERSION, ambiguous);
        Ok(params)
    }
}

/// `_meta`'s protocol version, every occurrence of it; anything but an object is ignored.
struct LenientMeta<'a>(&'a mut Occurrences);

impl<'de> DeserializeSeed<'de> for LenientMeta<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        let raw = <&RawValue>::deserialize(deserializer)?;
        let mut inner = serde_json::Deserializer::from_str(raw.get());
        // A `_meta` that is not an object carries no version.
        let _ = inner.deserialize_map(self);
        Ok(())
    }
}

impl<'de> Visitor<'de> for LenientMeta<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a _meta object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key == META_PROTOCOL_VERSION {
                self.0.saw(map.next_value()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::jsonrpc::{Params, parse};

    fn params(params: &str) -> Params {
        let body = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{params}}}"#);
        parse(body.as_bytes()).unwrap().params
    }

    #[test]
    fn a_member_written_twice_alike_is_read_and_differently_is_ambiguous() {
        let alike = params(r#"{"uri":"a://1","uri":"a://1"}"#);
        assert_eq!((alike.exact, alike.uri.as_deref()), (false, Some("a://1")));
        assert!(alike.ambiguous.is_empty());
        for twice in [
            r#"{"uri":"a://1","uri":"a://2"}"#,
            r#"{"uri":"a://1","\u0075ri":"a://2"}"#,
            r#"{"uri":"a://1","uri":5}"#,
            r#"{"uri":5,"uri":"a://1"}"#,
            r#"{"uri":"a://1","x":1,"uri":"a://1","uri":"a://3"}"#,
        ] {
            let read = params(twice);
            assert_eq!((read.uri, read.ambiguous), (None, vec!["uri"]), "{twice}");
        }
        let versions = params(
            r#"{"uri":"a://1","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/protocolVersion":"2025-11-25"}}"#,
        );
        assert_eq!(versions.ambiguous, vec!["io.modelcontextprotocol/protocolVersion"]);
        assert_eq!(versions.uri.as_deref(), Some("a://1"));
        let every = params(
            r#"{"uri":1,"uri":2,"name":"a","name":"b","cursor":"x","cursor":"y","_meta":{"io.modelcontextprotocol/protocolVersion":"1","io.modelcontextprotocol/protocolVersion":"2"}}"#,
        );
        assert_eq!(every.ambiguous, vec!["uri", "name", "cursor", "io.modelcontextprotocol/protocolVersion"]);
    }

    #[test]
    fn nesting_past_serdes_depth_limit_hides_no_duplicate() {
        let deep = format!("{}{}", "[".repeat(3000), "]".repeat(3000));
        let read = params(&format!(r#"{{"uri":"a://1","x":{deep},"uri":"a://2"}}"#));
        assert_eq!((read.uri, read.ambiguous), (None, vec!["uri"]));
        let meta = params(&format!(
            r#"{{"uri":"a://1","_meta":{{"io.modelcontextprotocol/protocolVersion":"2026-07-28","x":{deep},"io.modelcontextprotocol/protocolVersion":"2025-11-25"}}}}"#
        ));
        assert_eq!(meta.ambiguous, vec!["io.modelcontextprotocol/protocolVersion"]);
    }

    #[test]
    fn one_odd_member_does_not_hide_the_others() {
        let read =
            params(r#"{"uri":"a://1","name":5,"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}"#);
        assert!(!read.exact);
        assert_eq!(read.uri.as_deref(), Some("a://1"));
        assert_eq!(read.name, None, "not a string: the upstream judges it");
        assert_eq!(read.protocol_version.as_deref(), Some("2026-07-28"));
        assert!(read.ambiguous.is_empty());
        let odd_meta = params(r#"{"uri":"a://1","_meta":[1],"arguments":{"k":1,"k":2}}"#);
        assert_eq!((odd_meta.uri.as_deref(), odd_meta.protocol_version), (Some("a://1"), None));
        assert_eq!(odd_meta.arguments.as_deref(), Some(r#"{"k":1,"k":2}"#));
    }
}
