//! Signing: the certificate a request asks for (profile, subject, key), built
//! from the reserved values, linted with a throwaway key, signed in the HSM and
//! committed to the register; then recorded in the request's status.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use ca::csr::SubjectKey;
use ca::issue::IssuanceRequest;
use ca::name::DistinguishedName;
use ca::profile::Profile;
use ca::serial::Serial;
use crds::certificate_request::ProfileName;
use crds::common::LocalObjectReference;
use crds::{CertificateAuthority, CertificateRequest, IssuedCertificate};
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;

use super::{fail, fail_with, set_conditions, write_status};
use crate::conditions::Cond;
use crate::context::{Context, SigningContext, object_id};
use crate::error::{Error, Result};
use crate::reconcilers::certificate_authority::dn_from_spec;
use crate::reconcilers::crl_schedule::Partitioning;
use crate::register;
use crate::renewal::Original;

/// The core profile for a CRD profile name, with the CA's `profiles` settings
/// (validity, attested keys, minimum key sizes; the core's floors still apply).
pub fn profile_for(name: ProfileName, ca: &CertificateAuthority) -> Result<Profile, ca::Error> {
    let settings = &ca.spec.profiles;
    let (mut p, validity) = match name {
        ProfileName::Signature => (
            Profile::subscriber_signature(),
            settings.subscriber_validity.as_ref(),
        ),
        ProfileName::Encryption => (
            Profile::subscriber_encryption(),
            settings.subscriber_validity.as_ref(),
        ),
        ProfileName::MobileSignature => (
            Profile::mobile_signature(),
            settings.mobile_validity.as_ref(),
        ),
        ProfileName::OcspResponder => (
            Profile::ocsp_responder(),
            settings.responder_validity.as_ref(),
        ),
        ProfileName::SubordinateCa => (Profile::subordinate_ca(), None),
    };
    if let Some(v) = validity {
        p.validity = crate::reconcilers::parse_period(v).map_err(|m| {
            ca::Error::InvalidValidity(format!(
                "CertificateAuthority {:?} profiles: {m}",
                ca.name_any()
            ))
        })?;
    }
    if let (Some(ext), Some(rule)) = (settings.renewal_extension.as_ref(), p.renewal.as_mut()) {
        rule.extension = crate::reconcilers::parse_period(ext).map_err(|m| {
            ca::Error::InvalidValidity(format!(
                "CertificateAuthority {:?} profiles.renewalExtension: {m}",
                ca.name_any()
            ))
        })?;
    }
    if settings.allow_attested_public_keys {
        p.allow_attested_spki = true;
    }
    if let Some(bits) = settings.min_rsa_bits.and_then(|b| u32::try_from(b).ok()) {
        p.key_policy.min_rsa_bits = p.key_policy.min_rsa_bits.max(bits);
    }
    if let (Some(bits), Some(min)) = (
        settings.min_ec_bits.and_then(|b| u32::try_from(b).ok()),
        p.key_policy.min_ec_bits,
    ) {
        p.key_policy.min_ec_bits = Some(min.max(bits));
    }
    Ok(p)
}

/// [`profile_for`] for `cr`: the SubordinateCA request a subordinate
/// CertificateAuthority makes for itself (its controller owner,
/// [`crate::reconcilers::subordinate`]) gets that CA's `spec.validity` (10
/// years by default), as the subordinate asked; the CA certificate's own
/// notAfter still caps it.
pub(super) fn profile_for_request(
    cr: &CertificateRequest,
    ca: &CertificateAuthority,
    ctx: &Context,
) -> Result<Profile, ca::Error> {
    let mut p = profile_for(cr.spec.profile, ca)?;
    if cr.spec.profile != ProfileName::SubordinateCa {
        return Ok(p);
    }
    let ns = cr.namespace().unwrap_or_default();
    let subordinate = cr
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true) && o.kind == "CertificateAuthority")
        .and_then(|o| {
            ctx.cached_ca(&ns, &o.name)
                .flatten()
                .filter(|c| c.uid().as_deref() == Some(o.uid.as_str()))
        });
    p.validity = match subordinate.and_then(|c| c.spec.validity) {
        Some(v) => crate::reconcilers::parse_period(&v).map_err(ca::Error::InvalidValidity)?,
        None => ca::profile::Period::Years(10),
    };
    Ok(p)
}

/// The profile's name as written in the CRD.
pub fn profile_label(name: ProfileName) -> &'static str {
    match name {
        ProfileName::Signature => "Signature",
        ProfileName::Encryption => "Encryption",
        ProfileName::MobileSignature => "MobileSignature",
        ProfileName::OcspResponder => "OCSPResponder",
        ProfileName::SubordinateCa => "SubordinateCA",
    }
}

