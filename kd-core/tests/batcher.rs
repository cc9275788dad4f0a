//! Seeded batching.

use kd_core::Batcher;

fn flat(batches: &[Vec<usize>]) -> Vec<usize> {
    batches.iter().flatten().copied().collect()
}

#[test]
fn every_index_once_per_epoch_with_partial_last_batch() {
    let b = Batcher::new(103, 10, true, 5);
    assert_eq!(b.num_batches(), 11);
    for epoch in 0..3 {
        let batches = b.epoch(epoch);
        assert_eq!(batches.len(), 11);
        assert!(batches[..10].iter().all(|x| x.len() == 10));
        assert_eq!(batches[10].len(), 3);
        let mut all = flat(&batches);
        all.sort_unstable();
        assert_eq!(all, (0..103).collect::<Vec<_>>());
    }
}

#[test]
fn shuffled_epochs_are_reproducible_and_differ() {
    let a = Batcher::new(100, 16, true, 9);
    let b = Batcher::new(100, 16, true, 9);
    assert_eq!(a.epoch(0), b.epoch(0));
    assert_eq!(a.epoch(4), b.epoch(4));
    assert_ne!(flat(&a.epoch(0)), flat(&a.epoch(1)));
    assert_ne!(flat(&a.epoch(0)), (0..100).collect::<Vec<_>>());
    let c = Batcher::new(100, 16, true, 10);
    assert_ne!(a.epoch(0), c.epoch(0));
}

#[test]
fn unshuffled_batches_are_in_order() {
    let b = Batcher::new(7, 3, false, 123);
    assert_eq!(b.epoch(0), vec![vec![0, 1, 2], vec![3, 4, 5], vec![6]]);
    assert_eq!(b.epoch(0), b.epoch(1));
}

#[test]
fn edge_sizes() {
    let empty = Batcher::new(0, 8, true, 0);
    assert_eq!(empty.num_batches(), 0);
    assert!(empty.epoch(0).is_empty());
    let exact = Batcher::new(12, 4, true, 0);
    assert_eq!(exact.num_batches(), 3);
    assert!(exact.epoch(2).iter().all(|x| x.len() == 4));
    let zero = Batcher::new(3, 0, false, 0);
    assert_eq!(zero.num_batches(), 3);
    let big = Batcher::new(5, 64, false, 0);
    assert_eq!(big.epoch(0), vec![vec![0, 1, 2, 3, 4]]);
}
