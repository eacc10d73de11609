//! End to end: the real `chop-controller` binary (a child process with its own
//! SoftHSM2 token directory) against a real kube-apiserver; certificates checked
//! with the `openssl` CLI.
//!
//! - `issues_end_to_end`: root CA (key generated in the token) → Ready with a
//!   self-signed CA certificate; a request waits for approval, then for
//!   acceptance, then issues; `openssl verify` accepts it; the subject carries the
//!   CA-assigned serialNumber, reused for a second request of the same subscriber;
//!   the IssuedCertificate survives deleting the request; a malformed CSR fails
//!   with a specific condition and Event while a good request beside it issues;
//!   `/metrics` counts the issuance.
//! - `waits_and_refusals`: a CA whose key is missing with `keyGeneration: Never`
//!   reports `KeyNotFound`; while issuance is Suspended an approved, accepted
//!   request waits (`IssuanceSuspended`) and issues once resumed; a denied request
//!   is never issued; a bare public key is refused unless the CA allows attested keys.
//! - `subordinate_ca_signed_by_its_parent`: a subordinate CA (`parentRef`), once an
//!   officer approved the CertificateRequest it made, gets
//!   its certificate from the root (recorded in the root's register) and issues
//!   certificates that `openssl verify` chains up to the root.
//! - `only_the_leader_signs_and_a_follower_takes_over`: two replicas; only the
//!   Lease holder runs the controllers (`/readyz` 200 vs 503); after the leader
//!   is killed the follower takes over once the Lease lapses and issues.
//! - `a_crash_after_the_reservation_issues_exactly_once`: the controller aborts
//!   right after reserving a serial (test hook); after a restart there is exactly
//!   one IssuedCertificate, with the reserved serial, and the root was not re-signed.
//! - `a_crash_after_the_commit_records_without_re_signing`: the controller aborts
//!   right after creating the IssuedCertificate; after a restart the request's
//!   status gets exactly that certificate, taken from the record, not re-signed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crds::{CertificateAuthority, CertificateRequest, IssuedCertificate};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

mod common;
use common::*;

