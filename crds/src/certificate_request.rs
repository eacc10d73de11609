//! `CertificateRequest`: one certificate to issue.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::common::{Conditions, DistinguishedName, LocalObjectReference};

/// A request for one certificate from a CertificateAuthority in the same namespace.
///
/// The flow follows the CPS: the RA creates the request; an officer (or the CA's
/// auto-approval policy) sets the `Approved` condition; the applicant reviews the
/// subject and sets `accepted` (§4.4); only then is the certificate signed. The
/// signed certificate, its serial number and chain appear in `status`, and stay in
/// the CA's records even if this object is deleted.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "chop.dev",
    version = "v1alpha1",
    kind = "CertificateRequest",
    namespaced,
    doc = "A request for one certificate from a CertificateAuthority in the same namespace.",
    status = "CertificateRequestStatus",
    shortname = "chopcr",
    category = "chop",
    printcolumn(name = "CA", type_ = "string", json_path = ".spec.caRef.name"),
    printcolumn(name = "Profile", type_ = "string", json_path = ".spec.profile"),
    printcolumn(name = "Approved", type_ = "string", json_path = ".status.conditions[?(@.type==\"Approved\")].status"),
    printcolumn(name = "Accepted", type_ = "boolean", json_path = ".spec.accepted"),
    printcolumn(name = "Issued", type_ = "string", json_path = ".status.conditions[?(@.type==\"Issued\")].status"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Issued\")].reason"),
    printcolumn(name = "Serial", type_ = "string", json_path = ".status.serialNumber", priority = 1),
    printcolumn(name = "Expires", type_ = "string", json_path = ".status.notAfter"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("!has(oldSelf.status) || !has(oldSelf.status.certificate) || self.spec == oldSelf.spec").message("spec cannot change after the certificate was issued")
)]
#[x_kube(validation = Rule::new("has(self.renewalOf) ? !(has(self.csr) && has(self.publicKey)) : has(self.csr) != has(self.publicKey)").message("give exactly one of csr or publicKey (a renewal may give neither: it keeps the original's key)"))]
#[x_kube(validation = Rule::new("!has(self.email) || self.emailVerified").message("email can only be included when emailVerified is true (CPS §3.2.4)"))]
#[x_kube(validation = Rule::new("!has(self.renewalOf) || (!has(self.subscriber) && !has(self.subject) && !has(self.email))").message("a renewal copies the subject and e-mail address of the original certificate: leave subscriber, subject and email out"))]
#[x_kube(validation = Rule::new("has(self.renewalOf) || (self.profile in ['Signature', 'Encryption', 'MobileSignature']) == has(self.subscriber)").message("subscriber is required for Signature, Encryption and MobileSignature profiles, and only for them"))]
#[x_kube(validation = Rule::new("has(self.renewalOf) || (self.profile in ['OCSPResponder', 'SubordinateCA']) == has(self.subject)").message("subject is required for OCSPResponder and SubordinateCA profiles, and only for them"))]
#[serde(rename_all = "camelCase")]
pub struct CertificateRequestSpec {
    /// The CertificateAuthority (same namespace) asked to sign. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("caRef is immutable"))]
    pub ca_ref: LocalObjectReference,

    /// Which certificate to make. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("profile is immutable"))]
    pub profile: ProfileName,

    /// For subscriber profiles: who the certificate is for. The CA derives the
    /// subject C=TW, CN=<commonName>, serialNumber=<CA-assigned identifier>.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("subscriber is immutable"))]
    pub subscriber: Option<Subscriber>,

    /// For OCSPResponder and SubordinateCA profiles: the subject to certify.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("subject is immutable"))]
    pub subject: Option<DistinguishedName>,

    /// PKCS#10 certificate request (PEM). Its signature proves possession of the
    /// key; only the key is taken from it, never its subject or extensions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("csr is immutable"))]
    #[schemars(length(max = 65536))]
    pub csr: Option<String>,

