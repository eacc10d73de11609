//! CertificateAuthority reconciler (root and subordinate).
//!
//! 1. Read the token PIN from the referenced Secret (never logged or written).
//! 2. Open the token by label and find the key by label; generate it when
//!    missing and `keyGeneration: IfMissing`, else `KeyReady=False KeyNotFound`.
//! 3. Get the CA certificate once, never twice:
//!    - a root self-signs; serial and notBefore are reserved in status first, so
//!      the (deterministic RSA) signature is reproducible after a crash;
//!    - a subordinate publishes its PKCS#10 request in `status.csr` and takes its
//!      certificate from `spec.certificate` (signed outside) or from its parent
//!      (`parentRef`): serial and validity reserved in its status, the parent's
//!      IssuedCertificate is the commit point, as for CertificateRequests.
//!
//!    An existing `status.certificate` whose key is the HSM key is reused, never
//!    re-signed; one whose key is not stops with `CertificateKeyMismatch`.
//! 4. Build the signing context (issuer + HSM signer) and cache it by CA uid,
//!    generation and certificate serial, for the CertificateRequest reconciler.
//! 5. Status by server-side apply: `KeyReady`, `Ready`, certificate, chain,
//!    serial, validity, `issuedCount`.
//!
//! A wrong PIN is not retried by itself (three failures lock the token,
//! CPS §6.4.2): the CA waits for a change of its spec.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ca::issue::{CaConfig, Issuer, RootRequest, self_sign_root};
use ca::profile::Profile;
use ca::serial::Serial;
use ca::signer::pkcs11::{KeyRef, Pkcs11Module, Token};
use ca::signer::{KeySpec, Pin, Signer};
use crds::certificate_authority::{CaType, IssuanceState, KeyGeneration};
use crds::common::KeyAlgorithm;
use crds::issued_certificate::LABEL_CA;
use crds::{CertificateAuthority, CertificateAuthorityStatus, IssuedCertificate};
use der::{DecodePem, EncodePem};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use tracing::Instrument;
use x509_cert::Certificate;

use super::{from_time, to_time};
use crate::conditions::{self, Cond};
use crate::context::{Context, FIELD_MANAGER, SigningContext, SigningKey, object_id};
use crate::error::{Error, Result};
use crate::record_index::Counts;

/// Kind label in metrics and spans.
pub const KIND: &str = "CertificateAuthority";

/// Reason (Ready=False, Event) of a CA whose `spec.hsm.module` is not on the
/// controller's `--pkcs11-module` list.
pub const MODULE_NOT_ALLOWED: &str = "ModuleNotAllowed";

/// A hash of what of a CA its requests and CRL schedules depend on: its spec
/// (issuance, approval policy, profiles), whether it is Ready, and its
/// certificate; not its counters, which change with every issuance.
pub fn signing_state(ca: &CertificateAuthority) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    ca.metadata.generation.hash(&mut h);
    let status = ca.status.as_ref();
    status
        .map(|s| crate::conditions::is_true(&s.conditions, "Ready"))
        .hash(&mut h);
    status.and_then(|s| s.serial_number.as_ref()).hash(&mut h);
    Some(h.finish())
}

/// Reconcile one CertificateAuthority.
pub async fn reconcile(ca: Arc<CertificateAuthority>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_timer(KIND);
    let span = tracing::info_span!("reconcile", kind = KIND, namespace = %ca.namespace().unwrap_or_default(), name = %ca.name_any());
    let action = async {
        match super::fresh(ca.as_ref(), &ctx, "get CertificateAuthority").await? {
            Some(current) => apply(&current, &ctx).await,
            None => Ok(Action::await_change()),
        }
    }
    .instrument(span)
    .await
    .map_err(|e| e.about(&object_id(ca.as_ref())))?;
    ctx.reset_backoff(&ca.uid().unwrap_or_default());
    Ok(action)
}

/// Count the error and requeue with backoff.
pub fn error_policy(ca: Arc<CertificateAuthority>, error: &Error, ctx: Arc<Context>) -> Action {
    super::requeue_after_error(KIND, ca.as_ref(), error, &ctx)
}

/// The signing context of a Ready CA: from the cache, or built from its status
/// certificate and its HSM key (never generating or signing anything).
pub async fn signing_context(
    ca: &CertificateAuthority,
    ctx: &Context,
) -> Result<Option<Arc<SigningContext>>> {
    let status = ca.status.clone().unwrap_or_default();
    let (Some(pem), Some(serial)) = (status.certificate.as_ref(), status.serial_number.as_ref())
    else {
        return Ok(None);
    };
    let key = cache_key(ca, serial);
    if let Some(s) = ctx.signing(&key) {
        return Ok(Some(s));
    }
    let id = object_id(ca);
    // Never a login the CA reconciler would not make (a refused or locked PIN).
    if status.pin_failures.unwrap_or(0) > 0 {
        return Ok(None);
    }
    let pin = read_pin(ca, ctx).await?;
    let Some((pin, _)) = pin else { return Ok(None) };
    let signer = open_key(ca, ctx, pin, false).await?;
    let Some((signer, _)) = signer else {
        return Ok(None);
    };
    let sc = build_context(ca, pem, status.chain.clone(), signer, &id).await?;
    ctx.cache_signing(key, Arc::clone(&sc));
    Ok(Some(sc))
}

