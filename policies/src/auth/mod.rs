//! Identity at the edge: OAuth 2.1 bearer tokens (JWT access tokens, RFC 9068) checked once,
//! at the edge, before the cache and the upstream see the request.
//!
//! - [`Verifier`]: signature (against the issuer's [`KeySet`]), issuer, audience, expiry,
//!   not-before, the allowed algorithms, the route's required scopes;
//! - [`Verified`]: what a good token says: its subject, and its **authorization context**, the
//!   digest of every verified claim but those that only name the token instance
//!   ([`INSTANCE_CLAIMS`]): private answers are keyed on it, so a refreshed token keeps its
//!   user's hits while another scope, client, audience or user gets entries of its own;
//! - [`Remembered`]: tokens already verified, so a client's next request costs a lookup;
//! - [`metadata`]: the Protected Resource Metadata document (RFC 9728) and the
//!   `WWW-Authenticate` challenges (RFC 6750 §3).

pub mod crypto;
pub mod keys;
pub mod metadata;
pub mod remembered;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::value::RawValue;

pub use keys::KeySet;
pub use remembered::Remembered;

/// Claims that name one token, not what it grants: left out of the authorization context, so
/// a refreshed token (new `jti`, `iat`, `exp`) is the same context. `auth_time`, `nonce`,
/// `at_hash`, `c_hash` change per sign-in or per token as well; `uti`, `rh`, `aio` are Entra
/// ID's per-token values. Any other claim may change what the server answers: it counts.
pub const INSTANCE_CLAIMS: &[&str] =
    &["exp", "iat", "nbf", "jti", "auth_time", "nonce", "at_hash", "c_hash", "uti", "rh", "aio"];

/// The algorithms accepted unless the route lists others: asymmetric ones, so the edge holds
/// no secret able to mint tokens.
pub const DEFAULT_ALGORITHMS: &[Algorithm] = &[Algorithm::RS256, Algorithm::PS256, Algorithm::ES256, Algorithm::EdDSA];

/// Keys one token is tried against at most.
pub const MAX_TRIES: usize = 3;

/// Tokens longer than this are refused unread (a JWT access token is a few hundred bytes to a
/// few KiB).
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// What a route's tokens are checked against.
#[derive(Debug, Clone, PartialEq)]
pub struct Requirements {
    pub issuer: String,
    pub audience: String,
    pub algorithms: Vec<Algorithm>,
    pub clock_skew: Duration,
    /// Scopes every token must grant.
    pub scopes: Vec<String>,
    /// Claims left out of the authorization context beside [`INSTANCE_CLAIMS`].
    pub instance_claims: Vec<String>,
}

/// Why a request's token is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// No bearer token (none sent, or another scheme).
    Missing,
    /// Not a JWT, or one mcp-edge cannot read (`reason`).
    Malformed(String),
    /// Signed with an algorithm the route does not accept (`none` included).
    AlgorithmNotAllowed(String),
    /// No key of the issuer's set has the token's `kid` (the set may have changed: it is
    /// fetched again, at a bounded rate, and the token checked once more).
    UnknownKey,
    BadSignature,
    Expired,
    NotYetValid,
    WrongIssuer,
    WrongAudience,
    /// A claim the route needs is missing or of the wrong type.
    BadClaim(String),
    /// A good token without every scope the route requires (`403`).
    InsufficientScope,
}

impl Rejection {
    /// The `error_description` (RFC 6750 §3): what was wrong, never the token's content.
    pub fn description(&self) -> String {
        match self {
            Rejection::Missing => "a bearer access token is required".into(),
            Rejection::Malformed(reason) => format!("the access token is malformed: {reason}"),
            Rejection::AlgorithmNotAllowed(alg) => format!("tokens signed with {alg} are not accepted"),
            Rejection::UnknownKey => "the access token is signed with a key the issuer does not publish".into(),
            Rejection::BadSignature => "the access token's signature is invalid".into(),
            Rejection::Expired => "the access token has expired".into(),
            Rejection::NotYetValid => "the access token is not valid yet".into(),
            Rejection::WrongIssuer => "the access token is not from the expected issuer".into(),
            Rejection::WrongAudience => "the access token is not meant for this resource".into(),
            Rejection::BadClaim(claim) => format!("the access token's {claim} claim is missing or invalid"),
            Rejection::InsufficientScope => "the access token lacks a scope this resource requires".into(),
        }
    }

    /// The metric label of the refusal (a fixed set).
    pub fn label(&self) -> &'static str {
        match self {
            Rejection::Missing => "missing",
            Rejection::Malformed(_) => "malformed",
            Rejection::AlgorithmNotAllowed(_) => "algorithm",
            Rejection::UnknownKey => "unknown_key",
            Rejection::BadSignature => "signature",
            Rejection::Expired => "expired",
            Rejection::NotYetValid => "not_yet_valid",
            Rejection::WrongIssuer => "issuer",
            Rejection::WrongAudience => "audience",
            Rejection::BadClaim(_) => "claim",
            Rejection::InsufficientScope => "insufficient_scope",
        }
    }
}

