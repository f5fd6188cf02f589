//! Checking a checkpoint against the chain: where to read the registry, and the verdict.

use super::*;

/// Where a verifier reads the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistrySource {
    /// An embedded chain's state folder (it must exist: a verifier never creates a chain).
    Embedded {
        /// The folder holding the state file.
        state_dir: PathBuf,
    },
    /// A registry on a chain reached over JSON-RPC.
    Rpc {
        /// The endpoint.
        url: String,
        /// The registry's address.
        registry: Address,
        /// The chain id the endpoint must serve, when known.
        chain_id: Option<u64>,
    },
}

impl RegistrySource {
    /// The registry the aggregator with `settings` anchors to.
    pub fn from_settings(settings: &ChainSettings) -> Self {
        match &settings.chain {
            ChainConfig::Rpc {
                url,
                registry,
                chain_id,
                ..
            } => Self::Rpc {
                url: url.clone(),
                registry: *registry,
                chain_id: *chain_id,
            },
            ChainConfig::Embedded { state_dir, .. } => Self::Embedded {
                state_dir: settings
                    .run_dir
                    .join(state_dir.as_deref().unwrap_or(Path::new("chain"))),
            },
            _ => Self::Embedded {
                state_dir: settings.run_dir.join("chain"),
            },
        }
    }
}

/// A read-only handle on a registry for verification: it never sends a transaction.
///
/// The RPC backend needs a key to exist, so a throwaway one (written, mode 0600, with an empty
/// queue, to a temporary folder removed on drop) stands in; nothing is ever signed with it.
#[derive(Debug)]
pub struct RegistryReader {
    chain: ChainAnchor,
    _scratch: Option<tempfile::TempDir>,
}

impl RegistryReader {
    /// Opens the registry `source` names.
    ///
    /// # Errors
    /// [`AnchoringError::Config`] when an embedded state folder holds no chain,
    /// [`AnchoringError::Chain`] for a malformed URL or an unusable state file.
    pub fn open(source: &RegistrySource) -> Result<Self> {
        match source {
            RegistrySource::Embedded { state_dir } => {
                if !state_dir.join(STATE_FILE).is_file() {
                    return Err(AnchoringError::Config(format!(
                        "no embedded chain at {} (no {STATE_FILE}): give the run folder's chain \
                         state (--chain-state) or the federation file (--config)",
                        state_dir.display()
                    )));
                }
                Ok(Self {
                    chain: ChainAnchor::Embedded(EmbeddedAnchor::open(state_dir)?),
                    _scratch: None,
                })
            }
            RegistrySource::Rpc {
                url,
                registry,
                chain_id,
            } => {
                let scratch = tempfile::tempdir().map_err(|e| {
                    AnchoringError::Config(format!("cannot create a temporary folder: {e}"))
                })?;
                let key_path = scratch.path().join("read-only.key");
                write_private(
                    &key_path,
                    &format!("{}\n", keccak256(b"daofl read-only verifier")),
                )
                .map_err(|e| AnchoringError::Config(format!("temporary key file: {e}")))?;
                let mut settings = RpcSettings::new(
                    url.clone(),
                    *registry,
                    KeySource::File(key_path),
                    scratch.path().join("queue"),
                );
                settings.chain_id = *chain_id;
                settings.retry.attempts = 2;
                Ok(Self {
                    chain: ChainAnchor::Rpc(Box::new(RpcAnchor::connect(settings)?)),
                    _scratch: Some(scratch),
                })
            }
        }
    }

    /// The registry, for [`verify_checkpoint`].
    pub fn chain(&self) -> &ChainAnchor {
        &self.chain
    }
}

/// Writes `text` to a new file readable by its owner only.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)?.write_all(text.as_bytes())
}

/// What [`verify_checkpoint`] found; `Display` prints a one-line verdict and the details.
#[derive(Debug, Clone)]
pub struct CheckpointVerification {
    /// The federation the manifest names.
    pub federation_id: String,
    /// The round the manifest names.
    pub round: u64,
    /// The CID the manifest names.
    pub cid: String,
    /// SHA-256 of the parameter bytes, recomputed.
    pub computed_hash: B256,
    /// Participants the manifest lists.
    pub participants: usize,
    /// ε the manifest records, in millionths.
    pub epsilon_micros: u64,
    /// The model card the manifest names (committed as a leaf of the participants root, see
    /// [`super::model_card_leaf_address`]).
    pub model_card: Option<fl_core::ContentHash>,
    /// The member whose inclusion was checked.
    pub member: Option<Address>,
    /// The anchor recorded in the manifest (where to look on chain).
    pub recorded: Option<ManifestAnchor>,
    /// The registry read.
    pub registry: Address,
    /// The verdict.
    pub verdict: Verdict,
}

impl CheckpointVerification {
    /// Whether the checkpoint verified.
    pub fn is_valid(&self) -> bool {
        self.verdict.is_valid()
    }
}

