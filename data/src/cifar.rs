//! CIFAR-10 and CIFAR-100 in the official binary layout.
//!
//! A record is one label byte (CIFAR-100: the coarse label, then the fine one)
//! followed by 3072 pixel bytes: the 32x32 red plane, then green, then blue,
//! each row-major. That is already `[C, H, W]`, so records are copied as they are.

use std::path::Path;

use crate::dataset::{Dataset, Split};
use crate::error::{DataError, Result};

/// Side of a CIFAR image (images are 3x32x32).
pub const CIFAR_SIDE: usize = 32;
/// Pixel bytes of one CIFAR record: `3 * 32 * 32`.
pub const CIFAR_IMAGE_BYTES: usize = 3 * CIFAR_SIDE * CIFAR_SIDE;
/// The CIFAR-10 training files, in the order their samples are concatenated.
pub const CIFAR10_TRAIN_FILES: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];
/// The CIFAR-10 test file.
pub const CIFAR10_TEST_FILE: &str = "test_batch.bin";
/// The CIFAR-100 training file.
pub const CIFAR100_TRAIN_FILE: &str = "train.bin";
/// The CIFAR-100 test file.
pub const CIFAR100_TEST_FILE: &str = "test.bin";

/// Which of the two binary layouts a file has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CifarKind {
    /// 1 label byte (0..10) + 3072 pixel bytes per record.
    Cifar10,
    /// 1 coarse label byte (0..20) + 1 fine label byte (0..100) + 3072 pixel bytes.
    Cifar100,
}

impl CifarKind {
    /// Bytes per record: 3073 for CIFAR-10, 3074 for CIFAR-100.
    pub fn record_bytes(self) -> usize {
        self.label_bytes() + CIFAR_IMAGE_BYTES
    }

    fn label_bytes(self) -> usize {
        match self {
            CifarKind::Cifar10 => 1,
            CifarKind::Cifar100 => 2,
        }
    }
}

/// Which CIFAR-100 label a [`Dataset`] carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Cifar100Labels {
    /// The 100 classes (dataset name `cifar100`).
    #[default]
    Fine,
    /// The 20 superclasses (dataset name `cifar100-coarse`).
    Coarse,
}

impl Cifar100Labels {
    /// Number of classes: 100 fine, 20 coarse.
    pub fn num_classes(self) -> usize {
        match self {
            Cifar100Labels::Fine => 100,
            Cifar100Labels::Coarse => 20,
        }
    }

    /// The dataset name: `cifar100` or `cifar100-coarse`.
    pub fn dataset_name(self) -> &'static str {
        match self {
            Cifar100Labels::Fine => "cifar100",
            Cifar100Labels::Coarse => "cifar100-coarse",
        }
    }
}

/// The records of one binary CIFAR file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CifarRecords {
    /// `n * 3072` pixels, each record `[3, 32, 32]` row-major.
    pub images: Vec<u8>,
    /// CIFAR-10: the label (0..10); CIFAR-100: the fine label (0..100).
    pub labels: Vec<u8>,
    /// CIFAR-100 only: the coarse label (0..20); empty for CIFAR-10.
    pub coarse_labels: Vec<u8>,
}

