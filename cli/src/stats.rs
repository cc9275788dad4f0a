//! Figures over seeds: mean and sample standard deviation, and how they and
//! paired differences are printed.

/// Mean and sample standard deviation (n − 1); std is 0 for one value.
pub fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    if v.len() < 2 {
        return (mean, 0.0);
    }
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

/// Mean and sample standard deviation of `n` values:
/// `mean = Σx / n`, `std = sqrt(Σ(x − mean)² / (n − 1))`, no std when n = 1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    /// Number of values.
    pub n: usize,
    /// Their mean.
    pub mean: f64,
    /// Their sample standard deviation (none for one value).
    pub std: Option<f64>,
}

impl Summary {
    /// `None` for no values.
    pub fn of(values: &[f64]) -> Option<Self> {
        let n = values.len();
        if n == 0 {
            return None;
        }
        let (mean, std) = mean_std(values);
        Some(Self {
            n,
            mean,
            std: (n > 1).then_some(std),
        })
    }

    /// `mean ± std` of the values scaled by `scale`, 2 decimals; just the
    /// mean when n = 1.
    pub fn show(&self, scale: f64) -> String {
        match self.std {
            Some(s) => format!("{:.2} ± {:.2}", scale * self.mean, scale * s),
            None => format!("{:.2}", scale * self.mean),
        }
    }
}

/// A signed difference in points with 2 decimals and a typographic minus:
/// `+0.27`, `−0.12`.
pub fn signed(points: f64) -> String {
    format!("{points:+.2}").replace('-', "−")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_sample_std() {
        // import statistics; statistics.mean([1,2,4]), statistics.stdev([1,2,4])
        // -> 2.3333333333333335 1.5275252316519468
        let (m, s) = mean_std(&[1.0, 2.0, 4.0]);
        assert!((m - 2.333_333_333_333_333_5).abs() < 1e-12);
        assert!((s - 1.527_525_231_651_946_8).abs() < 1e-12);
        assert_eq!(mean_std(&[3.0]), (3.0, 0.0));
    }

    #[test]
    fn signs_use_a_typographic_minus() {
        assert_eq!(signed(0.27), "+0.27");
        assert_eq!(signed(-0.12), "−0.12");
        assert_eq!(signed(0.0), "+0.00");
    }

    #[test]
    fn mean_and_sample_std_match_hand_computed_values() {
        // [0.90, 0.91, 0.92]: mean 0.91; deviations −0.01, 0, 0.01;
        // Σd² = 0.0002; / (n − 1 = 2) = 0.0001; sqrt = 0.01.
        let s = Summary::of(&[0.90, 0.91, 0.92]).unwrap();
        assert_eq!(s.n, 3);
        assert!((s.mean - 0.91).abs() < 1e-12);
        assert!((s.std.unwrap() - 0.01).abs() < 1e-12);
        assert_eq!(s.show(100.0), "91.00 ± 1.00");
        // [2, 4, 4, 4, 5, 5, 7, 9]: mean 5; Σd² = 9+1+1+1+0+0+4+16 = 32;
        // / 7 = 4.571428…; sqrt = 2.138089935…
        let s = Summary::of(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]).unwrap();
        assert_eq!(s.mean, 5.0);
        assert!((s.std.unwrap() - 2.138_089_935_299_395).abs() < 1e-12);
        // One value: the mean and no spread.
        let s = Summary::of(&[0.8]).unwrap();
        assert_eq!((s.n, s.std), (1, None));
        assert_eq!(s.show(100.0), "80.00");
        assert_eq!(Summary::of(&[]), None);
    }
}
