//! Reservation: reserve a serial (with validity and subscriber id) in status
//! before signing, and finish a reserved issuance after a restart, without
//! taking the reservation on trust.

use std::time::{Duration, SystemTime};

use ca::serial::Serial;
use crds::{CertificateAuthority, CertificateRequest, CertificateRequestStatus, IssuedCertificate};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};

use super::gates::{Refusal, may_sign};
use super::signing::{
    Reserved, build_request, profile_for_request, profile_label, record_in_status, sign_and_record,
};
use super::{fail, fail_with, set_conditions, write_status};
use crate::conditions::Cond;
use crate::context::{Context, SigningContext, object_id};
use crate::error::{Error, Result};
use crate::reconcilers::certificate_authority::signing_context;
use crate::reconcilers::crl_schedule::partitioning_for;
use crate::reconcilers::{from_time, to_time};
use crate::renewal::{self, KeyClaim, Original};
use crate::{register, subscribers};

/// The key a renewal request gives, if any.
fn key_claim(cr: &CertificateRequest) -> KeyClaim<'_> {
    match (&cr.spec.csr, &cr.spec.public_key) {
        (Some(csr), _) => KeyClaim::Csr(csr),
        (None, Some(spki)) => KeyClaim::PublicKey(spki),
        (None, None) => KeyClaim::None,
    }
}

