//! Suspension reconciler: put one certificate on hold (CRL and OCSP reason
//! certificateHold, CPS §4.9.13–§4.9.17) until `resumed: true` or deletion.
//!
//! ```text
//! deleted or resumed ─► record held by this Suspension → Valid, Event Resumed
//!                       record revoked meanwhile       → Resumed=False Revoked (refused;
//!                                                        a deletion still completes)
//! otherwise:
//!   request missing / not issued / unknown serial ─► Held=False <reason> (re-checked / Warning)
//!   record revoked   ─► state Superseded (if this object held it), else Failed Revoked
//!   notAfter passed  ─► state Expired (the hold ends at expiry)
//!   held by another Suspension ─► Held=False AlreadyHeld naming it (bad input, not retried)
//!   otherwise claim the record: status {Held, revokedAt = hold time, certificateHold},
//!   label Held and annotation chop.dev/held-by in ONE PATCH conditional on the
//!   resourceVersion read (so two Suspensions cannot both hold it, and a revocation
//!   in between is seen) → state Held, Event Held; re-check at notAfter.
//! ```
//!
//! Every decision above that concerns the record (revoked, expired, held by
//! another, and on resumption: still held by this object, revoked meanwhile) is
//! taken on the record as read and written at that resourceVersion, and taken
//! again on a 409 Conflict (`register::transition`): a resume writes status
//! Valid, label Valid and removes held-by together, or nothing.
//!
//! Only the named certificate is held, not the other certificates of its key
//! pair: CPS §4.9.13 concerns a certificate, unlike revocation (§4.6.2, §6.3),
//! which reaches every certificate of the key. A finalizer makes deletion
//! resume the certificate.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crds::{IssuedCertificate, Suspension, SuspensionStatus};
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{self, Event as Finalizer};
use kube::{Resource, ResourceExt};
use tracing::Instrument;

use super::from_time;
use crate::conditions::{self, Cond};
use crate::context::{Context, FIELD_MANAGER, object_id};
use crate::error::{Error, Result};
use crate::register::{self, ANNOTATION_HELD_BY, Change, Decision, HELD, State, Target, VALID};

/// Kind label in metrics and spans.
pub const KIND: &str = "Suspension";

/// The finalizer that resumes a held certificate when its Suspension is deleted.
pub const FINALIZER: &str = "chop.dev/suspension";

/// RFC 5280 reason of a hold.
const CERTIFICATE_HOLD: &str = "certificateHold";

/// The longest single requeue delay.
const MAX_REQUEUE: Duration = Duration::from_secs(86_400);

/// Condition types this controller writes.
const OWN_CONDITIONS: [&str; 2] = ["Held", "Resumed"];

/// Reconcile one Suspension.
pub async fn reconcile(s: Arc<Suspension>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_timer(KIND);
    let span = tracing::info_span!("reconcile", kind = KIND, namespace = %s.namespace().unwrap_or_default(), name = %s.name_any());
    let id = object_id(s.as_ref());
    let action = async {
        let api: Api<Suspension> =
            Api::namespaced(ctx.client.clone(), &s.namespace().unwrap_or_default());
        let Some(current) = api
            .get_opt(&s.name_any())
            .await
            .map_err(Error::kube("get Suspension"))?
        else {
            return Ok(Action::await_change());
        };
        finalizer::finalizer(&api, FINALIZER, Arc::new(current), |event| async {
            match event {
                Finalizer::Apply(s) if s.spec.resumed => resume(&s, &ctx, false).await,
                Finalizer::Apply(s) => hold(&s, &ctx).await,
                Finalizer::Cleanup(s) => resume(&s, &ctx, true).await,
            }
        })
        .await
        .map_err(|e| from_finalizer(e, &id))
    }
    .instrument(span)
    .await
    .map_err(|e| e.about(&id))?;
    ctx.reset_backoff(&s.uid().unwrap_or_default());
    Ok(action)
}

fn from_finalizer(e: finalizer::Error<Error>, object: &str) -> Error {
    match e {
        finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e,
        finalizer::Error::AddFinalizer(e) => Error::kube("add Suspension finalizer")(e),
        finalizer::Error::RemoveFinalizer(e) => Error::kube("remove Suspension finalizer")(e),
        other => Error::Invalid {
            object: object.to_string(),
            message: other.to_string(),
        },
    }
}

