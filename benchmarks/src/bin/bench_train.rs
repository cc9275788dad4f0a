//! Images per second of a full training step — forward, cross-entropy,
//! backward, SGD (Nesterov momentum 0.9, weight decay 5e-4) — at batch 128,
//! with kdprune's CPU kernels and with bare candle, measured side by side in
//! the same run. One line per model:
//!
//! ```text
//! model=NAME kdprune_img_s=X candle_img_s=Y ratio=X/Y
//! ```
//!
//! `cargo run --release -p kdprune-benchmarks --bin bench-train [-- --rounds 5 --steps 4 --model resnet20]`
//!
//! `--profile` runs kdprune's side alone (`rounds × steps` steps), for `perf`.
//!
//! `--device cuda` (a `--features cuda` build; `--device cpu` runs the same
//! path on the CPU, where the check is exact) times kdprune's training step
//! on the GPU instead — there both sides run candle's CUDA kernels, so one
//! figure per model, `model=NAME device=cuda kdprune_img_s=X`, to set beside
//! `python3 benchmarks/pytorch_reference.py --device cuda` — and first checks
//! it: the same weights and batch on the CPU and on the device, one forward
//! and backward each, and every gradient compared
//! (`grad_check model=NAME worst=VAR max_rel=E pass=true|false`, the error of
//! a tensor relative to its largest CPU gradient, passing under 1e-4).
//!
//! PyTorch's figures for the same models, batch and threads:
//! `python3 benchmarks/pytorch_reference.py` (see `benchmarks/README.md`).

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::{VarBuilder, VarMap};
use kd_core::{Sgd, SgdConfig};
use kdprune_benchmarks::small_cnn::CnnKernels;
use kdprune_benchmarks::{
    count_arg, interleaved_median_secs, load_average, median_secs, text_arg, SmallCnn,
};
use kdprune_cli::runtime::tune_process;
use kdprune_models::zoo::lenet5::{Geometry, LeNet5};
use kdprune_models::{Kernels, Model, ModelConfig};

const BATCH: usize = 128;
const CLASSES: usize = 10;

/// The two sides of every comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    /// kdprune's kernels (`Kernels::Auto` on the CPU).
    Kdprune,
    /// candle's own convolution and pooling.
    Candle,
}

/// A network as the benchmark sees it: logits of a batch.
type Net = Box<dyn Fn(&Tensor) -> Result<Tensor>>;

/// One benchmarked model: its name, its input `(C, H, W)` and how to build it
/// on either side. Adding a model is one entry of [`MODELS`].
struct Bench {
    name: &'static str,
    input: (usize, usize, usize),
    build: fn(Side, &VarMap, &Device) -> Result<Net>,
}

const MODELS: &[Bench] = &[
    Bench {
        name: "small-cnn",
        input: (3, 32, 32),
        build: small_cnn,
    },
    Bench {
        name: "lenet5",
        input: (1, 28, 28),
        build: lenet5,
    },
    Bench {
        name: "resnet20",
        input: (3, 32, 32),
        build: resnet20,
    },
    Bench {
        name: "resnet56",
        input: (3, 32, 32),
        build: resnet56,
    },
    Bench {
        name: "efficientnet-b0",
        input: (1, 28, 28),
        build: efficientnet_b0,
    },
];

fn small_cnn(side: Side, varmap: &VarMap, dev: &Device) -> Result<Net> {
    let vb = VarBuilder::from_varmap(varmap, DType::F32, dev);
    let kernels = match side {
        Side::Kdprune => CnnKernels::Models(Kernels::Auto),
        Side::Candle => CnnKernels::BareCandle,
    };
    let net = SmallCnn::new(3, (32, 32), CLASSES, kernels, vb)?;
    Ok(Box::new(move |xs| net.forward(xs)))
}

fn lenet5(side: Side, varmap: &VarMap, dev: &Device) -> Result<Net> {
    let vb = VarBuilder::from_varmap(varmap, DType::F32, dev);
    let geometry = Geometry::new(28, 28).ok_or_else(|| candle_core::Error::Msg("28x28".into()))?;
    let kernels = match side {
        Side::Kdprune => Kernels::Auto,
        Side::Candle => Kernels::Candle,
    };
    let net = LeNet5::new(1, &geometry, CLASSES, vb)?.with_kernels(kernels);
    Ok(Box::new(move |xs| Ok(net.forward_t(xs, true)?.logits)))
}

fn resnet20(side: Side, varmap: &VarMap, dev: &Device) -> Result<Net> {
    zoo("resnet20", (3, 32, 32), side, varmap, dev)
}

fn resnet56(side: Side, varmap: &VarMap, dev: &Device) -> Result<Net> {
    zoo("resnet56", (3, 32, 32), side, varmap, dev)
}

