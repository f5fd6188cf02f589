use burn::module::list_param_ids;
use fl_core::params::TensorSpec;

use super::*;
use crate::data::digits;

fn digits_split() -> (Dataset, Dataset) {
    digits::embedded().train_test_split(0.2, 0).unwrap()
}

fn images(d: Dataset) -> Dataset {
    d.with_feature_shape(digits::IMAGE_SHAPE).unwrap()
}

fn mlp(hidden: usize, seed: u64) -> BurnTrainer {
    let (train, test) = digits_split();
    BurnTrainer::new(
        &ModelSpec::Mlp { hidden },
        DeviceSpec::Cpu,
        train,
        Some(test),
        seed,
    )
    .unwrap()
}

fn cnn(channels: usize, seed: u64) -> BurnTrainer {
    let (train, test) = digits_split();
    BurnTrainer::new(
        &ModelSpec::Cnn { channels },
        DeviceSpec::Cpu,
        images(train),
        Some(images(test)),
        seed,
    )
    .unwrap()
}

fn fit_config(epochs: u32, seed: u64) -> FitConfig {
    FitConfig {
        local_epochs: epochs,
        batch_size: 32,
        learning_rate: 0.005,
        shuffle_seed: seed,
        ..Default::default()
    }
}

fn names_and_shapes(t: &BurnTrainer) -> Vec<(String, Vec<usize>)> {
    t.schema()
        .tensors()
        .iter()
        .map(|s| (s.name.clone(), s.shape.clone()))
        .collect()
}

#[test]
fn schemas_name_tensors_by_module_path() {
    let s = |n: &str, shape: &[usize]| (n.to_owned(), shape.to_vec());
    assert_eq!(
        names_and_shapes(&mlp(32, 0)),
        vec![
            s("hidden.weight", &[64, 32]),
            s("hidden.bias", &[32]),
            s("output.weight", &[32, 10]),
            s("output.bias", &[10]),
        ]
    );
    assert_eq!(
        names_and_shapes(&cnn(4, 0)),
        vec![
            s("conv1.weight", &[4, 1, 3, 3]),
            s("conv1.bias", &[4]),
            s("conv2.weight", &[8, 4, 3, 3]),
            s("conv2.bias", &[8]),
            s("output.weight", &[8 * 2 * 2, 10]),
            s("output.bias", &[10]),
        ]
    );
}

#[test]
fn parameters_round_trip_bit_exactly() {
    for mut t in [mlp(16, 1), cnn(4, 1)] {
        let ids = list_param_ids(&t.network);
        let p = t.get_parameters();
        // Values that exercise every bit pattern class: negative zero, subnormals, extremes.
        let special = [-0.0, f32::MIN_POSITIVE / 3.0, f32::MAX, -f32::MAX, 1e-30];
        let values: Vec<f32> = (0..p.len())
            .map(|i| {
                special
                    .get(i % 97)
                    .copied()
                    .unwrap_or(i as f32 * 1e-3 - 0.5)
            })
            .collect();
        let q = ParamVec::new(p.schema().clone(), values).unwrap();
        t.set_parameters(&q).unwrap();
        let back = t.get_parameters();
        let bits = |p: &ParamVec| p.values().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&back), bits(&q));
        // Parameter identities survive, so optimisers and records still recognise them.
        assert_eq!(list_param_ids(&t.network), ids);
        t.set_parameters(&p).unwrap();
        assert_eq!(bits(&t.get_parameters()), bits(&p));
    }
}

#[test]
fn foreign_parameters_are_refused() {
    let mut t = mlp(16, 0);
    let before = t.get_parameters();
    let other_model = cnn(4, 0).get_parameters();
    assert!(matches!(
        t.set_parameters(&other_model),
        Err(TrainerError::Params(ParamError::SchemaMismatch { .. }))
    ));
    // Same number of values and names, other shapes: still another model.
    let reshaped = Schema::new(
        t.schema()
            .tensors()
            .iter()
            .map(|s| TensorSpec::new(s.name.clone(), [s.num_values()]))
            .collect(),
    )
    .unwrap();
    let wrong = ParamVec::new(Arc::new(reshaped), before.values().to_vec()).unwrap();
    assert!(t.set_parameters(&wrong).is_err());
    let short = Schema::new(vec![TensorSpec::new("hidden.weight", [3])]).unwrap();
    let short = ParamVec::new(Arc::new(short), vec![0.0; 3]).unwrap();
    assert!(t.set_parameters(&short).is_err());
    assert_eq!(t.get_parameters(), before);
}

