//! Poisoning detection on the digits federation: 20 members, Dirichlet α = 0.5, members 0-3
//! (20%) attacking, every update signed; per attack and seed, the precision and recall of the
//! flags in round 10 and over rounds 1-10, the share of honest members flagged, and the
//! evidence of every flag re-checked by `fl_aggregator::qa::verify` (and a tampered copy of
//! each rejected).
//!
//! `cargo run --release -p benches --bin detect -- [rounds=N] [seeds=1,2,3] [threshold=T]
//! [exclude=0.3] [rate=0.2] [rules=trimmed_mean,centered_clipping] [attacks=a,b]
//! [dataset=fashion ...]` (the Fashion-MNIST options of `examples::robust::bench_template`). With `exclude` > 0
//! flagged members are left out of later rounds (the table then also says when the last
//! attacker was excluded); the precision/recall table is measured with exclusion off.
//! `consistency=W` turns on FLDetector-style consistency over `W` rounds
//! (`fl_core::strategy::consistency`) and fills the last column: the AUC of round 10's
//! consistency scores, the share of (attacker, honest member) pairs the score orders
//! attacker-first (0.5 is chance; `-` when off).

use std::process::ExitCode;
use std::time::Instant;

use examples::digits::DigitsConfig;
use examples::robust::{
    RuleUnderTest, attack_label, bench_template, dataset_label, rules, run_detection,
};
use fl_aggregator::attack::Attack;
use fl_core::ClientId;
use fl_core::strategy::DetectionConfig;

