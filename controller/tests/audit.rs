//! End to end: the controller's audit trail (CPS §5.4) on a real kube-apiserver
//! with the real `chop-controller` binary, its audit key in SoftHSM2.
//!
//! - `journey`: a CA, a request by an RA user, an officer's approval, the
//!   applicant's acceptance, issuance, a hold and its resumption, revocation, a
//!   CRL → the trail (read from the API server) verifies with `chop_audit`,
//!   holds each event with the right users, and each intent record precedes its
//!   effect. Every write names someone else as field manager and forges the
//!   stamp of who acted: the trail names the authenticated users all the same.
//! - `fails_closed_while_the_trail_is_unwritable`: the controller loses the
//!   right to create AuditSegments → an approved request waits with
//!   `Issued=False AuditUnavailable` (condition, Event, `chop_audit_writable 0`)
//!   and nothing is signed, and a Revocation waits (`Applied=False
//!   AuditUnavailable`) with the certificate still Valid; the right comes back
//!   → it is issued and the other revoked, the trail
//!   verifies without a gap, with exactly one `certificate.issue` record for it
//!   and an `audit.resumed` record.
//! - `deleting_a_segment_is_recorded_as_tampering`: the cluster admin (no
//!   policy in the way) deletes a committed segment → the controller records
//!   `audit.tamper` naming it, counts `chop_audit_tamper_detected_total` and
//!   publishes a Warning Event `AuditTamperDetected` on the segment.
//! - `a_crash_after_a_commit_continues_the_chain`: the controller aborts right
//!   after committing a certificate; the restarted controller continues the
//!   same trail (one `audit.key`, contiguous segments, it verifies); then a
//!   SIGTERM stops it gracefully and `controller.stop` is the last record.
//! - `segments_past_retention_are_labelled_then_pruned_without_an_alarm`: the
//!   controller labels segments past retention; pruning them after an export
//!   raises no tamper alarm and the trail still proves it extends the export.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use crds::AuditSegment;
use crds::audit_segment::AuditRecord;
use crds::{CertificateRequest, IssuedCertificate};
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::rbac::v1::{ClusterRole, RoleBinding};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

mod common;
use common::*;

/// The trail's segments in index order, read from the API server.
async fn segments(h: &Harness) -> Vec<AuditSegment> {
    let mut s = h
        .api::<AuditSegment>()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    s.sort_by_key(|s| s.spec.index);
    s
}

/// Verify the trail with the audit key the controller published, and check
/// that sequences and segment indexes have no gap; its records.
async fn verified_records(h: &Harness) -> Vec<AuditRecord> {
    let segs = segments(h).await;
    assert!(!segs.is_empty(), "no audit segment");
    for (i, s) in segs.iter().enumerate() {
        assert_eq!(s.spec.index, i as u64, "segment indexes have a gap");
    }
    let records: Vec<AuditRecord> = segs
        .iter()
        .flat_map(|s| s.spec.records.iter().cloned())
        .collect();
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.sequence, i as u64, "record sequences have a gap");
    }
    assert_eq!(records[0].event, "audit.key");
    verify_trail(h, &segs).await;
    records
}

async fn wait_records(
    h: &Harness,
    what: &str,
    f: impl Fn(&[AuditRecord]) -> bool,
) -> Vec<AuditRecord> {
    h.wait(what, 30, || async {
        let recs: Vec<AuditRecord> = segments(h)
            .await
            .iter()
            .flat_map(|s| s.spec.records.iter().cloned())
            .collect();
        f(&recs).then_some(recs)
    })
    .await
}

