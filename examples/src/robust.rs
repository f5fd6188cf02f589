//! The robustness benchmark: the digits federation (20 members, Dirichlet α = 0.5) with a
//! fifth of its members attacking, for each robust rule and each attack of
//! [`fl_aggregator::attack`]. `cargo run -p benches --bin robust` prints the table recorded in
//! `benches/RESULTS.md`.
//!
//! Attackers are members `0..f`; label flippers train on flipped labels (`y → 9 - y`), every
//! other attack replaces the attackers' updates through an
//! [`Adversary`] around the rule.

use fl_aggregator::EngineEvent;
use fl_aggregator::attack::{Adversary, Attack};
use fl_client::{BurnTrainer, Dataset, DeviceSpec};
use fl_core::identity::{MemberKey, SignedUpdate, UpdateKind, UpdateStatement};
use fl_core::strategy::derive_seed;
use fl_core::strategy::{
    BucketingConfig, BulyanConfig, CenteredClippingConfig, GeometricMedianConfig, KrumConfig,
    NnmConfig, NormBoundingConfig, TrimmedMeanConfig,
};
use fl_core::strategy::{EvaluatePlan, FitPlan, QaFindings, RoundUpdates};
use fl_core::{
    AggregationRule, ClientId, ContentHash, ParamVec, Strategy, StrategyConfig, StrategyError,
    UpdateForm, wire,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::digits::{self, DigitsConfig, RunError, RunResult};

/// A rule under test: a label for the table and the `[strategy]` settings that select it.
#[derive(Debug, Clone)]
pub struct RuleUnderTest {
    /// e.g. `median+bucketing(2)`.
    pub label: String,
    /// The rule, its sub-table and pre-aggregators (selection and training come from the run).
    pub strategy: StrategyConfig,
    /// Flower's implementation of a rule instead of ours ([`flower_rules`]).
    pub flower: Option<FlowerSpec>,
}

/// One of Flower's robust strategies, as `benches/flower/robust_agg.py` runs it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FlowerSpec {
    /// `krum`, `multi_krum`, `median`, `trimmed_mean` or `bulyan`.
    pub rule: &'static str,
    /// Flower's `num_malicious_clients`.
    pub f: usize,
    /// Flower's `num_clients_to_keep` (MultiKrum).
    pub keep: usize,
    /// FedTrimmedAvg's `beta`.
    pub beta: f64,
}

/// Flower's Krum, MultiKrum, Bulyan, FedMedian and FedTrimmedAvg with the settings of ours in
/// [`rules`] (f = `f`, MultiKrum keeping `n - f`, β = f/n).
pub fn flower_rules(n: usize, f: usize) -> Vec<RuleUnderTest> {
    let spec = |rule, keep, beta| FlowerSpec {
        rule,
        f,
        keep,
        beta,
    };
    let beta = f as f64 / n as f64;
    [
        ("flower_krum", spec("krum", 0, 0.0)),
        ("flower_multi_krum", spec("multi_krum", n - f, 0.0)),
        ("flower_bulyan", spec("bulyan", 0, 0.0)),
        ("flower_median", spec("median", 0, 0.0)),
        ("flower_trimmed_mean", spec("trimmed_mean", 0, beta)),
    ]
    .into_iter()
    .map(|(label, spec)| RuleUnderTest {
        label: label.into(),
        strategy: StrategyConfig {
            kind: AggregationRule::Median,
            ..Default::default()
        },
        flower: Some(spec),
    })
    .collect()
}

