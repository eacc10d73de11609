//! The auditor's check of a trail: [`verify`] a list of segments against the audit
//! key, [`verify_named`] the same with the objects' names, [`verify_since`] a newer
//! trail against an older export (RFC 9162 §2.1.4 consistency).
//!
//! The answer is a [`Summary`] or the **first** [`Problem`], named as precisely as
//! the evidence allows. How each tampering shows:
//!
//! - a record's body edited: the next record's `previousHash` no longer matches →
//!   [`Problem::AlteredRecord`] naming it; the last record of a segment is covered
//!   by the next segment's first `previousHash`, or by the segment's signed root;
//! - a record deleted, duplicated or moved inside a segment → [`Problem::MissingRecord`],
//!   [`Problem::DuplicatedRecord`], [`Problem::ReorderedRecord`]; a record added →
//!   [`Problem::TreeSizeMismatch`];
//! - a segment deleted in the middle → [`Problem::MissingSegment`]; segments out of
//!   order, or twice → [`Problem::ReorderedSegment`], [`Problem::DuplicatedSegment`];
//!   a segment stored under another object name → [`Problem::MisnamedSegment`];
//! - a segment re-signed with another key → [`Problem::WrongKey`]; any signed field
//!   (index, size, root, previous segment, time, key id) changed →
//!   [`Problem::BadSignature`]; the signature removed → [`Problem::UnsignedSegment`];
//!   a segment replaced by another correctly signed one (only the audit key can
//!   make one) → [`Problem::BrokenChain`].
//!
//! What a trail alone cannot show: that segments were deleted **at its end** (the
//! shorter trail is a valid trail), or **at its start** (indistinguishable from
//! pruning archived segments). [`verify_since`] against an earlier export shows
//! both ([`Problem::Truncated`], or a trail that does not extend the export), as
//! does comparing the tree size with one noted earlier. The `writer` field is not
//! signed.

use std::fmt;

use crds::AuditSegmentSpec;
use crds::audit_segment::segment_name;

use crate::head::{self, TreeHead, ZERO_HASH};
use crate::key::{self, ALGORITHM};
use crate::merkle::{self, CompactTree, Frontier, Hash};

/// What a verified trail holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// Number of segments.
    pub segments: usize,
    /// Number of records held.
    pub records: u64,
    /// Index of the first segment (above 0 once archived segments were pruned).
    pub first_index: u64,
    /// Index of the last segment.
    pub last_index: u64,
    /// Sequence of the first record held.
    pub first_sequence: u64,
    /// Tree size after the last segment (= sequence of the last record + 1).
    pub tree_size: u64,
    /// Root hash (hex) after the last segment, as signed.
    pub root_hash: String,
    /// The audit key id.
    pub key_id: String,
    /// `signedAt` of the first segment.
    pub first_signed_at: String,
    /// `signedAt` of the last segment.
    pub last_signed_at: String,
    /// Time of the first record.
    pub first_time: String,
    /// Time of the last record.
    pub last_time: String,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "segments:  {} (index {} to {}){}",
            self.segments,
            self.first_index,
            self.last_index,
            if self.first_index > 0 {
                "; earlier segments were pruned"
            } else {
                ""
            }
        )?;
        writeln!(
            f,
            "records:   {} (sequence {} to {})",
            self.records,
            self.first_sequence,
            self.tree_size.saturating_sub(1)
        )?;
        writeln!(f, "time:      {} to {}", self.first_time, self.last_time)?;
        writeln!(f, "tree size: {}", self.tree_size)?;
        writeln!(f, "root hash: {}", self.root_hash)?;
        writeln!(f, "signed at: {}", self.last_signed_at)?;
        writeln!(f, "key id:    {}", self.key_id)
    }
}

