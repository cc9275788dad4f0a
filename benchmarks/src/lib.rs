//! Shared helpers of the bench binaries (`bench-select`, `bench-scoring`,
//! `bench-train`, `bench-conv`). Every binary prints ratios against a baseline
//! measured in the same run.

pub mod small_cnn;

use std::time::Instant;

pub use small_cnn::SmallCnn;

/// `--name value` from the command line, if given.
pub fn text_arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

/// `--name N` from the command line, a positive count, or `default` when
/// the flag is absent; an error naming the flag for any other value.
pub fn count_arg(name: &str, default: usize) -> Result<usize, String> {
    match text_arg(name) {
        None => Ok(default),
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("{name} takes a positive number, got `{v}`")),
    }
}

/// Median wall time in seconds of `reps` runs of `f` (after one warm-up run).
pub fn median_secs<F: FnMut()>(reps: usize, mut f: F) -> f64 {
    f();
    let mut times: Vec<f64> = (0..reps.max(1))
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// Median wall times in seconds of several contenders measured side by side:
/// after one warm-up run of each, `rounds` rounds run every contender once,
/// in turn, so that a change of machine load affects all of them alike.
pub fn interleaved_median_secs(rounds: usize, contenders: &mut [&mut dyn FnMut()]) -> Vec<f64> {
    for f in contenders.iter_mut() {
        f();
    }
    let mut times = vec![Vec::with_capacity(rounds); contenders.len()];
    for _ in 0..rounds.max(1) {
        for (f, t) in contenders.iter_mut().zip(&mut times) {
            let start = Instant::now();
            f();
            t.push(start.elapsed().as_secs_f64());
        }
    }
    times
        .into_iter()
        .map(|mut t| {
            t.sort_by(f64::total_cmp);
            t[t.len() / 2]
        })
        .collect()
}

/// The first line a bench prints: `# cpu=… threads=… rounds=N load_1min=…`.
pub fn header_line(rounds: usize) -> String {
    format!(
        "# cpu={} threads={} rounds={rounds} load_1min={}",
        cpu_features(),
        rayon::current_num_threads(),
        load_average().map_or("?".to_string(), |l| format!("{l:.2}"))
    )
}

/// The SIMD features of this CPU that kdprune's kernels dispatch on, e.g.
/// `avx512f avx2 fma` (benchmarks print them: the same binary runs other
/// kernels on an AVX2-only machine).
pub fn cpu_features() -> String {
    #[cfg(target_arch = "x86_64")]
    {
        let mut found = Vec::new();
        if std::arch::is_x86_feature_detected!("avx512f") {
            found.push("avx512f");
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            found.push("avx2");
        }
        if std::arch::is_x86_feature_detected!("fma") {
            found.push("fma");
        }
        if found.is_empty() {
            "none of avx512f/avx2/fma".to_string()
        } else {
            found.join(" ")
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        std::env::consts::ARCH.to_string()
    }
}

/// The 1-minute load average of the machine (Linux), to print beside timings.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn median_of_runs_is_positive() {
        let mut n = 0u64;
        let t = super::median_secs(3, || n += (0..1000u64).sum::<u64>());
        assert!(t >= 0.0);
        assert_eq!(n, 4 * 499_500);
    }

    #[test]
    fn interleaved_runs_each_contender_once_per_round() {
        let (mut a, mut b) = (0u32, 0u32);
        let times = super::interleaved_median_secs(5, &mut [&mut || a += 1, &mut || b += 2]);
        assert_eq!(times.len(), 2);
        assert!(times.iter().all(|t| *t >= 0.0));
        // one warm-up run and five rounds each
        assert_eq!((a, b), (6, 12));
    }
}
