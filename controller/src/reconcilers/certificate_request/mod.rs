//! CertificateRequest reconciler: approval and acceptance gates, serial
//! reservation, signing, the IssuedCertificate record, status. One concern per
//! file: [`gates`] (what may happen, pure), [`reservation`] (reserve, resume,
//! the checks of a reservation), [`signing`] (build, lint, sign, commit).
//!
//! ```text
//! issued / Failed@generation / Lapsed ──────────────────────► nothing to do
//! Denied (checked first) ──► a committed record of this request? record it; never sign
//! serial reserved, no certificate ──► record of that serial is this request's? record it
//!                                     (another request's: Failed ReservationConflict)
//!                                     else re-check may_sign, check the reservation
//!                                     is one the controller would make, sign
//! not Approved, creator in approval.autoApproveUsers, subscriber profile
//!                                 ──► Approved=True AutoApproved
//! not Approved ──► Issued=False WaitingForApproval (OfficerApprovalRequired for a
//!                  listed creator asking for a SubordinateCA/OCSPResponder profile)
//! not accepted ──► Issued=False WaitingForAcceptance  (Lapsed=True after acceptanceDays, §4.4)
//! CA Suspended ──► Issued=False IssuanceSuspended      (waits, not failed)
//! CA not Ready ──► Issued=False CANotReady
//! bad input    ──► Failed=True <ca::Error::reason()> + Warning Event (until the spec changes)
//! renewal refused ──► Failed=True <crate::renewal reason> + Warning Event
//! otherwise: lint a trial certificate → assign subscriber id (a renewal keeps
//! the original's; claims the original's record) → reserve serial, notBefore,
//! notAfter, subscriber id in status (resourceVersion precondition) → sign →
//! create IssuedCertificate (commit point; AlreadyExists = done) → status.
//! ```
//!
//! The TBSCertificate is a pure function of the reserved values and RSA PKCS#1
//! v1.5 is deterministic, so a crash anywhere after the reservation yields the
//! same certificate with the same serial on retry: never two certificates for
//! one request (DESIGN §1, ADR 0002).
//!
//! Status is not an instruction. The reservation lives in the request's status,
//! which officers may write (their decision is a condition there), so the API
//! server lets only the controller's identity change anything but the decision
//! (manifests/policies/controller-state.yaml), and the controller does not take
//! a reservation on trust either: before signing with one it re-reads the
//! decisions ([`gates::may_sign`]) and checks that the reservation is one it
//! would have made ([`reservation`]).
//!
//! A renewal (`renewalOf`, see [`crate::renewal`]) is a request like any other
//! (approval, acceptance) whose certificate is built from the original's: same
//! subject and key, notAfter = the original's + `profiles.renewalExtension`.
//!
//! Auto-approval: when the request's creator (the `chop.dev/requested-by`
//! annotation, written by the `chop-requested-by` admission policy) is listed in
//! the CA's `approval.autoApproveUsers`, the controller sets `Approved=True`
//! (reason `AutoApproved`) itself, conditional on the resourceVersion it read, so
//! an officer's `Denied` written first wins. Otherwise Approved/Denied are only
//! read here. The API server's chop-approval policy requires verb `approve` on
//! `signers` for that write, which the chop-controller role grants. Auto-approval
//! covers subscriber profiles only: a SubordinateCA or OCSPResponder certificate
//! always needs an officer, who by chop-no-self-approval is not its requester.

mod gates;
mod reservation;
mod signing;

pub use gates::{Gate, Refusal, auto_approvable, gate, may_sign};
pub use signing::{profile_for, profile_label};

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crds::{CertificateAuthority, CertificateRequest, CertificateRequestStatus};
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use tracing::Instrument;

use crate::conditions::{self, Cond};
use crate::context::{Context, FIELD_MANAGER, object_id};
use crate::error::{Error, Result};

/// Kind label in metrics and spans.
pub const KIND: &str = "CertificateRequest";

/// The longest single requeue delay.
const MAX_REQUEUE: Duration = Duration::from_secs(86_400);

/// Condition types this controller writes (officers own `Approved`/`Denied`,
/// except an `Approved` of reason [`AUTO_APPROVED`]).
const OWN_CONDITIONS: [&str; 4] = ["Accepted", "Issued", "Failed", "Lapsed"];

/// Reason of the `Approved` condition the controller writes for auto-approval.
pub const AUTO_APPROVED: &str = "AutoApproved";

