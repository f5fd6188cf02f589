//! The federation file: one TOML document that the aggregator, every member's node and the
//! examples read.
//!
//! Sections: `[federation]` (identity, seed, rounds, quorum, deadlines), `[model]` and `[data]`
//! (interpreted by `fl-client`, which owns the models and datasets), `[strategy]` (a
//! [`StrategyConfig`]: rule, selection, training, server optimiser), `[aggregator]` (addresses, checkpoint store, limits), `[tls]`, `[client]`
//! and `[members]` (the Ethereum addresses allowed to join). Unknown keys are errors, so a typo
//! is reported instead of silently ignored. Relative paths are resolved against the file's
//! directory.
//!
//! ```
//! use fl_core::config::FederationConfig;
//!
//! let toml = r#"
//! [federation]
//! id = "digits-dao"
//! rounds = 3
//! min_clients = 2
//!
//! [model]
//! kind = "mlp"
//!
//! [data]
//! dataset = "digits"
//!
//! [members]
//! allowed = ["0x00000000000000000000000000000000000000aa",
//!            "0x00000000000000000000000000000000000000bb"]
//! "#;
//! let config = FederationConfig::parse(toml, std::path::Path::new("."))?;
//! assert_eq!(config.federation.rounds, 3);
//! assert_eq!(config.members.allowed.len(), 2);
//! # Ok::<(), fl_core::config::ConfigError>(())
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::hash::ContentHash;
use crate::identity::{Address, AllowList};
use crate::strategy::StrategyConfig;

/// Largest federation file read: 1 MiB.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// A whole federation file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederationConfig {
    /// Identity, seed, rounds, quorum and deadlines.
    pub federation: FederationSection,
    /// The model every member trains (read by `fl-client`, e.g. `kind = "mlp"`).
    pub model: toml::Table,
    /// Where members' data comes from (read by `fl-client`, e.g. `dataset = "digits"`).
    pub data: toml::Table,
    /// The aggregation rule, client selection, local training settings and server optimiser.
    #[serde(default)]
    pub strategy: StrategyConfig,
    /// Client-level differential privacy and its budget; none trains without DP.
    #[serde(default)]
    pub privacy: Option<crate::dp::PrivacyConfig>,
    /// Secure aggregation; none lets the aggregator see each member's update.
    #[serde(default)]
    pub secure_aggregation: Option<crate::secure::SecureAggregationConfig>,
    /// The aggregator service.
    #[serde(default)]
    pub aggregator: AggregatorSection,
    /// TLS files; without this section the service runs in plaintext (loopback only).
    #[serde(default)]
    pub tls: Option<TlsSection>,
    /// How members' nodes reach the aggregator.
    #[serde(default)]
    pub client: ClientSection,
    /// Who may join.
    pub members: MembersSection,
    /// Anchoring of every checkpoint on an EVM chain; without this section the aggregator
    /// anchors nothing.
    ///
    /// Parsed and checked by `fl-aggregator` as a `chain_anchor::ChainConfig` (`backend =
    /// "embedded"`, the default, or `backend = "rpc"` with `url`, `registry`, `key_file` or
    /// `key_env`, `queue_dir`, ...), plus an optional `run_dir`: the folder that holds the
    /// embedded chain's state and the RPC retry queue (default: the parent of a local
    /// checkpoint folder). The core keeps it as a table so that it does not depend on the chain
    /// stack. A relative `run_dir` is resolved against the file's directory.
    #[serde(default)]
    pub chain: Option<toml::Table>,
    /// `[qa]`: who re-checks the evidence of flagged updates.
    #[serde(default)]
    pub qa: QaSection,
    /// `[fedbuff]`: asynchronous buffered aggregation instead of synchronous rounds; absent,
    /// the federation runs rounds.
    #[serde(default)]
    pub fedbuff: Option<FedBuffSection>,
    /// SHA-256 of the file's bytes, recorded in every checkpoint manifest.
    #[serde(skip)]
    pub hash: Option<ContentHash>,
}

