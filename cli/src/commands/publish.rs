//! `kdprune publish`.

use std::path::PathBuf;

use anyhow::Result;
use candle_core::Device;
use clap::Args;
use kdprune_cli::publish::{publish as publish_to_hub, PublishOptions};
use kdprune_models::checkpoint::Encoding;

/// Flags of `kdprune publish`.
#[derive(Args, Debug)]
pub struct PublishArgs {
    /// A finished run folder (`kdprune run`: its `retrained_kd` model, with
    /// the report), a compress folder (`kdprune compress`: its retrained
    /// model, with the size and latency table) or a checkpoint file.
    pub source: PathBuf,
    /// The Hub repository, OWNER/NAME (created when missing).
    #[arg(long)]
    pub repo: String,
    /// Create the repository private.
    #[arg(long)]
    pub private: bool,
    /// Branch to commit to; it must exist [default: main].
    #[arg(long)]
    pub revision: Option<String>,
    /// The commit's message.
    #[arg(long)]
    pub commit_message: Option<String>,
    /// Encoding of model.safetensors: dense (PyTorch state_dict names, the
    /// default), sparse, int8, sparse-int8 or kdprune.
    #[arg(long, default_value = "dense", value_parser = parse_encoding)]
    pub format: Encoding,
    /// The model card's license.
    #[arg(long, default_value = "apache-2.0")]
    pub license: String,
    /// Write the folder that would be uploaded here, print its listing and
    /// upload nothing.
    #[arg(long, value_name = "DIR")]
    pub dry_run: Option<PathBuf>,
}

fn parse_encoding(s: &str) -> std::result::Result<Encoding, String> {
    s.parse()
}

/// Publishes and prints the files (and the commit).
pub fn publish(a: PublishArgs, device: &Device) -> Result<()> {
    let opts = PublishOptions {
        source: a.source,
        repo: a.repo,
        private: a.private,
        revision: a.revision,
        commit_message: a.commit_message,
        format: a.format,
        license: a.license,
        dry_run: a.dry_run,
    };
    let done = publish_to_hub(&opts, device)?;
    for (f, bytes) in &done.files {
        println!("{bytes:>12}  {f}");
    }
    match (&opts.dry_run, &done.commit) {
        (Some(dir), _) => println!("dry run: written to {}, nothing uploaded", dir.display()),
        (None, Some(c)) => println!("published to {} in one commit: {c}", opts.repo),
        (None, None) => println!("published to {} in one commit", opts.repo),
    }
    Ok(())
}
