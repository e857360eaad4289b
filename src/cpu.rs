//! CPU hints for the hot paths of reading captures.

/// A CPU cache line (bytes).
pub const CACHE_LINE: usize = 64;

/// Asks the CPU to bring the cache line at `p` in. A hint only: it never faults, whatever the
/// address, and changes nothing the program computes.
#[inline(always)]
pub fn prefetch(p: *const u8) {
    // SAFETY: SSE is part of the x86_64 baseline, and a prefetch does not access memory.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Most bytes of one buffer [`prefetch_bytes`] asks for: a few lines, not all (more outstanding
/// prefetches than the CPU has fill buffers stall it).
const PREFETCH_MAX: usize = 2 * CACHE_LINE;

/// Prefetches the first [`PREFETCH_MAX`] bytes of `b`, a cache line at a time.
#[inline]
pub fn prefetch_bytes(b: &[u8]) {
    for at in (0..b.len().min(PREFETCH_MAX)).step_by(CACHE_LINE) {
        prefetch(b[at..].as_ptr());
    }
}
