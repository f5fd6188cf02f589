//! Integration tests of the privacy crate: accountants against dp_accounting, invariants, and
//! the fast sampler against the exact pmf and opendp.

mod accountants;
mod sampler;
