//! The inference node: serves a published proposal model over HTTP JSON and gRPC, each answer
//! signed by the node's member key over the request hash, the model CID and the output
//! ([`fl_core::inference`]), so a gateway or a caller can decide by consensus across nodes and
//! anyone can hold a node to what it answered.
//!
//! - [`InferenceNode`] holds the key and the current [`Predictor`];
//!   [`promote`](InferenceNode::promote) swaps in another model atomically: every answer is
//!   computed and signed with one model, so no answer mixes two.
//! - [`Batcher`] runs predictions on a blocking thread and batches the requests that arrive
//!   while a batch is running (no added wait: an idle node answers a lone request at once).
//!   Both APIs answer through one batcher, so requests of either are batched together.
//! - [`router`] is the HTTP API: `POST /v1/analyse` takes an [`InferenceRequest`] and returns
//!   a [`SignedAnswer`]; `GET /v1/model` names the model and the node. Bad input gets a JSON
//!   `{"error": ...}` with 400 (malformed JSON, a field over its limit) or 413 (a body over
//!   [`MAX_BODY_BYTES`]); the node keeps serving.
//! - [`grpc`] is the gRPC API, service `daofl.v1.InferenceNode` (`Analyse`, `Model`): the same
//!   answers, byte for byte (the signed answer's JSON), refusals as gRPC status codes
//!   (`INVALID_ARGUMENT`, `UNAVAILABLE`, `INTERNAL`), messages bounded by [`MAX_BODY_BYTES`];
//!   and a client, [`grpc::analyse`].
//!
//! `fl-client serve --model RUN --key KEY --listen ADDR [--grpc-listen ADDR]` runs one.

use std::sync::{Arc, RwLock};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use fl_core::inference::{AnswerStatement, InferenceRequest, SignedAnswer};
use fl_core::{Address, ContentHash, MemberKey};
use tokio::sync::{mpsc, oneshot};

use crate::predict::{Predictor, ProposalInput};

pub mod grpc;

/// Largest request body: the largest text and title plus room for the JSON around them.
pub const MAX_BODY_BYTES: usize = fl_core::inference::MAX_TEXT_BYTES
    + fl_core::inference::MAX_TITLE_BYTES
    + 2 * fl_core::inference::MAX_ID_BYTES
    + (8 << 10);

/// Most requests predicted together.
pub const MAX_BATCH: usize = 64;

/// Why a request got no answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The request is malformed or over a limit.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The model failed on the request.
    #[error("prediction failed: {0}")]
    Model(String),
    /// The node is shutting down.
    #[error("the node is shutting down")]
    Unavailable,
}

/// How a node misbehaves: DEVELOPMENT ONLY, for testing gateways, validators and slashing
/// with real node processes (`fl-client serve --misbehave`, built with the `attack` feature
/// only). A production node is [`Misbehaviour::Honest`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Misbehaviour {
    /// Answers what the model gives.
    #[default]
    Honest,
    /// Signs the other label (and swapped probabilities) for the model it serves: a provably
    /// wrong answer.
    WrongLabel,
    /// Answers right, after this long.
    Slow(std::time::Duration),
}

impl std::str::FromStr for Misbehaviour {
    type Err = String;

    /// `honest`, `wrong-label` or `slow=<milliseconds>`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "honest" => Ok(Self::Honest),
            "wrong-label" => Ok(Self::WrongLabel),
            _ => match s.strip_prefix("slow=").map(str::parse::<u64>) {
                Some(Ok(ms)) => Ok(Self::Slow(std::time::Duration::from_millis(ms))),
                _ => Err(format!(
                    "`{s}`: expected honest, wrong-label or slow=<milliseconds>"
                )),
            },
        }
    }
}

/// A node's key and the model it serves.
#[derive(Debug)]
pub struct InferenceNode {
    key: MemberKey,
    current: RwLock<Arc<Predictor>>,
    misbehaviour: Misbehaviour,
}

impl InferenceNode {
    /// A node answering with `predictor`, signing with `key`.
    pub fn new(key: MemberKey, predictor: Predictor) -> Self {
        Self {
            key,
            current: RwLock::new(Arc::new(predictor)),
            misbehaviour: Misbehaviour::Honest,
        }
    }

    /// The same node, misbehaving (development only: see [`Misbehaviour`]).
    pub fn misbehaving(self, misbehaviour: Misbehaviour) -> Self {
        Self {
            misbehaviour,
            ..self
        }
    }

    /// How it behaves.
    pub fn misbehaviour(&self) -> Misbehaviour {
        self.misbehaviour
    }

