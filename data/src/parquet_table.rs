//! Image-classification tables in the parquet layout of the Hugging Face Hub.
//!
//! The `datasets` library writes an `Image` feature as a struct column
//! `{bytes: binary, path: string}` holding the encoded PNG/JPEG file, and a
//! `ClassLabel` feature as an `int64` column.

use std::fs::File;
use std::path::Path;

use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::{Field, Row};
use parquet::schema::types::Type;

use crate::error::{DataError, Result};

/// The encoded images and the labels of one parquet file, in row order.
#[derive(Clone, Debug, Default)]
pub struct ImageTable {
    /// The encoded image file (PNG, JPEG) of each row.
    pub images: Vec<Vec<u8>>,
    /// The integer label of each row.
    pub labels: Vec<i64>,
}

/// Reads the column `image_column` (a struct with a binary `bytes` field, the
/// Hub's image feature) and the integer column `label_column` of every row of the
/// parquet file at `path`.
///
/// Fails with [`DataError::Io`] when the file cannot be opened and with
/// [`DataError::Corrupt`] when it is not parquet, lacks a column (the message
/// lists the columns it has), or holds a null image or a non-integer label.
///
/// The parquet reader asserts (panics) on some malformed pages (found by
/// kdprune's fuzzing: dictionary pages missing, bit-packed runs shorter than
/// they say, definition levels that do not fit the schema); such a panic is
/// contained here and reported as [`DataError::Corrupt`].
pub fn read_image_table(path: &Path, image_column: &str, label_column: &str) -> Result<ImageTable> {
    match contained(|| read_table(path, image_column, label_column)) {
        Ok(result) => result,
        Err(message) => Err(corrupt(
            path,
            format!("the parquet reader failed on a malformed page ({message})"),
        )),
    }
}

