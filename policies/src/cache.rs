//! Cache decisions: what is cacheable, under which key and scope, for how long, and how a hit
//! is written. Pure functions; the proxy does the storing.
//!
//! Keys are SHA-256 digests of (route, method, canonical params without `_meta`, protocol
//! version) plus a scope: one entry for everybody (`public`), one per authorization context
//! (`private`, keyed by a hash of the identity header), or one per handshake-era session.
//! Invalidation cannot enumerate hashed keys, so it works by time: an invalidation records a
//! marker per target (a resource URI, a list kind, the whole route) and an entry whose fetch
//! started before a marker of one of its targets is dead.

use std::time::Duration;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::config::CachePolicy;
use crate::jsonrpc::{Kind, Message};
use crate::method::{Method, Notification};

/// Who may be served an entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Everybody of one audience: a public answer fetched without a credential is never served
    /// to a caller with one (a "please log in" result must not hide a user's own answer), nor
    /// the other way round.
    Public(Audience),
    /// Hash of the caller's identity (authorization context).
    Private(String),
    /// A handshake-era session id (as the client sees it).
    Session(String),
}

/// Whether a caller presented a credential (a non-blank identity header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Audience {
    Anonymous,
    Authenticated,
}

impl Scope {
    /// The scope's part of a key, as a prefix and a value (hashed one after the other, so no
    /// string is built per lookup): `public:anonymous`, `public:authenticated`,
    /// `private:<identity hash>`, `session:<id>`.
    fn key_parts(&self) -> [&[u8]; 2] {
        match self {
            Scope::Public(Audience::Anonymous) => [b"public:", b"anonymous"],
            Scope::Public(Audience::Authenticated) => [b"public:", b"authenticated"],
            Scope::Private(identity) => [b"private:", identity.as_bytes()],
            Scope::Session(session) => [b"session:", session.as_bytes()],
        }
    }
}

/// The caller-side facts a cache decision needs.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// Hash of the identity header's value, when the request carries a non-blank one.
    pub identity: Option<String>,
    /// The session id the client presented (handshake era).
    pub session: Option<String>,
    pub stateless: bool,
    /// `MCP-Protocol-Version` header (results differ between revisions).
    pub protocol_version: Option<String>,
}

impl Caller {
    /// Whom public answers fetched for this caller may be served to.
    pub fn audience(&self) -> Audience {
        if self.identity.is_some() { Audience::Authenticated } else { Audience::Anonymous }
    }
}

/// A hash of an identity header value: keys never contain the raw credential.
pub fn identity_hash(value: &[u8]) -> String {
    hex(&Sha256::digest(value)[..16])
}

/// The identity of a caller whose identity header has `value`: none when the value is empty or
/// blank (an empty credential is no credential, never an identity two callers could share).
pub fn identity_of(value: Option<&[u8]>) -> Option<String> {
    value.map(<[u8]>::trim_ascii).filter(|v| !v.is_empty()).map(identity_hash)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A storage key: the SHA-256 of what identifies an entry. Fixed-size, so a cache can hold
/// it inline instead of behind a pointer of its own.
pub type Key = [u8; 32];

fn digest(parts: &[&[u8]]) -> Key {
    parts.iter().fold(Sha256::new(), |hasher, part| hasher.chain_update(part)).finalize().into()
}

/// A cacheable request: its base key and the scopes to look it up in, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    pub method: Method,
    base: String,
    /// What invalidates entries of this request (see [`Target`]).
    pub targets: Vec<Target>,
    pub scopes: Vec<Scope>,
}

impl Lookup {
    /// The storage key of this request's entry in `scope`.
    pub fn key(&self, scope: &Scope) -> Key {
        let [prefix, value] = scope.key_parts();
        digest(&[self.base.as_bytes(), b"\0", prefix, value])
    }

    /// The key concurrent misses coalesce on: same request, same caller (its identity, else
    /// its session, else every anonymous caller together).
    pub fn coalescing_key(&self, caller: &Caller) -> Key {
        let who: [&[u8]; 2] = match (&caller.identity, &caller.session) {
            (Some(identity), _) => [b"identity:", identity.as_bytes()],
            (None, Some(session)) => [b"session:", session.as_bytes()],
            (None, None) => [b"anonymous", b""],
        };
        digest(&[self.base.as_bytes(), b"\0coalesce:", who[0], who[1]])
    }
}

