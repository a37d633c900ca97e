//! Path routing: longest prefix on whole path segments, and the path sent upstream.

use std::borrow::Cow;

/// Whether request path `path` is served by route prefix `prefix` (`/mcp` serves `/mcp`,
/// `/mcp/x` and `/mcp?q`, not `/mcpx`).
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/') || rest.starts_with('?'),
        None => false,
    }
}

/// The item whose prefix matches `path` and is longest.
pub fn longest_prefix<'a, T>(items: &'a [T], path: &str, prefix_of: impl Fn(&T) -> &str) -> Option<&'a T> {
    items
        .iter()
        .filter(|item| prefix_matches(prefix_of(item), path))
        .max_by_key(|item| prefix_of(item).trim_end_matches('/').len())
}

/// The path and query sent upstream: the upstream URL's path, then whatever of the request
/// path follows the route prefix (as `proxy_pass http://host/path` does in nginx). Borrowed when
/// it is the request's own path or the upstream's (the common case: nothing to build).
pub fn upstream_path<'a>(route_prefix: &str, upstream_path: &'a str, request_path_and_query: &'a str) -> Cow<'a, str> {
    let rest =
        request_path_and_query.strip_prefix(route_prefix.trim_end_matches('/')).unwrap_or(request_path_and_query);
    if rest.is_empty() {
        return Cow::Borrowed(upstream_path);
    }
    let base = upstream_path.trim_end_matches('/');
    if rest.starts_with('?') && base.is_empty() {
        return Cow::Owned(format!("/{rest}"));
    }
    if request_path_and_query.strip_suffix(rest) == Some(base) {
        return Cow::Borrowed(request_path_and_query);
    }
    Cow::Owned(format!("{base}{rest}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_match_on_segments() {
        assert!(prefix_matches("/mcp", "/mcp"));
        assert!(prefix_matches("/mcp", "/mcp/"));
        assert!(prefix_matches("/mcp", "/mcp/sub"));
        assert!(prefix_matches("/mcp", "/mcp?x=1"));
        assert!(!prefix_matches("/mcp", "/mcpx"));
        assert!(prefix_matches("/", "/anything"));
        assert!(prefix_matches("/mcp/", "/mcp"));
    }

    #[test]
    fn longest_prefix_wins() {
        let routes = ["/", "/mcp", "/mcp/docs"];
        let pick = |p| longest_prefix(&routes, p, |r| r).copied();
        assert_eq!(pick("/mcp/docs/x"), Some("/mcp/docs"));
        assert_eq!(pick("/mcp"), Some("/mcp"));
        assert_eq!(pick("/other"), Some("/"));
        assert_eq!(longest_prefix(&["/a"], "/b", |r| r), None);
    }

    #[test]
    fn upstream_paths() {
        assert_eq!(upstream_path("/mcp", "/mcp", "/mcp"), "/mcp");
        assert_eq!(upstream_path("/docs", "/mcp", "/docs"), "/mcp");
        assert_eq!(upstream_path("/docs", "/mcp", "/docs/x?y=1"), "/mcp/x?y=1");
        assert_eq!(upstream_path("/docs", "/mcp", "/docs?y=1"), "/mcp?y=1");
        assert_eq!(upstream_path("/", "/", "/mcp"), "/mcp");
        assert_eq!(upstream_path("/mcp", "/", "/mcp?y"), "/?y");
        assert!(matches!(upstream_path("/mcp", "/mcp", "/mcp/x?y=1"), Cow::Borrowed("/mcp/x?y=1")));
        assert!(matches!(upstream_path("/mcp", "/mcp", "/mcp"), Cow::Borrowed("/mcp")));
    }
}
