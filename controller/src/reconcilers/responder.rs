//! The CA's chop-responder: its delegated OCSP certificate and its workload.
//!
//! Part of the CertificateAuthority reconcile, run once the CA can sign.
//!
//! ## The delegated OCSP certificate (CPS §4.9.9, RFC 6960 §4.2.2.2)
//! The CA key stays in the HSM and signs certificates and CRLs only; OCSP
//! responses are signed by a *delegated responder*: an RSA-2048 key the
//! controller generates in software, certified by the CA under the
//! OCSPResponder profile (digitalSignature, id-kp-OCSPSigning,
//! id-pkix-ocsp-nocheck). Because nocheck certificates cannot themselves be
//! revoked in practice, they are short-lived: `profiles.responderValidity`
//! (default 168 h) and renewed automatically once less than a third of that
//! validity is left, or at once when the Secret is missing, unreadable, not
//! issued by the current CA certificate, or its key does not match.
//!
//! The key and certificate live in the Secret `<ca>-ocsp-responder` (type
//! `kubernetes.io/tls`: `tls.crt`, `tls.key` as unencrypted PKCS#8, `ca.crt`).
//! chop-responder reads that Secret through the API and swaps in a renewed
//! certificate without a restart. Every responder certificate is recorded in the
//! CA's register (an IssuedCertificate, profile `OCSPResponder`) before the
//! Secret is written, like any certificate the CA signs.
//!
//! ## The workload
//! Applied by server-side apply as `chop-controller`, each owned by the CA
//! (deleted with it by the garbage collector):
//! - ServiceAccount `<ca>-responder`;
//! - RoleBinding `<ca>-responder` to the ClusterRole `chop:responder`
//!   (read-only; the controller may `bind` that one role and no other);
//! - Role `<ca>-responder` (`get` on the Secret `<ca>-ocsp-responder` only)
//!   and its RoleBinding `<ca>-responder-key`;
//! - Deployment `<ca>-responder`: `spec.responder.replicas` of
//!   `chop-responder serve --kube --namespace NS --ca NAME`, probes on
//!   `/readyz` and `/healthz`, non-root, read-only root filesystem;
//! - Service `<ca>-responder`: port 80 to the responders' 8080, the address to
//!   put in `ocspUrls`.
//!
//! `ResponderReady` says whether the certificate is current and the objects are
//! applied; `status.responder` records the certificate's serial and notAfter and
//! the Deployment's available replicas.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ca::csr::SubjectKey;
use ca::issue::IssuanceRequest;
use ca::serial::Serial;
use ca::signer::software::SoftwareKey;
use ca::signer::{KeySpec, SignatureAlgorithm, Signer};
use crds::CertificateAuthority;
use crds::IssuedCertificate;
use crds::certificate_authority::ResponderStatus;
use crds::certificate_request::ProfileName;
use crds::issued_certificate::LABEL_CA;
use der::{DecodePem, Encode};
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, HTTPGetAction, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, Secret, SecurityContext, Service, ServiceAccount, ServicePort,
    ServiceSpec,
};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use x509_cert::Certificate;
use zeroize::Zeroizing;

use super::to_time;
use crate::conditions::Cond;
use crate::context::{Context, FIELD_MANAGER, SigningContext, SigningKey, object_id};
use crate::error::{Error, Result};
use crate::register;

/// The ClusterRole every responder is bound to (manifests/rbac/responder.yaml).
pub const RESPONDER_CLUSTER_ROLE: &str = "chop:responder";
/// Default validity of the delegated responder certificate (7 days).
pub const DEFAULT_VALIDITY_DAYS: u32 = 7;
/// The image used when `spec.responder.image` is not set.
pub const DEFAULT_IMAGE: &str = concat!(
    "ghcr.io/chop-dev/chop-responder:",
    env!("CARGO_PKG_VERSION")
);
/// The image of `ca`'s responder: `spec.responder.image` if it is one of
/// `allowed` (`--responder-image`), else why not; the first allowed one when
/// the spec names none.
pub fn responder_image(ca: &CertificateAuthority, allowed: &[String]) -> Result<String, String> {
    match &ca.spec.responder.image {
        None => Ok(allowed
            .first()
            .cloned()
            .unwrap_or_else(|| DEFAULT_IMAGE.to_string())),
        Some(image) if allowed.iter().any(|a| a == image) => Ok(image.clone()),
        Some(image) => Err(format!(
            "spec.responder.image {image:?} is not allowed: the responder holds the delegated OCSP \
             signing key, so the controller runs only the images given with --responder-image ({})",
            allowed.join(", ")
        )),
    }
}

