//! `KeyCeremony`: one witnessed, quorum-approved operation on a CA key (CPS §5.2.2,
//! §6.1.1, §6.2).
//!
//! The object is the ceremony's script and its minutes. Its spec says what is to be
//! done (generate, back up, restore, activate, deactivate or destroy the key of one
//! CertificateAuthority); trusted people append their approvals to
//! `spec.approvals`, each naming the `status.specHash` they reviewed; the controller
//! runs the ceremony once the quorum of distinct people in the required roles has
//! approved exactly that hash, and records every step in status.
//!
//! What the API server enforces (manifests/policies/key-ceremony.yaml): an approval
//! names the user who sent it, in a trusted role that user holds, never the
//! ceremony's creator; approvals and submitted shares are append-only; the spec is
//! frozen once the ceremony runs. What the controller re-checks before acting: the
//! quorum against the current spec hash (a changed spec voids earlier approvals).
//!
//! Non-goals: the ceremony never handles a plaintext key or share outside the
//! controller's memory; shares go to custodians encrypted to their certificates.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::common::{Conditions, LocalObjectReference, SecretKeySelector};

/// A witnessed, quorum-approved operation on the key of a CertificateAuthority.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "chop.dev",
    version = "v1alpha1",
    kind = "KeyCeremony",
    namespaced,
    doc = "A witnessed, quorum-approved operation on the key of a CertificateAuthority (CPS §6.2).",
    status = "KeyCeremonyStatus",
    shortname = "kc",
    category = "chop",
    printcolumn(name = "Operation", type_ = "string", json_path = ".spec.operation"),
    printcolumn(name = "CA", type_ = "string", json_path = ".spec.caRef.name"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Quorum",
        type_ = "string",
        json_path = ".status.quorum.progress"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Succeeded\")].reason"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("self.operation == 'Backup' ? has(self.backup) : !has(self.backup)").message("spec.backup is required for operation Backup and only allowed there"))]
#[x_kube(validation = Rule::new("self.operation == 'Restore' ? has(self.restore) : !has(self.restore)").message("spec.restore is required for operation Restore and only allowed there"))]
#[x_kube(validation = Rule::new("self.operation == 'Restore' || !has(self.shares)").message("spec.shares are only for operation Restore"))]
#[x_kube(validation = Rule::new("self.operation == oldSelf.operation && self.caRef == oldSelf.caRef").message("operation and caRef are immutable: create a new KeyCeremony"))]
#[serde(rename_all = "camelCase")]
pub struct KeyCeremonySpec {
    /// What the ceremony does. Immutable.
    pub operation: CeremonyOperation,

    /// The CertificateAuthority (same namespace) whose key this is. For `Generate`
    /// its `spec.hsm` says where the key is made and `spec.subject`/`spec.type`
    /// what certificate (root) or request (subordinate) the ceremony produces; the
    /// CA must name this ceremony in `spec.hsm.keyFrom`. Immutable.
    pub ca_ref: LocalObjectReference,

    /// Why the ceremony is held, for the minutes (e.g. "annual root key backup").
    /// No personal data.
    #[schemars(length(min = 1, max = 1024))]
    pub reason: String,

    /// Operation `Backup`: how the key is split among custodians.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupSpec>,

    /// Operation `Restore`: which backup, into which token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreSpec>,

    /// Approvals, appended by trusted people (`kubectl apply --server-side` with
    /// one entry, or `kubectl chop ceremony approve`). Not part of the spec hash.
    /// Append-only; each entry is checked by the API server against the
    /// authenticated user who adds it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["user", "specHash"]))]
    #[schemars(length(max = 64))]
    pub approvals: Vec<CeremonyApproval>,

    /// Operation `Restore`: shares submitted by custodians, each re-encrypted to
    /// the ceremony's one-time recipient certificate (`status.restore.recipientCertificate`).
    /// Not part of the spec hash. Append-only, one per user.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["user"]))]
    #[schemars(length(max = 255))]
    pub shares: Vec<SubmittedShare>,
}

/// The operations of CPS §6.2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub enum CeremonyOperation {
    /// Generate the CA key pair inside the HSM (§6.1.1); for a root also the
    /// self-signed certificate, for a subordinate the PKCS#10 request.
    Generate,
    /// Wrap the CA key under a fresh key-encryption key split m-of-n among
    /// custodians (§6.2.4).
    Backup,
    /// Rebuild the CA key into a token from m custodian shares (§6.2.6, §6.2.7).
    Restore,
    /// Let the CA key sign: sets the CA's `spec.issuance` to `Enabled` (§6.2.8).
    Activate,
    /// Stop the CA key from signing: sets `spec.issuance` to `Suspended` (§6.2.9).
    Deactivate,
    /// Zeroize the CA key in its token (§6.2.10); refused while certificates it
    /// issued are unexpired.
    Destroy,
}

