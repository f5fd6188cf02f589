use super::*;
use crate::text::HashingConfig;

fn tiny_spec() -> ProposalModelSpec {
    ProposalModelSpec {
        featurizer: HashingConfig {
            buckets_log2: 10,
            max_tokens: 64,
            ..Default::default()
        },
        dim: 8,
        hidden: 0,
        kind_weight: 1.0,
        rejected_weight: 1.0,
        meta_scale: 1.0,
        community_prior: true,
        optimizer: LocalOptimizer::Adam,
        weight_decay: 0.0,
        ..Default::default()
    }
}

/// Two communities; the word `raise` means accepted, `cut` rejected; `token` proposals are
/// standards, `fork` ones protocol changes; some rows are open.
fn toy(spec: &ProposalModelSpec, n: usize) -> EncodedProposals {
    let f = spec.featurizer().unwrap();
    let mut data = EncodedProposals::new();
    for i in 0..n {
        let (word, outcome) = if i % 2 == 0 { ("raise", 0) } else { ("cut", 1) };
        let (topic, kind) = if i % 3 == 0 {
            ("token", ProposalKind::Standard)
        } else {
            ("fork", ProposalKind::Protocol)
        };
        let community = if i % 4 < 2 { "alpha" } else { "beta" };
        let text = format!("we {word} the fee of the {topic} number {i}");
        let outcome = (i % 5 != 4).then_some(outcome);
        data.push(
            &f.ids("proposal", &text),
            &f.meta_ids(&[("community", community)]),
            outcome,
            kind.class(),
        );
    }
    data
}

fn fit_config(epochs: u32) -> FitConfig {
    FitConfig {
        local_epochs: epochs,
        batch_size: 8,
        learning_rate: 0.05,
        shuffle_seed: 3,
        ..Default::default()
    }
}

#[test]
fn learns_both_heads_on_a_toy_task() {
    let spec = tiny_spec();
    let train = toy(&spec, 40);
    let mut trainer =
        ProposalTrainer::new(&spec, DeviceSpec::Cpu, train.clone(), Some(train), 1).unwrap();
    let before = trainer.evaluate(&EvaluateConfig::default()).unwrap();
    let fit = trainer.fit(&fit_config(15)).unwrap();
    assert_eq!(fit.num_examples, 40);
    let after = trainer.evaluate(&EvaluateConfig::default()).unwrap();
    assert!(after.loss < before.loss, "{before:?} -> {after:?}");
    assert_eq!(after.metrics["accuracy"], 1.0, "{after:?}");
    assert_eq!(after.metrics["kind_accuracy"], 1.0, "{after:?}");
    assert_eq!(after.metrics["decided"], 32.0);
}

#[test]
fn same_seed_same_model_and_parameters_round_trip() {
    let spec = tiny_spec();
    let a = ProposalTrainer::new(&spec, DeviceSpec::Cpu, toy(&spec, 8), None, 7).unwrap();
    let mut b = ProposalTrainer::new(&spec, DeviceSpec::Cpu, toy(&spec, 8), None, 7).unwrap();
    let c = ProposalTrainer::new(&spec, DeviceSpec::Cpu, toy(&spec, 8), None, 8).unwrap();
    assert_eq!(a.get_parameters(), b.get_parameters());
    assert_ne!(a.get_parameters().values(), c.get_parameters().values());
    b.fit(&fit_config(1)).unwrap();
    assert_ne!(a.get_parameters().values(), b.get_parameters().values());
    b.set_parameters(&a.get_parameters()).unwrap();
    assert_eq!(a.get_parameters(), b.get_parameters());
    // 2^10 x 8 embedding, 8 x 2 + 2 outcome, 8 x 5 + 5 kind, 1 x 2 prior.
    assert_eq!(a.schema().num_values(), 1024 * 8 + 18 + 45 + 2);
    let other = ProposalModelSpec {
        hidden: 4,
        ..tiny_spec()
    };
    let d = ProposalTrainer::new(&other, DeviceSpec::Cpu, toy(&other, 4), None, 7).unwrap();
    assert!(matches!(
        b.set_parameters(&d.get_parameters()),
        Err(TrainerError::Params(ParamError::SchemaMismatch { .. }))
    ));
}

