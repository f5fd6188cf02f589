//! Time of one local epoch of the CNN on Fashion-MNIST, as a member trains it (burn's `flex`
//! CPU backend): the first `N` training images, batches of 32, Adam at 0.01, one warm-up epoch
//! and the median of 5. `benches/flower/strategies.sh` times the same epoch in PyTorch
//! (`--epoch-bench N`), so the two are comparable on one machine.
//!
//! `cargo run --release -p benches --bin epoch_time -- [IDX_DIR] [N] [CHANNELS]`
//! (defaults: `/usr/share/datasets/fashion-mnist`, 1000, 8).

use std::time::Instant;

use fl_client::{BurnTrainer, DeviceSpec, ModelSpec, Trainer};
use fl_core::FitConfig;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .unwrap_or_else(|| "/usr/share/datasets/fashion-mnist".into());
    let n: usize = args.next().map_or(Ok(1000), |a| a.parse())?;
    let channels: usize = args.next().map_or(Ok(8), |a| a.parse())?;
    let dir = std::path::Path::new(&dir);
    let all = fl_client::data::idx::load(
        dir.join("train-images-idx3-ubyte.gz"),
        dir.join("train-labels-idx1-ubyte.gz"),
    )?;
    let indices: Vec<usize> = (0..n.min(all.len())).collect();
    let data = all.subset(&indices)?;
    let mut trainer =
        BurnTrainer::new(&ModelSpec::Cnn { channels }, DeviceSpec::Cpu, data, None, 1)?;
    let fit = FitConfig {
        local_epochs: 1,
        batch_size: 32,
        learning_rate: 0.01,
        ..FitConfig::default()
    };
    trainer.fit(&fit)?;
    let mut times: Vec<f64> = (0..5)
        .map(|i| {
            let start = Instant::now();
            trainer.fit(&FitConfig {
                shuffle_seed: i,
                ..fit.clone()
            })?;
            Ok(start.elapsed().as_secs_f64())
        })
        .collect::<Result<_, fl_core::TrainerError>>()?;
    times.sort_by(f64::total_cmp);
    println!(
        "daofl_epoch_seconds {:.4} (burn flex, {} images, channels {channels}, median of 5: {times:?})",
        times[2],
        indices.len()
    );
    Ok(())
}