/// The first thing wrong with a trail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// No segments at all.
    Empty,
    /// An object's name is not `audit-` and its spec's index on 12 digits.
    MisnamedSegment {
        /// Object name.
        name: String,
        /// `spec.index`.
        index: u64,
    },
    /// A segment index is absent between two present ones.
    MissingSegment {
        /// The missing index.
        index: u64,
    },
    /// A segment comes after one with a higher index.
    ReorderedSegment {
        /// The misplaced segment's index.
        index: u64,
        /// The index it follows.
        after: u64,
    },
    /// The same index twice.
    DuplicatedSegment {
        /// The index.
        index: u64,
    },
    /// A segment has no signature.
    UnsignedSegment {
        /// Segment index.
        segment: u64,
    },
    /// A segment is signed with another algorithm than `ecdsa-p256-sha256`.
    UnsupportedAlgorithm {
        /// Segment index.
        segment: u64,
        /// Its algorithm.
        algorithm: String,
    },
    /// A segment names another key than the audit key.
    WrongKey {
        /// Segment index.
        segment: u64,
        /// The key id it names.
        key_id: String,
        /// The audit key's id.
        expected: String,
    },
    /// The signature does not verify with the audit key over the tree head.
    BadSignature {
        /// Segment index.
        segment: u64,
    },
    /// `previousSegmentHash` is not the hash of the segment before.
    BrokenChain {
        /// Segment index.
        segment: u64,
    },
    /// `firstSequence` is not the tree size after the segment before.
    SequenceGap {
        /// Segment index.
        segment: u64,
        /// Expected first sequence.
        expected: u64,
        /// Found.
        found: u64,
    },
    /// `frontier` is not that of the records before.
    AlteredFrontier {
        /// Segment index.
        segment: u64,
    },
    /// A record sequence is absent.
    MissingRecord {
        /// Segment index.
        segment: u64,
        /// The missing sequence.
        sequence: u64,
    },
    /// A record sequence appears twice.
    DuplicatedRecord {
        /// Segment index.
        segment: u64,
        /// The sequence.
        sequence: u64,
    },
    /// Records out of order.
    ReorderedRecord {
        /// Segment index.
        segment: u64,
        /// The misplaced record's sequence.
        sequence: u64,
    },
    /// A record's content changed since it was sealed.
    AlteredRecord {
        /// Segment index.
        segment: u64,
        /// The record's sequence.
        sequence: u64,
    },
    /// The segment holds another number of records than its signed tree size says.
    TreeSizeMismatch {
        /// Segment index.
        segment: u64,
        /// Signed tree size.
        signed: u64,
        /// Tree size from firstSequence and the records.
        found: u64,
    },
    /// The records (and the unverifiable frontier of the first segment held) do
    /// not give the signed root.
    RootMismatch {
        /// Segment index.
        segment: u64,
    },
    /// A field is not in the documented form (hash, base64, frontier length).
    Malformed {
        /// Segment index.
        segment: u64,
        /// What.
        what: String,
    },
    /// The trail is shorter than an earlier export of it: segments were deleted at
    /// its end.
    Truncated {
        /// Tree size of the earlier export.
        old_size: u64,
        /// Tree size now.
        new_size: u64,
    },
    /// The trail does not extend the earlier export: records were changed.
    Inconsistent {
        /// Tree size of the earlier export.
        old_size: u64,
        /// Tree size now.
        new_size: u64,
        /// The first record that differs, when both hold it.
        first_difference: Option<u64>,
    },
    /// The two trails are signed by different audit keys.
    KeyChanged {
        /// Key id of the earlier export.
        old: String,
        /// Key id now.
        new: String,
    },
    /// The earlier export itself is not valid.
    OldExport(Box<Problem>),
    /// Consistency cannot be proved from what is held.
    Unprovable(String),
}

