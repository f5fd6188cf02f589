//! # privacy
//!
//! Client-level differential privacy for daofl, as plain functions and small state machines
//! on slices, counts and privacy events:
//!
//! - [`clip`]: L2 clipping of an update to a norm bound `C`, checked on the stored `f32`s so
//!   the clipped update's norm is never above `C`.
//! - [`noise`]: Gaussian noise drawn from an *exact* discrete Gaussian (Canonne, Kamath and
//!   Steinke 2020) on a fine lattice, with a CSPRNG; never floating-point Gaussian sampling
//!   (Mironov 2012). A fast integer-arithmetic sampler does the work; opendp's sampler is the
//!   reference it is tested against (`tests/it/sampler.rs`) and benchmarked against
//!   (`privacy/BENCH.md`).
//! - [`mechanism`]: central DP-FedAvg ([`CentralGaussian`]), local DP ([`LocalGaussian`]) and
//!   the distributed discrete Gaussian for secure aggregation
//!   ([`DistributedDiscreteGaussian`]), each with the [`DpEvent`] its rounds are accounted as.
//! - [`adaptive`]: adaptive clipping (Andrew et al. 2021), geometric update driven by the
//!   noisy *unclipped* fraction, with the noise split between the count and the update.
//! - [`accounting`]: the [`DpEvent`] model and two accountants for the Poisson-subsampled
//!   Gaussian under add/remove-one adjacency: RDP (integer and fractional orders, the CKS20
//!   conversion) and PLD (pessimistic connect-the-dots discretisation, FFT composition), both
//!   checked against Google's `dp_accounting` 0.6.0 (`tests/fixtures/dp_accounting.csv`), and
//!   [`accounting::noise_for_epsilon`].
//! - [`ledger`]: a [`PrivacyLedger`] with a total `(ε, δ)` budget that authorises a round
//!   before it runs and refuses the one that would exceed the budget; serialisable for
//!   checkpoint manifests.
//!
//! It does **not** know about rounds, clients, transports, models or checkpoints: the caller
//! (the aggregator's round engine, the client session) decides when to clip, when to add
//! noise, which clients took part and which event a round is; this crate does the arithmetic
//! and keeps the books. Randomness for DP comes from the operating system ([`noise::os_rng`],
//! a ChaCha20 stream seeded from `getrandom`), never from a run seed; tests inject a seeded
//! CSPRNG. Bad input (NaN, a negative sigma, a rate outside `[0, 1]`, a delta outside
//! `(0, 1)`, a corrupted ledger file) is an [`Error`], never a panic.
//!
//! There are no feature flags.
//!
//! ## Example: one round of central DP-FedAvg under a budget
//!
//! ```
//! use privacy::mechanism::{CentralGaussian, CentralGaussianConfig};
//! use privacy::{AccountantKind, PrivacyLedger, accounting, noise};
//!
//! // 1000 clients, 10 expected per round; epsilon 2 at delta 1e-5 over 1000 rounds.
//! let z = accounting::noise_for_epsilon(0.01, 1000, 1e-5, 2.0, AccountantKind::Rdp)?;
//! assert!(z > 0.9 && z < 1.1);
//! let mechanism = CentralGaussian::new(CentralGaussianConfig {
//!     clip_norm: 1.0,
//!     noise_multiplier: z,
//!     sampling_rate: 0.01,
//!     expected_clients: 10.0,
//! })?;
//! let mut ledger = PrivacyLedger::new(2.0, 1e-5, AccountantKind::Rdp)?;
//!
//! // Before the round: may it run?
//! let authorization = ledger.authorize(&mechanism.round_event())?;
//!
//! // Clients' updates are clipped and summed (here two of them, 3 coordinates).
//! let mut sum = vec![0.0_f32; 3];
//! for mut update in [vec![3.0_f32, 4.0, 0.0], vec![0.1, 0.0, 0.1]] {
//!     let clipped = mechanism.clip(&mut update)?;
//!     assert!(clipped.original_norm <= 5.0);
//!     for (s, u) in sum.iter_mut().zip(&update) {
//!         *s += u;
//!     }
//! }
//!
//! // The server noises the sum and normalises it; the round is spent when noise is released.
//! let mut rng = noise::os_rng()?;
//! mechanism.privatize_sum(&mut sum, &mut rng)?;
//! let spent = ledger.commit(authorization)?;
//! assert!(spent > 0.0 && spent < 2.0);
//! # Ok::<(), privacy::Error>(())
//! ```

