//! The property cache keys must have, as a function the fuzz target (`fuzz/`) and the unit
//! tests both check: two requests share a key only if the upstream reads the same thing from
//! them. "What the upstream reads" is taken two ways, as JSON parsers disagree on duplicate
//! keys: keeping the last value of a key (serde_json, Python) and keeping the first.

use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::cache::{Audience, Caller, Scope, lookup_for};
use crate::config::CachePolicy;
use crate::jsonrpc::parse;

/// `Err` with both readings when bodies `a` and `b` share a key but not what the upstream
/// reads. Every method is cacheable under `policy` as given; the caller is anonymous.
pub fn same_key_means_same_reading(a: &[u8], b: &[u8], policy: &CachePolicy) -> Result<(), String> {
    if !share_a_key(a, b, policy) {
        return Ok(());
    }
    for keep_first in [false, true] {
        let (x, y) = (reading(a, keep_first), reading(b, keep_first));
        if x != y {
            return Err(format!("one key, two readings (keep first: {keep_first}):\n{x:?}\n{y:?}"));
        }
    }
    Ok(())
}

/// Bodies `a` and `b` are both cacheable under `policy` (for an anonymous caller) and share a key.
fn share_a_key(a: &[u8], b: &[u8], policy: &CachePolicy) -> bool {
    let (Ok(first), Ok(second)) = (parse(a), parse(b)) else { return false };
    let caller = Caller { stateless: true, protocol_version: Some("2026-07-28".into()), ..Caller::default() };
    let lookup = |message| lookup_for("r", message, &caller, policy, |_| true);
    let (Some(one), Some(two)) = (lookup(&first), lookup(&second)) else { return false };
    let scope = Scope::Public(Audience::Anonymous);
    one.key(&scope) == two.key(&scope)
}

/// The method and params an upstream reads from `body` (without `_meta`, which carries no
/// request content; absent or null params read as `{}`).
fn reading(body: &[u8], keep_first: bool) -> Option<(Value, Value)> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let envelope = deserializer.deserialize_any(Reader { keep_first }).ok()?;
    let mut params = match envelope.get("params") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(params) => params.clone(),
    };
    if let Value::Object(members) = &mut params {
        members.remove("_meta");
    }
    Some((envelope.get("method").cloned().unwrap_or(Value::Null), params))
}

/// Reads JSON into a `Value`, keeping the first or the last value of a duplicate key.
#[derive(Clone, Copy)]
struct Reader {
    keep_first: bool,
}

impl<'de> serde::de::DeserializeSeed<'de> for Reader {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Reader {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("JSON")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut members = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(self)?;
            if !(self.keep_first && members.contains_key(&key)) {
                members.insert(key, value);
            }
        }
        Ok(Value::Object(members))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use proptest::sample::select;
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    use super::*;
    use crate::config::Config;

    const METHODS: [&str; 4] = ["resources/read", "resources/list", "tools/list", "tools/call"];
    /// Member names, one of them escaped (`uri` again, as a parser reads it).
    const NAMES: [&str; 7] = ["uri", "cursor", "name", "arguments", "_meta", "task", "\\u0075ri"];
    /// Member values: numbers past f64's exact range, nested duplicates, odd types.
    const VALUES: [&str; 11] = [
        r#""a""#,
        r#""b""#,
        r#""""#,
        "1",
        "9007199254740993",
        "9007199254740992",
        "null",
        "{}",
        r#"{"x":1}"#,
        r#"{"x":1,"x":2}"#,
        "[]",
    ];

    /// Up to three params members from a few names and values, duplicates included.
    fn members() -> impl Strategy<Value = Vec<String>> {
        let member = (select(&NAMES[..]), select(&VALUES[..])).prop_map(|(name, value)| format!(r#""{name}":{value}"#));
        prop::collection::vec(member, 0..4)
    }

    fn body_of(method: &str, members: Option<&[String]>) -> String {
        match members {
            None => format!(r#"{{"jsonrpc":"2.0","id":1,"method":"{method}"}}"#),
            Some(members) => {
                format!(r#"{{"jsonrpc":"2.0","id":1,"method":"{method}","params":{{{}}}}}"#, members.join(","))
            }
        }
    }

    /// A request body of a cacheable method: without params one time in five.
    fn body() -> impl Strategy<Value = String> {
        prop_oneof![
            1 => select(&METHODS[..]).prop_map(|method| body_of(method, None)),
            4 => (select(&METHODS[..]), members()).prop_map(|(method, members)| body_of(method, Some(&members))),
        ]
    }

    /// One body, and another with the same members in another order (where a key that
    /// sorts members must still tell duplicates' order apart).
    fn reordered_pair() -> impl Strategy<Value = (String, String)> {
        (select(&METHODS[..]), members()).prop_flat_map(|(method, members)| {
            let first = body_of(method, Some(&members));
            Just(members).prop_shuffle().prop_map(move |shuffled| (first.clone(), body_of(method, Some(&shuffled))))
        })
    }

    fn policy() -> CachePolicy {
        let config = Config::from_toml("[[route]]\npath = \"/mcp\"\nupstreams = [\"http://h:1/mcp\"]\n").unwrap();
        CachePolicy { readonly_tools: true, ..config.routes[0].policy.clone() }
    }

    proptest! {
        /// Every pair of a batch of bodies (a small alphabet, so pairs often share a key).
        #[test]
        fn requests_share_a_key_only_when_the_upstream_reads_the_same(bodies in prop::collection::vec(body(), 1..50)) {
            let policy = policy();
            for a in &bodies {
                for b in &bodies {
                    let checked = same_key_means_same_reading(a.as_bytes(), b.as_bytes(), &policy);
                    prop_assert!(checked.is_ok(), "{a}\n{b}\n{}", checked.unwrap_err());
                }
            }
        }

        #[test]
        fn reordered_members_share_a_key_only_when_the_upstream_reads_the_same((a, b) in reordered_pair()) {
            let checked = same_key_means_same_reading(a.as_bytes(), b.as_bytes(), &policy());
            prop_assert!(checked.is_ok(), "{a}\n{b}\n{}", checked.unwrap_err());
        }
    }

    /// The properties above are not vacuous: the generated bodies include different texts
    /// the upstream reads alike, and different texts that share a key.
    #[test]
    fn the_cases_include_different_bodies_read_alike_and_keyed_alike() {
        let mut runner = TestRunner::deterministic();
        let bodies: Vec<String> = (0..400).map(|_| body().new_tree(&mut runner).unwrap().current()).collect();
        let pairs = || bodies.iter().flat_map(|a| bodies.iter().map(move |b| (a, b))).filter(|(a, b)| a != b);
        assert!(pairs().any(|(a, b)| reading(a.as_bytes(), false) == reading(b.as_bytes(), false)));
        assert!(pairs().any(|(a, b)| share_a_key(a.as_bytes(), b.as_bytes(), &policy())));
    }
}
