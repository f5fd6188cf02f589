//! Streaming, example-weighted sums of client parameters, accumulated in `f64`.
//!
//! The round engine adds each client's result as it arrives and drops it right after, so an
//! aggregator's memory holds one sum per round, not one model per client.

use std::sync::Arc;

use crate::params::{ParamError, ParamVec, Schema};
use crate::round::Metrics;

/// The running sum `Σ wᵢ·xᵢ` of client parameters `xᵢ` with weights `wᵢ` (example counts).
#[derive(Debug, Clone)]
pub struct WeightedSum {
    schema: Arc<Schema>,
    sum: Vec<f64>,
    total_weight: u64,
    count: usize,
    metric_sums: Metrics,
}

impl WeightedSum {
    /// An empty sum for parameters of `schema`.
    pub fn new(schema: Arc<Schema>) -> Self {
        let n = schema.num_values();
        Self {
            schema,
            sum: vec![0.0; n],
            total_weight: 0,
            count: 0,
            metric_sums: Metrics::new(),
        }
    }

    /// Adds `params` with weight `weight`, and `metrics` weighted the same way.
    ///
    /// Refuses another schema, non-finite values and a zero weight, leaving the sum unchanged.
    pub fn add(
        &mut self,
        params: &ParamVec,
        weight: u64,
        metrics: &Metrics,
    ) -> Result<(), AggregateError> {
        if params.schema().hash() != self.schema.hash() {
            return Err(AggregateError::Params(ParamError::SchemaMismatch {
                expected: self.schema.hash(),
                got: params.schema().hash(),
            }));
        }
        if weight == 0 {
            return Err(AggregateError::ZeroWeight);
        }
        if !params.all_finite() {
            return Err(AggregateError::NonFinite);
        }
        let w = weight as f64;
        for (s, v) in self.sum.iter_mut().zip(params.values()) {
            *s += w * f64::from(*v);
        }
        for (k, v) in metrics {
            if v.is_finite() {
                *self.metric_sums.entry(k.clone()).or_insert(0.0) += w * v;
            }
        }
        self.total_weight += weight;
        self.count += 1;
        Ok(())
    }

    /// Number of results added.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Sum of the weights added.
    pub fn total_weight(&self) -> u64 {
        self.total_weight
    }

    /// The schema of the summed parameters.
    pub fn schema(&self) -> &Arc<Schema> {
        &self.schema
    }

    /// The raw weighted sum, one `f64` per parameter.
    pub fn sum(&self) -> &[f64] {
        &self.sum
    }

    /// The weighted mean `Σ wᵢ·xᵢ / Σ wᵢ` rounded to `f32`, or `None` if nothing was added.
    pub fn mean(&self) -> Option<ParamVec> {
        if self.total_weight == 0 {
            return None;
        }
        let w = self.total_weight as f64;
        let values = self.sum.iter().map(|s| (s / w) as f32).collect();
        ParamVec::new(self.schema.clone(), values).ok()
    }

    /// The weighted mean of every reported metric.
    pub fn mean_metrics(&self) -> Metrics {
        if self.total_weight == 0 {
            return Metrics::new();
        }
        let w = self.total_weight as f64;
        self.metric_sums
            .iter()
            .map(|(k, s)| (k.clone(), s / w))
            .collect()
    }
}

/// Why a result could not be added to a sum.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AggregateError {
    /// The parameters are for another model.
    #[error(transparent)]
    Params(#[from] ParamError),
    /// A result claims zero examples, so it cannot be weighted.
    #[error("a result with zero examples cannot be weighted")]
    ZeroWeight,
    /// A result holds NaN or infinite values.
    #[error("parameters contain NaN or infinite values")]
    NonFinite,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::TensorSpec;

    fn schema() -> Arc<Schema> {
        Arc::new(Schema::new(vec![TensorSpec::new("w", [3])]).unwrap())
    }

    #[test]
    fn weights_by_examples() {
        let s = schema();
        let mut sum = WeightedSum::new(s.clone());
        let a = ParamVec::new(s.clone(), vec![1.0, 2.0, 3.0]).unwrap();
        let b = ParamVec::new(s.clone(), vec![5.0, 6.0, 7.0]).unwrap();
        let ma = Metrics::from([("loss".to_string(), 1.0)]);
        let mb = Metrics::from([("loss".to_string(), 4.0)]);
        sum.add(&a, 30, &ma).unwrap();
        sum.add(&b, 10, &mb).unwrap();
        // (30·a + 10·b) / 40
        assert_eq!(sum.mean().unwrap().values(), &[2.0, 3.0, 4.0]);
        assert_eq!(sum.mean_metrics()["loss"], 1.75);
        assert_eq!(sum.count(), 2);
        assert_eq!(sum.total_weight(), 40);
    }

    #[test]
    fn bad_results_leave_the_sum_untouched() {
        let s = schema();
        let mut sum = WeightedSum::new(s.clone());
        let other = Arc::new(Schema::new(vec![TensorSpec::new("v", [3])]).unwrap());
        let wrong = ParamVec::new(other, vec![0.0; 3]).unwrap();
        assert!(matches!(
            sum.add(&wrong, 1, &Metrics::new()),
            Err(AggregateError::Params(_))
        ));
        let nan = ParamVec::new(s.clone(), vec![f32::NAN, 0.0, 0.0]).unwrap();
        assert_eq!(
            sum.add(&nan, 1, &Metrics::new()),
            Err(AggregateError::NonFinite)
        );
        let ok = ParamVec::new(s, vec![1.0; 3]).unwrap();
        assert_eq!(
            sum.add(&ok, 0, &Metrics::new()),
            Err(AggregateError::ZeroWeight)
        );
        assert_eq!(sum.count(), 0);
        assert!(sum.mean().is_none());
    }

    #[test]
    fn one_result_averages_to_itself_exactly() {
        let s = schema();
        let p = ParamVec::new(s.clone(), vec![0.1, -3.7e-5, 12345.678]).unwrap();
        let mut sum = WeightedSum::new(s);
        sum.add(&p, 1797, &Metrics::new()).unwrap();
        assert_eq!(sum.mean().unwrap(), p);
    }
}
