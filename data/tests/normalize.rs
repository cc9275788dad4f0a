//! Normalisation statistics and the tensors built by `Dataset::batch`.

use candle_core::Device;
use kdprune_data::{DataError, Dataset, Normalization};

/// Two samples of 2 channels x 1x2 pixels, max value 4.
/// sample 0: c0 [0, 4], c1 [2, 1]; sample 1: c0 [1, 3], c1 [4, 0].
fn two_channel() -> Dataset {
    Dataset {
        name: "two".into(),
        images: vec![0, 4, 2, 1, 1, 3, 4, 0],
        labels: vec![5, 7],
        channels: 2,
        height: 1,
        width: 2,
        num_classes: 10,
        max_value: 4.0,
    }
}

#[test]
fn batch_applies_the_normalisation_formula() {
    let ds = two_channel();
    let norm = Normalization {
        mean: vec![0.5, 0.25],
        std: vec![0.25, 2.0],
    };
    let (x, y) = ds.batch(&[1, 0], &norm, &Device::Cpu).unwrap();
    assert_eq!(x.dims(), &[2, 2, 1, 2]);
    assert_eq!(x.dtype(), candle_core::DType::F32);
    assert_eq!(y.dtype(), candle_core::DType::U32);
    // px = [[[1, 3], [4, 0]], [[0, 4], [2, 1]]]; mean = [0.5, 0.25]; std = [0.25, 2.0]
    // print([[(p / 4 - mean[c]) / std[c] for p in s[c]] for s in px for c in range(2)])
    // -> [[-1.0, 1.0], [0.375, -0.125], [-2.0, 2.0], [0.125, 0.0]]
    let got: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
    let want = [-1.0, 1.0, 0.375, -0.125, -2.0, 2.0, 0.125, 0.0];
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() < 1e-6, "{got:?}");
    }
    assert_eq!(y.to_vec1::<u32>().unwrap(), vec![7, 5]);
}

#[test]
fn identity_batch_is_scaled_pixels() {
    let ds = two_channel();
    let (x, _) = ds
        .batch(&[0], &Normalization::identity(2), &Device::Cpu)
        .unwrap();
    // [p / 4 for p in [0, 4, 2, 1]]
    let got: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(got, vec![0.0, 1.0, 0.5, 0.25]);
}

#[test]
fn fit_gives_per_channel_mean_and_population_std() {
    // import statistics as s
    // print(s.mean([0, 1, .25, .75]), s.pstdev([0, 1, .25, .75]))    # 0.5 0.39528470752104744
    // print(s.mean([.5, .25, 1, 0]), s.pstdev([.5, .25, 1, 0]))      # 0.4375 0.369754986443726
    let norm = Normalization::fit(&two_channel());
    assert!((norm.mean[0] - 0.5).abs() < 1e-7);
    assert!((norm.std[0] - 0.395_284_7).abs() < 1e-6);
    assert!((norm.mean[1] - 0.4375).abs() < 1e-7);
    assert!((norm.std[1] - 0.369_755).abs() < 1e-6);
    // the fitted statistics make the batch zero-mean and unit-variance per channel
    let (x, _) = two_channel().batch(&[0, 1], &norm, &Device::Cpu).unwrap();
    let c0 = x.narrow(1, 0, 1).unwrap().flatten_all().unwrap();
    let mean: f32 = c0.mean_all().unwrap().to_scalar().unwrap();
    let var: f32 = c0.sqr().unwrap().mean_all().unwrap().to_scalar().unwrap();
    assert!(
        mean.abs() < 1e-6 && (var - 1.0).abs() < 1e-5,
        "{mean} {var}"
    );
}

#[test]
fn fit_floors_the_std_of_a_constant_channel() {
    let mut ds = two_channel();
    ds.images = vec![3; 8];
    let norm = Normalization::fit(&ds);
    assert_eq!(norm.mean, vec![0.75, 0.75]);
    assert_eq!(norm.std, vec![1e-6, 1e-6]);
}

#[test]
fn batch_rejects_bad_arguments() {
    let ds = two_channel();
    let err = ds
        .batch(&[0], &Normalization::identity(1), &Device::Cpu)
        .unwrap_err();
    assert!(matches!(err, DataError::Mismatch(_)), "{err:?}");
    let err = ds
        .batch(&[2], &Normalization::identity(2), &Device::Cpu)
        .unwrap_err();
    assert!(matches!(err, DataError::Invalid(_)), "{err:?}");
    let zero_std = Normalization {
        mean: vec![0.0, 0.0],
        std: vec![1.0, 0.0],
    };
    let err = ds.batch(&[0], &zero_std, &Device::Cpu).unwrap_err();
    assert!(matches!(err, DataError::Invalid(_)), "{err:?}");
}

#[test]
fn subset_keeps_order_and_labels() {
    let ds = two_channel();
    let s = ds.subset(&[1, 1, 0]);
    assert_eq!(s.len(), 3);
    assert_eq!(s.images, vec![1, 3, 4, 0, 1, 3, 4, 0, 0, 4, 2, 1]);
    assert_eq!(s.labels, vec![7, 7, 5]);
    assert_eq!((s.channels, s.height, s.width), (2, 1, 2));
}

#[test]
fn normalization_serde_round_trip() {
    let a = Normalization {
        mean: vec![0.5, 0.25],
        std: vec![0.25, 2.0],
    };
    let json = serde_json::to_string(&a).unwrap();
    assert_eq!(json, r#"{"mean":[0.5,0.25],"std":[0.25,2.0]}"#);
    let b: Normalization = serde_json::from_str(&json).unwrap();
    assert_eq!(a, b);
    assert_eq!(
        Normalization::identity(3),
        Normalization {
            mean: vec![0.0; 3],
            std: vec![1.0; 3]
        }
    );
}
