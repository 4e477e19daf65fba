//! Upstream connections: which addresses the router may connect to, and the Pingora peer for one
//! session's container with its timeouts and a pool of its own.

use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use pingora::protocols::TcpKeepalive;
use pingora::upstreams::peer::HttpPeer;

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

/// Which addresses the store is allowed to name.
#[derive(Debug, Clone)]
pub struct AddressPolicy {
    allowed: Vec<IpNet>,
}

impl AddressPolicy {
    pub fn new(allowed: Vec<IpNet>) -> Self {
        AddressPolicy { allowed }
    }

    /// Link-local (which holds the instance metadata address), multicast, unspecified and
    /// broadcast are refused whatever the list says; the rest must be inside an allowed range.
    pub fn permits(&self, ip: IpAddr) -> bool {
        let never = match ip {
            IpAddr::V4(v4) => {
                v4.is_link_local() || v4.is_multicast() || v4.is_unspecified() || v4.is_broadcast()
            }
            IpAddr::V6(v6) => {
                v6.is_multicast() || v6.is_unspecified() || v6.is_unicast_link_local()
            }
        };
        !never && self.allowed.iter().any(|net| net.contains(&ip))
    }
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
    use super::*;

    fn policy(nets: &[&str]) -> AddressPolicy {
        AddressPolicy::new(nets.iter().map(|n| n.parse().unwrap()).collect())
    }

    #[test]
    fn private_ranges_only_by_default_list() {
        let p = policy(&["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]);
        assert!(p.permits("10.1.2.3".parse().unwrap()));
        assert!(!p.permits("127.0.0.1".parse().unwrap()));
        assert!(!p.permits("8.8.8.8".parse().unwrap()));
    }

    #[test]
    fn metadata_and_special_addresses_are_never_allowed() {
        let p = policy(&["0.0.0.0/0", "::/0"]);
        for ip in [
            "169.254.169.254",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "fe80::1",
            "::",
        ] {
            assert!(!p.permits(ip.parse().unwrap()), "{ip}");
        }
        assert!(p.permits("127.0.0.1".parse().unwrap()));
    }

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
