//! Whether this process is on its way out, and leaving as soon as nothing is in flight.
//!
//! Pingora marks its sessions as shutting down only when it stops accepting; on a `-u` handover
//! that comes 5 s after SIGQUIT, and until then clients keep reusing connections that the old
//! process will close when it stops. Watching Pingora's execution phase instead flags the drain
//! at SIGQUIT, so every answer from then on says `Connection: close` and clients move their next
//! request to a fresh connection, which the kernel hands to either process while both accept,
//! and only to the new one afterwards.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::{ExecutionPhase, ShutdownWatch};
use pingora::services::background::BackgroundService;
use tokio::sync::broadcast;

use crate::access_log::AccessLog;

/// Set once, when the process starts handing over or shutting down; never cleared.
#[derive(Debug, Default)]
pub struct Draining(AtomicBool);

impl Draining {
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    fn set(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn starts_drain(phase: &ExecutionPhase) -> bool {
    matches!(
        phase,
        ExecutionPhase::GracefulUpgradeTransferringFds
            | ExecutionPhase::GracefulUpgradeCloseTimeout
            | ExecutionPhase::GracefulTerminate
            | ExecutionPhase::ShutdownStarted
    )
}

/// How often a graceful shutdown looks whether anything is left in flight.
const IDLE_POLL: Duration = Duration::from_millis(50);

/// Work a graceful shutdown waits for: client connections, and what requests left behind to do
/// in the background (a wake to send, an activity stamp to write).
pub trait InFlight: Send + Sync {
    fn in_flight(&self) -> usize;
}

/// Follows Pingora's execution phases: sets [`Draining`] when the process starts handing over or
/// shutting down, then ends a graceful shutdown once nothing is in flight. Pingora's main thread
/// sleeps the whole `grace_period_seconds` whatever is in flight, so an idle router would hold
/// every deploy and every `docker stop` up for that long; the grace period stays the upper
/// bound. The admin listener is not waited for: a scrape or probe cut short is asked again of
/// another router.
pub struct ShutdownWatcher {
    draining: Arc<Draining>,
    work: Vec<Arc<dyn InFlight>>,
    access_log: Arc<AccessLog>,
    /// Taken by the one `start` call; a Mutex only because `start` gets `&self`.
    phases: Mutex<Option<broadcast::Receiver<ExecutionPhase>>>,
}

impl ShutdownWatcher {
    /// `phases` comes from `Server::watch_execution_phase()`, subscribed before the server runs.
    pub fn new(
        draining: Arc<Draining>,
        work: Vec<Arc<dyn InFlight>>,
        access_log: Arc<AccessLog>,
        phases: broadcast::Receiver<ExecutionPhase>,
    ) -> Self {
        ShutdownWatcher {
            draining,
            work,
            access_log,
            phases: Mutex::new(Some(phases)),
        }
    }

    fn drain(&self, why: &str) {
        if !self.draining.is_set() {
            log::info!("draining: answers now close their connections ({why})");
            self.draining.set();
        }
    }

    /// Sets the drain at its phase and returns when Pingora starts sleeping out its grace
    /// period: after a SIGTERM at once, after a SIGQUIT handover only once the old process has
    /// stopped accepting. False if the phases end first.
    async fn until_grace_period(
        &self,
        phases: &mut broadcast::Receiver<ExecutionPhase>,
        shutdown: &mut ShutdownWatch,
    ) -> bool {
        loop {
            tokio::select! {
                phase = phases.recv() => match phase {
                    Ok(ExecutionPhase::ShutdownGracePeriod) => return true,
                    Ok(phase) if starts_drain(&phase) => self.drain(&format!("{phase:?}")),
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return false,
                },
                // Shutdown without a phase seen first (the channel lagged): drain all the same.
                changed = shutdown.changed(), if !self.draining.is_set() => {
                    if changed.is_err() || *shutdown.borrow() {
                        self.drain("shutdown");
                    }
                }
            }
        }
    }

    /// Returns once nothing has been in flight for two polls in a row: a connection accepted
    /// just before the listener closed may not have been counted at the first look.
    async fn until_idle(&self) {
        let mut idle_polls = 0;
        while idle_polls < 2 {
            tokio::time::sleep(IDLE_POLL).await;
            let busy = self.work.iter().any(|w| w.in_flight() > 0);
            idle_polls = if busy { 0 } else { idle_polls + 1 };
        }
    }
}

#[async_trait]
impl BackgroundService for ShutdownWatcher {
    // Outlives the shutdown watch on purpose: the grace period comes after it.
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let phases = self.phases.lock().ok().and_then(|mut p| p.take());
        let Some(mut phases) = phases else {
            return;
        };
        if !self.until_grace_period(&mut phases, &mut shutdown).await {
            return;
        }
        self.until_idle().await;
        self.access_log.flush();
        log::info!(
            "graceful shutdown: nothing left in flight, exiting before the grace period ends"
        );
        std::process::exit(0);
    }
}
