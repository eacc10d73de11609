//! End to end: CRLSchedule against a real kube-apiserver, the real
//! `chop-controller` binary and SoftHSM2; CRLs checked with the `openssl` CLI.
//!
//! - `publishes_verifies_and_reissues_on_revocation`: a CA and a CRLSchedule →
//!   CRL 1 is published as ConfigMaps, reassembled by `publish::read_crl`,
//!   verified by `openssl crl -CAfile`; nextUpdate − thisUpdate = validity. A
//!   certificate issued through the normal request flow is marked revoked
//!   (the test patches its IssuedCertificate as the admin, standing in for the
//!   Revocation reconciler) → CRL 2 within seconds lists it with keyCompromise,
//!   and `openssl verify -crl_check` says "certificate revoked". A hold enters
//!   CRL 3 as certificateHold and resuming removes it from CRL 4; the chunks
//!   of generations before the previous one are deleted. Metrics and the
//!   CRLPublished Event. Bad input: a schedule for an unknown CA (`UnknownCA` +
//!   Warning Event), a second schedule for the same CA (`DuplicateSchedule`).
//!   A >900 KiB blob is published and read back in chunks.
//! - `crl_numbers_survive_restarts_and_crashes`: after a restart the next
//!   number is greater; with `CHOP_TEST_CRASH_AFTER_CRL_RESERVE=1` the process
//!   aborts after reserving, and after a restart the published number is
//!   greater than the reserved one (never reused). Then a Revocation through
//!   the real Revocation reconciler reaches the next CRL with its reason and
//!   invalidity date.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::time::{Duration, Instant};

use controller::publish;
use crds::{CRLSchedule, IssuedCertificate};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

mod common;
use common::*;

async fn create_schedule(h: &Harness, name: &str, ca: &str) {
    let s: CRLSchedule = serde_json::from_value(json!({
        "apiVersion": "chop.dev/v1alpha1",
        "kind": "CRLSchedule",
        "metadata": {"name": name},
        "spec": {"caRef": {"name": ca}, "interval": "1h", "validity": "36h", "overlap": "12h"}
    }))
    .unwrap();
    h.api::<CRLSchedule>()
        .create(&PostParams::default(), &s)
        .await
        .unwrap();
}

/// Wait until the schedule has published a CRL numbered at least `min`.
async fn wait_published(h: &Harness, name: &str, min: i64, secs: u64) -> CRLSchedule {
    let api = h.api::<CRLSchedule>();
    h.wait(&format!("{name}: CRL >= {min} published"), secs, || {
        let api = api.clone();
        async move {
            let s = api.get(name).await.ok()?;
            let st = s.status.as_ref()?;
            let published = st
                .conditions
                .iter()
                .any(|c| c.type_ == "Published" && c.status == "True");
            (published && st.crl_number? >= min).then_some(s)
        }
    })
    .await
}

async fn wait_ready_reason(h: &Harness, name: &str, reason: &str) -> CRLSchedule {
    let api = h.api::<CRLSchedule>();
    h.wait(&format!("{name}: Ready=False {reason}"), 60, || {
        let api = api.clone();
        async move {
            let s = api.get(name).await.ok()?;
            let ok = s
                .status
                .as_ref()?
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "False" && c.reason == reason);
            ok.then_some(s)
        }
    })
    .await
}

/// Stand in for the Revocation/Suspension reconcilers: the admin writes the
/// record's status and `chop.dev/status` label (one patch: no status subresource).
async fn set_state(h: &Harness, record: &str, state: &str, reason: Option<&str>) {
    let status = match reason {
        Some(r) => {
            json!({"state": state, "revokedAt": jiff::Timestamp::now().to_string(), "reason": r})
        }
        None => json!({"state": state, "revokedAt": null, "reason": null}),
    };
    h.api::<IssuedCertificate>()
        .patch(
            record,
            &PatchParams::default(),
            &Patch::Merge(json!({
                "metadata": {"labels": {"chop.dev/status": state}},
                "status": status,
            })),
        )
        .await
        .unwrap();
}

/// `openssl crl -inform DER -in crl -CAfile root -noout`: stderr/stdout text.
fn openssl_crl_verify(crl: &std::path::Path, root: &std::path::Path) -> String {
    let (ok, text) = run_text(
        Command::new("openssl")
            .args(["crl", "-inform", "DER", "-noout", "-in"])
            .arg(crl)
            .arg("-CAfile")
            .arg(root),
    );
    assert!(ok, "{text}");
    text
}

