//! Terminal output of a run: a progress bar over rounds, one line per round, a summary.

use indicatif::{ProgressBar, ProgressStyle};

use crate::digits::RunResult;
use crate::report::RoundRecord;

/// A progress bar over rounds that prints one line per finished round above itself.
pub struct RoundProgress {
    bar: ProgressBar,
}

impl RoundProgress {
    /// A bar for `rounds` rounds (hidden automatically when output is not a terminal).
    pub fn new(rounds: u64) -> Self {
        let bar = ProgressBar::new(rounds);
        bar.set_style(
            ProgressStyle::with_template("{bar:30} round {pos}/{len}  {msg}  [{elapsed} < {eta}]")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        Self { bar }
    }

    /// Reports a finished round.
    pub fn round(&self, r: &RoundRecord) {
        // A hidden bar (output is not a terminal) would swallow `println` too.
        if self.bar.is_hidden() {
            println!("{}", round_line(r));
        } else {
            self.bar.println(round_line(r));
        }
        self.bar.set_message(format!("accuracy {:.4}", r.accuracy));
        self.bar.inc(1);
    }

    /// Removes the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// The line printed for a round.
pub fn round_line(r: &RoundRecord) -> String {
    let privacy = if r.epsilon.is_finite() {
        format!("  epsilon {:.3}", r.epsilon)
    } else {
        String::new()
    };
    format!("{}{privacy}", round_line_plain(r))
}

fn round_line_plain(r: &RoundRecord) -> String {
    format!(
        "round {:>3}  accuracy {:.4}  loss {:.4}  train-loss {:.4}  clients {:>3} (dropped {})  {:.2}s (train {:.2}s, aggregate {:.4}s, eval {:.3}s)",
        r.round,
        r.accuracy,
        r.loss,
        r.train_loss,
        r.participants,
        r.dropped,
        r.round_seconds,
        r.train_seconds,
        r.aggregate_seconds,
        r.eval_seconds
    )
}

/// The closing summary line of a run.
pub fn summary(result: &RunResult, target: f64) -> String {
    let reached = match result.first_round_reaching(target) {
        Some(round) => format!(
            "reached {:.0}% held-out accuracy at round {round}",
            target * 100.0
        ),
        None => format!("did NOT reach {:.0}% held-out accuracy", target * 100.0),
    };
    format!(
        "{reached}; final accuracy {:.4} after {} rounds in {:.1}s (training {:.1}s, aggregation {:.3}s, evaluation {:.2}s); final model {}",
        result.final_accuracy,
        result.records.len(),
        result.wall.as_secs_f64(),
        result.train_wall.as_secs_f64(),
        result.aggregate_wall.as_secs_f64(),
        result.eval_wall.as_secs_f64(),
        result.final_hash
    )
}