impl fmt::Display for CheckpointVerification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = format!("round {} of `{}`", self.round, self.federation_id);
        match &self.verdict {
            Verdict::Valid { anchored } => {
                let how = match anchored {
                    AnchoredCheckpoint::Single(r) => {
                        format!("anchored by {} at time {}", r.aggregator, r.anchored_at)
                    }
                    AnchoredCheckpoint::Batched(b) => format!(
                        "anchored in the batch of rounds {}..={} by {}",
                        b.first_round, b.last_round, b.aggregator
                    ),
                };
                writeln!(f, "VALID: {what} matches its anchor ({how})")?;
            }
            Verdict::MissingAnchor { latest_round } => writeln!(
                f,
                "INVALID (missing anchor): nothing is anchored for {what}; latest anchored round: {}",
                latest_round.map_or("none".into(), |r| r.to_string())
            )?,
            Verdict::TamperedParameters { computed, anchored } => writeln!(
                f,
                "INVALID (tampered parameters): the parameters hash to {computed}, the registry \
                 anchored {anchored} for {what}"
            )?,
            Verdict::WrongRound {
                claimed,
                anchored_round,
            } => writeln!(
                f,
                "INVALID (wrong round): these parameters are anchored for round {anchored_round}, \
                 the manifest claims round {claimed}"
            )?,
            Verdict::CidMismatch { claimed, anchored } => writeln!(
                f,
                "INVALID (CID mismatch): the manifest names {claimed}, the registry anchored \
                 {anchored} for {what}"
            )?,
            Verdict::ParticipantsMismatch { computed, anchored } => writeln!(
                f,
                "INVALID (participants mismatch): the manifest's participants give root \
                 {computed}, the registry anchored {anchored} for {what}"
            )?,
            Verdict::EpsilonMismatch { claimed, anchored } => writeln!(
                f,
                "INVALID (epsilon mismatch): the manifest records {}, the registry anchored {} \
                 for {what}",
                epsilon_text(*claimed),
                epsilon_text(*anchored)
            )?,
            Verdict::ParticipantNotIncluded { member } => writeln!(
                f,
                "INVALID (participant not included): {member} is not among the participants \
                 anchored for {what}"
            )?,
            Verdict::BatchProofMissing {
                first_round,
                last_round,
            } => writeln!(
                f,
                "INVALID (batch proof missing): {what} is anchored in the batch of rounds \
                 {first_round}..={last_round}, but the manifest holds no inclusion proof"
            )?,
            Verdict::NotInBatch {
                first_round,
                last_round,
            } => writeln!(
                f,
                "INVALID (not in batch): {what} with its proof does not lead to the root of the \
                 batch of rounds {first_round}..={last_round}: something was altered"
            )?,
            other => writeln!(f, "INVALID: {other:?}")?,
        }
        writeln!(
            f,
            "  parameters    {} (sha256 {})",
            self.cid, self.computed_hash
        )?;
        writeln!(f, "  participants  {}", self.participants)?;
        writeln!(f, "  epsilon       {}", epsilon_text(self.epsilon_micros))?;
        if let Some(card) = &self.model_card {
            writeln!(
                f,
                "  model card    {card} (a leaf of the participants root)"
            )?;
        }
        if let Some(member) = self.member {
            let included = !matches!(self.verdict, Verdict::ParticipantNotIncluded { .. });
            let state = if !self.is_valid() && included {
                "not checked"
            } else if included {
                "included"
            } else {
                "NOT included"
            };
            writeln!(f, "  member        {member}: {state}")?;
        }
        write!(f, "  registry      {}", self.registry)?;
        if let Some(a) = &self.recorded {
            let r = &a.receipt;
            let backend = match r.backend {
                BackendKind::Embedded => {
                    "embedded EVM (not a network: trust rests with the state file's holder)"
                }
                BackendKind::Rpc => "JSON-RPC chain",
            };
            write!(
                f,
                "\n  recorded      block {} tx {} on chain {}: {backend}",
                r.block_number, r.tx_hash, r.chain_id
            )?;
            if r.first_round != r.last_round {
                write!(f, ", batch of rounds {}..={}", r.first_round, r.last_round)?;
            }
        }
        Ok(())
    }
}

fn epsilon_text(micros: u64) -> String {
    if micros == EPSILON_UNBOUNDED {
        "unbounded (no differential privacy)".into()
    } else {
        format!("{:.6}", micros as f64 / 1e6)
    }
}

/// Checks a checkpoint against the registry behind `anchor`: recomputes the SHA-256 of
/// `params` (the parameter object's bytes as stored), the participants root from the
/// manifest, finds the round's anchor (alone, or in a batch with the proof kept in the
/// manifest) and compares every field; with `member`, checks that member's inclusion too.
///
/// # Errors
/// Only when the registry cannot be read or the manifest's anchor field is unreadable; a
/// checkpoint that does not match is a [`Verdict`] in the result.
pub async fn verify_checkpoint<A: Anchor>(
    anchor: &A,
    manifest: &Manifest,
    params: &[u8],
    member: Option<Address>,
) -> Result<CheckpointVerification> {
    let recorded = ManifestAnchor::of(manifest)?;
    let leaves = participants(manifest);
    let cid = manifest.params_cid.to_string();
    let epsilon = epsilon_micros(manifest.privacy.map(|p| p.epsilon));
    let member_leaf = member.map(|m| {
        let hash = leaves
            .iter()
            .find(|(a, _)| *a == m)
            .map_or([0; 32], |(_, h)| *h);
        (m, hash)
    });
    let claim = CheckpointClaim {
        federation: FederationId::from_name(&manifest.federation_id),
        round: manifest.round,
        params,
        cid: &cid,
        participants: &leaves,
        epsilon_micros: epsilon,
        member: member_leaf,
        batch_proof: recorded.as_ref().and_then(|r| r.batch_proof.as_deref()),
        from_block: 0,
    };
    let verdict = chain_anchor::verify(anchor, &claim).await?;
    Ok(CheckpointVerification {
        federation_id: manifest.federation_id.clone(),
        round: manifest.round,
        computed_hash: chain_anchor::params_hash(params),
        cid,
        participants: leaves.len(),
        epsilon_micros: epsilon,
        model_card: manifest.model_card,
        member,
        recorded,
        registry: anchor.registry(),
        verdict,
    })
}
