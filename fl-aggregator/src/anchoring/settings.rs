//! `[chain]` of a federation file as the aggregator uses it: backend, run folder, queue.

use super::*;

/// `[chain]` as the aggregator reads it: the backend and the folder its relative paths (the
/// embedded state, the RPC queue, a key file) are resolved against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainSettings {
    /// The backend.
    pub chain: ChainConfig,
    /// The run folder: `run_dir` of `[chain]`, else the parent of a local checkpoint folder.
    pub run_dir: PathBuf,
}

impl ChainSettings {
    /// The embedded backend with its state in `run_dir/chain`, one round per anchor.
    pub fn embedded(run_dir: PathBuf) -> Self {
        Self {
            chain: ChainConfig::default(),
            run_dir,
        }
    }

    /// The settings of a federation file, `None` when it has no `[chain]` (no anchoring).
    ///
    /// # Errors
    /// [`AnchoringError::Config`] naming the field at fault.
    pub fn from_federation(config: &FederationConfig) -> Result<Option<Self>> {
        config
            .chain
            .as_ref()
            .map(|table| Self::parse(table, &config.aggregator.checkpoints))
            .transpose()
    }

    /// Parses a `[chain]` table (already path-resolved by [`FederationConfig::parse`]) for a
    /// federation whose checkpoints are at `checkpoints` (a store URL or directory). A table
    /// without `backend` is the embedded backend.
    ///
    /// # Errors
    /// [`AnchoringError::Config`] naming the field at fault; also when the checkpoints are not
    /// in a local directory and `run_dir` is not given.
    pub fn parse(table: &toml::Table, checkpoints: &str) -> Result<Self> {
        let mut table = table.clone();
        let run_dir = match table.remove("run_dir") {
            Some(toml::Value::String(dir)) => PathBuf::from(dir),
            Some(_) => return Err(AnchoringError::Config("`run_dir` must be a string".into())),
            None => local_parent(checkpoints).ok_or_else(|| {
                AnchoringError::Config(format!(
                    "the checkpoints (`{checkpoints}`) are not in a local directory: set \
                     `run_dir`, the folder for the chain state and the anchor queue"
                ))
            })?,
        };
        table
            .entry("backend")
            .or_insert_with(|| toml::Value::String("embedded".into()));
        let chain: ChainConfig =
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| {
                    AnchoringError::Config(e.to_string().trim().to_owned())
                })?;
        if let ChainConfig::Rpc {
            key_file, key_env, ..
        } = &chain
            && key_file.is_some() == key_env.is_some()
        {
            return Err(AnchoringError::Config(
                "set exactly one of `key_file` and `key_env` (the aggregator's signing key)".into(),
            ));
        }
        Ok(Self { chain, run_dir })
    }
}

/// The parent of a local checkpoint folder (`./checkpoints`, `/abs/dir`, `file:///abs/dir`).
fn local_parent(checkpoints: &str) -> Option<PathBuf> {
    let dir = match checkpoints.strip_prefix("file://") {
        Some(path) => path,
        None if checkpoints.contains("://") => return None,
        None => checkpoints,
    };
    let parent = Path::new(dir.trim_end_matches('/')).parent()?;
    Some(if parent.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        parent.to_owned()
    })
}
