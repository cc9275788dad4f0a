//! Mutation fuzzing of kdprune's parsers on stable Rust.
//!
//! `cargo fuzz` (libFuzzer) needs a nightly toolchain, which this project
//! does not build with; `bolero` and `afl` need their own drivers or
//! instrumentation. This crate is the stable alternative the project
//! needs: a seeded mutation loop (bit flips, interesting integers written
//! little- and big-endian, ASCII digit runs, truncation, deletion,
//! duplication, splicing of two seeds) over valid seed files built in
//! code, each mutant written to a file and handed to the real parser, every
//! panic caught and its input kept. It finds what the parsers do with
//! hostile bytes, not coverage-guided paths; the seeds carry the formats'
//! structure.
//!
//! The targets: IDX images and labels (raw and gzipped), CIFAR binary
//! batches (CIFAR-10 and CIFAR-100 records), Hub parquet tables, kdprune
//! checkpoints in every encoding (native, dense, sparse-bitmask, INT8,
//! sparse INT8) including turning one into a model, TOML run, sweep and
//! compress configs, and loss specifications with feature pairs.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

// The writers of the published formats the data crate's tests use.
#[path = "../../data/tests/common/mod.rs"]
mod data_fixtures;

/// One parser under test: valid seed inputs and the call that parses a file.
pub struct Target {
    /// Short name (`idx`, `checkpoint`, …).
    pub name: &'static str,
    /// File name the mutant is written to (some parsers look at it).
    pub file_name: &'static str,
    /// Valid inputs the mutations start from.
    pub seeds: Vec<Vec<u8>>,
    /// Parses the file; `true` when it was accepted.
    pub run: fn(&Path) -> bool,
}

/// What a fuzzing run of one target found.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// The target's name.
    pub name: &'static str,
    /// Inputs tried.
    pub executions: u64,
    /// Of which the parser accepted.
    pub accepted: u64,
    /// Inputs that made the parser panic, saved under the findings folder.
    pub panics: Vec<PathBuf>,
    /// Wall time.
    pub seconds: f64,
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).expect("in memory");
    e.finish().expect("in memory")
}

fn idx_images(n: u32, h: u32, w: u32) -> Vec<u8> {
    let mut b = [0x803u32, n, h, w].map(u32::to_be_bytes).concat();
    b.extend(data_fixtures::pseudo_bytes(7, (n * h * w) as usize));
    b
}

fn idx_labels(n: u32) -> Vec<u8> {
    let mut b = [0x801u32, n].map(u32::to_be_bytes).concat();
    b.extend((0..n).map(|i| (i % 10) as u8));
    b
}

fn read_file(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_default()
}

/// Checkpoints of a small MLP and a small CNN in every encoding (pruned to
/// 60 % so that the sparse encodings have zeros to skip).
fn checkpoint_seeds(dir: &Path) -> anyhow::Result<Vec<Vec<u8>>> {
    use kdprune_models::checkpoint::{self, Checkpoint, Encoding};
    use kdprune_models::{Model, ModelConfig};
    let mut seeds = Vec::new();
    for (name, input) in [("mlp-8", (1, 4, 4)), ("lenet5", (1, 8, 8))] {
        let config = ModelConfig::from_name(name, input, 3)?;
        let model = Model::new(config, 0, &Device::Cpu)?;
        let mut masks = std::collections::BTreeMap::new();
        let mut ckpt = Checkpoint::from_model(&model, Default::default(), Default::default())?;
        for (n, t) in ckpt.tensors.clone() {
            if n.ends_with("weight") && t.rank() >= 2 {
                let keep = t.abs()?.ge(0.6
                    * t.abs()?
                        .max_keepdim(t.rank() - 1)?
                        .max_all()?
                        .to_scalar::<f32>()? as f64)?;
                let keep = keep.to_dtype(candle_core::DType::U8)?;
                ckpt.tensors
                    .insert(n.clone(), t.mul(&keep.to_dtype(t.dtype())?)?);
                masks.insert(n, keep);
            }
        }
        ckpt.masks = masks;
        for encoding in [
            Encoding::Native,
            Encoding::Dense,
            Encoding::Sparse,
            Encoding::Int8,
            Encoding::SparseInt8,
        ] {
            let path = dir.join(format!("{name}-{encoding}.safetensors"));
            checkpoint::save_as(&path, &ckpt, encoding)?;
            seeds.push(read_file(&path));
        }
    }
    Ok(seeds)
}

