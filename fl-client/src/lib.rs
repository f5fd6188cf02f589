//! # fl-client
//!
//! What a daofl member embeds to take part in a federation: the local side of training.
//!
//! - [`BurnTrainer`]: a [`Trainer`] over a small burn model (an MLP or a CNN, chosen by a
//!   serde [`ModelSpec`]) on the CPU. Parameters cross the boundary as a flat [`ParamVec`] with
//!   a schema of tensor names and shapes, never as burn records. Initialisation and training
//!   are deterministic given their seeds.
//! - [`data`]: in-memory labelled [`Dataset`]s, the UCI optical digits shipped in the crate
//!   ([`data::digits::embedded`]), and an IDX reader for MNIST and Fashion-MNIST.
//! - [`partition`]: seeded IID, Dirichlet label-skew, McMahan shard and k-classes-per-member
//!   splits for simulations, and the natural split by a field (a proposal's community).
//! - [`ProposalTrainer`]: the proposal-analysis model (a fastText-style bag of embeddings with
//!   an outcome head and a kind head) over [`data::proposals`], the governance proposals
//!   shipped in the crate, with text hashed by [`text`] (no vocabulary to agree).
//! - [`model_card`]: what a published proposal model carries for inference nodes and voters
//!   (architecture, featuriser and its digest, labels, input limits, training data, test
//!   metrics), content-addressed; [`predict`]: load a checkpoint with its card, check both, and
//!   analyse proposals (`fl-client predict`).
//!
//! - [`validation`]: a trainer's held-out evaluation as the aggregator's
//!   [`Validator`](fl_core::Validator) ([`HeldOutValidator`]), which contribution scores
//!   value coalitions of updates by.
//! - [`federation`]: a federation file's `[model]` and `[data]` turned into this member's
//!   trainer, and the seeded initial model every party derives identically.
//! - [`node`]: the member's node, which joins an aggregator over gRPC (TLS, a signed join,
//!   signed updates streamed in hash-checked chunks), reconnects when the connection drops,
//!   and drives the sans-IO [`ClientSession`](fl_core::ClientSession) with a trainer. The
//!   `fl-client` binary is a thin CLI over it.
//!
//! - [`attack`]: a development attack mode (sign flip, scaling, Gaussian noise, free riding,
//!   label flipping) around any trainer, behind the binary's `--attack` flag (feature `attack`,
//!   off by default), to test a federation's defences with real member processes.
//!
//! Any other model works too: implement [`Trainer`] for it and join with [`run`], one call.
//! The in-process simulation lives in `fl-aggregator`.
//!
//! Conventions an embedder's [`Trainer`] follows: report held-out accuracy under the metric key
//! `"accuracy"` (the aggregator records and plots that key), training loss under
//! `"train_loss"`, and the number of optimiser steps a fit took under `"local_steps"`
//! ([`fl_core::round::LOCAL_STEPS_METRIC`]; FedNova normalises each member's update by it and
//! refuses a round in which a member leaves it out); `FitConfig::learning_rate` is the
//! learning rate of the trainer's own optimiser (Adam for [`BurnTrainer`]); and a positive
//! `FitConfig::proximal_mu` asks for FedProx's `μ/2·‖w - w_global‖²` in the local loss
//! (`w_global`: the parameters the fit starts from), which our trainers add for every model;
//! and in a SCAFFOLD round (`FitConfig::scaffold` present) every local gradient is shifted by
//! [`ScaffoldControls::correction`](fl_core::scaffold::ScaffoldControls::correction)
//! `= c - cᵢ` and the trainer steps with plain SGD at `learning_rate` (option II's control
//! variates assume SGD), reporting `"local_steps"` (option II divides by it). The member's
//! [`ClientSession`](fl_core::ClientSession) fills in `cᵢ` and computes what is sent back;
//! the node keeps `cᵢ` in a state file ([`scaffold_state`]).
//!
//! ## Feature flags
//!
//! - `burn` (default): our models ([`BurnTrainer`], [`ProposalTrainer`], with [`model_card`]
//!   and [`predict`]) on burn's pure-Rust `flex` CPU backend (multi-threaded with rayon,
//!   vectorised), and the federation file's
//!   `[model]` turned into one ([`federation::member_trainer`]). A member with its own
//!   [`Trainer`] depends on `fl-client` with `default-features = false` and compiles no burn.
//! - `he` (default): homomorphic federations (`protocol = "he"`): encrypted uploads and, for a
//!   decryption-committee holder, [`committee`] (the key ceremony, partial decryptions), on
//!   tfhe's `core_crypto`. Without it a member joins plain and SecAgg+ federations and is
//!   refused at once by a homomorphic one (`NodeError::Setup`).
//! - `serve` (default through `cli`, implies `burn`): the inference node ([`serve`]: a
//!   published proposal model over HTTP JSON and gRPC, every answer signed) and the consensus
//!   [`gateway`] (axum and hyper, already built for tonic).
//! - `dao`: what the DAO says about inference ([`registry`]: the promoted model, the staked
//!   nodes).
//! - `ledger` (default through `cli`, implies `serve` and `dao`): the gateway's fees and state
//!   ([`ledger`]: prepaid receipts settled in batches; request log, receipts, node scores in
//!   SQLite or PostgreSQL through `fl-db`).
//! - `contribute` (default through `cli`, implies `dao`): contributed data ([`contribute`]: the
//!   content store of signed records, batch CAR files, publishing to IPFS through the Kubo RPC
//!   API, the `fl-db` index rebuilt from chain plus content store); no burn.
//! - `cli` (default, implies `burn`, `he`, `serve`, `dao`, `ledger` and `contribute`): the
//!   `fl-client` binary (clap, a log subscriber).
//!
//! A member with its own model and `default-features = false` compiles about 210 packages
//! (no burn, tfhe, clap, nor alloy's transaction stack); the defaults about 330
//! (`examples/tests/it/layering.rs` keeps the lean build lean).
//!
//! - `wgpu` (off by default, implies `burn`): training and prediction on a GPU through burn's
//!   wgpu backend (Vulkan, Metal, DX12), `DeviceSpec::Wgpu` (`device = "wgpu"`). CI tests it on
//!   Mesa's software Vulkan driver (lavapipe).
//! - `cuda` (off by default, implies `burn`): burn's CUDA backend, `DeviceSpec::Cuda`
//!   (`device = "cuda:0"`). Its build downloads LLVM (cubecl-llvm's bundler fetches LLVM 23 from
//!   GitHub), so it builds only on a machine that can reach GitHub or holds that bundle.
//!
//! A [`DeviceSpec`] parses in every build; naming a backend the build lacks is an error that
//! names the feature, and one the machine lacks an error that names what to install.
//!
//! ## Example
//!
//! Train an MLP on 80% of the digits and evaluate it on the rest:
//!
//! ```no_run
//! use fl_client::data::digits;
//! use fl_client::{BurnTrainer, DeviceSpec, ModelSpec, Trainer};
//! use fl_core::round::{EvaluateConfig, FitConfig};
//!
//! let (train, test) = digits::embedded().train_test_split(0.2, 0)?;
//! let mut trainer =
//!     BurnTrainer::new(&ModelSpec::Mlp { hidden: 64 }, DeviceSpec::Cpu, train, Some(test), 7)?;
//! let config = FitConfig {
//!     local_epochs: 10,
//!     batch_size: 32,
//!     learning_rate: 0.005,
//!     shuffle_seed: 1,
//!     ..Default::default()
//! };
//! trainer.fit(&config)?;
//! let result = trainer.evaluate(&EvaluateConfig::default())?;
//! println!("held-out accuracy: {:.3}", result.accuracy().unwrap_or_default());
//! let params = trainer.get_parameters(); // what a client uploads
//! # let _ = params;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod attack;
#[cfg(feature = "he")]
pub mod committee;
#[cfg(feature = "contribute")]
pub mod contribute;
pub mod data;
pub mod federation;
#[cfg(feature = "serve")]
pub mod gateway;
#[cfg(feature = "ledger")]
pub mod ledger;
#[cfg(feature = "burn")]
pub mod model_card;
pub mod node;
pub mod partition;
#[cfg(feature = "burn")]
pub mod predict;
#[cfg(feature = "dao")]
pub mod registry;
pub mod scaffold_state;
#[cfg(feature = "serve")]
pub mod serve;
pub mod text;
#[cfg(feature = "burn")]
pub mod trainer;
pub mod validation;