    /// The node's address (what its signatures recover to).
    pub fn address(&self) -> Address {
        self.key.address()
    }

    fn snapshot(&self) -> Arc<Predictor> {
        Arc::clone(
            &self
                .current
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// The CID of the parameters it serves now.
    pub fn model(&self) -> ContentHash {
        self.snapshot().card().params_cid
    }

    /// Serves `predictor` from now on; answers already being computed finish with the model
    /// they started with. Returns the new model's CID.
    pub fn promote(&self, predictor: Predictor) -> ContentHash {
        let cid = predictor.card().params_cid;
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(predictor);
        cid
    }

    /// What the node signs for `p`: `p` itself unless it misbehaves.
    fn tamper(&self, mut p: crate::predict::Prediction) -> crate::predict::Prediction {
        if self.misbehaviour == Misbehaviour::WrongLabel {
            p.p_accepted = 1.0 - p.p_accepted;
            p.label = if p.label == "accepted" {
                "rejected"
            } else {
                "accepted"
            }
            .into();
        }
        p
    }

    /// Answers `requests` with one model, predicting the valid ones in one batch; one result
    /// per request, in order.
    pub fn answer_all(
        &self,
        requests: &[InferenceRequest],
    ) -> Vec<Result<SignedAnswer, NodeError>> {
        let predictor = self.snapshot();
        let model = predictor.card().params_cid;
        let mut results: Vec<Option<Result<SignedAnswer, NodeError>>> = vec![None; requests.len()];
        let mut inputs = Vec::new();
        let mut positions = Vec::new();
        for (i, r) in requests.iter().enumerate() {
            match r.validate() {
                Ok(()) => {
                    inputs.push(input_of(r));
                    positions.push(i);
                }
                Err(e) => results[i] = Some(Err(NodeError::BadRequest(e.to_string()))),
            }
        }
        let predicted = if inputs.is_empty() {
            Ok(Vec::new())
        } else {
            predictor.predict(&inputs)
        };
        match predicted {
            Ok(predictions) => {
                for (i, p) in positions.iter().zip(predictions) {
                    let statement = statement_of(&requests[*i], model, self.tamper(p));
                    results[*i] = Some(Ok(SignedAnswer::sign(&self.key, statement)));
                }
            }
            // One input over the card's limits fails the whole batch: answer each alone.
            Err(_) if inputs.len() > 1 => {
                for (input, i) in inputs.into_iter().zip(positions) {
                    let one = predictor
                        .predict(std::slice::from_ref(&input))
                        .map_err(|e| NodeError::BadRequest(e.to_string()))
                        .map(|mut p| {
                            let statement =
                                statement_of(&requests[i], model, self.tamper(p.remove(0)));
                            SignedAnswer::sign(&self.key, statement)
                        });
                    results[i] = Some(one);
                }
            }
            Err(e) => {
                for i in positions {
                    results[i] = Some(Err(NodeError::BadRequest(e.to_string())));
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or(Err(NodeError::Unavailable)))
            .collect()
    }
}

type Job = (
    InferenceRequest,
    oneshot::Sender<Result<SignedAnswer, NodeError>>,
);

/// Runs predictions off the async runtime, batching the requests that queue up meanwhile.
#[derive(Debug, Clone)]
pub struct Batcher {
    tx: mpsc::Sender<Job>,
    node: Arc<InferenceNode>,
}

impl Batcher {
    /// Starts the batching task for `node` (on the current tokio runtime).
    pub fn spawn(node: Arc<InferenceNode>) -> Self {
        let (tx, mut rx) = mpsc::channel::<Job>(4 * MAX_BATCH);
        let worker = Arc::clone(&node);
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut jobs = vec![first];
                while jobs.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(job) => jobs.push(job),
                        Err(_) => break,
                    }
                }
                let node = Arc::clone(&worker);
                let (requests, replies): (Vec<_>, Vec<_>) = jobs.into_iter().unzip();
                let answers = tokio::task::spawn_blocking(move || node.answer_all(&requests))
                    .await
                    .unwrap_or_default();
                let mut answers = answers.into_iter();
                for reply in replies {
                    let _ = reply.send(
                        answers
                            .next()
                            .unwrap_or(Err(NodeError::Model("the prediction task failed".into()))),
                    );
                }
            }
        });
        Self { tx, node }
    }

    /// The node served.
    pub fn node(&self) -> &Arc<InferenceNode> {
        &self.node
    }

    /// Answers one request (batched with whatever else is waiting).
    pub async fn answer(&self, request: InferenceRequest) -> Result<SignedAnswer, NodeError> {
        if let Misbehaviour::Slow(delay) = self.node.misbehaviour {
            tokio::time::sleep(delay).await;
        }
        let (tx, rx) = oneshot::channel();
        self.tx
            .send((request, tx))
            .await
            .map_err(|_| NodeError::Unavailable)?;
        rx.await.map_err(|_| NodeError::Unavailable)?
    }
}

