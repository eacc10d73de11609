//! Red team, issue 8 findings 1 and 2: nobody makes the CA sign what was not
//! approved, accepted and reserved by the controller itself. Each test acts as
//! the attacker with exactly the rights a role grants (officer, administrator,
//! RA, and the break-glass admin where the point is the controller's own
//! re-check), on the real API server with the shipped roles and policies, the
//! real chop-controller under its least-privilege role, and SoftHSM2; each
//! asserts the specific refusal and that nothing was signed.
//!
//! - `officers_cannot_write_what_the_controller_acts_on`: the API server
//!   refuses an officer's write of a reservation, subscriber id, certificate
//!   or controller condition (chop-controller-state), and still takes their
//!   decisions; a denied request stays unsigned.
//! - `a_reservation_the_controller_did_not_make_is_never_signed`: reservations
//!   written past the policies (break-glass) on a denied, an unaccepted, and
//!   approved requests with another citizen's subscriber id, a validity the
//!   profile does not allow, or another request's serial: nothing is signed,
//!   each with its reason.
//! - `auto_approval_covers_subscriber_profiles_only`: an RA listed in
//!   autoApproveUsers gets no SubordinateCA or OCSPResponder certificate
//!   without an officer.
//! - `an_administrator_alone_gets_no_subordinate_ca_certificate`: a
//!   Subordinate CA with parentRef waits for an officer; the administrator
//!   cannot approve it, nor make a second CA on the root's HSM key.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use crds::{CertificateAuthority, CertificateRequest, IssuedCertificate};
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

/// An officer's decision (server-side apply of one condition, as `user`).
async fn decide(client: &kube::Client, ns: &str, name: &str, type_: &str, user: &str) {
    let body = json!({
        "apiVersion": "chop.dev/v1alpha1",
        "kind": "CertificateRequest",
        "status": {"conditions": [{
            "type": type_, "status": "True", "reason": "ByOfficer",
            "message": "decided at the counter",
            "lastTransitionTime": jiff::Timestamp::now().to_string(),
        }]}
    });
    Api::<CertificateRequest>::namespaced(client.clone(), ns)
        .patch_status(
            name,
            &PatchParams::apply(user).force(),
            &Patch::Apply(&body),
        )
        .await
        .unwrap();
}

/// A merge patch of `status` by `client`: the API server's refusal message, or
/// `None` if it was accepted.
async fn status_patch(
    client: &kube::Client,
    ns: &str,
    name: &str,
    status: serde_json::Value,
) -> Option<String> {
    match Api::<CertificateRequest>::namespaced(client.clone(), ns)
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await
    {
        Ok(_) => None,
        Err(kube::Error::Api(s)) => Some(format!("{} {}", s.code, s.message)),
        Err(e) => panic!("{e}"),
    }
}

fn a_serial() -> String {
    let mut b = [0u8; 16];
    aws_lc_rs::rand::fill(&mut b).unwrap();
    b[0] = (b[0] & 0x3f) | 0x10;
    b.iter().map(|x| format!("{x:02X}")).collect()
}

