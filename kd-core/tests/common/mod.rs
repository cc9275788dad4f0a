//! Helpers shared by the loss tests: deterministic inputs, scalar/flat
//! readers, a scale-relative closeness check and central finite differences.

#![allow(dead_code)] // each test file uses a subset

use candle_core::{DType, Device, Tensor};

/// The error type of the tests.
pub type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

/// Relative tolerance of the golden-value comparisons.
pub const RTOL: f64 = 1e-5;

/// `scale·sin(i·a + b) + offset` over the flat index, as the `wave` of the prelude.
pub fn wave(shape: &[usize], a: f64, b: f64, scale: f64, offset: f64) -> Tensor {
    let n: usize = shape.iter().product();
    let data: Vec<f32> = (0..n)
        .map(|i| (scale * (i as f64 * a + b).sin() + offset) as f32)
        .collect();
    Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
}

pub fn scalar(t: &Tensor) -> f64 {
    f64::from(t.to_dtype(DType::F32).unwrap().to_scalar::<f32>().unwrap())
}

pub fn flat(t: &Tensor) -> Vec<f64> {
    let v = t.flatten_all().unwrap().to_dtype(DType::F64).unwrap();
    v.to_vec1::<f64>().unwrap()
}

/// `|a − e| ≤ RTOL · max(|e|, max_i |e_i|)`: relative to the tensor's scale.
pub fn assert_close(actual: &[f64], expected: &[f64]) {
    assert_eq!(actual.len(), expected.len(), "length");
    let scale = expected.iter().fold(0f64, |m, e| m.max(e.abs()));
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        let tol = RTOL * e.abs().max(scale);
        assert!(
            (a - e).abs() <= tol,
            "entry {i}: got {a}, expected {e} (tol {tol})"
        );
    }
}

/// Central differences `(f(x + h·e_i) − f(x − h·e_i)) / (x_i⁺ − x_i⁻)` for every
/// entry of `x`, dividing by the step actually taken after rounding to f32.
pub fn finite_differences(x: &Tensor, h: f32, f: impl Fn(&Tensor) -> f64) -> Vec<f64> {
    let base: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
    (0..base.len())
        .map(|i| {
            let (mut plus, mut minus) = (base.clone(), base.clone());
            plus[i] += h;
            minus[i] -= h;
            let step = f64::from(plus[i]) - f64::from(minus[i]);
            let at = |v: Vec<f32>| f(&Tensor::from_vec(v, x.dims(), x.device()).unwrap());
            (at(plus) - at(minus)) / step
        })
        .collect()
}
