use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use serde_json::json;

use super::metadata::Resource;
use super::*;

const ISSUER: &str = "https://idp.example";
const AUDIENCE: &str = "https://mcp.example/mcp";

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// An issuer's Ed25519 key, which signs test tokens.
struct Signer {
    pair: Ed25519KeyPair,
    kid: &'static str,
}

impl Signer {
    fn new(kid: &'static str) -> Signer {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
        Signer { pair: Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap(), kid }
    }

    fn jwk(&self) -> serde_json::Value {
        json!({"kty": "OKP", "crv": "Ed25519", "use": "sig", "kid": self.kid, "x": B64.encode(self.pair.public_key().as_ref())})
    }

    fn sign(&self, header: serde_json::Value, claims: serde_json::Value) -> String {
        let message = format!("{}.{}", B64.encode(header.to_string()), B64.encode(claims.to_string()));
        let signature = self.pair.sign(message.as_bytes());
        format!("{message}.{}", B64.encode(signature.as_ref()))
    }

    fn token(&self, claims: serde_json::Value) -> String {
        self.sign(json!({"alg": "EdDSA", "typ": "at+jwt", "kid": self.kid}), claims)
    }
}

fn keys(signers: &[&Signer]) -> KeySet {
    let document = json!({"keys": signers.iter().map(|s| s.jwk()).collect::<Vec<_>>()});
    KeySet::parse(document.to_string().as_bytes(), false).unwrap()
}

fn requirements() -> Requirements {
    Requirements {
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        algorithms: DEFAULT_ALGORITHMS.to_vec(),
        clock_skew: Duration::from_secs(60),
        scopes: vec![],
        instance_claims: vec![],
    }
}

fn claims(sub: &str, scope: &str) -> serde_json::Value {
    let now = now();
    json!({"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "scope": scope, "client_id": "app",
           "iat": now, "exp": now + 600, "jti": format!("{sub}-{now}-{scope}")})
}

#[test]
fn a_good_token_is_verified_and_names_its_subject_and_scopes() {
    let signer = Signer::new("k1");
    let verifier = Verifier::new(requirements());
    let verified = verifier.verify(&keys(&[&signer]), &signer.token(claims("alice", "read write"))).unwrap();
    assert_eq!(verified.subject, "alice");
    assert_eq!(verified.scopes, ["read", "write"]);
    assert!(verified.is_current(now(), Duration::ZERO));
}

#[test]
fn a_refreshed_token_is_the_same_context_and_other_grants_are_not() {
    let signer = Signer::new("k1");
    let (verifier, keys) = (Verifier::new(requirements()), keys(&[&signer]));
    let context = |claims: serde_json::Value| verifier.verify(&keys, &signer.token(claims)).unwrap().context;
    let first = context(claims("alice", "read"));
    let mut refreshed = claims("alice", "read");
    refreshed["jti"] = json!("another-token");
    refreshed["iat"] = json!(now() - 5);
    refreshed["exp"] = json!(now() + 3600);
    refreshed["nbf"] = json!(now() - 5);
    refreshed["auth_time"] = json!(now() - 100);
    assert_eq!(context(refreshed), first, "instance claims do not count");
    // Member order and spacing do not count either.
    let reordered: serde_json::Value = serde_json::from_str(&format!(
        r#"{{"client_id":"app","sub":"alice","aud":"{AUDIENCE}","scope":"read","iss":"{ISSUER}","exp":{}}}"#,
        now() + 60
    ))
    .unwrap();
    assert_eq!(context(reordered), first);
    assert_ne!(context(claims("alice", "read write")), first, "other scopes, other context");
    assert_ne!(context(claims("bob", "read")), first, "another subject never shares");
    let mut other_client = claims("alice", "read");
    other_client["client_id"] = json!("other-app");
    assert_ne!(context(other_client), first, "another client, other context");
    let mut with_groups = claims("alice", "read");
    with_groups["groups"] = json!(["admins"]);
    assert_ne!(context(with_groups), first, "a claim mcp-edge does not know still counts");
}

#[test]
fn operators_may_name_more_instance_claims() {
    let signer = Signer::new("k1");
    let keys = keys(&[&signer]);
    let verifier = Verifier::new(Requirements { instance_claims: vec!["sid".into()], ..requirements() });
    let with_sid = |sid: &str| {
        let mut claims = claims("alice", "read");
        claims["sid"] = json!(sid);
        verifier.verify(&keys, &signer.token(claims)).unwrap().context
    };
    assert_eq!(with_sid("a"), with_sid("b"));
}

