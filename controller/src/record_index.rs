//! A compact in-memory index of the register: for each IssuedCertificate, its
//! CA and its state (the `chop.dev/status` label, the mirror of `status.state`
//! written with it in one PATCH), kept from a metadata-only
//! watch. The CertificateAuthority reconciler counts issued, revoked and held
//! certificates from it instead of listing the API.
//!
//! Why not a reflector store: a store keeps one `ObjectMeta` per record (a
//! struct of some thirty optional fields, plus the object reference that keys
//! it), about 1.9 KiB per record as measured with 100,000 records; this index
//! keeps a name, a shared CA name and one byte.
//!
//! It also answers, without a LIST whose cost grows with the register, the two
//! questions issuance asks of it (issue 12):
//!
//! - the block list ([`crate::blocklist`]): which records of a CA for a key
//!   fingerprint are labelled Revoked ([`RecordIndex::revoked_of_key`]);
//! - renewal and re-key ([`crate::renewal`]): which records a subscriber holds
//!   at a CA ([`RecordIndex::of_subscriber`]).
//!
//! Both are *candidates*: names the caller reads by GET (one quorum read each,
//! cost independent of the register) and decides on as before. They only
//! grow: a watch event, a re-list or a write-through adds names and never
//! removes one (a record's revocation is final; a deleted record's GET says
//! 404), so a late or replayed watch event cannot hide a record the index
//! already knew. Why a candidate is never missed is argued in
//! docs/register.md ("The Kubernetes register at scale"): records written by
//! this replica are added by the writer itself ([`RecordIndex::observe`])
//! before it reports the write, and records written before this replica
//! became leader are in the watch's first list, which starts after the
//! leadership was won ([`crate::run`] runs only then).

use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, RwLock};

use crds::IssuedCertificate;
use crds::issued_certificate::{
    LABEL_CA, LABEL_KEY_FINGERPRINT, LABEL_PROFILE, LABEL_STATUS, LABEL_SUBSCRIBER_ID,
};
use kube::ResourceExt;
use kube::core::PartialObjectMeta;
use kube::runtime::watcher::Event;

/// A record's state as counted: the register's one definition
/// ([`crate::register::State`]), read from the `chop.dev/status` label, which
/// is written in the same PATCH as `status.state` (a metadata-only watch does
/// not see the status).
type State = crate::register::State;

/// Counts of one CA's register.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Records.
    pub issued: i64,
    /// Records labelled Revoked.
    pub revoked: i64,
    /// Records labelled Held.
    pub held: i64,
}

/// (namespace, name): a record's key.
type Key = (Arc<str>, Box<str>);
/// (CA, state): what is kept of a record.
type Value = (Arc<str>, State);
/// Key → value.
type Entries = HashMap<Key, Value>;

#[derive(Default)]
struct Inner {
    entries: Entries,
    /// A (re-)list in progress: built aside, swapped in at its end.
    listing: Option<Entries>,
    /// The first list has completed.
    ready: bool,
    /// Interned namespace and CA names.
    names: HashMap<Box<str>, Arc<str>>,
    /// Hash of (namespace, CA, key fingerprint label) → names of the records
    /// ever seen labelled Revoked for it (only grows).
    revoked: HashMap<u64, BTreeSet<Box<str>>>,
    /// Hash of (namespace, CA, subscriber id, profile label) → names of its
    /// records (only grows).
    subscribers: HashMap<u64, BTreeSet<Box<str>>>,
}

/// A hash of the parts (collisions only add candidates, which callers read
/// and check).
fn key_of(parts: &[&str]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for p in parts {
        p.hash(&mut h);
    }
    h.finish()
}

/// The key fingerprint label of a fingerprint (its first 63 characters).
fn fingerprint_label(fingerprint: &str) -> &str {
    fingerprint.get(..63).unwrap_or(fingerprint)
}