/// What an embedder needs in one import: the [`Trainer`] interface and its types, keys, the
/// federation file and the one-call [`run`].
///
/// ```
/// use fl_client::prelude::*;
///
/// let schema = std::sync::Arc::new(Schema::new(vec![TensorSpec::new("w", [3])])?);
/// let params = ParamVec::zeros(schema);
/// assert_eq!(params.len(), 3);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub mod prelude {
    pub use crate::node::{NodeConfig, NodeError, NodeReport};
    pub use crate::run;
    pub use fl_core::config::FederationConfig;
    pub use fl_core::{
        EvaluateConfig, EvaluateResult, FitConfig, FitOutcome, MemberKey, Metrics, ParamVec,
        Schema, TensorSpec, Trainer, TrainerError,
    };
    pub use fl_node::{load_federation, read_key_file, write_key_file};
}

pub use data::{DataError, Dataset};
pub use fl_core::params::ParamVec;
pub use fl_core::trainer::{Trainer, TrainerError};
pub use fl_node::{load_federation, read_key_file, write_key_file};
pub use partition::PartitionError;
#[cfg(feature = "burn")]
pub use trainer::proposals::{ProposalModelSpec, ProposalTrainer};
#[cfg(feature = "burn")]
pub use trainer::{BurnTrainer, DeviceError, DeviceSpec, ModelError, ModelSpec};
pub use validation::{HeldOutValidator, Utility};