/// Flower's rule in a Python child process (`DAOFL_FLOWER_PYTHON`, default `python3`, with
/// `flwr` installed; `benches/flower/robust.sh` makes such a venv), as a [`Strategy`] over
/// the members' models and example counts, exactly what Flower's strategies receive.
pub struct FlowerRule {
    config: StrategyConfig,
    spec: FlowerSpec,
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl FlowerRule {
    /// Starts the Python side.
    ///
    /// # Errors
    /// When the interpreter cannot be started.
    pub fn spawn(config: StrategyConfig, spec: FlowerSpec) -> std::io::Result<Self> {
        let python = std::env::var("DAOFL_FLOWER_PYTHON").unwrap_or_else(|_| "python3".into());
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../benches/flower/robust_agg.py");
        let mut child = std::process::Command::new(python)
            .arg(script)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = std::io::BufReader::new(child.stdout.take().expect("piped"));
        Ok(Self {
            config,
            spec,
            child,
            stdin,
            stdout,
        })
    }

    fn ask(&mut self, models: &[&[f32]], weights: &[u64]) -> Result<Vec<f32>, String> {
        use std::io::{BufRead, Read, Write};
        let d = models.first().map_or(0, |m| m.len());
        let header = format!(
            "{{\"rule\":\"{}\",\"f\":{},\"keep\":{},\"beta\":{},\"n\":{},\"d\":{d},\"weights\":{:?}}}\n",
            self.spec.rule,
            self.spec.f,
            self.spec.keep,
            self.spec.beta,
            models.len(),
            weights
        );
        let mut bytes = header.into_bytes();
        for m in models {
            bytes.extend(m.iter().flat_map(|v| v.to_le_bytes()));
        }
        let io = |e: std::io::Error| format!("flower process: {e}");
        self.stdin.write_all(&bytes).map_err(io)?;
        self.stdin.flush().map_err(io)?;
        let mut tag = [0u8; 1];
        self.stdout.read_exact(&mut tag).map_err(io)?;
        if tag[0] != b'=' {
            let mut line = String::new();
            self.stdout.read_line(&mut line).map_err(io)?;
            return Err(format!("flower: {}", line.trim()));
        }
        let mut out = vec![0u8; 4 * d];
        self.stdout.read_exact(&mut out).map_err(io)?;
        Ok(out
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }
}

impl Drop for FlowerRule {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Strategy for FlowerRule {
    fn name(&self) -> &str {
        self.spec.rule
    }
    fn update_form(&self) -> UpdateForm {
        UpdateForm::PerMember
    }
    fn configure_fit(&mut self, _round: u64, available: &[ClientId], seed: u64) -> FitPlan {
        self.config.plan_fit(available, seed)
    }
    fn aggregate_fit(
        &mut self,
        _round: u64,
        current: &ParamVec,
        updates: RoundUpdates,
    ) -> Result<ParamVec, StrategyError> {
        let members = updates.into_members()?;
        let models: Vec<&[f32]> = members.iter().map(|u| u.params.values()).collect();
        let weights: Vec<u64> = members.iter().map(|u| u.weight).collect();
        let next = self
            .ask(&models, &weights)
            .map_err(StrategyError::Invalid)?;
        ParamVec::new(current.schema().clone(), next)
            .map_err(|e| StrategyError::Invalid(e.to_string()))
    }
    fn configure_evaluate(
        &mut self,
        round: u64,
        available: &[ClientId],
        seed: u64,
    ) -> EvaluatePlan {
        let _ = round;
        self.config.plan_evaluate(available, seed)
    }
}

/// The rules of the benchmark for `n` members of whom `f` may be Byzantine: FedAvg (the
/// control), median with and without bucketing, trimmed mean (β = f/n) with and without NNM,
/// Multi-Krum (m = n - f), Krum with and without NNM (Allouah et al. 2023's fix for Krum on
/// heterogeneous data), Bulyan, geometric median, centered clipping (τ, momentum 0.9,
/// with bucketing), norm bounding (`max_norm`).
pub fn rules(n: usize, f: usize, tau: f64, max_norm: f64) -> Vec<RuleUnderTest> {
    let beta = f as f64 / n as f64;
    let rule = |kind| StrategyConfig {
        kind,
        ..Default::default()
    };
    let bucketing = Some(BucketingConfig { size: 2 });
    let krum = Some(KrumConfig {
        byzantine: f,
        multi: 1,
    });
    let cc = CenteredClippingConfig {
        tau,
        iterations: 1,
        momentum: 0.9,
    };
    let t = |label: &str, strategy: StrategyConfig| RuleUnderTest {
        label: label.into(),
        strategy,
        flower: None,
    };
    vec![
        t("fedavg", rule(AggregationRule::Fedavg)),
        t("median", rule(AggregationRule::Median)),
        t(
            "median+bucketing(2)",
            StrategyConfig {
                bucketing,
                ..rule(AggregationRule::Median)
            },
        ),
        t(
            "trimmed_mean",
            StrategyConfig {
                trimmed_mean: Some(TrimmedMeanConfig { beta }),
                ..rule(AggregationRule::TrimmedMean)
            },
        ),
        t(
            "nnm+trimmed_mean",
            StrategyConfig {
                trimmed_mean: Some(TrimmedMeanConfig { beta }),
                nnm: Some(NnmConfig { byzantine: f }),
                ..rule(AggregationRule::TrimmedMean)
            },
        ),
        t(
            "krum",
            StrategyConfig {
                krum,
                ..rule(AggregationRule::Krum)
            },
        ),
        t(
            "nnm+krum",
            StrategyConfig {
                krum,
                nnm: Some(NnmConfig { byzantine: f }),
                ..rule(AggregationRule::Krum)
            },
        ),
        t(
            "multi_krum",
            StrategyConfig {
                krum: Some(KrumConfig {
                    byzantine: f,
                    multi: n - f,
                }),
                ..rule(AggregationRule::Krum)
            },
        ),
        t(
            "bulyan",
            StrategyConfig {
                bulyan: Some(BulyanConfig { byzantine: f }),
                ..rule(AggregationRule::Bulyan)
            },
        ),
        t(
            "geometric_median",
            StrategyConfig {
                geometric_median: Some(GeometricMedianConfig::default()),
                ..rule(AggregationRule::GeometricMedian)
            },
        ),
        t(
            "centered_clipping",
            StrategyConfig {
                centered_clipping: Some(cc),
                ..rule(AggregationRule::CenteredClipping)
            },
        ),
        t(
            "centered_clipping+bucketing(2)",
            StrategyConfig {
                centered_clipping: Some(cc),
                bucketing,
                ..rule(AggregationRule::CenteredClipping)
            },
        ),
        t(
            "norm_bounding",
            StrategyConfig {
                norm_bounding: Some(NormBoundingConfig { max_norm }),
                ..rule(AggregationRule::NormBounding)
            },
        ),
        t("fltrust", rule(AggregationRule::Fltrust)),
    ]
}

/// The base configuration of the robustness benchmarks (`benches` `robust` and `detect`), from
/// their `key=value` arguments: the digits federation of the quickstart, or with
/// `dataset=fashion` Fashion-MNIST (Debian's `dataset-fashion-mnist` in
/// `/usr/share/datasets/fashion-mnist`, or `fashion_dir`): a seeded sample of `train_limit`
/// (8,000) training and `test_limit` (2,000) test images, an MLP of `hidden` (128) units and
/// `epochs` (2) local epochs of Adam at `lr` (0.01). Unparsable numbers fall back to the
/// defaults.
pub fn bench_template(arg: impl Fn(&str) -> Option<String>) -> DigitsConfig {
    let mut template = DigitsConfig::default();
    if arg("dataset").as_deref() != Some("fashion") {
        return template;
    }
    let number = |key: &str, default: f64| {
        arg(key)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(default)
    };
    template.images = digits::ImageSource::Idx {
        dir: arg("fashion_dir")
            .unwrap_or_else(|| "/usr/share/datasets/fashion-mnist".into())
            .into(),
        train_limit: Some(number("train_limit", 8000.0) as usize),
        test_limit: Some(number("test_limit", 2000.0) as usize),
    };
    template.model = fl_client::ModelSpec::Mlp {
        hidden: number("hidden", 128.0) as usize,
    };
    template.fit.local_epochs = number("epochs", 2.0) as u32;
    template.fit.learning_rate = number("lr", 0.01);
    template
}

/// How the benchmarks' tables name `base`'s images: `digits` or `Fashion-MNIST` (any IDX
/// folder, which is what [`bench_template`] points at).
pub fn dataset_label(base: &DigitsConfig) -> &'static str {
    match base.images {
        digits::ImageSource::Digits => "digits",
        digits::ImageSource::Idx { .. } => "Fashion-MNIST",
    }
}

/// An attack's table label, `none` for no attack.
pub fn attack_label(attack: Option<Attack>) -> String {
    attack.map_or("none".into(), |a| a.label())
}

/// The attacks of the benchmark: none, sign flip, scaling ×20, Gaussian σ = 1 and 10, label flip,
/// ALIE τ = 1.5, IPM ε = 0.1 and 100, min-max, min-sum, the pixel-pattern backdoor (target 0).
pub fn attacks() -> Vec<Option<Attack>> {
    vec![
        None,
        Some(Attack::SignFlip),
        Some(Attack::Scaling { factor: 20.0 }),
        Some(Attack::Gaussian { std: 1.0 }),
        Some(Attack::Gaussian { std: 10.0 }),
        Some(Attack::LabelFlip),
        Some(Attack::Alie { tau: 1.5 }),
        Some(Attack::Ipm { epsilon: 0.1 }),
        Some(Attack::Ipm { epsilon: 100.0 }),
        Some(Attack::MinMax),
        Some(Attack::MinSum),
        Some(Attack::Backdoor { target: 0 }),
    ]
}

/// `data` with every label `y` replaced by `C - 1 - y`.
pub fn flip_labels(data: Dataset) -> Result<Dataset, fl_client::Error> {
    let c = data.num_classes();
    let labels = data
        .labels()
        .iter()
        .map(|&y| (c - 1 - usize::from(y)) as u8)
        .collect();
    Ok(Dataset::new(
        data.features().to_vec(),
        data.feature_shape().to_vec(),
        labels,
        c,
    )?)
}

/// Examples in FLTrust's root data set (Cao et al. use 100).
pub const ROOT_EXAMPLES: usize = 100;

/// Share of a backdoor attacker's examples that carry the trigger.
pub const BACKDOOR_FRACTION: f64 = 0.5;

/// The backdoor's success rate: the share of held-out examples of other classes that `params`
/// classifies as `target` once the trigger is stamped on them.
pub fn backdoor_success(
    base: &DigitsConfig,
    params: &fl_core::ParamVec,
    target: u8,
) -> Result<f64, RunError> {
    let test = base.split()?.test;
    let triggered =
        fl_client::attack::backdoor_test_set(test, target).map_err(fl_client::Error::from)?;
    let mut t = BurnTrainer::new(
        &base.model,
        DeviceSpec::Cpu,
        triggered.clone(),
        Some(triggered),
        0,
    )
    .map_err(fl_client::Error::from)?;
    use fl_client::Trainer;
    t.set_parameters(params)?;
    let r = t.evaluate(&fl_core::EvaluateConfig::default())?;
    Ok(r.metrics.get("accuracy").copied().unwrap_or(f64::NAN))
}

/// Members' data prepared for a cell: label flippers flip, and a clean root data set of
/// [`ROOT_EXAMPLES`] is drawn uniformly (seeded) from every member's clean data, as FLTrust's
/// aggregator would collect it.
fn prepare_cell(
    base: &DigitsConfig,
    attack: Option<Attack>,
    attackers: usize,
) -> Result<(digits::Prepared, BurnTrainer), RunError> {
    let mut pool: Vec<(Vec<f32>, u8)> = Vec::new();
    let mut shape = Vec::new();
    let mut classes = 10;
    let prepared = digits::prepare_with(base, |i, data| {
        shape = data.feature_shape().to_vec();
        classes = data.num_classes();
        pool.extend((0..data.len()).filter_map(|j| data.example(j).map(|(x, y)| (x.to_vec(), y))));
        match attack {
            _ if i >= attackers => Ok(data),
            Some(Attack::LabelFlip) => flip_labels(data),
            Some(Attack::Backdoor { target }) => Ok(fl_client::attack::add_backdoor(
                data,
                target,
                BACKDOOR_FRACTION,
                derive_seed(base.seed, "backdoor", i as u64),
            )
            .map_err(fl_client::Error::from)?),
            _ => Ok(data),
        }
    })?;
    let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(base.seed, "fltrust-root", 0));
    let picked = rand::seq::index::sample(&mut rng, pool.len(), ROOT_EXAMPLES.min(pool.len()));
    let (features, labels): (Vec<Vec<f32>>, Vec<u8>) =
        picked.into_iter().map(|j| pool[j].clone()).unzip();
    let root =
        Dataset::new(features.concat(), shape, labels, classes).map_err(fl_client::Error::from)?;
    let root = BurnTrainer::new(
        &base.model,
        DeviceSpec::Cpu,
        root,
        None,
        derive_seed(base.seed, "init", 0),
    )
    .map_err(fl_client::Error::from)?;
    Ok((prepared, root))
}

/// One cell of the table.
#[derive(Debug, Clone)]
pub struct CellResult {
    /// The run.
    pub run: RunResult,
    /// Rounds the engine aborted (a rule's typed refusal, e.g. non-finite updates).
    pub aborted: usize,
    /// Per round, the median norm of the members' updates (`qa.median_norm`; robust rules
    /// only), to calibrate clipping radii.
    pub median_norms: Vec<f64>,
    /// Under a backdoor (target 0 without attack, the baseline): the final model's backdoor
    /// success rate ([`backdoor_success`]).
    pub backdoor_success: Option<f64>,
}

/// Runs `base` under `rule` with members `0..attackers` running `attack` (none: all honest).
pub fn run_cell(
    base: &DigitsConfig,
    rule: &RuleUnderTest,
    attack: Option<Attack>,
    attackers: usize,
) -> Result<CellResult, RunError> {
    run_cell_with(base, rule, attack, attackers, false)
}

/// [`run_cell`]; with `sybils`, every attacker sends the first attacker's malicious update
/// (identical sybil members, [`Adversary::with_sybils`]).
pub fn run_cell_with(
    base: &DigitsConfig,
    rule: &RuleUnderTest,
    attack: Option<Attack>,
    attackers: usize,
    sybils: bool,
) -> Result<CellResult, RunError> {
    let (prepared, root) = prepare_cell(base, attack, attackers)?;
    let strategy = StrategyConfig {
        kind: rule.strategy.kind,
        krum: rule.strategy.krum,
        trimmed_mean: rule.strategy.trimmed_mean,
        bulyan: rule.strategy.bulyan,
        geometric_median: rule.strategy.geometric_median,
        centered_clipping: rule.strategy.centered_clipping,
        norm_bounding: rule.strategy.norm_bounding,
        nnm: rule.strategy.nnm,
        bucketing: rule.strategy.bucketing,
        detection: rule.strategy.detection,
        ..base.strategy()
    }
    .build_with(
        None,
        None,
        prepared.trainers.len(),
        prepared.initial.values().len(),
        None,
        Some(Box::new(root)),
    )?;
    let strategy: Box<dyn fl_core::Strategy> = match rule.flower {
        Some(spec) => Box::new(
            FlowerRule::spawn(base.strategy(), spec)
                .map_err(|e| RunError::External(format!("cannot start Flower's side: {e}")))?,
        ),
        None => strategy,
    };
    let strategy: Box<dyn fl_core::Strategy> = match attack {
        Some(a) if !a.poisons_data() => Box::new(
            Adversary::new(strategy, (0..attackers as u64).map(ClientId), a).with_sybils(sybils),
        ),
        _ => strategy,
    };
    let mut aborted = 0;
    let mut median_norms = Vec::new();
    let mut last = None;
    let run = digits::run_with_strategy(
        base,
        prepared,
        strategy,
        |_| {},
        |e| match e {
            EngineEvent::Finished { params } => last = Some(params.clone()),
            EngineEvent::RoundAborted { .. } => aborted += 1,
            EngineEvent::FitAggregated { metrics, .. } => {
                if let Some(n) = metrics.get("qa.median_norm") {
                    median_norms.push(*n);
                }
            }
            _ => {}
        },
    )?;
    // Under no attack, the rate at which the trigger alone sends images to class 0: the
    // baseline a backdoor's success is read against.
    let backdoor_success = match (attack, last) {
        (Some(Attack::Backdoor { target }), Some(params)) => {
            Some(backdoor_success(base, &params, target)?)
        }
        (None, Some(params)) => Some(backdoor_success(base, &params, 0)?),
        _ => None,
    };
    Ok(CellResult {
        run,
        aborted,
        median_norms,
        backdoor_success,
    })
}

/// Signs every member's update as the gRPC transport would (one key per member, derived from
/// `seed`), so that detection's findings carry signed updates and their evidence can be
/// re-checked: a simulation stand-in for the members' own signatures, placed inside an
/// [`Adversary`] so that attackers sign what they send.
pub struct Signer {
    inner: Box<dyn Strategy>,
    keys: Vec<MemberKey>,
    federation_id: String,
    max_chunk_bytes: usize,
}

impl Signer {
    /// Signs for `members` members with keys derived from `seed`.
    pub fn new(inner: Box<dyn Strategy>, members: usize, seed: u64, federation_id: &str) -> Self {
        let keys = (0..members)
            .map(|i| {
                let h = ContentHash::of(format!("daofl bench member key {seed} {i}").as_bytes());
                MemberKey::from_hex(&h.to_hex()).expect("a SHA-256 digest is a valid key")
            })
            .collect();
        Self {
            inner,
            keys,
            federation_id: federation_id.into(),
            max_chunk_bytes: 64 * 1024,
        }
    }

