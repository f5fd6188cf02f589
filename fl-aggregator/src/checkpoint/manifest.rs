//! The JSON manifest that describes one checkpointed round.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use fl_core::{ClientId, ContentHash, Metrics, ParamVec, Schema, SchemaHash};
use serde::{Deserialize, Serialize};

use super::error::Problem;

/// The manifest format this build writes and reads.
pub const MANIFEST_VERSION: u32 = 1;

/// Largest manifest read (a schema of many thousand tensors is well below it); a larger object
/// under `rounds/` is reported as unreadable rather than read into memory.
pub(crate) const MAX_MANIFEST_BYTES: u64 = 64 << 20;

/// The record of one completed round: which parameters it produced, for which model, from whom,
/// under which configuration, with which metrics.
///
/// Stored as pretty JSON at `rounds/<round:010>.json`. It carries the full [`Schema`], so a
/// checkpoint can be read without the model's code. Hashes are hex SHA-256 digests except
/// `params_cid`, which is the CIDv1 (`raw`, base32) the parameter object is stored under, as
/// IPFS prints it.
///
/// Floating-point values (metrics, privacy budget) round-trip bit for bit: finite values are
/// written as the shortest decimal that reads back to the same `f64` and are read back with a
/// correctly rounded parser (so `-0.0` stays `-0.0`). JSON has no non-finite numbers, so those are
/// written as the strings `"NaN"`, `"Infinity"` and `"-Infinity"`; a NaN's sign and payload
/// cannot be kept, so [`Manifest::new`] stores every NaN as [`f64::NAN`], which is what reads
/// back. The derived `PartialEq` follows IEEE 754, under which a NaN metric is unequal to itself:
/// compare manifests holding NaN through their JSON or their values' bits.
///
/// Deserialising reads the raw JSON text of each number, so it needs `serde_json` (reading a
/// stored manifest goes through [`CheckpointStore`](super::CheckpointStore), which checks it
/// further).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Manifest {
    /// Manifest format version ([`MANIFEST_VERSION`] when written by this build).
    pub version: u32,
    /// The federation this checkpoint belongs to.
    pub federation_id: String,
    /// The round completed (the engine resumes with `completed_rounds = round`).
    pub round: u64,
    /// Content identifier of the parameters: CIDv1 of their canonical little-endian bytes, also
    /// the name of the parameter object (`params/<cid>`).
    #[serde(with = "fl_core::hash::cid_string")]
    pub params_cid: ContentHash,
    /// The model's tensors (names and shapes) in order.
    #[serde(with = "sized_schema")]
    pub schema: Schema,
    /// Hash of `schema` (see [`Schema::hash`]).
    pub schema_hash: SchemaHash,
    /// Who contributed to the round.
    pub participants: Vec<Participant>,
    /// Each client id's participant id (`"3"` to `"0xAb…"`): what the per-client round
    /// metrics (`qa.<client>.*`, `contribution.<client>.*`) refer to, so that rewards and
    /// reputations can be paid to and restored for addresses. Empty in manifests written before
    /// it (and not written then).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub clients: std::collections::BTreeMap<String, String>,
    /// Round metrics (aggregated training and evaluation metrics).
    #[serde(with = "json_f64::map")]
    pub metrics: Metrics,
    /// Hash of the federation configuration the round ran under (as given by the caller).
    pub config_hash: ContentHash,
    /// When the checkpoint was written, RFC 3339 (UTC).
    pub created_at: String,
    /// Differential-privacy budget spent up to and including this round, when DP is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privacy: Option<PrivacySpent>,
    /// Where the round is anchored on chain: a [`ManifestAnchor`](crate::anchoring::ManifestAnchor)
    /// (the transaction receipt or embedded block, and the round's batch proof when it was
    /// anchored in a batch), filled in after the checkpoint is written. Absent: not anchored
    /// (yet); the aggregator anchors such rounds when it starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anchor: Option<serde_json::Value>,
    /// Content identifier of the strategy's model-sized state after the round
    /// ([`fl_core::Strategy::strategy_state`]: SCAFFOLD's server control variate), stored like
    /// the parameters (`params/<cid>`, the model's schema). Absent: the strategy keeps none.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "fl_core::hash::cid_string::option"
    )]
    pub strategy_state: Option<ContentHash>,
    /// Content identifier of the model card published with these parameters (what an
    /// inference node and a voter read: architecture, featuriser, labels, input limits,
    /// training data, test metrics; see `fl_client::model_card`), stored as
    /// `cards/<cid>.json` ([`CheckpointStore::put_card`](super::CheckpointStore::put_card)).
    /// Anchored with the round: its digest is a leaf of the participants root
    /// ([`crate::anchoring::model_card_leaf_address`]). Absent: no card (every training
    /// round but a published one, and manifests written before cards existed).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "fl_core::hash::cid_string::option"
    )]
    pub model_card: Option<ContentHash>,
}