#[test]
fn open_proposals_do_not_train_the_outcome_head() {
    let spec = tiny_spec();
    let mut open = EncodedProposals::new();
    let f = spec.featurizer().unwrap();
    for i in 0..10 {
        open.push(&f.ids("t", &format!("text {i}")), &[], None, 1);
    }
    let mut trainer = ProposalTrainer::new(&spec, DeviceSpec::Cpu, open, None, 1).unwrap();
    let before = trainer.get_parameters();
    trainer.fit(&fit_config(2)).unwrap();
    let after = trainer.get_parameters();
    let outcome_values = |p: &ParamVec| {
        let schema = p.schema();
        let mut offset = 0;
        let mut out = Vec::new();
        for t in schema.tensors() {
            let n = t.num_values();
            if t.name.starts_with("outcome.") {
                out.extend_from_slice(&p.values()[offset..offset + n]);
            }
            offset += n;
        }
        out
    };
    assert!(!outcome_values(&before).is_empty());
    assert_eq!(outcome_values(&before), outcome_values(&after));
    assert_ne!(before.values(), after.values(), "the kind head trains");
}

#[test]
fn bad_inputs_are_errors() {
    let spec = tiny_spec();
    let mut wide = EncodedProposals::new();
    wide.push(&[5000], &[], Some(0), 0);
    assert!(matches!(
        ProposalTrainer::new(&spec, DeviceSpec::Cpu, wide, None, 1),
        Err(TrainerError::InvalidConfig(_))
    ));
    let bad_spec = ProposalModelSpec {
        dim: 0,
        ..tiny_spec()
    };
    assert!(ProposalTrainer::new(&bad_spec, DeviceSpec::Cpu, toy(&spec, 2), None, 1).is_err());
    let mut empty =
        ProposalTrainer::new(&spec, DeviceSpec::Cpu, EncodedProposals::new(), None, 1).unwrap();
    assert!(matches!(
        empty.fit(&fit_config(1)),
        Err(TrainerError::NoData("fit"))
    ));
    assert!(matches!(
        empty.evaluate(&EvaluateConfig::default()),
        Err(TrainerError::NoData("evaluate"))
    ));
    assert!(matches!(
        empty.fit(&FitConfig {
            batch_size: 0,
            ..fit_config(1)
        }),
        Err(TrainerError::InvalidConfig(_))
    ));
}

#[test]
fn class_scores_match_scikit_learn() {
    // y_true = [0, 0, 1, 1, 1], y_pred = [0, 1, 1, 1, 0]: accuracy 0.6; F1(0) = 0.5,
    // F1(1) = 2/3, macro 0.58333.
    let s = ClassScores::of(&[(0, 0), (0, 1), (1, 1), (1, 1), (1, 0)], 2);
    assert!((s.accuracy - 0.6).abs() < 1e-12);
    assert!((s.macro_f1 - (0.5 + 2.0 / 3.0) / 2.0).abs() < 1e-12);
    // One class only, all right: macro-F1 over the one class present.
    let s = ClassScores::of(&[(1, 1), (1, 1)], 2);
    assert_eq!((s.accuracy, s.macro_f1), (1.0, 1.0));
    assert_eq!(ClassScores::of(&[], 2), ClassScores::default());
}

#[test]
fn shuffled_outcomes_keep_counts_and_open_rows() {
    let spec = tiny_spec();
    let data = toy(&spec, 30);
    let shuffled = data.with_shuffled_outcomes(1);
    assert_eq!(shuffled.decided(), data.decided());
    let ones = |d: &EncodedProposals| (0..d.len()).filter(|&i| d.outcome(i) == Some(1)).count();
    assert_eq!(ones(&shuffled), ones(&data));
    assert!((0..30).all(|i| data.outcome(i).is_none() == shuffled.outcome(i).is_none()));
    assert_ne!(shuffled, data);
    let sub = data.subset(&[3, 1, 99]);
    assert_eq!(sub.len(), 2);
    assert_eq!(sub.kind(0), data.kind(3));
}

