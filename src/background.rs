//! Helpers shared by the background services: the pause between periodic runs, their CPU
//! priority, and giving freed memory back to the system.

use std::time::Duration;

use pingora::server::ShutdownWatch;

/// Puts the calling thread, and the threads it starts from now on, behind request serving (nice
/// 19): a full load parses and decodes far more than it keeps, on the cores that serve requests,
/// and would otherwise add its length to the requests queued behind it. Never lowers a nice
/// value already higher.
pub fn yield_to_requests() {
    #[cfg(target_os = "linux")]
    // SAFETY: with the caller's own tid, both calls read or change only its scheduling.
    unsafe {
        let thread = libc::gettid() as libc::id_t;
        let nice = libc::getpriority(libc::PRIO_PROCESS, thread).max(BACKGROUND_NICE);
        libc::setpriority(libc::PRIO_PROCESS, thread, nice);
    }
}

#[cfg(target_os = "linux")]
const BACKGROUND_NICE: libc::c_int = 19;

/// Returns the allocator's free pages to the system. Costs a walk of its free lists, so it is
/// called only after much has been freed, off the request path.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
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