impl Problem {
    /// The stable name of the problem (e.g. `AlteredRecord`), for scripts.
    pub fn name(&self) -> &'static str {
        match self {
            Problem::Empty => "Empty",
            Problem::MisnamedSegment { .. } => "MisnamedSegment",
            Problem::MissingSegment { .. } => "MissingSegment",
            Problem::ReorderedSegment { .. } => "ReorderedSegment",
            Problem::DuplicatedSegment { .. } => "DuplicatedSegment",
            Problem::UnsignedSegment { .. } => "UnsignedSegment",
            Problem::UnsupportedAlgorithm { .. } => "UnsupportedAlgorithm",
            Problem::WrongKey { .. } => "WrongKey",
            Problem::BadSignature { .. } => "BadSignature",
            Problem::BrokenChain { .. } => "BrokenChain",
            Problem::SequenceGap { .. } => "SequenceGap",
            Problem::AlteredFrontier { .. } => "AlteredFrontier",
            Problem::MissingRecord { .. } => "MissingRecord",
            Problem::DuplicatedRecord { .. } => "DuplicatedRecord",
            Problem::ReorderedRecord { .. } => "ReorderedRecord",
            Problem::AlteredRecord { .. } => "AlteredRecord",
            Problem::TreeSizeMismatch { .. } => "TreeSizeMismatch",
            Problem::RootMismatch { .. } => "RootMismatch",
            Problem::Malformed { .. } => "Malformed",
            Problem::Truncated { .. } => "Truncated",
            Problem::Inconsistent { .. } => "Inconsistent",
            Problem::KeyChanged { .. } => "KeyChanged",
            Problem::OldExport(_) => "OldExport",
            Problem::Unprovable(_) => "Unprovable",
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.name())?;
        match self {
            Problem::Empty => write!(f, "there are no audit segments"),
            Problem::MisnamedSegment { name, index } => write!(
                f,
                "object {name} holds segment {index}, which must be named {}: a segment was copied or replayed under another name",
                segment_name(*index)
            ),
            Problem::MissingSegment { index } => write!(
                f,
                "segment {index} is missing (the segments before and after it are present)"
            ),
            Problem::ReorderedSegment { index, after } => {
                write!(f, "segment {index} comes after segment {after}")
            }
            Problem::DuplicatedSegment { index } => write!(f, "segment {index} appears twice"),
            Problem::UnsignedSegment { segment } => write!(f, "segment {segment} has no signature"),
            Problem::UnsupportedAlgorithm { segment, algorithm } => write!(
                f,
                "segment {segment} is signed with {algorithm:?}, not {ALGORITHM}"
            ),
            Problem::WrongKey {
                segment,
                key_id,
                expected,
            } => write!(
                f,
                "segment {segment} is signed by key {key_id}, not by the audit key {expected}"
            ),
            Problem::BadSignature { segment } => write!(
                f,
                "segment {segment}'s signature does not verify with the audit key: its tree head (index, tree size, root, previous segment, time or key id) was changed"
            ),
            Problem::BrokenChain { segment } => write!(
                f,
                "segment {segment}'s previousSegmentHash is not the hash of segment {}: a segment was replaced",
                segment.saturating_sub(1)
            ),
            Problem::SequenceGap {
                segment,
                expected,
                found,
            } => write!(
                f,
                "segment {segment} starts at record {found}, expected {expected}"
            ),
            Problem::AlteredFrontier { segment } => write!(
                f,
                "segment {segment}'s frontier is not that of the records before it"
            ),
            Problem::MissingRecord { segment, sequence } => {
                write!(f, "record {sequence} is missing from segment {segment}")
            }
            Problem::DuplicatedRecord { segment, sequence } => {
                write!(f, "record {sequence} appears twice in segment {segment}")
            }
            Problem::ReorderedRecord { segment, sequence } => {
                write!(f, "record {sequence} is out of order in segment {segment}")
            }
            Problem::AlteredRecord { segment, sequence } => write!(
                f,
                "record {sequence} (segment {segment}) was altered: its hash is not what was sealed"
            ),
            Problem::TreeSizeMismatch {
                segment,
                signed,
                found,
            } => write!(
                f,
                "segment {segment} holds records up to tree size {found}, but its signed tree size is {signed}"
            ),
            Problem::RootMismatch { segment } => write!(
                f,
                "segment {segment}'s records and frontier do not give its signed root hash: a record or the frontier was altered"
            ),
            Problem::Malformed { segment, what } => write!(f, "segment {segment}: {what}"),
            Problem::Truncated { old_size, new_size } => write!(
                f,
                "the trail has {new_size} records, fewer than the {old_size} of the earlier export: segments were deleted at its end"
            ),
            Problem::Inconsistent {
                old_size,
                new_size,
                first_difference,
            } => {
                write!(
                    f,
                    "the trail of {new_size} records does not extend the earlier export of {old_size}"
                )?;
                match first_difference {
                    Some(s) => write!(f, ": record {s} differs"),
                    None => write!(f, ": earlier records were changed"),
                }
            }
            Problem::KeyChanged { old, new } => write!(
                f,
                "the earlier export is signed by key {old}, the trail by key {new}"
            ),
            Problem::OldExport(p) => write!(f, "the earlier export is not valid: {p}"),
            Problem::Unprovable(why) => write!(f, "{why}"),
        }
    }
}

/// Verify `segments` (in the order given: index order) against the audit key
/// `spki_der` (DER SubjectPublicKeyInfo).
pub fn verify(segments: &[AuditSegmentSpec], spki_der: &[u8]) -> Result<Summary, Problem> {
    verify_tree(segments, spki_der).map(|(s, _)| s)
}

/// [`verify`] segments read from the cluster as (object name, spec), sorted by
/// name: also checks that each name is `segment_name(spec.index)`.
pub fn verify_named(
    segments: &[(String, AuditSegmentSpec)],
    spki_der: &[u8],
) -> Result<Summary, Problem> {
    for (name, spec) in segments {
        if *name != segment_name(spec.index) {
            return Err(Problem::MisnamedSegment {
                name: name.clone(),
                index: spec.index,
            });
        }
    }
    let specs: Vec<AuditSegmentSpec> = segments.iter().map(|(_, s)| s.clone()).collect();
    verify(&specs, spki_der)
}

fn malformed(segment: u64, what: impl Into<String>) -> Problem {
    Problem::Malformed {
        segment,
        what: what.into(),
    }
}

