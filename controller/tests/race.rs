//! Races on the register (issue 8, finding 3): revocations, holds, resumptions
//! and renewals landing on the same certificates at the same time, with the
//! controller killed in between, on the real API server with the real
//! `chop-controller` (least-privilege role, SoftHSM2) and the real
//! `chop-responder --kube`. After quiescence, for every serial the register,
//! the published CRL (`openssl crl -text`) and OCSP (`openssl ocsp`) agree.
//!
//! - `a_revocation_landing_inside_a_resume_stays_on_the_crl`: the exact
//!   interleaving of the finding, made deterministic with the test hook
//!   `CHOP_TEST_PAUSE_IN_RESUME=1` (a resume pauses after it decided): a
//!   Revocation lands while a resume of the same certificate is paused. The
//!   record ends Revoked (state and label), the CRL lists it with the
//!   Revocation's reason, OCSP says revoked, the Suspension is Superseded.
//!   An officer (shipped role) cannot write the record's state (403), and
//!   nobody can change its spec (`self == oldSelf`).
//! - `a_renewal_signed_after_its_original_was_revoked_is_revoked_too`: a
//!   renewal claims its original and the controller dies after reserving the
//!   renewal's serial (`CHOP_TEST_CRASH_AFTER_RESERVE=1`); the original is
//!   revoked meanwhile. After the restart the renewal signs a certificate of
//!   the revoked key, and the Revocation (Applied=False WaitingForRenewal
//!   until then) revokes it too.
//! - `concurrent_revoke_hold_resume_renew_with_restarts_agree`: a seeded
//!   random mix (seed printed; `CHOP_RACE_SEED` replays one) of concurrent
//!   operations on six certificates, in four waves of ten with the controller
//!   killed during the first three. Half of the resumptions come with a
//!   revocation of the same certificate a moment later, and the controller
//!   runs with the resume pause hook, which widens every resume's
//!   read-to-write window;
//!   then every serial agrees in the three views, every Revocation that
//!   reported Applied=True is on the CRL, and no certificate of a revoked key
//!   (a renewal keeps the key) is left valid or only held.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use controller::publish;
use crds::{CRLSchedule, CertificateAuthority, CertificateRequest, IssuedCertificate};
use crds::{Revocation, Suspension};
use kube::ResourceExt;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use serde_json::{Value, json};

mod common;
use common::*;

/// chop-responder's binary (`CHOP_RESPONDER_BIN`, else built on demand, see
/// controller/tests/responder.rs).
fn responder_bin() -> PathBuf {
    if let Some(b) = std::env::var_os("CHOP_RESPONDER_BIN") {
        return b.into();
    }
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .join("chop-responder");
    if !bin.exists() {
        let st = Command::new(env!("CARGO"))
            .args(["build", "-p", "chop-responder", "--bin", "chop-responder"])
            .status()
            .unwrap();
        assert!(st.success(), "cargo build -p chop-responder");
    }
    bin
}

/// The world of one test: the controller (started with `hook`), CA `root`
/// issuing 30-day certificates (inside their renewal window), CRLSchedule
/// `moica` and chop-responder as the CA's ServiceAccount.
struct World {
    h: Harness,
    ca_pem: PathBuf,
    port: u16,
    _responder: ChildGuard,
}

async fn world(hook: Option<&str>) -> World {
    let mut h = Harness::new().await;
    h.start_with(hook);
    let ca = h
        .create_ca_with(json!({"profiles": {"subscriberValidity": "720h"}}))
        .await;
    let ca_pem = h.write(
        "ca.pem",
        ca.status.as_ref().unwrap().certificate.as_ref().unwrap(),
    );
    create::<CRLSchedule>(
        &h,
        json!({"apiVersion": "chop.dev/v1alpha1", "kind": "CRLSchedule",
               "metadata": {"name": "moica"},
               "spec": {"caRef": {"name": "root"}, "interval": "1h", "validity": "36h", "overlap": "12h"}}),
    )
    .await;
    h.wait("ResponderReady", 60, || async {
        let ca = h.api::<CertificateAuthority>().get("root").await.ok()?;
        ca.status?
            .conditions
            .iter()
            .any(|c| c.type_ == "ResponderReady" && c.status == "True")
            .then_some(())
    })
    .await;
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
    let safe = h.path("responder.kubeconfig");
    std::fs::copy(&kubeconfig, &safe).unwrap();
    let port = free_port();
    let log = std::fs::File::create(h.path("responder.log")).unwrap();
    let responder = ChildGuard(Some(
        Command::new(responder_bin())
            .args(["serve", "--kube", "--namespace", &ns, "--ca", "root"])
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .env("KUBECONFIG", &safe)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    ));
    World {
        h,
        ca_pem,
        port,
        _responder: responder,
    }
}