fn cache_key(ca: &CertificateAuthority, serial: &str) -> SigningKey {
    (
        ca.uid().unwrap_or_default(),
        ca.meta().generation.unwrap_or(0),
        serial.to_string(),
    )
}

async fn apply(ca: &CertificateAuthority, ctx: &Context) -> Result<Action> {
    let id = object_id(ca);
    let mut status = ca.status.clone().unwrap_or_default();
    // A spec the controller has not acted on yet: recorded with its
    // generation, its hash and its issuance switch (once per generation).
    if status.observed_generation != ca.meta().generation {
        let spec = serde_json::to_vec(&ca.spec).unwrap_or_default();
        let g = ca.meta().generation.unwrap_or_default().to_string();
        let ev = crate::audit::observed("ca.changed", ca, &g)
            .ca(&ca.namespace().unwrap_or_default(), &ca.name_any())
            .detail("generation", g.clone())
            .detail("specHash", crate::audit::key::sha256_hex(&spec))
            .detail("issuance", format!("{:?}", ca.spec.issuance));
        ctx.audit.note(crate::audit::changed_by(ev, ca.meta()));
    }

    // Fast path: this CA (uid, generation, certificate) already has a signing
    // context, so the token, key and certificate were checked: only refresh the
    // counters, without logging in to the token again.
    if let (Some(pem), Some(serial)) = (&status.certificate, &status.serial_number)
        && let Some(sc) = ctx.signing(&cache_key(ca, serial))
    {
        let pem = pem.clone();
        return ready(ca, ctx, status, pem, sc).await;
    }

    // The module is code the controller would run: only the allowed ones are
    // loaded, checked before the PIN is even read.
    if let Err(msg) = ctx.modules.check(&ca.spec.hsm.module) {
        let cond = Cond::no("Ready", MODULE_NOT_ALLOWED, msg.clone());
        if !conditions::unchanged(&status.conditions, &cond, ca.meta().generation) {
            ctx.event(ca, true, MODULE_NOT_ALLOWED, msg.clone()).await;
        }
        let conds = [Cond::no("KeyReady", MODULE_NOT_ALLOWED, msg), cond];
        write_status(ca, ctx, &mut status, &conds).await?;
        return Ok(Action::await_change());
    }

    // One key, one CA: a second CertificateAuthority on a key another one
    // already uses would sign certificates (or a self-signed root) that chain
    // like the first's, without anyone approving them.
    if let Some(other) = key_claimed_by_other(ca, ctx) {
        let msg = format!(
            "the HSM key {:?} on token {:?} is already the key of CertificateAuthority {other:?}: \
             a CA key serves one CA (CPS §6.1.1); choose another hsm.keyLabel",
            ca.spec.hsm.key_label, ca.spec.hsm.token_label
        );
        let conds = [
            Cond::no("KeyReady", "KeyInUse", msg.clone()),
            Cond::no("Ready", "KeyInUse", msg.clone()),
        ];
        write_status(ca, ctx, &mut status, &conds).await?;
        ctx.event(ca, true, "KeyInUse", msg).await;
        return Ok(Action::requeue(Duration::from_secs(60)));
    }

    // A key made by a ceremony is used only once that ceremony succeeded.
    let ceremony_key = match super::ca_key::from_ceremony(ca, ctx).await? {
        None => None,
        Some(Ok(k)) => Some(k),
        Some(Err((reason, msg))) => {
            let conds = [
                Cond::no("KeyReady", reason, msg.clone()),
                Cond::no("Ready", reason, msg),
            ];
            write_status(ca, ctx, &mut status, &conds).await?;
            return Ok(Action::requeue(Duration::from_secs(15)));
        }
    };

    // Activation data (CPS §6.4.2): after three wrong PINs, no more attempts
    // until an Activate ceremony succeeds after the lock.
    if status.pin_failures.unwrap_or(0) >= super::ca_key::MAX_PIN_FAILURES {
        let activated = super::ca_key::latest_succeeded(
            ca,
            ctx,
            crds::key_ceremony::CeremonyOperation::Activate,
        )
        .await?;
        let unlocked = match (&status.pin_locked_at, &activated) {
            (Some(locked), Some((_, done))) => done.0 > locked.0,
            (None, Some(_)) => true,
            (_, None) => false,
        };
        if !unlocked {
            let msg = format!(
                "{} wrong PINs for token {:?}: the controller no longer logs in (CPS §6.4.2). \
                 Correct the PIN Secret {:?}, then hold an Activate KeyCeremony for this CA",
                status.pin_failures.unwrap_or(0),
                ca.spec.hsm.token_label,
                ca.spec.hsm.pin_secret_ref.name
            );
            let cond = Cond::no("Ready", "ActivationDataLocked", msg.clone());
            if !conditions::unchanged(&status.conditions, &cond, ca.meta().generation) {
                ctx.event(ca, true, "ActivationDataLocked", msg.clone())
                    .await;
            }
            let conds = [Cond::no("KeyReady", "ActivationDataLocked", msg), cond];
            write_status(ca, ctx, &mut status, &conds).await?;
            return Ok(Action::requeue(Duration::from_secs(60)));
        }
        status.pin_failures = None;
        status.pin_locked_at = None;
    }

    let Some((pin, pin_version)) = read_pin(ca, ctx).await? else {
        let msg = format!(
            "Secret {:?} with key {:?} not found",
            ca.spec.hsm.pin_secret_ref.name, ca.spec.hsm.pin_secret_ref.key
        );
        let conds = [
            Cond::no("KeyReady", "PinSecretNotFound", msg.clone()),
            Cond::no("Ready", "PinSecretNotFound", msg),
        ];
        write_status(ca, ctx, &mut status, &conds).await?;
        return Ok(Action::requeue(Duration::from_secs(30)));
    };

    // A refused PIN is tried once: the next login waits for the Secret to change.
    if status.pin_failures.unwrap_or(0) > 0
        && pin_version.is_some()
        && status.refused_pin_version == pin_version
    {
        let msg = format!(
            "the PIN in Secret {:?} was refused by token {:?} ({} of {} attempts used); \
             the controller tries again when the Secret changes (CPS §6.4.2)",
            ca.spec.hsm.pin_secret_ref.name,
            ca.spec.hsm.token_label,
            status.pin_failures.unwrap_or(0),
            super::ca_key::MAX_PIN_FAILURES
        );
        let conds = [
            Cond::no("KeyReady", "HsmPinIncorrect", msg.clone()),
            Cond::no("Ready", "HsmPinIncorrect", msg),
        ];
        write_status(ca, ctx, &mut status, &conds).await?;
        // The Secret is not watched: look again now and then.
        return Ok(Action::requeue(Duration::from_secs(30)));
    }
    let generate = ca.spec.hsm.key_generation == KeyGeneration::IfMissing;
    let opened = match open_key(ca, ctx, pin, generate).await {
        Ok(o) => o,
        Err(Error::Ca { source, object }) => {
            let (mut reason, mut msg) = (source.reason(), source.to_string());
            if let ca::Error::PinIncorrect { .. } = source {
                let n = status.pin_failures.unwrap_or(0) + 1;
                status.pin_failures = Some(n);
                status.refused_pin_version = pin_version.clone();
                msg = format!(
                    "{msg} ({n} of {} attempts)",
                    super::ca_key::MAX_PIN_FAILURES
                );
                if n >= super::ca_key::MAX_PIN_FAILURES {
                    status.pin_locked_at = Some(conditions::now());
                    reason = "ActivationDataLocked";
                    msg = format!(
                        "{msg}: the controller no longer logs in to token {:?} (CPS §6.4.2); correct the PIN Secret, then hold an Activate KeyCeremony",
                        ca.spec.hsm.token_label
                    );
                }
            }
            let conds = [
                Cond::no("KeyReady", reason, msg.clone()),
                Cond::no("Ready", reason, msg.clone()),
            ];
            write_status(ca, ctx, &mut status, &conds).await?;
            if source.is_transient() {
                return Err(Error::Ca { object, source });
            }
            if matches!(
                source,
                ca::Error::PinIncorrect { .. } | ca::Error::PinLocked { .. }
            ) {
                ctx.metrics.login_failure(&ca.name_any(), reason);
                ctx.audit.note(
                    crate::audit::AuditEvent::new("ca.pin-failure", "failed")
                        .object(ca)
                        .ca(&ca.namespace().unwrap_or_default(), &ca.name_any())
                        .reason(reason)
                        .detail("token", ca.spec.hsm.token_label.clone()),
                );
            }
            ctx.event(ca, true, reason, msg).await;
            // Permanent (wrong or locked PIN, token missing): retrying a PIN burns
            // attempts (CPS §6.4.2), so wait for a spec change, or recheck slowly
            // for a token that may be plugged in.
            return Ok(match source {
                ca::Error::PinIncorrect { .. } | ca::Error::PinLocked { .. } => {
                    Action::await_change()
                }
                _ => Action::requeue(Duration::from_secs(60)),
            });
        }
        Err(e) => return Err(e),
    };
    status.pin_failures = None;
    status.pin_locked_at = None;
    status.refused_pin_version = None;
    let Some((signer, generated)) = opened else {
        let destroyed = super::ca_key::latest_succeeded(
            ca,
            ctx,
            crds::key_ceremony::CeremonyOperation::Destroy,
        )
        .await?;
        let (reason, msg) = match destroyed {
            Some((name, _)) => (
                "KeyDestroyed",
                format!(
                    "the key {:?} was destroyed by KeyCeremony {name:?}: this CA signs nothing more",
                    ca.spec.hsm.key_label
                ),
            ),
            None => (
                "KeyNotFound",
                format!(
                    "no key labelled {:?} on token {:?} and keyGeneration is Never: run a KeyCeremony",
                    ca.spec.hsm.key_label, ca.spec.hsm.token_label
                ),
            ),
        };
        let conds = [
            Cond::no("KeyReady", reason, msg.clone()),
            Cond::no("Ready", reason, msg),
        ];
        write_status(ca, ctx, &mut status, &conds).await?;
        return Ok(Action::requeue(Duration::from_secs(30)));
    };
    if generated {
        ctx.event(
            ca,
            false,
            "KeyGenerated",
            format!(
                "generated key {:?} on token {:?}",
                ca.spec.hsm.key_label, ca.spec.hsm.token_label
            ),
        )
        .await;
    }

    // A ceremony-made key must be the one the ceremony recorded.
    if let Some(k) = &ceremony_key {
        let fp = crate::reconcilers::key_ceremony::quorum::sha256_hex(
            &ca::signer::spki_der(signer.public_key()).map_err(Error::ca(&id))?,
        );
        if fp != k.fingerprint {
            let msg = format!(
                "the key {:?} on token {:?} (SHA-256 {fp}) is not the key KeyCeremony {:?} made ({}); refusing to use it",
                ca.spec.hsm.key_label,
                ca.spec.hsm.token_label,
                ca.spec
                    .hsm
                    .key_from
                    .as_ref()
                    .map(|f| f.ceremony.clone())
                    .unwrap_or_default(),
                k.fingerprint
            );
            let conds = [
                Cond::no("KeyReady", "KeyMismatch", msg.clone()),
                Cond::no("Ready", "KeyMismatch", msg.clone()),
            ];
            write_status(ca, ctx, &mut status, &conds).await?;
            ctx.event(ca, true, "KeyMismatch", msg).await;
            return Ok(Action::requeue(Duration::from_secs(60)));
        }
    }
    if status.certificate.is_none()
        && ca.spec.ca_type == CaType::Root
        && let Some(pem) = ceremony_key.as_ref().and_then(|k| k.certificate.clone())
    {
        // The root the ceremony signed (checked against the key just below).
        status.certificate = Some(pem);
    }

    // The root certificate: reuse, or self-sign once from reserved values.
    let pem = match status.certificate.clone() {
        Some(pem) => {
            let cert = Certificate::from_pem(pem.as_bytes()).map_err(|e| Error::Invalid {
                object: id.clone(),
                message: format!("status.certificate does not parse: {e}"),
            })?;
            if cert.tbs_certificate.subject_public_key_info != *signer.public_key() {
                let msg = "status.certificate is not for the HSM key; refusing to re-sign";
                let conds = [
                    Cond::yes("KeyReady", "KeyFound", "the CA key is in the token"),
                    Cond::no("Ready", "CertificateKeyMismatch", msg),
                ];
                write_status(ca, ctx, &mut status, &conds).await?;
                ctx.event(ca, true, "CertificateKeyMismatch", msg.into())
                    .await;
                return Ok(Action::await_change());
            }
            pem
        }
        None => match obtain_certificate(ca, ctx, &mut status, Arc::clone(&signer)).await {
            Ok(Obtained::Certificate(pem)) => pem,
            Ok(Obtained::Wait(action)) => return Ok(action),
            Err(Error::Ca { object, source }) => {
                let cond = Cond::no("Ready", source.reason(), source.to_string());
                write_status(ca, ctx, &mut status, &[cond]).await?;
                if source.is_transient() {
                    return Err(Error::Ca { object, source });
                }
                ctx.event(ca, true, source.reason(), source.to_string())
                    .await;
                return Ok(Action::await_change());
            }
            Err(e) => return Err(e),
        },
    };

    let sc = build_context(ca, &pem, status.chain.clone(), signer, &id).await?;
    ready(ca, ctx, status, pem, sc).await
}

