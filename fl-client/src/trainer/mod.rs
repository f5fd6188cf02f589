//! [`BurnTrainer`]: a [`Trainer`] that trains a small burn model on an in-memory [`Dataset`].
//!
//! The model is one of the [`ModelSpec`]s (an MLP or a small CNN), on the device a
//! [`DeviceSpec`] names. Parameters leave and enter it as a flat [`ParamVec`] whose [`Schema`]
//! lists every float tensor by module path (`hidden.weight`, `hidden.bias`, ...) in burn's visit
//! order. Initialisation, data order and therefore whole training runs are deterministic given
//! the `init_seed` and [`FitConfig::shuffle_seed`].

mod device;
mod network;
mod params;
pub mod proposals;
mod proximal;
mod scaffold;

use std::sync::Arc;

use burn::optim::{AdamConfig, GradientsParams, SgdConfig};
use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use fl_core::params::{ParamError, ParamVec, Schema};
use fl_core::round::{
    EvaluateConfig, EvaluateResult, FitConfig, FitOutcome, LOCAL_STEPS_METRIC, Metrics,
};
use fl_core::trainer::{Trainer, TrainerError};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::data::Dataset;
pub use device::{DeviceError, DeviceSpec};
use network::{Cnn, Mlp, Network};
use proximal::Proximal;
use scaffold::Correction;

/// Which model to train, as a federation's config file names it.
///
/// In TOML: `model = { kind = "mlp", hidden = 64 }` or `model = { kind = "cnn", channels = 8 }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum ModelSpec {
    /// Multi-layer perceptron on the flattened features: `input -> hidden (ReLU) -> classes`.
    Mlp {
        /// Width of the hidden layer.
        #[serde(default = "default_hidden")]
        hidden: usize,
    },
    /// Convolutional network for `[channels, height, width]` (or `[height, width]`) images of
    /// side at least 4: two blocks of conv 3x3 (padding 1) -> ReLU -> max-pool 2x2 with
    /// `channels` then `2 * channels` filters, then a linear layer to the classes.
    Cnn {
        /// Filters of the first convolution (the second has twice as many).
        #[serde(default = "default_channels")]
        channels: usize,
    },
}

fn default_hidden() -> usize {
    64
}

fn default_channels() -> usize {
    8
}

impl Default for ModelSpec {
    /// An MLP with 64 hidden units.
    fn default() -> Self {
        ModelSpec::Mlp {
            hidden: default_hidden(),
        }
    }
}

/// Why a [`BurnTrainer`] could not be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// A size in the [`ModelSpec`] is zero.
    #[error("invalid model spec {spec:?}: {reason}")]
    InvalidSpec {
        /// The spec.
        spec: ModelSpec,
        /// What is wrong with it.
        reason: String,
    },
    /// The model cannot take examples of the data's feature shape.
    #[error("a {model} cannot take examples of shape {shape:?}: {reason}")]
    InputShape {
        /// The model kind.
        model: &'static str,
        /// The data's feature shape.
        shape: Vec<usize>,
        /// What the model needs.
        reason: String,
    },
    /// The evaluation data does not match the training data.
    #[error(
        "evaluation data has shape {eval_shape:?} and {eval_classes} classes, training data {train_shape:?} and {train_classes}"
    )]
    DataMismatch {
        /// Feature shape of the training data.
        train_shape: Vec<usize>,
        /// Classes of the training data.
        train_classes: usize,
        /// Feature shape of the evaluation data.
        eval_shape: Vec<usize>,
        /// Classes of the evaluation data.
        eval_classes: usize,
    },
    /// The model's parameter list is not a valid schema.
    #[error("model parameters: {0}")]
    Params(#[from] ParamError),
    /// The device is not compiled in or not on this machine.
    #[error(transparent)]
    Device(#[from] DeviceError),
}

/// Examples per forward pass when [`EvaluateConfig::batch_size`] is 0.
pub const DEFAULT_EVAL_BATCH: usize = 256;

/// A [`Trainer`] over a burn model and in-memory data.
///
/// `fit` trains with Adam (a fresh optimiser per call, so no state crosses rounds) on
/// cross-entropy loss over minibatches in an order shuffled by
/// `ChaCha8Rng::seed_from_u64(shuffle_seed)`, plus FedProx's `μ/2·‖w - w_global‖²` when
/// [`FitConfig::proximal_mu`] is positive (`w_global`: the parameters `fit` starts from). In a
/// SCAFFOLD round ([`FitConfig::scaffold`]) it steps with plain SGD instead, each gradient
/// corrected by the round's `c - cᵢ` (option II's control variates assume SGD). It
/// reports `num_examples` (the training set size) and the metrics `train_loss` (mean
/// cross-entropy over the last epoch, without the proximal term) and `local_steps` (optimiser
/// steps taken). `evaluate` reports the mean cross-entropy as `loss` and the metric
/// `accuracy`.
///
/// ```no_run
/// use fl_client::data::digits;
/// use fl_client::{BurnTrainer, DeviceSpec, ModelSpec, Trainer};
/// use fl_core::round::{EvaluateConfig, FitConfig};
///
/// let (train, test) = digits::embedded().train_test_split(0.2, 0)?;
/// let mut trainer = BurnTrainer::new(
///     &ModelSpec::Mlp { hidden: 64 },
///     DeviceSpec::Cpu,
///     train,
///     Some(test),
///     42,
/// )?;
/// let fit = FitConfig { local_epochs: 5, batch_size: 32, learning_rate: 0.01, shuffle_seed: 1, ..Default::default() };
/// trainer.fit(&fit)?;
/// let result = trainer.evaluate(&EvaluateConfig::default())?;
/// println!("accuracy {:?}", result.accuracy());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct BurnTrainer {
    spec: ModelSpec,
    /// Parameters live on the autodiff device.
    network: Network,
    schema: Arc<Schema>,
    train: Dataset,
    eval: Option<Dataset>,
    /// The plain device; the network's parameters are on `device.autodiff()`.
    device: Device,
}

