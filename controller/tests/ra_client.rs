//! End to end: the example RA client (`examples/ra-client/ra_client.py`, the
//! official Kubernetes Python client) against the real `chop-controller` and a
//! real kube-apiserver, authenticated as a ServiceAccount bound to the shipped
//! `chop:registration-authority` role with a token from the TokenRequest API,
//! under the shipped admission policies.
//!
//! - `an_ra_client_requests_follows_and_revokes`: the client creates a request
//!   and follows it by watch; an officer (a distinct user bound to
//!   `chop:officer`) approves; the client saves the certificate and chain, which
//!   `openssl verify` accepts, then puts it on hold (Suspension until Held) and
//!   revokes it (Revocation until Applied); the register records it Revoked and
//!   the hold Superseded. The API server recorded the
//!   ServiceAccount as the requester. Running the same command again succeeds
//!   without creating anything; the same name with another spec exits 2 and
//!   changes nothing; a request an officer denies exits 3 with the reason.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crds::{CertificateRequest, Revocation, Suspension};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

mod common;
use common::*;

const SA: &str = "ra-system";

/// A kubeconfig for ServiceAccount `SA` of the test namespace, bound there to
/// `chop:registration-authority`, with a token minted by the TokenRequest API
/// (as a kubelet would project it into the RA's pod).
async fn ra_service_account(h: &Harness) -> PathBuf {
    let admin = h.env.admin();
    let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": SA}})).unwrap();
    Api::<ServiceAccount>::namespaced(admin.clone(), h.ns())
        .create(&PostParams::default(), &sa)
        .await
        .unwrap();
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "ra-system", "namespace": h.ns()},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "chop:registration-authority"},
        "subjects": [{"kind": "ServiceAccount", "name": SA, "namespace": h.ns()}]
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(admin.clone(), h.ns())
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    let request: TokenRequest =
        serde_json::from_value(json!({"spec": {"audiences": [], "expirationSeconds": 3600}}))
            .unwrap();
    let token = Api::<ServiceAccount>::namespaced(admin, h.ns())
        .create_token_request(SA, &PostParams::default(), &request)
        .await
        .unwrap()
        .status
        .unwrap()
        .token
        .unwrap();
    // The server and its CA from the admin's kubeconfig; the credential is the token.
    let admin_kc: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(h.env.plane().admin_kubeconfig()).unwrap())
            .unwrap();
    let cluster = admin_kc["clusters"][0]["cluster"].clone();
    let kubeconfig = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "chop", "cluster": cluster}],
        "users": [{"name": SA, "user": {"token": token}}],
        "contexts": [{"name": "ra", "context": {"cluster": "chop", "user": SA, "namespace": h.ns()}}],
        "current-context": "ra"
    });
    let path = h.write("ra.kubeconfig", &kubeconfig.to_string());
    // Until RBAC lets the ServiceAccount list requests.
    let ra = h.env.plane().client_with_token(&token).await.unwrap();
    let api: Api<CertificateRequest> = Api::namespaced(ra, h.ns());
    h.wait("RBAC for the RA's ServiceAccount", 30, || {
        let api = api.clone();
        async move { api.list(&Default::default()).await.ok().map(|_| ()) }
    })
    .await;
    path
}

/// Start the RA client with `args` after the common ones; stdout and stderr
/// go to `<tag>.out` / `<tag>.err` in the test directory.
fn spawn_client(h: &Harness, kubeconfig: &Path, tag: &str, args: &[&str]) -> Child {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/ra-client/ra_client.py");
    Command::new("python3")
        .arg(script)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--namespace", h.ns(), "--ca", "root", "--timeout", "60"])
        .args(args)
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(h.path(&format!("{tag}.out"))).unwrap())
        .stderr(std::fs::File::create(h.path(&format!("{tag}.err"))).unwrap())
        .spawn()
        .unwrap()
}