impl Inner {
    fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.names.get(s) {
            return Arc::clone(a);
        }
        let a: Arc<str> = Arc::from(s);
        self.names.insert(s.into(), Arc::clone(&a));
        a
    }

    /// Add `r` to the candidate sets it belongs to.
    fn candidates(
        &mut self,
        labels: &std::collections::BTreeMap<String, String>,
        ns: &str,
        name: &str,
    ) {
        let Some(ca) = labels.get(LABEL_CA) else {
            return;
        };
        if State::parse(labels.get(LABEL_STATUS).map(String::as_str)) == Ok(State::Revoked)
            && let Some(fp) = labels.get(LABEL_KEY_FINGERPRINT)
        {
            let set = self.revoked.entry(key_of(&[ns, ca, fp])).or_default();
            if !set.contains(name) {
                set.insert(name.into());
            }
        }
        if let Some(sid) = labels.get(LABEL_SUBSCRIBER_ID) {
            let profile = labels.get(LABEL_PROFILE).map_or("", String::as_str);
            let set = self
                .subscribers
                .entry(key_of(&[ns, ca, sid, profile]))
                .or_default();
            if !set.contains(name) {
                set.insert(name.into());
            }
        }
    }

    fn entry(&mut self, r: &PartialObjectMeta<IssuedCertificate>) -> Option<(Key, Value)> {
        let labels = r.labels();
        self.candidates(labels, &r.namespace().unwrap_or_default(), &r.name_any());
        let ca = labels.get(LABEL_CA)?;
        // A label that is no state at all (only a cluster admin could write
        // one) counts as Valid here; the CRL and OCSP read status.state.
        let state =
            State::parse(labels.get(LABEL_STATUS).map(String::as_str)).unwrap_or(State::Valid);
        let ns = self.intern(&r.namespace().unwrap_or_default());
        let ca = self.intern(ca);
        Some(((ns, r.name_any().into()), (ca, state)))
    }
}

/// The index; cheap to share (`Arc` inside).
#[derive(Clone, Default)]
pub struct RecordIndex(Arc<RwLock<Inner>>);

impl std::fmt::Debug for RecordIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordIndex").finish_non_exhaustive()
    }
}

fn names(set: Option<&BTreeSet<Box<str>>>) -> Vec<String> {
    set.map(|s| s.iter().map(|n| n.to_string()).collect())
        .unwrap_or_default()
}

impl RecordIndex {
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Apply one watch event.
    pub fn apply(&self, event: &Event<PartialObjectMeta<IssuedCertificate>>) {
        let mut inner = self.write();
        match event {
            Event::Init => inner.listing = Some(HashMap::new()),
            Event::InitApply(r) => {
                if let Some((k, v)) = inner.entry(r)
                    && let Some(l) = inner.listing.as_mut()
                {
                    l.insert(k, v);
                }
            }
            Event::InitDone => {
                if let Some(l) = inner.listing.take() {
                    inner.entries = l;
                }
                if !inner.ready {
                    tracing::info!(
                        records = inner.entries.len(),
                        "register index: first list complete"
                    );
                }
                inner.ready = true;
            }
            Event::Apply(r) => {
                if let Some((k, v)) = inner.entry(r) {
                    inner.entries.insert(k, v);
                }
            }
            Event::Delete(r) => {
                let key: Key = (
                    Arc::from(r.namespace().unwrap_or_default().as_str()),
                    r.name_any().into(),
                );
                inner.entries.remove(&key);
            }
        }
    }

    /// Note a record this replica has just written (created, or changed the
    /// state of), before the write is reported anywhere: the index holds it
    /// whatever the watch's delay.
    pub fn observe(&self, record: &IssuedCertificate) {
        let mut inner = self.write();
        let ns = record.namespace().unwrap_or_default();
        inner.candidates(record.labels(), &ns, &record.name_any());
    }

    /// Whether the first list has completed (the candidate sets hold every
    /// record that existed when it started).
    pub fn is_ready(&self) -> bool {
        self.read().ready
    }