#[tokio::test]
async fn issues_end_to_end() {
    let mut h = Harness::new().await;
    h.start(false);
    let ca = h.create_ca().await;
    let root_pem = ca.status.as_ref().unwrap().certificate.clone().unwrap();
    let root = h.write("root.pem", &root_pem);
    let text = openssl(&["x509", "-noout", "-text", "-in"], &[&root]);
    assert!(text.contains("CA:TRUE"), "{text}");
    let subject = openssl(
        &["x509", "-noout", "-subject", "-nameopt", "RFC2253", "-in"],
        &[&root],
    );
    let issuer = openssl(
        &["x509", "-noout", "-issuer", "-nameopt", "RFC2253", "-in"],
        &[&root],
    );
    assert_eq!(
        subject.trim_start_matches("subject="),
        issuer.trim_start_matches("issuer=")
    );
    openssl(&["verify", "-x509_strict", "-CAfile"], &[&root, &root]);

    // Waits for approval, then for acceptance, then issues.
    let csr = h.csr("alice-sig");
    h.create_request("alice-sig", "Signature", "ra-0001", &csr, false)
        .await;
    h.wait_condition("alice-sig", "Issued", "False", Some("WaitingForApproval"))
        .await;
    h.approve("alice-sig").await;
    let cr = h
        .wait_condition("alice-sig", "Issued", "False", Some("WaitingForAcceptance"))
        .await;
    assert!(cr.status.as_ref().unwrap().serial_number.is_none());
    // The officer's condition is the officer's: the controller did not take it over.
    let managers: Vec<_> = cr
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(managers.contains(&"officer".to_string()), "{managers:?}");
    h.accept("alice-sig").await;
    let cr = h
        .wait_condition("alice-sig", "Issued", "True", Some("Issued"))
        .await;
    let st = cr.status.clone().unwrap();
    assert!(
        st.conditions
            .iter()
            .any(|c| c.type_ == "Accepted" && c.status == "True")
    );
    assert!(
        cr.status
            .as_ref()
            .unwrap()
            .conditions
            .iter()
            .any(|c| c.type_ == "Approved" && c.status == "True")
    );
    let cert = h.write("alice-sig.pem", st.certificate.as_deref().unwrap());
    let verified = openssl(&["verify", "-x509_strict", "-CAfile"], &[&root, &cert]);
    assert!(verified.contains("OK"), "{verified}");
    let subject = openssl(
        &[
            "x509",
            "-noout",
            "-subject",
            "-nameopt",
            "RFC2253,-esc_msb",
            "-in",
        ],
        &[&cert],
    );
    let sid = st.subscriber_id.clone().unwrap();
    assert!(sid.starts_with("MOICA") && sid.len() == 15, "{sid}");
    assert!(
        subject.contains(&format!("serialNumber={sid}")),
        "{subject}"
    );
    assert!(subject.contains("CN=王小明"), "{subject}");
    assert!(!subject.contains("ra-0001"), "{subject}");
    let serial = st.serial_number.clone().unwrap();
    let x509_serial = openssl(&["x509", "-noout", "-serial", "-in"], &[&cert]);
    assert_eq!(x509_serial.trim().trim_start_matches("serial="), serial);
    assert!(st.chain.as_deref().unwrap().contains(root_pem.trim()));

    // The IssuedCertificate record.
    let issued = h.api::<IssuedCertificate>();
    let record = issued.get(&issued_name(&serial)).await.unwrap();
    assert_eq!(record.spec.certificate, st.certificate.clone().unwrap());
    assert_eq!(record.spec.subscriber_id.as_deref(), Some(sid.as_str()));
    let labels = record.metadata.labels.clone().unwrap();
    assert_eq!(labels["chop.dev/ca"], "root");
    assert_eq!(labels["chop.dev/status"], "Valid");
    assert_eq!(labels["chop.dev/subscriber-id"], sid);

    // Same subscriber, second certificate (encryption): same identifier.
    let csr2 = h.csr("alice-enc");
    h.create_request("alice-enc", "Encryption", "ra-0001", &csr2, true)
        .await;
    h.approve("alice-enc").await;
    let cr2 = h.wait_condition("alice-enc", "Issued", "True", None).await;
    assert_eq!(
        cr2.status.as_ref().unwrap().subscriber_id.as_deref(),
        Some(sid.as_str())
    );
    assert_ne!(
        cr2.status.as_ref().unwrap().serial_number.as_deref(),
        Some(serial.as_str())
    );

    // A malformed request fails precisely, with an Event; a good one beside it issues.
    let bad_csr =
        "-----BEGIN CERTIFICATE REQUEST-----\nTUlJQm9uZ3Vz\n-----END CERTIFICATE REQUEST-----\n";
    h.create_request("broken", "Signature", "ra-0002", bad_csr, true)
        .await;
    let csr3 = h.csr("carol");
    h.create_request("carol", "Signature", "ra-0003", &csr3, true)
        .await;
    h.approve("broken").await;
    h.approve("carol").await;
    let broken = h.wait_condition("broken", "Failed", "True", None).await;
    let failed = broken
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == "Failed")
        .unwrap()
        .clone();
    assert!(
        ["Malformed", "EncodingError"].contains(&failed.reason.as_str()),
        "{failed:?}"
    );
    assert!(
        broken.status.as_ref().unwrap().serial_number.is_none(),
        "no serial burnt for bad input"
    );
    let carol = h.wait_condition("carol", "Issued", "True", None).await;
    assert_ne!(
        carol.status.as_ref().unwrap().subscriber_id.as_deref(),
        Some(sid.as_str())
    );
    let events: Api<Event> = h.api();
    let reason = failed.reason.clone();
    h.wait("a Warning Event for the broken request", 30, || {
        let events = events.clone();
        let reason = reason.clone();
        async move {
            let list = events.list(&ListParams::default()).await.ok()?;
            list.items
                .iter()
                .any(|e| {
                    e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("broken")
                        && e.reason.as_deref() == Some(reason.as_str())
                        && e.type_.as_deref() == Some("Warning")
                })
                .then_some(())
        }
    })
    .await;

    // Deleting the request keeps the CA's record.
    h.api::<CertificateRequest>()
        .delete("alice-sig", &DeleteParams::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        h.api::<CertificateRequest>()
            .get_opt("alice-sig")
            .await
            .unwrap()
            .is_none()
    );
    issued.get(&issued_name(&serial)).await.unwrap();
    let all = issued
        .list(&ListParams::default().labels(SUBSCRIBER_RECORDS))
        .await
        .unwrap();
    assert_eq!(all.items.len(), 3);

    // The CA counts its register: these three and its delegated OCSP
    // responder certificate.
    let cas = h.api::<CertificateAuthority>();
    h.wait("issuedCount = 4", 30, || {
        let cas = cas.clone();
        async move {
            let ca = cas.get("root").await.ok()?;
            (ca.status?.issued_count == Some(4)).then_some(())
        }
    })
    .await;

    // Metrics.
    let body = http_get(h.metrics_port, "/metrics");
    assert!(
        body.contains(
            // alice-sig and carol, each counted once even though the watch
            // delivers the reservation after the issuance finished.
            "chop_certificates_issued_total{ca=\"root\",profile=\"Signature\",result=\"Issued\"} 2\n"
        ),
        "{body}"
    );
    assert!(body.contains("chop_reconcile_duration_seconds"), "{body}");
    assert!(
        body.contains("chop_hsm_operation_duration_seconds"),
        "{body}"
    );
    assert!(http_get(h.metrics_port, "/readyz").starts_with("HTTP/1.1 200"));
    assert!(
        !body.contains(PIN) && !h.logs().contains(PIN),
        "the PIN leaked"
    );

    h.child.stop();
    let Harness { env, .. } = h;
    env.cleanup().await.unwrap();
}