fn check_order(segments: &[AuditSegmentSpec]) -> Result<(), Problem> {
    for (i, w) in segments.windows(2).enumerate() {
        let (p, c) = (w[0].index, w[1].index);
        if c == p {
            return Err(Problem::DuplicatedSegment { index: c });
        }
        if c < p {
            return Err(Problem::ReorderedSegment { index: c, after: p });
        }
        if c > p + 1 {
            let later = segments[i + 2..].iter().any(|s| s.index == p + 1);
            return Err(if later {
                Problem::ReorderedSegment { index: c, after: p }
            } else {
                Problem::MissingSegment { index: p + 1 }
            });
        }
    }
    Ok(())
}

fn check_signature(s: &AuditSegmentSpec, spki_der: &[u8], pinned: &str) -> Result<(), Problem> {
    if s.signature.is_empty() {
        return Err(Problem::UnsignedSegment { segment: s.index });
    }
    if s.signature_algorithm != ALGORITHM {
        return Err(Problem::UnsupportedAlgorithm {
            segment: s.index,
            algorithm: s.signature_algorithm.clone(),
        });
    }
    if s.key_id != pinned {
        return Err(Problem::WrongKey {
            segment: s.index,
            key_id: s.key_id.clone(),
            expected: pinned.to_owned(),
        });
    }
    let sig = head::signature_bytes(s).map_err(|e| malformed(s.index, e.to_string()))?;
    if !key::verify_signature(spki_der, TreeHead::of(s).text().as_bytes(), &sig) {
        return Err(Problem::BadSignature { segment: s.index });
    }
    Ok(())
}

fn check_records(
    s: &AuditSegmentSpec,
    tree: &mut CompactTree,
    running: &mut Frontier,
    last_leaf: &mut Option<Hash>,
) -> Result<(), Problem> {
    let records = &s.records;
    for (i, r) in records.iter().enumerate() {
        let expected = s.first_sequence + i as u64;
        if r.sequence != expected {
            let segment = s.index;
            if records[..i].iter().any(|p| p.sequence == r.sequence) {
                return Err(Problem::DuplicatedRecord {
                    segment,
                    sequence: r.sequence,
                });
            }
            if r.sequence < expected || records[i + 1..].iter().any(|n| n.sequence == expected) {
                return Err(Problem::ReorderedRecord {
                    segment,
                    sequence: r.sequence.min(expected),
                });
            }
            return Err(Problem::MissingRecord {
                segment,
                sequence: expected,
            });
        }
        if let Some(prev) = last_leaf {
            if r.previous_hash != merkle::to_hex(prev) {
                // The record before no longer hashes to what this one recorded:
                // it was altered (or this record's previousHash was). The first
                // record's predecessor is covered by the previous segment's root,
                // already checked: then this record was altered.
                return Err(Problem::AlteredRecord {
                    segment: s.index,
                    sequence: if i == 0 { expected } else { expected - 1 },
                });
            }
        } else if merkle::from_hex(&r.previous_hash).is_err() {
            return Err(malformed(s.index, "a previousHash is not a SHA-256 hash"));
        }
        let h = head::record_hash(r).map_err(|e| malformed(s.index, e.to_string()))?;
        tree.push(h);
        running.push(h);
        *last_leaf = Some(h);
    }
    Ok(())
}

