//! Building the records of chop's actions (event classes: docs/audit.md) and
//! reading who acted from what the API server stamped on the objects.
//!
//! Users: the requester is the `chop.dev/requested-by` annotation (written by
//! the chop-requested-by admission policy from the authenticated user); the
//! approver, denier and acceptor are the field managers that wrote the
//! decision (`Approved`/`Denied` condition, `spec.accepted`) as recorded in
//! `managedFields` (the API server's audit log names the authenticated user of
//! that write).

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
    let approver = if auto {
        Some("chop-controller")
    } else {
        condition_manager(meta, "Approved")
    };
    let mut ev = ev.user("requestedBy", requested_by(meta));
    if crate::conditions::is_true(conds, "Approved") {
        ev = ev.user("approvedBy", approver);
        if auto {
            ev = ev.detail("approval", "AutoApproved");
        }
    }
    if crate::conditions::is_true(conds, "Denied") {
        ev = ev.user("deniedBy", condition_manager(meta, "Denied"));
    }
    if cr.spec.accepted {
        ev = ev.user("acceptedBy", spec_manager(meta, "accepted"));
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
