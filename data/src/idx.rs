//! The IDX format of MNIST and Fashion-MNIST, raw or gzipped.
//!
//! Images: big-endian u32 magic `0x00000803`, then u32 `n`, `h`, `w`, then `n*h*w`
//! unsigned bytes. Labels: magic `0x00000801`, u32 `n`, then `n` unsigned bytes.

use std::io::{BufRead, BufReader, Read};
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
///
/// The header is read first and the body streamed after it, so a gzip
/// stream is never decompressed past one byte more than its header allows.
pub fn read_idx_images(path: &Path) -> Result<(usize, usize, usize, Vec<u8>)> {
    let reader = IdxReader::open(path, IDX_IMAGES_MAGIC, 16)?;
    let (n, h, w) = (reader.be_u32(4), reader.be_u32(8), reader.be_u32(12));
    let body = n
        .checked_mul(h)
        .and_then(|v| v.checked_mul(w))
        .ok_or_else(|| {
            DataError::Invalid(format!(
                "{}: header dimensions {n}x{h}x{w} overflow",
                path.display()
            ))
        })?;
    let pixels = reader.body(body)?;
    Ok((n, h, w, pixels))
}

/// Reads an IDX label file (magic `0x00000801`) and returns its `n` labels.
/// A file starting with the gzip magic `1f 8b` is decompressed first, whatever its name.
pub fn read_idx_labels(path: &Path) -> Result<Vec<u8>> {
    let reader = IdxReader::open(path, IDX_LABELS_MAGIC, 8)?;
    let n = reader.be_u32(4);
    reader.body(n)
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

/// An IDX file opened past its checked header: raw or gunzipped (a file
/// starting with the gzip magic), read as a stream.
struct IdxReader<'a> {
    path: &'a Path,
    header: Vec<u8>,
    stream: Box<dyn Read + 'a>,
    /// The most bytes the stream can yield: the file's length, or 1032 times
    /// it for gzip (deflate's largest ratio); bounds the reservation.
    limit: usize,
}

impl<'a> IdxReader<'a> {
    /// Opens `path`, reads its `header_len` header bytes and checks the magic.
    fn open(path: &'a Path, magic: u32, header_len: usize) -> Result<Self> {
        let io_err = |source| DataError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io_err)?;
        let file_len = file.metadata().map_err(io_err)?.len();
        let mut file = BufReader::new(file);
        let is_gz = file.fill_buf().map_err(io_err)?.starts_with(&GZIP_MAGIC);
        let (mut stream, limit): (Box<dyn Read>, u64) = if is_gz {
            (
                Box::new(MultiGzDecoder::new(file)),
                file_len.saturating_mul(1032),
            )
        } else {
            (Box::new(file), file_len)
        };
        let mut header = Vec::with_capacity(header_len);
        (&mut stream)
            .take(header_len as u64)
            .read_to_end(&mut header)
            .map_err(io_err)?;
        if header.len() < 4 {
            return Err(truncated(path, 4, header.len()));
        }
        let found = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        if found != magic {
            return Err(DataError::BadMagic {
                path: path.to_path_buf(),
                expected: magic,
                found,
            });
        }
        if header.len() < header_len {
            return Err(truncated(path, header_len, header.len()));
        }
        Ok(Self {
            path,
            header,
            stream,
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
        })
    }

    /// The big-endian u32 of the header at `at`, widened to usize.
    fn be_u32(&self, at: usize) -> usize {
        let b = &self.header[at..at + 4];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize
    }

    /// The `body` data bytes after the header; exactly that many must follow.
    fn body(mut self, body: usize) -> Result<Vec<u8>> {
        let path = self.path;
        let header = self.header.len();
        let expected = header.checked_add(body).ok_or_else(|| {
            DataError::Invalid(format!("{}: declared size overflows", path.display()))
        })?;
        // One byte more than declared tells a longer file from an exact one.
        let mut out = Vec::with_capacity(body.min(self.limit));
        (&mut self.stream)
            .take(body as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|source| DataError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        if out.len() < body {
            return Err(truncated(path, expected, header + out.len()));
        }
        if out.len() > body {
            return Err(DataError::Mismatch(format!(
                "{} has more bytes than the {expected} its header declares",
                path.display()
            )));
        }
        Ok(out)
    }
}

fn truncated(path: &Path, expected: usize, got: usize) -> DataError {
    DataError::Truncated {
        path: path.to_path_buf(),
        expected,
        got,
    }
}
