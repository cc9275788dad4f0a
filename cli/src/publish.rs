//! `kdprune publish`: a run folder or a checkpoint, with a model card, to a
//! Hugging Face Hub model repository in one commit.
//!
//! The files are assembled first in a staging folder — `README.md` (the
//! model card: YAML front matter the Hub reads, then what the model is, how
//! it was made, its results and how to load it), `config.json` (the model's
//! architecture), `model.safetensors` in the chosen encoding, and for a run
//! folder `report.json` and `kdprune-config.toml` — then uploaded with one
//! `create_commit`. `--dry-run` keeps the folder (written to a temporary
//! name and renamed) and uploads nothing.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::Device;
use hf_hub::repository::CommitOperation;
use hf_hub::RepoTypeModel;
use kdprune_data::HubDataset;
use kdprune_models::checkpoint::Encoding;

use crate::hub::{check_repo_id, client, describe};
use crate::jobs::{export_checkpoint, Calibration, DataSpec};
use crate::method::Report;

/// What `kdprune publish` does.
#[derive(Clone, Debug)]
pub struct PublishOptions {
    /// A run folder or a checkpoint file.
    pub source: PathBuf,
    /// `OWNER/NAME` on the Hub.
    pub repo: String,
    /// Create the repository private.
    pub private: bool,
    /// Branch to commit to (`main` when absent; it must exist).
    pub revision: Option<String>,
    /// The commit's message (a default names the source).
    pub commit_message: Option<String>,
    /// Encoding of `model.safetensors`.
    pub format: Encoding,
    /// The card's `license`.
    pub license: String,
    /// Assemble into this folder and upload nothing.
    pub dry_run: Option<PathBuf>,
}

/// What was assembled (and uploaded).
#[derive(Clone, Debug)]
pub struct Published {
    /// Repository paths and sizes, sorted.
    pub files: Vec<(String, u64)>,
    /// The commit's URL (or id) when uploaded.
    pub commit: Option<String>,
}

/// The model a source folder or file holds, and what is known of it.
struct Source {
    checkpoint: PathBuf,
    report: Option<(PathBuf, Report)>,
    config_toml: Option<PathBuf>,
    /// A compress folder's `compare.json` and `compare.md`.
    compare: Option<(PathBuf, String)>,
    /// For a folder of runs that differ only in the seed: the seeds and the
    /// Markdown of their mean ± std table.
    seeds: Option<(Vec<u64>, String)>,
}

/// The checkpoint a run folder publishes: the method's model, retrained
/// under the mask with KD.
const RUN_MODEL: &str = "retrained_kd.safetensors";

/// The checkpoint a compress folder publishes: the pruned student retrained
/// under its mask (the encodings are made from it by `--format`).
const COMPRESS_MODEL: &str = "retrained.safetensors";

fn find_source(path: &Path) -> Result<Source> {
    if path.is_file() {
        return Ok(Source {
            checkpoint: path.to_path_buf(),
            report: None,
            config_toml: None,
            compare: None,
            seeds: None,
        });
    }
    if !path.is_dir() {
        bail!("{} does not exist", path.display());
    }
    if path.join("recipe.toml").exists() || path.join("cells").is_dir() {
        bail!(
            "{} is a sweep folder, whose cells keep no checkpoints; publish a run folder, a folder of run folders (one per seed) or a checkpoint",
            path.display()
        );
    }
    let compare = path.join("compare.json");
    if compare.is_file() {
        // a compress folder: its retrained model, with the size and latency table
        let checkpoint = path.join(COMPRESS_MODEL);
        if !checkpoint.is_file() {
            bail!("{} has no {COMPRESS_MODEL}", path.display());
        }
        let md = std::fs::read_to_string(path.join("compare.md"))
            .with_context(|| format!("{} has compare.json but no compare.md", path.display()))?;
        return Ok(Source {
            checkpoint,
            report: None,
            config_toml: None,
            compare: Some((compare, md)),
            seeds: None,
        });
    }
    let report_path = path.join("report.json");
    if !report_path.exists() {
        if let Some(src) = seeds_folder(path)? {
            return Ok(src);
        }
    }
    let text = std::fs::read_to_string(&report_path).with_context(|| {
        format!(
            "{} holds no report.json: give a finished run folder (kdprune run) or a checkpoint file",
            path.display()
        )
    })?;
    let report: Report = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a run report", report_path.display()))?;
    let checkpoint = path.join(RUN_MODEL);
    if !checkpoint.is_file() {
        bail!("{} has no {RUN_MODEL}", path.display());
    }
    Ok(Source {
        checkpoint,
        report: Some((report_path, report)),
        config_toml: Some(path.join("config.toml")).filter(|p| p.is_file()),
        compare: None,
        seeds: None,
    })
}