#[tokio::test]
async fn a_crash_after_the_reservation_issues_exactly_once() {
    let mut h = Harness::new().await;
    h.start(true);
    let ca = h.create_ca().await;
    let root_pem = ca.status.as_ref().unwrap().certificate.clone().unwrap();

    let csr = h.csr("dave");
    h.create_request("dave", "Signature", "ra-0042", &csr, true)
        .await;
    h.approve("dave").await;
    // The controller aborts right after writing the reservation.
    h.wait_for_abort("after reserving", 60).await;
    let cr = h.api::<CertificateRequest>().get("dave").await.unwrap();
    let st = cr.status.clone().unwrap();
    let reserved = st
        .serial_number
        .clone()
        .expect("serial reserved before the crash");
    assert!(st.certificate.is_none());
    assert!(st.not_before.is_some() && st.not_after.is_some() && st.subscriber_id.is_some());
    let issued = h.api::<IssuedCertificate>();
    assert!(
        issued
            .list(&ListParams::default().labels(SUBSCRIBER_RECORDS))
            .await
            .unwrap()
            .items
            .is_empty()
    );

    h.start(false);
    let cr = h.wait_condition("dave", "Issued", "True", None).await;
    let st2 = cr.status.clone().unwrap();
    assert_eq!(st2.serial_number.as_deref(), Some(reserved.as_str()));
    assert_eq!(st2.not_before, st.not_before);
    assert_eq!(st2.subscriber_id, st.subscriber_id);
    let all = issued
        .list(&ListParams::default().labels(SUBSCRIBER_RECORDS))
        .await
        .unwrap();
    assert_eq!(all.items.len(), 1, "exactly one IssuedCertificate");
    assert_eq!(
        all.items[0].metadata.name.as_deref(),
        Some(issued_name(&reserved).as_str())
    );
    let cert = h.write("dave.pem", st2.certificate.as_deref().unwrap());
    let root = h.write("root.pem", &root_pem);
    openssl(&["verify", "-x509_strict", "-CAfile"], &[&root, &cert]);
    // The restart did not re-sign the root.
    let ca2 = h.api::<CertificateAuthority>().get("root").await.unwrap();
    assert_eq!(ca2.status.unwrap().certificate.unwrap(), root_pem);
    assert!(
        h.logs()
            .contains("resuming issuance with the reserved serial"),
        "{}",
        h.logs()
    );

    h.child.stop();
    let Harness { env, .. } = h;
    env.cleanup().await.unwrap();
}