impl Manifest {
    /// The manifest [`CheckpointStore::save`](super::CheckpointStore::save) writes for `params`;
    /// every NaN in the metrics and privacy record becomes [`f64::NAN`] (what JSON reads back).
    pub fn new(meta: CheckpointMeta, params: &ParamVec) -> Self {
        let schema = params.schema().as_ref().clone();
        let mut metrics = meta.metrics;
        metrics
            .values_mut()
            .for_each(|v| *v = json_f64::canonical(*v));
        let privacy = meta.privacy.map(|p| PrivacySpent {
            epsilon: json_f64::canonical(p.epsilon),
            delta: json_f64::canonical(p.delta),
            rounds: p.rounds,
        });
        Self {
            version: MANIFEST_VERSION,
            federation_id: meta.federation_id,
            round: meta.round,
            params_cid: params.content_hash(),
            schema_hash: schema.hash(),
            schema,
            participants: meta.participants,
            clients: meta.clients,
            metrics,
            config_hash: meta.config_hash,
            created_at: meta
                .created_at
                .unwrap_or_else(|| rfc3339_utc(SystemTime::now())),
            privacy,
            anchor: meta.anchor,
            strategy_state: meta.strategy_state.map(|s| s.content_hash()),
            model_card: meta.model_card,
        }
    }

    /// Bytes the parameter object must have: 4 per value of the schema.
    pub fn params_len(&self) -> u64 {
        self.schema.num_values() as u64 * 4
    }

    /// Parses a manifest file's bytes (e.g. a `rounds/<n>.json` copied out of a store), never
    /// panicking on hostile input; `path` names it in errors.
    ///
    /// # Errors
    /// The [`Problem`] that makes it unreadable.
    pub fn from_json(path: &str, bytes: &[u8]) -> Result<Self, Problem> {
        Self::parse(path, bytes)
    }

    /// Parses a stored manifest, never panicking on hostile input.
    ///
    /// The version is read first, so a manifest from a newer daofl is reported as such rather
    /// than as unreadable. The typed parse then reads `bytes` again (not the generic JSON
    /// value, whose numbers are already rounded) so that metrics come back exactly.
    pub(crate) fn parse(path: &str, bytes: &[u8]) -> Result<Self, Problem> {
        let unreadable = |reason: String| Problem::ManifestUnreadable {
            path: path.to_owned(),
            reason,
        };
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| unreadable(e.to_string()))?;
        if !value.is_object() {
            return Err(unreadable("not a JSON object".into()));
        }
        let version = value
            .get("version")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| unreadable("no numeric `version` field".into()))?;
        if version > u64::from(MANIFEST_VERSION) {
            return Err(Problem::UnsupportedVersion {
                path: path.to_owned(),
                found: version,
            });
        }
        if version == 0 {
            return Err(unreadable("format version 0 does not exist".into()));
        }
        drop(value);
        serde_json::from_slice(bytes).map_err(|e| unreadable(e.to_string()))
    }
}

/// A [`Schema`] whose shapes are size-checked before it is built: [`Schema::new`] multiplies
/// the dimensions unchecked, which panics on overflow in a debug build. The check is part of
/// deserialising (not a pass over the JSON before it), so no shape reaches `Schema::new`
/// unchecked, even from a manifest with a duplicated `schema` key.
mod sized_schema {
    use fl_core::{Schema, TensorSpec};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(schema: &Schema, s: S) -> Result<S::Ok, S::Error> {
        schema.serialize(s)
    }

    /// What [`Schema`]'s own `Deserialize` reads.
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Raw {
        tensors: Vec<TensorSpec>,
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Schema, D::Error> {
        let Raw { tensors } = Raw::deserialize(d)?;
        if !byte_size_fits(&tensors) {
            return Err(serde::de::Error::custom(
                "the schema's tensor shapes describe more values than fit in memory",
            ));
        }
        Schema::new(tensors).map_err(serde::de::Error::custom)
    }

    /// Whether the schema's values, 4 bytes each, can be counted and addressed: every product
    /// and sum that [`Schema::new`] computes, in its order, without overflow.
    pub(super) fn byte_size_fits(tensors: &[TensorSpec]) -> bool {
        let total = tensors.iter().try_fold(0usize, |total, t| {
            let n = t.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))?;
            total.checked_add(n)
        });
        total.and_then(|n| n.checked_mul(4)).is_some()
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn sizes() {
            let spec = |shape: &[usize]| TensorSpec::new("t", shape.to_vec());
            assert!(byte_size_fits(&[spec(&[3, 4]), spec(&[3])]));
            assert!(byte_size_fits(&[spec(&[0, usize::MAX, usize::MAX])])); // 0 first: no overflow
            assert!(!byte_size_fits(&[spec(&[usize::MAX, usize::MAX, 0])]));
            assert!(!byte_size_fits(&[spec(&[usize::MAX / 4 + 1])])); // bytes overflow
            assert!(!byte_size_fits(&[
                spec(&[usize::MAX / 8 + 1]),
                spec(&[usize::MAX / 8 + 1])
            ]));
        }
    }
}

