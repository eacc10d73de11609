//! Helpers of the KeyCeremony tests (ceremony.rs, ceremony_docs.rs).

use crds::KeyCeremony;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

use super::{Harness, request_body};

/// The ceremony's published spec hash, once the controller judged it.
pub async fn spec_hash(h: &Harness, name: &str) -> String {
    let api = h.api::<KeyCeremony>();
    h.wait(&format!("{name}: status.specHash"), 60, || {
        let api = api.clone();
        async move { api.get(name).await.ok()?.status?.spec_hash }
    })
    .await
}

pub async fn create_ceremony(
    h: &Harness,
    (client, by): (&kube::Client, &str),
    name: &str,
    spec: Value,
) {
    let body: KeyCeremony = serde_json::from_value(json!({
        "apiVersion": "chop.dev/v1alpha1", "kind": "KeyCeremony",
        "metadata": {"name": name, "annotations": {"chop.dev/requested-by": by}}, "spec": spec
    }))
    .unwrap();
    Api::<KeyCeremony>::namespaced(client.clone(), h.ns())
        .create(&PostParams::default(), &body)
        .await
        .unwrap_or_else(|e| panic!("creating {name}: {e}"));
}

/// Wait until ceremony `name` is in `phase`; return it.
pub async fn wait_phase(h: &Harness, name: &str, phase: &str) -> KeyCeremony {
    let api = h.api::<KeyCeremony>();
    h.wait(&format!("{name}: phase {phase}"), 90, || {
        let api = api.clone();
        async move {
            let kc = api.get(name).await.ok()?;
            let now = serde_json::to_value(kc.status.as_ref()?.phase?).ok()?;
            (now == json!(phase)).then_some(kc)
        }
    })
    .await
}

/// The `Succeeded` condition's reason.
pub fn outcome(kc: &KeyCeremony) -> String {
    kc.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Succeeded"))
        .map(|c| format!("{}: {}", c.reason, c.message))
        .unwrap_or_default()
}

/// SoftHSM2 keeps one file per object: the number of objects in the token
/// directory (a key pair is two).
pub fn token_objects(h: &Harness) -> usize {
    // Key objects in the CA tokens.
    let mut n = 0;
    for dir in std::fs::read_dir(h.path("tokens")).unwrap() {
        let dir = dir.unwrap().path();
        // Not the audit token (its audit key is the controller's, not a CA's).
        let label = std::fs::read(dir.join("token.object")).unwrap_or_default();
        let audit = label
            .windows(super::AUDIT_TOKEN.len())
            .any(|w| w == super::AUDIT_TOKEN.as_bytes());
        if dir.is_dir() && !audit {
            n += std::fs::read_dir(&dir)
                .unwrap()
                .filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .path()
                        .extension()
                        .is_some_and(|x| x == "object")
                        && e.as_ref().unwrap().file_name() != "token.object"
                })
                .count();
        }
    }
    n
}

/// A CA whose key comes from the Generate ceremony `ceremony`.
pub async fn create_ceremony_ca(h: &Harness, name: &str, key_label: &str, ceremony: &str) {
    h.create_ca_spec(
        name,
        key_label,
        "Never",
        json!({
            "issuance": "Suspended",
            "hsm": {
                "tokenLabel": "moica",
                "keyLabel": key_label,
                "pinSecretRef": {"name": "hsm-pin", "key": "pin"},
                "keyFrom": {"ceremony": ceremony}
            }
        }),
    )
    .await;
}

/// An RA requests, an officer approves; the issued certificate (PEM).
pub async fn issue_at(
    h: &Harness,
    ra: &Api<crds::CertificateRequest>,
    ca: &str,
    name: &str,
    reference: &str,
) -> (String, String) {
    let csr = h.csr(name);
    let mut body = request_body(name, "Signature", reference, &csr, true);
    body.spec.ca_ref.name = ca.to_string();
    ra.create(&PostParams::default(), &body).await.unwrap();
    h.approve(name).await;
    let cr = h
        .wait_condition(name, "Issued", "True", Some("Issued"))
        .await;
    let st = cr.status.unwrap();
    (st.serial_number.unwrap(), st.certificate.unwrap())
}
