//! FedProx's proximal term (Li et al. 2020, "Federated Optimization in Heterogeneous
//! Networks"): `μ/2·‖w - w_global‖²` over every float parameter of any burn module, added to a
//! trainer's local loss so that autodiff adds `μ·(w - w_global)` to each gradient.
//!
//! [`Proximal::new`] returns `None` for `μ = 0`, and the trainers then build exactly the graph
//! they built before FedProx existed: no term, not even a zero one, so `μ = 0` trains bit for
//! bit as before.

use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;

/// The global parameters a round started from and `μ`.
pub(crate) struct Proximal {
    /// Each float parameter of the global model, flattened, in visit order, without autodiff
    /// (a constant of every step's graph).
    global: Vec<Tensor<1>>,
    half_mu: f32,
}

impl Proximal {
    /// The term for a round that starts from `global` (the module before any local step), or
    /// `None` when `mu` is 0 (or not a positive number: the trainers refuse those first).
    pub(crate) fn new<M: Module>(global: &M, mu: f64) -> Option<Self> {
        if !(mu > 0.0 && mu.is_finite()) {
            return None;
        }
        struct Collect(Vec<Tensor<1>>);
        impl ModuleVisitor for Collect {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                let value = param.val();
                let n = value.shape().num_elements();
                self.0.push(value.without_autodiff().reshape([n]));
            }
        }
        let mut c = Collect(Vec::new());
        global.visit(&mut c);
        Some(Self {
            global: c.0,
            half_mu: (mu / 2.0) as f32,
        })
    }

    /// `μ/2·Σ‖w - w_global‖²` over `model`'s float parameters (the module the round started
    /// from, after some local steps), as a one-element tensor tracked by autodiff; `None` for a
    /// module without float parameters.
    pub(crate) fn term<M: Module>(&self, model: &M) -> Option<Tensor<1>> {
        struct Sum<'a> {
            global: std::slice::Iter<'a, Tensor<1>>,
            total: Option<Tensor<1>>,
        }
        impl ModuleVisitor for Sum<'_> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                let Some(global) = self.global.next() else {
                    return;
                };
                let value = param.val();
                let n = value.shape().num_elements();
                let diff = value.reshape([n]) - global.clone();
                let squares = (diff.clone() * diff).sum();
                self.total = Some(match self.total.take() {
                    Some(t) => t + squares,
                    None => squares,
                });
            }
        }
        let mut sum = Sum {
            global: self.global.iter(),
            total: None,
        };
        model.visit(&mut sum);
        debug_assert!(
            sum.global.next().is_none(),
            "the same module as at the start"
        );
        sum.total.map(|t| t.mul_scalar(self.half_mu))
    }
}

#[cfg(test)]
mod tests {
    use burn::nn::{Linear, LinearConfig};
    use burn::optim::{AdamConfig, GradientsParams};
    use fl_core::round::{FitConfig, LOCAL_STEPS_METRIC};
    use fl_core::trainer::{Trainer, TrainerError};
    use rand::SeedableRng;
    use rand::seq::SliceRandom;
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::data::digits;
    use crate::trainer::{BurnTrainer, DeviceSpec, ModelSpec, batch, cross_entropy, params};

    /// `[3] -> [2]` linear layer with bias: 8 parameters, on the autodiff device.
    fn tiny(values: &[f32]) -> Linear {
        let device = Device::flex().autodiff();
        let layer = LinearConfig::new(3, 2).init(&device);
        params::unflatten(layer, values)
    }

