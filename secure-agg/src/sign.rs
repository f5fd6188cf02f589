//! Identity signatures, as traits the embedding application implements (daofl signs with the
//! member's secp256k1 key, EIP-191; the tests use k256 ECDSA).

/// Signs this client's protocol messages with its long-term identity key.
pub trait MessageSigner {
    /// A signature over `message` (already domain-separated and bound to the round).
    fn sign(&self, message: &[u8]) -> Vec<u8>;
}

/// Checks a client's signature against its registered identity.
pub trait SignatureVerifier {
    /// Whether `signature` is `client`'s signature over `message`. Must return `false` (not
    /// panic) for malformed signatures and unknown clients.
    fn verify(&self, client: u32, message: &[u8], signature: &[u8]) -> bool;
}

impl<T: MessageSigner + ?Sized> MessageSigner for &T {
    fn sign(&self, message: &[u8]) -> Vec<u8> {
        (**self).sign(message)
    }
}

impl<T: SignatureVerifier + ?Sized> SignatureVerifier for &T {
    fn verify(&self, client: u32, message: &[u8], signature: &[u8]) -> bool {
        (**self).verify(client, message, signature)
    }
}