/// Container port of chop-responder.
pub const CONTAINER_PORT: i32 = 8080;

/// Name of the Secret holding the delegated responder key and certificate.
pub fn secret_name(ca: &str) -> String {
    format!("{ca}-ocsp-responder")
}

/// Name of the responder ServiceAccount, RoleBinding, Deployment and Service.
pub fn workload_name(ca: &str) -> String {
    format!("{ca}-responder")
}

/// What [`ensure`] found or did.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The condition to record (`ResponderReady`).
    pub condition: Cond,
    /// The status block.
    pub status: ResponderStatus,
    /// When to look again at the latest (the renewal time).
    pub recheck: Duration,
}

/// Make sure the CA has a current delegated responder certificate and its
/// workload objects. Problems that concern only the responder come back as a
/// `ResponderReady=False` outcome; the CA itself stays Ready.
///
/// A successful check is remembered for a minute (or until the renewal time,
/// if sooner) per CA uid, generation and certificate, so the reconciles that
/// every new IssuedCertificate triggers do not re-read the Secret and re-apply
/// the workload each time.
pub async fn ensure(
    ca: &CertificateAuthority,
    ctx: &Context,
    sc: &Arc<SigningContext>,
    key: &SigningKey,
) -> Outcome {
    let now = SystemTime::now();
    if let Some(o) = ctx.responder_outcome(key, now) {
        return o;
    }
    match ensure_inner(ca, ctx, sc).await {
        Ok(o) => {
            let until = (now + Duration::from_secs(60)).min(now + o.recheck);
            ctx.remember_responder(key.clone(), until, o.clone());
            o
        }
        Err(e) => {
            tracing::warn!(error = %e, "responder not ready");
            if let Error::Refused {
                reason, message, ..
            } = &e
            {
                ctx.event(ca, true, reason, message.clone()).await;
            }
            Outcome {
                condition: Cond::no("ResponderReady", e.metric_label(), e.to_string()),
                status: ca
                    .status
                    .as_ref()
                    .and_then(|s| s.responder.clone())
                    .unwrap_or_default(),
                recheck: Duration::from_secs(30),
            }
        }
    }
}

async fn ensure_inner(
    ca: &CertificateAuthority,
    ctx: &Context,
    sc: &Arc<SigningContext>,
) -> Result<Outcome> {
    let id = object_id(ca);
    let ns = ca.namespace().unwrap_or_default();
    let name = ca.name_any();
    let validity = validity_days(ca)?;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let existing = secrets
        .get_opt(&secret_name(&name))
        .await
        .map_err(Error::kube("get responder Secret"))?;
    let now = SystemTime::now();
    let current = existing
        .as_ref()
        .and_then(|s| current_certificate(s, sc.issuer.certificate()).ok());
    let (cert, renewed) = match current {
        Some(c) if now < renewal_time(&c) => (c, None),
        previous => {
            let why = match (&existing, previous) {
                (None, _) => "no responder certificate yet",
                (Some(_), None) => "the responder Secret is not a current certificate of this CA",
                (Some(_), Some(_)) => "the responder certificate is due for renewal",
            };
            tracing::info!(
                reason = why,
                "issuing a delegated OCSP responder certificate"
            );
            let c = issue(ca, ctx, sc, validity, &id).await?;
            (c, Some(why))
        }
    };
    let serial =
        Serial::from_serial_number(&cert.tbs_certificate.serial_number).map_err(Error::ca(&id))?;
    if let Some(why) = renewed {
        ctx.event(
            ca,
            false,
            "ResponderCertificateIssued",
            format!(
                "issued delegated OCSP responder certificate serial {} ({why})",
                serial.to_hex()
            ),
        )
        .await;
    }
    let available = apply_workload(ca, ctx).await?;
    let not_after = ca::time::from_x509(&cert.tbs_certificate.validity.not_after);
    let replicas = ca.spec.responder.replicas;
    let status = ResponderStatus {
        secret_name: Some(secret_name(&name)),
        service_name: Some(workload_name(&name)),
        certificate_serial_number: Some(serial.to_hex()),
        certificate_not_after: Some(to_time(not_after, &id)?),
        available_replicas: Some(available),
    };
    let recheck = renewal_time(&cert)
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO)
        .clamp(Duration::from_secs(5), Duration::from_secs(300));
    let message = format!(
        "delegated OCSP certificate serial {} valid until {}; Deployment {} has {available}/{replicas} replicas available",
        serial.to_hex(),
        ca::time::display(not_after),
        workload_name(&name),
    );
    Ok(Outcome {
        condition: Cond::yes("ResponderReady", "ResponderConfigured", message),
        status,
        recheck,
    })
}