#[tokio::test]
async fn officers_cannot_write_what_the_controller_acts_on() {
    let mut h = Harness::new().await;
    h.install_policies().await;
    h.start(false);
    h.create_ca().await;
    let ns = h.ns().to_string();
    let officer1 = h.user_with_role("officer-1", "chop:officer").await;
    let officer2 = h.user_with_role("officer-2", "chop:officer").await;
    let ra = Api::<CertificateRequest>::namespaced(h.ra_user("ra-1").await, &ns);
    for (name, reference) in [
        ("denied", "ra-0001"),
        ("pending", "ra-0002"),
        ("fine", "ra-0003"),
    ] {
        let csr = h.csr(name);
        ra.create(
            &Default::default(),
            &request_body(name, "Signature", reference, &csr, true),
        )
        .await
        .unwrap();
    }
    decide(&officer1, &ns, "denied", "Denied", "officer-1").await;
    h.wait_condition("denied", "Issued", "False", Some("Denied"))
        .await;
    h.wait_condition("pending", "Issued", "False", Some("WaitingForApproval"))
        .await;

    // Another officer tries to turn the denied request into an issuance by
    // writing a reservation, and to shape the pending one.
    let now = jiff::Timestamp::now();
    let later = now + jiff::SignedDuration::from_hours(24 * 365);
    let attempts = [
        (
            "denied",
            json!({"serialNumber": a_serial(), "notBefore": now.to_string(),
                   "notAfter": later.to_string(), "subscriberId": "MOICA0000000042"}),
        ),
        ("pending", json!({"subscriberId": "MOICA0000000042"})),
        ("pending", json!({"serialNumber": a_serial()})),
        ("pending", json!({"notAfter": later.to_string()})),
        (
            "pending",
            json!({"certificate": "-----BEGIN CERTIFICATE-----\n"}),
        ),
        (
            "pending",
            json!({"conditions": [{"type": "Failed", "status": "True", "reason": "Forged",
                    "message": "", "lastTransitionTime": now.to_string()}]}),
        ),
    ];
    for (name, status) in attempts {
        let refused = status_patch(&officer2, &ns, name, status.clone())
            .await
            .unwrap_or_else(|| panic!("officer-2 wrote {status} on {name}"));
        assert!(
            refused.starts_with("403")
                && refused.contains("officer-2 may change only the Approved/Denied decision"),
            "{refused}"
        );
    }

    // Decisions still go through (merge patch, as kubectl does), and the
    // denial holds.
    let approve = json!({"conditions": [{"type": "Approved", "status": "True",
        "reason": "ByOfficer", "message": "ok", "lastTransitionTime": now.to_string()}]});
    assert_eq!(status_patch(&officer2, &ns, "fine", approve).await, None);
    h.wait_condition("fine", "Issued", "True", Some("Issued"))
        .await;
    let denied = h.api::<CertificateRequest>().get("denied").await.unwrap();
    let st = denied.status.unwrap();
    assert!(
        st.serial_number.is_none() && st.certificate.is_none(),
        "{st:?}"
    );
    assert!(records_of(&h, "denied").await.is_empty());
    assert!(records_of(&h, "pending").await.is_empty());

    h.child.stop();
    let Harness { env, .. } = h;
    env.cleanup().await.unwrap();
}

#[tokio::test]
async fn a_reservation_the_controller_did_not_make_is_never_signed() {
    let mut h = Harness::new().await;
    h.start(false);
    h.create_ca().await;
    let csr = h.csr("first");
    let first_serial = issue(&h, "first", "ra-0001", &csr).await;
    let first = h.api::<CertificateRequest>().get("first").await.unwrap();
    let first_sid = first.status.unwrap().subscriber_id.unwrap();
    h.child.stop();

    // Past the API server's policies (system:masters, or a restore from a
    // tampered backup): reservations the controller never made.
    let now = jiff::Timestamp::now();
    let year = now + jiff::SignedDuration::from_hours(24 * 365);
    let decades = now + jiff::SignedDuration::from_hours(24 * 365 * 30);
    let cases = [
        // (name, subscriber reference, accepted, decision, serial, notAfter, subscriber id)
        (
            "denied-reserved",
            "ra-0002",
            true,
            "Denied",
            a_serial(),
            year,
            Some("MOICA0000000002".to_string()),
        ),
        (
            "unaccepted-reserved",
            "ra-0003",
            false,
            "Approved",
            a_serial(),
            year,
            None,
        ),
        (
            "foreign-subscriber",
            "ra-0004",
            true,
            "Approved",
            a_serial(),
            year,
            Some(first_sid.clone()),
        ),
        (
            "long-validity",
            "ra-0001",
            true,
            "Approved",
            a_serial(),
            decades,
            Some(first_sid.clone()),
        ),
        (
            "adopt-another",
            "ra-0001",
            true,
            "Approved",
            first_serial.clone(),
            year,
            Some(first_sid.clone()),
        ),
    ];
    for (name, reference, accepted, decision, serial, not_after, sid) in &cases {
        let csr = h.csr(name);
        h.create_request(name, "Signature", reference, &csr, *accepted)
            .await;
        let body = json!({
            "apiVersion": "chop.dev/v1alpha1",
            "kind": "CertificateRequest",
            "status": {
                "conditions": [{"type": decision, "status": "True", "reason": "ByOfficer",
                    "message": "", "lastTransitionTime": now.to_string()}],
                "serialNumber": serial,
                "notBefore": now.to_string(),
                "notAfter": not_after.to_string(),
                "subscriberId": sid,
            }
        });
        h.api::<CertificateRequest>()
            .patch_status(
                name,
                &PatchParams::apply("attacker").force(),
                &Patch::Apply(&body),
            )
            .await
            .unwrap();
    }
    h.start(false);
    h.wait_condition("denied-reserved", "Issued", "False", Some("Denied"))
        .await;
    h.wait_condition(
        "unaccepted-reserved",
        "Issued",
        "False",
        Some("WaitingForAcceptance"),
    )
    .await;
    for name in ["foreign-subscriber", "long-validity"] {
        h.wait_condition(name, "Failed", "True", Some("InvalidReservation"))
            .await;
        warning_event(&h, name, "InvalidReservation").await;
    }
    h.wait_condition(
        "adopt-another",
        "Failed",
        "True",
        Some("ReservationConflict"),
    )
    .await;

    // Nothing was signed: the register holds the first certificate only, and
    // no request but `first` shows a certificate.
    let records = h
        .api::<IssuedCertificate>()
        .list(&ListParams::default().labels(SUBSCRIBER_RECORDS))
        .await
        .unwrap()
        .items;
    assert_eq!(records.len(), 1, "{records:#?}");
    assert_eq!(records[0].spec.serial_number, first_serial);
    assert_eq!(records[0].spec.request_ref.as_ref().unwrap().name, "first");
    for (name, ..) in &cases {
        let cr = h.api::<CertificateRequest>().get(name).await.unwrap();
        assert!(
            cr.status.unwrap().certificate.is_none(),
            "{name} got a certificate"
        );
    }

    h.child.stop();
    let Harness { env, .. } = h;
    env.cleanup().await.unwrap();
}

