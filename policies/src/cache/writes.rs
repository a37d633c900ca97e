//! Writes through a route, as an HTTP cache treats unsafe methods (RFC 9111 §4.4): a
//! successful `tools/call` of a tool not known to be read-only may have changed what the
//! cache holds, so it invalidates the resources its result names and, by default, every entry
//! of the route that lives on mcp-edge's own TTL (the server vouched for none of them).

use serde::Deserialize;
use serde_json::value::RawValue;

use super::invalidation::Target;
use super::storing::ResultFacts;
use crate::config::{CachePolicy, WriteInvalidation};
use crate::jsonrpc::{Kind, Message};
use crate::method::Method;
use crate::observe::Observer;

/// Resource URIs one write result can invalidate by name; those past it are ignored (the
/// route's un-hinted entries are still invalidated with the default breadth). Bounds the
/// markers one answer adds.
pub const MAX_NAMED_RESOURCES: usize = 64;
/// A URI longer than this is not a marker's name: what a tool result says is bounded too.
const MAX_NAMED_URI: usize = 2048;

/// Whether `message` is a write to invalidate on under `policy`: a `tools/call` of a tool
/// neither named in `cache_tools` (the operator vouches that those change nothing) nor
/// declared `readOnlyHint: true` by the upstream's `tools/list` (`declared_read_only`). A
/// call whose tool cannot be named is a write: nothing says it is not.
pub fn is_write(message: &Message, policy: &CachePolicy, declared_read_only: impl Fn(&str) -> bool) -> bool {
    if policy.invalidate_on_write == WriteInvalidation::None {
        return false;
    }
    // A batch (2025-03-26) is carried unread: it may hold any call.
    if message.kind == Kind::Batch {
        return true;
    }
    if message.kind != Kind::Request || message.method.as_deref() != Some(Method::ToolsCall.as_str()) {
        return false;
    }
    let Some(name) = message.params.name.as_deref() else { return true };
    !(policy.cache_tools.iter().any(|listed| listed == name) || declared_read_only(name))
}

/// What became of a write, as far as its answer tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome<'a> {
    /// A result that is no tool error: `result` is its JSON text (without `ttlMs`), if it
    /// was an object.
    Succeeded(Option<&'a str>),
    /// A JSON-RPC error, a result with `isError: true`, or one that asks for input first
    /// (`input_required`): nothing was changed, or nothing the client was told of.
    Failed,
    /// The upstream accepted the request but its answer was not read (too large, cut off, not
    /// JSON-RPC): it may have changed anything.
    Unknown,
}

impl<'a> WriteOutcome<'a> {
    /// What `observer` read of a write's answer so far; `None`: nothing yet.
    pub fn observed(observer: &'a Observer) -> Option<WriteOutcome<'a>> {
        if !observer.responded() {
            return None;
        }
        Some(match observer.any_result() {
            Some(Some(ResultFacts { is_error: true, .. } | ResultFacts { input_required: true, .. })) => {
                WriteOutcome::Failed
            }
            Some(facts) => WriteOutcome::Succeeded(facts.map(|f| f.stored_result.as_str())),
            None => WriteOutcome::Failed,
        })
    }
}

/// What a write invalidates under `breadth`, given what became of it.
pub fn write_targets(breadth: WriteInvalidation, outcome: WriteOutcome<'_>) -> Vec<Target> {
    let unhinted = breadth == WriteInvalidation::Unhinted;
    match (breadth, outcome) {
        (WriteInvalidation::None, _) | (_, WriteOutcome::Failed) => Vec::new(),
        (_, WriteOutcome::Unknown) => {
            if unhinted {
                vec![Target::Unhinted]
            } else {
                Vec::new()
            }
        }
        (_, WriteOutcome::Succeeded(result)) => {
            let mut targets: Vec<Target> =
                result.map(named_resources).unwrap_or_default().into_iter().map(Target::Resource).collect();
            if unhinted {
                targets.push(Target::Unhinted);
            }
            targets
        }
    }
}

/// The resources a `tools/call` result names in its `content`: `resource_link` items' `uri`
/// and embedded `resource` items' `resource.uri` (at most [`MAX_NAMED_RESOURCES`], each
/// once). A result that is not of that shape names nothing.
pub fn named_resources(result: &str) -> Vec<String> {
    #[derive(Deserialize)]
    struct CallResult<'a> {
        #[serde(borrow, default)]
        content: Vec<&'a RawValue>,
    }
    #[derive(Deserialize)]
    struct Item {
        #[serde(rename = "type")]
        kind: Option<String>,
        uri: Option<String>,
        resource: Option<Embedded>,
    }
    #[derive(Deserialize)]
    struct Embedded {
        uri: Option<String>,
    }
    let Ok(call) = serde_json::from_str::<CallResult>(result) else { return Vec::new() };
    let mut named: Vec<String> = Vec::new();
    for item in call.content {
        // An item of another shape is skipped, not a reason to drop the others.
        let Ok(item) = serde_json::from_str::<Item>(item.get()) else { continue };
        let uri = match item.kind.as_deref() {
            Some("resource_link") => item.uri,
            Some("resource") => item.resource.and_then(|embedded| embedded.uri),
            _ => None,
        };
        let Some(uri) = uri.filter(|uri| !uri.is_empty() && uri.len() <= MAX_NAMED_URI) else { continue };
        if !named.contains(&uri) {
            named.push(uri);
        }
        if named.len() == MAX_NAMED_RESOURCES {
            break;
        }
    }
    named
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::jsonrpc::parse;