fn main() -> ExitCode {
    let arg = |key: &str| {
        std::env::args()
            .skip(1)
            .find_map(|a| a.strip_prefix(&format!("{key}=")).map(str::to_owned))
    };
    let rounds: u64 = arg("rounds").and_then(|v| v.parse().ok()).unwrap_or(10);
    let seeds: Vec<u64> = arg("seeds")
        .map(|v| v.split(',').filter_map(|s| s.parse().ok()).collect())
        .unwrap_or_else(|| vec![2026, 2027, 2028]);
    let detection = DetectionConfig {
        threshold: arg("threshold").and_then(|v| v.parse().ok()).unwrap_or(3.5),
        exclude_below: arg("exclude").and_then(|v| v.parse().ok()).unwrap_or(0.0),
        reputation_rate: arg("rate").and_then(|v| v.parse().ok()).unwrap_or(0.3),
        consistency_window: arg("consistency").and_then(|v| v.parse().ok()).unwrap_or(0),
    };
    let template = bench_template(|k: &str| arg(k));
    let rule_names = arg("rules").unwrap_or_else(|| "trimmed_mean,centered_clipping".into());
    let n = 20;
    let f = n / 5;
    let rules: Vec<RuleUnderTest> = rules(n, f, 5.0, 5.0)
        .into_iter()
        .filter(|r| rule_names.split(',').any(|x| x == r.label))
        .map(|mut r| {
            r.strategy.detection = Some(detection);
            r
        })
        .collect();
    let all_attacks = [
        None,
        Some(Attack::Gaussian { std: 1.0 }),
        Some(Attack::SignFlip),
        Some(Attack::Scaling { factor: 20.0 }),
        Some(Attack::Alie { tau: 1.5 }),
        Some(Attack::LabelFlip),
        Some(Attack::Ipm { epsilon: 0.1 }),
        Some(Attack::Backdoor { target: 0 }),
    ];
    let attack_filter = arg("attacks");
    let attacks: Vec<Option<Attack>> = all_attacks
        .into_iter()
        .filter(|a| {
            let label = attack_label(*a);
            attack_filter
                .as_ref()
                .is_none_or(|l| l.split(',').any(|x| x == label))
        })
        .collect();
    println!(
        "{}, {n} members, Dirichlet 0.5, {f} attackers (members 0-{}), {rounds} rounds, seeds {seeds:?}, \
         threshold {}, reputation rate {}, exclusion below {}",
        dataset_label(&template),
        f - 1,
        detection.threshold,
        detection.reputation_rate,
        detection.exclude_below
    );
    println!(
        "| rule | attack | precision r10 | recall r10 | precision r1-10 | recall r1-10 | honest flagged r1-10 | excluded at end | evidence accepted | tampered rejected | accuracy | consistency AUC r10 |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let start = Instant::now();
    let mut failed = false;
    for rule in &rules {
        for &attack in &attacks {
            let mut tp10 = 0usize;
            let mut fp10 = 0usize;
            let mut fn10 = 0usize;
            let (mut tp, mut fp, mut fneg, mut honest_seen) = (0usize, 0usize, 0usize, 0usize);
            let (mut accepted, mut tampered, mut flags) = (0usize, 0usize, 0usize);
            let mut excluded = Vec::new();
            let mut accs = Vec::new();
            // Round 10's consistency scores: (attacker, honest) pairs ordered right, of all.
            let (mut ordered, mut pairs) = (0.0f64, 0usize);
            for &seed in &seeds {
                let base = DigitsConfig {
                    rounds,
                    seed,
                    workers: 0,
                    ..template.clone()
                };
                let attackers = if attack.is_some() { f } else { 0 };
                let (run, trace) = match run_detection(&base, rule, attack, attackers) {
                    Ok(r) => r,
                    Err(e) => {
                        eprintln!("{} {attack:?} seed {seed}: {e}", rule.label);
                        failed = true;
                        continue;
                    }
                };
                for e in &trace.evidence_rejected {
                    eprintln!(
                        "{} {attack:?} seed {seed}: evidence rejected: {e}",
                        rule.label
                    );
                }
                accs.push(run.final_accuracy);
                accepted += trace.evidence_accepted;
                tampered += trace.tampered_rejected;
                excluded.push(trace.excluded);
                let bad = |c: &ClientId| (c.0 as usize) < attackers;
                // Round 10's scores, or the last round's in a shorter run.
                if let Some(scores) = trace.consistency.get(9).or(trace.consistency.last()) {
                    for (a, sa) in scores.iter().filter(|(c, _)| bad(c)) {
                        for (_, sh) in scores.iter().filter(|(c, _)| !bad(c) && c != a) {
                            pairs += 1;
                            ordered += match sa.total_cmp(sh) {
                                std::cmp::Ordering::Greater => 1.0,
                                std::cmp::Ordering::Equal => 0.5,
                                std::cmp::Ordering::Less => 0.0,
                            };
                        }
                    }
                }
                for (i, (clients, flagged)) in trace.rounds.iter().enumerate() {
                    flags += flagged.len();
                    let t = flagged.iter().filter(|c| bad(c)).count();
                    let p = flagged.len() - t;
                    let m = clients.iter().filter(|c| bad(c)).count() - t;
                    if i < 10 {
                        honest_seen += clients.iter().filter(|c| !bad(c)).count();
                        tp += t;
                        fp += p;
                        fneg += m;
                    }
                    if i + 1 == 10.min(trace.rounds.len()) {
                        tp10 += t;
                        fp10 += p;
                        fn10 += m;
                    }
                }
            }
            let ratio = |a: usize, b: usize| {
                if b == 0 {
                    "-".to_string()
                } else {
                    format!("{:.2}", a as f64 / b as f64)
                }
            };
            let honest_rounds = honest_seen.max(1);
            let mean = accs.iter().sum::<f64>() / accs.len().max(1) as f64;
            println!(
                "| {} | {} | {} | {} | {} | {} | {:.1}% | {:?} | {accepted}/{flags} | {tampered}/{flags} | {:.1} | {} |",
                rule.label,
                attack_label(attack),
                ratio(tp10, tp10 + fp10),
                ratio(tp10, tp10 + fn10),
                ratio(tp, tp + fp),
                ratio(tp, tp + fneg),
                100.0 * fp as f64 / honest_rounds as f64,
                excluded,
                100.0 * mean,
                if pairs == 0 {
                    "-".to_string()
                } else {
                    format!("{:.2}", ordered / pairs as f64)
                }
            );
        }
    }
    eprintln!("{:.0} s", start.elapsed().as_secs_f64());
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