impl std::fmt::Debug for BurnTrainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BurnTrainer")
            .field("spec", &self.spec)
            .field("schema", &self.schema.hash())
            .field("train", &self.train.len())
            .field("eval", &self.eval.as_ref().map(Dataset::len))
            .finish_non_exhaustive()
    }
}

impl BurnTrainer {
    /// Builds the model for `train`'s feature shape and classes, initialised from `init_seed`
    /// (the same seed gives the same parameters, see [`BurnTrainer::get_parameters`]).
    ///
    /// `train` may be empty (an evaluation-only trainer); `eval`, if given, must have the same
    /// feature shape and classes.
    pub fn new(
        spec: &ModelSpec,
        device: DeviceSpec,
        train: Dataset,
        eval: Option<Dataset>,
        init_seed: u64,
    ) -> Result<Self, ModelError> {
        if let Some(e) = &eval {
            check_same_layout(&train, e)?;
        }
        let device = device.device()?;
        let autodiff = device.clone().autodiff();
        let network = build(spec, &train, &autodiff)?;
        let schema = Arc::new(params::schema_of(&network)?);
        let network = params::seeded_init(network, init_seed);
        Ok(Self {
            spec: spec.clone(),
            network,
            schema,
            train,
            eval,
            device,
        })
    }

    /// The model this trainer trains.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// The local training data.
    pub fn train_data(&self) -> &Dataset {
        &self.train
    }

    /// The local evaluation data, if any.
    pub fn eval_data(&self) -> Option<&Dataset> {
        self.eval.as_ref()
    }

    /// Replaces the evaluation data (same feature shape and classes as the training data).
    pub fn set_eval_data(&mut self, eval: Option<Dataset>) -> Result<(), ModelError> {
        if let Some(e) = &eval {
            check_same_layout(&self.train, e)?;
        }
        self.eval = eval;
        Ok(())
    }

    /// Evaluates the current parameters on `data` (same layout as the training data): mean
    /// cross-entropy as `loss`, and the metric `accuracy`.
    pub fn evaluate_on(
        &self,
        data: &Dataset,
        config: &EvaluateConfig,
    ) -> Result<EvaluateResult, TrainerError> {
        check_same_layout(&self.train, data)
            .map_err(|e| TrainerError::InvalidConfig(e.to_string()))?;
        if data.is_empty() {
            return Err(TrainerError::NoData("evaluate"));
        }
        let batch_size = match config.batch_size {
            0 => DEFAULT_EVAL_BATCH,
            b => b as usize,
        };
        let model = self.network.valid();
        let (mut loss_sum, mut correct) = (0.0f64, 0u64);
        let indices: Vec<usize> = (0..data.len()).collect();
        for chunk in indices.chunks(batch_size) {
            let (x, y) = batch(data, chunk, &self.device);
            let logits = model.forward(x);
            let predicted = logits.clone().argmax(1).flatten::<1>(0, 1);
            correct += predicted
                .equal(y.clone())
                .int()
                .sum()
                .into_scalar::<i64>()
                .max(0) as u64;
            let loss: f32 = cross_entropy(logits, y).into_scalar();
            loss_sum += f64::from(loss) * chunk.len() as f64;
        }
        let n = data.len() as f64;
        let loss = loss_sum / n;
        if !loss.is_finite() {
            return Err(TrainerError::Diverged(format!("evaluation loss is {loss}")));
        }
        let mut metrics = Metrics::new();
        metrics.insert("accuracy".into(), correct as f64 / n);
        Ok(EvaluateResult {
            loss,
            num_examples: data.len() as u64,
            metrics,
        })
    }
}

