//! The inference gateway: sends each request to `k` inference nodes chosen by
//! [`select_nodes`] (from the request hash and a block hash, weighted), decides by
//! [`decide`] and returns the [`Consensus`] with the nodes' signed answers, so the caller can
//! check it.
//!
//! Nodes that do not answer within the timeout (down, slow, refusing) are replaced by the next
//! nodes of the same deterministic ranking until `redundancy` answers are in or the nodes run
//! out; every node asked is judged. A [`ScoreBook`] keeps per node what the consensus made of
//! its answers (agreed, disagreed, missing) and its latency, and turns them into a selection
//! weight: a wrong or slow node is chosen less and less.
//!
//! The nodes come from a list (address, URL, stake); in a DAO deployment that list is the
//! staking contract's inference nodes (`dao`'s staking role `inference`), which is not wired
//! here yet.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fl_core::inference::{
    Candidate, Consensus, ConsensusPolicy, Disagreement, InferenceError, InferenceRequest,
    SignedAnswer, decide, select_nodes,
};
use fl_core::{Address, ContentHash};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Largest answer body read from a node.
pub const MAX_ANSWER_BYTES: usize = 64 << 10;

/// An inference node the gateway may ask.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeEntry {
    /// The node's address (its answers must recover to it).
    pub address: String,
    /// Its HTTP endpoint, e.g. `http://10.0.0.5:8610`.
    pub url: String,
    /// Its stake (selection weight before reputation).
    pub stake: f64,
}

/// Why the gateway could not answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// The request is malformed or over a limit.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// A node entry is unusable.
    #[error("node list: {0}")]
    Nodes(String),
    /// Selection or consensus failed (too few nodes, no quorum).
    #[error(transparent)]
    Consensus(#[from] InferenceError),
}

/// What the consensus made of one node's answers so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NodeScore {
    /// Answers that counted with the consensus.
    pub agreed: u64,
    /// Answers that did not (another label or model, drifting probabilities, bad signature).
    pub disagreed: u64,
    /// Requests it was asked and did not answer in time.
    pub missing: u64,
    /// Exponential moving average of its answer latency, in seconds.
    pub latency_s: f64,
}

impl NodeScore {
    /// The node's reputation in `[0, 1]`: the share of its judged requests it agreed on
    /// (Laplace-smoothed, so a new node starts at 1/2 + a little), times a latency factor
    /// that halves at every 2 s of mean latency
    /// ([`latency_factor`](fl_core::inference::scoring::latency_factor)): of two nodes that
    /// agree alike, the faster is chosen more often.
    pub fn reputation(&self) -> f64 {
        let judged = (self.agreed + self.disagreed + self.missing) as f64;
        let agreement = (self.agreed as f64 + 1.0) / (judged + 1.5);
        agreement * fl_core::inference::scoring::latency_factor(self.latency_s)
    }
}

/// Per-node scores, updated from every consensus.
#[derive(Debug, Default)]
pub struct ScoreBook {
    scores: Mutex<BTreeMap<Address, NodeScore>>,
}

impl ScoreBook {
    /// A node's score (default for a node never asked).
    pub fn score(&self, node: &Address) -> NodeScore {
        self.lock().get(node).copied().unwrap_or_default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Address, NodeScore>> {
        self.scores
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sets a node's score (e.g. from the gateway's database after a restart).
    pub fn restore(&self, node: Address, score: NodeScore) {
        self.lock().insert(node, score);
    }

    /// Records one consensus and the latencies of the nodes that answered.
    pub fn record(&self, consensus: &Consensus, latency: &BTreeMap<Address, Duration>) {
        let mut scores = self.lock();
        for node in &consensus.agreeing {
            scores.entry(*node).or_default().agreed += 1;
        }
        for d in &consensus.disagreeing {
            let s = scores.entry(d.node).or_default();
            match d.why {
                Disagreement::Missing => s.missing += 1,
                _ => s.disagreed += 1,
            }
        }
        for (node, l) in latency {
            let s = scores.entry(*node).or_default();
            let l = l.as_secs_f64();
            s.latency_s = if s.latency_s == 0.0 {
                l
            } else {
                0.8 * s.latency_s + 0.2 * l
            };
        }
    }
}

/// Sends requests to nodes and decides by consensus (see the module docs).
#[derive(Debug)]
pub struct Gateway {
    nodes: BTreeMap<Address, NodeEntry>,
    /// Stakes that replace the list's (from the staking contract), by node.
    stakes: Mutex<BTreeMap<Address, f64>>,
    /// The validators' standings, by node.
    standings: Mutex<BTreeMap<Address, fl_core::inference::scoring::Standing>>,
    policy: ConsensusPolicy,
    timeout: Duration,
    client: Client<HttpConnector, Full<Bytes>>,
    scores: ScoreBook,
}

/// A decided request, with what the gateway measured.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct GatewayAnswer {
    /// The consensus, carrying the signed answers.
    pub consensus: Consensus,
    /// Every node asked, in order (replacements after the first choice): the `selected` to
    /// re-run [`decide`] with.
    #[serde(with = "fl_core::inference::address_serde::list")]
    pub asked: Vec<Address>,
}

