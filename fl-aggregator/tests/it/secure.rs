//! Privacy settings and mutual TLS over a real gRPC connection on loopback.

use std::time::Duration;

use fl_client::node::{NodeConfig, NodeTls, run_node};
use fl_core::StrategyConfig;
use fl_core::dp::{DifferentialPrivacy, Mechanism, PrivacyConfig};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use crate::grpc::start_with;
use crate::support::MeanEstimator;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dp_settings_travel_the_wire_and_members_send_clipped_differences() {
    let privacy = PrivacyConfig {
        mechanism: Mechanism::Central,
        clip_norm: 1.0,
        noise_multiplier: 1e-4,
        epsilon: 1e12,
        delta: 1e-5,
        accountant: privacy::AccountantKind::Rdp,
        adaptive: None,
    };
    let fedavg = StrategyConfig {
        min_fit_clients: 1,
        ..Default::default()
    };
    // Three members may be sampled; every round expects all three.
    let strategy = Box::new(DifferentialPrivacy::fedavg(fedavg, privacy, 3).unwrap());
    let agg = start_with(1, strategy, None).await;
    let config = NodeConfig::new(format!("http://{}", agg.addr), "bad-input");
    let trainer = MeanEstimator::new(vec![3.0, 5.0]);
    let (report, _) = tokio::time::timeout(
        Duration::from_secs(60),
        run_node(config, agg.members[0].clone(), trainer),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(report.fits, 1);
    let (params, finished) = agg.done.await.unwrap();
    assert!(finished);
    // The member trained to (4, 2) from (0, 0); it sent that difference clipped to norm 1,
    // (0.894, 0.447), and the aggregator divided the (barely) noised sum by 3 expected members.
    let v = params.values();
    let (a, b) = (4.0 / 20f32.sqrt() / 3.0, 2.0 / 20f32.sqrt() / 3.0);
    assert!((v[0] - a).abs() < 1e-2 && (v[1] - b).abs() < 1e-2, "{v:?}");
    drop(agg.stop);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_admits_only_members_with_a_certificate_from_the_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = fl_aggregator::tls::generate_dev_pki(dir.path(), &["localhost".to_string()]).unwrap();
    let read = |p: &std::path::Path| std::fs::read(p).unwrap();
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(
            read(&pki.server_cert),
            read(&pki.server_key),
        ))
        .client_ca_root(Certificate::from_pem(read(&pki.ca_cert)));
    let strategy = Box::new(fl_core::FedAvg::new(StrategyConfig {
        min_fit_clients: 1,
        ..Default::default()
    }));
    let agg = start_with(1, strategy, Some(tls)).await;
    let endpoint = format!("https://localhost:{}", agg.addr.port());

    // Without a client certificate the TLS handshake fails; the node gives up.
    let mut config = NodeConfig::new(endpoint.clone(), "bad-input");
    config.tls = Some(NodeTls {
        ca_pem: read(&pki.ca_cert),
        domain: "localhost".into(),
        client_identity: None,
    });
    config.reconnect_attempts = 1;
    config.reconnect_delay = Duration::from_millis(50);
    let refused = tokio::time::timeout(
        Duration::from_secs(30),
        run_node(
            config.clone(),
            agg.members[1].clone(),
            MeanEstimator::new(vec![1.0]),
        ),
    )
    .await
    .unwrap();
    assert!(
        refused.is_err(),
        "a member without a certificate was served"
    );

    // With the CA-signed client certificate it is served.
    config.tls = Some(NodeTls {
        ca_pem: read(&pki.ca_cert),
        domain: "localhost".into(),
        client_identity: Some((read(&pki.client_cert), read(&pki.client_key))),
    });
    config.reconnect_attempts = 3;
    let (report, _) = tokio::time::timeout(
        Duration::from_secs(60),
        run_node(
            config,
            agg.members[0].clone(),
            MeanEstimator::new(vec![3.0, 5.0]),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(report.fits, 1);
    assert!(agg.done.await.unwrap().1);
}
