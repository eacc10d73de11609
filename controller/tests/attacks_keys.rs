//! Red team, issue 8 finding 6: keys the CA must never certify, against a real
//! kube-apiserver with the real `chop-controller` binary (SoftHSM2), the
//! attacker being a registration authority with exactly the shipped
//! `chop:registration-authority` role, and an officer approving in good faith.
//!
//! - `weak_keys_are_refused_with_the_flaw_named`: an RA submits a CSR whose key
//!   has public exponent 3, and (the CA accepting RA-attested keys) bare public
//!   keys whose modulus Fermat's method factors, whose modulus has the ROCA
//!   fingerprint, and a P-521 point off the curve. Each is Failed with its own
//!   reason (WeakKeyExponent, WeakKeyFermat, WeakKeyROCA, InvalidECPoint) and a
//!   Warning Event; no serial is reserved and the register stays empty.
//! - `a_key_revoked_for_key_compromise_is_never_certified_again`: a certificate
//!   is issued and revoked for keyCompromise; the same key under another
//!   request name, for the same subscriber and for another one, is Failed
//!   `KeyCompromised` naming the revoked serial; the same key as a bare public
//!   key re-encoded (RSA parameters absent, so another SHA-256) is refused as
//!   `Malformed`; nothing is signed. A key revoked for another reason
//!   (superseded) is certified again. A restarted controller (whose register
//!   index did not see the revocation happen) refuses the key as well, from
//!   its index (no LIST of the register per issuance, issue 12).
//!
//! The weak RSA keys are in `tests/data` (built by `tests/data/weak_keys.py`
//! from primes it computes).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use crds::{CertificateRequest, IssuedCertificate};
use der::{Decode, Encode};
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;
use x509_cert::spki::SubjectPublicKeyInfoOwned;

mod common;
use common::*;

/// A request for subscriber `reference` carrying `key`: `("csr", pem)` or
/// `("publicKey", pem)`.
fn request(name: &str, reference: &str, field: &str, key: &str) -> CertificateRequest {
    serde_json::from_value(json!({
        "apiVersion": "chop.dev/v1alpha1",
        "kind": "CertificateRequest",
        "metadata": {"name": name},
        "spec": {
            "caRef": {"name": "root"},
            "profile": "Signature",
            "subscriber": {"reference": reference, "commonName": "王小明"},
            field: key,
            "accepted": true
        }
    }))
    .unwrap()
}

fn data(file: &str) -> String {
    std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data")
            .join(file),
    )
    .unwrap()
}

/// Wait for Failed=True `reason` and its Warning Event; assert no serial was
/// reserved. The Failed message.
async fn refused(h: &Harness, name: &str, reason: &str) -> String {
    let cr = h.wait_condition(name, "Failed", "True", Some(reason)).await;
    warning_event(h, name, reason).await;
    let st = cr.status.unwrap();
    assert!(st.serial_number.is_none(), "{name}: a serial was reserved");
    assert!(st.certificate.is_none(), "{name}: a certificate was issued");
    st.conditions
        .into_iter()
        .find(|c| c.type_ == "Failed")
        .unwrap()
        .message
}

async fn register(h: &Harness) -> Vec<IssuedCertificate> {
    h.api::<IssuedCertificate>()
        .list(&ListParams::default().labels(SUBSCRIBER_RECORDS))
        .await
        .unwrap()
        .items
}

#[tokio::test]
async fn weak_keys_are_refused_with_the_flaw_named() {
    let mut h = Harness::new().await;
    h.install_policies().await;
    h.start(false);
    h.create_ca_with(json!({"profiles": {"allowAttestedPublicKeys": true}}))
        .await;
    let ra: Api<CertificateRequest> = Api::namespaced(h.ra_user("ra-mallory").await, h.ns());
    let pp = PostParams::default();

    // A CSR (with a valid proof of possession) for an exponent-3 key.
    let key = h.path("e3.key");
    let csr = h.path("e3.csr");
    let out = Command::new("openssl")
        .args(["req", "-new", "-newkey", "rsa:2048", "-pkeyopt"])
        .args([
            "rsa_keygen_pubexp:3",
            "-nodes",
            "-subj",
            "/CN=e3",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&csr)
        .output()
        .unwrap();
    assert!(out.status.success(), "openssl req: {out:?}");
    let e3 = std::fs::read_to_string(&csr).unwrap();

    // A P-521 public key with its y coordinate changed: off the curve.
    let ec = h.path("ec.key");
    openssl(
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-521",
            "-out",
        ],
        &[&ec],
    );
    let out = Command::new("openssl")
        .args(["pkey", "-pubout", "-outform", "DER", "-in"])
        .arg(&ec)
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut spki = out.stdout;
    *spki.last_mut().unwrap() ^= 0x01;
    let off_curve = ca::csr::to_pem("PUBLIC KEY", &spki).unwrap();

    let cases = [
        ("e3", "csr", e3, "WeakKeyExponent"),
        (
            "fermat",
            "publicKey",
            data("rsa-fermat.pub.pem"),
            "WeakKeyFermat",
        ),
        ("roca", "publicKey", data("rsa-roca.pub.pem"), "WeakKeyROCA"),
        ("off-curve", "publicKey", off_curve, "InvalidECPoint"),
    ];
    for (i, (name, field, key, _)) in cases.iter().enumerate() {
        ra.create(&pp, &request(name, &format!("ra-66{i:02}"), field, key))
            .await
            .unwrap();
        h.approve(name).await;
    }
    for (name, _, _, reason) in &cases {
        let message = refused(&h, name, reason).await;
        eprintln!("{name}: {reason}: {message}");
    }
    assert!(register(&h).await.is_empty(), "nothing is in the register");
    assert!(
        !h.logs().contains("serial reserved"),
        "no serial was reserved"
    );

    h.child.stop();
    let Harness { env, .. } = h;
    env.cleanup().await.unwrap();
}

