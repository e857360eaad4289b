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
