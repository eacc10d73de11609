//! The CA's register: one `IssuedCertificate` per signed certificate (ADR 0002).
//! Creating the record is the commit point of an issuance; `AlreadyExists` means
//! an earlier attempt committed, and what it recorded wins.

use std::collections::BTreeMap;

use ca::issue::IssuedCertificate as Signed;
use ca::name::DistinguishedName;
use ca::serial::Serial;
use crds::common::LocalObjectReference;
use crds::issued_certificate::{
    LABEL_CA, LABEL_KEY_FINGERPRINT, LABEL_PROFILE, LABEL_REQUEST, LABEL_STATUS,
    LABEL_SUBSCRIBER_ID, request_label_value,
};
use crds::{IssuedCertificate, IssuedCertificateSpec, IssuedCertificateStatus};
use der::Encode;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams, PostParams};

use crate::error::{Error, Result};
use crate::reconcilers::to_time;
use crate::subscribers::hex_lower;

/// `<ca>-<serial lower hex>`.
pub fn record_name(ca: &str, serial: &Serial) -> String {
    format!("{ca}-{}", serial.to_hex().to_ascii_lowercase())
}

/// What a record says besides the certificate itself.
#[derive(Clone, Debug)]
pub struct Entry {
    /// The issuing CA's name.
    pub ca: String,
    /// The profile name as in the CRD.
    pub profile: String,
    /// The CA-assigned subscriber identifier, if any.
    pub subscriber_id: Option<String>,
    /// The request it was issued for.
    pub request_ref: Option<LocalObjectReference>,
    /// The request whose certificate it renews.
    pub renewal_of: Option<LocalObjectReference>,
}

/// SHA-256 of the certificate's SubjectPublicKeyInfo, lower-case hex.
pub fn key_fingerprint(signed: &Signed, object: &str) -> Result<String> {
    let spki = signed
        .certificate
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|e| Error::Ca {
            object: object.to_string(),
            source: ca::Error::Der(e),
        })?;
    Ok(hex_sha256(&spki))
}

/// SHA-256 of `der`, lower-case hex (the key fingerprint of an SPKI).
pub fn hex_sha256(der: &[u8]) -> String {
    hex_lower(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der).as_ref())
}

/// Create the record of `signed` in `api` (its namespace), or return the one an
/// earlier attempt created.
pub async fn commit(
    api: &Api<IssuedCertificate>,
    signed: &Signed,
    entry: Entry,
    object: &str,
) -> Result<IssuedCertificate> {
    commit_in_partition(api, signed, entry, None, object).await
}

/// The finalizer every record carries from its creation (issue 8, finding 5).
pub const FINALIZER: &str = "chop.dev/register";

/// [`commit`], recording the CRL partition the certificate names in its CRL
/// distribution point (`spec.crlPartition`).
pub async fn commit_in_partition(
    api: &Api<IssuedCertificate>,
    signed: &Signed,
    entry: Entry,
    crl_partition: Option<u32>,
    object: &str,
) -> Result<IssuedCertificate> {
    let cerr = Error::ca(object);
    let fingerprint = key_fingerprint(signed, object)?;
    let subject = DistinguishedName::from_name(&signed.certificate.tbs_certificate.subject)
        .map(|d| d.to_string())
        .unwrap_or_default();
    let mut labels = BTreeMap::from([
        (LABEL_CA.to_string(), entry.ca.clone()),
        (
            LABEL_KEY_FINGERPRINT.to_string(),
            fingerprint.chars().take(63).collect(),
        ),
        (LABEL_STATUS.to_string(), "Valid".to_string()),
        (LABEL_PROFILE.to_string(), entry.profile.clone()),
    ]);
    if let Some(sid) = &entry.subscriber_id {
        labels.insert(LABEL_SUBSCRIBER_ID.to_string(), sid.clone());
    }
    if let Some(req) = &entry.request_ref {
        labels.insert(LABEL_REQUEST.to_string(), request_label_value(&req.name));
    }
    let name = record_name(&entry.ca, &signed.serial);
    let record = IssuedCertificate {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some(labels),
            // Kept until chop-controller removes it (chop-register-protection):
            // deleting the namespace or the CRD cannot erase the register.
            finalizers: Some(vec![FINALIZER.to_string()]),
            ..ObjectMeta::default()
        },
        spec: IssuedCertificateSpec {
            ca_ref: LocalObjectReference { name: entry.ca },
            serial_number: signed.serial.to_hex(),
            subject,
            profile: entry.profile,
            not_before: to_time(signed.not_before, object)?,
            not_after: to_time(signed.not_after, object)?,
            key_fingerprint: fingerprint,
            subscriber_id: entry.subscriber_id,
            certificate: signed.to_pem().map_err(cerr)?,
            request_ref: entry.request_ref,
            renewal_of: entry.renewal_of,
            crl_partition: crl_partition.and_then(|p| i32::try_from(p).ok()),
        },
        status: None,
    };
    match api.create(&PostParams::default(), &record).await {
        Ok(r) => Ok(r),
        Err(kube::Error::Api(s)) if s.code == 409 => api
            .get(&name)
            .await
            .map_err(Error::kube("get IssuedCertificate")),
        Err(e) => Err(Error::kube("create IssuedCertificate")(e)),
    }
}