#[tokio::test]
async fn a_key_revoked_for_key_compromise_is_never_certified_again() {
    let mut h = Harness::new().await;
    h.install_policies().await;
    h.start(false);
    h.create_ca_with(json!({"profiles": {"allowAttestedPublicKeys": true}}))
        .await;
    let ra: Api<CertificateRequest> = Api::namespaced(h.ra_user("ra-mallory").await, h.ns());
    let pp = PostParams::default();
    let submit = |name: &'static str, reference: &'static str, csr: String| {
        let (ra, pp) = (ra.clone(), pp.clone());
        async move {
            let field = if csr.contains("PUBLIC KEY") {
                "publicKey"
            } else {
                "csr"
            };
            ra.create(&pp, &request(name, reference, field, &csr))
                .await
                .unwrap();
        }
    };

    let alice = h.csr("alice");
    submit("alice-1", "ra-7001", alice.clone()).await;
    h.approve("alice-1").await;
    h.wait_condition("alice-1", "Issued", "True", Some("Issued"))
        .await;
    let bob = h.csr("bob");
    submit("bob-1", "ra-7002", bob.clone()).await;
    h.approve("bob-1").await;
    h.wait_condition("bob-1", "Issued", "True", Some("Issued"))
        .await;

    let compromised = revoke_request(&h, "alice-compromised", "alice-1", "keyCompromise").await;
    revoke_request(&h, "bob-superseded", "bob-1", "superseded").await;

    // The same key again: the same subscriber under another request name, and
    // another subscriber (whoever holds the key or a copy of its CSR).
    submit("alice-2", "ra-7001", alice.clone()).await;
    submit("mallory", "ra-7003", alice.clone()).await;
    // The same key in another encoding of its SubjectPublicKeyInfo (RSA
    // parameters absent instead of NULL), whose SHA-256 differs.
    let out = Command::new("openssl")
        .args(["pkey", "-pubout", "-outform", "DER", "-in"])
        .arg(h.path("alice.key"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut spki = SubjectPublicKeyInfoOwned::from_der(&out.stdout).unwrap();
    assert!(spki.algorithm.parameters.is_some());
    spki.algorithm.parameters = None;
    let reencoded = ca::csr::to_pem("PUBLIC KEY", &spki.to_der().unwrap()).unwrap();
    submit("mallory-reencoded", "ra-7004", reencoded).await;
    // A key revoked for another reason may be certified again.
    submit("bob-2", "ra-7002", bob).await;
    for name in ["alice-2", "mallory", "mallory-reencoded", "bob-2"] {
        h.approve(name).await;
    }
    let message = refused(&h, "mallory-reencoded", "Malformed").await;
    assert!(message.contains("NULL"), "{message}");
    for name in ["alice-2", "mallory"] {
        let message = refused(&h, name, "KeyCompromised").await;
        assert!(message.contains(&compromised), "{name}: {message}");
        assert!(message.contains("keyCompromise"), "{name}: {message}");
    }
    h.wait_condition("bob-2", "Issued", "True", Some("Issued"))
        .await;
    let records = register(&h).await;
    assert_eq!(records.len(), 3, "alice-1, bob-1, bob-2 and nothing else");
    let alice_records: Vec<_> = records
        .iter()
        .filter(|r| {
            r.spec
                .request_ref
                .as_ref()
                .is_some_and(|n| n.name.starts_with("alice") || n.name.starts_with("mallory"))
        })
        .collect();
    assert_eq!(alice_records.len(), 1);
    assert_eq!(alice_records[0].spec.serial_number, compromised);

    // A controller that did not apply the revocation itself (a restart, as
    // after a failover: its register index starts from its first list) refuses
    // the key too, from that index (issue 12: no LIST per issuance).
    h.child.stop();
    let before = h.logs().len();
    h.start(false);
    h.wait("the new controller's register index", 60, || {
        let logs = h.logs();
        async move {
            logs[before..]
                .contains("register index: first list complete")
                .then_some(())
        }
    })
    .await;
    submit("alice-3", "ra-7001", alice).await;
    h.approve("alice-3").await;
    let message = refused(&h, "alice-3", "KeyCompromised").await;
    assert!(message.contains(&compromised), "{message}");
    let logs = h.logs();
    assert!(
        logs[before..].contains("the register's index names the key's revoked records"),
        "the block list did not use the index: {logs}"
    );
    assert_eq!(register(&h).await.len(), 3, "nothing more was signed");

    h.child.stop();
    let Harness { env, .. } = h;
    env.cleanup().await.unwrap();
}
