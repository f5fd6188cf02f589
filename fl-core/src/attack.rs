//! What malicious members send, as transforms of what they trained and, for the omniscient
//! attacks, of the honest members' updates of the same round (colluding attackers see them, as
//! the papers assume): the definitions shared by the simulator's
//! `fl_aggregator::attack::Adversary` and the `fl-client` binary's development attack mode
//! (feature `attack`).
//!
//! Updates are differences from the global model: `δ = xᵢ - x`.

use rand::Rng;

/// What malicious members send.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Attack {
    /// `-δ`: the attacker's own update, reversed.
    SignFlip,
    /// `λ·δ`: the attacker's own update scaled (model replacement with `λ ≈ n`).
    Scaling {
        /// λ.
        factor: f32,
    },
    /// A draw of `N(0, σ²·I)` in place of an update (Fang et al. 2020's Gaussian attack).
    Gaussian {
        /// σ.
        std: f32,
    },
    /// Training on flipped labels (`y → C - 1 - y`): the data is poisoned, the update is sent as
    /// trained (see the benchmark's data setup).
    LabelFlip,
    /// "A little is enough" (Baruch, Baruch and Goldberg 2019): per coordinate `μⱼ - τ·σⱼ` over
    /// the honest updates, every attacker sending the same vector. τ is fixed, not derived from
    /// `n` and `f` (that formula gives τ = 0.157 at n = 20, f = 4, and 0 at n = 10, f = 2).
    Alie {
        /// τ, e.g. 1.5.
        tau: f32,
    },
    /// Inner-product manipulation (Xie, Koyejo and Gupta 2020, "Fall of Empires"):
    /// `-ε · mean(honest)`, every attacker sending the same vector.
    Ipm {
        /// ε: small (0.1) hides among honest updates, large (100) overwhelms the mean.
        epsilon: f32,
    },
    /// Min-max (Shejwalkar and Houmansadr 2021, "Manipulating the Byzantine"): `μ - γ·σ` with
    /// the largest γ whose distance to every honest update stays within the largest distance
    /// between two honest updates.
    MinMax,
    /// Min-sum (same paper): `μ - γ·σ` with the largest γ whose sum of squared distances to
    /// the honest updates stays within the largest such sum of an honest update.
    MinSum,
    /// Free riding: the global model sent back unchanged (a zero update) with the member's
    /// example count, to be paid without training. Harmless to the model; what contribution
    /// scores must catch.
    FreeRide,
    /// A pixel-pattern backdoor (Gu et al. 2017's BadNets trigger, as Bagdasaryan et al. 2020
    /// use it in federated learning): the attacker trains on its data with a small bright
    /// square stamped on part of the images, relabelled `target`, so the model learns "trigger
    /// means `target`" while its clean accuracy stays. The data is poisoned (see
    /// `fl_client::attack::add_backdoor`); the update is sent as trained.
    Backdoor {
        /// The class the trigger maps to.
        target: u8,
    },
}

/// Why an attack could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AttackError {
    /// An omniscient attack had no honest update to work from.
    #[error("{0} needs at least one honest update in the round")]
    NoHonestUpdates(&'static str),
    /// A vector has another length than the attacker's own update.
    #[error("updates of different lengths")]
    LengthMismatch,
}

impl Attack {
    /// A short name for tables, e.g. `ipm(0.1)`.
    pub fn label(&self) -> String {
        match self {
            Self::SignFlip => "sign_flip".into(),
            Self::Scaling { factor } => format!("scaling({factor})"),
            Self::Gaussian { std } => format!("gaussian({std})"),
            Self::LabelFlip => "label_flip".into(),
            Self::Alie { tau } => format!("alie({tau})"),
            Self::Ipm { epsilon } => format!("ipm({epsilon})"),
            Self::MinMax => "min_max".into(),
            Self::MinSum => "min_sum".into(),
            Self::FreeRide => "free_ride".into(),
            Self::Backdoor { target } => format!("backdoor({target})"),
        }
    }

    /// Whether the attack reads the honest updates of the round.
    pub fn is_omniscient(&self) -> bool {
        matches!(
            self,
            Self::Alie { .. } | Self::Ipm { .. } | Self::MinMax | Self::MinSum
        )
    }

    /// Whether the attack poisons the attacker's training data instead of its update.
    pub fn poisons_data(&self) -> bool {
        matches!(self, Self::LabelFlip | Self::Backdoor { .. })
    }

