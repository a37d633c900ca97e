//! The live configuration: a validated [`Config`] plus what serving it needs (resolved
//! upstream pools). Requests take a snapshot (`ArcSwap::load_full`) and keep it to their end,
//! so a reload never changes a request half-way.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use arc_swap::ArcSwap;
use mcp_edge_policies::Config;
use mcp_edge_policies::config::RouteConfig;

use crate::error::SetupError;
use crate::limits::RouteLimits;
use crate::pool::Pool;
use crate::readonly_tools::ReadonlyTools;
use crate::subscriptions::RouteWatch;

pub struct Route {
    pub config: RouteConfig,
    pub pool: Arc<Pool>,
    /// Tools this route's upstreams declared read-only (for `readonly_tools`).
    pub readonly: ReadonlyTools,
    pub limits: Arc<RouteLimits>,
    /// Whether the route's upstream gives handshake-era sessions, as its `initialize` answers
    /// through this node have said (unknown until one has).
    pub sessions: UpstreamSessions,
    /// What the edge's own subscriptions keep fresh (`None`: `[route.subscriptions]` is off).
    pub watch: Option<Arc<RouteWatch>>,
    /// Its most called tools and resources (see `insight`).
    pub operations: Arc<crate::insight::RouteOperations>,
    /// Its bearer token checks (`None`: `[route.auth]` is not set).
    pub auth: Option<crate::auth::RouteAuth>,
}

/// What a route's upstream answers a handshake-era `initialize` with: a session or none.
#[derive(Default)]
pub struct UpstreamSessions(AtomicU8);

impl UpstreamSessions {
    const MINTED: u8 = 1;
    const NONE: u8 = 2;

    /// An `initialize` was answered, minting a session or not.
    pub fn initialized(&self, minted: bool) {
        self.0.store(if minted { Self::MINTED } else { Self::NONE }, Ordering::Relaxed);
    }

    /// Whether the upstream is known to give no sessions (requests without one are its normal).
    pub fn known_sessionless(&self) -> bool {
        self.0.load(Ordering::Relaxed) == Self::NONE
    }
}

pub struct Runtime {
    pub config: Config,
    pub routes: Vec<Route>,
    /// The bearer token admin requests must carry (`admin.token_file`), if one is set.
    pub admin_token: Option<String>,
}

pub type Live = Arc<ArcSwap<Runtime>>;

impl Runtime {
    pub fn build(config: Config) -> Result<Runtime, SetupError> {
        let configured: Vec<_> = config.routes.iter().flat_map(|route| &route.upstreams).collect();
        crate::discovery::forget_all_but(&configured);
        let mut routes = config
            .routes
            .iter()
            .map(|route| {
                let pool = Arc::new(Pool::build(route)?);
                let limits = Arc::new(RouteLimits::new(route.limits));
                let readonly = ReadonlyTools::default();
                let (sessions, watch) = (UpstreamSessions::default(), crate::subscriptions::watch_for(route));
                let operations = crate::insight::table();
                let auth = crate::auth::RouteAuth::build(route)?;
                Ok(Route { config: route.clone(), pool, readonly, limits, sessions, watch, operations, auth })
            })
            .collect::<Result<Vec<_>, SetupError>>()?;
        crate::auth::share_key_stores(None, &mut routes);
        let admin_token = config.admin.token_file.as_deref().map(read_admin_token).transpose()?;
        Ok(Runtime { config, routes, admin_token })
    }

    /// The index of the route serving `path` (longest prefix).
    pub fn route_for(&self, path: &str) -> Option<usize> {
        mcp_edge_policies::routing::longest_prefix(&self.routes, path, |r| &r.config.path)
            .map(|found| self.routes.iter().position(|r| std::ptr::eq(r, found)).expect("route from this list"))
    }
}

/// Reads the admin token: the file's first line, which must not be blank.
fn read_admin_token(path: &Path) -> Result<String, SetupError> {
    let refused = |reason: String| SetupError::AdminToken { path: path.display().to_string(), reason };
    let text = std::fs::read_to_string(path).map_err(|e| refused(format!("cannot read: {e}")))?;
    let token = text.lines().next().unwrap_or_default().trim();
    if token.len() < 16 {
        return Err(refused("the token must be at least 16 characters".into()));
    }
    Ok(token.to_string())
}

/// Reads and validates a configuration file; the error lists every problem, one per line,
/// prefixed with the file name.
pub fn load_config(path: &Path) -> Result<Config, SetupError> {
    let file = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| SetupError::Unreadable { path: file.to_string(), reason: e.to_string() })?;
    Config::from_toml(&text).map_err(|problems| SetupError::Invalid {
        problems: problems.iter().map(|problem| format!("{file}: {problem}")).collect(),
    })
}
