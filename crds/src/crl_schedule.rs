//! `CRLSchedule`: when and how a CA's CRLs are issued.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::common::{Conditions, LocalObjectReference};

/// How often a CA issues its CRLs, how long they are valid, and how they are split.
/// Defaults follow CPS §4.9.7: a CRL at least every 24 hours, valid at most 36
/// hours, reissued as soon as a certificate is revoked or held.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "chop.dev",
    version = "v1alpha1",
    kind = "CRLSchedule",
    plural = "crlschedules",
    namespaced,
    doc = "When and how a CA's CRLs are issued.",
    status = "CRLScheduleStatus",
    shortname = "crls",
    category = "chop",
    printcolumn(name = "CA", type_ = "string", json_path = ".spec.caRef.name"),
    printcolumn(name = "Interval", type_ = "string", json_path = ".spec.interval"),
    printcolumn(name = "Validity", type_ = "string", json_path = ".spec.validity"),
    printcolumn(name = "Number", type_ = "integer", json_path = ".status.crlNumber"),
    printcolumn(name = "Entries", type_ = "integer", json_path = ".status.entries"),
    printcolumn(
        name = "NextUpdate",
        type_ = "string",
        json_path = ".status.nextUpdate"
    )
)]
#[x_kube(validation = Rule::new("duration(self.validity) <= duration('36h') || self.allowValidityOver36h").message("validity over 36h breaks CPS §4.9.7; set allowValidityOver36h to allow it"))]
#[x_kube(validation = Rule::new("duration(self.interval) <= duration('24h') || self.allowValidityOver36h").message("interval over 24h breaks CPS §4.9.7 (a CRL at least daily)"))]
#[x_kube(validation = Rule::new("duration(self.interval) + duration(self.overlap) <= duration(self.validity)").message("interval + overlap must not exceed validity, or the next CRL would be published after the current one's nextUpdate (CPS §4.9.8)"))]
#[serde(rename_all = "camelCase")]
pub struct CRLScheduleSpec {
    /// The CertificateAuthority (same namespace) whose CRLs these are. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("caRef is immutable"))]
    pub ca_ref: LocalObjectReference,
    /// Time between regular CRLs (default `24h`, at most 24h).
    #[serde(default = "default_interval")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1m')").message("interval must be at least 1m"))]
    pub interval: String,
    /// nextUpdate minus thisUpdate (default `36h`, at most 36h).
    #[serde(default = "default_validity")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('5m')").message("validity must be at least 5m"))]
    pub validity: String,
    /// Minimum time between publishing the next CRL and the current CRL's
    /// nextUpdate (default `12h`).
    #[serde(default = "default_overlap")]
    pub overlap: String,
    /// Allow validity beyond 36h and interval beyond 24h (deviation from the CPS).
    #[serde(default, rename = "allowValidityOver36h")]
    pub allow_validity_over_36h: bool,
    /// Issue a new CRL as soon as a certificate is revoked, held or resumed
    /// (default true; the CPS requires it within 24 hours).
    #[serde(default = "default_true")]
    pub reissue_on_change: bool,
    /// Number of partitioned CRLs (0: one full CRL only). A certificate issued
    /// while this schedule exists gets partition `serial mod partitions` and the
    /// partition's URL as its only CRL distribution point; each partition CRL
    /// (published as `<schedule>-<n>`) lists only its partition's certificates and
    /// carries a critical issuingDistributionPoint with that URL. The full CRL is
    /// published as well. Immutable.
    #[serde(default)]
    #[schemars(range(min = 0, max = 1024))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("partitions is immutable: certificates already name their partition"))]
    pub partitions: i32,
    /// URL of partition `n`'s CRL, with `{n}` standing for the partition number
    /// (e.g. `http://repository.example/crl/moica-{n}.crl`). Default: the CA's
    /// first `crlDistributionPoints` URL with `-<n>` inserted before its last
    /// extension (`.../crl/moica.crl` becomes `.../crl/moica-<n>.crl`), which is
    /// where chop-responder serves partition `n` when the CA's URL is
    /// `.../crl/<schedule>.crl`. Immutable: issued certificates carry these URLs.
    #[serde(
        default,
        rename = "partitionURLTemplate",
        skip_serializing_if = "Option::is_none"
    )]
    #[x_kube(validation = Rule::new("self.contains('{n}')").message("partitionURLTemplate must contain {n}, the partition number"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("partitionURLTemplate is immutable: issued certificates carry these URLs"))]
    pub partition_url_template: Option<String>,
}

fn default_interval() -> String {
    "24h".into()
}
fn default_validity() -> String {
    "36h".into()
}
fn default_overlap() -> String {
    "12h".into()
}
fn default_true() -> bool {
    true
}

/// The CRLs currently published.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CRLScheduleStatus {
    /// `Ready` and `Published`, with reasons.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Conditions,
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// CRL number of the current full CRL (monotonic, never reused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crl_number: Option<i64>,
    /// thisUpdate of the current CRL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub this_update: Option<Time>,
    /// nextUpdate of the current CRL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_update: Option<Time>,
    /// Entries in the current full CRL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entries: Option<i64>,
    /// Size of the current full CRL in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<i64>,
    /// The highest CRL number ever reserved. It is written *before* the CA key
    /// signs (ADR 0002 §3), so a restart continues above it; when it is greater
    /// than `crlNumber`, an attempt was interrupted and its number is skipped
    /// (RFC 5280 §5.2.3 requires increasing, not contiguous, numbers).
    #[serde(
        default,
        rename = "reservedCRLNumber",
        skip_serializing_if = "Option::is_none"
    )]
    pub reserved_crl_number: Option<i64>,
    /// SHA-256 (lower-case hex) over the sorted (serial, revocation time, reason,
    /// invalidity date) of the revoked and held certificates in the current CRL;
    /// a different digest means the CRL is out of date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entries_digest: Option<String>,
    /// Number of partition CRLs published with `crlNumber` (each as its own
    /// publication `<schedule>-<n>`), when the schedule has `partitions`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions_published: Option<i32>,
}
