//! Renewal of a certificate (CPS §3.3.3, §4.6, §6.3.2.2): which certificate a
//! `renewalOf` request renews, whether it may, and the claim that makes the
//! renewal happen once.
//!
//! The original is read from the CA's register (its IssuedCertificate, through
//! the CertificateRequest `renewalOf` names), never from the request's status: the
//! register holds the certificate as signed and its current state (Held,
//! Revoked). "Once" is a claim on that record: the annotation
//! `chop.dev/renewed-by: <renewal request>`, written with the record's
//! resourceVersion as precondition right before the renewal's serial is reserved,
//! so two renewal requests (or a renewal and a revocation) racing for one
//! certificate cannot both win. A claim is permanent.
//!
//! Renewal and re-key exclude each other (CPS §4.6.2: "在憑證到期前的60天開始至
//! 到期後3年內，用戶如選擇更換金鑰，就不能做原有憑證的展期；反之，用戶如選擇將原有的
//! 憑證展期，就不能做更換金鑰"): [`rekeyed`] refuses a renewal when the subscriber
//! already has a certificate of the profile with another key issued since the
//! original's window opened; [`renewed`] refuses a new key for a subscriber and
//! profile while a renewed certificate of theirs is valid (not revoked, not
//! expired: its notAfter is the end of the window). Both read the register by
//! label (CA, subscriber id, profile). Two such requests reconciled at the same
//! instant can still both pass: the check is not a claim.

use std::time::SystemTime;

use ca::csr::SubjectKey;
use ca::profile::Profile;
use crds::IssuedCertificate;
use crds::issued_certificate::{LABEL_CA, LABEL_PROFILE, LABEL_SUBSCRIBER_ID};
use der::DecodePem;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use x509_cert::Certificate;

use crate::error::{Error, Result};
use crate::register::{self, Target};

/// Annotation on the original's record naming the CertificateRequest that renews it.
pub const ANNOTATION_RENEWED_BY: &str = "chop.dev/renewed-by";

/// Why a renewal is refused: the `Failed` condition's reason and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// PascalCase reason.
    pub reason: &'static str,
    /// What the applicant or the RA should know.
    pub message: String,
}

fn refuse(reason: &'static str, message: String) -> Refusal {
    Refusal { reason, message }
}

/// The certificate being renewed.
#[derive(Clone, Debug)]
pub struct Original {
    /// Its record in the CA's register.
    pub record: IssuedCertificate,
    /// The certificate itself, parsed from the record.
    pub certificate: Certificate,
}

impl Original {
    fn from_record(record: IssuedCertificate, object: &str) -> Result<Self> {
        let certificate =
            Certificate::from_pem(record.spec.certificate.as_bytes()).map_err(|e| {
                Error::Invalid {
                    object: object.to_string(),
                    message: format!(
                        "the certificate in IssuedCertificate {} does not parse: {e}",
                        record.name_any()
                    ),
                }
            })?;
        Ok(Original {
            record,
            certificate,
        })
    }

    /// The original's notAfter.
    pub fn not_after(&self) -> SystemTime {
        ca::time::from_x509(&self.certificate.tbs_certificate.validity.not_after)
    }
}

/// Find the record of the certificate of CertificateRequest `of` at CA `ca`.
pub async fn find(
    client: &kube::Client,
    ns: &str,
    ca: &str,
    of: &str,
    object: &str,
) -> Result<std::result::Result<Original, Refusal>> {
    let reference = crds::common::LocalObjectReference {
        name: of.to_string(),
    };
    Ok(
        match register::resolve(client, ns, ca, Some(&reference), None).await? {
            Target::Found(record) => Ok(Original::from_record(*record, object)?),
            Target::RequestNotFound => Err(refuse(
                "RenewalTargetNotFound",
                format!("renewalOf: CertificateRequest {of:?} not found"),
            )),
            Target::NotIssued => Err(refuse(
                "RenewalTargetNotIssued",
                format!("renewalOf: CertificateRequest {of:?} has no certificate"),
            )),
            Target::Ambiguous(records) => Err(refuse(
                "RenewalTargetAmbiguous",
                format!(
                    "renewalOf: CertificateRequest {of:?} is gone and CertificateAuthority {ca:?} issued several certificates for requests of that name ({}); ask the RA which one to renew",
                    records.join(", ")
                ),
            )),
            Target::UnknownSerial => Err(refuse(
                "RenewalTargetNotFound",
                format!(
                    "renewalOf: CertificateRequest {of:?} was not issued by CertificateAuthority {ca:?} (no record in its register)"
                ),
            )),
        },
    )
}