/// `[fedbuff]`: asynchronous buffered aggregation, FedBuff (Nguyen et al. 2022). Members train
/// continuously, each on the newest model it was sent; the aggregator steps every
/// `buffer_size` results, each result's delta scaled by `1/√(1+staleness)`, and drops results
/// more than `max_staleness` versions old. `federation.rounds` counts server steps (each is
/// checkpointed and anchored like a round). The rule is FedAvg's mean of deltas, so `[strategy]
/// kind` must be `"fedavg"` without a server optimiser; `proximal_mu` and `[strategy.fit]`
/// apply to local training. Refused with `[privacy]` and `[secure_aggregation]`: the
/// aggregator sees each result (the paper keeps the buffer in a trusted execution
/// environment; a cryptographic buffered secure aggregation is not built).
///
/// ```toml
/// [fedbuff]
/// buffer_size = 10          # K
/// max_staleness = 10        # default
/// server_learning_rate = 1.0 # default
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FedBuffSection {
    /// `K`: results per server step.
    pub buffer_size: usize,
    /// Results trained on a model more than this many steps old are dropped.
    #[serde(default = "default_max_staleness")]
    pub max_staleness: u64,
    /// `η_g`: the server step on the mean weighted delta.
    #[serde(default = "default_server_learning_rate")]
    pub server_learning_rate: f32,
}

fn default_max_staleness() -> u64 {
    10
}

fn default_server_learning_rate() -> f32 {
    1.0
}

/// `[qa]`: the validators the evidence of a flagged update is sealed to (see
/// `fl_aggregator::qa`).
///
/// ```toml
/// [qa]
/// validators = ["0x02…"]  # secp256k1 public keys, SEC1 hex (`fl-client key show` prints one)
/// # plain_evidence = true  # instead of validators: the store is the coordinator's alone
/// ```
///
/// Evidence holds the flagged member's update, which can reveal its training data, and it is
/// written into the checkpoint store, which others may read. So `[strategy.detection]`
/// without validators is refused unless `plain_evidence = true` says that the store is the
/// coordinator's alone (who saw every update anyway): then the evidence is kept there in the
/// clear.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QaSection {
    /// The validators' public keys.
    #[serde(default)]
    pub validators: Vec<String>,
    /// Keep evidence unsealed in the checkpoint store when there are no validators (only
    /// for a store no one but the coordinator reads). Ignored when validators are listed.
    #[serde(default)]
    pub plain_evidence: bool,
}

impl QaSection {
    /// The validators' keys, parsed.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the first malformed key.
    pub fn validator_keys(&self) -> Result<Vec<crate::seal::RecipientKey>, ConfigError> {
        self.validators
            .iter()
            .enumerate()
            .map(|(i, k)| {
                crate::seal::RecipientKey::from_hex(k)
                    .map_err(|e| ConfigError::Invalid(format!("qa.validators[{i}]: {e}")))
            })
            .collect()
    }
}

/// `[federation]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederationSection {
    /// Identifier bound into every signature (members sign for this federation only).
    pub id: String,
    /// Run seed: data split, partitions, initialisation, selection and data order.
    #[serde(default)]
    pub seed: u64,
    /// Rounds to run.
    pub rounds: u64,
    /// A round starts once this many members are connected.
    pub min_clients: usize,
    /// Seconds members have to return a training result.
    #[serde(default = "default_fit_timeout")]
    pub fit_timeout_s: f64,
    /// Seconds members have to return an evaluation.
    #[serde(default = "default_evaluate_timeout")]
    pub evaluate_timeout_s: f64,
}

fn default_fit_timeout() -> f64 {
    600.0
}

fn default_evaluate_timeout() -> f64 {
    300.0
}

/// `[aggregator]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AggregatorSection {
    /// Address the gRPC service listens on.
    pub listen: SocketAddr,
    /// Address of the Prometheus metrics endpoint (`/metrics`); none disables it.
    pub metrics_listen: Option<SocketAddr>,
    /// Checkpoint store: a directory (relative to the file) or an object-store URL.
    pub checkpoints: String,
    /// Most concurrent sessions, authenticated or not.
    pub max_sessions: usize,
    /// Most concurrent sessions from one IP address before the handshake completes.
    pub max_pending_per_ip: usize,
    /// Most frames one session may send per second (heartbeats, chunks, reports).
    pub max_frames_per_second: u32,
    /// Seconds between heartbeats asked of members.
    pub heartbeat_interval_s: f64,
    /// Seconds a new session has to complete the handshake.
    pub handshake_timeout_s: f64,
    /// Seconds of silence (not even a heartbeat) after which a session is closed.
    pub idle_timeout_s: f64,
}