/// The CA can sign: cache its signing context, record certificate, validity and
/// `issuedCount`, and set `Ready=True`.
async fn ready(
    ca: &CertificateAuthority,
    ctx: &Context,
    mut status: CertificateAuthorityStatus,
    pem: String,
    sc: Arc<SigningContext>,
) -> Result<Action> {
    let id = object_id(ca);
    let cert = sc.issuer.certificate();
    let serial =
        Serial::from_serial_number(&cert.tbs_certificate.serial_number).map_err(Error::ca(&id))?;
    ctx.cache_signing(cache_key(ca, &serial.to_hex()), Arc::clone(&sc));

    status.certificate = Some(pem);
    status.serial_number = Some(serial.to_hex());
    status.not_before = Some(to_time(
        ca::time::from_x509(&cert.tbs_certificate.validity.not_before),
        &id,
    )?);
    status.not_after = Some(to_time(
        ca::time::from_x509(&cert.tbs_certificate.validity.not_after),
        &id,
    )?);
    ctx.metrics.ca_state(
        &ca.name_any(),
        ca.spec.issuance == IssuanceState::Enabled,
        status.not_after.as_ref().map(|t| t.0.as_second()),
    );
    let counts = register_counts(ca, ctx).await?;
    status.issued_count = Some(counts.issued);
    status.revoked_count = Some(counts.revoked);
    status.held_count = Some(counts.held);
    let was_ready = conditions::is_true(&status.conditions, "Ready");
    // The delegated OCSP certificate and the responder workload; their trouble
    // shows in ResponderReady and does not stop the CA from signing.
    let responder = super::responder::ensure(ca, ctx, &sc, &cache_key(ca, &serial.to_hex())).await;
    status.responder = Some(responder.status);
    let conds = [
        Cond::yes("KeyReady", "KeyFound", "the CA key is in the token"),
        Cond::yes("Ready", "Ready", "the CA can sign"),
        responder.condition,
    ];
    write_status(ca, ctx, &mut status, &conds).await?;
    if !was_ready {
        ctx.event(ca, false, "Ready", "the CA can sign".into())
            .await;
    }
    Ok(Action::requeue(
        responder.recheck.min(Duration::from_secs(300)),
    ))
}

