//! The error type of the homomorphic backend.

/// Everything that can go wrong in the homomorphic backend.
///
/// Peer input (a ciphertext, a request, a share bundle) that fails a check is reported here and
/// never panics. The variants name what was wrong; the messages say what to do.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The parameters are inconsistent or outside what this backend supports.
    #[error("invalid HE parameters: {0}")]
    InvalidParams(String),
    /// A message could not be decoded: truncated, trailing bytes, wrong tag or over a limit.
    #[error("malformed HE message: {0}")]
    Malformed(String),
    /// A message is well formed but does not fit the round, key or aggregate it was sent for.
    #[error("HE message does not fit: {0}")]
    Mismatch(String),
    /// A signature did not verify, or the signer is not a registered client.
    #[error("bad signature from client {client}")]
    BadSignature {
        /// The claimed signer.
        client: u32,
    },
    /// A client was already counted in this aggregate, or a chunk was sent twice.
    #[error("duplicate contribution: {0}")]
    Duplicate(String),
    /// A committee member refuses to decrypt (too few contributors, repeated round, not its turn).
    #[error("decryption refused: {0}")]
    Refused(String),
    /// Too few partial decryptions, or partials that do not belong to the request.
    #[error("cannot combine partial decryptions: {0}")]
    Combine(String),
    /// The values to encrypt do not fit the plaintext space.
    #[error("plaintext out of range: {0}")]
    PlaintextRange(String),
}

/// `Result` with the HE [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