/// The original a reserved renewal was claimed on: found through `of` as usual,
/// or, when that request has since been deleted, by the claim naming `renewal`
/// among the records of the subscriber the renewal reserved (`subscriber_id`;
/// all of the CA's records only when there is none).
pub async fn find_claimed(
    client: &kube::Client,
    ns: &str,
    ca: &str,
    of: &str,
    renewal: &str,
    subscriber_id: Option<&str>,
    object: &str,
) -> Result<std::result::Result<Original, Refusal>> {
    match find(client, ns, ca, of, object).await? {
        Ok(o) => Ok(Ok(o)),
        Err(refusal) => {
            let api: Api<IssuedCertificate> = Api::namespaced(client.clone(), ns);
            let selector = match subscriber_id {
                Some(sid) => format!("{LABEL_CA}={ca},{LABEL_SUBSCRIBER_ID}={sid}"),
                None => format!("{LABEL_CA}={ca}"),
            };
            let records = api
                .list(&ListParams::default().labels(&selector))
                .await
                .map_err(Error::kube("list IssuedCertificates"))?;
            match records
                .items
                .into_iter()
                .find(|r| register::annotation(r, ANNOTATION_RENEWED_BY) == Some(renewal))
            {
                Some(r) => Ok(Ok(Original::from_record(r, object)?)),
                None => Ok(Err(refusal)),
            }
        }
    }
}