impl Trainer for BurnTrainer {
    fn schema(&self) -> Arc<Schema> {
        self.schema.clone()
    }

    fn get_parameters(&self) -> ParamVec {
        let values = params::flatten(&self.network, self.schema.num_values())
            .expect("every backend we build keeps float parameters as f32");
        ParamVec::new(self.schema.clone(), values)
            .expect("the visitor reads exactly the schema's values")
    }

    fn set_parameters(&mut self, params: &ParamVec) -> Result<(), TrainerError> {
        if params.schema().hash() != self.schema.hash() {
            return Err(ParamError::SchemaMismatch {
                expected: self.schema.hash(),
                got: params.schema().hash(),
            }
            .into());
        }
        if params.len() != self.schema.num_values() {
            return Err(ParamError::LengthMismatch {
                expected: self.schema.num_values(),
                got: params.len(),
            }
            .into());
        }
        // `unflatten` consumes the module; cloning a burn module only bumps reference counts.
        self.network = params::unflatten(self.network.clone(), params.values());
        Ok(())
    }

    fn fit(&mut self, config: &FitConfig) -> Result<FitOutcome, TrainerError> {
        check_fit_config(config)?;
        if self.train.is_empty() {
            return Err(TrainerError::NoData("fit"));
        }
        let autodiff = self.device.clone().autodiff();
        let mut optim = match config.scaffold {
            Some(_) => SgdConfig::new().init(),
            None => AdamConfig::new().init(),
        };
        let mut rng = ChaCha8Rng::seed_from_u64(config.shuffle_seed);
        let mut order: Vec<usize> = (0..self.train.len()).collect();
        // Train a copy (cheap: tensors are reference counted) so that a diverged run leaves
        // the trainer's parameters as they were.
        let mut model = self.network.clone();
        let proximal = Proximal::new(&model, config.proximal_mu);
        let correction = Correction::new(&model, self.schema.hash(), config)?;
        let mut epoch_loss = 0.0;
        let mut steps = 0u64;
        for epoch in 0..config.local_epochs {
            order.shuffle(&mut rng);
            let mut loss_sum = EpochLoss::default();
            for chunk in order.chunks(config.batch_size as usize) {
                let (x, y) = batch(&self.train, chunk, &autodiff);
                let mut loss = cross_entropy(model.forward(x), y);
                loss_sum.add(&loss, chunk.len());
                if let Some(term) = proximal.as_ref().and_then(|p| p.term(&model)) {
                    loss = loss + term;
                }
                if let Some(term) = correction.as_ref().and_then(|c| c.term(&model)) {
                    loss = loss + term;
                }
                let grads = GradientsParams::from_grads(loss.backward(), &model);
                model = optim.step(config.learning_rate, model, grads);
                steps += 1;
            }
            epoch_loss = loss_sum.mean(self.train.len(), epoch, config)?;
        }
        let values =
            params::flatten(&model, self.schema.num_values()).map_err(TrainerError::Other)?;
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(TrainerError::Diverged(format!(
                "parameter {i} is {} after training",
                values[i]
            )));
        }
        self.network = model;
        let mut metrics = Metrics::new();
        metrics.insert("train_loss".into(), epoch_loss);
        metrics.insert(LOCAL_STEPS_METRIC.into(), steps as f64);
        Ok(FitOutcome {
            num_examples: self.train.len() as u64,
            metrics,
        })
    }

    fn evaluate(&mut self, config: &EvaluateConfig) -> Result<EvaluateResult, TrainerError> {
        let eval = self.eval.as_ref().ok_or(TrainerError::NoData("evaluate"))?;
        self.evaluate_on(eval, config)
    }
}

/// The training loss summed over an epoch's batches on the device, read once when the epoch
/// ends: reading it after every batch would wait for the device at every step.
#[derive(Default)]
struct EpochLoss(Option<Tensor<1>>);

impl EpochLoss {
    /// Adds a batch's mean loss weighted by its `examples` (detached: no gradient flows here).
    fn add(&mut self, loss: &Tensor<1>, examples: usize) {
        let weighted = loss.clone().detach() * examples as f32;
        self.0 = Some(match self.0.take() {
            Some(sum) => sum + weighted,
            None => weighted,
        });
    }