#[test]
fn every_local_optimizer_trains() {
    for (optimizer, weight_decay) in [(LocalOptimizer::Adam, 0.1), (LocalOptimizer::Sgd, 0.0)] {
        let spec = ProposalModelSpec {
            optimizer,
            weight_decay,
            ..tiny_spec()
        };
        let mut t = ProposalTrainer::new(&spec, DeviceSpec::Cpu, toy(&spec, 16), None, 2).unwrap();
        let before = t.get_parameters();
        t.fit(&fit_config(1)).unwrap();
        assert_ne!(
            before.values(),
            t.get_parameters().values(),
            "{optimizer:?}"
        );
    }
    let bad = ProposalModelSpec {
        weight_decay: -1.0,
        ..tiny_spec()
    };
    assert!(ProposalTrainer::new(&bad, DeviceSpec::Cpu, toy(&bad, 2), None, 1).is_err());
}

/// `ProposalTrainer::fit` as it was before FedProx, step for step (Adam without decay).
fn fit_before_fedprox(t: &ProposalTrainer, config: &FitConfig) -> Vec<f32> {
    assert_eq!(t.spec.optimizer, LocalOptimizer::Adam);
    assert_eq!(t.spec.weight_decay, 0.0);
    let autodiff = t.device.clone().autodiff();
    let mut optim = AdamConfig::new().init();
    let mut rng = ChaCha8Rng::seed_from_u64(config.shuffle_seed);
    let mut order: Vec<usize> = (0..t.train.len()).collect();
    let mut model = t.network.clone();
    for _ in 0..config.local_epochs {
        order.shuffle(&mut rng);
        for chunk in order.chunks(config.batch_size as usize) {
            let loss = t.batch_loss(&model, chunk, &autodiff);
            let value: f32 = loss.clone().into_scalar();
            assert!(value.is_finite());
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(config.learning_rate, model, grads);
        }
    }
    params::flatten(&model, t.schema.num_values()).unwrap()
}

#[test]
fn fedprox_mu_zero_is_the_old_training_and_a_large_mu_stays_near_the_global_model() {
    let spec = tiny_spec();
    let mut t = ProposalTrainer::new(&spec, DeviceSpec::Cpu, toy(&spec, 40), None, 4).unwrap();
    let global = t.get_parameters();
    let want = fit_before_fedprox(&t, &fit_config(3));
    let outcome = t.fit(&fit_config(3)).unwrap();
    assert_eq!(t.get_parameters().values(), want.as_slice());
    // 40 examples in batches of 8: 5 steps an epoch.
    assert_eq!(outcome.metrics[LOCAL_STEPS_METRIC], 15.0);
    let mut distance = |mu: f64| {
        t.set_parameters(&global).unwrap();
        t.fit(&FitConfig {
            proximal_mu: mu,
            ..fit_config(3)
        })
        .unwrap();
        let local = t.get_parameters();
        local
            .values()
            .iter()
            .zip(global.values())
            .map(|(a, b)| f64::from(a - b).powi(2))
            .sum::<f64>()
            .sqrt()
    };
    // Adam's steps are about the learning rate whatever the gradient's size, so beyond μ ≈ 10
    // the distance settles at that scale (measured: 9.0, 0.71, 0.45 for μ = 0, 1, 10; 0.46 at
    // 100) instead of shrinking further.
    let d: Vec<f64> = [0.0, 0.1, 1.0, 10.0].map(&mut distance).to_vec();
    assert!(d.windows(2).all(|w| w[1] < w[0]), "{d:?}");
    assert!(matches!(
        t.fit(&FitConfig {
            proximal_mu: -0.1,
            ..fit_config(1)
        }),
        Err(TrainerError::InvalidConfig(_))
    ));
}

fn tf_idf_spec(kind: ModelKind) -> ProposalModelSpec {
    ProposalModelSpec {
        kind,
        weighting: TermWeighting::TfIdf,
        idf_smoothing: 0.25,
        ..tiny_spec()
    }
}

/// The values of the parameter tensor `name`.
fn tensor(p: &ParamVec, name: &str) -> Vec<f32> {
    let mut offset = 0;
    for t in p.schema().tensors() {
        let n = t.num_values();
        if t.name == name {
            return p.values()[offset..offset + n].to_vec();
        }
        offset += n;
    }
    panic!("no tensor {name}");
}

