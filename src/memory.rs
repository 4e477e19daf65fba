//! Handing memory back to the system after work that allocates in bulk and then lets go of it
//! all: a full table load parses and decodes far more than the table it leaves behind, and the
//! allocator would otherwise keep that peak resident for good.

/// Returns the allocator's free pages to the system. Costs a walk of its free lists, so it is
/// called once per table load, off the request path.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own free lists; it touches no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}