/// Annotation on a record naming the Revocation that revoked it.
pub const ANNOTATION_REVOKED_BY: &str = "chop.dev/revoked-by";
/// Annotation on a record naming the Suspension that holds it.
pub const ANNOTATION_HELD_BY: &str = "chop.dev/held-by";

/// `Valid`.
pub const VALID: &str = "Valid";
/// `Held`.
pub const HELD: &str = "Held";
/// `Revoked`.
pub const REVOKED: &str = "Revoked";

pub use crds::issued_certificate::RecordState as State;

/// The record's state, the one definition every reader uses: `status.state`
/// ([`IssuedCertificate::state`]; absent is Valid). The CRL builder selects by
/// it (field selector), the responder reads the same field, and the
/// `chop.dev/status` label the counters read is written with it in one PATCH
/// ([`transition`]). Anything else in the field is an error naming the record.
pub fn state(record: &IssuedCertificate) -> Result<State> {
    record.state().map_err(|message| Error::Invalid {
        object: crate::context::object_id(record),
        message: format!("status.state: {message}"),
    })
}

/// Whether the record is revoked ([`state`]).
pub fn is_revoked(record: &IssuedCertificate) -> bool {
    matches!(state(record), Ok(State::Revoked))
}

/// A label of the record.
pub fn label<'a>(record: &'a IssuedCertificate, key: &str) -> Option<&'a str> {
    record
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(key))
        .map(String::as_str)
}

/// An annotation of the record.
pub fn annotation<'a>(record: &'a IssuedCertificate, key: &str) -> Option<&'a str> {
    record
        .metadata
        .annotations
        .as_ref()
        .and_then(|l| l.get(key))
        .map(String::as_str)
}

/// Whether the certificate's notAfter has passed at `now`.
pub fn expired(record: &IssuedCertificate, now: std::time::SystemTime) -> bool {
    crate::reconcilers::from_time(&record.spec.not_after) <= now
}

/// The certificate a Revocation or Suspension names, once resolved.
#[derive(Clone, Debug)]
pub enum Target {
    /// The CA's record of the certificate.
    Found(Box<IssuedCertificate>),
    /// The named CertificateRequest does not exist.
    RequestNotFound,
    /// The named CertificateRequest has no certificate yet.
    NotIssued,
    /// No record of that serial number at that CA (or the serial is not hex).
    UnknownSerial,
    /// The named CertificateRequest is gone (garbage-collected) and the CA's
    /// register holds several certificates issued for requests of that name
    /// (the name was used again): these records; name one by serial.
    Ambiguous(Vec<String>),
}

