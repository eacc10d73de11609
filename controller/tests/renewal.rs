//! End to end: renewal (CPS §3.3.3, §4.6, §6.3.2.2) and auto-approval, with the
//! real `chop-controller` binary (SoftHSM2) against a real kube-apiserver;
//! certificates checked with `openssl` and parsed with x509-cert.
//!
//! - `renews_once_within_the_window`: a CA issuing 30-day certificates (so the
//!   original is already inside the window of 60 days before expiry); the renewal
//!   has the original's subject (DER bytes equal) and key (SPKI equal to the
//!   subscriber's key), a new serial, notAfter = the original's + 3 calendar
//!   years, verifies against the root, and its record carries `renewalOf`. A
//!   second renewal is `AlreadyRenewed`, a renewal of the renewal
//!   `RenewalOfRenewal`, of a revoked certificate `CertificateRevoked`, of a held
//!   one `CertificateHeld`, of a missing request `RenewalTargetNotFound`; a CSR
//!   of another key is `RenewalKeyMismatch` while one of the same key issues.
//!   Each refusal comes with a Warning Event. Revoking the renewal revokes the
//!   original too (same key).
//! - `refuses_outside_the_window_and_mobile`: with the default 5-year validity
//!   a renewal is `OutsideRenewalWindow`; a mobile certificate is `NotRenewable`;
//!   another profile than the original's is `RenewalProfileMismatch`.
//! - `renewal_and_rekey_exclude_each_other` (CPS §4.6.2): after a re-key the
//!   old certificate's renewal is `AlreadyRekeyed`; after a renewal a new key
//!   for that subscriber and profile is `AlreadyRenewed` (another profile and
//!   another subscriber are unaffected), until the renewed certificate is
//!   revoked.
//! - `auto_approval_for_listed_users_only`: with the admission policies of
//!   `manifests/policies` in force, a request created by a user listed in
//!   `approval.autoApproveUsers` is `Approved=True AutoApproved` by the controller
//!   (under its least-privilege role) and issued after acceptance, keeping its
//!   approval; an unlisted user's request waits for an officer even when it
//!   claims to be the listed user's (`chop.dev/requested-by` is overwritten on
//!   creation and cannot be changed later); an officer cannot overturn the
//!   automatic decision.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use crds::{CertificateRequest, IssuedCertificate};
use der::{DecodePem, Encode};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use x509_cert::Certificate;

mod common;
use common::*;

/// A renewal request of `of` (accepted), with `extra` merged into the spec.
async fn renewal(h: &Harness, name: &str, of: &str, profile: &str, extra: Value) {
    let mut spec = json!({
        "caRef": {"name": "root"},
        "profile": profile,
        "renewalOf": {"name": of},
        "accepted": true
    });
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    create::<CertificateRequest>(
        h,
        json!({"apiVersion": "chop.dev/v1alpha1", "kind": "CertificateRequest",
               "metadata": {"name": name}, "spec": spec}),
    )
    .await;
}

/// Create a renewal of `of`, approve it and wait for `Failed=True <reason>` and
/// its Warning Event.
async fn refused(h: &Harness, name: &str, of: &str, profile: &str, extra: Value, reason: &str) {
    renewal(h, name, of, profile, extra).await;
    h.approve(name).await;
    let cr = h.wait_condition(name, "Failed", "True", Some(reason)).await;
    let st = cr.status.unwrap();
    assert!(st.serial_number.is_none() && st.certificate.is_none());
    warning_event(h, name, reason).await;
}

fn parse(pem: &str) -> Certificate {
    Certificate::from_pem(pem.as_bytes()).unwrap()
}

fn not_after(c: &Certificate) -> jiff::Timestamp {
    jiff::Timestamp::try_from(c.tbs_certificate.validity.not_after.to_system_time()).unwrap()
}

async fn issued(h: &Harness, name: &str) -> CertificateRequest {
    h.wait_condition(name, "Issued", "True", Some("Issued"))
        .await
}

