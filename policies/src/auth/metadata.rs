//! What a protected route tells clients: its Protected Resource Metadata (RFC 9728), and the
//! `WWW-Authenticate` challenge of a refusal (RFC 6750 §3), which points at that metadata so
//! an MCP client can find the authorization server and start its OAuth flow.

use super::Rejection;

/// The well-known path of Protected Resource Metadata (RFC 9728 §3).
pub const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";

/// A protected resource, as its metadata describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    /// The resource identifier: the URI clients use, and the tokens' audience.
    pub resource: String,
    pub authorization_servers: Vec<String>,
    pub scopes_supported: Vec<String>,
}

impl Resource {
    /// The metadata document (RFC 9728 §2). Tokens are taken in the `Authorization` header
    /// only (never in a query, which MCP forbids, nor in a form body).
    pub fn document(&self) -> String {
        let mut document = serde_json::json!({
            "resource": self.resource,
            "authorization_servers": self.authorization_servers,
            "bearer_methods_supported": ["header"],
        });
        if !self.scopes_supported.is_empty() {
            document["scopes_supported"] = serde_json::json!(self.scopes_supported);
        }
        document.to_string()
    }

    /// Where the metadata is published: the well-known path inserted between the resource's
    /// authority and its path (RFC 9728 §3.1). `None` when the resource is not an absolute
    /// `http(s)` URL.
    pub fn metadata_url(&self) -> Option<String> {
        let uri: http::Uri = self.resource.parse().ok()?;
        let (scheme, authority) = (uri.scheme_str()?, uri.authority()?);
        Some(format!("{scheme}://{authority}{}", metadata_path(uri.path())))
    }

    /// The `WWW-Authenticate` value of a refusal: where the metadata is, the scopes the route
    /// requires, and (unless no token was sent, RFC 6750 §3.1) what was wrong.
    pub fn challenge(&self, rejection: &Rejection, required_scopes: &[String]) -> String {
        let mut challenge = String::from("Bearer");
        let mut param = |name: &str, value: &str| {
            let separator = if challenge.len() == "Bearer".len() { " " } else { ", " };
            challenge.push_str(separator);
            challenge.push_str(name);
            challenge.push_str("=\"");
            challenge.extend(value.chars().filter(|c| !c.is_control()).flat_map(|c| {
                let escape = matches!(c, '"' | '\\').then_some('\\');
                escape.into_iter().chain([c])
            }));
            challenge.push('"');
        };
        if let Some(url) = self.metadata_url() {
            param("resource_metadata", &url);
        }
        if !required_scopes.is_empty() {
            param("scope", &required_scopes.join(" "));
        }
        match rejection {
            Rejection::Missing => {}
            Rejection::InsufficientScope => {
                param("error", "insufficient_scope");
                param("error_description", &rejection.description());
            }
            _ => {
                param("error", "invalid_token");
                param("error_description", &rejection.description());
            }
        }
        challenge
    }
}

/// The path the metadata of a resource whose URI has `path` is published at.
pub fn metadata_path(path: &str) -> String {
    let path = path.trim_end_matches('/');
    format!("{WELL_KNOWN}{path}")
}
