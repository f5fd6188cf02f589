//! Local epoch time per device (issue "Training on GPU"): the digits MLP of the quickstart, the
//! Fashion-MNIST CNN and the proposal transformer, each trained one epoch at a time as a member
//! trains it, on every device named, in one run. One warm-up epoch (kernel compilation,
//! autotuning, the first upload), then the median of `--repeats`; the table gives each
//! device's speed-up over the first device listed (normally `cpu`).
//!
//! ```text
//! cargo run --release -p benches --features wgpu --bin gpu_epoch -- \
//!     [--devices cpu,wgpu] [--fashion DIR] [--fashion-n N] [--repeats R]
//!     [--models mlp,cnn,transformer] [--csv FILE] [--list]
//! ```
//!
//! `--csv` appends `model,examples,device,seconds` rows (a failed device gets no row), so that
//! legs run apart (the CPU pinned to two cores, the GPUs with the whole host) make one table;
//! `--list` prints the backends compiled in and the wgpu adapters found.
//!
//! Defaults: `cpu` and `wgpu` (those compiled in), Fashion-MNIST from
//! `/usr/share/datasets/fashion-mnist` (its first 10,000 training images), 3 repeats, all three
//! models. Run it from the repository root: it reads `examples/proposals-transformer.toml` and
//! the corpus in `fl-client/data/proposals/` there, not at the path compiled in, so a binary
//! built on one machine runs on another. `benches/gpu/run.sh` runs it on the device machine,
//! with the CPU leg pinned to two cores as this project's machines have, and samples the GPU's
//! memory beside it.

use std::path::PathBuf;
use std::time::Instant;

use examples::proposals::{ProposalsConfig, pooled_training_data, prepare_from};
use fl_client::data::proposals;
use fl_client::trainer::proposals::ProposalTrainer;
use fl_client::{BurnTrainer, Dataset, DeviceSpec, ModelSpec, Trainer};
use fl_core::FitConfig;

struct Args {
    devices: Vec<DeviceSpec>,
    fashion: PathBuf,
    fashion_n: usize,
    repeats: usize,
    models: Vec<String>,
    csv: Option<PathBuf>,
}