/// A folder whose sub-folders are finished run folders of the same
/// settings but the seed: the lowest seed's model is published, with the
/// mean ± std over the seeds. `None` when no sub-folder holds a report.
fn seeds_folder(path: &Path) -> Result<Option<Source>> {
    let mut runs = Vec::new();
    for e in std::fs::read_dir(path)? {
        let dir = e?.path();
        if dir.join("report.json").is_file() {
            runs.push(dir);
        }
    }
    if runs.is_empty() {
        return Ok(None);
    }
    runs.sort();
    let mut first: Option<(u64, Source)> = None;
    let mut seeds = Vec::new();
    let mut settings: Option<serde_json::Value> = None;
    for run in &runs {
        let src = find_source(run)?;
        let Some((_, report)) = &src.report else {
            bail!("{} is not a run folder", run.display());
        };
        // the settings without seed and output folder must agree
        let mut v = serde_json::to_value(&report.config)?;
        if let Some(o) = v.as_object_mut() {
            o.remove("seed");
            o.remove("out");
        }
        match &settings {
            None => settings = Some(v),
            Some(s) if *s != v => bail!(
                "{} holds runs of different settings ({} differs from {}); publish one run folder",
                path.display(),
                run.display(),
                runs[0].display()
            ),
            Some(_) => {}
        }
        let seed = report.config.seed;
        if seeds.contains(&seed) {
            bail!("{} holds seed {seed} twice", path.display());
        }
        seeds.push(seed);
        if first.as_ref().is_none_or(|(s, _)| seed < *s) {
            first = Some((seed, src));
        }
    }
    seeds.sort_unstable();
    let reports: Vec<PathBuf> = runs.iter().map(|r| r.join("report.json")).collect();
    let options = crate::summary::SummaryOptions {
        per_seed: true,
        paired: None,
    };
    let table = crate::summary::summarize(&reports, &options)?.markdown;
    let (_, mut src) = first.expect("at least one run");
    src.seeds = Some((seeds, table));
    Ok(Some(src))
}

/// Assembles the repository's files into `dir` (created; must not exist).
fn assemble(opts: &PublishOptions, src: &Source, dir: &Path, device: &Device) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let calibration = Calibration {
        batches: 0,
        data: DataSpec::default(),
    };
    let exported = export_checkpoint(
        &src.checkpoint,
        opts.format,
        &dir.join("model.safetensors"),
        &calibration,
        device,
    )?;
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&exported.config)? + "\n",
    )?;
    if let Some((path, _)) = &src.report {
        std::fs::copy(path, dir.join("report.json"))?;
    }
    if let Some(path) = &src.config_toml {
        std::fs::copy(path, dir.join("kdprune-config.toml"))?;
    }
    if let Some((path, _)) = &src.compare {
        std::fs::copy(path, dir.join("compare.json"))?;
    }
    let card = model_card(
        opts,
        src,
        &exported.metadata,
        &exported.config.to_string(),
        dir,
    )?;
    std::fs::write(dir.join("README.md"), card)?;
    Ok(())
}

fn yaml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// The Hub repository a checkpoint path came from: a `hub:` reference, or a
/// file of the hf-hub cache (`…/models--OWNER--NAME/snapshots/COMMIT/FILE`,
/// what `hub:` references are resolved to).
fn hub_repo_of(path: &Path) -> Option<String> {
    if let Some(r) = path
        .to_str()
        .and_then(|t| crate::hub::HubRef::parse(t).ok().flatten())
    {
        return Some(r.repo);
    }
    let parts: Vec<&str> = path.iter().filter_map(|c| c.to_str()).collect();
    parts.windows(2).find_map(|w| {
        let repo = w[0].strip_prefix("models--")?;
        (w[1] == "snapshots").then(|| repo.replacen("--", "/", 1))
    })
}

