//! Real signatures (k256 ECDSA) and a manual round driver.

use std::collections::BTreeMap;

use k256::ecdsa::signature::{Signer, Verifier};
use k256::ecdsa::{Signature, SigningKey, VerifyingKey};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use secure_agg::{
    ClientRound, InboundShares, KeyDirectory, MessageSigner, RoundBinding, SecAggParams,
    ServerRound, SignatureVerifier, UnmaskRequest,
};
use sha2::{Digest, Sha256};

pub struct EcdsaSigner(pub SigningKey);

impl MessageSigner for EcdsaSigner {
    fn sign(&self, message: &[u8]) -> Vec<u8> {
        let sig: Signature = self.0.sign(message);
        sig.to_bytes().to_vec()
    }
}

pub struct Registry(pub BTreeMap<u32, VerifyingKey>);

impl SignatureVerifier for Registry {
    fn verify(&self, client: u32, message: &[u8], signature: &[u8]) -> bool {
        let Some(key) = self.0.get(&client) else {
            return false;
        };
        let Ok(sig) = Signature::from_slice(signature) else {
            return false;
        };
        key.verify(message, &sig).is_ok()
    }
}

pub fn signing_key(id: u32, salt: u64) -> SigningKey {
    let mut h = Sha256::new();
    h.update(b"secure-agg test identity");
    h.update(id.to_le_bytes());
    h.update(salt.to_le_bytes());
    SigningKey::from_slice(&h.finalize()).expect("a valid scalar")
}

pub fn identities(ids: &[u32]) -> (BTreeMap<u32, Box<dyn MessageSigner>>, Registry) {
    let mut signers: BTreeMap<u32, Box<dyn MessageSigner>> = BTreeMap::new();
    let mut keys = BTreeMap::new();
    for &i in ids {
        let sk = signing_key(i, 0);
        keys.insert(i, *sk.verifying_key());
        signers.insert(i, Box::new(EcdsaSigner(sk)));
    }
    (signers, Registry(keys))
}

/// A keyed-hash stand-in for signatures, for the long property tests (k256 verification of
/// n² advertisements dominates them otherwise). Unforgeable without the per-client key, which
/// only the registry and the client hold; the security tests use real ECDSA.
pub struct MacSigner(pub [u8; 32]);

impl MessageSigner for MacSigner {
    fn sign(&self, message: &[u8]) -> Vec<u8> {
        let mut h = Sha256::new();
        h.update(self.0);
        h.update(message);
        h.finalize().to_vec()
    }
}

pub struct MacRegistry(pub BTreeMap<u32, [u8; 32]>);

impl SignatureVerifier for MacRegistry {
    fn verify(&self, client: u32, message: &[u8], signature: &[u8]) -> bool {
        self.0
            .get(&client)
            .is_some_and(|k| MacSigner(*k).sign(message) == signature)
    }
}

pub fn mac_identities(ids: &[u32]) -> (BTreeMap<u32, Box<dyn MessageSigner>>, MacRegistry) {
    let mut signers: BTreeMap<u32, Box<dyn MessageSigner>> = BTreeMap::new();
    let mut keys = BTreeMap::new();
    for &i in ids {
        let key: [u8; 32] = Sha256::digest(i.to_le_bytes()).into();
        keys.insert(i, key);
        signers.insert(i, Box::new(MacSigner(key)));
    }
    (signers, MacRegistry(keys))
}

pub fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

pub const BINDING: RoundBinding = RoundBinding {
    session: [0x5a; 32],
    round: 7,
};

/// A round driven by hand up to the unmask stage, every client present.
pub struct Manual {
    pub params: SecAggParams,
    pub signers: BTreeMap<u32, Box<dyn MessageSigner>>,
    pub registry: Registry,
    pub clients: BTreeMap<u32, ClientRound>,
    pub server: ServerRound,
    pub directory: Option<KeyDirectory>,
    pub inbound: BTreeMap<u32, InboundShares>,
    pub inputs: BTreeMap<u32, Vec<u32>>,
    pub masked: BTreeMap<u32, Vec<u32>>,
    pub requests: BTreeMap<u32, UnmaskRequest>,
}

impl Manual {
    pub fn new(n: u32, params: SecAggParams, seed: u64) -> Self {
        let ids: Vec<u32> = (0..n).collect();
        let (signers, registry) = identities(&ids);
        let mut r = rng(seed);
        let clients = ids
            .iter()
            .map(|&i| {
                (
                    i,
                    ClientRound::new(BINDING, params, i, &ids, &mut r).unwrap(),
                )
            })
            .collect();
        Self {
            params,
            signers,
            registry,
            clients,
            server: ServerRound::new(BINDING, params, &ids).unwrap(),
            directory: None,
            inbound: BTreeMap::new(),
            inputs: BTreeMap::new(),
            masked: BTreeMap::new(),
            requests: BTreeMap::new(),
        }
    }

    pub fn advertise(&mut self) {
        for (&i, c) in &mut self.clients {
            let ad = c.advertise(self.signers[&i].as_ref()).unwrap();
            self.server
                .handle_advertisement(i, ad, &self.registry)
                .unwrap();
        }
        self.directory = Some(self.server.close_advertise().unwrap());
    }

    pub fn share_keys(&mut self) {
        let dir = self.directory.clone().unwrap();
        for (&i, c) in &mut self.clients {
            let p = c
                .handle_key_directory(dir.clone(), &self.registry, self.signers[&i].as_ref())
                .unwrap();
            self.server
                .handle_share_packets(i, p, &self.registry)
                .unwrap();
        }
        self.inbound = self
            .server
            .close_share_keys()
            .unwrap()
            .into_iter()
            .collect();
    }

    /// Masks each client's input `i + j` (mod 2^k) and hands it to the server.
    pub fn masked_input(&mut self) {
        let mask = if self.params.modulus_bits == 32 {
            u32::MAX
        } else {
            (1 << self.params.modulus_bits) - 1
        };
        for (&i, c) in &mut self.clients {
            let input: Vec<u32> = (0..self.params.vector_len as u32)
                .map(|j| (i + j) & mask)
                .collect();
            let mut masked = input.clone();
            let h = c
                .handle_shares(
                    self.inbound[&i].clone(),
                    &mut masked,
                    self.signers[&i].as_ref(),
                )
                .unwrap();
            self.server
                .handle_masked_input(i, h, &masked, &self.registry)
                .unwrap();
            self.inputs.insert(i, input);
            self.masked.insert(i, masked);
        }
        self.requests = self
            .server
            .close_masked_input()
            .unwrap()
            .into_iter()
            .collect();
    }
}
