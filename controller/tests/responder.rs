//! The CA's delegated OCSP responder certificate and its chop-responder
//! workload, on the real API server with the real controller binary (run under
//! the shipped least-privilege `chop-controller` role) and checked with openssl.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Harness, openssl};
use crds::{CertificateAuthority, IssuedCertificate};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use serde_json::json;

fn secret_file(h: &Harness, secret: &Secret, key: &str, file: &str) -> std::path::PathBuf {
    let data = secret.data.as_ref().unwrap().get(key).unwrap();
    h.write(file, std::str::from_utf8(&data.0).unwrap())
}

async fn responder_serial(h: &Harness) -> Option<String> {
    let ca = h.api::<CertificateAuthority>().get("root").await.ok()?;
    let st = ca.status?;
    let ready = st
        .conditions
        .iter()
        .any(|c| c.type_ == "ResponderReady" && c.status == "True");
    ready.then_some(())?;
    st.responder?.certificate_serial_number
}

#[tokio::test]
async fn a_ready_ca_gets_a_delegated_ocsp_certificate_and_a_responder_workload() {
    let mut h = Harness::new().await;
    let (_, ca_pem) = h.start_with_root("ca.pem").await;
    let serial = h.wait("ResponderReady", 60, || responder_serial(&h)).await;

    // The Secret: a kubernetes.io/tls pair whose certificate the CA signed for
    // OCSP signing only, with ocsp-nocheck, short-lived, and whose key matches.
    let secret = h.api::<Secret>().get("root-ocsp-responder").await.unwrap();
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
    let crt = secret_file(&h, &secret, "tls.crt", "responder.pem");
    let key = secret_file(&h, &secret, "tls.key", "responder.key");
    let verified = openssl(
        &["verify", "-purpose", "ocsphelper", "-CAfile"],
        &[&ca_pem, &crt],
    );
    assert!(verified.contains(": OK"), "{verified}");
    let text = openssl(&["x509", "-noout", "-text", "-in"], &[&crt]);
    assert!(text.contains("OCSP Signing"), "{text}");
    assert!(text.contains("OCSP No Check"), "{text}");
    assert!(text.contains("Public-Key: (2048 bit)"), "{text}");
    assert!(text.contains("CN = root OCSP Responder"), "{text}");
    let not_after = openssl(&["x509", "-noout", "-enddate", "-in"], &[&crt]);
    let not_before = openssl(&["x509", "-noout", "-startdate", "-in"], &[&crt]);
    let parse = |s: &str| {
        let v = s.trim().split_once('=').unwrap().1.to_string();
        let out = std::process::Command::new("date")
            .args(["-u", "-d", &v, "+%s"])
            .output()
            .unwrap();
        String::from_utf8(out.stdout)
            .unwrap()
            .trim()
            .parse::<i64>()
            .unwrap()
    };
    assert_eq!(
        parse(&not_after) - parse(&not_before),
        7 * 86_400,
        "default responder validity is 168h"
    );
    let cert_pub = openssl(&["x509", "-noout", "-pubkey", "-in"], &[&crt]);
    let key_pub = openssl(&["pkey", "-pubout", "-in"], &[&key]);
    assert_eq!(cert_pub, key_pub, "tls.key is the key of tls.crt");
    let crt_serial = openssl(&["x509", "-noout", "-serial", "-in"], &[&crt]);
    assert_eq!(crt_serial.trim(), format!("serial={serial}"));

    // Recorded in the CA's register like every certificate it signs.
    let record = h
        .api::<IssuedCertificate>()
        .get(&common::issued_name(&serial))
        .await
        .unwrap();
    assert_eq!(record.spec.profile, "OCSPResponder");

    // The workload, owned by the CA, running the responder for this CA.
    let owned_by_ca =
        |refs: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference]| {
            refs.iter().any(|r| {
                r.kind == "CertificateAuthority" && r.name == "root" && r.controller == Some(true)
            })
        };
    assert!(owned_by_ca(secret.owner_references()));
    let dep = h.api::<Deployment>().get("root-responder").await.unwrap();
    assert!(owned_by_ca(dep.owner_references()));
    assert_eq!(dep.spec.replicas, Some(2));
    let pod = dep.spec.template.spec.as_ref().unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some("root-responder"));
    let args = pod.containers[0].args.clone().unwrap().join(" ");
    let ns = h.ns().to_string();
    assert_eq!(
        args,
        format!("serve --kube --namespace {ns} --ca root --listen 0.0.0.0:8080")
    );
    let svc = h.api::<Service>().get("root-responder").await.unwrap();
    assert!(owned_by_ca(svc.owner_references()));
    assert_eq!(
        svc.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].port,
        80
    );
    let sa = h
        .api::<ServiceAccount>()
        .get("root-responder")
        .await
        .unwrap();
    assert!(owned_by_ca(sa.owner_references()));
    let rb = h.api::<RoleBinding>().get("root-responder").await.unwrap();
    assert_eq!(rb.role_ref.name, "chop:responder");
    assert_eq!(rb.role_ref.kind, "ClusterRole");
    let key_role = h.api::<Role>().get("root-responder").await.unwrap();
    let rules = key_role.rules.unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].verbs, ["get"]);
    assert_eq!(
        rules[0].resource_names.as_deref(),
        Some(&["root-ocsp-responder".to_string()][..])
    );
    let key_rb = h
        .api::<RoleBinding>()
        .get("root-responder-key")
        .await
        .unwrap();
    assert_eq!(key_rb.role_ref.name, "root-responder");

    // The certificate is reused while current: a restart does not re-issue it.
    h.child.stop();
    h.start(false);
    let ca_api = h.api::<CertificateAuthority>();
    let patch = json!({"spec": {"responder": {"replicas": 1}}});
    ca_api
        .patch("root", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    h.wait("Deployment scaled to 1", 60, || async {
        let d = h.api::<Deployment>().get("root-responder").await.ok()?;
        (d.spec.replicas == Some(1)).then_some(())
    })
    .await;
    assert_eq!(responder_serial(&h).await.as_deref(), Some(serial.as_str()));

    // A lost (or tampered) Secret is replaced by a fresh certificate at the next
    // look (a spec change makes it at once).
    h.api::<Secret>()
        .delete("root-ocsp-responder", &Default::default())
        .await
        .unwrap();
    let patch = json!({"spec": {"responder": {"replicas": 3}}});
    ca_api
        .patch("root", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let renewed = h
        .wait("a new responder certificate", 60, || async {
            let s = responder_serial(&h).await?;
            (s != serial).then_some(s)
        })
        .await;
    let secret = h.api::<Secret>().get("root-ocsp-responder").await.unwrap();
    let crt = secret_file(&h, &secret, "tls.crt", "responder2.pem");
    let crt_serial = openssl(&["x509", "-noout", "-serial", "-in"], &[&crt]);
    assert_eq!(crt_serial.trim(), format!("serial={renewed}"));
    let events = h.logs();
    assert!(
        !events.contains("PRIVATE KEY") && !events.contains(common::PIN),
        "no key material or PIN in the controller's log"
    );
    h.env.cleanup().await.unwrap();
}

/// chop-responder's binary (another package of the workspace: built on demand
/// when a `cargo test -p chop-controller` run has not built it).
fn responder_bin() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .join("chop-responder");
    if !bin.exists() {
        let st = std::process::Command::new(env!("CARGO"))
            .args(["build", "-p", "chop-responder", "--bin", "chop-responder"])
            .status()
            .unwrap();
        assert!(st.success(), "cargo build -p chop-responder");
    }
    bin
}

