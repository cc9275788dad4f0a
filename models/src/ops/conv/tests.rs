//! Unit tests of the convolution kernels.

use super::backward::{bias_grad, input_grad_into, weight_grad};
use super::im2col::{col2im, im2col};
use super::*;

fn params(padding: usize, stride: usize, dilation: usize, groups: usize) -> ConvParams {
    ConvParams {
        padding,
        stride,
        dilation,
        groups,
    }
}

#[test]
fn output_size_follows_the_usual_formula() {
    // PyTorch: floor((H + 2p − d(k−1) − 1)/s) + 1 = floor((7 + 2 − 4 − 1)/2) + 1 = 3
    let s = ConvShape::new(&[2, 4, 7, 9], &[6, 2, 3, 3], params(1, 2, 2, 2)).unwrap();
    assert_eq!(s.out_dims(), [2, 6, 3, 4]);
    assert!(ConvShape::new(&[2, 4, 7, 9], &[6, 3, 3, 3], params(1, 2, 2, 2)).is_err());
    assert!(ConvShape::new(&[2, 4, 2, 2], &[6, 4, 5, 5], params(1, 1, 1, 1)).is_err());
    assert!(ConvShape::new(&[2, 4, 2, 2], &[6, 4, 1, 1], params(0, 0, 1, 1)).is_err());
}

#[test]
fn im2col_then_col2im_multiplies_by_the_tap_count() {
    // With stride 1 and "same" padding every interior pixel is read by
    // all 9 taps of a 3×3 kernel, a corner pixel by 4.
    let s = ConvShape::new(&[1, 1, 4, 4], &[1, 1, 3, 3], params(1, 1, 1, 1)).unwrap();
    let x = vec![1f32; 16];
    let mut col = vec![f32::NAN; s.col_len()];
    im2col(&s, &x, &mut col);
    let mut dx = vec![0f32; 16];
    col2im(&s, &mut col, &mut dx);
    assert_eq!(dx[0], 4.0);
    assert_eq!(dx[5], 9.0);
    assert_eq!(dx[1], 6.0);
}

#[test]
fn the_one_pass_backward_gives_the_bits_of_the_separate_passes() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    // (x dims, w dims, padding, stride, groups): batched weight-gradient
    // products (5×5 maps), one sample per product (16×16), a pointwise
    // layer, a grouped and a depthwise one; batches that do not divide
    // into the chunks evenly.
    type Case = ([usize; 4], [usize; 4], usize, usize, usize);
    let cases: [Case; 5] = [
        ([37, 3, 5, 5], [4, 3, 3, 3], 1, 1, 1),
        ([9, 4, 16, 16], [6, 4, 3, 3], 1, 2, 1),
        ([19, 6, 7, 7], [5, 6, 1, 1], 0, 1, 1),
        ([11, 6, 9, 9], [4, 3, 3, 3], 2, 1, 2),
        ([13, 4, 8, 8], [8, 1, 3, 3], 1, 1, 4),
    ];
    for (xd, wd, pad, stride, groups) in cases {
        let shape = ConvShape::new(&xd, &wd, params(pad, stride, 1, groups)).unwrap();
        let mut fresh =
            |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-1f32..1.0)).collect() };
        let x = fresh(shape.batch * shape.in_sample());
        let w = fresh(wd.iter().product());
        let dy = fresh(shape.batch * shape.out_sample());
        let base = fresh(x.len());
        let mut dx = base.clone();
        let (dw, db) = backward_into(&shape, &x, &dy, &w, Some(&mut dx), true);
        let mut want_dx = base;
        input_grad_into(&shape, &dy, &w, &mut want_dx);
        assert_eq!(dx, want_dx, "{xd:?} {wd:?}: dx");
        assert_eq!(dw, weight_grad(&shape, &x, &dy), "{xd:?} {wd:?}: dw");
        assert_eq!(db, Some(bias_grad(&shape, &dy)), "{xd:?} {wd:?}: db");
        let (dw_only, none) = backward_into(&shape, &x, &dy, &w, None, false);
        assert_eq!(dw_only, dw);
        assert!(none.is_none());
    }
}