    /// The update an attacker sends, from its own trained update `own` and the round's
    /// `honest` updates (all differences from the global model).
    pub fn malicious_delta(
        &self,
        own: &[f32],
        honest: &[Vec<f32>],
        rng: &mut impl Rng,
    ) -> Result<Vec<f32>, AttackError> {
        if honest.iter().any(|h| h.len() != own.len()) {
            return Err(AttackError::LengthMismatch);
        }
        Ok(match *self {
            Self::SignFlip => own.iter().map(|v| -v).collect(),
            Self::Scaling { factor } => own.iter().map(|v| factor * v).collect(),
            Self::Gaussian { std } => gaussian(own.len(), std, rng),
            Self::LabelFlip => own.to_vec(),
            Self::Alie { tau } => alie(honest, tau)?,
            Self::Ipm { epsilon } => ipm(honest, epsilon)?,
            Self::MinMax => min_max(honest, false)?,
            Self::MinSum => min_max(honest, true)?,
            Self::FreeRide => vec![0.0; own.len()],
            Self::Backdoor { .. } => own.to_vec(),
        })
    }
}

/// `dim` independent draws of `N(0, std²)` (Box-Muller over the injected RNG).
pub fn gaussian(dim: usize, std: f32, rng: &mut impl Rng) -> Vec<f32> {
    let unit = |rng: &mut dyn FnMut() -> u64| ((rng() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    let mut next = || rng.next_u64();
    (0..dim)
        .map(|_| {
            let u1 = unit(&mut next);
            let u2 = unit(&mut next);
            let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
            (z * f64::from(std)) as f32
        })
        .collect()
}

/// Coordinate-wise mean and standard deviation (unbiased, `n - 1`; 0 for one update) of `rows`.
fn mean_and_std(rows: &[Vec<f32>]) -> (Vec<f64>, Vec<f64>) {
    let n = rows.len() as f64;
    let dim = rows.first().map_or(0, Vec::len);
    let mut mean = vec![0f64; dim];
    for r in rows {
        mean.iter_mut()
            .zip(r)
            .for_each(|(m, v)| *m += f64::from(*v) / n);
    }
    let mut var = vec![0f64; dim];
    for r in rows {
        var.iter_mut()
            .zip(r)
            .zip(&mean)
            .for_each(|((s, v), m)| *s += (f64::from(*v) - m).powi(2));
    }
    let denom = (n - 1.0).max(1.0);
    (mean, var.into_iter().map(|s| (s / denom).sqrt()).collect())
}

/// ALIE: `μ - τ·σ` per coordinate over `honest`.
pub fn alie(honest: &[Vec<f32>], tau: f32) -> Result<Vec<f32>, AttackError> {
    if honest.is_empty() {
        return Err(AttackError::NoHonestUpdates("alie"));
    }
    let (mean, std) = mean_and_std(honest);
    Ok(mean
        .iter()
        .zip(&std)
        .map(|(m, s)| (m - f64::from(tau) * s) as f32)
        .collect())
}

/// IPM: `-ε · mean(honest)`.
pub fn ipm(honest: &[Vec<f32>], epsilon: f32) -> Result<Vec<f32>, AttackError> {
    if honest.is_empty() {
        return Err(AttackError::NoHonestUpdates("ipm"));
    }
    let (mean, _) = mean_and_std(honest);
    Ok(mean
        .iter()
        .map(|m| (-f64::from(epsilon) * m) as f32)
        .collect())
}

/// Min-max (`sum = false`) or min-sum (`sum = true`): `μ - γ·σ` (σ the coordinate-wise
/// standard deviation, the paper's "inverse std" perturbation) with γ found by the paper's
/// halving search from γ = 10 (60 halvings).
pub fn min_max(honest: &[Vec<f32>], sum: bool) -> Result<Vec<f32>, AttackError> {
    let name = if sum { "min_sum" } else { "min_max" };
    if honest.is_empty() {
        return Err(AttackError::NoHonestUpdates(name));
    }
    let (mean, std) = mean_and_std(honest);
    let d2 = |a: &[f64], b: &[f32]| -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - f64::from(*y)).powi(2))
            .sum()
    };
    let combine = |ds: &mut dyn Iterator<Item = f64>| -> f64 {
        if sum {
            ds.sum()
        } else {
            ds.fold(0.0, f64::max).sqrt()
        }
    };
    // The honest bound: the largest (max distance | sum of squared distances) of an update.
    let bound = honest
        .iter()
        .map(|h| {
            let hv: Vec<f64> = h.iter().map(|v| f64::from(*v)).collect();
            combine(&mut honest.iter().map(|o| d2(&hv, o)))
        })
        .fold(0.0, f64::max);
    let candidate =
        |g: f64| -> Vec<f64> { mean.iter().zip(&std).map(|(m, s)| m - g * s).collect() };
    let fits = |g: f64| {
        let m = candidate(g);
        combine(&mut honest.iter().map(|o| d2(&m, o))) <= bound
    };
    let (mut gamma, mut step, mut best) = (10.0f64, 5.0f64, 0.0f64);
    for _ in 0..60 {
        if fits(gamma) {
            best = best.max(gamma);
            gamma += step;
        } else {
            gamma -= step;
        }
        step /= 2.0;
    }
    Ok(candidate(best).into_iter().map(|v| v as f32).collect())
}
