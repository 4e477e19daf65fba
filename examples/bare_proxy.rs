//! A bare Pingora proxy to one fixed upstream with no hooks of its own: the load harness
//! (`bench/load.py`) runs it beside the router to tell Pingora's own per-request cost from ours.
//!
//! `BARE_LISTEN=127.0.0.1:8080 BARE_UPSTREAM=127.0.0.1:4321 bare_proxy -c pingora.yaml`

use std::net::SocketAddr;

use async_trait::async_trait;
use pingora::prelude::*;

struct Bare {
    upstream: SocketAddr,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }
}

fn env_addr(name: &str, default: &str) -> SocketAddr {
    let value = std::env::var(name).unwrap_or_else(|_| default.to_owned());
    // Start-up only: a bad address is the operator's typo, reported and fatal.
    value
        .parse()
        .unwrap_or_else(|e| panic!("{name}={value}: {e}"))
}

fn main() -> Result<()> {
    let listen = env_addr("BARE_LISTEN", "127.0.0.1:8080");
    let upstream = env_addr("BARE_UPSTREAM", "127.0.0.1:4321");
    let mut server = Server::new(Some(Opt::parse_args()))?;
    server.bootstrap();
    let mut service = http_proxy_service(&server.configuration, Bare { upstream });
    service.add_tcp(&listen.to_string());
    server.add_service(service);
    server.run_forever();
}
