//! Rust bindings of the committed DAO artifacts (`artifacts/*.json`).
//!
//! Generated at build time by alloy's `sol!` from the ABIs that `scripts/compile.mjs` wrote, so
//! building this crate needs no Solidity compiler. The creation code deployed by
//! [`deploy`](crate::deploy) is read from the same files ([`Artifact`]).

#![allow(missing_docs)] // generated items; the contracts' NatSpec documents them
#![allow(clippy::too_many_arguments)]

alloy::sol!(
    #[derive(Debug, PartialEq, Eq)]
    ProposalToken,
    "artifacts/ProposalToken.json"
);
alloy::sol!(
    #[derive(Debug, PartialEq, Eq)]
    DaoGovernor,
    "artifacts/DaoGovernor.json"
);
alloy::sol!(
    #[derive(Debug, PartialEq, Eq)]
    DaoTimelock,
    "artifacts/DaoTimelock.json"
);
alloy::sol!(
    #[derive(Debug, PartialEq, Eq)]
    ModelRegistry,
    "artifacts/ModelRegistry.json"
);
alloy::sol!(
    #[derive(Debug, PartialEq, Eq)]
    Staking,
    "artifacts/Staking.json"
);
alloy::sol!(
    #[derive(Debug, PartialEq, Eq)]
    RewardPool,
    "artifacts/RewardPool.json"
);
alloy::sol!(
    #[derive(Debug, PartialEq, Eq)]
    Settlement,
    "artifacts/Settlement.json"
);
alloy::sol!(
    #[derive(Debug, PartialEq, Eq)]
    InferenceFees,
    "artifacts/InferenceFees.json"
);
alloy::sol!(
    #[derive(Debug, PartialEq, Eq)]
    DataRegistry,
    "artifacts/DataRegistry.json"
);
alloy::sol!(
    #[derive(Debug, PartialEq, Eq)]
    AnnotationBook,
    "artifacts/AnnotationBook.json"
);
alloy::sol!(
    #[derive(Debug, PartialEq, Eq)]
    AllocationVesting,
    "artifacts/AllocationVesting.json"
);

/// The EIP-2612 permit message signed by a token holder.
mod permit {
    alloy::sol! {
        #[derive(Debug, PartialEq, Eq)]
        struct Permit {
            address owner;
            address spender;
            uint256 value;
            uint256 nonce;
            uint256 deadline;
        }
    }
}
pub use permit::Permit;

/// The EIP-712 messages QA validators sign for [`Settlement`].
mod settlement_messages {
    alloy::sol! {
        /// An epoch's reward root.
        #[derive(Debug, PartialEq, Eq)]
        struct Root {
            uint64 epoch;
            bytes32 root;
            uint256 total;
            uint64 deadline;
        }
        /// A slashing verdict.
        #[derive(Debug, PartialEq, Eq)]
        struct Verdict {
            address member;
            bytes32 evidence;
            uint16 fractionBps;
            uint64 deadline;
        }
    }
}
pub use settlement_messages::{Root, Verdict};

/// One of the committed artifacts: its name and JSON (ABI and creation code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Artifact {
    /// Contract name.
    pub name: &'static str,
    /// The artifact file's text.
    pub json: &'static str,
}

macro_rules! artifact {
    ($name:literal) => {
        Artifact {
            name: $name,
            json: include_str!(concat!("../artifacts/", $name, ".json")),
        }
    };
}

/// Every DAO artifact.
pub const ARTIFACTS: [Artifact; 11] = [
    artifact!("ProposalToken"),
    artifact!("DaoGovernor"),
    artifact!("DaoTimelock"),
    artifact!("ModelRegistry"),
    artifact!("Staking"),
    artifact!("RewardPool"),
    artifact!("AllocationVesting"),
    artifact!("Settlement"),
    artifact!("DataRegistry"),
    artifact!("InferenceFees"),
    artifact!("AnnotationBook"),
];

impl Artifact {
    /// The artifact of `name`, if it is one of [`ARTIFACTS`].
    pub fn named(name: &str) -> Option<Self> {
        ARTIFACTS.iter().copied().find(|a| a.name == name)
    }

    fn field(&self, key: &str) -> crate::Result<serde_json::Value> {
        let value: serde_json::Value = serde_json::from_str(self.json)
            .map_err(|e| crate::Error::Artifact(format!("{}: {e}", self.name)))?;
        value
            .get(key)
            .cloned()
            .ok_or_else(|| crate::Error::Artifact(format!("{} has no {key}", self.name)))
    }

    /// The creation code (without constructor arguments).
    ///
    /// # Errors
    /// [`Error::Artifact`](crate::Error::Artifact) if the committed file is malformed.
    pub fn bytecode(&self) -> crate::Result<alloy::primitives::Bytes> {
        let hex = self.field("bytecode")?;
        hex.as_str()
            .and_then(|h| h.parse().ok())
            .ok_or_else(|| crate::Error::Artifact(format!("{}: bytecode is not hex", self.name)))
    }

    /// The ABI.
    ///
    /// # Errors
    /// [`Error::Artifact`](crate::Error::Artifact) if the committed file is malformed.
    pub fn abi(&self) -> crate::Result<alloy::json_abi::JsonAbi> {
        serde_json::from_value(self.field("abi")?)
            .map_err(|e| crate::Error::Artifact(format!("{}: abi: {e}", self.name)))
    }
}