/// Count the CA's register from the in-memory index (kept by a watch, see
/// [`crate::record_index`]), or by listing metadata before the index is ready.
/// Revoked and held come from the `chop.dev/status` label the Revocation and
/// Suspension reconcilers maintain.
async fn register_counts(ca: &CertificateAuthority, ctx: &Context) -> Result<Counts> {
    let ns = namespace(ca);
    let name = ca.name_any();
    if let Some(c) = ctx.records.counts(&ns, &name) {
        return Ok(c);
    }
    let issued: Api<IssuedCertificate> = Api::namespaced(ctx.client.clone(), &ns);
    let items = issued
        .list_metadata(&ListParams::default().labels(&format!("{LABEL_CA}={name}")))
        .await
        .map_err(Error::kube("list IssuedCertificates"))?
        .items;
    let n = |count: usize| i64::try_from(count).unwrap_or(i64::MAX);
    let of = |state: &str| {
        n(items
            .iter()
            .filter(|r| {
                r.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(crds::issued_certificate::LABEL_STATUS))
                    .is_some_and(|s| s == state)
            })
            .count())
    };
    Ok(Counts {
        issued: n(items.len()),
        revoked: of(crate::register::REVOKED),
        held: of(crate::register::HELD),
    })
}

/// The CertificateAuthority (`namespace/name`) that uses the same HSM key as
/// `ca` (module, token label, key label) and claimed it first (older, or the
/// same age and a smaller uid), if any, from the watch's store.
fn key_claimed_by_other(ca: &CertificateAuthority, ctx: &Context) -> Option<String> {
    let claim = |c: &CertificateAuthority| {
        (
            c.meta().creation_timestamp.clone().map(|t| t.0),
            c.uid().unwrap_or_default(),
        )
    };
    let mine = claim(ca);
    ctx.cached_cas()?
        .iter()
        .filter(|o| o.uid() != ca.uid() && o.meta().deletion_timestamp.is_none())
        .filter(|o| {
            crate::context::same_module(&o.spec.hsm.module, &ca.spec.hsm.module)
                && o.spec.hsm.token_label == ca.spec.hsm.token_label
                && o.spec.hsm.key_label == ca.spec.hsm.key_label
        })
        .find(|o| claim(o) < mine)
        .map(|o| format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any()))
}

