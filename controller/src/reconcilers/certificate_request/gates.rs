//! The gates: what the controller decides for a request before it touches the
//! HSM, and the decisions it re-checks right before it signs (pure functions).
//!
//! Order matters (cert-manager's certificaterequests sync): a denial is read
//! first, before anything that could lead to signing, including a serial
//! reserved earlier. A reserved serial only means "finish what was started"
//! when [`may_sign`] still holds at the moment of signing: the denial, the
//! approval (of the right kind for the profile), the applicant's acceptance and
//! the CA's issuance switch are read again from the object as it is then.

use std::time::{Duration, SystemTime};

use crds::certificate_authority::IssuanceState;
use crds::certificate_request::ProfileName;
use crds::{CertificateAuthority, CertificateRequest};
use kube::{Resource, ResourceExt};

use super::{ANNOTATION_REQUESTED_BY, AUTO_APPROVED};
use crate::conditions;

/// What the controller decides for a request before touching the HSM (pure).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gate {
    /// Nothing to do: issued, lapsed, or failed at this generation.
    Done,
    /// A serial is reserved: finish that issuance (never reserve another), once
    /// [`may_sign`] is checked again.
    Resume,
    /// The request lapsed now (not accepted in time).
    Lapse,
    /// An officer denied the request: it is never signed. `reserved`: a serial
    /// was reserved before the denial, so a certificate signed before it may
    /// be in the register and is recorded (recording is not signing).
    Denied {
        /// A serial was reserved before the denial.
        reserved: bool,
    },
    /// The creator (this user) is in the CA's `approval.autoApproveUsers`: approve.
    AutoApprove(String),
    /// Wait, with this `Issued=False` reason and message; re-check after the duration.
    Wait(&'static str, String, Option<Duration>),
    /// Go ahead: validate, reserve, sign.
    Issue,
}

/// Profiles a CA's `approval.autoApproveUsers` may approve: subscriber
/// certificates. A certificate that can sign certificates (SubordinateCA) or
/// vouch for revocation status (OCSPResponder) always needs an officer.
pub fn auto_approvable(profile: ProfileName) -> bool {
    matches!(
        profile,
        ProfileName::Signature | ProfileName::Encryption | ProfileName::MobileSignature
    )
}

/// The gate for `cr` given its CA (pure; `now` injected for tests).
pub fn gate(cr: &CertificateRequest, ca: Option<&CertificateAuthority>, now: SystemTime) -> Gate {
    let status = cr.status.clone().unwrap_or_default();
    let conds = &status.conditions;
    if status.certificate.is_some() {
        return Gate::Done;
    }
    // Denied first: nothing below, not even a reservation, outranks it.
    if conditions::is_true(conds, "Denied") {
        return Gate::Denied {
            reserved: status.serial_number.is_some(),
        };
    }
    if conditions::is_true(conds, "Lapsed") {
        return Gate::Done;
    }
    if conditions::find(conds, "Failed").is_some_and(|f| {
        f.status == conditions::TRUE && f.observed_generation == cr.meta().generation
    }) {
        return Gate::Done;
    }
    // Once a serial is reserved, finish that issuance: the decisions are read
    // again where the signing happens (`may_sign`).
    if status.serial_number.is_some() {
        return Gate::Resume;
    }
    let Some(ca) = ca else {
        return Gate::Wait(
            "CANotFound",
            format!("CertificateAuthority {:?} not found", cr.spec.ca_ref.name),
            Some(Duration::from_secs(30)),
        );
    };
    let until_deadline = until_acceptance_deadline(cr, ca, now);
    if !cr.spec.accepted && until_deadline.is_none() {
        return Gate::Lapse;
    }
    if !conditions::is_true(conds, "Approved") {
        if let Some(user) = auto_approver(cr, ca) {
            return Gate::AutoApprove(user);
        }
        let recheck = if cr.spec.accepted {
            None
        } else {
            until_deadline
        };
        return match officer_required(cr, ca) {
            Some(message) => Gate::Wait("OfficerApprovalRequired", message, recheck),
            None => Gate::Wait(
                "WaitingForApproval",
                "waiting for an officer to approve the request".into(),
                recheck,
            ),
        };
    }
    if let Err(refusal) = may_sign(cr, ca, now) {
        return match refusal {
            Refusal::Wait(reason, message, after) => Gate::Wait(reason, message, after),
            Refusal::Denied => Gate::Denied { reserved: false },
            Refusal::Lapsed => Gate::Lapse,
        };
    }
    Gate::Issue
}

