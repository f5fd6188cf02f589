//! Integration tests of secure-agg (one binary: faster links).

mod common;
#[cfg(feature = "he")]
mod he;
mod malformed;
mod rounds;
mod security;
