//! The crate's error type and decoded reverts.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use alloy::primitives::{B256, Bytes, U256};
use alloy::sol_types::SolValue;

use crate::bindings::ARTIFACTS;

/// Everything that can go wrong while deploying or driving the DAO.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The embedded EVM, a key source or another chain-anchor facility failed.
    #[error(transparent)]
    Anchor(#[from] chain_anchor::Error),
    /// The JSON-RPC endpoint failed or could not be reached.
    #[error("JSON-RPC endpoint {url}: {during}: {message}")]
    Rpc {
        /// The endpoint.
        url: String,
        /// What was being done.
        during: &'static str,
        /// The transport's message.
        message: String,
    },
    /// A transaction was sent but no receipt came within the timeout.
    #[error("no receipt for transaction {tx_hash} after {waited:?}")]
    ReceiptTimeout {
        /// The transaction.
        tx_hash: B256,
        /// How long the receipt was awaited.
        waited: Duration,
    },
    /// A contract refused the call; the revert names the contract error.
    #[error("reverted: {0}")]
    Reverted(Revert),
    /// The configuration is invalid or incomplete.
    #[error("DAO configuration: {0}")]
    Config(String),
    /// A deployment did not produce what it should have (a contract missing at its address,
    /// another transaction from the deployer in between).
    #[error("deployment: {0}")]
    Deploy(String),
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file exists but does not hold what it should (a `dao.json`, a config).
    #[error("{}: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A committed artifact is malformed (a build problem, not an input one).
    #[error("artifact {0}")]
    Artifact(String),
    /// The chain answered with something that does not decode as expected.
    #[error("malformed answer from the chain: {0}")]
    MalformedResponse(String),
    /// The caller passed something unusable (a zero amount, an unknown proposal, ...).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The backend cannot do this (moving the clock of a chain that is not a dev node).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The deployment has no such contract (a `dao.json` written before it existed).
    #[error("{0} is not deployed in this DAO (its dao.json predates it)")]
    NotDeployed(&'static str),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A revert, decoded against the errors of every DAO contract (and OpenZeppelin's, which their
/// ABIs include), `Error(string)` and `Panic(uint256)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revert {
    /// The raw revert data (empty for a failure without data, e.g. out of gas).
    pub data: Bytes,
}

impl Revert {
    /// Wraps raw revert data.
    pub fn new(data: Bytes) -> Self {
        Self { data }
    }

    /// The 4-byte selector, if the data has one.
    pub fn selector(&self) -> Option<[u8; 4]> {
        self.data.get(..4).and_then(|s| s.try_into().ok())
    }

    /// The name of the contract error (`"TargetNotAllowed"`, `"GovernorUnexpectedProposalState"`,
    /// `"Error"`, `"Panic"`), or `None` when the selector is unknown or the data is empty.
    pub fn name(&self) -> Option<&'static str> {
        error_names().get(&self.selector()?).map(String::as_str)
    }

    /// Whether this is the contract error `name`.
    pub fn is(&self, name: &str) -> bool {
        self.name() == Some(name)
    }

    /// The message of an `Error(string)` revert (`require` with a message).
    pub fn message(&self) -> Option<String> {
        if self.selector()? != [0x08, 0xc3, 0x79, 0xa0] {
            return None;
        }
        String::abi_decode(&self.data[4..]).ok()
    }

    /// The code of a `Panic(uint256)` (0x11 overflow, 0x12 division by zero, ...).
    pub fn panic_code(&self) -> Option<U256> {
        if self.selector()? != [0x4e, 0x48, 0x7b, 0x71] {
            return None;
        }
        U256::abi_decode(&self.data[4..]).ok()
    }

    /// Decodes the data as one of a contract's generated error enums (for example
    /// `bindings::DaoGovernor::DaoGovernorErrors`), to read the error's arguments.
    pub fn decode<E: alloy::sol_types::SolInterface>(&self) -> Option<E> {
        E::abi_decode(&self.data).ok()
    }
}

impl std::fmt::Display for Revert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.name(), self.message(), self.panic_code()) {
            (_, Some(m), _) => write!(f, "Error({m:?})"),
            (_, _, Some(c)) => write!(f, "Panic({c:#x})"),
            (Some(name), _, _) => write!(f, "{name} (data {})", self.data),
            (None, _, _) if self.data.is_empty() => write!(f, "without revert data"),
            (None, _, _) => write!(f, "unknown error, data {}", self.data),
        }
    }
}

fn error_names() -> &'static HashMap<[u8; 4], String> {
    static NAMES: OnceLock<HashMap<[u8; 4], String>> = OnceLock::new();
    NAMES.get_or_init(|| {
        let mut names = HashMap::new();
        names.insert([0x08, 0xc3, 0x79, 0xa0], "Error".to_owned());
        names.insert([0x4e, 0x48, 0x7b, 0x71], "Panic".to_owned());
        for artifact in ARTIFACTS {
            let Ok(abi) = artifact.abi() else { continue };
            for error in abi.errors() {
                names.insert(error.selector().0, error.name.clone());
            }
        }
        // chain-anchor's registry, whose errors surface through a promotion.
        if let Ok(abi) = serde_json::from_str::<serde_json::Value>(include_str!(
            "../../chain-anchor/artifacts/CheckpointRegistry.json"
        ))
        .and_then(|v| serde_json::from_value::<alloy::json_abi::JsonAbi>(v["abi"].clone()))
        {
            for error in abi.errors() {
                names.insert(error.selector().0, error.name.clone());
            }
        }
        names
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::sol_types::SolError;

    #[test]
    fn names_come_from_every_artifact() {
        use crate::bindings::{DaoGovernor, ModelRegistry, ProposalToken, Staking};
        let cases: [(Vec<u8>, &str); 4] = [
            (
                DaoGovernor::TargetNotAllowed {
                    target: Default::default(),
                }
                .abi_encode(),
                "TargetNotAllowed",
            ),
            (
                ModelRegistry::CidMismatch {
                    anchored: "a".into(),
                    given: "b".into(),
                }
                .abi_encode(),
                "CidMismatch",
            ),
            (
                Staking::NothingToWithdraw {}.abi_encode(),
                "NothingToWithdraw",
            ),
            (
                ProposalToken::ERC2612InvalidSigner {
                    signer: Default::default(),
                    owner: Default::default(),
                }
                .abi_encode(),
                "ERC2612InvalidSigner",
            ),
        ];
        for (data, name) in cases {
            let r = Revert::new(data.into());
            assert!(r.is(name), "{r}");
        }
        assert_eq!(Revert::new(Bytes::new()).name(), None);
        assert_eq!(Revert::new(vec![1, 2].into()).name(), None);
        assert_eq!(Revert::new(vec![9, 9, 9, 9].into()).name(), None);
    }
}
