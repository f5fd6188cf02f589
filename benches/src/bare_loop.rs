//! The quickstart federation as the plain loop a researcher would write without daofl.
//!
//! Same members, data, model, seeds, local training and parallelism as
//! [`examples::digits::run_federated`], and the same example-weighted mean (each term `w·x`
//! rounded to a multiple of 2⁻³² and summed in `i64`, as `fl_core::WeightedSum` does), so it
//! computes the very same final model. Whatever the federated
//! run costs beyond this loop is framework overhead.

use std::time::{Duration, Instant};

use examples::digits::{DigitsConfig, Prepared, RunError, RunResult, evaluate_global};
use examples::report::RoundRecord;
use fl_aggregator::run_parallel;
use fl_client::{BurnTrainer, Trainer};
use fl_core::{ClientId, FitConfig, ParamVec, derive_seed, select_clients};

/// Runs `config.rounds` rounds of FedAvg as a bare loop.
pub fn run(
    config: &DigitsConfig,
    prepared: Prepared,
    mut on_round: impl FnMut(&RoundRecord),
) -> Result<RunResult, RunError> {
    let Prepared {
        trainers,
        mut evaluator,
        initial,
        ..
    } = prepared;
    let ids: Vec<ClientId> = (0..trainers.len() as u64).map(ClientId).collect();
    let mut trainers: Vec<Option<BurnTrainer>> = trainers.into_iter().map(Some).collect();
    let schema = initial.schema().clone();
    let mut global = initial;
    let mut records = Vec::new();
    let (mut train_wall, mut aggregate_wall, mut eval_wall) =
        (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let start = Instant::now();

    for round in 1..=config.rounds {
        let round_start = Instant::now();
        let selected = select_clients(
            &ids,
            config.fraction_fit,
            1,
            derive_seed(config.seed, "select", round),
        );
        let shuffle_base = derive_seed(config.seed, "shuffle", round);
        let jobs: Vec<(usize, BurnTrainer, FitConfig)> = selected
            .iter()
            .map(|id| {
                let i = id.0 as usize;
                let fit = FitConfig {
                    shuffle_seed: derive_seed(shuffle_base, "client", id.0),
                    ..config.fit.clone()
                };
                (i, trainers[i].take().expect("each member once"), fit)
            })
            .collect();

        let t = Instant::now();
        let global_ref = &global;
        let results = run_parallel(jobs, config.workers, |(i, mut trainer, fit)| {
            let outcome = trainer
                .set_parameters(global_ref)
                .and_then(|()| trainer.fit(&fit))
                .map(|out| (trainer.get_parameters(), out));
            (i, trainer, outcome)
        });
        let train = t.elapsed();
        train_wall += train;

        let t = Instant::now();
        const SCALE: f64 = (1u64 << 32) as f64;
        let mut sum = vec![0i64; global.len()];
        let mut total = 0u64;
        let (mut loss_sum, mut loss_weight) = (0.0f64, 0u64);
        for (i, trainer, outcome) in results {
            trainers[i] = Some(trainer);
            let (params, out) = outcome?;
            let w = out.num_examples as f64;
            for (s, v) in sum.iter_mut().zip(params.values()) {
                *s += (w * f64::from(*v) * SCALE).round() as i64;
            }
            total += out.num_examples;
            if let Some(l) = out.metrics.get("train_loss") {
                loss_sum += w * l;
                loss_weight += out.num_examples;
            }
        }
        let w = total as f64 * SCALE;
        global = ParamVec::new(
            schema.clone(),
            sum.iter().map(|&s| (s as f64 / w) as f32).collect(),
        )
        .expect("same schema");
        let aggregate = t.elapsed();
        aggregate_wall += aggregate;

        let t = Instant::now();
        let result = evaluate_global(&mut evaluator, &global)?;
        let eval = t.elapsed();
        eval_wall += eval;
        let record = RoundRecord {
            epsilon: f64::NAN,
            round,
            accuracy: result.accuracy().unwrap_or(0.0),
            loss: result.loss,
            train_loss: loss_sum / loss_weight.max(1) as f64,
            participants: selected.len(),
            dropped: 0,
            round_seconds: round_start.elapsed().as_secs_f64(),
            train_seconds: train.as_secs_f64(),
            aggregate_seconds: aggregate.as_secs_f64(),
            eval_seconds: eval.as_secs_f64(),
        };
        on_round(&record);
        records.push(record);
    }
    Ok(RunResult {
        final_hash: global.content_hash(),
        final_accuracy: records.last().map_or(0.0, |r| r.accuracy),
        records,
        wall: start.elapsed(),
        train_wall,
        aggregate_wall,
        eval_wall,
    })
}

#[cfg(test)]
mod tests {
    use examples::digits;

    use super::*;

    #[test]
    fn the_bare_loop_computes_the_federated_model_exactly() {
        let config = DigitsConfig {
            clients: 6,
            rounds: 2,
            fraction_fit: 0.5,
            workers: 2,
            ..DigitsConfig::default()
        };
        let federated =
            digits::run_federated(&config, digits::prepare(&config).unwrap(), |_| {}).unwrap();
        let bare = run(&config, digits::prepare(&config).unwrap(), |_| {}).unwrap();
        assert_eq!(bare.final_hash, federated.final_hash);
        assert_eq!(bare.records.len(), 2);
        assert!(bare.records.iter().all(|r| r.participants == 3));
    }
}