#[test]
fn initialisation_is_seeded() {
    let a = mlp(16, 7).get_parameters();
    assert_eq!(a, mlp(16, 7).get_parameters());
    assert_ne!(a, mlp(16, 8).get_parameters());
    assert_eq!(cnn(4, 7).get_parameters(), cnn(4, 7).get_parameters());
    // Uniform within +-1/sqrt(fan_in): 64 inputs for the hidden layer, 16 for the output.
    let hidden = a.tensor("hidden.weight").unwrap();
    assert!(hidden.iter().all(|v| v.abs() <= 0.125));
    assert!(hidden.iter().any(|v| v.abs() > 0.1));
    let out_bias = a.tensor("output.bias").unwrap();
    assert!(out_bias.iter().all(|v| v.abs() <= 0.25));
    assert!(out_bias.iter().any(|v| v.abs() > 0.125));
}

#[test]
fn fit_is_deterministic_and_trains() {
    let run = |shuffle_seed| {
        let mut t = mlp(16, 3);
        let outcome = t.fit(&fit_config(1, shuffle_seed)).unwrap();
        (t.get_parameters().content_hash(), outcome)
    };
    let (h1, o1) = run(11);
    let (h2, o2) = run(11);
    assert_eq!(h1, h2);
    assert_eq!(o1, o2);
    assert_eq!(o1.num_examples, 1438);
    let (h3, _) = run(12);
    assert_ne!(h1, h3);
    let loss = o1.metrics["train_loss"];
    assert!(loss.is_finite() && loss < 2.3, "{loss}");
}

#[test]
fn set_parameters_then_fit_keeps_training() {
    let mut t = mlp(16, 3);
    let p = t.get_parameters();
    t.set_parameters(&p).unwrap();
    t.fit(&fit_config(1, 0)).unwrap();
    assert_ne!(
        t.get_parameters(),
        p,
        "parameters must still require gradients"
    );
}

#[test]
fn central_mlp_learns_digits() {
    let mut t = mlp(64, 42);
    let before = t.evaluate(&EvaluateConfig::default()).unwrap();
    for epoch in 0..5 {
        t.fit(&fit_config(1, epoch)).unwrap();
    }
    let after = t.evaluate(&EvaluateConfig { batch_size: 100 }).unwrap();
    assert_eq!(after.num_examples, 359);
    assert!(after.loss < before.loss);
    let accuracy = after.accuracy().unwrap();
    assert!(accuracy >= 0.93, "held-out accuracy {accuracy}");
}

#[test]
fn cnn_learns_digits() {
    let mut t = cnn(8, 42);
    t.fit(&FitConfig {
        local_epochs: 3,
        batch_size: 32,
        learning_rate: 0.01,
        shuffle_seed: 0,
        ..Default::default()
    })
    .unwrap();
    let accuracy = t.evaluate(&EvaluateConfig::default()).unwrap().accuracy();
    assert!(accuracy.unwrap() >= 0.85, "{accuracy:?}");
}

#[test]
fn divergence_is_reported_and_leaves_parameters_alone() {
    let mut t = mlp(16, 0);
    let before = t.get_parameters();
    let err = t
        .fit(&FitConfig {
            learning_rate: 1e38,
            ..fit_config(2, 0)
        })
        .unwrap_err();
    assert!(matches!(err, TrainerError::Diverged(_)), "{err}");
    assert_eq!(t.get_parameters(), before);
}

#[test]
fn bad_configs_and_missing_data_are_errors() {
    let mut t = mlp(8, 0);
    for bad in [
        FitConfig {
            local_epochs: 0,
            ..fit_config(1, 0)
        },
        FitConfig {
            batch_size: 0,
            ..fit_config(1, 0)
        },
        FitConfig {
            learning_rate: f64::NAN,
            ..fit_config(1, 0)
        },
        FitConfig {
            learning_rate: 0.0,
            ..fit_config(1, 0)
        },
    ] {
        assert!(matches!(t.fit(&bad), Err(TrainerError::InvalidConfig(_))));
    }
    t.set_eval_data(None).unwrap();
    assert_eq!(
        t.evaluate(&EvaluateConfig::default()),
        Err(TrainerError::NoData("evaluate"))
    );
    let empty = digits::embedded().subset(&[]).unwrap();
    let mut idle =
        BurnTrainer::new(&ModelSpec::default(), DeviceSpec::Cpu, empty, None, 0).unwrap();
    assert_eq!(
        idle.fit(&fit_config(1, 0)),
        Err(TrainerError::NoData("fit"))
    );
    let images = images(digits::embedded());
    assert!(matches!(
        t.evaluate_on(&images, &EvaluateConfig::default()),
        Err(TrainerError::InvalidConfig(_))
    ));
}

