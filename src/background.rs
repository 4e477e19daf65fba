//! Helpers shared by the background services: the pause between periodic runs, and giving freed
//! memory back to the system.

use std::time::Duration;

use pingora::server::ShutdownWatch;

/// Returns the allocator's free pages to the system. Costs a walk of its free lists, so it is
/// called only after much has been freed, off the request path.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: malloc_trim only walks glibc's own free lists; it touches no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Waits `period`, or less if the server starts shutting down: true when the period passed,
/// false on shutdown. The one pause of every periodic background service.
pub async fn wait_or_shutdown(period: Duration, shutdown: &mut ShutdownWatch) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(period) => true,
        _ = shutdown.changed() => false,
    }
}