/// `profiles.responderValidity` in days (default 7).
fn validity_days(ca: &CertificateAuthority) -> Result<u32> {
    match &ca.spec.profiles.responder_validity {
        None => Ok(DEFAULT_VALIDITY_DAYS),
        Some(v) => match super::parse_period(v) {
            Ok(ca::profile::Period::Days(d)) => Ok(d),
            Ok(ca::profile::Period::Years(_)) | Err(_) => Err(Error::Invalid {
                object: object_id(ca),
                message: format!(
                    "profiles.responderValidity {v:?}: a duration of whole days, e.g. 168h"
                ),
            }),
        },
    }
}

/// When a responder certificate is renewed: when a third of its validity is left.
fn renewal_time(cert: &Certificate) -> SystemTime {
    let nb = ca::time::from_x509(&cert.tbs_certificate.validity.not_before);
    let na = ca::time::from_x509(&cert.tbs_certificate.validity.not_after);
    let lifetime = na.duration_since(nb).unwrap_or(Duration::ZERO);
    na.checked_sub(lifetime / 3).unwrap_or(nb)
}

/// The Secret's certificate, if it is issued by `issuer` (signature checked),
/// is a responder certificate, and its key in the Secret matches.
fn current_certificate(
    secret: &Secret,
    issuer: &Certificate,
) -> std::result::Result<Certificate, String> {
    let data = secret.data.as_ref().ok_or("no data")?;
    let crt = data.get("tls.crt").ok_or("no tls.crt")?;
    let key = data.get("tls.key").ok_or("no tls.key")?;
    let cert = Certificate::from_pem(&crt.0).map_err(|e| format!("tls.crt: {e}"))?;
    if cert.tbs_certificate.issuer != issuer.tbs_certificate.subject {
        return Err("issued by another CA".into());
    }
    let alg = SignatureAlgorithm::from_algorithm_identifier(&cert.signature_algorithm)
        .map_err(|e| e.to_string())?;
    let tbs = cert.tbs_certificate.to_der().map_err(|e| e.to_string())?;
    let sig = cert
        .signature
        .as_bytes()
        .ok_or("signature has unused bits")?;
    ca::signer::verify(
        &issuer.tbs_certificate.subject_public_key_info,
        alg,
        &tbs,
        sig,
    )
    .map_err(|e| e.to_string())?;
    let pkcs8 = pem_body(&key.0, "PRIVATE KEY").ok_or("tls.key is not a PKCS#8 PEM")?;
    let k = SoftwareKey::from_pkcs8(&pkcs8, SignatureAlgorithm::RsaSha256)
        .map_err(|e| e.to_string())?;
    if *k.public_key() != cert.tbs_certificate.subject_public_key_info {
        return Err("tls.key does not match tls.crt".into());
    }
    Ok(cert)
}

/// The DER inside the first PEM block labelled `label`.
fn pem_body(pem: &[u8], label: &str) -> Option<Zeroizing<Vec<u8>>> {
    let text = std::str::from_utf8(pem).ok()?;
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin)? + begin.len();
    let stop = start + text[start..].find(&end)?;
    let b64: String = text[start..stop].split_whitespace().collect();
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .ok()
        .map(Zeroizing::new)
}

fn pem_of(label: &str, der: &[u8]) -> Zeroizing<String> {
    use base64::Engine;
    let b64 = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(der));
    let mut out = Zeroizing::new(String::with_capacity(b64.len() + 80));
    out.push_str(&format!("-----BEGIN {label}-----\n"));
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn owner(ca: &CertificateAuthority) -> Vec<OwnerReference> {
    ca.controller_owner_ref(&()).into_iter().collect()
}

fn labels(ca: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".to_string(),
            "chop-responder".to_string(),
        ),
        ("app.kubernetes.io/instance".to_string(), workload_name(ca)),
        ("app.kubernetes.io/part-of".to_string(), "chop".to_string()),
        (
            "app.kubernetes.io/managed-by".to_string(),
            "chop-controller".to_string(),
        ),
        (LABEL_CA.to_string(), ca.to_string()),
    ])
}

