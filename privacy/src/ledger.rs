//! The privacy budget: a ledger that authorises a round before it runs and refuses the round
//! that would take the run past its total `(ε, δ)`.
//!
//! ## Protocol
//!
//! 1. Before a round, [`PrivacyLedger::authorize`] composes the committed history with the
//!    round's [`DpEvent`] and returns an [`Authorization`] if the resulting epsilon is within
//!    the total, or [`Error::BudgetExceeded`] saying what was spent, what it would become and
//!    what the total is. Authorising spends nothing.
//! 2. **Commit when noise is released**, not when the round completes:
//!    [`PrivacyLedger::commit`] must be called before the first noised output of the round
//!    (the noised aggregate, the new clip norm, a model checkpoint) leaves the aggregator.
//!    A round that aborts *before* releasing anything (quorum missed, deadline passed) is
//!    dropped by dropping its authorization, and spends nothing. A round that aborts *after*
//!    releasing has been committed already: its noise is out, so its privacy cost is paid
//!    even though the round produced no model. This is the conservative choice.
//! 3. Authorizations are tied to the ledger state they were computed from: committing one
//!    after another commit ([`Error::StaleAuthorization`]) is refused, so two rounds authorised
//!    against the same history cannot both be committed and together exceed the budget.
//!
//! The ledger is plain data (serde) so it can be written into checkpoint manifests and read
//! back on resume. Its serialised form carries the spent epsilon for readers of the
//! manifest, but deserialising validates the budget and recomputes the spent epsilon from the
//! committed events: a number in a file is never trusted.

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::accounting::{AccountantKind, DpEvent};

/// A round refused because it would take the run past its budget.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "privacy budget exceeded: spent epsilon {spent:.6}, this round would make it {would_be:.6}, \
     total is {total} (delta {delta}); stop the run or raise the budget"
)]
pub struct BudgetExceeded {
    /// Epsilon spent by the committed rounds.
    pub spent: f64,
    /// Epsilon after composing the refused round.
    pub would_be: f64,
    /// The budget's total epsilon.
    pub total: f64,
    /// The budget's delta.
    pub delta: f64,
}

/// Permission to run one round (or several identical ones, see
/// [`PrivacyLedger::authorize_rounds`]); commit it when the round's noise is released.
#[must_use = "commit the authorization when the round releases noise, or drop it if the round aborts before"]
#[derive(Debug, Clone, PartialEq)]
pub struct Authorization {
    event: DpEvent,
    rounds: u64,
    issued_at: u64,
    epsilon_before: f64,
    epsilon_after: f64,
}

impl Authorization {
    /// The epsilon the run will have spent once this round is committed.
    pub fn epsilon_after(&self) -> f64 {
        self.epsilon_after
    }

    /// The round's privacy event.
    pub fn event(&self) -> &DpEvent {
        &self.event
    }

    /// How many rounds of [`Authorization::event`] it covers.
    pub fn rounds(&self) -> u64 {
        self.rounds
    }
}

/// One run of identical committed events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Entry {
    event: DpEvent,
    count: u64,
}

/// A privacy budget `(total ε, δ)` and the rounds committed against it.
///
/// Serialisable for checkpoint manifests; deserialising validates the budget and recomputes
/// the spent epsilon from the committed events (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "LedgerRecord")]
pub struct PrivacyLedger {
    total_epsilon: f64,
    delta: f64,
    accountant: AccountantKind,
    entries: Vec<Entry>,
    rounds: u64,
    spent_epsilon: f64,
}

/// The serialised form of [`PrivacyLedger`], checked on the way in.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LedgerRecord {
    total_epsilon: f64,
    delta: f64,
    accountant: AccountantKind,
    entries: Vec<Entry>,
    rounds: u64,
    spent_epsilon: f64,
}

impl TryFrom<LedgerRecord> for PrivacyLedger {
    type Error = Error;

    fn try_from(record: LedgerRecord) -> Result<Self, Error> {
        let mut ledger = Self::new(record.total_epsilon, record.delta, record.accountant)?;
        if let Some(empty) = record.entries.iter().find(|e| e.count == 0) {
            return Err(Error::param("entries.count", empty.count, "at least 1"));
        }
        let rounds = record
            .entries
            .iter()
            .try_fold(0u64, |acc, e| acc.checked_add(e.count))
            .ok_or_else(|| Error::param("entries.count", "overflow", "a total that fits in u64"))?;
        if rounds != record.rounds {
            return Err(Error::param(
                "rounds",
                record.rounds,
                "the sum of the entries' counts",
            ));
        }
        // The recorded spent epsilon is informational only: recompute it. (A file whose number
        // disagrees was edited or written by another accountant version; the events decide.)
        let _ = record.spent_epsilon;
        ledger.spent_epsilon = epsilon_of(&record.entries, ledger.delta, ledger.accountant)?;
        ledger.entries = record.entries;
        ledger.rounds = rounds;
        Ok(ledger)
    }
}

