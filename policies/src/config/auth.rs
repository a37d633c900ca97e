//! `[route.auth]`: checked here, so `mcp-edge check` names every problem with its line.

use std::path::PathBuf;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use toml::Spanned;

use super::check::Checker;
use super::raw::{RawAuth, Text};
use super::{AuthConfig, KeySource};
use crate::auth::{DEFAULT_ALGORITHMS, Requirements};

/// Claims that name the caller or its grant (RFC 9068 §2.2, RFC 8693 §4, OpenID Connect).
const GRANT_CLAIMS: &[&str] = &[
    "iss",
    "sub",
    "aud",
    "client_id",
    "azp",
    "scope",
    "scp",
    "roles",
    "role",
    "groups",
    "entitlements",
    "permissions",
    "act",
    "may_act",
    "tid",
    "oid",
    "appid",
    "wids",
    "realm_access",
    "resource_access",
    "org_id",
    "organization",
    "tenant",
    "email",
    "preferred_username",
    "upn",
    "unique_name",
    "name",
    "team",
];

const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(60);
const MAX_CLOCK_SKEW: Duration = Duration::from_secs(600);
const DEFAULT_JWKS_REFRESH: Duration = Duration::from_secs(300);

/// Headers mcp-edge or HTTP itself decides: never named by `subject_header`.
const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "te",
    "upgrade",
    "trailer",
    "keep-alive",
    "proxy-authorization",
    "cookie",
    "via",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-request-id",
    "mcp-session-id",
    "mcp-protocol-version",
    "mcp-method",
    "mcp-name",
    "traceparent",
    "tracestate",
    "accept",
    "accept-encoding",
    "expect",
];

