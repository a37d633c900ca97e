//! Exact JSON: what a cache key may be built from. Two rules keep a key faithful to what an
//! upstream reads:
//!
//! - **No duplicate keys.** Parsers disagree on `{"a":1,"a":2}` (first wins, last wins, error),
//!   so a proxy that reads one value while the upstream reads the other can be made to key one
//!   request as another. [`unique_keys`] finds them at any depth; such a request is never cached.
//! - **Numbers by their exact text.** Going through `f64` merges `9007199254740993` with
//!   `9007199254740992`; [`canonical_json`] keeps every number as written.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// Past this many members a map's keys are checked through a hash set instead of a scan.
const SCAN_LIMIT: usize = 16;

/// Deserializes any JSON value, failing on an object with a duplicate key at any depth.
/// Depth is bounded by serde_json's recursion limit (128), which fails deeper documents.
pub struct UniqueKeys;

impl<'de> DeserializeSeed<'de> for UniqueKeys {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(UniqueKeysVisitor)
    }
}

struct UniqueKeysVisitor;

impl<'de> Visitor<'de> for UniqueKeysVisitor {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(UniqueKeys)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = KeySet::default();
        while let Some(key) = map.next_key_seed(Key)? {
            if !seen.insert(key) {
                return Err(de::Error::custom("duplicate key"));
            }
            map.next_value_seed(UniqueKeys)?;
        }
        Ok(())
    }
}

/// An object's key, borrowed from the input unless it holds escapes. (serde's own
/// `Cow<str>` always allocates: it deserializes the owned form.)
pub(crate) struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Cow<'de, str>, D::Error> {
        deserializer.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }
    fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(key))
    }
    fn visit_str<E>(self, key: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(key.to_string()))
    }
    fn visit_string<E>(self, key: String) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(key))
    }
}

/// Keys an object keeps inline before they spill to the heap (most objects in a request are
/// small: checking one allocates nothing).
const INLINE_KEYS: usize = 8;

/// The keys of one object seen so far: inline while few, then a scan of a vector, then a hash
/// set beyond [`SCAN_LIMIT`].
#[derive(Default)]
pub(crate) struct KeySet<'de> {
    inline: [Option<Cow<'de, str>>; INLINE_KEYS],
    few: Vec<Cow<'de, str>>,
    many: Option<std::collections::HashSet<Cow<'de, str>>>,
}

impl<'de> KeySet<'de> {
    /// Adds `key`; `false` if it was already there.
    pub(crate) fn insert(&mut self, key: Cow<'de, str>) -> bool {
        if let Some(many) = &mut self.many {
            return many.insert(key);
        }
        let mut free = None;
        for (at, slot) in self.inline.iter().enumerate() {
            match slot {
                Some(seen) if *seen == key => return false,
                Some(_) => {}
                None => {
                    free = Some(at);
                    break;
                }
            }
        }
        if let Some(at) = free {
            self.inline[at] = Some(key);
            return true;
        }
        if self.few.contains(&key) {
            return false;
        }
        self.few.push(key);
        if self.few.len() + INLINE_KEYS > SCAN_LIMIT {
            let inline = self.inline.iter_mut().filter_map(Option::take);
            self.many = Some(inline.chain(std::mem::take(&mut self.few)).collect());
        }
        true
    }
}

/// Whether `raw` is JSON without a duplicate key at any depth.
pub fn unique_keys(raw: &str) -> bool {
    let mut deserializer = serde_json::Deserializer::from_str(raw);
    UniqueKeys.deserialize(&mut deserializer).and_then(|()| deserializer.end()).is_ok()
}

/// JSON with object keys sorted at every level, strings in one escaping, and numbers, `true`,
/// `false` and `null` exactly as written: `{"b":2,"a":1}` and `{"a":1, "b":2}` key alike,
/// `2^53 + 1` and `2^53` do not. `None` for invalid JSON or a duplicate key.
pub fn canonical_json(raw: &str) -> Option<String> {
    if !unique_keys(raw) {
        return None;
    }
    let mut out = String::with_capacity(raw.len());
    write_canonical(raw, &mut out)?;
    Some(out)
}

