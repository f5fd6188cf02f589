//! # fl-core
//!
//! The vocabulary and the math of daofl, shared by the client, the aggregator and every later
//! layer (privacy, secure aggregation, anchoring):
//!
//! - [`ParamVec`] and its [`Schema`]: model parameters as a flat `f32` vector plus the ordered
//!   (name, shape) list identified by a SHA-256 schema hash; never a framework's record type.
//! - [`ContentHash`]: SHA-256 over canonical bytes, printed as an IPFS-compatible CIDv1 (`raw`).
//! - [`ClientId`], [`RoundConfig`], [`FitConfig`], [`FitResult`], [`EvaluateResult`]: what a
//!   round asks and what clients answer.
//! - [`Strategy`]: rules ([`FedAvg`] over a streaming, order-independent fixed-point
//!   [`WeightedSum`], [`CoordinateMedian`] and the robust rules of [`strategy`] (Krum, trimmed
//!   mean, Bulyan, geometric median, centered clipping, norm bounding, with bucketing and NNM)
//!   and [`FedNova`] over each member's update), server optimisers
//!   ([`FedAvgM`], [`FedAdam`], [`FedYogi`], [`FedAdagrad`]) and [`StrategyConfig`], the
//!   `[strategy]` section and its builder.
//! - [`Trainer`]: the model-agnostic local training interface (burn implementations live in
//!   `fl-client`).
//! - [`protocol`] messages and the [`ClientSession`] state machine: the client side of a round,
//!   without IO, driven alike by the in-process simulation and by network transports.
//!
//! - [`wire`]: the protobuf messages (`proto/daofl.proto`, compiled with prost through protox,
//!   so no system `protoc` is needed) and the chunked, hash-checked transfer of parameters.
//! - [`identity`]: members as secp256k1 keys (Ethereum addresses), signed joins and updates.
//! - [`config`]: the federation file both binaries read.
//! - [`secure`]: secure aggregation in the round (SecAgg+ from the `secure-agg` crate): what a
//!   member masks and how the aggregator decodes the sum.
//! - [`dp`]: client-level differential privacy in the round ([`dp::DifferentialPrivacy`] around any sum-based strategy, the client's
//!   private update), on top of the `privacy` crate.
//!
//! It does no IO, starts no threads and reads no clock.
//!
//! ```
//! use std::sync::Arc;
//! use fl_core::{FedAvg, Metrics, ParamVec, RoundUpdates, Schema, Strategy, StrategyConfig};
//! use fl_core::{TensorSpec, UpdateSum, WeightedSum};
//!
//! let schema = Arc::new(Schema::new(vec![TensorSpec::new("fc.weight", [2, 2])])?);
//! let a = ParamVec::new(schema.clone(), vec![1.0, 1.0, 1.0, 1.0])?;
//! let b = ParamVec::new(schema.clone(), vec![3.0, 3.0, 3.0, 3.0])?;
//!
//! // Two clients with 10 and 30 examples: FedAvg weights by examples.
//! let mut sum = WeightedSum::new(schema.clone());
//! sum.add(&a, 10, &Metrics::new())?;
//! sum.add(&b, 30, &Metrics::new())?;
//! let mut fedavg = FedAvg::new(StrategyConfig::default());
//! let next = fedavg.aggregate_fit(1, &a, RoundUpdates::Sum(UpdateSum::of_models(sum)))?;
//! assert_eq!(next.values(), &[2.5; 4]);
//! println!("new model {}", next.content_hash()); // bafkrei...
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod aggregate;
pub mod attack;
pub mod config;
pub mod dp;
pub mod hash;
pub mod identity;
pub mod inference;
pub mod params;
pub mod protocol;
pub mod round;
pub mod scaffold;
pub mod seal;
pub mod secure;
pub mod session;
pub mod strategy;
pub mod trainer;
pub mod validator;
pub mod wire;

pub use aggregate::{AggregateError, Contribution, WeightedSum};
pub use hash::{CidError, ContentHash, ContentHasher};
pub use identity::{
    Address, AllowList, IdentityError, JoinChallenge, MemberKey, MemberSignature, SignedUpdate,
    UpdateKind, UpdateStatement,
};
pub use params::{ParamError, ParamVec, Schema, SchemaDifference, SchemaHash, TensorSpec};
pub use protocol::{ClientMessage, ServerMessage};
pub use round::{
    ClientId, EvaluateConfig, EvaluateResult, FitConfig, FitOutcome, FitResult, Metrics,
    RoundConfig, Stage, UploadProtocol, UploadSpec,
};
pub use session::{ClientSession, EvaluateTask, FitTask, SessionError, SessionEvent};
pub use strategy::{
    AggregationRule, CoordinateMedian, EvaluatePlan, FedAdagrad, FedAdam, FedAvg, FedAvgM, FedNova,
    FedYogi, FitPlan, MemberUpdate, Refusal, ResumeState, RoundUpdates, ServerOptimizer, Strategy,
    StrategyConfig, StrategyError, UpdateForm, UpdateSum, derive_seed, select_clients,
    weighted_evaluation,
};
pub use trainer::{Trainer, TrainerError};
pub use validator::Validator;
