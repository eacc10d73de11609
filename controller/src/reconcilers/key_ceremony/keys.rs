//! `Backup` (CPS §6.2.4) and `Restore` (§6.2.6, §6.2.7).
//!
//! Backup wraps the CA key under a fresh AES-256 key-encryption key inside the
//! token, splits the KEK m-of-n and encrypts each share to one custodian's
//! certificate ([`ca::ceremony::backup`]); status gets the wrapped key, each
//! share's envelope and fingerprint, never a share or the KEK. Restore first
//! makes a one-time decryption key inside the target token and publishes its
//! certificate; custodians decrypt their share with their own key and
//! re-encrypt it to that certificate, so no plaintext share ever crosses the
//! API; with m shares the controller rebuilds the KEK in memory (zeroized
//! after), unwraps the key into the token, checks it is the backed-up key by a
//! signature, and destroys the one-time key.

use base64::Engine;
use ca::ceremony::{BackupManifest, Custodian, SubmittedShare};
use ca::signer::pkcs11::KeyRef;
use crds::KeyCeremony;
use crds::key_ceremony::{
    BackupStatus, CeremonyKey, CeremonyOperation, CeremonyPhase, RestoreStatus, ShareRecord,
};
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;

use super::generate::spki_pem_and_fingerprint;
use super::hsm;
use super::{Run, crash_point};
use crate::error::{Error, Result};

/// Back the CA key up to the custodians.
pub async fn backup(run: &mut Run<'_>) -> Result<Action> {
    let Some(spec) = run.kc.spec.backup.clone() else {
        return run
            .fail("InvalidSpec", "spec.backup is missing".into())
            .await;
    };
    let Ok(threshold) = u8::try_from(spec.threshold) else {
        return run
            .fail("InvalidSpec", "threshold out of range".into())
            .await;
    };
    let custodians: Vec<Custodian> = spec
        .custodians
        .iter()
        .map(|c| Custodian {
            name: c.name.clone(),
            certificate_pem: c.certificate.clone(),
        })
        .collect();
    let hsm_spec = run.ca.spec.hsm.clone();
    let token = match hsm::open_for(
        run,
        "Backup",
        &hsm_spec.module,
        &hsm_spec.token_label,
        &hsm_spec.pin_secret_ref,
    )
    .await?
    {
        Ok(t) => t,
        Err(action) => return Ok(action),
    };
    let uid = run.kc.uid().unwrap_or_default();
    let label = hsm_spec.key_label.clone();
    let t = token.clone();
    let started = std::time::Instant::now();
    hsm::audited(run, "Wrap", "ceremony-wrap").await?;
    let out = hsm::blocking(run, move || {
        let info = t.find_key(&KeyRef::label(label.clone()))?;
        let out = ca::ceremony::backup(&t, &label, &uid, threshold, &custodians)?;
        Ok((info, out))
    })
    .await?;
    let (info, out) = match out {
        Ok(x) => x,
        Err(e) => return run.hsm_failure("Backup", e).await,
    };
    run.ctx.metrics.hsm("wrap", started);
    crash_point("Backup");
    let (pem, fp) = match spki_pem_and_fingerprint(&out.public_key) {
        Ok(x) => x,
        Err(e) => return run.hsm_failure("Backup", e).await,
    };
    run.status.key = Some(CeremonyKey {
        token_label: hsm_spec.token_label.clone(),
        key_label: hsm_spec.key_label.clone(),
        key_id: crate::subscribers::hex_lower(&info.id),
        public_key: Some(pem),
        fingerprint: Some(fp.clone()),
    });
    let shares: Vec<ShareRecord> = out
        .shares
        .iter()
        .map(|s| ShareRecord {
            custodian: s.custodian.clone(),
            index: i32::from(s.index),
            fingerprint: s.fingerprint.clone(),
            envelope: s.envelope_pem.clone(),
        })
        .collect();
    let names: Vec<String> = shares.iter().map(|s| s.custodian.clone()).collect();
    run.status.backup = Some(BackupStatus {
        threshold: spec.threshold,
        wrapped_key: base64::engine::general_purpose::STANDARD.encode(&out.wrapped_key),
        shares,
    });
    let msg = format!(
        "key {:?} (public key SHA-256 {fp}) wrapped under a fresh KEK split {}-of-{} to {}",
        hsm_spec.key_label,
        spec.threshold,
        names.len(),
        names.join(", ")
    );
    run.step("Backup", "Succeeded", msg.clone()).await;
    run.succeed(msg).await
}

