//! A member whose model is not one of ours (softmax regression in plain Rust, no burn) joins
//! the stock `fl-aggregator` binary over TLS through the one-call client, under plain FedAvg
//! and SecAgg+; the aggregator takes the initial model from the files the federation file
//! names (`[model] kind = "file"`).

use std::sync::Arc;
use std::time::Duration;

// What a member embeds: fl-client alone (its prelude), no burn needed.
use fl_client::data::digits;
use fl_client::prelude::*;

use crate::e2e::{MEMBERS, Procs, federation, start_aggregator, wait_exit, wait_line};

const FEATURES: usize = 64;
const CLASSES: usize = 10;

/// Multinomial logistic regression trained by plain SGD: what a DAO might bring.
struct SoftmaxRegression {
    schema: Arc<Schema>,
    /// `w` (features × classes, row-major) then `b` (classes).
    params: Vec<f32>,
    data: Vec<(Vec<f32>, usize)>,
}

impl SoftmaxRegression {
    fn schema() -> Arc<Schema> {
        Arc::new(
            Schema::new(vec![
                TensorSpec::new("w", [FEATURES, CLASSES]),
                TensorSpec::new("b", [CLASSES]),
            ])
            .unwrap(),
        )
    }

    /// Member `i`'s share of the UCI digits: every `MEMBERS`-th image (pixels in 0..1).
    fn member(i: usize) -> Self {
        let all = digits::embedded();
        let data = (0..all.len())
            .filter(|j| j % MEMBERS == i)
            .filter_map(|j| all.example(j))
            .map(|(x, y)| (x.to_vec(), usize::from(y)))
            .collect();
        let schema = Self::schema();
        Self {
            params: vec![0.0; schema.num_values()],
            schema,
            data,
        }
    }

    fn probabilities(&self, x: &[f32]) -> [f32; CLASSES] {
        let (w, b) = self.params.split_at(FEATURES * CLASSES);
        let mut z = [0f32; CLASSES];
        for (c, zc) in z.iter_mut().enumerate() {
            *zc = b[c]
                + x.iter()
                    .enumerate()
                    .map(|(f, v)| v * w[f * CLASSES + c])
                    .sum::<f32>();
        }
        let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let sum: f32 = z.iter().map(|v| (v - max).exp()).sum();
        z.map(|v| (v - max).exp() / sum)
    }

    fn accuracy(&self, data: &[(Vec<f32>, usize)]) -> f64 {
        let right = data
            .iter()
            .filter(|(x, y)| {
                let p = self.probabilities(x);
                (0..CLASSES).max_by(|a, b| p[*a].total_cmp(&p[*b])) == Some(*y)
            })
            .count();
        right as f64 / data.len().max(1) as f64
    }
}

impl Trainer for SoftmaxRegression {
    fn get_parameters(&self) -> ParamVec {
        ParamVec::new(self.schema.clone(), self.params.clone()).unwrap()
    }

    fn set_parameters(&mut self, params: &ParamVec) -> Result<(), TrainerError> {
        self.params = params.values().to_vec();
        Ok(())
    }

    fn fit(&mut self, config: &FitConfig) -> Result<FitOutcome, TrainerError> {
        let lr = config.learning_rate as f32;
        let mut loss = 0.0;
        for _ in 0..config.local_epochs {
            for i in 0..self.data.len() {
                let (x, y) = &self.data[i];
                let p = self.probabilities(x);
                loss += -p[*y].max(1e-12).ln();
                let (w, b) = self.params.split_at_mut(FEATURES * CLASSES);
                for c in 0..CLASSES {
                    let g = p[c] - if c == *y { 1.0 } else { 0.0 };
                    b[c] -= lr * g;
                    for (f, v) in x.iter().enumerate() {
                        w[f * CLASSES + c] -= lr * g * v;
                    }
                }
            }
        }
        let steps = (self.data.len() * config.local_epochs as usize).max(1);
        Ok(FitOutcome {
            num_examples: self.data.len() as u64,
            metrics: Metrics::from([("train_loss".into(), loss as f64 / steps as f64)]),
        })
    }

    fn evaluate(&mut self, _config: &EvaluateConfig) -> Result<EvaluateResult, TrainerError> {
        Ok(EvaluateResult {
            loss: 0.0,
            num_examples: self.data.len() as u64,
            metrics: Metrics::from([("accuracy".into(), self.accuracy(&self.data))]),
        })
    }
}

/// A member that sends `factor` times its real update (model replacement): what detection
/// must flag, with evidence the stock CLI re-checks.
struct Scaled {
    inner: SoftmaxRegression,
    global: Vec<f32>,
    factor: f32,
}

impl Trainer for Scaled {
    fn get_parameters(&self) -> ParamVec {
        self.inner.get_parameters()
    }

