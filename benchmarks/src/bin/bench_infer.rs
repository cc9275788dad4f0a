//! Inference of pruned models: the training forward pass (candle, what
//! `kdprune eval` ran before the runtime) against kdprune's inference
//! runtime with every layer dense and with each layer dense or sparse by its
//! density (the default), and with INT8 linear layers (dense or sparse by
//! density, activations quantised per batch), at several sparsities and at
//! batch 1 and 64; and
//! one 300×784 layer at densities 0.02–0.6, and ResNet-20's convolutions at
//! densities 0.05–0.4, dense against sparse, for the crossover the runtime's
//! default uses.
//!
//! ```text
//! model=lenet-300-100 sparsity=0.95 batch=1 candle_us=A dense_us=B sparse_us=C sparse_int8_us=D sparse_vs_dense=B/C sparse_vs_candle=A/C int8_vs_sparse=C/D
//! convs=resnet20 density=0.1 batch=64 dense_us=X sparse_us=Y sparse_vs_dense=X/Y
//! layer=300x784 density=0.05 batch=1 dense_us=X sparse_us=Y sparse_vs_dense=X/Y
//! ```
//!
//! Masks are uniform random per layer at the stated sparsity (seeded), the
//! weights those of a seeded initialisation: time depends on the number and
//! layout of the non-zeros, not on their values. Each figure is the median of
//! `--rounds` (default 21) interleaved samples after a warm-up, a sample
//! being the mean of enough calls to last about 2 ms.
//!
//! `cargo run --release -p kdprune-benchmarks --bin bench-infer [-- --rounds 21]`
//! (PyTorch's dense figures: `python3 benchmarks/pytorch_reference.py --infer`).

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use kdprune_benchmarks::{count_arg, header_line, interleaved_median_secs};
use kdprune_cli::runtime::tune_process;
use kdprune_models::checkpoint::Checkpoint;
use kdprune_models::infer::{quantize_checkpoint, InferenceNet, LayerChoice};
use kdprune_models::{Model, ModelConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Calls of `f` per timing sample: enough for about 2 ms.
fn calls_for(f: &mut dyn FnMut()) -> usize {
    let start = Instant::now();
    f();
    let once = start.elapsed().as_secs_f64().max(1e-7);
    ((2e-3 / once) as usize).clamp(1, 10_000)
}

/// Median seconds per call of each contender.
fn per_call(rounds: usize, contenders: &mut [&mut dyn FnMut()]) -> Vec<f64> {
    let calls: Vec<usize> = contenders.iter_mut().map(|f| calls_for(*f)).collect();
    let mut wrapped: Vec<Box<dyn FnMut() + '_>> = contenders
        .iter_mut()
        .zip(&calls)
        .map(|(f, &n)| {
            Box::new(move || {
                for _ in 0..n {
                    f();
                }
            }) as Box<dyn FnMut()>
        })
        .collect();
    let mut refs: Vec<&mut dyn FnMut()> = wrapped
        .iter_mut()
        .map(|b| b.as_mut() as &mut dyn FnMut())
        .collect();
    interleaved_median_secs(rounds, &mut refs)
        .into_iter()
        .zip(&calls)
        .map(|(t, &n)| t / n as f64)
        .collect()
}

/// `model`'s seeded weights with every weight of rank ≥ 2 pruned to `sparsity` at random.
fn pruned(model: &Model, sparsity: f64) -> Result<BTreeMap<String, Tensor>> {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut tensors = model.tensors()?;
    for t in tensors.values_mut() {
        if t.rank() < 2 {
            continue;
        }
        let keep: Vec<f32> = (0..t.elem_count())
            .map(|_| f32::from(u8::from(rng.random::<f64>() >= sparsity)))
            .collect();
        *t = t.mul(&Tensor::from_vec(keep, t.dims(), &Device::Cpu)?)?;
    }
    model.load_tensors(&tensors)?;
    Ok(tensors)
}

/// One line per batch size (1, 64): `label`, the two networks' times on the
/// same input (`inputs` values per sample) and their ratio.
fn dense_against_sparse(
    rounds: usize,
    label: &str,
    dense: &InferenceNet,
    sparse: &InferenceNet,
    inputs: usize,
) {
    for batch in [1usize, 64] {
        let x: Vec<f32> = (0..batch * inputs)
            .map(|i| (i as f32 * 0.37).sin())
            .collect();
        let t = per_call(
            rounds,
            &mut [
                &mut || {
                    std::hint::black_box(dense.forward(&x, batch).expect("forward"));
                },
                &mut || {
                    std::hint::black_box(sparse.forward(&x, batch).expect("forward"));
                },
            ],
        );
        println!(
            "{label} batch={batch} dense_us={:.1} sparse_us={:.1} sparse_vs_dense={:.2}",
            1e6 * t[0],
            1e6 * t[1],
            t[0] / t[1]
        );
    }
}

fn main() -> Result<()> {
    tune_process();
    let rounds = count_arg("--rounds", 21).map_err(anyhow::Error::msg)?;
    println!("{}", header_line(rounds));
    let dev = Device::Cpu;
    for name in ["lenet-300-100", "lenet5", "resnet20"] {
        let config = ModelConfig::from_name(name, (1, 28, 28), 10)?;
        for sparsity in [0.0, 0.9, 0.95, 0.99] {
            let model = Model::new(config.clone(), 0, &dev)?;
            let tensors = pruned(&model, sparsity)?;
            let dense = InferenceNet::new(&config, &tensors, LayerChoice::Dense)?;
            let sparse = InferenceNet::new(&config, &tensors, LayerChoice::default())?;
            // INT8 linear layers (dynamic activations), dense or sparse by density
            let ckpt = Checkpoint {
                config: config.clone(),
                tensors: tensors.clone(),
                masks: BTreeMap::new(),
                metadata: BTreeMap::new(),
                quantized: BTreeMap::new(),
            };
            let int8 = InferenceNet::from_checkpoint(
                &quantize_checkpoint(&ckpt, &[])?,
                LayerChoice::default(),
            )?;
            for batch in [1usize, 64] {
                let xs = Tensor::randn(0f32, 1.0, (batch, 1, 28, 28), &dev)?;
                let x = xs.flatten_all()?.to_vec1::<f32>()?;
                let t = per_call(
                    rounds,
                    &mut [
                        &mut || {
                            let out = model.forward_t(&xs, false).expect("forward");
                            std::hint::black_box(out.logits.to_dtype(DType::F32).expect("logits"));
                        },
                        &mut || {
                            std::hint::black_box(dense.forward(&x, batch).expect("forward"));
                        },
                        &mut || {
                            std::hint::black_box(sparse.forward(&x, batch).expect("forward"));
                        },
                        &mut || {
                            std::hint::black_box(int8.forward(&x, batch).expect("forward"));
                        },
                    ],
                );
                println!(
                    "model={name} sparsity={sparsity} batch={batch} candle_us={:.1} dense_us={:.1} sparse_us={:.1} sparse_int8_us={:.1} sparse_vs_dense={:.2} sparse_vs_candle={:.2} int8_vs_sparse={:.2}",
                    1e6 * t[0],
                    1e6 * t[1],
                    1e6 * t[2],
                    1e6 * t[3],
                    t[1] / t[2],
                    t[0] / t[2],
                    t[2] / t[3]
                );
            }
        }
    }

    // The crossover of the convolutions: ResNet-20 with every layer dense
    // against every layer sparse, at several densities.
    let config = ModelConfig::from_name("resnet20", (1, 28, 28), 10)?;
    for density in [0.05, 0.1, 0.2, 0.3, 0.4] {
        let model = Model::new(config.clone(), 0, &dev)?;
        let tensors = pruned(&model, 1.0 - density)?;
        let dense = InferenceNet::new(&config, &tensors, LayerChoice::Dense)?;
        let sparse = InferenceNet::new(&config, &tensors, LayerChoice::Sparse)?;
        dense_against_sparse(
            rounds,
            &format!("convs=resnet20 density={density}"),
            &dense,
            &sparse,
            784,
        );
    }

    // The crossover: one fc1 of LeNet-300-100 at several densities.
    let (rows, cols) = (300, 784);
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for density in [0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.6] {
        let w: Vec<f32> = (0..rows * cols)
            .map(|_| {
                if rng.random::<f64>() < density {
                    rng.random_range(-1.0f32..1.0)
                } else {
                    0.0
                }
            })
            .collect();
        let tensors = BTreeMap::from([
            (
                "fc1.weight".to_string(),
                Tensor::from_vec(w, (rows, cols), &dev)?,
            ),
            (
                "fc1.bias".to_string(),
                Tensor::zeros(rows, DType::F32, &dev)?,
            ),
        ]);
        let config = ModelConfig::Mlp {
            input_dim: cols,
            hidden: vec![],
            num_classes: rows,
        };
        let dense = InferenceNet::new(&config, &tensors, LayerChoice::Dense)?;
        let sparse = InferenceNet::new(&config, &tensors, LayerChoice::Sparse)?;
        dense_against_sparse(
            rounds,
            &format!("layer={rows}x{cols} density={density}"),
            &dense,
            &sparse,
            cols,
        );
    }
    Ok(())
}
