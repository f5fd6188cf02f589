//! The inference node's gRPC API: service `daofl.v1.InferenceNode` (`Analyse`, `Model`) on the
//! same [`Batcher`] as the HTTP API, so both share the batching, the promoted-model swap and
//! the node's behaviour, and answer the same request with the same bytes.
//!
//! `Analyse` returns the canonical JSON of the [`SignedAnswer`] (`signed_answer_json`, what
//! `POST /v1/analyse` returns): one answer document whichever API carried it (the proto file
//! says why). Refusals are gRPC statuses: `INVALID_ARGUMENT` for a request over a limit of
//! [`fl_core::inference`] or with neither title nor text, `UNAVAILABLE` when the node is
//! shutting down, `INTERNAL` when the model fails. A message over [`MAX_BODY_BYTES`] is refused
//! by the transport (`OUT_OF_RANGE`) before it is decoded, and one that is not protobuf (or has
//! a string that is not UTF-8) is `INTERNAL`, as gRPC prescribes for undecodable messages.
//!
//! [`analyse`] and [`NodeConnection`] are the client side.
//!
//! ```no_run
//! # async fn run(batcher: fl_client::serve::Batcher) -> Result<(), Box<dyn std::error::Error>> {
//! use fl_client::serve::grpc;
//! use fl_core::inference::InferenceRequest;
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8611").await?;
//! tokio::spawn(grpc::serve_grpc(listener, batcher, std::future::pending()));
//! let request = InferenceRequest::new("maker", "MIP-1", "Raise the fee", "Body text");
//! let answer = grpc::analyse("http://127.0.0.1:8611", &request).await?;
//! answer.verify()?;
//! # Ok(())
//! # }
//! ```

use std::time::Duration;

use fl_core::inference::{InferenceRequest, SignedAnswer};
use fl_core::wire::pb;
use fl_node::grpc::inference_node_client::InferenceNodeClient;
use fl_node::grpc::inference_node_server::{InferenceNode, InferenceNodeServer};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

use super::{Batcher, MAX_BODY_BYTES, ModelInfo, NodeError};

/// Largest answer a client reads from a node (as the gateway reads over HTTP).
pub const MAX_ANSWER_BYTES: usize = crate::gateway::MAX_ANSWER_BYTES;

/// The `InferenceNode` service of one node: see the module docs.
#[derive(Debug, Clone)]
pub struct InferenceService {
    batcher: Batcher,
}

/// The tonic service answering with `batcher`, decoding messages of at most
/// [`MAX_BODY_BYTES`] (the HTTP API's body limit).
pub fn grpc_service(batcher: Batcher) -> InferenceNodeServer<InferenceService> {
    InferenceNodeServer::new(InferenceService { batcher })
        .max_decoding_message_size(MAX_BODY_BYTES)
        .max_encoding_message_size(MAX_ANSWER_BYTES)
}

/// Serves [`grpc_service`]`(batcher)` on `listener` until `shutdown` resolves.
pub async fn serve_grpc(
    listener: tokio::net::TcpListener,
    batcher: Batcher,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(grpc_service(batcher))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            shutdown,
        )
        .await
}

/// The gRPC status for a [`NodeError`].
fn status_of(error: NodeError) -> Status {
    match error {
        NodeError::BadRequest(_) => Status::invalid_argument(error.to_string()),
        NodeError::Unavailable => Status::unavailable(error.to_string()),
        NodeError::Model(_) => Status::internal(error.to_string()),
    }
}

#[tonic::async_trait]
impl InferenceNode for InferenceService {
    async fn analyse(
        &self,
        request: Request<pb::AnalyseRequest>,
    ) -> Result<Response<pb::AnalyseResponse>, Status> {
        let pb::AnalyseRequest {
            community,
            id,
            title,
            text,
            nonce,
        } = request.into_inner();
        let request = InferenceRequest {
            community,
            id,
            title,
            text,
            nonce,
        };
        let answer = self.batcher.answer(request).await.map_err(status_of)?;
        let signed_answer_json =
            serde_json::to_vec(&answer).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::AnalyseResponse { signed_answer_json }))
    }

    async fn model(
        &self,
        _: Request<pb::ModelRequest>,
    ) -> Result<Response<pb::ModelResponse>, Status> {
        let node = self.batcher.node();
        Ok(Response::new(pb::ModelResponse {
            model: node.model().to_string(),
            node: node.address().to_string(),
        }))
    }
}

