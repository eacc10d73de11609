//! The CA's register: one `IssuedCertificate` per signed certificate (ADR 0002).
//! Creating the record is the commit point of an issuance; `AlreadyExists` means
//! an earlier attempt committed, and what it recorded wins.

use std::collections::BTreeMap;

use ca::issue::IssuedCertificate as Signed;
use ca::name::DistinguishedName;
use ca::serial::Serial;
use crds::common::LocalObjectReference;
use crds::issued_certificate::{
    LABEL_CA, LABEL_KEY_FINGERPRINT, LABEL_STATUS, LABEL_SUBSCRIBER_ID,
};
use crds::{IssuedCertificate, IssuedCertificateSpec};
use der::Encode;
use kube::api::{Api, ObjectMeta, PostParams};

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
    Ok(hex_lower(
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &spki).as_ref(),
    ))
}

/// Create the record of `signed` in `api` (its namespace), or return the one an
/// earlier attempt created.
pub async fn commit(
    api: &Api<IssuedCertificate>,
    signed: &Signed,
    entry: Entry,
    object: &str,
) -> Result<IssuedCertificate> {
    let cerr = |source: ca::Error| Error::Ca {
        object: object.to_string(),
        source,
    };
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
    ]);
    if let Some(sid) = &entry.subscriber_id {
        labels.insert(LABEL_SUBSCRIBER_ID.to_string(), sid.clone());
    }
    let name = record_name(&entry.ca, &signed.serial);
    let record = IssuedCertificate {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some(labels),
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