fn args() -> Result<Args, String> {
    let mut args = Args {
        devices: DeviceSpec::compiled()
            .into_iter()
            .filter(|d| *d != "cuda")
            .map(|d| d.parse().expect("compiled backends parse"))
            .collect(),
        fashion: "/usr/share/datasets/fashion-mnist".into(),
        fashion_n: 10_000,
        repeats: 3,
        models: vec!["mlp".into(), "cnn".into(), "transformer".into()],
        csv: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--devices" => {
                args.devices = value()?
                    .split(',')
                    .map(|d| d.parse().map_err(|e| format!("{e}")))
                    .collect::<Result<_, _>>()?
            }
            "--fashion" => args.fashion = value()?.into(),
            "--fashion-n" => args.fashion_n = value()?.parse().map_err(|e| format!("{e}"))?,
            "--repeats" => args.repeats = value()?.parse().map_err(|e| format!("{e}"))?,
            "--models" => args.models = value()?.split(',').map(str::to_string).collect(),
            "--csv" => args.csv = Some(value()?.into()),
            "--list" => {
                println!(
                    "backends in this build: {}",
                    DeviceSpec::compiled().join(", ")
                );
                for (spec, name) in DeviceSpec::adapters() {
                    println!("{spec}\t{name}");
                }
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if args.repeats == 0 || args.devices.is_empty() {
        return Err("--repeats and --devices need at least one".into());
    }
    Ok(args)
}

/// Median seconds of one `fit` of `epoch` after a warm-up one.
fn time_epochs(
    trainer: &mut dyn Trainer,
    epoch: &FitConfig,
    repeats: usize,
) -> Result<f64, String> {
    trainer.fit(epoch).map_err(|e| e.to_string())?;
    let mut times = Vec::with_capacity(repeats);
    for i in 0..repeats {
        let config = FitConfig {
            shuffle_seed: i as u64 + 1,
            ..epoch.clone()
        };
        let start = Instant::now();
        trainer.fit(&config).map_err(|e| e.to_string())?;
        times.push(start.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// Builds the model's trainer on a device.
type MakeTrainer = Box<dyn Fn(DeviceSpec) -> Result<Box<dyn Trainer>, String>>;

/// One model's line of the table: its epoch time on each device.
struct Row {
    label: String,
    model: String,
    examples: usize,
    times: Vec<Result<f64, String>>,
}

/// One local epoch of Adam over batches of 32 at `learning_rate`, as the image benchmarks train.
fn image_epoch(learning_rate: f64) -> FitConfig {
    FitConfig {
        local_epochs: 1,
        batch_size: 32,
        learning_rate,
        ..FitConfig::default()
    }
}

fn image_trainer(
    spec: &ModelSpec,
    data: &Dataset,
    device: DeviceSpec,
) -> Result<Box<dyn Trainer>, String> {
    BurnTrainer::new(spec, device, data.clone(), None, 1)
        .map(|t| Box::new(t) as Box<dyn Trainer>)
        .map_err(|e| e.to_string())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = args()?;
    let mut rows: Vec<Row> = Vec::new();
    for model in &args.models {
        let (label, examples, epoch, make): (String, usize, FitConfig, MakeTrainer) = match model
            .as_str()
        {
            "mlp" => {
                let (train, _) = fl_client::data::digits::embedded().train_test_split(0.2, 0)?;
                let spec = ModelSpec::Mlp { hidden: 256 };
                let n = train.len();
                let epoch = image_epoch(0.02);
                let make = move |d| image_trainer(&spec, &train, d);
                ("digits MLP 64-256-10".into(), n, epoch, Box::new(make))
            }
            "cnn" => {
                let all = fl_client::data::idx::load(
                    args.fashion.join("train-images-idx3-ubyte.gz"),
                    args.fashion.join("train-labels-idx1-ubyte.gz"),
                )?;
                let indices: Vec<usize> = (0..args.fashion_n.min(all.len())).collect();
                let data = all.subset(&indices)?;
                let spec = ModelSpec::Cnn { channels: 8 };
                let epoch = image_epoch(0.01);
                let make = move |d| image_trainer(&spec, &data, d);
                (
                    "Fashion-MNIST CNN (8, 16)".into(),
                    indices.len(),
                    epoch,
                    Box::new(make),
                )
            }
            "transformer" => {
                let text = std::fs::read_to_string("examples/proposals-transformer.toml")?;
                let config: ProposalsConfig = toml::from_str(&text)?;
                // From the working tree rather than the path compiled in: the device machine
                // runs a binary built on another.
                let dir = std::path::Path::new("fl-client/data/proposals");
                let corpus = proposals::load(dir.join("proposals.jsonl.gz"))?;
                let split = corpus.split(&proposals::load_test_ids(dir.join("test_ids.json"))?)?;
                let data = pooled_training_data(&prepare_from(&config, &corpus, &split)?);
                let n = data.len();
                let epoch = FitConfig {
                    local_epochs: 1,
                    ..config.fit.clone()
                };
                let spec = config.model.clone();
                let make = move |d| {
                    ProposalTrainer::new(&spec, d, data.clone(), None, 1)
                        .map(|t| Box::new(t) as Box<dyn Trainer>)
                        .map_err(|e| e.to_string())
                };
                ("proposal transformer".into(), n, epoch, Box::new(make))
            }
            other => return Err(format!("unknown model {other}: mlp, cnn or transformer").into()),
        };
        let times = args
            .devices
            .iter()
            .map(|&device| {
                let mut trainer = make(device)?;
                let t = time_epochs(trainer.as_mut(), &epoch, args.repeats);
                eprintln!("{label} on {device}: {t:?}");
                t
            })
            .collect();
        rows.push(Row {
            label,
            model: model.clone(),
            examples,
            times,
        });
    }
    // Each model's time on each device, in table order.
    let cells: Vec<(&Row, DeviceSpec, &Result<f64, String>)> = rows
        .iter()
        .flat_map(|r| {
            let devices = args.devices.iter().copied();
            devices.zip(&r.times).map(move |(d, t)| (r, d, t))
        })
        .collect();
    if let Some(path) = &args.csv {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        for (row, device, t) in &cells {
            if let Ok(t) = t {
                writeln!(file, "{},{},{device},{t:.6}", row.model, row.examples)?;
            }
        }
    }
    let base = args.devices[0];
    println!(
        "{:<28} {:>8} {:<8} {:>12} {:>10}",
        "model", "examples", "device", "epoch (s)", "vs first"
    );
    for (row, device, t) in &cells {
        let (label, examples, device) = (&row.label, row.examples, device.to_string());
        match (t, &row.times[0]) {
            (Ok(t), Ok(b)) => println!(
                "{label:<28} {examples:>8} {device:<8} {t:>12.4} {:>9.2}x",
                b / t
            ),
            (Ok(t), Err(_)) => println!(
                "{label:<28} {examples:>8} {device:<8} {t:>12.4} {:>10}",
                "-"
            ),
            (Err(e), _) => println!("{label:<28} {examples:>8} {device:<8} failed: {e}"),
        }
    }
    println!(
        "(speed-up: epoch time on {base} / epoch time on the device; median of {} epochs after one warm-up)",
        args.repeats
    );
    Ok(())
}