impl CifarRecords {
    /// Number of records.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there is no record.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// Reads a binary CIFAR file of the given kind. The official files hold 10,000
/// (CIFAR-10 batches, CIFAR-100 test) or 50,000 (CIFAR-100 train) records; any
/// positive number of whole records is accepted.
///
/// Fails with [`DataError::Io`] when the file cannot be read,
/// [`DataError::Truncated`] when its size is not a whole number of records,
/// [`DataError::Corrupt`] when it is empty, and [`DataError::LabelOutOfRange`]
/// for a label byte not below 10 (CIFAR-10), 100 (fine) or 20 (coarse).
pub fn read_cifar_bin(path: &Path, kind: CifarKind) -> Result<CifarRecords> {
    let bytes = std::fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let rec = kind.record_bytes();
    if bytes.is_empty() {
        return Err(DataError::Corrupt {
            path: path.to_path_buf(),
            message: "empty file, expected CIFAR records".into(),
        });
    }
    if bytes.len() % rec != 0 {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            expected: bytes.len().div_ceil(rec) * rec,
            got: bytes.len(),
        });
    }
    let n = bytes.len() / rec;
    let mut out = CifarRecords {
        images: Vec::with_capacity(n * CIFAR_IMAGE_BYTES),
        labels: Vec::with_capacity(n),
        coarse_labels: Vec::new(),
    };
    for (index, record) in bytes.chunks_exact(rec).enumerate() {
        let label_out_of_range = |label: u8, num_classes: usize| DataError::LabelOutOfRange {
            path: path.to_path_buf(),
            index,
            label,
            num_classes,
        };
        match kind {
            CifarKind::Cifar10 => {
                if record[0] >= 10 {
                    return Err(label_out_of_range(record[0], 10));
                }
                out.labels.push(record[0]);
            }
            CifarKind::Cifar100 => {
                let (coarse, fine) = (record[0], record[1]);
                if coarse >= 20 {
                    return Err(label_out_of_range(coarse, 20));
                }
                if fine >= 100 {
                    return Err(label_out_of_range(fine, 100));
                }
                out.coarse_labels.push(coarse);
                out.labels.push(fine);
            }
        }
        out.images.extend_from_slice(&record[kind.label_bytes()..]);
    }
    Ok(out)
}

/// Loads CIFAR-10 from a directory holding `data_batch_1.bin` ... `data_batch_5.bin`
/// (train, concatenated in that order) and `test_batch.bin` (test), as extracted
/// from `cifar-10-binary.tar.gz` (the folder `cifar-10-batches-bin`).
/// The datasets are named `cifar10`: 3x32x32, `max_value = 255`, 10 classes.
pub fn load_cifar10_dir(dir: &Path) -> Result<Split> {
    let mut train = CifarRecords::default();
    for f in CIFAR10_TRAIN_FILES {
        let part = read_cifar_bin(&dir.join(f), CifarKind::Cifar10)?;
        train.images.extend(part.images);
        train.labels.extend(part.labels);
    }
    let test = read_cifar_bin(&dir.join(CIFAR10_TEST_FILE), CifarKind::Cifar10)?;
    Ok(Split {
        train: cifar_dataset("cifar10", train.images, train.labels, 10),
        test: cifar_dataset("cifar10", test.images, test.labels, 10),
    })
}

/// Loads CIFAR-100 from a directory holding `train.bin` and `test.bin`, as
/// extracted from `cifar-100-binary.tar.gz` (the folder `cifar-100-binary`),
/// keeping the fine or the coarse labels. The datasets are 3x32x32 with
/// `max_value = 255`, named and sized after `labels`
/// ([`Cifar100Labels::dataset_name`], [`Cifar100Labels::num_classes`]).
pub fn load_cifar100_dir(dir: &Path, labels: Cifar100Labels) -> Result<Split> {
    let part = |file: &str| -> Result<Dataset> {
        let r = read_cifar_bin(&dir.join(file), CifarKind::Cifar100)?;
        let y = match labels {
            Cifar100Labels::Fine => r.labels,
            Cifar100Labels::Coarse => r.coarse_labels,
        };
        Ok(cifar_dataset(
            labels.dataset_name(),
            r.images,
            y,
            labels.num_classes(),
        ))
    };
    Ok(Split {
        train: part(CIFAR100_TRAIN_FILE)?,
        test: part(CIFAR100_TEST_FILE)?,
    })
}

fn cifar_dataset(name: &str, images: Vec<u8>, labels: Vec<u8>, num_classes: usize) -> Dataset {
    Dataset {
        name: name.to_string(),
        images,
        labels,
        channels: 3,
        height: CIFAR_SIDE,
        width: CIFAR_SIDE,
        num_classes,
        max_value: 255.0,
    }
}