/// Count the error and requeue with backoff.
pub fn error_policy(s: Arc<Suspension>, error: &Error, ctx: Arc<Context>) -> Action {
    super::requeue_after_error(KIND, s.as_ref(), error, &ctx)
}

async fn target(s: &Suspension, ctx: &Context) -> Result<Target> {
    register::resolve(
        &ctx.client,
        &s.namespace().unwrap_or_default(),
        &s.spec.ca_ref.name,
        s.spec.certificate_request_ref.as_ref(),
        s.spec.serial_number.as_deref(),
    )
    .await
}

fn state_is(status: &SuspensionStatus, state: &str) -> bool {
    status.state.as_deref() == Some(state)
}

/// What a hold decided on the record.
enum HoldOutcome {
    /// Held by this Suspension since the time given; whether this write did it.
    Held(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time, bool),
    /// The record is revoked (`mine`: this Suspension had held it).
    Revoked { mine: bool },
    /// The certificate has expired (`mine`: held by this Suspension).
    Expired { mine: bool },
    /// Held by another Suspension.
    HeldBy(String),
}

/// What a resume decided on the record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ResumeOutcome {
    /// Valid again (held-by removed).
    Resumed,
    /// This Suspension does not hold the certificate.
    NotHeld,
    /// Revoked: a resume never un-revokes.
    Revoked,
}

/// Re-check at notAfter (at least daily), when a hold ends by itself.
fn until_expiry(record: &IssuedCertificate) -> Action {
    let d = from_time(&record.spec.not_after)
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    Action::requeue((d + Duration::from_secs(1)).min(MAX_REQUEUE))
}