thread_local! {
    /// Set while [`contained`] runs on this thread: its panics are not printed.
    static CONTAINING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f`, returning the message of a panic inside it as an error. The
/// panic hook in place is kept for every other panic; only those inside
/// `f` on this thread are silent (a once-installed hook that checks a
/// thread-local flag).
fn contained<T>(f: impl FnOnce() -> T) -> std::result::Result<T, String> {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !CONTAINING.with(|c| c.get()) {
                previous(info);
            }
        }));
    });
    CONTAINING.with(|c| c.set(true));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    CONTAINING.with(|c| c.set(false));
    outcome.map_err(|payload| {
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic".into())
    })
}

fn read_table(path: &Path, image_column: &str, label_column: &str) -> Result<ImageTable> {
    let file = File::open(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let reader = SerializedFileReader::new(file)
        .map_err(|e| corrupt(path, format!("not a readable parquet file: {e}")))?;
    check_chunks(path, reader.metadata())?;
    let schema = reader
        .metadata()
        .file_metadata()
        .schema_descr()
        .root_schema();
    let column = |name: &str| {
        schema
            .get_fields()
            .iter()
            .find(|f| f.name() == name)
            .cloned()
            .ok_or_else(|| {
                let have: Vec<&str> = schema.get_fields().iter().map(|f| f.name()).collect();
                corrupt(
                    path,
                    format!("no column '{name}' (columns: {})", have.join(", ")),
                )
            })
    };
    let image_field = column(image_column)?;
    if !image_field.is_group() {
        return Err(corrupt(
            path,
            format!("column '{image_column}' is not a {{bytes, path}} image struct"),
        ));
    }
    // Read only the two columns: Hub files may carry others (CIFAR-100's second
    // label, TinyImageNet's none, user columns).
    let projection = Type::group_type_builder(schema.name())
        .with_fields(vec![image_field, column(label_column)?])
        .build()
        .map_err(|e| corrupt(path, format!("cannot select columns: {e}")))?;
    let rows = reader
        .get_row_iter(Some(projection))
        .map_err(|e| corrupt(path, format!("cannot read rows: {e}")))?;
    // The footer's row count is a claim of the file: it only sizes the
    // reservation up to one row per byte of the file, never beyond.
    let file_len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let n = usize::try_from(
        reader
            .metadata()
            .file_metadata()
            .num_rows()
            .clamp(0, i64::try_from(file_len).unwrap_or(i64::MAX)),
    )
    .unwrap_or(0);
    let mut table = ImageTable {
        images: Vec::with_capacity(n),
        labels: Vec::with_capacity(n),
    };
    for (i, row) in rows.enumerate() {
        let row = row.map_err(|e| corrupt(path, format!("row {i}: {e}")))?;
        let (image, label) = row_values(&row, image_column, label_column)
            .map_err(|m| corrupt(path, format!("row {i}: {m}")))?;
        table.images.push(image);
        table.labels.push(label);
    }
    Ok(table)
}

/// Fails unless every column chunk the footer lists lies inside the file:
/// the parquet reader asserts (panics) on a negative offset or size, and
/// trusts the others.
fn check_chunks(path: &Path, metadata: &parquet::file::metadata::ParquetMetaData) -> Result<()> {
    let file_len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    for (g, group) in metadata.row_groups().iter().enumerate() {
        for chunk in group.columns() {
            let start = chunk
                .dictionary_page_offset()
                .unwrap_or_else(|| chunk.data_page_offset());
            let (data, size) = (chunk.data_page_offset(), chunk.compressed_size());
            // The chunk is `size` bytes from `start` (its dictionary page,
            // else its first data page); the data pages lie within it.
            let inside = start >= 0
                && data >= start
                && size >= 0
                && u64::try_from(start)
                    .ok()
                    .zip(u64::try_from(size).ok())
                    .and_then(|(a, b)| a.checked_add(b))
                    .is_some_and(|end| end <= file_len && (data as u64) < end.max(1));
            if !inside {
                return Err(corrupt(
                    path,
                    format!(
                        "row group {g}: column chunk {} (offset {start}, {size} bytes) lies outside the file's {file_len} bytes",
                        chunk.column_path()
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// The image bytes and the label of one projected row.
fn row_values(
    row: &Row,
    image_column: &str,
    label_column: &str,
) -> std::result::Result<(Vec<u8>, i64), String> {
    let mut image = None;
    let mut label = None;
    for (name, field) in row.get_column_iter() {
        if name == image_column {
            image = Some(image_bytes(field)?);
        } else if name == label_column {
            label = Some(integer(field).ok_or_else(|| {
                format!("label column '{label_column}' holds {field:?}, not an integer")
            })?);
        }
    }
    match (image, label) {
        (Some(i), Some(l)) => Ok((i, l)),
        _ => Err(format!("missing '{image_column}' or '{label_column}'")),
    }
}

fn image_bytes(field: &Field) -> std::result::Result<Vec<u8>, String> {
    let Field::Group(group) = field else {
        return Err(format!("image is {field:?}, not a {{bytes, path}} struct"));
    };
    for (name, f) in group.get_column_iter() {
        if name == "bytes" {
            return match f {
                Field::Bytes(b) => Ok(b.data().to_vec()),
                Field::Null => Err("image bytes are null".into()),
                other => Err(format!("image bytes are {other:?}")),
            };
        }
    }
    Err("image struct has no 'bytes' field".into())
}

fn integer(field: &Field) -> Option<i64> {
    match *field {
        Field::Byte(v) => Some(i64::from(v)),
        Field::Short(v) => Some(i64::from(v)),
        Field::Int(v) => Some(i64::from(v)),
        Field::Long(v) => Some(v),
        Field::UByte(v) => Some(i64::from(v)),
        Field::UShort(v) => Some(i64::from(v)),
        Field::UInt(v) => Some(i64::from(v)),
        Field::ULong(v) => i64::try_from(v).ok(),
        _ => None,
    }
}

fn corrupt(path: &Path, message: String) -> DataError {
    DataError::Corrupt {
        path: path.to_path_buf(),
        message,
    }
}