#[tokio::test]
async fn auto_approval_covers_subscriber_profiles_only() {
    let mut h = Harness::new().await;
    h.install_policies().await;
    h.start(false);
    h.create_ca_with(json!({"approval": {"autoApproveUsers": ["ra-bot"]}}))
        .await;
    let ns = h.ns().to_string();
    let ra = Api::<CertificateRequest>::namespaced(h.ra_user("ra-bot").await, &ns);
    let subject = json!({"country": "TW", "organization": "行政院", "commonName": "Rogue CA"});
    for (name, profile) in [
        ("rogue-ca", "SubordinateCA"),
        ("rogue-ocsp", "OCSPResponder"),
    ] {
        let csr = h.csr(name);
        let cr: CertificateRequest = serde_json::from_value(json!({
            "apiVersion": "chop.dev/v1alpha1", "kind": "CertificateRequest",
            "metadata": {"name": name},
            "spec": {"caRef": {"name": "root"}, "profile": profile, "subject": subject,
                     "csr": csr, "accepted": true}
        }))
        .unwrap();
        ra.create(&Default::default(), &cr).await.unwrap();
    }
    let csr = h.csr("citizen");
    ra.create(
        &Default::default(),
        &request_body("citizen", "Signature", "ra-0001", &csr, true),
    )
    .await
    .unwrap();
    // The subscriber request is auto-approved and issued (the policy works)...
    h.wait_condition("citizen", "Approved", "True", Some("AutoApproved"))
        .await;
    let issued = h
        .wait_condition("citizen", "Issued", "True", Some("Issued"))
        .await;
    // The API server stamped the controller's own identity as who decided.
    let decided_by = issued.status.unwrap().decided_by.unwrap();
    assert!(decided_by.contains("chop-controller"), "{decided_by}");
    // ...the CA and responder requests wait for an officer, with the reason.
    for name in ["rogue-ca", "rogue-ocsp"] {
        let cr = h
            .wait_condition(name, "Issued", "False", Some("OfficerApprovalRequired"))
            .await;
        let st = cr.status.unwrap();
        assert!(
            !st.conditions.iter().any(|c| c.type_ == "Approved"),
            "{name}: {st:?}"
        );
        assert!(st.serial_number.is_none(), "{name}: {st:?}");
        assert!(records_of(&h, name).await.is_empty(), "{name} was signed");
    }
    // An officer (not the requester) may still approve one: then it issues.
    let officer = h.user_with_role("officer-1", "chop:officer").await;
    decide(&officer, &ns, "rogue-ca", "Approved", "officer-1").await;
    h.wait_condition("rogue-ca", "Issued", "True", Some("Issued"))
        .await;

    h.child.stop();
    let Harness { env, .. } = h;
    env.cleanup().await.unwrap();
}