impl Gateway {
    /// A gateway over `nodes`, deciding by `policy`, waiting at most `timeout` per node.
    pub fn new(
        nodes: Vec<NodeEntry>,
        policy: ConsensusPolicy,
        timeout: Duration,
    ) -> Result<Self, GatewayError> {
        policy.validate()?;
        let mut by_address = BTreeMap::new();
        for n in nodes {
            let address: Address = n
                .address
                .parse()
                .map_err(|e| GatewayError::Nodes(format!("{}: {e}", n.address)))?;
            if !n.url.starts_with("http://") {
                return Err(GatewayError::Nodes(format!(
                    "{}: the URL must start with http:// (put TLS in front of the gateway)",
                    n.url
                )));
            }
            if !(n.stake.is_finite() && n.stake >= 0.0) {
                return Err(GatewayError::Nodes(format!(
                    "{}: stake {} must be finite and not negative",
                    n.address, n.stake
                )));
            }
            if by_address.insert(address, n).is_some() {
                return Err(GatewayError::Nodes(format!("{address} is listed twice")));
            }
        }
        Ok(Self {
            nodes: by_address,
            stakes: Mutex::new(BTreeMap::new()),
            standings: Mutex::new(BTreeMap::new()),
            policy,
            timeout,
            client: Client::builder(TokioExecutor::new()).build_http(),
            scores: ScoreBook::default(),
        })
    }

    /// The per-node scores.
    pub fn scores(&self) -> &ScoreBook {
        &self.scores
    }

    /// Replaces the listed stakes with `stakes` (e.g. from the DAO's staking contract: see
    /// [`crate::registry::inference_stakes`]); a listed node missing from `stakes` keeps its
    /// listed stake, a stake of 0 is never selected.
    pub fn set_stakes(&self, stakes: BTreeMap<Address, f64>) {
        *self
            .stakes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = stakes;
    }

    /// The listed nodes' addresses.
    pub fn nodes(&self) -> Vec<Address> {
        self.nodes.keys().copied().collect()
    }

    /// Sets the validators' standings of the nodes (from their signed challenge reports,
    /// [`combine`](fl_core::inference::scoring::combine)): each node's selection weight is
    /// multiplied by its standing's reputation; a node without a standing keeps its weight.
    pub fn set_standings(
        &self,
        standings: BTreeMap<Address, fl_core::inference::scoring::Standing>,
    ) {
        *self
            .standings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = standings;
    }

    /// Selection weights now: stake times the gateway's own reputation of the node
    /// ([`NodeScore::reputation`]) times the validators' ([`set_standings`](Self::set_standings)).
    pub fn candidates(&self) -> Vec<Candidate> {
        let standings = self
            .standings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.nodes
            .keys()
            .map(|a| Candidate {
                node: *a,
                weight: self.stake_of(a)
                    * self.scores.score(a).reputation()
                    * standings.get(a).map_or(1.0, |s| s.reputation),
            })
            .collect()
    }

    /// One node's answer, or `None` when it fails, refuses or is late.
    async fn ask_one(&self, node: Address, body: Bytes) -> Option<(SignedAnswer, Duration)> {
        let entry = self.nodes.get(&node)?;
        let uri = format!("{}/v1/analyse", entry.url.trim_end_matches('/'));
        let request = hyper::Request::post(uri)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .ok()?;
        let start = Instant::now();
        let exchange = async {
            let response = self.client.request(request).await.ok()?;
            if !response.status().is_success() {
                return None;
            }
            let bytes = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .ok()?
                .to_bytes();
            serde_json::from_slice::<SignedAnswer>(&bytes).ok()
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(Some(answer)) => Some((answer, start.elapsed())),
            _ => None,
        }
    }

