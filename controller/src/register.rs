//! The CA's register: one `IssuedCertificate` per signed certificate (ADR 0002).
//! Creating the record is the commit point of an issuance; `AlreadyExists` means
//! an earlier attempt committed, and what it recorded wins.

use std::collections::BTreeMap;

use ca::issue::IssuedCertificate as Signed;
use ca::name::DistinguishedName;
use ca::serial::Serial;
use crds::common::LocalObjectReference;
use crds::issued_certificate::{
    LABEL_CA, LABEL_KEY_FINGERPRINT, LABEL_PROFILE, LABEL_STATUS, LABEL_SUBSCRIBER_ID,
};
use crds::{IssuedCertificate, IssuedCertificateSpec, IssuedCertificateStatus};
use der::Encode;
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

/// Whether the record is revoked (by its status or its label: the label is
/// written first, so either one means a revocation is under way or done).
pub fn is_revoked(record: &IssuedCertificate) -> bool {
    record.status.as_ref().and_then(|s| s.state.as_deref()) == Some(REVOKED)
        || label(record, LABEL_STATUS) == Some(REVOKED)
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
                return Ok(Target::RequestNotFound);
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

/// Patch the record's `chop.dev/status` label and the given annotations (`None`
/// removes one) with a merge patch. With `resource_version`, the patch only
/// applies to that version (409 Conflict otherwise): used to claim a record.
pub async fn patch_labels(
    api: &Api<IssuedCertificate>,
    record: &IssuedCertificate,
    state: &str,
    annotations: &[(&str, Option<&str>)],
    resource_version: Option<&str>,
) -> Result<IssuedCertificate> {
    let ann: serde_json::Map<String, serde_json::Value> = annotations
        .iter()
        .map(|(k, v)| ((*k).to_string(), serde_json::json!(v)))
        .collect();
    let mut meta = serde_json::json!({
        "labels": { LABEL_STATUS: state },
        "annotations": ann,
    });
    if let Some(rv) = resource_version {
        meta["resourceVersion"] = serde_json::json!(rv);
    }
    api.patch(
        &record.name_any(),
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({ "metadata": meta })),
    )
    .await
    .map_err(Error::kube("patch IssuedCertificate labels"))
}

/// Write the record's status by server-side apply (field manager
/// `chop-controller`, so fields left out, e.g. `revokedAt` on resumption, are
/// removed). With `resource_version`, only if the record is still at it.
pub async fn write_record_status(
    api: &Api<IssuedCertificate>,
    record: &IssuedCertificate,
    status: &IssuedCertificateStatus,
    resource_version: Option<&str>,
) -> Result<IssuedCertificate> {
    let mut body = serde_json::json!({
        "apiVersion": "chop.dev/v1alpha1",
        "kind": "IssuedCertificate",
        "status": status,
    });
    if let Some(rv) = resource_version {
        body["metadata"] = serde_json::json!({ "resourceVersion": rv });
    }
    api.patch_status(
        &record.name_any(),
        &PatchParams::apply(crate::context::FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(Error::kube("apply IssuedCertificate status"))
}

/// Mirror the record's state into `certificateStatus` of the CertificateRequest
/// it was issued for, if that still exists (merge patch: the request's
/// reconciler never writes this field, so its server-side applies keep it).
pub async fn reflect_on_request(client: &kube::Client, record: &IssuedCertificate, state: &str) {
    let (Some(ns), Some(req)) = (record.namespace(), record.spec.request_ref.as_ref()) else {
        return;
    };
    let api: Api<crds::CertificateRequest> = Api::namespaced(client.clone(), &ns);
    let patch = serde_json::json!({ "status": { "certificateStatus": state } });
    let params = PatchParams {
        field_manager: Some(crate::context::FIELD_MANAGER.to_string()),
        ..PatchParams::default()
    };
    match api
        .patch_status(&req.name, &params, &Patch::Merge(&patch))
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => {
            tracing::warn!(error = %e, request = %req.name, "could not mirror the certificate status on its request");
        }
    }
}

/// Now, truncated to whole seconds (CRL and OCSP times have second precision).
pub fn now_seconds() -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
    let now = jiff::Timestamp::now();
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        jiff::Timestamp::from_second(now.as_second()).unwrap_or(now),
    )
}
