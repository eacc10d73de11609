//! `Activate` / `Deactivate` (CPS §6.2.8, §6.2.9) and `Destroy` (§6.2.10).
//!
//! Activation is the switch that lets the CA key sign. The switch itself stays
//! the CertificateAuthority's `spec.issuance` (one definition, read by every
//! gate); for a CA whose key came from a ceremony (`spec.hsm.keyFrom`) only the
//! controller may change it (manifests/policies/issuance-field.yaml), and it
//! does so only here, as the result of a quorum-approved ceremony. An Activate
//! ceremony also lifts the lock-out after three wrong PINs (§6.4.2): the CA
//! reconciler logs in again only after an Activate that succeeded after the lock.
//!
//! Destroy zeroizes the key (every key object with the CA's key label) only
//! when the CA no longer signs (`issuance: Suspended`) and no unexpired
//! certificate it issued still needs its CRLs and OCSP answers (§4.10).

use std::time::{Instant, SystemTime};

use ca::signer::pkcs11::KeyRef;
use crds::IssuedCertificate;
use crds::certificate_authority::IssuanceState;
use crds::key_ceremony::CeremonyOperation;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;

use super::hsm;
use super::{Run, crash_point};
use crate::context::FIELD_MANAGER;
use crate::error::{Error, Result};
use crate::reconcilers::from_time;

/// Activate or Deactivate: set the CA's `spec.issuance`.
pub async fn switch(run: &mut Run<'_>) -> Result<Action> {
    let want = if run.kc.spec.operation == CeremonyOperation::Activate {
        IssuanceState::Enabled
    } else {
        IssuanceState::Suspended
    };
    let word = match want {
        IssuanceState::Enabled => "Enabled",
        IssuanceState::Suspended => "Suspended",
    };
    let ca_name = run.ca.name_any();
    if run.ca.spec.issuance != want {
        let api: Api<crds::CertificateAuthority> =
            Api::namespaced(run.ctx.client.clone(), &run.namespace());
        let patch = serde_json::json!({ "spec": { "issuance": word } });
        let pp = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..PatchParams::default()
        };
        if let Err(e) = api.patch(&ca_name, &pp, &Patch::Merge(&patch)).await {
            // Refused by the API server (e.g. the controller lacks the right):
            // say so on the ceremony; it is retried with backoff.
            let msg =
                format!("could not set spec.issuance of CertificateAuthority {ca_name:?}: {e}");
            run.step("SetIssuance", "Failed", msg.clone()).await;
            run.save().await?;
            return Err(Error::kube("patch CertificateAuthority issuance")(e));
        }
        crash_point("SetIssuance");
    }
    run.step(
        "SetIssuance",
        "Succeeded",
        format!("CertificateAuthority {ca_name:?} issuance {word}"),
    )
    .await;
    run.succeed(format!(
        "CertificateAuthority {ca_name:?}: issuance {word} by quorum"
    ))
    .await
}

/// Destroy: zeroize the CA key once nothing needs it.
pub async fn destroy(run: &mut Run<'_>) -> Result<Action> {
    let ca_name = run.ca.name_any();
    if run.ca.spec.issuance == IssuanceState::Enabled {
        let msg = format!(
            "CertificateAuthority {ca_name:?} still issues (spec.issuance Enabled): deactivate it with a Deactivate ceremony first"
        );
        return run.fail("CAStillActive", msg).await;
    }
    // Every unexpired certificate of this CA needs the key for its CRLs and
    // OCSP answers until it expires (CPS §4.10).
    let records: Api<IssuedCertificate> = Api::namespaced(run.ctx.client.clone(), &run.namespace());
    let list = records
        .list(
            &ListParams::default()
                .labels(&format!("{}={ca_name}", crds::issued_certificate::LABEL_CA)),
        )
        .await
        .map_err(Error::kube("list IssuedCertificates"))?;
    let now = SystemTime::now();
    // The CA's own delegated OCSP certificate carries id-pkix-ocsp-nocheck:
    // nobody checks its revocation, so it does not keep the key alive.
    let live: Vec<SystemTime> = list
        .items
        .iter()
        .filter(|r| r.spec.profile != "OCSPResponder")
        .map(|r| from_time(&r.spec.not_after))
        .filter(|t| *t > now)
        .collect();
    if let Some(last) = live.iter().max() {
        let last = jiff::Timestamp::try_from(*last)
            .map(|t| t.to_string())
            .unwrap_or_default();
        let msg = format!(
            "{} certificate(s) issued by CertificateAuthority {ca_name:?} are unexpired (the last until {last}); \
             their CRLs and OCSP answers need this key until then (CPS §4.10, §6.2.10). \
             Destroy it after they expire",
            live.len()
        );
        return run.fail("KeyStillNeeded", msg).await;
    }

    let hsm_spec = run.ca.spec.hsm.clone();
    let token = match hsm::open_for(
        run,
        "DestroyKey",
        &hsm_spec.module,
        &hsm_spec.token_label,
        &hsm_spec.pin_secret_ref,
    )
    .await?
    {
        Ok(t) => t,
        Err(action) => return Ok(action),
    };
    let label = hsm_spec.key_label.clone();
    let started = Instant::now();
    let t = token.clone();
    hsm::audited(run, "DestroyKey", "ceremony-destroy").await?;
    let done = hsm::blocking(run, move || {
        let spki = match t.public_key(&KeyRef::label(label.clone())) {
            Ok(k) => Some(k),
            // Gone already: destroyed by this ceremony before a restart.
            Err(ca::Error::KeyNotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        t.destroy_key(&label)?;
        Ok(spki)
    })
    .await?;
    let spki = match done {
        Ok(s) => s,
        Err(e) => return run.hsm_failure("DestroyKey", e).await,
    };
    run.ctx.metrics.hsm("destroy", started);
    crash_point("DestroyKey");
    run.ctx.forget_signing(&run.ca.uid().unwrap_or_default());
    let fp = match spki.as_ref().map(super::generate::spki_pem_and_fingerprint) {
        Some(Ok((pem, fp))) => {
            run.status.key = Some(crds::key_ceremony::CeremonyKey {
                token_label: hsm_spec.token_label.clone(),
                key_label: hsm_spec.key_label.clone(),
                key_id: String::new(),
                public_key: Some(pem),
                fingerprint: Some(fp.clone()),
            });
            fp
        }
        _ => "unknown (already gone)".into(),
    };
    run.step(
        "DestroyKey",
        "Succeeded",
        format!(
            "key {:?} (public key SHA-256 {fp}) destroyed in token {:?}",
            hsm_spec.key_label, hsm_spec.token_label
        ),
    )
    .await;
    run.succeed(format!(
        "the key of CertificateAuthority {ca_name:?} is destroyed; it signs nothing more"
    ))
    .await
}
