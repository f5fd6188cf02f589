use std::collections::BTreeMap;

use super::*;
use crate::model_card::{CommunityShare, TrainingData};
use crate::text::HashingConfig;
use crate::trainer::proposals::ProposalModelSpec;
use fl_core::FitConfig;

/// A small model (1,024 buckets, 4 dimensions) trained a few epochs on made-up proposals of
/// two communities, and its card.
pub(crate) fn trained() -> (ModelCard, ParamVec) {
    trained_as(ProposalModelSpec {
        featurizer: HashingConfig {
            buckets_log2: 10,
            max_tokens: 64,
            ..Default::default()
        },
        dim: 4,
        ..Default::default()
    })
}

/// [`trained`] with another architecture.
fn trained_as(spec: ProposalModelSpec) -> (ModelCard, ParamVec) {
    trained_with(spec).0
}

/// [`trained_as`], and the trainer that trained it.
fn trained_with(spec: ProposalModelSpec) -> ((ModelCard, ParamVec), ProposalTrainer) {
    let f = HashingFeaturizer::new(spec.featurizer.clone()).unwrap();
    let mut data = EncodedProposals::new();
    for i in 0..24u8 {
        let (title, outcome) = if i % 2 == 0 {
            ("raise the fee parameter", 0)
        } else {
            ("drain the treasury now", 1)
        };
        let community = if i % 3 == 0 { "maker" } else { "ethereum" };
        data.push_counted(
            &f.id_counts(title, "a proposal body body"),
            &f.meta_ids(&[("community", community)]),
            Some(outcome),
            i % 5,
        );
    }
    let mut trainer = ProposalTrainer::new(&spec, DeviceSpec::Cpu, data, None, 7).unwrap();
    let fit = FitConfig {
        local_epochs: 5,
        batch_size: 8,
        learning_rate: 0.05,
        ..Default::default()
    };
    if trainer.needs_document_frequencies() {
        trainer.fit(&fit).unwrap();
    }
    trainer.fit(&fit).unwrap();
    let params = trainer.get_parameters();
    let share = CommunityShare {
        accepted: 6,
        rejected: 6,
        open: 0,
        test: 0,
        prior: 0.1,
    };
    let training = TrainingData {
        corpus: "made up".into(),
        corpus_cid: ContentHash::of(b"corpus"),
        sources: Vec::new(),
        split: "none".into(),
        split_cid: ContentHash::of(b"split"),
        communities: BTreeMap::from([("maker".into(), share), ("ethereum".into(), share)]),
        procedure: "5 epochs of Adam".into(),
    };
    let card = ModelCard::new(
        spec,
        training,
        BTreeMap::new(),
        params.schema().hash(),
        params.content_hash(),
    );
    ((card, params), trainer)
}

