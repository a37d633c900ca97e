//! Who is asking, in which scopes an answer may be kept for them, and a request's lookup: its
//! base key, the scopes to probe in order, and what invalidates it.

use sha2::{Digest, Sha256};

use super::invalidation::{ListKind, Target};
use crate::config::CachePolicy;
use crate::jsonrpc::{Kind, Message};
use crate::method::Method;

/// Who may be served an entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Everybody of one audience: a public answer fetched without a credential is never served
    /// to a caller with one (a "please log in" result must not hide a user's own answer), nor
    /// the other way round.
    Public(Audience),
    /// Hash of the caller's identity (authorization context).
    Private(String),
    /// A handshake-era session id (as the client sees it), bound to the caller's identity
    /// hash: a session id is no credential, so one that leaks (logs, a shared proxy, a
    /// guessable server) unlocks nothing cached for another identity, nor for a caller
    /// without one.
    Session { id: String, identity: Option<String> },
}

/// Whether a caller presented a credential (a non-blank identity header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Audience {
    Anonymous,
    Authenticated,
}

impl Scope {
    /// The scope's part of a key, in parts hashed one after the other (no string is built per
    /// lookup): `public:anonymous`, `public:authenticated`, `private:<identity hash>`,
    /// `session:<id>\0as:<identity hash or ->`.
    fn key_parts(&self) -> [&[u8]; 4] {
        match self {
            Scope::Public(Audience::Anonymous) => [b"public:", b"anonymous", b"", b""],
            Scope::Public(Audience::Authenticated) => [b"public:", b"authenticated", b"", b""],
            Scope::Private(identity) => [b"private:", identity.as_bytes(), b"", b""],
            Scope::Session { id, identity } => {
                [b"session:", id.as_bytes(), b"\0as:", identity.as_deref().map_or(&b"-"[..], str::as_bytes)]
            }
        }
    }

    /// The session scope of `caller`'s session, if it has one (handshake era).
    pub fn session_of(caller: &Caller) -> Option<Scope> {
        let id = caller.session.clone().filter(|_| !caller.stateless)?;
        Some(Scope::Session { id, identity: caller.identity.clone() })
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
    /// A hash of the capabilities the client declared in its session's `initialize`
    /// (handshake era), when this node saw it: lists may depend on them (see
    /// [`declared_capabilities`]).
    pub capabilities: Option<String>,
    /// The session (handshake era) is known alive on this node: minted or answered through it
    /// since, not ended (see [`Caller::may_take_hits`]).
    pub session_alive: bool,
}

/// A hash of the `params.capabilities` a handshake-era `initialize` (`body`) declares, in
/// canonical form (member order and spacing do not count). Lists may depend on them:
/// server-everything's `tools/list` has 17 tools for a client declaring sampling, elicitation
/// and roots, 13 for one declaring none. `None`: not an `initialize` with readable params.
pub fn declared_capabilities(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Initialize<'a> {
        #[serde(borrow)]
        params: Option<InitializeParams<'a>>,
    }
    #[derive(serde::Deserialize)]
    struct InitializeParams<'a> {
        #[serde(borrow)]
        capabilities: Option<&'a serde_json::value::RawValue>,
    }
    let initialize: Initialize = serde_json::from_slice(body).ok()?;
    let declared = initialize.params?.capabilities.map_or("{}", |raw| raw.get());
    Some(identity_hash(crate::canonical::canonical_json(declared)?.as_bytes()))
}

impl Caller {
    /// Whether a cached answer may be given to this caller, as its upstream would answer it: a
    /// stateless-era caller; a handshake-era caller whose session is known alive; one without
    /// a session where the route's upstream gives none (`upstream_sessionless`). Any other is
    /// the upstream's to answer (a session that ended gets its `404`, a missing one its `400`),
    /// and what it answers may still be stored.
    pub fn may_take_hits(&self, upstream_sessionless: bool) -> bool {
        self.stateless || if self.session.is_some() { self.session_alive } else { upstream_sessionless }
    }

    /// Whom public answers fetched for this caller may be served to.
    pub fn audience(&self) -> Audience {
        if self.identity.is_some() { Audience::Authenticated } else { Audience::Anonymous }
    }
}

/// A hash of an identity header value: keys never contain the raw credential.
pub fn identity_hash(value: &[u8]) -> String {
    hex(&Sha256::digest(value)[..16])
}