    /// The names of the records of CA `ca` in `namespace` ever labelled
    /// Revoked for the key with SPKI fingerprint `fingerprint` (a superset),
    /// or `None` before the first list completed.
    pub fn revoked_of_key(
        &self,
        namespace: &str,
        ca: &str,
        fingerprint: &str,
    ) -> Option<Vec<String>> {
        let inner = self.read();
        if !inner.ready {
            return None;
        }
        let key = key_of(&[namespace, ca, fingerprint_label(fingerprint)]);
        Some(names(inner.revoked.get(&key)))
    }

    /// The names of the records of profile `profile` (its label) of
    /// subscriber `subscriber_id` at CA `ca` in `namespace` (a superset), or
    /// `None` before the first list completed.
    pub fn of_subscriber(
        &self,
        namespace: &str,
        ca: &str,
        subscriber_id: &str,
        profile: &str,
    ) -> Option<Vec<String>> {
        let inner = self.read();
        if !inner.ready {
            return None;
        }
        let key = key_of(&[namespace, ca, subscriber_id, profile]);
        Some(names(inner.subscribers.get(&key)))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The counts of CA `ca` in `namespace`, once the first list completed.
    pub fn counts(&self, namespace: &str, ca: &str) -> Option<Counts> {
        let inner = self
            .0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !inner.ready {
            return None;
        }
        let mut c = Counts::default();
        for ((ns, _), (owner, state)) in &inner.entries {
            if &**ns == namespace && &**owner == ca {
                c.issued += 1;
                match state {
                    State::Revoked => c.revoked += 1,
                    State::Held => c.held += 1,
                    State::Valid => {}
                }
            }
        }
        Some(c)
    }

    /// Number of records held (all CAs).
    pub fn len(&self) -> usize {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entries
            .len()
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::collections::BTreeMap;

    fn rec(name: &str, ca: &str, status: &str) -> PartialObjectMeta<IssuedCertificate> {
        PartialObjectMeta {
            types: None,
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                labels: Some(BTreeMap::from([
                    (LABEL_CA.to_string(), ca.to_string()),
                    (LABEL_STATUS.to_string(), status.to_string()),
                ])),
                ..Default::default()
            },
            _phantom: std::marker::PhantomData,
        }
    }

    fn with(
        mut r: PartialObjectMeta<IssuedCertificate>,
        labels: &[(&str, &str)],
    ) -> PartialObjectMeta<IssuedCertificate> {
        let l = r.metadata.labels.get_or_insert_default();
        for (k, v) in labels {
            l.insert((*k).to_string(), (*v).to_string());
        }
        r
    }

    const FP: &str = "ab00000000000000000000000000000000000000000000000000000000000001";

    #[test]
    fn candidates_only_grow_and_are_written_through() {
        let idx = RecordIndex::default();
        let fp = &FP[..63];
        assert_eq!(idx.revoked_of_key("ns", "a", FP), None, "not ready");
        idx.apply(&Event::Init);
        idx.apply(&Event::InitApply(with(
            rec("a-1", "a", "Revoked"),
            &[(LABEL_KEY_FINGERPRINT, fp)],
        )));
        idx.apply(&Event::InitApply(with(
            rec("a-2", "a", "Valid"),
            &[
                (LABEL_KEY_FINGERPRINT, fp),
                (LABEL_SUBSCRIBER_ID, "S1"),
                (LABEL_PROFILE, "Signature"),
            ],
        )));
        idx.apply(&Event::InitDone);
        assert_eq!(idx.revoked_of_key("ns", "a", FP).unwrap(), ["a-1"]);
        assert_eq!(
            idx.revoked_of_key("ns", "b", FP).unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(
            idx.revoked_of_key("other", "a", FP).unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(
            idx.of_subscriber("ns", "a", "S1", "Signature").unwrap(),
            ["a-2"]
        );
        assert!(
            idx.of_subscriber("ns", "a", "S1", "Encryption")
                .unwrap()
                .is_empty()
        );

        // This replica's own revocation, before the watch says anything.
        let mut written: IssuedCertificate = serde_json::from_value(serde_json::json!({
            "apiVersion": "chop.dev/v1alpha1", "kind": "IssuedCertificate",
            "metadata": {"name": "a-2", "namespace": "ns", "labels": {
                LABEL_CA: "a", LABEL_STATUS: "Revoked", LABEL_KEY_FINGERPRINT: fp,
                LABEL_SUBSCRIBER_ID: "S1", LABEL_PROFILE: "Signature"}},
            "spec": {"caRef": {"name": "a"}, "serialNumber": "0A", "subject": "CN=x",
                     "profile": "Signature", "notBefore": "2026-01-01T00:00:00Z",
                     "notAfter": "2027-01-01T00:00:00Z", "keyFingerprint": FP,
                     "certificate": ""}
        }))
        .unwrap();
        idx.observe(&written);
        assert_eq!(idx.revoked_of_key("ns", "a", FP).unwrap(), ["a-1", "a-2"]);
        // A late watch event (the record still Valid), a re-list that started
        // before the revocation, a deletion: nothing is forgotten.
        idx.apply(&Event::Apply(with(
            rec("a-2", "a", "Valid"),
            &[(LABEL_KEY_FINGERPRINT, fp)],
        )));
        idx.apply(&Event::Init);
        idx.apply(&Event::InitApply(rec("a-9", "a", "Valid")));
        idx.apply(&Event::InitDone);
        idx.apply(&Event::Delete(rec("a-1", "a", "Revoked")));
        assert_eq!(idx.revoked_of_key("ns", "a", FP).unwrap(), ["a-1", "a-2"]);
        assert_eq!(
            idx.of_subscriber("ns", "a", "S1", "Signature").unwrap(),
            ["a-2"]
        );
        // A new record of the subscriber, written through at its commit.
        written.metadata.name = Some("a-3".into());
        idx.observe(&written);
        assert_eq!(
            idx.of_subscriber("ns", "a", "S1", "Signature").unwrap(),
            ["a-2", "a-3"]
        );
    }

    #[test]
    fn counts_follow_lists_changes_and_deletions() {
        let idx = RecordIndex::default();
        assert_eq!(
            idx.counts("ns", "a"),
            None,
            "not ready before the first list"
        );
        idx.apply(&Event::Init);
        idx.apply(&Event::InitApply(rec("a-1", "a", "Valid")));
        idx.apply(&Event::InitApply(rec("a-2", "a", "Revoked")));
        idx.apply(&Event::InitApply(rec("b-1", "b", "Held")));
        assert_eq!(
            idx.counts("ns", "a"),
            None,
            "not ready during the first list"
        );
        idx.apply(&Event::InitDone);
        assert_eq!(
            idx.counts("ns", "a"),
            Some(Counts {
                issued: 2,
                revoked: 1,
                held: 0
            })
        );
        idx.apply(&Event::Apply(rec("a-1", "a", "Held")));
        idx.apply(&Event::Apply(rec("a-3", "a", "Valid")));
        assert_eq!(
            idx.counts("ns", "a"),
            Some(Counts {
                issued: 3,
                revoked: 1,
                held: 1
            })
        );
        idx.apply(&Event::Delete(rec("a-2", "a", "Revoked")));
        assert_eq!(
            idx.counts("ns", "a"),
            Some(Counts {
                issued: 2,
                revoked: 0,
                held: 1
            })
        );
        assert_eq!(idx.counts("other", "a"), Some(Counts::default()));
        // A re-list replaces everything at its end, and serves the old state meanwhile.
        idx.apply(&Event::Init);
        idx.apply(&Event::InitApply(rec("a-9", "a", "Valid")));
        assert_eq!(idx.counts("ns", "a").unwrap().issued, 2);
        idx.apply(&Event::InitDone);
        assert_eq!(
            idx.counts("ns", "a"),
            Some(Counts {
                issued: 1,
                revoked: 0,
                held: 0
            })
        );
        assert_eq!(idx.len(), 1);
    }
}