impl Checker<'_> {
    pub(super) fn auth(&mut self, raw: &Spanned<RawAuth>) -> AuthConfig {
        let (table, span) = (raw.get_ref(), raw.span());
        let issuer =
            self.web_url(&table.issuer, "auth.issuer", span.clone(), "the issuer's URL, as tokens' iss names it");
        let audience = self.web_url(
            &table.audience,
            "auth.audience",
            span.clone(),
            "the resource URI clients use, e.g. \"https://mcp.example/mcp\"",
        );
        let keys = self.key_source(table, span);
        let algorithms = self.algorithms(&table.algorithms, &keys);
        let clock_skew = self.duration(&table.clock_skew, DEFAULT_CLOCK_SKEW, "auth.clock_skew");
        if clock_skew > MAX_CLOCK_SKEW {
            self.report(
                table.clock_skew.as_ref().map_or(0..0, |t| t.span()),
                "auth.clock_skew must be at most 10m".into(),
            );
        }
        let scopes = self.scope_names(&table.scopes, "auth.scopes");
        let scopes_supported = match &table.scopes_supported {
            Some(listed) => self.scope_names(listed, "auth.scopes_supported"),
            None => scopes.clone(),
        };
        let authorization_servers = match &table.authorization_servers {
            Some(listed) => listed
                .iter()
                .map(|server| self.web_url(&Some(server.clone()), "auth.authorization_servers", server.span(), ""))
                .collect(),
            None => vec![issuer.clone()],
        };
        if authorization_servers.is_empty() {
            self.report(
                span_of_list(&table.authorization_servers),
                "auth.authorization_servers must name at least one".into(),
            );
        }
        let instance_claims = self.instance_claims(&table.instance_claims);
        let jwks_refresh = self.nonzero_duration(&table.jwks_refresh, DEFAULT_JWKS_REFRESH, "auth.jwks_refresh");
        if !(Duration::from_secs(10)..=Duration::from_secs(86_400)).contains(&jwks_refresh) {
            let span = table.jwks_refresh.as_ref().map_or(0..0, |t| t.span());
            self.report(span, "auth.jwks_refresh must be between 10s and 24h".into());
        }
        AuthConfig {
            requirements: Requirements { issuer, audience, algorithms, clock_skew, scopes, instance_claims },
            keys,
            required: table.required.unwrap_or(true),
            authorization_servers,
            scopes_supported,
            subject_header: self.subject_header(&table.subject_header),
            jwks_refresh,
        }
    }

    /// An absolute `http(s)` URL without credentials, query or fragment (`hint`: what it is).
    fn web_url(&mut self, value: &Text, key: &str, table: std::ops::Range<usize>, hint: &str) -> String {
        let Some(text) = value else {
            self.report(table, format!("[route.auth] needs {} = \"…\" ({hint})", key.trim_start_matches("auth.")));
            return String::new();
        };
        let url = text.get_ref();
        if let Err(problem) = check_web_url(url) {
            self.report(text.span(), format!("{key} {url:?} {problem}"));
        }
        url.clone()
    }

    fn key_source(&mut self, table: &RawAuth, span: std::ops::Range<usize>) -> KeySource {
        match (&table.jwks_url, &table.jwks_file) {
            (Some(url), None) => {
                if let Err(problem) = check_jwks_url(url.get_ref()) {
                    self.report(url.span(), format!("auth.jwks_url {:?} {problem}", url.get_ref()));
                }
                KeySource::Url(url.get_ref().clone())
            }
            (None, Some(file)) if !file.get_ref().is_empty() => KeySource::File(PathBuf::from(file.get_ref())),
            (Some(_), Some(file)) => {
                self.report(file.span(), "[route.auth] takes jwks_url or jwks_file, not both".into());
                KeySource::File(PathBuf::from(file.get_ref()))
            }
            _ => {
                self.report(span, "[route.auth] needs jwks_url = \"https://…/jwks.json\" or jwks_file = \"/path/jwks.json\" (the issuer's signing keys)".into());
                KeySource::File(PathBuf::new())
            }
        }
    }

    fn algorithms(&mut self, raw: &Option<Vec<Spanned<String>>>, keys: &KeySource) -> Vec<Algorithm> {
        let Some(listed) = raw else { return DEFAULT_ALGORITHMS.to_vec() };
        let mut algorithms = Vec::new();
        for name in listed {
            match name.get_ref().parse::<Algorithm>() {
                Ok(algorithm) if crate::auth::crypto::is_asymmetric(algorithm) || matches!(keys, KeySource::File(_)) => {
                    algorithms.push(algorithm)
                }
                Ok(_) => self.report(
                    name.span(),
                    format!(
                        "auth.algorithms: {} is an HMAC algorithm, whose secret also mints tokens: only with a jwks_file the operator keeps (prefer the issuer's asymmetric keys)",
                        name.get_ref()
                    ),
                ),
                Err(_) => self.report(
                    name.span(),
                    format!(
                        "auth.algorithms: {:?} is not one mcp-edge verifies (RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA; HS256/384/512 with a jwks_file)",
                        name.get_ref()
                    ),
                ),
            }
        }
        if listed.is_empty() {
            self.report(0..0, "auth.algorithms must name at least one algorithm".into());
        }
        algorithms
    }

    fn scope_names(&mut self, listed: &[Spanned<String>], key: &str) -> Vec<String> {
        let mut scopes = Vec::new();
        for scope in listed {
            // RFC 6749 §3.3: printable ASCII but space, `"` and `\`.
            let valid = !scope.get_ref().is_empty()
                && scope.get_ref().bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\');
            if valid {
                scopes.push(scope.get_ref().clone());
            } else {
                self.report(scope.span(), format!("{key}: {:?} is not a scope token (RFC 6749 §3.3)", scope.get_ref()));
            }
        }
        scopes
    }

    /// Claims the operator says name a token, not its grant: never one that says who the caller
    /// is or what it may do (leaving `sub` out would let two users share private answers).
    fn instance_claims(&mut self, listed: &[Spanned<String>]) -> Vec<String> {
        let mut claims = Vec::new();
        for claim in listed {
            if GRANT_CLAIMS.contains(&claim.get_ref().as_str()) {
                let message = format!(
                    "auth.instance_claims: {:?} says who the caller is or what it may do: it must stay in the authorization context",
                    claim.get_ref()
                );
                self.report(claim.span(), message);
            } else {
                claims.push(claim.get_ref().clone());
            }
        }
        claims
    }

    fn subject_header(&mut self, raw: &Text) -> Option<String> {
        let text = raw.as_ref()?;
        let name = text.get_ref().to_ascii_lowercase();
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() || RESERVED_HEADERS.contains(&name.as_str()) {
            let message = format!(
                "auth.subject_header {:?} must be a header name of its own (e.g. \"x-auth-subject\")",
                text.get_ref()
            );
            self.report(text.span(), message);
            return None;
        }
        Some(name)
    }
}

fn span_of_list(list: &Option<Vec<Spanned<String>>>) -> std::ops::Range<usize> {
    list.as_ref().and_then(|items| items.first()).map_or(0..0, |first| first.span())
}

/// Whether `url` is an absolute `http(s)` URL with a host, and neither credentials, a query
/// nor a fragment.
fn check_web_url(url: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = url.parse().map_err(|_| "is not a URL".to_string())?;
    if !matches!(uri.scheme_str(), Some("https" | "http")) {
        return Err("must be an http:// or https:// URL".into());
    }
    let Some(authority) = uri.authority() else { return Err("names no host".into()) };
    if authority.as_str().contains('@') {
        return Err("must not carry credentials".into());
    }
    if uri.query().is_some() || url.contains('#') {
        return Err("must have no query or fragment".into());
    }
    Ok(uri)
}

/// A JWKS URL: keys fetched in the clear could be swapped on the way, so `https`, or `http`
/// to a loopback address only.
fn check_jwks_url(url: &str) -> Result<(), String> {
    let uri: http::Uri = url.parse().map_err(|_| "is not a URL".to_string())?;
    let Some(authority) = uri.authority() else { return Err("names no host".into()) };
    if authority.as_str().contains('@') {
        return Err("must not carry credentials".into());
    }
    match uri.scheme_str() {
        Some("https") => Ok(()),
        Some("http") if is_loopback(uri.host().unwrap_or_default()) => Ok(()),
        Some("http") => Err("must be https:// (keys fetched in the clear could be replaced on the way); http:// only to a loopback address".into()),
        _ => Err("must be an https:// URL".into()),
    }
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}
