//! Distils a two-layer Candle model of your own with Hinton KD on random
//! data, with kd-core alone (no kdprune model or dataset crate involved).
//!
//! Run with `cargo run --release -p kd-core --example distill_own_model`.
//!
//! What it takes: your model implements [`kd_core::Network`] (a forward pass
//! that returns the logits, the trainable variables by name), your data
//! implements [`kd_core::Samples`] (inputs and labels of the samples asked
//! for), and [`kd_core::fit`] trains with any objective: here plain CE for
//! the teacher, then `0.1·CE + 0.9·T²·KL(p_T ‖ p_S)` for the student.

use candle_core::{DType, Device, Module, Tensor, Var};
use candle_nn::{linear, Linear, VarBuilder, VarMap};
use kd_core::init::{seeded_varmap, Init, ParamSpec};
use kd_core::{
    FitOptions, LossConfig, ModelOutput, Network, NoHook, Progress, SgdConfig, TeacherCache,
    TrainConfig, TrainData,
};

/// A two-layer perceptron, as a user would write it with candle-nn.
struct TwoLayer {
    fc1: Linear,
    fc2: Linear,
    varmap: VarMap,
    device: Device,
}

impl TwoLayer {
    /// The network with PyTorch's default initialisation drawn from `seed`
    /// ([`kd_core::init`]; candle-nn's own initialisers are not seeded).
    fn new(
        inputs: usize,
        hidden: usize,
        classes: usize,
        seed: u64,
        device: &Device,
    ) -> candle_core::Result<Self> {
        let spec = |name: &str, shape: Vec<usize>, fan_in| ParamSpec {
            name: name.into(),
            shape,
            fan_in,
            init: Init::Uniform,
        };
        let specs = [
            spec("fc1.weight", vec![hidden, inputs], inputs),
            spec("fc1.bias", vec![hidden], inputs),
            spec("fc2.weight", vec![classes, hidden], hidden),
            spec("fc2.bias", vec![classes], hidden),
        ];
        let (varmap, _) = seeded_varmap(&specs, seed, device)?;
        // The layers find the variables above (same names and shapes).
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
        Ok(Self {
            fc1: linear(inputs, hidden, vb.pp("fc1"))?,
            fc2: linear(hidden, classes, vb.pp("fc2"))?,
            varmap,
            device: device.clone(),
        })
    }
}

impl Network for TwoLayer {
    fn forward_t(&self, xs: &Tensor, _train: bool) -> candle_core::Result<ModelOutput> {
        let hidden = self.fc1.forward(xs)?.relu()?;
        let logits = self.fc2.forward(&hidden)?;
        // Named features let feature losses (fitnet, at, rkd) pair layers.
        Ok(ModelOutput {
            logits,
            features: vec![("fc1".to_string(), hidden)],
        })
    }

    fn named_vars(&self) -> Vec<(String, Var)> {
        // VarMap's order is not stable: sort by name.
        let data = self.varmap.data().lock().expect("variable map");
        let mut vars: Vec<(String, Var)> =
            data.iter().map(|(n, v)| (n.clone(), v.clone())).collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        vars
    }

    fn device(&self) -> &Device {
        &self.device
    }
}

/// Inputs and labels held as two tensors.
struct InMemory {
    xs: Tensor,
    ys: Tensor,
}

impl kd_core::Samples for InMemory {
    fn len(&self) -> usize {
        self.ys.dims()[0]
    }

    fn batch(&self, idx: &[usize], device: &Device) -> kd_core::Result<(Tensor, Tensor)> {
        let idx = Tensor::new(idx.iter().map(|&i| i as u32).collect::<Vec<_>>(), device)?;
        Ok((
            self.xs.index_select(&idx, 0)?,
            self.ys.index_select(&idx, 0)?,
        ))
    }
}

/// A task a network can learn: the label is the index of the largest of
/// the first `classes` coordinates of a random point (seeded: the same run
/// every time).
fn task(
    n: usize,
    inputs: usize,
    classes: usize,
    seed: u64,
    device: &Device,
) -> candle_core::Result<InMemory> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let values: Vec<f32> = (0..n * inputs)
        .map(|_| rng.random::<f32>() * 2.0 - 1.0)
        .collect();
    let xs = Tensor::from_vec(values, (n, inputs), device)?;
    let ys = xs.narrow(1, 0, classes)?.argmax(1)?;
    Ok(InMemory { xs, ys })
}

/// Prints one line per epoch.
struct Lines(&'static str);

impl Progress for Lines {
    fn end_epoch(&mut self, stats: &kd_core::EpochStats, epochs: usize) {
        println!(
            "[{}] epoch {}/{epochs}: loss {:.4}, test accuracy {:.1} %",
            self.0,
            stats.epoch,
            stats.train_loss,
            100.0 * stats.test_accuracy
        );
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let device = Device::Cpu;
    let (inputs, classes) = (20, 5);
    let train = task(4000, inputs, classes, 1, &device)?;
    let test = task(1000, inputs, classes, 2, &device)?;
    let data = TrainData {
        train: &train,
        test: &test,
    };

    // The teacher: wide, trained with cross-entropy.
    let teacher = TwoLayer::new(inputs, 256, classes, 3, &device)?;
    let config = TrainConfig {
        epochs: 8,
        batch_size: 64,
        sgd: SgdConfig {
            lr: 0.05,
            ..SgdConfig::default()
        },
        ..TrainConfig::default()
    };
    let options = FitOptions {
        hook: &mut NoHook,
        progress: &mut Lines("teacher"),
        teacher_cache: TeacherCache::Memory,
        resume: None,
        on_epoch: None,
        save_every: None,
    };
    kd_core::fit(&teacher, None, &data, &config, options)?;

    // The student: narrow, distilled with Hinton KD (α = 0.9, T = 4).
    let student = TwoLayer::new(inputs, 16, classes, 4, &device)?;
    let kd = TrainConfig {
        objective: LossConfig::Hinton {
            temperature: 4.0,
            alpha: 0.9,
        }
        .into(),
        ..config
    };
    let options = FitOptions {
        hook: &mut NoHook,
        progress: &mut Lines("student"),
        teacher_cache: TeacherCache::Memory,
        resume: None,
        on_epoch: None,
        save_every: None,
    };
    let report = kd_core::fit(&student, Some(&teacher), &data, &kd, options)?;
    println!(
        "student ({} parameters) distilled from the teacher: {:.1} % test accuracy",
        student
            .named_vars()
            .iter()
            .map(|(_, v)| v.elem_count())
            .sum::<usize>(),
        100.0 * report.final_accuracy().unwrap_or(0.0)
    );
    Ok(())
}