/// Generate a key, have the CA certify it, record it, write the Secret.
async fn issue(
    ca: &CertificateAuthority,
    ctx: &Context,
    sc: &Arc<SigningContext>,
    validity_days: u32,
    id: &str,
) -> Result<Certificate> {
    let cerr = Error::ca(id);
    let name = ca.name_any();
    let ns = ca.namespace().unwrap_or_default();
    let mut profile =
        super::certificate_request::profile_for(ProfileName::OcspResponder, ca).map_err(cerr)?;
    profile.validity = ca::profile::Period::Days(validity_days);
    // The key is generated here, by the controller, not received from anyone:
    // there is no request to prove possession with.
    profile.allow_attested_spki = true;
    let mut subject = ca.spec.subject.clone();
    subject.common_name = Some(responder_common_name(
        subject.common_name.as_deref().unwrap_or(&name),
    ));
    let dn = super::certificate_authority::dn_from_spec(&subject).map_err(cerr)?;
    let sc2 = Arc::clone(sc);
    // The record of the signature is committed before the HSM signs.
    let serial = Serial::random().map_err(cerr)?;
    ctx.audit
        .record(
            crate::audit::AuditEvent::new("responder.certificate", "intent")
                .object(ca)
                .ca(&ns, &name)
                .serial(serial.to_hex())
                .key_use(
                    crate::audit::key_fingerprint(sc.issuer.certificate()),
                    "ocsp-responder-certificate",
                )
                .detail("validityDays", validity_days.to_string()),
        )
        .await?;
    let started = std::time::Instant::now();
    let (signed, pkcs8) = tokio::task::spawn_blocking(move || {
        let key = SoftwareKey::generate(KeySpec::Rsa { bits: 2048 })?;
        let spki = ca::signer::spki_der(key.public_key())?;
        let subject_key = SubjectKey::from_attested_spki(&spki)?;
        let request = IssuanceRequest::new(profile, &dn, subject_key, serial)?;
        let signed = sc2.issuer.prepare(&request)?.sign(&sc2.issuer)?;
        Ok::<_, ca::Error>((signed, key.to_pkcs8()?))
    })
    .await
    .map_err(|e| Error::Invalid {
        object: id.to_string(),
        message: format!("signing task failed: {e}"),
    })?
    .map_err(cerr)?;
    ctx.metrics.hsm("sign", started);
    let records: Api<IssuedCertificate> = Api::namespaced(ctx.client.clone(), &ns);
    let entry = register::Entry {
        ca: name.clone(),
        profile: super::certificate_request::profile_label(ProfileName::OcspResponder).into(),
        subscriber_id: None,
        request_ref: None,
        renewal_of: None,
    };
    register::commit(&records, &signed, entry, id).await?;
    ctx.metrics.issued(
        &name,
        super::certificate_request::profile_label(ProfileName::OcspResponder),
        "Issued",
    );
    let crt = signed.to_pem().map_err(cerr)?;
    let key_pem = pem_of("PRIVATE KEY", &pkcs8);
    let ca_pem = sc.chain_pem.clone();
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(secret_name(&name)),
            namespace: Some(ns.clone()),
            labels: Some(labels(&name)),
            owner_references: Some(owner(ca)),
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(BTreeMap::from([
            ("tls.crt".to_string(), ByteString(crt.into_bytes())),
            (
                "tls.key".to_string(),
                ByteString(key_pem.as_bytes().to_vec()),
            ),
            ("ca.crt".to_string(), ByteString(ca_pem.into_bytes())),
        ])),
        ..Secret::default()
    };
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    apply(
        &secrets,
        &secret_name(&name),
        &secret,
        "apply responder Secret",
    )
    .await?;
    Ok(signed.certificate.clone())
}

/// `<CA common name> OCSP Responder`, cut to the 64-character limit.
fn responder_common_name(ca_cn: &str) -> String {
    const SUFFIX: &str = " OCSP Responder";
    let room = 64 - SUFFIX.chars().count();
    let mut cn: String = ca_cn.chars().take(room).collect();
    cn.push_str(SUFFIX);
    cn
}

async fn apply<K>(api: &Api<K>, name: &str, obj: &K, action: &'static str) -> Result<K>
where
    K: Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(obj),
    )
    .await
    .map_err(Error::kube(action))
}

