//! Process-wide settings that the `kdprune` binary and the benchmarks apply
//! first thing in `main`, before any other thread exists.

/// The spin limit given to candle's CPU thread pool when the user has not
/// set `CANDLE_BARRIER_POOL_SPIN_LIMIT` (candle's default is 25,000).
pub const CANDLE_SPIN_LIMIT: u32 = 1_000;

/// Tunes the process for training with candle and kdprune's kernels:
///
/// - **The allocator keeps freed memory in the heap.** candle allocates a
///   fresh buffer for every intermediate tensor; with glibc's defaults the
///   large ones are mapped and unmapped on every step, and the page faults
///   cost more than the arithmetic (a digits run took 3.2× longer, mostly
///   in the kernel).
/// - **candle's pool spins less.** After each candle op its worker threads,
///   pinned to the cores, spin 25,000 times before they sleep, on the cores
///   where kdprune's kernels (on rayon's pool) run next. Spinning 1,000
///   times made a LeNet-5 training step about 25 % faster and a ResNet-20
///   step 4 %, and the convolution benchmark's forward and backward pass
///   5 % faster. A value the user set in the environment is kept.
///
/// Call it once, at the start of `main`: it changes the environment and
/// the allocator of the whole process.
pub fn tune_process() {
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        // candle reads it when it starts its pool, at the first CPU op.
        std::env::set_var(
            "CANDLE_BARRIER_POOL_SPIN_LIMIT",
            CANDLE_SPIN_LIMIT.to_string(),
        );
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called once,
    // before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TOP_PAD, 256 << 20);
    }
}
