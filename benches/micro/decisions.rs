//! Micro-benchmarks of the decisions a cache hit makes, one call at a time (no I/O): what the
//! load benchmark's per-request figures are made of, measured without its noise.
//! Run: `cargo bench -p mcp-edge-policies` (divan prints each call's fastest, slowest, median
//! and mean time).

use divan::{Bencher, black_box};
use mcp_edge_policies::Config;
use mcp_edge_policies::admission::Doorkeeper;
use mcp_edge_policies::cache::{Caller, Entry, Lookup, Scope, lookup_for, marker_key};
use mcp_edge_policies::jsonrpc::{Message, parse};
use mcp_edge_policies::shared_tier::{NONCE_LEN, Names, Secret};

fn main() {
    divan::main();
}

const READ: &[u8] = br#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"demo://kib/4242","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#;

/// A stateless-era caller without credentials.
fn stateless_caller() -> Caller {
    Caller { stateless: true, protocol_version: Some("2026-07-28".into()), ..Caller::default() }
}

/// One route with the default cache policy.
fn one_route() -> Config {
    Config::from_toml("[[route]]\npath = \"/mcp\"\nupstreams = [\"http://127.0.0.1:1/mcp\"]\n").expect("config")
}

/// What `message` looks up.
fn read_lookup(message: &Message) -> Lookup {
    lookup_for("mcp", message, &stateless_caller(), &one_route().routes[0].policy, |_| false).expect("cacheable")
}

/// Parsing a `resources/read` body, as every POST is.
#[divan::bench]
fn parse_resources_read() -> Message {
    parse(black_box(READ)).expect("valid")
}

const CALL: &[u8] = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"message":"hi"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#;

/// Parsing a `tools/call` body (`benches/load/call.lua`'s): its arguments are checked for
/// duplicate keys and kept as raw text.
#[divan::bench]
fn parse_tools_call() -> Message {
    parse(black_box(CALL)).expect("valid")
}

/// Baseline for `parse_resources_read`: the same body parsed into a generic JSON value.
#[divan::bench]
fn baseline_parse_to_json_value() -> serde_json::Value {
    serde_json::from_slice(black_box(READ)).expect("valid")
}

/// From a parsed request to the storage key of its public scope: the whole key derivation.
#[divan::bench]
fn lookup_and_public_key(bencher: Bencher) {
    bench_public_key(bencher, READ);
}

/// From the parsed `body` to the storage key of its public scope.
fn bench_public_key(bencher: Bencher, body: &[u8]) {
    let message = parse(body).expect("valid");
    let (caller, config) = (stateless_caller(), one_route());
    let policy = &config.routes[0].policy;
    bencher.bench_local(|| {
        let lookup = lookup_for("mcp", black_box(&message), &caller, policy, |_| false).expect("cacheable");
        lookup.key(&Scope::Public(mcp_edge_policies::cache::Audience::Anonymous))
    });
}

const READ_SDK_META: &[u8] = br#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"demo://kib/4242","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"mcp","version":"2.3.0"},"io.modelcontextprotocol/clientCapabilities":{"sampling":{},"elicitation":{"form":{}},"roots":{"listChanged":true}},"progressToken":7}}}"#;

/// `lookup_and_public_key` for the `_meta` an SDK client sends (its information and
/// capabilities, keyed; a progress token, not keyed).
#[divan::bench]
fn lookup_and_public_key_sdk_meta(bencher: Bencher) {
    bench_public_key(bencher, READ_SDK_META);
}

/// Parsing the `resources/read` body of an SDK client (see `READ_SDK_META`).
#[divan::bench]
fn parse_resources_read_sdk_meta() -> Message {
    parse(black_box(READ_SDK_META)).expect("valid")
}

/// The key of a URI's invalidation marker (looked up for hits on entries older than a marker).
#[divan::bench]
fn invalidation_marker_key(bencher: Bencher) {
    let lookup = read_lookup(&parse(READ).expect("valid"));
    bencher.bench_local(|| marker_key("mcp", black_box(&lookup.targets[1])));
}