/// `GET /v1/model`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelInfo {
    /// The CID of the parameters served.
    pub model: String,
    /// The node's address.
    pub node: String,
}

/// What the model reads of a request.
pub(crate) fn input_of(request: &InferenceRequest) -> ProposalInput {
    ProposalInput {
        community: request.community.clone(),
        id: request.id.clone(),
        title: request.title.clone(),
        text: request.text.clone(),
    }
}

/// The statement a node signs for `prediction` of `request` by `model`: probabilities in the
/// card's order (accepted, rejected).
pub(crate) fn statement_of(
    request: &InferenceRequest,
    model: ContentHash,
    prediction: crate::predict::Prediction,
) -> AnswerStatement {
    AnswerStatement::new(
        request,
        model,
        prediction.label,
        vec![prediction.p_accepted, 1.0 - prediction.p_accepted],
        prediction.kind.name(),
    )
}

/// `value` as a JSON response with `status`.
pub(crate) fn json(status: StatusCode, value: &impl serde::Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (status, [(CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// `{"error": message}` with `status`.
pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    json(status, &serde_json::json!({ "error": message.into() }))
}

/// A request body as an [`InferenceRequest`], or the error response: the body limit's status
/// (413) or 400 for malformed JSON.
pub(crate) fn read_request(
    body: Result<Bytes, BytesRejection>,
) -> Result<InferenceRequest, Box<Response>> {
    let body =
        body.map_err(|rejection| Box::new(error(rejection.status(), rejection.body_text())))?;
    serde_json::from_slice(&body).map_err(|e| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            format!("malformed request: {e}"),
        ))
    })
}