/// Writes a checkpoint store in `dir` as the aggregator lays it out: the parameters, the card
/// and the manifest of round 3 naming both. Returns the manifest's path.
fn publish(dir: &Path, card: &ModelCard, params: &ParamVec) -> PathBuf {
    for sub in ["rounds", "params", "cards"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    let card_cid = card.cid().unwrap();
    std::fs::write(
        dir.join("cards").join(format!("{card_cid}.json")),
        card.to_canonical_json().unwrap(),
    )
    .unwrap();
    let params_cid = params.content_hash();
    std::fs::write(
        dir.join("params").join(params_cid.to_string()),
        params.to_le_bytes(),
    )
    .unwrap();
    let manifest = serde_json::json!({
        "version": 1,
        "federation_id": "test",
        "round": 3,
        "params_cid": params_cid.to_string(),
        "schema_hash": params.schema().hash(),
        "model_card": card_cid.to_string(),
    });
    let path = dir.join("rounds").join("0000000003.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&manifest).unwrap()).unwrap();
    path
}

fn line(community: &str, id: &str, title: &str) -> String {
    serde_json::json!({"community": community, "id": id, "title": title, "text": "body", "extra": 1})
        .to_string()
}

#[test]
fn predicts_one_line_per_input_with_every_field_deterministically() {
    let dir = tempfile::tempdir().unwrap();
    let (card, params) = trained();
    let store = dir.path().join("checkpoints");
    let manifest = publish(&store, &card, &params);
    let input = dir.path().join("in.jsonl");
    let lines = [
        line("maker", "MIP-1", "raise the fee parameter"),
        String::new(),
        line("ethereum", "EIP-2", "drain the treasury now"),
        line("unknown", "X-3", "something else"),
    ];
    std::fs::write(&input, lines.join("\n")).unwrap();

    // A manifest, a store folder and a run folder all name the same model.
    let mut outputs = Vec::new();
    for path in [manifest.as_path(), store.as_path(), dir.path()] {
        let predictor = Predictor::from_manifest(path).unwrap();
        let output = dir.path().join(format!("out{}.jsonl", outputs.len()));
        assert_eq!(predict_file(&predictor, &input, &output).unwrap(), 3);
        outputs.push(std::fs::read_to_string(&output).unwrap());
    }
    assert!(
        outputs.iter().all(|o| *o == outputs[0]),
        "not deterministic"
    );

    let predictions: Vec<serde_json::Value> = outputs[0]
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(predictions.len(), 3);
    let model = params.content_hash().to_string();
    for (p, (community, id)) in predictions.iter().zip([
        ("maker", "MIP-1"),
        ("ethereum", "EIP-2"),
        ("unknown", "X-3"),
    ]) {
        let fields: Vec<&str> = p.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            fields,
            ["community", "id", "kind", "label", "model", "p_accepted"]
        );
        assert_eq!(
            (p["community"].as_str(), p["id"].as_str()),
            (Some(community), Some(id))
        );
        assert_eq!(p["model"], model.as_str());
        let prob = p["p_accepted"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&prob));
        let label = if prob >= 0.5 { "accepted" } else { "rejected" };
        assert_eq!(p["label"], label);
        assert!(ProposalKind::ALL.iter().any(|k| p["kind"] == k.name()));
    }
    // Batched in any order, each proposal gets what it gets alone (the predictor sorts a
    // batch by length and puts the results back).
    let predictor = Predictor::from_manifest(&store).unwrap();
    let inputs: Vec<ProposalInput> = ["drain the treasury now and more words here", "raise", ""]
        .iter()
        .enumerate()
        .map(|(i, title)| ProposalInput {
            community: "maker".into(),
            id: i.to_string(),
            title: (*title).into(),
            text: "x ".repeat(i),
        })
        .collect();
    let alone: Vec<Prediction> = inputs
        .iter()
        .flat_map(|p| predictor.predict(std::slice::from_ref(p)).unwrap())
        .collect();
    assert_eq!(predictor.predict(&inputs).unwrap(), alone);
    assert!(predictor.predict(&[]).unwrap().is_empty());

    // The model learned its two made-up kinds of proposal.
    assert_eq!(predictions[0]["label"], "accepted");
    assert_eq!(predictions[1]["label"], "rejected");
}

#[test]
fn bad_input_lines_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let (card, params) = trained();
    let predictor = Predictor::new(card.clone(), &params).unwrap();
    let limits = card.input_limits;
    let good = line("maker", "MIP-1", "t");
    let cases: [(&str, String, &str); 5] = [
        ("malformed", format!("{good}\n{{not json"), "line 2"),
        (
            "missing",
            format!("{good}\n{good}\n{{\"community\":\"a\",\"id\":\"b\",\"title\":\"c\"}}"),
            "missing field `text`",
        ),
        ("empty id", line("maker", " ", "t"), "line 1: `id` is empty"),
        (
            "long title",
            line("maker", "x", &"t".repeat(limits.max_title_bytes + 1)),
            "`title` has",
        ),
        ("wrong type", "[1, 2]".into(), "line 1"),
    ];
    for (name, text, expected) in cases {
        let path = dir.path().join(format!("{name}.jsonl"));
        std::fs::write(&path, text).unwrap();
        let err = read_inputs(&path, &limits).unwrap_err();
        assert!(matches!(err, PredictError::Input { .. }), "{name}: {err}");
        assert!(err.to_string().contains(expected), "{name}: {err}");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{name}: {err}"
        );
    }
    // A line beyond the reader's bound is refused by number, without being parsed.
    let long = dir.path().join("long.jsonl");
    let huge = "x".repeat(proposals::MAX_LINE_BYTES + 10);
    std::fs::write(&long, format!("{good}\n{}", line("a", "b", &huge))).unwrap();
    let err = read_inputs(&long, &limits).unwrap_err();
    assert!(
        matches!(
            err,
            PredictError::Lines(ProposalsError::LineTooLong { line: 2, .. })
        ),
        "{err}"
    );
    // The library refuses an input beyond the card's limits by index.
    let big = ProposalInput {
        community: "maker".into(),
        id: "x".into(),
        title: String::new(),
        text: "w ".repeat(limits.max_text_bytes),
    };
    let err = predictor.predict(&[big]).unwrap_err();
    assert!(err.to_string().starts_with("input 0: `text` has"), "{err}");
    let err = read_inputs(&dir.path().join("absent.jsonl"), &limits).unwrap_err();
    assert!(matches!(err, PredictError::Io { .. }), "{err}");
}