async fn hold(s: &Suspension, ctx: &Context) -> Result<Action> {
    let mut status = s.status.clone().unwrap_or_default();
    let generation = s.meta().generation;
    if state_is(&status, "Superseded") || state_is(&status, "Expired") {
        return Ok(Action::await_change());
    }
    if conditions::find(&status.conditions, "Held").is_some_and(|c| {
        c.status == conditions::FALSE
            && matches!(
                c.reason.as_str(),
                "UnknownSerial" | "AmbiguousRequest" | "AlreadyHeld" | "Revoked" | "Expired"
            )
            && c.observed_generation == generation
    }) {
        return Ok(Action::await_change());
    }
    let record = match target(s, ctx).await? {
        Target::Found(r) => r,
        Target::RequestNotFound => {
            let cond = Cond::no(
                "Held",
                "RequestNotFound",
                "the CertificateRequest named by certificateRequestRef does not exist",
            );
            write_status(s, ctx, status, &[cond]).await?;
            return Ok(Action::requeue(Duration::from_secs(60)));
        }
        Target::NotIssued => {
            let cond = Cond::no(
                "Held",
                "NotIssued",
                "the CertificateRequest has no certificate yet",
            );
            write_status(s, ctx, status, &[cond]).await?;
            return Ok(Action::requeue(Duration::from_secs(30)));
        }
        Target::Ambiguous(records) => {
            let msg = format!(
                "the CertificateRequest named by certificateRequestRef is gone and CertificateAuthority {:?} issued several certificates for requests of that name ({}); name the certificate by serialNumber instead",
                s.spec.ca_ref.name,
                records.join(", ")
            );
            status.state = Some("Failed".into());
            write_status(
                s,
                ctx,
                status,
                &[Cond::no("Held", "AmbiguousRequest", msg.clone())],
            )
            .await?;
            ctx.event(s, true, "AmbiguousRequest", msg).await;
            return Ok(Action::await_change());
        }
        Target::UnknownSerial => {
            let msg = format!(
                "CertificateAuthority {:?} has no record of that certificate",
                s.spec.ca_ref.name
            );
            status.state = Some("Failed".into());
            write_status(
                s,
                ctx,
                status,
                &[Cond::no("Held", "UnknownSerial", msg.clone())],
            )
            .await?;
            ctx.event(s, true, "UnknownSerial", msg).await;
            return Ok(Action::await_change());
        }
    };
    let me = s.name_any();
    let ca = s.spec.ca_ref.name.clone();
    status.serial_number = Some(record.spec.serial_number.clone());
    let api: Api<IssuedCertificate> =
        Api::namespaced(ctx.client.clone(), &s.namespace().unwrap_or_default());
    let now = SystemTime::now();
    let recorded_held_at = status.held_at.clone();
    // The hold's record is committed before the certificate's state changes.
    if record_state_is(&record, State::Valid)
        && let Err(e) = ctx
            .audit
            .record(hold_event(s, &record, "suspension.hold"))
            .await
    {
        return audit_wait(s, ctx, status, "Held", &e).await;
    }
    // Decided on the record as read, claimed (state Held + held-by) in one
    // PATCH at that version; a concurrent revocation, hold or resume makes it
    // a conflict and the decision is taken again on what is there now.
    let (outcome, record) = register::transition(&api, &record, |cur| {
        let st = register::state(cur)?;
        let held_by = register::annotation(cur, ANNOTATION_HELD_BY);
        let mine = held_by == Some(me.as_str());
        if st == State::Revoked {
            return Ok(Decision::Keep(HoldOutcome::Revoked { mine }));
        }
        if register::expired(cur, now) {
            return Ok(Decision::Keep(HoldOutcome::Expired { mine }));
        }
        if st == State::Held
            && let Some(other) = held_by.filter(|h| *h != me)
        {
            return Ok(Decision::Keep(HoldOutcome::HeldBy(other.to_string())));
        }
        let held_at = recorded_held_at
            .clone()
            .or_else(|| {
                cur.status
                    .as_ref()
                    .filter(|_| mine && st == State::Held)
                    .and_then(|x| x.revoked_at.clone())
            })
            .unwrap_or_else(register::now_seconds);
        let change = Change {
            state: State::Held,
            revoked_at: Some(held_at.clone()),
            reason: Some(CERTIFICATE_HOLD.into()),
            invalidity_date: None,
            annotations: vec![(ANNOTATION_HELD_BY, Some(me.clone()))],
        };
        Ok(if change.is_on(cur) {
            Decision::Keep(HoldOutcome::Held(held_at, false))
        } else {
            Decision::Write(change, HoldOutcome::Held(held_at, true))
        })
    })
    .await?;
    let held_at = match outcome {
        HoldOutcome::Held(at, written) => {
            if written {
                register::reflect_on_request(&ctx.client, &record, HELD).await;
            }
            at
        }
        HoldOutcome::Revoked { mine } => {
            let (state, cond) = if state_is(&status, HELD) || mine {
                (
                    "Superseded",
                    Cond::no(
                        "Held",
                        "Superseded",
                        "the certificate was revoked while held; the revocation supersedes the hold",
                    ),
                )
            } else {
                (
                    "Failed",
                    Cond::no(
                        "Held",
                        "Revoked",
                        "the certificate is revoked; a revoked certificate cannot be held",
                    ),
                )
            };
            let warning = state == "Failed";
            status.state = Some(state.into());
            write_status(s, ctx, status, std::slice::from_ref(&cond)).await?;
            ctx.event(s, warning, &cond.reason, cond.message).await;
            return Ok(Action::await_change());
        }
        HoldOutcome::Expired { mine } => {
            let (state, cond) = if mine {
                (
                    "Expired",
                    Cond::no(
                        "Held",
                        "Expired",
                        "the certificate expired; the hold ended with it",
                    ),
                )
            } else {
                (
                    "Failed",
                    Cond::no("Held", "Expired", "the certificate has expired"),
                )
            };
            status.state = Some(state.into());
            write_status(s, ctx, status, &[cond]).await?;
            return Ok(Action::await_change());
        }
        HoldOutcome::HeldBy(other) => {
            let msg = format!("the certificate is already held by Suspension {other:?}");
            status.state = Some("Failed".into());
            write_status(
                s,
                ctx,
                status,
                &[Cond::no("Held", "AlreadyHeld", msg.clone())],
            )
            .await?;
            ctx.event(s, true, "AlreadyHeld", msg).await;
            return Ok(Action::await_change());
        }
    };
    let newly = !state_is(&status, HELD);
    status.state = Some(HELD.into());
    status.held_at = Some(held_at);
    write_status(
        s,
        ctx,
        status,
        &[Cond::yes(
            "Held",
            "Held",
            "the certificate is on hold (certificateHold)",
        )],
    )
    .await?;
    if newly {
        ctx.metrics.suspension(&ca, "held");
        ctx.event(s, false, "Held", "the certificate is on hold".into())
            .await;
    }
    Ok(until_expiry(&record))
}

