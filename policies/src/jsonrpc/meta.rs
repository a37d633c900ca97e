//! A request's `_meta`, read once while its params are read: its protocol version, and the
//! other members that may change an answer, in the form a cache key takes them
//! ([`KeyedMeta`]; the protocol version is keyed with the request's header version).
//!
//! In the stateless era `_meta` carries the client's capabilities and information, and servers
//! answer by them (server-everything lists 13 or 17 tools by the capabilities declared), so
//! every member is keyed except those the specification defines as not changing a result.
//! Values are keyed by their raw text: two requests share the part only if their members are
//! written alike (in any order), which never lets differently meant `_meta` share an entry;
//! spelling the same value differently only costs a miss.

use std::borrow::Cow;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::META_PROTOCOL_VERSION;
use crate::canonical::{Key, KeySet};

/// `_meta` members the specification defines as not changing a result: the progress token
/// (asks for progress notifications, which a hit does not send) and the W3C trace context
/// (names the request's trace).
pub const META_NEVER_KEYED: [&str; 4] = ["progressToken", "traceparent", "tracestate", "baggage"];

/// The keyed members of a `_meta`, sorted by name: records of `<name length>:<name><value
/// length>:<value's raw text>`, so no name or value can pass for another's part.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyedMeta(String);

impl KeyedMeta {
    /// The key's part: every record, less those whose name is in `unkeyed` (members the
    /// operator vouches never change an answer).
    pub fn key_part(&self, unkeyed: &[String]) -> Cow<'_, str> {
        if unkeyed.is_empty() {
            return Cow::Borrowed(&self.0);
        }
        let mut kept = String::with_capacity(self.0.len());
        for (name, record) in self.records() {
            if !unkeyed.iter().any(|u| u == name) {
                kept.push_str(record);
            }
        }
        Cow::Owned(kept)
    }

    /// Each record's name and whole text.
    fn records(&self) -> impl Iterator<Item = (&str, &str)> {
        let mut rest = self.0.as_str();
        std::iter::from_fn(move || {
            let start = rest;
            let (name, after) = take_sized(rest)?;
            let (_, after) = take_sized(after)?;
            rest = after;
            Some((name, &start[..start.len() - after.len()]))
        })
    }

    fn push(&mut self, name: &str, raw: &str) {
        for part in [name, raw] {
            self.0.push_str(itoa::Buffer::new().format(part.len()));
            self.0.push(':');
            self.0.push_str(part);
        }
    }
}

/// `<length>:<text>` at the start of `text`: the text and what follows it.
fn take_sized(text: &str) -> Option<(&str, &str)> {
    let (length, rest) = text.split_once(':')?;
    let length: usize = length.parse().ok()?;
    Some((rest.get(..length)?, rest.get(length..)?))
}

/// What reading a `_meta` gives.
pub(super) struct MetaRead {
    pub(super) protocol_version: Option<String>,
    pub(super) keyed: KeyedMeta,
}

/// Reads `_meta` strictly: an object without a repeated member (which member a server would
/// take is its parser's choice); its protocol version, and its keyed members.
pub(super) struct ReadMeta;

impl<'de> DeserializeSeed<'de> for ReadMeta {
    type Value = MetaRead;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<MetaRead, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ReadMeta {
    type Value = MetaRead;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a _meta object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<MetaRead, A::Error> {
        let mut seen = KeySet::default();
        let mut protocol_version = None;
        let mut members: Vec<(Cow<'de, str>, &'de RawValue)> = Vec::new();
        while let Some(name) = map.next_key_seed(Key)? {
            if !seen.insert(name.clone()) {
                return Err(de::Error::custom("duplicate key"));
            }
            let raw: &'de RawValue = map.next_value()?;
            if name == META_PROTOCOL_VERSION {
                // Keyed apart (see `lookup_for`): most requests carry nothing else, and then
                // nothing is copied here.
                protocol_version = Some(serde_json::from_str::<String>(raw.get()).map_err(de::Error::custom)?);
            } else if !META_NEVER_KEYED.contains(&name.as_ref()) {
                members.push((name, raw));
            }
        }
        members.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut keyed = KeyedMeta::default();
        for (name, raw) in &members {
            keyed.push(name, raw.get());
        }
        Ok(MetaRead { protocol_version, keyed })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyed(meta: &str) -> Option<KeyedMeta> {
        let mut reader = serde_json::Deserializer::from_str(meta);
        ReadMeta.deserialize(&mut reader).ok().map(|read| read.keyed)
    }

    #[test]
    fn members_are_keyed_in_name_order_less_those_that_change_no_answer() {
        let a = keyed(r#"{"b":{"x":1},"a":"2","progressToken":7,"traceparent":"t"}"#).unwrap();
        let b = keyed(r#"{ "a" : "2", "b":{"x":1} }"#).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.key_part(&[]), r#"1:a3:"2"1:b7:{"x":1}"#);
        assert_eq!(a.key_part(&["b".to_string()]), r#"1:a3:"2""#);
        assert_eq!(keyed(r#"{"progressToken":1}"#).unwrap(), KeyedMeta::default());
        let version = r#"{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}"#;
        assert_eq!(keyed(version).unwrap(), KeyedMeta::default(), "the version is keyed apart");
        // A name spelled with escapes is the name it means.
        assert_eq!(keyed(r#"{"progress\u0054oken":1}"#).unwrap(), KeyedMeta::default());
    }

    #[test]
    fn records_cannot_pass_for_one_another() {
        let one = keyed(r#"{"a":"1:b3:\"x\""}"#).unwrap();
        let two = keyed(r#"{"a":"1","b":"x"}"#).unwrap();
        assert_ne!(one.key_part(&[]), two.key_part(&[]));
        assert_eq!(one.key_part(&["b".to_string()]), one.key_part(&[]), "a value naming b is not b");
    }

    #[test]
    fn a_repeated_member_or_anything_but_an_object_is_not_read() {
        assert_eq!(keyed(r#"{"a":1,"a":2}"#), None);
        assert_eq!(keyed("[1]"), None);
        assert_eq!(keyed(r#"{"io.modelcontextprotocol/protocolVersion":1}"#), None);
    }
}
