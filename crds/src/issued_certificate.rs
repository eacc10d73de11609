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
/// Label holding the certificate's status: `Valid`, `Held` or `Revoked`.
pub const LABEL_STATUS: &str = "chop.dev/status";

/// One certificate a CA signed: the CA's register entry. Named
/// `<ca>-<serial in lower-case hex>`, created by the controller right after signing
/// (its creation is the commit point of issuance) and owned by nobody, so deleting
/// the CertificateRequest keeps it. The spec never changes; revocation and
/// suspension change the status and the `chop.dev/status` label.
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
    printcolumn(name = "Subject", type_ = "string", json_path = ".spec.subject"),
    printcolumn(name = "Status", type_ = "string", json_path = ".status.state"),
    printcolumn(name = "NotAfter", type_ = "string", json_path = ".spec.notAfter")
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
/// reconcilers.
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
