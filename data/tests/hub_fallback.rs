//! Online mode without a reachable Hub falls back to the cache. A test binary of
//! its own: it points `HF_ENDPOINT` at a closed local port, and no other test
//! may read the environment meanwhile.

mod common;

use common::{png_rgb, pseudo_bytes, put_in_hf_cache, write_hub_parquet};
use kdprune_data::{load_from_hub, DataError, DatasetName, HubOptions};

#[test]
fn unreachable_hub_falls_back_to_the_cache() {
    // Bind an ephemeral port, then free it: connections to it are refused.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    std::env::set_var("HF_ENDPOINT", format!("http://127.0.0.1:{port}"));

    let scratch = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let chw = pseudo_bytes(4, 3072);
    let files = ["train", "test"].map(|s| {
        let file = scratch.path().join(format!("{s}.parquet"));
        write_hub_parquet(
            &file,
            "img",
            &[png_rgb(&chw, 32, 32)],
            &[("label", vec![6])],
        );
        (format!("plain_text/{s}-00000-of-00001.parquet"), file)
    });
    let online = |cache: &std::path::Path| HubOptions {
        cache_dir: Some(cache.to_path_buf()),
        offline: false,
        revision: None,
    };

    // Nothing cached: the connection error is reported.
    let empty = tempfile::tempdir().unwrap();
    let err = load_from_hub(DatasetName::Cifar10, &online(empty.path())).unwrap_err();
    assert!(matches!(err, DataError::Hub { .. }), "{err:?}");
    assert!(err.to_string().contains("uoft-cs/cifar10"), "{err}");

    // Cached: the snapshot is used.
    put_in_hf_cache(cache.path(), "uoft-cs/cifar10", &files);
    let split = load_from_hub(DatasetName::Cifar10, &online(cache.path())).unwrap();
    assert_eq!(split.train.images, chw);
    assert_eq!(split.test.labels, vec![6]);
}
