//! Datasets from the Hugging Face Hub: parquet files fetched through `hf-hub`
//! (its cache, its offline mode), decoded into the same [`Dataset`] as the
//! local loaders.
//!
//! | dataset | Hub repository | train files | test files | columns |
//! |---|---|---|---|---|
//! | `mnist` | `ylecun/mnist` | `mnist/train-*.parquet` | `mnist/test-*.parquet` | `image` (PNG), `label` |
//! | `fashion-mnist` | `zalando-datasets/fashion_mnist` | `fashion_mnist/train-*.parquet` | `fashion_mnist/test-*.parquet` | `image` (PNG), `label` |
//! | `cifar10` | `uoft-cs/cifar10` | `plain_text/train-*.parquet` | `plain_text/test-*.parquet` | `img` (PNG), `label` |
//! | `cifar100` | `uoft-cs/cifar100` | `cifar100/train-*.parquet` | `cifar100/test-*.parquet` | `img` (PNG), `fine_label`, `coarse_label` |
//! | `tiny-imagenet` | `zh-plus/tiny-imagenet` | `data/train-*.parquet` | `data/valid-*.parquet` | `image` (JPEG), `label` |

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use hf_hub::progress::{DownloadEvent, ProgressEvent, ProgressHandler};
use hf_hub::{HFClient, HFClientSync, HFError, HFRepositorySync, RepoTypeDataset};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;

use crate::dataset::{Dataset, Split};
use crate::decode::decode_chw;
use crate::error::{DataError, Result};
use crate::parquet_table::read_image_table;
use crate::registry::DatasetName;

/// How [`load_from_hub`] reaches the Hub and its cache.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HubOptions {
    /// The hf-hub cache folder. `None`: `HF_HUB_CACHE`, else `$HF_HOME/hub`, else
    /// `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`
    /// (hf-hub's resolution, shared with the Python `huggingface_hub`).
    pub cache_dir: Option<PathBuf>,
    /// Read the cache only, never the network.
    pub offline: bool,
    /// Branch, tag or 40-hex commit to read. `None`: `main`.
    pub revision: Option<String>,
}

impl HubOptions {
    /// The defaults, with `offline` set when the environment variable
    /// `HF_HUB_OFFLINE` is `1`, `true`, `yes` or `on` (the switch the Python
    /// client honours; hf-hub itself does not read it).
    pub fn from_env() -> Self {
        let offline = std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        });
        HubOptions {
            offline,
            ..HubOptions::default()
        }
    }
}

/// Where a dataset lives on the Hub and how its parquet files are laid out.
///
/// `train` and `test` are repository paths whose last component may hold one
/// `*` (`plain_text/train-*.parquet`); the matching files are read in name
/// order, so sharded splits (`train-00000-of-00002`, ...) are concatenated in
/// shard order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubDataset {
    /// Name given to the loaded [`Dataset`]s (`cifar10`, ...).
    pub name: String,
    /// Repository id, `owner/name`.
    pub repo: String,
    /// Pattern of the training files.
    pub train: String,
    /// Pattern of the test files.
    pub test: String,
    /// The image column: a struct whose `bytes` field holds a PNG or JPEG file.
    pub image_column: String,
    /// The integer label column.
    pub label_column: String,
    /// Channels of the decoded images (1: luminance, 3: RGB).
    pub channels: usize,
    /// Image height; every image must have it.
    pub height: usize,
    /// Image width; every image must have it.
    pub width: usize,
    /// Number of classes; every label must be below it.
    pub num_classes: usize,
}

