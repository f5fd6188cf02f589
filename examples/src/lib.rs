//! # examples
//!
//! Runnable daofl programs for researchers and DAOs, and the code they share:
//!
//! - `quickstart` (`cargo run --release --example quickstart`): 20 members, Dirichlet α = 0.5
//!   over the UCI digits, an MLP, FedAvg, 30 rounds, reaching ≥ 95% held-out accuracy.
//! - `quickstart -- examples/quickstart-dao.toml`: the same under a DAO on the embedded EVM
//!   (members stake, the final checkpoint is promoted by vote and timelock); [`dao`].
//! - [`digits`]: that federation as a library call, with its knobs in [`digits::DigitsConfig`].
//! - `proposals` (`cargo run --release --example proposals`): 13 governance communities train
//!   the DAO's proposal model (outcome and kind of a proposal) with FedAvg; compared with the
//!   same model trained centrally and each community alone, then publishes the federated model
//!   with its model card, anchored. [`proposals`] is its library side, [`publish`] the
//!   publishing.
//! - [`report`]: run folders with `metrics.csv`, an SVG plot of accuracy and loss, a summary.
//! - [`progress`]: a progress bar over rounds with one line per round.
//! - [`robust`]: the digits federation under attack, for each robust rule (the robustness
//!   benchmark).
//! - `contribution` (`cargo run --release -p examples --example contribution`): every member's
//!   leave-one-out and GTG-Shapley score per round on the held-out digits, with label flippers
//!   and free riders; [`contribution`] is its library side.
//!
//! ```no_run
//! use examples::digits::{self, DigitsConfig};
//!
//! let config = DigitsConfig { rounds: 5, ..DigitsConfig::default() };
//! let prepared = digits::prepare(&config)?;
//! let result = digits::run_federated(&config, prepared, |r| println!("round {} acc {:.3}", r.round, r.accuracy))?;
//! println!("final model {}", result.final_hash);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod contribution;
pub mod dao;
pub mod digits;
pub mod progress;
pub mod proposals;
pub mod publish;
pub mod report;
pub mod robust;

/// The README's code blocks, compiled and run as doctests so they cannot rot.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
