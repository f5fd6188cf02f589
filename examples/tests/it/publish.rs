//! The proposals example's publishing, end to end on a small model: one federated round over the
//! 13 communities, the card built from the run, the checkpoint written and anchored, and the
//! published model loaded and run by `fl_client::predict` as `fl-client predict` does.

use examples::proposals::{self, ProposalsConfig, score_model};
use examples::publish;
use fl_aggregator::anchoring::{ManifestAnchor, participants};
use fl_aggregator::checkpoint::CheckpointStore;
use fl_client::data::proposals as corpus;
use fl_client::predict::{Predictor, ProposalInput};

#[test]
fn the_federated_model_is_published_with_its_card_and_predicts() {
    // As a run's TOML writes it: one round of a small model, federated only.
    let config: ProposalsConfig = toml::from_str(
        "rounds = 1\ncompare = false\ncompare_local = false\n\
         [model]\ndim = 4\n[model.featurizer]\nbuckets_log2 = 10\nmax_tokens = 64",
    )
    .unwrap();
    let prepared = proposals::prepare(&config).unwrap();
    let run = proposals::run_federated(&config, &prepared, |_| {}).unwrap();
    let scores = score_model(&run.evaluator, &prepared).unwrap();
    let card = publish::model_card(&config, &prepared, &run.params, &scores, 1).unwrap();
    assert_eq!(card.training.communities.len(), 13);
    assert_eq!(
        card.training
            .communities
            .values()
            .map(|c| c.test)
            .sum::<usize>(),
        prepared.test.len()
    );
    assert_eq!(card.metrics["accuracy"], scores.pooled.outcome.accuracy);
    assert!(card.metrics.contains_key("ethereum.macro_f1"));

    let dir = tempfile::tempdir().unwrap();
    let config_hash = fl_core::ContentHash::of(b"config");
    let publish_once = || {
        publish::publish(
            dir.path(),
            "publish-test",
            1,
            &prepared.members,
            config_hash,
            &card,
            &run.params,
        )
    };
    let published = publish_once().unwrap();
    assert_eq!(published.card, card.cid().unwrap());
    assert!(published.anchor.is_some());
    // The card is committed with the round, and the store verifies it.
    let store = CheckpointStore::open(&dir.path().join("checkpoints").to_string_lossy()).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let manifest = runtime.block_on(store.manifest(1)).unwrap();
    assert!(ManifestAnchor::of(&manifest).unwrap().is_some());
    assert_eq!(participants(&manifest).len(), 13 + 2); // members, metrics, card
    assert!(runtime.block_on(store.verify(1)).unwrap().is_ok());

    // What an inference node loads predicts what the trainer predicted on the same rows.
    let predictor = Predictor::from_manifest(&published.manifest_path).unwrap();
    let rows = corpus::load_shipped().unwrap();
    let split = rows.shipped_split().unwrap();
    let inputs: Vec<ProposalInput> = split.test[..5]
        .iter()
        .map(|&i| ProposalInput::from(&rows.proposals[i]))
        .collect();
    let predicted = predictor.predict(&inputs).unwrap();
    let expected = run
        .evaluator
        .predict(&prepared.test.subset(&[0, 1, 2, 3, 4]))
        .unwrap();
    for (p, e) in predicted.iter().zip(&expected) {
        assert_eq!(p.p_accepted, e.p_accepted);
        assert_eq!(p.kind, e.kind);
        assert_eq!(p.model, run.params.content_hash().to_string());
    }
    // Publishing again replaces the run's store and chain.
    publish_once().unwrap();
}

/// A TF-IDF linear model through the whole federation: round 1 computes the document
/// frequencies (each member's fractions, aggregated by the engine's FedAvg), which equal those
/// of the pooled training texts; the model trained from them is published, and the predictor
/// loaded from the checkpoint applies the same idf and predicts what the trainer predicted.
#[test]
fn a_tf_idf_federation_agrees_on_the_pooled_document_frequencies_and_publishes_them() {
    let config: ProposalsConfig = toml::from_str(
        "rounds = 1\ncompare = false\ncompare_local = false\n\
         [model]\nkind = \"linear\"\nweighting = \"tf_idf\"\n\
         [model.featurizer]\nbuckets_log2 = 10\nmax_tokens = 64",
    )
    .unwrap();
    let prepared = proposals::prepare(&config).unwrap();
    let run = proposals::run_federated(&config, &prepared, |_| {}).unwrap();
    // One document-frequency round, then the one training round.
    assert_eq!(run.rounds.len(), 2);
    assert!(run.rounds[0].train_loss.is_nan() && run.rounds[1].train_loss.is_finite());
    let pooled = proposals::pooled_training_data(&prepared);
    // The same model "trained" centrally for 0 epochs: only its document frequencies.
    let central_config = ProposalsConfig {
        alone_epochs: Some(0),
        ..config.clone()
    };
    let central = proposals::train_alone(&central_config, &prepared, pooled, |_, _| {}).unwrap();
    assert!(!central.needs_document_frequencies());
    let (fed, cen) = (run.evaluator.idf().unwrap(), central.idf().unwrap());
    assert_eq!(fed.len(), 1024);
    for (f, c) in fed.iter().zip(cen) {
        assert!((f - c).abs() < 1e-4, "{f} vs {c}");
    }
    // Not all alike: common buckets weigh less than rare ones.
    let (lo, hi) = cen
        .iter()
        .fold((f32::MAX, f32::MIN), |(lo, hi), &w| (lo.min(w), hi.max(w)));
    assert!(hi - lo > 0.5, "idf from {lo} to {hi}");

    let scores = score_model(&run.evaluator, &prepared).unwrap();
    let card = publish::model_card(&config, &prepared, &run.params, &scores, 2).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let published = publish::publish(
        dir.path(),
        "publish-tfidf-test",
        2,
        &prepared.members,
        fl_core::ContentHash::of(b"config"),
        &card,
        &run.params,
    )
    .unwrap();
    let predictor = Predictor::from_manifest(&published.manifest_path).unwrap();
    let rows = corpus::load_shipped().unwrap();
    let split = rows.shipped_split().unwrap();
    let inputs: Vec<ProposalInput> = split.test[..8]
        .iter()
        .map(|&i| ProposalInput::from(&rows.proposals[i]))
        .collect();
    let predicted = predictor.predict(&inputs).unwrap();
    let expected = run
        .evaluator
        .predict(&prepared.test.subset(&(0..8).collect::<Vec<_>>()))
        .unwrap();
    for (p, e) in predicted.iter().zip(&expected) {
        assert_eq!(p.p_accepted, e.p_accepted);
        assert_eq!(p.kind, e.kind);
    }
}