    fn set_parameters(&mut self, params: &ParamVec) -> Result<(), TrainerError> {
        self.global = params.values().to_vec();
        self.inner.set_parameters(params)
    }

    fn fit(&mut self, config: &FitConfig) -> Result<FitOutcome, TrainerError> {
        let outcome = self.inner.fit(config)?;
        for (p, g) in self.inner.params.iter_mut().zip(&self.global) {
            *p = g + self.factor * (*p - g);
        }
        Ok(outcome)
    }

    fn evaluate(&mut self, config: &EvaluateConfig) -> Result<EvaluateResult, TrainerError> {
        self.inner.evaluate(config)
    }
}

/// Runs a 3-round federation of softmax-regression members against the stock aggregator over
/// TLS with `extra` appended to the federation file; returns the final model's accuracy on all
/// the digits and its CID.
fn federate(extra: &str) -> (f64, String) {
    let f = federation(3, true);
    federate_in(&f, extra, None)
}

/// [`federate`] in `f`, member 3 scaling its update by `scaled` when given.
fn federate_in(f: &crate::e2e::Federation, extra: &str, scaled: Option<f32>) -> (f64, String) {
    let rounds = 3;
    // The aggregator has never seen this model: it takes it from the files.
    let initial = SoftmaxRegression::member(0).get_parameters();
    fl_aggregator::model_file::write(
        &initial,
        &f.dir.path().join("model.schema.json"),
        &f.dir.path().join("model.params"),
    )
    .unwrap();
    let toml = std::fs::read_to_string(&f.config_path).unwrap();
    let kind = if extra.contains("[strategy.trimmed_mean]") {
        "[strategy]\nkind = \"trimmed_mean\"\n"
    } else {
        "[strategy]\n"
    };
    let toml = toml
        .replace("[strategy]\n", kind)
        .replace(
            "kind = \"mlp\"\nhidden = 256",
            "kind = \"file\"\nschema = \"model.schema.json\"\nparams = \"model.params\"",
        )
        .replace(
            "local_epochs = 5\nbatch_size = 32\nlearning_rate = 0.02",
            "local_epochs = 2\nlearning_rate = 0.1",
        );
    std::fs::write(&f.config_path, format!("{toml}\n{extra}")).unwrap();

    let (aggregator, lines) = start_aggregator(f);
    let mut procs = Procs(vec![aggregator]);
    wait_line(&lines, "listening", Duration::from_secs(60));

    // Each member: load the file and its key, then one call.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let reports = runtime.block_on(async {
        let members = (0..MEMBERS).map(|i| {
            let path = f.config_path.clone();
            let key = f.keys[i].clone();
            tokio::spawn(async move {
                let federation = load_federation(&path).unwrap();
                let key = read_key_file(&key).unwrap();
                let trainer = SoftmaxRegression::member(i);
                match scaled {
                    Some(factor) if i == 3 => {
                        let trainer = Scaled {
                            inner: trainer,
                            global: Vec::new(),
                            factor,
                        };
                        run(&federation, key, trainer)
                            .await
                            .map(|(report, t)| (report, t.inner))
                    }
                    _ => run(&federation, key, trainer).await,
                }
            })
        });
        let mut reports = Vec::new();
        for m in members.collect::<Vec<_>>() {
            reports.push(m.await.unwrap());
        }
        reports
    });
    for r in &reports {
        let (report, _) = r.as_ref().expect("the member finished");
        assert_eq!(report.fits, rounds);
    }
    let finished = wait_line(&lines, "finished", Duration::from_secs(60));
    assert!(wait_exit(&mut procs.0[0], Duration::from_secs(30)).success());
    // The final model, from the checkpoint the aggregator wrote.
    let cid = finished
        .split_whitespace()
        .find_map(|w| w.strip_prefix("params="))
        .expect("a params= field")
        .to_string();
    let bytes = std::fs::read(f.dir.path().join("checkpoints/params").join(&cid)).unwrap();
    let params = ParamVec::from_le_bytes(SoftmaxRegression::schema(), &bytes).unwrap();
    assert_eq!(params.content_hash().to_string(), cid);
    // Every member ends holding the federation's final model, not its own last local one.
    for r in &reports {
        let (report, trainer) = r.as_ref().unwrap();
        assert_eq!(
            report.final_params.map(|h| h.to_string()),
            Some(cid.clone())
        );
        assert_eq!(trainer.get_parameters(), params);
    }
    let mut model = SoftmaxRegression::member(0);
    model.set_parameters(&params).unwrap();
    let everyone: Vec<_> = (0..MEMBERS)
        .flat_map(|i| SoftmaxRegression::member(i).data)
        .collect();
    (model.accuracy(&everyone), cid)
}

