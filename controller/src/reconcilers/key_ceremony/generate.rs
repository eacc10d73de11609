//! `Generate` (CPS §6.1.1, §6.2.1): the CA key pair is made inside the token
//! named by the CertificateAuthority's `spec.hsm`, sensitive and wrappable only
//! for a backup; then, for a root, its self-signed certificate, for a
//! subordinate, its PKCS#10 request.
//!
//! Never two keys: the CKA_ID is reserved in status before generation; a
//! restarted ceremony that finds a key with the CA's label adopts it only if it
//! carries the reserved id (its own, made before the crash), and fails with
//! `KeyExists` otherwise. The root's serial and notBefore are reserved the same
//! way, so a restart signs the same certificate, not a second one.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use ca::issue::{RootRequest, self_sign_root};
use ca::profile::Profile;
use ca::serial::Serial;
use ca::signer::pkcs11::KeyRef;
use ca::signer::{Curve, KeySpec, Signer};
use crds::certificate_authority::CaType;
use crds::common::KeyAlgorithm;
use crds::key_ceremony::{CeremonyKey, ReservedCertificate};
use kube::runtime::controller::Action;

use super::hsm;
use super::{Run, crash_point};
use crate::error::Result;
use crate::reconcilers::certificate_authority::{dn_from_spec, policy_oids};
use crate::reconcilers::{from_time, parse_period, to_time};
use crate::subscribers::hex_lower;

/// The token key spec for the CA's `spec.hsm.key`.
pub fn key_spec(key: &crds::common::KeySpec) -> std::result::Result<KeySpec, String> {
    match (key.algorithm, key.size) {
        (KeyAlgorithm::Rsa, bits @ (2048 | 3072 | 4096)) => Ok(KeySpec::Rsa {
            bits: u32::try_from(bits).unwrap_or(2048),
        }),
        (KeyAlgorithm::Ecdsa, 384) => Ok(KeySpec::Ec(Curve::P384)),
        (KeyAlgorithm::Ecdsa, 521) => Ok(KeySpec::Ec(Curve::P521)),
        (a, s) => Err(format!(
            "a CA key is RSA 2048, 3072 or 4096 or ECDSA P-384 or P-521, not {a:?} {s}"
        )),
    }
}

/// PEM of a SubjectPublicKeyInfo and the lower-case hex SHA-256 of its DER.
pub fn spki_pem_and_fingerprint(
    spki: &spki::SubjectPublicKeyInfoOwned,
) -> std::result::Result<(String, String), ca::Error> {
    let der = ca::signer::spki_der(spki)?;
    let pem = ca::csr::to_pem("PUBLIC KEY", &der)?;
    let fp = hex_lower(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &der).as_ref());
    Ok((pem, fp))
}