    /// Decides `request` on `model` (the promoted model's CID) with the nodes chosen at
    /// `block_hash`, replacing nodes that do not answer; records the scores.
    pub async fn analyse(
        &self,
        request: &InferenceRequest,
        model: &ContentHash,
        block_hash: &[u8; 32],
    ) -> Result<GatewayAnswer, GatewayError> {
        request
            .validate()
            .map_err(|e| GatewayError::BadRequest(e.to_string()))?;
        let hash = request.hash();
        let candidates = self.candidates();
        let eligible = candidates.iter().filter(|c| c.weight > 0.0).count();
        // The whole ranking: the first `redundancy` are asked, the rest replace the silent.
        let ranking = select_nodes(&hash, block_hash, &candidates, eligible)?;
        if ranking.len() < self.policy.redundancy {
            return Err(InferenceError::TooFewNodes {
                available: ranking.len(),
                wanted: self.policy.redundancy,
            }
            .into());
        }
        let body = Bytes::from(
            serde_json::to_vec(request).map_err(|e| GatewayError::BadRequest(e.to_string()))?,
        );
        let mut asked: Vec<Address> = Vec::new();
        let mut answers: Vec<SignedAnswer> = Vec::new();
        let mut latency = BTreeMap::new();
        let mut next = 0;
        while answers.len() < self.policy.redundancy && next < ranking.len() {
            let wanted = self.policy.redundancy - answers.len();
            let batch: Vec<Address> = ranking[next..(next + wanted).min(ranking.len())].to_vec();
            next += batch.len();
            asked.extend(&batch);
            let replies = futures_util::future::join_all(
                batch.iter().map(|n| self.ask_one(*n, body.clone())),
            )
            .await;
            for (node, reply) in batch.iter().zip(replies) {
                if let Some((answer, took)) = reply {
                    latency.insert(*node, took);
                    answers.push(answer);
                }
            }
        }
        let consensus = decide(&hash, model, &asked, &answers, &self.policy);
        match consensus {
            Ok(c) => {
                self.scores.record(&c, &latency);
                Ok(GatewayAnswer {
                    consensus: c,
                    asked,
                })
            }
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use fl_core::MemberKey;

    use super::*;
    use crate::predict::{Predictor, ProposalInput};
    use crate::serve::{Batcher, InferenceNode, serve};
    use fl_core::inference::DEFAULT_TOLERANCE;
    use rand::SeedableRng;

    fn predictor(flip: bool) -> Predictor {
        let (mut card, params) = crate::predict::tests::trained();
        if !flip {
            return Predictor::new(card, &params).unwrap();
        }
        let values = params.values().iter().map(|v| -v).collect();
        let params = fl_core::ParamVec::new(params.schema().clone(), values).unwrap();
        card.params_cid = params.content_hash();
        Predictor::new(card, &params).unwrap()
    }

    fn key(i: u8) -> MemberKey {
        MemberKey::from_hex(&format!("{:064x}", u64::from(i) + 1)).unwrap()
    }

    /// Seven nodes: 0, 1, 2 and 6 honest, 3 on another model, 4 accepts connections and never
    /// answers, 5 is down. 3-of-5 consensus: every request decided right, the wrong node never
    /// agrees, the silent ones are replaced and recorded, and their weights fall.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn five_way_consensus_survives_a_wrong_a_slow_and_a_dead_node() {
        let mut entries = Vec::new();
        let mut tasks = Vec::new();
        for i in 0..7u8 {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            match i {
                4 => tasks.push(tokio::spawn(async move {
                    let mut held = Vec::new();
                    while let Ok((socket, _)) = listener.accept().await {
                        held.push(socket);
                    }
                })),
                5 => drop(listener),
                _ => {
                    let node = Arc::new(InferenceNode::new(key(i), predictor(i == 3)));
                    tasks.push(tokio::spawn(async move {
                        let _ = serve(listener, Batcher::spawn(node), std::future::pending()).await;
                    }));
                }
            }
            entries.push(NodeEntry {
                address: key(i).address().to_string(),
                url: format!("http://{addr}"),
                stake: 1000.0,
            });
        }
        let gateway = Gateway::new(
            entries,
            ConsensusPolicy::default(),
            Duration::from_millis(400),
        )
        .unwrap();
        let local = predictor(false);
        let model = local.card().params_cid;
        let mut replaced = 0;
        for nonce in 0..6u64 {
            let request = InferenceRequest {
                nonce,
                ..InferenceRequest::new(
                    "maker",
                    format!("MIP-{nonce}"),
                    if nonce % 2 == 0 {
                        "raise the fee parameter"
                    } else {
                        "drain the treasury now"
                    },
                    "a proposal body",
                )
            };
            let answer = gateway.analyse(&request, &model, &[9u8; 32]).await.unwrap();
            let c = &answer.consensus;
            let want = local
                .predict(&[ProposalInput {
                    community: request.community.clone(),
                    id: request.id.clone(),
                    title: request.title.clone(),
                    text: request.text.clone(),
                }])
                .unwrap()
                .remove(0);
            assert_eq!(c.label, want.label, "request {nonce}");
            assert!((c.probabilities[0] - want.p_accepted).abs() < 1e-6);
            assert!(c.agreeing.len() >= 3);
            assert!(!c.agreeing.contains(&key(3).address()));
            for d in &c.disagreeing {
                let expected = if d.node == key(3).address() {
                    matches!(d.why, Disagreement::Model(_))
                } else if d.node == key(4).address() || d.node == key(5).address() {
                    d.why == Disagreement::Missing
                } else {
                    false
                };
                assert!(expected, "request {nonce}: {d:?}");
            }
            replaced += usize::from(answer.asked.len() > 5);
            // The caller checks the consensus from the signed answers alone.
            let again = decide(
                &c.request_hash,
                &c.model,
                &answer.asked,
                &c.answers,
                &ConsensusPolicy::default(),
            )
            .unwrap();
            assert_eq!(&again, c);
        }
        assert!(replaced > 0, "the silent nodes were replaced at least once");
        let scores = gateway.scores();
        let wrong = scores.score(&key(3).address());
        assert_eq!(wrong.agreed, 0);
        assert!(wrong.disagreed > 0);
        for silent in [4, 5] {
            let s = scores.score(&key(silent).address());
            assert_eq!(s.agreed + s.disagreed, 0);
            assert!(s.missing > 0, "node {silent}");
        }
        let honest = scores.score(&key(0).address()).reputation();
        for bad in [3, 4, 5] {
            assert!(
                scores.score(&key(bad).address()).reputation() < honest / 2.0,
                "node {bad} weighs less than half an honest node"
            );
        }
        for t in tasks {
            t.abort();
        }
    }

    /// A validator's challenges: an honest node is right every time, a node signing the other
    /// label is caught with evidence anyone re-checks, a slow node answers right but late, a
    /// silent one is missed; the evidence survives a JSON round trip and the honest answers
    /// never become evidence.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn challenges_score_nodes_and_convict_only_the_wrong_one() {
        use crate::serve::Misbehaviour;
        let behaviours = [
            Misbehaviour::Honest,
            Misbehaviour::WrongLabel,
            Misbehaviour::Slow(Duration::from_millis(150)),
        ];
        let mut entries = Vec::new();
        for (i, b) in behaviours.iter().enumerate() {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let node = InferenceNode::new(key(i as u8), predictor(false)).misbehaving(*b);
            let node = Arc::new(node);
            tokio::spawn(async move {
                let _ = serve(listener, Batcher::spawn(node), std::future::pending()).await;
            });
            entries.push(NodeEntry {
                address: key(i as u8).address().to_string(),
                url: format!("http://{addr}"),
                stake: 1000.0,
            });
        }
        // A node that is down, and a listed node without stake (never challenged).
        let down = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let down_addr = down.local_addr().unwrap();
        drop(down);
        for (i, stake) in [(3u8, 1000.0), (4, 0.0)] {
            entries.push(NodeEntry {
                address: key(i).address().to_string(),
                url: format!("http://{down_addr}"),
                stake,
            });
        }
        let gateway =
            Gateway::new(entries, ConsensusPolicy::default(), Duration::from_secs(2)).unwrap();
        let proposals: Vec<ProposalInput> = (0..6)
            .map(|i| ProposalInput {
                community: "maker".into(),
                id: format!("MIP-{i}"),
                title: ["raise the fee parameter", "drain the treasury now"][i % 2].into(),
                text: "a proposal body".into(),
            })
            .collect();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let challenges = challenge_requests(&proposals, &mut rng);
        assert_ne!(challenges[0].nonce, challenges[1].nonce);
        let local = predictor(false);
        let outcome = gateway
            .challenge(&local, &challenges, DEFAULT_TOLERANCE)
            .await;
        let by_node: BTreeMap<Address, _> =
            outcome.observations.iter().map(|o| (o.node, *o)).collect();
        assert_eq!(by_node.len(), 4, "the unstaked node is not challenged");
        let honest = by_node[&key(0).address()];
        assert_eq!((honest.challenges, honest.correct, honest.wrong), (6, 6, 0));
        let wrong = by_node[&key(1).address()];
        assert_eq!((wrong.correct, wrong.wrong), (0, 6));
        let slow = by_node[&key(2).address()];
        assert_eq!(slow.correct, 6);
        assert!(slow.latency_ms >= 150 && slow.latency_ms > honest.latency_ms);
        let dead = by_node[&key(3).address()];
        assert_eq!((dead.missed, dead.latency_ms), (6, u32::MAX));

        assert_eq!(outcome.evidence.len(), 6);
        for e in &outcome.evidence {
            assert_eq!(e.answer.node, key(1).address());
            let json = serde_json::to_vec(e).unwrap();
            let back: WrongAnswer = serde_json::from_slice(&json).unwrap();
            assert_eq!(back.evidence_hash(), e.evidence_hash());
            assert!(back.recheck(&local, DEFAULT_TOLERANCE));
            // Evidence against a node that answered right does not hold.
            let mut framed = back.clone();
            framed.answer = Arc::new(InferenceNode::new(key(0), predictor(false)))
                .answer_all(std::slice::from_ref(&e.request))
                .remove(0)
                .unwrap();
            assert!(!framed.recheck(&local, DEFAULT_TOLERANCE));
        }
    }