/// The subject key from the request (CSR with proof of possession, or an
/// RA-attested SPKI when the CA allows it).
pub(super) fn subject_key(
    cr: &CertificateRequest,
    ca: &CertificateAuthority,
) -> Result<SubjectKey, ca::Error> {
    match (&cr.spec.csr, &cr.spec.public_key) {
        (Some(csr), _) => SubjectKey::from_csr(csr.as_bytes()),
        (None, Some(_)) if !ca.spec.profiles.allow_attested_public_keys => {
            Err(ca::Error::ProfileViolation {
                profile: profile_label(cr.spec.profile).into(),
                detail: format!(
                    "CertificateAuthority {:?} does not accept RA-attested public keys (profiles.allowAttestedPublicKeys)",
                    ca.name_any()
                ),
            })
        }
        (None, Some(spki)) => SubjectKey::from_attested_spki(spki.as_bytes()),
        (None, None) => Err(ca::Error::Malformed {
            what: "certificate request",
            detail: "neither csr nor publicKey is given".into(),
        }),
    }
}

/// The subject: `C, CN, serialNumber=<subscriber id>` for subscriber profiles,
/// the spec's subject otherwise.
fn subject(
    cr: &CertificateRequest,
    ca: &CertificateAuthority,
    subscriber_id: Option<&str>,
) -> Result<DistinguishedName, ca::Error> {
    match (&cr.spec.subscriber, &cr.spec.subject) {
        (Some(s), _) => {
            let country = ca.spec.subject.country.as_deref().unwrap_or("TW");
            DistinguishedName::subscriber(
                country,
                &s.common_name,
                subscriber_id.unwrap_or("MOICA0000000000"),
            )
        }
        (None, Some(dn)) => dn_from_spec(dn),
        (None, None) => Err(ca::Error::InvalidSubject(
            "neither subscriber nor subject is given".into(),
        )),
    }
}

/// Everything reserved before signing.
#[derive(Clone, Debug)]
pub(super) struct Reserved {
    pub(super) serial: Serial,
    pub(super) not_before: SystemTime,
    pub(super) not_after: SystemTime,
    pub(super) subscriber_id: Option<String>,
    /// The CA's CRL partitioning when signing (its CRLSchedule's `partitions`
    /// and URL template, both immutable): the partition is a function of the
    /// serial, so a re-sign after a crash gives the same certificate.
    pub(super) partitioning: Option<Partitioning>,
}

impl Reserved {
    /// The certificate's CRL partition and its URL, if partitioned.
    fn partition(&self, ca: &CertificateAuthority) -> Option<(u32, String)> {
        self.partitioning
            .as_ref()?
            .assign(&self.serial, &ca.spec.crl_distribution_points)
    }

    /// The partition's URL when `profile` writes a CRL distribution point.
    fn partition_url(&self, ca: &CertificateAuthority, profile: &Profile) -> Option<String> {
        if !profile.include_crl_distribution_points {
            return None;
        }
        self.partition(ca).map(|(_, url)| url)
    }
}

/// The certificate to sign: from the request, or for a renewal from the
/// original's certificate (its subject and key; notBefore = the reserved time,
/// which is also the instant the renewal window is checked at).
pub(super) fn build_request(
    cr: &CertificateRequest,
    ca: &CertificateAuthority,
    ctx: &Context,
    r: &Reserved,
    original: Option<&Original>,
) -> Result<IssuanceRequest, ca::Error> {
    if let Some(o) = original {
        let mut req = IssuanceRequest::renewal(
            &o.certificate,
            profile_for_request(cr, ca, ctx)?,
            r.serial.clone(),
            r.not_before,
        )?;
        req.not_after = Some(r.not_after);
        req.crl_distribution_point = r.partition_url(ca, &req.profile);
        return Ok(req);
    }
    let key = subject_key(cr, ca)?;
    let dn = subject(cr, ca, r.subscriber_id.as_deref())?;
    let mut req = IssuanceRequest::new(
        profile_for_request(cr, ca, ctx)?,
        &dn,
        key,
        r.serial.clone(),
    )?;
    req.not_before = r.not_before;
    req.not_after = Some(r.not_after);
    req.crl_distribution_point = r.partition_url(ca, &req.profile);
    if let (Some(address), true) = (&cr.spec.email, cr.spec.email_verified) {
        req.email = Some(ca::issue::Email {
            address: address.clone(),
            verified: true,
        });
    }
    Ok(req)
}