/// EfficientNet-B0 on Fashion-MNIST's shape (padded to 32×32 inside).
fn efficientnet_b0(side: Side, varmap: &VarMap, dev: &Device) -> Result<Net> {
    zoo("efficientnet-b0", (1, 28, 28), side, varmap, dev)
}

/// A network of the zoo in training mode (batch norms on batch statistics);
/// its variables join `varmap` so that the trainer finds them. kdprune's side
/// runs its convolution and batch-norm kernels, candle's side candle's ops.
fn zoo(
    name: &str,
    input: (usize, usize, usize),
    side: Side,
    varmap: &VarMap,
    dev: &Device,
) -> Result<Net> {
    let kernels = match side {
        Side::Kdprune => Kernels::Auto,
        Side::Candle => Kernels::Candle,
    };
    let cfg = ModelConfig::from_name(name, input, CLASSES)
        .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    let model = Model::new(cfg, 0, dev)
        .map_err(|e| candle_core::Error::Msg(e.to_string()))?
        .with_kernels(kernels);
    {
        let mut data = varmap
            .data()
            .lock()
            .map_err(|_| candle_core::Error::Msg("variable map lock poisoned".into()))?;
        for (name, var) in model.named_vars() {
            data.insert(name, var);
        }
    }
    Ok(Box::new(move |xs| Ok(model.forward_t(xs, true)?.logits)))
}

/// Any error of a library, printed by `main`.
type BenchResult<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// A network with its optimizer, ready to take training steps.
struct Trainer {
    net: Net,
    sgd: Sgd,
    /// The variables by name, sorted.
    vars: Vec<(String, candle_core::Var)>,
}

impl Trainer {
    fn new(
        bench: &Bench,
        side: Side,
        init: Option<&VarMap>,
        dev: &Device,
    ) -> BenchResult<(Self, VarMap)> {
        let varmap = VarMap::new();
        let net = (bench.build)(side, &varmap, dev)?;
        let mut vars: Vec<_> = varmap
            .data()
            .lock()
            .map_err(|_| "variable map lock poisoned")?
            .clone()
            .into_iter()
            .collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        // Both sides start from the same weights.
        if let Some(init) = init {
            let init = init
                .data()
                .lock()
                .map_err(|_| "variable map lock poisoned")?;
            for (name, var) in &vars {
                if let Some(src) = init.get(name) {
                    var.set(&src.as_tensor().to_device(dev)?.copy()?)?;
                }
            }
        }
        let sgd = Sgd::new(&vars, SgdConfig::default())?;
        Ok((Self { net, sgd, vars }, varmap))
    }

    /// The gradient of every variable, by name, after one forward and
    /// backward pass on `(xs, ys)` (no update).
    fn gradients(&self, xs: &Tensor, ys: &Tensor) -> BenchResult<Vec<(String, Tensor)>> {
        let logits = (self.net)(xs)?;
        let loss = candle_nn::loss::cross_entropy(&logits, ys)?;
        let grads = loss.backward()?;
        let mut out = Vec::new();
        for (name, var) in &self.vars {
            if let Some(g) = grads.get(var.as_tensor()) {
                out.push((name.clone(), g.to_device(&Device::Cpu)?));
            }
        }
        Ok(out)
    }

    fn step(&mut self, xs: &Tensor, ys: &Tensor) -> BenchResult<()> {
        let logits = (self.net)(xs)?;
        let loss = candle_nn::loss::cross_entropy(&logits, ys)?;
        let grads = loss.backward()?;
        self.sgd.step(&grads, 0.01)?;
        Ok(())
    }
}

