//! The CertificateAuthority side of key ceremonies: which key a CA may use, and
//! when it may log in to its token.
//!
//! * `spec.hsm.keyFrom`: the CA uses a key only after its `Generate`
//!   KeyCeremony succeeded, and only the key that ceremony recorded (compared by
//!   public key, so a key restored into another token still counts and a key
//!   swapped in under the same label does not); a root takes the certificate
//!   the ceremony signed instead of signing one on its own.
//! * Activation data (CPS §6.4.2): after three wrong PINs the controller stops
//!   logging in to the CA's token (`ActivationDataLocked`) until an `Activate`
//!   KeyCeremony of the CA succeeds after the lock.
//! * A key destroyed by a `Destroy` KeyCeremony is reported as such.

use crds::key_ceremony::{CeremonyOperation, CeremonyPhase};
use crds::{CertificateAuthority, KeyCeremony};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, ListParams};

use crate::context::Context;
use crate::error::{Error, Result};

/// Wrong PINs after which the controller stops trying (CPS §6.4.2).
pub const MAX_PIN_FAILURES: i32 = 3;

/// What the `Generate` ceremony of a `keyFrom` CA provides.
#[derive(Debug)]
pub struct CeremonyKey {
    /// SHA-256 (hex) of the key's SubjectPublicKeyInfo.
    pub fingerprint: String,
    /// The self-signed root certificate (PEM), for a root.
    pub certificate: Option<String>,
}

/// The ceremony-made key of `ca`, `Ok(None)` for a CA without `keyFrom`, or
/// `Err((reason, message))` while it cannot be used.
pub async fn from_ceremony(
    ca: &CertificateAuthority,
    ctx: &Context,
) -> Result<Option<std::result::Result<CeremonyKey, (&'static str, String)>>> {
    let Some(from) = &ca.spec.hsm.key_from else {
        return Ok(None);
    };
    let api: Api<KeyCeremony> =
        Api::namespaced(ctx.client.clone(), &ca.namespace().unwrap_or_default());
    let kc = api
        .get_opt(&from.ceremony)
        .await
        .map_err(Error::kube("get KeyCeremony"))?;
    let Some(kc) = kc else {
        return Ok(Some(Err((
            "WaitingForCeremony",
            format!(
                "KeyCeremony {:?} (spec.hsm.keyFrom) does not exist yet: create a Generate ceremony for this CA (docs/ceremonies.md)",
                from.ceremony
            ),
        ))));
    };
    if kc.spec.operation != CeremonyOperation::Generate || kc.spec.ca_ref.name != ca.name_any() {
        return Ok(Some(Err((
            "CeremonyMismatch",
            format!(
                "KeyCeremony {:?} is not a Generate ceremony for this CertificateAuthority",
                from.ceremony
            ),
        ))));
    }
    let status = kc.status.clone().unwrap_or_default();
    let phase = status.phase.unwrap_or_default();
    let fingerprint = status.key.as_ref().and_then(|k| k.fingerprint.clone());
    match (phase, fingerprint) {
        (CeremonyPhase::Succeeded, Some(fingerprint)) => Ok(Some(Ok(CeremonyKey {
            fingerprint,
            certificate: status.certificate,
        }))),
        (CeremonyPhase::Failed, _) => Ok(Some(Err((
            "CeremonyFailed",
            format!(
                "KeyCeremony {:?} failed; hold a new Generate ceremony and name it in spec.hsm.keyFrom of a new CertificateAuthority",
                from.ceremony
            ),
        )))),
        (phase, _) => Ok(Some(Err((
            "WaitingForCeremony",
            format!(
                "KeyCeremony {:?} has not succeeded yet (phase {phase:?}, quorum {})",
                from.ceremony,
                status
                    .quorum
                    .map(|q| q.progress)
                    .unwrap_or_else(|| "not judged".into())
            ),
        )))),
    }
}

/// The latest succeeded ceremony of `operation` for `ca`, with its completion time.
pub async fn latest_succeeded(
    ca: &CertificateAuthority,
    ctx: &Context,
    operation: CeremonyOperation,
) -> Result<Option<(String, Time)>> {
    let api: Api<KeyCeremony> =
        Api::namespaced(ctx.client.clone(), &ca.namespace().unwrap_or_default());
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(Error::kube("list KeyCeremonies"))?;
    Ok(list
        .items
        .into_iter()
        .filter(|kc| kc.spec.operation == operation && kc.spec.ca_ref.name == ca.name_any())
        .filter_map(|kc| {
            let st = kc.status.as_ref()?;
            (st.phase == Some(CeremonyPhase::Succeeded)).then_some(())?;
            Some((kc.name_any(), st.completed_at.clone()?))
        })
        .max_by_key(|(_, t)| t.0))
}