impl CeremonyOperation {
    /// The name used in metrics, Events and the spec.
    pub fn as_str(self) -> &'static str {
        match self {
            CeremonyOperation::Generate => "Generate",
            CeremonyOperation::Backup => "Backup",
            CeremonyOperation::Restore => "Restore",
            CeremonyOperation::Activate => "Activate",
            CeremonyOperation::Deactivate => "Deactivate",
            CeremonyOperation::Destroy => "Destroy",
        }
    }

    /// Activation and deactivation are officers' business (§5.2.2); the rest is
    /// key management, administrators'.
    pub fn is_activation(self) -> bool {
        matches!(
            self,
            CeremonyOperation::Activate | CeremonyOperation::Deactivate
        )
    }
}

/// Operation `Backup`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.threshold <= size(self.custodians)").message("threshold cannot exceed the number of custodians"))]
#[x_kube(validation = Rule::new("self.custodians.all(c, self.custodians.exists_one(d, d.name == c.name))").message("custodian names must be unique"))]
pub struct BackupSpec {
    /// How many shares rebuild the key (m of §6.2.2). At least 2: a 1-of-n backup
    /// would be n plain copies.
    #[schemars(range(min = 2, max = 255))]
    pub threshold: i32,
    /// The custodians (n), each receiving one share encrypted to their certificate.
    #[schemars(length(min = 2, max = 255))]
    pub custodians: Vec<Custodian>,
}

/// A person who keeps one share of a backup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Custodian {
    /// A name for the minutes (e.g. a staff number); not personal data.
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z0-9._-]+$"))]
    pub name: String,
    /// The custodian's X.509 certificate (PEM) with an RSA key of at least 2048
    /// bits; their share is a CMS EnvelopedData to it, which they decrypt with
    /// `openssl cms -decrypt` (the private key may stay on a smart card).
    #[schemars(length(min = 1, max = 16384))]
    pub certificate: String,
}

/// Operation `Restore`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreSpec {
    /// The succeeded `Backup` KeyCeremony (same namespace) whose shares are used.
    pub backup_ref: LocalObjectReference,
    /// Label of the token the key is restored into; it must not hold a key with the
    /// CA's key label. Point the CA's `spec.hsm.tokenLabel` at it afterwards.
    #[schemars(length(min = 1, max = 32))]
    pub token_label: String,
    /// The Secret key holding that token's user PIN.
    pub pin_secret_ref: SecretKeySelector,
}

/// One person's approval of the spec whose hash it names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CeremonyApproval {
    /// The approver: must equal the authenticated user name of the request that
    /// adds this entry (enforced by the API server).
    #[schemars(length(min = 1, max = 253))]
    pub user: String,
    /// The trusted role the approver acts in; they must hold it.
    pub role: TrustedRole,
    /// The `status.specHash` the approver reviewed. An approval of another hash
    /// does not count.
    #[schemars(regex(pattern = "^[0-9a-f]{64}$"))]
    pub spec_hash: String,
    /// Why the approver agrees, for the minutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub reason: Option<String>,
}

/// The trusted roles of CPS §5.2.1 that take part in ceremonies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub enum TrustedRole {
    /// 管理員: key management.
    Administrator,
    /// 簽發員: activation and deactivation.
    Officer,
    /// 稽核員: witnesses key management.
    Auditor,
    /// 實體安全控管員: witnesses every ceremony.
    Controller,
}

impl TrustedRole {
    /// Every role, in the order quorums are written.
    pub const ALL: [TrustedRole; 4] = [
        TrustedRole::Administrator,
        TrustedRole::Officer,
        TrustedRole::Auditor,
        TrustedRole::Controller,
    ];

    /// The role's name as in the spec.
    pub fn as_str(self) -> &'static str {
        match self {
            TrustedRole::Administrator => "Administrator",
            TrustedRole::Officer => "Officer",
            TrustedRole::Auditor => "Auditor",
            TrustedRole::Controller => "Controller",
        }
    }
}

/// A custodian's share for a `Restore`, encrypted to the one-time recipient.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubmittedShare {
    /// The submitting user: must equal the authenticated user (API server).
    #[schemars(length(min = 1, max = 253))]
    pub user: String,
    /// CMS EnvelopedData (PEM) to `status.restore.recipientCertificate`, made by
    /// `openssl cms -encrypt` as docs/ceremonies.md shows. Never a plaintext share.
    #[schemars(length(min = 1, max = 16384))]
    pub envelope: String,
}