/// Resume the certificate (`resumed: true`, or `deleting`: the finalizer).
async fn resume(s: &Suspension, ctx: &Context, deleting: bool) -> Result<Action> {
    let mut status = s.status.clone().unwrap_or_default();
    if state_is(&status, "Resumed") && !deleting {
        return Ok(Action::await_change());
    }
    // The certificate the hold took (its serial in status), not what the
    // request name means now: a request garbage-collected and created again
    // under the same name is another request.
    let held = match status.serial_number.as_deref() {
        Some(serial) => {
            register::resolve(
                &ctx.client,
                &s.namespace().unwrap_or_default(),
                &s.spec.ca_ref.name,
                None,
                Some(serial),
            )
            .await?
        }
        None => target(s, ctx).await?,
    };
    let record = match held {
        Target::Found(r) => Some(r),
        _ => None,
    };
    let me = s.name_any();
    let ca = s.spec.ca_ref.name.clone();
    let (outcome, record) = match record {
        None => (ResumeOutcome::NotHeld, None),
        Some(record) => {
            if register::annotation(&record, ANNOTATION_HELD_BY) == Some(me.as_str()) {
                // The resumption's record is committed before the state changes.
                if let Err(e) = ctx
                    .audit
                    .record(hold_event(s, &record, "suspension.resume"))
                    .await
                {
                    return audit_wait(s, ctx, status, "Resumed", &e).await;
                }
                register::pause_in_resume().await;
            }
            let api: Api<IssuedCertificate> =
                Api::namespaced(ctx.client.clone(), &s.namespace().unwrap_or_default());
            // Decided on the record as read and written (state Valid, held-by
            // removed) in one PATCH at that version: a revocation landing in
            // between makes it a conflict, and the decision taken again sees
            // the revocation.
            let resumed = Change {
                state: State::Valid,
                revoked_at: None,
                reason: None,
                invalidity_date: None,
                annotations: vec![(ANNOTATION_HELD_BY, None)],
            };
            let (outcome, record) = register::transition(&api, &record, |cur| {
                if register::annotation(cur, ANNOTATION_HELD_BY) != Some(me.as_str()) {
                    return Ok(Decision::Keep(ResumeOutcome::NotHeld));
                }
                Ok(match register::state(cur)? {
                    State::Revoked => Decision::Keep(ResumeOutcome::Revoked),
                    State::Held | State::Valid => {
                        Decision::Write(resumed.clone(), ResumeOutcome::Resumed)
                    }
                })
            })
            .await?;
            (outcome, Some(record))
        }
    };
    if outcome == ResumeOutcome::NotHeld {
        // This object does not hold the certificate: nothing to undo.
        if !deleting {
            status.state = Some("Resumed".into());
            let cond = Cond::no(
                "Resumed",
                "NotHeld",
                "this Suspension does not hold the certificate; nothing to resume",
            );
            write_status(s, ctx, status, &[cond]).await?;
        }
        return Ok(Action::await_change());
    }
    if outcome == ResumeOutcome::Revoked {
        if !deleting {
            status.state = Some("Superseded".into());
            let cond = Cond::no(
                "Resumed",
                "Revoked",
                "a revoked certificate cannot be resumed: the revocation superseded the hold",
            );
            write_status(
                s,
                ctx,
                status,
                &[
                    cond,
                    Cond::no(
                        "Held",
                        "Superseded",
                        "the certificate was revoked while held; the revocation supersedes the hold",
                    ),
                ],
            )
            .await?;
            ctx.event(
                s,
                true,
                "ResumeRefused",
                "a revoked certificate cannot be resumed".into(),
            )
            .await;
        }
        return Ok(Action::await_change());
    }
    if let Some(record) = &record {
        register::reflect_on_request(&ctx.client, record, VALID).await;
    }
    ctx.metrics.suspension(&ca, "resumed");
    ctx.event(s, false, "Resumed", "the certificate is valid again".into())
        .await;
    if !deleting {
        status.state = Some("Resumed".into());
        status.resumed_at = Some(register::now_seconds());
        write_status(
            s,
            ctx,
            status,
            &[
                Cond::yes("Resumed", "Resumed", "the certificate is valid again"),
                Cond::no("Held", "Resumed", "the hold was lifted"),
            ],
        )
        .await?;
    }
    Ok(Action::await_change())
}

fn record_state_is(record: &IssuedCertificate, want: State) -> bool {
    register::state(record).is_ok_and(|s| s == want)
}