/// Why the controller may not sign for a request now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// An officer denied it.
    Denied,
    /// Not accepted in time (CPS §4.4).
    Lapsed,
    /// Not yet: this `Issued=False` reason and message; re-check after the duration.
    Wait(&'static str, String, Option<Duration>),
}

/// Everything that must hold at the moment the CA key signs for `cr`, read
/// from the request and the CA as they are now (pure): not denied; approved,
/// and for a profile auto-approval does not cover, approved by an officer;
/// accepted by the applicant (CPS §4.4); the CA issuing and Ready.
pub fn may_sign(
    cr: &CertificateRequest,
    ca: &CertificateAuthority,
    now: SystemTime,
) -> Result<(), Refusal> {
    let conds = cr
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    if conditions::is_true(conds, "Denied") {
        return Err(Refusal::Denied);
    }
    let until_deadline = until_acceptance_deadline(cr, ca, now);
    if !cr.spec.accepted && until_deadline.is_none() {
        return Err(Refusal::Lapsed);
    }
    let approved = conditions::find(conds, "Approved").filter(|c| c.status == conditions::TRUE);
    match approved {
        None => {
            return Err(Refusal::Wait(
                "WaitingForApproval",
                "waiting for an officer to approve the request".into(),
                None,
            ));
        }
        Some(c) if c.reason == AUTO_APPROVED && !auto_approvable(cr.spec.profile) => {
            return Err(Refusal::Wait(
                "OfficerApprovalRequired",
                officer_required_message(cr),
                None,
            ));
        }
        Some(_) => {}
    }
    if !cr.spec.accepted {
        return Err(Refusal::Wait(
            "WaitingForAcceptance",
            format!(
                "waiting for the applicant to accept (spec.accepted) within {} days of the request (CPS §4.4)",
                acceptance_days(ca)
            ),
            until_deadline,
        ));
    }
    if ca.spec.issuance == IssuanceState::Suspended {
        return Err(Refusal::Wait(
            "IssuanceSuspended",
            format!(
                "issuance by CertificateAuthority {:?} is suspended",
                ca.name_any()
            ),
            Some(Duration::from_secs(60)),
        ));
    }
    let ca_ready = ca
        .status
        .as_ref()
        .is_some_and(|s| conditions::is_true(&s.conditions, "Ready") && s.certificate.is_some());
    if !ca_ready {
        return Err(Refusal::Wait(
            "CANotReady",
            format!("CertificateAuthority {:?} is not Ready", ca.name_any()),
            Some(Duration::from_secs(15)),
        ));
    }
    Ok(())
}

/// The CA's acceptance period in days (CPS §4.4: 90 by default).
fn acceptance_days(ca: &CertificateAuthority) -> u64 {
    u64::try_from(ca.spec.acceptance_days.max(1)).unwrap_or(90)
}

/// Time left to accept, `None` once the deadline has passed.
fn until_acceptance_deadline(
    cr: &CertificateRequest,
    ca: &CertificateAuthority,
    now: SystemTime,
) -> Option<Duration> {
    let created = cr
        .meta()
        .creation_timestamp
        .as_ref()
        .map(super::super::from_time)
        .unwrap_or(now);
    let deadline = created + Duration::from_secs(acceptance_days(ca) * 86_400);
    deadline.duration_since(now).ok()
}

/// The request's creator, if the CA's approval policy lists them and the
/// profile is one auto-approval covers.
fn auto_approver(cr: &CertificateRequest, ca: &CertificateAuthority) -> Option<String> {
    if !auto_approvable(cr.spec.profile) {
        return None;
    }
    let creator = cr.annotations().get(ANNOTATION_REQUESTED_BY)?;
    ca.spec
        .approval
        .as_ref()?
        .auto_approve_users
        .iter()
        .any(|u| u == creator)
        .then(|| creator.clone())
}

/// When the creator is listed for auto-approval but the profile is not one it
/// covers: the message that says so.
fn officer_required(cr: &CertificateRequest, ca: &CertificateAuthority) -> Option<String> {
    if auto_approvable(cr.spec.profile) {
        return None;
    }
    let creator = cr.annotations().get(ANNOTATION_REQUESTED_BY)?;
    let listed = ca
        .spec
        .approval
        .as_ref()
        .is_some_and(|a| a.auto_approve_users.iter().any(|u| u == creator));
    listed.then(|| officer_required_message(cr))
}

fn officer_required_message(cr: &CertificateRequest) -> String {
    format!(
        "a {} certificate needs an officer's approval: auto-approval \
         (spec.approval.autoApproveUsers) covers the subscriber profiles Signature, \
         Encryption and MobileSignature only",
        super::profile_label(cr.spec.profile)
    )
}