/// Annotation naming the user who created the request (written by the
/// `chop-requested-by` admission policy, manifests/policies/no-self-approval.yaml).
pub const ANNOTATION_REQUESTED_BY: &str = "chop.dev/requested-by";

/// Reconcile one CertificateRequest.
pub async fn reconcile(cr: Arc<CertificateRequest>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_timer(KIND);
    let span = tracing::info_span!("reconcile", kind = KIND, namespace = %cr.namespace().unwrap_or_default(), name = %cr.name_any());
    let action = async {
        match super::fresh(cr.as_ref(), &ctx, "get CertificateRequest").await? {
            Some(current) => apply(&current, &ctx).await,
            None => {
                ctx.metrics
                    .request_waiting(&cr.uid().unwrap_or_default(), None);
                Ok(Action::await_change())
            }
        }
    }
    .instrument(span)
    .await
    .map_err(|e| e.about(&object_id(cr.as_ref())))?;
    ctx.reset_backoff(&cr.uid().unwrap_or_default());
    Ok(action)
}

/// Count the error and requeue with backoff.
pub fn error_policy(cr: Arc<CertificateRequest>, error: &Error, ctx: Arc<Context>) -> Action {
    super::requeue_after_error(KIND, cr.as_ref(), error, &ctx)
}

async fn apply(cr: &CertificateRequest, ctx: &Context) -> Result<Action> {
    let ns = cr.namespace().unwrap_or_default();
    let ca = match ctx.cached_ca(&ns, &cr.spec.ca_ref.name) {
        Some(ca) => ca,
        None => {
            let cas: Api<CertificateAuthority> = Api::namespaced(ctx.client.clone(), &ns);
            cas.get_opt(&cr.spec.ca_ref.name)
                .await
                .map_err(Error::kube("get CertificateAuthority"))?
        }
    };
    let decided = gate(cr, ca.as_ref(), SystemTime::now());
    if decided != Gate::Done {
        observe(cr, ctx);
    }
    let waiting = match &decided {
        Gate::Wait(reason, ..) => Some((cr.spec.ca_ref.name.as_str(), *reason)),
        _ => None,
    };
    ctx.metrics
        .request_waiting(&cr.uid().unwrap_or_default(), waiting);
    match decided {
        Gate::Done => Ok(Action::await_change()),
        Gate::Lapse => {
            let msg =
                "not accepted within the CA's acceptanceDays (CPS §4.4); it will never be issued";
            let conds = [
                Cond::yes("Lapsed", "AcceptanceLapsed", msg),
                Cond::no("Issued", "Lapsed", msg),
            ];
            set_conditions(cr, ctx, &conds).await?;
            ctx.audit.note(
                crate::audit::request_users(
                    crate::audit::observed("request.lapsed", cr, "lapsed"),
                    cr,
                )
                .reason("AcceptanceLapsed"),
            );
            ctx.event(cr, true, "Lapsed", msg.into()).await;
            Ok(Action::await_change())
        }
        Gate::Denied { reserved } => {
            if reserved && let Some(ca) = &ca {
                // Signed before the denial? Then the certificate exists and is
                // recorded here (so that it can be revoked); nothing is signed.
                if let Some(action) = reservation::record_committed(cr, ca, ctx).await? {
                    return Ok(action);
                }
            }
            let cond = Cond::no("Issued", "Denied", "an officer denied the request");
            set_conditions(cr, ctx, &[cond]).await?;
            Ok(Action::await_change())
        }
        Gate::AutoApprove(user) => {
            let msg = format!(
                "created by {user:?}, listed in spec.approval.autoApproveUsers of CertificateAuthority {:?}",
                cr.spec.ca_ref.name
            );
            let cond = Cond::yes("Approved", AUTO_APPROVED, msg.clone());
            // Ready to issue once approved: the approval goes out with the
            // serial reservation, in one conditional write (every status write
            // keeps the controller's own Approved condition).
            let mut approved = cr.clone();
            let mut status = approved.status.take().unwrap_or_default();
            let built = conditions::build(
                &status.conditions,
                &cond,
                cr.meta().generation,
                conditions::now(),
            );
            status.conditions.retain(|c| c.type_ != "Approved");
            status.conditions.push(built);
            approved.status = Some(status);
            ctx.audit.note(
                crate::audit::request_users(
                    crate::audit::observed("request.approved", cr, "1"),
                    &approved,
                )
                .ca(&cr.namespace().unwrap_or_default(), &cr.spec.ca_ref.name)
                .reason(AUTO_APPROVED),
            );
            if let (Gate::Issue, Some(ca)) = (gate(&approved, ca.as_ref(), SystemTime::now()), &ca)
            {
                let action = reservation::issue(&approved, ca, ctx).await?;
                ctx.event(cr, false, AUTO_APPROVED, msg).await;
                return Ok(action);
            }
            // Conditional: an officer's Denied written since this read wins.
            write_status(
                cr,
                ctx,
                cr.status.clone().unwrap_or_default(),
                &[cond],
                cr.resource_version(),
            )
            .await?;
            ctx.event(cr, false, AUTO_APPROVED, msg).await;
            Ok(Action::requeue(Duration::from_secs(1)))
        }
        Gate::Wait(reason, message, recheck) => {
            let cond = Cond::no("Issued", reason, message);
            set_conditions(cr, ctx, &[cond]).await?;
            // Re-check at the deadline, but at least daily: the runtime's delay
            // queue refuses delays of years (acceptanceDays may be 3650).
            Ok(recheck.map_or_else(Action::await_change, |d| {
                Action::requeue((d + Duration::from_secs(1)).min(MAX_REQUEUE))
            }))
        }
        Gate::Resume => match ca {
            Some(ca) => reservation::resume(cr, &ca, ctx).await,
            None => {
                let cond = Cond::no(
                    "Issued",
                    "CANotFound",
                    format!("CertificateAuthority {:?} not found", cr.spec.ca_ref.name),
                );
                set_conditions(cr, ctx, &[cond]).await?;
                Ok(Action::requeue(Duration::from_secs(30)))
            }
        },
        Gate::Issue => match ca {
            Some(ca) => reservation::issue(cr, &ca, ctx).await,
            None => Ok(Action::requeue(Duration::from_secs(30))),
        },
    }
}

