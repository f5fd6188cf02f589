//! Checkpoint store: round trips, fallback past damaged rounds, content addressing, URLs.

use std::collections::BTreeMap;
use std::path::Path as FsPath;
use std::sync::Arc;

use fl_aggregator::checkpoint::{
    CheckpointError, CheckpointMeta, CheckpointStore, Manifest, Participant, PrivacySpent, Problem,
};
use fl_core::{ClientId, ContentHash, ParamVec, Schema, TensorSpec};
use object_store::path::Path;
use object_store::{ObjectStoreExt as _, PutPayload};

fn schema() -> Arc<Schema> {
    Arc::new(
        Schema::new(vec![
            TensorSpec::new("fc.weight", [3, 4]),
            TensorSpec::new("fc.bias", [3]),
        ])
        .unwrap(),
    )
}

/// Distinct parameters per seed, including values that a text format would not round-trip.
fn params(seed: u32) -> ParamVec {
    let mut values: Vec<f32> = (0..15)
        .map(|i| ((seed % 10_000) * 100 + i) as f32 * 0.1 - 3.0)
        .collect();
    values[0] = f32::from_bits(0x0000_0001); // smallest subnormal
    values[1] = -0.0;
    values[2] = f32::MAX;
    ParamVec::new(schema(), values).unwrap()
}

fn meta(round: u64) -> CheckpointMeta {
    CheckpointMeta::new("test-dao", round, ContentHash::of(b"federation.toml"))
        .with_participants([
            Participant::from(ClientId(1)),
            Participant::new("0x00000000000000000000000000000000000000aa")
                .with_update_hash(ContentHash::of(b"update")),
        ])
        .with_metrics(BTreeMap::from([
            ("accuracy".to_owned(), 0.5 + round as f64 / 100.0),
            ("loss".to_owned(), f64::NAN),
            // serde_json's default float parser reads this one ulp off.
            ("grad_norm".to_owned(), 1.7546217903306627),
            ("delta".to_owned(), -0.0),
            ("tiny".to_owned(), f64::from_bits(1)),
            ("worst".to_owned(), f64::NEG_INFINITY),
        ]))
        .with_created_at("2025-01-01T00:00:00Z")
}

/// A local store in a fresh directory.
fn local() -> (tempfile::TempDir, CheckpointStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::open(dir.path().join("ckpt").to_str().unwrap()).unwrap();
    (dir, store)
}

/// Saves rounds 1..=n with `params(round)`.
async fn save_rounds(store: &CheckpointStore, n: u64) -> Vec<Manifest> {
    let mut out = Vec::new();
    for r in 1..=n {
        out.push(store.save(meta(r), &params(r as u32)).await.unwrap());
    }
    out
}

async fn put(store: &CheckpointStore, path: &Path, bytes: Vec<u8>) {
    store
        .object_store()
        .put(path, PutPayload::from(bytes))
        .await
        .unwrap();
}

async fn get(store: &CheckpointStore, path: &Path) -> Vec<u8> {
    let got = store.object_store().get(path).await.unwrap();
    got.bytes().await.unwrap().to_vec()
}

/// Asserts that two manifests are the same bit for bit. `==` cannot say so: it follows IEEE 754,
/// under which the NaN metric is unequal to itself (and `-0.0` equal to `0.0`).
fn assert_same(a: &Manifest, b: &Manifest) {
    let bits = |m: &Manifest| -> Vec<(String, u64)> {
        m.metrics
            .iter()
            .map(|(k, v)| (k.clone(), v.to_bits()))
            .collect()
    };
    assert_eq!(bits(a), bits(b));
    assert_eq!(
        serde_json::to_string(a).unwrap(),
        serde_json::to_string(b).unwrap()
    );
}

async fn latest_round(store: &CheckpointStore) -> Option<u64> {
    store.latest().await.unwrap().map(|(m, _)| m.round)
}