impl PrivacyLedger {
    /// An empty ledger with budget `(total_epsilon, delta)`, accounted with `accountant`.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] unless `total_epsilon` is finite and positive and `delta` is
    /// in `(0, 1)`.
    pub fn new(total_epsilon: f64, delta: f64, accountant: AccountantKind) -> Result<Self, Error> {
        crate::positive("total_epsilon", total_epsilon)?;
        if !(delta > 0.0 && delta < 1.0) {
            return Err(Error::param("delta", delta, "a number in (0, 1)"));
        }
        Ok(Self {
            total_epsilon,
            delta,
            accountant,
            entries: Vec::new(),
            rounds: 0,
            spent_epsilon: 0.0,
        })
    }

    /// Epsilon spent by the committed rounds (at the ledger's delta).
    pub fn spent_epsilon(&self) -> f64 {
        self.spent_epsilon
    }

    /// Epsilon left before the total is reached.
    pub fn remaining_epsilon(&self) -> f64 {
        (self.total_epsilon - self.spent_epsilon).max(0.0)
    }

    /// The total epsilon.
    pub fn total_epsilon(&self) -> f64 {
        self.total_epsilon
    }

    /// The delta at which epsilon is measured.
    pub fn delta(&self) -> f64 {
        self.delta
    }

    /// The accountant used.
    pub fn accountant(&self) -> AccountantKind {
        self.accountant
    }

    /// Number of committed rounds.
    pub fn committed_rounds(&self) -> u64 {
        self.rounds
    }

    /// Authorises a round whose privacy event is `round_event`, if the run stays within budget.
    ///
    /// # Errors
    /// [`Error::BudgetExceeded`] if composing the round would exceed the total;
    /// accounting errors ([`Error::InvalidParameter`], [`Error::UnsupportedEvent`]) for a bad
    /// event.
    pub fn authorize(&self, round_event: &DpEvent) -> Result<Authorization, Error> {
        self.authorize_rounds(round_event, 1)
    }

    /// Authorises `rounds` rounds of `round_event` at once, if the run stays within budget
    /// after all of them: one accounting pass instead of one per round (replaying a history
    /// on resume, or a run whose rounds are identical). Committing it spends all of them.
    ///
    /// # Errors
    /// As [`PrivacyLedger::authorize`], and [`Error::InvalidParameter`] if `rounds` is zero
    /// or the total count overflows.
    pub fn authorize_rounds(
        &self,
        round_event: &DpEvent,
        rounds: u64,
    ) -> Result<Authorization, Error> {
        if rounds == 0 {
            return Err(Error::param("rounds", rounds, "at least 1"));
        }
        if self.rounds.checked_add(rounds).is_none() {
            return Err(Error::param(
                "rounds",
                rounds,
                "a total round count that fits in u64",
            ));
        }
        let entries = with_event(&self.entries, round_event, rounds);
        let would_be = epsilon_of(&entries, self.delta, self.accountant)?;
        if would_be.is_nan() || would_be > self.total_epsilon {
            return Err(BudgetExceeded {
                spent: self.spent_epsilon,
                would_be,
                total: self.total_epsilon,
                delta: self.delta,
            }
            .into());
        }
        Ok(Authorization {
            event: round_event.clone(),
            rounds,
            issued_at: self.rounds,
            epsilon_before: self.spent_epsilon,
            epsilon_after: would_be,
        })
    }

    /// Records an authorised round as spent (call when its noise is released); returns the new
    /// spent epsilon.
    ///
    /// # Errors
    /// [`Error::StaleAuthorization`] if another round was committed since `authorization` was
    /// issued, or it was issued by another ledger (authorise again).
    pub fn commit(&mut self, authorization: Authorization) -> Result<f64, Error> {
        if authorization.issued_at != self.rounds
            || authorization.epsilon_before != self.spent_epsilon
            || authorization.epsilon_after > self.total_epsilon
        {
            return Err(Error::StaleAuthorization {
                issued_rounds: authorization.issued_at,
                ledger_rounds: self.rounds,
            });
        }
        self.entries = with_event(&self.entries, &authorization.event, authorization.rounds);
        self.rounds += authorization.rounds;
        self.spent_epsilon = authorization.epsilon_after;
        Ok(self.spent_epsilon)
    }
}

/// `entries` followed by `count` rounds of `event` (merged into the last entry when equal).
/// The caller has checked that the total count fits in `u64`.
fn with_event(entries: &[Entry], event: &DpEvent, count: u64) -> Vec<Entry> {
    let mut out = entries.to_vec();
    match out.last_mut() {
        Some(last) if last.event == *event => last.count += count,
        _ => out.push(Entry {
            event: event.clone(),
            count,
        }),
    }
    out
}

