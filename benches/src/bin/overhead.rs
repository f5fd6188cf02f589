//! Framework overhead: the quickstart federation (engine + client sessions + in-process
//! transport) against the same computation as a bare loop, alternated in one process.
//!
//! `cargo run --release -p benches --bin overhead -- [REPEATS]` (default 3). Prints a table and
//! the median ratio federated / bare. Both runs must end on the same model hash.

use std::process::ExitCode;

use benches::bare_loop;
use examples::digits::{self, DigitsConfig, RunResult};

fn main() -> ExitCode {
    let repeats: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(3);
    let config = DigitsConfig::default();
    println!(
        "quickstart federation: {} clients, {} rounds, {:?}, workers {} (0 = cores: {})",
        config.clients,
        config.rounds,
        config.model,
        config.workers,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "| run | mode | wall s | train s | aggregate s | eval s | final accuracy | final model |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut ratios = Vec::new();
    for rep in 1..=repeats {
        let federated = match digits::prepare(&config)
            .and_then(|p| digits::run_federated(&config, p, |_| {}))
        {
            Ok(r) => r,
            Err(e) => return fail(e),
        };
        row(rep, "federated", &federated);
        let bare = match digits::prepare(&config).and_then(|p| bare_loop::run(&config, p, |_| {})) {
            Ok(r) => r,
            Err(e) => return fail(e),
        };
        row(rep, "bare loop", &bare);
        if federated.final_hash != bare.final_hash {
            eprintln!("the two runs computed different models: the comparison is void");
            return ExitCode::FAILURE;
        }
        ratios.push(federated.wall.as_secs_f64() / bare.wall.as_secs_f64());
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "\nratio federated / bare (wall): median {:.3}, min {:.3}, max {:.3} over {} pairs",
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1],
        ratios.len()
    );
    ExitCode::SUCCESS
}

fn row(rep: usize, mode: &str, r: &RunResult) {
    println!(
        "| {rep} | {mode} | {:.2} | {:.2} | {:.4} | {:.2} | {:.4} | {} |",
        r.wall.as_secs_f64(),
        r.train_wall.as_secs_f64(),
        r.aggregate_wall.as_secs_f64(),
        r.eval_wall.as_secs_f64(),
        r.final_accuracy,
        r.final_hash
    );
}

fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("overhead benchmark failed: {e}");
    ExitCode::FAILURE
}