/// What the caller of [`CheckpointStore::save`](super::CheckpointStore::save) says about a round;
/// the store adds the parameter CID and schema.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct CheckpointMeta {
    /// The federation the round belongs to.
    pub federation_id: String,
    /// The round completed.
    pub round: u64,
    /// Hash of the federation configuration bytes.
    pub config_hash: ContentHash,
    /// Who contributed.
    pub participants: Vec<Participant>,
    /// Client id to participant id (see [`Manifest::clients`]).
    pub clients: std::collections::BTreeMap<String, String>,
    /// Round metrics.
    pub metrics: Metrics,
    /// RFC 3339 time of the checkpoint; `None` takes the system clock at save time.
    pub created_at: Option<String>,
    /// Privacy budget spent so far.
    pub privacy: Option<PrivacySpent>,
    /// Reserved for chain anchoring.
    pub anchor: Option<serde_json::Value>,
    /// The strategy's model-sized state to keep with the round (SCAFFOLD's server control
    /// variate), written as a second parameter object.
    pub strategy_state: Option<Arc<ParamVec>>,
    /// The CID of a model card already stored with
    /// [`CheckpointStore::put_card`](super::CheckpointStore::put_card) (see
    /// [`Manifest::model_card`]).
    pub model_card: Option<ContentHash>,
}

impl CheckpointMeta {
    /// Metadata for `round` of `federation_id` run under the configuration hashed to
    /// `config_hash`, with no participants, metrics or privacy record yet.
    pub fn new(federation_id: impl Into<String>, round: u64, config_hash: ContentHash) -> Self {
        Self {
            federation_id: federation_id.into(),
            round,
            config_hash,
            participants: Vec::new(),
            clients: std::collections::BTreeMap::new(),
            metrics: Metrics::new(),
            created_at: None,
            privacy: None,
            anchor: None,
            strategy_state: None,
            model_card: None,
        }
    }

    /// Sets the participants.
    pub fn with_participants(
        mut self,
        participants: impl IntoIterator<Item = Participant>,
    ) -> Self {
        self.participants = participants.into_iter().collect();
        self
    }

    /// Sets the metrics.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Sets the client map (client id to participant id).
    pub fn with_clients(mut self, clients: std::collections::BTreeMap<String, String>) -> Self {
        self.clients = clients;
        self
    }

    /// Sets the creation time (RFC 3339), e.g. for reproducible manifests in tests.
    pub fn with_created_at(mut self, created_at: impl Into<String>) -> Self {
        self.created_at = Some(created_at.into());
        self
    }

    /// Sets the privacy budget spent.
    pub fn with_privacy(mut self, privacy: PrivacySpent) -> Self {
        self.privacy = Some(privacy);
        self
    }

    /// Names the model card published with the round's parameters (its CID as
    /// [`CheckpointStore::put_card`](super::CheckpointStore::put_card) returned it).
    pub fn with_model_card(mut self, card: ContentHash) -> Self {
        self.model_card = Some(card);
        self
    }

    /// Sets the strategy's state to keep with the round ([`fl_core::Strategy::strategy_state`]);
    /// it must have the parameters' schema.
    pub fn with_strategy_state(mut self, state: Arc<ParamVec>) -> Self {
        self.strategy_state = Some(state);
        self
    }
}

/// A contributor to a round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Participant {
    /// Who: a client id (`client-7`) or a member address (`0x…`).
    pub id: String,
    /// Hash of the update it sent, when the aggregator saw one (never under secure aggregation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_hash: Option<ContentHash>,
}

impl Participant {
    /// A participant known by `id`, without an update hash.
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            update_hash: None,
        }
    }

    /// Records the hash of the participant's update.
    pub fn with_update_hash(mut self, hash: ContentHash) -> Self {
        self.update_hash = Some(hash);
        self
    }
}

impl From<ClientId> for Participant {
    fn from(id: ClientId) -> Self {
        Self::new(id.to_string())
    }
}

/// Differential-privacy budget spent up to and including a round.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacySpent {
    /// ε spent so far (may be infinite).
    #[serde(with = "json_f64")]
    pub epsilon: f64,
    /// δ of the (ε, δ) guarantee.
    #[serde(with = "json_f64")]
    pub delta: f64,
    /// Rounds whose privacy cost was committed: what a restarted aggregator replays into its
    /// ledger ([`fl_core::Strategy::resume`]). Absent (0) in manifests written before it
    /// existed.
    #[serde(default)]
    pub rounds: u64,
}

