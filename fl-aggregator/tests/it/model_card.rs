//! A published proposal model: its card is stored content-addressed next to the parameters,
//! named by the manifest, verified with the checkpoint, anchored as a leaf of the participants
//! root, and what `fl_client::predict` loads; a swapped or damaged card is refused.

use std::collections::BTreeMap;

use fl_aggregator::anchoring::chain_anchor::Verdict;
use fl_aggregator::anchoring::{
    ChainSettings, RegistryReader, RegistrySource, RoundAnchorer, model_card_leaf_address,
    participants, verify_checkpoint,
};
use fl_aggregator::checkpoint::{
    CheckpointError, CheckpointMeta, CheckpointStore, Manifest, Participant, Problem,
};
use fl_client::DeviceSpec;
use fl_client::model_card::{ModelCard, TrainingData};
use fl_client::predict::{PredictError, Predictor, ProposalInput};
use fl_client::text::HashingConfig;
use fl_client::trainer::proposals::{EncodedProposals, ProposalModelSpec, ProposalTrainer};
use fl_core::{ContentHash, ParamVec, Trainer};

/// A small proposal model's initial parameters and their card.
fn model() -> (ModelCard, ParamVec) {
    let spec = ProposalModelSpec {
        featurizer: HashingConfig {
            buckets_log2: 9,
            ..Default::default()
        },
        dim: 4,
        ..Default::default()
    };
    let trainer =
        ProposalTrainer::new(&spec, DeviceSpec::Cpu, EncodedProposals::new(), None, 1).unwrap();
    let params = trainer.get_parameters();
    let training = TrainingData {
        corpus: "none".into(),
        corpus_cid: ContentHash::of(b"corpus"),
        sources: Vec::new(),
        split: "none".into(),
        split_cid: ContentHash::of(b"split"),
        communities: BTreeMap::new(),
        procedure: "initial parameters".into(),
    };
    let metrics = BTreeMap::from([("accuracy".to_string(), 0.5)]);
    let card = ModelCard::new(
        spec,
        training,
        metrics,
        params.schema().hash(),
        params.content_hash(),
    );
    (card, params)
}

/// Saves round 1 with `card` stored and named by the manifest.
async fn publish(store: &CheckpointStore, card: &ModelCard, params: &ParamVec) -> Manifest {
    let cid = store
        .put_card(card.to_canonical_json().unwrap())
        .await
        .unwrap();
    assert_eq!(cid, card.cid().unwrap());
    let meta = CheckpointMeta::new("cards", 1, ContentHash::of(b"config"))
        .with_participants([Participant::new("client-0")])
        .with_model_card(cid);
    store.save(meta, params).await.unwrap()
}

#[tokio::test]
async fn a_card_is_stored_named_anchored_and_loaded_with_its_model() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = dir.path().join("checkpoints");
    let store = CheckpointStore::open(&checkpoints.to_string_lossy()).unwrap();
    let (card, params) = model();
    let manifest = publish(&store, &card, &params).await;
    let card_cid = card.cid().unwrap();
    assert_eq!(manifest.model_card, Some(card_cid));
    assert!(store.verify(1).await.unwrap().is_ok());
    let bytes = store.card_bytes(&card_cid).await.unwrap();
    assert_eq!(
        ModelCard::from_verified_bytes(&bytes, &card_cid).unwrap(),
        card
    );

    // The manifest's JSON names the card by CID; one written before cards existed still loads.
    let json = serde_json::to_value(&manifest).unwrap();
    assert_eq!(json["model_card"], card_cid.to_string());
    let mut old = json.clone();
    old.as_object_mut().unwrap().remove("model_card");
    let old = Manifest::from_json("old", &serde_json::to_vec(&old).unwrap()).unwrap();
    assert_eq!(old.model_card, None);

    // The card is a leaf of the anchored root: a manifest naming another card does not verify.
    assert!(participants(&manifest).contains(&(model_card_leaf_address(), *card_cid.as_bytes())));
    let settings = ChainSettings::embedded(dir.path().to_owned());
    let mut anchorer = RoundAnchorer::open(&settings).unwrap();
    anchorer
        .checkpoint_written(&store, &manifest)
        .await
        .unwrap();
    drop(anchorer);
    let reader = RegistryReader::open(&RegistrySource::from_settings(&settings)).unwrap();
    let anchored = store.manifest(1).await.unwrap();
    let bytes = store.params_bytes(&anchored).await.unwrap();
    let report = verify_checkpoint(reader.chain(), &anchored, &bytes, None)
        .await
        .unwrap();
    assert!(report.is_valid(), "{report}");
    assert!(
        report.to_string().contains(&card_cid.to_string()),
        "{report}"
    );
    let mut swapped = anchored.clone();
    swapped.model_card = Some(ContentHash::of(b"another card"));
    let report = verify_checkpoint(reader.chain(), &swapped, &bytes, None)
        .await
        .unwrap();
    assert!(
        matches!(report.verdict, Verdict::ParticipantsMismatch { .. }),
        "{report}"
    );

    // What an inference node loads: the run folder, the store or the manifest.
    let input = ProposalInput {
        community: "ethereum".into(),
        id: "EIP-1".into(),
        title: "A title".into(),
        text: "Some text".into(),
    };
    let manifest_path = checkpoints.join("rounds").join("0000000001.json");
    let mut seen = Vec::new();
    for path in [dir.path(), checkpoints.as_path(), manifest_path.as_path()] {
        let predictor = Predictor::from_manifest(path).unwrap();
        assert_eq!(predictor.model(), params.content_hash().to_string());
        seen.push(predictor.predict(std::slice::from_ref(&input)).unwrap());
    }
    assert!(seen.iter().all(|p| *p == seen[0]));
}

#[tokio::test]
async fn a_damaged_or_missing_card_is_reported_and_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::open(&dir.path().to_string_lossy()).unwrap();
    let (card, params) = model();
    publish(&store, &card, &params).await;
    let cid = card.cid().unwrap();
    let path = dir.path().join("cards").join(format!("{cid}.json"));
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("\"accuracy\":0.5", "\"accuracy\":0.9")).unwrap();

    let report = store.verify(1).await.unwrap();
    assert!(
        matches!(report.problems.as_slice(), [Problem::CardDamaged { .. }]),
        "{report}"
    );
    assert!(matches!(
        store.card_bytes(&cid).await,
        Err(CheckpointError::CardUnavailable { .. })
    ));
    let err = Predictor::from_manifest(dir.path()).unwrap_err();
    assert!(matches!(err, PredictError::Card { .. }), "{err}");
    assert!(err.to_string().contains("altered"), "{err}");
    // A damaged checkpoint is not resumed from.
    assert!(store.latest().await.unwrap().is_none());

    std::fs::remove_file(&path).unwrap();
    let report = store.verify(1).await.unwrap();
    assert!(
        matches!(report.problems.as_slice(), [Problem::CardMissing { .. }]),
        "{report}"
    );
    // Storing the card again repairs the checkpoint.
    store
        .put_card(card.to_canonical_json().unwrap())
        .await
        .unwrap();
    assert!(store.verify(1).await.unwrap().is_ok());
}