#[tokio::test]
async fn renews_once_within_the_window() {
    let mut h = Harness::new().await;
    h.start(false);
    let ca = h
        .create_ca_with(json!({"profiles": {"subscriberValidity": "720h"}}))
        .await;
    let root = h.write(
        "root.pem",
        ca.status.as_ref().unwrap().certificate.as_ref().unwrap(),
    );

    let csr = h.csr("wang");
    let old_serial = issue(&h, "wang", "ra-1001", &csr).await;
    let old_cr = h.api::<CertificateRequest>().get("wang").await.unwrap();
    let old_st = old_cr.status.unwrap();
    let old_pem = old_st.certificate.clone().unwrap();

    // The renewal gives no key material: it keeps the original's.
    renewal(&h, "wang-renewal", "wang", "Signature", json!({})).await;
    h.wait_condition(
        "wang-renewal",
        "Issued",
        "False",
        Some("WaitingForApproval"),
    )
    .await;
    h.approve("wang-renewal").await;
    let st = issued(&h, "wang-renewal").await.status.unwrap();
    let new_pem = st.certificate.clone().unwrap();
    let new_serial = st.serial_number.clone().unwrap();
    assert_ne!(new_serial, old_serial);

    let (old, new) = (parse(&old_pem), parse(&new_pem));
    assert_eq!(
        new.tbs_certificate.subject.to_der().unwrap(),
        old.tbs_certificate.subject.to_der().unwrap(),
        "the subject is copied byte for byte"
    );
    let new_file = h.write("wang-renewal.pem", &new_pem);
    let old_file = h.write("wang.pem", &old_pem);
    let key_pub = openssl(&["pkey", "-pubout", "-in"], &[&h.path("wang.key")]);
    let new_pub = openssl(&["x509", "-noout", "-pubkey", "-in"], &[&new_file]);
    let old_pub = openssl(&["x509", "-noout", "-pubkey", "-in"], &[&old_file]);
    assert_eq!(new_pub, key_pub);
    assert_eq!(old_pub, key_pub);
    // notAfter = old notAfter + 3 years (calendar, CPS §6.3.2.2).
    let want = not_after(&old)
        .to_zoned(jiff::tz::TimeZone::UTC)
        .checked_add(jiff::Span::new().years(3))
        .unwrap()
        .timestamp();
    assert_eq!(not_after(&new), want);
    assert_eq!(st.not_after.as_ref().unwrap().0, want);
    // It starts now, not at the original's notBefore.
    let since = jiff::Timestamp::now().duration_since(
        jiff::Timestamp::try_from(new.tbs_certificate.validity.not_before.to_system_time())
            .unwrap(),
    );
    assert!(since < jiff::SignedDuration::from_secs(300), "{since:?}");
    let verified = openssl(&["verify", "-x509_strict", "-CAfile"], &[&root, &new_file]);
    assert!(verified.contains("OK"), "{verified}");
    assert_eq!(st.subscriber_id, old_st.subscriber_id);
    assert_eq!(st.key_fingerprint, old_st.key_fingerprint);

    // The register: the renewal's record names the original; the original's is claimed.
    let new_record = record(&h, &new_serial).await;
    assert_eq!(new_record.spec.renewal_of.as_ref().unwrap().name, "wang");
    assert_eq!(
        new_record.spec.request_ref.as_ref().unwrap().name,
        "wang-renewal"
    );
    let old_record = record(&h, &old_serial).await;
    assert_eq!(
        old_record.metadata.annotations.as_ref().unwrap()["chop.dev/renewed-by"],
        "wang-renewal"
    );

    // Once only, and never a renewal of a renewal.
    refused(
        &h,
        "wang-renewal-2",
        "wang",
        "Signature",
        json!({}),
        "AlreadyRenewed",
    )
    .await;
    refused(
        &h,
        "wang-renewal-3",
        "wang-renewal",
        "Signature",
        json!({}),
        "RenewalOfRenewal",
    )
    .await;
    refused(
        &h,
        "ghost-renewal",
        "ghost",
        "Signature",
        json!({}),
        "RenewalTargetNotFound",
    )
    .await;

    // Same key: a CSR of another key is refused, one of the original key issues.
    let lee_csr = h.csr("lee");
    let lee_serial = issue(&h, "lee", "ra-1002", &lee_csr).await;
    let other_csr = h.csr("lee-other");
    refused(
        &h,
        "lee-renewal-other-key",
        "lee",
        "Signature",
        json!({"csr": other_csr}),
        "RenewalKeyMismatch",
    )
    .await;
    renewal(
        &h,
        "lee-renewal",
        "lee",
        "Signature",
        json!({"csr": lee_csr}),
    )
    .await;
    h.approve("lee-renewal").await;
    let lee_st = issued(&h, "lee-renewal").await.status.unwrap();
    assert_ne!(lee_st.serial_number.unwrap(), lee_serial);

    // Neither a revoked nor a held certificate is renewed.
    issue(&h, "chen", "ra-1003", &h.csr("chen")).await;
    revoke_request(&h, "chen-revoked", "chen", "keyCompromise").await;
    refused(
        &h,
        "chen-renewal",
        "chen",
        "Signature",
        json!({}),
        "CertificateRevoked",
    )
    .await;
    let lin_serial = issue(&h, "lin", "ra-1004", &h.csr("lin")).await;
    suspend(&h, "lin-hold", "lin").await;
    wait_record(&h, &lin_serial, "Held").await;
    refused(
        &h,
        "lin-renewal",
        "lin",
        "Signature",
        json!({}),
        "CertificateHeld",
    )
    .await;

    // Revoking the renewed certificate revokes the original too: same key pair
    // (CPS §4.6.2, §6.3).
    revoke(
        &h,
        "wang-renewal-revoked",
        json!({"certificateRequestRef": {"name": "wang-renewal"}}),
        "keyCompromise",
    )
    .await;
    let renewed = wait_record(&h, &new_serial, "Revoked").await;
    let original = wait_record(&h, &old_serial, "Revoked").await;
    assert_eq!(
        renewed.status.unwrap().revoked_at,
        original.status.unwrap().revoked_at
    );
    let all: Vec<IssuedCertificate> = h
        .api::<IssuedCertificate>()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    let renewals = all.iter().filter(|r| r.spec.renewal_of.is_some()).count();
    assert_eq!(renewals, 2, "exactly wang's and lee's renewals were signed");
}

