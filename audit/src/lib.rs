//! # chop-audit
//!
//! The format of chop's audit trail and everything a writer or a verifier does
//! with it, without a Kubernetes client or an HSM (CPS §5.4, issue 10;
//! docs/audit.md).
//!
//! Design. The trail is a transparency log after RFC 9162 §2.1: every record is a
//! leaf of one append-only Merkle tree; records are committed in segments
//! (`AuditSegment` objects), each carrying a tree head (its index, the tree size
//! and root hash after its last record, the hash of the previous segment, the
//! signing time, the key id) signed by the audit key, an HSM key that signs nothing
//! else (§5.4.4). Records are also chained (`previousHash` = leaf hash of the
//! record before), so that an altered record is named, not only detected. Each
//! segment carries the frontier of the tree before it, so a trail whose oldest
//! segments were archived and pruned still verifies, and consistency and inclusion
//! proofs can be computed from what is held.
//!
//! Modules, one concern each: [`merkle`] (RFC 9162 hashes, frontier, proofs),
//! [`head`] (the signed text, the segment hash, the leaf bytes), [`key`] (the audit
//! public key, key id, signature check), [`seal`](mod@seal) (what the controller calls to
//! make the next segment), [`verify`](mod@verify) (the auditor's check of a list of segments,
//! and of a newer trail against an older export), [`export`] (the archive file),
//! [`search`] (record filters), [`sample`] (the quarterly sample of issued
//! certificates, CPS §8.4).
//!
//! Non-goals: no I/O beyond bytes in and out, no clock, no private key (the writer
//! passes a [`seal::TreeHeadSigner`]; a software one exists only for tests, feature
//! `test-signer`), no Kubernetes types beyond chop-crds' plain structs.

pub mod export;
pub mod head;
pub mod key;
pub mod merkle;
pub mod sample;
pub mod seal;
pub mod search;
#[cfg(any(test, feature = "test-signer"))]
pub mod testing;
pub mod verify;

pub use seal::{TrailState, TreeHeadSigner, seal};
pub use verify::{Problem, Summary, verify, verify_since};

/// Everything that can go wrong outside verification (a verification finding is a
/// [`verify::Problem`], not an error).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A hash is not 64 hex digits.
    #[error("{0:?} is not a SHA-256 hash (64 hex digits)")]
    BadHash(String),
    /// A frontier has the wrong number of hashes for its tree size.
    #[error("a frontier of a tree of {size} records has {expected} hashes, not {found}")]
    BadFrontier {
        /// Tree size.
        size: u64,
        /// Hashes expected (bits set in `size`).
        expected: u32,
        /// Hashes found.
        found: usize,
    },
    /// A segment's signature is not base64.
    #[error("segment {index}: the signature is not base64")]
    BadSignatureEncoding {
        /// Segment index.
        index: u64,
    },
    /// JSON (de)serialization failed.
    #[error("JSON: {0}")]
    Json(#[source] serde_json::Error),
    /// A PEM public key could not be read.
    #[error("the audit key is not a PEM public key: {0}")]
    Pem(String),
    /// A segment to continue from does not add up.
    #[error("segment {index} cannot be continued: {what}")]
    InconsistentSegment {
        /// Segment index.
        index: u64,
        /// What is wrong.
        what: String,
    },
    /// `seal` was given no records.
    #[error("a segment needs at least one record")]
    EmptySegment,
    /// The signer's algorithm is not `ecdsa-p256-sha256`.
    #[error("tree heads are signed with ecdsa-p256-sha256, not {0:?}")]
    UnsupportedAlgorithm(String),
    /// The signer failed.
    #[error("signing the tree head: {0}")]
    Sign(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// An export file is not one.
    #[error("{0}")]
    Export(String),
    /// A quarter, time or seed argument is malformed.
    #[error("{0}")]
    Argument(String),
}
