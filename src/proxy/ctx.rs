//! Per-request state of the proxy and the downstream connection limits it applies.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::ListenSection;
use crate::outcome::Outcome;
use crate::pages::RequestKind;
use crate::routing::Target;
use crate::upstream::UpstreamTarget;
use crate::ws_socket::ClosableConnector;

/// Per-request state, carried from routing through to logging.
pub struct RequestCtx {
    pub(super) started: Instant,
    pub(super) outcome: Option<Outcome>,
    pub(super) kind: RequestKind,
    pub(super) target: Option<Target>,
    pub(super) upstream: Option<UpstreamTarget>,
    pub(super) set_affinity: bool,
    pub(super) upgraded: bool,
    /// A connect failed and the one retry, with a fresh store read, is due.
    pub(super) retry_pending: bool,
    pub(super) retried: bool,
    /// What made an upgrade's upstream connection, holding its close handle until the
    /// upgrade is registered.
    pub(super) upgrade_connector: Option<Arc<ClosableConnector>>,
    pub(super) upgrade_id: Option<u64>,
    /// Interim (1xx) answers the container sent so far.
    pub(super) interims: u32,
}

/// Downstream connection limits applied to every request.
#[derive(Debug, Clone)]
pub struct DownstreamLimits {
    pub read_timeout: Duration,
    pub keepalive: Duration,
    pub websocket_idle: Option<Duration>,
    /// Peers whose X-Forwarded-* headers are kept and extended rather than replaced.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl DownstreamLimits {
    /// Whether `peer` is a balancer whose X-Forwarded-* headers are believed.
    pub fn trusts(&self, peer: std::net::IpAddr) -> bool {
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
        }
    }
}

impl RequestCtx {
    pub(super) fn new() -> Self {
        RequestCtx {
            started: Instant::now(),
            outcome: None,
            kind: RequestKind::Asset,
            target: None,
            upstream: None,
            set_affinity: false,
            upgraded: false,
            retry_pending: false,
            retried: false,
            upgrade_connector: None,
            upgrade_id: None,
            interims: 0,
        }
    }
}
