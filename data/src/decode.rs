//! Decoding of the PNG and JPEG images found in Hub parquet files and image folders.

use image::{DynamicImage, ImageFormat};

/// Decodes one PNG or JPEG image (the format is read from the content, not from
/// a file name) to `channels * height * width` bytes in `[C, H, W]` order.
///
/// `channels = 1` gives luminance (a colour image is converted with the
/// Rec. 601 weights of the `image` crate); `channels = 3` gives RGB (a grey
/// image is replicated to the three planes). The image must be exactly
/// `height x width`: nothing is resized. The error is a message without the file
/// name, which the caller adds.
pub fn decode_chw(
    bytes: &[u8],
    channels: usize,
    height: usize,
    width: usize,
) -> std::result::Result<Vec<u8>, String> {
    let format = image::guess_format(bytes).map_err(|e| format!("unknown image format: {e}"))?;
    if !matches!(format, ImageFormat::Png | ImageFormat::Jpeg) {
        return Err(format!("{format:?} image, expected PNG or JPEG"));
    }
    let img = image::load_from_memory_with_format(bytes, format)
        .map_err(|e| format!("cannot decode {format:?} image: {e}"))?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    if (h, w) != (height, width) {
        return Err(format!(
            "image is {h}x{w} (height x width), expected {height}x{width}"
        ));
    }
    match channels {
        1 => Ok(img.to_luma8().into_raw()),
        3 => Ok(hwc_to_chw(&rgb_bytes(img), 3, height * width)),
        c => Err(format!("cannot decode to {c} channels (1 or 3)")),
    }
}

fn rgb_bytes(img: DynamicImage) -> Vec<u8> {
    match img {
        DynamicImage::ImageRgb8(rgb) => rgb.into_raw(),
        other => other.to_rgb8().into_raw(),
    }
}

/// `[H, W, C]` (how decoders lay pixels out) to `[C, H, W]` (how candle's
/// convolutions read them): `out[c * plane + p] = hwc[p * channels + c]`.
fn hwc_to_chw(hwc: &[u8], channels: usize, plane: usize) -> Vec<u8> {
    let mut out = vec![0u8; hwc.len()];
    for (p, px) in hwc.chunks_exact(channels).enumerate().take(plane) {
        for (c, &v) in px.iter().enumerate() {
            out[c * plane + p] = v;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hwc_to_chw_moves_channels_first() {
        // 2 pixels, RGB: (1,2,3), (4,5,6) -> planes R [1,4], G [2,5], B [3,6]
        assert_eq!(
            hwc_to_chw(&[1, 2, 3, 4, 5, 6], 3, 2),
            vec![1, 4, 2, 5, 3, 6]
        );
    }

    #[test]
    fn garbage_is_not_an_image() {
        assert!(decode_chw(b"not an image", 3, 2, 2).is_err());
    }
}
