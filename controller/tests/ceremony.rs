//! KeyCeremony end to end (issue 9): the real chop-controller under its shipped
//! role, the shipped trusted roles and admission policies on the real
//! kube-apiserver, SoftHSM2 and openssl, every participant a distinct user.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;

use common::ceremony::*;
use common::*;
use crds::{CertificateAuthority, KeyCeremony};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

/// The people of a ceremony, each a distinct user bound to a shipped role.
struct People {
    creator: kube::Client,
    admins: [kube::Client; 2],
    auditor: kube::Client,
    witness: kube::Client,
    officer_creator: kube::Client,
    officers: [kube::Client; 2],
}

impl People {
    async fn new(h: &Harness) -> People {
        People {
            creator: h.shipped_role_user("administrator.yaml", "admin-0").await,
            admins: [
                h.shipped_role_user("administrator.yaml", "admin-1").await,
                h.shipped_role_user("administrator.yaml", "admin-2").await,
            ],
            auditor: h.shipped_role_user("auditor.yaml", "auditor-1").await,
            witness: h.shipped_role_user("controller.yaml", "witness-1").await,
            officer_creator: h.shipped_role_user("officer.yaml", "officer-0").await,
            officers: [
                h.shipped_role_user("officer.yaml", "officer-1").await,
                h.shipped_role_user("officer.yaml", "officer-2").await,
            ],
        }
    }

    /// 2 administrators + 1 auditor + 1 controller approve `name`.
    async fn key_management_quorum(&self, h: &Harness, name: &str) {
        approve(h, &self.admins[0], "admin-1", name, "Administrator").await;
        approve(h, &self.admins[1], "admin-2", name, "Administrator").await;
        approve(h, &self.auditor, "auditor-1", name, "Auditor").await;
        approve(h, &self.witness, "witness-1", name, "Controller").await;
    }

    /// 2 officers + 1 controller approve `name`.
    async fn activation_quorum(&self, h: &Harness, name: &str) {
        approve(h, &self.officers[0], "officer-1", name, "Officer").await;
        approve(h, &self.officers[1], "officer-2", name, "Officer").await;
        approve(h, &self.witness, "witness-1", name, "Controller").await;
    }
}

/// `user` approves `name` in `role` as the docs say: server-side apply of one
/// entry of spec.approvals with their own field manager.
async fn approve(h: &Harness, client: &kube::Client, user: &str, name: &str, role: &str) {
    let hash = spec_hash(h, name).await;
    let body = json!({
        "apiVersion": "chop.dev/v1alpha1", "kind": "KeyCeremony",
        "metadata": {"name": name},
        "spec": {"approvals": [{"user": user, "role": role, "specHash": hash,
                                "reason": format!("{user} reviewed the ceremony")}]}
    });
    Api::<KeyCeremony>::namespaced(client.clone(), h.ns())
        .patch(
            name,
            &PatchParams::apply(&format!("approve-{}-{user}", &hash[..16])),
            &Patch::Apply(&body),
        )
        .await
        .unwrap_or_else(|e| panic!("{user} approving {name}: {e}"));
}

async fn ca_condition(h: &Harness, name: &str, reason: &str) -> CertificateAuthority {
    let api = h.api::<CertificateAuthority>();
    h.wait(&format!("CA {name}: Ready reason {reason}"), 60, || {
        let api = api.clone();
        async move {
            let ca = api.get(name).await.ok()?;
            let ok = ca
                .status
                .as_ref()?
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.reason == reason);
            ok.then_some(ca)
        }
    })
    .await
}

fn verify(h: &Harness, root: &Path, cert_pem: &str) -> String {
    let leaf = h.write("leaf.pem", cert_pem);
    openssl(
        &[
            "verify",
            "-CAfile",
            root.to_str().unwrap(),
            leaf.to_str().unwrap(),
        ],
        &[],
    )
}

