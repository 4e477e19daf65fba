//! The process-wide state both engines (the router's own path and the Pingora proxy) read and
//! feed, shared with the admin listener and the background services.

use std::sync::Arc;

use crate::access::Gate;
use crate::access_log::AccessLog;
use crate::drain::Draining;
use crate::health::Health;
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;
use crate::table::Resolver;
use crate::upgrades::Upgrades;

/// Cloned into each engine and listener: every field is shared, none is copied.
#[derive(Clone)]
pub struct Shared {
    pub resolver: Arc<Resolver>,
    /// Who may see which session's preview.
    pub gate: Arc<Gate>,
    /// Activity, wakes and waiting visitors.
    pub lifecycle: Arc<Lifecycle>,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    pub upgrades: Arc<Upgrades>,
    /// Set from SIGQUIT or SIGTERM on: answers close their connections.
    pub draining: Arc<Draining>,
    pub access_log: Arc<AccessLog>,
}
