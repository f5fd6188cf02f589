//! Integration tests of the privacy crate: accountants against dp_accounting, invariants, the
//! fast sampler against the exact pmf and opendp, and hostile input everywhere.

mod accountants;
mod inputs;
mod sampler;