    /// The address each member signs as.
    pub fn addresses(&self) -> Vec<String> {
        self.keys.iter().map(|k| k.address().to_string()).collect()
    }

    /// The chunk size digests are computed with.
    pub fn max_chunk_bytes(&self) -> usize {
        self.max_chunk_bytes
    }
}

impl Strategy for Signer {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn update_form(&self) -> UpdateForm {
        UpdateForm::PerMember
    }
    fn configure_fit(&mut self, round: u64, available: &[ClientId], seed: u64) -> FitPlan {
        self.inner.configure_fit(round, available, seed)
    }
    fn aggregate_fit(
        &mut self,
        round: u64,
        current: &ParamVec,
        updates: RoundUpdates,
    ) -> Result<ParamVec, StrategyError> {
        let members = updates.into_members()?;
        let members = members
            .into_iter()
            .map(|u| {
                let key = usize::try_from(u.client.0)
                    .ok()
                    .and_then(|i| self.keys.get(i))
                    .ok_or_else(|| StrategyError::Invalid(format!("no key for {}", u.client)))?;
                let statement = UpdateStatement {
                    federation_id: self.federation_id.clone(),
                    session_id: [0; 32],
                    round,
                    kind: UpdateKind::Fit,
                    update_hash: wire::update_digest(&wire::chunk_hashes(
                        &u.params,
                        self.max_chunk_bytes,
                    )),
                    num_examples: u.weight,
                };
                let signature = key.sign_update(&statement);
                Ok(u.with_signed(Some(SignedUpdate {
                    statement,
                    signature,
                })))
            })
            .collect::<Result<Vec<_>, StrategyError>>()?;
        self.inner
            .aggregate_fit(round, current, RoundUpdates::PerMember(members))
    }
    fn round_metrics(&self) -> fl_core::Metrics {
        self.inner.round_metrics()
    }
    fn take_findings(&mut self) -> Option<QaFindings> {
        self.inner.take_findings()
    }
    fn configure_evaluate(
        &mut self,
        round: u64,
        available: &[ClientId],
        seed: u64,
    ) -> EvaluatePlan {
        self.inner.configure_evaluate(round, available, seed)
    }
}

/// Detection in one run: per round, who was flagged, and what re-checking their evidence gave.
#[derive(Debug, Clone, Default)]
pub struct DetectionTrace {
    /// Per aggregated round: the members that took part and those flagged.
    pub rounds: Vec<(Vec<ClientId>, Vec<ClientId>)>,
    /// Evidence records built and accepted by `qa::verify` (the flag holds).
    pub evidence_accepted: usize,
    /// Evidence records rejected or whose flag did not hold (with the reason).
    pub evidence_rejected: Vec<String>,
    /// Evidence records whose tampered copy (score raised) `qa::verify` rejected.
    pub tampered_rejected: usize,
    /// Members excluded at the end.
    pub excluded: usize,
    /// Per aggregated round: each scored member's consistency score
    /// (`qa.<client>.consistency`, only with `consistency_window` > 0).
    pub consistency: Vec<Vec<(ClientId, f64)>>,
}

/// Runs `base` under `rule` (which must set `detection`) with members `0..attackers` running
/// `attack`, every update signed; builds and re-checks the evidence of every flag.
pub fn run_detection(
    base: &DigitsConfig,
    rule: &RuleUnderTest,
    attack: Option<Attack>,
    attackers: usize,
) -> Result<(RunResult, DetectionTrace), RunError> {
    let (prepared, root) = prepare_cell(base, attack, attackers)?;
    let members = prepared.trainers.len();
    let strategy = StrategyConfig {
        fit: base.strategy().fit,
        fraction_fit: 1.0,
        min_fit_clients: 1,
        ..rule.strategy.clone()
    }
    .build_with(
        None,
        None,
        members,
        prepared.initial.values().len(),
        None,
        Some(Box::new(root)),
    )?;
    let signer = Signer::new(strategy, members, base.seed, "bench-detection");
    let ids: std::collections::BTreeMap<ClientId, String> = signer
        .addresses()
        .into_iter()
        .enumerate()
        .map(|(i, a)| (ClientId(i as u64), a))
        .collect();
    let chunk = signer.max_chunk_bytes();
    let strategy: Box<dyn Strategy> = match attack {
        Some(a) if !a.poisons_data() => Box::new(Adversary::new(
            Box::new(signer),
            (0..attackers as u64).map(ClientId),
            a,
        )),
        _ => Box::new(signer),
    };
    let mut trace = DetectionTrace::default();
    let mut global = std::sync::Arc::new(prepared.initial.clone());
    let run = digits::run_with_strategy(
        base,
        prepared,
        strategy,
        |_| {},
        |e| match e {
            EngineEvent::FitAggregated {
                round,
                params,
                findings: Some(f),
                metrics,
                ..
            } => {
                let clients: Vec<ClientId> = f.scores.iter().map(|s| s.client).collect();
                let flagged: Vec<ClientId> = f
                    .scores
                    .iter()
                    .filter(|s| s.flagged)
                    .map(|s| s.client)
                    .collect();
                trace.rounds.push((clients, flagged));
                trace.excluded = metrics.get("qa.excluded").map_or(0, |v| *v as usize);
                trace.consistency.push(
                    fl_core::strategy::detection::per_member_in(metrics, "consistency")
                        .into_iter()
                        .collect(),
                );
                let record = fl_aggregator::qa::RoundRecord {
                    federation_id: "bench-detection".into(),
                    round: *round,
                    next_cid: params.content_hash(),
                    participants: f
                        .signed_digests
                        .iter()
                        .map(|(c, d)| (ids[c].clone(), Some(*d)))
                        .collect(),
                    // The round's metrics as the manifest would commit them.
                    metrics: fl_aggregator::anchoring::metrics_digest(
                        metrics,
                        &std::collections::BTreeMap::new(),
                    ),
                    model_card: None,
                };
                match fl_aggregator::qa::build_evidence(f, &global, &record, &ids, chunk) {
                    Ok(all) => {
                        for ev in all {
                            match fl_aggregator::qa::verify(&ev, false) {
                                Ok(v) if v.holds => trace.evidence_accepted += 1,
                                Ok(v) => trace
                                    .evidence_rejected
                                    .push(format!("does not hold: {v:?}")),
                                Err(err) => trace.evidence_rejected.push(err.to_string()),
                            }
                            let mut tampered = ev;
                            tampered.claimed.score += 0.5;
                            if fl_aggregator::qa::verify(&tampered, false).is_err() {
                                trace.tampered_rejected += 1;
                            }
                        }
                    }
                    Err(err) => trace.evidence_rejected.push(err.to_string()),
                }
            }
            EngineEvent::RoundCompleted { params, .. } => global = params.clone(),
            _ => {}
        },
    )?;
    Ok((run, trace))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bench_template_is_digits_unless_fashion_is_asked_for() {
        let args = |pairs: &'static [(&'static str, &'static str)]| {
            move |key: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, v)| v.to_string())
            }
        };
        let digits = bench_template(args(&[("train_limit", "5")]));
        assert_eq!(digits.images, digits::ImageSource::Digits);
        assert_eq!(digits.model, DigitsConfig::default().model);
        let fashion = bench_template(args(&[
            ("dataset", "fashion"),
            ("train_limit", "300"),
            ("hidden", "not a number"),
            ("fashion_dir", "/data/fm"),
        ]));
        assert_eq!(
            fashion.images,
            digits::ImageSource::Idx {
                dir: "/data/fm".into(),
                train_limit: Some(300),
                test_limit: Some(2000),
            }
        );
        assert_eq!(fashion.model, fl_client::ModelSpec::Mlp { hidden: 128 });
        assert_eq!(
            (fashion.fit.local_epochs, fashion.fit.learning_rate),
            (2, 0.01)
        );
    }

    #[test]
    fn every_rule_of_the_benchmark_builds_for_20_members_and_4_attackers() {
        for r in rules(20, 4, 1.0, 1.0) {
            let s = StrategyConfig {
                min_fit_clients: 1,
                ..r.strategy.clone()
            };
            assert!(s.check_members(20).is_ok(), "{}", r.label);
        }
    }

    #[test]
    fn label_flipping_maps_y_to_c_minus_1_minus_y() {
        let d = Dataset::new(vec![0.0; 3], vec![1], vec![0, 3, 9], 10).unwrap();
        assert_eq!(flip_labels(d).unwrap().labels(), &[9, 6, 0]);
    }
}
