//! Writes through the route (see `mcp_edge_policies::cache::writes`): a `tools/call` of a tool
//! not known to be read-only is noted when it is understood, and once its answer tells what
//! became of it, what it may have changed is invalidated, before the client is given that
//! answer (so its next read cannot beat the invalidation).

use mcp_edge_policies::cache::{WriteOutcome, write_targets};

use super::McpProxy;
use super::ctx::Ctx;

impl McpProxy {
    /// Applies a pending write's invalidation once its answer says what became of it; at the
    /// end of the request (`finished`), whatever it said: a write the proxy sent may have been
    /// applied though its answer could not be read (a batch, one too large, one cut off, the
    /// client gone, the upstream past `read_timeout`). Only a write the upstream refused (a
    /// head other than `2xx`) or never got changed nothing.
    ///
    /// A write whose outcome is unknown may still be under way upstream: reads made before it
    /// ends could store the old data again. Its invalidation is applied again once the route's
    /// `read_timeout` (at most a minute) has passed.
    pub(super) fn settle_write(&self, ctx: &mut Ctx, finished: bool) {
        if !ctx.write_pending() || !ctx.answer.write_sent || ctx.answer.write_refused {
            return;
        }
        let outcome = match ctx.answer.observer.as_ref().and_then(WriteOutcome::observed) {
            Some(outcome) => outcome,
            None if finished => WriteOutcome::Unknown,
            None => return,
        };
        if let Some(request) = ctx.request.as_mut() {
            request.write_pending = false;
        }
        let Some(route) = ctx.route() else { return };
        let targets = write_targets(route.config.policy.invalidate_on_write, outcome);
        if targets.is_empty() {
            return;
        }
        tracing::debug!(route = %route.config.name, ?targets, "invalidating after a write");
        self.cache.invalidate(&route.config.name, &targets, "write");
        if outcome == WriteOutcome::Unknown {
            let (cache, name) = (self.cache.clone(), route.config.name.clone());
            let later = route.config.read_timeout.min(MAX_WRITE_UNDER_WAY);
            tokio::spawn(async move {
                tokio::time::sleep(later).await;
                cache.invalidate(&name, &targets, "write");
            });
        }
    }
}

/// The longest a write of unknown outcome is taken to be still under way upstream.
const MAX_WRITE_UNDER_WAY: std::time::Duration = std::time::Duration::from_secs(60);