    /// The epoch's mean loss over `examples`, or `Diverged` when it is not finite (a non-finite
    /// batch loss makes the sum so).
    fn mean(self, examples: usize, epoch: u32, config: &FitConfig) -> Result<f64, TrainerError> {
        let sum: f32 = self.0.map_or(0.0, |s| s.into_scalar());
        let mean = f64::from(sum) / examples as f64;
        if mean.is_finite() {
            Ok(mean)
        } else {
            Err(TrainerError::Diverged(format!(
                "loss {mean} in epoch {} at learning rate {}; try a lower one",
                epoch + 1,
                config.learning_rate
            )))
        }
    }
}

fn check_fit_config(config: &FitConfig) -> Result<(), TrainerError> {
    let invalid = |s: String| Err(TrainerError::InvalidConfig(s));
    if config.local_epochs == 0 {
        return invalid("local_epochs must be at least 1".into());
    }
    if config.batch_size == 0 {
        return invalid("batch_size must be at least 1".into());
    }
    if !(config.learning_rate.is_finite() && config.learning_rate > 0.0) {
        return invalid(format!(
            "learning_rate must be positive and finite, got {}",
            config.learning_rate
        ));
    }
    if !(config.proximal_mu.is_finite() && config.proximal_mu >= 0.0) {
        return invalid(format!(
            "proximal_mu must be finite and at least 0, got {}",
            config.proximal_mu
        ));
    }
    Ok(())
}

fn check_same_layout(train: &Dataset, other: &Dataset) -> Result<(), ModelError> {
    if train.feature_shape() == other.feature_shape() && train.num_classes() == other.num_classes()
    {
        Ok(())
    } else {
        Err(ModelError::DataMismatch {
            train_shape: train.feature_shape().to_vec(),
            train_classes: train.num_classes(),
            eval_shape: other.feature_shape().to_vec(),
            eval_classes: other.num_classes(),
        })
    }
}

/// Builds the (not yet initialised) network for `data`'s layout.
fn build(spec: &ModelSpec, data: &Dataset, device: &Device) -> Result<Network, ModelError> {
    let classes = data.num_classes();
    let shape = data.feature_shape();
    match *spec {
        ModelSpec::Mlp { hidden } => {
            if hidden == 0 {
                return Err(ModelError::InvalidSpec {
                    spec: spec.clone(),
                    reason: "hidden must be at least 1".into(),
                });
            }
            Ok(Network::Mlp(Mlp::new(
                data.feature_len(),
                hidden,
                classes,
                device,
            )))
        }
        ModelSpec::Cnn { channels } => {
            if channels == 0 {
                return Err(ModelError::InvalidSpec {
                    spec: spec.clone(),
                    reason: "channels must be at least 1".into(),
                });
            }
            let image = match *shape {
                [c, h, w] => [c, h, w],
                [h, w] => [1, h, w],
                _ => [0, 0, 0],
            };
            if image[1] < Cnn::MIN_SIDE || image[2] < Cnn::MIN_SIDE {
                return Err(ModelError::InputShape {
                    model: "cnn",
                    shape: shape.to_vec(),
                    reason: format!(
                        "it needs [channels, height, width] or [height, width] with sides of \
                         at least {}; see Dataset::with_feature_shape",
                        Cnn::MIN_SIDE
                    ),
                });
            }
            Ok(Network::Cnn(Cnn::new(image, channels, classes, device)))
        }
    }
}

/// Mean cross-entropy of `logits` `[batch, classes]` against class indices `[batch]`.
fn cross_entropy(logits: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
    let [batch] = targets.dims();
    log_softmax(logits, 1)
        .gather(1, targets.reshape([batch, 1]))
        .mean()
        .neg()
}

/// `([batch, features], [batch])` tensors of the examples at `indices` (all in range), built
/// straight from the dataset's slices: one copy into a buffer that the tensor then owns.
fn batch(data: &Dataset, indices: &[usize], device: &Device) -> (Tensor<2>, Tensor<1, Int>) {
    let row = data.feature_len();
    let (x, y) = (data.features(), data.labels());
    let mut features = Vec::with_capacity(indices.len() * row);
    let mut labels = Vec::with_capacity(indices.len());
    for &i in indices {
        features.extend_from_slice(&x[i * row..(i + 1) * row]);
        labels.push(i64::from(y[i]));
    }
    let b = indices.len();
    (
        Tensor::from_data(TensorData::new(features, [b, row]), device),
        Tensor::from_data(TensorData::new(labels, [b]), device),
    )
}

#[cfg(test)]
mod tests;