#[test]
fn document_frequencies_are_fractions_of_documents() {
    let f = tiny_spec().featurizer().unwrap();
    let mut data = EncodedProposals::new();
    for text in ["fee fee raise", "fee cut", "cut cut cut", "other"] {
        data.push_counted(&f.id_counts("", text), &f.meta_ids(&[("c", "x")]), None, 0);
    }
    let df = data.document_frequencies(1024);
    let id = |w: &str| f.ids("", w)[0] as usize;
    assert_eq!(df[id("fee")], 0.5);
    assert_eq!(df[id("cut")], 0.5);
    assert_eq!(df[id("raise")], 0.25);
    assert_eq!(df[id("missing")], 0.0);
    // Metadata ids are not text: they count in no document frequency.
    assert_eq!(df[f.meta_ids(&[("c", "x")])[0] as usize], 0.0);
    // Counts survive subsets and concatenation.
    assert_eq!(data.subset(&[0, 1]).concat(&data.subset(&[2, 3])), data);
}

/// The document-frequency round: each member's first `fit` returns the global parameters with
/// its own document fractions; the aggregator's example-weighted sum (`WeightedSum`, what
/// FedAvg and SecAgg+ compute) gives the fractions of the pooled documents, and from then on
/// every trainer applies the same idf and trains.
#[test]
fn the_document_frequency_round_sums_the_members_counts() {
    let spec = tf_idf_spec(ModelKind::Linear);
    let data = toy(&spec, 30);
    let (a, b) = (
        data.subset(&(0..12).collect::<Vec<_>>()),
        data.subset(&(12..30).collect::<Vec<_>>()),
    );
    let mut members: Vec<ProposalTrainer> = [a, b]
        .into_iter()
        .map(|d| ProposalTrainer::new(&spec, DeviceSpec::Cpu, d, None, 5).unwrap())
        .collect();
    let global = members[0].get_parameters();
    assert!(
        tensor(&global, "document_frequency")
            .iter()
            .all(|&v| v == 0.0)
    );
    assert!(members[0].needs_document_frequencies());
    let mut sum = fl_core::aggregate::WeightedSum::new(global.schema().clone());
    for m in &mut members {
        let outcome = m.fit(&fit_config(1)).unwrap();
        assert_eq!(outcome.metrics[DOCUMENT_FREQUENCY_METRIC], 1.0);
        assert_eq!(outcome.metrics[LOCAL_STEPS_METRIC], 0.0);
        let local = m.get_parameters();
        // Nothing trained: only the document frequencies differ from the global model.
        assert_eq!(
            tensor(&local, "embedding.weight"),
            tensor(&global, "embedding.weight")
        );
        sum.add(&local, outcome.num_examples, &outcome.metrics)
            .unwrap();
    }
    let mean = sum.mean().unwrap();
    let df = tensor(&mean, "document_frequency");
    let pooled = data.document_frequencies(1024);
    assert_eq!(df.len(), 1025);
    assert_eq!(df[1024], 1.0, "the known flag");
    for (got, want) in df.iter().zip(&pooled) {
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    }
    // Every trainer that loads the aggregate applies the same idf, and the next fit trains.
    let mut central = ProposalTrainer::new(&spec, DeviceSpec::Cpu, data.clone(), None, 5).unwrap();
    central.fit(&fit_config(1)).unwrap();
    for m in &mut members {
        m.set_parameters(&mean).unwrap();
        assert!(!m.needs_document_frequencies());
        for (x, y) in m.idf().unwrap().iter().zip(central.idf().unwrap()) {
            assert!((x - y).abs() < 1e-4, "{x} vs {y}");
        }
        let outcome = m.fit(&fit_config(1)).unwrap();
        assert!(outcome.metrics[LOCAL_STEPS_METRIC] > 0.0);
        assert_eq!(
            tensor(&m.get_parameters(), "document_frequency"),
            df,
            "document frequencies are not trained"
        );
    }
}

