//! Inference with kdprune's runtime (each layer dense or sparse by its
//! density, [`kdprune_models::infer`]): the test accuracy `kdprune eval`
//! reports, and `kdprune infer` on image files.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use candle_core::{Device, D};
use kd_core::Samples;
use kdprune_data::{decode_chw, read_idx_images, Dataset, Normalization};
use kdprune_models::checkpoint::{self, Checkpoint};
use kdprune_models::infer::{InferenceNet, LayerChoice, LayerInfo};
use serde::Serialize;

/// The runtime network of a checkpoint (INT8 linear layers for a quantised
/// one), or why it has none (the zoo CNNs other than the CIFAR ResNets run
/// through candle).
pub fn runtime_net(
    ckpt: &Checkpoint,
    choice: LayerChoice,
) -> std::result::Result<InferenceNet, String> {
    InferenceNet::from_checkpoint(ckpt, choice).map_err(|e| e.to_string())
}

/// Runs `net` over `samples` in batches of `batch_size`, handing `seen`
/// each batch's predicted classes and its labels.
fn each_batch(
    net: &InferenceNet,
    samples: &dyn Samples,
    batch_size: usize,
    mut seen: impl FnMut(Vec<u32>, Vec<u32>),
) -> Result<()> {
    let idx: Vec<usize> = (0..samples.len()).collect();
    for chunk in idx.chunks(batch_size.max(1)) {
        let (xs, ys) = samples.batch(chunk, &Device::Cpu)?;
        let x = xs.flatten_all()?.to_vec1::<f32>()?;
        let logits = net.forward(&x, chunk.len())?;
        seen(
            argmax_rows(&logits, net.num_classes()),
            ys.to_vec1::<u32>()?,
        );
    }
    Ok(())
}

/// The argmax class of every sample of `samples` under `net`, in batches of
/// `batch_size`.
pub fn runtime_predictions(
    net: &InferenceNet,
    samples: &dyn Samples,
    batch_size: usize,
) -> Result<Vec<u32>> {
    let mut out = Vec::with_capacity(samples.len());
    each_batch(net, samples, batch_size, |pred, _| out.extend(pred))?;
    Ok(out)
}

/// The test accuracy of `net` on `samples` (what `kd_core::evaluate` is for
/// a candle network), in batches of `batch_size`.
pub fn runtime_accuracy(
    net: &InferenceNet,
    samples: &dyn Samples,
    batch_size: usize,
) -> Result<f64> {
    ensure!(!samples.is_empty(), "cannot evaluate on an empty dataset");
    let mut hits = 0usize;
    each_batch(net, samples, batch_size, |pred, labels| {
        hits += pred.iter().zip(&labels).filter(|(p, t)| p == t).count();
    })?;
    Ok(hits as f64 / samples.len() as f64)
}

/// The index of the largest value of each row (the first on ties, as
/// candle's `argmax`).
fn argmax_rows(logits: &[f32], classes: usize) -> Vec<u32> {
    logits
        .chunks_exact(classes.max(1))
        .map(|row| {
            let mut best = 0;
            for (i, v) in row.iter().enumerate() {
                if *v > row[best] {
                    best = i;
                }
            }
            best as u32
        })
        .collect()
}

/// The argmax class of every sample under candle's forward pass (the
/// training network in evaluation mode), in batches of `batch_size`.
pub fn candle_predictions(
    model: &kdprune_models::Model,
    samples: &dyn Samples,
    batch_size: usize,
) -> Result<Vec<u32>> {
    let mut out = Vec::with_capacity(samples.len());
    let idx: Vec<usize> = (0..samples.len()).collect();
    for chunk in idx.chunks(batch_size.max(1)) {
        let (xs, _) = samples.batch(chunk, model.device())?;
        let pred = model.forward_t(&xs, false)?.logits.argmax(D::Minus1)?;
        out.extend(pred.to_vec1::<u32>()?);
    }
    Ok(out)
}

/// What `kdprune infer` reads and how.
#[derive(Clone, Debug)]
pub struct InferJob {
    /// The checkpoint (any encoding).
    pub checkpoint: PathBuf,
    /// IDX image files (`*-images-idx3-ubyte[.gz]`) and PNG/JPEG images, in order.
    pub inputs: Vec<PathBuf>,
    /// Samples per forward pass.
    pub batch_size: usize,
    /// Which layers run sparse.
    pub choice: LayerChoice,
}

/// One input's prediction.
#[derive(Clone, Debug, Serialize)]
pub struct Prediction {
    /// The file it came from.
    pub file: String,
    /// Its index within that file (0 for an image file).
    pub index: usize,
    /// The predicted class.
    pub class: u32,
    /// The logits.
    pub logits: Vec<f32>,
}

