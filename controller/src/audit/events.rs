//! Building the records of chop's actions (event classes: docs/audit.md) and
//! reading who acted from what the API server stamped on the objects.
//!
//! Users: each is what the API server stamped from the authenticated user of
//! the write that acted (admission policies in
//! manifests/policies/no-self-approval.yaml): the requester (and who revoked
//! or held) is the `chop.dev/requested-by` annotation, the approver or denier
//! `status.decidedBy`, the acceptor `chop.dev/accepted-by`, who resumed
//! `chop.dev/resumed-by`. A field manager (`managedFields`) is a name the
//! client chooses: where a stamp is missing (a cluster without the policies,
//! an object decided before them) it is recorded under a role of its own,
//! `<role>FieldManager`, never as the user.

use crds::CertificateRequest;
use der::Encode;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};

use super::AuditEvent;
use super::key::sha256_hex;

/// The fingerprint (hex SHA-256 of the DER SubjectPublicKeyInfo) of the key
/// certified by `cert`: the HSM key a CA signs with.
pub fn key_fingerprint(cert: &x509_cert::Certificate) -> String {
    cert.tbs_certificate
        .subject_public_key_info
        .to_der()
        .map(|d| sha256_hex(&d))
        .unwrap_or_default()
}

/// The `chop.dev/requested-by` annotation.
pub fn requested_by(meta: &ObjectMeta) -> Option<&str> {
    meta.annotations
        .as_ref()?
        .get(crate::reconcilers::certificate_request::ANNOTATION_REQUESTED_BY)
        .map(String::as_str)
}

/// The annotation `chop.dev/accepted-by` (policy chop-accepted-by).
pub const ANNOTATION_ACCEPTED_BY: &str = "chop.dev/accepted-by";
/// The annotation `chop.dev/resumed-by` (policy chop-resumed-by).
pub const ANNOTATION_RESUMED_BY: &str = "chop.dev/resumed-by";

/// The annotation `key`.
pub fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

/// Who acted as `role`: the API server's stamp `stamped` when present, else
/// the field manager `manager` under the role `<role>FieldManager`, so that a
/// name the client chose is never taken for an authenticated user.
pub fn acted_by(
    ev: AuditEvent,
    role: &str,
    stamped: Option<&str>,
    manager: impl FnOnce() -> Option<String>,
) -> AuditEvent {
    match stamped.filter(|s| !s.is_empty()) {
        Some(user) => ev.user(role, Some(user)),
        None => ev.user(&format!("{role}FieldManager"), manager().as_deref()),
    }
}

/// The annotation `chop.dev/changed-by` (policy chop-changed-by): who last
/// changed a CertificateAuthority's or CRLSchedule's spec.
pub const ANNOTATION_CHANGED_BY: &str = "chop.dev/changed-by";

/// `changedBy` of a configuration change: the `chop.dev/changed-by` stamp,
/// else the last spec writer's field manager as `changedByFieldManager`.
pub fn changed_by(ev: AuditEvent, meta: &ObjectMeta) -> AuditEvent {
    acted_by(
        ev,
        "changedBy",
        annotation(meta, ANNOTATION_CHANGED_BY),
        || last_spec_manager(meta).map(str::to_owned),
    )
}

/// The field manager that owns the status condition of `type_`.
pub fn condition_manager<'a>(meta: &'a ObjectMeta, type_: &str) -> Option<&'a str> {
    let key = format!("k:{{\"type\":\"{type_}\"}}");
    manager_of(meta, Some("status"), |f| {
        f.get("f:status")
            .and_then(|s| s.get("f:conditions"))
            .and_then(|c| c.get(&key))
            .is_some()
    })
}

/// The field manager that owns `spec.<field>`.
pub fn spec_manager<'a>(meta: &'a ObjectMeta, field: &str) -> Option<&'a str> {
    let key = format!("f:{field}");
    manager_of(meta, None, |f| {
        f.get("f:spec").and_then(|s| s.get(&key)).is_some()
    })
}

