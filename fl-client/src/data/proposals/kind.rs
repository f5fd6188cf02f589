//! The normalised kind of a proposal: what sort of change it asks for, across communities.
//!
//! Each community has its own categories (`type_raw`: MakerDAO alone has 46 values, Celo
//! writes "Ring 0" five ways); [`ProposalKind::of`] maps them, with the document kind
//! (`doc_kind`), onto five kinds. The mapping, rule by rule (first match wins), and the class
//! counts on the shipped corpus (3,754 rows) are in `data/proposals/README.md`; in short:
//!
//! | kind | meaning | taken from |
//! |---|---|---|
//! | `protocol` | changes the system's own rules or implementation | EIP Core/Networking, BIP consensus/peer services, Cardano Ledger/Consensus/Network/Plutus, Celo Ring 0/1, FIP (technical/core), NEP protocol/runtime/storage, PEP Standards Track, SIP (Synthetix), LIP (Lido), MIP Technical |
//! | `standard` | an interface or application standard built on the system | ERC, EIP Interface, BIP applications/API, ARC, Cardano Wallets/Metadata/Tokens/Tools, Celo Ring 2/3, FRC, FIP interface/standards, NEP contract/wallet/tools |
//! | `process` | how the community works: meta, process, informational | EIP Meta/Informational, BIP Process/Informational, PEP Process/Informational, every `Meta` category, MIP Process/General, MakerDAO MIP-amendment subproposals (MIP4, MIP102), FIP Organizational, SIP/SCCP/STP Meta-Governance |
//! | `parameter` | a change of a live system's configuration | SCCP (Synthetix Configuration Change Proposals) |
//! | `operations` | the organisation's operations: budgets, funding, treasury, appointments, onboarding | MakerDAO subproposals (budgets, core units, facilitators, collateral and oracle onboarding, ...), AGP Finance/Association/Proclamation, YIP, STP |

use serde::{Deserialize, Serialize};

/// What sort of change a proposal asks for (see the module docs of `data::proposals`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProposalKind {
    /// Changes the system's own rules or implementation (consensus, networking, runtime, core
    /// contracts, the language and its library).
    Protocol,
    /// An interface or application standard built on the system (tokens, wallets, APIs).
    Standard,
    /// How the community works: meta, process and informational documents.
    Process,
    /// A change of a live system's configuration parameters.
    Parameter,
    /// The organisation's operations: budgets, funding, treasury, appointments, onboarding.
    Operations,
}

impl ProposalKind {
    /// Every kind, in class-index order.
    pub const ALL: [ProposalKind; 5] = [
        ProposalKind::Protocol,
        ProposalKind::Standard,
        ProposalKind::Process,
        ProposalKind::Parameter,
        ProposalKind::Operations,
    ];

    /// Number of kinds.
    pub const COUNT: usize = Self::ALL.len();

    /// The class index (position in [`ProposalKind::ALL`]).
    pub fn class(self) -> u8 {
        self as u8
    }

    /// The kind of a class index, if it is one.
    pub fn from_class(class: u8) -> Option<Self> {
        Self::ALL.get(usize::from(class)).copied()
    }

    /// The kind's name as serialised (`protocol`, `standard`, ...).
    pub fn name(self) -> &'static str {
        match self {
            ProposalKind::Protocol => "protocol",
            ProposalKind::Standard => "standard",
            ProposalKind::Process => "process",
            ProposalKind::Parameter => "parameter",
            ProposalKind::Operations => "operations",
        }
    }

    /// Normalises a community's own category: `doc_kind` (`EIP`, `SCCP`, ...) and `type_raw`
    /// (`EIP / Standards Track / Core`, `SP:MIP40C3`, ...) of a proposal of `community`.
    ///
    /// Total: every input maps to some kind (unknown document kinds fall back on keywords of
    /// `type_raw`, then [`ProposalKind::Protocol`]).
    pub fn of(community: &str, doc_kind: &str, type_raw: &str) -> Self {
        use ProposalKind::*;
        let t = type_raw.to_lowercase();
        let has = |w: &str| t.contains(w);
        let meta = has("meta");
        match doc_kind.to_ascii_uppercase().as_str() {
            "SCCP" | "SIP" | "STP" if meta => Process,
            "SCCP" => Parameter,
            "SIP" | "LIP" => Protocol,
            "STP" | "YIP" => Operations,
            "SP" => {
                // MakerDAO subproposals; MIP4 and MIP102 are MIP amendments.
                if t.starts_with("sp:mip4c") || t.starts_with("sp:mip102c") {
                    Process
                } else {
                    Operations
                }
            }
            "MIP" if has("technical") => Protocol,
            "MIP" => Process,
            "AGP" if meta => Process,
            "AGP" => Operations,
            "ERC" | "FRC" => Standard,
            "ARC" if meta => Process,
            "ARC" => Standard,
            "PEP" if has("standards track") => Protocol,
            "PEP" => Process,
            "EIP" if has("core") || has("networking") => Protocol,
            "EIP" if has("interface") => Standard,
            "EIP" => Process,
            "BIP" if has("process") => Process,
            "BIP" if has("consensus") || has("peer services") => Protocol,
            "BIP" if has("applications") || has("api") || t == "bip / specification" => Standard,
            "BIP" => Process,
            "CIP" if meta || has("informational") => Process,
            "CIP" if community == "celo" => {
                if has("ring 0") || has("ring 1") {
                    Protocol
                } else {
                    Standard
                }
            }
            "CIP" => {
                if ["ledger", "consensus", "network", "plutus"]
                    .iter()
                    .any(|w| has(w))
                {
                    Protocol
                } else {
                    Standard
                }
            }
            "FIP" if has("organizational") => Process,
            "FIP" if has("interface") || has("standards") => Standard,
            "FIP" => Protocol,
            "NEP" if ["contract", "wallet", "tools"].iter().any(|w| has(w)) => Standard,
            "NEP" => Protocol,
            _ if meta || has("process") || has("informational") => Process,
            _ if has("interface") || has("application") || has("standard") => Standard,
            _ => Protocol,
        }
    }
}

impl std::fmt::Display for ProposalKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
