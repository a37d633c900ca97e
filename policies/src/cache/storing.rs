//! Whether and how an upstream answer is kept: what it says about its own caching (hints and
//! flags) and the route's policy decide its scope and lifetime.

use std::borrow::Cow;
use std::time::Duration;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::keys::{Caller, Lookup, Scope};
use crate::canonical::Key;
use crate::config::CachePolicy;
use crate::method::Method;

/// What a result says about its own caching (SEP-2549 hints and result flags), read in one
/// pass over its text; its members are kept borrowed, so the stored form is only written for
/// an answer that is stored (most answers a proxy sees are not: `ttlMs: 0`, an error, a tool).
#[derive(Debug, Clone, Default)]
pub struct ResultFacts<'a> {
    pub ttl_ms: Option<u64>,
    pub scope: Option<String>,
    pub input_required: bool,
    pub is_error: bool,
    /// The result's members except `ttlMs`, in order, values as raw JSON text.
    kept: Vec<(Cow<'a, str>, &'a RawValue)>,
}

impl ResultFacts<'_> {
    /// The result as it is stored: its members except `ttlMs` (a hit restates the freshness
    /// left), as raw JSON text `{...}`, values not re-serialised.
    pub fn stored_result(&self) -> Vec<u8> {
        let length = self.kept.iter().map(|(name, value)| name.len() + value.get().len() + 4).sum::<usize>();
        let mut stored = Vec::with_capacity(length + 2);
        stored.push(b'{');
        for (at, (name, value)) in self.kept.iter().enumerate() {
            if at > 0 {
                stored.push(b',');
            }
            // A name is written back escaped as JSON (writing to a Vec cannot fail).
            let _ = serde_json::to_writer(&mut stored, name.as_ref());
            stored.push(b':');
            stored.extend_from_slice(value.get().as_bytes());
        }
        stored.push(b'}');
        stored
    }
}

/// Reads a `result` object (its JSON text) without copying or re-serialising its values.
/// `None` if it is not one JSON object.
pub fn result_facts(result: &str) -> Option<ResultFacts<'_>> {
    let mut facts = ResultFacts::default();
    for (name, value) in object_members(result)? {
        match name.as_ref() {
            "ttlMs" => {
                // Absent or negative means 0 (spec); fractions are truncated.
                facts.ttl_ms = Some(serde_json::from_str::<f64>(value.get()).map(|v| v.max(0.0) as u64).unwrap_or(0));
                continue;
            }
            "cacheScope" => facts.scope = serde_json::from_str::<String>(value.get()).ok(),
            "resultType" => facts.input_required = value.get() == r#""input_required""#,
            "isError" => facts.is_error = value.get() == "true",
            _ => {}
        }
        facts.kept.push((name, value));
    }
    Some(facts)
}

/// The members of a JSON object in order, names and values borrowed from its text where they
/// can be (a name with an escape is unescaped).
fn object_members(raw: &str) -> Option<Vec<(Cow<'_, str>, &RawValue)>> {
    struct Members;
    impl<'de> Visitor<'de> for Members {
        type Value = Vec<(Cow<'de, str>, &'de RawValue)>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::with_capacity(map.size_hint().unwrap_or(4));
            while let Some(name) = map.next_key_seed(Key)? {
                out.push((name, map.next_value()?));
            }
            Ok(out)
        }
    }
    let mut deserializer = serde_json::Deserializer::from_str(raw);
    let members = deserializer.deserialize_map(Members).ok()?;
    // Nothing but whitespace may follow the object.
    deserializer.end().ok()?;
    Some(members)
}

/// Whether the upstream's HTTP `Cache-Control` (all its lines, joined) forbids a shared cache
/// to keep the answer: `no-store`, or `private` (with or without field names), as nginx's
/// `proxy_cache` reads them. Its other directives are left to the MCP hints: the SDK servers
/// mark every SSE answer `no-cache`, meant for the stream, not the result it carries.
pub fn http_forbids_storing<'a>(cache_control: impl IntoIterator<Item = &'a [u8]>) -> bool {
    cache_control.into_iter().flat_map(|line| line.split(|&b| b == b',')).any(|directive| {
        let name = directive.split(|&b| b == b'=').next().unwrap_or_default().trim_ascii();
        name.eq_ignore_ascii_case(b"no-store") || name.eq_ignore_ascii_case(b"private")
    })
}

/// How an answer is to be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Store {
    pub scope: Scope,
    pub ttl: Duration,
    /// The result carried `ttlMs`: hits restate the remaining freshness.
    pub restate_ttl: bool,
}

/// Decides whether (and how) a result may be stored. `None`: pass it through, never cache.
pub fn store_decision(
    lookup: &Lookup,
    caller: &Caller,
    facts: &ResultFacts<'_>,
    policy: &CachePolicy,
) -> Option<Store> {
    if facts.input_required || facts.is_error {
        return None;
    }
    let hinted = policy.honor_server_hints && facts.ttl_ms.is_some();
    let ttl = if hinted {
        Duration::from_millis(facts.ttl_ms.unwrap_or(0)).min(policy.max_ttl)
    } else {
        match lookup.method {
            Method::ResourcesRead => policy.resource_ttl,
            Method::ToolsCall => policy.tool_ttl,
            _ => policy.list_ttl,
        }
        .min(policy.max_ttl)
    };
    if ttl.is_zero() {
        return None;
    }
    let hinted_scope = if policy.honor_server_hints { facts.scope.as_deref() } else { None };
    let scope = match hinted_scope {
        Some("public") => Scope::Public(caller.audience()),
        // No hint: the operator may vouch that this route's answers are the same for all.
        None if policy.shared => Scope::Public(caller.audience()),
        // Handshake-era lists vary per session (client capabilities): never shared across sessions.
        None if !caller.stateless && lookup.method.is_list() => Scope::Session(caller.session.clone()?),
        _ => match (&caller.identity, caller.stateless, &caller.session) {
            (Some(identity), _, _) => Scope::Private(identity.clone()),
            (None, false, Some(session)) => Scope::Session(session.clone()),
            _ => return None,
        },
    };
    Some(Store { scope, ttl, restate_ttl: facts.ttl_ms.is_some() })
}
