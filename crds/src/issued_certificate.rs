//! `IssuedCertificate`: the CA's durable record of one certificate it signed
//! (ADR 0002).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::common::LocalObjectReference;

/// Label naming the issuing CertificateAuthority.
pub const LABEL_CA: &str = "chop.dev/ca";
/// Label holding (the first 63 characters of) the SHA-256 of the certificate's
/// SubjectPublicKeyInfo, so certificates sharing a key can be found (CPS §4.6.2).
pub const LABEL_KEY_FINGERPRINT: &str = "chop.dev/key-fingerprint";
/// Label holding the CA-assigned subscriber identifier.
pub const LABEL_SUBSCRIBER_ID: &str = "chop.dev/subscriber-id";
/// Label holding the profile the certificate was issued under (e.g.
/// `Signature`, `OCSPResponder`), so subscriber certificates can be listed
/// apart from the CA's own delegated responder certificates.
pub const LABEL_PROFILE: &str = "chop.dev/profile";
/// Label holding the name of the CertificateRequest the certificate was issued
/// for ([`request_label_value`]: the name cut to a label's 63 characters), so the
/// certificate is found by request name (`-l chop.dev/request=NAME`) after the
/// request was garbage-collected. `spec.requestRef` holds the whole name: a
/// reader of a cut name compares it.
pub const LABEL_REQUEST: &str = "chop.dev/request";

/// The [`LABEL_REQUEST`] value for request `name`: the name itself when it fits
/// a label value (63 characters), else its first 63 characters without trailing
/// `-` or `.` (several long names may share it; `spec.requestRef` tells them apart).
pub fn request_label_value(name: &str) -> String {
    let cut: String = name.chars().take(63).collect();
    cut.trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

/// Label mirroring the certificate's state (`status.state`): `Valid`, `Held` or
/// `Revoked`, for label selectors and metadata-only watches. Always written in
/// the same PATCH as `status.state`.
pub const LABEL_STATUS: &str = "chop.dev/status";

/// One certificate a CA signed: the CA's register entry. Named
/// `<ca>-<serial in lower-case hex>`, created by the controller right after signing
/// (its creation is the commit point of issuance) and owned by nobody, so deleting
/// the CertificateRequest keeps it. The spec never changes; revocation and
/// suspension change the state.
///
/// The state is `status.state`, and the CRD has no status subresource: the
/// state, the `chop.dev/status` label and the `chop.dev/revoked-by` /
/// `chop.dev/held-by` annotations change together in one PATCH of the object,
/// conditional on the resourceVersion the writer decided on, so no reader ever
/// sees them disagree. `status.state` is a selectable field
/// (`--field-selector status.state=Revoked`).
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "chop.dev",
    version = "v1alpha1",
    kind = "IssuedCertificate",
    namespaced,
    doc = "A certificate a CertificateAuthority signed: the CA's durable record of it.",
    status = "IssuedCertificateStatus",
    shortname = "issued",
    category = "chop",
    printcolumn(name = "CA", type_ = "string", json_path = ".spec.caRef.name"),
    printcolumn(name = "Serial", type_ = "string", json_path = ".spec.serialNumber"),
    // The label, not status.state: it is written in the same PATCH as the
    // state and is there from the commit on (a record never revoked or held
    // has no status.state, and would show a blank).
    printcolumn(name = "Status", type_ = "string", json_path = ".metadata.labels.chop\\.dev/status"),
    // The CA-assigned subscriber id, not the subject: the register is listed by
    // operators and auditors, and the subject's name is personal data (CPS §9.4).
    printcolumn(name = "Subscriber", type_ = "string", json_path = ".spec.subscriberId"),
    printcolumn(name = "Subject", type_ = "string", json_path = ".spec.subject", priority = 1),
    printcolumn(name = "NotAfter", type_ = "string", json_path = ".spec.notAfter"),
    selectable = ".status.state"
)]
#[x_kube(validation = Rule::new("self == oldSelf").message("an issued certificate's record is immutable"))]
#[serde(rename_all = "camelCase")]
pub struct IssuedCertificateSpec {
    /// The CertificateAuthority (same namespace) that signed the certificate.
    pub ca_ref: LocalObjectReference,
    /// The certificate's serial number (upper-case hex).
    #[schemars(regex(pattern = "^[0-9A-F]{1,40}$"))]
    pub serial_number: String,
    /// The subject distinguished name (RFC 4514 style, for display).
    pub subject: String,
    /// The profile the certificate was issued under.
    pub profile: String,
    /// Start of validity.
    pub not_before: Time,
    /// End of validity.
    pub not_after: Time,
    /// SHA-256 of the SubjectPublicKeyInfo (lower-case hex).
    pub key_fingerprint: String,
    /// The CA-assigned subscriber identifier (the subject's serialNumber), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscriber_id: Option<String>,
    /// The certificate (PEM).
    pub certificate: String,
    /// The CertificateRequest it was issued for (which may since have been deleted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_ref: Option<LocalObjectReference>,
    /// The CertificateRequest whose certificate this one renews, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewal_of: Option<LocalObjectReference>,
    /// The CRL partition the certificate was issued into (its cRLDistributionPoints
    /// names that partition's CRL), when the CA's CRLSchedule has `partitions`.
    /// Absent: the certificate names the CA's own distribution points and is listed
    /// on the full CRL only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1023))]
    pub crl_partition: Option<i32>,
}

