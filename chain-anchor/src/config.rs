//! `[chain]` of the federation TOML: which backend anchors, and how.

use std::path::{Path, PathBuf};
use std::time::Duration;

use alloy::primitives::Address;
use serde::{Deserialize, Serialize};

use crate::rpc::{KeySource, RpcSettings};
use crate::{Error, Result};

fn one() -> u32 {
    1
}

fn default_receipt_timeout_secs() -> u64 {
    120
}

/// Where checkpoints are anchored.
///
/// ```toml
/// [chain]                      # the default: zero setup
/// backend = "embedded"
///
/// [chain]                      # a node: anvil, a testnet or mainnet
/// backend = "rpc"
/// url = "http://127.0.0.1:8545"
/// registry = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
/// key_env = "DAOFL_ANCHOR_KEY"    # or key_file = "keys/aggregator.key" (mode 0600)
/// queue_dir = "anchor-queue"
/// confirmations = 1
/// batch_rounds = 10
/// ```
///
/// There is no field for a key itself: a key is read from a file or an environment variable,
/// never from the configuration or the command line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "backend", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum ChainConfig {
    /// The registry runs in an in-process EVM (revm) whose state is a file in the run folder.
    ///
    /// It is an EVM, not a network: no consensus, no other node; a verifier trusts whoever holds
    /// the state file. Good for quickstarts, simulations and tests.
    Embedded {
        /// Folder of the EVM state, relative to the run folder (default `chain`).
        #[serde(default)]
        state_dir: Option<PathBuf>,
        /// Rounds anchored per transaction (1: every round on its own).
        #[serde(default = "one")]
        batch_rounds: u32,
    },
    /// A registry deployed on an EVM chain reached over JSON-RPC.
    Rpc {
        /// JSON-RPC endpoint (`http://`; `https://` needs the crate's `rpc-tls` feature).
        url: String,
        /// Address of the deployed registry (see [`deploy_registry`](crate::deploy_registry)).
        registry: Address,
        /// File holding the aggregator's key (one line, `0x` + 64 hex digits, mode 0600).
        #[serde(default)]
        key_file: Option<PathBuf>,
        /// Name of the environment variable holding the aggregator's key.
        #[serde(default)]
        key_env: Option<String>,
        /// Expected chain id; anchoring refuses an endpoint on another chain.
        #[serde(default)]
        chain_id: Option<u64>,
        /// Folder of the durable retry queue, relative to the run folder.
        queue_dir: PathBuf,
        /// Blocks a receipt must be buried under before an anchor counts as done (1 = included).
        #[serde(default = "one_u64")]
        confirmations: u64,
        /// How long to wait for a receipt before leaving the anchor queued.
        #[serde(default = "default_receipt_timeout_secs")]
        receipt_timeout_secs: u64,
        /// Rounds anchored per transaction (1: every round on its own).
        #[serde(default = "one")]
        batch_rounds: u32,
    },
}

fn one_u64() -> u64 {
    1
}

impl Default for ChainConfig {
    fn default() -> Self {
        Self::Embedded {
            state_dir: None,
            batch_rounds: 1,
        }
    }
}

impl ChainConfig {
    /// Rounds anchored per transaction (at least 1).
    pub fn batch_rounds(&self) -> u32 {
        match self {
            Self::Embedded { batch_rounds, .. } | Self::Rpc { batch_rounds, .. } => {
                (*batch_rounds).max(1)
            }
        }
    }

    /// The RPC backend's settings, paths resolved against `run_dir`.
    ///
    /// # Errors
    /// [`Error::Config`] for the embedded backend or when not exactly one of `key_file` and
    /// `key_env` is set.
    pub fn rpc_settings(&self, run_dir: &Path) -> Result<RpcSettings> {
        let Self::Rpc {
            url,
            registry,
            key_file,
            key_env,
            chain_id,
            queue_dir,
            confirmations,
            receipt_timeout_secs,
            ..
        } = self
        else {
            return Err(Error::Config("not an RPC backend".into()));
        };
        let key = match (key_file, key_env) {
            (Some(f), None) => KeySource::File(run_dir.join(f)),
            (None, Some(v)) => KeySource::Env(v.clone()),
            _ => {
                return Err(Error::Config(
                    "set exactly one of `key_file` and `key_env`".into(),
                ));
            }
        };
        let mut settings = RpcSettings::new(url.clone(), *registry, key, run_dir.join(queue_dir));
        settings.chain_id = *chain_id;
        settings.confirmations = (*confirmations).max(1);
        settings.receipt_timeout = Duration::from_secs(*receipt_timeout_secs);
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_backends_and_refuses_unknown_fields() {
        let c: ChainConfig = toml::from_str("backend = \"embedded\"\n").unwrap();
        assert_eq!(c, ChainConfig::default());
        let c: ChainConfig = toml::from_str(
            r#"
            backend = "rpc"
            url = "http://127.0.0.1:8545"
            registry = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
            key_env = "K"
            queue_dir = "q"
            batch_rounds = 4
            "#,
        )
        .unwrap();
        assert_eq!(c.batch_rounds(), 4);
        let s = c.rpc_settings(Path::new("/run")).unwrap();
        assert_eq!(s.queue_dir, Path::new("/run/q"));
        assert_eq!(s.confirmations, 1);
        assert!(toml::from_str::<ChainConfig>("backend = \"embedded\"\nkey = \"0x01\"\n").is_err());
        assert!(toml::from_str::<ChainConfig>("backend = \"moon\"\n").is_err());
    }
}
