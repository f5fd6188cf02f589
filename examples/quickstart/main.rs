//! daofl quickstart: 20 members learn to read handwritten digits without pooling their data.
//!
//! Each member holds a label-skewed share (Dirichlet α = 0.5) of the UCI optical digits and
//! trains an MLP locally with burn; the round engine averages their models (FedAvg) over the
//! in-process federation; the global model is scored on held-out digits after every round.
//! Outputs land in `runs/quickstart/`: `metrics.csv`, `metrics.svg`, `summary.txt`.
//!
//! Run with `cargo run --release --example quickstart`.

use std::path::Path;
use std::process::ExitCode;

use examples::digits::{self, DigitsConfig};
use examples::progress::RoundProgress;
use examples::report::RunFolder;

const TARGET_ACCURACY: f64 = 0.95;

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("quickstart failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<bool, Box<dyn std::error::Error>> {
    let config = DigitsConfig::default();
    let prepared = digits::prepare(&config)?;
    println!(
        "{} members, Dirichlet alpha {} over {} training digits (smallest share {}, largest {}), {:?}, FedAvg",
        config.clients,
        config.alpha,
        prepared.sizes.iter().sum::<usize>(),
        prepared.sizes.iter().min().unwrap_or(&0),
        prepared.sizes.iter().max().unwrap_or(&0),
        config.model,
    );
    let progress = RoundProgress::new(config.rounds);
    let result = digits::run_federated(&config, prepared, |record| progress.round(record))?;
    progress.finish();

    let run = RunFolder::create(Path::new("runs"), "quickstart")?;
    run.write_metrics(&result.records)?;
    run.write_plot(
        "daofl quickstart: 20 members, digits, FedAvg",
        &result.records,
    )?;
    let reached = result.first_round_reaching(TARGET_ACCURACY);
    let summary = examples::progress::summary(&result, TARGET_ACCURACY);
    run.write_summary(&format!("{summary}\n"))?;
    println!("{summary}");
    println!("run folder: {}", run.path().display());
    Ok(reached.is_some())
}
