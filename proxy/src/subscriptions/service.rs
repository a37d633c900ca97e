//! The background service that runs one worker per route, replica and era while that era of
//! the route watches anything, and follows reloads.

use crate::pool::Upstream;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use mcp_edge_policies::subscriptions::Era;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::sync::watch;

use super::link::Link;
use super::route_watch::{RouteWatch, WAKE, lock, unexport};
use super::{Context, RUNNING, handshake, listen};
use crate::runtime::{Live, Route, Runtime};
use crate::store::{EdgeCache, now_ms};

/// Everything that makes a worker what it is: a change of any restarts it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct WorkerKey {
    route: String,
    upstream: String,
    era: Era,
    /// The watch it serves (a route turned off and on again has a new one).
    watch: usize,
    addr: std::net::SocketAddr,
    ca_file: Option<PathBuf>,
    connect_timeout: Duration,
    read_timeout: Duration,
}

struct Worker {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// Runs every route's subscription workers while mcp-edge serves.
pub struct SubscriptionService {
    pub live: Live,
    pub cache: Arc<EdgeCache>,
}

#[async_trait]
impl BackgroundService for SubscriptionService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut workers: HashMap<WorkerKey, Worker> = HashMap::new();
        let mut exported: HashMap<String, Arc<RouteWatch>> = HashMap::new();
        let mut every_second = tokio::time::interval(Duration::from_secs(1));
        every_second.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            // Expired URIs are forgotten once a second; a wake-up (something newly watched)
            // only starts the workers now due.
            let prune = tokio::select! {
                _ = every_second.tick() => true,
                _ = WAKE.notified() => false,
                _ = shutdown.changed() => break,
            };
            let runtime = self.live.load_full();
            self.reconcile(&runtime, &mut workers, prune);
            export(&runtime, &mut exported);
        }
        // Stopping: each worker ends its session (a DELETE within a second), then the process
        // goes on stopping.
        let tasks: Vec<_> = workers
            .into_values()
            .map(|worker| {
                let _ = worker.stop.send(true);
                worker.task
            })
            .collect();
        let _ = tokio::time::timeout(Duration::from_secs(2), futures_util::future::join_all(tasks)).await;
    }
}

impl SubscriptionService {
    /// Starts the workers the live configuration and what its routes watch call for, and stops
    /// the others.
    fn reconcile(&self, runtime: &Runtime, workers: &mut HashMap<WorkerKey, Worker>, prune: bool) {
        let now = now_ms();
        let mut due = HashSet::new();
        for route in &runtime.routes {
            let Some(watch) = &route.watch else { continue };
            lock(&watch.unsupported).retain(|_, (until, _)| *until > now);
            for era in Era::ALL {
                if !watch.wants(era, now, prune) {
                    continue;
                }
                for upstream in &route.pool.members().upstreams {
                    let key = worker_key(route, watch, era, upstream);
                    let running = workers.get(&key).is_some_and(|w| !w.task.is_finished());
                    if !running {
                        let context = Context {
                            watch: watch.clone(),
                            era,
                            link: Link::new(route, upstream),
                            cache: self.cache.clone(),
                        };
                        workers.insert(key.clone(), spawn(context));
                    }
                    due.insert(key);
                }
            }
        }
        workers.retain(|key, worker| {
            let keep = due.contains(key);
            if !keep {
                let _ = worker.stop.send(true);
            }
            keep
        });
    }
}

fn worker_key(route: &Route, watch: &Arc<RouteWatch>, era: Era, upstream: &Upstream) -> WorkerKey {
    WorkerKey {
        route: route.config.name.clone(),
        upstream: upstream.label.clone(),
        era,
        watch: Arc::as_ptr(watch) as usize,
        addr: upstream.addr,
        ca_file: route.config.ca_file.clone(),
        connect_timeout: route.config.connect_timeout,
        read_timeout: route.config.read_timeout,
    }
}

fn spawn(context: Context) -> Worker {
    let (stop, stopping) = watch::channel(false);
    RUNNING.fetch_add(1, Ordering::AcqRel);
    let task = tokio::spawn(async move {
        let (watch, upstream, era) = (context.watch.clone(), context.link.url.url.clone(), context.era);
        match era {
            Era::Handshake => handshake::run(context, stopping).await,
            Era::Stateless => listen::run(context, stopping).await,
        }
        watch.forget_status(&upstream, era);
        RUNNING.fetch_sub(1, Ordering::AcqRel);
    });
    Worker { stop, task }
}

/// Exports every route's gauges; retires the watches of routes that are gone (or whose watch
/// was replaced) and removes their series.
fn export(runtime: &Runtime, exported: &mut HashMap<String, Arc<RouteWatch>>) {
    let mut now = HashMap::new();
    for route in &runtime.routes {
        if let Some(watch) = &route.watch {
            now.insert(route.config.name.clone(), watch.clone());
        }
    }
    for (name, watch) in exported.iter() {
        if now.get(name).is_none_or(|new| !Arc::ptr_eq(new, watch)) {
            watch.retired.store(true, Ordering::Relaxed);
            if !now.contains_key(name) {
                unexport(name);
            }
        }
    }
    now.values().for_each(|watch| watch.export());
    *exported = now;
}
