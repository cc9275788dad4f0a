//! The embedded UCI "Optical Recognition of Handwritten Digits" data.

use std::io::Read;

use flate2::read::GzDecoder;

use crate::dataset::Dataset;
use crate::error::{DataError, Result};

/// `digits.csv.gz`: one row per image, 64 pixel values (0..16, row-major) then the label.
static DIGITS_CSV_GZ: &[u8] = include_bytes!("../assets/digits.csv.gz");

/// Number of samples in the embedded digits data.
pub const DIGITS_LEN: usize = 1797;
/// Image side of the digits data (images are 1x8x8).
pub const DIGITS_SIDE: usize = 8;
/// Largest pixel value of the digits data.
pub const DIGITS_MAX: u8 = 16;

const WHAT: &str = "embedded digits.csv.gz";

/// The embedded digits dataset: all 1,797 samples, 1x8x8 images with values
/// 0..16 (`max_value = 16`), 10 classes, in file order.
pub fn digits() -> Result<Dataset> {
    let mut text = String::new();
    GzDecoder::new(DIGITS_CSV_GZ)
        .read_to_string(&mut text)
        .map_err(|e| DataError::Parse {
            what: WHAT.into(),
            line: 0,
            message: format!("cannot decompress: {e}"),
        })?;
    let dim = DIGITS_SIDE * DIGITS_SIDE;
    let mut images = Vec::with_capacity(DIGITS_LEN * dim);
    let mut labels = Vec::with_capacity(DIGITS_LEN);
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() != dim + 1 {
            return Err(parse_err(
                i,
                format!("{} fields, expected {}", fields.len(), dim + 1),
            ));
        }
        for f in &fields[..dim] {
            images.push(parse_value(f, DIGITS_MAX).map_err(|m| parse_err(i, m))?);
        }
        labels.push(parse_value(fields[dim], 9).map_err(|m| parse_err(i, m))?);
    }
    if labels.len() != DIGITS_LEN {
        return Err(DataError::Mismatch(format!(
            "{WHAT} has {} rows, expected {DIGITS_LEN}",
            labels.len()
        )));
    }
    Ok(Dataset {
        name: "digits".into(),
        images,
        labels,
        channels: 1,
        height: DIGITS_SIDE,
        width: DIGITS_SIDE,
        num_classes: 10,
        max_value: f32::from(DIGITS_MAX),
    })
}

fn parse_err(line_index: usize, message: String) -> DataError {
    DataError::Parse {
        what: WHAT.into(),
        line: line_index + 1,
        message,
    }
}

/// Parses an integer in `0..=max`, written as `7` or `7.0`.
fn parse_value(field: &str, max: u8) -> std::result::Result<u8, String> {
    let field = field.trim();
    let v = match field.parse::<u8>() {
        Ok(v) => v,
        Err(_) => {
            let f: f64 = field
                .parse()
                .map_err(|_| format!("'{field}' is not a number"))?;
            if f.fract() != 0.0 || !(0.0..=255.0).contains(&f) {
                return Err(format!("'{field}' is not an integer in 0..={max}"));
            }
            f as u8
        }
    };
    if v > max {
        return Err(format!("value {v} is above {max}"));
    }
    Ok(v)
}