#[test]
fn models_that_cannot_fit_the_data_are_errors() {
    let (train, test) = digits_split();
    let build = |spec: ModelSpec, train: Dataset, eval: Option<Dataset>| {
        BurnTrainer::new(&spec, DeviceSpec::Cpu, train, eval, 0).map(|_| ())
    };
    assert!(matches!(
        build(ModelSpec::Cnn { channels: 4 }, train.clone(), None),
        Err(ModelError::InputShape { .. })
    ));
    let tiny = train.clone().with_feature_shape([1, 2, 32]).unwrap();
    assert!(matches!(
        build(ModelSpec::Cnn { channels: 4 }, tiny, None),
        Err(ModelError::InputShape { .. })
    ));
    let square = train.clone().with_feature_shape([8, 8]).unwrap();
    assert!(build(ModelSpec::Cnn { channels: 2 }, square, None).is_ok());
    assert!(matches!(
        build(ModelSpec::Mlp { hidden: 0 }, train.clone(), None),
        Err(ModelError::InvalidSpec { .. })
    ));
    assert!(matches!(
        build(ModelSpec::Cnn { channels: 0 }, images(train.clone()), None),
        Err(ModelError::InvalidSpec { .. })
    ));
    assert!(matches!(
        build(ModelSpec::default(), train, Some(images(test))),
        Err(ModelError::DataMismatch { .. })
    ));
}

