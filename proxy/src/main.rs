//! mcp-edge: an MCP-aware edge caching reverse proxy.

mod admin;
mod answer;
mod auth;
mod body_coding;
mod coalesce;
mod compress;
mod cpu;
mod demo_upstream;
mod discovery;
mod drain;
mod error;
mod front;
mod guards;
mod health;
mod insight;
mod intake;
mod ip_text;
mod known_headers;
mod limits;
mod linger;
mod live_sessions;
mod logging;
mod metrics;
mod pool;
mod prefetch;
mod readonly_tools;
mod request_cache;
mod request_id;
mod respond;
mod runtime;
mod served;
mod service;
mod session_signals;
mod spans;
mod stats;
mod status;
mod store;
mod subscriptions;
mod supervisor;
mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use arc_swap::ArcSwap;
use clap::{Parser, Subcommand};
use mcp_edge_policies::Config;
use pingora::listeners::tls::TlsSettings;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;
use pingora::services::background::background_service;

use crate::demo_upstream::DemoOptions;
use crate::runtime::{Runtime, load_config};

/// glibc's allocator serialises Pingora's worker threads on its arena locks (seen in
/// profiles of the load benchmark); mimalloc keeps per-thread heaps.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DEFAULT_CONFIG: &str = "/etc/mcp-edge/mcp-edge.toml";

