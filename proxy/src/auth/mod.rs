//! Bearer tokens checked at the edge (`[route.auth]`): each request to a protected route is
//! refused (`401`, `403`) before the cache and the upstream unless its token is good, and a good
//! token's authorization context keys the route's private answers (see
//! `mcp_edge_policies::auth`). The route's Protected Resource Metadata is served here too
//! ([`metadata_document`]).

pub mod key_store;

use std::sync::Arc;

use mcp_edge_policies::auth::metadata::{self, Resource};
use mcp_edge_policies::auth::{Rejection, Remembered, Verified, Verifier, bearer_token};
use mcp_edge_policies::config::{AuthConfig, KeySource, RouteConfig};

use crate::error::{EdgeError, SetupError};
use crate::runtime::Runtime;
use key_store::KeyStore;

/// A protected route's checks.
pub struct RouteAuth {
    pub config: AuthConfig,
    verifier: Verifier,
    pub keys: Arc<KeyStore>,
    remembered: Remembered,
    resource: Resource,
    route: String,
}

impl RouteAuth {
    /// The checks of `route` (`None`: it has no `[route.auth]`); its key file is read now.
    pub fn build(route: &RouteConfig) -> Result<Option<RouteAuth>, SetupError> {
        let Some(config) = &route.auth else { return Ok(None) };
        let keys = KeyStore::open(&config.keys, config.jwks_refresh).map_err(|reason| SetupError::Auth {
            value: match &config.keys {
                KeySource::File(path) => path.display().to_string(),
                KeySource::Url(url) => url.clone(),
            },
            reason,
        })?;
        Ok(Some(RouteAuth {
            verifier: Verifier::new(config.requirements.clone()),
            keys: Arc::new(keys),
            remembered: Remembered::default(),
            resource: config.resource(),
            route: route.name.clone(),
            config: config.clone(),
        }))
    }

    /// Checks a request's `Authorization` value: its verified token (`None`: no token, on a
    /// route that does not require one), or the refusal to answer with.
    pub async fn authorize(&self, authorization: Option<&[u8]>) -> Result<Option<Arc<Verified>>, EdgeError> {
        let sent = authorization.is_some_and(|value| !value.trim_ascii().is_empty());
        let token = match bearer_token(authorization) {
            Ok(Some(token)) => token,
            // Another scheme is not checked here, so it is not taken either (else it would reach
            // the upstream unchecked, as no one).
            Ok(None) if sent => {
                return Err(self.refuse(Rejection::Malformed("only Bearer access tokens are accepted".into())));
            }
            Ok(None) if !self.config.required => {
                self.count("anonymous");
                return Ok(None);
            }
            Ok(None) => return Err(self.refuse(Rejection::Missing)),
            Err(rejection) => return Err(self.refuse(rejection)),
        };
        let verified = self.verified(token).await?;
        if let Err(rejection) = self.verifier.check_scopes(&verified) {
            return Err(self.refuse(rejection));
        }
        if self.config.subject_header.is_some() && !sendable_subject(&verified.subject) {
            return Err(self.refuse(Rejection::BadClaim("sub (not sendable as a header)".into())));
        }
        self.count("ok");
        Ok(Some(verified))
    }

    /// The verification of `token`: remembered, or checked now (and the keys fetched again
    /// when it names one the set lacks).
    async fn verified(&self, token: &str) -> Result<Arc<Verified>, EdgeError> {
        let now = unix_now();
        let skew = self.config.requirements.clock_skew;
        let mut keys = self.keys.current();
        if let Some(verified) = self.remembered.get(token, keys.generation, now, skew) {
            return Ok(verified);
        }
        let mut outcome = self.verifier.verify(&keys.set, token);
        if outcome == Err(Rejection::UnknownKey) {
            if let Some(fresh) = self.keys.refetch(keys.generation).await {
                keys = fresh;
                outcome = self.verifier.verify(&keys.set, token);
            } else if keys.generation == 0 {
                self.count("keys_unavailable");
                return Err(EdgeError::KeysUnavailable);
            }
        }
        let verified = Arc::new(outcome.map_err(|rejection| self.refuse(rejection))?);
        self.remembered.put(token, keys.generation, verified.clone(), now);
        Ok(verified)
    }

    /// The answer to a refused token: `401` with a challenge pointing at the metadata, or `403`
    /// for a scope the token lacks.
    fn refuse(&self, rejection: Rejection) -> EdgeError {
        self.count(rejection.label());
        let challenge = self.resource.challenge(&rejection, &self.config.requirements.scopes);
        let description = rejection.description();
        match rejection {
            Rejection::InsufficientScope => EdgeError::InsufficientScope { challenge, description },
            _ => EdgeError::Unauthorized { challenge, description, label: rejection.label() },
        }
    }

    fn count(&self, result: &str) {
        crate::metrics::METRICS.auth.with_label_values(&[self.route.as_str(), result]).inc();
    }