/// The identity of a caller whose identity header `header` (lower case) has `value`: none when
/// the value is empty, blank or nothing but list separators (an empty credential, or a
/// `Cookie: ;` without a cookie, is no credential, never an identity two callers could share).
///
/// An `Authorization` value is `<scheme> <credentials>` (RFC 9110 §11.4), whose scheme is read
/// without regard to case and whose separating whitespace is any run of it: `Bearer x`,
/// `bearer x` and `Bearer  x` are one credential to a server, so they are one identity here
/// (else one credential spelled three ways would count as three identities, e.g. to vouch for
/// a prefetch). The credentials themselves are kept as written, and so is a value that is one
/// word (a bare API key, or a scheme alone): it is no scheme to fold, and `SK-ab` and `sk-AB`
/// are two keys to a server that takes bare keys.
pub fn identity_of(header: &str, value: Option<&[u8]>) -> Option<String> {
    let says_something = |v: &&[u8]| v.iter().any(|b| !matches!(b, b';' | b',' | b' ' | b'\t'));
    let value = value.map(<[u8]>::trim_ascii).filter(says_something)?;
    if !matches!(header, "authorization" | "proxy-authorization") {
        return Some(identity_hash(value));
    }
    let scheme_end = value.iter().position(u8::is_ascii_whitespace).unwrap_or(value.len());
    let (scheme, credentials) = value.split_at(scheme_end);
    let credentials = credentials.trim_ascii_start();
    if credentials.is_empty() {
        return Some(identity_hash(value));
    }
    let mut normal = scheme.to_ascii_lowercase();
    normal.push(b' ');
    normal.extend_from_slice(credentials);
    Some(identity_hash(&normal))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A storage key: the SHA-256 of what identifies an entry. Fixed-size, so a cache can hold
/// it inline instead of behind a pointer of its own.
pub type Key = [u8; 32];

pub(super) fn digest(parts: &[&[u8]]) -> Key {
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
    /// A list page's cursor (see `cursors`: an error for it may discard the list's pages).
    pub cursor: Option<String>,
}

impl Lookup {
    /// The storage key of this request's entry in `scope`.
    pub fn key(&self, scope: &Scope) -> Key {
        let [prefix, value, bound_prefix, bound] = scope.key_parts();
        digest(&[self.base.as_bytes(), b"\0", prefix, value, bound_prefix, bound])
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
        // The stateless era's first call: what the server supports, by the protocol version
        // and the capabilities in `_meta` (both keyed). Handshake-era servers have none.
        Method::ServerDiscover if caller.stateless => (["", "", "", ""], vec![Target::Route]),
        Method::ToolsCall => {
            let name = message.params.name.as_deref()?;
            if !tool_allowed(name) {
                return None;
            }
            // No `arguments` is keyed apart from `{}`: a server may read the two apart.
            arguments = match message.params.arguments.as_deref() {
                Some(given) => crate::canonical::canonical_json(given)?,
                None => String::from("-"),
            };
            (["name=", name, "\u{0}args=", &arguments], vec![Target::Route, Target::List(ListKind::Tools)])
        }
        _ => return None,
    };
    let version = caller.protocol_version.as_deref().unwrap_or("-");
    let meta = message.params.keyed_meta.key_part(&policy.unkeyed_meta);
    // The body's `_meta` protocol version is keyed when it is not the header's (the stateless
    // era requires them equal; a handshake-era request may carry either alone).
    let body_version = match message.params.protocol_version.as_deref() {
        Some(body) if Some(body) != caller.protocol_version.as_deref() => ["\u{0}body-version=", body],
        _ => ["", ""],
    };
    // A handshake-era list is keyed by the capabilities its session declared (`-`: unknown,
    // so only its own session's scope may hold it: see `store_decision`).
    let capabilities = match (caller.stateless, method.is_list()) {
        (false, true) => ["\u{0}caps=", caller.capabilities.as_deref().unwrap_or("-")],
        _ => ["", ""],
    };
    let base = join(&[
        route,
        "\u{0}",
        method.as_str(),
        "\u{0}",
        params[0],
        params[1],
        params[2],
        params[3],
        "\u{0}",
        version,
        "\u{0}meta=",
        &meta,
        body_version[0],
        body_version[1],
        capabilities[0],
        capabilities[1],
    ]);
    // The caller's own scopes first: a public answer fetched later for somebody else must not
    // hide the answer this caller was given.
    let mut scopes = Vec::with_capacity(3);
    scopes.extend(Scope::session_of(caller));
    if let Some(identity) = &caller.identity {
        scopes.push(Scope::Private(identity.clone()));
    }
    scopes.push(Scope::Public(caller.audience()));
    let cursor = if method.is_list() { message.params.cursor.clone() } else { None };
    Some(Lookup { method, base, targets, scopes, cursor })
}

/// Whether a key can be built from exactly what the upstream reads of these params: they were
/// understood completely (no duplicate key anywhere, expected types) and hold nothing but the
/// members the key is made of (`_meta` included). Anything else
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
        Method::ServerDiscover => !uri && !name && !cursor && !arguments,
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