/// The outcome of trying to get the CA's certificate.
enum Obtained {
    /// The certificate (PEM); `status.chain` is set.
    Certificate(String),
    /// Not yet (status says why); come back per the action.
    Wait(Action),
}

/// A root self-signs; a subordinate publishes its CSR and takes its certificate
/// from `spec.certificate` or has its parent (`parentRef`) sign it.
async fn obtain_certificate(
    ca: &CertificateAuthority,
    ctx: &Context,
    status: &mut CertificateAuthorityStatus,
    signer: Arc<dyn Signer>,
) -> Result<Obtained> {
    match ca.spec.ca_type {
        CaType::Root => Ok(Obtained::Certificate(
            self_sign(ca, ctx, status, signer).await?,
        )),
        CaType::Subordinate => subordinate(ca, ctx, status, signer).await,
    }
}

/// Split a PEM bundle into its certificate blocks (each with its armour).
fn pem_blocks(bundle: &str) -> Vec<String> {
    const END: &str = "-----END CERTIFICATE-----";
    let mut out = Vec::new();
    let mut rest = bundle;
    while let Some(start) = rest.find("-----BEGIN CERTIFICATE-----") {
        let Some(end) = rest[start..].find(END) else {
            break;
        };
        let stop = start + end + END.len();
        out.push(format!("{}\n", &rest[start..stop]));
        rest = &rest[stop..];
    }
    out
}