/// Find the record of the certificate named by `request` (its status'
/// serialNumber) or by `serial` (hex, either case) at CA `ca` in `ns`.
pub async fn resolve(
    client: &kube::Client,
    ns: &str,
    ca: &str,
    request: Option<&LocalObjectReference>,
    serial: Option<&str>,
) -> Result<Target> {
    let serial = match (request, serial) {
        (Some(r), _) => {
            let crs: Api<crds::CertificateRequest> = Api::namespaced(client.clone(), ns);
            let Some(cr) = crs
                .get_opt(&r.name)
                .await
                .map_err(Error::kube("get CertificateRequest"))?
            else {
                // Gone, e.g. garbage-collected (crate::gc): the register
                // remembers which certificate it was issued for.
                return by_request(client, ns, ca, &r.name).await;
            };
            if cr.spec.ca_ref.name != ca {
                return Ok(Target::UnknownSerial);
            }
            match cr
                .status
                .as_ref()
                .filter(|s| s.certificate.is_some())
                .and_then(|s| s.serial_number.clone())
            {
                Some(s) => s,
                None => return Ok(Target::NotIssued),
            }
        }
        (None, Some(s)) => s.to_string(),
        (None, None) => return Ok(Target::UnknownSerial),
    };
    let Ok(serial) = Serial::from_hex(&serial) else {
        return Ok(Target::UnknownSerial);
    };
    let api: Api<IssuedCertificate> = Api::namespaced(client.clone(), ns);
    match api
        .get_opt(&record_name(ca, &serial))
        .await
        .map_err(Error::kube("get IssuedCertificate"))?
    {
        Some(r) if r.spec.ca_ref.name == ca => Ok(Target::Found(Box::new(r))),
        _ => Ok(Target::UnknownSerial),
    }
}

/// The record CA `ca` issued for a CertificateRequest named `request` that no
/// longer exists: by the `chop.dev/request` label, confirmed by `spec.requestRef`.
async fn by_request(client: &kube::Client, ns: &str, ca: &str, request: &str) -> Result<Target> {
    let mut found = records_of_request(client, ns, ca, request).await?;
    Ok(match found.len() {
        0 => Target::RequestNotFound,
        1 => Target::Found(Box::new(found.remove(0))),
        _ => Target::Ambiguous(found.iter().map(ResourceExt::name_any).collect()),
    })
}

/// Every record of CA `ca` issued for a CertificateRequest named `request`
/// (one LIST by label, [`LABEL_REQUEST`]; the whole name compared with
/// `spec.requestRef`).
pub async fn records_of_request(
    client: &kube::Client,
    ns: &str,
    ca: &str,
    request: &str,
) -> Result<Vec<IssuedCertificate>> {
    let api: Api<IssuedCertificate> = Api::namespaced(client.clone(), ns);
    let selector = format!(
        "{LABEL_CA}={ca},{LABEL_REQUEST}={}",
        request_label_value(request)
    );
    let mut records = api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(Error::kube("list IssuedCertificates"))?
        .items;
    records.retain(|r| {
        r.spec.ca_ref.name == ca
            && r.spec
                .request_ref
                .as_ref()
                .is_some_and(|q| q.name == request)
    });
    records.sort_by(|a, b| a.spec.serial_number.cmp(&b.spec.serial_number));
    Ok(records)
}

/// Every record of CA `ca` whose key-fingerprint label equals `record`'s (the
/// certificates sharing its key pair, CPS §4.6.2, §6.3), `record` included.
pub async fn same_key(
    api: &Api<IssuedCertificate>,
    ca: &str,
    record: &IssuedCertificate,
) -> Result<Vec<IssuedCertificate>> {
    let Some(fp) = label(record, LABEL_KEY_FINGERPRINT) else {
        return Ok(vec![record.clone()]);
    };
    let mut all = api
        .list(
            &ListParams::default().labels(&format!("{LABEL_CA}={ca},{LABEL_KEY_FINGERPRINT}={fp}")),
        )
        .await
        .map_err(Error::kube("list IssuedCertificates"))?
        .items;
    if !all.iter().any(|r| r.metadata.name == record.metadata.name) {
        all.push(record.clone());
    }
    all.sort_by(|a, b| a.spec.serial_number.cmp(&b.spec.serial_number));
    Ok(all)
}

/// A change of a record's state: everything [`transition`] writes in one PATCH.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    /// The new state (`status.state` and the `chop.dev/status` label).
    pub state: State,
    /// `status.revokedAt` (revocation or hold time; None removes it).
    pub revoked_at: Option<Time>,
    /// `status.reason` (None removes it).
    pub reason: Option<String>,
    /// `status.invalidityDate` (None removes it).
    pub invalidity_date: Option<Time>,
    /// Annotations to set (`Some`) or remove (`None`); others are left alone.
    pub annotations: Vec<(&'static str, Option<String>)>,
}

impl Change {
    /// The status this change writes.
    pub fn status(&self) -> IssuedCertificateStatus {
        IssuedCertificateStatus {
            state: Some(self.state.as_str().to_string()),
            revoked_at: self.revoked_at.clone(),
            reason: self.reason.clone(),
            invalidity_date: self.invalidity_date.clone(),
        }
    }