#![forbid(unsafe_code)]

pub mod accounting;
pub mod adaptive;
pub mod clip;
pub mod ledger;
pub mod mechanism;
pub mod noise;
mod special;

pub use accounting::{Accountant, AccountantKind, DpEvent};
pub use ledger::{Authorization, BudgetExceeded, PrivacyLedger};
pub use mechanism::{CentralGaussian, DistributedDiscreteGaussian, LocalGaussian};

/// Everything that can go wrong in this crate. Bad input is an error, never a panic.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// A parameter was NaN, infinite, negative, zero or otherwise out of its range.
    #[error("invalid parameter `{name}` = {value}: expected {expected}")]
    InvalidParameter {
        /// The parameter's name, as in the function signature.
        name: &'static str,
        /// The value that was passed, rendered as text.
        value: String,
        /// What the parameter must be.
        expected: &'static str,
    },
    /// An input vector held a NaN or infinite coordinate.
    #[error("coordinate {index} of `{name}` is not finite ({value}); drop or repair the update")]
    NonFiniteInput {
        /// The slice's parameter name.
        name: &'static str,
        /// Index of the first offending coordinate.
        index: usize,
        /// The offending value.
        value: f32,
    },
    /// A value is too large to be placed on the noise lattice without overflow.
    #[error(
        "coordinate {index} ({value}) is too large for the noise lattice 2^-{lattice_exponent}; \
         values must stay below 2^62 lattice steps"
    )]
    OffLattice {
        /// Index of the offending coordinate.
        index: usize,
        /// The offending value.
        value: f32,
        /// The lattice exponent `k` (spacing `2^-k`).
        lattice_exponent: i32,
    },
    /// The random source failed (no system entropy) or a sampler could not finish exactly.
    #[error("sampler failed: {0}")]
    Sampler(String),
    /// The accountant cannot account for this event (e.g. subsampling of a non-Gaussian).
    #[error("unsupported privacy event for the {accountant} accountant: {reason}")]
    UnsupportedEvent {
        /// Which accountant refused.
        accountant: &'static str,
        /// Why.
        reason: String,
    },
    /// No noise multiplier in the search range meets the target epsilon.
    #[error("no noise multiplier up to {max_noise_multiplier} reaches epsilon {target_epsilon}")]
    TargetUnreachable {
        /// The target epsilon.
        target_epsilon: f64,
        /// The largest noise multiplier searched.
        max_noise_multiplier: f64,
    },
    /// A computation would need more memory than this crate allows itself (e.g. a privacy
    /// loss distribution for a tiny noise multiplier at a fine discretisation).
    #[error("{what} would need {needed:.3e} points, more than the limit of {limit:.3e}")]
    TooLarge {
        /// What would have been built.
        what: &'static str,
        /// Its size.
        needed: f64,
        /// The most this crate builds.
        limit: f64,
    },
    /// A round would exceed the privacy budget; see [`BudgetExceeded`].
    #[error(transparent)]
    BudgetExceeded(#[from] BudgetExceeded),
    /// An authorization was committed to a ledger whose state changed since it was issued.
    #[error(
        "stale authorization: issued when {issued_rounds} rounds were committed, ledger now has \
         {ledger_rounds}; authorize the round again"
    )]
    StaleAuthorization {
        /// Number of committed rounds when the authorization was issued.
        issued_rounds: u64,
        /// Number of committed rounds now.
        ledger_rounds: u64,
    },
}

impl Error {
    pub(crate) fn param(
        name: &'static str,
        value: impl std::fmt::Display,
        expected: &'static str,
    ) -> Self {
        Error::InvalidParameter {
            name,
            value: value.to_string(),
            expected,
        }
    }
}

/// Checks that `value` is finite and strictly positive.
pub(crate) fn positive(name: &'static str, value: f64) -> Result<f64, Error> {
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(Error::param(name, value, "a finite number > 0"))
    }
}

/// Checks that `value` is a probability in `[0, 1]`.
pub(crate) fn probability(name: &'static str, value: f64) -> Result<f64, Error> {
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(Error::param(name, value, "a probability in [0, 1]"))
    }
}