/// Apply ServiceAccount, RoleBinding, Deployment and Service; return the
/// Deployment's available replicas.
async fn apply_workload(ca: &CertificateAuthority, ctx: &Context) -> Result<i32> {
    let name = ca.name_any();
    let ns = ca.namespace().unwrap_or_default();
    // The responder runs with the delegated OCSP key (it can vouch "good" for
    // any serial): an administrator chooses among the images the controller's
    // operator allowed, never any image (issue 8, the family of finding 8).
    let image = responder_image(ca, &ctx.responder_images).map_err(|message| Error::Refused {
        object: crate::context::object_id(ca),
        reason: "ImageNotAllowed",
        message,
    })?;
    let wl = workload_name(&name);
    let meta = || ObjectMeta {
        name: Some(wl.clone()),
        namespace: Some(ns.clone()),
        labels: Some(labels(&name)),
        owner_references: Some(owner(ca)),
        ..ObjectMeta::default()
    };
    let client = &ctx.client;
    let sa = ServiceAccount {
        metadata: meta(),
        automount_service_account_token: Some(true),
        ..ServiceAccount::default()
    };
    apply(
        &Api::namespaced(client.clone(), &ns),
        &wl,
        &sa,
        "apply responder ServiceAccount",
    )
    .await?;
    let rb = RoleBinding {
        metadata: meta(),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: RESPONDER_CLUSTER_ROLE.into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: wl.clone(),
            namespace: Some(ns.clone()),
            ..Subject::default()
        }]),
    };
    apply(
        &Api::namespaced(client.clone(), &ns),
        &wl,
        &rb,
        "apply responder RoleBinding",
    )
    .await?;
    // The one Secret, by name, `get` only: the controller holds `get` on
    // Secrets, so it grants nothing it does not have (no `escalate` needed).
    let role = Role {
        metadata: meta(),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["secrets".into()]),
            resource_names: Some(vec![secret_name(&name)]),
            verbs: vec!["get".into()],
            ..PolicyRule::default()
        }]),
    };
    apply(
        &Api::namespaced(client.clone(), &ns),
        &wl,
        &role,
        "apply responder Role",
    )
    .await?;
    let key_binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some(format!("{wl}-key")),
            ..meta()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: wl.clone(),
        },
        subjects: rb.subjects.clone(),
    };
    apply(
        &Api::namespaced(client.clone(), &ns),
        &format!("{wl}-key"),
        &key_binding,
        "apply responder key RoleBinding",
    )
    .await?;
    let selector = BTreeMap::from([
        (
            "app.kubernetes.io/name".to_string(),
            "chop-responder".to_string(),
        ),
        ("app.kubernetes.io/instance".to_string(), wl.clone()),
    ]);
    let probe = |path: &str, period: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        ..Probe::default()
    };
    let container = Container {
        name: "chop-responder".into(),
        image: Some(image),
        args: Some(vec![
            "serve".into(),
            "--kube".into(),
            "--namespace".into(),
            ns.clone(),
            "--ca".into(),
            name.clone(),
            "--listen".into(),
            format!("0.0.0.0:{CONTAINER_PORT}"),
        ]),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: CONTAINER_PORT,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        readiness_probe: Some(probe("/readyz", 5)),
        liveness_probe: Some(probe("/healthz", 10)),
        resources: ca.spec.responder.resources.clone(),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    };
    let deployment = Deployment {
        metadata: meta(),
        spec: DeploymentSpec {
            replicas: Some(ca.spec.responder.replicas),
            selector: LabelSelector {
                match_labels: Some(selector.clone()),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(&name)),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(wl.clone()),
                    containers: vec![container],
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(65532),
                        ..PodSecurityContext::default()
                    }),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        },
        status: None,
    };
    let applied = apply(
        &Api::namespaced(client.clone(), &ns),
        &wl,
        &deployment,
        "apply responder Deployment",
    )
    .await?;
    let service = Service {
        metadata: meta(),
        spec: Some(ServiceSpec {
            selector: Some(selector),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                target_port: Some(IntOrString::String("http".into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    };
    apply(
        &Api::namespaced(client.clone(), &ns),
        &wl,
        &service,
        "apply responder Service",
    )
    .await?;
    Ok(applied
        .status
        .and_then(|s| s.available_replicas)
        .unwrap_or(0))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn responder_common_name_fits_the_limit() {
        assert_eq!(
            responder_common_name("內政部憑證管理中心"),
            "內政部憑證管理中心 OCSP Responder"
        );
        let long = "x".repeat(80);
        assert_eq!(responder_common_name(&long).chars().count(), 64);
    }

    #[test]
    fn pem_round_trip() {
        let der = vec![1u8, 2, 3, 250, 251, 252];
        let pem = pem_of("PRIVATE KEY", &der);
        assert_eq!(*pem_body(pem.as_bytes(), "PRIVATE KEY").unwrap(), der);
        assert!(pem_body(pem.as_bytes(), "CERTIFICATE").is_none());
    }
}
