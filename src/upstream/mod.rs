//! Upstream connections: which addresses the router may connect to, and the Pingora peer for one
//! session's container with its timeouts and a pool of its own.

use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use pingora::protocols::TcpKeepalive;
use pingora::upstreams::peer::HttpPeer;

mod policy;

pub use policy::{dead_entry, AddressPolicy};

use crate::config::Upstream;
use crate::ws_socket::ClosableConnector;

/// The container a request goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTarget {
    pub addr: SocketAddr,
    pub container_id: Arc<str>,
    /// Separates connection pools by session and container, so a reused IP never hands one
    /// session's pooled socket to another.
    pub pool_key: u64,
}

impl UpstreamTarget {
    pub fn new(addr: SocketAddr, container_id: Arc<str>, session_key: &str) -> Self {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (session_key, &*container_id, addr).hash(&mut h);
        UpstreamTarget {
            addr,
            container_id,
            pool_key: h.finish(),
        }
    }
}

/// Whether a container's stated identity names another container than the one the session
/// routes to: its address was reused, and its answer must not be shown. Logged as a security
/// event when it does.
pub fn claims_another(upstream: &UpstreamTarget, claimed: &[u8]) -> bool {
    if claimed == upstream.container_id.as_bytes() {
        return false;
    }
    log::warn!(
        target: "security",
        "event=container_mismatch expected={} claimed={} address={}",
        upstream.container_id,
        String::from_utf8_lossy(claimed),
        upstream.addr
    );
    true
}

/// Builds Pingora peers from configured timeouts.
#[derive(Debug, Clone)]
pub struct PeerFactory {
    connect_timeout: Duration,
    read_timeout: Duration,
    idle_timeout: Duration,
}

impl PeerFactory {
    pub fn new(cfg: &Upstream) -> Self {
        PeerFactory {
            connect_timeout: cfg.connect_timeout,
            read_timeout: cfg.read_timeout,
            idle_timeout: cfg.idle_timeout,
        }
    }

    /// A plain-HTTP peer for the target, pooled per session and container.
    pub fn peer(&self, target: &UpstreamTarget) -> HttpPeer {
        let mut peer = HttpPeer::new(target.addr, false, String::new());
        peer.group_key = target.pool_key;
        let opts = &mut peer.options;
        opts.connection_timeout = Some(self.connect_timeout);
        opts.idle_timeout = Some(self.idle_timeout);
        opts.read_timeout = Some(self.read_timeout);
        peer
    }

    /// The peer of a WebSocket upgrade, whose connection is made by the returned connector so
    /// the router can close it later. No read timeout (an HMR socket is silent between edits)
    /// and TCP keepalive, so a vanished container is still noticed. A pool of its own, so an
    /// upgrade never takes a plain pooled connection the connector did not make.
    pub fn upgrade_peer(&self, target: &UpstreamTarget) -> (HttpPeer, Arc<ClosableConnector>) {
        let mut peer = self.peer(target);
        peer.group_key = target.pool_key ^ UPGRADE_POOL;
        let connector = Arc::new(ClosableConnector::new(self.connect_timeout));
        let opts = &mut peer.options;
        opts.read_timeout = None;
        opts.custom_l4 = Some(connector.clone());
        opts.tcp_keepalive = Some(TcpKeepalive {
            idle: Duration::from_secs(30),
            interval: Duration::from_secs(10),
            count: 3,
            #[cfg(target_os = "linux")]
            user_timeout: Duration::from_secs(0),
        });
        (peer, connector)
    }
}

/// Flips the pool key of upgrade peers away from the plain pool of the same session.
const UPGRADE_POOL: u64 = 0x5753_5550_4752_4144;

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    #[test]
    fn pool_keys_differ_by_session_and_container() {
        let addr: SocketAddr = "10.0.0.1:4321".parse().unwrap();
        let a = UpstreamTarget::new(addr, "c1".into(), "acme-t1");
        let b = UpstreamTarget::new(addr, "c1".into(), "acme-t2");
        let c = UpstreamTarget::new(addr, "c2".into(), "acme-t1");
        assert_ne!(a.pool_key, b.pool_key);
        assert_ne!(a.pool_key, c.pool_key);
    }
}