impl HubDataset {
    /// The Hub source of `name` (see the module documentation), or `None` for
    /// the embedded `digits`.
    pub fn of(name: DatasetName) -> Option<HubDataset> {
        let (repo, dir, test_split, image, label) = match name {
            DatasetName::Digits => return None,
            DatasetName::Mnist => ("ylecun/mnist", "mnist", "test", "image", "label"),
            DatasetName::FashionMnist => (
                "zalando-datasets/fashion_mnist",
                "fashion_mnist",
                "test",
                "image",
                "label",
            ),
            DatasetName::Cifar10 => ("uoft-cs/cifar10", "plain_text", "test", "img", "label"),
            DatasetName::Cifar100 => ("uoft-cs/cifar100", "cifar100", "test", "img", "fine_label"),
            DatasetName::TinyImageNet => {
                ("zh-plus/tiny-imagenet", "data", "valid", "image", "label")
            }
        };
        let (channels, height, width) = name.image_shape();
        Some(HubDataset {
            name: name.as_str().to_string(),
            repo: repo.to_string(),
            train: format!("{dir}/train-*.parquet"),
            test: format!("{dir}/{test_split}-*.parquet"),
            image_column: image.to_string(),
            label_column: label.to_string(),
            channels,
            height,
            width,
            num_classes: name.num_classes(),
        })
    }

    /// CIFAR-100 with its 20 coarse labels (column `coarse_label`), named
    /// `cifar100-coarse`.
    pub fn cifar100_coarse() -> HubDataset {
        HubDataset {
            name: "cifar100-coarse".into(),
            repo: "uoft-cs/cifar100".into(),
            train: "cifar100/train-*.parquet".into(),
            test: "cifar100/test-*.parquet".into(),
            image_column: "img".into(),
            label_column: "coarse_label".into(),
            channels: 3,
            height: 32,
            width: 32,
            num_classes: 20,
        }
    }
}

/// Loads `name` from its Hugging Face Hub repository ([`HubDataset::of`]) through
/// the hf-hub cache: see [`load_hub_dataset`]. Fails with [`DataError::Invalid`]
/// for `digits`, which is embedded.
pub fn load_from_hub(name: DatasetName, options: &HubOptions) -> Result<Split> {
    let spec = HubDataset::of(name).ok_or_else(|| {
        DataError::Invalid(format!(
            "dataset '{name}' is embedded in the crate, not read from the Hub"
        ))
    })?;
    load_hub_dataset(&spec, options)
}

/// Loads the train and test files of `spec` from the Hub.
///
/// Online, the files matching the two patterns are fetched into the hf-hub
/// cache (a progress bar on stderr while bytes move; files already cached are
/// not downloaded again). If the Hub cannot be reached, or with
/// `options.offline`, the cached snapshot of the revision is used: the cache
/// must hold `datasets--<owner>--<name>/refs/<revision>` (unless the revision is
/// a commit) and the files under `snapshots/<commit>/`.
///
/// Fails with [`DataError::Hub`] for a client error (unknown repository or
/// revision, nothing cached offline), [`DataError::Io`] naming the expected
/// path when no file matches a pattern or a file cannot be opened, and with the
/// errors of [`load_parquet_files`] for a file that does not parse.
pub fn load_hub_dataset(spec: &HubDataset, options: &HubOptions) -> Result<Split> {
    let patterns = [spec.train.clone(), spec.test.clone()];
    for p in &patterns {
        split_pattern(p)?;
    }
    let mut builder = HFClient::builder();
    if let Some(dir) = &options.cache_dir {
        builder = builder.cache_dir(dir);
    }
    let client = builder.build().map_err(|e| {
        let cache = options.cache_dir.clone().unwrap_or_default();
        hub_error(spec, &cache, e)
    })?;
    // Resolved by hf-hub from the options and the environment; named in errors.
    let cache = client.cache_dir().to_path_buf();
    let client = HFClientSync::from_inner(client).map_err(|e| hub_error(spec, &cache, e))?;
    let (owner, name) = hf_hub::split_id(&spec.repo);
    let repo = client.dataset(owner, name);
    let revision = options.revision.clone().unwrap_or_else(|| "main".into());

    let cached = || {
        repo.snapshot_download()
            .revision(revision.clone())
            .local_files_only(true)
            .send()
    };
    let snapshot = if options.offline {
        cached().map_err(|_| DataError::HubNotCached {
            repo: spec.repo.clone(),
            revision: revision.clone(),
            cache: cache.clone(),
        })?
    } else {
        let online = repo
            .snapshot_download()
            .revision(revision.clone())
            .allow_patterns(patterns.to_vec())
            .progress(DownloadBar::new(&spec.repo))
            .send();
        match online {
            Ok(dir) => dir,
            // No connection: a complete cached snapshot is as good as the Hub.
            Err(e @ HFError::Request { .. }) => cached().map_err(|_| hub_error(spec, &cache, e))?,
            Err(e) => return Err(hub_error(spec, &cache, e)),
        }
    };
    // The snapshot folder is named after the commit the revision resolved to.
    let commit = snapshot
        .file_name()
        .and_then(|c| c.to_str())
        .unwrap_or(&revision)
        .to_string();
    let resolve = |pattern: &str| -> Result<Vec<PathBuf>> {
        matching_files(&snapshot, pattern)?
            .into_iter()
            .map(|file| {
                // Through hf-hub, so that a dangling or missing entry is reported
                // as the cache sees it.
                repo_file(&repo, &commit, &file).map_err(|e| hub_error(spec, &cache, e))
            })
            .collect()
    };
    let train_files = resolve(&spec.train)?;
    let test_files = resolve(&spec.test)?;
    let split = Split {
        train: load_parquet_files(spec, &train_files)?,
        test: load_parquet_files(spec, &test_files)?,
    };
    split.check_usable(&spec.repo)?;
    Ok(split)
}

