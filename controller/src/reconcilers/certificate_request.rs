//! CertificateRequest reconciler: approval and acceptance gates, serial
//! reservation, signing, the IssuedCertificate record, status.
//!
//! ```text
//! Denied / Lapsed / Failed@generation / issued ─────────────► nothing to do
//! serial reserved, no certificate ──► IssuedCertificate exists? copy it (no signing)
//!                                     else sign with the reserved values
//! not Approved, creator in approval.autoApproveUsers ──► Approved=True AutoApproved
//! not Approved ──► Issued=False WaitingForApproval
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
//! `signers` for that write, which the chop-controller role grants.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ca::csr::SubjectKey;
use ca::issue::IssuanceRequest;
use ca::name::DistinguishedName;
use ca::profile::Profile;
use ca::serial::Serial;
use crds::certificate_authority::IssuanceState;
use crds::certificate_request::ProfileName;
use crds::common::LocalObjectReference;
use crds::{CertificateAuthority, CertificateRequest, CertificateRequestStatus, IssuedCertificate};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use tracing::Instrument;

use super::certificate_authority::{dn_from_spec, signing_context};
use super::crl_schedule::{Partitioning, partitioning_for};
use super::{from_time, to_time};
use crate::conditions::{self, Cond};
use crate::context::{Context, FIELD_MANAGER, SigningContext, object_id};
use crate::error::{Error, Result};
use crate::renewal::{self, KeyClaim, Original};
use crate::{register, subscribers};

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
            None => Ok(Action::await_change()),
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

/// What the controller decides for a request before touching the HSM (pure).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gate {
    /// Nothing to do: issued, denied, lapsed, or failed at this generation.
    Done,
    /// A serial is reserved: finish that issuance (never reserve another).
    Resume,
    /// The request lapsed now (not accepted in time).
    Lapse,
    /// An officer denied the request: it is never issued.
    Denied,
    /// The creator (this user) is in the CA's `approval.autoApproveUsers`: approve.
    AutoApprove(String),
    /// Wait, with this `Issued=False` reason and message; re-check after the duration.
    Wait(&'static str, String, Option<Duration>),
    /// Go ahead: validate, reserve, sign.
    Issue,
}

/// The gate for `cr` given its CA (pure; `now` injected for tests).
pub fn gate(cr: &CertificateRequest, ca: Option<&CertificateAuthority>, now: SystemTime) -> Gate {
    let status = cr.status.clone().unwrap_or_default();
    let conds = &status.conditions;
    if status.certificate.is_some() || conditions::is_true(conds, "Lapsed") {
        return Gate::Done;
    }
    if conditions::find(conds, "Failed").is_some_and(|f| {
        f.status == conditions::TRUE && f.observed_generation == cr.meta().generation
    }) {
        return Gate::Done;
    }
    // Once a serial is reserved the approval was valid and the certificate may
    // already be committed: finish that issuance (a later Denied is for revocation).
    if status.serial_number.is_some() {
        return Gate::Resume;
    }
    if conditions::is_true(conds, "Denied") {
        return Gate::Denied;
    }
    let Some(ca) = ca else {
        return Gate::Wait(
            "CANotFound",
            format!("CertificateAuthority {:?} not found", cr.spec.ca_ref.name),
            Some(Duration::from_secs(30)),
        );
    };
    let created = cr
        .meta()
        .creation_timestamp
        .as_ref()
        .map(from_time)
        .unwrap_or(now);
    let days = u64::try_from(ca.spec.acceptance_days.max(1)).unwrap_or(90);
    let deadline = created + Duration::from_secs(days * 86_400);
    let until_deadline = deadline.duration_since(now).ok();
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
        return Gate::Wait(
            "WaitingForApproval",
            "waiting for an officer to approve the request".into(),
            recheck,
        );
    }
    if !cr.spec.accepted {
        return Gate::Wait(
            "WaitingForAcceptance",
            format!(
                "waiting for the applicant to accept (spec.accepted) within {days} days of the request (CPS §4.4)"
            ),
            until_deadline,
        );
    }
    if ca.spec.issuance == IssuanceState::Suspended {
        return Gate::Wait(
            "IssuanceSuspended",
            format!(
                "issuance by CertificateAuthority {:?} is suspended",
                ca.name_any()
            ),
            Some(Duration::from_secs(60)),
        );
    }
    let ca_ready = ca
        .status
        .as_ref()
        .is_some_and(|s| conditions::is_true(&s.conditions, "Ready") && s.certificate.is_some());
    if !ca_ready {
        return Gate::Wait(
            "CANotReady",
            format!("CertificateAuthority {:?} is not Ready", ca.name_any()),
            Some(Duration::from_secs(15)),
        );
    }
    Gate::Issue
}

