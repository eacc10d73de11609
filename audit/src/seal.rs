//! Sealing: turning a batch of records into the next signed segment.
//!
//! The writer (chop-controller) keeps a [`TrailState`], recovered at start from
//! the last segment in the cluster ([`TrailState::after`]) or [`TrailState::genesis`]
//! for an empty trail. For each group commit it calls [`seal`] with the records
//! (their `sequence` and `previousHash` are assigned here), creates the returned
//! `AuditSegmentSpec` as object `segment_name(spec.index)`, and only once the API
//! server has accepted it replaces its state by the returned one. If the create
//! fails the old state is still right: seal the same records again (a new
//! `signedAt`, a new signature). If it fails with AlreadyExists another writer took
//! that index: re-read the last segment and recover with [`TrailState::after`].
//!
//! Non-goals: no I/O, no clock (the caller passes the signing time), no key (the
//! caller's [`TreeHeadSigner`] signs, in the HSM).

use crds::{AuditRecord, AuditSegmentSpec};

use crate::Error;
use crate::head::{self, TreeHead, ZERO_HASH};
use crate::key::{self, ALGORITHM};
use crate::merkle::{self, Frontier};

/// What a writer must know to append the next segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrailState {
    /// Sequence number of the next record (= the tree size).
    pub next_sequence: u64,
    /// Index of the next segment.
    pub next_index: u64,
    /// Frontier of the tree of the `next_sequence` records so far.
    pub frontier: Frontier,
    /// Segment hash (hex) of the last segment; 64 zeros before the first.
    pub previous_segment_hash: String,
    /// Leaf hash (hex) of the last record; 64 zeros before the first.
    pub last_leaf_hash: String,
}

impl TrailState {
    /// The state of an empty trail.
    pub fn genesis() -> TrailState {
        TrailState {
            next_sequence: 0,
            next_index: 0,
            frontier: Frontier::new(),
            previous_segment_hash: ZERO_HASH.to_owned(),
            last_leaf_hash: ZERO_HASH.to_owned(),
        }
    }

    /// The state after segment `spec`, recomputed from its frontier and records:
    /// refused ([`Error::InconsistentSegment`]) if they do not give its `treeSize`
    /// and `rootHash`, if its sequences have gaps or its record chain is broken.
    /// The signature is not checked here: see [`TrailState::after_signed`].
    pub fn after(spec: &AuditSegmentSpec) -> Result<TrailState, Error> {
        let bad = |what: String| Error::InconsistentSegment {
            index: spec.index,
            what,
        };
        let mut frontier = Frontier::from_hex(spec.first_sequence, &spec.frontier)?;
        let Some(first) = spec.records.first() else {
            return Err(bad("it has no records".to_owned()));
        };
        let mut last = first.previous_hash.clone();
        for (i, r) in spec.records.iter().enumerate() {
            let want = spec.first_sequence.saturating_add(i as u64);
            if r.sequence != want {
                return Err(bad(format!(
                    "record {i} has sequence {}, expected {want}",
                    r.sequence
                )));
            }
            if r.previous_hash != last {
                return Err(bad(format!(
                    "record {want}'s previousHash is not the hash of record {}",
                    want.saturating_sub(1)
                )));
            }
            let h = head::record_hash(r)?;
            frontier.push(h);
            last = merkle::to_hex(&h);
        }
        if frontier.size() != spec.tree_size {
            return Err(bad(format!(
                "treeSize is {} but firstSequence and the records give {}",
                spec.tree_size,
                frontier.size()
            )));
        }
        if merkle::to_hex(&frontier.root()) != spec.root_hash {
            return Err(bad(
                "rootHash is not the root of its frontier and records".to_owned()
            ));
        }
        Ok(TrailState {
            next_sequence: spec.tree_size,
            next_index: spec.index.saturating_add(1),
            frontier,
            previous_segment_hash: head::segment_hash(spec)?,
            last_leaf_hash: last,
        })
    }

    /// [`TrailState::after`], and the segment is signed by the key `spki_der`
    /// ([`Error::InconsistentSegment`] if not).
    pub fn after_signed(spec: &AuditSegmentSpec, spki_der: &[u8]) -> Result<TrailState, Error> {
        let bad = |what: &str| Error::InconsistentSegment {
            index: spec.index,
            what: what.to_owned(),
        };
        if spec.key_id != key::key_id(spki_der) {
            return Err(bad("it is signed by another key than the audit key"));
        }
        if spec.signature_algorithm != ALGORITHM {
            return Err(bad("its signature algorithm is not ecdsa-p256-sha256"));
        }
        let sig = head::signature_bytes(spec)?;
        if !key::verify_signature(spki_der, TreeHead::of(spec).text().as_bytes(), &sig) {
            return Err(bad("its signature does not verify with the audit key"));
        }
        TrailState::after(spec)
    }
}

/// The audit key, as the writer holds it (in chop-controller: the HSM key labelled
/// `chop-audit`).
pub trait TreeHeadSigner {
    /// Why signing failed.
    type Error: std::error::Error + Send + Sync + 'static;
    /// Hex SHA-256 of the key's DER SubjectPublicKeyInfo ([`key::key_id`]).
    fn key_id(&self) -> String;
    /// Signature algorithm: must be `ecdsa-p256-sha256`.
    fn algorithm(&self) -> &str;
    /// Sign `text` (ECDSA P-256 over SHA-256 of `text`), returning the DER
    /// ECDSA-Sig-Value.
    fn sign(&self, text: &[u8]) -> Result<Vec<u8>, Self::Error>;
}

