//! End to end: Revocation and Suspension against a real kube-apiserver with the
//! real `chop-controller` binary (SoftHSM2).
//!
//! - `revokes_every_certificate_of_the_key`: two certificates of one key and one
//!   of another; revoking one by request name revokes both of the key with the
//!   same time and reason (CPS §4.6.2, §6.3), the other stays Valid; a second
//!   Revocation with another reason applies nothing (the earliest stands);
//!   revocation by lower-case serial works; an unknown serial gets
//!   `UnknownSerial` and a Warning Event while a good Revocation beside it applies.
//! - `suspension_lifecycle`: hold; a duplicate Suspension is `AlreadyHeld`;
//!   resume by `resumed: true`; hold again and resume by deletion (finalizer);
//!   hold then revoke → Superseded; resuming it is refused; deleting it completes.
//! - `a_crash_after_fixing_the_revocation_time_applies_exactly_it`: the
//!   controller aborts right after writing revokedAt; after a restart the
//!   records carry exactly that time.
//! - `simultaneous_revocations_of_one_key_stay_consistent`: two Revocations of
//!   one key at once; each record carries one Revocation's time and reason.
//! - `collected_requests_are_still_found_by_name`: with `--request-retention
//!   3s`, an issued and a denied request are deleted (`request.deleted` in the
//!   audit trail, the metric, the record labelled `chop.dev/request`), requests
//!   waiting for approval or acceptance stay; a Revocation and a Suspension
//!   naming a collected request by `certificateRequestRef`, and a renewal by
//!   `renewalOf`, still find its certificate; a request created again under a collected name, still
//!   waiting, is never deleted and does not inherit the old certificate's status.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use crds::{CertificateAuthority, CertificateRequest, Revocation, Suspension};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use serde_json::json;

mod common;
use common::*;

fn has_cond(
    conds: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    t: &str,
    s: &str,
    r: &str,
) -> bool {
    conds
        .iter()
        .any(|c| c.type_ == t && c.status == s && c.reason == r)
}

async fn wait_revocation(h: &Harness, name: &str, status: &str, reason: &str) -> Revocation {
    let api = h.api::<Revocation>();
    h.wait(
        &format!("Revocation {name}: Applied={status} {reason}"),
        60,
        || {
            let api = api.clone();
            async move {
                let r = api.get(name).await.ok()?;
                has_cond(&r.status.as_ref()?.conditions, "Applied", status, reason).then_some(r)
            }
        },
    )
    .await
}

async fn wait_suspension(
    h: &Harness,
    name: &str,
    type_: &str,
    status: &str,
    reason: &str,
) -> Suspension {
    let api = h.api::<Suspension>();
    h.wait(
        &format!("Suspension {name}: {type_}={status} {reason}"),
        60,
        || {
            let api = api.clone();
            async move {
                let s = api.get(name).await.ok()?;
                has_cond(&s.status.as_ref()?.conditions, type_, status, reason).then_some(s)
            }
        },
    )
    .await
}