#[tokio::test]
async fn round_trip_is_bit_exact_on_disk_and_in_memory() {
    let (dir, disk) = local();
    let memory = CheckpointStore::open("memory://").unwrap();
    for store in [&disk, &memory] {
        let p = params(7);
        let saved = store.save(meta(1), &p).await.unwrap();
        assert_eq!(saved.params_cid, p.content_hash());
        assert_eq!(saved.schema_hash, schema().hash());
        let (m, back) = store.load(1).await.unwrap();
        assert_same(&m, &saved);
        assert_same(&m, &store.list().await.unwrap()[0]);
        assert!(m.metrics["loss"].is_nan()); // NaN survives JSON (as a string)
        assert_eq!(m.metrics["grad_norm"], 1.7546217903306627);
        assert!(m.metrics["delta"].is_sign_negative());
        let bits = |p: &ParamVec| p.values().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&back), bits(&p));
        assert_eq!(back.content_hash(), p.content_hash());
        assert!(store.verify(1).await.unwrap().is_ok());
    }
    // The on-disk layout is the documented one, and the parameter file is the raw LE bytes
    // named by their CID.
    let root = dir.path().join("ckpt");
    let p = params(7);
    let file = root.join("params").join(p.content_hash().to_string());
    assert_eq!(std::fs::read(&file).unwrap(), p.to_le_bytes());
    assert!(p.content_hash().to_string().starts_with("bafkrei"));
    let json = std::fs::read_to_string(root.join("rounds/0000000001.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["version"], 1);
    assert_eq!(v["params_cid"], p.content_hash().to_string());
    assert_eq!(v["metrics"]["loss"], "NaN");
    assert_eq!(v["metrics"]["worst"], "-Infinity");
    assert_eq!(v["participants"][0]["id"], "client-1");
    assert!(v.get("anchor").is_none());
}

#[tokio::test]
async fn latest_picks_the_highest_round_and_empty_store_has_none() {
    let (_dir, store) = local();
    assert!(store.latest().await.unwrap().is_none());
    assert!(store.list().await.unwrap().is_empty());
    // Rounds past 9 and past 10 digits sort numerically.
    for r in [1, 2, 10, 9, 12_345_678_901] {
        store.save(meta(r), &params(r as u32)).await.unwrap();
    }
    let (m, p) = store.latest().await.unwrap().unwrap();
    assert_eq!(m.round, 12_345_678_901);
    assert_eq!(p, params(12_345_678_901u64 as u32));
    let listed: Vec<u64> = store
        .list()
        .await
        .unwrap()
        .iter()
        .map(|m| m.round)
        .collect();
    assert_eq!(listed, [1, 2, 9, 10, 12_345_678_901]);
    assert_eq!(store.rounds().await.unwrap(), listed);
}

#[tokio::test]
async fn truncated_params_are_skipped_and_reported() {
    let (_dir, store) = local();
    let saved = save_rounds(&store, 3).await;
    let path = store.params_path(&saved[2].params_cid);
    let mut bytes = get(&store, &path).await;
    bytes.truncate(bytes.len() - 3);
    put(&store, &path, bytes).await;

    assert_eq!(latest_round(&store).await, Some(2));
    let report = store.verify(3).await.unwrap();
    assert!(!report.is_ok());
    assert!(
        report.problems.iter().any(|p| matches!(
            p,
            Problem::ParamsLength {
                expected: 60,
                found: 57,
                ..
            }
        )),
        "{report}"
    );
    assert!(matches!(
        store.load(3).await,
        Err(CheckpointError::Corrupt { round: 3, .. })
    ));
}

#[tokio::test]
async fn flipped_byte_is_skipped_and_reported() {
    let store = CheckpointStore::open("memory://").unwrap();
    let saved = save_rounds(&store, 3).await;
    let path = store.params_path(&saved[2].params_cid);
    let mut bytes = get(&store, &path).await;
    bytes[20] ^= 0x01;
    put(&store, &path, bytes).await;

    assert_eq!(latest_round(&store).await, Some(2));
    let report = store.verify(3).await.unwrap();
    assert_eq!(report.problems.len(), 1, "{report}");
    assert!(
        matches!(report.problems[0], Problem::ParamsHashMismatch { expected, .. } if expected == saved[2].params_cid)
    );
    let err = store.load(3).await.unwrap_err().to_string();
    assert!(err.contains("round 3") && err.contains("damaged"), "{err}");
}

#[tokio::test]
async fn manifest_naming_a_missing_cid_is_skipped_and_reported() {
    let (_dir, store) = local();
    let saved = save_rounds(&store, 3).await;
    let mut m = saved[2].clone();
    m.params_cid = ContentHash::of(b"never stored");
    put(
        &store,
        &store.manifest_path(3),
        serde_json::to_vec(&m).unwrap(),
    )
    .await;

    assert_eq!(latest_round(&store).await, Some(2));
    let report = store.verify(3).await.unwrap();
    assert!(
        matches!(&report.problems[..], [Problem::ParamsMissing { path }] if path.contains("params/bafkrei")),
        "{report}"
    );
    assert_eq!(report.manifest.as_ref().map(|m| m.round), Some(3));
}

#[tokio::test]
async fn garbage_manifests_are_skipped_and_reported() {
    let store = CheckpointStore::open("memory://").unwrap();
    let saved = save_rounds(&store, 2).await;
    let good = serde_json::to_value(&saved[1]).unwrap();
    let mut unknown_field = good.clone();
    unknown_field["surprise"] = 1.into();
    let mut newer = good.clone();
    newer["version"] = 99.into();
    newer["new_field"] = true.into();
    let mut huge_schema = good.clone();
    huge_schema["schema"]["tensors"][0]["shape"] = serde_json::json!([u64::MAX, u64::MAX]);
    // Round 2's manifest, stored as round 8 (so it names its round) with a wrong schema hash.
    let mut bad_schema_hash = good.clone();
    bad_schema_hash["round"] = 8.into();
    bad_schema_hash["schema_hash"] = ContentHash::of(b"other").to_hex().into();
    // Round 2's manifest, intact, copied to round 9.
    let wrong_round = good.clone();

    let cases: Vec<(u64, Vec<u8>)> = vec![
        (3, b"\x00\xffnot json at all".to_vec()),
        (4, b"{\"version\": 1, \"round\": ".to_vec()), // truncated
        (5, serde_json::to_vec(&unknown_field).unwrap()),
        (6, serde_json::to_vec(&newer).unwrap()),
        (7, serde_json::to_vec(&huge_schema).unwrap()),
        (8, serde_json::to_vec(&bad_schema_hash).unwrap()),
        (9, serde_json::to_vec(&wrong_round).unwrap()),
        (10, Vec::new()),
        // A huge schema shadowed by a second `schema` key, which a generic JSON value keeps.
        (11, {
            let text = serde_json::to_string(&good).unwrap();
            let huge = format!(
                r#"{{"schema":{{"tensors":[{{"name":"w","shape":[{0},{0}]}}]}},"#,
                u64::MAX
            );
            format!("{huge}{}", &text[1..]).into_bytes()
        }),
    ];
    for (round, bytes) in &cases {
        put(&store, &store.manifest_path(*round), bytes.clone()).await;
    }
    // A stray object and a staging-like name under rounds/ are ignored.
    put(&store, &Path::from("rounds/notes.txt"), b"hi".to_vec()).await;

    assert_eq!(latest_round(&store).await, Some(2));
    for (round, _) in &cases {
        let report = store.verify(*round).await.unwrap();
        assert!(!report.is_ok(), "round {round} should be damaged");
        // Each report names exactly what is wrong, and only that.
        let expected = match round {
            6 => matches!(
                report.problems[..],
                [Problem::UnsupportedVersion { found: 99, .. }]
            ),
            8 => matches!(report.problems[..], [Problem::SchemaHashMismatch { .. }]),
            9 => matches!(
                report.problems[..],
                [Problem::RoundMismatch {
                    named: 9,
                    recorded: 2
                }]
            ),
            _ => matches!(report.problems[..], [Problem::ManifestUnreadable { .. }]),
        };
        assert!(expected, "round {round}: {report}");
        assert!(
            report
                .to_string()
                .starts_with(&format!("round {round} DAMAGED: ")),
            "{report}"
        );
        assert!(matches!(
            store.load(*round).await,
            Err(CheckpointError::Corrupt { round: r, .. }) if r == *round
        ));
    }
    // `list` reads manifests only: round 8 parses and names its round (its schema hash is for
    // `verify` to check); round 9 records round 2 and is skipped.
    let listed: Vec<u64> = store
        .list()
        .await
        .unwrap()
        .iter()
        .map(|m| m.round)
        .collect();
    assert_eq!(listed, [1, 2, 8]);
    assert_eq!(store.rounds().await.unwrap(), (1..=11).collect::<Vec<_>>());
}

#[tokio::test]
async fn oversized_objects_are_reported_not_read() {
    let store = CheckpointStore::open("memory://").unwrap();
    let saved = save_rounds(&store, 2).await;
    // A manifest past the size limit (64 MiB), and round 2's parameters grown past their schema.
    put(&store, &store.manifest_path(3), vec![b' '; (64 << 20) + 1]).await;
    let path = store.params_path(&saved[1].params_cid);
    let mut bytes = get(&store, &path).await;
    bytes.resize(1 << 20, 0);
    put(&store, &path, bytes).await;

    assert_eq!(latest_round(&store).await, Some(1));
    let report = store.verify(3).await.unwrap();
    assert!(
        matches!(&report.problems[..], [Problem::ManifestUnreadable { reason, .. }] if reason.contains("67108865 bytes")),
        "{report}"
    );
    let report = store.verify(2).await.unwrap();
    assert!(
        matches!(
            report.problems[..],
            [Problem::ParamsLength {
                expected: 60,
                found: 1_048_576,
                ..
            }]
        ),
        "{report}"
    );
    let listed: Vec<u64> = store
        .list()
        .await
        .unwrap()
        .iter()
        .map(|m| m.round)
        .collect();
    assert_eq!(listed, [1, 2]);
}

#[cfg(unix)]
#[tokio::test]
async fn a_file_name_that_is_not_utf8_stops_listing_with_a_clear_error() {
    use std::os::unix::ffi::OsStrExt as _;
    let (dir, store) = local();
    save_rounds(&store, 2).await;
    let name = std::ffi::OsStr::from_bytes(b"stray-\xff.json");
    std::fs::write(dir.path().join("ckpt/rounds").join(name), b"{}").unwrap();
    // The local store cannot name such a file, so listing fails: resuming stops with an error
    // that says where and what to do, rather than guessing which rounds exist.
    let err = store.latest().await.unwrap_err();
    assert!(
        matches!(&err, CheckpointError::Store { op: "list", path, .. } if path == "rounds"),
        "{err}"
    );
    assert!(err.to_string().contains("move that file out"), "{err}");
}

#[tokio::test]
async fn crash_between_params_and_manifest_leaves_the_previous_round() {
    let (_dir, store) = local();
    save_rounds(&store, 2).await;
    // Round 3's parameters were written, then the process died before its manifest.
    let p3 = params(3);
    put(
        &store,
        &store.params_path(&p3.content_hash()),
        p3.to_le_bytes(),
    )
    .await;
    // ... and a staging file of the manifest write was left behind (as LocalFileSystem names them).
    let staging = _dir.path().join("ckpt/rounds/0000000003.json#1");
    std::fs::write(&staging, b"{\"version\": 1, \"rou").unwrap();
    assert_eq!(latest_round(&store).await, Some(2));
    assert_eq!(store.rounds().await.unwrap(), [1, 2]);

    // The resumed run re-does round 3 and saves it over the orphan parameters.
    let m = store.save(meta(3), &p3).await.unwrap();
    assert_eq!(m.params_cid, p3.content_hash());
    assert_eq!(latest_round(&store).await, Some(3));
}

#[tokio::test]
async fn same_params_share_one_object_and_rounds_are_not_overwritten() {
    let (dir, store) = local();
    let p = params(1);
    let a = store.save(meta(1), &p).await.unwrap();
    let b = store.save(meta(2), &p).await.unwrap();
    assert_eq!(a.params_cid, b.params_cid);
    let files: Vec<_> = std::fs::read_dir(dir.path().join("ckpt/params"))
        .unwrap()
        .collect();
    assert_eq!(files.len(), 1);
    assert!(store.verify(1).await.unwrap().is_ok());
    assert!(store.verify(2).await.unwrap().is_ok());

    // An intact round is never overwritten.
    let err = store.save(meta(2), &params(9)).await.unwrap_err();
    assert!(
        matches!(err, CheckpointError::RoundExists { round: 2, .. }),
        "{err}"
    );
    assert_eq!(store.load(2).await.unwrap().1, p);
}

#[tokio::test]
async fn saving_repairs_damaged_objects() {
    let store = CheckpointStore::open("memory://").unwrap();
    let p = params(1);
    store.save(meta(1), &p).await.unwrap();
    // Damage round 1's parameters and write a garbage manifest for round 2.
    put(&store, &store.params_path(&p.content_hash()), vec![0; 60]).await;
    put(&store, &store.manifest_path(2), b"garbage".to_vec()).await;
    assert_eq!(latest_round(&store).await, None);
    // Saving round 2 with the same parameters rewrites both damaged objects.
    store.save(meta(2), &p).await.unwrap();
    assert!(store.verify(1).await.unwrap().is_ok());
    assert!(store.verify(2).await.unwrap().is_ok());
    assert_eq!(latest_round(&store).await, Some(2));
}

#[tokio::test]
async fn missing_rounds_are_errors_for_load_and_verify() {
    let store = CheckpointStore::open("memory://").unwrap();
    save_rounds(&store, 1).await;
    for err in [
        store.load(5).await.unwrap_err(),
        store.verify(5).await.unwrap_err(),
    ] {
        assert!(
            matches!(err, CheckpointError::RoundNotFound { round: 5, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("rounds/0000000005.json"), "{err}");
    }
}

#[tokio::test]
async fn optional_fields_round_trip() {
    let store = CheckpointStore::open("memory://fed/one").unwrap();
    let mut m = meta(1).with_privacy(PrivacySpent {
        epsilon: f64::INFINITY,
        delta: 1e-5,
        rounds: 7,
    });
    m.anchor = Some(serde_json::json!({"chain_id": 31337, "tx": "0xabc"}));
    m.created_at = None; // taken from the clock
    let saved = store.save(m, &params(1)).await.unwrap();
    assert_eq!(saved.created_at.len(), "2025-01-01T00:00:00Z".len());
    assert!(saved.created_at.ends_with('Z'));
    let (back, _) = store.load(1).await.unwrap();
    assert_eq!(back.privacy.unwrap().epsilon, f64::INFINITY);
    assert_eq!(back.privacy.unwrap().rounds, 7);
    assert_eq!(back.anchor, saved.anchor);
    assert_eq!(
        store.manifest_path(1).as_ref(),
        "fed/one/rounds/0000000001.json"
    );
}

#[test]
fn urls() {
    let dir = tempfile::tempdir().unwrap();
    // file:// with an absolute path creates the directory.
    let target = dir.path().join("a b").join("c");
    let url = format!("file://{}", target.to_str().unwrap().replace(' ', "%20"));
    CheckpointStore::open(&url).unwrap();
    assert!(FsPath::new(&target).is_dir());

    let err = CheckpointStore::open("ftp://example.com/x").unwrap_err();
    assert!(matches!(err, CheckpointError::InvalidUrl { .. }), "{err}");
    assert!(err.to_string().contains("unknown scheme `ftp`"), "{err}");
    assert!(matches!(
        CheckpointStore::open("file://relative/dir"),
        Err(CheckpointError::InvalidUrl { .. })
    ));
    assert!(matches!(
        CheckpointStore::open(""),
        Err(CheckpointError::InvalidUrl { .. })
    ));
    #[cfg(not(feature = "s3"))]
    {
        let err = CheckpointStore::open("s3://bucket/prefix").unwrap_err();
        assert!(
            matches!(err, CheckpointError::FeatureDisabled { feature: "s3", .. }),
            "{err}"
        );
        assert!(err.to_string().contains("--features s3"), "{err}");
    }
    #[cfg(not(feature = "gcs"))]
    assert!(matches!(
        CheckpointStore::open("gs://bucket"),
        Err(CheckpointError::FeatureDisabled { feature: "gcs", .. })
    ));
    #[cfg(not(feature = "azure"))]
    assert!(matches!(
        CheckpointStore::open("az://container/p"),
        Err(CheckpointError::FeatureDisabled {
            feature: "azure",
            ..
        })
    ));
    // A file where the directory should be.
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    assert!(matches!(
        CheckpointStore::open(file.to_str().unwrap()),
        Err(CheckpointError::CreateDir { .. })
    ));
}

#[test]
fn futures_are_send() {
    fn assert_send<T: Send>(_: T) {}
    let store = CheckpointStore::open("memory://").unwrap();
    let p = params(1);
    assert_send(store.save(meta(1), &p));
    assert_send(store.latest());
    assert_send(store.load(1));
    assert_send(store.verify(1));
    assert_send(store.list());
}

#[tokio::test]
async fn parameters_are_stored_and_reloaded_by_cid() {
    let (_dir, store) = local();
    let p = params(7);
    let cid = store.save_params(&p).await.unwrap();
    assert_eq!(cid, p.content_hash());
    assert_eq!(store.load_params(&cid, schema()).await.unwrap(), p);
    // Missing, wrong schema length and damaged objects are errors naming the CID.
    let other = params(8).content_hash();
    let e = store.load_params(&other, schema()).await.unwrap_err();
    assert!(
        matches!(e, CheckpointError::ParamsUnavailable { .. }),
        "{e}"
    );
    let small = Arc::new(Schema::new(vec![TensorSpec::new("w", [1])]).unwrap());
    assert!(store.load_params(&cid, small).await.is_err());
    let mut bytes = get(&store, &store.params_path(&cid)).await;
    bytes[0] ^= 1;
    put(&store, &store.params_path(&cid), bytes).await;
    let e = store.load_params(&cid, schema()).await.unwrap_err();
    assert!(e.to_string().contains("does not hash"), "{e}");
}