impl Default for AggregatorSection {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            metrics_listen: None,
            checkpoints: "checkpoints".into(),
            max_sessions: 256,
            max_pending_per_ip: 16,
            max_frames_per_second: 4096,
            heartbeat_interval_s: 5.0,
            handshake_timeout_s: 10.0,
            idle_timeout_s: 30.0,
        }
    }
}

/// `[tls]`: PEM files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// CA certificate that signed the aggregator's (and, with mutual TLS, members') certificates.
    pub ca: PathBuf,
    /// The aggregator's certificate chain.
    pub server_cert: PathBuf,
    /// The aggregator's private key.
    pub server_key: PathBuf,
    /// Require members to present a certificate signed by `ca` (mutual TLS).
    #[serde(default)]
    pub require_client_cert: bool,
}

/// `[client]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientSection {
    /// The aggregator's URL, `https://host:port` (or `http://` without TLS).
    pub aggregator: String,
    /// Name the aggregator's certificate must carry; defaults to the URL's host.
    pub server_name: Option<String>,
    /// Attempts to (re)connect before a node gives up.
    pub reconnect_attempts: u32,
    /// Seconds between reconnection attempts (doubling up to 30 s).
    pub reconnect_delay_s: f64,
    /// Where the `fl-client` binary trains: `"cpu"` (the default), `"wgpu"`, `"wgpu:N"`,
    /// `"cuda"` or `"cuda:N"` (parsed by fl-client's `DeviceSpec`; the GPU ones need the
    /// binary built with that feature). A member's `--device` overrides it: the hardware is
    /// each member's own, and the model trained is the same on any device.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
}

impl Default for ClientSection {
    fn default() -> Self {
        Self {
            aggregator: "http://127.0.0.1:50051".into(),
            server_name: None,
            reconnect_attempts: 30,
            reconnect_delay_s: 0.5,
            device: None,
        }
    }
}

/// `[members]`: a fixed list (`allowed`), or the DAO's staking contract (`source = "chain"`).
///
/// ```toml
/// [members]
/// source = "chain"      # admit while staked in `role` and not jailed or unbonding
/// dao = "dao.json"      # the deployment `daofl-dao deploy` wrote
/// role = "training"     # training (default), inference or annotator
///
/// [chain]               # the chain the DAO lives on (embedded state or RPC endpoint)
/// backend = "embedded"
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MembersSection {
    /// Where membership comes from.
    #[serde(default)]
    pub source: MembersSource,
    /// Ethereum addresses (`0x…`) allowed to join (`source = "list"`); a member's client id and
    /// data partition is its position in this list.
    #[serde(default)]
    pub allowed: Vec<String>,
    /// The DAO deployment file (`dao.json`) whose staking contract decides membership
    /// (`source = "chain"`); relative to the federation file.
    #[serde(default)]
    pub dao: Option<PathBuf>,
    /// The staking role members must hold (`source = "chain"`): `training` (default),
    /// `inference` or `annotator`.
    #[serde(default = "default_member_role")]
    pub role: String,
}

fn default_member_role() -> String {
    "training".into()
}

/// Where a federation's membership comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MembersSource {
    /// The `allowed` list of the file.
    #[default]
    List,
    /// The DAO's staking contract, on the chain of the `[chain]` section, checked at join and
    /// before every round.
    Chain,
}