#[test]
fn tf_idf_models_learn_both_heads_on_a_toy_task() {
    for kind in [ModelKind::Linear, ModelKind::BagOfEmbeddings] {
        let spec = tf_idf_spec(kind);
        let train = toy(&spec, 40);
        let mut trainer =
            ProposalTrainer::new(&spec, DeviceSpec::Cpu, train.clone(), Some(train), 1).unwrap();
        trainer.fit(&fit_config(1)).unwrap(); // the document frequencies
        let before = trainer.evaluate(&EvaluateConfig::default()).unwrap();
        trainer.fit(&fit_config(15)).unwrap();
        let after = trainer.evaluate(&EvaluateConfig::default()).unwrap();
        assert!(
            after.loss < before.loss,
            "{kind:?}: {before:?} -> {after:?}"
        );
        assert_eq!(after.metrics["accuracy"], 1.0, "{kind:?}: {after:?}");
        assert_eq!(after.metrics["kind_accuracy"], 1.0, "{kind:?}: {after:?}");
    }
    // The linear model: a row of 2 + 5 class weights per bucket, a bias per class, the prior,
    // and the document frequencies.
    let spec = tf_idf_spec(ModelKind::Linear);
    let t = ProposalTrainer::new(&spec, DeviceSpec::Cpu, toy(&spec, 4), None, 1).unwrap();
    assert_eq!(t.schema().num_values(), 1024 * 7 + 7 + 2 + 1025);
    let bad = ProposalModelSpec {
        hidden: 4,
        ..tf_idf_spec(ModelKind::Linear)
    };
    assert!(bad.validate().is_err());
    let bad = ProposalModelSpec {
        idf_smoothing: 0.0,
        ..tf_idf_spec(ModelKind::Linear)
    };
    assert!(bad.validate().is_err());
}

