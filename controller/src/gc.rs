//! Garbage collection of finished CertificateRequests (issue 12, "workflow
//! objects stay small").
//!
//! A request is a workflow object: once it is finished its outcome lives on in
//! the CA's register (the IssuedCertificate keeps `spec.requestRef` and the
//! `chop.dev/request` label) and in the audit trail (`request.*`,
//! `certificate.*` records). `--request-retention` (default
//! [`DEFAULT_RETENTION`]) after it finished, the controller deletes it:
//!
//! | finished when | since |
//! |---|---|
//! | issued: `status.certificate`, and its record is in the register | `Issued=True` |
//! | denied (and settled: no reserved serial, or `Issued=False Denied`) | `Denied=True` |
//! | failed at its current generation | `Failed=True` |
//! | lapsed (not accepted within acceptanceDays, CPS §4.4) | `Lapsed=True` |
//!
//! (each time is the condition's `lastTransitionTime`). Anything else (waiting
//! for approval, for acceptance, for the CA, a serial reserved) is never
//! collected, nor a subordinate CA's own request (`chop.dev/subordinate-ca`,
//! owned by its CA and deleted with it).
//!
//! The scan reads the CertificateRequest controller's own watch cache, never
//! the API (no LIST per tick). Before deleting, the controller reads the
//! request's record (a GET by name) and adds the `chop.dev/request` label when
//! it lacks it (records committed by older releases), so the certificate is
//! still found by request name; records `request.deleted` in the audit trail
//! (waiting for the commit: no record, no deletion); then deletes with the
//! uid and resourceVersion it decided on as preconditions, so a request
//! created again under the same name, or changed since, is never deleted by
//! this decision. Each deletion is counted in
//! `chop_certificate_requests_deleted_total{ca,outcome}`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crds::CertificateRequest;
use crds::IssuedCertificate;
use crds::issued_certificate::{LABEL_REQUEST, request_label_value};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::reflector::Store;
use kube::{Resource, ResourceExt};

use crate::conditions;
use crate::context::{Context, FIELD_MANAGER, object_id};
use crate::error::{Error, Result};
use crate::malformed::Guarded;
use crate::reconcilers::from_time;

/// Default `--request-retention`: a week after a request finished. Long
/// enough for the RA to read the outcome (status, Events) in its weekly
/// review; the register and the audit trail keep what matters after that.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 86_400);

/// The most requests deleted in one pass (a first pass over a large backlog
/// is spread over several, leaving the API server room for issuance).
const MAX_PER_PASS: usize = 500;

/// Parse `--request-retention`: `off` or `0` (never collect), days (`7d`) or
/// a Go-style duration (`168h`, `90m`, `2s`).
pub fn parse_retention(v: &str) -> std::result::Result<Option<Duration>, String> {
    let v = v.trim();
    if v == "off" || v == "0" {
        return Ok(None);
    }
    let hint = || {
        format!(
            "--request-retention {v:?}: off, 0, a number of days (7d) or a duration (168h, 90m, 30s)"
        )
    };
    let d = match v.strip_suffix('d') {
        Some(days) => Duration::from_secs(
            days.parse::<u64>()
                .map_err(|_| hint())?
                .saturating_mul(86_400),
        ),
        None => {
            let d: jiff::SignedDuration = v.parse().map_err(|_| hint())?;
            Duration::try_from(d).map_err(|_| hint())?
        }
    };
    if d.is_zero() {
        return Ok(None);
    }
    Ok(Some(d))
}

/// How a request finished and when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finished {
    /// `Issued`, `Denied`, `Failed` or `Lapsed`.
    pub outcome: &'static str,
    /// The deciding condition's lastTransitionTime.
    pub at: SystemTime,
}

/// Whether `cr` is finished, and since when (pure). `None`: still in the
/// workflow (or the controller has not settled it yet).
pub fn finished(cr: &CertificateRequest) -> Option<Finished> {
    let status = cr.status.as_ref()?;
    let conds = status.conditions.as_slice();
    let since = |type_: &str| {
        conditions::find(conds, type_)
            .filter(|c| c.status == conditions::TRUE)
            .map(|c| from_time(&c.last_transition_time))
    };
    if status.certificate.is_some() {
        return since("Issued").map(|at| Finished {
            outcome: "Issued",
            at,
        });
    }
    if let Some(at) = since("Denied") {
        // A serial reserved before the denial: settled once the controller
        // looked for a committed certificate and wrote Issued=False Denied.
        let settled = status.serial_number.is_none()
            || conditions::find(conds, "Issued")
                .is_some_and(|c| c.status == conditions::FALSE && c.reason == "Denied");
        return settled.then_some(Finished {
            outcome: "Denied",
            at,
        });
    }
    if status.serial_number.is_some() {
        return None;
    }
    if let Some(at) = since("Lapsed") {
        return Some(Finished {
            outcome: "Lapsed",
            at,
        });
    }
    let failed_now = conditions::find(conds, "Failed").is_some_and(|c| {
        c.status == conditions::TRUE && c.observed_generation == cr.meta().generation
    });
    if failed_now && let Some(at) = since("Failed") {
        return Some(Finished {
            outcome: "Failed",
            at,
        });
    }
    None
}

