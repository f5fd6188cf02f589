//! SCAFFOLD's corrected local step (Karimireddy et al. 2020) for any burn module: the trainers
//! add `⟨w, c - cᵢ⟩` over every float parameter to their local loss, so that autodiff adds the
//! constant `c - cᵢ` to each gradient, `y ← y - η·(g(y) - cᵢ + c)`, whatever the model.
//!
//! Option II reads `(x - yᵢ)/(K·η)` as the mean corrected gradient, which holds for plain SGD
//! at learning rate `η` only; the trainers therefore step with SGD (no momentum, no weight
//! decay) in a SCAFFOLD round, whatever optimiser they use otherwise. Under Adam the same
//! correction would be rescaled per coordinate by Adam's running second moment, and the
//! control variates would estimate Adam's step rather than the gradient, so the members'
//! and the server's control variates would no longer cancel the drift they are meant to.
//!
//! [`Correction::new`] returns `None` when the round has no correction (not a SCAFFOLD round,
//! or `c = cᵢ = 0`): the trainers then build the graph they built before SCAFFOLD existed.

use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;
use fl_core::round::FitConfig;
use fl_core::trainer::TrainerError;

/// The constant `c - cᵢ` of a round, split into one flat tensor per float parameter.
pub(crate) struct Correction {
    /// Each float parameter's slice of `c - cᵢ`, flattened, in visit order, without autodiff.
    shift: Vec<Tensor<1>>,
}

impl Correction {
    /// The correction of `config` for `model` (the module before any local step, of schema
    /// `schema`), or `None` outside SCAFFOLD rounds and when it is zero. Refuses control
    /// variates of another schema or with non-finite values.
    pub(crate) fn new<M: Module>(
        model: &M,
        schema: fl_core::SchemaHash,
        config: &FitConfig,
    ) -> Result<Option<Self>, TrainerError> {
        let Some(controls) = &config.scaffold else {
            return Ok(None);
        };
        let Some(values) = controls
            .correction(schema)
            .map_err(|e| TrainerError::InvalidConfig(e.to_string()))?
        else {
            return Ok(None);
        };
        struct Split<'a> {
            rest: &'a [f32],
            shift: Vec<Tensor<1>>,
            short: bool,
        }
        impl ModuleVisitor for Split<'_> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                let value = param.val();
                let n = value.shape().num_elements();
                if self.rest.len() < n {
                    self.short = true;
                    return;
                }
                let (mine, rest) = self.rest.split_at(n);
                self.rest = rest;
                let device = value.device();
                self.shift.push(
                    Tensor::<1>::from_data(TensorData::new(mine.to_vec(), [n]), &device)
                        .without_autodiff(),
                );
            }
        }
        let mut split = Split {
            rest: &values,
            shift: Vec::new(),
            short: false,
        };
        model.visit(&mut split);
        if split.short || !split.rest.is_empty() {
            return Err(TrainerError::InvalidConfig(format!(
                "the SCAFFOLD correction has {} values, which do not fit the model",
                values.len()
            )));
        }
        Ok(Some(Self { shift: split.shift }))
    }

    /// `Σ ⟨w, c - cᵢ⟩` over `model`'s float parameters (the module the round started from,
    /// after some local steps), a one-element tensor tracked by autodiff whose gradient is
    /// `c - cᵢ`; `None` for a module without float parameters.
    pub(crate) fn term<M: Module>(&self, model: &M) -> Option<Tensor<1>> {
        struct Sum<'a> {
            shift: std::slice::Iter<'a, Tensor<1>>,
            total: Option<Tensor<1>>,
        }
        impl ModuleVisitor for Sum<'_> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                let Some(shift) = self.shift.next() else {
                    return;
                };
                let value = param.val();
                let n = value.shape().num_elements();
                let dot = (value.reshape([n]) * shift.clone()).sum();
                self.total = Some(match self.total.take() {
                    Some(t) => t + dot,
                    None => dot,
                });
            }
        }
        let mut sum = Sum {
            shift: self.shift.iter(),
            total: None,
        };
        model.visit(&mut sum);
        sum.total
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use fl_core::ParamVec;
    use fl_core::scaffold::ScaffoldControls;
    use fl_core::trainer::Trainer;

    use super::*;
    use crate::data::digits;
    use crate::trainer::{BurnTrainer, DeviceSpec, ModelSpec};

    /// One full-batch SGD step from `x` under `controls`.
    fn one_step(t: &mut BurnTrainer, x: &ParamVec, controls: ScaffoldControls) -> ParamVec {
        t.set_parameters(x).unwrap();
        let n = t.train_data().len() as u32;
        let outcome = t
            .fit(&FitConfig {
                local_epochs: 1,
                batch_size: n,
                learning_rate: 0.1,
                shuffle_seed: 1,
                scaffold: Some(controls),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(outcome.metrics[fl_core::round::LOCAL_STEPS_METRIC], 1.0);
        t.get_parameters()
    }

    #[test]
    fn every_model_s_gradient_is_shifted_by_c_minus_c_i() {
        let (train, _) = digits::embedded().train_test_split(0.9, 0).unwrap();
        let images = train
            .clone()
            .with_feature_shape(digits::IMAGE_SHAPE)
            .unwrap();
        for (spec, data) in [
            (ModelSpec::Mlp { hidden: 8 }, train),
            (ModelSpec::Cnn { channels: 2 }, images),
        ] {
            let mut t = BurnTrainer::new(&spec, DeviceSpec::Cpu, data, None, 3).unwrap();
            let x = t.get_parameters();
            let schema = x.schema().clone();
            let pv = |f: &dyn Fn(usize) -> f32| {
                Arc::new(ParamVec::new(schema.clone(), (0..x.len()).map(f).collect()).unwrap())
            };
            let c = pv(&|j| 0.3 * ((j as f32) * 0.7).sin());
            let ci = pv(&|j| 0.1 * ((j as f32) * 0.3).cos());
            // c = cᵢ = 0: no correction, a plain SGD step y₀ = x - η·g(x).
            let y0 = one_step(&mut t, &x, ScaffoldControls::default());
            assert_ne!(y0, x);
            // y₁ = x - η·(g(x) + c - cᵢ): so (y₀ - y₁)/η = c - cᵢ, value by value.
            let controls = ScaffoldControls {
                server: Some(c.clone()),
                member: Some(ci.clone()),
            };
            let y1 = one_step(&mut t, &x, controls);
            for j in 0..x.len() {
                let got = (y0.values()[j] - y1.values()[j]) / 0.1;
                let want = c.values()[j] - ci.values()[j];
                assert!(
                    (got - want).abs() < 1e-4,
                    "{spec:?} value {j}: {got} vs {want}"
                );
            }
            // A control of another model is refused before any step.
            let other = Arc::new(
                fl_core::Schema::new(vec![fl_core::TensorSpec::new("w", [x.len()])]).unwrap(),
            );
            t.set_parameters(&x).unwrap();
            let foreign = FitConfig {
                learning_rate: 0.1,
                scaffold: Some(ScaffoldControls::new(Some(Arc::new(ParamVec::zeros(
                    other,
                ))))),
                ..Default::default()
            };
            assert!(matches!(
                t.fit(&foreign),
                Err(TrainerError::InvalidConfig(_))
            ));
            assert_eq!(t.get_parameters(), x);
        }
    }
}