/// The field manager of the object's last spec write (by time of the
/// managedFields entry).
pub fn last_spec_manager(meta: &ObjectMeta) -> Option<&str> {
    meta.managed_fields
        .as_ref()?
        .iter()
        .filter(|m| m.subresource.as_deref().unwrap_or_default().is_empty())
        .filter(|m| {
            m.fields_v1
                .as_ref()
                .is_some_and(|f| f.0.get("f:spec").is_some())
        })
        .max_by_key(|m| m.time.as_ref().map(|t| t.0))
        .and_then(|m| m.manager.as_deref())
}

fn manager_of<'a>(
    meta: &'a ObjectMeta,
    subresource: Option<&str>,
    owns: impl Fn(&serde_json::Value) -> bool,
) -> Option<&'a str> {
    meta.managed_fields
        .as_ref()?
        .iter()
        .filter(|m| m.subresource.as_deref().filter(|s| !s.is_empty()) == subresource)
        .filter(|m| m.fields_v1.as_ref().is_some_and(|f| owns(&f.0)))
        .filter_map(|m| m.manager.as_deref())
        .next_back()
}

/// The users of a request: requester, approver (or auto-approval), acceptor.
pub fn request_users(ev: AuditEvent, cr: &CertificateRequest) -> AuditEvent {
    let meta = cr.meta();
    let conds = cr
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let auto = crate::conditions::find(conds, "Approved")
        .is_some_and(|c| c.reason == crate::reconcilers::certificate_request::AUTO_APPROVED);
    let decided_by = cr.status.as_ref().and_then(|s| s.decided_by.as_deref());
    let mut ev = ev.user("requestedBy", requested_by(meta));
    if crate::conditions::is_true(conds, "Approved") {
        ev = if auto && decided_by.is_none() {
            // The controller's own approval, recorded before its write (which
            // chop-decided-by stamps with the controller's service account).
            ev.user("approvedBy", Some("chop-controller"))
        } else {
            acted_by(ev, "approvedBy", decided_by, || {
                condition_manager(meta, "Approved").map(str::to_owned)
            })
        };
        if auto {
            ev = ev.detail("approval", "AutoApproved");
        }
    }
    if crate::conditions::is_true(conds, "Denied") {
        ev = acted_by(ev, "deniedBy", decided_by, || {
            condition_manager(meta, "Denied").map(str::to_owned)
        });
    }
    if cr.spec.accepted {
        ev = acted_by(
            ev,
            "acceptedBy",
            annotation(meta, ANNOTATION_ACCEPTED_BY),
            || spec_manager(meta, "accepted").map(str::to_owned),
        );
    }
    ev
}

/// `certificate.issue`: intent, before the HSM signs serial `serial` for `cr`.
pub fn certificate_issue(
    cr: &CertificateRequest,
    ca_fingerprint: &str,
    serial: &str,
    profile: &str,
) -> AuditEvent {
    let ns = cr.namespace().unwrap_or_default();
    let ev = AuditEvent::new("certificate.issue", "intent")
        .object(cr)
        .ca(&ns, &cr.spec.ca_ref.name)
        .serial(serial)
        .key_use(ca_fingerprint, "certificate")
        .detail("profile", profile)
        .dedup(format!(
            "certificate.issue/{}/{serial}",
            cr.uid().unwrap_or_default()
        ));
    let ev = match cr.spec.subscriber.as_ref() {
        Some(s) => ev.detail("subscriberReference", s.reference.clone()),
        None => ev,
    };
    request_users(ev, cr)
}