/// The model card: front matter, then prose and tables.
fn model_card(
    opts: &PublishOptions,
    src: &Source,
    metadata: &std::collections::BTreeMap<String, String>,
    architecture: &str,
    dir: &Path,
) -> Result<String> {
    let name = opts.repo.rsplit('/').next().unwrap_or(&opts.repo);
    let dataset = src
        .report
        .as_ref()
        .map(|(_, r)| r.dataset.name.clone())
        .or_else(|| metadata.get("dataset").cloned())
        .unwrap_or_else(|| "unknown".into());
    let hub_dataset = dataset
        .parse()
        .ok()
        .and_then(HubDataset::of)
        .map(|d| d.repo);
    let final_stage = src.report.as_ref().and_then(|(_, r)| {
        r.stages
            .iter()
            .find(|s| format!("{}.safetensors", s.name) == RUN_MODEL)
            .cloned()
    });
    let base_model = src.report.as_ref().and_then(|(_, r)| {
        r.config
            .teacher_checkpoint
            .as_ref()
            .and_then(|p| hub_repo_of(p))
    });
    let mut y = String::from("---\nlibrary_name: kdprune\n");
    y += &format!("license: {}\n", yaml_str(&opts.license));
    y += "tags:\n- kdprune\n- pruning\n- knowledge-distillation\n- sparsity\n- safetensors\n";
    if let Some(d) = &hub_dataset {
        y += &format!("datasets:\n- {}\n", yaml_str(d));
    }
    if let Some(b) = &base_model {
        y += &format!("base_model: {}\n", yaml_str(b));
    }
    if let Some(st) = &final_stage {
        y += &format!(
            "model-index:\n- name: {}\n  results:\n  - task:\n      type: image-classification\n    dataset:\n      name: {}\n      type: {}\n    metrics:\n    - type: accuracy\n      value: {}\n    - type: sparsity\n      value: {}\n",
            yaml_str(name),
            yaml_str(&dataset),
            yaml_str(hub_dataset.as_deref().unwrap_or(&dataset)),
            st.accuracy,
            st.sparsity
        );
    }
    y += "---\n\n";
    y += &format!("# {name}\n\n");
    y += &format!(
        "A `{architecture}` image classifier for `{dataset}`, made with kdprune \
         (knowledge distillation and pruning in Rust on Candle).\n\n"
    );
    if let Some((_, r)) = &src.report {
        let c = &r.config;
        y += &format!(
            "## How it was made\n\n`kdprune run`: a `{}` teacher and a dense `{}` student trained on \
             `{dataset}`, the student fine-tuned under the frozen teacher ({} loss), every weight \
             scored with the teacher-guided importance |θ ⊙ ∂L/∂θ|, {:.0} % of the prunable weights \
             removed in one shot under one global threshold, and the student retrained under the \
             fixed mask with distillation (seed {}). The model here is that last stage.\n\n\
             Regenerate it with the configuration in this repository:\n\n\
             ```bash\nkdprune run --config kdprune-config.toml\n```\n\n",
            c.settings.teacher_model,
            c.settings.student_model,
            c.settings.kd_loss,
            100.0 * c.sparsity,
            c.seed
        );
        match &src.seeds {
            Some((seeds, table)) => {
                let list = seeds
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(", ");
                y += &format!(
                    "## Results\n\nTest accuracy (%) of every stage over seeds {list}, mean ± sample std \
                     (the model here is seed {}'s; its own figures are in `report.json`):\n\n",
                    c.seed
                );
                y += table;
                y += "\n";
            }
            None => {
                y += "## Results\n\nTest accuracy of every stage of the run (one seed), from `report.json`:\n\n";
                y += &r.table();
                y += "\n";
            }
        }
    } else if src.compare.is_some() {
        y += "## How it was made\n\n`kdprune compress`: a teacher, a student distilled from it, \
              pruned in one shot and retrained under the fixed mask; the model here is the \
              retrained student.\n\n";
    } else {
        y += "## How it was made\n\nPublished from a single checkpoint";
        if let Some(stage) = metadata.get("stage") {
            y += &format!(" (stage `{stage}`)");
        }
        y += "; its metadata is kept in `model.safetensors`.\n\n";
    }
    if let Some((_, md)) = &src.compare {
        y += "## Size and latency\n\nFrom the `kdprune compress` run that made it (`compare.json`): \
              the teacher, the dense student, the retrained pruned student and its encodings.\n\n";
        y += md;
        y += "\n";
    }
    let size = |f: &str| std::fs::metadata(dir.join(f)).map(|m| m.len()).unwrap_or(0);
    y += &format!(
        "## Files\n\n| file | bytes |\n|---|---:|\n| `model.safetensors` ({}) | {} |\n| `config.json` | {} |\n\n",
        opts.format,
        size("model.safetensors"),
        size("config.json")
    );
    // the data the model was trained on (digits is the default)
    let data = match dataset.as_str() {
        "digits" | "unknown" => String::new(),
        d => format!(" --dataset {d} --data-dir DIR"),
    };
    y += &format!(
        "## Use it\n\nFrom Rust, with the kdprune CLI (the file is fetched through the Hugging Face cache):\n\n\
         ```bash\nkdprune eval hub:{repo}{data}\nkdprune train --teacher hub:{repo}{data} --model lenet-300-100 --loss kd --out student.safetensors\n```\n\n\
         From Python, the weights are plain safetensors{}:\n\n\
         ```python\nfrom huggingface_hub import hf_hub_download\nfrom safetensors.torch import load_file\n\
         state_dict = load_file(hf_hub_download(\"{repo}\", \"model.safetensors\"))\n```\n",
        if opts.format == Encoding::Dense {
            " under PyTorch `state_dict` names"
        } else {
            " in compressed-tensors' layout (`config.json` of compressed-tensors is in the file's metadata)"
        },
        repo = opts.repo
    );
    Ok(y)
}