/// `time` as RFC 3339 UTC with seconds (`2025-01-31T12:00:00Z`); times before 1970 print as the
/// epoch.
pub fn rfc3339_utc(time: SystemTime) -> String {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `f64` in JSON, exactly: finite values as numbers, non-finite ones as strings.
///
/// `serde_json` without its `float_roundtrip` feature (which this workspace does not turn on)
/// reads about one shortest decimal in thirteen (measured on values between 0 and 10) as a
/// neighbouring `f64`, so numbers are read from their raw JSON text with Rust's correctly
/// rounded parser instead.
mod json_f64 {
    use serde::{Deserialize, Deserializer, Serializer};
    use serde_json::value::RawValue;

    /// `v`, with any NaN replaced by [`f64::NAN`] (the one NaN that JSON text reads back as).
    pub fn canonical(v: f64) -> f64 {
        if v.is_nan() { f64::NAN } else { v }
    }

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_nan() {
            s.serialize_str("NaN")
        } else if *v == f64::INFINITY {
            s.serialize_str("Infinity")
        } else if *v == f64::NEG_INFINITY {
            s.serialize_str("-Infinity")
        } else {
            s.serialize_f64(*v) // shortest decimal that reads back to `v`
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        let raw = Box::<RawValue>::deserialize(d)?;
        from_json_text(raw.get())
    }

    /// Reads one JSON value's text: a number, or `"NaN"`, `"Infinity"`, `"-Infinity"`.
    fn from_json_text<E: serde::de::Error>(text: &str) -> Result<f64, E> {
        let expected = || {
            E::custom(format!(
                "expected a finite number, \"NaN\", \"Infinity\" or \"-Infinity\", got {text}"
            ))
        };
        if text.starts_with('"') {
            let s: String = serde_json::from_str(text).map_err(E::custom)?;
            return match s.as_str() {
                "NaN" => Ok(f64::NAN),
                "Infinity" => Ok(f64::INFINITY),
                "-Infinity" => Ok(f64::NEG_INFINITY),
                _ => Err(expected()),
            };
        }
        // The text is valid JSON, so a number token, which Rust's float grammar includes. A
        // number beyond f64's range parses to an infinity: refused, as serde_json would.
        match text.parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(v),
            _ => Err(expected()),
        }
    }

    /// A metrics map with values through [`super::json_f64`].
    pub mod map {
        use fl_core::Metrics;
        use serde::ser::SerializeMap;
        use serde::{Deserialize, Deserializer, Serializer};
        use serde_json::value::RawValue;
        use std::collections::BTreeMap;

        /// One value through [`super::serialize`].
        struct Exact(f64);

        impl serde::Serialize for Exact {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                super::serialize(&self.0, s)
            }
        }

        pub fn serialize<S: Serializer>(m: &Metrics, s: S) -> Result<S::Ok, S::Error> {
            let mut map = s.serialize_map(Some(m.len()))?;
            for (k, v) in m {
                map.serialize_entry(k, &Exact(*v))?;
            }
            map.end()
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Metrics, D::Error> {
            BTreeMap::<String, Box<RawValue>>::deserialize(d)?
                .into_iter()
                .map(|(k, v)| Ok((k, super::from_json_text(v.get())?)))
                .collect()
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn read(text: &str) -> Result<f64, serde_json::Error> {
            from_json_text(text)
        }

        #[test]
        fn numbers_read_exactly() {
            // serde_json's default parser reads these one ulp off.
            for v in [
                1.7546217903306627_f64,
                7.2316896362404055,
                9.720916325967499,
            ] {
                let text = serde_json::to_string(&v).unwrap();
                assert_eq!(read(&text).unwrap().to_bits(), v.to_bits(), "{text}");
            }
            assert_eq!(read("-0.0").unwrap().to_bits(), (-0.0f64).to_bits());
            assert_eq!(read("1E+2").unwrap(), 100.0);
            assert_eq!(read("5e-324").unwrap(), f64::from_bits(1));
            assert!(read("\"NaN\"").unwrap().is_nan());
            assert_eq!(read("\"-Infinity\"").unwrap(), f64::NEG_INFINITY);
        }

        #[test]
        fn other_values_are_refused() {
            for text in [
                "1e400", "-1e400", "\"inf\"", "\"nan\"", "null", "true", "[1]", "{}",
            ] {
                let err = read(text).unwrap_err().to_string();
                assert!(err.contains("expected a finite number"), "{text}: {err}");
            }
        }
    }
}