    /// Whether `record` already says everything this change writes.
    pub fn is_on(&self, record: &IssuedCertificate) -> bool {
        record.status.as_ref() == Some(&self.status())
            && label(record, LABEL_STATUS) == Some(self.state.as_str())
            && self
                .annotations
                .iter()
                .all(|(k, v)| annotation(record, k) == v.as_deref())
    }
}

/// What a decision on a record (as read) comes to.
#[derive(Clone, Debug)]
pub enum Decision<T> {
    /// Write nothing; the outcome is `T`.
    Keep(T),
    /// Write the change; once written, the outcome is `T`.
    Write(Change, T),
}

/// How often [`transition`] decides again after a conflict before it gives up
/// (the reconcile is then retried with backoff).
const ATTEMPTS: usize = 8;

/// Change a record's state, deciding on the record as it is: `decide` looks at
/// `record` and says what to write; the write is ONE merge PATCH of the object
/// (`status`, the `chop.dev/status` label and the annotations together; the CRD
/// has no status subresource), conditional on the resourceVersion `decide` saw.
/// A 409 Conflict (someone wrote in between) reads the record again and runs
/// `decide` again on what is there now, so every rule between transitions
/// (revocation supersedes a hold, a resume never un-revokes, a renewal claim
/// never lands on a held or revoked record) holds under any interleaving.
/// Returns the outcome and the record as it stands after.
pub async fn transition<T>(
    api: &Api<IssuedCertificate>,
    record: &IssuedCertificate,
    mut decide: impl FnMut(&IssuedCertificate) -> Result<Decision<T>>,
) -> Result<(T, IssuedCertificate)> {
    let mut current = record.clone();
    let mut last = None;
    for attempt in 0..ATTEMPTS {
        let (change, outcome) = match decide(&current)? {
            Decision::Keep(v) => return Ok((v, current)),
            Decision::Write(change, v) => (change, v),
        };
        match write_at_version(api, &current, &change).await? {
            Ok(written) => return Ok((outcome, written)),
            Err(e) => {
                tracing::debug!(record = %current.name_any(), attempt, "the record changed since it was read: deciding again");
                last = Some(e);
                current = api
                    .get(&current.name_any())
                    .await
                    .map_err(Error::kube("get IssuedCertificate"))?;
            }
        }
    }
    match last {
        Some(e) => Err(Error::kube("patch IssuedCertificate state")(e)),
        None => Err(Error::Invalid {
            object: crate::context::object_id(record),
            message: "no attempt to write the record's state".into(),
        }),
    }
}

/// Merge-patch `record` with `metadata` (labels, annotations) and `status`, on
/// the condition that it is still at the resourceVersion it was read at. The
/// inner `Err` is a 409 Conflict (decide again); other failures are errors.
async fn patch_at_version(
    api: &Api<IssuedCertificate>,
    record: &IssuedCertificate,
    mut metadata: serde_json::Value,
    status: Option<serde_json::Value>,
) -> Result<std::result::Result<IssuedCertificate, kube::Error>> {
    let Some(rv) = record
        .metadata
        .resource_version
        .as_deref()
        .filter(|v| !v.is_empty())
    else {
        return Err(Error::Invalid {
            object: crate::context::object_id(record),
            message: "a record read without resourceVersion cannot be written conditionally".into(),
        });
    };
    metadata["resourceVersion"] = serde_json::json!(rv);
    let mut body = serde_json::json!({ "metadata": metadata });
    if let Some(st) = status {
        body["status"] = st;
    }
    let params = PatchParams {
        field_manager: Some(crate::context::FIELD_MANAGER.to_string()),
        ..PatchParams::default()
    };
    match api
        .patch(&record.name_any(), &params, &Patch::Merge(&body))
        .await
    {
        Ok(r) => Ok(Ok(r)),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(Err(kube::Error::Api(s))),
        Err(e) => Err(Error::kube("patch IssuedCertificate")(e)),
    }
}

fn annotations_json(annotations: &[(&str, Option<String>)]) -> serde_json::Value {
    serde_json::Value::Object(
        annotations
            .iter()
            .map(|(k, v)| ((*k).to_string(), serde_json::json!(v)))
            .collect(),
    )
}