/// Reads and concatenates parquet files in the layout of `spec` (image struct
/// column, integer label column), decoding the images in parallel to
/// `[C, H, W]` bytes ([`decode_chw`]); the result is named `spec.name`, with
/// `max_value = 255`.
///
/// Fails with [`DataError::Io`] for a file that cannot be opened,
/// [`DataError::Corrupt`] (naming the file and the row) for a file that is not
/// parquet, lacks a column, or holds an image that does not decode or has the
/// wrong size, and [`DataError::LabelOutOfRange`] for a label not below
/// `spec.num_classes`.
pub fn load_parquet_files(spec: &HubDataset, files: &[PathBuf]) -> Result<Dataset> {
    let dim = spec.channels * spec.height * spec.width;
    if dim == 0 {
        return Err(DataError::Invalid(format!(
            "Hub dataset {}: image shape {}x{}x{} is empty",
            spec.repo, spec.channels, spec.height, spec.width
        )));
    }
    let mut images = Vec::new();
    let mut labels = Vec::new();
    for path in files {
        let table = read_image_table(path, &spec.image_column, &spec.label_column)?;
        for (index, &label) in table.labels.iter().enumerate() {
            match u8::try_from(label) {
                Ok(l) if usize::from(l) < spec.num_classes => labels.push(l),
                Ok(l) => {
                    return Err(DataError::LabelOutOfRange {
                        path: path.clone(),
                        index,
                        label: l,
                        num_classes: spec.num_classes,
                    })
                }
                Err(_) => {
                    return Err(DataError::Corrupt {
                        path: path.clone(),
                        message: format!(
                            "row {index}: label {label} is not in 0..{}",
                            spec.num_classes
                        ),
                    })
                }
            }
        }
        let start = images.len();
        images.resize(start + table.images.len() * dim, 0);
        images[start..]
            .par_chunks_mut(dim)
            .zip(table.images.par_iter())
            .enumerate()
            .try_for_each(|(row, (slot, bytes))| {
                let chw =
                    decode_chw(bytes, spec.channels, spec.height, spec.width).map_err(|m| {
                        DataError::Corrupt {
                            path: path.clone(),
                            message: format!("row {row}: {m}"),
                        }
                    })?;
                slot.copy_from_slice(&chw);
                Ok::<(), DataError>(())
            })?;
    }
    Ok(Dataset {
        name: spec.name.clone(),
        images,
        labels,
        channels: spec.channels,
        height: spec.height,
        width: spec.width,
        num_classes: spec.num_classes,
        max_value: 255.0,
    })
}