    /// The gradient of every float parameter, flattened in visit order.
    fn gradients(module: &Linear, grads: &GradientsParams) -> Vec<f32> {
        struct Read<'a>(&'a GradientsParams, Vec<f32>);
        impl ModuleVisitor for Read<'_> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                let g = self
                    .0
                    .get::<D>(param.id)
                    .expect("every parameter has a gradient");
                self.1.extend(g.into_data().try_to_vec::<f32>().unwrap());
            }
        }
        let mut r = Read(grads, Vec::new());
        module.visit(&mut r);
        r.1
    }

    #[test]
    fn the_term_and_its_gradient_match_the_closed_form() {
        let global: Vec<f32> = vec![0.5, -1.0, 2.0, 0.0, 0.25, -0.75, 1.0, -2.0];
        let local: Vec<f32> = vec![1.5, -1.0, 1.0, 0.5, 0.25, 0.25, -1.0, -2.5];
        let mu = 0.3f64;
        let start = tiny(&global);
        let prox = Proximal::new(&start, mu).unwrap();
        let model = tiny(&local);
        let term = prox.term(&model).unwrap();
        // μ/2·Σ(w - g)² = 0.15·(1 + 0 + 1 + 0.25 + 0 + 1 + 4 + 0.25) = 0.15·7.5.
        let value: f32 = term.clone().into_scalar();
        assert!((value - 1.125).abs() < 1e-6, "{value}");
        let grads = GradientsParams::from_grads(term.backward(), &model);
        let got = gradients(&model, &grads);
        let want: Vec<f32> = local
            .iter()
            .zip(&global)
            .map(|(w, g)| mu as f32 * (w - g))
            .collect();
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-6, "{got:?} vs {want:?}");
        }
        // At the start of the round the term and its gradient vanish.
        let at_start = prox.term(&start).unwrap();
        assert_eq!(at_start.clone().into_scalar::<f32>(), 0.0);
        let grads = GradientsParams::from_grads(at_start.backward(), &start);
        assert!(gradients(&start, &grads).iter().all(|g| *g == 0.0));
    }

    /// `BurnTrainer::fit` as it was before FedProx, step for step.
    fn fit_before_fedprox(t: &BurnTrainer, config: &FitConfig) -> Vec<f32> {
        let autodiff = t.device.clone().autodiff();
        let mut optim = AdamConfig::new().init();
        let mut rng = ChaCha8Rng::seed_from_u64(config.shuffle_seed);
        let mut order: Vec<usize> = (0..t.train.len()).collect();
        let mut model = t.network.clone();
        for _ in 0..config.local_epochs {
            order.shuffle(&mut rng);
            for chunk in order.chunks(config.batch_size as usize) {
                let (x, y) = batch(&t.train, chunk, &autodiff);
                let loss = cross_entropy(model.forward(x), y);
                let value: f32 = loss.clone().into_scalar();
                assert!(value.is_finite());
                let grads = GradientsParams::from_grads(loss.backward(), &model);
                model = optim.step(config.learning_rate, model, grads);
            }
        }
        params::flatten(&model, t.schema.num_values()).unwrap()
    }

    fn trainer(spec: ModelSpec) -> BurnTrainer {
        let (train, _) = digits::embedded().train_test_split(0.2, 0).unwrap();
        let train = match spec {
            ModelSpec::Cnn { .. } => train.with_feature_shape(digits::IMAGE_SHAPE).unwrap(),
            _ => train,
        };
        BurnTrainer::new(&spec, DeviceSpec::Cpu, train, None, 5).unwrap()
    }

    fn config(mu: f64) -> FitConfig {
        FitConfig {
            local_epochs: 2,
            batch_size: 32,
            learning_rate: 0.01,
            shuffle_seed: 9,
            proximal_mu: mu,
            scaffold: None,
        }
    }

    /// `‖w - w_global‖` after one `fit` from the trainer's current parameters.
    fn distance_after_fit(t: &mut BurnTrainer, mu: f64) -> f64 {
        let global = t.get_parameters();
        t.fit(&config(mu)).unwrap();
        let local = t.get_parameters();
        t.set_parameters(&global).unwrap();
        local
            .values()
            .iter()
            .zip(global.values())
            .map(|(a, b)| f64::from(a - b).powi(2))
            .sum::<f64>()
            .sqrt()
    }

    #[test]
    fn mu_zero_trains_bit_for_bit_as_before_fedprox() {
        for spec in [
            ModelSpec::Mlp { hidden: 16 },
            ModelSpec::Cnn { channels: 2 },
        ] {
            let mut t = trainer(spec.clone());
            let want = fit_before_fedprox(&t, &config(0.0));
            let outcome = t.fit(&config(0.0)).unwrap();
            assert_eq!(t.get_parameters().values(), want.as_slice(), "{spec:?}");
            // 1,438 examples in batches of 32: 45 steps an epoch.
            assert_eq!(outcome.metrics[LOCAL_STEPS_METRIC], 90.0);
        }
    }

    #[test]
    fn a_larger_mu_keeps_the_local_model_nearer_the_global_one() {
        let mut t = trainer(ModelSpec::Mlp { hidden: 16 });
        let mus = [0.0, 0.1, 1.0, 10.0, 100.0];
        let d: Vec<f64> = mus
            .iter()
            .map(|&mu| distance_after_fit(&mut t, mu))
            .collect();
        assert!(d.windows(2).all(|w| w[1] < w[0]), "{mus:?}: {d:?}");
        assert!(d[4] < d[0] / 4.0, "{d:?}");
        // The CNN too: the term covers every parameter of any model.
        let mut t = trainer(ModelSpec::Cnn { channels: 2 });
        let (free, held) = (
            distance_after_fit(&mut t, 0.0),
            distance_after_fit(&mut t, 10.0),
        );
        assert!(held < free / 2.0, "{free} {held}");
    }

    #[test]
    fn a_bad_mu_is_refused_before_training() {
        let mut t = trainer(ModelSpec::Mlp { hidden: 4 });
        let before = t.get_parameters();
        for mu in [-1.0, f64::NAN, f64::INFINITY] {
            let e = t.fit(&config(mu)).unwrap_err();
            assert!(
                matches!(&e, TrainerError::InvalidConfig(m) if m.contains("proximal_mu")),
                "{e}"
            );
        }
        assert_eq!(t.get_parameters(), before);
    }

    #[test]
    fn mu_zero_or_invalid_adds_nothing() {
        let start = tiny(&[0.0; 8]);
        for mu in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(Proximal::new(&start, mu).is_none(), "{mu}");
        }
    }
}