/// Why a gRPC call to an inference node got no answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The endpoint is not a URI, or the node cannot be reached.
    #[error("cannot reach {endpoint}: {reason}")]
    Connect {
        /// The endpoint dialled.
        endpoint: String,
        /// What went wrong.
        reason: String,
    },
    /// The node refused the request or failed it: its status code and message
    /// (`InvalidArgument` for a bad request, `Unavailable`, `Internal`, ...).
    #[error("the node answered {code:?}: {message}")]
    Refused {
        /// The gRPC status code.
        code: tonic::Code,
        /// The node's message.
        message: String,
    },
    /// The node's answer is not a signed answer.
    #[error("malformed answer: {0}")]
    Malformed(String),
}

impl From<Status> for ClientError {
    fn from(status: Status) -> Self {
        Self::Refused {
            code: status.code(),
            message: status.message().to_owned(),
        }
    }
}

/// A connection to one inference node's gRPC API; cheap to clone (clones share it).
#[derive(Debug, Clone)]
pub struct NodeConnection {
    client: InferenceNodeClient<Channel>,
}

impl NodeConnection {
    /// Connects to `endpoint` (e.g. `http://10.0.0.5:8611`), giving up after `timeout`.
    pub async fn connect(endpoint: &str, timeout: Duration) -> Result<Self, ClientError> {
        let err = |reason: String| ClientError::Connect {
            endpoint: endpoint.to_owned(),
            reason,
        };
        let channel = Endpoint::from_shared(endpoint.to_owned())
            .map_err(|e| err(e.to_string()))?
            .connect_timeout(timeout)
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| err(format!("{e:?}")))?;
        // Requests are not bounded here: the node's limit is the one that counts.
        let client = InferenceNodeClient::new(channel).max_decoding_message_size(MAX_ANSWER_BYTES);
        Ok(Self { client })
    }

    /// The node's answer to `request`, as the node sent it: not verified, so that a caller
    /// judging nodes (e.g. [`decide`](fl_core::inference::decide)) keeps a badly signed answer
    /// as evidence.
    pub async fn analyse(
        &mut self,
        request: &InferenceRequest,
    ) -> Result<SignedAnswer, ClientError> {
        let message = pb::AnalyseRequest {
            community: request.community.clone(),
            id: request.id.clone(),
            title: request.title.clone(),
            text: request.text.clone(),
            nonce: request.nonce,
        };
        let response = self.client.analyse(message).await?.into_inner();
        serde_json::from_slice(&response.signed_answer_json)
            .map_err(|e| ClientError::Malformed(e.to_string()))
    }

    /// The model the node serves and its address.
    pub async fn model(&mut self) -> Result<ModelInfo, ClientError> {
        let response = self.client.model(pb::ModelRequest {}).await?.into_inner();
        Ok(ModelInfo {
            model: response.model,
            node: response.node,
        })
    }
}

