//! Bad input over a real gRPC connection on loopback: each hostile or broken session is
//! refused with a clear status, and the aggregator keeps serving honest members meanwhile.

use std::sync::Arc;
use std::time::Duration;

use fl_aggregator::metrics::AggregatorMetrics;
use fl_aggregator::service::grpc::federation_client::FederationClient;
use fl_aggregator::service::{ServiceConfig, federation};
use fl_aggregator::{Engine, EngineConfig};
use fl_core::identity::{JoinChallenge, UpdateKind, UpdateStatement};
use fl_core::wire::{self, pb};
use fl_core::{FedAvg, MemberKey, ParamVec, Schema, StrategyConfig, TensorSpec};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::Code;

use crate::support::MeanEstimator;

/// Chunks of 2 values (8 bytes), so the 2-value model below travels as one chunk.
const MAX_CHUNK: usize = 8;

pub(crate) struct Aggregator {
    pub(crate) addr: std::net::SocketAddr,
    pub(crate) members: Vec<MemberKey>,
    schema: Arc<Schema>,
    pub(crate) stop: Option<oneshot::Sender<()>>,
    pub(crate) done: tokio::task::JoinHandle<(Arc<ParamVec>, bool)>,
}

async fn start(rounds: u64) -> Aggregator {
    let strategy = Box::new(FedAvg::new(StrategyConfig {
        min_fit_clients: 1,
        ..Default::default()
    }));
    start_with(rounds, strategy, None).await
}

