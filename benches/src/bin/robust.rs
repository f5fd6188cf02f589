//! Robust aggregation under attack on the digits federation: 20 members, Dirichlet α = 0.5,
//! members 0-3 (20%) attacking, each rule of `examples::robust::rules` against each attack of
//! `examples::robust::attacks`, over several seeds. Prints a markdown table of the final
//! held-out accuracy (mean, and min-max over the seeds).
//!
//! `cargo run -p benches --bin robust -- [rounds=N] [seeds=1,2,3] [tau=T] [max_norm=B]
//! [rules=a,b] [attacks=a,b] [probe=1] [per_seed=1] [sybils=1] [flower=1] [partition=classes]
//! [alpha=A] [dataset=fashion] [fashion_dir=D] [train_limit=N] [test_limit=N] [hidden=H] [epochs=E]
//! [lr=L] [cc_iterations=L] [scaling=F,F]`
//! (rules and attacks filter by
//! table label; flower adds Flower's Krum, MultiKrum, Bulyan, FedMedian and FedTrimmedAvg, run
//! by `benches/flower/robust_agg.py` on the same updates, see `benches/flower/robust.sh`;
//! probe prints the median update norm of every round, to calibrate `tau` and `max_norm`;
//! per_seed prints every run's final accuracy to stderr as `seed,rule,attack,accuracy` lines
//! (prefixed `per_seed,`), for paired comparisons across rules;
//! sybils makes every attacker send the first attacker's update; a backdoor cell adds the
//! final model's backdoor success rate). `dataset=fashion` runs on Fashion-MNIST instead
//! (Debian's `dataset-fashion-mnist`, in `/usr/share/datasets/fashion-mnist` unless
//! `fashion_dir` says otherwise): a seeded sample of `train_limit` (8,000) training and
//! `test_limit` (2,000) test images, an MLP of `hidden` (128) units, `epochs` (2) local epochs
//! of Adam at `lr` (0.01). `cc_iterations` sets both centered-clipping rows' iterations
//! (1); `scaling` adds scaling attacks with the factors given (negative: a sign flip that
//! strong).

use std::process::ExitCode;
use std::time::Instant;

use examples::digits::DigitsConfig;
use examples::robust::{
    attack_label, attacks, bench_template, dataset_label, flower_rules, rules, run_cell_with,
};
use fl_core::attack::Attack;

