//! The issuer's signing keys, read from a JSON Web Key Set (RFC 7517 §5).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};

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
    /// types, malformed or weak parameters, an `alg` of another family, and HMAC secrets unless
    /// `secrets` says the operator keeps the document) are passed over; a document with none
    /// left is refused, so a broken answer never replaces working keys.
    pub fn parse(document: &[u8], secrets: bool) -> Result<KeySet, String> {
        #[derive(serde::Deserialize)]
        struct Document {
            keys: Vec<serde_json::Value>,
        }
        let document: Document =
            serde_json::from_slice(document).map_err(|e| format!("not a JSON Web Key Set ({e})"))?;
        if document.keys.len() > MAX_KEYS {
            // Refused whole: cutting it could keep junk and drop the keys in use.
            return Err(format!("the key set holds {} keys, more than {MAX_KEYS}", document.keys.len()));
        }
        let usable = |value| signing_key(value).filter(|key| secrets || key.key.family() != AlgorithmFamily::Hmac);
        let keys: Vec<SigningKey> = document.keys.into_iter().filter_map(usable).collect();
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
    if !parameters_usable(&jwk.algorithm) {
        return None;
    }
    let key = DecodingKey::from_jwk(&jwk).ok()?;
    let algorithm = match common.key_algorithm {
        Some(alg) => Some(alg.to_string().parse::<Algorithm>().ok().filter(|alg| alg.family() == key.family())?),
        None => None,
    };
    Some(SigningKey { id: common.key_id.clone(), algorithm, key })
}

/// Whether `point` (uncompressed) is a valid public point of `agreement`'s curve: `ring` checks
/// a peer's point before any key agreement, so one with a throwaway key of ours says it.
fn on_curve(agreement: &'static ring::agreement::Algorithm, point: &[u8]) -> bool {
    let rng = ring::rand::SystemRandom::new();
    let Ok(ours) = ring::agreement::EphemeralPrivateKey::generate(agreement, &rng) else { return false };
    let theirs = ring::agreement::UnparsedPublicKey::new(agreement, point);
    ring::agreement::agree_ephemeral(ours, &theirs, |_| ()).is_ok()
}

/// Whether a key's parameters can verify a signature at all: an RSA modulus of 2048 to 8192
/// bits (what `ring` verifies) with an odd public exponent from 3 to 2^33 - 1; a point on the
/// P-256 or P-384 curve; a 32-byte Ed25519 key (its point is not checked); an HMAC secret of
/// 32 bytes or more.
fn parameters_usable(parameters: &AlgorithmParameters) -> bool {
    let decoded = |text: &str| URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).ok();
    match parameters {
        AlgorithmParameters::RSA(rsa) => {
            let (Some(n), Some(e)) = (decoded(&rsa.n), decoded(&rsa.e)) else { return false };
            let n = &n[n.iter().take_while(|b| **b == 0).count()..];
            let e = &e[e.iter().take_while(|b| **b == 0).count()..];
            let bits = n.len() * 8 - n.first().map_or(8, |top| top.leading_zeros() as usize);
            let exponent =
                e.iter().fold(0u64, |value, byte| value.saturating_mul(256).saturating_add(u64::from(*byte)));
            (2048..=8192).contains(&bits)
                && n.last().is_some_and(|b| b & 1 == 1)
                && e.len() <= 5
                && exponent >= 3
                && exponent & 1 == 1
                && exponent < (1 << 33)
        }
        AlgorithmParameters::EllipticCurve(ec) => {
            let (size, agreement) = match ec.curve {
                EllipticCurve::P256 => (32, &ring::agreement::ECDH_P256),
                EllipticCurve::P384 => (48, &ring::agreement::ECDH_P384),
                _ => return false,
            };
            let (Some(x), Some(y)) = (decoded(&ec.x), decoded(&ec.y)) else { return false };
            x.len() == size && y.len() == size && on_curve(agreement, &[&[4], &x[..], &y[..]].concat())
        }
        AlgorithmParameters::OctetKeyPair(okp) => {
            okp.curve == EllipticCurve::Ed25519 && decoded(&okp.x).is_some_and(|x| x.len() == 32)
        }
        AlgorithmParameters::OctetKey(secret) => decoded(&secret.value).is_some_and(|v| v.len() >= 32),
        _ => false,
    }
}