#[tokio::test]
async fn publishes_verifies_and_reissues_on_revocation() {
    let mut h = Harness::new().await;
    let (_, root) = h.start_with_root("root.pem").await;

    create_schedule(&h, "moica", "root").await;
    let s = wait_published(&h, "moica", 1, 60).await;
    let st = s.status.clone().unwrap();
    assert_eq!(st.crl_number, Some(1));
    assert_eq!(st.reserved_crl_number, Some(1));
    assert_eq!(st.entries, Some(0));
    let this = st.this_update.clone().unwrap().0;
    let next = st.next_update.clone().unwrap().0;
    assert_eq!(next.as_second() - this.as_second(), 36 * 3600);
    assert!(
        st.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    );

    // The CA shows when its next regular CRL is due (thisUpdate + interval).
    let api = h.api::<crds::CertificateAuthority>();
    h.wait("CA status.nextCRLTime", 30, || {
        let api = api.clone();
        async move {
            let t = api.get("root").await.ok()?.status?.next_crl_time?;
            (t.0.as_second() == this.as_second() + 3600).then_some(())
        }
    })
    .await;
    let client = h.env.admin();
    let der = publish::read_crl(&client, h.ns(), "moica").await.unwrap();
    assert_eq!(Some(der.len() as i64), st.size_bytes);
    let parsed = ca::crl::parse_crl(&der).unwrap();
    assert_eq!(parsed.number, Some(1));
    assert_eq!(
        parsed
            .next_update
            .unwrap()
            .duration_since(parsed.this_update)
            .unwrap(),
        Duration::from_secs(36 * 3600)
    );
    let crl1 = h.path("crl1.der");
    std::fs::write(&crl1, &der).unwrap();
    let out = openssl_crl_verify(&crl1, &root);
    assert!(out.contains("verify OK"), "{out}");
    // The manifest and its labels.
    let manifest = h.api::<ConfigMap>().get("moica-crl").await.unwrap();
    let labels = manifest.metadata.labels.clone().unwrap();
    assert_eq!(labels["chop.dev/crl-schedule"], "moica");
    assert_eq!(labels["chop.dev/ca"], "root");
    assert_eq!(labels["chop.dev/crl-number"], "1");
    assert_eq!(manifest.data.unwrap()["number"], "1");

    // Issue a certificate through the normal flow, then revoke it by patching
    // its record (standing in for the Revocation reconciler).
    let csr = h.csr("erin");
    h.create_request("erin", "Signature", "ra-0100", &csr, true)
        .await;
    h.approve("erin").await;
    let cr = h.wait_condition("erin", "Issued", "True", None).await;
    let cst = cr.status.unwrap();
    let serial = cst.serial_number.clone().unwrap();
    let cert = h.write("erin.pem", cst.certificate.as_deref().unwrap());
    let issued = h.api::<IssuedCertificate>();
    let record = issued_name(&serial);
    let revoked_at = jiff::Timestamp::now();
    let started = Instant::now();
    issued
        .patch(
            &record,
            &PatchParams::default(),
            &Patch::Merge(json!({
                "metadata": {"labels": {"chop.dev/status": "Revoked"}},
                "status": {
                    "state": "Revoked",
                    "revokedAt": revoked_at.to_string(),
                    "reason": "keyCompromise",
                },
            })),
        )
        .await
        .unwrap();
    let s = wait_published(&h, "moica", 2, 30).await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "CRL 2 took {took:?}");
    let st = s.status.clone().unwrap();
    assert_eq!(st.crl_number, Some(2));
    assert_eq!(st.entries, Some(1));
    let der = publish::read_crl(&client, h.ns(), "moica").await.unwrap();
    let crl2 = h.path("crl2.der");
    std::fs::write(&crl2, &der).unwrap();
    assert!(openssl_crl_verify(&crl2, &root).contains("verify OK"));
    let text = openssl(
        &["crl", "-inform", "DER", "-noout", "-text", "-in"],
        &[&crl2],
    );
    assert!(text.contains(&serial), "{serial} not in\n{text}");
    assert!(text.contains("Key Compromise"), "{text}");
    let (ok, text) = verify_with_crl(&h, "crl2", &der, &root, &cert);
    assert!(!ok, "{text}");
    assert!(text.contains("certificate revoked"), "{text}");
    // A hold (suspension) enters the next CRL as certificateHold; resuming
    // takes it out again (CPS §4.9.13–§4.9.17).
    let csr = h.csr("frank");
    h.create_request("frank", "Signature", "ra-0101", &csr, true)
        .await;
    h.approve("frank").await;
    let cr = h.wait_condition("frank", "Issued", "True", None).await;
    let held_serial = cr.status.unwrap().serial_number.unwrap();
    let held = issued_name(&held_serial);
    set_state(&h, &held, "Held", Some("certificateHold")).await;
    let s = wait_published(&h, "moica", 3, 30).await;
    assert_eq!(s.status.unwrap().entries, Some(2));
    let der = publish::read_crl(&client, h.ns(), "moica").await.unwrap();
    let crl3 = h.path("crl3.der");
    std::fs::write(&crl3, &der).unwrap();
    let text = openssl(
        &["crl", "-inform", "DER", "-noout", "-text", "-in"],
        &[&crl3],
    );
    assert!(text.contains(&held_serial), "{text}");
    assert!(text.contains("Certificate Hold"), "{text}");
    set_state(&h, &held, "Valid", None).await;
    let s = wait_published(&h, "moica", 4, 30).await;
    assert_eq!(s.status.unwrap().entries, Some(1));
    let der = publish::read_crl(&client, h.ns(), "moica").await.unwrap();
    let parsed = ca::crl::parse_crl(&der).unwrap();
    assert_eq!(parsed.entries.len(), 1);
    assert_eq!(parsed.entries[0].serial.to_hex(), serial);

    // Older generations: the previous one is kept, nothing older.
    let chunks = h
        .api::<ConfigMap>()
        .list(&ListParams::default().labels("chop.dev/crl-schedule=moica,chop.dev/crl-chunk"))
        .await
        .unwrap();
    let mut numbers: Vec<String> = chunks
        .items
        .iter()
        .map(|c| c.metadata.labels.as_ref().unwrap()["chop.dev/crl-number"].clone())
        .collect();
    numbers.sort();
    assert_eq!(numbers, ["3", "4"]);

    // Metrics and the Event.
    let metrics = http_get(h.metrics_port, "/metrics");
    assert!(
        metrics.contains("chop_crl_number{ca=\"root\"} 4"),
        "{metrics}"
    );
    assert!(metrics.contains("chop_crl_entries{ca=\"root\"} 1"));
    assert!(metrics.contains("chop_crl_size_bytes{ca=\"root\"}"));
    assert!(metrics.contains("chop_crl_next_update_timestamp_seconds{ca=\"root\"}"));
    let events = h.api::<Event>();
    h.wait("a CRLPublished Event", 30, || {
        let events = events.clone();
        async move {
            let list = events.list(&ListParams::default()).await.ok()?;
            list.items
                .iter()
                .any(|e| {
                    e.reason.as_deref() == Some("CRLPublished")
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("moica")
                        && e.note.as_deref().is_some_and(|n| n.contains("entries"))
                })
                .then_some(())
        }
    })
    .await;

    // Bad input: unknown CA; a second schedule for the same CA.
    create_schedule(&h, "orphan", "no-such-ca").await;
    wait_ready_reason(&h, "orphan", "UnknownCA").await;
    h.wait("a UnknownCA Warning Event", 30, || {
        let events = events.clone();
        async move {
            let list = events.list(&ListParams::default()).await.ok()?;
            list.items
                .iter()
                .any(|e| {
                    e.reason.as_deref() == Some("UnknownCA")
                        && e.type_.as_deref() == Some("Warning")
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("orphan")
                })
                .then_some(())
        }
    })
    .await;
    create_schedule(&h, "second", "root").await;
    let dup = wait_ready_reason(&h, "second", "DuplicateSchedule").await;
    assert!(dup.status.unwrap().crl_number.is_none());
    assert!(
        h.api::<ConfigMap>()
            .get_opt("second-crl")
            .await
            .unwrap()
            .is_none()
    );

    // A blob over the chunk size is published in chunks and read back intact.
    let blob: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let manifest = publish::Manifest::of("root", 77, &blob, "t".into(), "n".into());
    assert_eq!(manifest.chunks, 2);
    let p = publish::Publication {
        namespace: h.ns(),
        schedule: "big",
        owner: None,
        manifest,
    };
    publish::publish(&client, &p, &blob).await.unwrap();
    assert_eq!(
        publish::read_crl(&client, h.ns(), "big").await.unwrap(),
        blob
    );
    // A torn publication is refused: tamper with a chunk.
    h.api::<ConfigMap>()
        .patch(
            "big-crl-77-1",
            &PatchParams::default(),
            &Patch::Merge(json!({"binaryData": {"chunk": "AAAA"}})),
        )
        .await
        .unwrap();
    let e = publish::read_crl(&client, h.ns(), "big").await.unwrap_err();
    assert!(e.to_string().contains("big-crl"), "{e}");
}