#[tokio::test]
async fn waits_and_refusals() {
    let mut h = Harness::new().await;
    h.start(false);

    // keyGeneration Never and no key: KeyNotFound, nothing generated.
    h.create_ca_named("ceremony-pending", "not-generated-yet", "Never")
        .await;
    let cas = h.api::<CertificateAuthority>();
    h.wait("KeyReady=False KeyNotFound", 60, || {
        let cas = cas.clone();
        async move {
            let ca = cas.get("ceremony-pending").await.ok()?;
            ca.status?
                .conditions
                .iter()
                .any(|c| c.type_ == "KeyReady" && c.status == "False" && c.reason == "KeyNotFound")
                .then_some(())
        }
    })
    .await;

    h.create_ca().await;
    // Issuance suspended: an approved, accepted request waits, then issues on resume.
    let suspend = |state: &str| json!({"spec": {"issuance": state}});
    cas.patch(
        "root",
        &PatchParams::default(),
        &Patch::Merge(suspend("Suspended")),
    )
    .await
    .unwrap();
    let csr = h.csr("erin");
    h.create_request("erin", "Signature", "ra-0100", &csr, true)
        .await;
    h.approve("erin").await;
    let erin = h
        .wait_condition("erin", "Issued", "False", Some("IssuanceSuspended"))
        .await;
    assert!(erin.status.unwrap().serial_number.is_none());
    cas.patch(
        "root",
        &PatchParams::default(),
        &Patch::Merge(suspend("Enabled")),
    )
    .await
    .unwrap();
    h.wait_condition("erin", "Issued", "True", None).await;

    // Denied: never issued.
    let csr = h.csr("frank");
    h.create_request("frank", "Signature", "ra-0101", &csr, true)
        .await;
    h.officer_sets("frank", "Denied", "OfficerDenied").await;
    let frank = h
        .wait_condition("frank", "Issued", "False", Some("Denied"))
        .await;
    assert!(frank.status.unwrap().serial_number.is_none());

    // A bare public key when the CA does not accept attested keys.
    let key = h.path("erin.key");
    let spki = Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(spki.status.success());
    let cr: CertificateRequest = serde_json::from_value(json!({
        "apiVersion": "chop.dev/v1alpha1",
        "kind": "CertificateRequest",
        "metadata": {"name": "gina"},
        "spec": {
            "caRef": {"name": "root"},
            "profile": "Signature",
            "subscriber": {"reference": "ra-0102", "commonName": "林美玲"},
            "publicKey": String::from_utf8(spki.stdout).unwrap(),
            "accepted": true
        }
    }))
    .unwrap();
    h.api::<CertificateRequest>()
        .create(&PostParams::default(), &cr)
        .await
        .unwrap();
    h.approve("gina").await;
    h.wait_condition("gina", "Failed", "True", Some("ProfileViolation"))
        .await;

    h.child.stop();
    let Harness { env, .. } = h;
    env.cleanup().await.unwrap();
}

#[tokio::test]
async fn subordinate_ca_signed_by_its_parent() {
    let mut h = Harness::new().await;
    h.start(false);
    let root = h.create_ca().await;
    let root_pem = root.status.unwrap().certificate.unwrap();
    let sub: CertificateAuthority = serde_json::from_value(json!({
        "apiVersion": "chop.dev/v1alpha1",
        "kind": "CertificateAuthority",
        "metadata": {"name": "moica"},
        "spec": {
            "type": "Subordinate",
            "parentRef": {"name": "root"},
            "subject": {"country": "TW", "organization": "行政院", "organizationalUnits": ["內政部憑證管理中心"], "commonName": "MOICA"},
            "hsm": {
                "tokenLabel": "moica",
                "keyLabel": "moica-sub",
                "pinSecretRef": {"name": "hsm-pin", "key": "pin"},
                "keyGeneration": "IfMissing"
            },
            "crlDistributionPoints": ["http://repository.moica.example.tw/crl/moica.crl"],
            "ocspURLs": ["http://ocsp.moica.example.tw"],
            "caIssuersURLs": ["http://repository.moica.example.tw/certs/moica.cer"]
        }
    }))
    .unwrap();
    h.api::<CertificateAuthority>()
        .create(&PostParams::default(), &sub)
        .await
        .unwrap();
    // The root signs a CA certificate only once an officer approved the
    // request the subordinate made for it.
    h.wait_condition(
        "moica-ca-certificate",
        "Issued",
        "False",
        Some("WaitingForApproval"),
    )
    .await;
    h.approve("moica-ca-certificate").await;
    let sub = h.wait_ca_ready("moica").await;
    let st = sub.status.unwrap();
    assert!(
        st.csr
            .as_deref()
            .unwrap()
            .contains("BEGIN CERTIFICATE REQUEST")
    );
    assert_eq!(st.chain.as_deref().map(str::trim), Some(root_pem.trim()));
    let root_file = h.write("root.pem", &root_pem);
    let sub_file = h.write("moica.pem", st.certificate.as_deref().unwrap());
    openssl(
        &["verify", "-x509_strict", "-CAfile"],
        &[&root_file, &sub_file],
    );
    // The root's register holds the subordinate's certificate.
    let record = h
        .api::<IssuedCertificate>()
        .get(&issued_name(st.serial_number.as_deref().unwrap()))
        .await
        .unwrap();
    assert_eq!(record.spec.profile, "SubordinateCA");
    assert_eq!(record.spec.certificate, st.certificate.clone().unwrap());

    // A subscriber certificate from the subordinate verifies up to the root.
    let csr = h.csr("hank");
    let cr: CertificateRequest = serde_json::from_value(json!({
        "apiVersion": "chop.dev/v1alpha1",
        "kind": "CertificateRequest",
        "metadata": {"name": "hank"},
        "spec": {
            "caRef": {"name": "moica"},
            "profile": "Signature",
            "subscriber": {"reference": "ra-0200", "commonName": "陳大文"},
            "csr": csr,
            "accepted": true
        }
    }))
    .unwrap();
    h.api::<CertificateRequest>()
        .create(&PostParams::default(), &cr)
        .await
        .unwrap();
    h.approve("hank").await;
    let hank = h.wait_condition("hank", "Issued", "True", None).await;
    let hst = hank.status.unwrap();
    let cert = h.write("hank.pem", hst.certificate.as_deref().unwrap());
    openssl(
        &["verify", "-x509_strict", "-CAfile"],
        &[&root_file, Path::new("-untrusted"), &sub_file, &cert],
    );
    let chain = hst.chain.unwrap();
    assert!(
        chain.contains(st.certificate.as_deref().unwrap().trim())
            && chain.contains(root_pem.trim())
    );

    h.child.stop();
    let Harness { env, .. } = h;
    env.cleanup().await.unwrap();
}