/// Why a federation file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_CONFIG_BYTES`].
    #[error("{path} is {size} bytes; a federation file may have at most {MAX_CONFIG_BYTES}")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// The TOML does not parse or does not match the schema.
    #[error("invalid federation file: {0}")]
    Toml(#[from] toml::de::Error),
    /// A value is out of range or inconsistent with another.
    #[error("invalid federation file: {0}")]
    Invalid(String),
    /// The strategy, privacy and secure-aggregation settings cannot work together.
    #[error("invalid federation file: {0}")]
    Strategy(#[from] crate::strategy::BuildError),
}

impl FederationConfig {
    /// Parses `text`, resolving relative paths against `base`, and checks it.
    pub fn parse(text: &str, base: &Path) -> Result<Self, ConfigError> {
        let mut config: Self = toml::from_str(text)?;
        config.hash = Some(ContentHash::of(text.as_bytes()));
        if let Some(tls) = &mut config.tls {
            for p in [&mut tls.ca, &mut tls.server_cert, &mut tls.server_key] {
                if p.is_relative() {
                    *p = base.join(&*p);
                }
            }
        }
        if let Some(toml::Value::String(dir)) =
            config.chain.as_mut().and_then(|c| c.get_mut("run_dir"))
            && Path::new(dir.as_str()).is_relative()
        {
            *dir = base.join(dir.as_str()).to_string_lossy().into_owned();
        }
        if let Some(ceremony) = config
            .secure_aggregation
            .as_mut()
            .and_then(|s| s.ceremony.as_mut())
            && ceremony.dir.is_relative()
        {
            ceremony.dir = base.join(&ceremony.dir);
        }
        // `[model] kind = "file"`: the initial model's schema and parameter files.
        if config.model.get("kind").and_then(|k| k.as_str()) == Some("file") {
            for key in ["schema", "params"] {
                if let Some(toml::Value::String(path)) = config.model.get_mut(key)
                    && Path::new(path.as_str()).is_relative()
                {
                    *path = base.join(path.as_str()).to_string_lossy().into_owned();
                }
            }
        }
        if let Some(dao) = config.members.dao.as_mut()
            && dao.is_relative()
        {
            *dao = base.join(&*dao);
        }
        let store = &config.aggregator.checkpoints;
        if !store.contains("://") && Path::new(store).is_relative() {
            config.aggregator.checkpoints = base.join(store).to_string_lossy().into_owned();
        }
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.qa.validator_keys()?;
        let bad = |m: String| Err(ConfigError::Invalid(m));
        let f = &self.federation;
        if f.id.trim().is_empty() {
            return bad("federation.id must not be empty".into());
        }
        if f.rounds == 0 {
            return bad("federation.rounds must be at least 1".into());
        }
        if f.min_clients == 0 {
            return bad("federation.min_clients must be at least 1".into());
        }
        for (name, v) in [
            ("federation.fit_timeout_s", f.fit_timeout_s),
            ("federation.evaluate_timeout_s", f.evaluate_timeout_s),
            (
                "aggregator.heartbeat_interval_s",
                self.aggregator.heartbeat_interval_s,
            ),
            (
                "aggregator.handshake_timeout_s",
                self.aggregator.handshake_timeout_s,
            ),
            ("aggregator.idle_timeout_s", self.aggregator.idle_timeout_s),
            ("client.reconnect_delay_s", self.client.reconnect_delay_s),
        ] {
            if !(v.is_finite() && v > 0.0 && v < 1e7) {
                return bad(format!(
                    "{name} must be a positive number of seconds, got {v}"
                ));
            }
        }
        if self.aggregator.idle_timeout_s <= self.aggregator.heartbeat_interval_s {
            return bad("aggregator.idle_timeout_s must exceed heartbeat_interval_s".into());
        }
        if self.aggregator.max_sessions == 0 || self.aggregator.max_frames_per_second == 0 {
            return bad(
                "aggregator.max_sessions and max_frames_per_second must be positive".into(),
            );
        }
        if let Some(secure) = &self.secure_aggregation {
            secure.validate().map_err(ConfigError::Invalid)?;
        }
        self.strategy
            .check(self.privacy.as_ref(), self.secure_aggregation.as_ref())?;
        if self.strategy.detection.is_some()
            && self.qa.validators.is_empty()
            && !self.qa.plain_evidence
        {
            return bad(
                "[strategy.detection] writes each flagged member's update into the checkpoint \
                 store as evidence, and an update can reveal the member's data: list [qa] \
                 validators = [\"0x02…\"] to seal it to them, or set [qa] plain_evidence = true \
                 if no one but the coordinator reads the store"
                    .into(),
            );
        }
        if let Some(fb) = &self.fedbuff {
            if fb.buffer_size == 0 {
                return bad("fedbuff.buffer_size must be at least 1".into());
            }
            if !(fb.server_learning_rate.is_finite() && fb.server_learning_rate > 0.0) {
                return bad(format!(
                    "fedbuff.server_learning_rate must be finite and positive, got {}",
                    fb.server_learning_rate
                ));
            }
            if self.privacy.is_some() || self.secure_aggregation.is_some() {
                return bad(
                    "[fedbuff] cannot be combined with [privacy] or [secure_aggregation]: the \
                     buffered aggregator sees each member's result (secure aggregation of each \
                     buffer is not built)"
                        .into(),
                );
            }
            if self.strategy.kind != crate::AggregationRule::Fedavg
                || self.strategy.server_optimizer.is_some()
            {
                return bad(format!(
                    "[fedbuff] averages the buffered deltas itself: [strategy] kind must be \
                     \"fedavg\" (got {:?}) without a server_optimizer",
                    self.strategy.kind
                ));
            }
            let st = &self.strategy;
            if st.detection.is_some()
                || st.contribution.is_some()
                || st.norm_bounding.is_some()
                || st.nnm.is_some()
                || st.bucketing.is_some()
            {
                return bad(
                    "[fedbuff] does not run [strategy.detection], contribution scores, norm \
                     bounding or pre-aggregators yet: remove them"
                        .into(),
                );
            }
        }
        if self.model.get("kind").and_then(|k| k.as_str()) == Some("file") {
            for key in ["schema", "params"] {
                if !self.model.get(key).is_some_and(|v| v.is_str()) {
                    return bad(format!(
                        "[model] kind = \"file\" needs {key} = \"path\" (see the README's \
                         \"Embedding the client\")"
                    ));
                }
            }
        }
        if let Some(chain) = &self.chain {
            for key in ["backend", "run_dir"] {
                if chain.get(key).is_some_and(|v| !v.is_str()) {
                    return bad(format!("chain.{key} must be a string"));
                }
            }
        }
        if self.members.source == MembersSource::Chain {
            if self.members.dao.is_none() {
                return bad(
                    "members.source = \"chain\" needs dao = \"dao.json\" (the DAO's deployment)"
                        .into(),
                );
            }
            if self.chain.is_none() {
                return bad(
                    "members.source = \"chain\" needs a [chain] section (the DAO's chain)".into(),
                );
            }
            if !self.members.allowed.is_empty() {
                return bad(
                    "members.allowed is the list source; with source = \"chain\" the staking \
                     contract decides (remove allowed)"
                        .into(),
                );
            }
            // DP accounting and SecAgg+/HE key material need the member population up front.
            if self.privacy.is_some() || self.secure_aggregation.is_some() {
                return bad(
                    "members.source = \"chain\" cannot be combined with [privacy] or \
                     [secure_aggregation] yet: both need the member list up front"
                        .into(),
                );
            }
            if !["training", "inference", "annotator"].contains(&self.members.role.as_str()) {
                return bad(format!(
                    "members.role = {:?}: expected training, inference or annotator",
                    self.members.role
                ));
            }
            return Ok(());
        }
        if self.members.dao.is_some() {
            return bad("members.dao is read only with source = \"chain\"".into());
        }
        let members = self.members()?;
        if members.len() < f.min_clients {
            return bad(format!(
                "federation.min_clients is {} but only {} members are allowed",
                f.min_clients,
                members.len()
            ));
        }
        // A robust rule's precondition on the member count (Krum n > 2f + 2, Bulyan
        // n >= 4f + 3) is refused here, before any round, when the member list is known.
        if !members.is_empty() {
            self.strategy
                .check_members(self.strategy.expected_fit_clients(members.len()))?;
        }
        Ok(())
    }

    /// The members' addresses in file order (a member's client id is its position);
    /// duplicates and malformed addresses (including a wrong EIP-55 checksum) are errors.
    pub fn members(&self) -> Result<Vec<Address>, ConfigError> {
        let mut list: Vec<Address> = Vec::with_capacity(self.members.allowed.len());
        for (i, a) in self.members.allowed.iter().enumerate() {
            let parsed = AllowList::parse([a]).map_err(|e| {
                ConfigError::Invalid(format!(
                    "members.allowed[{i}] = {a:?} is not an address: {e}"
                ))
            })?;
            let address = *parsed.iter().next().expect("one entry parsed");
            if list.contains(&address) {
                return Err(ConfigError::Invalid(format!(
                    "members.allowed lists {address} twice"
                )));
            }
            list.push(address);
        }
        Ok(list)
    }

    /// A member's position in `members.allowed` (its client id and data partition).
    pub fn member_index(&self, address: Address) -> Option<usize> {
        self.members().ok()?.iter().position(|a| *a == address)
    }

    /// `federation.fit_timeout_s` as a duration.
    pub fn fit_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.federation.fit_timeout_s)
    }

    /// `federation.evaluate_timeout_s` as a duration.
    pub fn evaluate_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.federation.evaluate_timeout_s)
    }

    /// The engine's strategy for a model of `dim` values: `[strategy]` with `[privacy]` and
    /// `[secure_aggregation]` (see [`StrategyConfig::build`]).
    pub fn build_strategy(
        &self,
        dim: usize,
    ) -> Result<Box<dyn crate::Strategy>, crate::strategy::BuildError> {
        self.build_strategy_with(dim, None)
    }

    /// [`build_strategy`](Self::build_strategy) with the aggregator's validation set, which
    /// `[strategy.contribution]` scores members on.
    pub fn build_strategy_with(
        &self,
        dim: usize,
        validator: Option<Box<dyn crate::Validator>>,
    ) -> Result<Box<dyn crate::Strategy>, crate::strategy::BuildError> {
        // With members from the chain the population is open: a round needs `min_clients`.
        let members = match self.members.source {
            MembersSource::List => self.members.allowed.len(),
            MembersSource::Chain => self.federation.min_clients,
        };
        self.strategy.build_with_validator(
            self.privacy.as_ref(),
            self.secure_aggregation.as_ref(),
            members,
            dim,
            validator,
        )
    }

    /// The hash of the file (zero for a config built in code).
    pub fn config_hash(&self) -> ContentHash {
        self.hash.unwrap_or(ContentHash::of(b""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[federation]
id = "t"
rounds = 2
min_clients = 1
[model]
kind = "mlp"
[data]
dataset = "digits"
[members]
allowed = ["0x00000000000000000000000000000000000000aa"]
"#;

    #[test]
    fn minimal_file_gets_defaults_and_resolves_paths() {
        let c = FederationConfig::parse(MINIMAL, Path::new("/etc/daofl")).unwrap();
        assert_eq!(c.aggregator.checkpoints, "/etc/daofl/checkpoints");
        assert_eq!(c.fit_timeout(), Duration::from_secs(600));
        assert_eq!(c.config_hash(), ContentHash::of(MINIMAL.as_bytes()));
        let addr: Address = "0x00000000000000000000000000000000000000aa"
            .parse()
            .unwrap();
        assert_eq!(c.member_index(addr), Some(0));
    }

    #[test]
    fn members_from_the_chain_need_a_dao_and_a_chain() {
        let chain = MINIMAL.replace(
            "allowed = [\"0x00000000000000000000000000000000000000aa\"]",
            "source = \"chain\"\ndao = \"dao.json\"\nrole = \"inference\"\n[chain]\nbackend = \"embedded\"",
        );
        let c = FederationConfig::parse(&chain, Path::new("/etc/daofl")).unwrap();
        assert_eq!(c.members.source, MembersSource::Chain);
        assert_eq!(
            c.members.dao.as_deref(),
            Some(Path::new("/etc/daofl/dao.json"))
        );
        assert_eq!(c.members.role, "inference");
        assert!(
            c.members().unwrap().is_empty(),
            "no list: ids come at first join"
        );

        let invalid = |text: &str| match FederationConfig::parse(text, Path::new(".")) {
            Err(ConfigError::Invalid(m)) => m,
            other => panic!("expected Invalid, got {other:?}"),
        };
        assert!(invalid(&chain.replace("dao = \"dao.json\"\n", "")).contains("needs dao"));
        assert!(invalid(&chain.replace("[chain]\nbackend = \"embedded\"", "")).contains("[chain]"));
        assert!(
            invalid(&chain.replace("role = \"inference\"", "role = \"miner\"")).contains("miner")
        );
        assert!(
            invalid(&chain.replace(
                "source = \"chain\"",
                "source = \"chain\"\nallowed = [\"0x00000000000000000000000000000000000000aa\"]"
            ))
            .contains("remove allowed")
        );
        assert!(
            invalid(&MINIMAL.replace("[members]", "[members]\ndao = \"dao.json\""))
                .contains("source")
        );
        let dp = "[privacy]\nmechanism = \"central\"\nclip_norm = 1.0\nnoise_multiplier = 1.0\nepsilon = 10.0\ndelta = 1e-5\n";
        assert!(invalid(&format!("{dp}{chain}")).contains("[privacy]"));
        assert!(matches!(
            FederationConfig::parse(&chain.replace("\"chain\"", "\"ledger\""), Path::new(".")),
            Err(ConfigError::Toml(_))
        ));
    }

    #[test]
    fn typos_and_bad_values_are_named() {
        let parse = |text: &str| FederationConfig::parse(text, Path::new(".")).unwrap_err();
        // Refused by the TOML schema (serde): the message is toml's, naming the key.
        let toml = |text: &str, names: &str| {
            let e = parse(text);
            assert!(matches!(e, ConfigError::Toml(_)), "{e:?}");
            assert!(e.to_string().contains(names), "{e}");
        };
        // Refused by the checks after parsing.
        let invalid = |text: &str, why: &str| {
            let e = parse(text);
            assert!(
                matches!(&e, ConfigError::Invalid(m) if m.contains(why)),
                "{e:?}"
            );
        };
        toml(
            &MINIMAL.replace("rounds = 2", "rounds = 2\nrouns = 3"),
            "rouns",
        );
        invalid(
            &MINIMAL.replace("rounds = 2", "rounds = 0"),
            "federation.rounds must be at least 1",
        );
        invalid(
            &MINIMAL.replace("min_clients = 1", "min_clients = 2"),
            "only 1 members",
        );
        invalid(
            &MINIMAL.replace("0x00000000000000000000000000000000000000aa", "0xzz"),
            "not an address",
        );
        let dup = MINIMAL.replace(
            "allowed = [\"0x00000000000000000000000000000000000000aa\"]",
            "allowed = [\"0x00000000000000000000000000000000000000aa\", \"0x00000000000000000000000000000000000000AA\"]",
        );
        invalid(&dup, "twice");
        invalid(
            &MINIMAL.replace("min_clients = 1", "min_clients = 1\nfit_timeout_s = -1"),
            "federation.fit_timeout_s must be a positive number of seconds, got -1",
        );
        toml("not toml [", "invalid federation file");
    }

    #[test]
    fn a_median_under_secure_aggregation_is_refused_at_load() {
        let median = MINIMAL.replace("[members]", "[strategy]\nkind = \"median\"\n[members]");
        let c = FederationConfig::parse(&median, Path::new(".")).unwrap();
        assert_eq!(c.strategy.kind, crate::AggregationRule::Median);
        let secure =
            format!("{median}[secure_aggregation]\nprotocol = \"secagg+\"\nclip_norm = 1.0\n");
        refused_as_per_member_median(&secure);
    }

    /// `text` (a median under some secure aggregation) is refused naming the median and why.
    fn refused_as_per_member_median(text: &str) {
        let e = FederationConfig::parse(text, Path::new(".")).unwrap_err();
        assert!(
            matches!(
                e,
                ConfigError::Strategy(
                    crate::strategy::BuildError::PerMemberUnderSecureAggregation { rule: "median" }
                )
            ),
            "{e}"
        );
        assert!(e.to_string().contains("reveals only their sum"), "{e}");
    }

    #[test]
    fn a_median_under_homomorphic_aggregation_is_refused_at_load() {
        let median = MINIMAL.replace("[members]", "[strategy]\nkind = \"median\"\n[members]");
        let he = format!(
            "{median}[secure_aggregation]\nprotocol = \"he\"\n\
             [secure_aggregation.committee]\nmembers = 2\nthreshold = 2\nmin_contributors = 1\n"
        );
        refused_as_per_member_median(&he);
        // The same file with FedAvg (and two members for the committee of two) loads: the
        // homomorphic section itself is not what is refused.
        let fedavg = he
            .replace("kind = \"median\"", "kind = \"fedavg\"")
            .replace(
                "allowed = [\"0x00000000000000000000000000000000000000aa\"]",
                "allowed = [\"0x00000000000000000000000000000000000000aa\", \
             \"0x00000000000000000000000000000000000000bb\"]",
            );
        if let Err(e) = FederationConfig::parse(&fedavg, Path::new(".")) {
            panic!("{e}");
        }
    }

    #[test]
    fn a_federation_file_cannot_turn_on_an_attack() {
        // Attacks are the simulator's and the `attack`-featured client's, never a federation
        // setting: the file's tables deny unknown fields, and the error names the key.
        let refused = |text: &str| {
            let e = FederationConfig::parse(text, Path::new(".")).unwrap_err();
            assert!(matches!(e, ConfigError::Toml(_)), "{e:?}");
            let m = e.to_string();
            assert!(m.contains("unknown field `attack`"), "{m}");
        };
        refused(&format!("attack = \"sign_flip\"\n{MINIMAL}"));
        refused(&format!("{MINIMAL}[attack]\nkind = \"sign_flip\"\n"));
        refused(&format!("{MINIMAL}[client]\nattack = \"sign_flip\"\n"));
        refused(&MINIMAL.replace("[members]", "[strategy]\nattack = \"sign_flip\"\n[members]"));
        refused(&MINIMAL.replace("min_clients = 1", "min_clients = 1\nattack = \"sign_flip\""));
        // Without the key the same file loads.
        assert!(FederationConfig::parse(MINIMAL, Path::new(".")).is_ok());
    }

    #[test]
    fn detection_without_validators_needs_plain_evidence_said_out_loud() {
        let detecting = MINIMAL.replace(
            "[members]",
            "[strategy]\nkind = \"median\"\n[strategy.detection]\n[members]",
        );
        // Evidence carries the flagged update: unsealed only when the file says so.
        let e = FederationConfig::parse(&detecting, Path::new(".")).unwrap_err();
        let m = e.to_string();
        assert!(
            matches!(e, ConfigError::Invalid(_)) && m.contains("plain_evidence = true"),
            "{m}"
        );
        assert!(m.contains("[qa] validators"), "{m}");
        let plain = format!("{detecting}[qa]\nplain_evidence = true\n");
        let c = FederationConfig::parse(&plain, Path::new(".")).unwrap();
        assert!(c.qa.plain_evidence && c.qa.validators.is_empty());
        // The secp256k1 generator point as a validator key.
        let g = "0x0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798";
        let sealed = format!("{detecting}[qa]\nvalidators = [\"{g}\"]\n");
        let c = FederationConfig::parse(&sealed, Path::new(".")).unwrap();
        assert_eq!(c.qa.validator_keys().unwrap().len(), 1);
        // Without detection there is no evidence, and nothing to say.
        let median = MINIMAL.replace("[members]", "[strategy]\nkind = \"median\"\n[members]");
        assert!(FederationConfig::parse(&median, Path::new(".")).is_ok());
        let typo = format!("{detecting}[qa]\nplain_evidence = \"yes\"\n");
        assert!(matches!(
            FederationConfig::parse(&typo, Path::new(".")),
            Err(ConfigError::Toml(_))
        ));
    }

    #[test]
    fn chain_section_is_kept_for_the_aggregator() {
        let c = FederationConfig::parse(MINIMAL, Path::new("/etc/daofl")).unwrap();
        assert!(c.chain.is_none());
        let with = format!("{MINIMAL}[chain]\nbackend = \"embedded\"\nrun_dir = \"run\"\n");
        let c = FederationConfig::parse(&with, Path::new("/etc/daofl")).unwrap();
        let chain = c.chain.unwrap();
        assert_eq!(chain["backend"].as_str(), Some("embedded"));
        assert_eq!(chain["run_dir"].as_str(), Some("/etc/daofl/run"));
        let bad = format!("{MINIMAL}[chain]\nbackend = 1\n");
        let e = FederationConfig::parse(&bad, Path::new(".")).unwrap_err();
        assert!(
            matches!(&e, ConfigError::Invalid(m) if m == "chain.backend must be a string"),
            "{e:?}"
        );
    }
}
