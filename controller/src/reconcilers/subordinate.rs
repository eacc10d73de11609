//! A subordinate CA's certificate from its parent in the same cluster
//! (`parentRef`), only through an officer's approval (issue 8, finding 2).
//!
//! The CertificateAuthority reconciler never signs a CA certificate on its
//! own: an administrator who may create CertificateAuthorities would otherwise
//! get a certificate with keyCertSign from the root alone. Instead the
//! controller asks for it like anyone else, with a CertificateRequest
//! `<ca>-ca-certificate` (profile SubordinateCA, the subordinate's subject and
//! the CSR its HSM key signed, owned by the subordinate), which then takes the
//! path of every request: chop-approval (verb `approve` on the parent's
//! signer), chop-no-self-approval, no auto-approval for CA profiles, lint
//! before sign, the register as commit point. The subordinate's key itself is
//! born under a quorum (a Generate KeyCeremony named in `spec.hsm.keyFrom`);
//! the approval of its certificate is still one officer's (not yet a quorum).
//!
//! The certificate is then read from the parent's register (the
//! IssuedCertificate of the request, written by the controller alone), and
//! taken only if it certifies this CA's HSM key.

use std::collections::BTreeMap;

use crds::certificate_request::ProfileName;
use crds::common::LocalObjectReference;
use crds::{CertificateAuthority, CertificateRequest, CertificateRequestSpec, IssuedCertificate};
use der::DecodePem;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::{Resource, ResourceExt};
use x509_cert::Certificate;

use crate::conditions;
use crate::context::{Context, object_id};
use crate::error::{Error, Result};
use crate::register;

/// Label on the request naming the subordinate CA it asks a certificate for.
pub const LABEL_SUBORDINATE: &str = "chop.dev/subordinate-ca";

