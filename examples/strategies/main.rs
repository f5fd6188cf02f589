//! Strategies side by side: every strategy of a TOML file on every partition it lists, over
//! several seeds, on the digits federation (20 members by default). Writes
//! `runs/<name>/metrics.csv` (strategy, partition, seed, round, accuracy), one plot per partition
//! (`accuracy-<partition>.svg`, the mean over the seeds per strategy) and `summary.md`: final
//! accuracy (mean, min-max) and the first round the mean reaches `target_accuracy`.
//!
//! `cargo run --release --example strategies -- examples/strategies.toml`
//!
//! The file has a `[base]` table of [`DigitsConfig`] fields, `seeds`, `target_accuracy`, and
//! `[[strategy]]` and `[[partition]]` tables, each with a `label` and the `DigitsConfig` fields
//! it changes (a strategy's fields win over a partition's, which win over `[base]`).
//!
//! Every round also goes to `daofl.csv` (framework, strategy, partition, seed, round,
//! accuracy, round seconds without the evaluation, training seconds). With `export = true`
//! and an IDX image source (`[base.images] dataset = "idx"`, e.g. Fashion-MNIST) and the CNN,
//! each partition and seed is exported to `export/<partition>-<seed>.json` (the members'
//! indices into the IDX files, the test indices, the schedule, the CNN's width and the tensor
//! layout) with the initial parameters in `export/initial-<seed>.f32` (little-endian), so that
//! `benches/flower/strategies.sh` runs the same federation in Flower and PyTorch.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use examples::digits::{self, DigitsConfig, ImageSource};
use fl_client::ModelSpec;
use plotters::prelude::*;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strategies failed: {e}");
            ExitCode::FAILURE
        }
    }
}

type Error = Box<dyn std::error::Error>;

