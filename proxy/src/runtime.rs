//! The live configuration: a validated [`Config`] plus what serving it needs (resolved
//! upstream pools). Requests take a snapshot (`ArcSwap::load_full`) and keep it to their end,
//! so a reload never changes a request half-way.

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use mcp_edge_policies::Config;
use mcp_edge_policies::config::RouteConfig;

use crate::cached::ReadonlyTools;
use crate::pool::Pool;

pub struct Route {
    pub config: RouteConfig,
    pub pool: Arc<Pool>,
    /// Tools this route's upstreams declared read-only (for `readonly_tools`).
    pub readonly: ReadonlyTools,
}

pub struct Runtime {
    pub config: Config,
    pub routes: Vec<Route>,
}

pub type Live = Arc<ArcSwap<Runtime>>;

impl Runtime {
    pub fn build(config: Config) -> Result<Runtime, String> {
        let routes = config
            .routes
            .iter()
            .map(|route| {
                let pool = Arc::new(Pool::build(route)?);
                Ok(Route { config: route.clone(), pool, readonly: ReadonlyTools::default() })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Runtime { config, routes })
    }

    /// The index of the route serving `path` (longest prefix).
    pub fn route_for(&self, path: &str) -> Option<usize> {
        mcp_edge_policies::routing::longest_prefix(&self.routes, path, |r| &r.config.path)
            .map(|found| self.routes.iter().position(|r| std::ptr::eq(r, found)).expect("route from this list"))
    }
}

/// Reads and validates a configuration file; the error lists every problem, one per line,
/// prefixed with the file name.
pub fn load_config(path: &Path) -> Result<Config, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    Config::from_toml(&text)
        .map_err(|problems| problems.iter().map(|p| format!("{}: {p}", path.display())).collect::<Vec<_>>().join("\n"))
}