/// Serial without leading zeros, upper case: how the three views are compared.
fn norm(serial: &str) -> String {
    let s = serial.trim().trim_start_matches("0x").to_ascii_uppercase();
    let s = s.trim_start_matches('0');
    if s.is_empty() { "0".into() } else { s.into() }
}

/// `keyCompromise` → `Key Compromise` (openssl's CRL text).
fn crl_reason_text(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if i == 0 {
            out.push(c.to_ascii_uppercase());
        } else if c.is_ascii_uppercase() {
            out.push(' ');
            out.push(c);
        } else {
            out.push(c);
        }
    }
    out
}

/// A certificate's status as one view states it: `Valid`, or the reason of a
/// revocation (`certificateHold` for a hold).
type View = BTreeMap<String, String>;

/// The register: every subscriber record's state from `status.state`, which
/// must equal its `chop.dev/status` label; revoked and held records map to
/// their reason.
async fn register_view(h: &Harness) -> Result<View, String> {
    let records = h
        .api::<IssuedCertificate>()
        .list(&ListParams::default().labels(SUBSCRIBER_RECORDS))
        .await
        .map_err(|e| e.to_string())?;
    let mut view = View::new();
    for r in records.items {
        let (st, label) = state(&r);
        let st = st.unwrap_or_else(|| "Valid".into());
        if st != label {
            return Err(format!(
                "{}: status.state {st} but label chop.dev/status {label}",
                r.name_any()
            ));
        }
        let reason = r.status.as_ref().and_then(|s| s.reason.clone());
        let v = match st.as_str() {
            "Valid" => "Valid".to_string(),
            "Held" => "certificateHold".to_string(),
            _ => reason.unwrap_or_else(|| "unspecified".into()),
        };
        view.insert(norm(&r.spec.serial_number), v);
    }
    Ok(view)
}

/// A revocation reaches every certificate of the key (CPS §4.6.2, §6.3): in
/// the register, no certificate of a revoked key is Valid or only Held, also
/// when it was a renewal (same key) issued while the revocation ran.
async fn keys_revoked_whole(h: &Harness) -> Result<(), String> {
    let records = h
        .api::<IssuedCertificate>()
        .list(&ListParams::default().labels(SUBSCRIBER_RECORDS))
        .await
        .map_err(|e| e.to_string())?;
    let revoked = |r: &IssuedCertificate| state(r).0.as_deref() == Some("Revoked");
    for r in &records.items {
        if !revoked(r) {
            continue;
        }
        for other in &records.items {
            if other.spec.key_fingerprint == r.spec.key_fingerprint && !revoked(other) {
                return Err(format!(
                    "{} is revoked but {} of the same key is {:?}",
                    r.name_any(),
                    other.name_any(),
                    state(other)
                ));
            }
        }
    }
    Ok(())
}

/// The published CRL `moica` (from its ConfigMaps), by `openssl crl -text`:
/// serial → reason as openssl prints it.
async fn crl_view(h: &Harness) -> Result<BTreeMap<String, String>, String> {
    let client = h.env.admin();
    let der = publish::read_crl(&client, h.ns(), "moica")
        .await
        .map_err(|e| e.to_string())?;
    let text = crl_text(h, "race-crl", &der);
    let mut out = BTreeMap::new();
    let mut serial: Option<String> = None;
    let mut lines = text.lines().peekable();
    while let Some(l) = lines.next() {
        let l = l.trim();
        if let Some(s) = l.strip_prefix("Serial Number:") {
            if let Some(prev) = serial.take() {
                out.insert(prev, String::new());
            }
            serial = Some(norm(s));
        } else if l.starts_with("X509v3 CRL Reason Code")
            && let Some(s) = serial.take()
        {
            out.insert(s, lines.next().unwrap_or("").trim().to_string());
        }
    }
    if let Some(prev) = serial.take() {
        out.insert(prev, String::new());
    }
    Ok(out)
}

