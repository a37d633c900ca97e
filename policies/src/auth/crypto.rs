//! The signatures of access tokens checked with `ring`, which mcp-edge already carries for
//! TLS: `jsonwebtoken` reads tokens and keys and validates claims, and asks a crypto provider
//! to check signatures. Its own providers would bring a second crypto stack (aws-lc's C build,
//! or RustCrypto's `rsa`, `p256`, `ed25519-dalek`); this one is the few calls below.
//!
//! Verification only: mcp-edge never signs a token. Each verifier checks that the key is of
//! the algorithm's family first, so a token naming `HS256` is never checked against an RSA
//! key's bytes as an HMAC secret (the "algorithm confusion" attack).

use std::sync::Once;

use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{Error, ErrorKind, Result};
use jsonwebtoken::jwk::{EllipticCurve, ThumbprintHash};
use jsonwebtoken::signature::{self, Verifier};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind, EncodingKey};
use ring::signature as ring_sig;

/// The provider, installed once per process before the first token is read.
static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: no_signer,
    verifier_factory: verifier,
    key_utils: KeyUtils {
        rsa_pub_components_from_private_key: |_| Err(unsupported()),
        rsa_pub_components_from_public_key: |_| Err(unsupported()),
        ec_pub_components_from_private_key: |_, _| Err(unsupported()),
        ed_pub_components_from_private_key: no_ed_components,
        compute_digest: digest,
    },
};

/// Makes `ring` the provider of `jsonwebtoken` (idempotent; another provider installed first
/// by someone else would be kept, and it can only be one of the crate's own).
pub fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = PROVIDER.install_default();
    });
}

fn unsupported() -> Error {
    Error::from(ErrorKind::Provider("mcp-edge verifies tokens only".into()))
}

fn no_signer(_: &Algorithm, _: &EncodingKey) -> Result<Box<dyn JwtSigner>> {
    Err(unsupported())
}

fn no_ed_components(_: &[u8], _: &EllipticCurve) -> Result<Vec<u8>> {
    Err(unsupported())
}

fn digest(data: &[u8], hash: ThumbprintHash) -> Result<Vec<u8>> {
    let algorithm = match hash {
        ThumbprintHash::SHA256 => &ring::digest::SHA256,
        ThumbprintHash::SHA384 => &ring::digest::SHA384,
        ThumbprintHash::SHA512 => &ring::digest::SHA512,
        _ => return Err(unsupported()),
    };
    Ok(ring::digest::digest(algorithm, data).as_ref().to_vec())
}

/// How a signature of one algorithm is checked.
#[derive(Clone, Copy)]
enum Check {
    Rsa(&'static ring_sig::RsaParameters),
    /// ECDSA or EdDSA over the key's raw public bytes.
    Raw(&'static dyn ring_sig::VerificationAlgorithm),
    Hmac(ring::hmac::Algorithm),
}

fn verifier(algorithm: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>> {
    use Algorithm::*;
    let check = match algorithm {
        RS256 => Check::Rsa(&ring_sig::RSA_PKCS1_2048_8192_SHA256),
        RS384 => Check::Rsa(&ring_sig::RSA_PKCS1_2048_8192_SHA384),
        RS512 => Check::Rsa(&ring_sig::RSA_PKCS1_2048_8192_SHA512),
        PS256 => Check::Rsa(&ring_sig::RSA_PSS_2048_8192_SHA256),
        PS384 => Check::Rsa(&ring_sig::RSA_PSS_2048_8192_SHA384),
        PS512 => Check::Rsa(&ring_sig::RSA_PSS_2048_8192_SHA512),
        ES256 => Check::Raw(&ring_sig::ECDSA_P256_SHA256_FIXED),
        ES384 => Check::Raw(&ring_sig::ECDSA_P384_SHA384_FIXED),
        EdDSA => Check::Raw(&ring_sig::ED25519),
        HS256 => Check::Hmac(ring::hmac::HMAC_SHA256),
        HS384 => Check::Hmac(ring::hmac::HMAC_SHA384),
        HS512 => Check::Hmac(ring::hmac::HMAC_SHA512),
        _ => return Err(ErrorKind::UnsupportedAlgorithm.into()),
    };
    if key.family() != algorithm.family() {
        return Err(ErrorKind::InvalidAlgorithm.into());
    }
    Ok(Box::new(RingVerifier { algorithm: *algorithm, check, key: key.clone() }))
}

struct RingVerifier {
    algorithm: Algorithm,
    check: Check,
    key: DecodingKey,
}

impl Verifier<Vec<u8>> for RingVerifier {
    fn verify(&self, message: &[u8], signature: &Vec<u8>) -> std::result::Result<(), signature::Error> {
        let verified = match (self.check, self.key.kind()) {
            (Check::Rsa(parameters), DecodingKeyKind::RsaModulusExponent { n, e }) => {
                ring_sig::RsaPublicKeyComponents { n, e }.verify(parameters, message, signature)
            }
            (Check::Rsa(parameters), DecodingKeyKind::SecretOrDer(der)) => {
                ring_sig::UnparsedPublicKey::new(parameters, der).verify(message, signature)
            }
            (Check::Raw(algorithm), DecodingKeyKind::SecretOrDer(public)) => {
                ring_sig::UnparsedPublicKey::new(algorithm, public).verify(message, signature)
            }
            (Check::Hmac(algorithm), DecodingKeyKind::SecretOrDer(secret)) => {
                ring::hmac::verify(&ring::hmac::Key::new(algorithm, secret), message, signature)
            }
            _ => Err(ring::error::Unspecified),
        };
        verified.map_err(|_| signature::Error::new())
    }
}

impl JwtVerifier for RingVerifier {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

/// Whether `algorithm` signs with a key pair (a verifier holds no secret of the issuer's).
pub fn is_asymmetric(algorithm: Algorithm) -> bool {
    algorithm.family() != AlgorithmFamily::Hmac
}