/// The certificate's revocation state, written by the Revocation and Suspension
/// reconcilers (in the same PATCH as the `chop.dev/status` label).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuedCertificateStatus {
    /// `Valid`, `Held` or `Revoked`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// When the certificate was revoked or put on hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<Time>,
    /// RFC 5280 CRLReason name (e.g. `keyCompromise`, `certificateHold`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When the key is known or suspected to have been compromised (RFC 5280 §5.3.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalidity_date: Option<Time>,
}

/// A certificate's state in the register.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RecordState {
    /// Good (never revoked, or resumed).
    Valid,
    /// On hold (certificateHold); can be resumed.
    Held,
    /// Revoked; final.
    Revoked,
}

impl RecordState {
    /// The name in `status.state` and the `chop.dev/status` label.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordState::Valid => "Valid",
            RecordState::Held => "Held",
            RecordState::Revoked => "Revoked",
        }
    }

    /// Parse a `status.state` value; absent is `Valid` (a record is created
    /// without status: its creation is the issuance). Anything else is an error
    /// naming the value, never a guess.
    pub fn parse(state: Option<&str>) -> Result<Self, String> {
        match state {
            None | Some("Valid") => Ok(RecordState::Valid),
            Some("Held") => Ok(RecordState::Held),
            Some("Revoked") => Ok(RecordState::Revoked),
            Some(other) => Err(format!("{other:?} is not Valid, Held or Revoked")),
        }
    }
}

impl IssuedCertificate {
    /// The record's state: `status.state`, the one definition the CRL builder,
    /// the OCSP responder and the counters read (the `chop.dev/status` label is
    /// its mirror, written in the same PATCH, for selectors and metadata-only
    /// watches).
    pub fn state(&self) -> Result<RecordState, String> {
        RecordState::parse(self.status.as_ref().and_then(|s| s.state.as_deref()))
    }
}

/// The IssuedCertificate CRD as installed: [`IssuedCertificate::crd`] without
/// the status subresource, so the state, its label and annotations are written
/// in one PATCH of the main resource (a status subresource would split them
/// into two writes, and a concurrent writer could land in between).
pub fn crd()
-> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition {
    use kube::CustomResourceExt;
    let mut crd = IssuedCertificate::crd();
    for v in &mut crd.spec.versions {
        if let Some(sub) = v.subresources.as_mut() {
            sub.status = None;
            if sub.scale.is_none() {
                v.subresources = None;
            }
        }
    }
    crd
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn request_names_fit_a_label_value() {
        assert_eq!(request_label_value("alice-sig"), "alice-sig");
        let long = format!("{}-.{}", "a".repeat(61), "b".repeat(100));
        assert_eq!(request_label_value(&long), "a".repeat(61));
        assert!(request_label_value(&"c".repeat(253)).len() == 63);
    }

    #[test]
    fn states_parse_strictly_and_absent_is_valid() {
        assert_eq!(RecordState::parse(None), Ok(RecordState::Valid));
        for s in [RecordState::Valid, RecordState::Held, RecordState::Revoked] {
            assert_eq!(RecordState::parse(Some(s.as_str())), Ok(s));
        }
        assert!(RecordState::parse(Some("revoked")).is_err());
        assert!(RecordState::parse(Some("")).is_err());
    }

    #[test]
    fn the_installed_crd_has_no_status_subresource_and_selects_by_state() {
        let crd = crd();
        let v = &crd.spec.versions[0];
        assert!(v.subresources.is_none(), "{:?}", v.subresources);
        let fields = v.selectable_fields.as_ref().unwrap();
        assert_eq!(fields[0].json_path, ".status.state");
    }
}