#[tokio::test]
async fn generate_under_quorum_then_activate_issue_and_deactivate() {
    let mut h = Harness::new().await;
    h.install_policies().await;
    h.start(false);
    let people = People::new(&h).await;

    create_ceremony_ca(&h, "root", "root-2026", "root-2026-generate").await;
    create_ceremony(
        &h,
        (&people.creator, "admin-0"),
        "root-2026-generate",
        json!({"operation": "Generate", "caRef": {"name": "root"}, "reason": "root key, 2026"}),
    )
    .await;
    ca_condition(&h, "root", "WaitingForCeremony").await;

    // Three of four: the ceremony waits, nothing is in the token.
    approve(
        &h,
        &people.admins[0],
        "admin-1",
        "root-2026-generate",
        "Administrator",
    )
    .await;
    approve(
        &h,
        &people.admins[1],
        "admin-2",
        "root-2026-generate",
        "Administrator",
    )
    .await;
    approve(
        &h,
        &people.auditor,
        "auditor-1",
        "root-2026-generate",
        "Auditor",
    )
    .await;
    let api = h.api::<KeyCeremony>();
    h.wait("quorum 3/4", 30, || {
        let api = api.clone();
        async move {
            let q = api.get("root-2026-generate").await.ok()?.status?.quorum?;
            (q.progress == "3/4").then_some(())
        }
    })
    .await;
    let kc = api.get("root-2026-generate").await.unwrap();
    assert!(
        outcome(&kc).contains("missing 1 Controller"),
        "{}",
        outcome(&kc)
    );
    assert_eq!(token_objects(&h), 0, "no key before the quorum");

    // The witness completes it.
    approve(
        &h,
        &people.witness,
        "witness-1",
        "root-2026-generate",
        "Controller",
    )
    .await;
    let kc = wait_phase(&h, "root-2026-generate", "Succeeded").await;
    let st = kc.status.clone().unwrap();
    let ceremony_cert = st
        .certificate
        .clone()
        .expect("the ceremony signed the root");
    let fp = st.key.as_ref().unwrap().fingerprint.clone().unwrap();
    assert_eq!(token_objects(&h), 2, "one key pair");
    let steps: Vec<_> = st
        .steps
        .iter()
        .map(|s| format!("{}:{}", s.name, s.outcome))
        .collect();
    assert_eq!(
        steps,
        [
            "QuorumMet:Succeeded",
            "GenerateKey:Started",
            "GenerateKey:Succeeded",
            "SelfSign:Succeeded"
        ]
    );
    let counted: Vec<_> = st
        .quorum
        .unwrap()
        .approvals
        .iter()
        .filter(|a| a.counted)
        .map(|a| a.user.clone())
        .collect();
    assert_eq!(counted, ["admin-1", "admin-2", "auditor-1", "witness-1"]);

    // The CA takes that key and that certificate, and does not sign yet.
    let ca = h.wait_ca_ready("root").await;
    assert_eq!(
        ca.status.as_ref().unwrap().certificate.as_deref(),
        Some(ceremony_cert.as_str())
    );
    let root = h.write("root.pem", &ceremony_cert);
    let pubkey = openssl(
        &["x509", "-in", root.to_str().unwrap(), "-noout", "-pubkey"],
        &[],
    );
    assert!(pubkey.contains("BEGIN PUBLIC KEY"));
    assert!(fp.len() == 64);

    let ra: Api<crds::CertificateRequest> = Api::namespaced(h.ra_user("ra-1").await, h.ns());
    let csr = h.csr("alice");
    ra.create(
        &PostParams::default(),
        &request_body("alice", "Signature", "A100000001", &csr, true),
    )
    .await
    .unwrap();
    h.approve("alice").await;
    h.wait_condition("alice", "Issued", "False", Some("IssuanceSuspended"))
        .await;

    // Activation: two officers and the witness; the officer who asked does not count.
    create_ceremony(
        &h,
        (&people.officer_creator, "officer-0"),
        "root-activate",
        json!({"operation": "Activate", "caRef": {"name": "root"}, "reason": "start issuance"}),
    )
    .await;
    people.activation_quorum(&h, "root-activate").await;
    let kc = wait_phase(&h, "root-activate", "Succeeded").await;
    assert!(
        outcome(&kc).contains("issuance Enabled"),
        "{}",
        outcome(&kc)
    );
    let cr = h
        .wait_condition("alice", "Issued", "True", Some("Issued"))
        .await;
    let out = verify(
        &h,
        &root,
        cr.status.as_ref().unwrap().certificate.as_deref().unwrap(),
    );
    assert!(out.contains(": OK"), "{out}");

    // Deactivation: requests wait again.
    create_ceremony(
        &h,
        (&people.officer_creator, "officer-0"),
        "root-deactivate",
        json!({"operation": "Deactivate", "caRef": {"name": "root"}, "reason": "stop issuance"}),
    )
    .await;
    people.activation_quorum(&h, "root-deactivate").await;
    wait_phase(&h, "root-deactivate", "Succeeded").await;
    let bob = h.csr("bob");
    ra.create(
        &PostParams::default(),
        &request_body("bob", "Signature", "A100000002", &bob, true),
    )
    .await
    .unwrap();
    h.approve("bob").await;
    h.wait_condition("bob", "Issued", "False", Some("IssuanceSuspended"))
        .await;
    // ...counted where operators look (alert ChopRequestsStuck).
    let waiting = "chop_certificate_requests_waiting{ca=\"root\",reason=\"IssuanceSuspended\"} 1";
    h.wait("the waiting request in /metrics", 10, || async {
        http_get(h.metrics_port, "/metrics")
            .contains(waiting)
            .then_some(())
    })
    .await;

    // Destroy is refused while alice's certificate needs the key for CRLs/OCSP.
    create_ceremony(
        &h,
        (&people.creator, "admin-0"),
        "root-destroy",
        json!({"operation": "Destroy", "caRef": {"name": "root"}, "reason": "retire"}),
    )
    .await;
    people.key_management_quorum(&h, "root-destroy").await;
    let kc = wait_phase(&h, "root-destroy", "Failed").await;
    assert!(
        outcome(&kc).starts_with("KeyStillNeeded: 1 certificate"),
        "{}",
        outcome(&kc)
    );
    assert_eq!(token_objects(&h), 2, "the key is still there");

    // The audit trail (CPS §5.4) holds the ceremonies with their people: it
    // verifies against the published audit key, each approval names the user
    // the API server authenticated, and the key generation's record precedes
    // the ceremony's outcome.
    let records = verified_trail(&h).await;
    let about = |event: &str, name: &str| -> Vec<&crds::audit_segment::AuditRecord> {
        records
            .iter()
            .filter(|r| r.event == event && r.object.as_ref().is_some_and(|o| o.name == name))
            .collect()
    };
    let counted: std::collections::BTreeSet<&str> =
        about("ceremony.approval", "root-2026-generate")
            .iter()
            .filter(|r| r.reason.as_deref() == Some("Counted"))
            .flat_map(|r| r.users.iter().filter(|u| u.role == "approvedBy"))
            .map(|u| u.user.as_str())
            .collect();
    assert_eq!(
        counted,
        ["admin-1", "admin-2", "auditor-1", "witness-1"].into(),
        "the generate ceremony's counted approvals"
    );
    let steps = about("ceremony.step", "root-2026-generate");
    let generate = steps
        .iter()
        .find(|r| r.details.get("purpose").map(String::as_str) == Some("ceremony-generate"))
        .unwrap_or_else(|| panic!("no ceremony-generate step: {steps:#?}"));
    assert_eq!(generate.outcome, "intent");
    let finished = about("ceremony.finished", "root-2026-generate");
    assert_eq!(finished.len(), 1, "{finished:#?}");
    assert!(generate.sequence < finished[0].sequence);
    let destroy = about("ceremony.finished", "root-destroy");
    assert_eq!(destroy.len(), 1, "{destroy:#?}");
    assert_eq!(
        destroy[0].reason.as_deref(),
        Some("KeyStillNeeded"),
        "{destroy:#?}"
    );
    h.env.cleanup().await.unwrap();
}

