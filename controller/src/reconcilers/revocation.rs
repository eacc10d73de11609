//! Revocation reconciler: revoke a certificate and every certificate of the
//! same CA that shares its key pair (CPS §4.6.2, §6.3: "revoking a renewed
//! certificate revokes all certificates of that key pair").
//!
//! ```text
//! Applied=True ───────────────────────────────────────────────► nothing to do
//! certificateRequestRef → request missing  ──► Applied=False RequestNotFound (re-checked)
//!                       → not issued yet   ──► Applied=False NotIssued (re-checked)
//! serial (or request's serial) without a record ► Applied=False UnknownSerial + Warning
//!                                                  (until the spec changes)
//! otherwise: fix revokedAt (now, whole seconds) in this object's status FIRST,
//! then for every record of the CA with the same key-fingerprint label, decided
//! on the record as read and written in ONE PATCH at that resourceVersion
//! (409 Conflict → read again, decide again; `register::transition`):
//!   revoked by another Revocation → left as it is (the earliest revocation stands)
//!   else → status {Revoked, revokedAt, reason, invalidityDate} + label
//!          chop.dev/status=Revoked + annotation chop.dev/revoked-by, together
//! a renewal claimed on one of them (`chop.dev/renewed-by`) not yet issued nor
//! failed ─► Applied=False WaitingForRenewal (re-checked every 2 s; its
//!           certificate has the same key and is revoked once its record exists)
//! → Applied=True, serialNumbers, newlyRevoked / alreadyRevoked, Event Revoked.
//! ```
//!
//! The IssuedCertificate's status is the single source of truth for the CRL
//! builder and the OCSP responder (§7.3), so both see the same time and reason.
//! A restart at any point re-runs the same steps with the recorded revokedAt:
//! records already carrying this object's mark are re-written identically, so
//! a revocation applies exactly once. A Held record is revoked like any other
//! (revocation supersedes a hold). Records whose notAfter has passed are
//! marked too: harmless, and they leave the CRL by themselves (§4.10).
//! Deleting a Revocation changes nothing (no finalizer): records stay revoked.

use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use crds::revocation::RevocationReason;
use crds::{IssuedCertificate, Revocation, RevocationStatus};
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use tracing::Instrument;

use crate::conditions::{self, Cond};
use crate::context::{Context, FIELD_MANAGER, object_id};
use crate::error::{Error, Result};
use crate::register::{self, ANNOTATION_REVOKED_BY, Change, Decision, REVOKED, State, Target};
use crate::renewal::ANNOTATION_RENEWED_BY;

/// Kind label in metrics and spans.
pub const KIND: &str = "Revocation";

/// Condition types this controller writes.
const OWN_CONDITIONS: [&str; 1] = ["Applied"];

/// Test hook: abort the process right after a Revocation's revokedAt was
/// written, before any record is touched (`CHOP_TEST_CRASH_AFTER_REVOKED_AT=1`).
/// Never set in production.
fn crash_after_revoked_at() -> bool {
    static HOOK: OnceLock<bool> = OnceLock::new();
    *HOOK.get_or_init(|| {
        let on = std::env::var("CHOP_TEST_CRASH_AFTER_REVOKED_AT").as_deref() == Ok("1");
        if on {
            tracing::warn!(
                "CHOP_TEST_CRASH_AFTER_REVOKED_AT=1: test hook active, the process aborts after fixing a revocation time"
            );
        }
        on
    })
}

/// Reconcile one Revocation.
pub async fn reconcile(rev: Arc<Revocation>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_timer(KIND);
    let span = tracing::info_span!("reconcile", kind = KIND, namespace = %rev.namespace().unwrap_or_default(), name = %rev.name_any());
    let action = async {
        match super::fresh(rev.as_ref(), &ctx, "get Revocation").await? {
            Some(current) => apply(&current, &ctx).await,
            None => Ok(Action::await_change()),
        }
    }
    .instrument(span)
    .await
    .map_err(|e| e.about(&object_id(rev.as_ref())))?;
    ctx.reset_backoff(&rev.uid().unwrap_or_default());
    Ok(action)
}