/// Whether the controller collects `cr` at all (a subordinate CA's own
/// request is owned by its CA and goes with it).
fn collectable(cr: &CertificateRequest) -> bool {
    !cr.labels()
        .contains_key(crate::reconcilers::subordinate::LABEL_SUBORDINATE)
}

/// Collect finished requests from `store` (the CertificateRequest
/// controller's watch cache) every `retention / 2` (between 1 s and 1 min)
/// until the process ends.
pub async fn run(
    ctx: Arc<Context>,
    store: Store<Guarded<CertificateRequest>>,
    retention: Duration,
) {
    let tick = (retention / 2).clamp(Duration::from_secs(1), Duration::from_secs(60));
    tracing::info!(retention = ?retention, "collecting finished CertificateRequests");
    loop {
        // A store still listing holds fewer requests: a pass then collects
        // fewer, never a wrong one (each deletion has preconditions).
        tokio::time::sleep(tick).await;
        let now = SystemTime::now();
        let due: Vec<(CertificateRequest, Finished)> = store
            .state()
            .iter()
            .filter_map(|g| crate::malformed::valid(g.as_ref()))
            .filter(|cr| collectable(cr) && cr.meta().deletion_timestamp.is_none())
            .filter_map(|cr| finished(cr).map(|f| (cr, f)))
            .filter(|(_, f)| f.at + retention <= now)
            .take(MAX_PER_PASS)
            .map(|(cr, f)| (cr.clone(), f))
            .collect();
        tracing::debug!(due = due.len(), "finished requests past retention");
        for (cr, f) in due {
            match collect(&ctx, &cr, &f).await {
                Ok(()) => {}
                // No record, no deletion: wait for the trail, not per request.
                Err(e @ Error::AuditUnavailable { .. }) => {
                    tracing::warn!(error = %e, "audit trail unavailable: finished requests are kept for now");
                    break;
                }
                Err(e) => {
                    tracing::warn!(request = %object_id(&cr), error = %e, "could not collect a finished request; retrying next pass");
                }
            }
        }
    }
}

