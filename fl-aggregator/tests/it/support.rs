//! A small real trainer for protocol tests: it estimates the mean of its local samples, so
//! the exact FedAvg result of any round is known in closed form.

use std::sync::Arc;

use fl_core::{
    EvaluateConfig, EvaluateResult, FitConfig, FitOutcome, Metrics, ParamVec, Schema, TensorSpec,
    Trainer, TrainerError,
};

/// How a test client misbehaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    Honest,
    Errors,
    Panics,
    ReturnsNan,
}

pub struct MeanEstimator {
    pub schema: Arc<Schema>,
    pub estimate: Vec<f32>,
    pub samples: Vec<f32>,
    pub behaviour: Behaviour,
}

pub fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![TensorSpec::new("mean", [2])]).unwrap())
}

impl MeanEstimator {
    pub fn new(samples: Vec<f32>) -> Self {
        Self {
            schema: schema(),
            estimate: vec![0.0; 2],
            samples,
            behaviour: Behaviour::Honest,
        }
    }

    pub fn with(mut self, behaviour: Behaviour) -> Self {
        self.behaviour = behaviour;
        self
    }
}

impl Trainer for MeanEstimator {
    fn schema(&self) -> Arc<Schema> {
        self.schema.clone()
    }

    fn get_parameters(&self) -> ParamVec {
        ParamVec::new(self.schema.clone(), self.estimate.clone()).unwrap()
    }

    fn set_parameters(&mut self, params: &ParamVec) -> Result<(), TrainerError> {
        self.get_parameters().check_same_schema(params)?;
        self.estimate = params.values().to_vec();
        Ok(())
    }

    fn fit(&mut self, _config: &FitConfig) -> Result<FitOutcome, TrainerError> {
        match self.behaviour {
            Behaviour::Errors => return Err(TrainerError::Other("disk full".into())),
            Behaviour::Panics => panic!("trainer bug"),
            Behaviour::ReturnsNan => self.estimate = vec![f32::NAN; 2],
            Behaviour::Honest => {
                let mean = self.samples.iter().sum::<f32>() / self.samples.len() as f32;
                // Second coordinate moves halfway from the global value: depends on the start.
                self.estimate = vec![mean, 0.5 * self.estimate[1] + 0.5 * mean];
            }
        }
        Ok(FitOutcome {
            num_examples: self.samples.len() as u64,
            metrics: Metrics::from([("train_loss".to_string(), 1.0)]),
        })
    }

    fn evaluate(&mut self, _config: &EvaluateConfig) -> Result<EvaluateResult, TrainerError> {
        let err: f32 = self
            .samples
            .iter()
            .map(|s| (s - self.estimate[0]).powi(2))
            .sum::<f32>()
            / self.samples.len() as f32;
        Ok(EvaluateResult {
            loss: f64::from(err),
            num_examples: self.samples.len() as u64,
            metrics: Metrics::from([("accuracy".to_string(), 1.0)]),
        })
    }
}

/// A federation served over loopback gRPC by a test.
pub struct Served {
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    /// The gRPC server task (abort it at the end).
    pub server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    /// The coordinator: the final parameters and whether every round ran.
    pub done: tokio::task::JoinHandle<(Arc<ParamVec>, bool)>,
    /// Every engine event, formatted.
    pub events: std::sync::mpsc::Receiver<String>,
    /// Dropping it stops the coordinator.
    pub stop: tokio::sync::oneshot::Sender<()>,
}

/// Serves `engine` on a free loopback port as federation `federation_id` of `members`.
pub async fn serve(
    engine: fl_aggregator::Engine,
    federation_id: &str,
    members: &[fl_core::Address],
) -> Served {
    use fl_aggregator::service::{ServiceConfig, federation};
    let config = ServiceConfig::new(federation_id, members.to_vec());
    let metrics = Arc::new(fl_aggregator::metrics::AggregatorMetrics::new());
    let (service, coordinator) = federation(engine, config, metrics);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(
        fl_aggregator::service::transport()
            .add_service(service.into_server())
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (events_tx, events) = std::sync::mpsc::channel::<String>();
    let done = tokio::spawn(coordinator.run(
        move |e: &fl_aggregator::EngineEvent| {
            let _ = events_tx.send(format!("{e:?}"));
        },
        async {
            let _ = stop_rx.await;
        },
    ));
    Served {
        addr,
        server,
        done,
        events,
        stop,
    }
}