    fn policy(extra: &str) -> CachePolicy {
        let text = format!("[[route]]\npath = \"/mcp\"\nupstreams = [\"http://h:1/mcp\"]\n[route.policy]\n{extra}\n");
        Config::from_toml(&text).unwrap().routes[0].policy.clone()
    }

    fn call(name: &str) -> Message {
        let body = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{name}"}}}}"#);
        parse(body.as_bytes()).unwrap()
    }

    #[test]
    fn a_call_is_a_write_unless_the_upstream_or_the_operator_says_it_reads_only() {
        let p = policy("cache_tools = [\"listed\"]");
        let read_only = |name: &str| name == "declared";
        assert!(is_write(&call("set_text"), &p, read_only));
        assert!(!is_write(&call("declared"), &p, read_only));
        assert!(!is_write(&call("listed"), &p, read_only));
        let nameless = parse(br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}"#).unwrap();
        assert!(is_write(&nameless, &p, read_only), "a call nothing vouches for");
        let batch = parse(br#"[{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"a://1"}}]"#).unwrap();
        assert!(is_write(&batch, &p, read_only), "a batch is carried unread: it may hold a call");
        let read = parse(br#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"a://1"}}"#).unwrap();
        assert!(!is_write(&read, &p, read_only));
        let notification = parse(br#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"x"}}"#).unwrap();
        assert!(!is_write(&notification, &p, read_only), "a notification is answered by nothing");
        assert!(!is_write(&call("set_text"), &policy("invalidate_on_write = \"none\""), read_only));
        assert!(is_write(&call("set_text"), &policy("invalidate_on_write = \"named\""), read_only));
    }

    #[test]
    fn a_result_names_its_links_and_embedded_resources_once_each() {
        let result = r#"{"content":[
            {"type":"text","text":"done","uri":"not://a-link"},
            {"type":"resource_link","uri":"doc://a","name":"a"},
            {"type":"resource","resource":{"uri":"doc://b","text":"b"}},
            {"type":"resource_link","uri":"doc://a"},
            {"type":"resource_link","uri":42},
            {"type":"resource_link"},
            "odd"
        ],"structuredContent":{"uri":"doc://ignored"}}"#;
        assert_eq!(named_resources(result), vec!["doc://a".to_string(), "doc://b".to_string()]);
        assert!(named_resources(r#"{"content":"nope"}"#).is_empty());
        assert!(named_resources("[]").is_empty());
        let many: Vec<String> = (0..100).map(|i| format!(r#"{{"type":"resource_link","uri":"doc://{i}"}}"#)).collect();
        let result = format!(r#"{{"content":[{}]}}"#, many.join(","));
        assert_eq!(named_resources(&result).len(), MAX_NAMED_RESOURCES);
        let long = format!(r#"{{"content":[{{"type":"resource_link","uri":"doc://{}"}}]}}"#, "x".repeat(5000));
        assert!(named_resources(&long).is_empty());
    }

    #[test]
    fn the_breadth_decides_what_a_write_invalidates() {
        let named = r#"{"content":[{"type":"resource_link","uri":"doc://a"}]}"#;
        let success = WriteOutcome::Succeeded(Some(named));
        assert_eq!(
            write_targets(WriteInvalidation::Unhinted, success),
            vec![Target::Resource("doc://a".into()), Target::Unhinted]
        );
        assert_eq!(write_targets(WriteInvalidation::Named, success), vec![Target::Resource("doc://a".into())]);
        assert!(write_targets(WriteInvalidation::None, success).is_empty());
        for breadth in [WriteInvalidation::Unhinted, WriteInvalidation::Named] {
            assert!(write_targets(breadth, WriteOutcome::Failed).is_empty(), "{breadth:?}");
        }
        assert_eq!(write_targets(WriteInvalidation::Unhinted, WriteOutcome::Unknown), vec![Target::Unhinted]);
        assert!(write_targets(WriteInvalidation::Named, WriteOutcome::Unknown).is_empty());
    }

    #[test]
    fn what_became_of_a_write_is_read_from_its_answer() {
        let outcome_of = |answer: &str| {
            let mut observer = Observer::new(Some("1".into()), false, 1 << 20);
            observer.feed(answer.as_bytes());
            observer.finish();
            WriteOutcome::observed(&observer).map(|outcome| format!("{outcome:?}"))
        };
        assert_eq!(
            outcome_of(r#"{"jsonrpc":"2.0","id":1,"result":{"content":[]}}"#).as_deref(),
            Some(r#"Succeeded(Some("{\"content\":[]}"))"#)
        );
        assert_eq!(outcome_of(r#"{"jsonrpc":"2.0","id":1,"result":7}"#).as_deref(), Some("Succeeded(None)"));
        for failed in [
            r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"no"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{"content":[],"isError":true}}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{"resultType":"input_required"}}"#,
        ] {
            assert_eq!(outcome_of(failed).as_deref(), Some("Failed"), "{failed}");
        }
        assert_eq!(outcome_of(r#"{"jsonrpc":"2.0","id":2,"result":{}}"#), None, "another request's answer");
    }
}