    #[test]
    fn an_audit_convicts_a_wrong_signed_answer_and_only_that() {
        let local = predictor(false);
        let model = local.card().params_cid;
        let request = InferenceRequest::new("maker", "MIP-1", "raise the fee parameter", "body");
        let honest = InferenceNode::new(key(0), predictor(false))
            .answer_all(std::slice::from_ref(&request))
            .remove(0)
            .unwrap();
        assert_eq!(audit(&local, &request, &honest, DEFAULT_TOLERANCE), Ok(()));
        // A node that flips the label and signs it.
        let mut lie = honest.statement.clone();
        lie.label = if lie.label == "accepted" {
            "rejected"
        } else {
            "accepted"
        }
        .into();
        let wrong = SignedAnswer::sign(&key(3), lie);
        let evidence = audit(&local, &request, &wrong, DEFAULT_TOLERANCE)
            .unwrap_err()
            .expect("a valid signature on a wrong label is evidence");
        assert_eq!(evidence.expected_label, honest.statement.label);
        assert_eq!(evidence.answer.node, key(3).address());
        // Probabilities off beyond the tolerance are wrong too; within it, not.
        let mut drift = honest.statement.clone();
        drift.probabilities[0] = (drift.probabilities[0] + 1e-3).min(1.0);
        let drifted = SignedAnswer::sign(&key(3), drift);
        assert!(matches!(
            audit(&local, &request, &drifted, DEFAULT_TOLERANCE),
            Err(Some(_))
        ));
        assert_eq!(audit(&local, &request, &drifted, 1e-2), Ok(()));
        // An answer for another model or with a forged signature proves nothing about the node.
        let other = InferenceNode::new(key(1), predictor(true))
            .answer_all(std::slice::from_ref(&request))
            .remove(0)
            .unwrap();
        assert_ne!(other.statement.model, model);
        assert_eq!(
            audit(&local, &request, &other, DEFAULT_TOLERANCE),
            Err(None)
        );
        let mut forged = wrong.clone();
        forged.node = key(0).address();
        assert_eq!(
            audit(&local, &request, &forged, DEFAULT_TOLERANCE),
            Err(None)
        );
        // At the threshold (a tolerance wider than the distance to 0.5), the other label with
        // the same probabilities is rounding, not a lie.
        let p = honest.statement.probabilities[0];
        let wide = (p - 0.5).abs() + 1e-3;
        let mut tipped = honest.statement.clone();
        tipped.label = wrong.statement.label.clone();
        let tipped = SignedAnswer::sign(&key(3), tipped);
        assert_eq!(audit(&local, &request, &tipped, wide), Ok(()));
        assert!(matches!(
            audit(&local, &request, &tipped, DEFAULT_TOLERANCE),
            Err(Some(_))
        ));
    }

