//! The device a command runs on, from its name.

use anyhow::{Context, Result};
use candle_core::Device;

/// Parses `cpu`, `cuda`, `cuda:N` or `metal` into a device.
pub fn parse_device(spec: &str) -> Result<Device> {
    let spec = spec.trim().to_ascii_lowercase();
    let device = match spec.as_str() {
        "cpu" => Device::Cpu,
        "metal" => Device::new_metal(0)
            .context("cannot open the Metal device (build with `--features metal` on macOS)")?,
        _ => {
            let ordinal = match spec.strip_prefix("cuda") {
                Some("") => 0,
                Some(rest) => rest
                    .strip_prefix(':')
                    .and_then(|n| n.parse::<usize>().ok())
                    .with_context(|| format!("bad device `{spec}`: expected cuda or cuda:N"))?,
                None => {
                    anyhow::bail!("unknown device `{spec}`: expected cpu, cuda, cuda:N or metal")
                }
            };
            Device::new_cuda(ordinal).with_context(|| {
                format!("cannot open CUDA device {ordinal} (build with `--features cuda` on a machine with an NVIDIA GPU)")
            })?
        }
    };
    Ok(device)
}
