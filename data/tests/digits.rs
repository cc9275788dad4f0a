//! The embedded digits dataset.

use kdprune_data::{digits, Normalization};

#[test]
fn digits_has_all_samples_and_shape() {
    let ds = digits().unwrap();
    assert_eq!(ds.name, "digits");
    assert_eq!(ds.len(), 1797);
    assert!(!ds.is_empty());
    assert_eq!((ds.channels, ds.height, ds.width), (1, 8, 8));
    assert_eq!(ds.sample_dim(), 64);
    assert_eq!(ds.images.len(), 1797 * 64);
    assert_eq!(ds.num_classes, 10);
    assert_eq!(ds.max_value, 16.0);
    assert!(ds.images.iter().all(|&p| p <= 16));
    assert!(ds.labels.iter().all(|&l| l < 10));
}

#[test]
fn digits_class_counts() {
    // import gzip, collections
    // rows = [[int(v) for v in l.split(',')] for l in gzip.open('assets/digits.csv.gz', 'rt')]
    // print(sorted(collections.Counter(r[64] for r in rows).items()))
    let expected = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180];
    let ds = digits().unwrap();
    let mut counts = [0usize; 10];
    for &l in &ds.labels {
        counts[l as usize] += 1;
    }
    assert_eq!(counts, expected);
}

#[test]
fn digits_known_rows() {
    // import gzip
    // rows = [[int(v) for v in l.split(',')] for l in gzip.open('assets/digits.csv.gz', 'rt')]
    // print(rows[0]); print(rows[1000]); print(rows[-1])
    // print(sum(sum(r[:64]) for r in rows))
    let row0: [u8; 64] = [
        0, 0, 5, 13, 9, 1, 0, 0, 0, 0, 13, 15, 10, 15, 5, 0, 0, 3, 15, 2, 0, 11, 8, 0, 0, 4, 12, 0,
        0, 8, 8, 0, 0, 5, 8, 0, 0, 9, 8, 0, 0, 4, 11, 0, 1, 12, 7, 0, 0, 2, 14, 5, 10, 12, 0, 0, 0,
        0, 6, 13, 10, 0, 0, 0,
    ];
    let row1000: [u8; 64] = [
        0, 0, 1, 14, 2, 0, 0, 0, 0, 0, 0, 16, 5, 0, 0, 0, 0, 0, 0, 14, 10, 0, 0, 0, 0, 0, 0, 11,
        16, 1, 0, 0, 0, 0, 0, 3, 14, 6, 0, 0, 0, 0, 0, 0, 8, 12, 0, 0, 0, 0, 10, 14, 13, 16, 8, 3,
        0, 0, 2, 11, 12, 15, 16, 15,
    ];
    let row_last: [u8; 64] = [
        0, 0, 10, 14, 8, 1, 0, 0, 0, 2, 16, 14, 6, 1, 0, 0, 0, 0, 15, 15, 8, 15, 0, 0, 0, 0, 5, 16,
        16, 10, 0, 0, 0, 0, 12, 15, 15, 12, 0, 0, 0, 4, 16, 6, 4, 16, 6, 0, 0, 8, 16, 10, 8, 16, 8,
        0, 0, 1, 8, 12, 14, 12, 1, 0,
    ];
    let ds = digits().unwrap();
    assert_eq!(ds.sample(0).unwrap(), &row0);
    assert_eq!(ds.labels[0], 0);
    assert_eq!(ds.sample(1000).unwrap(), &row1000);
    assert_eq!(ds.labels[1000], 1);
    assert_eq!(ds.sample(1796).unwrap(), &row_last);
    assert_eq!(ds.labels[1796], 8);
    assert!(ds.sample(1797).is_none());
    let total: u64 = ds.images.iter().map(|&p| u64::from(p)).sum();
    assert_eq!(total, 561_718);
}

#[test]
fn digits_normalization_fit() {
    // import gzip, statistics
    // rows = [[int(v) for v in l.split(',')] for l in gzip.open('assets/digits.csv.gz', 'rt')]
    // px = [v / 16 for r in rows for v in r[:64]]
    // print(statistics.mean(px), statistics.pstdev(px))  # 0.30526028624095713 0.37604922179201483
    let norm = Normalization::fit(&digits().unwrap());
    assert_eq!(norm.mean.len(), 1);
    assert!((norm.mean[0] - 0.305_260_3).abs() < 1e-6, "{:?}", norm);
    assert!((norm.std[0] - 0.376_049_2).abs() < 1e-6, "{:?}", norm);
}