/// The targets with their seeds (files built in `dir`).
pub fn targets(dir: &Path) -> anyhow::Result<Vec<Target>> {
    use kdprune_data::cifar::{read_cifar_bin, CifarKind};
    let cifar10: Vec<u8> = (0..3u8)
        .flat_map(|k| {
            data_fixtures::cifar10_record(k, &data_fixtures::pseudo_bytes(k as u32, 3072))
        })
        .collect();
    let cifar100: Vec<u8> = (0..2u8)
        .flat_map(|k| {
            data_fixtures::cifar100_record(k, 50 + k, &data_fixtures::pseudo_bytes(9, 3072))
        })
        .collect();
    let parquet_path = dir.join("seed.parquet");
    let images: Vec<Vec<u8>> = (0..3u32)
        .map(|k| data_fixtures::png_gray(&data_fixtures::pseudo_bytes(k, 16), 4, 4))
        .collect();
    data_fixtures::write_hub_parquet(&parquet_path, "image", &images, &[("label", vec![0, 1, 2])]);
    let configs: Vec<Vec<u8>> = [
        "dataset = \"digits\"\nseed = 1\nsparsity = 0.5\nteacher_model = \"mlp-64\"\nkd_epochs = 2\n",
        include_str!("../../configs/compress.toml"),
        include_str!("../../configs/sweeps/fashion-mnist.toml"),
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    let specs: Vec<Vec<u8>> = [
        "ce:0.1,kd:0.9",
        "kd+at:1000",
        "ca-kld:1,fitnet:0.5|s.fc1=t.fc2",
        "dkd:1,rkd:25|s.conv2=t.conv2,s.fc1=t.fc1",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    Ok(vec![
        Target {
            name: "idx",
            file_name: "train-images-idx3-ubyte",
            seeds: vec![
                idx_images(3, 4, 5),
                gz(&idx_images(2, 6, 6)),
                idx_labels(7),
                gz(&idx_labels(4)),
            ],
            run: |p| {
                let a = kdprune_data::read_idx_images(p).is_ok();
                let b = kdprune_data::read_idx_labels(p).is_ok();
                a || b
            },
        },
        Target {
            name: "cifar",
            file_name: "data_batch_1.bin",
            seeds: vec![cifar10, cifar100],
            run: |p| {
                let a = read_cifar_bin(p, CifarKind::Cifar10).is_ok();
                let b = read_cifar_bin(p, CifarKind::Cifar100).is_ok();
                a || b
            },
        },
        Target {
            name: "parquet",
            file_name: "train.parquet",
            seeds: vec![read_file(&parquet_path)],
            run: |p| {
                kdprune_data::read_image_table(p, "image", "label")
                    .map(|t| {
                        // decode what the loader would decode
                        t.images
                            .iter()
                            .all(|b| kdprune_data::decode_chw(b, 1, 4, 4).is_ok())
                    })
                    .unwrap_or(false)
            },
        },
        Target {
            name: "checkpoint",
            file_name: "model.safetensors",
            seeds: checkpoint_seeds(dir)?,
            run: |p| match kdprune_models::checkpoint::load(p, &Device::Cpu) {
                Ok(ckpt) => ckpt.to_model(&Device::Cpu).is_ok(),
                Err(_) => false,
            },
        },
        Target {
            name: "toml",
            file_name: "config.toml",
            seeds: configs,
            run: |p| {
                let run = kdprune_cli::method::RunConfig::from_toml_file(p).is_ok();
                let sweep = kdprune_cli::sweep::SweepConfig::from_toml_file(p)
                    .map(|c| c.validate().is_ok())
                    .unwrap_or(false);
                let compress = kdprune_cli::settings::from_toml_file::<
                    kdprune_cli::compress::CompressConfig,
                >(p, "compress configuration")
                .is_ok();
                run || sweep || compress
            },
        },
        Target {
            name: "loss-spec",
            file_name: "spec.txt",
            seeds: specs,
            run: |p| {
                let text = String::from_utf8_lossy(&read_file(p)).into_owned();
                let (spec, pairs) = text.split_once('|').unwrap_or((&text, ""));
                let ok = kd_core::Objective::parse(spec, &kd_core::TermParams::default()).is_ok();
                ok || kd_core::objective::parse_feature_pairs(pairs).is_ok()
            },
        },
    ])
}

const U32S: [u32; 12] = [
    0,
    1,
    2,
    0x7f,
    0x80,
    0xff,
    0x100,
    0xffff,
    0x10000,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
];
const U64S: [u64; 6] = [0, 1 << 32, 1 << 40, 1 << 60, i64::MAX as u64, u64::MAX];

/// Applies one to four random mutations to `data`.
pub fn mutate(rng: &mut ChaCha8Rng, data: &mut Vec<u8>, seeds: &[Vec<u8>]) {
    for _ in 0..rng.random_range(1..=4) {
        let len = data.len();
        let at = |rng: &mut ChaCha8Rng| {
            if len == 0 {
                0
            } else {
                rng.random_range(0..len)
            }
        };
        match rng.random_range(0..10) {
            0 if len > 0 => {
                let i = at(rng);
                data[i] ^= 1 << rng.random_range(0..8);
            }
            1 if len > 0 => {
                let i = at(rng);
                data[i] = [0u8, 0x7f, 0x80, 0xff, b'9', b'-', b'.'][rng.random_range(0..7)];
            }
            2 | 3 if len >= 4 => {
                let i = rng.random_range(0..=len - 4);
                let v = U32S[rng.random_range(0..U32S.len())];
                let b = if rng.random_bool(0.5) {
                    v.to_le_bytes()
                } else {
                    v.to_be_bytes()
                };
                data[i..i + 4].copy_from_slice(&b);
            }
            4 if len >= 8 => {
                let i = rng.random_range(0..=len - 8);
                let v = U64S[rng.random_range(0..U64S.len())];
                data[i..i + 8].copy_from_slice(&v.to_le_bytes());
            }
            5 if len > 0 => data.truncate(at(rng)),
            6 if len > 1 => {
                let i = at(rng);
                let n = rng.random_range(1..=(len - i).min(64));
                data.drain(i..i + n);
            }
            7 if len > 1 => {
                let i = at(rng);
                let n = rng.random_range(1..=(len - i).min(64));
                let chunk = data[i..i + n].to_vec();
                let j = at(rng);
                data.splice(j..j, chunk);
            }
            8 => {
                let digits: Vec<u8> = (0..rng.random_range(1..20))
                    .map(|_| b'0' + rng.random_range(0..10))
                    .collect();
                let j = at(rng);
                data.splice(j..j, digits);
            }
            _ => {
                let other = &seeds[rng.random_range(0..seeds.len())];
                if !other.is_empty() {
                    let cut = at(rng);
                    let from = rng.random_range(0..other.len());
                    data.truncate(cut);
                    data.extend_from_slice(&other[from..]);
                }
            }
        }
    }
}

/// Runs `executions` mutants of `target`'s seeds (stream `seed`), each
/// written to `work/FILE`; a panicking input is saved to `findings`. The
/// panic hook is silenced meanwhile.
pub fn fuzz(
    target: &Target,
    executions: u64,
    seed: u64,
    work: &Path,
    findings: &Path,
) -> anyhow::Result<Stats> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let file = work.join(target.file_name);
    let mut stats = Stats {
        name: target.name,
        ..Stats::default()
    };
    let start = Instant::now();
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = (|| -> anyhow::Result<()> {
        for i in 0..executions {
            let mut data = target.seeds[rng.random_range(0..target.seeds.len())].clone();
            if i >= target.seeds.len() as u64 {
                mutate(&mut rng, &mut data, &target.seeds);
            }
            std::fs::write(&file, &data)?;
            match catch_unwind(AssertUnwindSafe(|| (target.run)(&file))) {
                Ok(true) => stats.accepted += 1,
                Ok(false) => {}
                Err(_) => {
                    std::fs::create_dir_all(findings)?;
                    let kept = findings.join(format!("{}-{seed}-{i}.bin", target.name));
                    std::fs::write(&kept, &data)?;
                    stats.panics.push(kept);
                }
            }
            stats.executions += 1;
        }
        Ok(())
    })();
    std::panic::set_hook(hook);
    result?;
    stats.seconds = start.elapsed().as_secs_f64();
    Ok(stats)
}

/// Caps the process's address space at `bytes` (Linux), so that an
/// allocation sized by a crafted input fails instead of exhausting the
/// machine: the run then aborts, which the script reports.
pub fn limit_memory(bytes: u64) {
    #[cfg(target_os = "linux")]
    unsafe {
        let limit = libc::rlimit {
            rlim_cur: bytes as libc::rlim_t,
            rlim_max: bytes as libc::rlim_t,
        };
        libc::setrlimit(libc::RLIMIT_AS, &limit);
    }
}