/// Verify the trail with `chop_audit::verify_named` against the audit key the
/// controller published (ConfigMap chop-audit-key).
async fn verify_trail(h: &Harness, segs: &[AuditSegment]) {
    use k8s_openapi::api::core::v1::ConfigMap;
    let cm = h.api::<ConfigMap>().get("chop-audit-key").await.unwrap();
    let data = cm.data.unwrap();
    let spki = chop_audit::key::spki_from_pem(&data["audit-key.pem"]).unwrap();
    assert_eq!(chop_audit::key::key_id(&spki), data["key-id"]);
    let named: Vec<(String, crds::AuditSegmentSpec)> = segs
        .iter()
        .map(|s| (s.metadata.name.clone().unwrap(), s.spec.clone()))
        .collect();
    if let Err(p) = chop_audit::verify::verify_named(&named, &spki) {
        panic!("the trail does not verify: {p}");
    }
}

fn about<'a>(records: &'a [AuditRecord], event: &str, name: &str) -> Vec<&'a AuditRecord> {
    records
        .iter()
        .filter(|r| r.event == event && r.object.as_ref().is_some_and(|o| o.name == name))
        .collect()
}

fn user_of<'a>(r: &'a AuditRecord, role: &str) -> Option<&'a str> {
    r.users
        .iter()
        .find(|u| u.role == role)
        .map(|u| u.user.as_str())
}

fn one<'a>(records: &'a [AuditRecord], event: &str, name: &str) -> &'a AuditRecord {
    let found = about(records, event, name);
    assert_eq!(found.len(), 1, "{event} of {name}: {found:#?}");
    found[0]
}

fn metric(h: &Harness, name: &str) -> Option<f64> {
    http_get(h.metrics_port, "/metrics")
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} "))?.trim().parse().ok())
}

