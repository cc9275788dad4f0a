//! Random crop with zero padding and horizontal flip.

use std::collections::BTreeSet;

use candle_core::Device;
use kdprune_data::{Augment, Augmenter, DataError, Dataset, Normalization, Placement};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// One sample of 2 channels x 3 x 4 holding 1..=24 (CHW order), `max_value = 1`
/// so that an identity-normalised batch holds the raw values.
fn counting() -> Dataset {
    Dataset {
        name: "counting".into(),
        images: (1..=24).collect(),
        labels: vec![3],
        channels: 2,
        height: 3,
        width: 4,
        num_classes: 4,
        max_value: 1.0,
    }
}

/// `n` samples of 3 channels x 8 x 8 with distinct pixels, for statistics.
fn noisy(n: usize) -> Dataset {
    Dataset {
        name: "noisy".into(),
        images: (0..n * 192).map(|i| (i * 37 % 251) as u8).collect(),
        labels: (0..n).map(|i| (i % 10) as u8).collect(),
        channels: 3,
        height: 8,
        width: 8,
        num_classes: 10,
        max_value: 255.0,
    }
}

fn placed(ds: &Dataset, p: Placement) -> Vec<f32> {
    let norm = Normalization::identity(ds.channels);
    let (x, y) = ds.batch_placed(&[0], &norm, &[p], &Device::Cpu).unwrap();
    assert_eq!(y.to_vec1::<u32>().unwrap(), vec![3]);
    assert_eq!(x.dims(), &[1, ds.channels, ds.height, ds.width]);
    x.flatten_all().unwrap().to_vec1().unwrap()
}

fn flat(v: &[[[u8; 4]; 3]; 2]) -> Vec<f32> {
    v.iter()
        .flatten()
        .flatten()
        .map(|&p| f32::from(p))
        .collect()
}

#[test]
fn crop_shifts_content_by_the_offset_and_pads_with_zeros() {
    // import numpy as np
    // img = np.arange(1, 25).reshape(2, 3, 4); p = 2
    // def place(img, dy, dx, flip):
    //     P = np.pad(img, ((0, 0), (p, p), (p, p)))
    //     out = P[:, p + dy:p + dy + 3, p + dx:p + dx + 4]
    //     return out[:, :, ::-1] if flip else out
    // place(img, 1, -2, False).tolist()
    let want = [
        [[0, 0, 5, 6], [0, 0, 9, 10], [0, 0, 0, 0]],
        [[0, 0, 17, 18], [0, 0, 21, 22], [0, 0, 0, 0]],
    ];
    let got = placed(
        &counting(),
        Placement {
            dy: 1,
            dx: -2,
            flip: false,
        },
    );
    assert_eq!(got, flat(&want));
}

#[test]
fn flip_mirrors_the_cropped_window() {
    // place(img, -1, 1, True).tolist()   (same snippet as above)
    let want = [
        [[0, 0, 0, 0], [0, 4, 3, 2], [0, 8, 7, 6]],
        [[0, 0, 0, 0], [0, 16, 15, 14], [0, 20, 19, 18]],
    ];
    let got = placed(
        &counting(),
        Placement {
            dy: -1,
            dx: 1,
            flip: true,
        },
    );
    assert_eq!(got, flat(&want));
    // place(img, 0, 0, True).tolist(): a plain mirror of every row
    let want = [
        [[4, 3, 2, 1], [8, 7, 6, 5], [12, 11, 10, 9]],
        [[16, 15, 14, 13], [20, 19, 18, 17], [24, 23, 22, 21]],
    ];
    let got = placed(
        &counting(),
        Placement {
            dy: 0,
            dx: 0,
            flip: true,
        },
    );
    assert_eq!(got, flat(&want));
}

#[test]
fn padding_is_a_zero_pixel_before_normalisation() {
    let ds = counting();
    let norm = Normalization {
        mean: vec![0.5, 2.0],
        std: vec![0.25, 4.0],
    };
    let p = Placement {
        dy: 0,
        dx: 4,
        flip: false,
    };
    let (x, _) = ds.batch_placed(&[0], &norm, &[p], &Device::Cpu).unwrap();
    let got: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
    // every pixel is padding: (0 - 0.5) / 0.25 = -2 in channel 0, (0 - 2) / 4 = -0.5 in channel 1
    assert!(got[..12].iter().all(|&v| v == -2.0), "{got:?}");
    assert!(got[12..].iter().all(|&v| v == -0.5), "{got:?}");
}

#[test]
fn identity_placement_and_no_augmentation_equal_the_plain_batch() {
    let ds = noisy(5);
    let norm = Normalization::fit(&ds);
    let idx = [4, 0, 2];
    let (plain, y0) = ds.batch(&idx, &norm, &Device::Cpu).unwrap();
    let plain: Vec<f32> = plain.flatten_all().unwrap().to_vec1().unwrap();
    let (a, y1) = ds
        .batch_placed(&idx, &norm, &[Placement::IDENTITY; 3], &Device::Cpu)
        .unwrap();
    let (b, _) = ds
        .batch_augmented(&idx, &norm, &Augment::NONE, 99, &Device::Cpu)
        .unwrap();
    assert_eq!(a.flatten_all().unwrap().to_vec1::<f32>().unwrap(), plain);
    assert_eq!(b.flatten_all().unwrap().to_vec1::<f32>().unwrap(), plain);
    assert_eq!(y0.to_vec1::<u32>().unwrap(), y1.to_vec1::<u32>().unwrap());
    assert!(Augment::NONE.is_identity());
    assert!(!Augment::CROP_FLIP.is_identity());
}

