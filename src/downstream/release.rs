//! Gives the memory of closed client connections back to the system. glibc keeps what a burst
//! of connections freed (their head buffers, up to `max_head_size` each) for reuse; after a flood
//! of hostile connections that would stay resident for good. Trimming costs a walk of the
//! allocator's free lists, so it runs only after many connections have closed.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use super::Admission;
use crate::background::{release_free_memory, wait_or_shutdown};

/// How often the connection count is looked at.
const PERIOD: Duration = Duration::from_secs(5);
/// Connections fewer than the period's peak that make a trim worth its walk.
const CLOSED_BEFORE_TRIM: usize = 256;

pub struct MemoryRelease {
    admission: Arc<Admission>,
}

impl MemoryRelease {
    pub fn new(admission: Arc<Admission>) -> Self {
        MemoryRelease { admission }
    }

    /// Whether connections have fallen far enough below their recent peak to trim.
    fn worth_trimming(&self) -> bool {
        let peak = self.admission.take_peak();
        peak.saturating_sub(self.admission.open()) >= CLOSED_BEFORE_TRIM
    }
}

#[async_trait]
impl BackgroundService for MemoryRelease {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        while wait_or_shutdown(PERIOD, &mut shutdown).await {
            if self.worth_trimming() {
                release_free_memory();
            }
        }
    }
}
