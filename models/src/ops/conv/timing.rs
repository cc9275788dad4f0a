//! Timings of the convolution kernels (see the module declaration).

use rayon::prelude::*;

use super::backward::{input_grad, weight_grad};
use super::im2col::{col2im, im2col};
use super::scratch::with_scratch;
use super::*;
use crate::ops::gemm::{matmul, MatMut, MatRef};

/// The fastest of `reps` runs of `f` (after one warm-up run), in ms.
fn fastest_ms(reps: usize, f: &mut dyn FnMut()) -> f64 {
    f();
    (0..reps)
        .map(|_| {
            let start = std::time::Instant::now();
            f();
            start.elapsed().as_secs_f64() * 1e3
        })
        .fold(f64::INFINITY, f64::min)
}

/// `len` deterministic values in [−0.5, 0.5).
fn filler(len: usize, mul: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * mul) % 1000) as f32 / 1000.0 - 0.5)
        .collect()
}

fn same_3x3(stride: usize) -> ConvParams {
    ConvParams {
        padding: 1,
        stride,
        dilation: 1,
        groups: 1,
    }
}

/// The three kernels on ResNet-20's convolutions (batch 128), weighted by
/// how often each shape occurs.
#[test]
#[ignore = "a timing, not a test"]
fn conv_timing_resnet20() {
    let shapes: [(usize, usize, usize, usize, usize); 7] = [
        (0, 32, 64, 16, 1), // bench-conv's layer, not counted
        // (count, in_c, out_c, in_hw, stride)
        (1, 3, 16, 32, 1),
        (6, 16, 16, 32, 1),
        (1, 16, 32, 32, 2),
        (5, 32, 32, 16, 1),
        (1, 32, 64, 16, 2),
        (5, 64, 64, 8, 1),
    ];
    let mut total = [0f64; 3];
    for (count, c, o, hw, s) in shapes {
        let shape = ConvShape::new(&[128, c, hw, hw], &[o, c, 3, 3], same_3x3(s)).unwrap();
        let x = filler(128 * c * hw * hw, 7919);
        let w = filler(o * c * 9, 104_729);
        let dy = filler(128 * shape.out_sample(), 31);
        let tf = fastest_ms(11, &mut || {
            std::hint::black_box(forward(&shape, &x, &w, None));
        });
        let ti = fastest_ms(11, &mut || {
            std::hint::black_box(input_grad(&shape, &dy, &w));
        });
        let tw = fastest_ms(11, &mut || {
            std::hint::black_box(weight_grad(&shape, &x, &dy));
        });
        println!(
            "{c:>2}->{o:<2} {hw:>2}x{hw:<2} s{s} x{count}: fwd {tf:6.2} ms  dx {ti:6.2} ms  dw {tw:6.2} ms"
        );
        for (acc, t) in total.iter_mut().zip([tf, ti, tw]) {
            *acc += count as f64 * t;
        }
    }
    println!(
        "weighted total: fwd {:.1} ms  dx {:.1} ms  dw {:.1} ms",
        total[0], total[1], total[2]
    );
}

/// bench-conv's layer (32→64, 3×3, pad 1, `[128, 32, 16, 16]`) taken
/// apart: the forward and one-pass backward kernels, and their pieces
/// alone over the batch (im2col, the three products, col2im).
#[test]
#[ignore = "a timing, not a test"]
fn conv_timing_pieces() {
    let shape = ConvShape::new(&[128, 32, 16, 16], &[64, 32, 3, 3], same_3x3(1)).unwrap();
    let (xs, ys, k, pos) = (
        shape.in_sample(),
        shape.out_sample(),
        shape.k(),
        shape.positions(),
    );
    let x = filler(128 * xs, 7919);
    let w = filler(64 * k, 104_729);
    let dy = filler(128 * ys, 31);
    // One piece, given a sample's input, its output gradient and scratch.
    type Piece<'a> = &'a (dyn Fn(&[f32], &[f32], &mut [f32]) + Sync);
    let per_sample = |f: Piece| {
        fastest_ms(11, &mut || {
            x.par_chunks(xs).zip(dy.par_chunks(ys)).for_each(|(x, dy)| {
                with_scratch(shape.col_len() + ys.max(xs).max(k * 64), |buf| {
                    f(x, dy, buf)
                })
            })
        })
    };
    let forward_ms = fastest_ms(11, &mut || {
        std::hint::black_box(forward(&shape, &x, &w, None));
    });
    let backward_ms = fastest_ms(11, &mut || {
        let mut dx = vec![0f32; x.len()];
        std::hint::black_box(backward_into(&shape, &x, &dy, &w, Some(&mut dx), true));
    });
    let im2col_ms = per_sample(&|x, _, buf| im2col(&shape, x, buf));
    let w_t = MatRef::row_major(&w, 64, k);
    let fwd_gemm_ms = per_sample(&|_, _, buf| {
        let (col, y) = buf.split_at_mut(shape.col_len());
        let col = MatRef::row_major(col, k, pos);
        matmul(MatMut::row_major(&mut y[..ys], 64, pos), w_t, col, false)
    });
    let dcol_gemm_ms = per_sample(&|_, dy, buf| {
        let dy = MatRef::row_major(dy, 64, pos);
        matmul(
            MatMut::row_major(&mut buf[..k * pos], k, pos),
            w_t.t(),
            dy,
            false,
        )
    });
    let col2im_ms = per_sample(&|_, _, buf| {
        let (col, dx) = buf.split_at_mut(shape.col_len());
        col2im(&shape, col, &mut dx[..xs])
    });
    let dw_gemm_ms = per_sample(&|_, dy, buf| {
        let (col, dw) = buf.split_at_mut(shape.col_len());
        let (dy, col) = (
            MatRef::row_major(dy, 64, pos),
            MatRef::row_major(col, k, pos),
        );
        matmul(
            MatMut::row_major(&mut dw[..k * 64], k, 64).t(),
            dy,
            col.t(),
            true,
        )
    });
    println!(
        "forward {forward_ms:.2} ms = im2col {im2col_ms:.2} + product {fwd_gemm_ms:.2} + rest"
    );
    println!(
        "backward {backward_ms:.2} ms = input-grad product {dcol_gemm_ms:.2} + col2im \
         {col2im_ms:.2} + im2col {im2col_ms:.2} + weight-grad product {dw_gemm_ms:.2} + rest"
    );
    // 2·O·K·P·N flops per product.
    let gflop = 2.0 * 64.0 * k as f64 * pos as f64 * 128.0 / 1e9;
    println!(
        "forward product: {:.0} GFLOP/s",
        gflop / (fwd_gemm_ms / 1e3)
    );
}