/// Run the Generate steps that have not run yet.
pub async fn run(run: &mut Run<'_>) -> Result<Action> {
    let hsm_spec = run.ca.spec.hsm.clone();
    let spec = match key_spec(&hsm_spec.key) {
        Ok(s) => s,
        Err(msg) => return run.fail("UnsupportedKey", msg).await,
    };

    // 1. Reserve the key id.
    if run.status.key.is_none() {
        let mut id = [0u8; 16];
        if aws_lc_rs::rand::fill(&mut id).is_err() {
            return run.fail("RandomFailed", "no random key id".into()).await;
        }
        run.status.key = Some(CeremonyKey {
            token_label: hsm_spec.token_label.clone(),
            key_label: hsm_spec.key_label.clone(),
            key_id: hex_lower(&id),
            public_key: None,
            fingerprint: None,
        });
        run.step(
            "GenerateKey",
            "Started",
            format!(
                "generating a {spec} key {:?} in token {:?}",
                hsm_spec.key_label, hsm_spec.token_label
            ),
        )
        .await;
        run.save().await?;
    }
    let Some(key) = run.status.key.clone() else {
        return Ok(Action::await_change());
    };

    let token = match hsm::open_for(
        run,
        "GenerateKey",
        &hsm_spec.module,
        &hsm_spec.token_label,
        &hsm_spec.pin_secret_ref,
    )
    .await?
    {
        Ok(t) => t,
        Err(action) => return Ok(action),
    };

    // 2. The key: made once, or adopted when this ceremony made it before.
    if key.fingerprint.is_none() {
        let (t, label) = (token.clone(), key.key_label.clone());
        let id = ca::signer::pkcs11::KeyRef::id_hex(&key.key_id)
            .map(|k| match k {
                KeyRef::Id(id) => id,
                KeyRef::Label(_) => Vec::new(),
            })
            .unwrap_or_default();
        let started = Instant::now();
        hsm::audited(run, "GenerateKey", "ceremony-generate").await?;
        let made = hsm::blocking(run, move || {
            match t.find_key(&KeyRef::label(label.clone())) {
                Ok(info) if info.id == id => {
                    t.public_key(&KeyRef::label(label)).map(|k| (k, false))
                }
                Ok(_) => Err(ca::Error::KeyExists {
                    label: t.label().to_string(),
                    key: label,
                }),
                Err(ca::Error::KeyNotFound { .. }) => {
                    hsm::generate_wrappable(&t, &label, &id, spec).map(|k| (k, true))
                }
                Err(e) => Err(e),
            }
        })
        .await?;
        let (spki, fresh) = match made {
            Ok(x) => x,
            Err(e) => return run.hsm_failure("GenerateKey", e).await,
        };
        run.ctx.metrics.hsm("generate", started);
        crash_point("GenerateKey");
        let (pem, fp) = match spki_pem_and_fingerprint(&spki) {
            Ok(x) => x,
            Err(e) => return run.hsm_failure("GenerateKey", e).await,
        };
        if let Some(k) = run.status.key.as_mut() {
            k.public_key = Some(pem);
            k.fingerprint = Some(fp.clone());
        }
        let how = if fresh {
            "generated"
        } else {
            "found (made by this ceremony before a restart)"
        };
        run.step(
            "GenerateKey",
            "Succeeded",
            format!("key {:?} {how}; public key SHA-256 {fp}", key.key_label),
        )
        .await;
        run.save().await?;
    }

    // 3. The certificate (root) or the request (subordinate).
    let signer: Arc<dyn Signer> = match token.signer(&KeyRef::label(key.key_label.clone())) {
        Ok(s) => Arc::new(s),
        Err(e) => return run.hsm_failure("GenerateKey", e).await,
    };
    let id = run.id();
    let subject = match dn_from_spec(&run.ca.spec.subject) {
        Ok(s) => s,
        Err(e) => return run.hsm_failure("SelfSign", e).await,
    };
    match run.ca.spec.ca_type {
        CaType::Root if run.status.certificate.is_none() => {
            if run.status.reserved.is_none() {
                let serial = match Serial::random() {
                    Ok(s) => s,
                    Err(e) => return run.hsm_failure("SelfSign", e).await,
                };
                let nb = match ca::time::truncate_to_seconds(SystemTime::now()) {
                    Ok(t) => t,
                    Err(e) => return run.hsm_failure("SelfSign", e).await,
                };
                run.status.reserved = Some(ReservedCertificate {
                    serial_number: serial.to_hex(),
                    not_before: to_time(nb, &id)?,
                });
                run.save().await?;
            }
            let Some(reserved) = run.status.reserved.clone() else {
                return Ok(Action::await_change());
            };
            let mut request = match RootRequest::new(&subject) {
                Ok(r) => r,
                Err(e) => return run.hsm_failure("SelfSign", e).await,
            };
            request.serial = match Serial::from_hex(&reserved.serial_number) {
                Ok(s) => s,
                Err(e) => return run.hsm_failure("SelfSign", e).await,
            };
            request.not_before = from_time(&reserved.not_before);
            request.profile = Profile::root_ca();
            if let Some(v) = &run.ca.spec.validity {
                match parse_period(v) {
                    Ok(p) => request.profile.validity = p,
                    Err(m) => return run.fail("InvalidValidity", m).await,
                }
            }
            request.policy_oids = policy_oids(&run.ca, &id)?;
            let started = Instant::now();
            hsm::audited(run, "SelfSign", "root-self-sign").await?;
            let signed = hsm::blocking(run, move || {
                self_sign_root(signer.as_ref(), &request).and_then(|c| c.to_pem())
            })
            .await?;
            let pem = match signed {
                Ok(p) => p,
                Err(e) => return run.hsm_failure("SelfSign", e).await,
            };
            run.ctx.metrics.hsm("selfSign", started);
            crash_point("SelfSign");
            run.status.certificate = Some(pem);
            run.step(
                "SelfSign",
                "Succeeded",
                format!(
                    "self-signed root certificate, serial {}",
                    reserved.serial_number
                ),
            )
            .await;
            run.save().await?;
        }
        CaType::Subordinate if run.status.csr.is_none() => {
            let started = Instant::now();
            hsm::audited(run, "SubordinateCsr", "subordinate-csr").await?;
            let made = hsm::blocking(run, move || {
                ca::issue::subordinate_csr(signer.as_ref(), &subject)
                    .and_then(|der| ca::csr::to_pem("CERTIFICATE REQUEST", &der))
            })
            .await?;
            let pem = match made {
                Ok(p) => p,
                Err(e) => return run.hsm_failure("CertificateRequest", e).await,
            };
            run.ctx.metrics.hsm("csr", started);
            run.status.csr = Some(pem);
            run.step(
                "CertificateRequest",
                "Succeeded",
                "PKCS#10 request signed by the new key".into(),
            )
            .await;
            run.save().await?;
        }
        _ => {}
    }
    let fp = run
        .status
        .key
        .as_ref()
        .and_then(|k| k.fingerprint.clone())
        .unwrap_or_default();
    let what = match run.ca.spec.ca_type {
        CaType::Root => "and the self-signed root certificate",
        CaType::Subordinate => "and the certificate request for the parent CA",
    };
    run.succeed(format!(
        "key {:?} (public key SHA-256 {fp}) generated in token {:?} {what}",
        key.key_label, key.token_label
    ))
    .await
}