/// Asks the node at `endpoint` once, on a fresh connection (10 s to connect): see
/// [`NodeConnection::analyse`]. A caller asking repeatedly keeps a [`NodeConnection`].
pub async fn analyse(
    endpoint: &str,
    request: &InferenceRequest,
) -> Result<SignedAnswer, ClientError> {
    NodeConnection::connect(endpoint, Duration::from_secs(10))
        .await?
        .analyse(request)
        .await
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use fl_core::MemberKey;
    use tokio::sync::oneshot;

    use super::super::tests::{http, other_predictor, predictor, request};
    use super::super::{InferenceNode as Node, serve};
    use super::*;

    /// A node serving HTTP and gRPC on one batcher: the node, the two addresses, the stop.
    async fn node_on_both() -> (Arc<Node>, std::net::SocketAddr, String, oneshot::Sender<()>) {
        let node = Arc::new(Node::new(MemberKey::generate(), predictor()));
        let batcher = Batcher::spawn(Arc::clone(&node));
        let http_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http_addr = http_listener.local_addr().unwrap();
        let endpoint = format!("http://{}", grpc_listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let (stop_http, stopped_http) = oneshot::channel::<()>();
        tokio::spawn(serve(http_listener, batcher.clone(), async {
            let _ = stopped_http.await;
        }));
        tokio::spawn(serve_grpc(grpc_listener, batcher, async {
            let _ = stopped.await;
            let _ = stop_http.send(());
        }));
        (node, http_addr, endpoint, stop)
    }

    fn code(result: Result<SignedAnswer, ClientError>) -> tonic::Code {
        match result {
            Err(ClientError::Refused { code, .. }) => code,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_grpc_answer_is_the_http_answer_and_the_model_rpc_names_the_model() {
        let (node, http_addr, endpoint, stop) = node_on_both().await;
        let req = request(11);
        let mut conn = NodeConnection::connect(&endpoint, Duration::from_secs(5))
            .await
            .unwrap();
        let answer = conn.analyse(&req).await.unwrap();
        answer.verify().unwrap();
        assert_eq!(answer.node, node.address());
        assert_eq!(answer.statement.request_hash, req.hash());
        assert_eq!(answer.statement.model, node.model());

        let (status, body) = http(
            http_addr,
            "POST",
            "/v1/analyse",
            &serde_json::to_vec(&req).unwrap(),
        )
        .await;
        assert_eq!(status, 200);
        let over_http: SignedAnswer = serde_json::from_slice(&body).unwrap();
        assert_eq!(over_http.statement, answer.statement);
        assert_eq!(over_http.node, answer.node);
        assert_eq!(
            serde_json::to_vec(&answer).unwrap(),
            body,
            "byte for byte what HTTP returns"
        );

        let info = conn.model().await.unwrap();
        assert_eq!(
            info,
            ModelInfo {
                model: node.model().to_string(),
                node: node.address().to_string(),
            }
        );
        // The one-shot client gives the same answer.
        assert_eq!(analyse(&endpoint, &req).await.unwrap(), answer);
        let _ = stop.send(());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bad_and_oversized_requests_are_refused_and_the_node_keeps_serving() {
        let (_node, _, endpoint, stop) = node_on_both().await;
        let mut conn = NodeConnection::connect(&endpoint, Duration::from_secs(5))
            .await
            .unwrap();

        let mut long = request(1);
        long.text = "x".repeat(fl_core::inference::MAX_TEXT_BYTES + 10);
        let refused = conn.analyse(&long).await;
        assert!(
            matches!(&refused, Err(ClientError::Refused { code: tonic::Code::InvalidArgument, message }) if message.contains("text")),
            "over the text limit, under the message limit: {refused:?}"
        );

        let empty = InferenceRequest::new("", "", "", "");
        assert_eq!(
            code(conn.analyse(&empty).await),
            tonic::Code::InvalidArgument
        );

        let mut huge = request(2);
        huge.text = "x".repeat(MAX_BODY_BYTES + 1);
        assert_eq!(
            code(conn.analyse(&huge).await),
            tonic::Code::OutOfRange,
            "over the message limit: refused before decoding"
        );

        let answer = conn.analyse(&request(3)).await.unwrap();
        answer.verify().unwrap();
        assert_eq!(answer.statement.request_hash, request(3).hash());
        let _ = stop.send(());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_promotion_is_visible_through_grpc() {
        let (node, _, endpoint, stop) = node_on_both().await;
        let mut conn = NodeConnection::connect(&endpoint, Duration::from_secs(5))
            .await
            .unwrap();
        let before = conn.analyse(&request(5)).await.unwrap();
        let new = node.promote(other_predictor());
        assert_ne!(before.statement.model, new);
        let after = conn.analyse(&request(5)).await.unwrap();
        after.verify().unwrap();
        assert_eq!(after.statement.model, new);
        assert_eq!(conn.model().await.unwrap().model, new.to_string());
        let _ = stop.send(());
    }

    #[test]
    fn node_errors_map_to_status_codes() {
        let codes = [
            NodeError::BadRequest("text: too long".into()),
            NodeError::Unavailable,
            NodeError::Model("nan".into()),
        ]
        .map(|e| status_of(e).code());
        assert_eq!(
            codes,
            [
                tonic::Code::InvalidArgument,
                tonic::Code::Unavailable,
                tonic::Code::Internal
            ]
        );
    }

    #[tokio::test]
    async fn an_unreachable_node_is_a_connect_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let result = analyse(&format!("http://{addr}"), &request(1)).await;
        assert!(
            matches!(result, Err(ClientError::Connect { .. })),
            "{result:?}"
        );
        let result = analyse("not a uri", &request(1)).await;
        assert!(
            matches!(result, Err(ClientError::Connect { .. })),
            "{result:?}"
        );
    }
}