#[test]
fn altered_checkpoints_are_refused_before_loading() {
    let (card, params) = trained();

    // Parameters changed after the manifest was written.
    let dir = tempfile::tempdir().unwrap();
    let manifest = publish(dir.path(), &card, &params);
    let params_path = dir
        .path()
        .join("params")
        .join(params.content_hash().to_string());
    let mut bytes = std::fs::read(&params_path).unwrap();
    bytes[0] ^= 1;
    std::fs::write(&params_path, &bytes).unwrap();
    let err = Predictor::from_manifest(&manifest).unwrap_err();
    assert!(matches!(err, PredictError::Params { .. }), "{err}");
    assert!(err.to_string().contains("altered"), "{err}");
    bytes.push(0);
    std::fs::write(&params_path, &bytes).unwrap();
    let err = Predictor::from_manifest(&manifest).unwrap_err();
    assert!(matches!(err, PredictError::TooLarge { .. }), "{err}");
    std::fs::remove_file(&params_path).unwrap();
    let err = Predictor::from_manifest(&manifest).unwrap_err();
    assert!(matches!(err, PredictError::Io { .. }), "{err}");

    // A card altered in place no longer hashes to its CID.
    let dir = tempfile::tempdir().unwrap();
    let manifest = publish(dir.path(), &card, &params);
    let card_path = dir
        .path()
        .join("cards")
        .join(format!("{}.json", card.cid().unwrap()));
    let text = std::fs::read_to_string(&card_path).unwrap();
    std::fs::write(&card_path, text.replace("5 epochs", "9 epochs")).unwrap();
    let err = Predictor::from_manifest(&manifest).unwrap_err();
    assert!(
        matches!(
            err,
            PredictError::Card {
                source: CardError::CidMismatch { .. },
                ..
            }
        ),
        "{err}"
    );

    // A card describing other parameters.
    let dir = tempfile::tempdir().unwrap();
    let mut other = card.clone();
    other.params_cid = ContentHash::of(b"other");
    let manifest = publish(dir.path(), &other, &params);
    let err = Predictor::from_manifest(&manifest).unwrap_err();
    assert!(matches!(err, PredictError::Mismatch(_)), "{err}");

    // A manifest without a card, garbage, from the future; a folder without rounds.
    let dir = tempfile::tempdir().unwrap();
    let manifest = publish(dir.path(), &card, &params);
    let mut value: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    value.as_object_mut().unwrap().remove("model_card");
    std::fs::write(&manifest, value.to_string()).unwrap();
    let err = Predictor::from_manifest(&manifest).unwrap_err();
    assert!(matches!(err, PredictError::NoCard { .. }), "{err}");
    value["version"] = 9.into();
    std::fs::write(&manifest, value.to_string()).unwrap();
    let err = Predictor::from_manifest(&manifest).unwrap_err();
    assert!(err.to_string().contains("format version 9"), "{err}");
    std::fs::write(&manifest, "{garbage").unwrap();
    let err = Predictor::from_manifest(&manifest).unwrap_err();
    assert!(matches!(err, PredictError::Manifest { .. }), "{err}");
    let empty = tempfile::tempdir().unwrap();
    let err = Predictor::from_manifest(empty.path()).unwrap_err();
    assert!(matches!(err, PredictError::NoCheckpoint { .. }), "{err}");
}

