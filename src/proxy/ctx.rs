//! Per-request state of the proxy, from routing through to logging.

use std::sync::Arc;
use std::time::Instant;

use crate::access::Admitted;
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
    /// How access let the request in, kept with its WebSocket for revocation.
    pub(super) admitted: Admitted,
    /// The session's store key, once routed: its WebSocket frames mark it active.
    pub(super) session_key: Option<String>,
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
    /// A person's page load: if the retry's store read finds the container stopped, it wakes
    /// it, as the decision would have.
    pub(super) may_wake: bool,
}

impl RequestCtx {
    pub(super) fn new() -> Self {
        RequestCtx {
            started: Instant::now(),
            outcome: None,
            kind: RequestKind::Asset,
            target: None,
            upstream: None,
            admitted: Admitted::Public,
            session_key: None,
            set_affinity: false,
            upgraded: false,
            retry_pending: false,
            retried: false,
            upgrade_connector: None,
            upgrade_id: None,
            interims: 0,
            may_wake: false,
        }
    }
}