#[tokio::test]
async fn journey() {
    use crds::{CRLSchedule, Revocation, Suspension};
    let mut h = Harness::new().await;
    h.install_policies().await;
    h.start(false);
    h.create_ca().await;
    let ns = h.ns().to_string();
    let ra = h.ra_user("ra-alice").await;
    let officer = h.user_with_role("officer-bob", "chop:officer").await;
    let as_ra = |m: &str| PostParams {
        field_manager: Some(m.to_string()),
        ..PostParams::default()
    };

    // Every write below names someone else as its field manager (a name the
    // client chooses) and forges the stamp of who acted: the trail must name
    // the user the API server authenticated all the same.
    const FORGED: &str = "officer-2";
    let forged_by = |key: &str| json!({"annotations": {key: FORGED}});

    // Request (RA), approval (officer), acceptance (applicant via the RA).
    let csr = h.csr("j");
    let mut body = request_body("journey", "Signature", "ref-journey", &csr, false);
    body.metadata.annotations =
        Some([("chop.dev/requested-by".to_owned(), FORGED.to_owned())].into());
    Api::<CertificateRequest>::namespaced(ra.clone(), &ns)
        .create(&as_ra(FORGED), &body)
        .await
        .unwrap();
    let approval = json!({"apiVersion": "chop.dev/v1alpha1", "kind": "CertificateRequest",
        "status": {"decidedBy": FORGED,
            "conditions": [{"type": "Approved", "status": "True", "reason": "OfficerApproved",
            "message": "identity checked in person", "lastTransitionTime": jiff::Timestamp::now().to_string()}]}});
    let approved = Api::<CertificateRequest>::namespaced(officer.clone(), &ns)
        .patch_status(
            "journey",
            &PatchParams::apply(FORGED).force(),
            &Patch::Apply(&approval),
        )
        .await
        .unwrap();
    assert_eq!(
        approved.status.unwrap().decided_by.as_deref(),
        Some("officer-bob")
    );
    Api::<CertificateRequest>::namespaced(ra.clone(), &ns)
        .patch(
            "journey",
            &PatchParams {
                field_manager: Some(FORGED.into()),
                ..PatchParams::default()
            },
            &Patch::Merge(
                json!({"metadata": forged_by("chop.dev/accepted-by"), "spec": {"accepted": true}}),
            ),
        )
        .await
        .unwrap();
    let cr = h
        .wait_condition("journey", "Issued", "True", Some("Issued"))
        .await;
    let status = cr.status.unwrap();
    // The controller's status writes since kept the stamp.
    assert_eq!(status.decided_by.as_deref(), Some("officer-bob"));
    let serial = status.serial_number.unwrap();
    let issued = record(&h, &serial).await;

    // Hold and resume, then revoke (all asked by the RA, lifted by the officer).
    let hold: Suspension = serde_json::from_value(json!({"apiVersion": "chop.dev/v1alpha1", "kind": "Suspension",
        "metadata": {"name": "hold-1", "annotations": {"chop.dev/requested-by": FORGED}},
        "spec": {"caRef": {"name": "root"}, "certificateRequestRef": {"name": "journey"}, "requester": "Subscriber"}}))
    .unwrap();
    Api::<Suspension>::namespaced(ra.clone(), &ns)
        .create(&as_ra(FORGED), &hold)
        .await
        .unwrap();
    wait_record(&h, &serial, "Held").await;
    Api::<Suspension>::namespaced(officer.clone(), &ns)
        .patch(
            "hold-1",
            &PatchParams {
                field_manager: Some(FORGED.into()),
                ..PatchParams::default()
            },
            &Patch::Merge(
                json!({"metadata": forged_by("chop.dev/resumed-by"), "spec": {"resumed": true}}),
            ),
        )
        .await
        .unwrap();
    wait_record(&h, &serial, "Valid").await;
    let rev: Revocation = serde_json::from_value(
        json!({"apiVersion": "chop.dev/v1alpha1", "kind": "Revocation",
        "metadata": {"name": "rev-1", "annotations": {"chop.dev/requested-by": FORGED}},
        "spec": {"caRef": {"name": "root"}, "certificateRequestRef": {"name": "journey"},
                 "reason": "keyCompromise", "requester": "Subscriber"}}),
    )
    .unwrap();
    Api::<Revocation>::namespaced(ra.clone(), &ns)
        .create(&as_ra(FORGED), &rev)
        .await
        .unwrap();
    wait_record(&h, &serial, "Revoked").await;

    // A CRL.
    let sched: CRLSchedule = serde_json::from_value(json!({"apiVersion": "chop.dev/v1alpha1", "kind": "CRLSchedule",
        "metadata": {"name": "root-crl"},
        "spec": {"caRef": {"name": "root"}, "interval": "1h", "validity": "36h", "overlap": "12h"}}))
    .unwrap();
    h.api::<CRLSchedule>()
        .create(&PostParams::default(), &sched)
        .await
        .unwrap();
    let records = wait_records(&h, "crl.published", |r| {
        r.iter().any(|r| r.event == "crl.published")
    })
    .await;
    drop(records);
    let records = verified_records(&h).await;

    // The controller's term and the CA's spec as it acted on it.
    assert!(records.iter().any(|r| r.event == "controller.leading"));
    let changed = one(&records, "ca.changed", "root");
    assert_eq!(changed.details["generation"], "1");
    assert_eq!(changed.details["issuance"], "Enabled");
    // Created by the plane's admin: the stamp of chop-changed-by.
    assert_eq!(user_of(changed, "changedBy"), Some("admin"), "{changed:?}");
    // The root's self-signature, recorded before it was made.
    let root = one(&records, "ca.certificate", "root");
    assert_eq!(root.details["purpose"], "root-self-sign");
    assert!(root.key.is_some());
    assert!(changed.sequence < root.sequence);
    // The request's story, with the users the API server knows.
    let created = one(&records, "request.created", "journey");
    assert_eq!(user_of(created, "requestedBy"), Some("ra-alice"));
    assert_eq!(created.details["subscriberReference"], "ref-journey");
    let approved = one(&records, "request.approved", "journey");
    assert_eq!(user_of(approved, "approvedBy"), Some("officer-bob"));
    let accepted = one(&records, "request.accepted", "journey");
    assert_eq!(user_of(accepted, "acceptedBy"), Some("ra-alice"));
    let intent = one(&records, "certificate.issue", "journey");
    assert_eq!(intent.outcome, "intent");
    assert_eq!(intent.serial.as_deref(), Some(serial.as_str()));
    assert_eq!(intent.ca.as_deref(), Some(format!("{ns}/root").as_str()));
    assert_eq!(intent.details["purpose"], "certificate");
    assert_eq!(user_of(intent, "requestedBy"), Some("ra-alice"));
    assert_eq!(user_of(intent, "approvedBy"), Some("officer-bob"));
    assert_eq!(user_of(intent, "acceptedBy"), Some("ra-alice"));
    assert!(created.sequence < intent.sequence && approved.sequence < intent.sequence);
    let done = one(&records, "certificate.issued", "journey");
    assert!(intent.sequence < done.sequence);
    // The intent's segment was signed before the certificate's record existed.
    let segs = segments(&h).await;
    let seg = segs
        .iter()
        .find(|s| s.spec.records.iter().any(|r| r.sequence == intent.sequence))
        .unwrap();
    let signed_at: jiff::Timestamp = seg.spec.signed_at.parse().unwrap();
    let created_at = issued.metadata.creation_timestamp.unwrap().0;
    assert!(
        signed_at.as_second() <= created_at.as_second(),
        "{signed_at} > {created_at}"
    );
    let hold = one(&records, "suspension.hold", "hold-1");
    assert_eq!(hold.serial.as_deref(), Some(serial.as_str()));
    assert_eq!(user_of(hold, "heldBy"), Some("ra-alice"));
    let resume = one(&records, "suspension.resume", "hold-1");
    assert_eq!(user_of(resume, "resumedBy"), Some("officer-bob"));
    let revoke = one(&records, "revocation.apply", "rev-1");
    assert_eq!(revoke.reason.as_deref(), Some("keyCompromise"));
    assert_eq!(user_of(revoke, "revokedBy"), Some("ra-alice"));
    assert!(done.sequence < hold.sequence && hold.sequence < resume.sequence);
    assert!(resume.sequence < revoke.sequence);
    let crl = one(&records, "crl.sign", "root-crl");
    assert_eq!(crl.details["purpose"], "crl");
    assert_eq!(crl.details["entries"], "1");
    let published = one(&records, "crl.published", "root-crl");
    assert_eq!(published.crl_number, crl.crl_number);
    assert!(revoke.sequence < crl.sequence && crl.sequence < published.sequence);
    // No PIN anywhere in the trail, and nothing of the forged names.
    let text = serde_json::to_string(&records).unwrap();
    assert!(!text.contains(PIN));
    assert!(!text.contains(FORGED), "a forged name is in the trail");
}

