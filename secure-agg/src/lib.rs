//! # secure-agg
//!
//! Secure aggregation for daofl: the aggregator learns only the sum of the clients' updates.
//! This crate will hold, once its issues land: the fixed-point codec (clip, rotate, quantize,
//! reduce mod 2^k), the SecAgg+ client and server state machines (pairwise masking with
//! dropout recovery, Bell et al. 2020), and the additive LWE homomorphic backend built on
//! `tfhe::core_crypto` with committee threshold decryption.
//!
//! Like the rest of daofl's protocol cores it will do no IO. Nothing is implemented yet.