#[tokio::test]
async fn a_crash_after_the_commit_records_without_re_signing() {
    let mut h = Harness::new().await;
    h.start_with(Some("CHOP_TEST_CRASH_AFTER_COMMIT"));
    h.create_ca().await;
    let csr = h.csr("ivy");
    h.create_request("ivy", "Signature", "ra-0300", &csr, true)
        .await;
    h.approve("ivy").await;
    h.wait_for_abort("after the commit", 60).await;
    let issued = h.api::<IssuedCertificate>();
    let records = issued
        .list(&ListParams::default().labels(SUBSCRIBER_RECORDS))
        .await
        .unwrap()
        .items;
    assert_eq!(records.len(), 1);
    let cr = h.api::<CertificateRequest>().get("ivy").await.unwrap();
    assert!(cr.status.as_ref().unwrap().certificate.is_none());

    h.start(false);
    let cr = h.wait_condition("ivy", "Issued", "True", None).await;
    let st = cr.status.unwrap();
    assert_eq!(
        st.certificate.as_deref(),
        Some(records[0].spec.certificate.as_str())
    );
    assert_eq!(
        issued
            .list(&ListParams::default().labels(SUBSCRIBER_RECORDS))
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    let logs = h.logs();
    assert!(
        logs.contains("found the IssuedCertificate of the reserved serial"),
        "{logs}"
    );
    assert!(
        !logs.contains("resuming issuance with the reserved serial"),
        "re-signed: {logs}"
    );

    h.child.stop();
    let Harness { env, .. } = h;
    env.cleanup().await.unwrap();
}

#[tokio::test]
async fn only_the_leader_signs_and_a_follower_takes_over() {
    let mut h = Harness::new().await;
    let port_a = h.metrics_port;
    h.child.0 = Some(h.spawn("replica-a", port_a, None));
    h.create_ca().await;
    let port_b = free_port();
    let mut b = ChildGuard(Some(h.spawn("replica-b", port_b, None)));
    // Give b time to come up and try the Lease.
    h.wait("replica b serving /readyz", 30, || async move {
        std::net::TcpStream::connect(("127.0.0.1", port_b))
            .ok()
            .map(|_| ())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(http_get(port_a, "/readyz").starts_with("HTTP/1.1 200"));
    assert!(http_get(port_b, "/readyz").starts_with("HTTP/1.1 503"));

    // The leader dies; the follower takes over after the Lease lapses (15 s).
    h.child.stop();
    let csr = h.csr("jade");
    h.create_request("jade", "Signature", "ra-0400", &csr, true)
        .await;
    h.approve("jade").await;
    let cr = h.wait_condition("jade", "Issued", "True", None).await;
    assert!(cr.status.unwrap().certificate.is_some());
    assert!(http_get(port_b, "/readyz").starts_with("HTTP/1.1 200"));
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> = h.api();
    let lease = leases.get("chop-controller").await.unwrap();
    assert_eq!(
        lease.spec.unwrap().holder_identity.as_deref(),
        Some("replica-b")
    );

    b.stop();
    let Harness { env, .. } = h;
    env.cleanup().await.unwrap();
}