#[tokio::test]
async fn revokes_every_certificate_of_the_key() {
    let mut h = Harness::new().await;
    h.start(false);
    h.create_ca().await;
    let csr = h.csr("alice");
    let a1 = issue(&h, "alice-1", "ra-0001", &csr).await;
    // The same key again (as a renewal would be).
    let a2 = issue(&h, "alice-2", "ra-0001", &csr).await;
    let other = h.csr("bob");
    let b = issue(&h, "bob", "ra-0002", &other).await;
    assert_ne!(a1, a2);

    revoke(
        &h,
        "alice-compromised",
        json!({"certificateRequestRef": {"name": "alice-1"},
               "invalidityDate": "2026-01-02T03:04:05Z"}),
        "keyCompromise",
    )
    .await;
    let rev = wait_revocation(&h, "alice-compromised", "True", "Revoked").await;
    let st = rev.status.unwrap();
    let revoked_at = st.revoked_at.clone().unwrap();
    assert_eq!(revoked_at.0.subsec_nanosecond(), 0, "whole seconds");
    let mut both = vec![a1.clone(), a2.clone()];
    both.sort();
    assert_eq!(st.serial_numbers, both);
    assert_eq!(st.newly_revoked, both);
    assert!(st.already_revoked.is_empty());
    for s in [&a1, &a2] {
        let r = wait_record(&h, s, "Revoked").await;
        let rs = r.status.unwrap();
        assert_eq!(rs.revoked_at.as_ref(), Some(&revoked_at));
        assert_eq!(rs.reason.as_deref(), Some("keyCompromise"));
        assert_eq!(
            rs.invalidity_date.unwrap().0.to_string(),
            "2026-01-02T03:04:05Z"
        );
    }
    assert_eq!(state(&record(&h, &b).await), (None, "Valid".to_string()));
    let cr = h.api::<CertificateRequest>().get("alice-2").await.unwrap();
    assert_eq!(
        cr.status.unwrap().certificate_status.as_deref(),
        Some("Revoked")
    );

    // Again, by lower-case serial and another reason: the earliest stands.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    revoke(
        &h,
        "alice-again",
        json!({"serialNumber": a2.to_ascii_lowercase()}),
        "superseded",
    )
    .await;
    let again = wait_revocation(&h, "alice-again", "True", "Revoked").await;
    let st2 = again.status.unwrap();
    assert_eq!(st2.already_revoked, both);
    assert!(st2.newly_revoked.is_empty());
    assert_ne!(st2.revoked_at, Some(revoked_at.clone()));
    for s in [&a1, &a2] {
        let rs = record(&h, s).await.status.unwrap();
        assert_eq!(rs.revoked_at.as_ref(), Some(&revoked_at));
        assert_eq!(rs.reason.as_deref(), Some("keyCompromise"));
    }

    // An unknown serial fails alone; a good Revocation beside it applies.
    revoke(
        &h,
        "nobody",
        json!({"serialNumber": "0badc0de"}),
        "unspecified",
    )
    .await;
    revoke(
        &h,
        "bob-leaves",
        json!({"serialNumber": b.to_ascii_lowercase()}),
        "cessationOfOperation",
    )
    .await;
    wait_revocation(&h, "nobody", "False", "UnknownSerial").await;
    warning_event(&h, "nobody", "UnknownSerial").await;
    wait_revocation(&h, "bob-leaves", "True", "Revoked").await;
    let rb = wait_record(&h, &b, "Revoked").await;
    assert_eq!(
        rb.status.unwrap().reason.as_deref(),
        Some("cessationOfOperation")
    );

    // Deleting a Revocation changes nothing.
    h.api::<Revocation>()
        .delete("alice-compromised", &DeleteParams::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(state(&record(&h, &a1).await).1, "Revoked");

    // The CA counts them; the metric too.
    let cas = h.api::<CertificateAuthority>();
    h.wait("revokedCount 3", 60, || {
        let cas = cas.clone();
        async move {
            let ca = cas.get("root").await.ok()?;
            (ca.status?.revoked_count == Some(3)).then_some(())
        }
    })
    .await;
    let metrics = http_get(h.metrics_port, "/metrics");
    assert!(
        metrics.contains("chop_revocations_total{ca=\"root\",reason=\"keyCompromise\"} 2"),
        "{metrics}"
    );
    assert!(!metrics.contains("ra-000"), "{metrics}");
}

