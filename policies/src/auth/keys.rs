//! The issuer's signing keys, read from a JSON Web Key Set (RFC 7517 §5).

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

/// Keys past this many in one set are not read (a set is a handful; this bounds what an
/// issuer's answer can make mcp-edge hold).
pub const MAX_KEYS: usize = 64;

/// A key set's verification keys.
#[derive(Default)]
pub struct KeySet {
    keys: Vec<SigningKey>,
}

struct SigningKey {
    id: Option<String>,
    /// The one algorithm the key is for, when the set says (`alg`).
    algorithm: Option<Algorithm>,
    key: DecodingKey,
}

impl KeySet {
    /// Reads a JWKS document. Keys that cannot verify signatures (encryption keys, unknown key
    /// types, malformed parameters) are passed over; a document with none left is refused, so
    /// a broken answer never replaces working keys.
    pub fn parse(document: &[u8]) -> Result<KeySet, String> {
        #[derive(serde::Deserialize)]
        struct Document {
            keys: Vec<serde_json::Value>,
        }
        let document: Document =
            serde_json::from_slice(document).map_err(|e| format!("not a JSON Web Key Set ({e})"))?;
        let keys: Vec<SigningKey> = document.keys.into_iter().take(MAX_KEYS).filter_map(signing_key).collect();
        if keys.is_empty() {
            return Err("the key set holds no signature verification key mcp-edge can use".into());
        }
        Ok(KeySet { keys })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keys a token signed with `algorithm` may have been signed with: the ones named
    /// `kid` when the token names one, else every key; never a key made for another algorithm.
    pub fn candidates<'a>(
        &'a self,
        kid: Option<&'a str>,
        algorithm: Algorithm,
    ) -> impl Iterator<Item = &'a DecodingKey> + 'a {
        self.keys
            .iter()
            .filter(move |key| kid.is_none_or(|kid| key.id.as_deref() == Some(kid)))
            .filter(move |key| key.algorithm.is_none_or(|own| own == algorithm))
            .filter(move |key| key.key.family() == algorithm.family())
            .map(|key| &key.key)
    }
}

/// The verification key `value` describes, if it is one.
fn signing_key(value: serde_json::Value) -> Option<SigningKey> {
    let jwk: Jwk = serde_json::from_value(value).ok()?;
    let common = &jwk.common;
    if common.public_key_use.as_ref().is_some_and(|usage| *usage != PublicKeyUse::Signature) {
        return None;
    }
    if common.key_operations.as_ref().is_some_and(|ops| !ops.contains(&KeyOperations::Verify)) {
        return None;
    }
    if matches!(jwk.algorithm, AlgorithmParameters::Other(_)) {
        return None;
    }
    let algorithm = match common.key_algorithm {
        Some(alg) => Some(alg.to_string().parse::<Algorithm>().ok()?),
        None => None,
    };
    let key = DecodingKey::from_jwk(&jwk).ok()?;
    Some(SigningKey { id: common.key_id.clone(), algorithm, key })
}
