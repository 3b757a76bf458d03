//! How the process's allocator treats large blocks.

/// Have glibc's malloc hand blocks over 128 KiB back to the system as soon as they are freed. By default it raises
/// that threshold to the size of each large block freed (up to 32 MiB), and from then on such buffers (a 100k-step
/// file's text, the validation's and plan's scratch arrays, the `RunStarted` node list) stay in the heap once
/// freed: freeing a 16 MB pipeline text did not lower the RSS at all. The `runner` binary calls this first thing,
/// and so does the engine's benchmark. Elsewhere than glibc it does nothing.
pub fn release_large_blocks_eagerly() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets one of the allocator's parameters; it is called before other threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}
