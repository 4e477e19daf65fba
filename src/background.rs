//! How background work stays out of the way of request serving: it runs at a lower CPU priority,
//! and memory it allocated in bulk goes back to the system when it is done. A full table load
//! parses and decodes far more than the table it leaves behind, on the same cores that serve
//! requests.

use pingora::server::ShutdownWatch;

/// Lowers the calling thread's CPU priority (nice 10), so that a busy proxy thread gets the CPU
/// first: a table load then takes longer under load instead of delaying requests.
pub fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: gettid and setpriority only read and set this thread's scheduling priority.
    unsafe {
        let thread = libc::gettid() as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, thread, BACKGROUND_NICE);
    }
}

#[cfg(target_os = "linux")]
const BACKGROUND_NICE: libc::c_int = 10;

/// Returns the allocator's free pages to the system. Costs a walk of its free lists, so it is
/// called once per table load, off the request path.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own free lists; it touches no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Waits `period`, or less if the server starts shutting down: true when the period passed,
/// false on shutdown. The one pause of every periodic background service.
pub async fn wait_or_shutdown(period: std::time::Duration, shutdown: &mut ShutdownWatch) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(period) => true,
        _ = shutdown.changed() => false,
    }
}