async fn write_at_version(
    api: &Api<IssuedCertificate>,
    record: &IssuedCertificate,
    change: &Change,
) -> Result<std::result::Result<IssuedCertificate, kube::Error>> {
    let metadata = serde_json::json!({
        "labels": { LABEL_STATUS: change.state.as_str() },
        "annotations": annotations_json(&change.annotations),
    });
    // Every status field explicitly, null removing it (a merge patch).
    let status = serde_json::json!({
        "state": change.state.as_str(),
        "revokedAt": change.revoked_at,
        "reason": change.reason,
        "invalidityDate": change.invalidity_date,
    });
    patch_at_version(api, record, metadata, Some(status)).await
}

/// Set (or remove) annotations on `record`, only if it is still at the
/// resourceVersion it was read at (a renewal claim: decided on that read).
/// A conflict is an error: the caller's retry reads and decides again.
pub async fn annotate_at_version(
    api: &Api<IssuedCertificate>,
    record: &IssuedCertificate,
    annotations: &[(&'static str, Option<String>)],
) -> Result<IssuedCertificate> {
    let metadata = serde_json::json!({ "annotations": annotations_json(annotations) });
    patch_at_version(api, record, metadata, None)
        .await?
        .map_err(Error::kube("patch IssuedCertificate annotations"))
}

/// Mirror the record's state into `certificateStatus` of the CertificateRequest
/// it was issued for, if that still exists (merge patch: the request's
/// reconciler never writes this field, so its server-side applies keep it).
/// Only a request whose status names this record's serial, at the
/// resourceVersion read: a request garbage-collected ([`crate::gc`]) and
/// created again under the same name is another request and keeps its own
/// status.
pub async fn reflect_on_request(client: &kube::Client, record: &IssuedCertificate, state: &str) {
    let (Some(ns), Some(req)) = (record.namespace(), record.spec.request_ref.as_ref()) else {
        return;
    };
    let api: Api<crds::CertificateRequest> = Api::namespaced(client.clone(), &ns);
    let params = PatchParams {
        field_manager: Some(crate::context::FIELD_MANAGER.to_string()),
        ..PatchParams::default()
    };
    for _ in 0..3 {
        let cr = match api.get_opt(&req.name).await {
            Ok(Some(cr)) => cr,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, request = %req.name, "could not read the request to mirror the certificate status");
                return;
            }
        };
        let ours = cr.spec.ca_ref == record.spec.ca_ref
            && cr
                .status
                .as_ref()
                .and_then(|s| s.serial_number.as_deref())
                .is_some_and(|s| s.eq_ignore_ascii_case(&record.spec.serial_number));
        if !ours {
            return;
        }
        let patch = serde_json::json!({
            "metadata": { "resourceVersion": cr.metadata.resource_version },
            "status": { "certificateStatus": state },
        });
        match api
            .patch_status(&req.name, &params, &Patch::Merge(&patch))
            .await
        {
            Ok(_) => return,
            Err(kube::Error::Api(s)) if s.code == 404 => return,
            // Written in between: read again.
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => {
                tracing::warn!(error = %e, request = %req.name, "could not mirror the certificate status on its request");
                return;
            }
        }
    }
}

/// Test hook: pause a resume for [`PAUSE`] after it read the record and before
/// it writes (`CHOP_TEST_PAUSE_IN_RESUME=1`), so a test can land a concurrent
/// write there. Never set in production.
pub async fn pause_in_resume() {
    static HOOK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let on = *HOOK.get_or_init(|| {
        let on = std::env::var("CHOP_TEST_PAUSE_IN_RESUME").as_deref() == Ok("1");
        if on {
            tracing::warn!("CHOP_TEST_PAUSE_IN_RESUME=1: test hook active, resumes pause");
        }
        on
    });
    if on {
        tracing::warn!("test hook: pausing a resume");
        tokio::time::sleep(PAUSE).await;
        tracing::warn!("test hook: the resume goes on");
    }
}

/// How long [`pause_in_resume`] pauses.
pub const PAUSE: std::time::Duration = std::time::Duration::from_secs(3);

/// Now, truncated to whole seconds (CRL and OCSP times have second precision).
pub fn now_seconds() -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
    let now = jiff::Timestamp::now();
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        jiff::Timestamp::from_second(now.as_second()).unwrap_or(now),
    )
}
