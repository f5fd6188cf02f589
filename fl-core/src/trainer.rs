//! The model-agnostic training interface a member implements (or picks from `fl-client`).

use std::sync::Arc;

use crate::params::{ParamError, ParamVec, Schema};
use crate::round::{EvaluateConfig, EvaluateResult, FitConfig, FitOutcome};

/// Local training on a member's own data.
///
/// The federation only ever sees [`ParamVec`]s: a trainer may wrap burn, a hand-written model
/// or anything else. `fl-client` ships burn implementations; the simulation and the client
/// session drive any implementation of this trait the same way.
///
/// A round runs `set_parameters(global)`, `fit(config)`, then `get_parameters()`.
pub trait Trainer: Send {
    /// The layout of the parameters this trainer reads and writes (tensor names and shapes).
    ///
    /// Defaults to the schema of [`get_parameters`](Self::get_parameters), which copies the
    /// parameters: a trainer that keeps its schema at hand returns a clone of it instead.
    fn schema(&self) -> Arc<Schema> {
        self.get_parameters().schema().clone()
    }

    /// The current local parameters.
    fn get_parameters(&self) -> ParamVec;

    /// Replaces the local parameters, refusing another model's schema.
    fn set_parameters(&mut self, params: &ParamVec) -> Result<(), TrainerError>;

    /// Trains on the local training data from the current parameters.
    fn fit(&mut self, config: &FitConfig) -> Result<FitOutcome, TrainerError>;

    /// Evaluates the current parameters on the local evaluation data.
    fn evaluate(&mut self, config: &EvaluateConfig) -> Result<EvaluateResult, TrainerError>;
}

/// Why a trainer could not do what was asked.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum TrainerError {
    /// The parameters do not fit this trainer's model.
    #[error("parameters do not fit this model: {0}")]
    Params(#[from] ParamError),
    /// The trainer has no data for the requested operation.
    #[error("no local data to {0}")]
    NoData(&'static str),
    /// Training produced non-finite values (diverged); the learning rate may be too high.
    #[error("training diverged: {0}")]
    Diverged(String),
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// Anything else the implementation reports.
    #[error("{0}")]
    Other(String),
}
