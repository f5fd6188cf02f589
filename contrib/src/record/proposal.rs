//! The proposal record: one governance proposal as a contributor submits it.

use fl_core::Address;
use serde::{Deserialize, Serialize};

use super::{RecordBody, RecordError, RecordKind, check_len, check_nonempty};

/// Longest community name, in bytes.
pub const MAX_COMMUNITY_BYTES: usize = 64;
/// Longest proposal id, in bytes.
pub const MAX_PROPOSAL_ID_BYTES: usize = 128;
/// Longest title, in bytes.
pub const MAX_TITLE_BYTES: usize = 1024;
/// Longest proposal text, in bytes (the corpus's longest is about 385 kB).
pub const MAX_TEXT_BYTES: usize = 512 << 10;
/// Longest licence identifier, in bytes.
pub const MAX_LICENCE_BYTES: usize = 64;
/// Longest creation date string, in bytes.
pub const MAX_CREATED_BYTES: usize = 32;
/// Longest provenance field (repository, commit, path), in bytes.
pub const MAX_SOURCE_FIELD_BYTES: usize = 512;

/// A governance proposal as contributed: which community it belongs to, its text, its licence
/// and where it was taken from. Its outcome is not part of it: outcomes are annotations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProposalRecord {
    /// The member who contributes it (and signs the record).
    #[serde(with = "super::address_str")]
    pub contributor: Address,
    /// The community it belongs to, e.g. `ethereum` (the federation member that trains on it).
    pub community: String,
    /// Its id within the community, e.g. `EIP-1559`.
    pub proposal_id: String,
    /// Title.
    pub title: String,
    /// The body (markdown or reStructuredText).
    pub text: String,
    /// Creation date (`YYYY-MM-DD`) where known.
    pub created: Option<String>,
    /// SPDX-like licence of the text (e.g. `CC0-1.0`); contributions must be redistributable.
    pub licence: String,
    /// Where the text was taken from, where it has a public source.
    pub source: Option<Source>,
}

/// Provenance of a proposal's text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// Repository (`owner/name`) or site.
    pub repo: String,
    /// Snapshot commit.
    pub commit: String,
    /// Path of the file in the repository.
    pub path: String,
}

impl RecordBody for ProposalRecord {
    const KIND: RecordKind = RecordKind::Proposal;

    fn contributor(&self) -> Address {
        self.contributor
    }

    fn validate(&self) -> Result<(), RecordError> {
        check_nonempty("community", &self.community, MAX_COMMUNITY_BYTES)?;
        check_nonempty("proposal_id", &self.proposal_id, MAX_PROPOSAL_ID_BYTES)?;
        check_len("title", &self.title, MAX_TITLE_BYTES)?;
        check_nonempty("text", &self.text, MAX_TEXT_BYTES)?;
        check_nonempty("licence", &self.licence, MAX_LICENCE_BYTES)?;
        if let Some(created) = &self.created {
            check_len("created", created, MAX_CREATED_BYTES)?;
        }
        if let Some(source) = &self.source {
            check_len("source.repo", &source.repo, MAX_SOURCE_FIELD_BYTES)?;
            check_len("source.commit", &source.commit, MAX_SOURCE_FIELD_BYTES)?;
            check_len("source.path", &source.path, MAX_SOURCE_FIELD_BYTES)?;
        }
        Ok(())
    }
}
