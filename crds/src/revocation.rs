//! `Revocation`: revoke one certificate, and every certificate sharing its key.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::common::{Conditions, LocalObjectReference};

/// Revokes a certificate, and every other certificate of the same CA with the same
/// key pair (CPS §4.6.2, §6.3). A revocation is permanent: the spec is immutable
/// and deleting this object does not un-revoke; the CA keeps the record.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "chop.dev",
    version = "v1alpha1",
    kind = "Revocation",
    namespaced,
    doc = "Revokes a certificate and every certificate of the same CA that shares its key.",
    status = "RevocationStatus",
    shortname = "rev",
    category = "chop",
    printcolumn(name = "CA", type_ = "string", json_path = ".spec.caRef.name"),
    printcolumn(name = "Request", type_ = "string", json_path = ".spec.certificateRequestRef.name"),
    printcolumn(name = "Serial", type_ = "string", json_path = ".spec.serialNumber"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".spec.reason"),
    printcolumn(name = "Applied", type_ = "string", json_path = ".status.conditions[?(@.type==\"Applied\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("!has(oldSelf.spec) || self.spec == oldSelf.spec").message("a revocation cannot be changed or undone")
)]
#[x_kube(validation = Rule::new("has(self.certificateRequestRef) != has(self.serialNumber)").message("give exactly one of certificateRequestRef or serialNumber"))]
#[serde(rename_all = "camelCase")]
pub struct RevocationSpec {
    /// The CertificateAuthority (same namespace) that issued the certificate.
    pub ca_ref: LocalObjectReference,
    /// The CertificateRequest whose certificate is revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_request_ref: Option<LocalObjectReference>,
    /// Or the certificate's serial number, upper- or lower-case hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^[0-9A-Fa-f]{1,40}$"))]
    pub serial_number: Option<String>,
    /// RFC 5280 §5.3.1 CRLReason. certificateHold is not a revocation: use a Suspension.
    pub reason: RevocationReason,
    /// When the key is known or suspected to have been compromised (RFC 5280 §5.3.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalidity_date: Option<Time>,
    /// Who asked for the revocation (CPS §4.9.2; `CertificationAuthority` for the
    /// CA-initiated cases of §4.9.1).
    pub requester: RevocationRequester,
    /// Free-text note for the audit record. Do not put personal data here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub comment: Option<String>,
}

/// RFC 5280 §5.3.1 reasons a revocation may carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum RevocationReason {
    /// No reason given (the CRL entry then carries no reasonCode).
    Unspecified,
    /// The subscriber's private key is known or suspected compromised.
    KeyCompromise,
    /// The CA's key is compromised.
    #[serde(rename = "cACompromise")]
    CaCompromise,
    /// The subject's name or other information changed.
    AffiliationChanged,
    /// The certificate has been replaced (e.g. re-key).
    Superseded,
    /// The certificate is no longer needed.
    CessationOfOperation,
    /// A privilege in the certificate was withdrawn.
    PrivilegeWithdrawn,
    /// An attribute authority was compromised.
    #[serde(rename = "aACompromise")]
    AaCompromise,
}

/// Revocation requesters recognised by CPS §4.9.2, plus the CA itself (§4.9.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum RevocationRequester {
    /// The subscriber of the certificate.
    Subscriber,
    /// A judicial authority acting on an official document.
    JudicialAuthority,
    /// The National Immigration Agency.
    ImmigrationAgency,
    /// A household registration office.
    HouseholdRegistrationOffice,
    /// The registration authority.
    RegistrationAuthority,
    /// The CA itself, in the cases listed in CPS §4.9.1.
    CertificationAuthority,
}

/// The outcome of the revocation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevocationStatus {
    /// `Applied` (True once recorded by the CA) or `Failed` with the reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Conditions,
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When the CA recorded the revocation (the CRL's and OCSP's revocationTime).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<Time>,
    /// Every serial number revoked by this object (the named one and all that share its key).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub serial_numbers: Vec<String>,
    /// The serial numbers this object revoked (they carry its time and reason).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub newly_revoked: Vec<String>,
    /// The serial numbers that were already revoked: the earliest revocation
    /// stands, with its own time and reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub already_revoked: Vec<String>,
}
