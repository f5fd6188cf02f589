//! Run folders: per-round metrics as CSV, a plot of accuracy and loss, a summary.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use plotters::prelude::*;
use serde::Serialize;

/// One row of `metrics.csv`: what a round achieved and what it cost.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoundRecord {
    /// Round number.
    pub round: u64,
    /// Accuracy of the global model on the held-out set after the round.
    pub accuracy: f64,
    /// Mean cross-entropy of the global model on the held-out set.
    pub loss: f64,
    /// Example-weighted mean training loss reported by the clients.
    pub train_loss: f64,
    /// Clients whose results were aggregated.
    pub participants: usize,
    /// Selected clients dropped from the round.
    pub dropped: usize,
    /// Wall time of the whole round.
    pub round_seconds: f64,
    /// Wall time of local training (all clients, run in parallel).
    pub train_seconds: f64,
    /// Wall time inside the round engine (selection, aggregation, bookkeeping).
    pub aggregate_seconds: f64,
    /// Wall time of the held-out evaluation.
    pub eval_seconds: f64,
    /// Differential privacy: epsilon spent after this round (at the run's delta); NaN without
    /// DP.
    pub epsilon: f64,
}

/// A folder holding one run's outputs.
#[derive(Debug, Clone)]
pub struct RunFolder {
    path: PathBuf,
}

/// Why a run folder could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// A file or folder could not be created or written.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The CSV writer failed.
    #[error("cannot write metrics.csv: {0}")]
    Csv(#[from] csv::Error),
    /// The plot could not be drawn.
    #[error("cannot draw the plot: {0}")]
    Plot(String),
}

impl RunFolder {
    /// Creates `base/name` (and parents) if needed.
    pub fn create(base: &Path, name: &str) -> Result<Self, ReportError> {
        let path = base.join(name);
        fs::create_dir_all(&path).map_err(|source| ReportError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(Self { path })
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `metrics.csv` (one row per round, header first).
    pub fn write_metrics(&self, records: &[RoundRecord]) -> Result<PathBuf, ReportError> {
        let path = self.path.join("metrics.csv");
        let mut w = csv::Writer::from_path(&path)?;
        for r in records {
            w.serialize(r)?;
        }
        w.flush().map_err(|source| ReportError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(path)
    }

    /// Draws accuracy and loss per round side by side into `metrics.svg`.
    pub fn write_plot(&self, title: &str, records: &[RoundRecord]) -> Result<PathBuf, ReportError> {
        let path = self.path.join("metrics.svg");
        draw(&path, title, records).map_err(|e| ReportError::Plot(e.to_string()))?;
        Ok(path)
    }

    /// Writes `text` to `summary.txt`.
    pub fn write_summary(&self, text: &str) -> Result<PathBuf, ReportError> {
        let path = self.path.join("summary.txt");
        File::create(&path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(|source| ReportError::Io {
                path: path.clone(),
                source,
            })?;
        Ok(path)
    }
}

fn draw(
    path: &Path,
    title: &str,
    records: &[RoundRecord],
) -> Result<(), Box<dyn std::error::Error>> {
    let private = records.iter().any(|r| r.epsilon.is_finite());
    let width = if private { 1500 } else { 1000 };
    let root = SVGBackend::new(path, (width, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 20))?;
    let (left, rest) = root.split_horizontally(500);
    let (right, third) = rest.split_horizontally(500);
    let last = records.iter().map(|r| r.round).max().unwrap_or(1).max(1);

    let acc: Vec<(u64, f64)> = records.iter().map(|r| (r.round, r.accuracy)).collect();
    let mut chart = ChartBuilder::on(&left)
        .caption("held-out accuracy", ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(32)
        .y_label_area_size(48)
        .build_cartesian_2d(0u64..last, 0f64..1f64)?;
    chart
        .configure_mesh()
        .x_desc("round")
        .y_desc("accuracy")
        .draw()?;
    chart.draw_series(LineSeries::new(acc.iter().copied(), BLUE.stroke_width(2)))?;
    chart.draw_series(
        acc.iter()
            .map(|&(x, y)| Circle::new((x, y), 3, BLUE.filled())),
    )?;

    let max_loss = records
        .iter()
        .flat_map(|r| [r.loss, r.train_loss])
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max)
        .max(1e-3)
        * 1.05;
    let mut chart = ChartBuilder::on(&right)
        .caption("loss", ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(32)
        .y_label_area_size(48)
        .build_cartesian_2d(0u64..last, 0f64..max_loss)?;
    chart
        .configure_mesh()
        .x_desc("round")
        .y_desc("cross-entropy")
        .draw()?;
    chart
        .draw_series(LineSeries::new(
            records.iter().map(|r| (r.round, r.loss)),
            RED.stroke_width(2),
        ))?
        .label("held-out")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], RED.stroke_width(2)));
    chart
        .draw_series(LineSeries::new(
            records.iter().map(|r| (r.round, r.train_loss)),
            GREEN.stroke_width(2),
        ))?
        .label("clients' training")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], GREEN.stroke_width(2)));
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()?;

    if private {
        let eps: Vec<(u64, f64)> = records
            .iter()
            .filter(|r| r.epsilon.is_finite())
            .map(|r| (r.round, r.epsilon))
            .collect();
        let max_eps = eps.iter().map(|e| e.1).fold(0.0f64, f64::max).max(1e-3) * 1.05;
        let mut chart = ChartBuilder::on(&third)
            .caption("privacy spent", ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(32)
            .y_label_area_size(48)
            .build_cartesian_2d(0u64..last, 0f64..max_eps)?;
        chart
            .configure_mesh()
            .x_desc("round")
            .y_desc("epsilon")
            .draw()?;
        chart.draw_series(LineSeries::new(
            eps.iter().copied(),
            MAGENTA.stroke_width(2),
        ))?;
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(round: u64) -> RoundRecord {
        RoundRecord {
            round,
            accuracy: 0.5 + round as f64 * 0.1,
            loss: 1.0 / round as f64,
            train_loss: 0.8 / round as f64,
            participants: 20,
            dropped: 0,
            round_seconds: 0.1,
            train_seconds: 0.09,
            aggregate_seconds: 0.001,
            eval_seconds: 0.005,
            epsilon: round as f64 * 0.5,
        }
    }

    #[test]
    fn writes_csv_plot_and_summary() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunFolder::create(dir.path(), "run").unwrap();
        let records: Vec<_> = (1..=3).map(record).collect();
        let csv_path = run.write_metrics(&records).unwrap();
        let csv = fs::read_to_string(csv_path).unwrap();
        let mut lines = csv.lines();
        assert_eq!(
            lines.next().unwrap(),
            "round,accuracy,loss,train_loss,participants,dropped,round_seconds,train_seconds,aggregate_seconds,eval_seconds,epsilon"
        );
        assert_eq!(lines.count(), 3);
        let svg = fs::read_to_string(run.write_plot("test", &records).unwrap()).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("held-out accuracy"));
        assert!(svg.contains("privacy spent"));
        run.write_summary("done\n").unwrap();
    }

    #[test]
    fn an_unwritable_folder_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        fs::write(&file, b"x").unwrap();
        assert!(matches!(
            RunFolder::create(&file, "run"),
            Err(ReportError::Io { .. })
        ));
    }
}
