//! Contribution scores on the digits federation: where label flippers and free riders rank by
//! leave-one-out and GTG-Shapley, how close sampled Shapley comes to the exact value, and what
//! scoring costs per round. Prints the tables recorded in `benches/RESULTS.md`.
//!
//! `cargo run --release -p examples --example contribution -- [rounds=N] [seeds=1,2,3]
//! [utility=accuracy|negative_loss] [parts=ranks,exact,truncation] [coalition=...]
//! [weighting=...] [permutations=...] [truncation=...] [round_truncation=...] [convergence=...]
//! [dataset=fashion ...]` (the last six as in `[strategy.contribution]`; `dataset=fashion` and
//! its options as `examples::robust::bench_template` reads them: Fashion-MNIST instead of the
//! digits)
//!
//! - `ranks`: 20 members (Dirichlet α = 0.5), members 0-1 flip labels, members 2-3 free-ride
//!   (20%); GTG-Shapley with the default `[strategy.contribution]` settings, under both games
//!   (`coalition`) and both utilities (held-out accuracy, minus the held-out loss: the default).
//! - `exact`: 8 members, member 0 flips labels, member 1 free-rides; GTG against the exact
//!   Shapley value of every round (2⁸ coalitions).
//! - `truncation`: the first seed of `ranks` again with truncation and convergence off.

use std::process::ExitCode;
use std::time::Instant;

use examples::contribution::{Attackers, ContributionRun, descending_ranks, run};
use examples::digits::DigitsConfig;
use fl_client::Utility;
use fl_core::strategy::contribution::{CoalitionModel, ContributionConfig, spearman};

