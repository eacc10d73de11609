//! The block list: a key once revoked for `keyCompromise` at a CA is never
//! certified again by that CA (CA/Browser Forum Baseline Requirements §6.1.1.3:
//! a CA rejects a request for a key it has been told is compromised; Boulder
//! keeps such keys in its `blockedKeys` table).
//!
//! The CA's register is the list: its `IssuedCertificate` records carry the key
//! fingerprint (SHA-256 of the SubjectPublicKeyInfo) in the label
//! `chop.dev/key-fingerprint` (first 63 hex characters, a label value's limit)
//! and in `spec.keyFingerprint` (all 64), and a revocation writes its reason in
//! `status.reason`. A Revocation marks every record of the key pair (CPS
//! §4.6.2, §6.3), so one revoked record for the key is enough.
//!
//! The check costs the same with 100 or 100,000 records (issue 12): the
//! register's index ([`crate::record_index`]) names the records of the CA
//! labelled Revoked for this key fingerprint, and each is read from the API
//! server by GET (a quorum read of one object), so what is decided on is the
//! record as it is now, never a cached copy. The index never misses a record
//! revoked before the check: this replica adds its own revocations to it
//! before it reports them, and the index's first list, which starts after
//! this replica became the leader, holds every earlier one (docs/register.md,
//! "The Kubernetes register at scale"). Until that first list completes, the
//! records are listed by label selector as before. A record whose
//! `chop.dev/status` label says Revoked but whose status does not yet is a
//! revocation being applied: its reason is not known yet, so the check fails
//! (and the request is retried) rather than guess.

use crds::IssuedCertificate;
use crds::issued_certificate::{LABEL_CA, LABEL_KEY_FINGERPRINT, LABEL_STATUS};
use kube::api::{Api, ListParams};

use crate::error::{Error, Result};
use crate::record_index::RecordIndex;
use crate::register::{self, REVOKED};

/// Condition and Event reason of a request refused for a compromised key.
pub const REASON: &str = "KeyCompromised";

/// The serial (upper-case hex) of a certificate of CA `ca` for the key with
/// SPKI fingerprint `fingerprint` (lower-case hex SHA-256) that was revoked for
/// `keyCompromise`, if any.
pub async fn compromised(
    client: &kube::Client,
    index: &RecordIndex,
    ns: &str,
    ca: &str,
    fingerprint: &str,
) -> Result<Option<String>> {
    let api: Api<IssuedCertificate> = Api::namespaced(client.clone(), ns);
    if let Some(names) = index.revoked_of_key(ns, ca, fingerprint) {
        tracing::debug!(
            revoked = names.len(),
            "block list: the register's index names the key's revoked records"
        );
        let mut records = Vec::with_capacity(names.len());
        for name in names {
            if let Some(r) = api
                .get_opt(&name)
                .await
                .map_err(Error::kube("get IssuedCertificate"))?
            {
                records.push(r);
            }
        }
        return compromised_in(&records, ca, fingerprint);
    }
    tracing::debug!("block list: the register's index is not ready, listing the key's records");
    let label: String = fingerprint.chars().take(63).collect();
    let records = api
        .list(
            &ListParams::default()
                .labels(&format!("{LABEL_CA}={ca},{LABEL_KEY_FINGERPRINT}={label}")),
        )
        .await
        .map_err(Error::kube("list IssuedCertificates"))?
        .items;
    compromised_in(&records, ca, fingerprint)
}

/// [`compromised`] over records already listed (pure).
pub fn compromised_in(
    records: &[IssuedCertificate],
    ca: &str,
    fingerprint: &str,
) -> Result<Option<String>> {
    let mut found: Option<&str> = None;
    for r in records
        .iter()
        .filter(|r| r.spec.ca_ref.name == ca && r.spec.key_fingerprint == fingerprint)
    {
        let status = r.status.as_ref();
        let state = status.and_then(|s| s.state.as_deref());
        let reason = status.and_then(|s| s.reason.as_deref());
        if state == Some(REVOKED) {
            if reason == Some(KEY_COMPROMISE) {
                let serial = r.spec.serial_number.as_str();
                found = Some(found.map_or(serial, |f| f.min(serial)));
            }
        } else if register::label(r, LABEL_STATUS) == Some(REVOKED) {
            return Err(Error::Invalid {
                object: format!("IssuedCertificate/{ns}/{name}", ns = r.metadata.namespace.as_deref().unwrap_or_default(), name = r.metadata.name.as_deref().unwrap_or_default()),
                message: "a revocation of this key is being applied; the key's block-list check waits for it".into(),
            });
        }
    }
    Ok(found.map(str::to_string))
}

/// The refusal's message, naming the revoked certificate.
pub fn message(ca: &str, serial: &str) -> String {
    format!(
        "the key of this request was reported compromised: CertificateAuthority {ca:?} revoked its certificate {serial} for keyCompromise and never certifies this key again (BR §6.1.1.3); generate a new key pair"
    )
}

const KEY_COMPROMISE: &str = ca::revocation::Reason::KeyCompromise.name();

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    const FP: &str = "aa00000000000000000000000000000000000000000000000000000000000001";

    fn rec(
        serial: &str,
        ca: &str,
        fp: &str,
        label: &str,
        state: Option<(&str, &str)>,
    ) -> IssuedCertificate {
        let mut v = json!({
            "apiVersion": "chop.dev/v1alpha1", "kind": "IssuedCertificate",
            "metadata": {"name": format!("{ca}-{serial}"), "namespace": "ns",
                         "labels": {LABEL_STATUS: label}},
            "spec": {"caRef": {"name": ca}, "serialNumber": serial, "subject": "CN=x",
                     "profile": "Signature", "notBefore": "2026-01-01T00:00:00Z",
                     "notAfter": "2027-01-01T00:00:00Z", "keyFingerprint": fp,
                     "certificate": ""}
        });
        if let Some((state, reason)) = state {
            v["status"] = json!({"state": state, "reason": reason});
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn only_a_key_compromise_at_this_ca_for_this_exact_key_blocks() {
        let other_fp = format!("{}2", &FP[..63]);
        let records = [
            rec("0B", "root", FP, "Valid", None),
            rec("0C", "root", FP, "Revoked", Some(("Revoked", "superseded"))),
            rec("0D", "root", FP, "Held", Some(("Held", "certificateHold"))),
            rec(
                "0E",
                "other",
                FP,
                "Revoked",
                Some(("Revoked", "keyCompromise")),
            ),
            rec(
                "0F",
                "root",
                &other_fp,
                "Revoked",
                Some(("Revoked", "keyCompromise")),
            ),
        ];
        assert_eq!(compromised_in(&records, "root", FP).unwrap(), None);
        let mut more = records.to_vec();
        more.push(rec(
            "1A",
            "root",
            FP,
            "Revoked",
            Some(("Revoked", "keyCompromise")),
        ));
        more.push(rec(
            "0A",
            "root",
            FP,
            "Revoked",
            Some(("Revoked", "keyCompromise")),
        ));
        assert_eq!(
            compromised_in(&more, "root", FP).unwrap().as_deref(),
            Some("0A")
        );
    }

    #[test]
    fn a_revocation_being_applied_is_waited_for() {
        let records = [rec("0B", "root", FP, "Revoked", None)];
        let err = compromised_in(&records, "root", FP).unwrap_err();
        assert!(err.to_string().contains("being applied"), "{err}");
    }
}
