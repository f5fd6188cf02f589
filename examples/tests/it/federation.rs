//! The digits federation end to end with real burn training.

use examples::digits::{self, DigitsConfig};
use fl_client::Trainer;
use fl_core::{FitConfig, derive_seed};

fn small(seed: u64) -> DigitsConfig {
    DigitsConfig {
        clients: 4,
        rounds: 2,
        seed,
        workers: 2,
        ..DigitsConfig::default()
    }
}

#[test]
fn one_seed_gives_one_final_model() {
    let run = |seed| {
        let config = small(seed);
        let prepared = digits::prepare(&config).unwrap();
        digits::run_federated(&config, prepared, |_| {}).unwrap()
    };
    let a = run(11);
    let b = run(11);
    assert_eq!(a.final_hash, b.final_hash);
    assert_eq!(a.records.len(), 2);
    assert_eq!(
        a.records.iter().map(|r| r.accuracy).collect::<Vec<_>>(),
        b.records.iter().map(|r| r.accuracy).collect::<Vec<_>>()
    );
    assert_ne!(
        run(12).final_hash,
        a.final_hash,
        "another seed, another model"
    );
}

#[test]
fn fedavg_with_one_client_equals_local_training() {
    let config = DigitsConfig {
        clients: 1,
        rounds: 1,
        seed: 5,
        workers: 1,
        ..DigitsConfig::default()
    };
    let federated = {
        let prepared = digits::prepare(&config).unwrap();
        digits::run_federated(&config, prepared, |_| {}).unwrap()
    };

    // The same member trains alone, from the same start, on the same data order.
    let mut prepared = digits::prepare(&config).unwrap();
    let mut alone = prepared.trainers.remove(0);
    alone.set_parameters(&prepared.initial).unwrap();
    let shuffle_seed = derive_seed(derive_seed(config.seed, "shuffle", 1), "client", 0);
    alone
        .fit(&FitConfig {
            shuffle_seed,
            ..config.fit.clone()
        })
        .unwrap();
    assert_eq!(alone.get_parameters().content_hash(), federated.final_hash);
}

#[test]
fn federated_training_learns() {
    let config = DigitsConfig {
        clients: 5,
        rounds: 5,
        workers: 2,
        ..DigitsConfig::default()
    };
    let prepared = digits::prepare(&config).unwrap();
    let mut seen = Vec::new();
    let result = digits::run_federated(&config, prepared, |r| seen.push(r.round)).unwrap();
    assert_eq!(seen, vec![1, 2, 3, 4, 5]);
    assert!(
        result.final_accuracy > 0.8,
        "5 rounds should get well past chance, got {}",
        result.final_accuracy
    );
    assert!(
        result
            .records
            .iter()
            .all(|r| r.participants == 5 && r.dropped == 0)
    );
}

/// The Fashion-MNIST sample shipped in `fl-client` (2,000 training and 500 test images).
fn fashion_sample(train_limit: Option<usize>, test_limit: Option<usize>) -> digits::ImageSource {
    digits::ImageSource::Idx {
        dir: std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fl-client/data/fashion-mnist-sample"),
        train_limit,
        test_limit,
    }
}

#[test]
fn a_cnn_learns_fashion_mnist_across_members() {
    let config = DigitsConfig {
        clients: 4,
        rounds: 3,
        workers: 2,
        images: fashion_sample(Some(1_200), Some(300)),
        model: fl_client::ModelSpec::Cnn { channels: 4 },
        fit: FitConfig {
            local_epochs: 1,
            batch_size: 32,
            learning_rate: 0.01,
            ..FitConfig::default()
        },
        ..DigitsConfig::default()
    };
    let prepared = digits::prepare(&config).unwrap();
    assert_eq!(prepared.sizes.iter().sum::<usize>(), 1_200);
    let result = digits::run_federated(&config, prepared, |_| {}).unwrap();
    assert!(
        result.final_accuracy > 0.55,
        "3 rounds of a small CNN on 1,200 images should be far past chance (10%), got {}",
        result.final_accuracy
    );
}

#[test]
fn an_idx_split_names_the_images_each_member_holds() {
    let config = DigitsConfig {
        clients: 5,
        images: fashion_sample(Some(1_000), Some(200)),
        partition: fl_client::federation::PartitionKind::Classes,
        classes_per_member: 2,
        ..DigitsConfig::default()
    };
    let split = config.split().unwrap();
    let members = split
        .member_indices
        .expect("an IDX split keeps its indices");
    let test = split.test_indices.expect("and the test indices");
    assert_eq!(test.len(), 200);
    let mut all: Vec<usize> = members.iter().flatten().copied().collect();
    assert_eq!(all.len(), 1_000);
    all.sort_unstable();
    all.dedup();
    assert_eq!(
        all.len(),
        1_000,
        "every sampled image goes to exactly one member"
    );
    assert!(all.iter().all(|&i| i < 2_000));
    // The indices name the very images (and labels) each member holds.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fl-client/data/fashion-mnist-sample");
    let file = fl_client::data::idx::load(
        dir.join("train-images-idx3-ubyte.gz"),
        dir.join("train-labels-idx1-ubyte.gz"),
    )
    .unwrap();
    for (data, indices) in split.members.iter().zip(&members) {
        let from_file = file.subset(indices).unwrap();
        assert_eq!(data.labels(), from_file.labels());
        assert_eq!(data.features(), from_file.features());
        let classes = data.class_counts().iter().filter(|&&c| c > 0).count();
        assert!(classes <= 2, "two classes per member, got {classes}");
    }
    // Same seed, same split.
    assert_eq!(config.split().unwrap().member_indices.unwrap(), members);
}

#[test]
fn a_bad_idx_source_is_refused_with_a_clear_error() {
    let with = |images| DigitsConfig {
        clients: 2,
        images,
        ..DigitsConfig::default()
    };
    let err = with(fashion_sample(Some(5_000), None)).split().unwrap_err();
    assert!(err.to_string().contains("train_limit = 5000"), "{err}");
    let err = with(fashion_sample(None, Some(0))).split().unwrap_err();
    assert!(err.to_string().contains("test_limit = 0"), "{err}");
    let err = with(digits::ImageSource::Idx {
        dir: "/nonexistent/fashion".into(),
        train_limit: None,
        test_limit: None,
    })
    .split()
    .unwrap_err();
    assert!(
        err.to_string().contains("train-images-idx3-ubyte")
            && err.to_string().contains("dataset-fashion-mnist"),
        "{err}"
    );
    // A truncated file: the IDX reader's error, not a panic.
    let dir = tempfile::tempdir().unwrap();
    let sample = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fl-client/data/fashion-mnist-sample");
    for name in [
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ] {
        std::fs::copy(sample.join(name), dir.path().join(name)).unwrap();
    }
    let whole = std::fs::read(sample.join("train-images-idx3-ubyte.gz")).unwrap();
    std::fs::write(
        dir.path().join("train-images-idx3-ubyte.gz"),
        &whole[..whole.len() / 2],
    )
    .unwrap();
    let err = with(digits::ImageSource::Idx {
        dir: dir.path().to_path_buf(),
        train_limit: None,
        test_limit: None,
    })
    .split()
    .unwrap_err();
    assert!(err.to_string().contains("train-images"), "{err}");
}
