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
//! - `subordinate_ca_signed_by_its_parent`: a subordinate CA (`parentRef`) gets
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

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crds::{CertificateAuthority, CertificateRequest, IssuedCertificate};
use e2e::TestEnv;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

// Distinctive, so a leak into logs or metrics cannot be a coincidence.
const PIN: &str = "sesame-Kq2vXw";

struct Harness {
    env: TestEnv,
    dir: tempfile::TempDir,
    conf: PathBuf,
    child: ChildGuard,
    metrics_port: u16,
    starts: u32,
}

impl Harness {
    async fn new() -> Harness {
        let crds: Vec<_> = crds::all().into_iter().map(|(_, c)| c).collect();
        let env = TestEnv::with_crds(&crds).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens");
        std::fs::create_dir_all(&tokens).unwrap();
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
                tokens.display()
            ),
        )
        .unwrap();
        let out = Command::new("softhsm2-util")
            .args([
                "--init-token",
                "--free",
                "--label",
                "moica",
                "--pin",
                PIN,
                "--so-pin",
                "87654321",
            ])
            .env("SOFTHSM2_CONF", &conf)
            .output()
            .unwrap();
        assert!(out.status.success(), "softhsm2-util: {out:?}");
        let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Harness {
            env,
            dir,
            conf,
            child: ChildGuard(None),
            metrics_port,
            starts: 0,
        }
    }

    fn ns(&self) -> &str {
        self.env.namespace()
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.env.admin(), self.ns())
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn start(&mut self, crash_after_reserve: bool) {
        self.start_with(if crash_after_reserve {
            Some("CHOP_TEST_CRASH_AFTER_RESERVE")
        } else {
            None
        });
    }

    /// Start the controller, with the crash hook `hook` (an env var name) set.
    fn start_with(&mut self, hook: Option<&str>) {
        let port = self.metrics_port;
        self.child.0 = Some(self.spawn("chop-controller-test", port, hook));
    }

    /// Spawn one controller replica named `pod` serving metrics on `port`.
    fn spawn(&mut self, pod: &str, port: u16, hook: Option<&str>) -> Child {
        self.starts += 1;
        let log =
            std::fs::File::create(self.path(&format!("controller-{}.log", self.starts))).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_chop-controller"));
        cmd.args(["--namespace", self.ns(), "--metrics-addr"])
            .arg(format!("127.0.0.1:{port}"))
            .env("KUBECONFIG", self.env.plane().admin_kubeconfig())
            .env("SOFTHSM2_CONF", &self.conf)
            .env("POD_NAME", pod)
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        cmd.env_remove("CHOP_TEST_CRASH_AFTER_RESERVE")
            .env_remove("CHOP_TEST_CRASH_AFTER_COMMIT");
        if let Some(hook) = hook {
            cmd.env(hook, "1");
        }
        cmd.spawn().unwrap()
    }

    fn logs(&self) -> String {
        (1..=self.starts)
            .map(|i| {
                std::fs::read_to_string(self.path(&format!("controller-{i}.log")))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n----- restart -----\n")
    }

    /// Poll `f` until it returns `Some`, failing with the controller's log after `secs`.
    async fn wait<T, F, Fut>(&self, what: &str, secs: u64, mut f: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(v) = f().await {
                return v;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}\ncontroller log:\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn create_ca(&self) -> CertificateAuthority {
        self.create_ca_named("root", "moica-root", "IfMissing")
            .await;
        let api = self.api::<CertificateAuthority>();
        self.wait("CA Ready", 90, || {
            let api = api.clone();
            async move {
                let ca = api.get("root").await.ok()?;
                let st = ca.status.as_ref()?;
                let ready = st
                    .conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True");
                (ready && st.certificate.is_some()).then_some(ca)
            }
        })
        .await
    }

    async fn wait_ca_ready(&self, name: &str) -> CertificateAuthority {
        let api = self.api::<CertificateAuthority>();
        self.wait(&format!("CA {name} Ready"), 90, || {
            let api = api.clone();
            async move {
                let ca = api.get(name).await.ok()?;
                let st = ca.status.as_ref()?;
                let ready = st
                    .conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True");
                (ready && st.certificate.is_some()).then_some(ca)
            }
        })
        .await
    }

    async fn create_ca_named(&self, name: &str, key_label: &str, key_generation: &str) {
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": "hsm-pin"},
            "stringData": {"pin": PIN},
        }))
        .unwrap();
        match self
            .api::<Secret>()
            .create(&PostParams::default(), &secret)
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => panic!("{e}"),
        }
        let ca: CertificateAuthority = serde_json::from_value(json!({
            "apiVersion": "chop.dev/v1alpha1",
            "kind": "CertificateAuthority",
            "metadata": {"name": name},
            "spec": {
                "type": "Root",
                "subject": {"country": "TW", "organization": "行政院", "organizationalUnits": ["內政部憑證管理中心"]},
                "hsm": {
                    "tokenLabel": "moica",
                    "keyLabel": key_label,
                    "pinSecretRef": {"name": "hsm-pin", "key": "pin"},
                    "keyGeneration": key_generation
                },
                "crlDistributionPoints": ["http://repository.moica.example.tw/crl/root.crl"],
                "ocspURLs": ["http://ocsp.moica.example.tw"],
                "caIssuersURLs": ["http://repository.moica.example.tw/certs/root.cer"]
            }
        }))
        .unwrap();
        self.api::<CertificateAuthority>()
            .create(&PostParams::default(), &ca)
            .await
            .unwrap();
    }

    fn csr(&self, name: &str) -> String {
        let key = self.path(&format!("{name}.key"));
        let csr = self.path(&format!("{name}.csr"));
        let out = Command::new("openssl")
            .args([
                "req",
                "-new",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=ignored by the CA",
                "-keyout",
            ])
            .arg(&key)
            .arg("-out")
            .arg(&csr)
            .output()
            .unwrap();
        assert!(out.status.success(), "openssl req: {out:?}");
        std::fs::read_to_string(csr).unwrap()
    }

    async fn create_request(
        &self,
        name: &str,
        profile: &str,
        reference: &str,
        csr: &str,
        accepted: bool,
    ) {
        let cr: CertificateRequest = serde_json::from_value(json!({
            "apiVersion": "chop.dev/v1alpha1",
            "kind": "CertificateRequest",
            "metadata": {"name": name},
            "spec": {
                "caRef": {"name": "root"},
                "profile": profile,
                "subscriber": {"reference": reference, "commonName": "王小明"},
                "csr": csr,
                "accepted": accepted
            }
        }))
        .unwrap();
        self.api::<CertificateRequest>()
            .create(&PostParams::default(), &cr)
            .await
            .unwrap();
    }

    /// An officer approves: server-side apply of the Approved condition on the
    /// status subresource with field manager `officer`.
    async fn approve(&self, name: &str) {
        self.officer_sets(name, "Approved", "OfficerApproved").await;
    }

    /// An officer sets condition `type_` to True (SSA, field manager `officer`).
    async fn officer_sets(&self, name: &str, type_: &str, reason: &str) {
        let body = json!({
            "apiVersion": "chop.dev/v1alpha1",
            "kind": "CertificateRequest",
            "status": {"conditions": [{
                "type": type_,
                "status": "True",
                "reason": reason,
                "message": "identity checked in person",
                "lastTransitionTime": jiff::Timestamp::now().to_string(),
            }]}
        });
        self.api::<CertificateRequest>()
            .patch_status(
                name,
                &PatchParams::apply("officer").force(),
                &Patch::Apply(&body),
            )
            .await
            .unwrap();
    }

    async fn accept(&self, name: &str) {
        self.api::<CertificateRequest>()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"accepted": true}})),
            )
            .await
            .unwrap();
    }

    /// Wait until the request's `type_` condition has `status` (and `reason`, if given).
    async fn wait_condition(
        &self,
        name: &str,
        type_: &str,
        status: &str,
        reason: Option<&str>,
    ) -> CertificateRequest {
        let api = self.api::<CertificateRequest>();
        self.wait(&format!("{name}: {type_}={status} {reason:?}"), 60, || {
            let api = api.clone();
            async move {
                let cr = api.get(name).await.ok()?;
                let ok = cr.status.as_ref()?.conditions.iter().any(|c| {
                    c.type_ == type_ && c.status == status && reason.is_none_or(|r| c.reason == r)
                });
                ok.then_some(cr)
            }
        })
        .await
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

/// Kills the controller when the test ends, however it ends.
struct ChildGuard(Option<Child>);

impl ChildGuard {
    fn stop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn openssl(args: &[&str], files: &[&Path]) -> String {
    let mut cmd = Command::new("openssl");
    cmd.args(args);
    for f in files {
        cmd.arg(f);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn issued_name(serial_upper_hex: &str) -> String {
    format!("root-{}", serial_upper_hex.to_ascii_lowercase())
}

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
        .list(&ListParams::default().labels("chop.dev/ca=root"))
        .await
        .unwrap();
    assert_eq!(all.items.len(), 3);

    // The CA counts its register.
    let cas = h.api::<CertificateAuthority>();
    h.wait("issuedCount = 3", 30, || {
        let cas = cas.clone();
        async move {
            let ca = cas.get("root").await.ok()?;
            (ca.status?.issued_count == Some(3)).then_some(())
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

fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    if path == "/metrics" {
        return out
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or(out);
    }
    out
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
    let mut child = h.child.0.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the controller did not abort after reserving\n{}", h.logs());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!status.success(), "{status:?}");
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
            .list(&ListParams::default())
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
    let all = issued.list(&ListParams::default()).await.unwrap();
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
    let mut child = h.child.0.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "the controller did not abort after the commit\n{}",
                h.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let issued = h.api::<IssuedCertificate>();
    let records = issued.list(&ListParams::default()).await.unwrap().items;
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
            .list(&ListParams::default())
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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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
