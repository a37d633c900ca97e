//! What a node believes of what it reads back from the shared server, which anyone who can
//! write to it could have put there.
//!
//! Without a secret, only times are checked: nothing read back is later than now plus
//! [`CLOCK_SKEW_MS`], and an entry lives no longer than the route's `max_ttl` from its fetch
//! and is not read past `ttl_cap` after it. That stops a forged time from outliving a purge
//! or turning caching off for good; a writer can still serve anything under any key.
//!
//! With a [`Secret`] (`cache.shared.secret_file`), the nodes also derive three keys from it:
//! one names entries and markers (a name cannot be computed without it), one authenticates
//! announcements, and one seals every value (ChaCha20-Poly1305, the Redis name as associated
//! data): a value moved to another name, altered, or made without the secret does not open,
//! and a dump of Redis shows no answer. Every value is sealed, public ones too: one format,
//! and sealing costs about what a MAC alone would (see `benches/HISTORY.md`).

use ring::{aead, hkdf, hmac};

use super::Announcement;

/// How far ahead of this node's clock a time read from the shared server may be (another
/// node's clock, NTP-synced): later ones are refused.
pub const CLOCK_SKEW_MS: u64 = 5_000;

/// The shortest secret accepted (bytes of the file's first line).
pub const MIN_SECRET_LEN: usize = 32;

/// Whether a time read from the shared server (a fetch, a marker, an announcement) is later
/// than `now_ms` allows.
pub fn from_the_future(at_ms: u64, now_ms: u64) -> bool {
    at_ms > now_ms.saturating_add(CLOCK_SKEW_MS)
}

/// Why an entry read from the shared tier is not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unusable {
    /// Fetched later than now allows: forged, or from a clock far ahead (refused).
    Future,
    /// Fetched longer ago than any shared entry lives (`ttl_cap`, plus the skew): forged
    /// without an expiry, or the last seconds of one whose fetch took long (expired).
    Outlived,
}

/// When an entry read from the shared tier at `now_ms` expires, its times bounded: its expiry
/// capped at `max_ttl` after its fetch, unless the entry must not be used at all.
pub fn bounded_expiry(
    now_ms: u64,
    fetched_at_ms: u64,
    expires_at_ms: u64,
    max_ttl_ms: u64,
    ttl_cap_ms: u64,
) -> Result<u64, Unusable> {
    if from_the_future(fetched_at_ms, now_ms) {
        return Err(Unusable::Future);
    }
    if now_ms > fetched_at_ms.saturating_add(ttl_cap_ms).saturating_add(CLOCK_SKEW_MS) {
        return Err(Unusable::Outlived);
    }
    Ok(expires_at_ms.min(fetched_at_ms.saturating_add(max_ttl_ms)))
}

/// A marker's time as stored (decimal text), unless it is no number or from the future.
pub fn marker_ms(text: &[u8], now_ms: u64) -> Option<u64> {
    let ms = std::str::from_utf8(text).ok()?.parse::<u64>().ok()?;
    (!from_the_future(ms, now_ms)).then_some(ms)
}

/// Bytes of a nonce, and of what a sealed value adds to the entry: magic, nonce, tag.
pub const NONCE_LEN: usize = 12;
const SEALED_MAGIC: u8 = 0x5E;
pub const SEALING_OVERHEAD: usize = 1 + NONCE_LEN + 16;
/// Bytes of an announcement's tag.
const TAG_LEN: usize = 32;

/// What a message on the invalidation channel turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heard {
    Announcement(Announcement),
    /// An announcement whose tag is wrong or missing (with a secret), or whose time is from
    /// the future: not applied, counted.
    Refused,
    /// No announcement at all (another program on the channel).
    Stranger,
}

/// Reads a message heard on `channel` at `now_ms`.
pub fn hear(message: &[u8], channel: &str, secret: Option<&Secret>, now_ms: u64) -> Heard {
    let message = match secret {
        Some(secret) => match secret.verify(channel, message) {
            Some(message) => message,
            None => return Heard::Refused,
        },
        None => message,
    };
    match Announcement::decode(message) {
        Some(announcement) if from_the_future(announcement.at_ms, now_ms) => Heard::Refused,
        Some(announcement) => Heard::Announcement(announcement),
        None if secret.is_some() => Heard::Refused,
        None => Heard::Stranger,
    }
}

