//! # fl-aggregator
//!
//! What a daofl coordinator runs:
//!
//! - the round [`engine`], a state machine without IO;
//! - the deterministic simulation harness [`sim`] that drives the engine and real client
//!   sessions on simulated time, and the [`inprocess`] federation built on it for researchers;
//! - the gRPC [`service`] (member authentication, limits, streamed and verified updates) around
//!   the same engine, [`checkpoint`]s in an object store, [`tls`] material, Prometheus
//!   [`metrics`], chain [`anchoring`] of every checkpoint and its verification, who may join
//!   ([`membership`]: the file's list or the DAO's staking contract), and
//!   [`server::serve`], a whole aggregator from a federation file (what the
//!   `fl-aggregator` binary runs);
//! - quality assurance: the [`attack`] suite for simulations and the re-checkable, sealed
//!   evidence of flagged updates ([`qa`], `fl-aggregator qa verify`);
//! - settlement: an epoch's rewards computed from its checkpoint manifests alone ([`settle`],
//!   `fl-aggregator settle rewards` and `settle verify`), and the QA validator role that
//!   recomputes, signs, publishes and posts them with the slashing verdicts ([`validator`],
//!   `fl-aggregator validate`).
//!
//! The example runs a federation in process; `fl-aggregator/tests/e2e.rs` runs one across
//! processes.
//!
//! ```
//! use std::sync::Arc;
//! use fl_aggregator::{Engine, EngineConfig, InProcessFederation};
//! use fl_core::{FedAvg, StrategyConfig, ParamVec, Schema, TensorSpec};
//! # use fl_core::{EvaluateConfig, EvaluateResult, FitConfig, FitOutcome, Trainer, TrainerError};
//! # /// Estimates the mean of its local samples: FedAvg of the estimates is the global mean.
//! # struct MeanEstimator { schema: Arc<Schema>, estimate: f32, samples: Vec<f32> }
//! # impl Trainer for MeanEstimator {
//! #     fn get_parameters(&self) -> ParamVec { ParamVec::new(self.schema.clone(), vec![self.estimate]).unwrap() }
//! #     fn set_parameters(&mut self, p: &ParamVec) -> Result<(), TrainerError> { self.estimate = p.values()[0]; Ok(()) }
//! #     fn fit(&mut self, _: &FitConfig) -> Result<FitOutcome, TrainerError> {
//! #         self.estimate = self.samples.iter().sum::<f32>() / self.samples.len() as f32;
//! #         Ok(FitOutcome { num_examples: self.samples.len() as u64, metrics: Default::default() })
//! #     }
//! #     fn evaluate(&mut self, _: &EvaluateConfig) -> Result<EvaluateResult, TrainerError> { Ok(EvaluateResult::default()) }
//! # }
//!
//! let schema = Arc::new(Schema::new(vec![TensorSpec::new("mean", [1])])?);
//! let trainers = vec![
//!     MeanEstimator { schema: schema.clone(), estimate: 0.0, samples: vec![1.0, 2.0, 3.0] },
//!     MeanEstimator { schema: schema.clone(), estimate: 0.0, samples: vec![10.0] },
//! ];
//! let config = EngineConfig { num_rounds: 3, min_available_clients: 2, ..Default::default() };
//! let engine = Engine::new(config, Box::new(FedAvg::new(StrategyConfig::default())), ParamVec::zeros(schema));
//! let outcome = InProcessFederation::new(engine, trainers, 0).run(|_event, _stats| {});
//! assert_eq!(outcome.params.values(), &[4.0]); // (1 + 2 + 3 + 10) / 4
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod anchoring;
pub mod attack;
pub mod checkpoint;
pub mod engine;
pub mod fedbuff;
pub mod file_engine;
pub mod inprocess;
pub mod membership;
pub mod metrics;
pub mod model_file;
pub mod qa;
pub mod server;
pub mod service;
pub mod settle;
pub mod sim;
pub mod tls;
pub mod validator;

pub use engine::{
    AbortReason, DropReason, Engine, EngineConfig, EngineError, EngineEvent, HeCommittee,
    ParamsRefused, SecureSetup,
};
pub use inprocess::{FederationOutcome, InProcessFederation};
pub use sim::{Sim, SimConfig, SimStats, run_parallel};
