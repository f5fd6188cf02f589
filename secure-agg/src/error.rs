//! The crate's one error type.

/// Everything that can go wrong in this crate. Input from a peer is checked and turned into
/// one of these, never a panic.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// A configuration or call parameter is out of its range.
    #[error("invalid parameter `{name}` = {value}: expected {expected}")]
    InvalidParameter {
        /// The parameter's name.
        name: &'static str,
        /// The value passed, as text.
        value: String,
        /// What it must be.
        expected: String,
    },
    /// The codec's configuration cannot guarantee that the sum of `clients` encodings stays
    /// inside the modulus (it would wrap around and decode to garbage).
    #[error(
        "n={clients} clients × |value| ≤ 2^{value_bits:.1} needs {needed_bits} bits, more than \
         {modulus_bits}: lower scale or clip_norm, or raise modulus_bits"
    )]
    WouldWrap {
        /// Number of clients whose encodings are summed.
        clients: u64,
        /// log2 of the largest absolute integer one client may contribute to a coordinate
        /// (value bound plus noise tail).
        value_bits: f64,
        /// Modulus bits the sum needs (sign included).
        needed_bits: u32,
        /// Modulus bits configured.
        modulus_bits: u32,
    },
    /// The privacy crate refused a clip, noise or sampler parameter.
    #[error(transparent)]
    Privacy(#[from] privacy::Error),
    /// A byte string is not a valid encoding of the expected message.
    #[error("malformed {message}: {reason}")]
    Malformed {
        /// The message type being decoded.
        message: &'static str,
        /// What was wrong (truncated, trailing bytes, a length over its limit, ...).
        reason: String,
    },
    /// A signature did not verify (forged, or made for another session, round or message).
    #[error("bad signature on the {message} of client {client}")]
    BadSignature {
        /// The claimed signer.
        client: u32,
        /// The message type.
        message: &'static str,
    },
    /// A method was called in a stage where it does not belong (or after the round failed).
    #[error("{call} called in stage {stage}")]
    WrongStage {
        /// The method.
        call: &'static str,
        /// The current stage.
        stage: &'static str,
    },
    /// A message names a client that is not (or no longer) part of this round, or not a
    /// neighbour where one is required.
    #[error("client {client} is not {expected}")]
    UnexpectedClient {
        /// The client index.
        client: u32,
        /// What it should have been (a participant, a neighbour, a sender of shares, ...).
        expected: &'static str,
    },
    /// A client sent (or was listed) twice where once is allowed.
    #[error("client {client} appears twice in {what}")]
    Duplicate {
        /// The client index.
        client: u32,
        /// Where.
        what: &'static str,
    },
    /// The server reported a client as both dropped and surviving: the request is refused and
    /// never answered.
    #[error("client {client} is reported both dropped and alive; refusing to unmask")]
    InconsistentDropouts {
        /// The client reported both ways.
        client: u32,
    },
    /// Too few clients are left for the threshold: the round aborts before anything more is
    /// revealed.
    #[error("only {have} {what}, the threshold needs {need}; round aborted")]
    TooFew {
        /// What is counted (survivors among my neighbours, advertisers, share senders...).
        what: &'static str,
        /// How many there are.
        have: usize,
        /// How many are needed.
        need: usize,
    },
    /// The server has fewer than `threshold` shares of a client's secret: the round aborts
    /// and the sum is not revealed.
    #[error("only {have} shares of client {client}'s {secret}, threshold {need}; round aborted")]
    TooFewShares {
        /// Whose secret.
        client: u32,
        /// Which secret (`self-mask seed` or `masking key`).
        secret: &'static str,
        /// Shares received.
        have: usize,
        /// Threshold.
        need: usize,
    },
    /// Shares of a client's secret are inconsistent: two subsets reconstruct different
    /// secrets, or a rebuilt masking key does not match its advertised public key (some client
    /// sent a wrong share). The round aborts.
    #[error(
        "inconsistent shares of client {client}'s secret (a wrong share was sent); round aborted"
    )]
    ReconstructionMismatch {
        /// Whose key.
        client: u32,
    },
    /// A share ciphertext failed authentication (tampered, or addressed to someone else).
    #[error("share ciphertext from client {from} failed authentication")]
    Decrypt {
        /// The claimed sender.
        from: u32,
    },
    /// A peer's public key is weak (low order): the shared secret would be predictable.
    #[error("client {client} advertised a weak (low-order) public key")]
    WeakKey {
        /// The client.
        client: u32,
    },
    /// A vector has the wrong length or a value outside `[0, 2^k)`.
    #[error("bad vector from client {client}: {reason}")]
    BadVector {
        /// The client (or the local client).
        client: u32,
        /// What was wrong.
        reason: String,
    },
    /// This client already answered an unmask request this round; it answers at most once.
    #[error("already answered an unmask request this round")]
    AlreadyAnswered,
}

impl Error {
    pub(crate) fn param(
        name: &'static str,
        value: impl std::fmt::Display,
        expected: impl Into<String>,
    ) -> Self {
        Error::InvalidParameter {
            name,
            value: value.to_string(),
            expected: expected.into(),
        }
    }

    pub(crate) fn malformed(message: &'static str, reason: impl Into<String>) -> Self {
        Error::Malformed {
            message,
            reason: reason.into(),
        }
    }
}

/// Shorthand for this crate's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;