    #[test]
    fn a_node_whose_stake_is_zero_is_never_a_candidate() {
        let entries: Vec<NodeEntry> = (0..3)
            .map(|i| NodeEntry {
                address: key(i).address().to_string(),
                url: "http://127.0.0.1:1".into(),
                stake: 10.0,
            })
            .collect();
        let policy = ConsensusPolicy {
            redundancy: 1,
            quorum: 1,
            ..ConsensusPolicy::default()
        };
        let g = Gateway::new(entries, policy, Duration::from_secs(1)).unwrap();
        g.set_stakes(BTreeMap::from([
            (key(1).address(), 0.0),
            (key(2).address(), 5000.0),
        ]));
        let weights: BTreeMap<Address, f64> = g
            .candidates()
            .into_iter()
            .map(|c| (c.node, c.weight))
            .collect();
        assert_eq!(weights[&key(1).address()], 0.0);
        assert!(weights[&key(2).address()] > 100.0 * weights[&key(0).address()]);
    }

    #[test]
    fn bad_node_lists_and_policies_are_refused() {
        let entry = |address: String, url: &str, stake: f64| NodeEntry {
            address,
            url: url.into(),
            stake,
        };
        let a = key(1).address().to_string();
        let policy = ConsensusPolicy::default();
        let t = Duration::from_secs(1);
        for (nodes, needle) in [
            (vec![entry("0x12".into(), "http://x", 1.0)], "0x12"),
            (vec![entry(a.clone(), "ftp://x", 1.0)], "http://"),
            (vec![entry(a.clone(), "http://x", f64::NAN)], "stake"),
            (
                vec![
                    entry(a.clone(), "http://x", 1.0),
                    entry(a.clone(), "http://y", 1.0),
                ],
                "twice",
            ),
        ] {
            let err = Gateway::new(nodes, policy, t).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
        let bad = ConsensusPolicy {
            redundancy: 4,
            quorum: 2,
            ..policy
        };
        assert!(Gateway::new(Vec::new(), bad, t).is_err());
    }
}

/// Evidence that a node signed a wrong answer: its signed answer for the promoted model and
/// what the model deterministically gives for the same request. Anyone holding the model
/// (verified against the registry's hash) re-runs [`audit`] and gets the same verdict, which
/// is what slashing a node needs.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WrongAnswer {
    /// The request.
    pub request: InferenceRequest,
    /// The node's signed answer.
    pub answer: SignedAnswer,
    /// The label the model gives.
    pub expected_label: String,
    /// The probabilities the model gives.
    pub expected_probabilities: Vec<f32>,
    /// The largest per-class difference.
    pub difference: f32,
}

