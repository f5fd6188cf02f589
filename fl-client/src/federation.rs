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
//! partition = "dirichlet"   # or "iid", "shards", "classes"
//! alpha = 0.5               # Dirichlet concentration
//! # classes_per_member = 2  # with partition = "classes": each member holds exactly 2 labels
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
    /// Exactly `classes_per_member` labels per member ([`partition::classes_per_client`]).
    Classes,
}

/// Labels per member of [`PartitionKind::Classes`] when `classes_per_member` is not given.
pub const DEFAULT_CLASSES_PER_MEMBER: usize = 2;

/// How a simulation splits the training data across members: the kind and its parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PartitionSpec {
    /// The kind of split.
    pub kind: PartitionKind,
    /// Dirichlet concentration (for [`PartitionKind::Dirichlet`]).
    pub alpha: f64,
    /// Labels per member (for [`PartitionKind::Classes`]).
    pub classes_per_member: usize,
}

impl PartitionSpec {
    /// Splits `data` among `members` with `seed`, as [`partition`] describes for each kind.
    pub fn split(
        &self,
        data: &Dataset,
        members: usize,
        seed: u64,
    ) -> Result<partition::Partition, partition::PartitionError> {
        let (labels, classes) = (data.labels(), data.num_classes());
        match self.kind {
            PartitionKind::Iid => partition::iid(data.len(), members, seed),
            PartitionKind::Dirichlet => {
                partition::dirichlet(labels, classes, members, self.alpha, seed)
            }
            PartitionKind::Shards => partition::shards(labels, members, 2, seed),
            PartitionKind::Classes => partition::classes_per_client(
                labels,
                classes,
                members,
                self.classes_per_member,
                seed,
            ),
        }
    }
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
        /// Labels per member (for `partition = "classes"`; 2 if absent).
        #[serde(default)]
        classes_per_member: Option<usize>,
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
/// member order) and the held-out set. [`PartitionKind::Classes`] deals
/// [`DEFAULT_CLASSES_PER_MEMBER`] labels to each member; [`digits_split_by`] takes any number.
pub fn digits_split(
    members: usize,
    partition_kind: PartitionKind,
    alpha: f64,
    test_fraction: f64,
    seed: u64,
) -> Result<(Vec<Dataset>, Dataset), Error> {
    let spec = PartitionSpec {
        kind: partition_kind,
        alpha,
        classes_per_member: DEFAULT_CLASSES_PER_MEMBER,
    };
    digits_split_by(members, &spec, test_fraction, seed)
}

/// [`digits_split`] with every setting of the split in `partition`.
pub fn digits_split_by(
    members: usize,
    partition: &PartitionSpec,
    test_fraction: f64,
    seed: u64,
) -> Result<(Vec<Dataset>, Dataset), Error> {
    let all = digits::embedded();
    let (train, test) = all.train_test_split(test_fraction, derive_seed(seed, "split", 0))?;
    let parts = partition.split(&train, members, derive_seed(seed, "partition", 0))?;
    Ok((train.split_by(&parts)?, test))
}

/// The split `[data]` asks for with `dataset = "digits"`; refuses `classes_per_member` with
/// another partition than `"classes"`.
fn digits_partition(
    kind: PartitionKind,
    alpha: f64,
    classes_per_member: Option<usize>,
) -> Result<PartitionSpec, Error> {
    if classes_per_member.is_some() && kind != PartitionKind::Classes {
        return Err(Error::Config(format!(
            "[data]: classes_per_member applies to partition = \"classes\", not {kind:?}; \
             remove it or set partition = \"classes\""
        )));
    }
    Ok(PartitionSpec {
        kind,
        alpha,
        classes_per_member: classes_per_member.unwrap_or(DEFAULT_CLASSES_PER_MEMBER),
    })
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
            classes_per_member,
            test_fraction,
        } => {
            let spec = digits_partition(partition, alpha, classes_per_member)?;
            let (mut parts, test) =
                digits_split_by(members, &spec, test_fraction, config.federation.seed)?;
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

/// The device `[client] device` names (the CPU when it is absent).
#[cfg(feature = "burn")]
pub fn device_spec(config: &FederationConfig) -> Result<DeviceSpec, Error> {
    match &config.client.device {
        None => Ok(DeviceSpec::Cpu),
        Some(text) => text
            .parse()
            .map_err(|e| Error::Config(format!("[client] device: {e}"))),
    }
}

/// The trainer of member `index` (its position in `members.allowed`), over its data
/// ([`member_data`]) with the federation's `[model]`, on `[client] device`
/// ([`device_spec`]).
#[cfg(feature = "burn")]
pub fn member_trainer(config: &FederationConfig, index: usize) -> Result<BurnTrainer, Error> {
    let (train, test) = member_data(config, index)?;
    let model = model_spec(config)?;
    Ok(BurnTrainer::new(
        &model,
        device_spec(config)?,
        train,
        test,
        init_seed(config),
    )?)
}

/// A trainer that only evaluates, on the held-out digits (or the IDX test files); its
/// parameters are the seeded initial model. It runs on the CPU whatever `[client] device`
/// says: the aggregator builds one for the initial parameters.
#[cfg(feature = "burn")]
pub fn evaluator(config: &FederationConfig) -> Result<BurnTrainer, Error> {
    let test = match data_spec(config)? {
        DataSpec::Digits {
            partition,
            alpha,
            classes_per_member,
            test_fraction,
        } => {
            let spec = digits_partition(partition, alpha, classes_per_member)?;
            digits_split_by(
                config.members.allowed.len(),
                &spec,
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
    fn classes_per_member_is_read_from_the_data_section() {
        let mut config = example();
        let set = |config: &mut FederationConfig, key: &str, value: toml::Value| {
            config.data.insert(key.into(), value);
        };
        set(
            &mut config,
            "partition",
            toml::Value::String("classes".into()),
        );
        // The shipped file has 4 members: with 3 labels each they hold all 10.
        set(&mut config, "classes_per_member", toml::Value::Integer(3));
        let DataSpec::Digits {
            partition: PartitionKind::Classes,
            classes_per_member: Some(3),
            test_fraction,
            ..
        } = data_spec(&config).unwrap()
        else {
            panic!("a digits section with 3 classes per member");
        };
        let members = config.members.allowed.len();
        let mut total = 0;
        for i in 0..members {
            let (train, test) = member_data(&config, i).unwrap();
            let mut labels = train.labels().to_vec();
            total += labels.len();
            labels.sort_unstable();
            labels.dedup();
            assert_eq!(labels.len(), 3, "member {i}: {labels:?}");
            assert!(test.is_some());
        }
        let (all, _) = digits_split_by(
            members,
            &PartitionSpec {
                kind: PartitionKind::Iid,
                alpha: 0.5,
                classes_per_member: 1,
            },
            test_fraction,
            config.federation.seed,
        )
        .unwrap();
        assert_eq!(
            total,
            all.iter().map(Dataset::len).sum::<usize>(),
            "every example once"
        );
        // Without the key, 2 labels each; 4 members x 2 cannot hold 10 labels.
        config.data.remove("classes_per_member");
        let e = member_data(&config, 0).unwrap_err();
        assert!(
            matches!(
                e,
                Error::Partition(partition::PartitionError::UncoveredClasses {
                    classes: 10,
                    clients: 4,
                    per_client: 2
                })
            ),
            "{e}"
        );
        set(&mut config, "classes_per_member", toml::Value::Integer(0));
        let e = member_data(&config, 0).unwrap_err().to_string();
        assert!(e.contains("classes_per_member = 0"), "{e}");
        set(&mut config, "classes_per_member", toml::Value::Integer(-1));
        assert!(data_spec(&config).is_err(), "not a count");
        set(&mut config, "classes_per_member", toml::Value::Integer(2));
        set(
            &mut config,
            "partition",
            toml::Value::String("dirichlet".into()),
        );
        let e = member_data(&config, 0).unwrap_err().to_string();
        assert!(e.contains("classes_per_member applies to"), "{e}");
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

    #[test]
    fn client_device_is_parsed_and_checked() {
        let mut config = example();
        assert_eq!(device_spec(&config).unwrap(), DeviceSpec::Cpu);
        config.client.device = Some("wgpu:1".into());
        assert_eq!(
            device_spec(&config).unwrap(),
            DeviceSpec::Wgpu { adapter: Some(1) }
        );
        config.client.device = Some("gpu".into());
        let e = member_trainer(&config, 0).unwrap_err().to_string();
        assert!(
            e.contains("[client] device") && e.contains("\"gpu\""),
            "{e}"
        );
        // The aggregator's evaluator stays on the CPU whatever the members use.
        assert!(evaluator(&config).is_ok());
        #[cfg(not(feature = "cuda"))]
        {
            config.client.device = Some("cuda".into());
            let e = member_trainer(&config, 0).unwrap_err().to_string();
            assert!(e.contains("--features cuda"), "{e}");
        }
    }
}