/// `openssl ocsp` for `serial` against chop-responder: `good`, or the
/// revocation reason, or what went wrong.
fn ocsp_view(w: &World, serial: &str) -> String {
    let arg = format!("0x{}", norm(serial));
    let (_, text) = run_text(
        Command::new("openssl")
            .args(["ocsp", "-no_nonce", "-resp_text", "-url"])
            .arg(format!("http://127.0.0.1:{}/", w.port))
            .arg("-issuer")
            .arg(&w.ca_pem)
            .arg("-CAfile")
            .arg(&w.ca_pem)
            .arg("-serial")
            .arg(&arg),
    );
    if !text.contains("Response verify OK") {
        return format!("unverified: {text}");
    }
    let prefix = format!("{arg}: ");
    let word = text
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or("")
        .trim()
        .to_string();
    match word.as_str() {
        "good" => "Valid".into(),
        "revoked" => text
            .lines()
            .find_map(|l| l.trim().strip_prefix("Reason: "))
            .unwrap_or("unspecified")
            .trim()
            .to_string(),
        _ => format!("{word}: {text}"),
    }
}

/// One comparison of the three views; `Err` names the first disagreement.
async fn compare(w: &World) -> Result<usize, String> {
    let reg = register_view(&w.h).await?;
    keys_revoked_whole(&w.h).await?;
    let crl = crl_view(&w.h).await?;
    for (serial, want) in &reg {
        let on_crl = crl.get(serial);
        match (want.as_str(), on_crl) {
            ("Valid", None) => {}
            ("Valid", Some(r)) => {
                return Err(format!("{serial}: Valid in the register, on the CRL ({r})"));
            }
            (reason, None) => {
                return Err(format!(
                    "{serial}: {reason} in the register, not on the CRL"
                ));
            }
            (reason, Some(r)) if *r != crl_reason_text(reason) => {
                return Err(format!(
                    "{serial}: {reason} in the register, {r:?} on the CRL"
                ));
            }
            _ => {}
        }
        let ocsp = ocsp_view(w, serial);
        if ocsp != *want {
            return Err(format!(
                "{serial}: {want} in the register, OCSP says {ocsp}"
            ));
        }
    }
    for serial in crl.keys() {
        if !reg.contains_key(serial) {
            return Err(format!("{serial} is on the CRL but not in the register"));
        }
    }
    Ok(reg.len())
}

/// Poll until the register, the CRL and OCSP agree on every serial (the CRL is
/// re-signed within a second or two of a change); fail with the last
/// disagreement and the logs after `secs`.
async fn agree(w: &World, secs: u64) -> usize {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        match compare(w).await {
            Ok(n) => return n,
            Err(e) if Instant::now() > deadline => panic!(
                "the register, the CRL and OCSP disagree: {e}\nresponder log:\n{}\ncontroller log (tail):\n{}",
                std::fs::read_to_string(w.h.path("responder.log")).unwrap_or_default(),
                tail(&w.h.logs(), 200)
            ),
            Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<_> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn applied(r: &Revocation) -> bool {
    r.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Applied" && c.status == "True")
    })
}

/// Every Revocation that reported Applied=True: each of its serials is Revoked
/// in the register and on the CRL (with a revocation reason, not a hold).
async fn revocations_on_crl(w: &World) -> usize {
    let crl = crl_view(&w.h).await.unwrap();
    let reg = register_view(&w.h).await.unwrap();
    let mut n = 0;
    for r in
        w.h.api::<Revocation>()
            .list(&ListParams::default())
            .await
            .unwrap()
    {
        if !applied(&r) {
            continue;
        }
        n += 1;
        for serial in &r.status.as_ref().unwrap().serial_numbers {
            let s = norm(serial);
            let on = crl.get(&s).map(String::as_str).unwrap_or("absent");
            assert!(
                on != "absent" && on != "Certificate Hold",
                "Revocation {} (Applied=True) named {s}: CRL says {on}",
                r.name_any()
            );
            let st = reg.get(&s).map(String::as_str).unwrap_or("absent");
            assert!(
                st != "Valid" && st != "certificateHold" && st != "absent",
                "Revocation {} (Applied=True) named {s}: register says {st}",
                r.name_any()
            );
        }
    }
    n
}

