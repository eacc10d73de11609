//! What approvers approve (the spec hash) and whether they are enough (the
//! quorum). Pure functions: the reconciler calls them on the object as it is
//! now, just before each step, so a decision read from the object is re-checked
//! where it is acted on.
//!
//! The API server (manifests/policies/key-ceremony.yaml) already refuses an
//! approval in another's name, for a role its sender does not hold, by the
//! ceremony's creator, twice, or naming a hash other than the published one.
//! The controller counts again anyway, trusting only what it can check here:
//! the hash is the one of the spec it is about to act on, the approver is not
//! the creator, each person counts once, and only in a role the quorum needs.

use crds::certificate_authority::RoleCounts;
use crds::key_ceremony::{ApprovalRecord, CeremonyApproval, KeyCeremonySpec, TrustedRole};
use crds::{CertificateAuthority, KeyCeremony};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

/// Annotation naming the ceremony's creator (stamped by the API server).
pub const REQUESTED_BY: &str = "chop.dev/requested-by";

/// SHA-256 (hex) of what approvers approve: the ceremony spec without approvals
/// and shares, and the parts of the CertificateAuthority the ceremony acts on
/// (uid, key location, name, type, validity, policies, quorum). A change to
/// any of them after an approval voids that approval.
pub fn spec_hash(spec: &KeyCeremonySpec, ca: &CertificateAuthority) -> String {
    let mut bare = spec.clone();
    bare.approvals.clear();
    bare.shares.clear();
    let doc = serde_json::json!({
        "ceremony": bare,
        "certificateAuthority": {
            "uid": ca.uid(),
            "name": ca.name_any(),
            "hsm": ca.spec.hsm,
            "subject": ca.spec.subject,
            "type": ca.spec.ca_type,
            "validity": ca.spec.validity,
            "policyOIDs": ca.spec.policy_oids,
            "ceremonyQuorum": ca.spec.ceremony_quorum,
        },
    });
    // serde_json's map is ordered by key: the same input always hashes the same.
    let bytes = serde_json::to_vec(&doc).unwrap_or_default();
    sha256_hex(&bytes)
}

/// Lower-case hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    crate::subscribers::hex_lower(
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data).as_ref(),
    )
}

/// The quorum a ceremony of `kc`'s operation needs under `ca`.
pub fn required(kc: &KeyCeremony, ca: &CertificateAuthority) -> RoleCounts {
    if kc.spec.operation.is_activation() {
        ca.spec.ceremony_quorum.activation.clone()
    } else {
        ca.spec.ceremony_quorum.key_management.clone()
    }
}

fn need(required: &RoleCounts, role: TrustedRole) -> usize {
    let n = match role {
        TrustedRole::Administrator => required.administrators,
        TrustedRole::Officer => required.officers,
        TrustedRole::Auditor => required.auditors,
        TrustedRole::Controller => required.controllers,
    };
    usize::try_from(n).unwrap_or(0)
}

/// `2 Administrator + 1 Auditor + 1 Controller`.
pub fn describe(required: &RoleCounts) -> String {
    TrustedRole::ALL
        .iter()
        .filter(|r| need(required, **r) > 0)
        .map(|r| format!("{} {}", need(required, *r), r.as_str()))
        .collect::<Vec<_>>()
        .join(" + ")
}

/// The quorum as judged now.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// Every role has its count of distinct, valid approvals.
    pub met: bool,
    /// Valid approvals counted (at most the required total).
    pub counted: usize,
    /// Approvals required in all.
    pub needed: usize,
    /// What is still missing, e.g. `1 Auditor, 1 Controller`.
    pub missing: String,
    /// Every approval with whether it counts and why not.
    pub records: Vec<ApprovalRecord>,
}