/// A service on loopback for 3 members with `strategy`, over TLS when `tls` is given.
pub(crate) async fn start_with(
    rounds: u64,
    strategy: Box<dyn fl_core::Strategy>,
    tls: Option<tonic::transport::ServerTlsConfig>,
) -> Aggregator {
    let schema = crate::support::schema();
    let members: Vec<MemberKey> = (0..3).map(|_| MemberKey::generate()).collect();
    let engine = Engine::new(
        EngineConfig {
            num_rounds: rounds,
            min_available_clients: 1,
            fit_timeout: Duration::from_secs(20),
            evaluate_timeout: Duration::from_secs(20),
            seed: 1,
            release_params_during_fit: false,
        },
        strategy,
        ParamVec::zeros(schema.clone()),
    );
    let mut config = ServiceConfig::new("bad-input", members.iter().map(|k| k.address()).collect());
    config.max_chunk_bytes = MAX_CHUNK;
    config.handshake_timeout = Duration::from_secs(5);
    config.max_frames_per_second = 200;
    let (service, coordinator) = federation(engine, config, Arc::new(AggregatorMetrics::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let mut builder = fl_aggregator::service::transport();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls).unwrap();
    }
    tokio::spawn(
        builder
            .add_service(service.into_server())
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let done = tokio::spawn(coordinator.run(|_| {}, async {
        let _ = stop_rx.await;
    }));
    Aggregator {
        addr,
        members,
        schema,
        stop: Some(stop_tx),
        done,
    }
}

/// A hand-driven session.
pub(crate) struct Raw {
    tx: mpsc::Sender<pb::ClientFrame>,
    rx: tonic::Streaming<pb::ServerFrame>,
}

fn frame(kind: pb::client_frame::Kind) -> pb::ClientFrame {
    pb::ClientFrame { kind: Some(kind) }
}

pub(crate) fn hello(key: &MemberKey, schema: &Schema, nonce: [u8; 32]) -> pb::Hello {
    pb::Hello {
        protocol_version: wire::PROTOCOL_VERSION,
        federation_id: "bad-input".into(),
        address: key.address().to_vec(),
        client_nonce: nonce.to_vec(),
        schema_hash: schema.hash().as_bytes().to_vec(),
        server: "test".into(),
    }
}

impl Raw {
    async fn open(addr: std::net::SocketAddr, hello: pb::Hello) -> Raw {
        let mut client = FederationClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        let (tx, rx) = mpsc::channel(16);
        tx.send(frame(pb::client_frame::Kind::Hello(hello)))
            .await
            .unwrap();
        let rx = client
            .session(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        Raw { tx, rx }
    }

    pub(crate) async fn send(&self, kind: pb::client_frame::Kind) {
        // The server may already have ended the stream; the status tells why.
        let _ = self.tx.send(frame(kind)).await;
    }

    pub(crate) async fn next(&mut self) -> Result<pb::server_frame::Kind, tonic::Status> {
        match tokio::time::timeout(Duration::from_secs(10), self.rx.message()).await {
            Ok(Ok(Some(f))) => Ok(f.kind.expect("frames carry a kind")),
            Ok(Ok(None)) => panic!("stream ended without a status"),
            Ok(Err(status)) => Err(status),
            Err(_) => panic!("no frame within 10 s"),
        }
    }

    /// Reads until the server ends the session; its status.
    pub(crate) async fn refusal(&mut self) -> tonic::Status {
        loop {
            if let Err(status) = self.next().await {
                return status;
            }
        }
    }

    /// Hello, challenge, a join signed by `signer`; returns the session id.
    pub(crate) async fn join(
        addr: std::net::SocketAddr,
        key: &MemberKey,
        signer: &MemberKey,
        schema: &Schema,
    ) -> (Raw, [u8; 32]) {
        let nonce = fl_core::identity::random_nonce();
        let mut raw = Raw::open(addr, hello(key, schema, nonce)).await;
        let pb::server_frame::Kind::Challenge(c) = raw.next().await.unwrap() else {
            panic!("expected a challenge")
        };
        let session_id: [u8; 32] = c.session_id.as_slice().try_into().unwrap();
        let signature = signer.sign_join(&JoinChallenge {
            federation_id: "bad-input".into(),
            session_id,
            client_nonce: nonce,
            server: "test".into(),
        });
        raw.send(pb::client_frame::Kind::Join(pb::Join {
            signature: signature.to_bytes().to_vec(),
        }))
        .await;
        (raw, session_id)
    }

    /// Waits for the welcome and the first fit instruction (with its chunks); its round.
    pub(crate) async fn until_fit(&mut self) -> u64 {
        let pb::server_frame::Kind::Welcome(_) = self.next().await.unwrap() else {
            panic!("expected a welcome")
        };
        let pb::server_frame::Kind::Instruction(ins) = self.next().await.unwrap() else {
            panic!("expected an instruction")
        };
        for _ in 0..ins.num_chunks {
            let pb::server_frame::Kind::Chunk(_) = self.next().await.unwrap() else {
                panic!("expected a chunk")
            };
        }
        ins.round
    }
}

/// A correctly signed update header for `params`, with the given round, session and weight.
pub(crate) fn header(
    key: &MemberKey,
    session_id: [u8; 32],
    round: u64,
    params: &ParamVec,
    n: u64,
) -> pb::UpdateHeader {
    let hashes = wire::chunk_hashes(params, MAX_CHUNK);
    let statement = UpdateStatement {
        federation_id: "bad-input".into(),
        session_id,
        round,
        kind: UpdateKind::Fit,
        update_hash: wire::update_digest(&hashes),
        num_examples: n,
    };
    pb::UpdateHeader {
        round,
        num_examples: n,
        metrics: Vec::new(),
        chunk_hashes: hashes.iter().map(|h| h.to_vec()).collect(),
        params_hash: params.content_hash().as_bytes().to_vec(),
        signature: key.sign_update(&statement).to_bytes().to_vec(),
        control_chunk_hashes: Vec::new(),
    }
}

pub(crate) fn chunk(round: u64, index: u32, tensor: u32, data: Vec<u8>) -> pb::client_frame::Kind {
    pb::client_frame::Kind::Chunk(pb::Chunk {
        round,
        index,
        tensor,
        offset: 0,
        data,
    })
}

pub(crate) fn le(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// The raw-bytes codec lets a test put arbitrary bytes on the wire as a gRPC message.
mod raw_codec {
    use bytes::{Buf, BufMut};
    use tonic::Status;
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

    #[derive(Default)]
    pub struct Bytes;

    pub struct Enc;
    pub struct Dec;

    impl Encoder for Enc {
        type Item = Vec<u8>;
        type Error = Status;
        fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
            dst.put_slice(&item);
            Ok(())
        }
    }

    impl Decoder for Dec {
        type Item = Vec<u8>;
        type Error = Status;
        fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
            let mut out = vec![0; src.remaining()];
            src.copy_to_slice(&mut out);
            Ok(Some(out))
        }
    }

    impl Codec for Bytes {
        type Encode = Vec<u8>;
        type Decode = Vec<u8>;
        type Encoder = Enc;
        type Decoder = Dec;
        fn encoder(&mut self) -> Enc {
            Enc
        }
        fn decoder(&mut self) -> Dec {
            Dec
        }
    }
}

async fn expect(raw: &mut Raw, code: Code, needle: &str) {
    let status = raw.refusal().await;
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().contains(needle),
        "{:?} does not mention {needle:?}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_sessions_are_refused_and_members_are_still_served() {
    let agg = start(200).await;
    let (addr, schema) = (agg.addr, agg.schema.clone());
    let [m0, m1, m2] = [&agg.members[0], &agg.members[1], &agg.members[2]];
    let stranger = MemberKey::generate();

    // Malformed protobuf: bytes that are no ClientFrame.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let garbage = tokio_stream::iter(vec![vec![0xff, 0xff, 0xff, 0xff, 0x0f, 0x01]]);
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/daofl.v1.Federation/Session");
    let response = grpc
        .streaming(tonic::Request::new(garbage), path, raw_codec::Bytes)
        .await;
    let status = match response {
        Err(status) => status,
        Ok(r) => {
            let mut s = r.into_inner();
            loop {
                match s.message().await {
                    Err(status) => break status,
                    Ok(Some(_)) => continue,
                    Ok(None) => panic!("malformed frame accepted"),
                }
            }
        }
    };
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("unreadable frame"), "{status:?}");

    // Unknown address.
    let mut raw = Raw::open(addr, hello(&stranger, &schema, [1; 32])).await;
    expect(&mut raw, Code::PermissionDenied, "not a member").await;

    // Wrong schema hash.
    let other = Schema::new(vec![TensorSpec::new("other", [3])]).unwrap();
    let mut raw = Raw::open(addr, hello(m1, &other, [2; 32])).await;
    expect(&mut raw, Code::FailedPrecondition, "schema mismatch").await;

    // A join signed by another key than the claimed member's.
    let (mut raw, _) = Raw::join(addr, m1, &stranger, &schema).await;
    expect(&mut raw, Code::Unauthenticated, "not").await;

    // Member 0 joins honestly and stays; a second session of member 0 is refused.
    let (mut first, session0) = Raw::join(addr, m0, m0, &schema).await;
    let round = first.until_fit().await;
    let (mut second, _) = Raw::join(addr, m0, m0, &schema).await;
    expect(&mut second, Code::AlreadyExists, "already connected").await;

    // The first session still works: it sends a valid update and is aggregated.
    let params = ParamVec::new(schema.clone(), vec![1.0, 2.0]).unwrap();
    first
        .send(pb::client_frame::Kind::Update(header(
            m0, session0, round, &params, 5,
        )))
        .await;
    first.send(chunk(round, 0, 0, le(&[1.0, 2.0]))).await;
    // The next round's instruction proves the update was taken.
    let pb::server_frame::Kind::Instruction(next) = first.next().await.unwrap() else {
        panic!("expected the next round")
    };
    assert_eq!(next.round, round + 1);
    for _ in 0..next.num_chunks {
        first.next().await.unwrap();
    }
    // Replaying that signed header in the next round (or in another session) fails.
    first
        .send(pb::client_frame::Kind::Update(header(
            m0, session0, round, &params, 5,
        )))
        .await;
    expect(&mut first, Code::Aborted, "refused").await;
    drop(first);

    // A replayed signature: member 1's header signed for another session.
    let (mut raw, _) = Raw::join(addr, m1, m1, &schema).await;
    let r = raw.until_fit().await;
    raw.send(pb::client_frame::Kind::Update(header(
        m1, [9; 32], r, &params, 5,
    )))
    .await;
    expect(&mut raw, Code::Unauthenticated, "update signature").await;

    // A weight other than the one signed.
    let (mut raw, session) = Raw::join(addr, m1, m1, &schema).await;
    let r = raw.until_fit().await;
    let mut h = header(m1, session, r, &params, 5);
    h.num_examples = 5000;
    raw.send(pb::client_frame::Kind::Update(h)).await;
    expect(&mut raw, Code::Unauthenticated, "update signature").await;

    // Oversized chunk.
    let (mut raw, session) = Raw::join(addr, m1, m1, &schema).await;
    let r = raw.until_fit().await;
    raw.send(pb::client_frame::Kind::Update(header(
        m1, session, r, &params, 5,
    )))
    .await;
    raw.send(chunk(r, 0, 0, le(&[1.0, 2.0, 3.0]))).await;
    expect(&mut raw, Code::InvalidArgument, "exceeds").await;

    // A chunk for another round, then one for another tensor.
    for (round_of, tensor, needle) in [
        (true, 0, "unexpected chunk"),
        (false, 7, "unexpected chunk"),
    ] {
        let (mut raw, session) = Raw::join(addr, m1, m1, &schema).await;
        let r = raw.until_fit().await;
        raw.send(pb::client_frame::Kind::Update(header(
            m1, session, r, &params, 5,
        )))
        .await;
        let round = if round_of { r + 40 } else { r };
        raw.send(chunk(round, 0, tensor, le(&[1.0, 2.0]))).await;
        expect(&mut raw, Code::InvalidArgument, needle).await;
    }

    // A chunk whose bytes differ from the signed hash.
    let (mut raw, session) = Raw::join(addr, m1, m1, &schema).await;
    let r = raw.until_fit().await;
    raw.send(pb::client_frame::Kind::Update(header(
        m1, session, r, &params, 5,
    )))
    .await;
    raw.send(chunk(r, 0, 0, le(&[1.0, 2.5]))).await;
    expect(&mut raw, Code::InvalidArgument, "hash").await;

    // Encrypted updates (homomorphic aggregation) are framed as strictly as plain ones: a
    // ciphertext chunk outside an update, a header announcing no chunks or too large a
    // manifest (this service allows 8-byte chunks), chunks out of order, of another round or
    // empty.
    let cipher = |round: u64, index: u32, data: Vec<u8>| {
        pb::client_frame::Kind::CipherChunk(pb::CipherChunk { round, index, data })
    };
    let encrypted = |round: u64, num_chunks: u32, manifest: Vec<u8>| {
        pb::client_frame::Kind::Encrypted(pb::EncryptedHeader {
            round,
            manifest,
            num_chunks,
            metrics: Vec::new(),
        })
    };
    let (mut raw, _) = Raw::join(addr, m1, m1, &schema).await;
    let r = raw.until_fit().await;
    raw.send(cipher(r, 0, vec![1; 8])).await;
    expect(
        &mut raw,
        Code::InvalidArgument,
        "outside an encrypted update",
    )
    .await;
    for (header, needle) in [
        (encrypted(r, 0, vec![1; 8]), "chunks"),
        (encrypted(r, 1, vec![1; 9]), "manifest"),
    ] {
        let (mut raw, _) = Raw::join(addr, m1, m1, &schema).await;
        raw.until_fit().await;
        raw.send(header).await;
        expect(&mut raw, Code::InvalidArgument, needle).await;
    }
    for (index, later, data, needle) in [
        (1, 0, vec![1; 8], "was next"),
        (0, 3, vec![1; 8], "round"),
        (0, 0, Vec::new(), "bytes"),
    ] {
        let (mut raw, _) = Raw::join(addr, m1, m1, &schema).await;
        let r = raw.until_fit().await;
        raw.send(encrypted(r, 2, vec![1; 8])).await;
        raw.send(cipher(r + later, index, data)).await;
        expect(&mut raw, Code::InvalidArgument, needle).await;
    }

    // One upload at a time, whatever the protocol: an encrypted or a plain update may not begin
    // while another is in flight.
    let (mut raw, _) = Raw::join(addr, m1, m1, &schema).await;
    let r = raw.until_fit().await;
    raw.send(encrypted(r, 2, vec![1; 8])).await;
    raw.send(encrypted(r, 2, vec![1; 8])).await;
    expect(
        &mut raw,
        Code::InvalidArgument,
        "an encrypted update began before an encrypted update ended",
    )
    .await;
    let (mut raw, session) = Raw::join(addr, m1, m1, &schema).await;
    let r = raw.until_fit().await;
    raw.send(encrypted(r, 2, vec![1; 8])).await;
    raw.send(pb::client_frame::Kind::Update(header(
        m1, session, r, &params, 5,
    )))
    .await;
    expect(
        &mut raw,
        Code::InvalidArgument,
        "an update began before an encrypted update ended",
    )
    .await;

    // An update for a round the member was not asked to train (too late or too early).
    let (mut raw, session) = Raw::join(addr, m1, m1, &schema).await;
    let r = raw.until_fit().await;
    raw.send(pb::client_frame::Kind::Update(header(
        m1,
        session,
        r + 3,
        &params,
        5,
    )))
    .await;
    expect(&mut raw, Code::Aborted, "refused").await;

    // A flood of frames beyond the rate limit.
    let (mut raw, _) = Raw::join(addr, m1, m1, &schema).await;
    raw.until_fit().await;
    for i in 0..2000 {
        raw.send(pb::client_frame::Kind::Heartbeat(pb::Heartbeat {
            sequence: i,
        }))
        .await;
    }
    expect(&mut raw, Code::ResourceExhausted, "frames per second").await;

    // Through all of that the aggregator kept serving: an honest member (the library node)
    // finishes the remaining rounds.
    let node = fl_client::node::NodeConfig::new(format!("http://{addr}"), "bad-input");
    let mut config = node;
    config.reconnect_attempts = 3;
    let trainer = MeanEstimator::new(vec![3.0, 5.0]);
    let (report, _) = tokio::time::timeout(
        Duration::from_secs(60),
        fl_client::node::run_node(config, m2.clone(), trainer),
    )
    .await
    .expect("the honest member finished within 60 s")
    .expect("the honest member was served");
    assert!(report.fits > 0);
    let (params, finished) = agg.done.await.unwrap();
    assert!(finished);
    // FedAvg of the honest member's estimate (the mean of its samples).
    assert_eq!(params.values(), &[4.0, 4.0]);
    drop(agg.stop);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_with_another_model_stops_at_once_naming_the_tensors() {
    let agg = start(2).await;
    let mut config = fl_client::node::NodeConfig::new(format!("http://{}", agg.addr), "bad-input");
    // A retryable refusal would take 30 attempts with backoff (minutes): this must not.
    config.reconnect_attempts = 30;
    let mut trainer = MeanEstimator::new(vec![3.0, 5.0]);
    trainer.schema = Arc::new(
        Schema::new(vec![
            TensorSpec::new("mean", [3]),
            TensorSpec::new("scale", [1]),
        ])
        .unwrap(),
    );
    trainer.estimate = vec![0.0; 4];
    let started = std::time::Instant::now();
    let err = tokio::time::timeout(
        Duration::from_secs(20),
        fl_client::node::run_node(config, agg.members[0].clone(), trainer),
    )
    .await
    .expect("the node gave up within 20 s")
    .err()
    .expect("the node was refused");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(err.is_permanent(), "{err}");
    let fl_client::node::NodeError::SchemaMismatch {
        federation,
        difference,
        ..
    } = &err
    else {
        panic!("not a schema mismatch: {err}");
    };
    assert_eq!(*federation, Some(crate::support::schema().hash()));
    assert_eq!(
        difference,
        "mean is [2] in the federation's model but [3] in this member's; only this member's has \
         scale [1]"
    );
    drop(agg.stop);
}