/// An announcement as published on `channel`: signed with the secret, if there is one.
pub fn publish(announcement: &Announcement, channel: &str, secret: Option<&Secret>) -> Vec<u8> {
    match secret {
        Some(secret) => secret.sign(channel, announcement.encode()),
        None => announcement.encode(),
    }
}

/// The keys nodes derive from their shared secret. Nodes with different secrets name things
/// differently and open nothing of each other's: they simply do not share.
pub struct Secret {
    names: hmac::Key,
    announcements: hmac::Key,
    values: aead::LessSafeKey,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

impl Secret {
    /// Derives the keys (HKDF-SHA256) from `secret`, which must be at least
    /// [`MIN_SECRET_LEN`] bytes.
    pub fn new(secret: &[u8]) -> Result<Secret, String> {
        if secret.len() < MIN_SECRET_LEN {
            return Err(format!(
                "the secret is {} bytes: it must be at least {MIN_SECRET_LEN} (e.g. `head -c 32 /dev/urandom | base64`)",
                secret.len()
            ));
        }
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"mcp-edge shared tier").extract(secret);
        let derive = |label: &'static [u8]| {
            let mut key = [0u8; 32];
            let labels = [label];
            prk.expand(&labels, Len(32)).and_then(|okm| okm.fill(&mut key)).expect("32 bytes is a valid HKDF length");
            key
        };
        let values = aead::UnboundKey::new(&aead::CHACHA20_POLY1305, &derive(b"values")).expect("a 32-byte key");
        Ok(Secret {
            names: hmac::Key::new(hmac::HMAC_SHA256, &derive(b"names")),
            announcements: hmac::Key::new(hmac::HMAC_SHA256, &derive(b"announcements")),
            values: aead::LessSafeKey::new(values),
        })
    }

    /// The key that names entries and markers (see [`Names`](super::Names)).
    pub(super) fn names_key(&self) -> hmac::Key {
        self.names.clone()
    }

    /// `plain` sealed for the Redis key `name`, with a `nonce` never used before with this
    /// secret (random: 96 bits).
    pub fn seal(&self, name: &str, plain: &[u8], nonce: [u8; NONCE_LEN]) -> Vec<u8> {
        let mut out = Vec::with_capacity(plain.len() + SEALING_OVERHEAD);
        out.push(SEALED_MAGIC);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plain);
        let tag = self
            .values
            .seal_in_place_separate_tag(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(name.as_bytes()),
                &mut out[1 + NONCE_LEN..],
            )
            .expect("a value under 4 GiB");
        out.extend_from_slice(tag.as_ref());
        out
    }

    /// What `sealed` holds, if it was sealed with this secret for `name`: `None` for anything
    /// altered, cut, moved from another name, or sealed with another secret.
    pub fn open(&self, name: &str, sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < SEALING_OVERHEAD || sealed[0] != SEALED_MAGIC {
            return None;
        }
        let nonce: [u8; NONCE_LEN] = sealed[1..1 + NONCE_LEN].try_into().ok()?;
        let mut buffer = sealed[1 + NONCE_LEN..].to_vec();
        let nonce = aead::Nonce::assume_unique_for_key(nonce);
        let plain_len = self.values.open_in_place(nonce, aead::Aad::from(name.as_bytes()), &mut buffer).ok()?.len();
        buffer.truncate(plain_len);
        Some(buffer)
    }

    /// `message` followed by its tag, for `channel`.
    pub fn sign(&self, channel: &str, mut message: Vec<u8>) -> Vec<u8> {
        let tag = hmac::sign(&self.announcements, &tagged(channel, &message));
        message.extend_from_slice(tag.as_ref());
        message
    }

    /// The message of `signed` if its tag is right for `channel`.
    pub fn verify<'a>(&self, channel: &str, signed: &'a [u8]) -> Option<&'a [u8]> {
        let (message, tag) = signed.split_at_checked(signed.len().checked_sub(TAG_LEN)?)?;
        hmac::verify(&self.announcements, &tagged(channel, message), tag).ok()?;
        Some(message)
    }
}

/// What an announcement's tag covers: the channel (deployments sharing a secret keep apart by
/// their prefix) and the message.
fn tagged(channel: &str, message: &[u8]) -> Vec<u8> {
    [channel.as_bytes(), &[0], message].concat()
}