/// The subordinate flow. Serial, notBefore and notAfter are reserved in this CA's
/// status before the parent signs (as for CertificateRequests), and the parent's
/// IssuedCertificate is the commit point, so a crash never yields two
/// certificates for one subordinate key.
async fn subordinate(
    ca: &CertificateAuthority,
    ctx: &Context,
    status: &mut CertificateAuthorityStatus,
    signer: Arc<dyn Signer>,
) -> Result<Obtained> {
    let id = object_id(ca);
    let cerr = Error::ca(&id);
    let subject = dn_from_spec(&ca.spec.subject).map_err(cerr)?;
    if status.csr.is_none() {
        let key = ca::signer::spki_der(signer.public_key())
            .map(|d| crate::audit::key::sha256_hex(&d))
            .map_err(cerr)?;
        ctx.audit
            .record(
                crate::audit::AuditEvent::new("ca.certificate", "intent")
                    .object(ca)
                    .ca(&ca.namespace().unwrap_or_default(), &ca.name_any())
                    .key_use(key, "subordinate-csr")
                    .dedup(format!("ca.csr/{}", ca.uid().unwrap_or_default())),
            )
            .await?;
        let (s2, subj) = (Arc::clone(&signer), subject.clone());
        let started = Instant::now();
        let der =
            tokio::task::spawn_blocking(move || ca::issue::subordinate_csr(s2.as_ref(), &subj))
                .await
                .map_err(|e| Error::Invalid {
                    object: id.clone(),
                    message: format!("CSR task failed: {e}"),
                })?
                .map_err(cerr)?;
        ctx.metrics.hsm("csr", started);
        status.csr = Some(ca::csr::to_pem("CERTIFICATE REQUEST", &der).map_err(cerr)?);
    }
    let csr = status.csr.clone().unwrap_or_default();

    // Signed outside the cluster and supplied back.
    if let Some(bundle) = &ca.spec.certificate {
        let blocks = pem_blocks(bundle);
        let Some(first) = blocks.first() else {
            let cond = Cond::no(
                "Ready",
                "InvalidCertificate",
                "spec.certificate holds no PEM certificate",
            );
            write_status(ca, ctx, status, &[cond]).await?;
            return Ok(Obtained::Wait(Action::await_change()));
        };
        let cert = Certificate::from_pem(first.as_bytes()).map_err(|e| Error::Invalid {
            object: id.clone(),
            message: format!("spec.certificate does not parse: {e}"),
        })?;
        if cert.tbs_certificate.subject_public_key_info != *signer.public_key() {
            let cond = Cond::no(
                "Ready",
                "CertificateKeyMismatch",
                "spec.certificate is not for the HSM key",
            );
            write_status(ca, ctx, status, &[cond]).await?;
            return Ok(Obtained::Wait(Action::await_change()));
        }
        let chain: String = blocks[1..].concat();
        status.chain = (!chain.is_empty()).then_some(chain);
        return Ok(Obtained::Certificate(first.clone()));
    }

    let Some(parent_ref) = &ca.spec.parent_ref else {
        let cond = Cond::no(
            "Ready",
            "WaitingForCertificate",
            "have status.csr signed and put the certificate (and chain) in spec.certificate",
        );
        write_status(ca, ctx, status, &[cond]).await?;
        return Ok(Obtained::Wait(Action::await_change()));
    };
    let cas: Api<CertificateAuthority> = Api::namespaced(ctx.client.clone(), &namespace(ca));
    let parent = cas
        .get_opt(&parent_ref.name)
        .await
        .map_err(Error::kube("get parent CertificateAuthority"))?;
    let parent_ready = parent
        .as_ref()
        .and_then(|p| p.status.as_ref())
        .is_some_and(|s| conditions::is_true(&s.conditions, "Ready"));
    let psc = match (&parent, parent_ready) {
        (Some(p), true) => signing_context(p, ctx).await?,
        _ => None,
    };
    let (Some(parent), Some(psc)) = (parent, psc) else {
        let cond = Cond::no(
            "Ready",
            "ParentNotReady",
            format!(
                "parent CertificateAuthority {:?} is not Ready",
                parent_ref.name
            ),
        );
        write_status(ca, ctx, status, &[cond]).await?;
        return Ok(Obtained::Wait(Action::requeue(Duration::from_secs(10))));
    };
    if parent.spec.issuance == IssuanceState::Suspended {
        let cond = Cond::no(
            "Ready",
            "IssuanceSuspended",
            format!(
                "issuance by parent CertificateAuthority {:?} is suspended",
                parent_ref.name
            ),
        );
        write_status(ca, ctx, status, &[cond]).await?;
        return Ok(Obtained::Wait(Action::requeue(Duration::from_secs(60))));
    }

    // The parent signs only what an officer approved: the certificate is asked
    // for by a CertificateRequest (profile SubordinateCA) that goes through the
    // same gates as any other (chop-approval, no self-approval, no
    // auto-approval for CA certificates).
    match super::subordinate::certificate(ca, ctx, &parent, &csr, signer.as_ref()).await? {
        super::subordinate::Outcome::Certificate(pem) => {
            status.chain = Some(psc.chain_pem.clone());
            Ok(Obtained::Certificate(pem))
        }
        super::subordinate::Outcome::Waiting(reason, message) => {
            let cond = Cond::no("Ready", reason, message);
            write_status(ca, ctx, status, &[cond]).await?;
            Ok(Obtained::Wait(Action::requeue(Duration::from_secs(30))))
        }
    }
}

