//! The signed tree head text, the segment hash and the leaf bytes of a record
//! (docs/audit.md, "Format").
//!
//! The signed text covers the segment's index, the tree size and root after it,
//! the previous segment's hash, the signing time and the key id: every other field
//! of a segment is either recomputed from the records (`firstSequence`, `frontier`
//! are checked against `treeSize` and `rootHash`) or informational (`writer`,
//! not covered by the signature).

use aws_lc_rs::digest::{Context, SHA256};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use crds::{AuditRecord, AuditSegmentSpec};

use crate::Error;
use crate::merkle::{self, Hash};

/// First line of the signed tree head text.
pub const HEAD_VERSION: &str = "chop-audit-tree-head/v1";

/// 64 zeros: the previous hash of record 0 and of segment 0.
pub const ZERO_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The fields of a signed tree head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TreeHead<'a> {
    /// Segment index.
    pub index: u64,
    /// Tree size after the segment.
    pub tree_size: u64,
    /// Root hash (hex) of that tree.
    pub root_hash: &'a str,
    /// Hash (hex) of the previous segment.
    pub previous_segment_hash: &'a str,
    /// RFC 3339 UTC signing time.
    pub signed_at: &'a str,
    /// Audit key id (hex).
    pub key_id: &'a str,
}

impl<'a> TreeHead<'a> {
    /// The tree head of a segment.
    pub fn of(spec: &'a AuditSegmentSpec) -> TreeHead<'a> {
        TreeHead {
            index: spec.index,
            tree_size: spec.tree_size,
            root_hash: &spec.root_hash,
            previous_segment_hash: &spec.previous_segment_hash,
            signed_at: &spec.signed_at,
            key_id: &spec.key_id,
        }
    }

    /// The text the audit key signs (UTF-8, each line ending in `\n`).
    pub fn text(&self) -> String {
        format!(
            "{HEAD_VERSION}\nindex {}\ntree-size {}\nroot-hash {}\nprevious-segment-hash {}\nsigned-at {}\nkey-id {}\n",
            self.index,
            self.tree_size,
            self.root_hash,
            self.previous_segment_hash,
            self.signed_at,
            self.key_id
        )
    }
}

/// Segment hash: SHA-256(tree head text ‖ raw signature bytes).
pub fn segment_hash_raw(head_text: &[u8], signature: &[u8]) -> Hash {
    let mut ctx = Context::new(&SHA256);
    ctx.update(head_text);
    ctx.update(signature);
    let mut h = [0u8; 32];
    h.copy_from_slice(ctx.finish().as_ref());
    h
}

/// The raw signature bytes of a segment (its `signature`, base64-decoded).
pub fn signature_bytes(spec: &AuditSegmentSpec) -> Result<Vec<u8>, Error> {
    STANDARD
        .decode(spec.signature.as_bytes())
        .map_err(|_| Error::BadSignatureEncoding { index: spec.index })
}

/// Segment hash (hex) of a segment.
pub fn segment_hash(spec: &AuditSegmentSpec) -> Result<String, Error> {
    let sig = signature_bytes(spec)?;
    Ok(merkle::to_hex(&segment_hash_raw(
        TreeHead::of(spec).text().as_bytes(),
        &sig,
    )))
}

/// The leaf: the record as compact JSON (struct field order, absent fields left
/// out, `details` sorted).
pub fn leaf_bytes(record: &AuditRecord) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(record).map_err(Error::Json)
}

/// Leaf hash of a record: SHA-256(0x00 ‖ leaf).
pub fn record_hash(record: &AuditRecord) -> Result<Hash, Error> {
    Ok(merkle::leaf_hash(&leaf_bytes(record)?))
}

/// An RFC 3339 UTC timestamp with microseconds, e.g. `2026-12-03T15:40:00.123456Z`
/// (the form of `signedAt` and of record times).
pub fn rfc3339_micros(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn the_tree_head_text_is_the_documented_one() {
        let head = TreeHead {
            index: 3,
            tree_size: 42,
            root_hash: "ab",
            previous_segment_hash: ZERO_HASH,
            signed_at: "2026-12-03T15:40:00.123456Z",
            key_id: "cd",
        };
        assert_eq!(
            head.text(),
            format!(
                "chop-audit-tree-head/v1\nindex 3\ntree-size 42\nroot-hash ab\nprevious-segment-hash {ZERO_HASH}\nsigned-at 2026-12-03T15:40:00.123456Z\nkey-id cd\n"
            )
        );
    }

    #[test]
    fn times_have_microseconds_and_a_z() {
        let t: jiff::Timestamp = "2026-12-03T15:40:00.1234567Z".parse().unwrap();
        assert_eq!(rfc3339_micros(t), "2026-12-03T15:40:00.123456Z");
        let t: jiff::Timestamp = "2026-12-03T15:40:00Z".parse().unwrap();
        assert_eq!(rfc3339_micros(t), "2026-12-03T15:40:00.000000Z");
    }

    #[test]
    fn a_record_leaf_is_compact_json_in_field_order_without_absent_fields() {
        let mut r = AuditRecord {
            sequence: 7,
            time: "2026-12-03T15:40:00.000001Z".into(),
            event: "certificate.issued".into(),
            outcome: "succeeded".into(),
            serial: Some("0a".into()),
            previous_hash: ZERO_HASH.into(),
            ..AuditRecord::default()
        };
        r.details.insert("z".into(), "1".into());
        r.details.insert("a".into(), "2".into());
        let leaf = String::from_utf8(leaf_bytes(&r).unwrap()).unwrap();
        assert_eq!(
            leaf,
            format!(
                r#"{{"sequence":7,"time":"2026-12-03T15:40:00.000001Z","event":"certificate.issued","outcome":"succeeded","serial":"0a","details":{{"a":"2","z":"1"}},"previousHash":"{ZERO_HASH}"}}"#
            )
        );
        // Read back (as from the API server), it hashes the same.
        let back: AuditRecord = serde_json::from_str(&leaf).unwrap();
        assert_eq!(record_hash(&back).unwrap(), record_hash(&r).unwrap());
    }
}