fn epsilon_of(entries: &[Entry], delta: f64, kind: AccountantKind) -> Result<f64, Error> {
    let mut acc = kind.new_accountant();
    for e in entries {
        acc.compose(&DpEvent::self_composed(e.event.clone(), e.count))?;
    }
    acc.epsilon(delta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha20Rng;

    #[test]
    fn refuses_the_round_that_would_exceed_the_budget() {
        let round = DpEvent::poisson_gaussian(0.1, 2.0);
        let mut ledger = PrivacyLedger::new(1.0, 1e-5, AccountantKind::Rdp).unwrap();
        let mut committed = 0;
        loop {
            match ledger.authorize(&round) {
                Ok(auth) => {
                    assert!(auth.epsilon_after() <= 1.0);
                    ledger.commit(auth).unwrap();
                    committed += 1;
                }
                Err(Error::BudgetExceeded(b)) => {
                    assert_eq!(b.spent, ledger.spent_epsilon());
                    assert!(b.would_be > 1.0 && b.spent <= 1.0);
                    let msg = Error::BudgetExceeded(b).to_string();
                    assert!(
                        msg.contains("spent") && msg.contains("would") && msg.contains("total")
                    );
                    break;
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert!(committed > 1, "{committed}");
        assert_eq!(ledger.committed_rounds(), committed);
        assert!(ledger.spent_epsilon() <= 1.0 && ledger.remaining_epsilon() >= 0.0);
        // Refused again, whatever is asked: a non-private round is never authorised.
        assert!(matches!(
            ledger.authorize(&round),
            Err(Error::BudgetExceeded(_))
        ));
        let fresh = PrivacyLedger::new(1.0, 1e-5, AccountantKind::Rdp).unwrap();
        assert!(matches!(
            fresh.authorize(&DpEvent::NonPrivate),
            Err(Error::BudgetExceeded(_))
        ));
    }

    #[test]
    fn aborted_rounds_spend_nothing_and_stale_authorizations_are_refused() {
        let round = DpEvent::poisson_gaussian(0.05, 1.2);
        let mut ledger = PrivacyLedger::new(3.0, 1e-5, AccountantKind::Pld).unwrap();
        let a = ledger.authorize(&round).unwrap();
        drop(a); // aborted before release
        assert_eq!(ledger.spent_epsilon(), 0.0);
        let a = ledger.authorize(&round).unwrap();
        let b = ledger.authorize(&round).unwrap();
        ledger.commit(a).unwrap();
        assert!(matches!(
            ledger.commit(b),
            Err(Error::StaleAuthorization { .. })
        ));
        assert_eq!(ledger.committed_rounds(), 1);
        // An authorization from another ledger is refused too.
        let mut other = PrivacyLedger::new(3.0, 1e-5, AccountantKind::Pld).unwrap();
        let foreign = ledger.authorize(&round).unwrap();
        other
            .commit(
                other
                    .authorize(&DpEvent::poisson_gaussian(0.05, 2.0))
                    .unwrap(),
            )
            .unwrap();
        assert!(matches!(
            other.commit(foreign),
            Err(Error::StaleAuthorization { .. })
        ));
    }

    #[test]
    fn many_rounds_at_once_equal_one_by_one() {
        let round = DpEvent::poisson_gaussian(0.02, 1.1);
        let mut one_by_one = PrivacyLedger::new(5.0, 1e-5, AccountantKind::Rdp).unwrap();
        for _ in 0..40 {
            let a = one_by_one.authorize(&round).unwrap();
            one_by_one.commit(a).unwrap();
        }
        let mut at_once = PrivacyLedger::new(5.0, 1e-5, AccountantKind::Rdp).unwrap();
        let a = at_once.authorize_rounds(&round, 40).unwrap();
        assert_eq!(a.rounds(), 40);
        at_once.commit(a).unwrap();
        assert_eq!(at_once, one_by_one);
        // All or nothing: a batch that would cross the budget is refused whole.
        let mut ledger = PrivacyLedger::new(1.0, 1e-5, AccountantKind::Rdp).unwrap();
        assert!(matches!(
            ledger.authorize_rounds(&round, 100_000),
            Err(Error::BudgetExceeded(_))
        ));
        assert!(ledger.authorize_rounds(&round, 0).is_err());
        ledger.commit(ledger.authorize(&round).unwrap()).unwrap();
        assert!(ledger.authorize_rounds(&round, u64::MAX).is_err());
        assert_eq!(ledger.committed_rounds(), 1);
    }

    #[test]
    fn bad_events_and_budgets_are_errors() {
        let ledger = PrivacyLedger::new(1.0, 1e-5, AccountantKind::Rdp).unwrap();
        assert!(matches!(
            ledger.authorize(&DpEvent::poisson_gaussian(1.5, 1.0)),
            Err(Error::InvalidParameter { .. })
        ));
        for (eps, delta) in [
            (0.0, 1e-5),
            (-1.0, 1e-5),
            (f64::NAN, 1e-5),
            (f64::INFINITY, 1e-5),
        ] {
            assert!(
                PrivacyLedger::new(eps, delta, AccountantKind::Rdp).is_err(),
                "{eps}"
            );
        }
        for delta in [0.0, 1.0, -1e-5, f64::NAN] {
            assert!(
                PrivacyLedger::new(1.0, delta, AccountantKind::Rdp).is_err(),
                "{delta}"
            );
        }
    }

    /// Random interleavings of authorise, commit and abort never take the spent epsilon past
    /// the total, and the ledger's number equals a fresh accountant's over what was committed.
    fn random_sequences(kind: AccountantKind, trials: u64, steps: usize) {
        let mut rng = ChaCha20Rng::seed_from_u64(11);
        for trial in 0..trials {
            let total = rng.random_range(0.5..4.0);
            let mut ledger = PrivacyLedger::new(total, 1e-5, kind).unwrap();
            let mut pending: Vec<Authorization> = Vec::new();
            let mut committed: Vec<DpEvent> = Vec::new();
            for _ in 0..steps {
                let q = [0.01, 0.1, 0.5, 1.0][rng.random_range(0..4)];
                let z = rng.random_range(0.8..4.0);
                let event = DpEvent::poisson_gaussian(q, z);
                match rng.random_range(0..3) {
                    0 => {
                        if let Ok(a) = ledger.authorize(&event) {
                            pending.push(a);
                        }
                    }
                    1 => {
                        if let Some(a) = pending.pop() {
                            let e = a.event().clone();
                            if ledger.commit(a).is_ok() {
                                committed.push(e);
                            }
                        }
                    }
                    _ => pending.clear(), // the round aborted before releasing noise
                }
                assert!(ledger.spent_epsilon() <= total, "trial {trial}");
            }
            let mut acc = kind.new_accountant();
            for e in &committed {
                acc.compose(e).unwrap();
            }
            let direct = acc.epsilon(1e-5).unwrap();
            let spent = ledger.spent_epsilon();
            assert_eq!(ledger.committed_rounds(), committed.len() as u64);
            assert!(
                (direct - spent).abs() <= 1e-3 * spent.max(1e-3),
                "{direct} vs {spent}"
            );
        }
    }

    #[test]
    fn never_exceeds_the_total_over_random_sequences_rdp() {
        random_sequences(AccountantKind::Rdp, 30, 30);
    }

    #[test]
    fn never_exceeds_the_total_over_random_sequences_pld() {
        random_sequences(AccountantKind::Pld, 3, 12);
    }

    #[test]
    fn state_round_trips_through_json_and_the_file_is_not_trusted() {
        let mut ledger = PrivacyLedger::new(2.0, 1e-5, AccountantKind::Rdp).unwrap();
        for _ in 0..3 {
            let a = ledger
                .authorize(&DpEvent::poisson_gaussian(0.1, 1.5))
                .unwrap();
            ledger.commit(a).unwrap();
        }
        let json = serde_json::to_string(&ledger).unwrap();
        assert!(json.contains("spent_epsilon"));
        let back: PrivacyLedger = serde_json::from_str(&json).unwrap();
        assert_eq!(back, ledger);

        // An edited spent epsilon is recomputed from the events.
        let spent = format!("\"spent_epsilon\":{}", ledger.spent_epsilon());
        assert!(json.contains(&spent));
        let edited = json.replace(&spent, "\"spent_epsilon\":0.0");
        let back: PrivacyLedger = serde_json::from_str(&edited).unwrap();
        assert_eq!(back.spent_epsilon(), ledger.spent_epsilon());

        // Inconsistent or invalid files are refused.
        for (from, to) in [
            ("\"rounds\":3", "\"rounds\":2"),
            ("\"count\":3", "\"count\":0"),
            ("\"delta\":0.00001", "\"delta\":2.0"),
            ("\"total_epsilon\":2.0", "\"total_epsilon\":-2.0"),
            (
                "\"sampling_probability\":0.1",
                "\"sampling_probability\":7.0",
            ),
            ("\"accountant\":\"rdp\"", "\"accountant\":\"gdp\""),
        ] {
            assert!(json.contains(from), "{from} not in {json}");
            let bad = json.replace(from, to);
            assert!(
                serde_json::from_str::<PrivacyLedger>(&bad).is_err(),
                "{bad}"
            );
        }
        assert!(serde_json::from_str::<PrivacyLedger>("{}").is_err());
        assert!(serde_json::from_str::<PrivacyLedger>("garbage").is_err());
    }
}