/// Apply `status` conditional on the resourceVersion this reconcile read, so two
/// writers can never both reserve.
async fn reserve(
    ca: &CertificateAuthority,
    ctx: &Context,
    status: &CertificateAuthorityStatus,
    action: &'static str,
) -> Result<()> {
    let rv = ca.resource_version();
    super::apply_status(
        &ctx.client,
        ca,
        FIELD_MANAGER,
        status,
        rv.as_deref(),
        action,
    )
    .await?;
    Ok(())
}

fn namespace(ca: &CertificateAuthority) -> String {
    ca.namespace().unwrap_or_default()
}

/// Reserve serial and notBefore in status (with the resourceVersion read, so two
/// writers cannot both reserve), then sign the root from them.
async fn self_sign(
    ca: &CertificateAuthority,
    ctx: &Context,
    status: &mut CertificateAuthorityStatus,
    signer: Arc<dyn Signer>,
) -> Result<String> {
    let id = object_id(ca);
    let cerr = Error::ca(&id);
    let (serial, not_before) = match (&status.serial_number, &status.not_before) {
        (Some(s), Some(nb)) => (Serial::from_hex(s).map_err(cerr)?, from_time(nb)),
        _ => {
            let serial = Serial::random().map_err(cerr)?;
            let nb = ca::time::truncate_to_seconds(SystemTime::now()).map_err(cerr)?;
            status.serial_number = Some(serial.to_hex());
            status.not_before = Some(to_time(nb, &id)?);
            reserve(ca, ctx, status, "reserve root serial").await?;
            (serial, nb)
        }
    };
    let subject = dn_from_spec(&ca.spec.subject).map_err(cerr)?;
    let mut request = RootRequest::new(&subject).map_err(cerr)?;
    request.serial = serial;
    request.not_before = not_before;
    request.profile = Profile::root_ca();
    if let Some(v) = &ca.spec.validity {
        request.profile.validity =
            super::parse_period(v).map_err(|m| cerr(ca::Error::InvalidValidity(m)))?;
    }
    request.policy_oids = policy_oids(ca, &id)?;
    // The record of the signature is committed before the HSM signs.
    let key = ca::signer::spki_der(signer.public_key())
        .map(|d| crate::audit::key::sha256_hex(&d))
        .map_err(cerr)?;
    ctx.audit
        .record(
            crate::audit::AuditEvent::new("ca.certificate", "intent")
                .object(ca)
                .ca(&ca.namespace().unwrap_or_default(), &ca.name_any())
                .serial(request.serial.to_hex())
                .key_use(key, "root-self-sign")
                .dedup(format!(
                    "ca.certificate/{}/{}",
                    ca.uid().unwrap_or_default(),
                    request.serial.to_hex()
                )),
        )
        .await?;
    let started = Instant::now();
    let root = tokio::task::spawn_blocking(move || self_sign_root(signer.as_ref(), &request))
        .await
        .map_err(|e| Error::Invalid {
            object: id.clone(),
            message: format!("signing task failed: {e}"),
        })?
        .map_err(cerr)?;
    ctx.metrics.hsm("selfSign", started);
    let pem = root.to_pem().map_err(cerr)?;
    ctx.event(
        ca,
        false,
        "RootCertificateSigned",
        format!(
            "self-signed root certificate, serial {}",
            root.serial.to_hex()
        ),
    )
    .await;
    Ok(pem)
}

pub(crate) fn policy_oids(
    ca: &CertificateAuthority,
    id: &str,
) -> Result<Vec<const_oid::ObjectIdentifier>> {
    ca.spec
        .policy_oids
        .iter()
        .map(|s| {
            const_oid::ObjectIdentifier::new(s).map_err(|e| Error::Invalid {
                object: id.to_string(),
                message: format!("policy OID {s:?}: {e}"),
            })
        })
        .collect()
}

/// The core's distinguished name for a CRD one.
pub fn dn_from_spec(
    dn: &crds::common::DistinguishedName,
) -> Result<ca::name::DistinguishedName, ca::Error> {
    use ca::name::Attribute;
    let mut attrs: Vec<(Attribute, String)> = Vec::new();
    if let Some(c) = &dn.country {
        attrs.push((Attribute::Country, c.clone()));
    }
    if let Some(o) = &dn.organization {
        attrs.push((Attribute::Organization, o.clone()));
    }
    for ou in &dn.organizational_units {
        attrs.push((Attribute::OrganizationalUnit, ou.clone()));
    }
    if let Some(cn) = &dn.common_name {
        attrs.push((Attribute::CommonName, cn.clone()));
    }
    ca::name::DistinguishedName::new(attrs)
}

