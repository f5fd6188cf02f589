//! # benches
//!
//! daofl's benchmarks. Criterion benches of pure functions live in `benches/` (run with
//! `cargo bench -p benches`); programs that compare whole runs print a table
//! (`cargo run --release -p benches --bin overhead`). Results, with the commands and machines
//! that produced them, are recorded in `benches/RESULTS.md`.
//!
//! This library holds the baselines those programs compare against, such as
//! [`bare_loop`]: the quickstart's exact computation written as a plain loop with no engine,
//! no sessions and no transport.

pub mod bare_loop;