fn suspension(name: &str, request: &str) -> Value {
    json!({"apiVersion": "chop.dev/v1alpha1", "kind": "Suspension",
           "metadata": {"name": name},
           "spec": {"caRef": {"name": "root"}, "certificateRequestRef": {"name": request},
                    "requester": "Subscriber"}})
}

async fn set_resumed(h: &Harness, name: &str) {
    h.api::<Suspension>()
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"resumed": true}})),
        )
        .await
        .unwrap();
}

fn log_has(h: &Harness, needle: &str) -> bool {
    h.logs().contains(needle)
}

#[tokio::test]
async fn a_revocation_landing_inside_a_resume_stays_on_the_crl() {
    let w = world(Some("CHOP_TEST_PAUSE_IN_RESUME")).await;
    let h = &w.h;
    let csr = h.csr("wu");
    let serial = issue(h, "wu", "ra-2001", &csr).await;
    create::<Suspension>(h, suspension("wu-hold", "wu")).await;
    wait_record(h, &serial, "Held").await;
    agree(&w, 20).await;

    // Resume; while the resume is paused (it has read the record and decided),
    // revoke the certificate.
    set_resumed(h, "wu-hold").await;
    h.wait("the resume to pause", 30, || async {
        log_has(h, "test hook: pausing a resume").then_some(())
    })
    .await;
    revoke(
        h,
        "wu-lost",
        json!({"certificateRequestRef": {"name": "wu"}}),
        "keyCompromise",
    )
    .await;
    h.wait("Revocation wu-lost Applied", 30, || async {
        let r = h.api::<Revocation>().get("wu-lost").await.ok()?;
        applied(&r).then_some(())
    })
    .await;
    // Let the paused resume go on and finish (or retry).
    h.wait("the resume to go on", 30, || async {
        log_has(h, "test hook: the resume goes on").then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let r = record(h, &serial).await;
    assert_eq!(
        state(&r),
        (Some("Revoked".into()), "Revoked".into()),
        "a resume never un-revokes: status and label both Revoked"
    );
    assert_eq!(
        r.status.as_ref().unwrap().reason.as_deref(),
        Some("keyCompromise")
    );
    agree(&w, 20).await;
    assert_eq!(revocations_on_crl(&w).await, 1);
    let s = h.api::<Suspension>().get("wu-hold").await.unwrap();
    assert_eq!(
        s.status.unwrap().state.as_deref(),
        Some("Superseded"),
        "the resume is refused: the revocation superseded the hold"
    );

    // Without the status subresource the record is still the controller's
    // alone: an officer (the shipped role) cannot write its state, and nobody
    // can change its spec.
    officer_cannot_touch_the_record(h, &record(h, &serial).await).await;
    w.h.env.cleanup().await.unwrap();
}

#[tokio::test]
async fn a_renewal_signed_after_its_original_was_revoked_is_revoked_too() {
    // The renewal claims the original (Valid), reserves its serial, and the
    // controller dies before signing; the original is revoked meanwhile. After
    // the restart no certificate of the revoked key may stay valid: the
    // renewal is refused before signing, or signed and revoked with the key.
    let mut h = Harness::new().await;
    h.start(false);
    h.create_ca_with(json!({"profiles": {"subscriberValidity": "720h"}}))
        .await;
    let csr = h.csr("li");
    let original = issue(&h, "li", "ra-3001", &csr).await;
    h.child.stop();
    h.start(true);
    create::<CertificateRequest>(
        &h,
        json!({"apiVersion": "chop.dev/v1alpha1", "kind": "CertificateRequest",
               "metadata": {"name": "li-renewal"},
               "spec": {"caRef": {"name": "root"}, "profile": "Signature",
                        "renewalOf": {"name": "li"}, "accepted": true}}),
    )
    .await;
    h.approve("li-renewal").await;
    h.wait_for_abort("after reserving the renewal's serial", 60)
        .await;
    let claimed = record(&h, &original).await;
    assert_eq!(
        claimed.metadata.annotations.as_ref().unwrap()["chop.dev/renewed-by"],
        "li-renewal"
    );
    revoke(
        &h,
        "li-lost",
        json!({"certificateRequestRef": {"name": "li"}}),
        "keyCompromise",
    )
    .await;
    h.start(false);
    // Either order is safe, and which one happens depends on which reconcile
    // runs first after the restart: the resumed renewal sees its original
    // revoked and signs nothing (OriginalNotValid, or KeyCompromised by the
    // block list), or it was signed first and the Revocation reaches it.
    let crs = h.api::<CertificateRequest>();
    let outcome = h
        .wait("li-renewal issued or refused", 60, || {
            let crs = crs.clone();
            async move {
                let cr = crs.get("li-renewal").await.ok()?;
                let st = cr.status?;
                st.conditions
                    .iter()
                    .find(|c| {
                        c.status == "True"
                            && ((c.type_ == "Issued" && c.reason == "Issued")
                                || c.type_ == "Failed")
                    })
                    .map(|c| (c.type_.clone(), c.reason.clone(), st.serial_number.clone()))
            }
        })
        .await;
    h.wait("Revocation li-lost Applied", 60, || async {
        let r = h.api::<Revocation>().get("li-lost").await.ok()?;
        applied(&r).then_some(r)
    })
    .await;
    match outcome {
        (t, _, Some(renewed)) if t == "Issued" => {
            let r = wait_record(&h, &renewed, "Revoked").await;
            assert_eq!(
                r.status.as_ref().unwrap().reason.as_deref(),
                Some("keyCompromise")
            );
            let rev = h.api::<Revocation>().get("li-lost").await.unwrap();
            assert!(
                rev.status
                    .unwrap()
                    .serial_numbers
                    .iter()
                    .any(|s| s.eq_ignore_ascii_case(&renewed)),
                "the Revocation names the renewal's serial"
            );
        }
        (_, reason, _) => {
            assert!(
                reason == "OriginalNotValid" || reason == "KeyCompromised",
                "li-renewal failed with {reason}"
            );
            let signed = records_of(&h, "li-renewal").await;
            assert!(signed.is_empty(), "a renewal of a revoked key was signed");
        }
    }
    keys_revoked_whole(&h).await.unwrap();
    h.env.cleanup().await.unwrap();
}

async fn officer_cannot_touch_the_record(h: &Harness, r: &IssuedCertificate) {
    use k8s_openapi::api::rbac::v1::{ClusterRole, RoleBinding};
    let yaml = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/rbac/officer.yaml"),
    )
    .unwrap();
    let role: ClusterRole = serde_saphyr::from_str(&yaml).unwrap();
    kube::Api::<ClusterRole>::all(h.env.admin())
        .patch(
            "chop:officer",
            &PatchParams::apply("chop-tests").force(),
            &Patch::Apply(&role),
        )
        .await
        .unwrap();
    create::<RoleBinding>(
        h,
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": "officer-zhao"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                           "name": "chop:officer"},
               "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                             "name": "zhao"}]}),
    )
    .await;
    let officer: kube::Api<IssuedCertificate> =
        kube::Api::namespaced(h.env.user("zhao", &[]).await.unwrap(), h.ns());
    let name = r.name_any();
    h.wait("RBAC for the officer", 30, || async {
        officer.get(&name).await.ok().map(|_| ())
    })
    .await;
    let unrevoke = json!({"metadata": {"labels": {"chop.dev/status": "Valid"}},
                          "status": {"state": "Valid", "revokedAt": null, "reason": null}});
    match officer
        .patch(&name, &PatchParams::default(), &Patch::Merge(&unrevoke))
        .await
    {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 403, "{s:?}"),
        other => panic!("an officer wrote a record's state: {other:?}"),
    }
    let spec = json!({"spec": {"subject": "CN=someone else"}});
    match h
        .api::<IssuedCertificate>()
        .patch(&name, &PatchParams::default(), &Patch::Merge(&spec))
        .await
    {
        Err(kube::Error::Api(s)) => {
            assert!(s.message.contains("record is immutable"), "{s:?}");
        }
        other => panic!("a record's spec changed: {other:?}"),
    }
    let after = record(h, &r.spec.serial_number).await;
    assert_eq!(state(&after), (Some("Revoked".into()), "Revoked".into()));
    assert_eq!(after.spec, r.spec);
}