#[test]
fn augmentation_is_deterministic_per_seed() {
    let ds = noisy(16);
    let norm = Normalization::fit(&ds);
    let idx: Vec<usize> = (0..16).collect();
    let run = |seed| {
        let (x, _) = ds
            .batch_augmented(&idx, &norm, &Augment::CROP_FLIP, seed, &Device::Cpu)
            .unwrap();
        x.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    };
    assert_eq!(run(7), run(7));
    assert_ne!(run(7), run(8));

    // batch_augmented = draw from ChaCha8Rng::seed_from_u64(seed), then batch_placed
    let placements = Augment::CROP_FLIP.draw(&mut ChaCha8Rng::seed_from_u64(7), 16);
    let (x, _) = ds
        .batch_placed(&idx, &norm, &placements, &Device::Cpu)
        .unwrap();
    assert_eq!(x.flatten_all().unwrap().to_vec1::<f32>().unwrap(), run(7));

    // The Augmenter's draws depend on (seed, epoch, batch) only.
    let a = Augmenter::new(Augment::CROP_FLIP, 3);
    assert_eq!(a.placements(1, 2, 16), a.placements(1, 2, 16));
    assert_eq!(
        a.placements(1, 2, 16),
        Augmenter::new(Augment::CROP_FLIP, 3).placements(1, 2, 16)
    );
    assert_ne!(a.placements(1, 2, 16), a.placements(2, 1, 16));
    assert_ne!(a.placements(0, 0, 16), a.placements(0, 1, 16));
    assert_ne!(
        a.placements(0, 0, 16),
        Augmenter::new(Augment::CROP_FLIP, 4).placements(0, 0, 16)
    );
    let (x, _) = a.batch(&ds, &idx, &norm, 1, 2, &Device::Cpu).unwrap();
    let (want, _) = ds
        .batch_placed(&idx, &norm, &a.placements(1, 2, 16), &Device::Cpu)
        .unwrap();
    assert_eq!(
        x.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        want.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    );
}

#[test]
fn draws_cover_the_offsets_and_flip_about_half() {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let draws = Augment { pad: 4, flip: true }.draw(&mut rng, 4000);
    let dys: BTreeSet<isize> = draws.iter().map(|p| p.dy).collect();
    let dxs: BTreeSet<isize> = draws.iter().map(|p| p.dx).collect();
    assert_eq!(dys, (-4..=4).collect());
    assert_eq!(dxs, (-4..=4).collect());
    let flips = draws.iter().filter(|p| p.flip).count();
    // Binomial(4000, 1/2): std 31.6, so +-200 is more than 6 std.
    assert!((1800..=2200).contains(&flips), "{flips}");
    let no_flip = Augment {
        pad: 2,
        flip: false,
    }
    .draw(&mut rng, 500);
    assert!(no_flip
        .iter()
        .all(|p| !p.flip && p.dy.abs() <= 2 && p.dx.abs() <= 2));
}

#[test]
fn crops_keep_every_pixel_of_the_overlap() {
    // For any placement, an output pixel inside the overlap equals the source
    // pixel it comes from, and one outside is the normalised zero.
    let ds = noisy(1);
    let norm = Normalization::identity(3);
    let draws = Augment::CROP_FLIP.draw(&mut ChaCha8Rng::seed_from_u64(5), 40);
    for p in draws {
        let (x, _) = ds.batch_placed(&[0], &norm, &[p], &Device::Cpu).unwrap();
        let got: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
        for c in 0..3 {
            for y in 0..8isize {
                for xo in 0..8isize {
                    let xs = if p.flip { 7 - xo } else { xo };
                    let (sy, sx) = (y + p.dy, xs + p.dx);
                    let want = if (0..8).contains(&sy) && (0..8).contains(&sx) {
                        f32::from(ds.images[c * 64 + (sy * 8 + sx) as usize]) / 255.0
                    } else {
                        0.0
                    };
                    assert_eq!(got[c * 64 + (y * 8 + xo) as usize], want, "{p:?}");
                }
            }
        }
    }
}

#[test]
fn placements_must_match_the_batch() {
    let ds = counting();
    let err = ds
        .batch_placed(
            &[0],
            &Normalization::identity(2),
            &[Placement::IDENTITY; 2],
            &Device::Cpu,
        )
        .unwrap_err();
    assert!(matches!(err, DataError::Mismatch(_)), "{err:?}");
    let err = ds
        .batch_augmented(
            &[1],
            &Normalization::identity(2),
            &Augment::CROP_FLIP,
            0,
            &Device::Cpu,
        )
        .unwrap_err();
    assert!(matches!(err, DataError::Invalid(_)), "{err:?}");
}

#[test]
fn augment_serde_round_trip() {
    let json = serde_json::to_string(&Augment::CROP_FLIP).unwrap();
    assert_eq!(json, r#"{"pad":4,"flip":true}"#);
    let back: Augment = serde_json::from_str(&json).unwrap();
    assert_eq!(back, Augment::CROP_FLIP);
}
