//! Work beside the request path: active health checks of every pool, and SIGHUP reloads.

use std::path::PathBuf;
use std::sync::{Arc, Weak};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::signal::unix::{SignalKind, signal};

use crate::error::SetupError;
use crate::pool::Pool;
use crate::runtime::{Live, Runtime, load_config};
use crate::store::EdgeCache;
use crate::tls::Certificates;

pub struct Supervisor {
    pub live: Live,
    pub cache: Arc<EdgeCache>,
    /// The TLS listeners' certificate, replaced on reload.
    pub certificates: Option<Arc<Certificates>>,
    /// The file to re-read on SIGHUP (`None` for `mcp-edge demo`, whose config is built in).
    pub config_path: Option<PathBuf>,
}

#[async_trait]
impl BackgroundService for Supervisor {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        spawn_health_checks(&self.live.load());
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(stream) => stream,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGHUP; reloads are off");
                let _ = shutdown.changed().await;
                return;
            }
        };
        loop {
            tokio::select! {
                _ = hangups.recv() => self.reload().await,
                _ = shutdown.changed() => break,
            }
        }
        // Entries still buffered for the disk tier are written before the process ends.
        self.cache.close().await;
    }
}

impl Supervisor {
    /// Re-reads the configuration; swaps it in only when it is valid and buildable. Reading
    /// files and resolving upstream names block: that runs on a blocking thread, not on the
    /// runtime that serves requests.
    async fn reload(&self) {
        let Some(path) = &self.config_path else {
            tracing::info!("SIGHUP: the demo configuration is built in; nothing to reload");
            return;
        };
        let (file, tls_listening) = (path.clone(), self.certificates.is_some());
        let outcome = tokio::task::spawn_blocking(move || build_runtime(&file, tls_listening))
            .await
            .unwrap_or_else(|e| Err(SetupError::Invalid { problems: vec![format!("the reload failed: {e}")] }));
        match outcome {
            Ok((mut runtime, certificate)) => {
                if let (Some(certificate), Some(certificates)) = (certificate, &self.certificates) {
                    certificates.replace(certificate);
                }
                warn_about_restart_only_changes(&self.live.load().config, &runtime.config);
                crate::logging::set_format(runtime.config.log.format);
                let spans = runtime.config.tracing.clone();
                match tokio::task::spawn_blocking(move || crate::spans::configure(&spans)).await {
                    Ok(Err(problem)) => tracing::error!("{problem}; spans are exported as before"),
                    Err(e) => tracing::error!("the span exporter could not be set up: {e}"),
                    Ok(Ok(())) => {}
                }
                crate::subscriptions::carry_over(&self.live.load(), &mut runtime);
                crate::insight::carry_over(&self.live.load(), &mut runtime);
                crate::auth::carry_over(&self.live.load(), &mut runtime);
                let runtime = Arc::new(runtime);
                spawn_health_checks(&runtime);
                self.live.store(runtime);
                crate::metrics::METRICS.config_reloads.with_label_values(&["ok"]).inc();
                crate::metrics::METRICS.config_loaded();
                tracing::info!(config = %path.display(), "configuration reloaded");
            }
            Err(problems) => {
                crate::metrics::METRICS.config_reloads.with_label_values(&["error"]).inc();
                let problems = problems.placed(path);
                tracing::error!(config = %path.display(), "configuration refused; the previous one keeps serving:\n{problems}");
            }
        }
    }
}

/// Reads, validates and builds a configuration, with its new certificate when TLS listeners
/// run. The certificate is loaded before anything is swapped: a bad one refuses the reload.
fn build_runtime(
    path: &std::path::Path,
    tls_listening: bool,
) -> Result<(Runtime, Option<rustls::sign::CertifiedKey>), SetupError> {
    let config = load_config(path)?;
    let certificate = match (&config.server.tls, tls_listening) {
        (Some(tls), true) => Some(crate::tls::load(tls)?),
        _ => None,
    };
    Ok((Runtime::build(config)?, certificate))
}

fn warn_about_restart_only_changes(old: &mcp_edge_policies::Config, new: &mcp_edge_policies::Config) {
    if old.server.listen != new.server.listen
        || old.server.tls.as_ref().map(|t| &t.listen) != new.server.tls.as_ref().map(|t| &t.listen)
    {
        tracing::warn!("listener addresses changed: they take effect only after a restart");
    }
    if old.server.threads != new.server.threads {
        tracing::warn!("server.threads changed: it takes effect only after a restart");
    }
    if old.cache != new.cache {
        tracing::warn!("[cache] changed: it takes effect only after a restart");
    }
    if old.server.tls.is_some() != new.server.tls.is_some() {
        tracing::warn!("[server.tls] was added or removed: that takes effect only after a restart");
    }
    if old.admin != new.admin {
        tracing::warn!("admin.listen changed: it takes effect only after a restart");
    }
}

/// One health-check loop per pool, and one discovery loop per pool that discovers, each
/// ending when the pool is dropped (after a reload has replaced it and its last request has
/// finished).
fn spawn_health_checks(runtime: &Runtime) {
    crate::auth::spawn_refreshers(runtime);
    for route in &runtime.routes {
        if route.pool.discovery_due().is_some() {
            let pool: Weak<Pool> = Arc::downgrade(&route.pool);
            tokio::spawn(async move {
                loop {
                    let Some(due) = pool.upgrade().and_then(|pool| pool.discovery_due()) else { return };
                    tokio::time::sleep_until(due.into()).await;
                    let Some(pool) = pool.upgrade() else { return };
                    pool.rediscover().await;
                }
            });
        }
        let pool: Weak<Pool> = Arc::downgrade(&route.pool);
        let interval = route.config.health.interval;
        tokio::spawn(async move {
            loop {
                let Some(pool) = pool.upgrade() else { return };
                pool.run_health_check().await;
                drop(pool);
                tokio::time::sleep(interval).await;
            }
        });
    }
}
