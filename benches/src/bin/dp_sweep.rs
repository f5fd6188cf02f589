//! Accuracy against privacy on the quickstart federation: the same 20 members, data, model
//! and 30 rounds, with central DP-FedAvg at several noise multipliers (clip norm `C`, every
//! member in every round, so `q = 1`), against the same run without DP. Epsilon at
//! `delta = 1e-5` by the RDP and PLD accountants.
//!
//! `cargo run --release -p benches --bin dp_sweep -- [CLIP] [Z...]` (defaults: C = 1.0,
//! z = 0.1 0.2 0.3 0.5 1.0).

use std::process::ExitCode;

use examples::digits::{self, DigitsConfig};
use fl_core::dp::{Mechanism, PrivacyConfig};
use privacy::AccountantKind;

fn main() -> ExitCode {
    let args: Vec<f64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let clip = args.first().copied().unwrap_or(1.0);
    let zs: Vec<f64> = if args.len() > 1 {
        args[1..].to_vec()
    } else {
        vec![0.1, 0.2, 0.3, 0.5, 1.0]
    };
    let base = DigitsConfig::default();
    println!(
        "{} members, {} rounds, every member every round (q = 1), clip norm C = {clip}, delta = 1e-5",
        base.clients, base.rounds
    );
    println!(
        "| noise multiplier z | epsilon (RDP) | epsilon (PLD) | final accuracy | best accuracy |"
    );
    println!("|---|---|---|---|---|");
    let mut runs: Vec<Option<f64>> = vec![None];
    runs.extend(zs.iter().map(|&z| Some(z)));
    for z in runs {
        let mut config = base.clone();
        config.privacy = z.map(|z| PrivacyConfig {
            mechanism: Mechanism::Central,
            clip_norm: clip,
            noise_multiplier: z,
            epsilon: 1e9,
            delta: 1e-5,
            accountant: AccountantKind::Rdp,
            adaptive: None,
        });
        let result = match digits::prepare(&config)
            .and_then(|p| digits::run_federated(&config, p, |_| {}))
        {
            Ok(r) => r,
            Err(e) => {
                eprintln!("run failed: {e}");
                return ExitCode::FAILURE;
            }
        };
        let best = result
            .records
            .iter()
            .map(|r| r.accuracy)
            .fold(0.0f64, f64::max);
        match z {
            None => println!(
                "| no DP | ∞ | ∞ | {:.4} | {:.4} |",
                result.final_accuracy, best
            ),
            Some(z) => {
                let rdp = result.records.last().map_or(f64::NAN, |r| r.epsilon);
                let pld = privacy::accounting::epsilon_for(
                    1.0,
                    z,
                    result.records.len() as u64,
                    1e-5,
                    AccountantKind::Pld,
                )
                .unwrap_or(f64::NAN);
                println!(
                    "| {z} | {rdp:.2} | {pld:.2} | {:.4} | {best:.4} |",
                    result.final_accuracy
                );
            }
        }
    }
    ExitCode::SUCCESS
}