/// Record what the controller observes on a request it acts on: its creation,
/// the officer's decision and the applicant's acceptance (each once).
fn observe(cr: &CertificateRequest, ctx: &Context) {
    let conds = cr
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let ns = cr.namespace().unwrap_or_default();
    let with = |event: &str| {
        crate::audit::request_users(crate::audit::observed(event, cr, "1"), cr)
            .ca(&ns, &cr.spec.ca_ref.name)
            .detail("profile", profile_label(cr.spec.profile))
    };
    let created = with("request.created");
    let created = match &cr.spec.subscriber {
        Some(s) => created.detail("subscriberReference", s.reference.clone()),
        None => created,
    };
    ctx.audit.note(created);
    if let Some(c) = conditions::find(conds, "Approved").filter(|c| c.status == conditions::TRUE) {
        ctx.audit
            .note(with("request.approved").reason(c.reason.clone()));
    }
    if let Some(c) = conditions::find(conds, "Denied").filter(|c| c.status == conditions::TRUE) {
        ctx.audit
            .note(with("request.denied").reason(c.reason.clone()));
    }
    if cr.spec.accepted {
        ctx.audit.note(with("request.accepted"));
    }
}

/// Record a permanent input error: `Failed=True`, `Issued=False`, Warning Event.
async fn fail(
    cr: &CertificateRequest,
    ca: &CertificateAuthority,
    ctx: &Context,
    e: &ca::Error,
) -> Result<Action> {
    fail_with(cr, ca, ctx, e.reason(), e.to_string()).await
}

/// [`fail`] with a reason and message of the controller's own.
async fn fail_with(
    cr: &CertificateRequest,
    ca: &CertificateAuthority,
    ctx: &Context,
    reason: &str,
    message: String,
) -> Result<Action> {
    let conds = [
        Cond::yes("Failed", reason, message.clone()),
        Cond::no("Issued", reason, message.clone()),
    ];
    set_conditions(cr, ctx, &conds).await?;
    ctx.audit.note(
        crate::audit::request_users(
            crate::audit::observed(
                "request.failed",
                cr,
                &cr.meta().generation.unwrap_or_default().to_string(),
            ),
            cr,
        )
        .reason(reason),
    );
    ctx.event(cr, true, reason, message).await;
    ctx.metrics
        .issued(&ca.name_any(), profile_label(cr.spec.profile), reason);
    Ok(Action::await_change())
}

/// Apply the controller's part of the status: every non-condition field, and
/// only the conditions this controller owns (never Approved/Denied). With
/// `resource_version`, the write is conditional on it.
/// Keep the request's current status and set `conds`.
async fn set_conditions(cr: &CertificateRequest, ctx: &Context, conds: &[Cond]) -> Result<()> {
    write_status(cr, ctx, cr.status.clone().unwrap_or_default(), conds, None).await
}