#[tokio::test]
async fn suspension_lifecycle() {
    let mut h = Harness::new().await;
    h.start(false);
    h.create_ca().await;
    let csr_c = h.csr("carol");
    let c = issue(&h, "carol", "ra-0101", &csr_c).await;
    let csr_d = h.csr("dan");
    let d = issue(&h, "dan", "ra-0102", &csr_d).await;

    // Hold, and a duplicate is refused by name.
    suspend(&h, "carol-hold", "carol").await;
    let s = wait_suspension(&h, "carol-hold", "Held", "True", "Held").await;
    let held_at = s.status.as_ref().unwrap().held_at.clone().unwrap();
    let r = wait_record(&h, &c, "Held").await;
    let rs = r.status.unwrap();
    assert_eq!(rs.reason.as_deref(), Some("certificateHold"));
    assert_eq!(rs.revoked_at, Some(held_at));
    assert_eq!(s.status.unwrap().serial_number.as_deref(), Some(c.as_str()));
    let cas = h.api::<CertificateAuthority>();
    h.wait("heldCount 1", 60, || {
        let cas = cas.clone();
        async move {
            let ca = cas.get("root").await.ok()?;
            (ca.status?.held_count == Some(1)).then_some(())
        }
    })
    .await;
    suspend(&h, "carol-twice", "carol").await;
    let dup = wait_suspension(&h, "carol-twice", "Held", "False", "AlreadyHeld").await;
    let msg = &dup.status.unwrap().conditions[0].message;
    assert!(msg.contains("carol-hold"), "{msg}");

    // Resume by `resumed: true`.
    h.api::<Suspension>()
        .patch(
            "carol-hold",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"resumed": true}})),
        )
        .await
        .unwrap();
    let s = wait_suspension(&h, "carol-hold", "Resumed", "True", "Resumed").await;
    assert_eq!(s.status.as_ref().unwrap().state.as_deref(), Some("Resumed"));
    let r = wait_record(&h, &c, "Valid").await;
    let rs = r.status.unwrap();
    assert!(rs.revoked_at.is_none() && rs.reason.is_none(), "{rs:?}");

    // Hold again, resume by deletion (the finalizer).
    suspend(&h, "carol-hold-2", "carol").await;
    wait_suspension(&h, "carol-hold-2", "Held", "True", "Held").await;
    wait_record(&h, &c, "Held").await;
    h.api::<Suspension>()
        .delete("carol-hold-2", &DeleteParams::default())
        .await
        .unwrap();
    wait_record(&h, &c, "Valid").await;
    let api = h.api::<Suspension>();
    h.wait("carol-hold-2 gone", 30, || {
        let api = api.clone();
        async move {
            api.get_opt("carol-hold-2")
                .await
                .ok()?
                .is_none()
                .then_some(())
        }
    })
    .await;

    // Hold, then revoke: the revocation supersedes; resuming is refused.
    suspend(&h, "dan-hold", "dan").await;
    wait_suspension(&h, "dan-hold", "Held", "True", "Held").await;
    revoke(
        &h,
        "dan-revoked",
        json!({"certificateRequestRef": {"name": "dan"}}),
        "affiliationChanged",
    )
    .await;
    wait_revocation(&h, "dan-revoked", "True", "Revoked").await;
    let r = wait_record(&h, &d, "Revoked").await;
    assert_eq!(
        r.status.unwrap().reason.as_deref(),
        Some("affiliationChanged")
    );
    let s = wait_suspension(&h, "dan-hold", "Held", "False", "Superseded").await;
    assert_eq!(s.status.unwrap().state.as_deref(), Some("Superseded"));
    h.api::<Suspension>()
        .patch(
            "dan-hold",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"resumed": true}})),
        )
        .await
        .unwrap();
    let s = wait_suspension(&h, "dan-hold", "Resumed", "False", "Revoked").await;
    let msg = s
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Resumed")
        .unwrap()
        .message;
    assert!(msg.contains("cannot be resumed"), "{msg}");
    assert_eq!(state(&record(&h, &d).await).1, "Revoked");
    for name in ["dan-hold", "carol-twice", "carol-hold"] {
        h.api::<Suspension>()
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
    }
    h.wait("all Suspensions gone", 30, || {
        let api = api.clone();
        async move {
            api.list(&ListParams::default())
                .await
                .ok()?
                .items
                .is_empty()
                .then_some(())
        }
    })
    .await;
    assert_eq!(state(&record(&h, &d).await).1, "Revoked");
    assert_eq!(state(&record(&h, &c).await).1, "Valid");
    let metrics = http_get(h.metrics_port, "/metrics");
    assert!(
        metrics.contains("chop_suspensions_total{ca=\"root\",action=\"held\"} 3"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_crash_after_fixing_the_revocation_time_applies_exactly_it() {
    let mut h = Harness::new().await;
    h.start_with(Some("CHOP_TEST_CRASH_AFTER_REVOKED_AT"));
    h.create_ca().await;
    let csr = h.csr("erin");
    let e = issue(&h, "erin", "ra-0201", &csr).await;
    revoke(
        &h,
        "erin-revoked",
        json!({"certificateRequestRef": {"name": "erin"}}),
        "privilegeWithdrawn",
    )
    .await;
    h.wait_for_abort("after fixing the revocation time", 60)
        .await;
    let rev = h.api::<Revocation>().get("erin-revoked").await.unwrap();
    let revoked_at = rev.status.unwrap().revoked_at.unwrap();
    assert_eq!(state(&record(&h, &e).await).1, "Valid");
    // Let the clock move past the recorded second before restarting.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    h.start(false);
    wait_revocation(&h, "erin-revoked", "True", "Revoked").await;
    let r = wait_record(&h, &e, "Revoked").await;
    assert_eq!(r.status.unwrap().revoked_at, Some(revoked_at));
}

/// Two Revocations of one key at once: every record ends Revoked with the time
/// and reason of the Revocation that marked it (`chop.dev/revoked-by`), never a
/// mix of one's time and the other's reason, and each Revocation lists it as
/// newly or already revoked.
#[tokio::test]
async fn simultaneous_revocations_of_one_key_stay_consistent() {
    let mut h = Harness::new().await;
    h.start(false);
    h.create_ca().await;
    let csr = h.csr("frank");
    let mut serials = Vec::new();
    for i in 0..3 {
        serials.push(issue(&h, &format!("frank-{i}"), "ra-0301", &csr).await);
    }
    serials.sort();
    tokio::join!(
        revoke(
            &h,
            "frank-a",
            json!({"certificateRequestRef": {"name": "frank-0"}}),
            "keyCompromise"
        ),
        revoke(
            &h,
            "frank-b",
            json!({"serialNumber": serials[2].to_ascii_lowercase()}),
            "affiliationChanged"
        ),
    );
    let a = wait_revocation(&h, "frank-a", "True", "Revoked").await;
    let b = wait_revocation(&h, "frank-b", "True", "Revoked").await;
    for s in &serials {
        let r = wait_record(&h, s, "Revoked").await;
        let by = r.metadata.annotations.as_ref().unwrap()["chop.dev/revoked-by"].clone();
        let (winner, loser, reason) = if by == "frank-a" {
            (&a, &b, "keyCompromise")
        } else {
            (&b, &a, "affiliationChanged")
        };
        let rs = r.status.unwrap();
        let ws = winner.status.as_ref().unwrap();
        assert_eq!(rs.reason.as_deref(), Some(reason));
        assert_eq!(rs.revoked_at, ws.revoked_at);
        assert!(ws.newly_revoked.contains(s));
        assert!(loser.status.as_ref().unwrap().already_revoked.contains(s));
    }
}

#[tokio::test]
async fn collected_requests_are_still_found_by_name() {
    use crds::{AuditSegment, IssuedCertificate};
    let mut h = Harness::new().await;
    h.args = vec!["--request-retention".into(), "3s".into()];
    h.start(false);
    // 30-day certificates: inside the renewal window from the start.
    h.create_ca_with(json!({"profiles": {"subscriberValidity": "720h"}}))
        .await;
    let alice = issue(&h, "alice", "ra-0001", &h.csr("alice")).await;
    let bob = issue(&h, "bob", "ra-0002", &h.csr("bob")).await;
    let erin = issue(&h, "erin", "ra-0005", &h.csr("erin")).await;
    let csr = h.csr("carol");
    // Still in the workflow: waiting for an officer, and approved but waiting
    // for the applicant's acceptance (CPS §4.4).
    h.create_request("carol-waiting", "Signature", "ra-0003", &csr, true)
        .await;
    h.create_request("carol-unaccepted", "Signature", "ra-0003", &csr, false)
        .await;
    h.approve("carol-unaccepted").await;
    h.create_request("dave", "Signature", "ra-0004", &csr, true)
        .await;
    h.officer_sets("dave", "Denied", "OfficerDenied").await;
    h.wait_condition("dave", "Issued", "False", Some("Denied"))
        .await;

    let requests = h.api::<CertificateRequest>();
    for name in ["alice", "bob", "dave", "erin"] {
        let api = requests.clone();
        h.wait(&format!("{name} collected"), 60, || {
            let api = api.clone();
            async move { api.get_opt(name).await.unwrap().is_none().then_some(()) }
        })
        .await;
    }
    // Past their retention too, the unfinished ones are kept.
    tokio::time::sleep(Duration::from_secs(4)).await;
    for name in ["carol-waiting", "carol-unaccepted"] {
        assert!(
            requests.get_opt(name).await.unwrap().is_some(),
            "{name} was collected\n{}",
            h.logs()
        );
    }
    // The register kept the certificate and which request it was for.
    let rec = record(&h, &alice).await;
    assert_eq!(rec.spec.request_ref.as_ref().unwrap().name, "alice");
    assert_eq!(
        rec.metadata.labels.as_ref().unwrap()["chop.dev/request"],
        "alice"
    );
    let by_label = h
        .api::<IssuedCertificate>()
        .list(&ListParams::default().labels("chop.dev/ca=root,chop.dev/request=bob"))
        .await
        .unwrap()
        .items;
    assert_eq!(by_label.len(), 1);
    assert_eq!(by_label[0].spec.serial_number, bob);
    // The audit trail says so, once per request; the metric counts them.
    let segments = h.api::<AuditSegment>();
    h.wait("request.deleted records", 30, || {
        let segments = segments.clone();
        let alice = alice.clone();
        async move {
            let recs: Vec<_> = segments
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .into_iter()
                .flat_map(|s| s.spec.records)
                .filter(|r| r.event == "request.deleted")
                .collect();
            let of = |n: &str| {
                recs.iter()
                    .filter(|r| r.object.as_ref().is_some_and(|o| o.name == n))
                    .count()
            };
            let alice_rec = recs
                .iter()
                .find(|r| r.object.as_ref().is_some_and(|o| o.name == "alice"))?;
            assert_eq!(alice_rec.serial.as_deref(), Some(alice.as_str()));
            assert_eq!(alice_rec.reason.as_deref(), Some("Issued"));
            (of("alice") == 1
                && of("bob") == 1
                && of("dave") == 1
                && of("erin") == 1
                && recs.len() == 4)
                .then_some(())
        }
    })
    .await;
    let metrics = http_get(h.metrics_port, "/metrics");
    assert!(
        metrics
            .contains("chop_certificate_requests_deleted_total{ca=\"root\",outcome=\"Issued\"} 3")
            && metrics.contains(
                "chop_certificate_requests_deleted_total{ca=\"root\",outcome=\"Denied\"} 1"
            ),
        "{metrics}"
    );

    // Revoke and hold by the name of a collected request.
    revoke(
        &h,
        "alice-leaves",
        json!({"certificateRequestRef": {"name": "alice"}}),
        "cessationOfOperation",
    )
    .await;
    wait_revocation(&h, "alice-leaves", "True", "Revoked").await;
    wait_record(&h, &alice, "Revoked").await;
    suspend(&h, "bob-hold", "bob").await;
    wait_suspension(&h, "bob-hold", "Held", "True", "Held").await;
    wait_record(&h, &bob, "Held").await;

    // A renewal of a collected request finds the original in the register.
    create::<CertificateRequest>(
        &h,
        json!({"apiVersion": "chop.dev/v1alpha1", "kind": "CertificateRequest",
               "metadata": {"name": "erin-renewal"},
               "spec": {"caRef": {"name": "root"}, "profile": "Signature",
                        "renewalOf": {"name": "erin"}, "accepted": true}}),
    )
    .await;
    h.approve("erin-renewal").await;
    let records = h.api::<IssuedCertificate>();
    let renewed = h
        .wait("the renewal of erin in the register", 60, || {
            let records = records.clone();
            async move {
                let l = records
                    .list(&ListParams::default().labels("chop.dev/request=erin-renewal"))
                    .await
                    .ok()?
                    .items;
                l.into_iter().next()
            }
        })
        .await;
    assert_eq!(renewed.spec.renewal_of.as_ref().unwrap().name, "erin");
    assert_ne!(renewed.spec.serial_number, erin);
    assert_eq!(
        record(&h, &erin).await.metadata.annotations.unwrap()["chop.dev/renewed-by"],
        "erin-renewal"
    );

    // "alice" again: a new request under the collected name, waiting for an
    // officer. It is not collected, and the old certificate's status is not
    // mirrored onto it.
    h.create_request("alice", "Signature", "ra-0001", &csr, true)
        .await;
    h.wait_condition("alice", "Issued", "False", Some("WaitingForApproval"))
        .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let again = requests.get("alice").await.unwrap();
    assert_eq!(again.status.unwrap().certificate_status, None);
    // A resume goes to the certificate the hold took.
    h.api::<Suspension>()
        .patch(
            "bob-hold",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"resumed": true}})),
        )
        .await
        .unwrap();
    wait_record(&h, &bob, "Valid").await;
    assert_eq!(state(&record(&h, &alice).await).1, "Revoked");
}