/// The cached path of `file` at `commit`, looked up by hf-hub without network.
fn repo_file(
    repo: &HFRepositorySync<RepoTypeDataset>,
    commit: &str,
    file: &str,
) -> std::result::Result<PathBuf, HFError> {
    repo.download_file()
        .filename(file)
        .revision(commit)
        .local_files_only(true)
        .send()
}

/// `(folder, prefix, suffix)` of a pattern `folder/prefix*suffix` (or of a plain
/// path, with an empty suffix match).
fn split_pattern(pattern: &str) -> Result<(&str, &str, Option<&str>)> {
    let (dir, file) = pattern.rsplit_once('/').unwrap_or(("", pattern));
    if dir.contains('*') || file.matches('*').count() > 1 || file.is_empty() {
        return Err(DataError::Invalid(format!(
            "file pattern '{pattern}': only the last path component may hold one '*'"
        )));
    }
    Ok(match file.split_once('*') {
        Some((prefix, suffix)) => (dir, prefix, Some(suffix)),
        None => (dir, file, None),
    })
}

/// The repository paths under `snapshot` matching `pattern`, sorted.
fn matching_files(snapshot: &Path, pattern: &str) -> Result<Vec<String>> {
    let (dir, prefix, suffix) = split_pattern(pattern)?;
    let folder = snapshot.join(dir);
    let not_found = |message: String| DataError::Io {
        path: snapshot.join(pattern),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, message),
    };
    let entries = std::fs::read_dir(&folder)
        .map_err(|e| not_found(format!("no file matches in the cached snapshot ({e})")))?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|f| match suffix {
            Some(s) => f.len() >= prefix.len() + s.len() && f.starts_with(prefix) && f.ends_with(s),
            None => f == prefix,
        })
        .collect();
    if names.is_empty() {
        return Err(not_found("no file matches in the cached snapshot".into()));
    }
    names.sort();
    Ok(names
        .into_iter()
        .map(|f| {
            if dir.is_empty() {
                f
            } else {
                format!("{dir}/{f}")
            }
        })
        .collect())
}

fn hub_error(spec: &HubDataset, cache: &Path, source: HFError) -> DataError {
    DataError::Hub {
        repo: spec.repo.clone(),
        cache: cache.to_path_buf(),
        source: Box::new(source),
    }
}

/// A byte progress bar on stderr (hidden when stderr is not a terminal) fed by
/// hf-hub's download events: pass it to a download's `.progress(…)`.
pub struct DownloadBar {
    bar: ProgressBar,
    /// Bytes done per file (plain HTTP downloads) and of the running Xet batch.
    done: Mutex<(HashMap<String, u64>, u64)>,
}

impl DownloadBar {
    /// A bar labelled `label` (the repository, or the file).
    pub fn new(repo: &str) -> Self {
        let bar = ProgressBar::new(0);
        let style = ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style.progress_chars("=> "));
        bar.set_message(repo.to_string());
        DownloadBar {
            bar,
            done: Mutex::new((HashMap::new(), 0)),
        }
    }
}

impl ProgressHandler for DownloadBar {
    fn on_progress(&self, event: &ProgressEvent) {
        let ProgressEvent::Download(event) = event else {
            return;
        };
        // A poisoned lock only means an earlier callback panicked; the counts
        // are still usable for display.
        let mut done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            DownloadEvent::Start { total_bytes, .. } => self.bar.set_length(*total_bytes),
            DownloadEvent::Progress { files } => {
                for f in files {
                    let bytes = done.0.entry(f.filename.clone()).or_insert(0);
                    *bytes = (*bytes).max(f.bytes_completed);
                }
            }
            DownloadEvent::AggregateProgress {
                bytes_completed, ..
            } => done.1 = *bytes_completed,
            DownloadEvent::Complete => {
                self.bar.finish_and_clear();
                return;
            }
        }
        self.bar.set_position(done.0.values().sum::<u64>() + done.1);
    }
}