pub(super) async fn sign_and_record(
    cr: &CertificateRequest,
    ca: &CertificateAuthority,
    ctx: &Context,
    sc: &Arc<SigningContext>,
    reserved: &Reserved,
    original: Option<&Original>,
) -> Result<Action> {
    let id = object_id(cr);
    let request = match build_request(cr, ca, ctx, reserved, original) {
        Ok(r) => r,
        Err(e) => return fail(cr, ca, ctx, &e).await,
    };
    // Recorded only when the certificate names the partition (profiles
    // without a CRL distribution point are on the full CRL only).
    let crl_partition = request
        .crl_distribution_point
        .as_ref()
        .and(reserved.partition(ca))
        .map(|(n, _)| n);
    // The record of the signature is committed before the HSM signs (CPS
    // §5.4.6): without it, nothing is signed and the request waits.
    let ca_key = crate::audit::key_fingerprint(sc.issuer.certificate());
    let serial = reserved.serial.to_hex();
    let intent =
        crate::audit::certificate_issue(cr, &ca_key, &serial, profile_label(cr.spec.profile));
    if let Err(e) = ctx.audit.record(intent).await {
        return audit_wait(cr, ctx, &e).await;
    }
    let sc2 = Arc::clone(sc);
    let started = Instant::now();
    let signed =
        tokio::task::spawn_blocking(move || sc2.issuer.prepare(&request)?.sign(&sc2.issuer))
            .await
            .map_err(|e| Error::Invalid {
                object: id.clone(),
                message: format!("signing task failed: {e}"),
            })?;
    ctx.metrics.hsm("sign", started);
    let signed = match signed {
        Ok(s) => s,
        Err(e) if e.is_transient() => {
            let cond = Cond::no("Issued", e.reason(), e.to_string());
            set_conditions(cr, ctx, &[cond]).await?;
            return Err(Error::Ca {
                object: id,
                source: e,
            });
        }
        Err(e) => return fail(cr, ca, ctx, &e).await,
    };
    let api: Api<IssuedCertificate> =
        Api::namespaced(ctx.client.clone(), &cr.namespace().unwrap_or_default());
    let entry = register::Entry {
        ca: ca.name_any(),
        profile: profile_label(cr.spec.profile).to_string(),
        subscriber_id: reserved.subscriber_id.clone(),
        request_ref: Some(LocalObjectReference {
            name: cr.name_any(),
        }),
        renewal_of: cr.spec.renewal_of.clone(),
    };
    // The commit point: creating the record. AlreadyExists means an earlier
    // attempt committed; use what it recorded.
    let record = register::commit_in_partition(&api, &signed, entry, crl_partition, &id).await?;
    // The subscriber's next request (renewal or re-key rules) reads the
    // register's index: it holds this record from now on.
    ctx.records.observe(&record);
    ctx.audit.note(
        crate::audit::AuditEvent::new("certificate.issued", "succeeded")
            .object(cr)
            .ca(&cr.namespace().unwrap_or_default(), &ca.name_any())
            .serial(record.spec.serial_number.clone())
            .detail("fingerprint", crate::audit::key::sha256_hex(&signed.der))
            .detail("issuedCertificate", record.name_any())
            .dedup(format!(
                "certificate.issued/{}/{}",
                cr.uid().unwrap_or_default(),
                record.spec.serial_number
            )),
    );
    if ctx.crash_after_commit {
        tracing::error!("CHOP_TEST_CRASH_AFTER_COMMIT is set: aborting after the commit");
        std::process::abort();
    }
    record_in_status(cr, ca, ctx, &record, Some(sc.chain_pem.clone())).await
}

/// The trail could not record the signature: `Issued=False AuditUnavailable`
/// and a Warning Event; nothing was signed; retried soon.
pub(super) async fn audit_wait(
    cr: &CertificateRequest,
    ctx: &Context,
    e: &Error,
) -> Result<Action> {
    let msg = format!("{e}; nothing was signed (CPS 5.4.6)");
    let cond = Cond::no("Issued", crate::audit::REASON, msg.clone());
    set_conditions(cr, ctx, &[cond]).await?;
    ctx.event(cr, true, crate::audit::REASON, msg).await;
    ctx.metrics
        .reconcile_error(super::KIND, crate::audit::REASON);
    Ok(Action::requeue(std::time::Duration::from_secs(5)))
}

pub(super) async fn record_in_status(
    cr: &CertificateRequest,
    ca: &CertificateAuthority,
    ctx: &Context,
    record: &IssuedCertificate,
    chain: Option<String>,
) -> Result<Action> {
    // Never adopt another request's certificate (a serial collision, or a
    // reservation that was not the controller's).
    if !super::reservation::is_ours(record, cr, ca) {
        let message = format!(
            "serial {} belongs to {}, a certificate of another request; nothing was recorded",
            record.spec.serial_number,
            record.name_any()
        );
        return fail_with(cr, ca, ctx, "ReservationConflict", message).await;
    }
    let mut status = cr.status.clone().unwrap_or_default();
    status.serial_number = Some(record.spec.serial_number.clone());
    status.subscriber_id = record.spec.subscriber_id.clone();
    status.certificate = Some(record.spec.certificate.clone());
    status.chain = chain;
    status.not_before = Some(record.spec.not_before.clone());
    status.not_after = Some(record.spec.not_after.clone());
    status.key_fingerprint = Some(record.spec.key_fingerprint.clone());
    status.certificate_status = Some("Valid".into());
    let msg = format!(
        "issued serial {} ({})",
        record.spec.serial_number,
        record.name_any()
    );
    let conds = [Cond::yes("Issued", "Issued", msg.clone())];
    write_status(cr, ctx, status, &conds, None).await?;
    ctx.event(cr, false, "Issued", msg).await;
    ctx.metrics
        .issued(&ca.name_any(), profile_label(cr.spec.profile), "Issued");
    tracing::info!(serial = %record.spec.serial_number, "issued");
    Ok(Action::await_change())
}