/// [`verify`], also returning the tree of the leaves held (from the first
/// segment's frontier on), for proofs.
pub fn verify_tree(
    segments: &[AuditSegmentSpec],
    spki_der: &[u8],
) -> Result<(Summary, CompactTree), Problem> {
    let (Some(first), Some(last)) = (segments.first(), segments.last()) else {
        return Err(Problem::Empty);
    };
    check_order(segments)?;
    let pinned = key::key_id(spki_der);
    let frontier = Frontier::from_hex(first.first_sequence, &first.frontier)
        .map_err(|e| malformed(first.index, e.to_string()))?;
    // The running frontier gives each segment's root in O(log n); the tree keeps
    // the leaves for proofs.
    let mut running = frontier.clone();
    let mut tree = CompactTree::new(frontier, Vec::new());
    // Leaf hash of the record before the next one, when known.
    let mut last_leaf: Option<Hash> = None;
    let mut prev: Option<(&AuditSegmentSpec, String)> = None;
    for (pos, s) in segments.iter().enumerate() {
        check_signature(s, spki_der, &pinned)?;
        let frontier_checked = match &prev {
            Some((p, hash)) => {
                if s.previous_segment_hash != *hash {
                    return Err(Problem::BrokenChain { segment: s.index });
                }
                if s.first_sequence != p.tree_size {
                    return Err(Problem::SequenceGap {
                        segment: s.index,
                        expected: p.tree_size,
                        found: s.first_sequence,
                    });
                }
                if running.to_hex() != s.frontier {
                    return Err(Problem::AlteredFrontier { segment: s.index });
                }
                true
            }
            None if s.index == 0 => {
                if s.previous_segment_hash != ZERO_HASH {
                    return Err(Problem::BrokenChain { segment: 0 });
                }
                if s.first_sequence != 0 {
                    return Err(Problem::SequenceGap {
                        segment: 0,
                        expected: 0,
                        found: s.first_sequence,
                    });
                }
                last_leaf = Some([0u8; 32]);
                true
            }
            None => false,
        };
        check_records(s, &mut tree, &mut running, &mut last_leaf)?;
        if tree.size() != s.tree_size {
            return Err(Problem::TreeSizeMismatch {
                segment: s.index,
                signed: s.tree_size,
                found: tree.size(),
            });
        }
        if merkle::to_hex(&running.root()) != s.root_hash {
            // The chain covers every record but the last of the segment: the next
            // segment's first previousHash or, failing that, the root covers it.
            let next_breaks = segments
                .get(pos + 1)
                .and_then(|n| n.records.first())
                .is_some_and(|r| {
                    Some(r.previous_hash.as_str())
                        != last_leaf.map(|h| merkle::to_hex(&h)).as_deref()
                });
            return Err(
                if (frontier_checked || next_breaks) && !s.records.is_empty() {
                    Problem::AlteredRecord {
                        segment: s.index,
                        sequence: s.tree_size.saturating_sub(1),
                    }
                } else {
                    Problem::RootMismatch { segment: s.index }
                },
            );
        }
        let hash = head::segment_hash(s).map_err(|e| malformed(s.index, e.to_string()))?;
        prev = Some((s, hash));
    }
    let summary = Summary {
        segments: segments.len(),
        records: tree.size() - first.first_sequence,
        first_index: first.index,
        last_index: last.index,
        first_sequence: first.first_sequence,
        tree_size: last.tree_size,
        root_hash: last.root_hash.clone(),
        key_id: pinned,
        first_signed_at: first.signed_at.clone(),
        last_signed_at: last.signed_at.clone(),
        first_time: first
            .records
            .first()
            .map(|r| r.time.clone())
            .unwrap_or_default(),
        last_time: last
            .records
            .last()
            .map(|r| r.time.clone())
            .unwrap_or_default(),
    };
    Ok((summary, tree))
}

/// What [`verify_since`] proved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SinceSummary {
    /// The earlier export.
    pub old: Summary,
    /// The trail now.
    pub new: Summary,
    /// The consistency proof (RFC 9162 §2.1.4) from the old tree head to the new,
    /// computed from the leaves held and verified against both signed roots.
    pub proof: Vec<String>,
}

/// Verify `old` (an earlier export's segments) and `new` (the trail now) with the
/// same audit key, and prove that `new` extends `old`: the tree of the first
/// `old.tree_size` records of `new` has the root signed in `old`.
///
/// The proof needs the records of `new` from the end of `old` on, and the frontier
/// there: it fails with [`Problem::Unprovable`] if `new` was pruned beyond the end
/// of `old` (export before you prune).
pub fn verify_since(
    old: &[AuditSegmentSpec],
    new: &[AuditSegmentSpec],
    spki_der: &[u8],
) -> Result<SinceSummary, Problem> {
    let (old_sum, old_tree) =
        verify_tree(old, spki_der).map_err(|p| Problem::OldExport(Box::new(p)))?;
    let (new_sum, tree) = verify_tree(new, spki_der)?;
    let (m, n) = (old_sum.tree_size, new_sum.tree_size);
    if n < m {
        return Err(Problem::Truncated {
            old_size: m,
            new_size: n,
        });
    }
    if tree.first_held() > m {
        return Err(Problem::Unprovable(format!(
            "the trail now starts at record {}, after the end of the earlier export ({m} records): the records between were pruned; verify against an export that covers them",
            tree.first_held()
        )));
    }
    let hash = |s: &str| merkle::from_hex(s).map_err(|e| Problem::Unprovable(e.to_string()));
    let old_root = hash(&old_sum.root_hash)?;
    let new_root = hash(&new_sum.root_hash)?;
    let proof = tree.consistency_proof(m, n).ok_or_else(|| {
        Problem::Unprovable(format!(
            "cannot compute a consistency proof from size {m} to {n}"
        ))
    })?;
    if !merkle::verify_consistency(m, n, &old_root, &new_root, &proof) {
        let first_difference = (old_tree.first_held().max(tree.first_held())..m)
            .find(|s| old_tree.leaf(*s) != tree.leaf(*s));
        return Err(Problem::Inconsistent {
            old_size: m,
            new_size: n,
            first_difference,
        });
    }
    Ok(SinceSummary {
        old: old_sum,
        new: new_sum,
        proof: proof.iter().map(merkle::to_hex).collect(),
    })
}