fn main() -> ExitCode {
    let arg = |key: &str| {
        std::env::args()
            .skip(1)
            .find_map(|a| a.strip_prefix(&format!("{key}=")).map(str::to_owned))
    };
    let rounds: u64 = arg("rounds").and_then(|v| v.parse().ok()).unwrap_or(20);
    let seeds: Vec<u64> = arg("seeds")
        .map(|v| v.split(',').filter_map(|s| s.parse().ok()).collect())
        .unwrap_or_else(|| vec![2026, 2027, 2028]);
    let tau: f64 = arg("tau").and_then(|v| v.parse().ok()).unwrap_or(1.0);
    let max_norm: f64 = arg("max_norm").and_then(|v| v.parse().ok()).unwrap_or(1.0);
    let keep = |list: &Option<String>, label: &str| {
        list.as_ref()
            .is_none_or(|l| l.split(',').any(|x| x == label))
    };
    let rule_filter = arg("rules");
    let attack_filter = arg("attacks");
    let n = 20;
    let f = n / 5;
    let mut all = rules(n, f, tau, max_norm);
    // `cc_iterations=L`: the clipping iterations of both centered-clipping rows (default 1).
    if let Some(l) = arg("cc_iterations").and_then(|v| v.parse().ok()) {
        all.iter_mut()
            .filter_map(|r| r.strategy.centered_clipping.as_mut())
            .for_each(|cc| cc.iterations = l);
    }
    if arg("flower").is_some_and(|v| v == "1") {
        all.extend(flower_rules(n, f));
    }
    let rules: Vec<_> = all
        .into_iter()
        .filter(|r| keep(&rule_filter, &r.label))
        .collect();
    let mut attacks: Vec<_> = attacks()
        .into_iter()
        .filter(|&a| keep(&attack_filter, &attack_label(a)))
        .collect();
    // `scaling=-4,-1`: scaling attacks with these factors beside the list (a negative factor
    // is a sign flip of that strength, Li et al. 2019's σ).
    for factor in arg("scaling").iter().flat_map(|v| v.split(',')) {
        match factor.parse::<f32>() {
            Ok(factor) if factor.is_finite() => attacks.push(Some(Attack::Scaling { factor })),
            _ => {
                eprintln!("scaling={factor}: a finite number");
                return ExitCode::FAILURE;
            }
        }
    }
    // `partition=classes` gives every member two labels; `alpha=` changes the Dirichlet skew.
    let partition = match arg("partition").as_deref() {
        None | Some("dirichlet") => fl_client::federation::PartitionKind::Dirichlet,
        Some("classes") => fl_client::federation::PartitionKind::Classes,
        Some(other) => {
            eprintln!("partition={other}: dirichlet or classes");
            return ExitCode::FAILURE;
        }
    };
    let template = bench_template(|k: &str| arg(k));
    let alpha: f64 = arg("alpha").and_then(|v| v.parse().ok()).unwrap_or(0.5);
    println!(
        "{}, {n} members, {partition:?} (alpha {alpha}), {f} attackers (members 0-{}), {rounds} rounds, seeds {seeds:?}, \
         centered clipping tau = {tau}, norm bound = {max_norm}; final held-out accuracy, mean (min-max)",
        dataset_label(&template),
        f - 1
    );
    if template.images != DigitsConfig::default().images {
        println!(
            "Fashion-MNIST: {:?}, {:?}, fit {:?}",
            template.images, template.model, template.fit
        );
    }
    let sybils = arg("sybils").is_some_and(|v| v == "1");
    let per_seed = arg("per_seed").is_some_and(|v| v == "1");
    let header: Vec<String> = attacks
        .iter()
        .map(|a| {
            let label = attack_label(*a);
            if sybils && a.is_some_and(|a| !a.poisons_data()) {
                format!("sybils {label}")
            } else {
                label
            }
        })
        .collect();
    println!("| rule | {} |", header.join(" | "));
    println!("|---|{}", "---|".repeat(header.len()));
    let start = Instant::now();
    for rule in &rules {
        let mut cells = Vec::new();
        for &attack in &attacks {
            let mut accs = Vec::new();
            let mut bsrs: Vec<f64> = Vec::new();
            let mut aborted = 0;
            for &seed in &seeds {
                let base = DigitsConfig {
                    rounds,
                    seed,
                    workers: 0,
                    partition,
                    alpha,
                    ..template.clone()
                };
                match run_cell_with(&base, rule, attack, f, sybils) {
                    Ok(c) => {
                        if arg("probe").is_some() {
                            let norms: Vec<String> =
                                c.median_norms.iter().map(|n| format!("{n:.2}")).collect();
                            eprintln!(
                                "{} {attack:?} seed {seed}: median update norm per round {}",
                                rule.label,
                                norms.join(" ")
                            );
                        }
                        if per_seed {
                            eprintln!(
                                "per_seed,{seed},{},{},{:.4}",
                                rule.label,
                                attack_label(attack),
                                c.run.final_accuracy
                            );
                        }
                        accs.push(c.run.final_accuracy);
                        bsrs.extend(c.backdoor_success);
                        aborted += c.aborted;
                    }
                    Err(e) => {
                        eprintln!("{} under {attack:?}, seed {seed}: {e}", rule.label);
                        return ExitCode::FAILURE;
                    }
                }
            }
            let mean = accs.iter().sum::<f64>() / accs.len() as f64;
            let lo = accs.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = accs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let note = if aborted > 0 {
                format!(" ({aborted} rounds aborted)")
            } else {
                String::new()
            };
            let backdoor = if bsrs.is_empty() {
                String::new()
            } else {
                let m = bsrs.iter().sum::<f64>() / bsrs.len() as f64;
                let top = bsrs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                format!(
                    ", backdoor success {:.1} (max {:.1})",
                    100.0 * m,
                    100.0 * top
                )
            };
            cells.push(format!(
                "{:.1} ({:.1}-{:.1}){backdoor}{note}",
                100.0 * mean,
                100.0 * lo,
                100.0 * hi
            ));
        }
        println!("| {} | {} |", rule.label, cells.join(" | "));
    }
    eprintln!("wall time {:.0} s", start.elapsed().as_secs_f64());
    ExitCode::SUCCESS
}
