//! Integration tests of secure-agg (one binary: faster links).

mod common;
mod malformed;
mod rounds;
mod security;
