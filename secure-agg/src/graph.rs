//! The neighbour graph of SecAgg+ (Bell et al. 2020): a Harary graph over a random
//! permutation of the clients, and the rule that picks its degree and the threshold.
//!
//! Each client shares its secrets with its neighbours and itself (`degree + 1` shares) and
//! masks pairwise only with its neighbours, so the cost per client is `O(degree)` instead of
//! `O(n)`. The permutation comes from SHA-256 over every advertised key (in id order) and the
//! round binding, and every client recomputes it from the signed directory, so the server
//! cannot pick the permutation, nor swap keys to steer it. It can still influence it by
//! choosing *which* advertisements to forward (dropping some honest clients and recomputing):
//! the number of tries is bounded by the subsets of droppable clients the round tolerates.
//! Bell et al.'s analysis against a malicious server assumes an honestly sampled graph; where
//! that matters, keep the degree at the value [`GraphParams::choose`] gives for a higher
//! corruption rate, or fix the participant set (and so `U1`) before the round (e.g. anchored
//! on chain) and abort when advertisements are missing.

use chacha20::ChaCha20;
use chacha20::cipher::{KeyIvInit, StreamCipher};
use std::collections::HashMap;

use crate::error::{Error, Result};

/// Statistical security parameter: a client's secrets leak with probability at most 2^-40.
const SECURITY_LOG2: f64 = 40.0;
/// Correctness parameter: a round fails to unmask with probability at most 2^-20.
const CORRECTNESS_LOG2: f64 = 20.0;
/// Up to this many clients the graph is complete (plain SecAgg, Bonawitz et al. 2017).
pub const COMPLETE_UP_TO: usize = 20;

/// The degree of the neighbour graph and the Shamir threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GraphParams {
    /// Neighbours per client, not counting itself. An odd degree is rounded up to even (the
    /// Harary graph links each client to `degree / 2` clients on each side of it); a degree
    /// of at least `n - 1` means the complete graph.
    pub degree: usize,
    /// Shares needed to reconstruct a secret (out of `degree + 1`).
    pub threshold: usize,
}

impl GraphParams {
    /// Chooses the degree and threshold for `n` clients of which at most a fraction
    /// `dropout` drop out and a fraction `corruption` collude with the server.
    ///
    /// The rule, after Bell et al. 2020 (Sec. 3-4) and Google fcp's `graph_parameter_finder`:
    /// a client's `m = degree + 1` shares go to neighbours drawn (by the random permutation)
    /// like a hypergeometric sample of the other clients. Let `c` be the number of corrupted
    /// neighbours that is exceeded with probability at most `2^-40 / n` and `d` the number of
    /// dropped neighbours exceeded with probability at most `2^-20 / n` (union bound over
    /// clients). Honest clients reveal, for each neighbour, one share or the other, never
    /// both, so the server gets both secrets of a client only if `2t <= m + c`: the rule
    /// takes `t = floor((m + c) / 2) + 1`, and needs `t <= m - 1 - d` so that enough shares
    /// survive. The smallest even degree meeting both is chosen. Up to
    /// [`COMPLETE_UP_TO`] clients (or when no degree below `n - 1` works) the graph is
    /// complete and the same rule is applied with the worst case `c = floor(corruption n)`,
    /// `d = floor(dropout n)`.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `n < 2`, a rate is outside `[0, 1)`, or no threshold
    /// meets both conditions even for the complete graph (too many dropouts plus
    /// corruptions).
    pub fn choose(n: usize, dropout: f64, corruption: f64) -> Result<Self> {
        if n < 2 {
            return Err(Error::param("n", n, "at least 2 clients"));
        }
        for (name, v) in [("dropout", dropout), ("corruption", corruption)] {
            if !(0.0..1.0).contains(&v) {
                return Err(Error::param(name, v, "a rate in [0, 1)"));
            }
        }
        if n > COMPLETE_UP_TO {
            let corrupt = (corruption * n as f64).floor() as usize;
            let dropped = (dropout * n as f64).ceil() as usize;
            let mut degree = 2;
            while degree < n - 1 {
                let m = degree + 1;
                let c = tail_quantile(n - 1, corrupt, degree, SECURITY_LOG2, n);
                let d = tail_quantile(n - 1, dropped, degree, CORRECTNESS_LOG2, n);
                let t = (m + c) / 2 + 1;
                if t + 1 + d <= m {
                    return Ok(Self {
                        degree,
                        threshold: t,
                    });
                }
                degree += 2;
            }
        }
        let m = n;
        let c = (corruption * n as f64).floor() as usize;
        let d = (dropout * n as f64).floor() as usize;
        let t = (m + c) / 2 + 1;
        if t + 1 + d > m {
            return Err(Error::param(
                "dropout + corruption",
                format!("{dropout} + {corruption} with n = {n}"),
                "low enough that 2t > n + corrupted and t <= n - 1 - dropped have a solution",
            ));
        }
        Ok(Self {
            degree: n - 1,
            threshold: t,
        })
    }

    /// The complete graph over `n` clients with threshold `t` (plain SecAgg).
    pub fn complete(n: usize, threshold: usize) -> Self {
        Self {
            degree: n.saturating_sub(1),
            threshold,
        }
    }
}

