//! `CertificateAuthority`: one CA, its HSM key, its certificate and its policy.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::common::{
    Conditions, DistinguishedName, KeySpec, LocalObjectReference, SecretKeySelector,
};

/// A certification authority whose private key lives in a PKCS#11 token.
///
/// A root CA signs its own certificate with its HSM key. A subordinate CA publishes
/// a PKCS#10 request in `status.csr`; its certificate comes from a parent
/// CertificateAuthority in the same namespace (`parentRef`) or is supplied back in
/// `certificate`. The CA owns the chop-responder Deployment and Service that serve
/// its OCSP answers and repository.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "chop.dev",
    version = "v1alpha1",
    kind = "CertificateAuthority",
    namespaced,
    doc = "A certification authority whose private key lives in a PKCS#11 token.",
    status = "CertificateAuthorityStatus",
    shortname = "chopca",
    category = "chop",
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Issuance", type_ = "string", json_path = ".spec.issuance"),
    printcolumn(name = "Issued", type_ = "integer", json_path = ".status.issuedCount"),
    printcolumn(
        name = "Revoked",
        type_ = "integer",
        json_path = ".status.revokedCount"
    ),
    printcolumn(name = "Expires", type_ = "string", json_path = ".status.notAfter"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("self.type == 'Subordinate' || (!has(self.parentRef) && !has(self.certificate))").message("parentRef and certificate are only for subordinate CAs"))]
#[x_kube(validation = Rule::new("!(has(self.parentRef) && has(self.certificate))").message("give either parentRef or certificate, not both"))]
#[serde(rename_all = "camelCase")]
pub struct CertificateAuthoritySpec {
    /// `Root` (self-signed) or `Subordinate` (signed by a parent). Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("type is immutable"))]
    #[serde(rename = "type")]
    pub ca_type: CaType,

    /// The CA's distinguished name, e.g. C=TW, O=行政院, OU=內政部憑證管理中心.
    /// Immutable: a new name is a new CA.
    #[x_kube(validation = Rule::new("self == oldSelf").message("subject is immutable"))]
    #[x_kube(validation = Rule::new("has(self.commonName) || has(self.organizationalUnits)").message("a CA subject needs a commonName or an organizationalUnit"))]
    pub subject: DistinguishedName,

    /// Where the CA's private key lives.
    pub hsm: HsmSpec,

    /// For a subordinate CA: the CertificateAuthority in this namespace that signs
    /// its certificate. Leave empty to have an external CA sign `status.csr` and
    /// supply the result in `certificate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_ref: Option<LocalObjectReference>,

    /// For a subordinate CA signed outside the cluster: its certificate (PEM),
    /// followed by the rest of the chain up to the root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,

    /// Validity of the CA certificate as a duration (e.g. `175200h` = 20 years).
    /// Defaults: 20 years for a root, 10 years for a subordinate (CPS §6.3.2.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("duration(self) > duration('0s')").message("validity must be a positive duration such as 87600h"))]
    pub validity: Option<String>,

    /// Certificate policy OIDs placed in every certificate this CA issues, without
    /// qualifiers (CPS §7.1.6). Default: 2.16.886.101.0.3.3
    /// (id-tw-gpki-certpolicy-class3Assurance).
    #[serde(default = "default_policy_oids", rename = "policyOIDs")]
    #[schemars(
        length(min = 1, max = 16),
        inner(length(max = 128), regex(pattern = r"^[0-2](\.(0|[1-9][0-9]*))+$"))
    )]
    pub policy_oids: Vec<String>,

    /// CRL distribution point URLs written into issued certificates (http only, RFC 5280 §4.2.1.13).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 8),
        inner(length(max = 512), regex(pattern = "^(http|ldap)://"))
    )]
    pub crl_distribution_points: Vec<String>,

    /// OCSP responder URLs written into the authorityInfoAccess of issued certificates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[serde(rename = "ocspURLs")]
    #[schemars(
        length(max = 8),
        inner(length(max = 512), regex(pattern = "^(http|ldap)://"))
    )]
    pub ocsp_urls: Vec<String>,

    /// caIssuers URLs (where this CA's certificate can be downloaded) written into
    /// the authorityInfoAccess of issued certificates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[serde(rename = "caIssuersURLs")]
    #[schemars(
        length(max = 8),
        inner(length(max = 512), regex(pattern = "^(http|ldap)://"))
    )]
    pub ca_issuers_urls: Vec<String>,

    /// `Enabled` to issue certificates, `Suspended` to stop all issuance (CPS §5.2.2:
    /// an officer action). Revocation, suspension, CRLs and OCSP continue while suspended.
    #[serde(default)]
    pub issuance: IssuanceState,

    /// Who may skip manual approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalPolicy>,

    /// Per-profile settings; every value defaults to the CPS.
    #[serde(default)]
    pub profiles: ProfileSettings,

    /// How many days an issued request may wait for the applicant's acceptance
    /// before it lapses (CPS §4.4: 90).
    #[serde(default = "default_acceptance_days")]
    #[schemars(range(min = 1, max = 3650))]
    pub acceptance_days: i32,

    /// The chop-responder workload that serves OCSP and the repository for this CA.
    #[serde(default)]
    pub responder: ResponderSpec,

    /// Approvals each KeyCeremony of this CA needs (CPS §5.2.2 by default).
    #[serde(default)]
    pub ceremony_quorum: CeremonyQuorum,
}