#[test]
fn tokens_that_fail_a_check_are_refused_for_that_reason() {
    let signer = Signer::new("k1");
    let (verifier, keys) = (Verifier::new(requirements()), keys(&[&signer]));
    let refused = |claims: serde_json::Value| verifier.verify(&keys, &signer.token(claims)).unwrap_err();
    let with = |name: &str, value: serde_json::Value| {
        let mut claims = claims("alice", "read");
        claims[name] = value;
        claims
    };
    assert_eq!(refused(with("aud", json!("https://other.example/mcp"))), Rejection::WrongAudience);
    assert_eq!(refused(with("iss", json!("https://evil.example"))), Rejection::WrongIssuer);
    assert_eq!(refused(with("exp", json!(now() - 3600))), Rejection::Expired);
    assert_eq!(refused(with("nbf", json!(now() + 3600))), Rejection::NotYetValid);
    assert!(matches!(refused(with("nbf", json!("99999999999"))), Rejection::BadClaim(_)), "a string nbf is no nbf");
    assert!(matches!(refused(with("exp", json!("never"))), Rejection::BadClaim(_)));
    assert!(matches!(refused(with("sub", json!(42))), Rejection::BadClaim(_)));
    assert!(matches!(refused(with("iat", json!("x"))), Rejection::BadClaim(_)));
    let listed = refused(with("iss", json!(["https://other.example", ISSUER])));
    assert!(matches!(listed, Rejection::BadClaim(_) | Rejection::WrongIssuer), "one issuer, a string: {listed:?}");
    let mut no_sub = claims("alice", "read");
    no_sub.as_object_mut().unwrap().remove("sub");
    assert!(matches!(refused(no_sub), Rejection::BadClaim(_)));
    // Within the clock skew an expired token still passes.
    assert!(verifier.verify(&keys, &signer.token(with("exp", json!(now() - 30)))).is_ok());
}