/// Recomputes `request` with `predictor` (a validator's own copy of the promoted model) and
/// checks `answer` against it: `Ok(())` for an honest answer; `Err(Some(evidence))` when the
/// node's signature is valid, the answer is for this request and this model, and its label or
/// probabilities (beyond `tolerance`) differ from the recomputation (a label is not held
/// against a node when the recomputed probability is within `tolerance` of the 0.5 threshold:
/// another CPU's rounding may tip it); `Err(None)` when the answer
/// cannot be held against the node (no valid signature, another request or model, or the
/// request itself is refused by the model).
pub fn audit(
    predictor: &crate::predict::Predictor,
    request: &InferenceRequest,
    answer: &SignedAnswer,
    tolerance: f32,
) -> Result<(), Option<Box<WrongAnswer>>> {
    if answer.verify().is_err()
        || answer.statement.request_hash != request.hash()
        || answer.statement.model != predictor.card().params_cid
    {
        return Err(None);
    }
    let mut predicted = predictor
        .predict(&[crate::serve::input_of(request)])
        .map_err(|_| None)?;
    let p = predicted.remove(0);
    let expected = vec![p.p_accepted, 1.0 - p.p_accepted];
    let difference = if expected.len() == answer.statement.probabilities.len() {
        expected
            .iter()
            .zip(&answer.statement.probabilities)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max)
    } else {
        f32::INFINITY
    };
    // Within the tolerance of the decision threshold, float rounding on another CPU may tip
    // the label: such an answer is honest whichever label it carries.
    let borderline = (p.p_accepted - 0.5).abs() <= tolerance;
    if difference <= tolerance && (p.label == answer.statement.label || borderline) {
        return Ok(());
    }
    Err(Some(Box::new(WrongAnswer {
        request: request.clone(),
        answer: answer.clone(),
        expected_label: p.label,
        expected_probabilities: expected,
        difference,
    })))
}

impl WrongAnswer {
    /// The evidence's content address: SHA-256 of its JSON, what a slashing verdict names
    /// (the evidence itself is published, e.g. in the checkpoint store, for anyone to re-check
    /// with [`recheck`](Self::recheck)).
    pub fn evidence_hash(&self) -> ContentHash {
        ContentHash::of(&serde_json::to_vec(self).unwrap_or_default())
    }

    /// Re-runs the [`audit`] with `predictor` (the promoted model, verified by whoever checks):
    /// whether the evidence holds.
    pub fn recheck(&self, predictor: &crate::predict::Predictor, tolerance: f32) -> bool {
        matches!(
            audit(predictor, &self.request, &self.answer, tolerance),
            Err(Some(e)) if e.expected_label == self.expected_label
        )
    }
}

/// What a validator's challenges found: one observation per node, and the evidence of every
/// provably wrong answer.
#[derive(Debug, Clone, Default)]
pub struct ChallengeOutcome {
    /// Per node: challenges, correct, wrong, missed, median latency.
    pub observations: Vec<fl_core::inference::scoring::NodeObservation>,
    /// Signed answers that differ from the recomputation.
    pub evidence: Vec<WrongAnswer>,
}

/// Challenge requests from real proposals: the same JSON a requester sends, each with a
/// fresh random nonce, so a node cannot tell a challenge from real traffic (nor look the
/// answer up from an earlier one).
pub fn challenge_requests(
    proposals: &[crate::predict::ProposalInput],
    rng: &mut impl rand::Rng,
) -> Vec<InferenceRequest> {
    proposals
        .iter()
        .map(|p| InferenceRequest {
            nonce: rng.next_u64(),
            ..InferenceRequest::new(&p.community, &p.id, &p.title, &p.text)
        })
        .collect()
}

impl Gateway {
    /// A validator's round: sends each of `challenges` to every listed node with a positive
    /// stake (all nodes of one challenge at once), and checks each answer with [`audit`]
    /// against `predictor`, the validator's own copy of the promoted model.
    pub async fn challenge(
        &self,
        predictor: &crate::predict::Predictor,
        challenges: &[InferenceRequest],
        tolerance: f32,
    ) -> ChallengeOutcome {
        use fl_core::inference::scoring::NodeObservation;
        let nodes: Vec<Address> = self
            .nodes
            .keys()
            .copied()
            .filter(|n| self.stake_of(n) > 0.0)
            .collect();
        let mut seen: BTreeMap<Address, (NodeObservation, Vec<u32>)> = nodes
            .iter()
            .map(|n| {
                let o = NodeObservation {
                    node: *n,
                    challenges: 0,
                    correct: 0,
                    wrong: 0,
                    missed: 0,
                    latency_ms: u32::MAX,
                };
                (*n, (o, Vec::new()))
            })
            .collect();
        let mut evidence = Vec::new();
        for request in challenges {
            let Ok(body) = serde_json::to_vec(request) else {
                continue;
            };
            let body = Bytes::from(body);
            let replies = futures_util::future::join_all(
                nodes.iter().map(|n| self.ask_one(*n, body.clone())),
            )
            .await;
            for (node, reply) in nodes.iter().zip(replies) {
                let Some((o, latencies)) = seen.get_mut(node) else {
                    continue;
                };
                o.challenges += 1;
                let Some((answer, took)) = reply else {
                    o.missed += 1;
                    continue;
                };
                latencies.push(u32::try_from(took.as_millis()).unwrap_or(u32::MAX));
                match audit(predictor, request, &answer, tolerance) {
                    Ok(()) if answer.node == *node => o.correct += 1,
                    Err(Some(e)) if answer.node == *node => {
                        o.wrong += 1;
                        evidence.push(*e);
                    }
                    _ => o.missed += 1,
                }
            }
        }
        let observations = seen
            .into_values()
            .map(|(mut o, mut latencies)| {
                latencies.sort_unstable();
                if let Some(m) = latencies.get(latencies.len() / 2) {
                    o.latency_ms = *m;
                }
                o
            })
            .collect();
        ChallengeOutcome {
            observations,
            evidence,
        }
    }