/// The smallest `x` with `n_clients * P[X > x] <= 2^-log2_fail`, `X` hypergeometric: `draws`
/// from `population` of which `marked` are marked.
fn tail_quantile(
    population: usize,
    marked: usize,
    draws: usize,
    log2_fail: f64,
    n_clients: usize,
) -> usize {
    let target = 2f64.powf(-log2_fail) / n_clients as f64;
    let ln_c = |a: usize, b: usize| -> f64 {
        if b > a {
            f64::NEG_INFINITY
        } else {
            libm::lgamma(a as f64 + 1.0)
                - libm::lgamma(b as f64 + 1.0)
                - libm::lgamma((a - b) as f64 + 1.0)
        }
    };
    let total = ln_c(population, draws);
    let pmf = |x: usize| -> f64 {
        if x > marked || draws - x > population - marked {
            0.0
        } else {
            (ln_c(marked, x) + ln_c(population - marked, draws - x) - total).exp()
        }
    };
    // Tail sum from the top down.
    let mut tail = 0.0;
    for x in (0..=draws).rev() {
        // tail = P[X > x] after adding pmf(x + 1).
        if x < draws {
            tail += pmf(x + 1);
        }
        if tail > target {
            return x + 1;
        }
    }
    0
}

/// A concrete neighbour graph over the clients of a round.
#[derive(Debug, Clone)]
pub(crate) struct Graph {
    order: Vec<u32>,
    position: HashMap<u32, usize>,
    half: usize,
    complete: bool,
}

impl Graph {
    /// The Harary graph of `degree` over `clients` (sorted, distinct), permuted with the
    /// Fisher–Yates shuffle driven by ChaCha20 keyed with `seed`.
    pub(crate) fn new(clients: &[u32], degree: usize, seed: &[u8; 32]) -> Self {
        let mut order = clients.to_vec();
        let mut cipher = ChaCha20::new(seed.into(), b"daofl-graph\0".into());
        for i in (1..order.len()).rev() {
            let mut b = [0_u8; 8];
            cipher.apply_keystream(&mut b);
            // Multiply-shift: bias below n / 2^64, and the same on every machine.
            let j = ((u128::from(u64::from_le_bytes(b)) * (i as u128 + 1)) >> 64) as usize;
            order.swap(i, j);
        }
        let position = order.iter().enumerate().map(|(p, &c)| (c, p)).collect();
        let half = degree.div_ceil(2);
        let complete = 2 * half + 1 >= order.len();
        Self {
            order,
            position,
            half,
            complete,
        }
    }

    /// Whether `a` and `b` are distinct neighbours.
    #[cfg(test)]
    pub(crate) fn adjacent(&self, a: u32, b: u32) -> bool {
        match (self.position.get(&a), self.position.get(&b)) {
            (Some(&pa), Some(&pb)) if pa != pb => {
                if self.complete {
                    return true;
                }
                let d = pa.abs_diff(pb);
                d.min(self.order.len() - d) <= self.half
            }
            _ => false,
        }
    }

    /// The neighbours of `a` (not `a` itself), sorted.
    pub(crate) fn neighbours(&self, a: u32) -> Vec<u32> {
        let Some(&p) = self.position.get(&a) else {
            return Vec::new();
        };
        let n = self.order.len();
        let mut out: Vec<u32> = if self.complete {
            self.order.iter().copied().filter(|&c| c != a).collect()
        } else {
            (1..=self.half)
                .flat_map(|o| [self.order[(p + o) % n], self.order[(p + n - o) % n]])
                .collect()
        };
        out.sort_unstable();
        out.dedup();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn harary_graph_is_regular_and_symmetric() {
        let clients: Vec<u32> = (0..50).map(|i| i * 3).collect();
        let g = Graph::new(&clients, 10, &[4; 32]);
        for &a in &clients {
            let nb = g.neighbours(a);
            assert_eq!(nb.len(), 10);
            for &b in &nb {
                assert!(g.adjacent(a, b) && g.adjacent(b, a));
                assert!(g.neighbours(b).contains(&a));
            }
            assert!(!g.adjacent(a, a));
        }
        assert!(!g.adjacent(0, 1));
        // Another seed, another graph.
        let h = Graph::new(&clients, 10, &[5; 32]);
        assert!(clients.iter().any(|&a| g.neighbours(a) != h.neighbours(a)));
        // Small or dense: complete.
        let k = Graph::new(&clients[..5], 10, &[4; 32]);
        assert_eq!(k.neighbours(0), vec![3, 6, 9, 12]);
    }

    #[test]
    fn chosen_parameters_are_sane() {
        let small = GraphParams::choose(10, 0.1, 0.1).unwrap();
        assert_eq!(small.degree, 9);
        assert!(2 * small.threshold > 10 + 1);
        let p = GraphParams::choose(1000, 0.05, 0.05).unwrap();
        assert!(p.degree < 200 && p.degree.is_multiple_of(2), "{p:?}");
        assert!(
            p.threshold <= p.degree && 2 * p.threshold > p.degree + 1,
            "{p:?}"
        );
        let q = GraphParams::choose(100_000, 0.05, 0.05).unwrap();
        assert!(q.degree < 400, "{q:?}");
        let refused = |res: Result<GraphParams>, param: &str| {
            assert!(
                matches!(&res, Err(Error::InvalidParameter { name, .. }) if *name == param),
                "{res:?}"
            );
        };
        refused(GraphParams::choose(10, 0.5, 0.4), "dropout + corruption");
        refused(GraphParams::choose(1, 0.0, 0.0), "n");
        refused(GraphParams::choose(10, f64::NAN, 0.0), "dropout");
    }

    #[test]
    fn tail_quantile_matches_simple_cases() {
        // No marked items: never more than 0.
        assert_eq!(tail_quantile(100, 0, 10, 40.0, 100), 0);
        // All marked: always exactly `draws`.
        assert_eq!(tail_quantile(100, 100, 10, 40.0, 100), 10);
    }
}