    /// A bare SubjectPublicKeyInfo (PEM `PUBLIC KEY`) for keys generated on a card
    /// and attested by the RA (CPS §3.2.1). Allowed only when the CA's
    /// `profiles.allowAttestedPublicKeys` is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("publicKey is immutable"))]
    #[schemars(length(max = 16384))]
    pub public_key: Option<String>,

    /// E-mail address to include as an rfc822Name subjectAltName.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 254))]
    pub email: Option<String>,

    /// The RA verified control of `email` (CPS §3.2.4: nothing unverified in a certificate).
    #[serde(default)]
    pub email_verified: bool,

    /// This request renews the certificate of the named CertificateRequest (same
    /// CA, same profile): same subject (copied byte for byte) and key, a new serial,
    /// notAfter = the original's notAfter + `profiles.renewalExtension` (3 years),
    /// once, from 60 days before the original expires until 3 years after, never
    /// for a held or revoked certificate nor a mobile one (CPS §3.3.3, §4.6,
    /// §6.3.2.2). Leave `subscriber`, `subject` and `email` out; `csr` (proof of
    /// possession) or `publicKey` are optional and must carry the original's key.
    /// Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("renewalOf is immutable"))]
    pub renewal_of: Option<LocalObjectReference>,

    /// The applicant reviewed the subject and accepts the certificate (CPS §4.4).
    /// Issuance waits for it. Once true it stays true.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self || !oldSelf").message("acceptance cannot be withdrawn"))]
    pub accepted: bool,
}

/// Certificate profiles (CPS §6.1.7, §7.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum ProfileName {
    /// Subscriber signature certificate: digitalSignature, nonRepudiation; 5 years.
    Signature,
    /// Subscriber encryption certificate: keyEncipherment + dataEncipherment (RSA)
    /// or keyAgreement (EC); 5 years.
    Encryption,
    /// Mobile citizen certificate: signature usages, 1 year, not renewable.
    MobileSignature,
    /// Delegated OCSP responder: digitalSignature, OCSPSigning, ocsp-nocheck.
    #[serde(rename = "OCSPResponder")]
    OcspResponder,
    /// Subordinate CA: keyCertSign, cRLSign.
    #[serde(rename = "SubordinateCA")]
    SubordinateCa,
}

/// The subscriber a certificate is for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Subscriber {
    /// The RA's opaque reference for this person (never the national ID number,
    /// CPS §9.4). All requests with the same reference get the same CA-assigned
    /// identifier.
    #[schemars(length(min = 1, max = 128), regex(pattern = r"^[A-Za-z0-9._:-]+$"))]
    pub reference: String,
    /// The subscriber's name as it appears in the certificate (UTF-8, e.g. 王小明).
    #[schemars(length(min = 1, max = 64))]
    pub common_name: String,
}

/// What the controller decided and issued.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertificateRequestStatus {
    /// `Approved`, `Denied`, `Accepted`, `Issued`, `Failed`, `Lapsed`, each with a
    /// reason and message. `Approved`/`Denied` are set by officers (or auto-approval).
    /// A map keyed by `type`, so officers and the controller each own their own
    /// conditions under server-side apply.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Conditions,
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The serial number (upper-case hex), reserved before signing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<String>,
    /// The CA-assigned subscriber identifier written as the subject's serialNumber.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscriber_id: Option<String>,
    /// The issued certificate (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
    /// The issuing CA's chain up to the root (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<String>,
    /// Start of validity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<Time>,
    /// End of validity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<Time>,
    /// SHA-256 of the SubjectPublicKeyInfo (hex): certificates sharing it are
    /// revoked together (CPS §4.6.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_fingerprint: Option<String>,
    /// Current status of the certificate: `Valid`, `Held`, `Revoked` or `Expired`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_status: Option<String>,
    /// Who approved or denied the request, as the API server authenticated them:
    /// written by the admission policy `chop-decided-by` from the user of the
    /// status write that set `Approved` or `Denied` (the chop-controller's own
    /// service account for an auto-approval), whatever the client sent.
    /// Immutable afterwards (policy `chop-acted-by`); the audit trail's
    /// `approvedBy`/`deniedBy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
}
