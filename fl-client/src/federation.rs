//! A member's side of a federation file: the data section of [`FederationConfig`] turned into
//! the member's share of the data ([`member_data`], for any trainer) and, with the `burn`
//! feature, the model section into a `BurnTrainer` over it, with the seeded initial parameters
//! every party derives identically.
//!
//! `[data]` takes one of two forms:
//!
//! ```toml
//! # Simulation on the UCI digits shipped in this crate: the training side is split across the
//! # members (member i trains part i, i = its position in members.allowed).
//! dataset = "digits"
//! partition = "dirichlet"   # or "iid", "shards"
//! alpha = 0.5               # Dirichlet concentration
//! test_fraction = 0.2       # held out, for evaluating the global model
//!
//! # A member's own data, as IDX files (MNIST layout); each member points at its own files.
//! dataset = "idx"
//! train_images = "data/train-images-idx3-ubyte.gz"
//! train_labels = "data/train-labels-idx1-ubyte.gz"
//! test_images = "data/t10k-images-idx3-ubyte.gz"    # optional
//! test_labels = "data/t10k-labels-idx1-ubyte.gz"    # optional
//! ```
//!
//! Seeds derive from `federation.seed` exactly as in the in-process examples
//! (`split`, `partition`, `init`), so a federation over gRPC and one in process with the same
//! seed train the same models.

use std::path::PathBuf;

use fl_core::config::FederationConfig;
use fl_core::derive_seed;
#[cfg(feature = "burn")]
use fl_core::{ParamVec, Trainer};
use serde::Deserialize;

use crate::data::{Dataset, digits, idx};
#[cfg(feature = "burn")]
use crate::{BurnTrainer, DeviceSpec, ModelSpec};
use crate::{Error, partition};

/// How the training data is split across members in a simulation.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartitionKind {
    /// Uniformly at random.
    Iid,
    /// Dirichlet(α) label skew.
    Dirichlet,
    /// McMahan et al.'s shards: two label-sorted shards per member.
    Shards,
}

/// The `[data]` section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "dataset", rename_all = "snake_case", deny_unknown_fields)]
pub enum DataSpec {
    /// The UCI optical digits shipped in this crate, split across the members.
    Digits {
        /// How the training side is split.
        #[serde(default = "default_partition")]
        partition: PartitionKind,
        /// Dirichlet concentration (for `partition = "dirichlet"`).
        #[serde(default = "default_alpha")]
        alpha: f64,
        /// Share held out for evaluating the global model.
        #[serde(default = "default_test_fraction")]
        test_fraction: f64,
    },
    /// A member's own IDX files.
    Idx {
        /// Training images.
        train_images: PathBuf,
        /// Training labels.
        train_labels: PathBuf,
        /// Evaluation images.
        test_images: Option<PathBuf>,
        /// Evaluation labels.
        test_labels: Option<PathBuf>,
    },
}

fn default_partition() -> PartitionKind {
    PartitionKind::Dirichlet
}

fn default_alpha() -> f64 {
    0.5
}

fn default_test_fraction() -> f64 {
    0.2
}

/// The model of a federation file.
#[cfg(feature = "burn")]
pub fn model_spec(config: &FederationConfig) -> Result<ModelSpec, Error> {
    ModelSpec::deserialize(toml::Value::Table(config.model.clone()))
        .map_err(|e| Error::Config(format!("[model]: {e}")))
}

/// The data section of a federation file.
pub fn data_spec(config: &FederationConfig) -> Result<DataSpec, Error> {
    DataSpec::deserialize(toml::Value::Table(config.data.clone()))
        .map_err(|e| Error::Config(format!("[data]: {e}")))
}

/// Splits the digits as a federation of `members` does: the members' training parts (in
/// member order) and the held-out set.
pub fn digits_split(
    members: usize,
    partition_kind: PartitionKind,
    alpha: f64,
    test_fraction: f64,
    seed: u64,
) -> Result<(Vec<Dataset>, Dataset), Error> {
    let all = digits::embedded();
    let (train, test) = all.train_test_split(test_fraction, derive_seed(seed, "split", 0))?;
    let part_seed = derive_seed(seed, "partition", 0);
    let parts = match partition_kind {
        PartitionKind::Iid => partition::iid(train.len(), members, part_seed)?,
        PartitionKind::Dirichlet => partition::dirichlet(
            train.labels(),
            train.num_classes(),
            members,
            alpha,
            part_seed,
        )?,
        PartitionKind::Shards => partition::shards(train.labels(), members, 2, part_seed)?,
    };
    Ok((train.split_by(&parts)?, test))
}

/// The seed of every party's model initialisation.
pub fn init_seed(config: &FederationConfig) -> u64 {
    derive_seed(config.federation.seed, "init", 0)
}