/// Restore the key of a backup into the target token.
pub async fn restore(run: &mut Run<'_>) -> Result<Action> {
    let Some(spec) = run.kc.spec.restore.clone() else {
        return run
            .fail("InvalidSpec", "spec.restore is missing".into())
            .await;
    };
    // The backup: a succeeded Backup ceremony of the same CA.
    let api: Api<KeyCeremony> = Api::namespaced(run.ctx.client.clone(), &run.namespace());
    let backup = api
        .get_opt(&spec.backup_ref.name)
        .await
        .map_err(Error::kube("get backup KeyCeremony"))?;
    let usable = backup.as_ref().and_then(|b| {
        let st = b.status.as_ref()?;
        (b.spec.operation == CeremonyOperation::Backup
            && b.spec.ca_ref == run.kc.spec.ca_ref
            && st.phase == Some(CeremonyPhase::Succeeded))
        .then_some(())?;
        Some((b.uid()?, st.backup.clone()?, st.key.clone()?))
    });
    let Some((backup_uid, backup_status, backup_key)) = usable else {
        let msg = format!(
            "KeyCeremony {:?} is not a succeeded Backup of CertificateAuthority {:?}",
            spec.backup_ref.name, run.kc.spec.ca_ref.name
        );
        return run.fail("BackupNotUsable", msg).await;
    };
    let public_key = match backup_key
        .public_key
        .as_deref()
        .map(|p| ca::csr::SubjectKey::from_attested_spki(p.as_bytes()))
    {
        Some(Ok(k)) => k.spki().clone(),
        _ => {
            return run
                .fail("BackupNotUsable", "the backup records no public key".into())
                .await;
        }
    };
    let Ok(wrapped) = base64::engine::general_purpose::STANDARD.decode(&backup_status.wrapped_key)
    else {
        return run
            .fail(
                "BackupNotUsable",
                "the backup's wrapped key is not base64".into(),
            )
            .await;
    };

    let module = run.ca.spec.hsm.module.clone();
    let token = match hsm::open_for(
        run,
        "Restore",
        &module,
        &spec.token_label,
        &spec.pin_secret_ref,
    )
    .await?
    {
        Ok(t) => t,
        Err(action) => return Ok(action),
    };
    let uid = run.kc.uid().unwrap_or_default();
    let recipient = format!("chop-restore-{}", uid.chars().take(8).collect::<String>());
    let key_label = run.ca.spec.hsm.key_label.clone();

    // 1. The one-time recipient, once.
    let have_recipient = run
        .status
        .restore
        .as_ref()
        .is_some_and(|r| r.recipient_certificate.is_some());
    if !have_recipient {
        let (t, l, label, u) = (
            token.clone(),
            recipient.clone(),
            key_label.clone(),
            uid.clone(),
        );
        hsm::audited(run, "GenerateRecipient", "ceremony-generate").await?;
        let made = hsm::blocking(run, move || {
            // A target token that holds the CA's key label already would get a
            // second key: refused before anything is made.
            match t.find_key(&KeyRef::label(label.clone())) {
                Ok(_) => {
                    return Err(ca::Error::KeyExists {
                        label: t.label().to_string(),
                        key: label,
                    });
                }
                Err(ca::Error::KeyNotFound { .. }) => {}
                Err(e) => return Err(e),
            }
            ca::ceremony::create_recipient(&t, &l, &u)
        })
        .await?;
        let cert = match made {
            Ok(c) => c,
            Err(e) => return run.hsm_failure("CreateRecipient", e).await,
        };
        run.status.restore = Some(RestoreStatus {
            recipient_certificate: Some(cert),
            shares_received: Some(format!("0/{}", backup_status.threshold)),
        });
        run.status.phase = Some(CeremonyPhase::WaitingForShares);
        run.step(
            "CreateRecipient",
            "Succeeded",
            format!(
                "one-time recipient key made in token {:?}; custodians re-encrypt their shares to status.restore.recipientCertificate",
                spec.token_label
            ),
        )
        .await;
        run.save().await?;
    }

    // 2. Enough shares?
    let received = run.kc.spec.shares.len();
    let need = usize::try_from(backup_status.threshold).unwrap_or(usize::MAX);
    if let Some(r) = run.status.restore.as_mut() {
        r.shares_received = Some(format!("{received}/{need}"));
    }
    if received < need {
        let msg = format!(
            "{received} of the {need} shares needed received; custodians submit theirs to spec.shares (docs/ceremonies.md)"
        );
        return run.wait("WaitingForShares", msg, None).await;
    }

    // 3. Rebuild, unwrap, check, and drop the one-time key. A key with the
    // CA's label and the backed-up public key in the target token is this
    // ceremony's own, restored before a restart: taken, not made twice.
    let (t, label) = (token.clone(), key_label.clone());
    let existing = hsm::blocking(run, move || match t.public_key(&KeyRef::label(label)) {
        Ok(k) => Ok(Some(k)),
        Err(ca::Error::KeyNotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    })
    .await?;
    let existing = match existing {
        Ok(k) => k,
        Err(e) => return run.hsm_failure("Restore", e).await,
    };
    if let Some(k) = existing {
        if k != public_key {
            let msg = format!(
                "token {:?} holds a key {key_label:?} that is not the backed-up key",
                spec.token_label
            );
            return run.fail("KeyExists", msg).await;
        }
        return finish_restore(
            run,
            &spec.token_label,
            &key_label,
            &backup_key.key_id,
            &k,
            received,
        )
        .await;
    }
    let records: Vec<(u8, String)> = backup_status
        .shares
        .iter()
        .filter_map(|s| Some((u8::try_from(s.index).ok()?, s.fingerprint.clone())))
        .collect();
    let submitted: Vec<SubmittedShare> = run
        .kc
        .spec
        .shares
        .iter()
        .map(|s| SubmittedShare {
            from: s.user.clone(),
            envelope_pem: s.envelope.clone(),
        })
        .collect();
    let key_id = KeyRef::id_hex(&backup_key.key_id)
        .ok()
        .and_then(|k| match k {
            KeyRef::Id(id) if !id.is_empty() => Some(id),
            _ => None,
        })
        .unwrap_or_else(|| uid.as_bytes().iter().take(16).copied().collect());
    let threshold = u8::try_from(backup_status.threshold).unwrap_or(u8::MAX);
    let (t, l, label) = (token.clone(), recipient.clone(), key_label.clone());
    let started = std::time::Instant::now();
    hsm::audited(run, "Unwrap", "ceremony-unwrap").await?;
    let restored = hsm::blocking(run, move || {
        let manifest = BackupManifest {
            backup_id: &backup_uid,
            threshold,
            wrapped_key: &wrapped,
            public_key: &public_key,
            shares: &records,
        };
        let result = ca::ceremony::restore(&t, &l, &manifest, &submitted, &label, &key_id);
        // The one-time key goes whatever the outcome: the envelopes in the
        // spec become undecryptable for good.
        let dropped = ca::ceremony::destroy_recipient(&t, &l);
        let spki = result?;
        dropped?;
        Ok(spki)
    })
    .await?;
    let spki = match restored {
        Ok(k) => k,
        Err(e) => return run.hsm_failure("Restore", e).await,
    };
    run.ctx.metrics.hsm("unwrap", started);
    crash_point("Restore");
    finish_restore(
        run,
        &spec.token_label,
        &key_label,
        &backup_key.key_id,
        &spki,
        received,
    )
    .await
}

async fn finish_restore(
    run: &mut Run<'_>,
    token_label: &str,
    key_label: &str,
    key_id: &str,
    spki: &spki::SubjectPublicKeyInfoOwned,
    received: usize,
) -> Result<Action> {
    let (pem, fp) = match spki_pem_and_fingerprint(spki) {
        Ok(x) => x,
        Err(e) => return run.hsm_failure("Restore", e).await,
    };
    run.status.key = Some(CeremonyKey {
        token_label: token_label.to_string(),
        key_label: key_label.to_string(),
        key_id: key_id.to_string(),
        public_key: Some(pem),
        fingerprint: Some(fp.clone()),
    });
    let msg = format!(
        "key {key_label:?} restored into token {token_label:?} from {received} shares; same public key (SHA-256 {fp}), checked by a signature. Point the CertificateAuthority's spec.hsm.tokenLabel and pinSecretRef at this token"
    );
    run.step("Restore", "Succeeded", msg.clone()).await;
    run.succeed(msg).await
}