/// Appends the canonical form of the JSON value `raw` (already known valid, duplicate-free and
/// at most serde_json's recursion limit deep, which bounds this recursion).
fn write_canonical(raw: &str, out: &mut String) -> Option<()> {
    let raw = raw.trim_matches(|c: char| c.is_ascii_whitespace());
    match raw.as_bytes().first()? {
        b'{' => {
            let mut members: Vec<(String, &RawValue)> = serde_json::from_str::<Members>(raw).ok()?.0;
            members.sort_by(|a, b| a.0.cmp(&b.0));
            out.push('{');
            for (at, (name, value)) in members.iter().enumerate() {
                if at > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(name).ok()?);
                out.push(':');
                write_canonical(value.get(), out)?;
            }
            out.push('}');
        }
        b'[' => {
            let items: Vec<&RawValue> = serde_json::from_str(raw).ok()?;
            out.push('[');
            for (at, item) in items.iter().enumerate() {
                if at > 0 {
                    out.push(',');
                }
                write_canonical(item.get(), out)?;
            }
            out.push(']');
        }
        b'"' => {
            let text: String = serde_json::from_str(raw).ok()?;
            out.push_str(&serde_json::to_string(&text).ok()?);
        }
        // A number, `true`, `false` or `null`: its text as written (valid, so no whitespace).
        _ => out.push_str(raw),
    }
    Some(())
}

/// An object's members in order, values raw.
struct Members<'a>(Vec<(String, &'a RawValue)>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for Members<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MembersVisitor;
        impl<'de> Visitor<'de> for MembersVisitor {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut members = Vec::new();
                while let Some(name) = map.next_key::<String>()? {
                    members.push((name, map.next_value::<&'de RawValue>()?));
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(MembersVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_sorted_at_every_level() {
        assert_eq!(
            canonical_json(r#" {"b": [ {"z":1,"y":2} ], "a" : "x"} "#).unwrap(),
            r#"{"a":"x","b":[{"y":2,"z":1}]}"#
        );
    }

    #[test]
    fn numbers_keep_their_exact_text() {
        let a = canonical_json(r#"{"n":9007199254740993}"#).unwrap();
        let b = canonical_json(r#"{"n":9007199254740992}"#).unwrap();
        assert_ne!(a, b, "integers past 2^53 stay apart");
        assert_eq!(a, r#"{"n":9007199254740993}"#);
        assert_eq!(
            canonical_json("123456789012345678901234567890.5e-3").unwrap(),
            "123456789012345678901234567890.5e-3"
        );
        assert_ne!(canonical_json("1.0"), canonical_json("1"), "different texts, different keys (never merged)");
    }

    #[test]
    fn strings_are_escaped_one_way() {
        assert_eq!(canonical_json(r#""a\u002fb""#), canonical_json(r#""a/b""#));
        assert_eq!(canonical_json(r#"{"\u0061":1}"#), canonical_json(r#"{"a":1}"#));
    }

    #[test]
    fn duplicate_keys_anywhere_are_refused() {
        for raw in [r#"{"a":1,"a":1}"#, r#"{"x":{"a":1,"a":2}}"#, r#"[{"a":[{"k":1,"k":1}]}]"#, r#"{"a":1,"\u0061":2}"#]
        {
            assert!(!unique_keys(raw), "{raw}");
            assert_eq!(canonical_json(raw), None, "{raw}");
        }
        let many: String = format!("{{{}}}", (0..40).map(|n| format!("\"k{n}\":{n}")).collect::<Vec<_>>().join(","));
        assert!(unique_keys(&many));
        let with_duplicate = many.replace("\"k39\"", "\"k3\"");
        assert!(!unique_keys(&with_duplicate), "found past the scan limit too");
    }

    #[test]
    fn invalid_or_too_deep_json_is_refused() {
        assert_eq!(canonical_json("{"), None);
        assert_eq!(canonical_json("[1,]"), None);
        assert_eq!(canonical_json("1 2"), None);
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert_eq!(canonical_json(&deep), None, "deeper than serde_json's recursion limit");
        let fine = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert_eq!(canonical_json(&fine).unwrap(), fine);
    }
}