async fn analyse(State(batcher): State<Batcher>, body: Result<Bytes, BytesRejection>) -> Response {
    let request = match read_request(body) {
        Ok(r) => r,
        Err(response) => return *response,
    };
    match batcher.answer(request).await {
        Ok(answer) => json(StatusCode::OK, &answer),
        Err(e @ NodeError::BadRequest(_)) => error(StatusCode::BAD_REQUEST, e.to_string()),
        Err(e @ NodeError::Unavailable) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn model(State(batcher): State<Batcher>) -> Response {
    let node = batcher.node();
    json(
        StatusCode::OK,
        &ModelInfo {
            model: node.model().to_string(),
            node: node.address().to_string(),
        },
    )
}

/// The node's HTTP API (see the module docs).
pub fn router(batcher: Batcher) -> Router {
    Router::new()
        .route("/v1/analyse", post(analyse))
        .route("/v1/model", get(model))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(batcher)
}

/// Serves `router(batcher)` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    batcher: Batcher,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(batcher))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use fl_core::inference::{ConsensusPolicy, Disagreement, decide};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    pub(super) fn predictor() -> Predictor {
        let (card, params) = crate::predict::tests::trained();
        Predictor::new(card, &params).unwrap()
    }

    /// The same architecture with other parameters (a newly promoted model).
    pub(super) fn other_predictor() -> Predictor {
        let (mut card, params) = crate::predict::tests::trained();
        let mut values = params.values().to_vec();
        values.iter_mut().for_each(|v| *v = -*v);
        let params = fl_core::ParamVec::new(params.schema().clone(), values).unwrap();
        card.params_cid = params.content_hash();
        Predictor::new(card, &params).unwrap()
    }

    pub(super) fn request(nonce: u64) -> InferenceRequest {
        InferenceRequest {
            nonce,
            ..InferenceRequest::new("maker", "MIP-1", "raise the fee parameter", "a body")
        }
    }

    #[test]
    fn answers_are_signed_for_the_request_and_model_and_bad_requests_are_refused_alone() {
        let node = InferenceNode::new(MemberKey::generate(), predictor());
        let mut oversized = request(2);
        oversized.title = "t".repeat(fl_core::inference::MAX_TITLE_BYTES + 1);
        let answers = node.answer_all(&[request(1), oversized, request(3)]);
        assert!(matches!(&answers[1], Err(NodeError::BadRequest(e)) if e.contains("title")));
        for (i, a) in [(0, &answers[0]), (2, &answers[2])] {
            let a = a.as_ref().unwrap();
            a.verify().unwrap();
            assert_eq!(a.node, node.address());
            assert_eq!(a.statement.model, node.model());
            assert_eq!(a.statement.request_hash, request(i as u64 + 1).hash());
            let p = &a.statement.probabilities;
            assert!((p[0] + p[1] - 1.0).abs() < 1e-6);
            assert_eq!(a.statement.label == "accepted", p[0] >= 0.5);
        }
        // Batched or alone: the same bits.
        let alone = node.answer_all(&[request(1)]).remove(0).unwrap();
        assert_eq!(alone, answers[0].clone().unwrap());
    }

    #[test]
    fn a_promotion_switches_the_model_of_every_later_answer() {
        let node = InferenceNode::new(MemberKey::generate(), predictor());
        let before = node.answer_all(&[request(1)]).remove(0).unwrap();
        let new = node.promote(other_predictor());
        assert_ne!(new, before.statement.model);
        let after = node.answer_all(&[request(1)]).remove(0).unwrap();
        assert_eq!(after.statement.model, new);
        assert_eq!(node.model(), new);
    }

    /// One HTTP/1.1 exchange on a fresh connection: the status and the body.
    pub(super) async fn http(
        addr: std::net::SocketAddr,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> (u16, Vec<u8>) {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: node\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        // The server may answer (413) before reading the whole body.
        let _ = stream.write_all(body).await;
        let mut out = Vec::new();
        let _ = stream.read_to_end(&mut out).await;
        let text = String::from_utf8_lossy(&out).into_owned();
        let status = text[9..12].parse().unwrap();
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.as_bytes().to_vec())
            .unwrap_or_default();
        (status, body)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn three_nodes_over_http_answer_and_a_consensus_outvotes_a_node_on_another_model() {
        let mut addrs = Vec::new();
        let mut stops = Vec::new();
        let mut nodes = Vec::new();
        for i in 0..3 {
            let model = if i == 2 {
                other_predictor()
            } else {
                predictor()
            };
            let node = Arc::new(InferenceNode::new(MemberKey::generate(), model));
            nodes.push(node.address());
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            addrs.push(listener.local_addr().unwrap());
            let (stop, stopped) = oneshot::channel::<()>();
            stops.push(stop);
            tokio::spawn(serve(listener, Batcher::spawn(node), async {
                let _ = stopped.await;
            }));
        }
        let req = request(7);
        let body = serde_json::to_vec(&req).unwrap();
        let mut answers = Vec::new();
        for addr in &addrs {
            let (status, bytes) = http(*addr, "POST", "/v1/analyse", &body).await;
            assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
            answers.push(serde_json::from_slice::<SignedAnswer>(&bytes).unwrap());
        }
        let (status, info) = http(addrs[0], "GET", "/v1/model", b"").await;
        assert_eq!(status, 200);
        let info: ModelInfo = serde_json::from_slice(&info).unwrap();
        let promoted = answers[0].statement.model;
        assert_eq!(info.model, promoted.to_string());

        let policy = ConsensusPolicy {
            redundancy: 3,
            quorum: 2,
            tolerance: fl_core::inference::DEFAULT_TOLERANCE,
        };
        let c = decide(&req.hash(), &promoted, &nodes, &answers, &policy).unwrap();
        assert_eq!(c.agreeing, nodes[..2].to_vec());
        assert_eq!(c.label, answers[0].statement.label);
        assert!(matches!(c.disagreeing[0].why, Disagreement::Model(m) if m != promoted));

        // Hostile input: each refused with a clear error, and the node still serves.
        let (status, bytes) = http(addrs[0], "POST", "/v1/analyse", b"{not json").await;
        assert_eq!(status, 400);
        assert!(String::from_utf8_lossy(&bytes).contains("malformed request"));
        let (status, bytes) = http(
            addrs[0],
            "POST",
            "/v1/analyse",
            br#"{"community":"c","id":"1","title":"t","text":"x","extra":1}"#,
        )
        .await;
        assert_eq!(status, 400, "{}", String::from_utf8_lossy(&bytes));
        let mut long = request(8);
        long.text = "x".repeat(fl_core::inference::MAX_TEXT_BYTES + 10);
        let (status, _) = http(
            addrs[0],
            "POST",
            "/v1/analyse",
            &serde_json::to_vec(&long).unwrap(),
        )
        .await;
        assert_eq!(status, 400, "over the text limit, under the body limit");
        let huge = vec![b' '; MAX_BODY_BYTES + 1];
        let (status, _) = http(addrs[0], "POST", "/v1/analyse", &huge).await;
        assert_eq!(status, 413);
        let (status, _) = http(addrs[0], "POST", "/v1/analyse", &body).await;
        assert_eq!(status, 200, "still serving");
        for stop in stops {
            let _ = stop.send(());
        }
    }
}