/// Where a subordinate's certificate stands.
#[derive(Debug)]
pub enum Outcome {
    /// Issued, for this CA's key (PEM).
    Certificate(String),
    /// Not yet, or refused: the `Ready=False` reason and message.
    Waiting(&'static str, String),
}

/// The name of the CertificateRequest that asks `ca`'s parent for its certificate.
pub fn request_name(ca: &CertificateAuthority) -> String {
    format!("{}-ca-certificate", ca.name_any())
}

/// The request a subordinate CA's certificate is asked for with.
fn desired(
    ca: &CertificateAuthority,
    parent: &CertificateAuthority,
    csr: &str,
) -> CertificateRequest {
    CertificateRequest {
        metadata: ObjectMeta {
            name: Some(request_name(ca)),
            namespace: ca.namespace(),
            labels: Some(BTreeMap::from([(
                LABEL_SUBORDINATE.to_string(),
                ca.name_any(),
            )])),
            owner_references: ca.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        spec: CertificateRequestSpec {
            ca_ref: LocalObjectReference {
                name: parent.name_any(),
            },
            profile: ProfileName::SubordinateCa,
            subscriber: None,
            subject: Some(ca.spec.subject.clone()),
            csr: Some(csr.to_string()),
            public_key: None,
            email: None,
            email_verified: false,
            renewal_of: None,
            // The administrator who created the CertificateAuthority asked for
            // this certificate with exactly this subject and key.
            accepted: true,
        },
        status: None,
    }
}

/// Whether `cr` is the request this CA made: owned by it (uid), for its
/// parent, its subject and its CSR.
fn is_ours(cr: &CertificateRequest, want: &CertificateRequest, ca: &CertificateAuthority) -> bool {
    let owned = cr
        .owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && Some(&o.uid) == ca.uid().as_ref());
    owned
        && cr.spec.ca_ref == want.spec.ca_ref
        && cr.spec.profile == want.spec.profile
        && cr.spec.subject == want.spec.subject
        && cr.spec.csr == want.spec.csr
}

/// Ask `parent` for `ca`'s certificate through a CertificateRequest, or take
/// the certificate once an officer approved it and the parent signed it.
pub async fn certificate(
    ca: &CertificateAuthority,
    ctx: &Context,
    parent: &CertificateAuthority,
    csr: &str,
    signer: &dyn ca::signer::Signer,
) -> Result<Outcome> {
    let ns = ca.namespace().unwrap_or_default();
    let api: Api<CertificateRequest> = Api::namespaced(ctx.client.clone(), &ns);
    let want = desired(ca, parent, csr);
    let name = request_name(ca);
    let cr = match api
        .get_opt(&name)
        .await
        .map_err(Error::kube("get CertificateRequest"))?
    {
        Some(cr) => cr,
        None => match api.create(&PostParams::default(), &want).await {
            Ok(cr) => {
                ctx.event(
                    ca,
                    false,
                    "CertificateRequested",
                    format!(
                        "asked parent {:?} for this CA's certificate with CertificateRequest {name:?}; an officer must approve it",
                        parent.name_any()
                    ),
                )
                .await;
                cr
            }
            Err(kube::Error::Api(s)) if s.code == 409 => api
                .get(&name)
                .await
                .map_err(Error::kube("get CertificateRequest"))?,
            Err(e) => return Err(Error::kube("create CertificateRequest")(e)),
        },
    };
    if !is_ours(&cr, &want, ca) {
        return Ok(Outcome::Waiting(
            "CertificateRequestConflict",
            format!(
                "CertificateRequest {name:?} exists but is not the one this CA made (owner, parent, subject or CSR differ); \
                 delete it so that the controller can ask for this CA's certificate"
            ),
        ));
    }
    let status = cr.status.clone().unwrap_or_default();
    if conditions::is_true(&status.conditions, "Denied") {
        return Ok(Outcome::Waiting(
            "CertificateDenied",
            format!(
                "an officer denied CertificateRequest {name:?}: parent {:?} will not sign this CA's certificate",
                parent.name_any()
            ),
        ));
    }
    if let Some(failed) =
        conditions::find(&status.conditions, "Failed").filter(|c| c.status == conditions::TRUE)
    {
        return Ok(Outcome::Waiting(
            "CertificateRequestFailed",
            format!(
                "CertificateRequest {name:?} failed ({}): {}",
                failed.reason, failed.message
            ),
        ));
    }
    let Some(serial) = status
        .serial_number
        .as_deref()
        .filter(|_| status.certificate.is_some())
    else {
        return Ok(Outcome::Waiting(
            "WaitingForApproval",
            format!(
                "waiting for an officer to approve CertificateRequest {name:?} (profile SubordinateCA) before parent {:?} signs this CA's certificate",
                parent.name_any()
            ),
        ));
    };
    // Read the certificate from the parent's register (the controller's own
    // record), not from the request's status.
    let id = object_id(ca);
    let serial = ca::serial::Serial::from_hex(serial).map_err(Error::ca(&id))?;
    let records: Api<IssuedCertificate> = Api::namespaced(ctx.client.clone(), &ns);
    let record = records
        .get_opt(&register::record_name(&parent.name_any(), &serial))
        .await
        .map_err(Error::kube("get IssuedCertificate"))?;
    let Some(record) = record.filter(|r| {
        r.spec.ca_ref.name == parent.name_any()
            && r.spec.request_ref.as_ref().is_some_and(|q| q.name == name)
    }) else {
        return Ok(Outcome::Waiting(
            "CertificateNotInRegister",
            format!(
                "CertificateRequest {name:?} names serial {} but parent {:?}'s register has no certificate of it for that request",
                serial.to_hex(),
                parent.name_any()
            ),
        ));
    };
    let cert =
        Certificate::from_pem(record.spec.certificate.as_bytes()).map_err(|e| Error::Invalid {
            object: id.clone(),
            message: format!("the register's certificate does not parse: {e}"),
        })?;
    if cert.tbs_certificate.subject_public_key_info != *signer.public_key() {
        return Ok(Outcome::Waiting(
            "CertificateKeyMismatch",
            "the parent's certificate is not for this CA's HSM key".into(),
        ));
    }
    Ok(Outcome::Certificate(record.spec.certificate))
}