/// splitmix64: a small seeded generator (no dependency for a test).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(n).unwrap()).unwrap()
    }
}

/// One operation of the random mix.
#[derive(Clone, Debug)]
enum Op {
    Revoke {
        name: String,
        of: String,
        reason: &'static str,
    },
    Hold {
        name: String,
        of: String,
    },
    Resume {
        name: String,
    },
    Delete {
        name: String,
    },
    Renew {
        name: String,
        of: String,
    },
}

async fn run_op(h: &Harness, op: Op, delay: Duration) {
    tokio::time::sleep(delay).await;
    match op {
        Op::Revoke { name, of, reason } => {
            revoke(
                h,
                &name,
                json!({"certificateRequestRef": {"name": of}}),
                reason,
            )
            .await;
        }
        Op::Hold { name, of } => create::<Suspension>(h, suspension(&name, &of)).await,
        Op::Resume { name } => {
            // The hold may have been created in the same wave a moment ago.
            let patch = json!({"spec": {"resumed": true}});
            h.wait(&format!("resume {name}"), 10, || {
                let (name, patch) = (name.clone(), patch.clone());
                async move {
                    h.api::<Suspension>()
                        .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                        .await
                        .ok()
                        .map(|_| ())
                }
            })
            .await;
        }
        Op::Delete { name } => {
            h.wait(&format!("delete {name}"), 10, || {
                let name = name.clone();
                async move {
                    h.api::<Suspension>()
                        .delete(&name, &DeleteParams::default())
                        .await
                        .ok()
                        .map(|_| ())
                }
            })
            .await;
        }
        Op::Renew { name, of } => {
            create::<CertificateRequest>(
                h,
                json!({"apiVersion": "chop.dev/v1alpha1", "kind": "CertificateRequest",
                       "metadata": {"name": name},
                       "spec": {"caRef": {"name": "root"}, "profile": "Signature",
                                "renewalOf": {"name": of}, "accepted": true}}),
            )
            .await;
            h.approve(&name).await;
        }
    }
}