/// An observed event about `obj`, deduplicated by event, uid and `version`
/// (resourceVersion or generation).
pub fn observed<K: Resource<DynamicType = ()>>(event: &str, obj: &K, version: &str) -> AuditEvent {
    AuditEvent::new(event, "observed")
        .object(obj)
        .dedup(format!(
            "{event}/{}/{version}",
            obj.uid().unwrap_or_default()
        ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    /// A decided, accepted request whose managedFields name `manager` for the
    /// decision and the acceptance, with the API server's stamps in
    /// `annotations` and `decided_by`.
    fn request(
        decision: &str,
        manager: &str,
        annotations: serde_json::Value,
        decided_by: Option<&str>,
    ) -> CertificateRequest {
        let mut status = json!({"conditions": [{"type": decision, "status": "True",
            "reason": "Officer", "message": "", "lastTransitionTime": "2026-12-03T00:00:00Z"}]});
        if let Some(d) = decided_by {
            status["decidedBy"] = json!(d);
        }
        serde_json::from_value(json!({
            "apiVersion": "chop.dev/v1alpha1", "kind": "CertificateRequest",
            "metadata": {"name": "r", "namespace": "ns", "annotations": annotations,
                "managedFields": [
                    {"manager": manager, "operation": "Update", "apiVersion": "chop.dev/v1alpha1",
                     "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:accepted": {}}}},
                    {"manager": manager, "operation": "Apply", "apiVersion": "chop.dev/v1alpha1",
                     "subresource": "status", "fieldsType": "FieldsV1",
                     "fieldsV1": {"f:status": {"f:conditions": {
                         format!("k:{{\"type\":\"{decision}\"}}"): {}}}}}]},
            "spec": {"caRef": {"name": "root"}, "profile": "Signature", "csr": "x",
                     "subscriber": {"reference": "r", "commonName": "Wang"}, "accepted": true},
            "status": status
        }))
        .unwrap()
    }

    fn users(ev: &AuditEvent) -> Vec<(&str, &str)> {
        ev.record
            .users
            .iter()
            .map(|u| (u.role.as_str(), u.user.as_str()))
            .collect()
    }

    #[test]
    fn the_stamps_name_who_acted_never_the_field_manager() {
        let cr = request(
            "Approved",
            "officer-2",
            json!({"chop.dev/requested-by": "ra", "chop.dev/accepted-by": "ra"}),
            Some("officer-1"),
        );
        let ev = request_users(AuditEvent::new("request.approved", "observed"), &cr);
        assert_eq!(
            users(&ev),
            [
                ("requestedBy", "ra"),
                ("approvedBy", "officer-1"),
                ("acceptedBy", "ra")
            ]
        );
        let cr = request("Denied", "officer-2", json!({}), Some("officer-1"));
        let ev = request_users(AuditEvent::new("request.denied", "observed"), &cr);
        assert!(users(&ev).contains(&("deniedBy", "officer-1")));
    }

    #[test]
    fn without_a_stamp_the_field_manager_is_recorded_under_its_own_role() {
        for decision in ["Approved", "Denied"] {
            let cr = request(decision, "officer-2", json!({}), None);
            let ev = request_users(AuditEvent::new("request.created", "observed"), &cr);
            let role = if decision == "Approved" {
                "approvedBy"
            } else {
                "deniedBy"
            };
            let found = users(&ev);
            assert!(
                found.contains(&(format!("{role}FieldManager").as_str(), "officer-2")),
                "{found:?}"
            );
            assert!(found.contains(&("acceptedByFieldManager", "officer-2")));
            assert!(
                !found.iter().any(|(r, _)| *r == role || *r == "acceptedBy"),
                "{found:?}"
            );
        }
    }

    #[test]
    fn configuration_changes_name_the_stamped_user() {
        let meta: ObjectMeta = serde_json::from_value(json!({
            "name": "moica",
            "annotations": {"chop.dev/changed-by": "admin-amy"},
            "managedFields": [{"manager": "admin-bob", "operation": "Apply",
                               "time": "2026-12-03T10:00:00Z",
                               "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:validity": {}}}}]
        }))
        .unwrap();
        let ev = changed_by(AuditEvent::new("ca.changed", "observed"), &meta);
        assert_eq!(users(&ev), [("changedBy", "admin-amy")]);
        let mut unstamped = meta.clone();
        unstamped.annotations = None;
        let ev = changed_by(AuditEvent::new("ca.changed", "observed"), &unstamped);
        assert_eq!(users(&ev), [("changedByFieldManager", "admin-bob")]);
    }
}