/// What a verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// `sub`: whom the token is for (rate limits, the subject header).
    pub subject: String,
    /// The authorization context's digest: private answers are keyed on it.
    pub context: String,
    pub scopes: Vec<String>,
    /// `exp`, in seconds since the epoch.
    pub expires_at: u64,
    /// `nbf`, when the token has one.
    pub not_before: Option<u64>,
}

impl Verified {
    /// Whether the token is still in its lifetime at `now` (seconds), give or take `skew`.
    pub fn is_current(&self, now: u64, skew: Duration) -> bool {
        let skew = skew.as_secs();
        now <= self.expires_at.saturating_add(skew) && self.not_before.is_none_or(|nbf| nbf <= now.saturating_add(skew))
    }
}

/// Checks tokens against one route's [`Requirements`].
pub struct Verifier {
    requirements: Requirements,
    /// One per accepted algorithm: `jsonwebtoken` checks a token against one algorithm family.
    validations: Vec<(Algorithm, Validation)>,
}

impl Verifier {
    pub fn new(requirements: Requirements) -> Verifier {
        crypto::install();
        let validation = |algorithm: &Algorithm| {
            let mut validation = Validation::new(*algorithm);
            validation.set_issuer(&[&requirements.issuer]);
            validation.set_audience(&[&requirements.audience]);
            validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
            validation.validate_exp = true;
            validation.validate_nbf = true;
            validation.leeway = requirements.clock_skew.as_secs();
            (*algorithm, validation)
        };
        let validations = requirements.algorithms.iter().map(validation).collect();
        Verifier { requirements, validations }
    }

    pub fn requirements(&self) -> &Requirements {
        &self.requirements
    }

    /// Verifies `token` against `keys`: signature, then claims.
    pub fn verify(&self, keys: &KeySet, token: &str) -> Result<Verified, Rejection> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(Rejection::Malformed(format!("longer than {MAX_TOKEN_LEN} bytes")));
        }
        if !is_token68(token) {
            return Err(not_a_token());
        }
        // A header that does not read names no algorithm mcp-edge knows (`none` included).
        let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
            ErrorKind::Json(_) => Rejection::Malformed("its header is not JSON naming a signature algorithm".into()),
            kind => refusal(kind),
        })?;
        let Some((_, validation)) = self.validations.iter().find(|(algorithm, _)| *algorithm == header.alg) else {
            return Err(Rejection::AlgorithmNotAllowed(format!("{:?}", header.alg)));
        };
        // A token without a `kid` (or a set naming one `kid` twice) is tried against a few keys
        // at most: each try is a signature check a forger would get for free.
        let mut candidates = keys.candidates(header.kid.as_deref(), header.alg).take(MAX_TRIES).peekable();
        if candidates.peek().is_none() {
            return Err(Rejection::UnknownKey);
        }
        let mut last = Rejection::BadSignature;
        for key in candidates {
            match jsonwebtoken::decode::<Box<RawValue>>(token, key, validation) {
                Ok(data) => return self.verified(data.claims.get()),
                Err(e) if *e.kind() == ErrorKind::InvalidSignature => last = Rejection::BadSignature,
                Err(e) => return Err(refusal(e.kind())),
            }
        }
        Err(last)
    }

    /// Whether `verified` grants every scope the route requires.
    pub fn check_scopes(&self, verified: &Verified) -> Result<(), Rejection> {
        let granted = |scope: &String| verified.scopes.contains(scope);
        if self.requirements.scopes.iter().all(granted) { Ok(()) } else { Err(Rejection::InsufficientScope) }
    }

    /// What the claims of a token whose signature and registered claims were checked say.
    fn verified(&self, claims: &str) -> Result<Verified, Rejection> {
        #[derive(serde::Deserialize)]
        struct Read {
            iss: Option<serde_json::Value>,
            iat: Option<serde_json::Value>,
            sub: Option<serde_json::Value>,
            exp: Option<serde_json::Value>,
            nbf: Option<serde_json::Value>,
            scope: Option<serde_json::Value>,
            scp: Option<serde_json::Value>,
        }
        let read: Read = serde_json::from_str(claims).map_err(|_| Rejection::Malformed("claims".into()))?;
        let subject = match read.sub {
            Some(serde_json::Value::String(sub)) if !sub.is_empty() => sub,
            _ => return Err(Rejection::BadClaim("sub".into())),
        };
        let seconds = |value: Option<serde_json::Value>, name: &str| match value {
            None => Ok(None),
            Some(value) => value
                .as_f64()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .map(|v| Some(v as u64))
                .ok_or(Rejection::BadClaim(name.into())),
        };
        // `iss` is one string (RFC 7519 §4.1.1): a list naming the issuer among others is not it.
        if !matches!(&read.iss, Some(serde_json::Value::String(iss)) if *iss == self.requirements.issuer) {
            return Err(Rejection::BadClaim("iss".into()));
        }
        seconds(read.iat, "iat")?;
        let expires_at = seconds(read.exp, "exp")?.ok_or(Rejection::BadClaim("exp".into()))?;
        let not_before = seconds(read.nbf, "nbf")?;
        let scopes = scopes_of(read.scope, read.scp)?;
        let context = self.context(claims).ok_or(Rejection::Malformed(
            "claims mcp-edge cannot read exactly (a name twice, a number out of range)".into(),
        ))?;
        Ok(Verified { subject, context, scopes, expires_at, not_before })
    }

    /// The authorization context of a token with `claims`: their exact JSON, keys sorted,
    /// numbers by their text, without the instance claims (see [`INSTANCE_CLAIMS`]).
    /// `None`: a claim named twice (which the upstream might read either way).
    fn context(&self, claims: &str) -> Option<String> {
        if !crate::canonical::unique_keys(claims) {
            return None;
        }
        let all: BTreeMap<String, &RawValue> = serde_json::from_str(claims).ok()?;
        let counted = all.into_iter().filter(|(name, _)| !self.is_instance_claim(name));
        let kept: BTreeMap<String, &RawValue> = counted.collect();
        let canonical = crate::canonical::canonical_json(&serde_json::to_string(&kept).ok()?)?;
        Some(crate::cache::identity_hash(format!("verified-claims\0{canonical}").as_bytes()))
    }

    fn is_instance_claim(&self, name: &str) -> bool {
        INSTANCE_CLAIMS.contains(&name) || self.requirements.instance_claims.iter().any(|claim| claim == name)
    }
}