#[test]
fn specs_read_from_config_files() {
    let spec: ModelSpec = serde_json::from_str(r#"{"kind": "mlp"}"#).unwrap();
    assert_eq!(spec, ModelSpec::Mlp { hidden: 64 });
    let spec: ModelSpec = serde_json::from_str(r#"{"kind": "cnn", "channels": 4}"#).unwrap();
    assert_eq!(spec, ModelSpec::Cnn { channels: 4 });
    assert!(serde_json::from_str::<ModelSpec>(r#"{"kind": "mlp", "hiden": 3}"#).is_err());
    assert!(serde_json::from_str::<ModelSpec>(r#"{"kind": "rnn"}"#).is_err());
    let device: DeviceSpec = serde_json::from_str(r#""cpu""#).unwrap();
    assert_eq!(device, DeviceSpec::Cpu);
}

/// Trains the model `make` builds on the CPU and on wgpu (its preferred adapter: in CI, Mesa's
/// lavapipe) from the same seeded start with `fit`, and checks that the two backends agree:
/// the same starting parameters exactly; updates within 1% of the CPU update's norm
/// (`‖Δ_wgpu − Δ_cpu‖ ≤ 0.01·‖Δ_cpu‖`: the kernels sum in other orders, so bit equality is
/// not to be had); training loss and held-out loss within 0.1% relative.
///
/// The update comparison leaves out attention's key bias ([`ZERO_GRADIENT`]): adding it shifts
/// every score of a query by the same amount, which softmax ignores, so its gradient is zero in
/// exact arithmetic and only rounding noise in floats, and Adam, which divides by the
/// gradient's own scale, turns that noise into full-size steps of either sign. It changes no
/// output, so the losses still check it.
/// Tensors whose gradient is zero in exact arithmetic (see [`assert_backends_agree`]).
#[cfg(feature = "wgpu")]
const ZERO_GRADIENT: &[&str] = &["mha.key.bias"];

#[cfg(feature = "wgpu")]
pub(super) fn assert_backends_agree<T: Trainer>(
    what: &str,
    make: impl Fn(DeviceSpec) -> Result<T, String>,
    fit: &FitConfig,
) {
    let wgpu = DeviceSpec::Wgpu { adapter: None };
    let mut cpu = make(DeviceSpec::Cpu).unwrap_or_else(|e| panic!("{what} on cpu: {e}"));
    let mut gpu = make(wgpu).unwrap_or_else(|e| panic!("{what} on {wgpu}: {e}"));
    let start = cpu.get_parameters();
    assert_eq!(gpu.get_parameters(), start, "{what}: same seeded start");
    let on_cpu = cpu
        .fit(fit)
        .unwrap_or_else(|e| panic!("{what} fit on cpu: {e}"));
    let on_gpu = gpu
        .fit(fit)
        .unwrap_or_else(|e| panic!("{what} fit on {wgpu}: {e}"));
    let (x, y) = (cpu.get_parameters(), gpu.get_parameters());
    let (mut diff, mut norm) = (0.0f64, 0.0f64);
    let tensors = start.tensors().zip(x.tensors()).zip(y.tensors());
    for (((spec, s), (_, a)), (_, b)) in tensors {
        if ZERO_GRADIENT.iter().any(|n| spec.name.ends_with(n)) {
            continue;
        }
        for ((s, a), b) in s.iter().zip(a).zip(b) {
            let (da, db) = (f64::from(a - s), f64::from(b - s));
            diff += (da - db).powi(2);
            norm += da.powi(2);
        }
    }
    let relative = diff.sqrt() / norm.sqrt();
    assert!(norm > 0.0, "{what}: the CPU run did not move");
    assert!(
        relative <= 0.01,
        "{what}: wgpu's update is {relative:.2e} of the CPU update's norm away from it"
    );
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-3 * a.abs().max(1e-6);
    let loss = |o: &FitOutcome| o.metrics["train_loss"];
    assert!(
        close(loss(&on_cpu), loss(&on_gpu)),
        "{what}: train loss {} on cpu, {} on wgpu",
        loss(&on_cpu),
        loss(&on_gpu)
    );
    let eval = EvaluateConfig::default();
    let (a, b) = (cpu.evaluate(&eval).unwrap(), gpu.evaluate(&eval).unwrap());
    assert!(
        close(a.loss, b.loss),
        "{what}: held-out loss {} on cpu, {} on wgpu",
        a.loss,
        b.loss
    );
    eprintln!("{what}: wgpu update within {relative:.1e} of the cpu update");
}

#[cfg(feature = "wgpu")]
#[test]
fn wgpu_trains_the_image_models_as_the_cpu_does() {
    use fl_core::scaffold::ScaffoldControls;

    let (train, test) = digits_split();
    let few: Vec<usize> = (0..256).collect();
    let train = train.subset(&few).unwrap();
    let fit = fit_config(1, 4);
    let make = |spec: ModelSpec, images: bool| {
        let (train, test) = (train.clone(), test.clone());
        move |device| {
            let (train, test) = match images {
                true => (self::images(train.clone()), self::images(test.clone())),
                false => (train.clone(), test.clone()),
            };
            BurnTrainer::new(&spec, device, train, Some(test), 11).map_err(|e| e.to_string())
        }
    };
    let mlp = ModelSpec::Mlp { hidden: 32 };
    assert_backends_agree("mlp", make(mlp.clone(), false), &fit);
    assert_backends_agree("cnn", make(ModelSpec::Cnn { channels: 4 }, true), &fit);
    let fedprox = FitConfig {
        proximal_mu: 0.5,
        ..fit.clone()
    };
    assert_backends_agree("mlp with FedProx", make(mlp.clone(), false), &fedprox);
    // SCAFFOLD: plain SGD with each gradient shifted by c − cᵢ.
    let schema = make(mlp.clone(), false)(DeviceSpec::Cpu).unwrap().schema();
    let n = schema.num_values();
    let control = |f: fn(usize) -> f32| {
        Arc::new(ParamVec::new(schema.clone(), (0..n).map(f).collect()).unwrap())
    };
    let scaffold = FitConfig {
        learning_rate: 0.05,
        scaffold: Some(ScaffoldControls {
            server: Some(control(|j| 0.01 * ((j as f32) * 0.7).sin())),
            member: Some(control(|j| 0.01 * ((j as f32) * 0.3).cos())),
        }),
        ..fit.clone()
    };
    assert_backends_agree("mlp with SCAFFOLD", make(mlp, false), &scaffold);
}

#[cfg(feature = "wgpu")]
#[test]
fn a_missing_wgpu_adapter_is_an_error_naming_the_driver() {
    let past = DeviceSpec::adapters().len();
    let (train, _) = digits_split();
    let err = BurnTrainer::new(
        &ModelSpec::default(),
        DeviceSpec::Wgpu {
            adapter: Some(past),
        },
        train,
        None,
        0,
    )
    .unwrap_err();
    assert!(matches!(err, ModelError::Device(_)), "{err}");
    assert!(err.to_string().contains("Vulkan"), "{err}");
}