#[tokio::test]
async fn crl_numbers_survive_restarts_and_crashes() {
    let mut h = Harness::new().await;
    h.start(false);
    h.create_ca().await;
    create_schedule(&h, "moica", "root").await;
    wait_published(&h, "moica", 1, 60).await;

    // Restart, then a spec change makes the next CRL due: a higher number.
    h.child.stop();
    h.start(false);
    let api = h.api::<CRLSchedule>();
    api.patch(
        "moica",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"interval": "2h"}})),
    )
    .await
    .unwrap();
    let s = wait_published(&h, "moica", 2, 120).await;
    assert_eq!(s.status.unwrap().crl_number, Some(2));

    // Crash right after reserving number 3.
    h.child.stop();
    h.start_with(Some("CHOP_TEST_CRASH_AFTER_CRL_RESERVE"));
    api.patch(
        "moica",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"interval": "3h"}})),
    )
    .await
    .unwrap();
    h.wait_for_abort("after reserving", 120).await;
    let st = api.get("moica").await.unwrap().status.unwrap();
    assert_eq!(st.reserved_crl_number, Some(3));
    assert_eq!(st.crl_number, Some(2));
    let client = h.env.admin();
    let der = publish::read_crl(&client, h.ns(), "moica").await.unwrap();
    assert_eq!(ca::crl::parse_crl(&der).unwrap().number, Some(2));

    // After the restart the reserved number is skipped, never reused.
    h.start(false);
    let s = wait_published(&h, "moica", 3, 120).await;
    let st = s.status.unwrap();
    assert_eq!(st.crl_number, Some(4), "{st:?}");
    assert_eq!(st.reserved_crl_number, Some(4));
    let der = publish::read_crl(&client, h.ns(), "moica").await.unwrap();
    assert_eq!(ca::crl::parse_crl(&der).unwrap().number, Some(4));
    assert!(h.logs().contains("InterruptedAttempt"), "{}", h.logs());

    // Through the real Revocation reconciler: a Revocation → the next CRL
    // lists the certificate with the reason and invalidity date it recorded.
    let csr = h.csr("gina");
    h.create_request("gina", "Signature", "ra-0200", &csr, true)
        .await;
    h.approve("gina").await;
    let cr = h.wait_condition("gina", "Issued", "True", None).await;
    let serial = cr.status.unwrap().serial_number.unwrap();
    let revocation: crds::Revocation = serde_json::from_value(json!({
        "apiVersion": "chop.dev/v1alpha1", "kind": "Revocation",
        "metadata": {"name": "gina-gone"},
        "spec": {"caRef": {"name": "root"}, "certificateRequestRef": {"name": "gina"},
                 "reason": "cessationOfOperation", "requester": "Subscriber",
                 "invalidityDate": "2026-01-02T03:04:05Z"}
    }))
    .unwrap();
    h.api::<crds::Revocation>()
        .create(&PostParams::default(), &revocation)
        .await
        .unwrap();
    let s = wait_published(&h, "moica", 5, 60).await;
    assert_eq!(s.status.unwrap().entries, Some(1));
    let der = publish::read_crl(&client, h.ns(), "moica").await.unwrap();
    let parsed = ca::crl::parse_crl(&der).unwrap();
    assert_eq!(parsed.entries.len(), 1);
    assert_eq!(parsed.entries[0].serial.to_hex(), serial);
    assert_eq!(
        parsed.entries[0].reason,
        Some(ca::revocation::Reason::CessationOfOperation)
    );
    assert!(parsed.entries[0].invalidity_date.is_some());
}