/// The determinism nodes rely on: the same model gives every input the same label and
/// probabilities within `DEFAULT_TOLERANCE` however the inputs are batched (other batch shapes
/// take other summation orders, as another CPU would), and two loads of one checkpoint agree
/// exactly. Real proposals of the shipped corpus.
#[test]
fn batching_changes_no_label_and_probabilities_stay_within_the_tolerance() {
    use fl_core::inference::DEFAULT_TOLERANCE;
    let corpus = crate::data::proposals::load_shipped().unwrap();
    let inputs: Vec<ProposalInput> = corpus.proposals[..150]
        .iter()
        .map(|p| ProposalInput {
            community: p.community.clone(),
            id: p.id.clone(),
            title: p.title.clone(),
            text: p.text.clone(),
        })
        .collect();
    let (card, params) = trained();
    let predictor = Predictor::new(card.clone(), &params).unwrap();
    let whole = predictor.predict(&inputs).unwrap();
    let again = Predictor::new(card, &params)
        .unwrap()
        .predict(&inputs)
        .unwrap();
    assert_eq!(whole, again, "two loads of one checkpoint");
    let mut worst = 0.0f32;
    for chunk in [1, 7, 64] {
        let batched: Vec<Prediction> = inputs
            .chunks(chunk)
            .flat_map(|c| predictor.predict(c).unwrap())
            .collect();
        for (a, b) in whole.iter().zip(&batched) {
            assert_eq!(a.label, b.label, "{} in batches of {chunk}", a.id);
            worst = worst.max((a.p_accepted - b.p_accepted).abs());
        }
    }
    assert!(
        worst <= DEFAULT_TOLERANCE,
        "batching moved a probability by {worst}, over the tolerance {DEFAULT_TOLERANCE}"
    );
}

/// A TF-IDF linear model saved as a checkpoint and loaded back predicts exactly what the
/// trainer predicted in memory: the loaded model applies the same term weights (counts and
/// the idf of its stored document frequencies).
#[test]
fn a_saved_tf_idf_model_predicts_as_it_did_in_training() {
    use crate::trainer::proposals::{ModelKind, TermWeighting};
    let spec = ProposalModelSpec {
        kind: ModelKind::Linear,
        weighting: TermWeighting::TfIdf,
        featurizer: HashingConfig {
            buckets_log2: 10,
            max_tokens: 64,
            ..Default::default()
        },
        ..Default::default()
    };
    let ((card, params), trainer) = trained_with(spec);
    let dir = tempfile::tempdir().unwrap();
    let manifest = publish(dir.path(), &card, &params);
    let predictor = Predictor::from_manifest(&manifest).unwrap();
    assert_eq!(predictor.trainer.idf(), trainer.idf());
    assert!(
        trainer.idf().unwrap().iter().any(|&w| w > 1.5),
        "idf applied"
    );
    let inputs: Vec<ProposalInput> = [
        ("maker", "raise the fee parameter", "fee fee fee body"),
        ("ethereum", "drain the treasury now", "a proposal body"),
        ("unknown", "something else", ""),
    ]
    .iter()
    .enumerate()
    .map(|(i, (community, title, text))| ProposalInput {
        community: (*community).into(),
        id: i.to_string(),
        title: (*title).into(),
        text: (*text).into(),
    })
    .collect();
    let f = card.featurizer().unwrap();
    let mut encoded = EncodedProposals::new();
    for (row, input) in inputs.iter().enumerate() {
        encoded.push_counted(
            &f.id_counts(&input.title, &input.text),
            &f.meta_ids(&[("community", &input.community)]),
            None,
            0,
        );
        encoded.set_prior(row, card.prior(&input.community));
    }
    let want = trainer.predict(&encoded).unwrap();
    let got = predictor.predict(&inputs).unwrap();
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g.p_accepted, w.p_accepted);
        assert_eq!(g.kind, w.kind);
    }
    assert_eq!(got[0].label, "accepted");
    assert_eq!(got[1].label, "rejected");

    // Parameters without document frequencies (an untrained TF-IDF model) are refused.
    let untrained = ProposalTrainer::new(
        &card.architecture,
        DeviceSpec::Cpu,
        EncodedProposals::new(),
        None,
        1,
    )
    .unwrap()
    .get_parameters();
    let mut bare = card.clone();
    bare.params_cid = untrained.content_hash();
    let err = Predictor::new(bare, &untrained).unwrap_err();
    assert!(matches!(err, PredictError::Mismatch(_)), "{err}");
}
