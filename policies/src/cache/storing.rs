//! Whether and how an upstream answer is kept: what it says about its own caching (hints and
//! flags) and the route's policy decide its scope and lifetime.

use std::time::Duration;

use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::keys::{Caller, Lookup, Scope};
use crate::canonical::Key;
use crate::config::CachePolicy;
use crate::method::Method;

/// A response's `result` as the cache reads it: what it says about its own caching (SEP-2549
/// hints and result flags) and the form it is stored in, both from one pass over its text as
/// the response is read (see [`crate::observe`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResultFacts {
    pub ttl_ms: Option<u64>,
    pub scope: Option<String>,
    pub input_required: bool,
    pub is_error: bool,
    /// The result's members except `ttlMs` (a hit restates the freshness left), as JSON text
    /// `{...}`: values as the upstream wrote them, names written back as JSON.
    pub stored_result: String,
}

/// Reads a `result` on its own (its JSON text). `None` if it is not one JSON object. The
/// proxy reads results inside responses ([`read_result`]); this is for tests.
#[cfg(test)]
pub fn result_facts(result: &str) -> Option<ResultFacts> {
    let mut deserializer = serde_json::Deserializer::from_str(result);
    let facts = read_result(&mut deserializer).ok()??;
    // Nothing but whitespace may follow the object.
    deserializer.end().ok()?;
    Some(facts)
}

/// Reads one `result` value where it stands in a larger document (a response being read):
/// `Some` facts for an object, `None` for any other JSON value, an error for invalid JSON.
pub fn read_result<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<ResultFacts>, D::Error> {
    deserializer.deserialize_any(ResultVisitor)
}

struct ResultVisitor;

impl<'de> Visitor<'de> for ResultVisitor {
    type Value = Option<ResultFacts>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON-RPC result")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut facts = ResultFacts::default();
        let mut stored = String::with_capacity(256);
        stored.push('{');
        while let Some(name) = map.next_key_seed(Key)? {
            let value: &RawValue = map.next_value()?;
            match name.as_ref() {
                "ttlMs" => {
                    // Absent or negative means 0 (spec); fractions are truncated.
                    let ttl = serde_json::from_str::<f64>(value.get()).map(|v| v.max(0.0) as u64);
                    facts.ttl_ms = Some(ttl.unwrap_or(0));
                    continue;
                }
                "cacheScope" => facts.scope = serde_json::from_str::<String>(value.get()).ok(),
                "resultType" => facts.input_required = value.get() == r#""input_required""#,
                "isError" => facts.is_error = value.get() == "true",
                _ => {}
            }
            if stored.len() > 1 {
                stored.push(',');
            }
            // The name written back as JSON (serialising a str cannot fail).
            stored.push_str(&serde_json::to_string(name.as_ref()).unwrap_or_default());
            stored.push(':');
            stored.push_str(value.get());
        }
        stored.push('}');
        facts.stored_result = stored;
        Ok(Some(facts))
    }

    // Any other value is read past: not a result the cache keeps.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
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

/// Request headers an answer may vary on and still be stored: the cache key holds what they
/// say (the protocol version; the method and name mirror the body) or mcp-edge answers them
/// itself (the encoding).
const VARY_KEYED: [&[u8]; 4] = [b"accept-encoding", b"mcp-protocol-version", b"mcp-method", b"mcp-name"];

/// Whether the upstream's `Vary` (all its lines) forbids keeping the answer: `*`, or a request
/// header the cache key does not hold (`Authorization`, `Accept-Language`, `Origin`, …), where
/// a hit could hand one client the variant meant for another's headers. nginx's `proxy_cache`
/// keeps a variant per such header's value; mcp-edge keys entries by the JSON-RPC request
/// and its caller, so it does not store them at all.
pub fn http_vary_forbids_storing<'a>(vary: impl IntoIterator<Item = &'a [u8]>) -> bool {
    vary.into_iter()
        .flat_map(|line| line.split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .any(|name| !name.is_empty() && !VARY_KEYED.iter().any(|keyed| name.eq_ignore_ascii_case(keyed)))
}

/// How an answer is to be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Store {
    pub scope: Scope,
    pub ttl: Duration,
    /// The result carried `ttlMs`: hits restate the remaining freshness.
    pub restate_ttl: bool,
    /// The TTL is mcp-edge's own (the route's policy), not the server's hint.
    pub own_ttl: bool,
}

/// Decides whether (and how) a result may be stored. `None`: pass it through, never cache.
pub fn store_decision(lookup: &Lookup, caller: &Caller, facts: &ResultFacts, policy: &CachePolicy) -> Option<Store> {
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
    // The specification has servers give `server/discover` its hints: without one, it is not
    // kept on the route's own TTLs (meant for data, not for what the server supports).
    if ttl.is_zero() || (lookup.method == Method::ServerDiscover && !hinted) {
        return None;
    }
    let hinted_scope = if policy.honor_server_hints { facts.scope.as_deref() } else { None };
    let scope = match hinted_scope {
        Some("public") => Scope::Public(caller.audience()),
        // Handshake-era lists vary with the capabilities the session declared: shared only
        // among sessions known to have declared the same (they are in the key), else kept
        // for their own session. Without a session the server cannot tell one client's
        // capabilities from another's.
        None if !caller.stateless && lookup.method.is_list() => match (&caller.capabilities, &caller.session) {
            (Some(_), _) | (None, None) if policy.shared => Scope::Public(caller.audience()),
            _ => Scope::session_of(caller)?,
        },
        // No hint: the operator may vouch that this route's answers are the same for all.
        None if policy.shared => Scope::Public(caller.audience()),
        _ => match (&caller.identity, caller.stateless, &caller.session) {
            (Some(identity), _, _) => Scope::Private(identity.clone()),
            (None, false, Some(_)) => Scope::session_of(caller)?,
            _ => return None,
        },
    };
    Some(Store { scope, ttl, restate_ttl: facts.ttl_ms.is_some(), own_ttl: !hinted })
}
