//! Consensus on hand-made crowds whose right answers are known.

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;

/// How a simulated annotator answers.
#[derive(Clone, Copy)]
enum Behaviour {
    /// Right with this probability, otherwise a uniformly drawn wrong class.
    Reliable(f64),
    /// Uniformly random, ignoring the item.
    Spammer,
    /// Always the same class.
    Constant(u8),
    /// The next class (mod k) with this probability, otherwise right: a systematic liar.
    Adversary(f64),
}

fn answer(rng: &mut ChaCha8Rng, b: Behaviour, truth: u8, k: u8) -> u8 {
    match b {
        Behaviour::Reliable(p) => {
            if rng.random_bool(p) {
                truth
            } else {
                (truth + rng.random_range(1..k)) % k
            }
        }
        Behaviour::Spammer => rng.random_range(0..k),
        Behaviour::Constant(c) => c,
        Behaviour::Adversary(p) => {
            if rng.random_bool(p) {
                (truth + 1) % k
            } else {
                truth
            }
        }
    }
}

/// `n` items with classes drawn from `weights`, every annotator answering every item.
fn crowd(seed: u64, n: usize, weights: &[f64], annotators: &[Behaviour]) -> (Answers, Vec<u8>) {
    let k = weights.len() as u8;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let total: f64 = weights.iter().sum();
    let truth: Vec<u8> = (0..n)
        .map(|_| {
            let mut x = rng.random::<f64>() * total;
            for (c, w) in weights.iter().enumerate() {
                if x < *w {
                    return c as u8;
                }
                x -= w;
            }
            k - 1
        })
        .collect();
    let mut answers = Answers::new(k.into()).unwrap();
    for (i, &t) in truth.iter().enumerate() {
        for (j, &b) in annotators.iter().enumerate() {
            answers.push(i, j, answer(&mut rng, b, t, k)).unwrap();
        }
    }
    (answers, truth)
}

fn accuracy(c: &Consensus, truth: &[u8]) -> f64 {
    let right = truth
        .iter()
        .zip(&c.labels)
        .filter(|(t, l)| Some(**t) == **l)
        .count();
    right as f64 / truth.len() as f64
}

fn ds(answers: &Answers) -> Consensus {
    dawid_skene(answers, None, &DawidSkeneConfig::default()).unwrap()
}

fn mv(answers: &Answers) -> Consensus {
    majority_vote(answers, &DawidSkeneConfig::default()).unwrap()
}

fn quality(answers: &Answers, c: &Consensus) -> Vec<AnnotatorQuality> {
    annotator_quality(answers, c, None, &QualityConfig::default()).unwrap()
}

#[test]
fn perfect_annotators_give_the_truth_and_kappa_one() {
    let (answers, truth) = crowd(1, 100, &[0.4, 0.6], &[Behaviour::Reliable(1.0); 3]);
    let c = ds(&answers);
    assert_eq!(c.method, Method::DawidSkene);
    assert!(c.converged);
    assert_eq!(accuracy(&c, &truth), 1.0);
    assert_eq!(c.labels, mv(&answers).labels);
    // Kappa about 0.96, not 1: the smoothing (one pseudo-count per cell) over 40-60 answers
    // per true class keeps every confusion probability away from 0 and 1.
    for q in quality(&answers, &c) {
        assert!(q.kappa > 0.95 && q.agreement == 1.0, "{q:?}");
    }
}

#[test]
fn spammer_and_flipping_adversary_are_seen_through() {
    use Behaviour::*;
    let crowd_of = [
        Reliable(0.8),
        Reliable(0.8),
        Reliable(0.8),
        Spammer,
        Adversary(1.0),
    ];
    let (answers, truth) = crowd(2, 400, &[0.4, 0.6], &crowd_of);
    let (d, m) = (ds(&answers), mv(&answers));
    let (acc_ds, acc_mv) = (accuracy(&d, &truth), accuracy(&m, &truth));
    // The adversary always says the other class: EM reads it backwards, which makes it a
    // perfect annotator; majority vote counts it against the truth.
    assert!(acc_ds > 0.99, "{acc_ds}");
    assert!(acc_mv < 0.9, "{acc_mv}");
    let q = quality(&answers, &d);
    for good in &q[..3] {
        assert!((0.45..0.75).contains(&good.kappa), "{good:?}");
    }
    assert!(q[3].kappa.abs() < 0.15, "spammer {:?}", q[3]);
    assert!(q[4].kappa < -0.8, "adversary {:?}", q[4]);
    // The confusion matrix says so: the adversary answers 1 when the truth is 0, and 0 for 1.
    assert!(d.confusion[4].get(0, 1) > 0.98 && d.confusion[4].get(1, 0) > 0.98);
}

