//! The IDX format of MNIST and Fashion-MNIST, raw or gzipped.
//!
//! Images: big-endian u32 magic `0x00000803`, then u32 `n`, `h`, `w`, then `n*h*w`
//! unsigned bytes. Labels: magic `0x00000801`, u32 `n`, then `n` unsigned bytes.

use std::io::Read;
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

use crate::dataset::{Dataset, Split};
use crate::error::{DataError, Result};

/// Magic number of an IDX file of unsigned-byte 3-D data (images).
pub const IDX_IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of unsigned-byte 1-D data (labels).
pub const IDX_LABELS_MAGIC: u32 = 0x0000_0801;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// The four file names of an IDX directory, without the optional `.gz`.
const TRAIN_IMAGES: &str = "train-images-idx3-ubyte";
const TRAIN_LABELS: &str = "train-labels-idx1-ubyte";
const TEST_IMAGES: &str = "t10k-images-idx3-ubyte";
const TEST_LABELS: &str = "t10k-labels-idx1-ubyte";

/// Reads an IDX image file and returns `(n, h, w, pixels)` with `n*h*w` pixels.
/// A file starting with the gzip magic `1f 8b` is decompressed first, whatever its name.
pub fn read_idx_images(path: &Path) -> Result<(usize, usize, usize, Vec<u8>)> {
    let bytes = read_maybe_gz(path)?;
    check_magic(path, &bytes, IDX_IMAGES_MAGIC)?;
    let header = 16;
    if bytes.len() < header {
        return Err(truncated(path, header, bytes.len()));
    }
    let n = be_u32(&bytes, 4);
    let h = be_u32(&bytes, 8);
    let w = be_u32(&bytes, 12);
    let body = n
        .checked_mul(h)
        .and_then(|v| v.checked_mul(w))
        .ok_or_else(|| {
            DataError::Invalid(format!(
                "{}: header dimensions {n}x{h}x{w} overflow",
                path.display()
            ))
        })?;
    let pixels = take_body(path, bytes, header, body)?;
    Ok((n, h, w, pixels))
}

/// Reads an IDX label file (magic `0x00000801`) and returns its `n` labels.
/// A file starting with the gzip magic `1f 8b` is decompressed first, whatever its name.
pub fn read_idx_labels(path: &Path) -> Result<Vec<u8>> {
    let bytes = read_maybe_gz(path)?;
    check_magic(path, &bytes, IDX_LABELS_MAGIC)?;
    let header = 8;
    if bytes.len() < header {
        return Err(truncated(path, header, bytes.len()));
    }
    let n = be_u32(&bytes, 4);
    take_body(path, bytes, header, n)
}

/// Loads the official train/test split of an IDX directory holding
/// `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte`
/// and `t10k-labels-idx1-ubyte`, each optionally with `.gz` (the raw file wins when
/// both exist). Checks that image and label counts agree, that train and test
/// images have the same size, and that every label is below `num_classes`.
/// The datasets are named `name`, have one channel and `max_value = 255`.
pub fn load_idx_dir(dir: &Path, name: &str, num_classes: usize) -> Result<Split> {
    let train = load_part(dir, name, num_classes, TRAIN_IMAGES, TRAIN_LABELS)?;
    let test = load_part(dir, name, num_classes, TEST_IMAGES, TEST_LABELS)?;
    if (train.height, train.width) != (test.height, test.width) {
        return Err(DataError::Mismatch(format!(
            "{}: train images are {}x{}, t10k images are {}x{}",
            dir.display(),
            train.height,
            train.width,
            test.height,
            test.width
        )));
    }
    Ok(Split { train, test })
}

/// Whether `dir` holds a train image file, raw or gzipped.
pub(crate) fn has_idx_files(dir: &Path) -> bool {
    find_file(dir, TRAIN_IMAGES).is_ok()
}

fn load_part(
    dir: &Path,
    name: &str,
    num_classes: usize,
    images_base: &str,
    labels_base: &str,
) -> Result<Dataset> {
    let images_path = find_file(dir, images_base)?;
    let labels_path = find_file(dir, labels_base)?;
    let (n, h, w, images) = read_idx_images(&images_path)?;
    let labels = read_idx_labels(&labels_path)?;
    if labels.len() != n {
        return Err(DataError::Mismatch(format!(
            "{} holds {n} images but {} holds {} labels",
            images_path.display(),
            labels_path.display(),
            labels.len()
        )));
    }
    if let Some((index, &label)) = labels
        .iter()
        .enumerate()
        .find(|(_, &l)| usize::from(l) >= num_classes)
    {
        return Err(DataError::LabelOutOfRange {
            path: labels_path,
            index,
            label,
            num_classes,
        });
    }
    Ok(Dataset {
        name: name.to_string(),
        images,
        labels,
        channels: 1,
        height: h,
        width: w,
        num_classes,
        max_value: 255.0,
    })
}

/// `dir/base` if it exists, else `dir/base.gz`, else a not-found error naming both.
fn find_file(dir: &Path, base: &str) -> Result<PathBuf> {
    let raw = dir.join(base);
    if raw.is_file() {
        return Ok(raw);
    }
    let gz = dir.join(format!("{base}.gz"));
    if gz.is_file() {
        return Ok(gz);
    }
    Err(DataError::Io {
        source: std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("no such file (nor {})", gz.display()),
        ),
        path: raw,
    })
}

/// The file's bytes, gunzipped when they start with the gzip magic.
fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let io_err = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    let bytes = std::fs::read(path).map_err(io_err)?;
    if !bytes.starts_with(&GZIP_MAGIC) {
        return Ok(bytes);
    }
    // IDX payloads compress to roughly a sixth of their size; reserve accordingly.
    let mut out = Vec::with_capacity(bytes.len().saturating_mul(6));
    MultiGzDecoder::new(bytes.as_slice())
        .read_to_end(&mut out)
        .map_err(io_err)?;
    Ok(out)
}

fn check_magic(path: &Path, bytes: &[u8], expected: u32) -> Result<()> {
    if bytes.len() < 4 {
        return Err(truncated(path, 4, bytes.len()));
    }
    let found = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if found != expected {
        return Err(DataError::BadMagic {
            path: path.to_path_buf(),
            expected,
            found,
        });
    }
    Ok(())
}

/// Strips the header and checks that exactly `body` data bytes follow it.
fn take_body(path: &Path, mut bytes: Vec<u8>, header: usize, body: usize) -> Result<Vec<u8>> {
    let expected = header.checked_add(body).ok_or_else(|| {
        DataError::Invalid(format!("{}: declared size overflows", path.display()))
    })?;
    if bytes.len() < expected {
        return Err(truncated(path, expected, bytes.len()));
    }
    if bytes.len() > expected {
        return Err(DataError::Mismatch(format!(
            "{} has {} bytes after the {expected} its header declares",
            path.display(),
            bytes.len() - expected
        )));
    }
    bytes.drain(..header);
    Ok(bytes)
}

fn truncated(path: &Path, expected: usize, got: usize) -> DataError {
    DataError::Truncated {
        path: path.to_path_buf(),
        expected,
        got,
    }
}

/// The big-endian u32 at `at` (the caller checked the length), widened to usize.
fn be_u32(bytes: &[u8], at: usize) -> usize {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize
}