/// The scopes a token grants: `scope`, a space-separated string (RFC 9068 §2.2.3), or `scp`,
/// a list (Entra ID, Okta) or string.
fn scopes_of(scope: Option<serde_json::Value>, scp: Option<serde_json::Value>) -> Result<Vec<String>, Rejection> {
    let mut scopes = Vec::new();
    for (name, value) in [("scope", scope), ("scp", scp)] {
        match value {
            None => {}
            Some(serde_json::Value::String(text)) => scopes.extend(text.split_ascii_whitespace().map(str::to_string)),
            Some(serde_json::Value::Array(items)) => {
                for item in items {
                    let serde_json::Value::String(item) = item else { return Err(Rejection::BadClaim(name.into())) };
                    scopes.push(item);
                }
            }
            Some(_) => return Err(Rejection::BadClaim(name.into())),
        }
    }
    Ok(scopes)
}

/// The refusal `jsonwebtoken`'s error stands for.
fn refusal(kind: &ErrorKind) -> Rejection {
    match kind {
        ErrorKind::InvalidSignature => Rejection::BadSignature,
        ErrorKind::ExpiredSignature => Rejection::Expired,
        ErrorKind::ImmatureSignature => Rejection::NotYetValid,
        ErrorKind::InvalidIssuer => Rejection::WrongIssuer,
        ErrorKind::InvalidAudience => Rejection::WrongAudience,
        ErrorKind::MissingRequiredClaim(claim) | ErrorKind::InvalidClaimFormat(claim) => {
            Rejection::BadClaim(claim.clone())
        }
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName | ErrorKind::UnsupportedAlgorithm => {
            Rejection::AlgorithmNotAllowed("an algorithm this key cannot verify".into())
        }
        ErrorKind::Base64(_) => Rejection::Malformed("not base64url".into()),
        ErrorKind::Json(_) | ErrorKind::Utf8(_) => Rejection::Malformed("not JSON".into()),
        _ => Rejection::Malformed("not a signed JWT".into()),
    }
}

/// The bearer token of an `Authorization` value (RFC 6750 §2.1): `None` when there is no
/// value or another scheme; an error when it says `Bearer` but holds no token. Whether the
/// token is a token68 is left to [`Verifier::verify`], so a token seen before (remembered
/// whole) costs no scan.
pub fn bearer_token(value: Option<&[u8]>) -> Result<Option<&str>, Rejection> {
    let Some(value) = value.map(<[u8]>::trim_ascii).filter(|v| !v.is_empty()) else { return Ok(None) };
    let scheme_end = value.iter().position(|b| *b == b' ' || *b == b'\t').unwrap_or(value.len());
    let (scheme, rest) = value.split_at(scheme_end);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Ok(None);
    }
    match std::str::from_utf8(rest.trim_ascii_start()) {
        Ok(token) if !token.is_empty() => Ok(Some(token)),
        _ => Err(not_a_token()),
    }
}

fn not_a_token() -> Rejection {
    Rejection::Malformed("the Bearer credentials are not a token".into())
}

/// Whether `token` is a token68 (RFC 9110 §11.2): what a bearer token must be.
fn is_token68(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty()
        && body.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/'))
}