/// Whether everything the waves started has come to rest: every Revocation
/// Applied, every Suspension in a final state for its spec (deleted ones gone),
/// every renewal Issued or Failed.
async fn quiescent(h: &Harness) -> Option<()> {
    for r in h
        .api::<Revocation>()
        .list(&ListParams::default())
        .await
        .ok()?
    {
        if !applied(&r) {
            return None;
        }
    }
    for s in h
        .api::<Suspension>()
        .list(&ListParams::default())
        .await
        .ok()?
    {
        if s.metadata.deletion_timestamp.is_some() {
            return None;
        }
        let st = s.status.as_ref()?.state.clone().unwrap_or_default();
        let done = if s.spec.resumed {
            matches!(st.as_str(), "Resumed" | "Superseded" | "Failed")
        } else {
            matches!(st.as_str(), "Held" | "Superseded" | "Failed")
        };
        if !done {
            return None;
        }
    }
    for cr in h
        .api::<CertificateRequest>()
        .list(&ListParams::default())
        .await
        .ok()?
    {
        let done = cr
            .status
            .as_ref()?
            .conditions
            .iter()
            .any(|c| (c.type_ == "Issued" || c.type_ == "Failed") && c.status == "True");
        if !done {
            return None;
        }
    }
    Some(())
}