/// An inclusion proof of one record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inclusion {
    /// The record's sequence (leaf index).
    pub sequence: u64,
    /// Its leaf hash (hex).
    pub leaf_hash: String,
    /// The tree size of the signed head it is proved against.
    pub tree_size: u64,
    /// That head's root hash (hex).
    pub root_hash: String,
    /// The audit path (RFC 9162 §2.1.3), hex.
    pub proof: Vec<String>,
}

/// Prove (and check) that record `sequence` is in the tree of the last signed head
/// of a verified trail.
pub fn prove_inclusion(
    summary: &Summary,
    tree: &CompactTree,
    sequence: u64,
) -> Result<Inclusion, Problem> {
    let n = summary.tree_size;
    let leaf = tree.leaf(sequence).ok_or_else(|| {
        Problem::Unprovable(format!(
            "record {sequence} is not in this trail (it holds records {} to {})",
            tree.first_held(),
            n.saturating_sub(1)
        ))
    })?;
    let proof = tree
        .inclusion_proof(sequence, n)
        .ok_or_else(|| Problem::Unprovable(format!("no audit path for record {sequence}")))?;
    let root =
        merkle::from_hex(&summary.root_hash).map_err(|e| Problem::Unprovable(e.to_string()))?;
    if !merkle::verify_inclusion(sequence, n, &leaf, &proof, &root) {
        return Err(Problem::Unprovable(format!(
            "the audit path of record {sequence} does not verify"
        )));
    }
    Ok(Inclusion {
        sequence,
        leaf_hash: merkle::to_hex(&leaf),
        tree_size: n,
        root_hash: summary.root_hash.clone(),
        proof: proof.iter().map(merkle::to_hex).collect(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::seal::{TrailState, seal};
    use crate::testing::{SoftwareSigner, record};

    /// Four segments of three records each (sequences 0..12), signed by `key`.
    fn trail(key: &SoftwareSigner, tag: &str) -> Vec<AuditSegmentSpec> {
        let mut state = TrailState::genesis();
        let t: jiff::Timestamp = "2026-12-03T15:40:00Z".parse().unwrap();
        (0..4)
            .map(|s| {
                let records = (0..3).map(|i| record(tag, s * 3 + i)).collect();
                let (spec, next) = seal(&state, records, t, "replica-a", key).unwrap();
                state = next;
                spec
            })
            .collect()
    }

    fn resign(spec: &mut AuditSegmentSpec, key: &SoftwareSigner) {
        use crate::seal::TreeHeadSigner;
        use base64::Engine;
        let sig = key.sign(TreeHead::of(spec).text().as_bytes()).unwrap();
        spec.signature = base64::engine::general_purpose::STANDARD.encode(sig);
    }

    #[test]
    fn an_intact_trail_verifies_and_is_summarised() {
        let key = SoftwareSigner::generate();
        let segs = trail(&key, "request.created");
        let s = verify(&segs, key.spki_der()).unwrap();
        assert_eq!((s.segments, s.records, s.tree_size), (4, 12, 12));
        assert_eq!((s.first_index, s.last_index), (0, 3));
        assert_eq!(s.root_hash, segs[3].root_hash);
        assert_eq!(s.key_id, key::key_id(key.spki_der()));
        assert_eq!(verify(&[], key.spki_der()), Err(Problem::Empty));
    }

    #[test]
    fn an_edited_record_is_named() {
        let key = SoftwareSigner::generate();
        let segs = trail(&key, "request.created");
        // In the middle of a segment, at its end, and the very last record.
        for (seg, rec, seq) in [(1, 1, 4), (1, 2, 5), (3, 2, 11), (0, 0, 0)] {
            let mut t = segs.clone();
            t[seg].records[rec]
                .users
                .push(crds::audit_segment::AuditUser {
                    role: "approvedBy".into(),
                    user: "mallory".into(),
                });
            assert_eq!(
                verify(&t, key.spki_der()),
                Err(Problem::AlteredRecord {
                    segment: seg as u64,
                    sequence: seq
                }),
                "seg {seg} rec {rec}"
            );
        }
    }

    #[test]
    fn deleted_reordered_duplicated_or_replayed_segments_are_named() {
        let key = SoftwareSigner::generate();
        let segs = trail(&key, "request.created");
        let pick = |idx: &[usize]| idx.iter().map(|i| segs[*i].clone()).collect::<Vec<_>>();
        let v = |t: &[AuditSegmentSpec]| verify(t, key.spki_der());
        assert_eq!(
            v(&pick(&[0, 1, 3])),
            Err(Problem::MissingSegment { index: 2 })
        );
        assert_eq!(
            v(&pick(&[0, 2, 1, 3])),
            Err(Problem::ReorderedSegment { index: 2, after: 0 })
        );
        assert_eq!(
            v(&pick(&[0, 1, 1, 2, 3])),
            Err(Problem::DuplicatedSegment { index: 1 })
        );
        // Deleting the last segments leaves a valid, shorter trail; deleting the
        // first ones looks like pruning. Only --since an earlier export shows it.
        assert_eq!(v(&pick(&[0, 1])).unwrap().tree_size, 6);
        assert_eq!(v(&pick(&[2, 3])).unwrap().first_index, 2);
        assert_eq!(
            verify_since(&segs, &pick(&[0, 1]), key.spki_der()),
            Err(Problem::Truncated {
                old_size: 12,
                new_size: 6
            })
        );
        // Segment 1 replayed as segment 4: its index is signed.
        let mut replay = segs[1].clone();
        replay.index = 4;
        let mut t = segs.clone();
        t.push(replay);
        assert_eq!(v(&t), Err(Problem::BadSignature { segment: 4 }));
        // ... or stored under another object name.
        let named: Vec<(String, AuditSegmentSpec)> = segs
            .iter()
            .map(|s| (segment_name(s.index), s.clone()))
            .chain([(segment_name(4), segs[1].clone())])
            .collect();
        assert_eq!(
            verify_named(&named, key.spki_der()),
            Err(Problem::MisnamedSegment {
                name: "audit-000000000004".into(),
                index: 1
            })
        );
        assert!(verify_named(&named[..4], key.spki_der()).is_ok());
    }

    #[test]
    fn a_segment_replaced_or_resigned_or_unsigned_is_named() {
        let key = SoftwareSigner::generate();
        let segs = trail(&key, "request.created");
        let v = |t: &[AuditSegmentSpec]| verify(t, key.spki_der());
        // Another key signed the whole trail.
        let other = SoftwareSigner::generate();
        assert!(matches!(
            v(&trail(&other, "request.created")),
            Err(Problem::WrongKey { segment: 0, .. })
        ));
        // Re-signed by another key claiming the audit key's id.
        let mut t = segs.clone();
        t[2].root_hash = segs[1].root_hash.clone();
        resign(&mut t[2], &other);
        assert_eq!(v(&t), Err(Problem::BadSignature { segment: 2 }));
        // A signed field changed without re-signing.
        let mut t = segs.clone();
        t[1].signed_at = "2026-12-03T15:40:01.000000Z".into();
        assert_eq!(v(&t), Err(Problem::BadSignature { segment: 1 }));
        // The signature removed.
        let mut t = segs.clone();
        t[3].signature.clear();
        assert_eq!(v(&t), Err(Problem::UnsignedSegment { segment: 3 }));
        // Segment 2 replaced by another one the audit key signed (another history).
        let state = TrailState::after(&segs[1]).unwrap();
        let t0: jiff::Timestamp = "2026-12-03T15:41:00Z".parse().unwrap();
        let (fake, _) = seal(&state, vec![record("forged", 99)], t0, "w", &key).unwrap();
        let mut t = segs.clone();
        t[2] = fake;
        assert_eq!(v(&t), Err(Problem::BrokenChain { segment: 3 }));
    }

    #[test]
    fn records_deleted_duplicated_reordered_or_added_are_named() {
        let key = SoftwareSigner::generate();
        let segs = trail(&key, "request.created");
        let v = |t: &[AuditSegmentSpec]| verify(t, key.spki_der());
        let mut t = segs.clone();
        t[1].records.remove(1);
        assert_eq!(
            v(&t),
            Err(Problem::MissingRecord {
                segment: 1,
                sequence: 4
            })
        );
        let mut t = segs.clone();
        t[1].records[1] = t[1].records[0].clone();
        assert_eq!(
            v(&t),
            Err(Problem::DuplicatedRecord {
                segment: 1,
                sequence: 3
            })
        );
        let mut t = segs.clone();
        t[2].records.swap(0, 1);
        assert_eq!(
            v(&t),
            Err(Problem::ReorderedRecord {
                segment: 2,
                sequence: 6
            })
        );
        // A record appended with the right sequence and previousHash.
        let mut t = segs.clone();
        let mut extra = record("forged", 12);
        extra.sequence = 12;
        extra.previous_hash =
            merkle::to_hex(&head::record_hash(t[3].records.last().unwrap()).unwrap());
        t[3].records.push(extra);
        assert_eq!(
            v(&t),
            Err(Problem::TreeSizeMismatch {
                segment: 3,
                signed: 12,
                found: 13
            })
        );
    }

    #[test]
    fn a_pruned_trail_verifies_and_its_unverifiable_frontier_shows_as_a_root_mismatch() {
        let key = SoftwareSigner::generate();
        let segs = trail(&key, "request.created");
        let v = |t: &[AuditSegmentSpec]| verify(t, key.spki_der());
        let mut t = segs.clone();
        t[2].frontier[0] = t[2].frontier[1].clone();
        assert_eq!(v(&t), Err(Problem::AlteredFrontier { segment: 2 }));
        assert_eq!(v(&t[2..]), Err(Problem::RootMismatch { segment: 2 }));
        // The first segment of the trail has an empty frontier and zero links.
        let mut t = segs.clone();
        let extra = t[1].root_hash.clone();
        t[0].frontier.push(extra);
        assert!(matches!(v(&t), Err(Problem::Malformed { segment: 0, .. })));
    }

    #[test]
    fn a_newer_trail_is_proved_to_extend_an_older_export() {
        let key = SoftwareSigner::generate();
        let segs = trail(&key, "request.created");
        let k = key.spki_der();
        for (old, new) in [
            (0..2, 0..4),
            (0..1, 0..4),
            (0..2, 2..4),
            (1..3, 2..4),
            (0..4, 0..4),
        ] {
            let s = verify_since(&segs[old.clone()], &segs[new.clone()], k)
                .unwrap_or_else(|p| panic!("{old:?} {new:?}: {p}"));
            assert_eq!(s.new.tree_size, (new.end * 3) as u64);
        }
        assert!(matches!(
            verify_since(&segs[0..1], &segs[2..4], k),
            Err(Problem::Unprovable(_))
        ));
        // Another history signed by the same key (a rewritten trail).
        let mut rewritten = segs.clone();
        rewritten[1].records[2].event = "rewritten".into();
        let mut state = TrailState::after(&rewritten[0]).unwrap();
        let t: jiff::Timestamp = "2026-12-03T15:40:00Z".parse().unwrap();
        for seg in rewritten.iter_mut().skip(1) {
            let (spec, next) = seal(&state, seg.records.clone(), t, "w", &key).unwrap();
            *seg = spec;
            state = next;
        }
        assert!(verify(&rewritten, k).is_ok());
        assert_eq!(
            verify_since(&segs[0..2], &rewritten, k),
            Err(Problem::Inconsistent {
                old_size: 6,
                new_size: 12,
                first_difference: Some(5)
            })
        );
        let mut broken = segs[0..2].to_vec();
        broken[1].signature.clear();
        assert!(matches!(
            verify_since(&broken, &segs, k),
            Err(Problem::OldExport(_))
        ));
    }

    #[test]
    fn inclusion_proofs_of_held_records_verify() {
        let key = SoftwareSigner::generate();
        let segs = trail(&key, "request.created");
        let (summary, tree) = verify_tree(&segs[1..], key.spki_der()).unwrap();
        for seq in 3..12 {
            let p = prove_inclusion(&summary, &tree, seq).unwrap();
            assert_eq!(p.tree_size, 12);
        }
        assert!(matches!(
            prove_inclusion(&summary, &tree, 2),
            Err(Problem::Unprovable(_))
        ));
    }

    /// Throughput, for docs/audit.md: `cargo test --release -p chop-audit --
    /// --ignored --nocapture throughput`.
    #[test]
    #[ignore]
    fn throughput() {
        let key = SoftwareSigner::generate();
        let t: jiff::Timestamp = "2026-12-03T15:40:00Z".parse().unwrap();
        let mut state = TrailState::genesis();
        let (segments, per) = (100, 1000);
        let start = std::time::Instant::now();
        let segs: Vec<AuditSegmentSpec> = (0..segments)
            .map(|s| {
                let records = (0..per)
                    .map(|i| record("certificate.issued", s * per + i))
                    .collect();
                let (spec, next) = seal(&state, records, t, "w", &key).unwrap();
                state = next;
                spec
            })
            .collect();
        let sealed = start.elapsed();
        let bytes: usize = segs
            .iter()
            .map(|s| serde_json::to_vec(s).unwrap().len())
            .sum();
        let start = std::time::Instant::now();
        let summary = verify(&segs, key.spki_der()).unwrap();
        let verified = start.elapsed();
        let start = std::time::Instant::now();
        verify_since(&segs[..50], &segs, key.spki_der()).unwrap();
        let since = start.elapsed();
        println!(
            "{} records in {segments} segments ({} bytes JSON, {} per record): sealed in {sealed:?}, verified in {verified:?}, verify --since (both trails) in {since:?}",
            summary.records,
            bytes,
            bytes / summary.records as usize
        );
    }
}
