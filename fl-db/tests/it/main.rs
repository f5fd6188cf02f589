//! fl-db's integration tests: every behaviour on SQLite (a temporary file) and on PostgreSQL
//! (a throwaway server, see `support`), with the same test body.

mod support;

mod data;
mod open;
mod receipts;
mod requests;
mod scores;
