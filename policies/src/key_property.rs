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
    let (Ok(first), Ok(second)) = (parse(a), parse(b)) else { return Ok(()) };
    let caller = Caller { stateless: true, protocol_version: Some("2026-07-28".into()), ..Caller::default() };
    let lookup = |message| lookup_for("r", message, &caller, policy, |_| true);
    let (Some(one), Some(two)) = (lookup(&first), lookup(&second)) else { return Ok(()) };
    let scope = Scope::Public(Audience::Anonymous);
    if one.key(&scope) != two.key(&scope) {
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
    use super::*;
    use crate::config::Config;

    /// A small deterministic generator (xorshift): no dependency, the same cases every run.
    struct Cases(u64);

    impl Cases {
        fn next(&mut self, below: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % below as u64) as usize
        }

        fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
            from[self.next(from.len())]
        }

        /// A params object from a few names and values, duplicates and odd types included.
        fn params(&mut self) -> String {
            let names = ["uri", "cursor", "name", "arguments", "_meta", "task", "\\u0075ri"];
            let values = [
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
            let members: Vec<String> =
                (0..self.next(4)).map(|_| format!(r#""{}":{}"#, self.pick(&names), self.pick(&values))).collect();
            format!("{{{}}}", members.join(","))
        }

        fn body(&mut self) -> String {
            let method = self.pick(&["resources/read", "resources/list", "tools/list", "tools/call"]);
            match self.next(5) {
                0 => format!(r#"{{"jsonrpc":"2.0","id":1,"method":"{method}"}}"#),
                _ => format!(r#"{{"jsonrpc":"2.0","id":1,"method":"{method}","params":{}}}"#, self.params()),
            }
        }
    }

    #[test]
    fn requests_share_a_key_only_when_the_upstream_reads_the_same() {
        let config = Config::from_toml("[[route]]\npath = \"/mcp\"\nupstreams = [\"http://h:1/mcp\"]\n").unwrap();
        let mut policy = config.routes[0].policy.clone();
        policy.readonly_tools = true;
        let mut cases = Cases(0x9E37_79B9_7F4A_7C15);
        let bodies: Vec<String> = (0..400).map(|_| cases.body()).collect();
        let mut shared = 0;
        for a in &bodies {
            for b in &bodies {
                same_key_means_same_reading(a.as_bytes(), b.as_bytes(), &policy)
                    .unwrap_or_else(|e| panic!("{a}\n{b}\n{e}"));
                shared += (a != b && reading(a.as_bytes(), false) == reading(b.as_bytes(), false)) as usize;
            }
        }
        assert!(shared > 0, "the cases include different bodies the upstream reads alike");
    }
}