/// The audit trail read from the API server, verified with `chop_audit` against
/// the key the controller published; its records.
async fn verified_trail(h: &Harness) -> Vec<crds::audit_segment::AuditRecord> {
    use k8s_openapi::api::core::v1::ConfigMap;
    let mut segs = h
        .api::<crds::AuditSegment>()
        .list(&Default::default())
        .await
        .unwrap()
        .items;
    segs.sort_by_key(|s| s.spec.index);
    let data = h
        .api::<ConfigMap>()
        .get("chop-audit-key")
        .await
        .unwrap()
        .data
        .unwrap();
    let spki = chop_audit::key::spki_from_pem(&data["audit-key.pem"]).unwrap();
    let named: Vec<(String, crds::AuditSegmentSpec)> = segs
        .iter()
        .map(|s| (s.metadata.name.clone().unwrap(), s.spec.clone()))
        .collect();
    if let Err(p) = chop_audit::verify::verify_named(&named, &spki) {
        panic!("the trail does not verify: {p}");
    }
    segs.into_iter().flat_map(|s| s.spec.records).collect()
}

#[tokio::test]
async fn crashes_in_each_step_yield_one_key_one_root_and_an_idempotent_destroy() {
    let mut h = Harness::new().await;
    h.install_policies().await;
    h.start_with(Some("CHOP_TEST_CRASH_AFTER_GENERATEKEY"));
    let people = People::new(&h).await;
    create_ceremony_ca(&h, "spare", "spare-key", "spare-generate").await;
    create_ceremony(
        &h,
        (&people.creator, "admin-0"),
        "spare-generate",
        json!({"operation": "Generate", "caRef": {"name": "spare"}, "reason": "spare root"}),
    )
    .await;
    people.key_management_quorum(&h, "spare-generate").await;

    // 1. Killed right after the key was made, before it was recorded.
    h.wait_for_abort("after generating the key", 60).await;
    assert_eq!(
        token_objects(&h),
        2,
        "the key pair was made before the crash"
    );
    let kc = h.api::<KeyCeremony>().get("spare-generate").await.unwrap();
    let st = kc.status.unwrap();
    assert!(st.key.as_ref().unwrap().fingerprint.is_none());
    assert!(
        !st.key.as_ref().unwrap().key_id.is_empty(),
        "the key id was reserved first"
    );

    // 2. Restarted, it finds its own key (reserved id), reserves the root's
    //    serial, signs, and is killed before recording the certificate.
    h.start_with(Some("CHOP_TEST_CRASH_AFTER_SELFSIGN"));
    h.wait_for_abort("after self-signing", 60).await;
    assert_eq!(token_objects(&h), 2, "never two keys");
    let kc = h.api::<KeyCeremony>().get("spare-generate").await.unwrap();
    let st = kc.status.unwrap();
    assert!(st.certificate.is_none(), "no certificate recorded yet");
    let reserved = st.reserved.unwrap().serial_number;

    // 3. Restarted again: the same key, a root with the reserved serial, done.
    h.start(false);
    let kc = wait_phase(&h, "spare-generate", "Succeeded").await;
    let st = kc.status.unwrap();
    assert_eq!(token_objects(&h), 2, "never two keys");
    let msgs: Vec<_> = st.steps.iter().filter_map(|s| s.message.clone()).collect();
    assert!(
        msgs.iter()
            .any(|m| m.contains("made by this ceremony before a restart")),
        "{msgs:?}"
    );
    let cert = h.write("spare.pem", st.certificate.as_deref().unwrap());
    let serial = openssl(
        &["x509", "-in", cert.to_str().unwrap(), "-noout", "-serial"],
        &[],
    );
    assert_eq!(
        serial
            .trim()
            .trim_start_matches("serial=")
            .trim_start_matches('0'),
        reserved.trim_start_matches('0'),
        "the root carries the serial reserved before the crash"
    );
    h.wait_ca_ready("spare").await;

    // 4. Destroy, killed right after the key objects went: restarted, it
    //    completes without a second attempt failing.
    h.child.stop();
    h.start_with(Some("CHOP_TEST_CRASH_AFTER_DESTROYKEY"));
    create_ceremony(
        &h,
        (&people.creator, "admin-0"),
        "spare-destroy",
        json!({"operation": "Destroy", "caRef": {"name": "spare"}, "reason": "never used"}),
    )
    .await;
    people.key_management_quorum(&h, "spare-destroy").await;
    h.wait_for_abort("after destroying the key", 60).await;
    assert_eq!(
        token_objects(&h),
        0,
        "the key objects are gone from the token"
    );
    h.start(false);
    let kc = wait_phase(&h, "spare-destroy", "Succeeded").await;
    assert!(
        outcome(&kc).contains("signs nothing more"),
        "{}",
        outcome(&kc)
    );
    ca_condition(&h, "spare", "KeyDestroyed").await;
    h.env.cleanup().await.unwrap();
}

