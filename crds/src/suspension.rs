//! `Suspension`: put a certificate on hold until resumed.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::common::{Conditions, LocalObjectReference};

/// Puts a certificate on hold (CRL reason certificateHold, OCSP revoked with
/// certificateHold) until `resumed` is set or this object is deleted (CPS
/// §4.9.13–§4.9.17). A hold ends by itself when the certificate expires; a
/// Revocation of the same certificate supersedes it.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "chop.dev",
    version = "v1alpha1",
    kind = "Suspension",
    namespaced,
    doc = "Puts a certificate on hold (certificateHold) until resumed.",
    status = "SuspensionStatus",
    shortname = "susp",
    category = "chop",
    printcolumn(name = "CA", type_ = "string", json_path = ".spec.caRef.name"),
    printcolumn(
        name = "Request",
        type_ = "string",
        json_path = ".spec.certificateRequestRef.name"
    ),
    printcolumn(name = "Serial", type_ = "string", json_path = ".spec.serialNumber"),
    printcolumn(name = "Resumed", type_ = "boolean", json_path = ".spec.resumed"),
    printcolumn(name = "State", type_ = "string", json_path = ".status.state"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("has(self.certificateRequestRef) != has(self.serialNumber)").message("give exactly one of certificateRequestRef or serialNumber"))]
#[serde(rename_all = "camelCase")]
pub struct SuspensionSpec {
    /// The CertificateAuthority (same namespace) that issued the certificate. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("caRef is immutable"))]
    pub ca_ref: LocalObjectReference,
    /// The CertificateRequest whose certificate is held. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("certificateRequestRef is immutable"))]
    pub certificate_request_ref: Option<LocalObjectReference>,
    /// Or the certificate's serial number (hex). Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^[0-9A-Fa-f]{1,40}$"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("serialNumber is immutable"))]
    pub serial_number: Option<String>,
    /// Who asked for the hold (CPS §4.9.14).
    pub requester: SuspensionRequester,
    /// Set to true to make the certificate valid again (CPS §4.9.17). Once true it stays true.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self || !oldSelf").message("a resumed suspension cannot be re-applied; create a new Suspension"))]
    pub resumed: bool,
}

/// Who may ask for a hold (CPS §4.9.14).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum SuspensionRequester {
    /// The subscriber.
    Subscriber,
    /// A judicial authority acting on an official document.
    JudicialAuthority,
    /// The registration authority.
    RegistrationAuthority,
    /// The CA itself.
    CertificationAuthority,
}

/// Where the hold stands.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SuspensionStatus {
    /// `Held`, `Resumed`, `Superseded` or `Failed`, with reasons.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Conditions,
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Held`, `Resumed`, `Superseded` (revoked meanwhile) or `Expired`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// The serial number held (upper-case hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<String>,
    /// When the hold took effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_at: Option<Time>,
    /// When the certificate was resumed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed_at: Option<Time>,
}