/// What `kdprune infer` prints as JSON.
#[derive(Clone, Debug, Serialize)]
pub struct InferReport {
    /// The architecture.
    pub model: String,
    /// Each weight: dense or sparse, and its density.
    pub layers: Vec<LayerReport>,
    /// Samples per forward pass.
    pub batch_size: usize,
    /// Wall time of the forward passes, seconds.
    pub seconds: f64,
    /// One per input sample, in order.
    pub predictions: Vec<Prediction>,
}

/// A layer of [`InferReport`].
#[derive(Clone, Debug, Serialize)]
pub struct LayerReport {
    /// The weight's name.
    pub name: String,
    /// `dense` or `sparse`.
    pub kind: &'static str,
    /// Non-zeros / entries.
    pub density: f64,
}

impl From<LayerInfo> for LayerReport {
    fn from(l: LayerInfo) -> Self {
        Self {
            kind: if l.sparse { "sparse" } else { "dense" },
            name: l.name,
            density: l.density,
        }
    }
}

/// The pixels (`[C, H, W]` bytes per sample, scaled by 1/255) of `path`: an
/// IDX image file (every image) or one PNG/JPEG image, which must be
/// `channels × height × width`.
fn read_images(path: &Path, (c, h, w): (usize, usize, usize)) -> Result<Vec<Vec<u8>>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let idx = bytes.starts_with(&[0x1f, 0x8b]) || bytes.starts_with(&[0, 0, 8, 3]);
    if idx {
        let (n, ih, iw, pixels) = read_idx_images(path)?;
        ensure!(
            c == 1 && (ih, iw) == (h, w),
            "{}: {n} images of 1x{ih}x{iw}, the model takes {c}x{h}x{w}",
            path.display()
        );
        return Ok(pixels.chunks_exact(h * w).map(<[u8]>::to_vec).collect());
    }
    let image =
        decode_chw(&bytes, c, h, w).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(vec![image])
}

/// Runs [`InferJob`]: the checkpoint's network on the runtime, its inputs
/// normalised as its training data was (the checkpoint's `normalization`).
pub fn infer(job: &InferJob) -> Result<InferReport> {
    ensure!(job.batch_size > 0, "--batch-size must be at least 1");
    let ckpt = checkpoint::load(&job.checkpoint, &Device::Cpu)
        .with_context(|| format!("cannot load checkpoint {}", job.checkpoint.display()))?;
    let net = match runtime_net(&ckpt, job.choice) {
        Ok(net) => net,
        Err(e) => bail!("{}: {e}", job.checkpoint.display()),
    };
    // An MLP takes any input of its width: the image shape is its dataset's.
    let dataset_shape = ckpt
        .metadata
        .get("dataset")
        .and_then(|d| d.parse::<kdprune_data::DatasetName>().ok())
        .map(|d| d.image_shape());
    let shape = ckpt
        .config
        .input_shape()
        .or(dataset_shape)
        .with_context(|| {
            format!(
                "{}: neither the architecture nor a `dataset` metadata key gives the input shape",
                job.checkpoint.display()
            )
        })?;
    let norm: Normalization = match ckpt.metadata.get("normalization") {
        Some(json) => serde_json::from_str(json).with_context(|| {
            format!("{}: bad `normalization` metadata", job.checkpoint.display())
        })?,
        None => Normalization::identity(shape.0),
    };
    let mut images = Vec::new();
    let mut origin = Vec::new();
    for path in &job.inputs {
        for (i, img) in read_images(path, shape)?.into_iter().enumerate() {
            images.extend(img);
            origin.push((path.display().to_string(), i));
        }
    }
    ensure!(!origin.is_empty(), "no input images");
    let n = origin.len();
    let dataset = Dataset {
        name: "input".to_string(),
        images,
        labels: vec![0; n],
        channels: shape.0,
        height: shape.1,
        width: shape.2,
        num_classes: net.num_classes(),
        max_value: 255.0,
    };
    let classes = net.num_classes();
    let mut predictions = Vec::with_capacity(n);
    let mut seconds = 0.0;
    let idx: Vec<usize> = (0..n).collect();
    for chunk in idx.chunks(job.batch_size) {
        let (xs, _) = dataset.batch(chunk, &norm, &Device::Cpu)?;
        let x = xs.flatten_all()?.to_vec1::<f32>()?;
        let start = Instant::now();
        let logits = net.forward(&x, chunk.len())?;
        seconds += start.elapsed().as_secs_f64();
        for (k, (row, class)) in logits
            .chunks_exact(classes)
            .zip(argmax_rows(&logits, classes))
            .enumerate()
        {
            let (file, index) = origin[chunk[0] + k].clone();
            predictions.push(Prediction {
                file,
                index,
                class,
                logits: row.to_vec(),
            });
        }
    }
    Ok(InferReport {
        model: ckpt.config.name(),
        layers: net.layers().into_iter().map(LayerReport::from).collect(),
        batch_size: job.batch_size,
        seconds,
        predictions,
    })
}