/// `openssl ocsp` for `leaf` against the responder at `port`, verified against
/// the CA certificate only (the delegated responder certificate comes in the
/// response): the status word and the full text.
fn ocsp(port: u16, leaf: &std::path::Path, ca: &std::path::Path) -> (String, String) {
    let (_, text) = common::run_text(
        std::process::Command::new("openssl")
            .args(["ocsp", "-no_nonce", "-resp_text", "-url"])
            .arg(format!("http://127.0.0.1:{port}/"))
            .arg("-issuer")
            .arg(ca)
            .arg("-CAfile")
            .arg(ca)
            .arg("-cert")
            .arg(leaf),
    );
    let prefix = format!("{}: ", leaf.display());
    let word = text
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or("")
        .trim()
        .to_string();
    (word, text)
}

/// Ask until the responder says `want` for `leaf`; on timeout fail with the
/// last answer and the responder's and controller's logs.
async fn until_ocsp(
    h: &Harness,
    port: u16,
    leaf: &std::path::Path,
    ca: &std::path::Path,
    want: &str,
    secs: u64,
) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        let (word, text) = ocsp(port, leaf, ca);
        if word == want {
            return text;
        }
        if std::time::Instant::now() > deadline {
            panic!(
                "OCSP for {} never said {want}; last answer:\n{text}\nresponder log:\n{}\ncontroller log:\n{}",
                leaf.display(),
                std::fs::read_to_string(h.path("responder.log")).unwrap_or_default(),
                h.logs()
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The certificate issued for request `name`, written to `<name>.pem`.
async fn cert_file(h: &Harness, name: &str) -> std::path::PathBuf {
    let cr = h.api::<crds::CertificateRequest>().get(name).await.unwrap();
    h.write(
        &format!("{name}.pem"),
        &cr.status.unwrap().certificate.unwrap(),
    )
}

#[tokio::test]
async fn revocation_and_hold_reach_ocsp_through_the_cluster() {
    let mut h = Harness::new().await;
    let (_, ca_pem) = h.start_with_root("ca.pem").await;
    h.wait("ResponderReady", 60, || responder_serial(&h)).await;

    // chop-responder as the ServiceAccount the controller bound (RBAC matches
    // a ServiceAccount subject by its user name).
    let ns = h.ns().to_string();
    let kubeconfig = h
        .env
        .plane()
        .kubeconfig_for_user(
            &format!("system:serviceaccount:{ns}:root-responder"),
            &["system:serviceaccounts"],
        )
        .await
        .unwrap();
    // KUBECONFIG is a colon-separated list: give the file a name without ':'.
    let kubeconfig = {
        let safe = h.path("responder.kubeconfig");
        std::fs::copy(&kubeconfig, &safe).unwrap();
        safe
    };
    let port = common::free_port();
    let log = std::fs::File::create(h.path("responder.log")).unwrap();
    let _responder = common::ChildGuard(Some(
        std::process::Command::new(responder_bin())
            .args([
                "serve",
                "--kube",
                "--namespace",
                &ns,
                "--ca",
                "root",
                "--listen",
            ])
            .arg(format!("127.0.0.1:{port}"))
            .env("KUBECONFIG", &kubeconfig)
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    ));
    let csr_a = h.csr("alice");
    common::issue(&h, "alice", "ra:alice", &csr_a).await;
    let csr_b = h.csr("bob");
    common::issue(&h, "bob", "ra:bob", &csr_b).await;
    let alice = cert_file(&h, "alice").await;
    let bob = cert_file(&h, "bob").await;
    let text = until_ocsp(&h, port, &alice, &ca_pem, "good", 60).await;
    assert!(text.contains("Response verify OK"), "{text}");
    assert!(
        text.contains("root OCSP Responder"),
        "signed by the delegated responder: {text}"
    );
    assert_eq!(ocsp(port, &bob, &ca_pem).0, "good");

    // Revoke alice: OCSP says revoked, with the reason, within seconds.
    let started = std::time::Instant::now();
    common::revoke(
        &h,
        "alice-lost",
        json!({"certificateRequestRef": {"name": "alice"}}),
        "keyCompromise",
    )
    .await;
    let text = until_ocsp(&h, port, &alice, &ca_pem, "revoked", 30).await;
    let visible = started.elapsed();
    println!("revocation visible in OCSP {visible:?} after the Revocation was created");
    assert!(text.contains("Reason: keyCompromise"), "{text}");
    assert!(visible < std::time::Duration::from_secs(10), "{visible:?}");
    assert_eq!(ocsp(port, &bob, &ca_pem).0, "good");

    // Hold bob: certificateHold; resume: good again.
    common::suspend(&h, "bob-hold", "bob").await;
    let text = until_ocsp(&h, port, &bob, &ca_pem, "revoked", 30).await;
    assert!(text.contains("Reason: certificateHold"), "{text}");
    h.api::<crds::Suspension>()
        .patch(
            "bob-hold",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"resumed": true}})),
        )
        .await
        .unwrap();
    until_ocsp(&h, port, &bob, &ca_pem, "good", 30).await;
    h.env.cleanup().await.unwrap();
}