#[tokio::test]
async fn concurrent_revoke_hold_resume_renew_with_restarts_agree() {
    let started = Instant::now();
    let seed = std::env::var("CHOP_RACE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap();
            t.as_secs() ^ u64::from(t.subsec_nanos())
        });
    println!("race seed: {seed} (replay with CHOP_RACE_SEED={seed})");
    let mut rng = Rng(seed);
    let mut w = world(Some("CHOP_TEST_PAUSE_IN_RESUME")).await;
    const CERTS: usize = 6;
    const WAVES: usize = 4;
    let mut originals = Vec::new();
    for i in 0..CERTS {
        let name = format!("c{i}");
        let csr = w.h.csr(&name);
        issue(&w.h, &name, &format!("ra-{i}"), &csr).await;
        originals.push(name);
    }
    println!("{CERTS} certificates issued after {:?}", started.elapsed());

    const REASONS: [&str; 4] = [
        "keyCompromise",
        "superseded",
        "affiliationChanged",
        "cessationOfOperation",
    ];
    // (Suspension, the certificate it holds).
    let mut holds: Vec<(String, String)> = Vec::new();
    let (mut nrev, mut nhold, mut nrenew) = (0, 0, 0);
    let mut log = Vec::new();
    for wave in 0..WAVES {
        let mut ops = Vec::new();
        // Resumptions pick among the holds of earlier waves (those have had
        // time to take effect).
        let mut earlier = holds.len();
        for _ in 0..10 {
            // Most operations go to three "hot" certificates, so they collide.
            let of = if rng.below(10) < 7 {
                originals[rng.below(3)].clone()
            } else {
                originals[rng.below(CERTS)].clone()
            };
            let mut pick = rng.below(20);
            if (9..=14).contains(&pick) && earlier == 0 {
                pick = 3;
            }
            let op = match pick {
                0 | 1 => {
                    nrev += 1;
                    Op::Revoke {
                        name: format!("rev-{nrev}"),
                        of,
                        reason: REASONS[rng.below(REASONS.len())],
                    }
                }
                2..=8 => {
                    nhold += 1;
                    let name = format!("hold-{nhold}");
                    holds.push((name.clone(), of.clone()));
                    Op::Hold { name, of }
                }
                9..=14 => {
                    let (name, held) = holds.remove(rng.below(earlier));
                    earlier -= 1;
                    // Half of the time, a revocation of the same certificate
                    // lands while the resumption is under way.
                    if rng.below(2) == 0 {
                        nrev += 1;
                        ops.push(Op::Revoke {
                            name: format!("rev-{nrev}"),
                            of: held,
                            reason: REASONS[rng.below(REASONS.len())],
                        });
                    }
                    if rng.below(2) == 0 {
                        Op::Resume { name }
                    } else {
                        Op::Delete { name }
                    }
                }
                _ => {
                    nrenew += 1;
                    Op::Renew {
                        name: format!("renew-{nrenew}"),
                        of,
                    }
                }
            };
            ops.push(op);
        }
        // Holds and renewals first, resumes and deletions of holds (perhaps
        // created in this same wave) next, revocations last: they land while
        // the resumes are under way.
        let mut ms = |base: u64, spread: usize| {
            Duration::from_millis(base + u64::try_from(rng.below(spread)).unwrap())
        };
        let delays: Vec<Duration> = ops
            .iter()
            .map(|op| match op {
                Op::Resume { .. } | Op::Delete { .. } => ms(300, 400),
                Op::Revoke { .. } => ms(800, 1500),
                _ => ms(0, 300),
            })
            .collect();
        log.push(format!("wave {wave}: {ops:?}"));
        println!("wave {wave}: {ops:?}");
        let h = &w.h;
        futures::future::join_all(ops.into_iter().zip(delays).map(|(op, d)| run_op(h, op, d)))
            .await;
        if wave + 1 < WAVES {
            // Kill the controller while the wave is being worked on.
            tokio::time::sleep(Duration::from_millis(
                200 + u64::try_from(rng.below(800)).unwrap(),
            ))
            .await;
            w.h.child.stop();
            // Half of the restarts widen every resume's window between its
            // read and its write (the hook of the deterministic test above).
            println!("controller killed after wave {wave}");
            w.h.start_with(Some("CHOP_TEST_PAUSE_IN_RESUME"));
            // Let it take the lease and work off what the kill left, so the
            // next wave's resumes and revocations meet in flight.
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
    w.h.wait("quiescence", 60, || quiescent(&w.h)).await;
    let n = agree(&w, 30).await;
    let applied = revocations_on_crl(&w).await;
    println!(
        "seed {seed}: {n} serials agree in the register, the CRL and OCSP; {applied} revocations on the CRL; {} s",
        started.elapsed().as_secs()
    );
    w.h.env.cleanup().await.unwrap();
}