/// `base` with `over`'s keys replacing its own (tables merged key by key).
fn merge(base: &mut toml::Table, over: &toml::Table) {
    for (k, v) in over {
        match (base.get_mut(k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

/// The entries of an array of tables, each with its `label` taken out.
fn labelled(file: &toml::Table, key: &str) -> Result<Vec<(String, toml::Table)>, Error> {
    let list = file
        .get(key)
        .and_then(toml::Value::as_array)
        .ok_or_else(|| format!("no [[{key}]] tables"))?;
    list.iter()
        .map(|v| {
            let mut t = v
                .as_table()
                .cloned()
                .ok_or_else(|| format!("[[{key}]] entries must be tables"))?;
            let label = t
                .remove("label")
                .and_then(|l| l.as_str().map(str::to_owned))
                .ok_or_else(|| format!("every [[{key}]] needs a label"))?;
            Ok((label, t))
        })
        .collect()
}

fn run() -> Result<(), Error> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "examples/strategies.toml".into());
    let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let file: toml::Table = toml::from_str(&text).map_err(|e| format!("{path}: {e}"))?;
    let base = file
        .get("base")
        .and_then(toml::Value::as_table)
        .cloned()
        .unwrap_or_default();
    let seeds: Vec<u64> = match file.get("seeds") {
        Some(v) => v.clone().try_into().map_err(|e| format!("seeds: {e}"))?,
        None => vec![2026, 2027, 2028],
    };
    let target = file
        .get("target_accuracy")
        .and_then(toml::Value::as_float)
        .unwrap_or(0.8);
    let export = file
        .get("export")
        .and_then(toml::Value::as_bool)
        .unwrap_or(false);
    let strategies = labelled(&file, "strategy")?;
    let partitions = labelled(&file, "partition")?;
    let name = std::path::Path::new(&path)
        .file_stem()
        .map_or("strategies".into(), |s| s.to_string_lossy().into_owned());
    let dir = PathBuf::from("runs").join(&name);
    std::fs::create_dir_all(&dir)?;
    let mut csv = csv::Writer::from_path(dir.join("metrics.csv"))?;
    csv.write_record(["strategy", "partition", "seed", "round", "accuracy"])?;
    let mut timed = csv::Writer::from_path(dir.join("daofl.csv"))?;
    timed.write_record([
        "framework",
        "strategy",
        "partition",
        "seed",
        "round",
        "accuracy",
        "round_seconds",
        "fit_seconds",
    ])?;
    let mut summary = format!(
        "{} members, seeds {seeds:?}; final held-out accuracy, mean (min-max), and the first round \
         the mean reaches {:.0}%\n\n| strategy | {} |\n|---|{}\n",
        base.get("clients")
            .and_then(toml::Value::as_integer)
            .unwrap_or(20),
        100.0 * target,
        partitions
            .iter()
            .map(|(l, _)| l.as_str())
            .collect::<Vec<_>>()
            .join(" | "),
        "---|".repeat(partitions.len())
    );
    // partition -> strategy -> per-round mean accuracy
    let mut curves: BTreeMap<String, Vec<(String, Vec<f64>)>> = BTreeMap::new();
    let mut rows: Vec<Vec<String>> = vec![Vec::new(); strategies.len()];
    for (p_label, p_table) in &partitions {
        for (si, (s_label, s_table)) in strategies.iter().enumerate() {
            let mut finals = Vec::new();
            let mut per_round: Vec<Vec<f64>> = Vec::new();
            for &seed in &seeds {
                let mut t = base.clone();
                merge(&mut t, p_table);
                merge(&mut t, s_table);
                t.insert("seed".into(), toml::Value::Integer(seed as i64));
                let config: DigitsConfig = toml::Value::Table(t)
                    .try_into()
                    .map_err(|e| format!("{s_label} on {p_label}: {e}"))?;
                if export && si == 0 {
                    export_run(&dir.join("export"), p_label, &config)?;
                }
                let prepared = digits::prepare(&config)?;
                let result = digits::run_federated(&config, prepared, |_| {})?;
                for r in &result.records {
                    csv.write_record([
                        s_label.clone(),
                        p_label.clone(),
                        seed.to_string(),
                        r.round.to_string(),
                        format!("{:.6}", r.accuracy),
                    ])?;
                    timed.write_record([
                        "daofl".to_string(),
                        s_label.clone(),
                        p_label.clone(),
                        seed.to_string(),
                        r.round.to_string(),
                        format!("{:.6}", r.accuracy),
                        format!("{:.6}", r.round_seconds - r.eval_seconds),
                        format!("{:.6}", r.train_seconds),
                    ])?;
                    let i = r.round as usize - 1;
                    if per_round.len() <= i {
                        per_round.resize(i + 1, Vec::new());
                    }
                    per_round[i].push(r.accuracy);
                }
                finals.push(result.final_accuracy);
                eprintln!(
                    "{s_label} on {p_label}, seed {seed}: {:.1}%",
                    100.0 * result.final_accuracy
                );
            }
            let mean_curve: Vec<f64> = per_round
                .iter()
                .map(|v| v.iter().sum::<f64>() / v.len().max(1) as f64)
                .collect();
            let reached = mean_curve
                .iter()
                .position(|a| *a >= target)
                .map_or("-".to_string(), |i| (i + 1).to_string());
            let mean = finals.iter().sum::<f64>() / finals.len().max(1) as f64;
            let lo = finals.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = finals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            rows[si].push(format!(
                "{:.1} ({:.1}-{:.1}), r{reached}",
                100.0 * mean,
                100.0 * lo,
                100.0 * hi
            ));
            curves
                .entry(p_label.clone())
                .or_default()
                .push((s_label.clone(), mean_curve));
        }
    }
    csv.flush()?;
    timed.flush()?;
    for ((label, _), cells) in strategies.iter().zip(&rows) {
        summary.push_str(&format!("| {label} | {} |\n", cells.join(" | ")));
    }
    for (p_label, lines) in &curves {
        plot(
            &dir.join(format!("accuracy-{}.svg", slug(p_label))),
            p_label,
            lines,
        )?;
    }
    std::fs::write(dir.join("summary.md"), &summary)?;
    print!("{summary}");
    println!("outputs in {}", dir.display());
    Ok(())
}

/// A label as a file name: every character but ASCII letters and digits becomes `-`.
fn slug(label: &str) -> String {
    label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

/// Writes what another framework needs to run the same federation: the members' and the test
/// set's indices into the IDX files, the schedule, the CNN's width, the tensor layout and the
/// initial parameters (see the crate docs).
fn export_run(dir: &std::path::Path, partition: &str, config: &DigitsConfig) -> Result<(), Error> {
    let ImageSource::Idx { dir: idx_dir, .. } = &config.images else {
        return Err("export = true needs [base.images] dataset = \"idx\"".into());
    };
    let ModelSpec::Cnn { channels } = config.model else {
        return Err("export = true needs model = { kind = \"cnn\" }".into());
    };
    std::fs::create_dir_all(dir)?;
    let split = config.split()?;
    let prepared = digits::prepare(config)?;
    let initial = format!("initial-{}.f32", config.seed);
    std::fs::write(dir.join(&initial), prepared.initial.to_le_bytes())?;
    let layout: Vec<(String, Vec<usize>)> = prepared
        .initial
        .schema()
        .tensors()
        .iter()
        .map(|t| (t.name.clone(), t.shape.clone()))
        .collect();
    let idx_dir = std::fs::canonicalize(idx_dir).unwrap_or_else(|_| idx_dir.clone());
    let json = serde_json::json!({
        "partition": partition,
        "seed": config.seed,
        "idx_dir": idx_dir,
        "members": split.member_indices,
        "test": split.test_indices,
        "channels": channels,
        "rounds": config.rounds,
        "local_epochs": config.fit.local_epochs,
        "batch_size": config.fit.batch_size,
        "learning_rate": config.fit.learning_rate,
        "initial": initial,
        "layout": layout,
    });
    std::fs::write(
        dir.join(format!("{}-{}.json", slug(partition), config.seed)),
        serde_json::to_vec_pretty(&json)?,
    )?;
    Ok(())
}

/// One line per strategy: mean held-out accuracy per round.
fn plot(path: &std::path::Path, title: &str, lines: &[(String, Vec<f64>)]) -> Result<(), Error> {
    let rounds = lines.iter().map(|(_, c)| c.len()).max().unwrap_or(1);
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("held-out accuracy, {title}"), ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(40)
        .build_cartesian_2d(1..rounds.max(2), 0.0..1.0)?;
    chart
        .configure_mesh()
        .x_desc("round")
        .y_desc("accuracy")
        .draw()?;
    for (i, (label, curve)) in lines.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                curve.iter().enumerate().map(|(r, a)| (r + 1, *a)),
                color,
            ))?
            .label(label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()?;
    root.present()?;
    Ok(())
}