#[test]
fn batches_weigh_text_by_tf_idf_with_unit_norm() {
    let mut spec = tf_idf_spec(ModelKind::Linear);
    spec.featurizer.word_ngrams = 1;
    let f = spec.featurizer().unwrap();
    let mut data = EncodedProposals::new();
    let counts = f.id_counts("", "fee fee raise");
    assert_eq!(counts.len(), 2);
    data.push_counted(&counts, &f.meta_ids(&[("c", "x")]), Some(0), 0);
    let idf: Vec<f32> = (0..1024).map(|i| 1.0 + (i % 3) as f32).collect();
    let device = DeviceSpec::Cpu.device().unwrap();
    let (_, weights, _) = data.batch(&[0], 2.0, TextWeights::TfIdf(Some(&idf)), &device);
    let w: Vec<f32> = weights.into_data().try_to_vec::<f32>().unwrap();
    let want = crate::text::tf_idf(&counts, Some(&idf));
    assert_eq!(&w[..2], want.as_slice());
    assert!((want.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-6);
    assert_eq!(w[2], 2.0, "the metadata bag keeps its meta_scale mean");
    let (_, weights, _) = data.batch(&[0], 1.0, TextWeights::Mean, &device);
    let w: Vec<f32> = weights.into_data().try_to_vec::<f32>().unwrap();
    assert_eq!(w, [0.5, 0.5, 1.0]);
}

#[test]
fn the_default_model_keeps_its_card_and_schema() {
    // New fields at their defaults are not serialised: cards of earlier models stay canonical.
    let json = serde_json::to_string(&ProposalModelSpec::default()).unwrap();
    assert!(
        !json.contains("weighting") && !json.contains("\"kind\""),
        "{json}"
    );
    let spec: ProposalModelSpec =
        toml::from_str("kind = \"linear\"\nweighting = \"tf_idf\"").unwrap();
    assert_eq!(
        (spec.kind, spec.weighting),
        (ModelKind::Linear, TermWeighting::TfIdf)
    );
    assert!(toml::from_str::<ProposalModelSpec>("weighting = \"idf\"").is_err());
}

#[test]
fn threshold_counts_match_hand_computed_scores_and_sum_across_members() {
    let spec = tiny_spec();
    // Outcomes of toy rows 0..5: accepted, rejected, accepted, rejected, open.
    let data = toy(&spec, 5);
    let prediction = |p_accepted| ProposalPrediction {
        p_accepted,
        kind: ProposalKind::Standard,
        kind_probs: vec![],
    };
    let predictions: Vec<_> = [0.9, 0.3, 0.455, 0.35, 0.1]
        .into_iter()
        .map(prediction)
        .collect();
    let counts = ThresholdCounts::of(&data, &predictions);
    assert_eq!(counts.n(), 4, "the open row is not counted");
    // At 0.5 only row 2 (accepted, 0.455) is wrong: F1 accepted 2/3, rejected 4/5.
    let half = ThresholdCounts::GRID / 2;
    assert_eq!(ThresholdCounts::threshold(half), 0.5);
    let at_half = (2.0 / 3.0 + 0.8) / 2.0;
    assert!((counts.macro_f1(half) - at_half).abs() < 1e-12);
    assert_eq!(
        counts.macro_f1(half),
        score_at(&data, &predictions, 0.5).outcome.macro_f1
    );
    // Every grid threshold agrees with `score_at`.
    for i in 0..ThresholdCounts::GRID {
        let t = ThresholdCounts::threshold(i);
        let direct = score_at(&data, &predictions, t).outcome.macro_f1;
        assert!((counts.macro_f1(i) - direct).abs() < 1e-12, "{t}");
    }
    // From 0.36 to 0.45 everything is right; of those the closest to 0.5 wins.
    let best = counts.best().unwrap();
    assert_eq!(best.threshold, 0.45);
    assert_eq!(best.macro_f1, 1.0);
    assert!((best.macro_f1_at_half - at_half).abs() < 1e-12);
    assert_eq!(best.n, 4);
    // Two members' counts add up to the pooled counts.
    let (a, b) = (data.subset(&[0, 1]), data.subset(&[2, 3, 4]));
    let mut sum = ThresholdCounts::of(&a, &predictions[..2]);
    sum.add(&ThresholdCounts::of(&b, &predictions[2..]));
    assert_eq!(sum, counts);
    // Nothing counted: no threshold.
    assert_eq!(ThresholdCounts::default().best(), None);
}

#[test]
fn a_calibrated_threshold_folds_into_the_outcome_bias() {
    for kind in [
        ModelKind::Linear,
        ModelKind::BagOfEmbeddings,
        ModelKind::Transformer,
    ] {
        let spec = ProposalModelSpec {
            kind,
            ..tiny_spec()
        };
        let data = toy(&spec, 24);
        let mut trainer =
            ProposalTrainer::new(&spec, DeviceSpec::Cpu, data.clone(), None, 5).unwrap();
        trainer.fit(&fit_config(2)).unwrap();
        let before = trainer.predict(&data).unwrap();
        let params = trainer.get_parameters();
        for bad in [0.0, 1.0, -0.5, f64::NAN] {
            assert!(matches!(
                trainer.calibrate_outcome_threshold(bad),
                Err(TrainerError::InvalidConfig(_))
            ));
        }
        assert_eq!(
            trainer.get_parameters(),
            params,
            "a refused threshold changes nothing"
        );
        let threshold = 0.62;
        trainer.calibrate_outcome_threshold(threshold).unwrap();
        let after = trainer.predict(&data).unwrap();
        let changed: Vec<usize> = params
            .values()
            .iter()
            .zip(trainer.get_parameters().values())
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(changed.len(), 1, "{kind:?}: exactly one bias moves");
        for (b, a) in before.iter().zip(&after) {
            if (f64::from(b.p_accepted) - threshold).abs() > 1e-4 {
                assert_eq!(
                    f64::from(b.p_accepted) < threshold,
                    a.p_accepted < 0.5,
                    "{kind:?}: {b:?} -> {a:?}"
                );
            }
            assert_eq!(a.kind_probs, b.kind_probs, "the kind head is untouched");
        }
    }
}

fn transformer_spec() -> ProposalModelSpec {
    ProposalModelSpec {
        kind: ModelKind::Transformer,
        transformer: Some(TransformerSpec {
            layers: 1,
            heads: 2,
            sequence_len: 16,
            feed_forward: 16,
        }),
        ..tiny_spec()
    }
}

/// [`toy`] with every example's text also kept in reading order, as `encode` keeps it.
fn toy_sequences(spec: &ProposalModelSpec, n: usize) -> EncodedProposals {
    let f = spec.featurizer().unwrap();
    let bags = toy(spec, n);
    let mut data = EncodedProposals::new();
    for i in 0..n {
        let word = if i % 2 == 0 { "raise" } else { "cut" };
        let topic = if i % 3 == 0 { "token" } else { "fork" };
        let text = format!("we {word} the fee of the {topic} number {i}");
        data = data.concat(&bags.subset(&[i]));
        data.set_last_sequence(&f.sequence("proposal", &text, SEQUENCE_CAP));
    }
    data
}

#[test]
fn the_transformer_learns_both_heads_on_a_toy_task() {
    let spec = transformer_spec();
    let train = toy_sequences(&spec, 40);
    // "proposal", then "we cut the fee of the fork number" ("1" is shorter than a token).
    assert_eq!(train.sequence(1).len(), 9);
    let mut trainer =
        ProposalTrainer::new(&spec, DeviceSpec::Cpu, train.clone(), Some(train), 1).unwrap();
    let before = trainer.evaluate(&EvaluateConfig::default()).unwrap();
    trainer.fit(&fit_config(15)).unwrap();
    let after = trainer.evaluate(&EvaluateConfig::default()).unwrap();
    assert!(after.loss < before.loss, "{before:?} -> {after:?}");
    assert_eq!(after.metrics["accuracy"], 1.0, "{after:?}");
    assert_eq!(after.metrics["kind_accuracy"], 1.0, "{after:?}");
}

#[test]
fn the_transformer_reads_word_order() {
    // The same two words in both classes; only which comes first tells them apart, which no
    // bag of unigrams can see.
    let spec = ProposalModelSpec {
        community_prior: false,
        ..transformer_spec()
    };
    let f = spec.featurizer().unwrap();
    let mut data = EncodedProposals::new();
    for i in 0..32 {
        let (text, outcome) = if i % 2 == 0 {
            ("approve budget", 0)
        } else {
            ("budget approve", 1)
        };
        data.push(
            &f.ids("", text),
            &f.meta_ids(&[("community", "alpha")]),
            Some(outcome),
            0,
        );
        data.set_last_sequence(&f.sequence("", text, SEQUENCE_CAP));
    }
    let mut trainer =
        ProposalTrainer::new(&spec, DeviceSpec::Cpu, data.clone(), Some(data), 2).unwrap();
    trainer.fit(&fit_config(30)).unwrap();
    let after = trainer.evaluate(&EvaluateConfig::default()).unwrap();
    assert_eq!(after.metrics["accuracy"], 1.0, "{after:?}");
}

#[test]
fn the_transformer_starts_with_unit_layer_norms_and_round_trips() {
    let spec = transformer_spec();
    let data = toy_sequences(&spec, 8);
    let a = ProposalTrainer::new(&spec, DeviceSpec::Cpu, data.clone(), None, 7).unwrap();
    let mut b = ProposalTrainer::new(&spec, DeviceSpec::Cpu, data.clone(), None, 7).unwrap();
    assert_eq!(
        a.get_parameters(),
        b.get_parameters(),
        "same seed, same model"
    );
    let params = a.get_parameters();
    let names: Vec<&str> = params
        .schema()
        .tensors()
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    let gammas: Vec<&&str> = names.iter().filter(|n| n.ends_with(".gamma")).collect();
    assert_eq!(
        gammas.len(),
        2,
        "two norms in one pre-norm layer: {names:?}"
    );
    for name in gammas {
        assert!(tensor(&params, name).iter().all(|&v| v == 1.0), "{name}");
    }
    for name in names
        .iter()
        .filter(|n| n.contains(".norm") && n.ends_with(".beta"))
    {
        assert!(tensor(&params, name).iter().all(|&v| v == 0.0), "{name}");
    }
    assert!(names.contains(&"position.weight"), "{names:?}");
    b.fit(&fit_config(1)).unwrap();
    assert_ne!(params.values(), b.get_parameters().values());
    b.set_parameters(&params).unwrap();
    assert_eq!(b.get_parameters(), params);
    let bag = ProposalTrainer::new(&tiny_spec(), DeviceSpec::Cpu, data, None, 7).unwrap();
    assert!(matches!(
        b.set_parameters(&bag.get_parameters()),
        Err(TrainerError::Params(ParamError::SchemaMismatch { .. }))
    ));
}

#[test]
fn bad_transformer_specs_are_refused() {
    let with = |t: TransformerSpec| ProposalModelSpec {
        transformer: Some(t),
        ..transformer_spec()
    };
    let base = transformer_spec().transformer.unwrap();
    for (spec, needle) in [
        (with(TransformerSpec { heads: 3, ..base }), "divide"),
        (with(TransformerSpec { heads: 0, ..base }), "divide"),
        (with(TransformerSpec { layers: 0, ..base }), "layers"),
        (
            with(TransformerSpec {
                sequence_len: 0,
                ..base
            }),
            "sequence_len",
        ),
        (
            with(TransformerSpec {
                sequence_len: SEQUENCE_CAP + 1,
                ..base
            }),
            "sequence_len",
        ),
        (
            ProposalModelSpec {
                weighting: TermWeighting::TfIdf,
                ..transformer_spec()
            },
            "weighting",
        ),
        (
            ProposalModelSpec {
                kind: ModelKind::BagOfEmbeddings,
                ..transformer_spec()
            },
            "kind = \"transformer\" only",
        ),
    ] {
        let err = spec.validate().unwrap_err();
        assert!(err.contains(needle), "{err}");
        assert!(matches!(
            ProposalTrainer::new(&spec, DeviceSpec::Cpu, EncodedProposals::new(), None, 1),
            Err(TrainerError::InvalidConfig(_))
        ));
    }
    let toml: ProposalModelSpec =
        toml::from_str("kind = \"transformer\"\n[transformer]\nlayers = 1\n").unwrap();
    assert_eq!(
        toml.transformer_spec().heads,
        TransformerSpec::default().heads
    );
    assert!(toml::from_str::<ProposalModelSpec>("[transformer]\nwidth = 3\n").is_err());
}

#[test]
fn the_transformer_predicts_rows_without_a_sequence_and_refuses_foreign_ids() {
    let spec = transformer_spec();
    let trainer = ProposalTrainer::new(&spec, DeviceSpec::Cpu, toy(&spec, 4), None, 3).unwrap();
    // `toy` pushes bags only: each row reads one padding position, never a row of nothing.
    for p in trainer.predict(&toy(&spec, 4)).unwrap() {
        assert!(p.p_accepted.is_finite() && p.kind_probs.iter().all(|v| v.is_finite()));
    }
    let mut foreign = toy_sequences(&spec, 2);
    foreign.set_last_sequence(&[5, 1 << 20]);
    assert!(matches!(
        trainer.predict(&foreign),
        Err(TrainerError::InvalidConfig(_))
    ));
}

#[test]
fn sequences_survive_subset_concat_and_the_cap() {
    let spec = transformer_spec();
    let data = toy_sequences(&spec, 6);
    let sub = data.subset(&[4, 1]);
    assert_eq!(sub.sequence(0), data.sequence(4));
    assert_eq!(sub.sequence(1), data.sequence(1));
    let both = sub.concat(&data);
    assert_eq!(both.sequence(2), data.sequence(0));
    assert_eq!(both.sequence(7), data.sequence(5));
    let mut long = EncodedProposals::new();
    long.set_last_sequence(&[1, 2]); // nothing pushed yet: ignored
    long.push(&[1], &[2], None, 0);
    long.set_last_sequence(&vec![3; SEQUENCE_CAP + 10]);
    assert_eq!(long.sequence(0).len(), SEQUENCE_CAP);
}

#[cfg(feature = "wgpu")]
#[test]
fn wgpu_trains_the_proposal_models_as_the_cpu_does() {
    use crate::trainer::tests::assert_backends_agree;

    let hidden = ProposalModelSpec {
        hidden: 16,
        ..tiny_spec()
    };
    for (what, spec) in [
        ("bag of embeddings", tiny_spec()),
        ("bag with a hidden layer", hidden),
        ("transformer", transformer_spec()),
    ] {
        let data = toy_sequences(&spec, 40);
        let make = |device| {
            ProposalTrainer::new(&spec, device, data.clone(), Some(data.clone()), 5)
                .map_err(|e| e.to_string())
        };
        assert_backends_agree(what, make, &fit_config(1));
        let fedprox = FitConfig {
            proximal_mu: 0.5,
            ..fit_config(1)
        };
        assert_backends_agree(&format!("{what} with FedProx"), make, &fedprox);
    }
}