/// Joins the federation that `federation` describes as the member holding `key`, training
/// `trainer` (any [`Trainer`]: yours, or a [`BurnTrainer`]) until the federation finishes, over
/// gRPC with the file's TLS settings; reconnects as `[client]` says. Works alike for plain,
/// SecAgg+ and homomorphic federations (a decryption-committee holder sets its role with
/// [`node::NodeConfig::committee`] and calls [`node::run_node`]). Returns what the node did and
/// the trainer.
///
/// ```no_run
/// # async fn demo(my_trainer: impl fl_client::Trainer + 'static) -> Result<(), Box<dyn std::error::Error>> {
/// let federation = fl_client::load_federation("federation.toml".as_ref())?;
/// let key = fl_client::read_key_file("member.key".as_ref())?;
/// let (report, _trainer) = fl_client::run(&federation, key, my_trainer).await?;
/// println!("trained {} rounds", report.fits);
/// # Ok(())
/// # }
/// ```
pub async fn run<T: Trainer + 'static>(
    federation: &fl_core::config::FederationConfig,
    key: fl_core::MemberKey,
    trainer: T,
) -> Result<(node::NodeReport, T), node::NodeError> {
    let address = key.address();
    // With members from the chain the aggregator decides (by stake) at join.
    if federation.members.source == fl_core::config::MembersSource::List
        && federation.member_index(address).is_none()
    {
        return Err(node::NodeError::Setup(format!(
            "{address} is not in [members] allowed of federation `{}`; ask the federation to add it",
            federation.federation.id
        )));
    }
    let config = node::NodeConfig::from_federation(federation, None)?;
    node::run_node(config, key, trainer).await
}

/// Any error of this crate, for callers that do not need to tell the areas apart.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or building a dataset failed.
    #[error(transparent)]
    Data(#[from] DataError),
    /// The proposals corpus could not be read.
    #[error(transparent)]
    Proposals(#[from] data::proposals::ProposalsError),
    /// A partition could not be made.
    #[error(transparent)]
    Partition(#[from] PartitionError),
    /// A model could not be built.
    #[cfg(feature = "burn")]
    #[error(transparent)]
    Model(#[from] ModelError),
    /// Training or evaluation failed.
    #[error(transparent)]
    Trainer(#[from] TrainerError),
    /// The federation file's model or data section is unusable.
    #[error("{0}")]
    Config(String),
}