/// Member `index`'s share of the data (its position in `members.allowed`) and the held-out
/// set it evaluates on, as `[data]` describes: for a member that trains its own model on them
/// (any [`Trainer`]), or for [`member_trainer`].
pub fn member_data(
    config: &FederationConfig,
    index: usize,
) -> Result<(Dataset, Option<Dataset>), Error> {
    let members = config.members.allowed.len();
    if index >= members {
        return Err(Error::Config(format!(
            "member {index} is not among the {members} allowed members"
        )));
    }
    match data_spec(config)? {
        DataSpec::Digits {
            partition,
            alpha,
            test_fraction,
        } => {
            let (mut parts, test) = digits_split(
                members,
                partition,
                alpha,
                test_fraction,
                config.federation.seed,
            )?;
            Ok((parts.swap_remove(index), Some(test)))
        }
        DataSpec::Idx {
            train_images,
            train_labels,
            test_images,
            test_labels,
        } => {
            let train = idx::load(&train_images, &train_labels)?;
            let test = match (test_images, test_labels) {
                (Some(i), Some(l)) => Some(idx::load(&i, &l)?),
                (None, None) => None,
                _ => {
                    return Err(Error::Config(
                        "[data]: give both test_images and test_labels, or neither".into(),
                    ));
                }
            };
            Ok((train, test))
        }
    }
}

/// The trainer of member `index` (its position in `members.allowed`), over its data
/// ([`member_data`]) with the federation's `[model]`.
#[cfg(feature = "burn")]
pub fn member_trainer(config: &FederationConfig, index: usize) -> Result<BurnTrainer, Error> {
    let (train, test) = member_data(config, index)?;
    let model = model_spec(config)?;
    Ok(BurnTrainer::new(
        &model,
        DeviceSpec::Cpu,
        train,
        test,
        init_seed(config),
    )?)
}

/// A trainer that only evaluates, on the held-out digits (or the IDX test files); its
/// parameters are the seeded initial model.
#[cfg(feature = "burn")]
pub fn evaluator(config: &FederationConfig) -> Result<BurnTrainer, Error> {
    let test = match data_spec(config)? {
        DataSpec::Digits {
            partition,
            alpha,
            test_fraction,
        } => {
            digits_split(
                config.members.allowed.len(),
                partition,
                alpha,
                test_fraction,
                config.federation.seed,
            )?
            .1
        }
        DataSpec::Idx {
            test_images: Some(images),
            test_labels: Some(labels),
            ..
        } => idx::load(&images, &labels)?,
        DataSpec::Idx { .. } => {
            return Err(Error::Config(
                "[data]: an evaluator needs test_images and test_labels".into(),
            ));
        }
    };
    let model = model_spec(config)?;
    Ok(BurnTrainer::new(
        &model,
        DeviceSpec::Cpu,
        test.clone(),
        Some(test),
        init_seed(config),
    )?)
}

/// The seeded initial global parameters of the federation's model.
#[cfg(feature = "burn")]
pub fn initial_params(config: &FederationConfig) -> Result<ParamVec, Error> {
    Ok(evaluator(config)?.get_parameters())
}

#[cfg(all(test, feature = "burn"))]
mod tests {
    use std::path::Path;

    use super::*;

    fn example() -> FederationConfig {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/federation/digits.toml");
        fl_node::load_federation(&path).expect("the shipped federation file is valid")
    }

    #[test]
    fn shipped_federation_file_builds_members() {
        let config = example();
        assert_eq!(model_spec(&config).unwrap(), ModelSpec::Mlp { hidden: 256 });
        assert!(matches!(
            data_spec(&config).unwrap(),
            DataSpec::Digits {
                partition: PartitionKind::Dirichlet,
                ..
            }
        ));
        let a = member_trainer(&config, 0).unwrap();
        let b = member_trainer(&config, 3).unwrap();
        // Same seeded initial model everywhere.
        assert_eq!(a.get_parameters(), initial_params(&config).unwrap());
        assert_eq!(b.get_parameters(), a.get_parameters());
        assert!(member_trainer(&config, 4).is_err());
    }

    #[test]
    fn bad_model_and_data_sections_are_named() {
        let mut config = example();
        config
            .model
            .insert("kind".into(), toml::Value::String("transformer".into()));
        let e = model_spec(&config).unwrap_err().to_string();
        assert!(e.contains("[model]"), "{e}");
        let mut config = example();
        config
            .data
            .insert("dataset".into(), toml::Value::String("imagenet".into()));
        let e = data_spec(&config).unwrap_err().to_string();
        assert!(e.contains("[data]"), "{e}");
        let mut config = example();
        config.data = toml::Table::new();
        config
            .data
            .insert("dataset".into(), toml::Value::String("idx".into()));
        config.data.insert(
            "train_images".into(),
            toml::Value::String("/nonexistent".into()),
        );
        config.data.insert(
            "train_labels".into(),
            toml::Value::String("/nonexistent".into()),
        );
        assert!(member_trainer(&config, 0).is_err());
    }
}