/// Wait for the client to exit (at most `secs`); its exit code, stdout, stderr.
async fn finish(h: &Harness, mut child: Child, tag: &str, secs: u64) -> (i32, String, String) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the RA client ({tag}) did not finish in {secs}s\nstdout:\n{}\nstderr:\n{}\ncontroller log:\n{}",
                std::fs::read_to_string(h.path(&format!("{tag}.out"))).unwrap_or_default(),
                std::fs::read_to_string(h.path(&format!("{tag}.err"))).unwrap_or_default(),
                h.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    (
        status.code().unwrap_or(-1),
        std::fs::read_to_string(h.path(&format!("{tag}.out"))).unwrap(),
        std::fs::read_to_string(h.path(&format!("{tag}.err"))).unwrap(),
    )
}

/// An officer's decision (`Approved` or `Denied`), as server-side apply on the
/// status subresource by the officer's own client.
async fn decide(officer: &kube::Client, ns: &str, name: &str, type_: &str) {
    let body = json!({
        "apiVersion": "chop.dev/v1alpha1", "kind": "CertificateRequest",
        "status": {"conditions": [{
            "type": type_, "status": "True", "reason": "ByOfficer",
            "message": "identity checked at the counter",
            "lastTransitionTime": jiff::Timestamp::now().to_string(),
        }]}
    });
    Api::<CertificateRequest>::namespaced(officer.clone(), ns)
        .patch_status(
            name,
            &PatchParams::apply("officer-1").force(),
            &Patch::Apply(&body),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn an_ra_client_requests_follows_and_revokes() {
    let python = run_text(Command::new("python3").args(["-c", "import kubernetes"]));
    assert!(
        python.0,
        "the RA client needs the `kubernetes` Python package: \
         pip install -r examples/ra-client/requirements.txt (scripts/test.sh does)\n{}",
        python.1
    );
    // The suite installs the client's pinned version (scripts/lib.sh).
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let pin = std::fs::read_to_string(repo.join("examples/ra-client/requirements.txt")).unwrap();
    let lib = std::fs::read_to_string(repo.join("scripts/lib.sh")).unwrap();
    assert!(
        lib.contains(pin.trim()),
        "scripts/lib.sh CHOP_PIP_PACKAGES must install {}",
        pin.trim()
    );
    let mut h = Harness::new().await;
    h.install_policies().await;
    let (_, root) = h.start_with_root("root.pem").await;
    let ns = h.ns().to_string();
    let kubeconfig = ra_service_account(&h).await;
    let officer = h.user_with_role("officer-1", "chop:officer").await;
    let csr = h.csr("citizen");
    let csr_file = h.write("citizen.csr", &csr);
    let cert_out = h.path("citizen.pem");
    let chain_out = h.path("citizen-chain.pem");
    let journey: Vec<String> = [
        "--name",
        "citizen",
        "--reference",
        "ra-2026-000123",
        "--common-name",
        "王小明",
        "--csr",
        csr_file.to_str().unwrap(),
        "--accepted",
        "--cert-out",
        cert_out.to_str().unwrap(),
        "--chain-out",
        chain_out.to_str().unwrap(),
        "--suspend",
        "--revoke",
        "keyCompromise",
    ]
    .map(String::from)
    .to_vec();
    let args: Vec<&str> = journey.iter().map(String::as_str).collect();
    let started = Instant::now();
    let client = spawn_client(&h, &kubeconfig, "journey", &args);

    // The request waits for an officer; the client follows it meanwhile.
    let cr = h
        .wait_condition("citizen", "Issued", "False", Some("WaitingForApproval"))
        .await;
    let requested_by = cr.metadata.annotations.unwrap()[REQUESTED_BY].clone();
    assert_eq!(
        requested_by,
        format!("system:serviceaccount:{ns}:{SA}"),
        "the API server records the RA's ServiceAccount as the requester"
    );
    decide(&officer, &ns, "citizen", "Approved").await;

    let (code, out, err) = finish(&h, client, "journey", 60).await;
    let took = started.elapsed();
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains(&format!("acting as system:serviceaccount:{ns}:{SA}")),
        "{out}"
    );
    assert!(out.contains("CertificateRequest citizen: created"), "{out}");
    assert!(
        out.contains("Issued=False WaitingForApproval"),
        "the client printed the wait with its reason:\n{out}"
    );
    assert!(out.contains("Issued=True Issued"), "{out}");
    assert!(out.contains("Held=True Held"), "{out}");
    assert!(out.contains("Suspension citizen-hold: Held"), "{out}");
    assert!(out.contains("Applied=True Revoked"), "{out}");

    // The certificate the client saved is the CA's, and chains to the root.
    let st = h
        .api::<CertificateRequest>()
        .get("citizen")
        .await
        .unwrap()
        .status
        .unwrap();
    let saved = std::fs::read_to_string(&cert_out).unwrap();
    assert_eq!(saved, st.certificate.clone().unwrap());
    let verified = openssl(&["verify", "-x509_strict", "-CAfile"], &[&root, &cert_out]);
    assert!(verified.contains("OK"), "{verified}");
    let chain = std::fs::read_to_string(&chain_out).unwrap();
    let root_pem = std::fs::read_to_string(&root).unwrap();
    assert!(chain.contains(root_pem.trim()), "{chain}");
    let serial = st.serial_number.unwrap();
    assert!(out.contains(&format!("issued: serial {serial}")), "{out}");

    // The client's revocation is in the register.
    let record = wait_record(&h, &serial, "Revoked").await;
    assert_eq!(
        record.status.unwrap().reason.as_deref(),
        Some("keyCompromise")
    );
    let rev = h
        .api::<Revocation>()
        .get("citizen-revocation")
        .await
        .unwrap();
    assert_eq!(rev.status.unwrap().newly_revoked, vec![serial.clone()]);
    // The revocation superseded the client's hold.
    let hold = h.api::<Suspension>().get("citizen-hold").await.unwrap();
    assert_eq!(hold.status.unwrap().state.as_deref(), Some("Superseded"));
    eprintln!("RA journey (create → approve → issue → hold → revoke): {took:?}\n{out}");

    // Idempotent by name: the same command again creates nothing and ends well.
    let again = spawn_client(&h, &kubeconfig, "again", &args);
    let (code, out, err) = finish(&h, again, "again", 30).await;
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains("CertificateRequest citizen: already exists with this spec"),
        "{out}"
    );
    assert!(
        out.contains("Revocation citizen-revocation: already exists with this spec"),
        "{out}"
    );
    assert_eq!(records_of(&h, "citizen").await.len(), 1);

    // The same name with another subscriber: refused, nothing changed.
    let mut other = args.clone();
    other[3] = "ra-2026-999999";
    let clash = spawn_client(&h, &kubeconfig, "clash", &other);
    let (code, out, err) = finish(&h, clash, "clash", 30).await;
    assert_eq!(code, 2, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        err.contains("CertificateRequest citizen already exists with a different spec"),
        "{err}"
    );
    let cr = h.api::<CertificateRequest>().get("citizen").await.unwrap();
    assert_eq!(
        cr.spec.subscriber.as_ref().unwrap().reference,
        "ra-2026-000123"
    );

    // A request an officer denies: exit 3 with the officer's reason, no certificate.
    let csr2 = h.write("refused.csr", &h.csr("refused"));
    let denied = spawn_client(
        &h,
        &kubeconfig,
        "denied",
        &[
            "--name",
            "refused",
            "--reference",
            "ra-2026-000124",
            "--common-name",
            "李大華",
            "--csr",
            csr2.to_str().unwrap(),
            "--accepted",
            "--cert-out",
            h.path("refused.pem").to_str().unwrap(),
        ],
    );
    h.wait_condition("refused", "Issued", "False", Some("WaitingForApproval"))
        .await;
    decide(&officer, &ns, "refused", "Denied").await;
    let (code, out, err) = finish(&h, denied, "denied", 30).await;
    assert_eq!(code, 3, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        err.contains("denied: ByOfficer: identity checked at the counter"),
        "{err}"
    );
    assert!(!h.path("refused.pem").exists());
    assert!(records_of(&h, "refused").await.is_empty());
}