/// Count `approvals` against `required` for the spec hashing to `hash`.
/// `creator`: the ceremony's creator (`None`: unknown, then nothing counts: no
/// one could tell a self-approval). `previous`: the last judged records, whose
/// `seenAt` is kept; new approvals are seen at `now`.
pub fn evaluate(
    approvals: &[CeremonyApproval],
    hash: &str,
    creator: Option<&str>,
    required: &RoleCounts,
    previous: &[ApprovalRecord],
    now: &Time,
) -> Evaluation {
    let mut counted_users: Vec<&str> = Vec::new();
    let mut per_role = [0usize; 4];
    let mut records = Vec::with_capacity(approvals.len());
    for a in approvals {
        let idx = TrustedRole::ALL
            .iter()
            .position(|r| *r == a.role)
            .unwrap_or(0);
        let note = if creator.is_none() {
            Some("CreatorUnknown: the ceremony has no chop.dev/requested-by annotation")
        } else if a.spec_hash != hash {
            Some("SpecChanged: approves an earlier spec; approve the current status.specHash")
        } else if creator == Some(a.user.as_str()) {
            Some("SelfApproval: the creator may not approve their own ceremony (CPS §5.2.4)")
        } else if counted_users.contains(&a.user.as_str()) {
            Some("Duplicate: this person already counts")
        } else if per_role[idx] >= need(required, a.role) {
            Some("NotRequired: the quorum needs no more approvals in this role")
        } else {
            None
        };
        if note.is_none() {
            counted_users.push(&a.user);
            per_role[idx] += 1;
        }
        let seen_at = previous
            .iter()
            .find(|p| p.user == a.user && p.role == a.role.as_str())
            .and_then(|p| p.seen_at.clone())
            .unwrap_or_else(|| now.clone());
        records.push(ApprovalRecord {
            user: a.user.clone(),
            role: a.role.as_str().to_string(),
            counted: note.is_none(),
            note: note.map(str::to_string),
            reason: a.reason.clone(),
            seen_at: Some(seen_at),
        });
    }
    let needed: usize = TrustedRole::ALL.iter().map(|r| need(required, *r)).sum();
    let counted: usize = per_role.iter().sum();
    let missing = TrustedRole::ALL
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let short = need(required, *r).saturating_sub(per_role[i]);
            (short > 0).then(|| format!("{short} {}", r.as_str()))
        })
        .collect::<Vec<_>>()
        .join(", ");
    Evaluation {
        met: missing.is_empty() && needed > 0,
        counted,
        needed,
        missing,
        records,
    }
}

/// The ceremony's creator as the API server recorded it.
pub fn creator(kc: &KeyCeremony) -> Option<&str> {
    kc.annotations().get(REQUESTED_BY).map(String::as_str)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn approval(user: &str, role: TrustedRole, hash: &str) -> CeremonyApproval {
        CeremonyApproval {
            user: user.into(),
            role,
            spec_hash: hash.into(),
            reason: None,
        }
    }

    fn now() -> Time {
        crate::conditions::now()
    }

    #[test]
    fn the_cps_quorum_needs_four_distinct_people() {
        let req = RoleCounts::key_management();
        let h = "a".repeat(64);
        let mut list = vec![
            approval("admin1", TrustedRole::Administrator, &h),
            approval("admin2", TrustedRole::Administrator, &h),
            approval("aud", TrustedRole::Auditor, &h),
        ];
        let e = evaluate(&list, &h, Some("creator"), &req, &[], &now());
        assert!(!e.met);
        assert_eq!((e.counted, e.needed), (3, 4));
        assert_eq!(e.missing, "1 Controller");
        list.push(approval("ctl", TrustedRole::Controller, &h));
        let e = evaluate(&list, &h, Some("creator"), &req, &[], &now());
        assert!(e.met, "{e:?}");
        assert_eq!(describe(&req), "2 Administrator + 1 Auditor + 1 Controller");
    }

    #[test]
    fn stale_self_duplicate_and_surplus_approvals_do_not_count() {
        let req = RoleCounts::key_management();
        let h = "b".repeat(64);
        let old = "c".repeat(64);
        let list = vec![
            approval("admin1", TrustedRole::Administrator, &old),
            approval("creator", TrustedRole::Administrator, &h),
            approval("admin2", TrustedRole::Administrator, &h),
            approval("admin2", TrustedRole::Auditor, &h),
            approval("admin3", TrustedRole::Administrator, &h),
            approval("admin4", TrustedRole::Administrator, &h),
            approval("off", TrustedRole::Officer, &h),
        ];
        let e = evaluate(&list, &h, Some("creator"), &req, &[], &now());
        let notes: Vec<_> = e
            .records
            .iter()
            .map(|r| {
                r.note
                    .as_deref()
                    .unwrap_or("counted")
                    .split(':')
                    .next()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(
            notes,
            [
                "SpecChanged",
                "SelfApproval",
                "counted",
                "Duplicate",
                "counted",
                "NotRequired",
                "NotRequired"
            ]
        );
        assert!(!e.met);
        assert_eq!(e.missing, "1 Auditor, 1 Controller");
    }

    #[test]
    fn without_a_recorded_creator_nothing_counts() {
        let req = RoleCounts::activation();
        let h = "d".repeat(64);
        let list = vec![
            approval("o1", TrustedRole::Officer, &h),
            approval("o2", TrustedRole::Officer, &h),
            approval("c", TrustedRole::Controller, &h),
        ];
        assert!(evaluate(&list, &h, Some("x"), &req, &[], &now()).met);
        assert!(!evaluate(&list, &h, None, &req, &[], &now()).met);
    }
}