#[tokio::test]
async fn refuses_outside_the_window_and_mobile() {
    let mut h = Harness::new().await;
    h.start(false);
    h.create_ca().await;
    issue(&h, "wu", "ra-2001", &h.csr("wu")).await;
    refused(
        &h,
        "wu-early",
        "wu",
        "Signature",
        json!({}),
        "OutsideRenewalWindow",
    )
    .await;
    let cr = h.api::<CertificateRequest>().get("wu-early").await.unwrap();
    let failed = cr
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Failed")
        .unwrap();
    assert!(
        failed.message.contains("renewal window opens"),
        "{}",
        failed.message
    );
    refused(
        &h,
        "wu-other-profile",
        "wu",
        "Encryption",
        json!({}),
        "RenewalProfileMismatch",
    )
    .await;

    let csr = h.csr("wu-mobile");
    h.create_request("wu-mobile", "MobileSignature", "ra-2001", &csr, true)
        .await;
    h.approve("wu-mobile").await;
    issued(&h, "wu-mobile").await;
    refused(
        &h,
        "wu-mobile-renewal",
        "wu-mobile",
        "MobileSignature",
        json!({}),
        "NotRenewable",
    )
    .await;
    // The refusals block nothing: a new request beside them issues.
    issue(&h, "wu-2", "ra-2001", &h.csr("wu-2")).await;
}

#[tokio::test]
async fn auto_approval_for_listed_users_only() {
    let mut h = Harness::new().await;
    h.install_policies().await;
    h.start(false);
    h.create_ca_with(json!({"approval": {"autoApproveUsers": ["ra-bot"]}}))
        .await;
    let bot: Api<CertificateRequest> = Api::namespaced(h.ra_user("ra-bot").await, h.ns());
    let other: Api<CertificateRequest> = Api::namespaced(h.ra_user("ra-other").await, h.ns());
    let pp = PostParams::default();

    // The listed user's request is approved by the controller, then waits for
    // the applicant's acceptance, then issues.
    let made = bot
        .create(
            &pp,
            &request_body("by-bot", "Signature", "ra-3001", &h.csr("by-bot"), false),
        )
        .await
        .unwrap();
    assert_eq!(made.metadata.annotations.unwrap()[REQUESTED_BY], "ra-bot");
    let cr = h
        .wait_condition("by-bot", "Approved", "True", Some("AutoApproved"))
        .await;
    let approved = cr
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Approved")
        .unwrap();
    assert!(approved.message.contains("ra-bot") && approved.message.contains("autoApproveUsers"));
    h.wait_condition("by-bot", "Issued", "False", Some("WaitingForAcceptance"))
        .await;
    bot.patch(
        "by-bot",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"accepted": true}})),
    )
    .await
    .unwrap();
    let cr = issued(&h, "by-bot").await;
    assert!(
        cr.status
            .as_ref()
            .unwrap()
            .conditions
            .iter()
            .any(|c| c.type_ == "Approved" && c.status == "True" && c.reason == "AutoApproved"),
        "the approval stays after issuance"
    );
    wait_event(&h, "by-bot", "AutoApproved", "Normal").await;
    // The automatic decision is final like an officer's.
    let deny = json!({"apiVersion": "chop.dev/v1alpha1", "kind": "CertificateRequest",
        "status": {"conditions": [{"type": "Denied", "status": "True", "reason": "Officer",
          "message": "", "lastTransitionTime": jiff::Timestamp::now().to_string()}]}});
    let err = h
        .api::<CertificateRequest>()
        .patch_status(
            "by-bot",
            &PatchParams::apply("officer").force(),
            &Patch::Apply(&deny),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("final"), "{err}");

    // An unlisted user claiming to be the listed one: the API server records
    // the real creator, and the claim cannot be added afterwards.
    let mut forged = request_body("forged", "Signature", "ra-3002", &h.csr("forged"), true);
    forged.metadata.annotations = Some([(REQUESTED_BY.to_owned(), "ra-bot".to_owned())].into());
    let made = other.create(&pp, &forged).await.unwrap();
    assert_eq!(made.metadata.annotations.unwrap()[REQUESTED_BY], "ra-other");
    let err = other
        .patch(
            "forged",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {REQUESTED_BY: "ra-bot"}}})),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("immutable"), "{err}");
    h.wait_condition("forged", "Issued", "False", Some("WaitingForApproval"))
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cr = h.api::<CertificateRequest>().get("forged").await.unwrap();
    let st = cr.status.unwrap();
    assert!(
        !st.conditions.iter().any(|c| c.type_ == "Approved"),
        "{:?}",
        st.conditions
    );
    assert!(st.serial_number.is_none());
    // An officer decides it.
    h.approve("forged").await;
    issued(&h, "forged").await;
}