#[test]
fn forged_and_confused_tokens_are_refused() {
    let signer = Signer::new("k1");
    let (verifier, keys) = (Verifier::new(requirements()), keys(&[&signer]));
    let good = signer.token(claims("alice", "read"));
    // Another key, same kid: the signature does not verify.
    let forger = Signer::new("k1");
    assert_eq!(verifier.verify(&keys, &forger.token(claims("alice", "read"))), Err(Rejection::BadSignature));
    // Claims swapped under a good signature.
    let (head, rest) = good.split_once('.').unwrap();
    let signature = rest.rsplit_once('.').unwrap().1;
    let swapped = format!("{head}.{}.{signature}", B64.encode(claims("mallory", "admin").to_string()));
    assert_eq!(verifier.verify(&keys, &swapped), Err(Rejection::BadSignature));
    // alg none, unsigned.
    let message = format!("{}.{}", B64.encode(r#"{"alg":"none"}"#), B64.encode(claims("alice", "read").to_string()));
    assert!(matches!(
        verifier.verify(&keys, &format!("{message}.")),
        Err(Rejection::Malformed(_) | Rejection::AlgorithmNotAllowed(_))
    ));
    // HS256 with the public key as the HMAC secret: refused, even by a route that takes HS256.
    let confused = |verifier: &Verifier| {
        let header = B64.encode(r#"{"alg":"HS256","kid":"k1"}"#);
        let message = format!("{header}.{}", B64.encode(claims("alice", "read").to_string()));
        let secret = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, signer.pair.public_key().as_ref());
        let tag = ring::hmac::sign(&secret, message.as_bytes());
        verifier.verify(&keys, &format!("{message}.{}", B64.encode(tag.as_ref())))
    };
    assert!(matches!(confused(&verifier), Err(Rejection::AlgorithmNotAllowed(_))));
    let lenient =
        Verifier::new(Requirements { algorithms: vec![Algorithm::EdDSA, Algorithm::HS256], ..requirements() });
    assert!(confused(&lenient).is_err(), "an OKP key is never an HMAC secret");
    // Not a JWT at all.
    assert!(matches!(verifier.verify(&keys, "not-a-token"), Err(Rejection::Malformed(_))));
    assert!(matches!(verifier.verify(&keys, &"a".repeat(MAX_TOKEN_LEN + 1)), Err(Rejection::Malformed(_))));
}

#[test]
fn a_key_the_set_lacks_is_asked_for() {
    let (old, new) = (Signer::new("old"), Signer::new("new"));
    let verifier = Verifier::new(requirements());
    let token = new.token(claims("alice", "read"));
    assert_eq!(verifier.verify(&keys(&[&old]), &token), Err(Rejection::UnknownKey));
    assert!(verifier.verify(&keys(&[&old, &new]), &token).is_ok(), "once the set has it");
}

#[test]
fn a_token_without_a_kid_is_tried_against_a_few_keys_only() {
    let signers: Vec<Signer> = (0..5).map(|_| Signer::new("k")).collect();
    let keys = keys(&signers.iter().collect::<Vec<_>>());
    let verifier = Verifier::new(requirements());
    let unnamed = |signer: &Signer| signer.sign(json!({"alg": "EdDSA"}), claims("alice", "read"));
    assert!(verifier.verify(&keys, &unnamed(&signers[0])).is_ok(), "the first keys are tried");
    assert_eq!(verifier.verify(&keys, &unnamed(&signers[4])), Err(Rejection::BadSignature), "not every key");
}

#[test]
fn ecdsa_keys_verify_too() {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    let point = pair.public_key().as_ref();
    let jwk = json!({"kty": "EC", "crv": "P-256", "kid": "ec", "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..])});
    let keys = KeySet::parse(json!({"keys": [jwk]}).to_string().as_bytes(), false).unwrap();
    let message =
        format!("{}.{}", B64.encode(r#"{"alg":"ES256","kid":"ec"}"#), B64.encode(claims("alice", "read").to_string()));
    let signature = pair.sign(&rng, message.as_bytes()).unwrap();
    let token = format!("{message}.{}", B64.encode(signature.as_ref()));
    assert_eq!(Verifier::new(requirements()).verify(&keys, &token).unwrap().subject, "alice");
}

#[test]
fn key_sets_keep_only_keys_that_verify() {
    let signer = Signer::new("k1");
    let encryption = json!({"kty": "RSA", "use": "enc", "kid": "e", "n": "AQAB", "e": "AQAB"});
    let unknown = json!({"kty": "XYZ", "kid": "u"});
    let document = json!({"keys": [encryption, unknown, signer.jwk()]});
    assert_eq!(KeySet::parse(document.to_string().as_bytes(), false).unwrap().len(), 1);
    assert!(KeySet::parse(br#"{"keys": []}"#, false).is_err(), "no usable key: refused, old keys kept");
    // Keys that could never verify a signature do not count as keys (a set of them is refused).
    let rsa = |n: &[u8], e: &[u8], alg: Option<&str>| {
        let mut jwk = json!({"kty": "RSA", "kid": "r", "n": B64.encode(n), "e": B64.encode(e)});
        if let Some(alg) = alg {
            jwk["alg"] = json!(alg);
        }
        KeySet::parse(json!({"keys": [jwk]}).to_string().as_bytes(), false)
    };
    let mut modulus = vec![0xc5; 256];
    modulus[255] = 0x01;
    assert!(rsa(&modulus, &[1, 0, 1], None).is_ok(), "2048 bits, e = 65537");
    assert!(rsa(&modulus, &[1, 0, 1], Some("RS256")).is_ok());
    assert!(rsa(&modulus, &[1, 0, 1], Some("ES256")).is_err(), "an alg of another family");
    assert!(rsa(&modulus, &[1], None).is_err(), "e = 1");
    assert!(rsa(&modulus[..128], &[1, 0, 1], None).is_err(), "1024 bits");
    assert!(rsa(&[1, 0, 1], &[1, 0, 1], None).is_err());
    let secret = json!({"keys": [{"kty": "oct", "kid": "s", "k": B64.encode([7u8; 32])}]}).to_string();
    assert!(KeySet::parse(secret.as_bytes(), false).is_err(), "no HMAC secret from a URL");
    assert!(KeySet::parse(secret.as_bytes(), true).is_ok(), "from the operator's file");
    let off_curve =
        json!({"keys": [{"kty": "EC", "crv": "P-256", "x": B64.encode([1u8; 32]), "y": B64.encode([2u8; 32])}]});
    assert!(KeySet::parse(off_curve.to_string().as_bytes(), false).is_err(), "a point not on the curve");
    let many: Vec<_> = (0..=keys::MAX_KEYS).map(|_| Signer::new("k").jwk()).collect();
    assert!(KeySet::parse(json!({"keys": many}).to_string().as_bytes(), false).is_err(), "refused whole, not cut");
    let short_ed = json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": B64.encode([1u8; 31])}]}).to_string();
    assert!(KeySet::parse(short_ed.as_bytes(), false).is_err());
    assert!(KeySet::parse(b"<html>", false).is_err());
}

#[test]
fn scopes_are_required_and_read_from_scope_or_scp() {
    let signer = Signer::new("k1");
    let keys = keys(&[&signer]);
    let verifier = Verifier::new(Requirements { scopes: vec!["mcp:read".into()], ..requirements() });
    let verified = verifier.verify(&keys, &signer.token(claims("alice", "profile mcp:read"))).unwrap();
    assert_eq!(verifier.check_scopes(&verified), Ok(()));
    let verified = verifier.verify(&keys, &signer.token(claims("alice", "profile"))).unwrap();
    assert_eq!(verifier.check_scopes(&verified), Err(Rejection::InsufficientScope));
    let mut listed = claims("alice", "");
    listed["scp"] = json!(["mcp:read"]);
    let verified = verifier.verify(&keys, &signer.token(listed)).unwrap();
    assert_eq!(verifier.check_scopes(&verified), Ok(()));
}

#[test]
fn bearer_tokens_are_read_from_the_authorization_value() {
    assert_eq!(bearer_token(None), Ok(None));
    assert_eq!(bearer_token(Some(b"  ")), Ok(None));
    assert_eq!(bearer_token(Some(b"Basic dXNlcjpwYXNz")), Ok(None), "another scheme is no bearer token");
    assert_eq!(bearer_token(Some(b"Bearer abc.def-_~+/.ghi==")), Ok(Some("abc.def-_~+/.ghi==")));
    assert_eq!(bearer_token(Some(b"bearer   abc")), Ok(Some("abc")));
    assert!(bearer_token(Some(b"Bearer")).is_err());
    assert!(bearer_token(Some(b"Bearer \xff\xfe")).is_err());
    // What is not a token68 is refused by the verifier (a remembered token skips the scan).
    let verifier = Verifier::new(requirements());
    for not_token68 in ["a b", "a=b", "caf\u{e9}", "===", "a.b,c"] {
        assert_eq!(verifier.verify(&KeySet::default(), not_token68), Err(not_a_token()), "{not_token68:?}");
    }
}

#[test]
fn verified_tokens_are_remembered_per_key_set_until_they_expire() {
    let remembered = Remembered::default();
    let verified = |expires_at: u64| {
        let subject = "alice".to_string();
        std::sync::Arc::new(Verified { subject, context: "c".into(), scopes: vec![], expires_at, not_before: None })
    };
    let alice = verified(now() + 60);
    remembered.put("token", 1, alice.clone(), now());
    assert_eq!(remembered.get("token", 1, now(), Duration::ZERO), Some(alice));
    assert_eq!(remembered.get("token", 2, now(), Duration::ZERO), None, "checked again under new keys");
    assert_eq!(remembered.get("token", 1, now() + 120, Duration::ZERO), None, "expired");
    assert_eq!(remembered.get("other", 1, now(), Duration::ZERO), None);
    for n in 0..remembered::CAPACITY + 10 {
        remembered.put(&format!("t{n}"), 1, verified(now() + 60), now());
    }
    assert!(remembered.len() <= remembered::CAPACITY, "bounded");
    remembered.put(&"t".repeat(5000), 1, verified(now() + 60), now());
    assert_eq!(remembered.get(&"t".repeat(5000), 1, now(), Duration::ZERO), None, "long tokens are not held");
}

#[test]
fn challenges_point_at_the_metadata_and_say_what_was_wrong() {
    let resource = Resource {
        resource: AUDIENCE.into(),
        authorization_servers: vec![ISSUER.into()],
        scopes_supported: vec!["mcp:read".into()],
    };
    assert_eq!(resource.metadata_url().unwrap(), "https://mcp.example/.well-known/oauth-protected-resource/mcp");
    let scopes = vec!["mcp:read".to_string()];
    assert_eq!(
        resource.challenge(&Rejection::Missing, &scopes),
        r#"Bearer resource_metadata="https://mcp.example/.well-known/oauth-protected-resource/mcp", scope="mcp:read""#
    );
    let expired = resource.challenge(&Rejection::Expired, &[]);
    assert!(expired.contains(r#"error="invalid_token""#) && expired.contains("expired"), "{expired}");
    let scope = resource.challenge(&Rejection::InsufficientScope, &scopes);
    assert!(scope.contains(r#"error="insufficient_scope""#) && scope.contains(r#"scope="mcp:read""#), "{scope}");
    let document: serde_json::Value = serde_json::from_str(&resource.document()).unwrap();
    assert_eq!(document["resource"], AUDIENCE);
    assert_eq!(document["authorization_servers"], json!([ISSUER]));
    assert_eq!(document["scopes_supported"], json!(["mcp:read"]));
    assert_eq!(document["bearer_methods_supported"], json!(["header"]));
    let root = Resource { resource: "https://mcp.example".into(), ..resource };
    assert_eq!(root.metadata_url().unwrap(), "https://mcp.example/.well-known/oauth-protected-resource");
}
