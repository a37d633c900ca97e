//! Cache decisions: what is cacheable, under which key and scope, for how long, and how a hit
//! is written. Pure functions; the proxy does the storing.
//!
//! - [`keys`]: who is asking ([`Caller`]), the scopes an answer may be kept in, and a
//!   request's [`Lookup`]: keys are SHA-256 digests of (route, method, canonical params without
//!   `_meta`, protocol version) plus a scope: one entry per audience (`public`), one per
//!   authorization context (`private`, keyed by a hash of the identity header), or one per
//!   handshake-era session.
//! - [`storing`]: what an answer says about its own caching, and whether and how it is kept.
//! - [`entry`]: the stored form of an answer, and a hit written from it.
//! - [`invalidation`]: what notifications and purges name. Invalidation cannot enumerate
//!   hashed keys, so it works by time: an invalidation records a marker per target (a resource
//!   URI, a list kind, the whole route) and an entry whose fetch started before a marker of one
//!   of its targets is dead.

pub mod cursors;
pub mod entry;
pub mod invalidation;
pub mod keys;
pub mod storing;
pub mod writes;

pub use entry::{Answer, Deflated, Entry};
pub use invalidation::{ListKind, Target, marker_key, markers_watermark_key};
pub use keys::{Audience, Caller, Key, Lookup, Scope, declared_capabilities, identity_hash, identity_of, lookup_for};
#[cfg(test)]
pub use storing::result_facts;
pub use storing::{ResultFacts, Store, http_forbids_storing, http_vary_forbids_storing, read_result, store_decision};
pub use writes::{WriteOutcome, is_write, write_targets};

#[cfg(test)]
mod tests;