async fn build_context(
    ca: &CertificateAuthority,
    pem: &str,
    chain: Option<String>,
    signer: Arc<dyn Signer>,
    id: &str,
) -> Result<Arc<SigningContext>> {
    let cerr = Error::ca(id);
    let cert = Certificate::from_pem(pem.as_bytes()).map_err(|e| Error::Invalid {
        object: id.to_string(),
        message: format!("status.certificate does not parse: {e}"),
    })?;
    let mut config = CaConfig::new(cert, signer);
    config.policy_oids = policy_oids(ca, id)?;
    config.crl_urls = ca.spec.crl_distribution_points.clone();
    config.ocsp_urls = ca.spec.ocsp_urls.clone();
    config.ca_issuers_urls = ca.spec.ca_issuers_urls.clone();
    let issuer = tokio::task::spawn_blocking(move || Issuer::new(config))
        .await
        .map_err(|e| Error::Invalid {
            object: id.to_string(),
            message: format!("issuer task failed: {e}"),
        })?
        .map_err(cerr)?;
    let cert_pem = issuer
        .certificate()
        .to_pem(der::pem::LineEnding::LF)
        .map_err(|e| cerr(ca::Error::Der(e)))?;
    let chain_pem = match chain {
        Some(chain) => format!("{cert_pem}{chain}"),
        None => cert_pem,
    };
    Ok(Arc::new(SigningContext { issuer, chain_pem }))
}

/// The PIN from the referenced Secret and the Secret's resourceVersion, or
/// `None` if the Secret or key is missing.
async fn read_pin(
    ca: &CertificateAuthority,
    ctx: &Context,
) -> Result<Option<(Pin, Option<String>)>> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace(ca));
    let r = &ca.spec.hsm.pin_secret_ref;
    let Some(secret) = secrets
        .get_opt(&r.name)
        .await
        .map_err(Error::kube("get PIN Secret"))?
    else {
        return Ok(None);
    };
    let Some(bytes) = secret.data.as_ref().and_then(|d| d.get(&r.key)) else {
        return Ok(None);
    };
    let text = String::from_utf8(bytes.0.clone()).map_err(|_| Error::Invalid {
        object: object_id(ca),
        message: format!("PIN Secret {:?} key {:?} is not UTF-8", r.name, r.key),
    })?;
    Ok(Some((
        Pin::new(text.trim_end_matches(['\n', '\r']).to_string()),
        secret.metadata.resource_version.clone(),
    )))
}

/// The CA key's signer and whether it was just generated; `None` if missing.
type Opened = Option<(Arc<dyn Signer>, bool)>;

/// Open the token and the CA key; generate the key when missing and `generate`.
/// `Ok(None)`: the key is missing and may not be generated.
async fn open_key(
    ca: &CertificateAuthority,
    ctx: &Context,
    pin: Pin,
    generate: bool,
) -> Result<Opened> {
    let id = object_id(ca);
    let hsm = ca.spec.hsm.clone();
    let spec = match hsm.key.algorithm {
        KeyAlgorithm::Rsa => KeySpec::Rsa {
            bits: u32::try_from(hsm.key.size).unwrap_or(2048),
        },
        KeyAlgorithm::Ecdsa => {
            return Err(Error::Invalid {
                object: id,
                message: "ECDSA CA keys are not supported by this controller version".into(),
            });
        }
    };
    // Load the canonical path that was checked, never the path as written.
    let module_path = ctx
        .modules
        .check(&hsm.module)
        .map_err(|message| Error::Invalid {
            object: id.clone(),
            message,
        })?;
    let metrics = Arc::clone(&ctx.metrics);
    let result = tokio::task::spawn_blocking(move || -> Result<Opened, ca::Error> {
        let started = Instant::now();
        let module = Pkcs11Module::open(&module_path)?;
        let token = Token::open(&module, &hsm.token_label, pin)?;
        metrics.hsm("open", started);
        let key = KeyRef::label(hsm.key_label.clone());
        let mut generated = false;
        match token.find_key(&key) {
            Ok(_) => {}
            Err(ca::Error::KeyNotFound { .. }) if generate => {
                let started = Instant::now();
                token.generate_key(&hsm.key_label, None, spec)?;
                metrics.hsm("generate", started);
                generated = true;
            }
            Err(ca::Error::KeyNotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        }
        let signer: Arc<dyn Signer> = Arc::new(token.signer(&key)?);
        Ok(Some((signer, generated)))
    })
    .await
    .map_err(|e| Error::Invalid {
        object: id.clone(),
        message: format!("HSM task failed: {e}"),
    })?;
    result.map_err(|source| Error::Ca { object: id, source })
}

/// Apply `conds` and the rest of `status` with the controller's field manager.
async fn write_status(
    ca: &CertificateAuthority,
    ctx: &Context,
    status: &mut CertificateAuthorityStatus,
    conds: &[Cond],
) -> Result<()> {
    let generation = ca.meta().generation;
    let mut list = status.conditions.clone();
    for c in conds {
        let new = conditions::build(&list, c, generation, conditions::now());
        list.retain(|x| x.type_ != c.type_);
        list.push(new);
    }
    status.conditions = list;
    status.observed_generation = generation;
    super::apply_status(
        &ctx.client,
        ca,
        FIELD_MANAGER,
        &*status,
        None,
        "apply CertificateAuthority status",
    )
    .await?;
    Ok(())
}