/// The files of `dir`, as repository paths with sizes, sorted.
fn listing(dir: &Path) -> Result<Vec<(String, u64)>> {
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_file() {
            files.push((
                e.file_name().to_string_lossy().into_owned(),
                e.metadata()?.len(),
            ));
        }
    }
    files.sort();
    Ok(files)
}

/// Assembles and uploads (or, with `dry_run`, writes) the repository.
pub fn publish(opts: &PublishOptions, device: &Device) -> Result<Published> {
    check_repo_id(&opts.repo)?;
    let src = find_source(&opts.source)?;
    // staged beside the dry run's folder (renamed into place at the end),
    // else in the temporary folder; removed on any error
    let staging = match &opts.dry_run {
        Some(out) => {
            if out.exists() {
                bail!("{} exists; --dry-run writes a new folder", out.display());
            }
            let parent = out
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            std::fs::create_dir_all(parent)?;
            tempfile::Builder::new()
                .prefix(".kdprune-publish-")
                .tempdir_in(parent)?
        }
        None => tempfile::Builder::new()
            .prefix("kdprune-publish-")
            .tempdir()?,
    };
    let dir = staging.path().join("repo");
    assemble(opts, &src, &dir, device)?;
    let files = listing(&dir)?;
    if let Some(out) = &opts.dry_run {
        std::fs::rename(&dir, out)
            .with_context(|| format!("cannot move the folder to {}", out.display()))?;
        return Ok(Published {
            files,
            commit: None,
        });
    }
    let (client, _) = client()?;
    client
        .create_repository()
        .repo_id(&opts.repo)
        .repo_type(RepoTypeModel)
        .private(opts.private)
        .exist_ok(true)
        .send()
        .map_err(|e| anyhow::anyhow!("cannot create {}: {}", opts.repo, describe(&e)))?;
    let (owner, name) = hf_hub::split_id(&opts.repo);
    let operations = files
        .iter()
        .map(|(f, _)| CommitOperation::add_file(f.clone(), dir.join(f)))
        .collect::<Vec<_>>();
    let message = opts.commit_message.clone().unwrap_or_else(|| {
        format!(
            "Upload {} with kdprune publish",
            opts.source
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        )
    });
    let revision = opts.revision.clone().unwrap_or_else(|| "main".into());
    let info = client
        .model(owner, name)
        .create_commit()
        .operations(operations)
        .commit_message(message)
        .revision(revision.clone())
        .send()
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot commit to {}@{revision}: {} (the commit was not confirmed; run the command again)",
                opts.repo,
                describe(&e)
            )
        })?;
    Ok(Published {
        files,
        commit: info.commit_url.or(info.commit_oid),
    })
}
