//! TinyImageNet (200 classes, 3x64x64) in the layout of the official
//! `tiny-imagenet-200.zip`.
//!
//! ```text
//! wnids.txt                         one WordNet id per line (200 lines)
//! train/<wnid>/images/*.JPEG        500 images per class
//! val/val_annotations.txt           <file>\t<wnid>\t<x0>\t<y0>\t<x1>\t<y1> per line
//! val/images/<file>                 10,000 images
//! ```
//!
//! The test folder of the archive has no labels; the labelled `val` part is the
//! test set here, as everywhere TinyImageNet results are reported.

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::dataset::{Dataset, Split};
use crate::decode::decode_chw;
use crate::error::{DataError, Result};

/// Side of a TinyImageNet image (images are 3x64x64).
pub const TINY_IMAGENET_SIDE: usize = 64;
/// Number of classes of TinyImageNet.
pub const TINY_IMAGENET_CLASSES: usize = 200;

/// Loads a TinyImageNet directory (see the module documentation for the layout).
///
/// Class `k` is the `k`-th WordNet id of `wnids.txt` in sorted order — the order
/// of torchvision's `ImageFolder` and of the Hub copy `zh-plus/tiny-imagenet`, so
/// that labels agree across the two sources. Training samples come class by
/// class, each class's images sorted by file name; test samples follow
/// `val/val_annotations.txt`. Grey JPEGs are replicated to three channels. The
/// datasets are named `tiny-imagenet`, have `max_value = 255` and as many
/// classes as `wnids.txt` has ids.
///
/// Fails, naming the file, when a listed file or folder is missing
/// ([`DataError::Io`]), an image does not decode or is not 64x64, an annotation
/// line is malformed or names an unknown id ([`DataError::Corrupt`]).
pub fn load_tiny_imagenet_dir(dir: &Path) -> Result<Split> {
    let wnids_path = dir.join("wnids.txt");
    let mut wnids: Vec<String> = read_text(&wnids_path)?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    wnids.sort();
    if let Some(w) = wnids.windows(2).find(|w| w[0] == w[1]) {
        return Err(corrupt(&wnids_path, format!("id {} is listed twice", w[0])));
    }
    if let Some(w) = wnids.iter().find(|w| !is_plain_name(w)) {
        return Err(corrupt(
            &wnids_path,
            format!("id '{w}' is not a plain folder name (no '/', '\\' or '..')"),
        ));
    }
    if wnids.is_empty() || wnids.len() > 256 {
        return Err(corrupt(
            &wnids_path,
            format!("{} ids, expected 1 to 256", wnids.len()),
        ));
    }
    let class_of = |wnid: &str| wnids.binary_search_by(|w| w.as_str().cmp(wnid)).ok();

    let mut train_files = Vec::new();
    for (class, wnid) in wnids.iter().enumerate() {
        let images_dir = dir.join("train").join(wnid).join("images");
        for path in list_images(&images_dir)? {
            train_files.push((path, class as u8));
        }
    }

    let ann_path = dir.join("val").join("val_annotations.txt");
    let mut test_files = Vec::new();
    for (i, line) in read_text(&ann_path)?.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut fields = line.split('\t');
        let (file, wnid) = match (fields.next(), fields.next()) {
            (Some(f), Some(w)) if !f.is_empty() => (f.trim(), w.trim()),
            _ => {
                return Err(corrupt(
                    &ann_path,
                    format!("line {}: expected <file>\\t<wnid>\\t...", i + 1),
                ))
            }
        };
        if !is_plain_name(file) {
            return Err(corrupt(
                &ann_path,
                format!(
                    "line {}: file '{file}' is not a plain file name inside val/images (no '/', '\\' or '..')",
                    i + 1
                ),
            ));
        }
        let class = class_of(wnid).ok_or_else(|| {
            corrupt(
                &ann_path,
                format!("line {}: id {wnid} is not in wnids.txt", i + 1),
            )
        })?;
        test_files.push((dir.join("val").join("images").join(file), class as u8));
    }

    let num_classes = wnids.len();
    Ok(Split {
        train: decode_files("tiny-imagenet", &train_files, num_classes)?,
        test: decode_files("tiny-imagenet", &test_files, num_classes)?,
    })
}

/// The image files (`.jpeg`, `.jpg`, `.png`, any case) of `dir`, sorted by name.
fn list_images(dir: &Path) -> Result<Vec<PathBuf>> {
    let io_err = |source| DataError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err)? {
        let path = entry.map_err(io_err)?.path();
        let is_image = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "jpeg" | "jpg" | "png"));
        if is_image {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Reads and decodes the files in parallel (decoding dominates the load time),
/// each into its slot of the image buffer, so the order is kept.
fn decode_files(name: &str, files: &[(PathBuf, u8)], num_classes: usize) -> Result<Dataset> {
    let side = TINY_IMAGENET_SIDE;
    let dim = 3 * side * side;
    let mut images = vec![0u8; files.len() * dim];
    images
        .par_chunks_mut(dim)
        .zip(files.par_iter())
        .try_for_each(|(slot, (path, _))| {
            let bytes = std::fs::read(path).map_err(|source| DataError::Io {
                path: path.clone(),
                source,
            })?;
            slot.copy_from_slice(&decode_chw(&bytes, 3, side, side).map_err(|m| corrupt(path, m))?);
            Ok::<(), DataError>(())
        })?;
    Ok(Dataset {
        name: name.to_string(),
        images,
        labels: files.iter().map(|(_, l)| *l).collect(),
        channels: 3,
        height: side,
        width: side,
        num_classes,
        max_value: 255.0,
    })
}

/// Whether a name read from an annotation file stays inside the folder it
/// is joined to: one path component, not `.` or `..`, no separator.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\', '\0'])
        && !Path::new(name).is_absolute()
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn corrupt(path: &Path, message: String) -> DataError {
    DataError::Corrupt {
        path: path.to_path_buf(),
        message,
    }
}