/// What the renewal request says about the key, if anything.
#[derive(Clone, Copy, Debug)]
pub enum KeyClaim<'a> {
    /// Nothing: the original's key is used.
    None,
    /// A PKCS#10 request (its proof of possession is verified).
    Csr(&'a str),
    /// An RA-attested SubjectPublicKeyInfo.
    PublicKey(&'a str),
}

/// Whether `original` may be renewed by request `renewal` under `profile` (the
/// CA's profile for the renewal's `profile` name, `profile_label` its CRD name)
/// at `now`. Checks, in order: the profile renews at all, it is the original's,
/// the original is not itself a renewal, not revoked, not held, not already
/// renewed by another request, `now` is inside the window, and the key given (if
/// any) is the original's.
pub fn check(
    original: &Original,
    renewal: &str,
    profile: &Profile,
    profile_label: &str,
    key: &KeyClaim<'_>,
    now: SystemTime,
) -> std::result::Result<(), Refusal> {
    let record = &original.record;
    let name = record.name_any();
    let Some(rule) = profile.renewal.as_ref() else {
        return Err(refuse(
            "NotRenewable",
            format!(
                "{profile_label} certificates cannot be renewed (CPS §6.3.2.2); request a new certificate with a new key pair"
            ),
        ));
    };
    if record.spec.profile != profile_label {
        return Err(refuse(
            "RenewalProfileMismatch",
            format!(
                "the original certificate ({name}) is a {} certificate; a renewal keeps the profile (give profile {})",
                record.spec.profile, record.spec.profile
            ),
        ));
    }
    if let Some(of) = &record.spec.renewal_of {
        return Err(refuse(
            "RenewalOfRenewal",
            format!(
                "the certificate {name} is itself the renewal of CertificateRequest {:?}; a certificate is renewed once only (CPS §6.3.2.2)",
                of.name
            ),
        ));
    }
    match register::state(record) {
        Ok(register::State::Valid) => {}
        Ok(register::State::Revoked) => {
            return Err(refuse(
                "CertificateRevoked",
                format!(
                    "the certificate {name} is revoked; a revoked certificate cannot be renewed (CPS §4.6.1)"
                ),
            ));
        }
        Ok(register::State::Held) => {
            return Err(refuse(
                "CertificateHeld",
                format!(
                    "the certificate {name} is on hold; resume it before renewing (CPS §4.6.1)"
                ),
            ));
        }
        Err(e) => return Err(refuse("InvalidRecord", e.to_string())),
    }
    if let Some(by) = register::annotation(record, ANNOTATION_RENEWED_BY)
        && by != renewal
    {
        return Err(refuse(
            "AlreadyRenewed",
            format!(
                "the certificate {name} was already renewed by CertificateRequest {by:?}; a certificate is renewed once only (CPS §6.3.2.2)"
            ),
        ));
    }
    if let Err(e) = ca::issue::check_renewal_window(original.not_after(), now, rule) {
        return Err(refuse("OutsideRenewalWindow", e.to_string()));
    }
    let given = match key {
        KeyClaim::None => return Ok(()),
        KeyClaim::Csr(pem) => SubjectKey::from_csr(pem.as_bytes()),
        KeyClaim::PublicKey(pem) => SubjectKey::from_attested_spki(pem.as_bytes()),
    };
    match given {
        Err(e) => Err(refuse(e.reason(), e.to_string())),
        Ok(k) if *k.spki() != original.certificate.tbs_certificate.subject_public_key_info => {
            Err(refuse(
                "RenewalKeyMismatch",
                format!(
                    "the key in this request is not the key of {name}; a renewal keeps the key (CPS §3.3.3): leave csr and publicKey out, or give the original's key"
                ),
            ))
        }
        Ok(_) => Ok(()),
    }
}

/// The subscriber's records of one profile at CA `ca`: the register's index
/// names them and each is read by GET (a cost that does not grow with the
/// register, [`crate::record_index`]); a label-selected list until the index
/// has completed its first list.
async fn subscriber_records(
    client: &kube::Client,
    index: &crate::record_index::RecordIndex,
    ns: &str,
    ca: &str,
    subscriber_id: &str,
    profile_label: &str,
) -> Result<Vec<IssuedCertificate>> {
    let api: Api<IssuedCertificate> = Api::namespaced(client.clone(), ns);
    if let Some(names) = index.of_subscriber(ns, ca, subscriber_id, profile_label) {
        let mut records = Vec::with_capacity(names.len());
        for name in names {
            if let Some(r) = api
                .get_opt(&name)
                .await
                .map_err(Error::kube("get the subscriber's IssuedCertificate"))?
                && register::label(&r, LABEL_CA) == Some(ca)
                && register::label(&r, LABEL_SUBSCRIBER_ID) == Some(subscriber_id)
                && register::label(&r, LABEL_PROFILE) == Some(profile_label)
            {
                records.push(r);
            }
        }
        return Ok(records);
    }
    let selector = format!(
        "{LABEL_CA}={ca},{LABEL_SUBSCRIBER_ID}={subscriber_id},{LABEL_PROFILE}={profile_label}"
    );
    Ok(api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(Error::kube("list the subscriber's IssuedCertificates"))?
        .items)
}

/// Refuse renewing `original` (window opening `window_opens`) when its
/// subscriber already re-keyed: a certificate of the same profile with another
/// key, not itself a renewal, issued since the window opened.
pub async fn rekeyed(
    ctx: &crate::context::Context,
    ns: &str,
    ca: &str,
    original: &Original,
    window_opens: SystemTime,
) -> Result<Option<Refusal>> {
    let spec = &original.record.spec;
    let Some(sid) = &spec.subscriber_id else {
        return Ok(None);
    };
    let records = subscriber_records(&ctx.client, &ctx.records, ns, ca, sid, &spec.profile).await?;
    Ok(records
        .iter()
        .find(|r| {
            r.spec.key_fingerprint != spec.key_fingerprint
                && r.spec.renewal_of.is_none()
                && super::reconcilers::from_time(&r.spec.not_before) >= window_opens
        })
        .map(|r| {
            refuse(
                "AlreadyRekeyed",
                format!(
                    "the subscriber already has a {} certificate with a new key ({}, serial {}) issued in the renewal window; renewal and re-key exclude each other (CPS §4.6.2)",
                    spec.profile,
                    r.name_any(),
                    r.spec.serial_number
                ),
            )
        }))
}

/// Refuse a new key (`key_fingerprint`) for subscriber `subscriber_id` and
/// profile `profile_label` while a renewed certificate of theirs with another
/// key is valid at `now`.
pub async fn renewed(
    ctx: &crate::context::Context,
    ns: &str,
    ca: &str,
    subscriber_id: &str,
    profile_label: &str,
    key_fingerprint: &str,
    now: SystemTime,
) -> Result<Option<Refusal>> {
    let records = subscriber_records(
        &ctx.client,
        &ctx.records,
        ns,
        ca,
        subscriber_id,
        profile_label,
    )
    .await?;
    Ok(records
        .iter()
        .find(|r| {
            r.spec.renewal_of.is_some()
                && r.spec.key_fingerprint != key_fingerprint
                && !register::is_revoked(r)
                && super::reconcilers::from_time(&r.spec.not_after) > now
        })
        .map(|r| {
            refuse(
                "AlreadyRenewed",
                format!(
                    "the subscriber renewed their {profile_label} certificate ({}, serial {}, valid until {}); a new key pair is possible once it expires or is revoked: renewal and re-key exclude each other (CPS §4.6.2)",
                    r.name_any(),
                    r.spec.serial_number,
                    r.spec.not_after.0
                ),
            )
        }))
}

/// Claim `original` for `renewal` (the `chop.dev/renewed-by` annotation), on
/// the condition that the record has not changed since it was read: [`check`]
/// decided on that very read (Valid, not renewed by another), so a hold, a
/// revocation or another claim landing since makes the write a 409 Conflict,
/// an error whose retry reads the record again and checks again. A claim is
/// never written on a held or revoked record.
pub async fn claim(api: &Api<IssuedCertificate>, original: &Original, renewal: &str) -> Result<()> {
    let record = &original.record;
    if register::annotation(record, ANNOTATION_RENEWED_BY) == Some(renewal) {
        return Ok(());
    }
    if register::state(record)? != register::State::Valid {
        return Err(Error::Invalid {
            object: crate::context::object_id(record),
            message: "a renewal claim on a record that is not Valid".into(),
        });
    }
    register::annotate_at_version(
        api,
        record,
        &[(ANNOTATION_RENEWED_BY, Some(renewal.to_string()))],
    )
    .await?;
    Ok(())
}
