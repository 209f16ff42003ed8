//! Process-wide malloc settings for large message buffers.
//!
//! glibc serves every allocation above 32 MiB (its largest mmap threshold), and every one above
//! 64 MiB made by a thread with its own arena (NNG's I/O threads, rayon workers), with a fresh
//! `mmap` that is unmapped again on `free`. Each batch image, its copy into an NNG message and
//! the receiver's NNG message then page-faults on every 4 KiB page and is zeroed by the kernel:
//! NNG loopback fell from ~2.5 GB/s with 8 MB messages to ~0.7-1 GB/s with 64 MB ones, and
//! serialising a 69 MB batch spent ~15% of its time clearing fresh pages.

/// Environment variable that, set to anything but `0`, keeps glibc's default malloc settings.
pub const DEFAULT_MALLOC_ENV: &str = "LCLSTREAMER_DEFAULT_MALLOC";

/// Keeps large buffers in the heap so they are reused warm instead of being mapped afresh for
/// every message: one malloc arena, no mmap chunks, freed memory kept up to 1 GiB above the
/// heap top. Call it first in `main`, before any thread starts (threads that already own an
/// arena keep it). Returns whether the settings were applied (glibc only, unless
/// [`DEFAULT_MALLOC_ENV`] opts out).
pub fn keep_large_buffers_in_heap() -> bool {
    if std::env::var_os(DEFAULT_MALLOC_ENV).is_some_and(|v| v != "0") {
        return false;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator parameters; called before threads start.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1) == 1
                && libc::mallopt(libc::M_MMAP_MAX, 0) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    false
}