/// Decoding a stored 1 KiB entry and splicing the client's id into its answer.
#[divan::bench]
fn decode_and_answer_1kib(bencher: Bencher) {
    let result = format!(r#"{{"contents":[{{"uri":"demo://kib/4242","text":"{}"}}]}}"#, "x".repeat(1000));
    let stored = Entry {
        fetched_at_ms: 1,
        expires_at_ms: u64::MAX / 2,
        restate_ttl: true,
        own_ttl: false,
        result: result.as_bytes(),
        deflated: None,
    }
    .encode();
    bencher.bench_local(|| {
        let entry = Entry::decode(black_box(&stored)).expect("an entry");
        entry.answer(black_box("42"), 1_000).len()
    });
}

/// A 1 KiB stored entry, as the shared tier holds it.
fn shared_entry_1kib() -> Vec<u8> {
    let result = format!(r#"{{"contents":[{{"uri":"demo://kib/4242","text":"{}"}}]}}"#, "x".repeat(1000));
    Entry {
        fetched_at_ms: 1,
        expires_at_ms: u64::MAX / 2,
        restate_ttl: true,
        own_ttl: false,
        result: result.as_bytes(),
        deflated: None,
    }
    .encode()
}

const SECRET: &[u8] = b"a secret of at least thirty-two bytes, for benchmarks";

/// What a shared-tier write adds with `secret_file`: the keyed entry name and the sealed value
/// (ChaCha20-Poly1305) of a 1 KiB entry.
#[divan::bench]
fn shared_seal_1kib(bencher: Bencher) {
    let secret = Secret::new(SECRET).expect("long enough");
    let names = Names::new("mcp-edge", Some(&secret));
    let stored = shared_entry_1kib();
    bencher.bench_local(|| {
        let name = names.entry(black_box(&[7; 32])).0;
        secret.seal(&name, black_box(&stored), [9; NONCE_LEN]).len()
    });
}

/// What a shared-tier read adds with `secret_file`: the keyed entry name and opening the sealed
/// 1 KiB entry.
#[divan::bench]
fn shared_open_1kib(bencher: Bencher) {
    let secret = Secret::new(SECRET).expect("long enough");
    let names = Names::new("mcp-edge", Some(&secret));
    let name = names.entry(&[7; 32]).0;
    let sealed = secret.seal(&name, &shared_entry_1kib(), [9; NONCE_LEN]);
    bencher.bench_local(|| {
        let name = names.entry(black_box(&[7; 32])).0;
        secret.open(&name, black_box(&sealed)).expect("opens").len()
    });
}

/// Baseline: the entry name without a secret (a hex digest, no HMAC).
#[divan::bench]
fn shared_plain_name(bencher: Bencher) {
    let names = Names::new("mcp-edge", None);
    bencher.bench_local(|| names.entry(black_box(&[7; 32])).0.len());
}

/// The entry name with a secret (HMAC-SHA256 of the key), alone.
#[divan::bench]
fn shared_keyed_name(bencher: Bencher) {
    let secret = Secret::new(SECRET).expect("long enough");
    let names = Names::new("mcp-edge", Some(&secret));
    bencher.bench_local(|| names.entry(black_box(&[7; 32])).0.len());
}

/// The admission check made on every disk-tier hit once the memory tier is full (slots for a
/// 256 MiB memory tier, the default).
#[divan::bench]
fn doorkeeper_read_again(bencher: Bencher) {
    let doorkeeper = Doorkeeper::new(Doorkeeper::keys_for(256 << 20, 1024));
    // Keys in a scrambled order, as digests come: a constant stride would let the CPU prefetch
    // the slots and measure a cache that real reads never get.
    let mut n = 0u64;
    // Every slot written once first: the first write to each page of the slots faults.
    for _ in 0..(4 << 20) {
        n += 1;
        doorkeeper.read_again(scramble(n));
    }
    bencher.bench_local(|| {
        n += 1;
        doorkeeper.read_again(black_box(scramble(n)))
    });
}

/// splitmix64's finalizer: consecutive inputs, unrelated outputs.
fn scramble(n: u64) -> u64 {
    let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// One read learned by a route's sequence model (`prefetch::sequence`), as every cacheable
/// read on a route with prefetching does: 1 000 clients walking 10 000 pages.
#[divan::bench]
fn prefetch_learn_one_read(bencher: Bencher) {
    use mcp_edge_policies::prefetch::sequence::{Context, Limits, SequenceModel};
    let mut model = SequenceModel::new(Limits::default());
    let uris: Vec<String> = (0..10_000).map(|n| format!("docs://book/{}/page/{}", n / 100, n % 100)).collect();
    let mut step = 0u64;
    bencher.bench_local(|| {
        step += 1;
        let context = Context { id: step % 1_000, credentialed: true };
        let page = ((step / 1_000) as usize + context.id as usize * 7) % uris.len();
        model.observe(context, &uris[page], step);
    });
}

/// What a route's model predicts after a read (done after every learned read).
#[divan::bench]
fn prefetch_predict_after_read(bencher: Bencher) {
    use mcp_edge_policies::prefetch::sequence::{Context, Limits, SequenceModel};
    let mut model = SequenceModel::new(Limits::default());
    for user in 0..20 {
        for page in 0..10 {
            let context = Context { id: user, credentialed: true };
            model.observe(context, &format!("docs://book/1/page/{page}"), user * 100 + page);
        }
    }
    let newcomer = Context { id: 1_000, credentialed: true };
    bencher.bench_local(|| model.predict(newcomer, black_box("docs://book/1/page/4"), 10_000, 0.4, 3));
}

/// One hit counted in its route's per-operation insight (`insight::Operations::record`), as
/// every answered `resources/read` and `tools/call` is. `spread`: reads of 1 000 URIs chosen
/// at random (`benches/load/random-read.lua`'s), so most calls replace the least counted of the
/// 32 entries (the worst case); `skewed`: 8 URIs, all in the table.
#[divan::bench(args = [1_000, 8], sample_count = 500, sample_size = 200)]
fn insight_record_one_call(bencher: Bencher, uris: u64) {
    use mcp_edge_policies::insight::{Call, CallOutcome, OpKind, Operations, hash_of};
    let names: Vec<String> = (1..=uris).map(|n| format!("demo://kib/{n}")).collect();
    let mut operations = Operations::default();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    bencher.bench_local(|| {
        // xorshift: a cheap stand-in for the clients' random choice.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let name = &names[(state % uris) as usize];
        operations.record(&Call {
            kind: OpKind::Resource,
            name,
            args: hash_of(name),
            at_ms: state >> 40,
            latency_us: state & 0xfff,
            outcome: CallOutcome::Hit,
            answer: None,
            server_ttl_ms: None,
            fresh_until_ms: Some(u64::MAX),
        });
    });
}

/// Bearer tokens (`[route.auth]`): one token's check, as a protected route's request makes it.
mod auth {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use divan::{Bencher, black_box};
    use mcp_edge_policies::auth::{DEFAULT_ALGORITHMS, KeySet, Remembered, Requirements, Verifier};
    use ring::signature::{self, KeyPair};
    use serde_json::json;

    /// A 2048-bit RSA key (PKCS#1 DER) made for this benchmark only: it signs nothing else.
    const RSA_KEY: &[u8] = include_bytes!("fixtures/rs256-bench-only.der");

    fn verifier() -> Verifier {
        Verifier::new(Requirements {
            issuer: "https://idp.example".into(),
            audience: "https://mcp.example/mcp".into(),
            algorithms: DEFAULT_ALGORITHMS.to_vec(),
            clock_skew: std::time::Duration::from_secs(60),
            scopes: vec!["mcp:read".into()],
            instance_claims: vec![],
        })
    }

    /// A typical access token's header and claims, signed by `sign`.
    fn token(alg: &str, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let claims = json!({"iss": "https://idp.example", "aud": "https://mcp.example/mcp", "sub": "user-1234",
            "client_id": "app", "scope": "openid profile mcp:read", "iat": now, "exp": now + 3600,
            "jti": "2f7c0e5a-6f0b-4b1e-9d0e-3f7a0c1d2e3f", "groups": ["engineering", "on-call"]});
        let header = json!({"alg": alg, "typ": "at+jwt", "kid": "k1"});
        let message = format!("{}.{}", B64.encode(header.to_string()), B64.encode(claims.to_string()));
        format!("{message}.{}", B64.encode(sign(message.as_bytes())))
    }

    fn key_set(jwk: serde_json::Value) -> KeySet {
        KeySet::parse(json!({"keys": [jwk]}).to_string().as_bytes(), false).unwrap()
    }

    fn rs256() -> (KeySet, String) {
        let pair = signature::RsaKeyPair::from_der(RSA_KEY).unwrap();
        let public: ring::rsa::PublicKeyComponents<Vec<u8>> = pair.public().into();
        let jwk = json!({"kty": "RSA", "kid": "k1", "n": B64.encode(&public.n), "e": B64.encode(&public.e)});
        let token = token("RS256", |message| {
            let mut out = vec![0; pair.public().modulus_len()];
            pair.sign(&signature::RSA_PKCS1_SHA256, &ring::rand::SystemRandom::new(), message, &mut out).unwrap();
            out
        });
        (key_set(jwk), token)
    }

    fn es256() -> (KeySet, String) {
        let rng = ring::rand::SystemRandom::new();
        let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pair = signature::EcdsaKeyPair::from_pkcs8(
            alg,
            signature::EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap().as_ref(),
            &rng,
        )
        .unwrap();
        let point = pair.public_key().as_ref();
        let jwk = json!({"kty": "EC", "crv": "P-256", "kid": "k1", "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..])});
        let token = token("ES256", |message| pair.sign(&rng, message).unwrap().as_ref().to_vec());
        (key_set(jwk), token)
    }

    fn eddsa() -> (KeySet, String) {
        let pkcs8 = signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
        let pair = signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let jwk = json!({"kty": "OKP", "crv": "Ed25519", "kid": "k1", "x": B64.encode(pair.public_key().as_ref())});
        let token = token("EdDSA", |message| pair.sign(message).as_ref().to_vec());
        (key_set(jwk), token)
    }

    /// A token seen for the first time: signature, claims, authorization context.
    #[divan::bench(args = ["RS256", "ES256", "EdDSA"])]
    fn verify_a_new_token(bencher: Bencher, alg: &str) {
        let (keys, token) = match alg {
            "RS256" => rs256(),
            "ES256" => es256(),
            _ => eddsa(),
        };
        let verifier = verifier();
        bencher.bench_local(|| verifier.verify(black_box(&keys), black_box(&token)).unwrap());
    }

    /// A token seen before (every request of a client after its first): the lookup.
    #[divan::bench]
    fn a_remembered_token(bencher: Bencher) {
        let (keys, token) = eddsa();
        let verified = std::sync::Arc::new(verifier().verify(&keys, &token).unwrap());
        let remembered = Remembered::default();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        remembered.put(&token, 1, verified, now);
        let skew = std::time::Duration::from_secs(60);
        bencher.bench_local(|| remembered.get(black_box(&token), 1, now, skew).unwrap());
    }
}