#[tokio::test]
async fn an_administrator_alone_gets_no_subordinate_ca_certificate() {
    let mut h = Harness::new().await;
    h.install_policies().await;
    h.start(false);
    let root = h.create_ca().await;
    let ns = h.ns().to_string();
    let admin = h.user_with_role("admin-1", "chop:administrator").await;
    let sub: CertificateAuthority = serde_json::from_value(json!({
        "apiVersion": "chop.dev/v1alpha1",
        "kind": "CertificateAuthority",
        "metadata": {"name": "sub"},
        "spec": {
            "type": "Subordinate",
            "parentRef": {"name": "root"},
            "subject": {"country": "TW", "organization": "行政院", "commonName": "Shadow CA"},
            "hsm": {"tokenLabel": "moica", "keyLabel": "shadow",
                    "pinSecretRef": {"name": "hsm-pin", "key": "pin"}, "keyGeneration": "IfMissing"}
        }
    }))
    .unwrap();
    Api::<CertificateAuthority>::namespaced(admin.clone(), &ns)
        .create(&Default::default(), &sub)
        .await
        .unwrap();
    let cas = h.api::<CertificateAuthority>();
    h.wait("sub waiting for an officer", 60, || {
        let cas = cas.clone();
        async move {
            let ca = cas.get("sub").await.ok()?;
            ca.status?
                .conditions
                .iter()
                .any(|c| {
                    c.type_ == "Ready" && c.status == "False" && c.reason == "WaitingForApproval"
                })
                .then_some(())
        }
    })
    .await;
    let cr = h
        .wait_condition(
            "sub-ca-certificate",
            "Issued",
            "False",
            Some("WaitingForApproval"),
        )
        .await;
    assert_eq!(cr.annotations()[REQUESTED_BY], "chop-controller");
    // The administrator cannot approve it.
    let now = jiff::Timestamp::now().to_string();
    let refused = status_patch(
        &admin,
        &ns,
        "sub-ca-certificate",
        json!({"conditions": [{"type": "Approved", "status": "True", "reason": "Self",
               "message": "", "lastTransitionTime": now}]}),
    )
    .await
    .expect("an administrator approved a CA certificate");
    assert!(refused.starts_with("403"), "{refused}");
    assert!(records_of(&h, "sub-ca-certificate").await.is_empty());
    let sub = cas.get("sub").await.unwrap();
    assert!(sub.status.unwrap().certificate.is_none());

    // Nor can they get a second CA on the root's key (a self-signed twin that
    // would sign like the root): the key is in use.
    let twin: CertificateAuthority = serde_json::from_value(json!({
        "apiVersion": "chop.dev/v1alpha1",
        "kind": "CertificateAuthority",
        "metadata": {"name": "twin"},
        "spec": {
            "type": "Root",
            "subject": {"country": "TW", "organization": "行政院", "organizationalUnits": ["內政部憑證管理中心"]},
            "hsm": {"tokenLabel": "moica", "keyLabel": "moica-root",
                    "pinSecretRef": {"name": "hsm-pin", "key": "pin"}, "keyGeneration": "Never"}
        }
    }))
    .unwrap();
    Api::<CertificateAuthority>::namespaced(admin.clone(), &ns)
        .create(&Default::default(), &twin)
        .await
        .unwrap();
    h.wait("twin refused: KeyInUse", 60, || {
        let cas = cas.clone();
        async move {
            let ca = cas.get("twin").await.ok()?;
            let st = ca.status?;
            assert!(st.certificate.is_none(), "the twin got a certificate");
            st.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "False" && c.reason == "KeyInUse")
                .then_some(())
        }
    })
    .await;
    warning_event(&h, "twin", "KeyInUse").await;
    h.wait_ca_ready("root").await;

    // An officer approves: the root signs, and the CA is Ready on that certificate.
    let officer = h.user_with_role("officer-1", "chop:officer").await;
    decide(&officer, &ns, "sub-ca-certificate", "Approved", "officer-1").await;
    let sub = h.wait_ca_ready("sub").await;
    let records = records_of(&h, "sub-ca-certificate").await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].spec.profile, "SubordinateCA");
    let st = sub.status.unwrap();
    assert_eq!(
        st.certificate.as_deref(),
        Some(records[0].spec.certificate.as_str())
    );
    let root_file = h.write(
        "root.pem",
        root.status.unwrap().certificate.as_deref().unwrap(),
    );
    let sub_file = h.write("sub.pem", st.certificate.as_deref().unwrap());
    openssl(
        &["verify", "-x509_strict", "-CAfile"],
        &[&root_file, &sub_file],
    );

    h.child.stop();
    let Harness { env, .. } = h;
    env.cleanup().await.unwrap();
}