#[test]
fn a_perfect_annotator_is_found_and_followed() {
    use Behaviour::*;
    // One perfect annotator, two noisy ones and two spammers: five votes of which only one
    // is always right.
    let crowd_of = [
        Reliable(1.0),
        Reliable(0.7),
        Reliable(0.7),
        Spammer,
        Spammer,
    ];
    let (answers, truth) = crowd(3, 500, &[0.5, 0.5], &crowd_of);
    let (d, m) = (ds(&answers), mv(&answers));
    assert!(accuracy(&d, &truth) > 0.99, "{}", accuracy(&d, &truth));
    assert!(accuracy(&m, &truth) < 0.9, "{}", accuracy(&m, &truth));
    let q = quality(&answers, &d);
    assert!(q[0].kappa > 0.8, "{:?}", q[0]);
    assert!(q[1..].iter().all(|x| x.kappa < q[0].kappa - 0.3), "{q:?}");
    assert!(q[3..].iter().all(|x| x.kappa.abs() < 0.15), "{q:?}");
}

#[test]
fn constant_answerer_scores_zero_though_often_right() {
    use Behaviour::*;
    let crowd_of = [Reliable(0.9), Reliable(0.9), Reliable(0.9), Constant(1)];
    let (answers, _) = crowd(4, 600, &[0.3, 0.7], &crowd_of);
    let d = ds(&answers);
    let q = quality(&answers, &d);
    // Right 70% of the time by saying the common class, and worth nothing.
    assert!((0.6..0.8).contains(&q[3].agreement), "{:?}", q[3]);
    assert!(q[3].kappa.abs() < 0.05, "{:?}", q[3]);
    assert!(q[0].kappa > 0.7);
}

#[test]
fn multi_class_with_a_permuting_adversary() {
    use Behaviour::*;
    let crowd_of = [
        Reliable(0.75),
        Reliable(0.75),
        Reliable(0.75),
        Adversary(0.9),
        Adversary(0.9),
        Spammer,
    ];
    let (answers, truth) = crowd(5, 600, &[0.3, 0.25, 0.2, 0.15, 0.1], &crowd_of);
    let (d, m) = (ds(&answers), mv(&answers));
    let (acc_ds, acc_mv) = (accuracy(&d, &truth), accuracy(&m, &truth));
    assert!(acc_ds > 0.97, "{acc_ds}");
    assert!(acc_ds > acc_mv + 0.05, "{acc_ds} vs {acc_mv}");
    let q = quality(&answers, &d);
    let mut order: Vec<usize> = (0..6).collect();
    order.sort_by(|a, b| q[*b].score.total_cmp(&q[*a].score));
    // Reliable first, then the spammer, the adversaries last.
    assert_eq!(order[3], 5, "{q:?}");
    assert!(order[4] >= 3 && order[5] >= 3, "{order:?}");
}

#[test]
fn result_does_not_depend_on_answer_order() {
    use Behaviour::*;
    let crowd_of = [Reliable(0.8), Reliable(0.7), Spammer, Adversary(0.8)];
    let (answers, _) = crowd(6, 200, &[0.5, 0.3, 0.2], &crowd_of);
    let mut reversed = Answers::new(3).unwrap();
    for a in answers.answers().iter().rev() {
        reversed.push(a.item, a.annotator, a.class).unwrap();
    }
    // Bit for bit: the same f64 operations in the same order.
    assert_eq!(ds(&answers), ds(&reversed));
}

#[test]
fn small_counts_fall_back_to_majority_vote() {
    let mut answers = Answers::new(2).unwrap();
    for (i, votes) in [[0, 0, 1], [1, 1, 0], [0, 1, 1]].iter().enumerate() {
        for (j, v) in votes.iter().enumerate() {
            answers.push(i, j, *v).unwrap();
        }
    }
    let c = aggregate(&answers, None, &ConsensusConfig::default()).unwrap();
    assert_eq!(c.method, Method::MajorityVote);
    assert_eq!(c.labels, vec![Some(0), Some(1), Some(1)]);
    assert_eq!(c.posterior(0), &[2.0 / 3.0, 1.0 / 3.0]);
    // With enough items, EM.
    let (many, _) = crowd(7, 100, &[0.5, 0.5], &[Behaviour::Reliable(0.9); 3]);
    let c = aggregate(&many, None, &ConsensusConfig::default()).unwrap();
    assert_eq!(c.method, Method::DawidSkene);
}

