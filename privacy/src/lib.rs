//! # privacy
//!
//! Differential privacy for daofl. This crate will hold, once its issue lands: L2 clipping of
//! client updates, Gaussian noise from exact floating-point-safe samplers (opendp), adaptive
//! clipping (Andrew et al. 2021), the RDP and PLD accountants for the Poisson-subsampled
//! Gaussian, the distributed discrete Gaussian accounting used with secure aggregation, and a
//! budget ledger that refuses rounds over a total (ε, δ).
//!
//! It knows nothing of rounds or transports: it works on slices, counts and privacy events.
//! Nothing is implemented yet; no daofl crate depends on it so far.