/// Delete one finished request (see the module doc).
async fn collect(ctx: &Context, cr: &CertificateRequest, f: &Finished) -> Result<()> {
    let ns = cr.namespace().unwrap_or_default();
    let name = cr.name_any();
    let ca = cr.spec.ca_ref.name.clone();
    let status = cr.status.clone().unwrap_or_default();
    let mut record_name = None;
    if f.outcome == "Issued" {
        let Some(serial) = status.serial_number.as_deref() else {
            return Ok(());
        };
        let serial = ca::serial::Serial::from_hex(serial).map_err(Error::ca(&object_id(cr)))?;
        let rn = crate::register::record_name(&ca, &serial);
        let records: Api<IssuedCertificate> = Api::namespaced(ctx.client.clone(), &ns);
        let Some(record) = records
            .get_opt(&rn)
            .await
            .map_err(Error::kube("get IssuedCertificate"))?
        else {
            // Not (yet) in the register as this controller sees it: keep the
            // request, it is the only trace.
            tracing::warn!(request = %object_id(cr), record = %rn, "issued request without its record: not collected");
            return Ok(());
        };
        if record.spec.request_ref.as_ref().map(|r| r.name.as_str()) != Some(name.as_str()) {
            tracing::warn!(request = %object_id(cr), record = %rn, "the record names another request: not collected");
            return Ok(());
        }
        let want = request_label_value(&name);
        if crate::register::label(&record, LABEL_REQUEST) != Some(want.as_str()) {
            let patch = serde_json::json!({
                "metadata": {
                    "resourceVersion": record.metadata.resource_version,
                    "labels": { LABEL_REQUEST: want },
                }
            });
            records
                .patch(
                    &rn,
                    &PatchParams {
                        field_manager: Some(FIELD_MANAGER.to_string()),
                        ..PatchParams::default()
                    },
                    &Patch::Merge(&patch),
                )
                .await
                .map_err(Error::kube("label IssuedCertificate with its request"))?;
        }
        record_name = Some(rn);
    }
    let finished_at = jiff::Timestamp::try_from(f.at)
        .map(|t| t.to_string())
        .unwrap_or_default();
    let mut ev = crate::audit::request_users(
        crate::audit::AuditEvent::new("request.deleted", "intent")
            .object(cr)
            .ca(&ns, &ca)
            .reason(f.outcome)
            .detail("finishedAt", finished_at)
            .dedup(format!("request.deleted/{}", cr.uid().unwrap_or_default())),
        cr,
    );
    if let (Some(serial), Some(rn)) = (status.serial_number.as_deref(), record_name.as_deref()) {
        ev = ev.serial(serial).detail("record", rn);
    }
    ctx.audit.record(ev).await?;
    let api: Api<CertificateRequest> = Api::namespaced(ctx.client.clone(), &ns);
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: cr.uid(),
            resource_version: cr.resource_version(),
        }),
        ..DeleteParams::default()
    };
    match api.delete(&name, &params).await {
        Ok(_) => {
            ctx.metrics.request_deleted(&ca, f.outcome);
            tracing::info!(request = %object_id(cr), outcome = f.outcome, "finished request collected");
            Ok(())
        }
        // Gone already, or changed / created again since this decision: the
        // next pass decides on what the watch shows then.
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(e) => Err(Error::kube("delete CertificateRequest")(e)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::conditions::Cond;
    use crds::CertificateRequestStatus;

    fn request(conds: &[Cond], serial: bool, certificate: bool) -> CertificateRequest {
        let spec = serde_json::from_value(serde_json::json!({
            "caRef": {"name": "root"}, "profile": "Signature",
            "subscriber": {"reference": "r", "commonName": "n"}, "csr": "x",
        }))
        .unwrap();
        let mut cr = CertificateRequest::new("r", spec);
        cr.metadata.generation = Some(1);
        cr.status = Some(CertificateRequestStatus {
            conditions: conds
                .iter()
                .map(|c| conditions::build(&[], c, Some(1), conditions::now()))
                .collect(),
            serial_number: serial.then(|| "0A".into()),
            certificate: certificate.then(|| "PEM".into()),
            ..Default::default()
        });
        cr
    }

    #[test]
    fn only_finished_requests_are_collected() {
        let issued = request(&[Cond::yes("Issued", "Issued", "")], true, true);
        assert_eq!(finished(&issued).unwrap().outcome, "Issued");
        let denied = request(&[Cond::yes("Denied", "ByOfficer", "")], false, false);
        assert_eq!(finished(&denied).unwrap().outcome, "Denied");
        let lapsed = request(&[Cond::yes("Lapsed", "AcceptanceLapsed", "")], false, false);
        assert_eq!(finished(&lapsed).unwrap().outcome, "Lapsed");
        let failed = request(&[Cond::yes("Failed", "WeakKey", "")], false, false);
        assert_eq!(finished(&failed).unwrap().outcome, "Failed");

        // Still in the workflow.
        for waiting in [
            request(
                &[Cond::no("Issued", "WaitingForApproval", "")],
                false,
                false,
            ),
            request(
                &[
                    Cond::yes("Approved", "ByOfficer", ""),
                    Cond::no("Issued", "WaitingForAcceptance", ""),
                ],
                false,
                false,
            ),
            // A serial reserved, not signed yet.
            request(&[Cond::yes("Approved", "ByOfficer", "")], true, false),
            // Denied after a reservation, not settled by the controller yet.
            request(&[Cond::yes("Denied", "ByOfficer", "")], true, false),
        ] {
            assert_eq!(finished(&waiting), None, "{:?}", waiting.status);
        }
        // Failed at an earlier generation: the RA changed the spec since.
        let mut edited = failed.clone();
        edited.metadata.generation = Some(2);
        assert_eq!(finished(&edited), None);
        // Denied after a reservation and settled.
        let settled = request(
            &[
                Cond::yes("Denied", "ByOfficer", ""),
                Cond::no("Issued", "Denied", ""),
            ],
            true,
            false,
        );
        assert_eq!(finished(&settled).unwrap().outcome, "Denied");
        // A subordinate CA's own request goes with its CA, never here.
        assert!(collectable(&issued));
        let mut sub = issued.clone();
        sub.metadata.labels = Some(
            [(
                crate::reconcilers::subordinate::LABEL_SUBORDINATE.to_string(),
                "sub".to_string(),
            )]
            .into(),
        );
        assert!(!collectable(&sub));
    }

    #[test]
    fn retention_parses_days_durations_and_off() {
        assert_eq!(parse_retention("7d").unwrap(), Some(DEFAULT_RETENTION));
        assert_eq!(parse_retention("168h").unwrap(), Some(DEFAULT_RETENTION));
        assert_eq!(parse_retention("2s").unwrap(), Some(Duration::from_secs(2)));
        assert_eq!(parse_retention("off").unwrap(), None);
        assert_eq!(parse_retention("0").unwrap(), None);
        assert!(parse_retention("soon").is_err());
        assert!(parse_retention("-5h").is_err());
    }
}
