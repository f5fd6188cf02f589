//! Protocol tests of the round engine and the simulation harness, driven deterministically on
//! simulated time (no sockets, no sleeps).

mod engine;
mod sim;
mod support;