/// What an invalidation names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// Every entry of the route (purge all).
    Route,
    /// `resources/read` of one URI.
    Resource(String),
    /// The results of `resources/list` and `resources/templates/list`, `tools/list` (and
    /// cached `tools/call`), or `prompts/list`.
    List(ListKind),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ListKind {
    Resources,
    Tools,
    Prompts,
}

impl Target {
    /// A stable text form, used in marker keys.
    pub fn key_part(&self) -> String {
        match self {
            Target::Route => "route".into(),
            Target::Resource(uri) => format!("uri:{uri}"),
            Target::List(ListKind::Resources) => "list:resources".into(),
            Target::List(ListKind::Tools) => "list:tools".into(),
            Target::List(ListKind::Prompts) => "list:prompts".into(),
        }
    }

    /// What a server notification invalidates, if anything.
    pub fn from_notification(method: &str, uri: Option<&str>) -> Option<Target> {
        match Notification::named(method)? {
            Notification::ResourceUpdated => uri.map(|u| Target::Resource(u.to_string())),
            Notification::ResourcesListChanged => Some(Target::List(ListKind::Resources)),
            Notification::ToolsListChanged => Some(Target::List(ListKind::Tools)),
            Notification::PromptsListChanged => Some(Target::List(ListKind::Prompts)),
        }
    }
}

/// Decides whether a request may be answered from (and stored in) the cache, and how to look
/// it up. `readonly_tool` says whether the upstream declared the named tool read-only,
/// idempotent and closed-world.
pub fn lookup_for(
    route: &str,
    message: &Message,
    caller: &Caller,
    policy: &CachePolicy,
    readonly_tool: impl Fn(&str) -> bool,
) -> Option<Lookup> {
    if message.kind != Kind::Request || message.params.has_input_responses {
        return None;
    }
    let method = Method::named(message.method.as_deref()?)?;
    if !(method.is_cacheable_read() || method == Method::ToolsCall) || !keyable_params(method, &message.params) {
        return None;
    }
    let tool_allowed =
        |name: &str| policy.cache_tools.iter().any(|t| t == name) || (policy.readonly_tools && readonly_tool(name));
    let arguments;
    let (params, targets): ([&str; 4], _) = match method {
        Method::ResourcesRead => {
            let uri = message.params.uri.as_deref()?;
            (["uri=", uri, "", ""], vec![Target::Route, Target::Resource(uri.to_string())])
        }
        Method::ResourcesList | Method::ResourcesTemplatesList => {
            (cursor_part(message), vec![Target::Route, Target::List(ListKind::Resources)])
        }
        Method::ToolsList => (cursor_part(message), vec![Target::Route, Target::List(ListKind::Tools)]),
        Method::PromptsList => (cursor_part(message), vec![Target::Route, Target::List(ListKind::Prompts)]),
        Method::ToolsCall => {
            let name = message.params.name.as_deref()?;
            if !tool_allowed(name) {
                return None;
            }
            arguments = crate::canonical::canonical_json(message.params.arguments.as_deref().unwrap_or("{}"))?;
            (["name=", name, "\u{0}args=", &arguments], vec![Target::Route, Target::List(ListKind::Tools)])
        }
        _ => return None,
    };
    let version = caller.protocol_version.as_deref().unwrap_or("-");
    let base =
        join(&[route, "\u{0}", method.as_str(), "\u{0}", params[0], params[1], params[2], params[3], "\u{0}", version]);
    // The caller's own scopes first: a public answer fetched later for somebody else must not
    // hide the answer this caller was given.
    let mut scopes = Vec::with_capacity(3);
    if let (false, Some(session)) = (caller.stateless, &caller.session) {
        scopes.push(Scope::Session(session.clone()));
    }
    if let Some(identity) = &caller.identity {
        scopes.push(Scope::Private(identity.clone()));
    }
    scopes.push(Scope::Public(caller.audience()));
    Some(Lookup { method, base, targets, scopes })
}

