//! Shared helpers of the bench binaries (`bench-select`, `bench-scoring`).
//! Every binary prints ratios against a baseline measured in the same run.

use std::time::Instant;

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

#[cfg(test)]
mod tests {
    #[test]
    fn median_of_runs_is_positive() {
        let mut n = 0u64;
        let t = super::median_secs(3, || n += (0..1000u64).sum::<u64>());
        assert!(t >= 0.0);
        assert_eq!(n, 4 * 499_500);
    }
}
