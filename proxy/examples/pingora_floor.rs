//! The floor of the pass-through benchmark: Pingora's HTTP proxy with no logic of ours (one
//! fixed upstream, every filter left at its default), so `benches/load/run.sh` can show how
//! much of mcp-edge's pass-through cost is Pingora's own.
//!
//! usage: pingora_floor LISTEN UPSTREAM THREADS   (e.g. 127.0.0.1:9000 127.0.0.1:9001 1)

use async_trait::async_trait;
use pingora::prelude::HttpPeer;
use pingora::proxy::{ProxyHttp, Session};
use pingora::server::Server;
use pingora::server::configuration::ServerConf;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Floor {
    upstream: String,
}

#[async_trait]
impl ProxyHttp for Floor {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> pingora::Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream.as_str(), false, String::new())))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, listen, upstream, threads] = args.as_slice() else {
        eprintln!("usage: pingora_floor LISTEN UPSTREAM THREADS");
        std::process::exit(2);
    };
    let threads = threads.parse().expect("THREADS is a number");
    // Stops at once on SIGTERM: Pingora's default grace period kept a stopped floor running
    // (using CPU) into the next benchmark.
    let conf = ServerConf {
        threads,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = pingora::proxy::http_proxy_service(&server.configuration, Floor { upstream: upstream.clone() });
    proxy.add_tcp(listen);
    server.add_service(proxy);
    server.run_forever();
}