fn main() -> BenchResult<()> {
    tune_process();
    let rounds = count_arg("--rounds", 5)?;
    let steps = count_arg("--steps", 4)?;
    eprintln!(
        "# cpu={} batch={BATCH} threads={} rounds={rounds} steps_per_round={steps} load_1min={}",
        kdprune_benchmarks::cpu_features(),
        rayon_threads(),
        load_average().map_or("?".to_string(), |l| format!("{l:.2}"))
    );
    let device_spec = text_arg("--device");
    let dev = match &device_spec {
        None => Device::Cpu,
        Some(spec) => kdprune_cli::device::parse_device(spec).map_err(|e| format!("{e:#}"))?,
    };
    let only = text_arg("--model");
    let profile = std::env::args().any(|a| a == "--profile");
    if let Some(name) = &only {
        if !MODELS.iter().any(|b| b.name == name) {
            let names: Vec<_> = MODELS.iter().map(|b| b.name).collect();
            return Err(format!("--model {name}: expected one of {names:?}").into());
        }
    }
    for bench in MODELS
        .iter()
        .filter(|b| only.as_deref().is_none_or(|n| n == b.name))
    {
        if let Some(spec) = &device_spec {
            device_bench(bench, &dev, spec, rounds, steps)?;
            continue;
        }
        let (xs, ys) = batch(bench, &dev)?;
        let (mut ours, init) = Trainer::new(bench, Side::Kdprune, None, &dev)?;
        if profile {
            // kdprune's side alone, for a profiler: no candle steps in the samples.
            let start = std::time::Instant::now();
            for _ in 0..rounds * steps {
                ours.step(&xs, &ys)?;
            }
            let ips = (BATCH * rounds * steps) as f64 / start.elapsed().as_secs_f64();
            println!(
                "model={} kdprune_img_s={ips:.1} (--profile: kdprune only)",
                bench.name
            );
            continue;
        }
        let (mut theirs, _) = Trainer::new(bench, Side::Candle, Some(&init), &dev)?;
        let mut run_ours = || {
            for _ in 0..steps {
                ours.step(&xs, &ys).expect("kdprune train step");
            }
        };
        let mut run_theirs = || {
            for _ in 0..steps {
                theirs.step(&xs, &ys).expect("candle train step");
            }
        };
        let t = interleaved_median_secs(rounds, &mut [&mut run_ours, &mut run_theirs]);
        let images = (BATCH * steps) as f64;
        let (ours_ips, theirs_ips) = (images / t[0], images / t[1]);
        println!(
            "model={} kdprune_img_s={ours_ips:.1} candle_img_s={theirs_ips:.1} ratio={:.2}",
            bench.name,
            ours_ips / theirs_ips
        );
    }
    Ok(())
}

/// One batch of `bench`'s input on `dev`: random images and fixed labels.
fn batch(bench: &Bench, dev: &Device) -> Result<(Tensor, Tensor)> {
    let (c, h, w) = bench.input;
    let xs = Tensor::randn(0f32, 1.0, (BATCH, c, h, w), dev)?;
    let labels: Vec<u32> = (0..BATCH).map(|i| ((i * 7) % CLASSES) as u32).collect();
    Ok((xs, Tensor::from_vec(labels, BATCH, dev)?))
}

/// Largest relative difference between the device's gradients and the CPU's
/// that passes the check. Networks without batch norm stay far inside it
/// (LeNet-5: 4.5e-7 on an H200); deep batch-norm networks at initialisation
/// exceed it on PyTorch's own CPU and GPU as well (docs/cuda.md).
const GRAD_TOLERANCE: f64 = 1e-4;

/// On a GPU: the gradient check against the CPU, then the timed steps.
fn device_bench(
    bench: &Bench,
    dev: &Device,
    spec: &str,
    rounds: usize,
    steps: usize,
) -> BenchResult<()> {
    let cpu = Device::Cpu;
    let (xs, ys) = batch(bench, &cpu)?;
    // The same weights on both: the CPU model's, copied to the device.
    let (on_cpu, init) = Trainer::new(bench, Side::Kdprune, None, &cpu)?;
    let (mut on_dev, _) = Trainer::new(bench, Side::Kdprune, Some(&init), dev)?;
    let (xs_dev, ys_dev) = (xs.to_device(dev)?, ys.to_device(dev)?);
    let want = on_cpu.gradients(&xs, &ys)?;
    let got = on_dev.gradients(&xs_dev, &ys_dev)?;
    if want.len() != got.len() {
        return Err(format!(
            "{}: {} gradients on the CPU, {} on the device",
            bench.name,
            want.len(),
            got.len()
        )
        .into());
    }
    let mut worst = (String::new(), 0f64);
    for ((name, a), (_, b)) in want.iter().zip(&got) {
        let scale = f64::from(a.abs()?.max_all()?.to_scalar::<f32>()?).max(1e-12);
        let diff = f64::from((a - b)?.abs()?.max_all()?.to_scalar::<f32>()?);
        let rel = diff / scale;
        if rel >= worst.1 || rel.is_nan() {
            worst = (name.clone(), rel);
        }
    }
    println!(
        "grad_check model={} vars={} worst={} max_rel={:.2e} pass={}",
        bench.name,
        want.len(),
        worst.0,
        worst.1,
        worst.1 < GRAD_TOLERANCE
    );
    let mut run = || {
        for _ in 0..steps {
            on_dev.step(&xs_dev, &ys_dev).expect("device train step");
        }
        dev.synchronize().expect("device synchronize");
    };
    let t = median_secs(rounds, &mut run);
    println!(
        "model={} device={spec} kdprune_img_s={:.1}",
        bench.name,
        (BATCH * steps) as f64 / t
    );
    Ok(())
}

/// Threads the kernels run on (rayon's global pool, as candle's).
fn rayon_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}
