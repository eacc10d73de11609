//! The audit key (CPS §5.4.4): an EC P-256 key labelled `chop-audit` in the
//! audit token, generated there (non-extractable, sign only) at the first start
//! if absent; it signs tree heads and nothing else. Its public key is published
//! in ConfigMap `chop-audit-key` (`audit-key.pem`, `key-id`).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use ca::signer::pkcs11::{KeyRef, Token};
use ca::signer::{Curve, KeySpec, Pin, SignatureAlgorithm, Signer};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};

use super::{KEY_CONFIGMAP, KEY_LABEL};
use crate::context::FIELD_MANAGER;
use crate::error::{Error, Result};

/// The audit key, open for signing.
#[derive(Debug, Clone)]
pub struct AuditKey {
    /// The HSM signer (ECDSA P-256 with SHA-256).
    pub signer: Arc<dyn Signer>,
    /// DER SubjectPublicKeyInfo.
    pub spki_der: Vec<u8>,
    /// Hex SHA-256 of the DER SubjectPublicKeyInfo.
    pub key_id: String,
    /// Whether this start generated it.
    pub generated: bool,
}

/// Hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    use std::fmt::Write;
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    d.as_ref().iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// PEM of a DER SubjectPublicKeyInfo.
pub fn public_key_pem(spki_der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(spki_der);
    let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(chunk));
        pem.push('\n');
    }
    pem.push_str("-----END PUBLIC KEY-----\n");
    pem
}

fn hsm(e: ca::Error) -> Error {
    Error::AuditUnavailable {
        message: format!("audit key: {e}"),
    }
}

/// Open the audit token and find or generate the audit key (blocking: PKCS#11).
pub fn open(module: &Path, token_label: &str, pin: Pin) -> Result<AuditKey> {
    let token = Token::open_path(module, token_label, pin).map_err(hsm)?;
    let key = KeyRef::label(KEY_LABEL);
    let generated = match token.find_key(&key) {
        Ok(_) => false,
        Err(ca::Error::KeyNotFound { .. }) => {
            token
                .generate_key(KEY_LABEL, None, KeySpec::Ec(Curve::P256))
                .map_err(hsm)?;
            true
        }
        Err(e) => return Err(hsm(e)),
    };
    let signer = token
        .signer_with(&key, SignatureAlgorithm::EcdsaSha256)
        .map_err(hsm)?;
    let spki_der = ca::signer::spki_der(signer.public_key()).map_err(hsm)?;
    if KeySpec::of(signer.public_key()).map_err(hsm)? != KeySpec::Ec(Curve::P256) {
        return Err(Error::AuditUnavailable {
            message: format!(
                "the key {KEY_LABEL:?} in token {token_label:?} is not an EC P-256 key"
            ),
        });
    }
    Ok(AuditKey {
        key_id: sha256_hex(&spki_der),
        spki_der,
        signer: Arc::new(signer),
        generated,
    })
}

/// Publish the public key in ConfigMap `chop-audit-key` of `namespace`.
pub async fn publish(client: &Client, namespace: &str, key: &AuditKey) -> Result<()> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let cm = ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some(KEY_CONFIGMAP.into()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/part-of".to_string(),
                "chop".to_string(),
            )])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([
            ("audit-key.pem".to_string(), public_key_pem(&key.spki_der)),
            ("key-id".to_string(), key.key_id.clone()),
        ])),
        ..Default::default()
    };
    let mut value = serde_json::to_value(&cm).map_err(|e| Error::AuditUnavailable {
        message: format!("audit key ConfigMap: {e}"),
    })?;
    value["apiVersion"] = "v1".into();
    value["kind"] = "ConfigMap".into();
    api.patch(
        KEY_CONFIGMAP,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&value),
    )
    .await
    .map_err(Error::kube("apply ConfigMap chop-audit-key"))?;
    Ok(())
}