fn default_policy_oids() -> Vec<String> {
    vec!["2.16.886.101.0.3.3".to_string()]
}

fn default_acceptance_days() -> i32 {
    90
}

/// Root or subordinate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum CaType {
    /// Self-signed trust anchor.
    Root,
    /// Signed by a parent CA.
    Subordinate,
}

/// Whether the CA issues certificates.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum IssuanceState {
    /// Requests are signed once approved and accepted.
    #[default]
    Enabled,
    /// No certificate is signed; requests wait with a condition saying why.
    Suspended,
}

/// The CA's key in a PKCS#11 token.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(oldSelf.keyFrom) || (has(self.keyFrom) && self.keyFrom == oldSelf.keyFrom && self.keyLabel == oldSelf.keyLabel)").message("hsm.keyFrom and hsm.keyLabel of a ceremony-made key are immutable: a new key is a new CertificateAuthority (key changeover, docs/ceremonies.md)"))]
#[x_kube(validation = Rule::new("!has(self.keyFrom) || self.keyGeneration == 'Never'").message("a key from a KeyCeremony is never generated by the controller: keyGeneration must be Never"))]
pub struct HsmSpec {
    /// Path of the PKCS#11 module inside the controller's filesystem.
    #[serde(default = "default_module")]
    pub module: String,
    /// Label of the token that holds the key (tokens are found by label, never by slot id).
    #[schemars(length(min = 1, max = 32))]
    pub token_label: String,
    /// Label of the private key on the token.
    #[schemars(length(min = 1, max = 64))]
    pub key_label: String,
    /// The Secret key that holds the token's user PIN. The PIN is never logged.
    pub pin_secret_ref: SecretKeySelector,
    /// Algorithm and size of the key (CPS §6.1.5: RSA 2048).
    #[serde(default)]
    pub key: KeySpec,
    /// `Never`: the key must already exist on the token (made by a KeyCeremony,
    /// CPS §6.1.1). `IfMissing`: the controller generates it when absent; for
    /// development only, since no witnesses take part.
    #[serde(default)]
    pub key_generation: KeyGeneration,
    /// The `Generate` KeyCeremony (same namespace) that made this CA's key. The CA
    /// then uses the key only once that ceremony succeeded and only if the token's
    /// key is the one the ceremony recorded; a root takes the certificate the
    /// ceremony signed. Such a CA is created with `issuance: Suspended` and only
    /// Activate/Deactivate ceremonies change it (CPS §6.2.8, §6.2.9).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_from: Option<KeyFrom>,
}

/// Where a ceremony-made key comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyFrom {
    /// Name of the `Generate` KeyCeremony.
    #[schemars(length(min = 1, max = 253))]
    pub ceremony: String,
}

/// How many distinct people in each role must approve a KeyCeremony of this CA
/// (CPS §5.2.2). Values may be raised above the CPS defaults, never lowered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CeremonyQuorum {
    /// Generate, Backup, Restore, Destroy: default 2 administrators, 1 auditor,
    /// 1 controller.
    #[serde(default = "RoleCounts::key_management")]
    #[x_kube(validation = Rule::new("self.administrators >= 2 && self.auditors >= 1 && self.controllers >= 1").message("key-management quorum may not be lower than CPS §5.2.2: 2 administrators + 1 auditor + 1 controller"))]
    pub key_management: RoleCounts,
    /// Activate, Deactivate: default 2 officers, 1 controller.
    #[serde(default = "RoleCounts::activation")]
    #[x_kube(validation = Rule::new("self.officers >= 2 && self.controllers >= 1").message("activation quorum may not be lower than CPS §5.2.2: 2 officers + 1 controller"))]
    pub activation: RoleCounts,
}

impl Default for CeremonyQuorum {
    fn default() -> Self {
        CeremonyQuorum {
            key_management: RoleCounts::key_management(),
            activation: RoleCounts::activation(),
        }
    }
}

/// Distinct approvers needed per trusted role.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoleCounts {
    /// Administrators (管理員).
    #[serde(default)]
    #[schemars(range(min = 0, max = 16))]
    pub administrators: i32,
    /// Officers (簽發員).
    #[serde(default)]
    #[schemars(range(min = 0, max = 16))]
    pub officers: i32,
    /// Auditors (稽核員).
    #[serde(default)]
    #[schemars(range(min = 0, max = 16))]
    pub auditors: i32,
    /// Controllers (實體安全控管員).
    #[serde(default)]
    #[schemars(range(min = 0, max = 16))]
    pub controllers: i32,
}

