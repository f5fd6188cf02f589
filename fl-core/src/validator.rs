//! The model-agnostic validation interface: how good a parameter vector is on a held-out set
//! that the aggregator (not a member) holds. Contribution scores
//! ([`crate::strategy::contribution`]) call it on sub-models rebuilt from the members' updates.

use crate::params::ParamVec;
use crate::trainer::TrainerError;

/// The utility of a model on a held-out validation set: higher is better (accuracy, negative
/// loss, ...).
///
/// Implementations must be deterministic (the same parameters give the same utility), so that
/// anyone holding the validation set and a round's updates recomputes the same scores.
/// `fl-client` ships one over its burn trainers (`fl_client::HeldOutValidator`); a closure
/// `FnMut(&ParamVec) -> Result<f64, TrainerError>` is one too:
///
/// ```
/// use fl_core::{ParamVec, Schema, TensorSpec, TrainerError, Validator};
///
/// // Utility: minus the squared distance to a known optimum at (1, 1).
/// let mut v = |p: &ParamVec| -> Result<f64, TrainerError> {
///     Ok(-p.values().iter().map(|x| f64::from((x - 1.0).powi(2))).sum::<f64>())
/// };
/// let schema = std::sync::Arc::new(Schema::new(vec![TensorSpec::new("w", [2])])?);
/// assert_eq!(v.utility(&ParamVec::zeros(schema))?, -2.0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Validator: Send {
    /// The utility of `params` on the validation set (finite; higher is better).
    fn utility(&mut self, params: &ParamVec) -> Result<f64, TrainerError>;
}

impl<F> Validator for F
where
    F: FnMut(&ParamVec) -> Result<f64, TrainerError> + Send,
{
    fn utility(&mut self, params: &ParamVec) -> Result<f64, TrainerError> {
        self(params)
    }
}

impl Validator for Box<dyn Validator> {
    fn utility(&mut self, params: &ParamVec) -> Result<f64, TrainerError> {
        (**self).utility(params)
    }
}