#[tokio::test]
async fn renewal_and_rekey_exclude_each_other() {
    // 30-day certificates: every certificate is inside its renewal window.
    let mut h = Harness::new().await;
    h.start(false);
    h.create_ca_with(json!({"profiles": {"subscriberValidity": "720h"}}))
        .await;

    // Re-key first: the subscriber gets a certificate for a new key, so the old
    // certificate can no longer be renewed.
    let csr = h.csr("lin");
    issue(&h, "lin", "ra-2001", &csr).await;
    let csr = h.csr("lin-new-key");
    issue(&h, "lin-new-key", "ra-2001", &csr).await;
    refused(
        &h,
        "lin-renewal",
        "lin",
        "Signature",
        json!({}),
        "AlreadyRekeyed",
    )
    .await;
    // Another subscriber is not affected by lin's re-key.
    let csr = h.csr("chen");
    issue(&h, "chen", "ra-2002", &csr).await;
    renewal(&h, "chen-renewal", "chen", "Signature", json!({})).await;
    h.approve("chen-renewal").await;
    issued(&h, "chen-renewal").await;

    // Renewal first: while the renewed certificate is valid, a new key for the
    // same subscriber and profile is refused; another profile is not affected.
    let csr = h.csr("chen-new-key");
    h.create_request("chen-new-key", "Signature", "ra-2002", &csr, true)
        .await;
    h.approve("chen-new-key").await;
    h.wait_condition("chen-new-key", "Failed", "True", Some("AlreadyRenewed"))
        .await;
    warning_event(&h, "chen-new-key", "AlreadyRenewed").await;
    let csr = h.csr("chen-encryption");
    h.create_request("chen-encryption", "Encryption", "ra-2002", &csr, true)
        .await;
    h.approve("chen-encryption").await;
    issued(&h, "chen-encryption").await;

    // Once the renewed certificate is revoked, the subscriber may re-key.
    revoke_request(&h, "chen-lost", "chen-renewal", "keyCompromise").await;
    let csr = h.csr("chen-after");
    h.create_request("chen-after", "Signature", "ra-2002", &csr, true)
        .await;
    h.approve("chen-after").await;
    issued(&h, "chen-after").await;
    h.env.cleanup().await.unwrap();
}

#[tokio::test]
async fn a_reserved_renewal_finishes_after_a_crash_even_if_its_original_request_is_gone() {
    let mut h = Harness::new().await;
    h.start(false);
    h.create_ca_with(json!({"profiles": {"subscriberValidity": "720h"}}))
        .await;
    let csr = h.csr("wu");
    let old_serial = issue(&h, "wu", "ra-3001", &csr).await;

    // The controller aborts right after reserving the renewal's serial (and
    // claiming the original); then the original request is deleted.
    h.child.stop();
    h.start(true);
    renewal(&h, "wu-renewal", "wu", "Signature", json!({})).await;
    h.approve("wu-renewal").await;
    h.wait_for_abort("after reserving the renewal", 60).await;
    let reserved = h
        .api::<CertificateRequest>()
        .get("wu-renewal")
        .await
        .unwrap()
        .status
        .unwrap()
        .serial_number
        .expect("serial reserved before the crash");
    h.api::<CertificateRequest>()
        .delete("wu", &Default::default())
        .await
        .unwrap();

    // After a restart the renewal is finished from the claim on the original's
    // record, found through the subscriber: same serial, renewal recorded.
    h.start(false);
    let st = issued(&h, "wu-renewal").await.status.unwrap();
    assert_eq!(st.serial_number.as_deref(), Some(reserved.as_str()));
    let rec = record(&h, &reserved).await;
    assert_eq!(rec.spec.renewal_of.as_ref().unwrap().name, "wu");
    let old = record(&h, &old_serial).await;
    assert_eq!(
        old.metadata.annotations.as_ref().unwrap()["chop.dev/renewed-by"],
        "wu-renewal"
    );
    h.env.cleanup().await.unwrap();
}