    /// A node's stake: the staking contract's when set, else the list's (0 for an unknown node).
    fn stake_of(&self, node: &Address) -> f64 {
        let stakes = self
            .stakes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        stakes
            .get(node)
            .copied()
            .or_else(|| self.nodes.get(node).map(|n| n.stake))
            .unwrap_or(0.0)
    }
}

/// Where the gateway takes the block hash that seeds each request's node selection.
#[derive(Debug, Clone)]
pub enum BlockSource {
    /// A fixed value (tests, or a deployment that publishes one beacon per epoch).
    Fixed([u8; 32]),
    /// The latest block of an EVM chain, by JSON-RPC (`eth_getBlockByNumber("latest")`).
    Rpc(String),
}

impl BlockSource {
    /// The current block hash, asking through `gateway`'s HTTP client.
    pub async fn current(&self, gateway: &Gateway) -> Result<[u8; 32], String> {
        let client = &gateway.client;
        let url = match self {
            Self::Fixed(h) => return Ok(*h),
            Self::Rpc(url) => url,
        };
        let body = br#"{"jsonrpc":"2.0","id":1,"method":"eth_getBlockByNumber","params":["latest",false]}"#;
        let request = hyper::Request::post(url.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from_static(body)))
            .map_err(|e| format!("{url}: {e}"))?;
        let response = tokio::time::timeout(Duration::from_secs(10), client.request(request))
            .await
            .map_err(|_| format!("{url}: no answer within 10 s"))?
            .map_err(|e| format!("{url}: {e}"))?;
        let bytes = Limited::new(response.into_body(), 1 << 20)
            .collect()
            .await
            .map_err(|e| format!("{url}: {e}"))?
            .to_bytes();
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| format!("{url}: {e}"))?;
        let hash = value["result"]["hash"]
            .as_str()
            .ok_or_else(|| format!("{url}: no block hash in {value}"))?;
        let raw = hex::decode(hash.trim_start_matches("0x")).map_err(|e| e.to_string())?;
        raw.try_into()
            .map_err(|_| format!("{url}: a block hash of another length: {hash}"))
    }
}

/// The gateway's HTTP API: what a forum bot, a wallet or a member's tooling calls.
#[derive(Debug)]
pub struct GatewayService {
    /// The gateway.
    pub gateway: Gateway,
    /// The CID of the model governance promoted (answers for any other are disagreements);
    /// replaced when a promotion is seen.
    pub model: std::sync::RwLock<ContentHash>,
    /// Where each request's block hash comes from.
    pub blocks: BlockSource,
    /// With fees: every request must come with a receipt the ledger accepts, and is logged.
    #[cfg(feature = "ledger")]
    pub ledger: Option<crate::ledger::FeeLedger>,
}

impl GatewayService {
    /// A service without fees.
    pub fn new(gateway: Gateway, model: ContentHash, blocks: BlockSource) -> Self {
        Self {
            gateway,
            model: std::sync::RwLock::new(model),
            blocks,
            #[cfg(feature = "ledger")]
            ledger: None,
        }
    }

    /// The same service charging fees through `ledger`.
    #[cfg(feature = "ledger")]
    pub fn with_ledger(self, ledger: crate::ledger::FeeLedger) -> Self {
        Self {
            ledger: Some(ledger),
            ..self
        }
    }
}