pub(super) async fn issue(
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
    let profile = match profile_for_request(cr, ca, ctx) {
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
                    match renewal::rekeyed(ctx, &ns, &ca.name_any(), &o, opens).await? {
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
    let trial = build_request(cr, ca, ctx, &reserved, original.as_ref()).and_then(|req| {
        sc.issuer.prepare(&req)?;
        let spki = ca::signer::spki_der(req.key.spki())?;
        Ok(register::hex_sha256(&spki))
    });
    let key_fingerprint = match trial {
        Ok(f) => f,
        Err(e) if e.is_transient() => return Err(cerr(e)),
        Err(e) => return fail(cr, ca, ctx, &e).await,
    };
    if let Some(action) = refuse_compromised(cr, ca, ctx, &key_fingerprint).await? {
        return Ok(action);
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
            ctx,
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

/// What the register holds at a reserved serial.
enum Committed {
    /// Nothing: the certificate was not signed (or not committed) yet.
    Nothing,
    /// This request's certificate: an earlier attempt committed it.
    Ours(Box<IssuedCertificate>),
    /// Another request's (or the CA's own) certificate: this reservation was
    /// not made by the controller for this request.
    Other(Box<IssuedCertificate>),
}

/// The record at `serial` of `ca`, and whose it is.
async fn committed(
    cr: &CertificateRequest,
    ca: &CertificateAuthority,
    ctx: &Context,
    serial: &Serial,
) -> Result<Committed> {
    let api: Api<IssuedCertificate> =
        Api::namespaced(ctx.client.clone(), &cr.namespace().unwrap_or_default());
    let record = api
        .get_opt(&register::record_name(&ca.name_any(), serial))
        .await
        .map_err(Error::kube("get IssuedCertificate"))?;
    Ok(match record {
        None => Committed::Nothing,
        Some(r) if is_ours(&r, cr, ca) => Committed::Ours(Box::new(r)),
        Some(r) => Committed::Other(Box::new(r)),
    })
}

/// Whether `record` was committed for `cr` (same CA, names this request).
pub(super) fn is_ours(
    record: &IssuedCertificate,
    cr: &CertificateRequest,
    ca: &CertificateAuthority,
) -> bool {
    record.spec.ca_ref.name == ca.name_any()
        && record
            .spec
            .request_ref
            .as_ref()
            .is_some_and(|r| r.name == cr.name_any())
}

/// For a denied request with a reservation: if the certificate was committed
/// before the denial, record it in status (it exists and can be revoked) and
/// return the action; `None` when nothing of this request was committed.
pub(super) async fn record_committed(
    cr: &CertificateRequest,
    ca: &CertificateAuthority,
    ctx: &Context,
) -> Result<Option<Action>> {
    let Some(serial) = cr
        .status
        .as_ref()
        .and_then(|s| s.serial_number.as_deref())
        .and_then(|s| Serial::from_hex(s).ok())
    else {
        return Ok(None);
    };
    match committed(cr, ca, ctx, &serial).await? {
        Committed::Ours(record) => {
            let chain = signing_context(ca, ctx)
                .await?
                .map(|sc| sc.chain_pem.clone());
            record_in_status(cr, ca, ctx, &record, chain)
                .await
                .map(Some)
        }
        Committed::Nothing | Committed::Other(_) => Ok(None),
    }
}

/// A serial is reserved but the status has no certificate: finish that
/// issuance, if it still may happen and the reservation is the controller's.
///
/// 1. The register already holds this request's certificate at that serial:
///    record it (no signing). Another request's: `Failed ReservationConflict`.
/// 2. The decisions, read again as they are now ([`may_sign`]): denied, no
///    longer approved, not accepted, issuance suspended, CA not ready: nothing
///    is signed (the reservation stays for when the wait ends).
/// 3. The reservation is one the controller would make for this request
///    ([`check_reservation`]), else `Failed InvalidReservation`.
/// 4. Sign with the reserved values and commit.
pub(super) async fn resume(
    cr: &CertificateRequest,
    ca: &CertificateAuthority,
    ctx: &Context,
) -> Result<Action> {
    let id = object_id(cr);
    let status = cr.status.clone().unwrap_or_default();
    let (Some(serial_hex), Some(nb), Some(na)) =
        (&status.serial_number, &status.not_before, &status.not_after)
    else {
        return invalid(
            cr,
            ca,
            ctx,
            "a serial is reserved without a reserved validity",
        )
        .await;
    };
    let Ok(serial) = Serial::from_hex(serial_hex) else {
        return invalid(
            cr,
            ca,
            ctx,
            "the reserved serial is not a valid serial number",
        )
        .await;
    };
    match committed(cr, ca, ctx, &serial).await? {
        Committed::Ours(record) => {
            tracing::info!(serial = %serial.to_hex(), "found the IssuedCertificate of the reserved serial: recording it");
            let chain = signing_context(ca, ctx)
                .await?
                .map(|sc| sc.chain_pem.clone());
            return record_in_status(cr, ca, ctx, &record, chain).await;
        }
        Committed::Other(record) => {
            let message = format!(
                "the reserved serial {} belongs to {} (a certificate of another request); \
                 chop-controller reserves fresh random serials, so this reservation is not its own: \
                 nothing was signed",
                serial.to_hex(),
                record.name_any()
            );
            return fail_with(cr, ca, ctx, "ReservationConflict", message).await;
        }
        Committed::Nothing => {}
    }
    if let Err(refusal) = may_sign(cr, ca, SystemTime::now()) {
        return refused(cr, ctx, status, refusal).await;
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
    // The original must still be good when its renewal is signed: a
    // revocation or hold since the reservation stops it (CPS §4.6: never a
    // renewal of a held or revoked certificate).
    if let Some(o) = &original {
        let state = register::state(&o.record)?;
        if state != register::State::Valid {
            let message = format!(
                "the certificate this request renews ({}) is {} since the renewal was reserved: nothing was signed",
                o.record.name_any(),
                state.as_str()
            );
            return fail_with(cr, ca, ctx, "OriginalNotValid", message).await;
        }
    }
    if let Err(message) = check_reservation(cr, ca, ctx, &sc, &reserved, original.as_ref()).await? {
        return invalid(cr, ca, ctx, &message).await;
    }
    // A key revoked for keyCompromise since the reservation is not certified.
    let fingerprint = build_request(cr, ca, ctx, &reserved, original.as_ref())
        .and_then(|req| ca::signer::spki_der(req.key.spki()))
        .map(|spki| register::hex_sha256(&spki));
    match fingerprint {
        Ok(fp) => {
            if let Some(action) = refuse_compromised(cr, ca, ctx, &fp).await? {
                return Ok(action);
            }
        }
        Err(e) if e.is_transient() => return Err(Error::ca(&id)(e)),
        Err(e) => return fail(cr, ca, ctx, &e).await,
    }
    tracing::info!(serial = %reserved.serial.to_hex(), "resuming issuance with the reserved serial");
    sign_and_record(cr, ca, ctx, &sc, &reserved, original.as_ref()).await
}

/// `Failed KeyCompromised` when the CA's register holds a certificate of this
/// key revoked for keyCompromise (the block list, [`crate::blocklist`]).
async fn refuse_compromised(
    cr: &CertificateRequest,
    ca: &CertificateAuthority,
    ctx: &Context,
    fingerprint: &str,
) -> Result<Option<Action>> {
    let ns = cr.namespace().unwrap_or_default();
    let ca_name = ca.name_any();
    match crate::blocklist::compromised(&ctx.client, &ctx.records, &ns, &ca_name, fingerprint)
        .await?
    {
        Some(serial) => {
            let message = crate::blocklist::message(&ca_name, &serial);
            fail_with(cr, ca, ctx, crate::blocklist::REASON, message)
                .await
                .map(Some)
        }
        None => Ok(None),
    }
}

/// Nothing is signed for now: write why, keep the reservation.
async fn refused(
    cr: &CertificateRequest,
    ctx: &Context,
    status: CertificateRequestStatus,
    refusal: Refusal,
) -> Result<Action> {
    match refusal {
        Refusal::Denied => {
            let cond = Cond::no("Issued", "Denied", "an officer denied the request");
            write_status(cr, ctx, status, &[cond], None).await?;
            Ok(Action::await_change())
        }
        Refusal::Lapsed => {
            let msg =
                "not accepted within the CA's acceptanceDays (CPS §4.4); it will never be issued";
            let conds = [
                Cond::yes("Lapsed", "AcceptanceLapsed", msg),
                Cond::no("Issued", "Lapsed", msg),
            ];
            write_status(cr, ctx, status, &conds, None).await?;
            ctx.event(cr, true, "Lapsed", msg.into()).await;
            Ok(Action::await_change())
        }
        Refusal::Wait(reason, message, after) => {
            let cond = Cond::no("Issued", reason, message);
            write_status(cr, ctx, status, &[cond], None).await?;
            Ok(after.map_or_else(Action::await_change, |d| {
                Action::requeue((d + Duration::from_secs(1)).min(Duration::from_secs(86_400)))
            }))
        }
    }
}

/// `Failed InvalidReservation`: nothing is signed.
async fn invalid(
    cr: &CertificateRequest,
    ca: &CertificateAuthority,
    ctx: &Context,
    what: &str,
) -> Result<Action> {
    let message = format!(
        "{what}: this reservation is not one chop-controller made for this request, so nothing \
         was signed; create a new CertificateRequest"
    );
    fail_with(cr, ca, ctx, "InvalidReservation", message).await
}

/// How far a reserved notBefore may be from the times the controller could
/// have chosen it (clock skew between the API server and the controller).
const SKEW: Duration = Duration::from_secs(300);

/// Whether a reservation read from status is one the controller would have made
/// for `cr` now: the subscriber id is the one the register assigned to the
/// request's subscriber reference (or the renewed original's); notBefore lies
/// between the request's creation and now; notAfter is after notBefore and no
/// later than the profile (or the renewal rule) and the CA certificate allow.
/// `Ok(Err(message))` names the first thing that is not.
async fn check_reservation(
    cr: &CertificateRequest,
    ca: &CertificateAuthority,
    ctx: &Context,
    sc: &SigningContext,
    r: &Reserved,
    original: Option<&Original>,
) -> Result<std::result::Result<(), String>> {
    let expected_sid = match (original, &cr.spec.subscriber) {
        (Some(o), _) => o.record.spec.subscriber_id.clone(),
        (None, Some(s)) => {
            let cms: Api<ConfigMap> =
                Api::namespaced(ctx.client.clone(), &cr.namespace().unwrap_or_default());
            match subscribers::lookup(&cms, &ca.name_any(), &s.reference).await? {
                Some(id) => Some(id),
                None => {
                    return Ok(Err(
                        "the reserved subscriber id was never assigned to this request's subscriber reference"
                            .into(),
                    ));
                }
            }
        }
        (None, None) => None,
    };
    if r.subscriber_id != expected_sid {
        return Ok(Err(
            "the reserved subscriber id is not the one the subscriber register holds for this request's subscriber"
                .into(),
        ));
    }
    let now = SystemTime::now();
    let created = cr
        .meta()
        .creation_timestamp
        .as_ref()
        .map(from_time)
        .unwrap_or(now);
    if r.not_before + SKEW < created || r.not_before > now + SKEW {
        return Ok(Err(
            "the reserved notBefore is not between the request's creation and now".into(),
        ));
    }
    let profile = match profile_for_request(cr, ca, ctx) {
        Ok(p) => p,
        Err(e) => return Ok(Err(e.to_string())),
    };
    let ca_not_after =
        ca::time::from_x509(&sc.issuer.certificate().tbs_certificate.validity.not_after);
    let latest = match (original, &profile.renewal) {
        (Some(o), Some(rule)) => ca::issue::renewed_not_after(o.not_after(), rule),
        _ => profile.validity.after(r.not_before),
    };
    let latest = match latest {
        Ok(t) => t.min(ca_not_after),
        Err(e) => return Ok(Err(e.to_string())),
    };
    if r.not_after <= r.not_before || r.not_after > latest {
        return Ok(Err(format!(
            "the reserved notAfter is not within what profile {} allows",
            profile_label(cr.spec.profile)
        )));
    }
    Ok(Ok(()))
}
