//! Per-operation insight, the proxy's side (the table and the advice are
//! `mcp_edge_policies::insight`): each route's table of its most called tools and resources,
//! fed once per answered `tools/call` and `resources/read` (hits included), read by `/stats`
//! (hence the dashboard and `mcp-edge status`) and, when `admin.operation_metrics` says so,
//! by `/metrics`.
//!
//! Feeding it costs one uncontended lock: a call that finds the table locked by another
//! thread is not counted (the figures are a sample under contention), so no request waits.

use std::fmt::Write;
use std::sync::{Arc, Mutex};

use mcp_edge_policies::insight::{self, Call, OpKind, OperationNow, Operations, RouteFacts};
use mcp_edge_policies::jsonrpc::Message;
use mcp_edge_policies::method::Method;
use serde::Serialize;

use crate::runtime::{Route, Runtime};
use crate::store::now_ms;

/// Operations shown (in `/stats`, `status`, the dashboard, and `/metrics` when asked).
pub const SHOWN: usize = 10;

/// A route's table (kept across reloads by the route's name).
#[derive(Default)]
pub struct RouteOperations(Mutex<Operations>);

impl RouteOperations {
    /// Counts one answered call, unless another thread holds the table.
    pub fn record(&self, call: &Call<'_>) {
        if let Ok(mut operations) = self.0.try_lock() {
            operations.record(call);
        }
    }

    /// The most called operations and the misses refresh-ahead would have saved.
    fn top(&self) -> (Vec<OperationNow>, u64) {
        let operations = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        (operations.top(now_ms(), SHOWN), operations.expired_misses())
    }
}

/// The operation a request calls, as the intake notes it.
#[derive(Debug, Clone)]
pub struct Op {
    pub kind: OpKind,
    pub name: String,
    /// Hash of its arguments (a read's are its URI).
    pub args: u64,
}

impl Op {
    /// The operation `message` calls, if it is one the insight tracks; its name (tool name or
    /// URI) is taken from the message, which is read no more.
    pub fn take_from(message: &mut Message) -> Option<Op> {
        let params = &mut message.params;
        match message.method.as_deref().and_then(Method::named)? {
            Method::ToolsCall => {
                let name = params.name.take()?;
                let args = insight::hash_of(params.arguments.as_deref().unwrap_or("{}"));
                Some(Op { kind: OpKind::Tool, name, args })
            }
            Method::ResourcesRead => {
                let uri = params.uri.take()?;
                Some(Op { kind: OpKind::Resource, args: insight::hash_of(&uri), name: uri })
            }
            _ => None,
        }
    }
}

/// What `/stats` says of a route's operations.
#[derive(Debug, Serialize)]
pub struct OperationsNow {
    pub top: Vec<OperationNow>,
    pub advice: Vec<String>,
}

/// A route's most called operations, and the advice they give.
pub fn now(route: &Route) -> OperationsNow {
    let (top, expired_misses) = route.operations.top();
    let policy = &route.config.policy;
    let caches_tool = |name: &str| {
        policy.cache_tools.iter().any(|tool| tool == name) || (policy.readonly_tools && route.readonly.contains(name))
    };
    let marked_read_only = |name: &str| route.readonly.contains(name).then_some(true);
    let facts = RouteFacts {
        route: &route.config.name,
        refresh_ahead: route.config.prefetch.enabled && route.config.prefetch.refresh_ahead > 0.0,
        caches_tool: &caches_tool,
        marked_read_only: &marked_read_only,
    };
    let advice = insight::advice(&facts, &top, expired_misses);
    OperationsNow { top, advice }
}

/// Keeps each route's table across a reload (routes are matched by name).
pub fn carry_over(old: &Runtime, new: &mut Runtime) {
    for route in &mut new.routes {
        if let Some(kept) = old.routes.iter().find(|r| r.config.name == route.config.name) {
            route.operations = kept.operations.clone();
        }
    }
}

/// A new route's table.
pub fn table() -> Arc<RouteOperations> {
    Arc::new(RouteOperations::default())
}

/// The `mcp_operation_*` series (`admin.operation_metrics`): each route's most called
/// operations by name. Written at each scrape from the tables, so a name that left a table
/// leaves `/metrics` too (labels stay bounded by [`SHOWN`] per route).
pub fn metrics_text(runtime: &Runtime) -> String {
    let mut text = String::new();
    let families = [
        ("mcp_operation_calls_per_second", "Calls per second of a route's most called tools and resources"),
        ("mcp_operation_latency_p99_seconds", "99th percentile latency of a route's most called operations"),
        ("mcp_operation_hit_ratio", "Hit ratio of a route's most called operations (those that can hit)"),
    ];
    let tops: Vec<(&str, Vec<OperationNow>)> =
        runtime.routes.iter().map(|route| (route.config.name.as_str(), route.operations.top().0)).collect();
    for (index, (name, help)) in families.iter().enumerate() {
        let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (route, top) in &tops {
            for op in top {
                let value = match index {
                    0 => Some(op.calls_per_second),
                    1 => Some(op.p99_ms / 1000.0),
                    _ => op.hit_ratio,
                };
                let Some(value) = value else { continue };
                let kind = match op.kind {
                    OpKind::Tool => "tool",
                    OpKind::Resource => "resource",
                };
                let _ = writeln!(
                    text,
                    "{name}{{route=\"{}\",kind=\"{kind}\",name=\"{}\"}} {value}",
                    escape_label(route),
                    escape_label(&op.name)
                );
            }
        }
    }
    text
}

/// A Prometheus label value: backslash, double quote and line feed escaped.
fn escape_label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_cannot_break_the_exposition() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn tools_and_reads_are_tracked_by_name_and_arguments() {
        let call = |body: &str| Op::take_from(&mut mcp_edge_policies::jsonrpc::parse(body.as_bytes()).unwrap());
        let weather =
            call(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"w","arguments":{"c":1}}}"#);
        let weather = weather.unwrap();
        assert_eq!((weather.kind, weather.name.as_str()), (OpKind::Tool, "w"));
        let other = call(r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"w","arguments":{"c":2}}}"#);
        assert_ne!(other.unwrap().args, weather.args);
        let read = call(r#"{"jsonrpc":"2.0","id":3,"method":"resources/read","params":{"uri":"a://b"}}"#).unwrap();
        assert_eq!((read.kind, read.name.as_str()), (OpKind::Resource, "a://b"));
        assert!(call(r#"{"jsonrpc":"2.0","id":4,"method":"tools/list"}"#).is_none());
    }
}
