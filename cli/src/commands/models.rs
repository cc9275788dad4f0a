//! `kdprune models`: the architectures with their parameter and MAC counts.

use anyhow::Result;
use clap::Args;
use kdprune_data::DatasetName;
use kdprune_models::{ModelConfig, ZooArch};

/// Flags of `kdprune models`.
#[derive(Args, Debug)]
pub struct ModelsArgs {
    /// Count for this dataset's input shape and class count.
    #[arg(long, default_value = "cifar10")]
    pub dataset: String,
}

/// Millions with two decimals, e.g. `0.27 M`.
fn millions(n: f64) -> String {
    format!("{:.2} M", n / 1e6)
}

pub fn run(a: ModelsArgs) -> Result<()> {
    let dataset: DatasetName = a.dataset.parse()?;
    let input = dataset.image_shape();
    let classes = dataset.num_classes();
    println!(
        "models for {dataset} (input {}x{}x{}, {classes} classes); MACs of one forward pass",
        input.0, input.1, input.2
    );
    println!(
        "{:<14} {:>12} {:>12}  description",
        "name", "params", "MACs"
    );
    let mut names: Vec<(String, &str)> = vec![
        ("lenet-300-100".into(), "MLP 300-100 (LeCun et al. 1998)"),
        (
            "mlp-1200-1200".into(),
            "MLP 1200-1200 (Hinton et al. 2015's teacher)",
        ),
        ("lenet5".into(), "LeNet-5, ReLU and max-pool"),
        ("lenet5-x4".into(), "LeNet-5 with 4x widths"),
    ];
    names.extend(
        ZooArch::ALL
            .iter()
            .map(|a| (a.name().to_string(), a.description())),
    );
    for (name, description) in names {
        match ModelConfig::from_name(&name, input, classes) {
            Ok(cfg) => println!(
                "{name:<14} {:>12} {:>12}  {description}",
                millions(cfg.num_params() as f64),
                millions(cfg.macs() as f64)
            ),
            Err(e) => println!("{name:<14} {:>12} {:>12}  ({e})", "-", "-"),
        }
    }
    Ok(())
}
