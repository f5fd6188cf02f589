//! Protocol tests of the round engine and the simulation harness, driven deterministically on
//! simulated time (no sockets, no sleeps), and of the gRPC service against hostile input on
//! loopback.

mod anchor;
mod anchor_rpc;
mod annotate_e2e;
mod chain;
mod checkpoint;
mod contribute_e2e;
mod dp;
mod e2e;
mod engine;
mod fedbuff;
mod grpc;
mod he_grpc;
mod inference_e2e;
mod membership;
mod model_card;
mod own_model;
mod qa;
mod scaffold;
mod secagg;
mod secagg_grpc;
mod secure;
mod settle_e2e;
mod sim;
mod strategies;
mod support;
