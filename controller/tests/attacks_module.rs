//! Issue 8, finding 8, played by the attacker: an administrator (a user bound
//! to the shipped `chop:administrator` ClusterRole, nothing more) must not
//! choose the code chop-controller runs through a CA's `spec.hsm.module`.
//!
//! The "evil" library is a working PKCS#11 module (a copy of SoftHSM2 under
//! another path), so without the allow-list the controller would load it and
//! use it. The administrator names it directly and through `..` from the
//! allowed module's directory; both CAs get `Ready=False ModuleNotAllowed`
//! (message naming `--pkcs11-module`) and a Warning Event, the library is not
//! in the controller's memory map, and the controller keeps serving the
//! legitimate CA (a request is issued after the attempts). The allowed
//! module spelled with `..` is the same module: a CA on the root's key through
//! it is refused `KeyInUse` like any second CA on that key.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use crds::CertificateAuthority;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

mod common;
use common::*;

/// A client for user `name` bound, in the test's namespace, to the shipped
/// `chop:administrator` ClusterRole.
async fn administrator(h: &Harness, name: &str) -> kube::Client {
    h.shipped_role_user("administrator.yaml", name).await
}

/// The Ready condition of CA `name` once its reason is `reason`.
async fn wait_ready_reason(h: &Harness, name: &str, reason: &str) -> String {
    let api = h.api::<CertificateAuthority>();
    h.wait(&format!("CA {name}: Ready=False {reason}"), 60, || {
        let api = api.clone();
        async move {
            let ca = api.get(name).await.ok()?;
            let c = ca
                .status?
                .conditions
                .into_iter()
                .find(|c| c.type_ == "Ready" && c.status == "False" && c.reason == reason)?;
            Some(c.message)
        }
    })
    .await
}

#[tokio::test]
async fn an_administrator_cannot_choose_the_library_the_controller_loads() {
    let mut h = Harness::new().await;
    h.start(false);
    h.create_ca().await;

    // A working PKCS#11 module at a path of the administrator's choosing.
    let evil = h.path("evil.so");
    std::fs::copy(
        Path::new(ca::signer::pkcs11::SOFTHSM2_MODULE)
            .canonicalize()
            .unwrap(),
        &evil,
    )
    .unwrap();
    let dotted = format!("/usr/lib/softhsm/../../..{}", evil.display());
    assert_eq!(
        Path::new(&dotted).canonicalize().unwrap(),
        evil.canonicalize().unwrap()
    );

    let mallory = administrator(&h, "mallory").await;
    let cas: Api<CertificateAuthority> = Api::namespaced(mallory, h.ns());
    for (name, module) in [("evil", evil.display().to_string()), ("dotted", dotted)] {
        let ca: CertificateAuthority = serde_json::from_value(json!({
            "apiVersion": "chop.dev/v1alpha1", "kind": "CertificateAuthority",
            "metadata": {"name": name},
            "spec": {
                "type": "Root",
                "subject": {"country": "TW", "organization": "Mallory", "commonName": "Mallory Root CA"},
                "hsm": {"module": module, "tokenLabel": "moica", "keyLabel": format!("{name}-key"),
                        "pinSecretRef": {"name": "hsm-pin", "key": "pin"},
                        "keyGeneration": "IfMissing"}
            }
        }))
        .unwrap();
        cas.create(&PostParams::default(), &ca).await.unwrap();
    }
    for name in ["evil", "dotted"] {
        let message = wait_ready_reason(&h, name, "ModuleNotAllowed").await;
        assert!(
            message.contains("--pkcs11-module") && message.contains("evil.so"),
            "{message}"
        );
        warning_event(&h, name, "ModuleNotAllowed").await;
        let st = h
            .api::<CertificateAuthority>()
            .get(name)
            .await
            .unwrap()
            .status
            .unwrap();
        assert!(st.certificate.is_none() && st.serial_number.is_none());
    }

    // The allowed module spelled another way is still the same module: it
    // does not make the root's key a second CA's (one key, one CA).
    let twin: CertificateAuthority = serde_json::from_value(json!({
        "apiVersion": "chop.dev/v1alpha1", "kind": "CertificateAuthority",
        "metadata": {"name": "twin"},
        "spec": {
            "type": "Root",
            "subject": {"country": "TW", "organization": "Mallory", "commonName": "Twin Root CA"},
            "hsm": {"module": "/usr/lib/softhsm/../softhsm/libsofthsm2.so", "tokenLabel": "moica",
                    "keyLabel": "moica-root", "pinSecretRef": {"name": "hsm-pin", "key": "pin"}}
        }
    }))
    .unwrap();
    cas.create(&PostParams::default(), &twin).await.unwrap();
    wait_ready_reason(&h, "twin", "KeyInUse").await;
    let st = h
        .api::<CertificateAuthority>()
        .get("twin")
        .await
        .unwrap()
        .status
        .unwrap();
    assert!(st.certificate.is_none() && st.serial_number.is_none());

    // Nothing was loaded: the library is not mapped into the controller.
    let pid = h.child.0.as_ref().unwrap().id();
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    assert!(
        !maps.contains("evil.so"),
        "the controller loaded the administrator's library:\n{}",
        maps.lines()
            .filter(|l| l.contains("evil.so"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // The controller is up and still serves the legitimate CA.
    let csr = h.csr("after");
    issue(&h, "after", "ra-0801", &csr).await;
    assert!(h.child.0.as_mut().unwrap().try_wait().unwrap().is_none());
    assert!(
        !std::fs::read_to_string(format!("/proc/{pid}/maps"))
            .unwrap()
            .contains("evil.so")
    );
}

/// The same family: the responder runs with the delegated OCSP signing key, so
/// an administrator may not choose its image either (`--responder-image`).
#[tokio::test]
async fn an_administrator_cannot_choose_the_image_that_holds_the_ocsp_key() {
    use k8s_openapi::api::apps::v1::Deployment;
    let mut h = Harness::new().await;
    h.start(false);
    h.create_ca().await;
    let deployments = h.api::<Deployment>();
    let image_of = |d: &Deployment| {
        d.spec.template.spec.as_ref().unwrap().containers[0]
            .image
            .clone()
            .unwrap()
    };
    let before = h
        .wait("responder Deployment", 60, || {
            let deployments = deployments.clone();
            async move { deployments.get("root-responder").await.ok() }
        })
        .await;
    let image = image_of(&before);
    assert!(image.contains("chop-responder"), "{image}");

    let admin = administrator(&h, "admin-img").await;
    Api::<CertificateAuthority>::namespaced(admin, h.ns())
        .patch(
            "root",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"responder": {"image": "registry.example/ocsp-key-exfil:1"}}}),
            ),
        )
        .await
        .unwrap();
    let cas = h.api::<CertificateAuthority>();
    let message = h
        .wait("ResponderReady=False ImageNotAllowed", 60, || {
            let cas = cas.clone();
            async move {
                let ca = cas.get("root").await.ok()?;
                ca.status?
                    .conditions
                    .into_iter()
                    .find(|c| {
                        c.type_ == "ResponderReady"
                            && c.status == "False"
                            && c.reason == "ImageNotAllowed"
                    })
                    .map(|c| c.message)
            }
        })
        .await;
    assert!(message.contains("--responder-image"), "{message}");
    warning_event(&h, "root", "ImageNotAllowed").await;
    // The workload still runs the allowed image; the CA still signs.
    let after = deployments.get("root-responder").await.unwrap();
    assert_eq!(image_of(&after), image);
    let csr = h.csr("still");
    issue(&h, "still", "ra-0802", &csr).await;
}