#[test]
fn a_member_with_its_own_model_joins_the_stock_aggregator_under_fedavg_and_secagg() {
    let (plain, plain_cid) = federate("");
    assert!(plain > 0.9, "accuracy {plain}");
    let secure = "[secure_aggregation]\nprotocol = \"secagg+\"\nclip_norm = 50.0\n";
    let (masked, masked_cid) = federate(secure);
    assert!(masked > 0.9, "accuracy {masked}");
    // Secure aggregation quantises the updates: a model of (nearly) the same accuracy, but
    // other bytes, so the masked protocol really ran.
    assert!((plain - masked).abs() < 0.01, "{plain} vs {masked}");
    assert_ne!(plain_cid, masked_cid);
}

#[test]
fn a_member_sending_a_scaled_update_is_flagged_with_evidence_the_cli_accepts() {
    let f = federation(3, true);
    let validator = MemberKey::generate();
    let validator_key = f.dir.path().join("validator.key");
    fl_node::write_key_file(&validator, &validator_key).unwrap();
    let extra = format!(
        "[strategy.trimmed_mean]\nbeta = 0.25\n[strategy.detection]\nexclude_below = 0.0\n\
         [qa]\nvalidators = [\"{}\"]\n",
        validator.public_key_hex()
    );
    let (accuracy, _) = federate_in(&f, &extra, Some(10.0));
    assert!(accuracy > 0.85, "trimmed mean keeps the model: {accuracy}");
    let toml = std::fs::read_to_string(&f.config_path).unwrap();
    let cheater = toml
        .lines()
        .find_map(|l| l.strip_prefix("allowed = ["))
        .and_then(|l| l.split(", ").nth(3))
        .map(|a| a.trim_matches(|c| c == '"' || c == ']').to_string())
        .expect("four addresses");
    let checkpoints = f.dir.path().join("checkpoints");
    let qa = |args: &[&std::ffi::OsStr]| {
        std::process::Command::new(crate::e2e::bin("fl-aggregator"))
            .arg("qa")
            .arg("verify")
            .args(args)
            .output()
            .unwrap()
    };
    for round in 1..=3u64 {
        let file = checkpoints
            .join("evidence")
            .join(format!("{round:010}"))
            .join(format!("{cheater}.json"));
        assert!(
            file.exists(),
            "round {round}: no evidence against {cheater}"
        );
        let manifest = checkpoints.join("rounds").join(format!("{round:010}.json"));
        let out = qa(&[
            file.as_os_str(),
            "--key-file".as_ref(),
            validator_key.as_os_str(),
            "--manifest".as_ref(),
            manifest.as_os_str(),
        ]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "round {round}: {stdout}");
        assert!(stdout.starts_with("flag HOLDS"), "{stdout}");
        assert!(stdout.contains(&cheater), "{stdout}");
        // The hash a slashing verdict names is the sealed file's public evidence hash.
        let sealed: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        let hash = sealed["public"]["evidence_hash"].as_str().unwrap();
        assert!(stdout.contains(&format!("--evidence 0x{hash}")), "{stdout}");
        // The hash a slashing verdict names is the sealed file's public evidence hash.
        let sealed: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        let hash = sealed["public"]["evidence_hash"]
            .as_str()
            .unwrap()
            .to_string();
        let hex = fl_core::ContentHash::from_cid_str(&hash)
            .map(|h| h.to_hex())
            .unwrap_or(hash);
        assert!(stdout.contains(&format!("--evidence 0x{hex}")), "{stdout}");
        // Sealed: nothing to check without a validator's key.
        let out = qa(&[file.as_os_str()]);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        // The public record carries the score, not the update; editing it breaks the seal.
        let text = std::fs::read_to_string(&file).unwrap();
        let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(json["public"]["score"].as_f64().unwrap() > 3.5);
        json["public"]["score"] = serde_json::json!(0.0);
        let tampered = f.dir.path().join("tampered.json");
        std::fs::write(&tampered, serde_json::to_vec(&json).unwrap()).unwrap();
        let out = qa(&[
            tampered.as_os_str(),
            "--key-file".as_ref(),
            validator_key.as_os_str(),
        ]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(2), "{stdout}");
        assert!(stdout.contains("REJECTED"), "{stdout}");
    }
    // The manifests record the flags and the reputations the next start restores.
    let last: serde_json::Value = serde_json::from_slice(
        &std::fs::read(checkpoints.join("rounds").join(format!("{:010}.json", 3))).unwrap(),
    )
    .unwrap();
    assert_eq!(last["metrics"]["qa.3.flagged"], serde_json::json!(1.0));
    assert_eq!(
        last["clients"]["3"],
        serde_json::json!(cheater),
        "per-client metrics map to addresses"
    );
    assert!(last["metrics"]["qa.3.reputation"].as_f64().unwrap() < 0.5);
}