impl RoleCounts {
    /// CPS §5.2.2 for key generation, backup, restore and destruction.
    pub fn key_management() -> Self {
        RoleCounts {
            administrators: 2,
            officers: 0,
            auditors: 1,
            controllers: 1,
        }
    }
    /// CPS §5.2.2 for starting and stopping issuance.
    pub fn activation() -> Self {
        RoleCounts {
            administrators: 0,
            officers: 2,
            auditors: 0,
            controllers: 1,
        }
    }
}

fn default_module() -> String {
    "/usr/lib/softhsm/libsofthsm2.so".to_string()
}

/// Whether the controller may create the CA key.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum KeyGeneration {
    /// The key must exist; the CA waits with a condition until it does.
    #[default]
    Never,
    /// Generate the key in the token when it is missing (development only).
    IfMissing,
}

/// Who may have requests approved without an officer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalPolicy {
    /// Usernames (e.g. `system:serviceaccount:ra:ra-system`) whose CertificateRequests
    /// the controller approves itself (`Approved=True`, reason `AutoApproved`). The
    /// creator is read from the `chop.dev/requested-by` annotation, which the
    /// `chop-requested-by` admission policy (manifests/policies) overwrites with the
    /// authenticated user on creation; without that policy installed anyone could
    /// claim to be a listed user.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub auto_approve_users: Vec<String>,
}

/// Settings per certificate profile; defaults follow the CPS.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProfileSettings {
    /// Validity of signature and encryption certificates (CPS §6.3.2.2: 5 years = 43800h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscriber_validity: Option<String>,
    /// Validity of mobile certificates (CPS §6.3.2.2: 1 year = 8760h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mobile_validity: Option<String>,
    /// How far a renewal extends a certificate's notAfter, as a duration counted in
    /// whole days (e.g. `26280h`). Default: 3 calendar years (CPS §6.3.2.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewal_extension: Option<String>,
    /// Validity of the delegated OCSP responder certificate, renewed automatically
    /// (default 168h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub responder_validity: Option<String>,
    /// Allow requests that carry a bare public key attested by the RA (keys
    /// generated on the card, CPS §3.2.1) instead of a PKCS#10 request.
    #[serde(default)]
    pub allow_attested_public_keys: bool,
    /// Smallest RSA subscriber key in bits (CPS §6.1.5: 2048).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 2048, max = 8192))]
    pub min_rsa_bits: Option<i32>,
    /// Smallest EC subscriber key in bits (CPS §6.1.5: 521).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 256, max = 521))]
    pub min_ec_bits: Option<i32>,
}

/// The chop-responder workload of this CA.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResponderSpec {
    /// Number of responder replicas (stateless; scale freely).
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 100))]
    pub replicas: i32,
    /// Container image of chop-responder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Compute resources of each replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<k8s_openapi::api::core::v1::ResourceRequirements>,
}

impl Default for ResponderSpec {
    fn default() -> Self {
        ResponderSpec {
            replicas: default_replicas(),
            image: None,
            resources: None,
        }
    }
}

fn default_replicas() -> i32 {
    2
}

/// What the controller knows about the CA.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertificateAuthorityStatus {
    /// `Ready`, `KeyReady`, `CertificateReady`, `ResponderReady`, with reasons.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Conditions,
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The CA certificate (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
    /// The chain above the CA certificate up to the root (PEM), empty for a root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<String>,
    /// For a subordinate: the PKCS#10 request its parent signs (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csr: Option<String>,
    /// Serial number of the CA certificate (upper-case hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<String>,
    /// Start of the CA certificate's validity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<Time>,
    /// End of the CA certificate's validity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<Time>,
    /// Certificates issued by this CA so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_count: Option<i64>,
    /// Certificates of this CA currently revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_count: Option<i64>,
    /// Certificates of this CA currently on hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_count: Option<i64>,
    /// When the next CRL will be issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "nextCRLTime")]
    pub next_crl_time: Option<Time>,
    /// The CA's chop-responder: delegated OCSP certificate and workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub responder: Option<ResponderStatus>,
    /// Consecutive wrong PINs for the CA's token (CPS §6.4.2). At 3 the
    /// controller stops logging in (`ActivationDataLocked`) until an Activate
    /// KeyCeremony succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin_failures: Option<i32>,
    /// resourceVersion of the PIN Secret when its PIN was last refused by the
    /// token: the controller tries a refused PIN once, and logs in again only
    /// after the Secret changed (each try costs one of the token's attempts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused_pin_version: Option<String>,
    /// When the third wrong PIN locked the token out (CPS §6.4.2); cleared by an
    /// Activate KeyCeremony that succeeds after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin_locked_at: Option<Time>,
}

/// The CA's chop-responder as the controller last saw it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResponderStatus {
    /// The Secret (`kubernetes.io/tls`) holding the delegated OCSP responder key
    /// and certificate; renewed automatically.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// The Service in front of the responders (port 80): the address for `ocspUrls`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    /// Serial number of the current delegated responder certificate (upper-case hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_serial_number: Option<String>,
    /// End of the current delegated responder certificate's validity; it is
    /// renewed when a third of its validity is left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_not_after: Option<Time>,
    /// Available replicas of the responder Deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_replicas: Option<i32>,
}