/// Whether a key can be built from exactly what the upstream reads of these params: they were
/// understood completely (no duplicate key anywhere, expected types) and hold nothing but the
/// members the key is made of (plus `_meta`, which carries no request content). Anything else
/// (a `cursor` on a read, a `task` on a call, …) may change the answer in ways the key cannot
/// tell: such requests are forwarded uncached.
fn keyable_params(method: Method, params: &crate::jsonrpc::Params) -> bool {
    if !params.exact || params.other_members {
        return false;
    }
    let (uri, name, cursor, arguments) =
        (params.uri.is_some(), params.name.is_some(), params.cursor.is_some(), params.arguments.is_some());
    // An empty cursor is a token of its own to the upstream, not the first page.
    if params.cursor.as_deref() == Some("") {
        return false;
    }
    match method {
        Method::ResourcesRead => !name && !cursor && !arguments,
        Method::ToolsCall => !uri && !cursor,
        _ => !uri && !name && !arguments,
    }
}

/// The params part of a list's key: its cursor (empty for the first page).
fn cursor_part(message: &Message) -> [&str; 4] {
    ["cursor=", message.params.cursor.as_deref().unwrap_or(""), "", ""]
}

/// `parts` end to end in one allocation (a key's base is built for every lookup).
fn join(parts: &[&str]) -> String {
    let mut joined = String::with_capacity(parts.iter().map(|part| part.len()).sum());
    parts.iter().for_each(|part| joined.push_str(part));
    joined
}

/// What a result says about its own caching (SEP-2549 hints and result flags).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResultFacts {
    pub ttl_ms: Option<u64>,
    pub scope: Option<String>,
    pub input_required: bool,
    pub is_error: bool,
    /// The result's members except `ttlMs`, as raw JSON text: `{...}`.
    pub stored_result: String,
}

/// Reads a `result` object without re-serialising its values. `None` if it is not an object.
pub fn result_facts(result: &RawValue) -> Option<ResultFacts> {
    let members = object_members(result.get())?;
    let mut facts = ResultFacts::default();
    let mut kept = Vec::with_capacity(members.len());
    for (name, value) in members {
        match name.as_str() {
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
        kept.push(format!("{}:{}", serde_json::to_string(&name).ok()?, value.get()));
    }
    facts.stored_result = format!("{{{}}}", kept.join(","));
    Some(facts)
}

/// The members of a JSON object in order, values kept raw.
fn object_members(raw: &str) -> Option<Vec<(String, Box<RawValue>)>> {
    struct Members;
    impl<'de> Visitor<'de> for Members {
        type Value = Vec<(String, Box<RawValue>)>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(entry) = map.next_entry::<String, Box<RawValue>>()? {
                out.push(entry);
            }
            Ok(out)
        }
    }
    let mut deserializer = serde_json::Deserializer::from_str(raw);
    deserializer.deserialize_map(Members).ok()
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

/// A stored answer: a fixed header, the result's raw JSON (without `ttlMs`), and optionally the
/// same result pre-compressed for gzip answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<'a> {
    /// Wall-clock milliseconds when the upstream fetch began (invalidations after it win).
    pub fetched_at_ms: u64,
    pub expires_at_ms: u64,
    pub restate_ttl: bool,
    pub result: &'a [u8],
    /// `result` minus its opening `{`, deflated once at store time (see [`Answer`]).
    pub deflated: Option<Deflated<'a>>,
}

/// A raw deflate segment ending on a byte boundary (sync flush, not final), with the CRC-32 of
/// what it inflates to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deflated<'a> {
    pub crc32: u32,
    pub bytes: &'a [u8],
}

/// An answer in three parts: a small per-request `prefix` (id, remaining ttl), the stored
/// `body` (the result after its opening brace), and the closing brace. Split this way, a gzip
/// answer reuses the body's pre-compressed form instead of compressing every hit.
pub struct Answer<'a> {
    pub prefix: Vec<u8>,
    pub body: &'a [u8],
    pub suffix: &'static [u8],
}