#[test]
fn ties_go_to_the_lowest_class_and_unanswered_items_get_none() {
    let mut answers = Answers::new(3).unwrap();
    answers.push(0, 0, 2).unwrap();
    answers.push(0, 1, 1).unwrap();
    answers.reserve_items(2).unwrap();
    let c = mv(&answers);
    assert_eq!(c.labels, vec![Some(1), None]);
    let d = ds(&answers);
    assert_eq!(d.labels[1], None);
    assert_eq!(d.posterior(1), d.priors.as_slice());
}

#[test]
fn gold_items_expose_a_colluding_majority_of_liars() {
    use Behaviour::*;
    // Three colluders always give the other answer; two honest annotators are 90% right.
    // Without gold, the liars look like the honest majority and the honest ones like liars.
    let crowd_of = [
        Adversary(1.0),
        Adversary(1.0),
        Adversary(1.0),
        Reliable(0.9),
        Reliable(0.9),
    ];
    let (answers, truth) = crowd(8, 300, &[0.5, 0.5], &crowd_of);
    assert!(accuracy(&mv(&answers), &truth) < 0.1);
    assert!(accuracy(&ds(&answers), &truth) < 0.1);
    // Every tenth item is gold: pinned to its known class, EM finds the truth.
    let gold: Vec<Option<u8>> = truth
        .iter()
        .enumerate()
        .map(|(i, t)| i.is_multiple_of(10).then_some(*t))
        .collect();
    let pinned = dawid_skene(&answers, Some(&gold), &DawidSkeneConfig::default()).unwrap();
    for (i, g) in gold.iter().enumerate() {
        if let Some(g) = g {
            assert_eq!(pinned.labels[i], Some(*g));
        }
    }
    assert!(
        accuracy(&pinned, &truth) > 0.98,
        "{}",
        accuracy(&pinned, &truth)
    );
    let q = annotator_quality(&answers, &pinned, Some(&gold), &QualityConfig::default()).unwrap();
    for colluder in &q[..3] {
        assert_eq!((colluder.gold_answers, colluder.gold_correct), (30, 0));
        assert!(colluder.score < -0.8, "{colluder:?}");
    }
    for honest in &q[3..] {
        assert!(honest.score > 0.6, "{honest:?}");
    }
}

#[test]
fn iteration_limit_is_reported() {
    let (answers, _) = crowd(9, 200, &[0.5, 0.5], &[Behaviour::Reliable(0.7); 4]);
    let config = DawidSkeneConfig {
        max_iterations: 1,
        ..DawidSkeneConfig::default()
    };
    let c = dawid_skene(&answers, None, &config).unwrap();
    assert_eq!(c.iterations, 1);
    assert!(!c.converged);
    let (answers, _) = crowd(9, 200, &[0.5, 0.5], &[Behaviour::Reliable(0.85); 5]);
    let c = ds(&answers);
    assert!(c.converged && c.iterations < 100, "{}", c.iterations);
}

#[test]
fn bad_input_is_an_error() {
    assert_eq!(Answers::new(1), Err(ConsensusError::BadClassCount(1)));
    assert_eq!(Answers::new(65), Err(ConsensusError::BadClassCount(65)));
    let mut answers = Answers::new(2).unwrap();
    assert!(matches!(
        answers.push(0, 0, 2),
        Err(ConsensusError::ClassOutOfRange { class: 2, .. })
    ));
    answers.push(0, 0, 1).unwrap();
    assert_eq!(
        answers.push(0, 0, 0),
        Err(ConsensusError::DuplicateAnswer {
            item: 0,
            annotator: 0
        })
    );
    assert_eq!(answers.len(), 1);
    // Indices that would allocate without bound.
    assert!(matches!(
        answers.push(usize::MAX, 0, 0),
        Err(ConsensusError::IndexTooLarge { what: "item", .. })
    ));
    assert!(matches!(
        answers.push(0, MAX_ANNOTATORS, 0),
        Err(ConsensusError::IndexTooLarge {
            what: "annotator",
            ..
        })
    ));
    assert!(answers.reserve_items(MAX_ITEMS + 1).is_err());
    assert_eq!((answers.len(), answers.num_items()), (1, 1));
    let gold = [Some(0), None];
    assert!(matches!(
        dawid_skene(&answers, Some(&gold), &DawidSkeneConfig::default()),
        Err(ConsensusError::GoldLength { gold: 2, items: 1 })
    ));
    assert!(matches!(
        dawid_skene(&answers, Some(&[Some(5)]), &DawidSkeneConfig::default()),
        Err(ConsensusError::ClassOutOfRange { class: 5, .. })
    ));
    // A consensus of other answers.
    let mut more = Answers::new(2).unwrap();
    more.push(3, 4, 0).unwrap();
    let c = ds(&answers);
    assert!(matches!(
        annotator_quality(&more, &c, None, &QualityConfig::default()),
        Err(ConsensusError::ConsensusMismatch { .. })
    ));
}