fn main() -> ExitCode {
    match measure() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("contribution benchmark failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn arg(key: &str) -> Option<String> {
    std::env::args()
        .skip(1)
        .find_map(|a| a.strip_prefix(&format!("{key}=")).map(str::to_owned))
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

/// `label_flip 0: 19, ...`: each attacker's rank (1 = most valuable) by `values`.
fn attacker_ranks(values: &[f64], attackers: Attackers) -> (String, bool) {
    let r = descending_ranks(values);
    let n = values.len() as f64;
    let bottom = (0..attackers.count()).all(|i| r[i] > n - (0.2 * n).round());
    let list = (0..attackers.count())
        .map(|i| format!("{} {}", attackers.role(i).replace('_', " "), r[i]))
        .collect::<Vec<_>>()
        .join(", ");
    (list, bottom)
}

fn costs(run: &ContributionRun) -> String {
    let pick = |f: fn(&examples::contribution::RoundContribution) -> f64| {
        run.rounds.iter().map(f).collect::<Vec<f64>>()
    };
    let evals = pick(|r| r.evaluations - r.exact_evaluations);
    let perms = pick(|r| r.permutations);
    let truncated = run.rounds.iter().filter(|r| r.round_truncated).count();
    format!(
        "{:.0} ({:.0}-{:.0}) | {:.0} | {} | {:.3} | {:.3} | {:.3}",
        mean(&evals),
        min(&evals),
        evals.iter().copied().fold(0.0, f64::max),
        mean(&perms),
        truncated,
        mean(&pick(|r| r.validator_seconds)),
        mean(&pick(|r| r.engine_seconds)),
        mean(&pick(|r| r.train_seconds)),
    )
}

fn measure() -> Result<(), Box<dyn std::error::Error>> {
    // The digits, or Fashion-MNIST with `dataset=fashion`.
    let template = examples::robust::bench_template(arg);
    let rounds: u64 = arg("rounds").and_then(|v| v.parse().ok()).unwrap_or(10);
    let seeds: Vec<u64> = arg("seeds")
        .map(|v| v.split(',').filter_map(|s| s.parse().ok()).collect())
        .unwrap_or_else(|| vec![2026, 2027, 2028]);
    let utility = match arg("utility").as_deref() {
        None | Some("negative_loss") => Utility::NegativeLoss,
        Some("accuracy") => Utility::Accuracy,
        Some(other) => return Err(format!("utility={other}: accuracy or negative_loss").into()),
    };
    let parts = arg("parts").unwrap_or_else(|| "ranks,exact,truncation".into());
    let part = |p: &str| parts.split(',').any(|x| x == p);
    // `[strategy.contribution]` keys given as arguments (e.g. `coalition=round_share`) change
    // the defaults.
    let mut table = String::new();
    for key in [
        "coalition",
        "weighting",
        "permutations",
        "truncation",
        "round_truncation",
        "convergence",
    ] {
        if let Some(v) = arg(key) {
            let quoted = if v.parse::<f64>().is_ok() {
                v
            } else {
                format!("{v:?}")
            };
            table.push_str(&format!("{key} = {quoted}\n"));
        }
    }
    let settings: ContributionConfig = toml::from_str(&table)?;
    println!(
        "{}, utility {utility:?}, {rounds} rounds, seeds {seeds:?}, FedAvg, {settings:?}; ranks: 1 = \
         most valuable, over the sum of the per-round scores",
        match &template.images {
            examples::digits::ImageSource::Digits => "digits".to_string(),
            other => format!("{other:?}"),
        }
    );
    let cost_header = "evaluations/round mean (min-max) | permutations/round | rounds truncated \
                       | validator s/round | engine s/round | training s/round";
    let start = Instant::now();

    if part("ranks") {
        let attackers = Attackers {
            flippers: 2,
            free_riders: 2,
        };
        println!(
            "\n20 members, Dirichlet 0.5; members 0-1 flip labels, 2-3 free-ride\n\n| game | \
             utility | seed | final acc | ranks by GTG-Shapley | bottom 20% | ranks by \
             leave-one-out | bottom 20% | {cost_header} |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        // The configured game and utility first, then the other game and the other utility.
        let other_game = match settings.coalition {
            CoalitionModel::RoundShare => CoalitionModel::Fedavg,
            _ => CoalitionModel::RoundShare,
        };
        let other_utility = match utility {
            Utility::Accuracy => Utility::NegativeLoss,
            _ => Utility::Accuracy,
        };
        let variants = [
            (settings.coalition, utility),
            (settings.coalition, other_utility),
            (other_game, utility),
            (other_game, other_utility),
        ];
        for (coalition, utility) in variants {
            for &seed in &seeds {
                let base = DigitsConfig {
                    rounds,
                    seed,
                    ..template.clone()
                };
                let config = ContributionConfig {
                    coalition,
                    ..settings
                };
                let r = run(&base, attackers, config, utility)?;
                let (shapley, s_ok) = attacker_ranks(&r.total(|x| Some(&x.shapley)), attackers);
                let (loo, l_ok) = attacker_ranks(&r.total(|x| Some(&x.loo)), attackers);
                println!(
                    "| {coalition:?} | {utility:?} | {seed} | {:.3} | {shapley} | {s_ok} | {loo} \
                     | {l_ok} | {} |",
                    r.final_accuracy,
                    costs(&r)
                );
            }
        }
    }

    if part("exact") {
        let attackers = Attackers {
            flippers: 1,
            free_riders: 1,
        };
        let exact = ContributionConfig {
            exact_up_to: 8,
            ..settings
        };
        println!(
            "\n8 members, Dirichlet 0.5; member 0 flips labels, member 1 free-rides; per round \
             Spearman against the exact Shapley value (2^8 = 256 coalitions)\n\n| seed | \
             GTG vs exact: mean (min) | leave-one-out vs exact: mean (min) | GTG vs exact, \
             sums over rounds | ranks by exact (sum) | ranks by GTG (sum) | {cost_header} |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
        for &seed in &seeds {
            let base = DigitsConfig {
                clients: 8,
                rounds,
                seed,
                ..template.clone()
            };
            let r = run(&base, attackers, exact, utility)?;
            let (mut gtg, mut loo) = (Vec::new(), Vec::new());
            for round in &r.rounds {
                let Some(e) = &round.exact else { continue };
                // A round whose utility did not move (all values 0) has no ranking to compare.
                if let Some(rho) = spearman(&round.shapley, e) {
                    gtg.push(rho);
                }
                if let Some(rho) = spearman(&round.loo, e) {
                    loo.push(rho);
                }
            }
            let exact_sum = r.total(|x| x.exact.as_ref());
            let gtg_sum = r.total(|x| Some(&x.shapley));
            println!(
                "| {seed} | {:.3} ({:.3}, {} rounds) | {:.3} ({:.3}) | {:.3} | {} | {} | {} |",
                mean(&gtg),
                min(&gtg),
                gtg.len(),
                mean(&loo),
                min(&loo),
                spearman(&gtg_sum, &exact_sum).unwrap_or(f64::NAN),
                attacker_ranks(&exact_sum, attackers).0,
                attacker_ranks(&gtg_sum, attackers).0,
                costs(&r)
            );
        }
    }

    if part("truncation") {
        let attackers = Attackers {
            flippers: 2,
            free_riders: 2,
        };
        let seed = seeds[0];
        let base = DigitsConfig {
            rounds,
            seed,
            ..template.clone()
        };
        println!(
            "\n20 members, seed {seed}: GTG with and without truncation (same permutations \
             cap)\n\n| GTG | Spearman with untruncated (sums) | ranks by GTG-Shapley | \
             {cost_header} |"
        );
        println!("|---|---|---|---|---|---|---|---|---|");
        let off = ContributionConfig {
            truncation: 0.0,
            round_truncation: 0.0,
            convergence: 0.0,
            ..settings
        };
        let plain = run(&base, attackers, off, utility)?;
        let plain_sum = plain.total(|x| Some(&x.shapley));
        let truncated = run(&base, attackers, settings, utility)?;
        let truncated_sum = truncated.total(|x| Some(&x.shapley));
        for (label, r, sum) in [
            ("no truncation, no convergence stop", &plain, &plain_sum),
            ("default settings", &truncated, &truncated_sum),
        ] {
            println!(
                "| {label} | {:.3} | {} | {} |",
                spearman(sum, &plain_sum).unwrap_or(f64::NAN),
                attacker_ranks(sum, attackers).0,
                costs(r)
            );
        }
    }
    println!("\nwall {:.0} s", start.elapsed().as_secs_f64());
    Ok(())
}