#[derive(Parser)]
#[command(name = "mcp-edge", version, about = "MCP-aware edge caching reverse proxy")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve with the given configuration (SIGHUP reloads it, SIGTERM drains and stops).
    Run {
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Validate a configuration file: print every problem with its line, exit 1 on error.
    Check {
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Print what a running mcp-edge is doing, as one screen of text (from its admin listener's
    /// `/stats`).
    Status {
        /// The admin listener (`admin.listen`).
        #[arg(long, default_value = "127.0.0.1:9090")]
        admin: String,
        /// A file holding the admin bearer token (`admin.token_file`), when one is required.
        #[arg(long)]
        token_file: Option<PathBuf>,
    },
    /// Serve a built-in demo MCP server and mcp-edge in front of it, on localhost.
    Demo {
        /// Port of the proxy.
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// Port of the demo MCP upstream.
        #[arg(long, default_value_t = 3001)]
        upstream_port: u16,
        /// Port of the admin listener (dashboard, /stats, /metrics), on 127.0.0.1; 0: none.
        #[arg(long, default_value_t = 9090)]
        admin_port: u16,
    },
    /// Serve only the demo MCP server (a test and benchmark upstream).
    Upstream {
        #[arg(long, default_value = "127.0.0.1:3001")]
        listen: SocketAddr,
        #[command(flatten)]
        options: DemoOptions,
    },
}

fn main() -> ExitCode {
    cpu::avoid_huge_page_stalls();
    // A write past the file-size limit (RLIMIT_FSIZE) must fail with EFBIG for the cache to
    // handle, not end the process with SIGXFSZ.
    // SAFETY: setting a signal's disposition to "ignore" at start, before any thread exists.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    logging::init();
    match Cli::parse().command {
        Command::Run { config } => match load_config(&config) {
            Ok(parsed) => serve(parsed, Some(config)),
            Err(problems) => {
                eprintln!("{problems}");
                ExitCode::FAILURE
            }
        },
        Command::Check { config } => check(&config),
        Command::Status { admin, token_file } => status::run(&admin, token_file.as_deref()),
        Command::Demo { port, upstream_port, admin_port } => demo(port, upstream_port, admin_port),
        Command::Upstream { listen, options } => {
            let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind(listen).await.unwrap_or_else(|e| {
                    eprintln!("cannot listen on {listen}: {e}");
                    std::process::exit(1)
                });
                eprintln!("demo MCP upstream listening on http://{}/mcp", listener.local_addr().unwrap());
                demo_upstream::serve(listener, options).await;
            });
            ExitCode::SUCCESS
        }
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    let outcome = load_config(path).and_then(|config| {
        // Loading the certificate and resolving upstream hosts are part of what starting or
        // reloading would do: check them too.
        if let Some(tls_config) = &config.server.tls {
            tls::load(tls_config)?;
        }
        if let Some(shared) = &config.cache.shared {
            store::check_shared(shared).map_err(error::SetupError::SharedTier)?;
        }
        let mut notes = check_notes(&config);
        let runtime = Runtime::build(config)?;
        for route in &runtime.routes {
            for name in route.pool.discovery_status().into_iter().filter(|n| n.error.is_some()) {
                let error = name.error.unwrap_or_default();
                notes.push(format!(
                    "warning: route {:?}: upstream {} does not resolve ({error}); discovery keeps asking every {:?}",
                    route.config.name, name.upstream, route.config.discovery.interval
                ));
            }
        }
        Ok(notes)
    });
    match outcome {
        Ok(notes) => {
            for note in notes {
                // A warning is said as one; other notes explain a default.
                match note.strip_prefix("warning: ") {
                    Some(warning) => println!("{}: warning: {warning}", path.display()),
                    None => println!("{}: note: {note}", path.display()),
                }
            }
            println!("{}: OK", path.display());
            ExitCode::SUCCESS
        }
        Err(problems) => {
            eprintln!("{}", problems.placed(path));
            ExitCode::FAILURE
        }
    }
}

/// What `check` explains beside the problems: defaults that decide who may call, and exposed
/// admin listeners.
fn check_notes(config: &Config) -> Vec<String> {
    let mut notes = Vec::new();
    let server = &config.server;
    if server.allowed_hosts_default {
        notes.push(if server.loopback_only() {
            "server.allowed_hosts is not set: every listener is on loopback, so only requests for localhost, 127.0.0.1 or [::1] (any port) are served (DNS-rebinding protection); list your public names to serve them".to_string()
        } else {
            "server.allowed_hosts is not set: a listener is not on loopback, so any Host is served; list your names to refuse others".to_string()
        });
    }
    notes.push(match server.allowed_origins.is_empty() {
        true => "server.allowed_origins is empty: browsers may call only from the proxy's own origin (Origin equal to the request's Host); other origins get 403".to_string(),
        false => format!("server.allowed_origins: besides same-origin requests, {} may call", server.allowed_origins.join(", ")),
    });
    if let Some(shared) = &config.cache.shared
        && shared.secret_file.is_none()
    {
        notes.push("warning: cache.shared.secret_file is not set: whoever can write to the Redis server can make every node serve what it writes, under any key, and read every shared answer (README: \"Who can write to Redis\")".to_string());
    }
    if let Some(addr) = config.admin.listen
        && !addr.ip().is_loopback()
    {
        notes.push(match &config.admin.token_file {
            Some(_) => format!("warning: admin.listen {addr} is not loopback; admin requests need the bearer token of admin.token_file"),
            None => format!("warning: admin.listen {addr} is not loopback and admin.token_file is not set: anyone who reaches it can read metrics and purge the cache"),
        });
    }
    notes
}

fn demo(port: u16, upstream_port: u16, admin_port: u16) -> ExitCode {
    let upstream = match demo_upstream::spawn_in_thread(([127, 0, 0, 1], upstream_port).into(), DemoOptions::default())
    {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("cannot start the demo upstream on 127.0.0.1:{upstream_port}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let admin = if admin_port == 0 { String::new() } else { format!("127.0.0.1:{admin_port}") };
    let source = format!(
        "[server]\nlisten = [\"127.0.0.1:{port}\"]\n[admin]\nlisten = \"{admin}\"\n\n[[route]]\nname = \"demo\"\npath = \"/mcp\"\nupstreams = [\"http://{upstream}/mcp\"]\n"
    );
    let config = Config::from_toml(&source).expect("the demo configuration is valid");
    println!("demo MCP upstream: http://{upstream}/mcp");
    println!("mcp-edge:          http://127.0.0.1:{port}/mcp");
    if !admin.is_empty() {
        println!("dashboard:         http://{admin}/   (or in a terminal: mcp-edge status --admin {admin})");
    }
    println!("try:");
    println!(
        "  curl -s http://127.0.0.1:{port}/mcp -H 'content-type: application/json' -H 'accept: application/json, text/event-stream' \\\n    -H 'mcp-protocol-version: 2026-07-28' -H 'mcp-method: resources/read' -H 'mcp-name: demo://docs/1' \\\n    -d '{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"resources/read\",\"params\":{{\"uri\":\"demo://docs/1\",\"_meta\":{{\"io.modelcontextprotocol/protocolVersion\":\"2026-07-28\"}}}}}}'"
    );
    serve(config, None)
}

/// A setup problem as `check` prints it, placed in the configuration file it came from (the
/// demo's configuration is built in: no file).
fn placed(problem: &error::SetupError, file: Option<&std::path::Path>) -> String {
    file.map_or_else(|| problem.to_string(), |file| problem.placed(file))
}

/// Binds each listener address once before Pingora does, and lets it go: Pingora retries a
/// taken address for 30 s and then panics without exiting. This names the address and stops
/// at once, as nginx does.
fn check_listeners_free<'a>(addrs: impl IntoIterator<Item = &'a std::net::SocketAddr>) -> Result<(), String> {
    for addr in addrs {
        // std sets SO_REUSEADDR, as Pingora does: only an address another socket listens on fails.
        std::net::TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    }
    Ok(())
}

/// Runs the proxy until SIGTERM/SIGINT.
fn serve(config: Config, config_path: Option<PathBuf>) -> ExitCode {
    let listeners = config.server.listen.clone();
    let threads = config.server.threads;
    let certificates = match config.server.tls.as_ref().map(tls::load).transpose() {
        Ok(first) => first.map(tls::Certificates::new),
        Err(problem) => {
            eprintln!("{}", placed(&problem, config_path.as_deref()));
            return ExitCode::FAILURE;
        }
    };
    let tls_listeners = config.server.tls.as_ref().map(|t| t.listen.clone()).unwrap_or_default();
    if let Err(problem) = check_listeners_free(listeners.iter().chain(&tls_listeners)) {
        eprintln!("{problem}");
        return ExitCode::FAILURE;
    }
    logging::set_format(config.log.format);
    if let Err(problem) = spans::configure(&config.tracing) {
        eprintln!("{problem}");
        return ExitCode::FAILURE;
    }
    let runtime = match Runtime::build(config) {
        Ok(runtime) => runtime,
        Err(problem) => {
            eprintln!("{}", placed(&problem, config_path.as_deref()));
            return ExitCode::FAILURE;
        }
    };
    metrics::METRICS.config_loaded();
    let cache = match store::EdgeCache::open(&runtime.config.cache) {
        Ok(cache) => Arc::new(cache),
        Err(problem) => {
            // The shared tier's problems read as `check` prints them (`SharedTier` places them).
            eprintln!("{}", placed(&error::SetupError::SharedTier(problem), config_path.as_deref()));
            return ExitCode::FAILURE;
        }
    };
    let admin_listen = runtime.config.admin.listen;
    let cache_for_shutdown = cache.clone();
    let live = Arc::new(ArcSwap::from_pointee(runtime));
    if let Some(addr) = admin_listen {
        if let Err(e) = admin::spawn(addr, live.clone(), cache.clone()) {
            eprintln!("cannot listen on the admin address {addr}: {e}");
            return ExitCode::FAILURE;
        }
        tracing::info!(
            "admin listening on http://{addr} (dashboard /, /stats, /metrics, /healthz, /readyz, POST /purge)"
        );
    }

    let conf = ServerConf {
        threads,
        // Pingora hears of SIGTERM only once the requests in flight are done (`drain`), so no
        // grace period: stop listening at once. Shutting the runtimes down cancels what is left,
        // and waits up to 5 s for their blocking threads.
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(5),
        // One single-threaded runtime per worker thread, each serving the connections it
        // accepted (as nginx's workers do), instead of one work-stealing runtime. Measured: HTTP/2
        // hits 0.79 of nginx on the stealing runtime, 0.93-0.95 on this one; HTTP/1.1 hits and
        // forwarding unchanged or slightly faster (benches/HISTORY.md, session 23). The likely
        // cause: there a task woken by another runs next (tokio's LIFO slot), so the HTTP/2
        // connection task ran after each stream that wrote its answer, not once per batch.
        work_stealing: false,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let prefetcher = Arc::new(prefetch::Prefetcher::default());
    let proxy = pingora::proxy::http_proxy(
        &server.configuration,
        service::McpProxy { cache: cache.clone(), prefetch: prefetcher.clone() },
    );
    let app = front::EdgeApp::new(proxy, live.clone(), cache, prefetcher.clone());
    let prefetching = prefetch::PrefetchService { prefetcher, app: app.clone(), live: live.clone() };
    let mut proxy = pingora::services::listening::Service::new("mcp-edge".to_string(), app);
    for addr in &listeners {
        proxy.add_tcp(&addr.to_string());
    }
    if let Some(certificates) = &certificates {
        for addr in &tls_listeners {
            let mut settings = match TlsSettings::intermediate("", "") {
                Ok(settings) => settings,
                Err(e) => {
                    eprintln!("TLS settings: {e}");
                    return ExitCode::FAILURE;
                }
            };
            settings.set_cert_resolver(certificates.clone());
            settings.enable_h2();
            proxy.add_tls_with_settings(&addr.to_string(), None, settings);
            tracing::info!("mcp-edge listening on https://{addr} (HTTP/1.1 and h2)");
        }
    }
    server.add_service(proxy);
    server.add_service(background_service("prefetch", prefetching));
    server.add_service(background_service(
        "subscriptions",
        subscriptions::SubscriptionService { live: live.clone(), cache: cache_for_shutdown.clone() },
    ));
    server.add_service(background_service(
        "supervisor",
        supervisor::Supervisor { live, cache: cache_for_shutdown, certificates, config_path },
    ));
    for addr in &listeners {
        tracing::info!("mcp-edge listening on http://{addr}");
    }
    // Pingora's own signal watch, but SIGTERM drains first (see `drain`).
    server.run(pingora::server::RunArgs { shutdown_signal: Box::new(drain::DrainingSignals) });
    ExitCode::SUCCESS
}