/// `POST /v1/analyse` takes an [`InferenceRequest`] and returns the [`GatewayAnswer`] (the
/// consensus with the nodes' signed answers); 400 for a bad request, 413 for a body over
/// [`crate::serve::MAX_BODY_BYTES`], 502 when the block source fails, 503 without consensus.
/// With a fee ledger the body is a [`PaidRequest`](crate::ledger::PaidRequest) instead, and
/// its receipt is checked before any node is asked: 403 for a bad signature or a receipt for
/// another gateway, 402 for a fee below the minimum, an expired receipt or no prepaid
/// balance, 409 for a replayed nonce, 400 for a receipt of another request; a request without
/// consensus is not charged.
/// `GET /v1/scores` returns every node's [`NodeScore`].
pub fn router(service: std::sync::Arc<GatewayService>) -> axum::Router {
    use axum::extract::rejection::BytesRejection;
    use axum::extract::{DefaultBodyLimit, State};
    use axum::http::StatusCode;
    use axum::response::Response;

    use crate::serve::{json, read_request};

    async fn analyse(
        State(service): State<std::sync::Arc<GatewayService>>,
        body: Result<Bytes, BytesRejection>,
    ) -> Response {
        #[cfg(feature = "ledger")]
        if let Some(ledger) = &service.ledger {
            return paid::analyse(&service, ledger, body).await;
        }
        let request = match read_request(body) {
            Ok(r) => r,
            Err(response) => return *response,
        };
        match decide_request(&service, &request).await {
            Ok(answer) => json(StatusCode::OK, &answer),
            Err(response) => *response,
        }
    }

    async fn scores(State(service): State<std::sync::Arc<GatewayService>>) -> Response {
        let scores: BTreeMap<String, NodeScore> = service
            .gateway
            .nodes
            .keys()
            .map(|a| (a.to_string(), service.gateway.scores.score(a)))
            .collect();
        json(StatusCode::OK, &scores)
    }

    axum::Router::new()
        .route("/v1/analyse", axum::routing::post(analyse))
        .route("/v1/scores", axum::routing::get(scores))
        .layer(DefaultBodyLimit::max(crate::serve::MAX_BODY_BYTES))
        .with_state(service)
}

/// Decides `request` on the promoted model at the current block, or the error response: 400
/// for a bad request, 502 when the block source fails, 503 without consensus.
async fn decide_request(
    service: &GatewayService,
    request: &InferenceRequest,
) -> Result<GatewayAnswer, Box<axum::response::Response>> {
    use axum::http::StatusCode;

    use crate::serve::error;
    let block = service
        .blocks
        .current(&service.gateway)
        .await
        .map_err(|e| Box::new(error(StatusCode::BAD_GATEWAY, format!("block source: {e}"))))?;
    let model = *service
        .model
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    service
        .gateway
        .analyse(request, &model, &block)
        .await
        .map_err(|e| {
            let status = match e {
                GatewayError::BadRequest(_) => StatusCode::BAD_REQUEST,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            };
            Box::new(error(status, e.to_string()))
        })
}

/// The paid `POST /v1/analyse`.
#[cfg(feature = "ledger")]
mod paid {
    use axum::extract::rejection::BytesRejection;
    use axum::http::StatusCode;
    use axum::response::Response;
    use bytes::Bytes;
    use dao::fees::RejectReason;

    use super::{GatewayService, decide_request};
    use crate::ledger::{FeeError, FeeLedger, PaidRequest};
    use crate::serve::{error, json};

    /// The status a refused receipt gets.
    fn status_of(e: &FeeError) -> StatusCode {
        match e {
            FeeError::OtherRequest { .. } => StatusCode::BAD_REQUEST,
            FeeError::Receipt(RejectReason::BadSignature | RejectReason::WrongGateway) => {
                StatusCode::FORBIDDEN
            }
            FeeError::Receipt(_) | FeeError::NoBalance { .. } => StatusCode::PAYMENT_REQUIRED,
            FeeError::Replayed { .. } => StatusCode::CONFLICT,
            FeeError::Chain(_) => StatusCode::BAD_GATEWAY,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub(super) async fn analyse(
        service: &GatewayService,
        ledger: &FeeLedger,
        body: Result<Bytes, BytesRejection>,
    ) -> Response {
        let body = match body {
            Ok(b) => b,
            Err(rejection) => return error(rejection.status(), rejection.body_text()),
        };
        let paid: PaidRequest = match serde_json::from_slice(&body) {
            Ok(p) => p,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "malformed paid request (this gateway charges fees: send                          {{request, receipt, signature}}): {e}"
                    ),
                );
            }
        };
        if let Err(e) = paid.request.validate() {
            return error(StatusCode::BAD_REQUEST, format!("bad request: {e}"));
        }
        let accepted = match ledger.accept(&paid).await {
            Ok(a) => a,
            Err(e) => return error(status_of(&e), e.to_string()),
        };
        let start = std::time::Instant::now();
        match decide_request(service, &paid.request).await {
            Ok(answer) => {
                if let Err(e) = ledger
                    .log(accepted.requester, &answer, start.elapsed())
                    .await
                {
                    tracing::warn!("request log: {e}");
                }
                json(StatusCode::OK, &answer)
            }
            Err(response) => {
                if let Err(e) = ledger.refund(&accepted, "not served").await {
                    tracing::warn!("cannot take back receipt {:?}: {e}", accepted);
                }
                *response
            }
        }
    }
}
