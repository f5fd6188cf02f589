//! Between burn modules and flat [`ParamVec`]s: a visitor that reads every float parameter in
//! burn's visit order, and mappers that write them back (from a `ParamVec` or from a seeded
//! initialiser) while keeping each parameter's [`ParamId`](burn::module::ParamId), device and
//! gradient setting.
//!
//! A parameter's name is its module path joined with dots (`hidden.weight`, `conv1.bias`).
//! Levels that burn reports for enum variants (`Enum:...` containers) are left out, so a model
//! wrapped in an enum has the same names as the bare model.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;
use fl_core::params::{Schema, TensorSpec};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The current module path, kept up to date by `enter_module` / `exit_module`.
#[derive(Default)]
struct ModulePath(Vec<Option<String>>);

impl ModulePath {
    fn enter(&mut self, name: &str, container_type: &str) {
        let named = !container_type.starts_with("Enum:");
        self.0.push(named.then(|| name.to_owned()));
    }

    fn exit(&mut self) {
        self.0.pop();
    }

    fn name(&self) -> String {
        let parts: Vec<&str> = self.0.iter().flatten().map(String::as_str).collect();
        parts.join(".")
    }
}

/// Lists the float parameters of `module` as `(name, shape)` without initialising them.
pub(crate) fn schema_of<M: Module>(module: &M) -> Result<Schema, fl_core::params::ParamError> {
    struct Collect {
        path: ModulePath,
        specs: Vec<TensorSpec>,
    }
    impl ModuleVisitor for Collect {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            self.path.enter(name, container_type);
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.exit();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let shape = param.lazy_shape().as_slice().to_vec();
            self.specs.push(TensorSpec::new(self.path.name(), shape));
        }
    }
    let mut c = Collect {
        path: ModulePath::default(),
        specs: Vec::new(),
    };
    module.visit(&mut c);
    Schema::new(c.specs)
}

/// All float parameter values of `module`, concatenated in visit order.
pub(crate) fn flatten<M: Module>(module: &M, capacity: usize) -> Result<Vec<f32>, String> {
    struct Flatten {
        values: Vec<f32>,
        error: Option<String>,
    }
    impl ModuleVisitor for Flatten {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let data = param.val().into_data();
            match data.as_slice::<f32>() {
                Ok(values) => self.values.extend_from_slice(values),
                Err(_) => match data.try_to_vec_as::<f32>() {
                    Ok(values) => self.values.extend(values),
                    Err(e) => {
                        self.error.get_or_insert_with(|| format!("{e:?}"));
                    }
                },
            }
        }
    }
    let mut f = Flatten {
        values: Vec::with_capacity(capacity),
        error: None,
    };
    module.visit(&mut f);
    match f.error {
        None => Ok(f.values),
        Some(e) => Err(format!("cannot read a parameter tensor as f32: {e}")),
    }
}

/// Replaces a parameter's value, keeping its id, device, gradient setting and load mapper
/// (`transform_for_load` reads those without triggering a lazy initialiser).
fn replace<const D: usize>(param: Param<Tensor<D>>, values: Vec<f32>) -> Param<Tensor<D>> {
    let tensor = Tensor::<D>::from_data(
        TensorData::new(values, param.lazy_shape()),
        &param.lazy_device(),
    );
    let id = param.id;
    param.transform_for_load(tensor, id)
}

/// Writes `values` (in visit order, as [`flatten`] reads them) into `module`.
///
/// The caller checks that `values` has the module's schema; a short slice is a bug.
pub(crate) fn unflatten<M: Module>(module: M, values: &[f32]) -> M {
    struct Unflatten<'a> {
        rest: &'a [f32],
    }
    impl ModuleMapper for Unflatten<'_> {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let n = param.lazy_shape().num_elements();
            let (mine, rest) = self.rest.split_at(n);
            self.rest = rest;
            replace(param, mine.to_vec())
        }
    }
    let mut u = Unflatten { rest: values };
    let module = module.map(&mut u);
    debug_assert!(
        u.rest.is_empty(),
        "values longer than the module's parameters"
    );
    module
}

/// Initialises every float parameter of `module` from `ChaCha8Rng::seed_from_u64(seed)`,
/// independently of burn's global RNG: values are uniform in `[-b, b)` with
/// `b = 1 / sqrt(fan_in)`, drawn parameter after parameter in visit order.
///
/// `fan_in` comes from the shape: a rank-2 weight is a burn `Linear` weight
/// `[d_input, d_output]`, so `fan_in = shape[0]`; a higher-rank weight is a convolution kernel
/// `[out, in, k...]`, so `fan_in = in * k...`; a rank-1 bias uses the fan-in of the weight
/// visited just before it (burn layers declare `weight` before `bias`). This is the default of
/// PyTorch's `Linear` and `Conv2d`.
pub(crate) fn seeded_init<M: Module>(module: M, seed: u64) -> M {
    struct SeededInit {
        rng: ChaCha8Rng,
        fan_in: usize,
    }
    impl ModuleMapper for SeededInit {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let shape = param.lazy_shape();
            let dims = shape.as_slice();
            match dims.len() {
                0 | 1 => {}
                2 => self.fan_in = dims[0],
                _ => self.fan_in = dims[1..].iter().product(),
            }
            let bound = 1.0 / (self.fan_in.max(1) as f32).sqrt();
            let values = (0..shape.num_elements())
                .map(|_| self.rng.random_range(-bound..bound))
                .collect();
            replace(param, values)
        }
    }
    module.map(&mut SeededInit {
        rng: ChaCha8Rng::seed_from_u64(seed),
        fan_in: 1,
    })
}