    /// Whether `path` is where this route's metadata is published: after the well-known prefix,
    /// the path of its resource URI, or the route's own path (RFC 9728 §3.1).
    fn publishes_at(&self, route_path: &str, path: &str) -> bool {
        let resource_path = self.resource.resource.parse::<http::Uri>().map(|uri| uri.path().to_string());
        path == metadata::metadata_path(route_path) || resource_path.is_ok_and(|p| path == metadata::metadata_path(&p))
    }
}

/// Whether a subject reaches the upstream as it is in a header: no control characters, no
/// whitespace but inner spaces (an upstream may trim or split on it), no comma (a header list's
/// separator): else two subjects could be read as one.
fn sendable_subject(subject: &str) -> bool {
    let odd = |c: char| c.is_control() || c == ',' || (c.is_whitespace() && c != ' ');
    subject.trim_matches(' ').len() == subject.len() && !subject.chars().any(odd)
}

/// The seconds since the epoch, as token lifetimes count them.
fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The Protected Resource Metadata published at `path`, if a protected route publishes there.
/// The bare well-known path (no resource path after it) answers for the one protected route,
/// or for the one whose resource URI has no path.
pub fn metadata_document(runtime: &Runtime, path: &str) -> Option<String> {
    if !path.starts_with(metadata::WELL_KNOWN) {
        return None;
    }
    let protected = || runtime.routes.iter().filter_map(|route| Some((route, route.auth.as_ref()?)));
    let found = protected().find(|(route, auth)| auth.publishes_at(&route.config.path, path));
    let found = found.or_else(|| {
        let mut all = protected();
        let only = all.next().filter(|_| path == metadata::WELL_KNOWN);
        only.filter(|_| all.next().is_none())
    });
    found.map(|(_, auth)| auth.resource.document())
}

/// The headers of a published document beside its length: JSON, cacheable for five minutes,
/// readable by browser-based clients of any origin (it is public, and they need it to sign in).
pub const DOCUMENT_HEADERS: [(&str, &str); 3] = [
    ("content-type", "application/json"),
    ("cache-control", "public, max-age=300"),
    ("access-control-allow-origin", "*"),
];

/// The access log's account of a published document of `bytes_out` bytes.
pub fn published(asked: crate::served::Asked<'_>, bytes_out: usize) -> crate::served::Served<'_> {
    crate::served::Served {
        asked,
        mcp_method: None,
        status: 200,
        cache: crate::answer::Outcome::Bypass.as_str(),
        tier: None,
        upstream: None,
        started: std::time::Instant::now(),
        error: None,
        bytes_in: 0,
        bytes_out: bytes_out as u64,
        attempted: None,
    }
}

/// Gives the routes whose keys come from one URL one key set: the one in use before the reload
/// when there is one (the fetched keys, kept through an issuer's outage, are not dropped by a
/// reload), fetched as often as the most demanding of them asks (`jwks_refresh`).
pub fn share_key_stores(old: Option<&Runtime>, routes: &mut [crate::runtime::Route]) {
    let urls: Vec<KeySource> = routes
        .iter()
        .filter_map(|route| route.auth.as_ref())
        .map(|auth| auth.config.keys.clone())
        .filter(|source| matches!(source, KeySource::Url(_)))
        .collect();
    for source in urls {
        let users = || routes.iter().filter_map(|route| route.auth.as_ref()).filter(|auth| auth.config.keys == source);
        let Some(refresh) = users().map(|auth| auth.config.jwks_refresh).min() else { continue };
        let before = old.and_then(|old| {
            old.routes.iter().filter_map(|route| route.auth.as_ref()).find(|auth| auth.keys.source == source)
        });
        let Some(store) = before.map(|auth| auth.keys.clone()).or_else(|| users().next().map(|auth| auth.keys.clone()))
        else {
            continue;
        };
        store.set_refresh_every(refresh);
        for auth in routes.iter_mut().filter_map(|route| route.auth.as_mut()).filter(|auth| auth.config.keys == source)
        {
            auth.keys = store.clone();
        }
    }
}

/// Keeps the key sets of routes whose keys come from the same URL as before the reload.
pub fn carry_over(old: &Runtime, new: &mut Runtime) {
    share_key_stores(Some(old), &mut new.routes);
}

/// One refresher per fetched key set: fetches at once, then every `jwks_refresh` (sooner after
/// a failure); ends when no configuration uses the set any more.
pub fn spawn_refreshers(runtime: &Runtime) {
    for auth in runtime.routes.iter().filter_map(|route| route.auth.as_ref()) {
        let KeySource::Url(_) = &auth.keys.source else { continue };
        if auth.keys.refresher.swap(true, std::sync::atomic::Ordering::AcqRel) {
            continue;
        }
        tokio::spawn(KeyStore::refresh(Arc::downgrade(&auth.keys)));
    }
}
