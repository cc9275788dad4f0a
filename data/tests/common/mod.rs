//! Writers of the published file formats, shared by the integration tests:
//! CIFAR binary records, PNG/JPEG images, Hub parquet files and the hf-hub cache
//! layout. Each test file uses a part of them.
#![allow(dead_code)]

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use image::{GrayImage, ImageFormat, RgbImage};
use parquet::basic::Compression;
use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;

/// Deterministic bytes (a 32-bit LCG), so that every pixel of a fixture differs.
pub fn pseudo_bytes(seed: u32, n: usize) -> Vec<u8> {
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (s >> 24) as u8
        })
        .collect()
}

/// A PNG file of a `[3, h, w]` (CHW) image, encoded by the `image` crate.
pub fn png_rgb(chw: &[u8], h: usize, w: usize) -> Vec<u8> {
    let plane = h * w;
    let img = RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let p = y as usize * w + x as usize;
        image::Rgb([chw[p], chw[plane + p], chw[2 * plane + p]])
    });
    encode(img.into(), ImageFormat::Png)
}

/// A PNG file of a grey `h x w` image (row-major pixels).
pub fn png_gray(pixels: &[u8], h: usize, w: usize) -> Vec<u8> {
    let img = GrayImage::from_raw(w as u32, h as u32, pixels.to_vec()).unwrap();
    encode(img.into(), ImageFormat::Png)
}

/// A JPEG file (quality 90, the `image` crate default) of a uniform RGB image.
pub fn jpeg_solid(rgb: [u8; 3], h: usize, w: usize) -> Vec<u8> {
    let img = RgbImage::from_pixel(w as u32, h as u32, image::Rgb(rgb));
    encode(img.into(), ImageFormat::Jpeg)
}

/// A JPEG file of a uniform grey image (one channel, as some TinyImageNet files).
pub fn jpeg_gray(v: u8, h: usize, w: usize) -> Vec<u8> {
    let img = GrayImage::from_pixel(w as u32, h as u32, image::Luma([v]));
    encode(img.into(), ImageFormat::Jpeg)
}

fn encode(img: image::DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

/// Writes a parquet file with the schema the `datasets` library gives an
/// `Image` column and `ClassLabel` columns (pyarrow: `struct<bytes: binary,
/// path: string>` and `int64`), snappy-compressed like the Hub's files, with the
/// `huggingface` key-value metadata. `path` of each image is null, as for
/// images embedded by `push_to_hub`.
pub fn write_hub_parquet(
    path: &Path,
    image_column: &str,
    images: &[Vec<u8>],
    labels: &[(&str, Vec<i64>)],
) {
    let mut message = format!(
        "message schema {{ optional group {image_column} {{ optional binary bytes; optional binary path (STRING); }}"
    );
    for (name, _) in labels {
        message.push_str(&format!(" optional int64 {name};"));
    }
    message.push_str(" }");
    let schema = Arc::new(parse_message_type(&message).unwrap());
    let features: Vec<String> = std::iter::once(format!(r#""{image_column}":{{"_type":"Image"}}"#))
        .chain(
            labels
                .iter()
                .map(|(n, _)| format!(r#""{n}":{{"_type":"ClassLabel"}}"#)),
        )
        .collect();
    let info = format!(r#"{{"info":{{"features":{{{}}}}}}}"#, features.join(","));
    let props = Arc::new(
        WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_key_value_metadata(Some(vec![KeyValue::new("huggingface".into(), info)]))
            .build(),
    );
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    let mut writer =
        SerializedFileWriter::new(fs::File::create(path).unwrap(), schema, props).unwrap();
    let mut rg = writer.next_row_group().unwrap();
    let n = images.len();
    // Leaf columns in schema order: <image>.bytes, <image>.path, then the labels.
    // Definition levels: 2 = struct and field present, 1 = struct present but
    // field null; a top-level label has level 1 when present.
    let mut column = 0;
    while let Some(mut col) = rg.next_column().unwrap() {
        match column {
            0 => {
                let values: Vec<ByteArray> =
                    images.iter().map(|b| ByteArray::from(b.clone())).collect();
                col.typed::<ByteArrayType>()
                    .write_batch(&values, Some(&vec![2; n][..]), None)
                    .unwrap();
            }
            1 => {
                col.typed::<ByteArrayType>()
                    .write_batch(&[], Some(&vec![1; n][..]), None)
                    .unwrap();
            }
            k => {
                col.typed::<Int64Type>()
                    .write_batch(&labels[k - 2].1, Some(&vec![1; n][..]), None)
                    .unwrap();
            }
        }
        col.close().unwrap();
        column += 1;
    }
    rg.close().unwrap();
    writer.close().unwrap();
}

/// A fake 40-hex commit id.
pub const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// Places `files` (repository path, content) in `cache` as hf-hub and the Python
/// client lay out a dataset repository: content in `blobs/<etag>`, the snapshot
/// entry `snapshots/<commit>/<path>` a relative symlink to the blob (a copy where
/// symlinks are not available), and `refs/main` holding the commit.
/// Returns the snapshot folder.
pub fn put_in_hf_cache(cache: &Path, repo: &str, files: &[(String, PathBuf)]) -> PathBuf {
    let folder = cache.join(format!("datasets--{}", repo.replace('/', "--")));
    let snapshot = folder.join("snapshots").join(COMMIT);
    fs::create_dir_all(folder.join("blobs")).unwrap();
    fs::create_dir_all(folder.join("refs")).unwrap();
    fs::File::create(folder.join("refs").join("main"))
        .unwrap()
        .write_all(COMMIT.as_bytes())
        .unwrap();
    for (i, (repo_path, source)) in files.iter().enumerate() {
        let etag = format!("{:064x}", i + 1);
        let blob = folder.join("blobs").join(&etag);
        fs::copy(source, &blob).unwrap();
        let entry = snapshot.join(repo_path);
        fs::create_dir_all(entry.parent().unwrap()).unwrap();
        link(&blob, &entry);
    }
    snapshot
}

#[cfg(unix)]
fn link(blob: &Path, entry: &Path) {
    // Relative, like hf-hub's `create_pointer_symlink`.
    let depth = entry
        .strip_prefix(blob.parent().unwrap().parent().unwrap())
        .unwrap()
        .components()
        .count()
        - 1;
    let mut target = PathBuf::new();
    for _ in 0..depth {
        target.push("..");
    }
    target.push("blobs");
    target.push(blob.file_name().unwrap());
    std::os::unix::fs::symlink(target, entry).unwrap();
}

#[cfg(not(unix))]
fn link(blob: &Path, entry: &Path) {
    fs::copy(blob, entry).unwrap();
}

/// One CIFAR-10 binary record: the label byte, then the `[3, 32, 32]` pixels.
pub fn cifar10_record(label: u8, chw: &[u8]) -> Vec<u8> {
    assert_eq!(chw.len(), 3072);
    let mut r = vec![label];
    r.extend_from_slice(chw);
    r
}

/// One CIFAR-100 binary record: coarse label, fine label, then the pixels.
pub fn cifar100_record(coarse: u8, fine: u8, chw: &[u8]) -> Vec<u8> {
    assert_eq!(chw.len(), 3072);
    let mut r = vec![coarse, fine];
    r.extend_from_slice(chw);
    r
}

/// Writes `bytes` to `path`, creating the parent folders.
pub fn write(path: &Path, bytes: &[u8]) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(path, bytes).unwrap();
}
