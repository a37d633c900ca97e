//! Writes through the route (see `mcp_edge_policies::cache::writes`): a `tools/call` of a tool
//! not known to be read-only is noted when it is understood, and once its answer tells what
//! became of it, what it may have changed is invalidated, before the client is given that
//! answer (so its next read cannot beat the invalidation).

use mcp_edge_policies::cache::{WriteOutcome, is_write, write_targets};
use mcp_edge_policies::jsonrpc::Message;

use super::McpProxy;
use super::ctx::Ctx;
use crate::runtime::Route;

/// Whether `message` is a write to invalidate on, on `route` (see `Ctx::write_pending`).
pub(super) fn is_write_on(route: &Route, message: &Message) -> bool {
    is_write(message, &route.config.policy, |name| route.readonly.declared_read_only(name))
}

impl McpProxy {
    /// Applies a pending write's invalidation once its answer says what became of it; at the
    /// end of the answer (`finished`), whatever it said: an answer the proxy could not read
    /// (a batch, one too large, one cut off) may still have changed anything. Only a write the
    /// upstream accepted (`2xx`, see `Ctx::write_accepted`) is applied: one it refused or
    /// never got changed nothing.
    pub(super) fn settle_write(&self, ctx: &mut Ctx, finished: bool) {
        if !ctx.write_pending || !ctx.write_accepted {
            return;
        }
        let outcome = match ctx.observer.as_ref().and_then(WriteOutcome::observed) {
            Some(outcome) => outcome,
            None if finished => WriteOutcome::Unknown,
            None => return,
        };
        ctx.write_pending = false;
        let Some(route) = ctx.route() else { return };
        let targets = write_targets(route.config.policy.invalidate_on_write, outcome);
        if !targets.is_empty() {
            tracing::debug!(route = %route.config.name, ?targets, "invalidating after a write");
            self.cache.invalidate(&route.config.name, &targets, "write");
        }
    }
}