async fn write_status(
    cr: &CertificateRequest,
    ctx: &Context,
    mut status: CertificateRequestStatus,
    conds: &[Cond],
    resource_version: Option<String>,
) -> Result<()> {
    let generation = cr.meta().generation;
    let existing = status.conditions.clone();
    // `Accepted` mirrors spec.accepted (CPS §4.4), for `kubectl describe` and
    // for tools that read conditions only.
    let mut conds = conds.to_vec();
    if cr.spec.accepted {
        conds.push(Cond::yes(
            "Accepted",
            "AcceptedByApplicant",
            "the applicant reviewed and accepted the certificate's content",
        ));
    }
    let conds = conds.as_slice();
    let all_unchanged = resource_version.is_none()
        && conds
            .iter()
            .all(|c| conditions::unchanged(&existing, c, generation))
        && cr.status.as_ref() == Some(&status);
    if all_unchanged {
        return Ok(());
    }
    let mut own: Vec<_> = existing
        .iter()
        .filter(|c| {
            OWN_CONDITIONS.contains(&c.type_.as_str())
                || (c.type_ == "Approved" && c.reason == AUTO_APPROVED)
        })
        .filter(|c| !conds.iter().any(|n| n.type_ == c.type_))
        // A failure of an earlier generation no longer describes the request.
        .filter(|c| c.type_ != "Failed" || c.observed_generation == generation)
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
    // Who decided is the API server's stamp (policy chop-decided-by), not the
    // controller's to own: an applied field the controller later left out would
    // be removed, which chop-acted-by refuses.
    status.decided_by = None;
    let written = super::apply_status(
        &ctx.client,
        cr,
        FIELD_MANAGER,
        &status,
        resource_version.as_deref(),
        "apply CertificateRequest status",
    )
    .await?;
    ctx.note_written(&cr.uid().unwrap_or_default(), written.resource_version());
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crds::CertificateRequestSpec;
    use crds::certificate_authority::IssuanceState;
    use crds::certificate_request::ProfileName;
    use crds::certificate_request::Subscriber;
    use crds::common::LocalObjectReference;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    /// A status holding one True condition of `type_` with `reason`.
    fn decided(type_: &'static str, reason: &'static str) -> CertificateRequestStatus {
        CertificateRequestStatus {
            conditions: vec![conditions::build(
                &[],
                &Cond::yes(type_, reason, ""),
                Some(1),
                conditions::now(),
            )],
            ..Default::default()
        }
    }

    fn ca(ready: bool) -> CertificateAuthority {
        let spec: crds::CertificateAuthoritySpec = serde_json::from_value(serde_json::json!({
            "type": "Root",
            "subject": {"country": "TW", "commonName": "Test Root"},
            "hsm": {"tokenLabel": "t", "keyLabel": "k", "pinSecretRef": {"name": "s", "key": "pin"}},
        }))
        .unwrap();
        let mut ca = CertificateAuthority::new("root", spec);
        if ready {
            let st = crds::CertificateAuthorityStatus {
                certificate: Some("PEM".into()),
                conditions: vec![conditions::build(
                    &[],
                    &Cond::yes("Ready", "Ready", ""),
                    Some(1),
                    conditions::now(),
                )],
                ..Default::default()
            };
            ca.status = Some(st);
        }
        ca
    }

    fn request(created_days_ago: u64, accepted: bool, approved: bool) -> CertificateRequest {
        let mut cr = CertificateRequest::new(
            "r",
            CertificateRequestSpec {
                ca_ref: LocalObjectReference {
                    name: "root".into(),
                },
                profile: ProfileName::Signature,
                subscriber: Some(Subscriber {
                    reference: "ref-1".into(),
                    common_name: "王小明".into(),
                }),
                subject: None,
                csr: Some("x".into()),
                public_key: None,
                email: None,
                email_verified: false,
                renewal_of: None,
                accepted,
            },
        );
        cr.metadata.generation = Some(1);
        let created = SystemTime::now() - Duration::from_secs(created_days_ago * 86_400);
        cr.metadata.creation_timestamp = Some(Time(jiff::Timestamp::try_from(created).unwrap()));
        if approved {
            cr.status = Some(decided("Approved", "ByOfficer"));
        }
        cr
    }

    #[test]
    fn waits_for_approval_then_acceptance_then_the_ca() {
        let now = SystemTime::now();
        assert!(matches!(
            gate(&request(0, false, false), Some(&ca(true)), now),
            Gate::Wait("WaitingForApproval", _, Some(_))
        ));
        assert!(matches!(
            gate(&request(0, false, true), Some(&ca(true)), now),
            Gate::Wait("WaitingForAcceptance", _, Some(_))
        ));
        assert!(matches!(
            gate(&request(0, true, true), Some(&ca(false)), now),
            Gate::Wait("CANotReady", _, _)
        ));
        assert_eq!(
            gate(&request(0, true, true), Some(&ca(true)), now),
            Gate::Issue
        );
        assert!(matches!(
            gate(&request(0, true, true), None, now),
            Gate::Wait("CANotFound", _, _)
        ));
    }

    #[test]
    fn suspended_issuance_waits() {
        let mut c = ca(true);
        c.spec.issuance = IssuanceState::Suspended;
        assert!(matches!(
            gate(&request(0, true, true), Some(&c), SystemTime::now()),
            Gate::Wait("IssuanceSuspended", _, _)
        ));
    }

    #[test]
    fn unaccepted_requests_lapse_after_acceptance_days() {
        let now = SystemTime::now();
        assert_eq!(
            gate(&request(91, false, true), Some(&ca(true)), now),
            Gate::Lapse
        );
        assert_eq!(
            gate(&request(91, false, false), Some(&ca(true)), now),
            Gate::Lapse
        );
        // Accepted in time: no lapse even if approval comes late.
        assert_eq!(
            gate(&request(91, true, true), Some(&ca(true)), now),
            Gate::Issue
        );
    }

    #[test]
    fn a_reserved_serial_is_always_resumed_never_re_reserved() {
        let mut cr = request(0, true, true);
        cr.status.as_mut().unwrap().serial_number = Some("0A".into());
        // Even if the CA is gone or not ready now.
        assert_eq!(gate(&cr, Some(&ca(false)), SystemTime::now()), Gate::Resume);
        assert_eq!(gate(&cr, None, SystemTime::now()), Gate::Resume);
        cr.status.as_mut().unwrap().certificate = Some("PEM".into());
        assert_eq!(gate(&cr, Some(&ca(true)), SystemTime::now()), Gate::Done);
    }

    #[test]
    fn failed_at_this_generation_is_not_retried_until_the_spec_changes() {
        let mut cr = request(0, true, true);
        cr.status
            .as_mut()
            .unwrap()
            .conditions
            .push(conditions::build(
                &[],
                &Cond::yes("Failed", "WeakKey", ""),
                Some(1),
                conditions::now(),
            ));
        assert_eq!(gate(&cr, Some(&ca(true)), SystemTime::now()), Gate::Done);
        cr.metadata.generation = Some(2);
        assert_eq!(gate(&cr, Some(&ca(true)), SystemTime::now()), Gate::Issue);
    }

    fn created_by(mut cr: CertificateRequest, user: &str) -> CertificateRequest {
        cr.metadata.annotations =
            Some([(ANNOTATION_REQUESTED_BY.to_string(), user.to_string())].into());
        cr
    }

    fn auto_approving(users: &[&str]) -> CertificateAuthority {
        let mut c = ca(true);
        c.spec.approval = Some(crds::certificate_authority::ApprovalPolicy {
            auto_approve_users: users.iter().map(|u| (*u).to_string()).collect(),
        });
        c
    }

    #[test]
    fn listed_creators_are_auto_approved_others_wait() {
        let now = SystemTime::now();
        let c = auto_approving(&["system:serviceaccount:ra:ra-bot"]);
        let listed = created_by(request(0, false, false), "system:serviceaccount:ra:ra-bot");
        assert_eq!(
            gate(&listed, Some(&c), now),
            Gate::AutoApprove("system:serviceaccount:ra:ra-bot".into())
        );
        let other = created_by(request(0, false, false), "system:serviceaccount:ra:other");
        assert!(matches!(
            gate(&other, Some(&c), now),
            Gate::Wait("WaitingForApproval", _, _)
        ));
        // No annotation: nobody to trust.
        assert!(matches!(
            gate(&request(0, false, false), Some(&c), now),
            Gate::Wait("WaitingForApproval", _, _)
        ));
        // Once approved, the next gate applies.
        let approved = created_by(request(0, false, true), "system:serviceaccount:ra:ra-bot");
        assert!(matches!(
            gate(&approved, Some(&c), now),
            Gate::Wait("WaitingForAcceptance", _, _)
        ));
        // An officer's Denial wins; a lapsed request is not approved.
        let mut denied = listed.clone();
        denied.status = Some(decided("Denied", "ByOfficer"));
        assert_eq!(
            gate(&denied, Some(&c), now),
            Gate::Denied { reserved: false }
        );
        let lapsed = created_by(request(91, false, false), "system:serviceaccount:ra:ra-bot");
        assert_eq!(gate(&lapsed, Some(&c), now), Gate::Lapse);
    }

    #[test]
    fn the_renewal_extension_comes_from_the_ca() {
        let mut c = ca(true);
        let p = profile_for(ProfileName::Signature, &c).unwrap();
        assert_eq!(p.renewal.unwrap().extension, ca::profile::Period::Years(3));
        c.spec.profiles.renewal_extension = Some("26280h".into());
        let p = profile_for(ProfileName::Signature, &c).unwrap();
        assert_eq!(
            p.renewal.unwrap().extension,
            ca::profile::Period::Days(1095)
        );
        assert!(
            profile_for(ProfileName::MobileSignature, &c)
                .unwrap()
                .renewal
                .is_none()
        );
        c.spec.profiles.renewal_extension = Some("1h".into());
        assert_eq!(
            profile_for(ProfileName::Signature, &c)
                .unwrap_err()
                .reason(),
            "InvalidValidity"
        );
    }

    #[test]
    fn denied_requests_are_done() {
        let mut cr = request(0, true, false);
        cr.status = Some(decided("Denied", "ByOfficer"));
        assert_eq!(
            gate(&cr, Some(&ca(true)), SystemTime::now()),
            Gate::Denied { reserved: false }
        );
    }

    #[test]
    fn a_denial_outranks_a_reserved_serial() {
        let mut cr = request(0, true, true);
        let st = cr.status.as_mut().unwrap();
        st.serial_number = Some("0A".into());
        st.conditions.push(conditions::build(
            &[],
            &Cond::yes("Denied", "ByOfficer", ""),
            Some(1),
            conditions::now(),
        ));
        assert_eq!(
            gate(&cr, Some(&ca(true)), SystemTime::now()),
            Gate::Denied { reserved: true }
        );
        assert_eq!(
            may_sign(&cr, &ca(true), SystemTime::now()),
            Err(Refusal::Denied)
        );
    }

    #[test]
    fn a_reserved_serial_is_signed_only_while_every_decision_holds() {
        let now = SystemTime::now();
        assert_eq!(may_sign(&request(0, true, true), &ca(true), now), Ok(()));
        assert!(matches!(
            may_sign(&request(0, true, false), &ca(true), now),
            Err(Refusal::Wait("WaitingForApproval", _, _))
        ));
        assert!(matches!(
            may_sign(&request(0, false, true), &ca(true), now),
            Err(Refusal::Wait("WaitingForAcceptance", _, _))
        ));
        assert_eq!(
            may_sign(&request(91, false, true), &ca(true), now),
            Err(Refusal::Lapsed)
        );
        let mut c = ca(true);
        c.spec.issuance = IssuanceState::Suspended;
        assert!(matches!(
            may_sign(&request(0, true, true), &c, now),
            Err(Refusal::Wait("IssuanceSuspended", _, _))
        ));
    }

    #[test]
    fn auto_approval_never_covers_ca_or_responder_profiles() {
        let now = SystemTime::now();
        let c = auto_approving(&["ra-bot"]);
        for profile in [ProfileName::SubordinateCa, ProfileName::OcspResponder] {
            let mut cr = created_by(request(0, true, false), "ra-bot");
            cr.spec.profile = profile;
            assert!(
                matches!(
                    gate(&cr, Some(&c), now),
                    Gate::Wait("OfficerApprovalRequired", _, _)
                ),
                "{profile:?}"
            );
            // An AutoApproved condition (say, from an older controller) is
            // not an officer's approval.
            cr.status = Some(decided("Approved", AUTO_APPROVED));
            assert!(matches!(
                may_sign(&cr, &c, now),
                Err(Refusal::Wait("OfficerApprovalRequired", _, _))
            ));
        }
        for profile in [
            ProfileName::Signature,
            ProfileName::Encryption,
            ProfileName::MobileSignature,
        ] {
            let mut cr = created_by(request(0, true, false), "ra-bot");
            cr.spec.profile = profile;
            assert_eq!(gate(&cr, Some(&c), now), Gate::AutoApprove("ra-bot".into()));
        }
    }
}