impl Answer<'_> {
    pub fn to_bytes(&self) -> Vec<u8> {
        [&self.prefix[..], self.body, self.suffix].concat()
    }

    pub fn len(&self) -> usize {
        self.prefix.len() + self.body.len() + self.suffix.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

const ENTRY_MAGIC: u8 = 0xE2;
const ENTRY_HEADER: usize = 1 + 8 + 8 + 1 + 4 + 4 + 4;

impl<'a> Entry<'a> {
    pub fn encode(&self) -> Vec<u8> {
        let deflated = self.deflated.unwrap_or(Deflated { crc32: 0, bytes: &[] });
        let mut out = Vec::with_capacity(ENTRY_HEADER + self.result.len() + deflated.bytes.len());
        out.push(ENTRY_MAGIC);
        out.extend_from_slice(&self.fetched_at_ms.to_le_bytes());
        out.extend_from_slice(&self.expires_at_ms.to_le_bytes());
        out.push(self.restate_ttl as u8);
        out.extend_from_slice(&(self.result.len() as u32).to_le_bytes());
        out.extend_from_slice(&deflated.crc32.to_le_bytes());
        out.extend_from_slice(&(deflated.bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(self.result);
        out.extend_from_slice(deflated.bytes);
        out
    }

    /// `None` for bytes that are not an entry of this format (e.g. a corrupt disk record, or
    /// one written by an older version).
    pub fn decode(bytes: &'a [u8]) -> Option<Entry<'a>> {
        if bytes.len() < ENTRY_HEADER || bytes[0] != ENTRY_MAGIC {
            return None;
        }
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        let result_len = u32_at(18) as usize;
        let deflated_len = u32_at(26) as usize;
        if bytes.len() != ENTRY_HEADER + result_len + deflated_len || result_len == 0 {
            return None;
        }
        let result = &bytes[ENTRY_HEADER..ENTRY_HEADER + result_len];
        let deflated =
            (deflated_len > 0).then(|| Deflated { crc32: u32_at(22), bytes: &bytes[ENTRY_HEADER + result_len..] });
        Some(Entry {
            fetched_at_ms: u64_at(1),
            expires_at_ms: u64_at(9),
            restate_ttl: bytes[17] == 1,
            result,
            deflated,
        })
    }

    /// The body part of every answer: the result after its opening brace.
    pub fn body(&self) -> &'a [u8] {
        &self.result[1..]
    }

    /// The answer to a request with raw id `id`, at wall-clock `now_ms`.
    pub fn answer(&self, id: &str, now_ms: u64) -> Answer<'a> {
        // Room for the envelope and a restated `"ttlMs":<u64>,` (no regrowth).
        let mut prefix = Vec::with_capacity(id.len() + 64);
        prefix.extend_from_slice(br#"{"jsonrpc":"2.0","id":"#);
        prefix.extend_from_slice(id.as_bytes());
        prefix.extend_from_slice(br#","result":{"#);
        let body = self.body();
        if self.restate_ttl {
            // Remaining freshness, so clients do not extend a TTL that already ran here.
            let remaining = self.expires_at_ms.saturating_sub(now_ms);
            prefix.extend_from_slice(br#""ttlMs":"#);
            prefix.extend_from_slice(itoa::Buffer::new().format(remaining).as_bytes());
            if body.first() != Some(&b'}') {
                prefix.push(b',');
            }
        }
        Answer { prefix, body, suffix: b"}" }
    }
}

/// The storage key of an invalidation marker for `target` of `route`.
pub fn marker_key(route: &str, target: &Target) -> Key {
    digest(&[b"marker\0", route.as_bytes(), b"\0", target.key_part().as_bytes()])
}

/// The storage key of the markers' watermark: the time of the latest marker ever stored, so a
/// restarted process knows which entries may predate a marker it has not seen.
pub fn markers_watermark_key() -> Key {
    digest(&[b"markers-watermark\0"])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::jsonrpc::parse;

    fn policy() -> CachePolicy {
        let config = Config::from_toml("[[route]]\npath = \"/mcp\"\nupstreams = [\"http://h:1/mcp\"]\n").unwrap();
        config.routes[0].policy.clone()
    }

    fn read(uri: &str) -> Message {
        parse(
            format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{{"uri":"{uri}","_meta":{{"x":1}}}}}}"#
            )
            .as_bytes(),
        )
        .unwrap()
    }

    fn stateless(identity: Option<&str>) -> Caller {
        Caller {
            identity: identity.map(|i| identity_hash(i.as_bytes())),
            session: None,
            stateless: true,
            protocol_version: Some("2026-07-28".into()),
        }
    }

    fn legacy(session: &str) -> Caller {
        Caller {
            identity: None,
            session: Some(session.into()),
            stateless: false,
            protocol_version: Some("2025-11-25".into()),
        }
    }

    fn facts(result: &str) -> ResultFacts {
        result_facts(&serde_json::from_str::<Box<RawValue>>(result).unwrap()).unwrap()
    }

    #[test]
    fn only_reads_and_lists_are_cacheable_by_default() {
        let p = policy();
        assert!(lookup_for("r", &read("a://1"), &stateless(None), &p, |_| false).is_some());
        for body in [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#,
            r#"{"jsonrpc":"2.0","method":"notifications/resources/list_changed"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"a","inputResponses":{}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{}}"#,
        ] {
            assert!(
                lookup_for("r", &parse(body.as_bytes()).unwrap(), &stateless(None), &p, |_| true).is_none(),
                "{body}"
            );
        }
    }

    #[test]
    fn tools_are_cached_only_when_opted_in() {
        let call = parse(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add","arguments":{"b":2,"a":1}}}"#,
        )
        .unwrap();
        let same = parse(
            br#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"add","arguments":{"a":1,"b":2}}}"#,
        )
        .unwrap();
        let mut p = policy();
        p.cache_tools = vec!["add".into()];
        let a = lookup_for("r", &call, &stateless(None), &p, |_| false).unwrap();
        let b = lookup_for("r", &same, &stateless(None), &p, |_| false).unwrap();
        let anyone = Scope::Public(Audience::Anonymous);
        assert_eq!(a.key(&anyone), b.key(&anyone), "argument order does not matter");
        let mut p = policy();
        p.readonly_tools = true;
        assert!(lookup_for("r", &call, &stateless(None), &p, |name| name == "add").is_some());
        assert!(lookup_for("r", &call, &stateless(None), &p, |_| false).is_none());
    }

    #[test]
    fn keys_are_the_digests_disk_caches_were_written_with() {
        // A key is SHA-256 of "<route>\0<method>\0<params>\0<version>\0<scope>": entries on
        // disk from earlier versions are found only while this holds. (Public entries were keyed
        // `public` before audiences split them; those are left behind on purpose: any of them
        // may have been fetched without a credential.)
        let lookup = lookup_for("r", &read("a://1"), &stateless(None), &policy(), |_| false).unwrap();
        let expect = |scope: &str| -> Key {
            Sha256::digest(format!("r\0resources/read\0uri=a://1\02026-07-28\0{scope}")).into()
        };
        assert_eq!(lookup.key(&Scope::Public(Audience::Anonymous)), expect("public:anonymous"));
        assert_eq!(lookup.key(&Scope::Public(Audience::Authenticated)), expect("public:authenticated"));
        assert_eq!(lookup.key(&Scope::Private("h".into())), expect("private:h"));
        assert_eq!(lookup.key(&Scope::Session("s".into())), expect("session:s"));
    }

    #[test]
    fn keys_ignore_meta_and_id_but_not_params_scope_or_version() {
        let p = policy();
        #[allow(non_snake_case)]
        let Public = Scope::Public(Audience::Anonymous);
        let caller = stateless(None);
        let a = lookup_for("r", &read("a://1"), &caller, &p, |_| false).unwrap();
        let other_id =
            parse(br#"{"jsonrpc":"2.0","id":"zz","method":"resources/read","params":{"uri":"a://1"}}"#).unwrap();
        assert_eq!(a.key(&Public), lookup_for("r", &other_id, &caller, &p, |_| false).unwrap().key(&Public));
        assert_ne!(a.key(&Public), lookup_for("r", &read("a://2"), &caller, &p, |_| false).unwrap().key(&Public));
        assert_ne!(a.key(&Public), lookup_for("other", &read("a://1"), &caller, &p, |_| false).unwrap().key(&Public));
        assert_ne!(a.key(&Public), a.key(&Scope::Private("x".into())));
        let old = Caller { protocol_version: Some("2025-06-18".into()), ..caller };
        assert_ne!(a.key(&Public), lookup_for("r", &read("a://1"), &old, &p, |_| false).unwrap().key(&Public));
    }

    #[test]
    fn lookups_probe_the_callers_own_scopes_then_its_audiences_public_one() {
        let p = policy();
        let l = lookup_for("r", &read("a://1"), &stateless(Some("Bearer t")), &p, |_| false).unwrap();
        assert_eq!(l.scopes, vec![Scope::Private(identity_hash(b"Bearer t")), Scope::Public(Audience::Authenticated)]);
        let l = lookup_for("r", &read("a://1"), &legacy("s1"), &p, |_| false).unwrap();
        assert_eq!(l.scopes, vec![Scope::Session("s1".into()), Scope::Public(Audience::Anonymous)]);
        let l = lookup_for("r", &read("a://1"), &stateless(None), &p, |_| false).unwrap();
        assert_eq!(l.scopes, vec![Scope::Public(Audience::Anonymous)]);
        assert!(!identity_hash(b"Bearer secret").contains("secret"));
    }

    #[test]
    fn a_public_answer_fetched_anonymously_never_reaches_a_credential() {
        let p = policy();
        let anonymous = stateless(None);
        let user = stateless(Some("Bearer u"));
        let please_log_in = facts(r#"{"contents":[],"ttlMs":60000,"cacheScope":"public"}"#);
        let l = lookup_for("r", &read("a://1"), &anonymous, &p, |_| false).unwrap();
        let stored = store_decision(&l, &anonymous, &please_log_in, &p).unwrap().scope;
        let users_lookup = lookup_for("r", &read("a://1"), &user, &p, |_| false).unwrap();
        assert!(!users_lookup.scopes.contains(&stored), "the user never looks where the anonymous answer is");
        let users_answer = store_decision(&users_lookup, &user, &please_log_in, &p).unwrap().scope;
        assert!(!l.scopes.contains(&users_answer), "nor the other way round");
    }

    #[test]
    fn blank_credentials_are_no_identity() {
        for blank in [&b""[..], b" ", b"\t  "] {
            assert_eq!(identity_of(Some(blank)), None, "{blank:?}");
        }
        assert_eq!(identity_of(None), None);
        assert_eq!(identity_of(Some(b" Bearer t ")), identity_of(Some(b"Bearer t")));
        assert_ne!(identity_of(Some(b"Bearer t")), identity_of(Some(b"Bearer u")));
    }

    #[test]
    fn params_that_are_not_understood_exactly_are_not_keyed() {
        let p = policy();
        let caller = stateless(Some("u"));
        let mut tools = policy();
        tools.cache_tools = vec!["add".into()];
        for (body, why) in [
            (r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"cursor":"p2","cursor":"p2"}}"#, "duplicate"),
            (r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"cursor":"p2","name":5}}"#, "wrong type"),
            (r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"cursor":null}}"#, "null cursor"),
            (r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"cursor":""}}"#, "empty cursor"),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"cursor":"p2","filter":"x"}}"#,
                "unknown member",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"uri":"a://1"}}"#,
                "a member lists do not take",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"a":1,"a":2}}}"#,
                "duplicate in _meta",
            ),
            (r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":[]}"#, "not an object"),
            (r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"a","uri":"b"}}"#, "duplicate uri"),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"a","cursor":"c"}}"#,
                "cursor on a read",
            ),
            (r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":["a"]}}"#, "uri not a string"),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add","arguments":{"a":1,"a":2}}}"#,
                "duplicate argument",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add","arguments":{"a":{"x":1,"x":2}}}}"#,
                "nested duplicate",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add","arguments":[1]}}"#,
                "arguments not an object",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add","arguments":{},"task":{"ttl":1}}}"#,
                "task-augmented",
            ),
        ] {
            let message = parse(body.as_bytes()).unwrap();
            assert!(lookup_for("r", &message, &caller, &tools, |_| false).is_none(), "{why}: {body}");
            assert!(lookup_for("r", &message, &caller, &p, |_| false).is_none(), "{why}: {body}");
        }
        let page2 =
            parse(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"cursor":"p2","_meta":{"x":{"y":1}}}}"#)
                .unwrap();
        let first = parse(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}"#).unwrap();
        let page2 = lookup_for("r", &page2, &caller, &p, |_| false).unwrap();
        let first = lookup_for("r", &first, &caller, &p, |_| false).unwrap();
        assert_ne!(page2.key(&Scope::Public(Audience::Anonymous)), first.key(&Scope::Public(Audience::Anonymous)));
    }

    #[test]
    fn big_integer_arguments_do_not_collide() {
        let mut p = policy();
        p.cache_tools = vec!["add".into()];
        let call = |n: &str| {
            let body = format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"add","arguments":{{"a":{n}}}}}}}"#
            );
            lookup_for("r", &parse(body.as_bytes()).unwrap(), &stateless(None), &p, |_| false)
                .unwrap()
                .key(&Scope::Public(Audience::Anonymous))
        };
        assert_ne!(call("9007199254740993"), call("9007199254740992"));
        assert_ne!(call("12345678901234567890123"), call("12345678901234567890124"));
        assert_eq!(call("5"), call("5"));
    }

    #[test]
    fn hints_decide_ttl_and_scope() {
        let p = policy();
        let caller = stateless(Some("Bearer t"));
        let l = lookup_for("r", &read("a://1"), &caller, &p, |_| false).unwrap();
        let public =
            store_decision(&l, &caller, &facts(r#"{"contents":[],"ttlMs":60000,"cacheScope":"public"}"#), &p).unwrap();
        assert_eq!(
            (public.scope, public.ttl, public.restate_ttl),
            (Scope::Public(Audience::Authenticated), Duration::from_secs(60), true)
        );
        let private =
            store_decision(&l, &caller, &facts(r#"{"contents":[],"ttlMs":5000,"cacheScope":"private"}"#), &p).unwrap();
        assert_eq!(private.scope, Scope::Private(identity_hash(b"Bearer t")));
        assert!(
            store_decision(&l, &caller, &facts(r#"{"contents":[],"ttlMs":0,"cacheScope":"public"}"#), &p).is_none()
        );
        let capped =
            store_decision(&l, &caller, &facts(r#"{"ttlMs":999999999999,"cacheScope":"public"}"#), &p).unwrap();
        assert_eq!(capped.ttl, p.max_ttl);
        // No hint: the policy's TTL, private.
        let unhinted = store_decision(&l, &caller, &facts(r#"{"contents":[]}"#), &p).unwrap();
        assert_eq!((unhinted.ttl, unhinted.restate_ttl), (p.resource_ttl, false));
        assert!(matches!(unhinted.scope, Scope::Private(_)));
    }

    #[test]
    fn private_answers_without_a_credential_are_not_shared() {
        let p = policy();
        let anonymous = stateless(None);
        let l = lookup_for("r", &read("a://1"), &anonymous, &p, |_| false).unwrap();
        assert!(store_decision(&l, &anonymous, &facts(r#"{"ttlMs":5000,"cacheScope":"private"}"#), &p).is_none());
        assert!(store_decision(&l, &anonymous, &facts(r#"{"contents":[]}"#), &p).is_none());
        let mut shared = policy();
        shared.shared = true;
        assert_eq!(
            store_decision(&l, &anonymous, &facts(r#"{"contents":[]}"#), &shared).unwrap().scope,
            Scope::Public(Audience::Anonymous)
        );
        // Handshake era: per session.
        let caller = legacy("s1");
        let l = lookup_for("r", &read("a://1"), &caller, &p, |_| false).unwrap();
        assert_eq!(
            store_decision(&l, &caller, &facts(r#"{"contents":[]}"#), &p).unwrap().scope,
            Scope::Session("s1".into())
        );
    }

    #[test]
    fn handshake_era_lists_are_per_session_unless_shared() {
        let p = policy();
        let caller = Caller { identity: Some("u".into()), ..legacy("s1") };
        let list = parse(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#).unwrap();
        let l = lookup_for("r", &list, &caller, &p, |_| false).unwrap();
        assert_eq!(
            store_decision(&l, &caller, &facts(r#"{"tools":[]}"#), &p).unwrap().scope,
            Scope::Session("s1".into())
        );
        let mut shared = policy();
        shared.shared = true;
        assert_eq!(
            store_decision(&l, &caller, &facts(r#"{"tools":[]}"#), &shared).unwrap().scope,
            Scope::Public(Audience::Authenticated)
        );
    }

    #[test]
    fn errors_and_input_required_are_never_stored() {
        let p = policy();
        let caller = stateless(Some("u"));
        let l = lookup_for("r", &read("a://1"), &caller, &p, |_| false).unwrap();
        assert!(
            store_decision(
                &l,
                &caller,
                &facts(r#"{"resultType":"input_required","ttlMs":5000,"cacheScope":"public"}"#),
                &p
            )
            .is_none()
        );
        assert!(store_decision(&l, &caller, &facts(r#"{"content":[],"isError":true}"#), &p).is_none());
    }

    #[test]
    fn hits_splice_the_id_and_restate_the_ttl() {
        let f =
            facts(r#"{"contents":[{"text":"é \"q\""}],"ttlMs":60000,"cacheScope":"public","resultType":"complete"}"#);
        assert!(!f.stored_result.contains("ttlMs"));
        let entry = Entry {
            fetched_at_ms: 1_000,
            expires_at_ms: 61_000,
            restate_ttl: true,
            result: f.stored_result.as_bytes(),
            deflated: Some(Deflated { crc32: 7, bytes: b"\x01\x02" }),
        };
        let encoded = entry.encode();
        let decoded = Entry::decode(&encoded).unwrap();
        assert_eq!(decoded, entry);
        for id in ["7", r#""abc""#, "123456789012345678901234567890", r#""\u00e9ü""#, "0", "-5"] {
            let answer = decoded.answer(id, 21_000).to_bytes();
            let v: serde_json::Value = serde_json::from_slice(&answer).unwrap();
            assert_eq!(v["id"], serde_json::from_str::<serde_json::Value>(id).unwrap(), "{id}");
            assert_eq!(v["result"]["ttlMs"], 40_000);
            assert_eq!(v["result"]["contents"][0]["text"], "é \"q\"");
            assert_eq!(v["result"]["cacheScope"], "public");
        }
        let expired = decoded.answer("1", 99_000).to_bytes();
        assert_eq!(serde_json::from_slice::<serde_json::Value>(&expired).unwrap()["result"]["ttlMs"], 0);
        let empty = Entry { restate_ttl: true, result: b"{}", ..entry.clone() }.answer("1", 0).to_bytes();
        assert!(serde_json::from_slice::<serde_json::Value>(&empty).is_ok(), "{}", String::from_utf8_lossy(&empty));
        let plain = Entry { restate_ttl: false, deflated: None, ..entry }.answer("1", 0).to_bytes();
        assert!(!String::from_utf8_lossy(&plain).contains("ttlMs"));
        assert!(Entry::decode(b"garbage").is_none());
        assert_eq!(Entry::decode(&Entry { deflated: None, ..entry.clone() }.encode()).unwrap().deflated, None);
        let mut truncated = entry.encode();
        truncated.pop();
        assert!(Entry::decode(&truncated).is_none(), "a truncated record is refused");
    }

    #[test]
    fn notifications_name_targets() {
        assert_eq!(
            Target::from_notification("notifications/resources/updated", Some("a://1")),
            Some(Target::Resource("a://1".into()))
        );
        assert_eq!(
            Target::from_notification("notifications/tools/list_changed", None),
            Some(Target::List(ListKind::Tools))
        );
        assert_eq!(Target::from_notification("notifications/progress", None), None);
        assert_ne!(marker_key("r", &Target::Route), marker_key("r2", &Target::Route));
    }
}