/// Patch the PIN Secret and nudge the CA (an annotation) so it looks again.
async fn set_pin(h: &Harness, pin: &str, nudge: &str) {
    use k8s_openapi::api::core::v1::Secret;
    h.api::<Secret>()
        .patch(
            "hsm-pin",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"pin": pin}})),
        )
        .await
        .unwrap();
    h.api::<CertificateAuthority>()
        .patch(
            "pinned",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"test/nudge": nudge}}})),
        )
        .await
        .unwrap();
}

async fn pin_failures(h: &Harness, want: i32) {
    let api = h.api::<CertificateAuthority>();
    h.wait(&format!("pinFailures {want}"), 30, || {
        let api = api.clone();
        async move {
            let st = api.get("pinned").await.ok()?.status?;
            (st.pin_failures == Some(want)).then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn three_wrong_pins_lock_the_token_until_an_activate_ceremony() {
    use k8s_openapi::api::core::v1::Secret;
    let mut h = Harness::new().await;
    h.install_policies().await;
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "hsm-pin"}, "stringData": {"pin": "wrong-1"}
    }))
    .unwrap();
    h.api::<Secret>()
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    h.start(false);
    h.create_ca_spec("pinned", "pinned-key", "IfMissing", json!({}))
        .await;

    // One wrong PIN is tried once, not again until the Secret changes.
    ca_condition(&h, "pinned", "HsmPinIncorrect").await;
    pin_failures(&h, 1).await;
    set_pin(&h, "wrong-1", "a").await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    pin_failures(&h, 1).await;

    // Two more wrong PINs: locked.
    set_pin(&h, "wrong-2", "b").await;
    pin_failures(&h, 2).await;
    set_pin(&h, "wrong-3", "c").await;
    pin_failures(&h, 3).await;
    let ca = ca_condition(&h, "pinned", "ActivationDataLocked").await;
    assert!(ca.status.unwrap().pin_locked_at.is_some());

    // The right PIN alone does not unlock: the controller no longer tries.
    set_pin(&h, PIN, "d").await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let ca = ca_condition(&h, "pinned", "ActivationDataLocked").await;
    assert_eq!(ca.status.unwrap().pin_failures, Some(3));

    // An Activate ceremony of two officers and a witness does.
    let officer0 = h.shipped_role_user("officer.yaml", "officer-0").await;
    let officers = [
        h.shipped_role_user("officer.yaml", "officer-1").await,
        h.shipped_role_user("officer.yaml", "officer-2").await,
    ];
    let witness = h.shipped_role_user("controller.yaml", "witness-1").await;
    create_ceremony(
        &h,
        (&officer0, "officer-0"),
        "pinned-activate",
        json!({"operation": "Activate", "caRef": {"name": "pinned"}, "reason": "PIN corrected"}),
    )
    .await;
    approve(&h, &officers[0], "officer-1", "pinned-activate", "Officer").await;
    approve(&h, &officers[1], "officer-2", "pinned-activate", "Officer").await;
    approve(&h, &witness, "witness-1", "pinned-activate", "Controller").await;
    wait_phase(&h, "pinned-activate", "Succeeded").await;
    let ca = h.wait_ca_ready("pinned").await;
    assert_eq!(ca.status.unwrap().pin_failures, None);
    h.env.cleanup().await.unwrap();
}