/// Count the error and requeue with backoff.
pub fn error_policy(rev: Arc<Revocation>, error: &Error, ctx: Arc<Context>) -> Action {
    super::requeue_after_error(KIND, rev.as_ref(), error, &ctx)
}

/// The RFC 5280 camelCase name of a CRD reason, checked against the core's list.
pub fn reason_name(reason: RevocationReason, object: &str) -> Result<&'static str> {
    let name = serde_json::to_value(reason)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    ca::revocation::Reason::from_str(&name)
        .map(ca::revocation::Reason::name)
        .map_err(Error::ca(object))
}

async fn apply(rev: &Revocation, ctx: &Context) -> Result<Action> {
    let ns = rev.namespace().unwrap_or_default();
    let id = object_id(rev);
    let generation = rev.meta().generation;
    let status = rev.status.clone().unwrap_or_default();
    if conditions::is_true(&status.conditions, "Applied") {
        return Ok(Action::await_change());
    }
    if conditions::find(&status.conditions, "Applied").is_some_and(|c| {
        matches!(c.reason.as_str(), "UnknownSerial" | "AmbiguousRequest")
            && c.observed_generation == generation
    }) {
        return Ok(Action::await_change());
    }
    let ca = rev.spec.ca_ref.name.clone();
    let reason = reason_name(rev.spec.reason, &id)?;
    let target = register::resolve(
        &ctx.client,
        &ns,
        &ca,
        rev.spec.certificate_request_ref.as_ref(),
        rev.spec.serial_number.as_deref(),
    )
    .await?;
    let record = match target {
        Target::Found(r) => r,
        Target::RequestNotFound => {
            let cond = Cond::no(
                "Applied",
                "RequestNotFound",
                "the CertificateRequest named by certificateRequestRef does not exist; name the certificate by serialNumber instead",
            );
            write_status(rev, ctx, status, &cond).await?;
            return Ok(Action::requeue(Duration::from_secs(60)));
        }
        Target::NotIssued => {
            let cond = Cond::no(
                "Applied",
                "NotIssued",
                "the CertificateRequest has no certificate yet; the revocation applies once it is issued",
            );
            write_status(rev, ctx, status, &cond).await?;
            return Ok(Action::requeue(Duration::from_secs(30)));
        }
        Target::Ambiguous(records) => {
            let msg = format!(
                "the CertificateRequest named by certificateRequestRef is gone and CertificateAuthority {ca:?} issued several certificates for requests of that name ({}); name the certificate by serialNumber instead",
                records.join(", ")
            );
            let cond = Cond::no("Applied", "AmbiguousRequest", msg.clone());
            write_status(rev, ctx, status, &cond).await?;
            ctx.event(rev, true, "AmbiguousRequest", msg).await;
            return Ok(Action::await_change());
        }
        Target::UnknownSerial => {
            let msg = format!("CertificateAuthority {ca:?} has no record of that certificate");
            let cond = Cond::no("Applied", "UnknownSerial", msg.clone());
            write_status(rev, ctx, status, &cond).await?;
            ctx.event(rev, true, "UnknownSerial", msg).await;
            return Ok(Action::await_change());
        }
    };

    // Fix the revocation time once, before any record carries it.
    let mut status = status;
    let revoked_at = match status.revoked_at.clone() {
        Some(t) => t,
        None => {
            let t = register::now_seconds();
            status.revoked_at = Some(t.clone());
            let cond = Cond::no(
                "Applied",
                "Applying",
                "the revocation time is fixed; recording it for every certificate of the key",
            );
            write_status(rev, ctx, status.clone(), &cond).await?;
            if crash_after_revoked_at() {
                tracing::error!("test hook: aborting after fixing the revocation time");
                std::process::abort();
            }
            t
        }
    };

    let me = rev.name_any();
    let api: Api<IssuedCertificate> = Api::namespaced(ctx.client.clone(), &ns);
    let records = register::same_key(&api, &ca, &record).await?;
    // The record of the revocation of each certificate is committed before
    // any record's state changes (CPS §5.4.6): one per certificate of the key,
    // so a retry (or a certificate of the key issued meanwhile) adds only what
    // is not recorded yet.
    let serials: Vec<&str> = records
        .iter()
        .map(|r| r.spec.serial_number.as_str())
        .collect();
    let intents = records.iter().map(|r| {
        let ev = crate::audit::AuditEvent::new("revocation.apply", "intent")
            .object(rev)
            .ca(&ns, &ca)
            .serial(r.spec.serial_number.clone())
            .reason(reason)
            .detail("serials", serials.join(","))
            .detail("revokedAt", revoked_at.0.to_string())
            .detail("requester", format!("{:?}", rev.spec.requester))
            .dedup(format!(
                "revocation.apply/{}/{}",
                rev.uid().unwrap_or_default(),
                r.spec.serial_number
            ));
        let ev = crate::audit::acted_by(
            ev,
            "revokedBy",
            crate::audit::requested_by(rev.meta()),
            || crate::audit::spec_manager(rev.meta(), "reason").map(str::to_owned),
        );
        ctx.audit.record(ev)
    });
    if let Some(e) = futures::future::join_all(intents)
        .await
        .into_iter()
        .find_map(std::result::Result::err)
    {
        let msg = format!("{e}; no certificate's state was changed (CPS 5.4.6)");
        let cond = Cond::no("Applied", crate::audit::REASON, msg.clone());
        write_status(rev, ctx, status, &cond).await?;
        ctx.event(rev, true, crate::audit::REASON, msg).await;
        return Ok(Action::requeue(Duration::from_secs(5)));
    }
    let now = SystemTime::now();
    let (mut newly, mut already, mut expired) = (Vec::new(), Vec::new(), 0usize);
    let mut renewals = Vec::new();
    for r in &records {
        let serial = r.spec.serial_number.clone();
        let change = Change {
            state: State::Revoked,
            revoked_at: Some(revoked_at.clone()),
            reason: Some(reason.to_string()),
            invalidity_date: rev.spec.invalidity_date.clone(),
            annotations: vec![(ANNOTATION_REVOKED_BY, Some(me.clone()))],
        };
        // Decided on the record as read and written at that version: a
        // concurrent Revocation, hold or resume makes the write a conflict,
        // and the decision is taken again on what it wrote (so the earliest
        // revocation stands, and a hold or resume never overwrites it).
        let (newly_mine, r) = register::transition(&api, r, |cur| {
            let mine = register::annotation(cur, ANNOTATION_REVOKED_BY) == Some(me.as_str());
            Ok(match register::state(cur)? {
                State::Revoked if !mine => Decision::Keep(false),
                _ if change.is_on(cur) => Decision::Keep(true),
                _ => Decision::Write(change.clone(), true),
            })
        })
        .await?;
        // The block list reads the register's index: it holds this revocation
        // from now on, before anything reports it (crate::blocklist).
        ctx.records.observe(&r);
        // A renewal claimed on this record (before or while it was revoked):
        // its certificate has the same key, so it must be revoked too.
        if let Some(by) = register::annotation(&r, ANNOTATION_RENEWED_BY) {
            renewals.push(by.to_string());
        }
        if !newly_mine {
            already.push(serial);
            continue;
        }
        if register::expired(&r, now) {
            expired += 1;
        }
        register::reflect_on_request(&ctx.client, &r, REVOKED).await;
        newly.push(serial);
    }
    if let Some(wait) = renewal_in_flight(ctx, &ns, &records, &renewals).await? {
        // Applied once the renewal's record exists (then listed with the key
        // and revoked above) or the renewal failed.
        let cond = Cond::no("Applied", "WaitingForRenewal", wait);
        write_status(rev, ctx, status, &cond).await?;
        return Ok(Action::requeue(Duration::from_secs(2)));
    }
    status.serial_numbers = records
        .iter()
        .map(|r| r.spec.serial_number.clone())
        .collect();
    status.newly_revoked = newly.clone();
    status.already_revoked = already.clone();
    let mut msg = format!(
        "{} certificate(s) of the key revoked, {} already revoked earlier (the earliest revocation stands)",
        newly.len(),
        already.len()
    );
    if expired > 0 {
        msg.push_str(&format!("; {expired} of them had already expired"));
    }
    let cond = Cond::yes("Applied", "Revoked", msg.clone());
    write_status(rev, ctx, status, &cond).await?;
    ctx.metrics
        .revoked(&ca, reason, u64::try_from(newly.len()).unwrap_or(u64::MAX));
    ctx.event(rev, false, "Revoked", msg).await;
    tracing::info!(
        newly = newly.len(),
        already = already.len(),
        reason,
        "revocation applied"
    );
    Ok(Action::await_change())
}