/// Where the ceremony stands.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum CeremonyPhase {
    /// Waiting for approvals.
    #[default]
    WaitingForQuorum,
    /// The quorum approved; steps are running.
    Running,
    /// Restore only: waiting for custodians to submit enough shares.
    WaitingForShares,
    /// Done; the outcome is in status.
    Succeeded,
    /// Stopped for the reason in the `Succeeded` condition; nothing more happens.
    Failed,
}

/// The ceremony's minutes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyCeremonyStatus {
    /// `Succeeded` (False with the reason while waiting or after failing, True at
    /// the end) and `QuorumMet`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Conditions,
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Where the ceremony stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<CeremonyPhase>,
    /// SHA-256 (hex) of what approvers approve: the spec without approvals and
    /// shares, and the CertificateAuthority's uid and key-relevant spec (hsm,
    /// subject, type, validity, policy OIDs). Approvals name it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec_hash: Option<String>,
    /// The quorum and who met it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quorum: Option<QuorumStatus>,
    /// Every step run, in order, with its outcome.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<CeremonyStep>,
    /// The key the ceremony made, backed up, restored or destroyed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<CeremonyKey>,
    /// `Generate` of a root: the self-signed CA certificate (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
    /// `Generate` of a subordinate: the PKCS#10 request (PEM) for the parent CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csr: Option<String>,
    /// `Generate` of a root: serial (hex) and notBefore reserved before signing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserved: Option<ReservedCertificate>,
    /// `Backup`: the wrapped key and the custodians' encrypted shares.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupStatus>,
    /// `Restore`: the one-time recipient and the shares received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreStatus>,
    /// When the quorum was met and the first step started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the ceremony succeeded or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
}

/// Required and given approvals.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuorumStatus {
    /// The quorum, e.g. `2 Administrator + 1 Auditor + 1 Controller`.
    pub required: String,
    /// Counted approvals over required ones, e.g. `3/4`.
    pub progress: String,
    /// Every approval in the spec, as the controller judged it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvals: Vec<ApprovalRecord>,
}

/// One approval as judged by the controller.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalRecord {
    /// The approver.
    pub user: String,
    /// The role they approved in.
    pub role: String,
    /// Whether it counts towards the quorum.
    pub counted: bool,
    /// Why it does not count (e.g. `SpecChanged`, `NotRequired`), if it does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The approver's reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When the controller first saw the approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seen_at: Option<Time>,
}

/// One step of the ceremony.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CeremonyStep {
    /// The step, e.g. `GenerateKey`, `SelfSign`, `WrapKey`, `Unwrap`.
    pub name: String,
    /// `Started`, `Succeeded` or `Failed`.
    pub outcome: String,
    /// What happened, without secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When.
    pub time: Time,
}

/// The key a ceremony concerns.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CeremonyKey {
    /// Token label.
    pub token_label: String,
    /// Key label.
    pub key_label: String,
    /// CKA_ID (hex), reserved before generation so a restarted ceremony finds the
    /// key it made instead of making a second one.
    pub key_id: String,
    /// The public key (PEM SubjectPublicKeyInfo), once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    /// SHA-256 (hex) of the DER SubjectPublicKeyInfo.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
}

/// Serial and notBefore of a root certificate, reserved before it is signed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReservedCertificate {
    /// Serial number (upper-case hex).
    pub serial_number: String,
    /// notBefore.
    pub not_before: Time,
}

/// What a `Backup` produced. Holds no share and no key in the clear: the key is
/// wrapped under a KEK that exists only as the custodians' shares.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupStatus {
    /// m.
    pub threshold: i32,
    /// The private key wrapped with AES key wrap with padding (RFC 5649), base64.
    pub wrapped_key: String,
    /// One entry per custodian.
    pub shares: Vec<ShareRecord>,
}

/// One custodian's share: where it went and its fingerprint, never its content.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShareRecord {
    /// The custodian.
    pub custodian: String,
    /// Share index (x coordinate).
    pub index: i32,
    /// SHA-256 (hex) of the share plaintext, to check it on restore.
    pub fingerprint: String,
    /// The share encrypted to the custodian's certificate (CMS EnvelopedData, PEM).
    pub envelope: String,
}

/// The state of a `Restore`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreStatus {
    /// Certificate (PEM) of the one-time key inside the target token to which
    /// custodians re-encrypt their shares; destroyed when the ceremony ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient_certificate: Option<String>,
    /// Shares received over shares needed, e.g. `2/3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shares_received: Option<String>,
}