/// Seal `records` as the segment after `state`: assign each record its `sequence`
/// and `previousHash` (whatever they held is overwritten), compute the frontier,
/// tree size and root, sign the tree head at `signed_at` by `signer`. Returns the
/// segment and the state after it; `state` itself is unchanged (keep it until the
/// segment is stored).
///
/// Errors: [`Error::EmptySegment`] for no records, [`Error::UnsupportedAlgorithm`]
/// if the signer's algorithm is not `ecdsa-p256-sha256`, [`Error::Sign`] if it
/// fails.
pub fn seal<S: TreeHeadSigner + ?Sized>(
    state: &TrailState,
    mut records: Vec<AuditRecord>,
    signed_at: jiff::Timestamp,
    writer: &str,
    signer: &S,
) -> Result<(AuditSegmentSpec, TrailState), Error> {
    if records.is_empty() {
        return Err(Error::EmptySegment);
    }
    if signer.algorithm() != ALGORITHM {
        return Err(Error::UnsupportedAlgorithm(signer.algorithm().to_owned()));
    }
    let mut frontier = state.frontier.clone();
    let mut last = state.last_leaf_hash.clone();
    for (i, r) in records.iter_mut().enumerate() {
        r.sequence = state.next_sequence + i as u64;
        r.previous_hash = last;
        let h = head::record_hash(r)?;
        frontier.push(h);
        last = merkle::to_hex(&h);
    }
    let key_id = signer.key_id();
    let root_hash = merkle::to_hex(&frontier.root());
    let signed_at = head::rfc3339_micros(signed_at);
    let text = TreeHead {
        index: state.next_index,
        tree_size: frontier.size(),
        root_hash: &root_hash,
        previous_segment_hash: &state.previous_segment_hash,
        signed_at: &signed_at,
        key_id: &key_id,
    }
    .text();
    let signature = signer
        .sign(text.as_bytes())
        .map_err(|e| Error::Sign(Box::new(e)))?;
    let segment_hash = merkle::to_hex(&head::segment_hash_raw(text.as_bytes(), &signature));
    use base64::Engine;
    let spec = AuditSegmentSpec {
        index: state.next_index,
        first_sequence: state.next_sequence,
        records,
        frontier: state.frontier.to_hex(),
        tree_size: frontier.size(),
        root_hash,
        previous_segment_hash: state.previous_segment_hash.clone(),
        signed_at,
        writer: writer.to_owned(),
        key_id,
        signature_algorithm: ALGORITHM.to_owned(),
        signature: base64::engine::general_purpose::STANDARD.encode(&signature),
    };
    let next = TrailState {
        next_sequence: frontier.size(),
        next_index: state.next_index + 1,
        frontier,
        previous_segment_hash: segment_hash,
        last_leaf_hash: last,
    };
    Ok((spec, next))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::testing::{SoftwareSigner, record};

    #[test]
    fn sealing_chains_records_and_segments_and_recovery_gives_the_same_state() {
        let signer = SoftwareSigner::generate();
        let t: jiff::Timestamp = "2026-12-03T15:40:00Z".parse().unwrap();
        let mut state = TrailState::genesis();
        let mut all = Vec::new();
        let mut segments = Vec::new();
        for batch in [1usize, 3, 4, 1, 7] {
            let records = (0..batch).map(|i| record("request.created", i)).collect();
            let (spec, next) = seal(&state, records, t, "replica-a", &signer).unwrap();
            assert_eq!(spec.index, state.next_index);
            assert_eq!(spec.first_sequence, state.next_sequence);
            assert_eq!(spec.previous_segment_hash, state.previous_segment_hash);
            assert_eq!(spec.records[0].previous_hash, state.last_leaf_hash);
            assert_eq!(spec.signed_at, "2026-12-03T15:40:00.000000Z");
            for r in &spec.records {
                all.push(head::record_hash(r).unwrap());
            }
            assert_eq!(spec.root_hash, merkle::to_hex(&merkle::root(&all)));
            // What a restarted writer recovers from the stored segment is the state.
            assert_eq!(TrailState::after(&spec).unwrap(), next);
            assert_eq!(
                TrailState::after_signed(&spec, signer.spki_der()).unwrap(),
                next
            );
            state = next;
            segments.push(spec);
        }
        assert_eq!(segments[0].records[0].previous_hash, ZERO_HASH);
        assert_eq!(segments[0].previous_segment_hash, ZERO_HASH);
        assert!(segments[0].frontier.is_empty());
        assert_eq!(state.next_sequence, 16);
    }

    #[test]
    fn recovery_refuses_a_segment_that_does_not_add_up() {
        let signer = SoftwareSigner::generate();
        let t = jiff::Timestamp::now();
        let (spec, _) = seal(
            &TrailState::genesis(),
            vec![record("a", 0), record("b", 1)],
            t,
            "w",
            &signer,
        )
        .unwrap();
        let mut edited = spec.clone();
        edited.records[1].event = "c".into();
        assert!(matches!(
            TrailState::after(&edited),
            Err(Error::InconsistentSegment { index: 0, .. })
        ));
        let other = SoftwareSigner::generate();
        assert!(matches!(
            TrailState::after_signed(&spec, other.spki_der()),
            Err(Error::InconsistentSegment { .. })
        ));
        assert!(matches!(
            seal(&TrailState::genesis(), vec![], t, "w", &signer),
            Err(Error::EmptySegment)
        ));
    }
}