/// Whether a renewal claimed on one of the key's records (`renewals`, the
/// requests named by `chop.dev/renewed-by`) may still produce a certificate of
/// this key that `records` does not list yet: its request has neither failed
/// nor a certificate whose record is among `records`. The message says which.
/// (A claim is written at the version of a Valid record, so a claim and this
/// revocation are ordered; a claim seen here may still be signing.)
async fn renewal_in_flight(
    ctx: &Context,
    ns: &str,
    records: &[IssuedCertificate],
    renewals: &[String],
) -> Result<Option<String>> {
    let api: Api<crds::CertificateRequest> = Api::namespaced(ctx.client.clone(), ns);
    for name in renewals {
        let Some(cr) = api
            .get_opt(name)
            .await
            .map_err(Error::kube("get CertificateRequest"))?
        else {
            continue;
        };
        let st = cr.status.clone().unwrap_or_default();
        if conditions::is_true(&st.conditions, "Failed") {
            continue;
        }
        let listed = st.certificate.is_some()
            && st.serial_number.as_deref().is_some_and(|serial| {
                records
                    .iter()
                    .any(|r| r.spec.serial_number.eq_ignore_ascii_case(serial))
            });
        if !listed {
            return Ok(Some(format!(
                "the certificates of the key are revoked; waiting for renewal {name:?} (same key) to be issued or to fail, to revoke its certificate too"
            )));
        }
    }
    Ok(None)
}