/// A root CA on a ceremony key, generated and activated under quorum.
async fn ceremony_root(h: &Harness, people: &People, ca: &str) -> String {
    create_ceremony_ca(h, ca, &format!("{ca}-key"), &format!("{ca}-generate")).await;
    create_ceremony(
        h,
        (&people.creator, "admin-0"),
        &format!("{ca}-generate"),
        json!({"operation": "Generate", "caRef": {"name": ca}, "reason": "generation key"}),
    )
    .await;
    people
        .key_management_quorum(h, &format!("{ca}-generate"))
        .await;
    wait_phase(h, &format!("{ca}-generate"), "Succeeded").await;
    create_ceremony(
        h,
        (&people.officer_creator, "officer-0"),
        &format!("{ca}-activate"),
        json!({"operation": "Activate", "caRef": {"name": ca}, "reason": "start"}),
    )
    .await;
    people.activation_quorum(h, &format!("{ca}-activate")).await;
    wait_phase(h, &format!("{ca}-activate"), "Succeeded").await;
    let ca = h.wait_ca_ready(ca).await;
    ca.status.unwrap().certificate.unwrap()
}

#[tokio::test]
async fn changeover_to_a_new_key_keeps_the_old_keys_crls() {
    let mut h = Harness::new().await;
    h.install_policies().await;
    h.start(false);
    let people = People::new(&h).await;
    let ra: Api<crds::CertificateRequest> = Api::namespaced(h.ra_user("ra-1").await, h.ns());

    // Generation 1 issues A; its CRLs are scheduled.
    let g1_pem = ceremony_root(&h, &people, "g1").await;
    let g1 = h.write("g1.pem", &g1_pem);
    let s: crds::CRLSchedule = serde_json::from_value(json!({
        "apiVersion": "chop.dev/v1alpha1", "kind": "CRLSchedule", "metadata": {"name": "g1"},
        "spec": {"caRef": {"name": "g1"}, "interval": "1h", "validity": "36h", "overlap": "12h"}
    }))
    .unwrap();
    h.api::<crds::CRLSchedule>()
        .create(&PostParams::default(), &s)
        .await
        .unwrap();
    let (a_serial, a_pem) = issue_at(&h, &ra, "g1", "a", "A100000001").await;
    let a = h.write("a.pem", &a_pem);

    // Changeover: generation 2 on a new key, generation 1 deactivated.
    let g2_pem = ceremony_root(&h, &people, "g2").await;
    let g2 = h.write("g2.pem", &g2_pem);
    create_ceremony(
        &h,
        (&people.officer_creator, "officer-0"),
        "g1-deactivate",
        json!({"operation": "Deactivate", "caRef": {"name": "g1"}, "reason": "changeover to g2"}),
    )
    .await;
    people.activation_quorum(&h, "g1-deactivate").await;
    wait_phase(&h, "g1-deactivate", "Succeeded").await;
    let (_, b_pem) = issue_at(&h, &ra, "g2", "b", "A100000002").await;
    let b = h.write("b.pem", &b_pem);
    let out = verify(&h, &g2, &b_pem);
    assert!(
        out.contains(": OK"),
        "new certificates chain to the new key: {out}"
    );
    let (ok, out) = run_text(
        std::process::Command::new("openssl")
            .args(["verify", "-CAfile"])
            .arg(&g1)
            .arg(&b),
    );
    assert!(!ok, "not to the old one: {out}");

    // The old key still revokes: A is revoked and lands on g1's CRL.
    revoke(
        &h,
        "revoke-a",
        json!({"caRef": {"name": "g1"}, "serialNumber": a_serial}),
        "keyCompromise",
    )
    .await;
    let client = h.env.admin();
    let ns = h.ns().to_string();
    let der = h
        .wait("g1's CRL lists A", 60, || {
            let (client, ns, a_serial) = (client.clone(), ns.clone(), a_serial.clone());
            let h = &h;
            async move {
                let der = controller::publish::read_crl(&client, &ns, "g1")
                    .await
                    .ok()?;
                let text = crl_text(h, "g1-crl", &der);
                text.contains(&a_serial).then_some(der)
            }
        })
        .await;
    let (ok, out) = verify_with_crl(&h, "g1-crl", &der, &g1, &a);
    assert!(!ok && out.contains("certificate revoked"), "{out}");
    h.env.cleanup().await.unwrap();
}