/// The request's creator, if the CA's approval policy lists them.
fn auto_approver(cr: &CertificateRequest, ca: &CertificateAuthority) -> Option<String> {
    let creator = cr.annotations().get(ANNOTATION_REQUESTED_BY)?;
    ca.spec
        .approval
        .as_ref()?
        .auto_approve_users
        .iter()
        .any(|u| u == creator)
        .then(|| creator.clone())
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
    match gate(cr, ca.as_ref(), SystemTime::now()) {
        Gate::Done => Ok(Action::await_change()),
        Gate::Lapse => {
            let msg =
                "not accepted within the CA's acceptanceDays (CPS §4.4); it will never be issued";
            let conds = [
                Cond::yes("Lapsed", "AcceptanceLapsed", msg),
                Cond::no("Issued", "Lapsed", msg),
            ];
            set_conditions(cr, ctx, &conds).await?;
            ctx.event(cr, true, "Lapsed", msg.into()).await;
            Ok(Action::await_change())
        }
        Gate::Denied => {
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
            if let (Gate::Issue, Some(ca)) = (gate(&approved, ca.as_ref(), SystemTime::now()), &ca)
            {
                let action = issue(&approved, ca, ctx).await?;
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
            Some(ca) => resume(cr, &ca, ctx).await,
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
            Some(ca) => issue(cr, &ca, ctx).await,
            None => Ok(Action::requeue(Duration::from_secs(30))),
        },
    }
}

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
        p.validity = super::parse_period(v).map_err(|m| {
            ca::Error::InvalidValidity(format!(
                "CertificateAuthority {:?} profiles: {m}",
                ca.name_any()
            ))
        })?;
    }
    if let (Some(ext), Some(rule)) = (settings.renewal_extension.as_ref(), p.renewal.as_mut()) {
        rule.extension = super::parse_period(ext).map_err(|m| {
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
fn subject_key(
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
struct Reserved {
    serial: Serial,
    not_before: SystemTime,
    not_after: SystemTime,
    subscriber_id: Option<String>,
    /// The CA's CRL partitioning when signing (its CRLSchedule's `partitions`
    /// and URL template, both immutable): the partition is a function of the
    /// serial, so a re-sign after a crash gives the same certificate.
    partitioning: Option<Partitioning>,
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
fn build_request(
    cr: &CertificateRequest,
    ca: &CertificateAuthority,
    r: &Reserved,
    original: Option<&Original>,
) -> Result<IssuanceRequest, ca::Error> {
    if let Some(o) = original {
        let mut req = IssuanceRequest::renewal(
            &o.certificate,
            profile_for(cr.spec.profile, ca)?,
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
        profile_for(cr.spec.profile, ca)?,
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
    ctx.event(cr, true, reason, message).await;
    ctx.metrics
        .issued(&ca.name_any(), profile_label(cr.spec.profile), reason);
    Ok(Action::await_change())
}

/// The key a renewal request gives, if any.
fn key_claim(cr: &CertificateRequest) -> KeyClaim<'_> {
    match (&cr.spec.csr, &cr.spec.public_key) {
        (Some(csr), _) => KeyClaim::Csr(csr),
        (None, Some(spki)) => KeyClaim::PublicKey(spki),
        (None, None) => KeyClaim::None,
    }
}

async fn issue(
    cr: &CertificateRequest,
    ca: &CertificateAuthority,
    ctx: &Context,
) -> Result<Action> {
    let id = object_id(cr);
    let Some(sc) = signing_context(ca, ctx).await? else {
        let cond = Cond::no(
            "Issued",
            "CANotReady",
            format!("CertificateAuthority {:?} cannot sign yet", ca.name_any()),
        );
        set_conditions(cr, ctx, &[cond]).await?;
        return Ok(Action::requeue(Duration::from_secs(15)));
    };
    // Trial: build and lint with provisional values, so bad input never burns a
    // serial or a subscriber identifier.
    let cerr = Error::ca(&id);
    let not_before = ca::time::truncate_to_seconds(SystemTime::now()).map_err(cerr)?;
    let profile = match profile_for(cr.spec.profile, ca) {
        Ok(p) => p,
        Err(e) => return fail(cr, ca, ctx, &e).await,
    };
    let ns = cr.namespace().unwrap_or_default();
    let original = match &cr.spec.renewal_of {
        None => None,
        Some(of) => {
            let found = renewal::find(&ctx.client, &ns, &ca.name_any(), &of.name, &id).await?;
            let checked = found.and_then(|o| {
                let label = profile_label(cr.spec.profile);
                renewal::check(
                    &o,
                    &cr.name_any(),
                    &profile,
                    label,
                    &key_claim(cr),
                    not_before,
                )
                .map(|()| o)
            });
            let checked = match (checked, &profile.renewal) {
                (Ok(o), Some(rule)) => {
                    let opens = ca::issue::renewal_window(o.not_after(), rule)
                        .map(|(opens, _)| opens)
                        .map_err(cerr)?;
                    match renewal::rekeyed(&ctx.client, &ns, &ca.name_any(), &o, opens).await? {
                        Some(r) => Err(r),
                        None => Ok(o),
                    }
                }
                (other, _) => other,
            };
            match checked {
                Ok(o) => Some(o),
                Err(r) => return fail_with(cr, ca, ctx, r.reason, r.message).await,
            }
        }
    };
    let ca_not_after =
        ca::time::from_x509(&sc.issuer.certificate().tbs_certificate.validity.not_after);
    let not_after = match (&original, &profile.renewal) {
        (Some(o), Some(rule)) => ca::issue::renewed_not_after(o.not_after(), rule),
        _ => profile.validity.after(not_before),
    };
    let not_after = match not_after {
        Ok(na) => na.min(ca_not_after),
        Err(e) => return fail(cr, ca, ctx, &e).await,
    };
    let mut reserved = Reserved {
        serial: Serial::random().map_err(cerr)?,
        not_before,
        not_after,
        subscriber_id: None,
        partitioning: partitioning_for(ctx, &ns, &ca.name_any()).await?,
    };
    let trial = build_request(cr, ca, &reserved, original.as_ref()).and_then(|req| {
        sc.issuer.prepare(&req)?;
        let spki = ca::signer::spki_der(req.key.spki())?;
        Ok(register::hex_sha256(&spki))
    });
    let key_fingerprint = match trial {
        Ok(f) => f,
        Err(e) if e.is_transient() => return Err(cerr(e)),
        Err(e) => return fail(cr, ca, ctx, &e).await,
    };
    let ca_name = ca.name_any();
    let blocked = crate::blocklist::compromised(&ctx.client, &ns, &ca_name, &key_fingerprint);
    if let Some(serial) = blocked.await? {
        let message = crate::blocklist::message(&ca_name, &serial);
        return fail_with(cr, ca, ctx, crate::blocklist::REASON, message).await;
    }

    if let Some(o) = &original {
        // The renewed certificate keeps the subject, hence the subscriber id.
        reserved.subscriber_id = o.record.spec.subscriber_id.clone();
        let api: Api<IssuedCertificate> = Api::namespaced(ctx.client.clone(), &ns);
        renewal::claim(&api, o, &cr.name_any()).await?;
    } else if let Some(s) = &cr.spec.subscriber {
        let cms: Api<ConfigMap> =
            Api::namespaced(ctx.client.clone(), &cr.namespace().unwrap_or_default());
        let sid = subscribers::assign(&cms, &ca.name_any(), &s.reference).await?;
        let label = profile_label(cr.spec.profile);
        if let Some(r) = renewal::renewed(
            &ctx.client,
            &ns,
            &ca.name_any(),
            &sid,
            label,
            &key_fingerprint,
            not_before,
        )
        .await?
        {
            return fail_with(cr, ca, ctx, r.reason, r.message).await;
        }
        reserved.subscriber_id = Some(sid);
    }

    // Reserve, conditional on the resourceVersion this reconcile read: if anyone
    // (an officer, another replica) wrote since, this fails with a conflict and
    // the retry decides again on the new state.
    let mut status = cr.status.clone().unwrap_or_default();
    status.serial_number = Some(reserved.serial.to_hex());
    status.subscriber_id = reserved.subscriber_id.clone();
    status.not_before = Some(to_time(reserved.not_before, &id)?);
    status.not_after = Some(to_time(reserved.not_after, &id)?);
    let cond = Cond::no(
        "Issued",
        "Signing",
        format!("serial {} reserved; signing", reserved.serial.to_hex()),
    );
    write_status(cr, ctx, status.clone(), &[cond], cr.resource_version()).await?;
    // From here on, every status write must carry the reservation (a server-side
    // apply that omits a field this manager owns removes it).
    let mut reserved_cr = cr.clone();
    reserved_cr.status = Some(status);
    tracing::info!(serial = %reserved.serial.to_hex(), "serial reserved");
    if ctx.crash_after_reserve {
        tracing::error!("CHOP_TEST_CRASH_AFTER_RESERVE is set: aborting after the reservation");
        std::process::abort();
    }
    sign_and_record(&reserved_cr, ca, ctx, &sc, &reserved, original.as_ref()).await
}

/// A serial is reserved but the status has no certificate: finish that issuance.
async fn resume(
    cr: &CertificateRequest,
    ca: &CertificateAuthority,
    ctx: &Context,
) -> Result<Action> {
    let id = object_id(cr);
    let status = cr.status.clone().unwrap_or_default();
    let cerr = Error::ca(&id);
    let (Some(serial), Some(nb), Some(na)) =
        (&status.serial_number, &status.not_before, &status.not_after)
    else {
        return Err(Error::Invalid {
            object: id,
            message: "reserved serial without reserved validity".into(),
        });
    };
    let serial = Serial::from_hex(serial).map_err(cerr)?;
    let issued_api: Api<IssuedCertificate> =
        Api::namespaced(ctx.client.clone(), &cr.namespace().unwrap_or_default());
    if let Some(record) = issued_api
        .get_opt(&register::record_name(&ca.name_any(), &serial))
        .await
        .map_err(Error::kube("get IssuedCertificate"))?
    {
        tracing::info!(serial = %serial.to_hex(), "found the IssuedCertificate of the reserved serial: recording it");
        let chain = signing_context(ca, ctx)
            .await?
            .map(|sc| sc.chain_pem.clone());
        return record_in_status(cr, ca, ctx, &record, chain).await;
    }
    if ca.spec.issuance == IssuanceState::Suspended {
        let cond = Cond::no(
            "Issued",
            "IssuanceSuspended",
            format!(
                "issuance by CertificateAuthority {:?} is suspended",
                ca.name_any()
            ),
        );
        write_status(cr, ctx, status, &[cond], None).await?;
        return Ok(Action::requeue(Duration::from_secs(60)));
    }
    let Some(sc) = signing_context(ca, ctx).await? else {
        let cond = Cond::no(
            "Issued",
            "CANotReady",
            format!("CertificateAuthority {:?} cannot sign yet", ca.name_any()),
        );
        write_status(cr, ctx, status, &[cond], None).await?;
        return Ok(Action::requeue(Duration::from_secs(15)));
    };
    let reserved = Reserved {
        serial,
        not_before: from_time(nb),
        not_after: from_time(na),
        subscriber_id: status.subscriber_id.clone(),
        partitioning: partitioning_for(ctx, &cr.namespace().unwrap_or_default(), &ca.name_any())
            .await?,
    };
    let original = match &cr.spec.renewal_of {
        None => None,
        Some(of) => {
            let ns = cr.namespace().unwrap_or_default();
            match renewal::find_claimed(
                &ctx.client,
                &ns,
                &ca.name_any(),
                &of.name,
                &cr.name_any(),
                status.subscriber_id.as_deref(),
                &id,
            )
            .await?
            {
                Ok(o) => Some(o),
                Err(r) => return fail_with(cr, ca, ctx, r.reason, r.message).await,
            }
        }
    };
    tracing::info!(serial = %reserved.serial.to_hex(), "resuming issuance with the reserved serial");
    sign_and_record(cr, ca, ctx, &sc, &reserved, original.as_ref()).await
}

async fn sign_and_record(
    cr: &CertificateRequest,
    ca: &CertificateAuthority,
    ctx: &Context,
    sc: &Arc<SigningContext>,
    reserved: &Reserved,
    original: Option<&Original>,
) -> Result<Action> {
    let id = object_id(cr);
    let request = match build_request(cr, ca, reserved, original) {
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
    if ctx.crash_after_commit {
        tracing::error!("CHOP_TEST_CRASH_AFTER_COMMIT is set: aborting after the commit");
        std::process::abort();
    }
    record_in_status(cr, ca, ctx, &record, Some(sc.chain_pem.clone())).await
}

async fn record_in_status(
    cr: &CertificateRequest,
    ca: &CertificateAuthority,
    ctx: &Context,
    record: &IssuedCertificate,
    chain: Option<String>,
) -> Result<Action> {
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
    use crds::certificate_request::Subscriber;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

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
            cr.status = Some(CertificateRequestStatus {
                conditions: vec![conditions::build(
                    &[],
                    &Cond::yes("Approved", "ByOfficer", ""),
                    Some(1),
                    conditions::now(),
                )],
                ..Default::default()
            });
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
        denied.status = Some(CertificateRequestStatus {
            conditions: vec![conditions::build(
                &[],
                &Cond::yes("Denied", "ByOfficer", ""),
                Some(1),
                conditions::now(),
            )],
            ..Default::default()
        });
        assert_eq!(gate(&denied, Some(&c), now), Gate::Denied);
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
        cr.status = Some(CertificateRequestStatus {
            conditions: vec![conditions::build(
                &[],
                &Cond::yes("Denied", "ByOfficer", ""),
                Some(1),
                conditions::now(),
            )],
            ..Default::default()
        });
        assert_eq!(gate(&cr, Some(&ca(true)), SystemTime::now()), Gate::Denied);
    }
}
