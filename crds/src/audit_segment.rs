//! `AuditSegment`: one signed, immutable batch of chop's audit trail (CPS §5.4).
//!
//! The trail is a transparency log (RFC 9162 §2.1): every record is a leaf of one
//! Merkle tree that grows forever; the controller commits records in segments
//! (group commit), and each segment carries a signed tree head: the size of the tree
//! after its last record, the tree's root hash, and the hash of the previous segment.
//! The signature is made by the **audit key**, an HSM key that signs nothing else
//! (§5.4.4). The format (leaf bytes, the signed text, the segment hash) is defined in
//! the `chop-audit` crate and in `docs/audit.md`; these are only its Kubernetes types.
//!
//! What the API server enforces (manifests/policies/audit-segment.yaml and RBAC):
//! only the controller creates segments; nobody changes a segment's spec; only an
//! auditor deletes one, and only once the controller has marked it past retention.
//! What the verifier checks (`kubectl chop audit verify`): signatures, the Merkle
//! roots recomputed from the records, sequence and segment continuity.
//!
//! Non-goals: no status (a segment is written once, by its creator); no key, PIN,
//! share or national identity number is ever a field of a record.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Label the controller puts on a segment once it is older than the retention period
/// (`--audit-retention`, at least two months, CPS §5.4.3); only then may an auditor
/// delete it (after archiving it with `kubectl chop audit export`).
pub const RETENTION_EXPIRED_LABEL: &str = "chop.dev/retention-expired";

/// Name of the segment with this index: `audit-` and the index on 12 digits, so that
/// names sort in commit order and a second writer of the same index collides.
pub fn segment_name(index: u64) -> String {
    format!("audit-{index:012}")
}

/// One signed, immutable batch of the audit trail.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "chop.dev",
    version = "v1alpha1",
    kind = "AuditSegment",
    namespaced,
    doc = "One signed, immutable batch of chop's audit trail (CPS §5.4); a transparency log after RFC 9162.",
    shortname = "audit",
    category = "chop",
    printcolumn(name = "Index", type_ = "integer", json_path = ".spec.index"),
    printcolumn(name = "First", type_ = "integer", json_path = ".spec.firstSequence"),
    printcolumn(name = "TreeSize", type_ = "integer", json_path = ".spec.treeSize"),
    printcolumn(name = "Signed", type_ = "string", json_path = ".spec.signedAt"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("self == oldSelf").message("an audit segment is immutable"))]
#[serde(rename_all = "camelCase")]
pub struct AuditSegmentSpec {
    /// Position of this segment in the trail, from 0. The object's name is
    /// `audit-` followed by this number on 12 digits.
    #[schemars(with = "i64", range(min = 0))]
    pub index: u64,
    /// Sequence number of the first record of this segment (= the tree size before
    /// it).
    #[schemars(with = "i64", range(min = 0))]
    pub first_sequence: u64,
    /// The records, in sequence order, without gaps.
    pub records: Vec<AuditRecord>,
    /// Merkle tree hashes (hex SHA-256) of the perfect subtrees that make up the tree
    /// of the `firstSequence` records before this segment, largest first (the
    /// "compact range" of RFC 9162 §2.1). With them and this segment's records a
    /// verifier recomputes `rootHash` without the earlier segments, so the trail
    /// stays verifiable after archived segments are pruned.
    #[serde(default)]
    pub frontier: Vec<String>,
    /// Number of records in the tree after this segment (`firstSequence` + number of
    /// records).
    #[schemars(with = "i64", range(min = 0))]
    pub tree_size: u64,
    /// Merkle tree hash (hex SHA-256, RFC 9162 §2.1.1) of all `treeSize` records.
    pub root_hash: String,
    /// Segment hash (hex SHA-256) of the previous segment; 64 zeros for segment 0.
    pub previous_segment_hash: String,
    /// When the tree head was signed (RFC 3339, UTC).
    pub signed_at: String,
    /// Identity of the controller replica that wrote the segment.
    pub writer: String,
    /// The audit key: hex SHA-256 of its DER SubjectPublicKeyInfo.
    pub key_id: String,
    /// Signature algorithm, e.g. `ecdsa-p256-sha256`.
    pub signature_algorithm: String,
    /// Signature (base64) by the audit key over the signed tree head text defined in
    /// docs/audit.md.
    pub signature: String,
}

/// One event of the audit trail (a leaf of the Merkle tree). Serialized as compact
/// JSON with the fields in this order and absent fields left out: those bytes are
/// the leaf.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    /// Position in the trail, from 0, without gaps.
    #[schemars(with = "i64", range(min = 0))]
    pub sequence: u64,
    /// When the controller recorded the event (RFC 3339, UTC, microseconds).
    pub time: String,
    /// Event class, e.g. `certificate.issue` (the list: docs/audit.md).
    pub event: String,
    /// The object the event concerns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<AuditObject>,
    /// The people (as the API server authenticated them) involved, each with their
    /// part, e.g. `requestedBy`, `approvedBy`, `acceptedBy`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<AuditUser>,
    /// Outcome: `intent` (recorded before the action's effect), `succeeded`,
    /// `failed`, `refused`, or `observed`.
    pub outcome: String,
    /// Machine-readable reason, e.g. a condition reason or a revocation reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The CertificateAuthority concerned, `namespace/name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
    /// Certificate serial number (hex), where relevant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// CRL number, where relevant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<i64>")]
    pub crl_number: Option<u64>,
    /// HSM private-key use: the key's fingerprint (hex SHA-256 of its public key)
    /// and, in `details.purpose`, why it was used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Further facts, by name (sorted): never a key, PIN, share or personal data
    /// beyond the subscriber reference (CPS §9.4).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub details: BTreeMap<String, String>,
    /// Leaf hash (hex, RFC 9162 §2.1.1: SHA-256 of 0x00 and the leaf) of the
    /// previous record; 64 zeros for record 0.
    pub previous_hash: String,
}

/// The object an audit record concerns.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditObject {
    /// Kind, e.g. `CertificateRequest`.
    pub kind: String,
    /// Namespace (absent for cluster-scoped objects).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
    /// UID: tells apart two objects that had the same name at different times.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// The resourceVersion the controller acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
}

/// A person (or service account) named in an audit record.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditUser {
    /// Their part in the event, e.g. `requestedBy`, `approvedBy`, `deniedBy`,
    /// `acceptedBy`, `revokedBy`, `heldBy`, `witness`.
    pub role: String,
    /// The user name as the API server authenticated it.
    pub user: String,
}