#[tokio::test]
async fn fails_closed_while_the_trail_is_unwritable() {
    let mut h = Harness::new().await;
    h.start(false);
    h.create_ca().await;
    let csr = h.csr("a");
    issue(&h, "before", "ref-before", &csr).await;
    wait_records(&h, "the first certificate's record", |r| {
        !about(r, "certificate.issue", "before").is_empty()
    })
    .await;

    // The controller loses `create` on auditsegments (and keeps the rest).
    let ns = h.ns().to_string();
    let admin = h.env.admin();
    let shipped: ClusterRole = serde_saphyr::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../manifests/rbac/chop-controller.yaml"),
        )
        .unwrap(),
    )
    .unwrap();
    let mut crippled = shipped.clone();
    let crippled_name = format!("chop-controller-no-audit-{ns}");
    crippled.metadata = kube::api::ObjectMeta {
        name: Some(crippled_name.clone()),
        ..Default::default()
    };
    for rule in crippled.rules.as_mut().unwrap() {
        if rule
            .resources
            .as_ref()
            .is_some_and(|r| r.iter().any(|r| r == "auditsegments"))
        {
            rule.verbs.retain(|v| v != "create");
        }
    }
    Api::<ClusterRole>::all(admin.clone())
        .create(&PostParams::default(), &crippled)
        .await
        .unwrap();
    let bindings: Api<RoleBinding> = Api::namespaced(admin.clone(), &ns);
    let binding = |name: &str, role: &str| -> RoleBinding {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "chop-controller"}]
        }))
        .unwrap()
    };
    bindings
        .create(&PostParams::default(), &binding("no-audit", &crippled_name))
        .await
        .unwrap();
    bindings
        .delete("chop-controller", &DeleteParams::default())
        .await
        .unwrap();
    let sar: Api<SubjectAccessReview> = Api::all(admin.clone());
    let review: SubjectAccessReview = serde_json::from_value(json!({
        "spec": {"user": "chop-controller", "resourceAttributes": {
            "namespace": ns, "verb": "create", "group": "chop.dev", "resource": "auditsegments"}}
    }))
    .unwrap();
    h.wait("the controller may no longer create segments", 30, || {
        let (sar, review) = (sar.clone(), review.clone());
        async move {
            let r = sar.create(&PostParams::default(), &review).await.ok()?;
            (!r.status?.allowed).then_some(())
        }
    })
    .await;
    let before = segments(&h).await.len();

    // An approved, accepted request waits, and nothing is signed.
    let csr_b = h.csr("b");
    h.create_request("blocked", "Signature", "ref-blocked", &csr_b, true)
        .await;
    h.approve("blocked").await;
    let cr = h
        .wait_condition("blocked", "Issued", "False", Some("AuditUnavailable"))
        .await;
    let msg = &cr
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == "Issued")
        .unwrap()
        .message;
    assert!(msg.contains("nothing was signed"), "{msg}");
    warning_event(&h, "blocked", "AuditUnavailable").await;
    assert_eq!(metric(&h, "chop_audit_writable"), Some(0.0));
    // Long enough for the request to be retried (dedup of its record).
    tokio::time::sleep(Duration::from_secs(12)).await;
    let cr = h.api::<CertificateRequest>().get("blocked").await.unwrap();
    let st = cr.status.unwrap();
    assert!(
        st.certificate.is_none(),
        "signed while the trail was unwritable"
    );
    assert!(records_of(&h, "blocked").await.is_empty());
    let n_issued = h
        .api::<IssuedCertificate>()
        .list(&ListParams::default().labels(SUBSCRIBER_RECORDS))
        .await
        .unwrap()
        .items
        .len();
    assert_eq!(n_issued, 1, "a certificate was signed without its record");
    // A revocation of the first certificate waits too: its state is unchanged.
    revoke(
        &h,
        "rev-blocked",
        json!({"certificateRequestRef": {"name": "before"}}),
        "keyCompromise",
    )
    .await;
    let revocations = h.api::<crds::Revocation>();
    h.wait("Revocation Applied=False AuditUnavailable", 30, || {
        let api = revocations.clone();
        async move {
            let r = api.get("rev-blocked").await.ok()?;
            r.status?
                .conditions
                .iter()
                .any(|c| {
                    c.type_ == "Applied" && c.status == "False" && c.reason == "AuditUnavailable"
                })
                .then_some(())
        }
    })
    .await;
    let first = h.api::<CertificateRequest>().get("before").await.unwrap();
    let first_serial = first.status.unwrap().serial_number.unwrap();
    assert_eq!(
        state(&record(&h, &first_serial).await),
        (None, "Valid".to_string()),
        "revoked while the trail was unwritable"
    );
    assert_eq!(segments(&h).await.len(), before);

    // The right comes back: the request is issued, and recorded once.
    bindings
        .create(
            &PostParams::default(),
            &binding("chop-controller", "chop-controller"),
        )
        .await
        .unwrap();
    bindings
        .delete("no-audit", &DeleteParams::default())
        .await
        .unwrap();
    let cr = h
        .wait_condition("blocked", "Issued", "True", Some("Issued"))
        .await;
    let serial = cr.status.unwrap().serial_number.unwrap();
    wait_records(&h, "audit.resumed", |r| {
        r.iter().any(|r| r.event == "audit.resumed")
    })
    .await;
    wait_record(&h, &first_serial, "Revoked").await;
    let records = wait_records(&h, "revocation.apply", |r| {
        !about(r, "revocation.apply", "rev-blocked").is_empty()
    })
    .await;
    drop(records);
    let records = verified_records(&h).await;
    // Once, though the Revocation was retried while it waited.
    let revoked: Vec<&str> = about(&records, "revocation.apply", "rev-blocked")
        .iter()
        .map(|r| r.serial.as_deref().unwrap())
        .collect();
    assert_eq!(revoked, [first_serial.as_str()]);
    let intents = about(&records, "certificate.issue", "blocked");
    assert_eq!(intents.len(), 1, "{intents:?}");
    assert_eq!(intents[0].serial.as_deref(), Some(serial.as_str()));
    let resumed = records.iter().find(|r| r.event == "audit.resumed").unwrap();
    let paused: f64 = resumed.details["pausedSeconds"].parse().unwrap();
    assert!(paused >= 10.0, "{resumed:?}");
    assert_eq!(metric(&h, "chop_audit_writable"), Some(1.0));
    Api::<ClusterRole>::all(admin)
        .delete(&crippled_name, &DeleteParams::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_crash_after_a_commit_continues_the_chain() {
    let mut h = Harness::new().await;
    h.start_with(Some("CHOP_TEST_CRASH_AFTER_COMMIT"));
    h.create_ca().await;
    let csr = h.csr("a");
    h.create_request("first", "Signature", "ref-1", &csr, true)
        .await;
    h.approve("first").await;
    h.wait_for_abort("after committing the certificate", 60)
        .await;
    let before = segments(&h).await;
    assert!(!before.is_empty());
    h.start(false);
    let cr = h
        .wait_condition("first", "Issued", "True", Some("Issued"))
        .await;
    let serial = cr.status.unwrap().serial_number.unwrap();
    let serial2 = issue(&h, "second", "ref-2", &csr).await;
    let records = wait_records(&h, "the second certificate's record", |r| {
        !about(r, "certificate.issue", "second").is_empty()
    })
    .await;
    drop(records);
    let records = verified_records(&h).await;
    assert_eq!(
        records.iter().filter(|r| r.event == "audit.key").count(),
        1,
        "the restarted controller started a new trail"
    );
    let first = about(&records, "certificate.issue", "first");
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0].serial.as_deref(), Some(serial.as_str()));
    assert_eq!(
        about(&records, "certificate.issue", "second")[0]
            .serial
            .as_deref(),
        Some(serial2.as_str())
    );
    // The segments the first process wrote are unchanged.
    let after = segments(&h).await;
    for s in &before {
        assert_eq!(after[s.spec.index as usize].spec, s.spec);
    }
    // A graceful stop (SIGTERM, as a Deployment sends) is recorded before the
    // process exits; the crash before it left no stop record.
    let mut child = h.child.0.take().unwrap();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the controller did not stop on SIGTERM\n{}",
            h.logs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(status.success(), "{status:?}\n{}", h.logs());
    let lifecycle: Vec<(String, String)> = verified_records(&h)
        .await
        .into_iter()
        .filter(|r| r.event.starts_with("controller."))
        .map(|r| {
            (
                r.event.clone(),
                r.details.get("signal").cloned().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        lifecycle,
        [
            ("controller.leading".to_string(), String::new()),
            ("controller.leading".to_string(), String::new()),
            ("controller.stop".to_string(), "SIGTERM".to_string()),
        ],
        "start, crash (no stop), start, graceful stop"
    );
}

#[tokio::test]
async fn deleting_a_segment_is_recorded_as_tampering() {
    let mut h = Harness::new().await;
    h.start(false);
    h.create_ca().await;
    let segs = wait_records(&h, "the root's record", |r| {
        r.iter().any(|r| r.event == "ca.certificate")
    })
    .await;
    drop(segs);
    h.api::<AuditSegment>()
        .delete("audit-000000000000", &DeleteParams::default())
        .await
        .unwrap();
    let records = wait_records(&h, "audit.tamper", |r| {
        r.iter().any(|r| r.event == "audit.tamper")
    })
    .await;
    let t = records.iter().find(|r| r.event == "audit.tamper").unwrap();
    assert_eq!(t.details["segment"], "audit-000000000000");
    assert!(t.details["what"].contains("deleted"), "{t:?}");
    warning_event(&h, "audit-000000000000", "AuditTamperDetected").await;
    assert_eq!(metric(&h, "chop_audit_tamper_detected_total"), Some(1.0));
}

/// CPS §5.4.3, §5.5.2: segments past their retention period are labelled by the
/// controller; the auditor exports the trail, prunes what was archived, and the
/// pruning is not mistaken for tampering; the trail still proves it extends the
/// export. (Retention shortened to 2 s by the controller's test hook.)
#[tokio::test]
async fn segments_past_retention_are_labelled_then_pruned_without_an_alarm() {
    use crds::audit_segment::RETENTION_EXPIRED_LABEL;
    let mut h = Harness::new().await;
    h.extra_env
        .push(("CHOP_TEST_AUDIT_RETENTION_SECS".into(), "2".into()));
    h.start(false);
    h.create_ca().await;
    wait_records(&h, "the root's record", |r| {
        r.iter().any(|r| r.event == "ca.certificate")
    })
    .await;
    // The auditor's export (what `kubectl chop audit export` archives).
    let archived = segments(&h).await;
    let last = archived.last().unwrap().spec.index;
    let labelled = |s: &AuditSegment| {
        s.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(RETENTION_EXPIRED_LABEL))
            .map(String::as_str)
            == Some("true")
    };
    h.wait("the archived segments to pass retention", 30, || async {
        let now = segments(&h).await;
        now.iter()
            .filter(|s| s.spec.index <= last)
            .all(labelled)
            .then_some(())
    })
    .await;
    // Prune every archived segment but the last (the chain continues from it).
    for s in archived.iter().filter(|s| s.spec.index < last) {
        h.api::<AuditSegment>()
            .delete(
                s.metadata.name.as_deref().unwrap(),
                &DeleteParams::default(),
            )
            .await
            .unwrap();
    }
    // The CA goes on issuing; its records extend the pruned trail.
    let csr = h.csr("after-pruning");
    let serial = issue(&h, "after-pruning", "ref-p", &csr).await;
    let records = wait_records(&h, "the new certificate's record", |r| {
        r.iter()
            .any(|r| r.event == "certificate.issue" && r.serial.as_deref() == Some(&serial))
    })
    .await;
    assert!(
        !records.iter().any(|r| r.event == "audit.tamper"),
        "pruning past retention was reported as tampering: {records:#?}"
    );
    assert_ne!(metric(&h, "chop_audit_tamper_detected_total"), Some(1.0));
    let now = segments(&h).await;
    assert_eq!(now[0].spec.index, last, "pruned segments are gone");
    use k8s_openapi::api::core::v1::ConfigMap;
    let cm = h.api::<ConfigMap>().get("chop-audit-key").await.unwrap();
    let spki = chop_audit::key::spki_from_pem(&cm.data.unwrap()["audit-key.pem"]).unwrap();
    let old: Vec<_> = archived.iter().map(|s| s.spec.clone()).collect();
    let new: Vec<_> = now.iter().map(|s| s.spec.clone()).collect();
    if let Err(p) = chop_audit::verify::verify_since(&old, &new, &spki) {
        panic!("the pruned trail does not prove it extends the export: {p}");
    }
}