/// The intent record of a hold or resumption (`event`) of `record`.
fn hold_event(s: &Suspension, record: &IssuedCertificate, event: &str) -> crate::audit::AuditEvent {
    let ns = s.namespace().unwrap_or_default();
    let role = if event == "suspension.hold" {
        "heldBy"
    } else {
        "resumedBy"
    };
    let (who, field) = if event == "suspension.hold" {
        (crate::audit::requested_by(s.meta()), "caRef")
    } else {
        (
            crate::audit::annotation(s.meta(), crate::audit::ANNOTATION_RESUMED_BY),
            "resumed",
        )
    };
    let ev = crate::audit::AuditEvent::new(event, "intent")
        .object(s)
        .ca(&ns, &s.spec.ca_ref.name)
        .serial(record.spec.serial_number.clone())
        .detail("requester", format!("{:?}", s.spec.requester))
        .dedup(format!(
            "{event}/{}/{}",
            s.uid().unwrap_or_default(),
            record.spec.serial_number
        ));
    crate::audit::acted_by(ev, role, who, || {
        crate::audit::spec_manager(s.meta(), field).map(str::to_owned)
    })
}

/// The trail could not record the change: condition `type_` False
/// `AuditUnavailable`, a Warning Event, retried soon; nothing changed.
async fn audit_wait(
    s: &Suspension,
    ctx: &Context,
    status: SuspensionStatus,
    type_: &'static str,
    e: &Error,
) -> Result<Action> {
    let msg = format!("{e}; the certificate's state was not changed (CPS 5.4.6)");
    write_status(
        s,
        ctx,
        status,
        &[Cond::no(type_, crate::audit::REASON, msg.clone())],
    )
    .await?;
    ctx.event(s, true, crate::audit::REASON, msg).await;
    Ok(Action::requeue(Duration::from_secs(5)))
}

async fn write_status(
    s: &Suspension,
    ctx: &Context,
    mut status: SuspensionStatus,
    conds: &[Cond],
) -> Result<()> {
    let generation = s.meta().generation;
    let existing = status.conditions.clone();
    if conds
        .iter()
        .all(|c| conditions::unchanged(&existing, c, generation))
        && s.status.as_ref() == Some(&status)
    {
        return Ok(());
    }
    let mut own: Vec<_> = existing
        .iter()
        .filter(|c| OWN_CONDITIONS.contains(&c.type_.as_str()))
        .filter(|c| !conds.iter().any(|n| n.type_ == c.type_))
        .cloned()
        .collect();
    for c in conds {
        own.push(conditions::build(
            &existing,
            c,
            generation,
            conditions::now(),
        ));
    }
    status.conditions = own;
    status.observed_generation = generation;
    super::apply_status(
        &ctx.client,
        s,
        FIELD_MANAGER,
        &status,
        None,
        "apply Suspension status",
    )
    .await?;
    Ok(())
}

/// Run the Suspension controller until its stream ends. A change of an
/// IssuedCertificate (e.g. its revocation) re-examines the Suspension that
/// holds it (annotation `chop.dev/held-by`).
pub async fn run(ctx: Arc<Context>, namespace: Option<&str>) {
    use futures::StreamExt;
    use kube::runtime::reflector::ObjectRef;
    use kube::runtime::{Controller, watcher};
    let client = ctx.client.clone();
    // Records by metadata only: the held-by annotation is all the mapping needs.
    let (api, issued): (
        Api<crate::malformed::Guarded<Suspension>>,
        Api<kube::core::PartialObjectMeta<IssuedCertificate>>,
    ) = match namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client, ns),
        ),
        None => (Api::all(client.clone()), Api::all(client)),
    };
    Controller::new(api, watcher::Config::default())
        .watches(
            issued,
            watcher::Config::default().labels(crds::issued_certificate::LABEL_CA),
            |ic: kube::core::PartialObjectMeta<IssuedCertificate>| {
                let ns = ic.namespace().unwrap_or_default();
                ic.annotations()
                    .get(ANNOTATION_HELD_BY)
                    .map(|s| ObjectRef::<crate::malformed::Guarded<Suspension>>::new(s).within(&ns))
            },
        )
        .run(
            crate::malformed::reconcile(reconcile),
            crate::malformed::error_policy(error_policy),
            ctx,
        )
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "Suspension controller event");
            }
        })
        .await;
}
