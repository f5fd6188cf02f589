//! Integration tests of the examples and of the workspace as a whole (one binary: faster links).

mod dao;
mod federation;
mod layering;
mod publish;
