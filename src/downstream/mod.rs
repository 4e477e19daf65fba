//! What every client connection is held to, on both engines: how many may be open, in all and
//! from one client address, how long and how large a request head may be, and how long a
//! connection may sit idle. Every connection's heads are read under these limits before either
//! engine sees a request, so neither engine is a way around them.

mod admission;
mod head;
mod release;

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;

pub use admission::{Admission, Admitted, Refused};
pub use head::{HeadLimit, HeadScan};
pub use release::MemoryRelease;

use crate::config::ListenSection;

/// Downstream limits, from `[listen]`.
#[derive(Debug, Clone)]
pub struct DownstreamLimits {
    pub read_timeout: Duration,
    pub keepalive: Duration,
    pub websocket_idle: Option<Duration>,
    /// Peers whose X-Forwarded-* headers are kept and extended rather than replaced.
    pub trusted_proxies: Vec<IpNet>,
    pub head_timeout: Duration,
    pub max_head_line: usize,
    pub max_head_size: usize,
    /// Clients reach the listener through a balancer that ends TLS without saying so (an NLB
    /// TLS listener): they count as TLS clients.
    pub behind_tls: bool,
}

impl DownstreamLimits {
    /// Whether `peer` is a balancer whose X-Forwarded-* headers are believed.
    pub fn trusts(&self, peer: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|n| n.contains(&peer))
    }
}

impl From<&ListenSection> for DownstreamLimits {
    fn from(l: &ListenSection) -> Self {
        DownstreamLimits {
            read_timeout: l.read_timeout,
            keepalive: l.keepalive_timeout,
            websocket_idle: l.websocket_idle_timeout,
            trusted_proxies: l.trusted_proxies.clone(),
            head_timeout: l.head_timeout,
            max_head_line: l.max_head_line,
            max_head_size: l.max_head_size,
            behind_tls: l.behind_tls,
        }
    }
}