async fn write_status(
    rev: &Revocation,
    ctx: &Context,
    mut status: RevocationStatus,
    cond: &Cond,
) -> Result<()> {
    let generation = rev.meta().generation;
    let existing = status.conditions.clone();
    if conditions::unchanged(&existing, cond, generation) && rev.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let mut own: Vec<_> = existing
        .iter()
        .filter(|c| OWN_CONDITIONS.contains(&c.type_.as_str()) && c.type_ != cond.type_)
        .cloned()
        .collect();
    own.push(conditions::build(
        &existing,
        cond,
        generation,
        conditions::now(),
    ));
    status.conditions = own;
    status.observed_generation = generation;
    super::apply_status(
        &ctx.client,
        rev,
        FIELD_MANAGER,
        &status,
        None,
        "apply Revocation status",
    )
    .await?;
    Ok(())
}

/// Run the Revocation controller until its stream ends.
pub async fn run(ctx: Arc<Context>, namespace: Option<&str>) {
    use futures::StreamExt;
    use kube::runtime::{Controller, watcher};
    let api: Api<crate::malformed::Guarded<Revocation>> = match namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    Controller::new(api, watcher::Config::default())
        .run(
            crate::malformed::reconcile(reconcile),
            crate::malformed::error_policy(error_policy),
            ctx,
        )
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "Revocation controller event");
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reasons_are_rfc5280_camel_case_names() {
        assert_eq!(
            reason_name(RevocationReason::KeyCompromise, "x").unwrap(),
            "keyCompromise"
        );
        assert_eq!(
            reason_name(RevocationReason::CaCompromise, "x").unwrap(),
            "cACompromise"
        );
        assert_eq!(
            reason_name(RevocationReason::AaCompromise, "x").unwrap(),
            "aACompromise"
        );
        assert_eq!(
            reason_name(RevocationReason::CessationOfOperation, "x").unwrap(),
            "cessationOfOperation"
        );
    }
}
