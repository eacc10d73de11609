//! `chop-responder serve --kube` against a real API server: the real binary,
//! running as a user bound only to `manifests/rbac/responder.yaml` (plus the
//! per-CA Role on its Secret), answers `openssl ocsp` from IssuedCertificates,
//! follows status patches, deletions and a renewed responder Secret, and serves
//! the repository and a CRL published as chunked ConfigMaps.
//!
//! Run with `bash e2e/controlplane.sh run -- cargo test -p chop-responder --test kube_feeder`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chop_register::publish::{
    Manifest, Publication, manifest_name, partition_publication, publish,
};
use crds::{CRLSchedule, CertificateAuthority, IssuedCertificate};
use der::Decode;
use e2e::TestEnv;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::rbac::v1::{ClusterRole, Role, RoleBinding};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use responder::fixture::Fixture;
use responder::kube_feeder::secret_name;
use responder::state::cert_pem;
use serde_json::json;

const CA: &str = "root";
const USER: &str = "chop-responder";

/// Kills the responder when the test ends, however it ends.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn api<K>(env: &TestEnv) -> Api<K>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>,
{
    Api::namespaced(env.admin(), env.namespace())
}

/// An untyped Api for kind `K` (reads and writes objects `K` cannot parse).
fn untyped<K>(env: &TestEnv) -> Api<kube::api::DynamicObject>
where
    K: kube::Resource<DynamicType = ()>,
{
    Api::namespaced_with(
        env.admin(),
        env.namespace(),
        &kube::api::ApiResource::erase::<K>(&()),
    )
}

async fn bind(env: &TestEnv, name: &str, kind: &str, role: &str) {
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": env.namespace()},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": USER}]
    }))
    .unwrap();
    api::<RoleBinding>(env)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
}

/// The shipped ClusterRole bound in the namespace, plus the per-CA Role on the
/// one Secret (docs/responder.md); the user's kubeconfig.
async fn responder_identity(env: &TestEnv) -> PathBuf {
    let yaml = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/rbac/responder.yaml"),
    )
    .unwrap();
    let role: ClusterRole = serde_saphyr::from_str(&yaml).unwrap();
    for rule in role.rules.as_deref().unwrap_or_default() {
        for verb in &rule.verbs {
            assert!(
                ["get", "list", "watch"].contains(&verb.as_str()),
                "chop:responder must be read-only, has {verb}"
            );
        }
    }
    Api::<ClusterRole>::all(env.admin())
        .patch(
            "chop:responder",
            &PatchParams::apply("chop-tests").force(),
            &Patch::Apply(&role),
        )
        .await
        .unwrap();
    bind(env, "chop-responder", "ClusterRole", "chop:responder").await;
    let key_role: Role = serde_json::from_value(json!({
        "metadata": {"name": "chop-responder-root", "namespace": env.namespace()},
        "rules": [{"apiGroups": [""], "resources": ["secrets"],
                   "resourceNames": [secret_name(CA)], "verbs": ["get"]}]
    }))
    .unwrap();
    api::<Role>(env)
        .create(&PostParams::default(), &key_role)
        .await
        .unwrap();
    bind(env, "chop-responder-key", "Role", "chop-responder-root").await;
    env.plane().kubeconfig_for_user(USER, &[]).await.unwrap()
}

fn forbidden<T: std::fmt::Debug>(r: Result<T, kube::Error>, what: &str) {
    match r {
        Err(kube::Error::Api(s)) if s.code == 403 => {}
        other => panic!("{what}: expected 403, got {other:?}"),
    }
}

/// The responder's identity reads what it needs and nothing more.
async fn assert_read_only(env: &TestEnv, f: &Fixture) {
    let user = env.user(USER, &[]).await.unwrap();
    let ns = env.namespace();
    let issued: Api<IssuedCertificate> = Api::namespaced(user.clone(), ns);
    // Untyped: one record in the namespace does not deserialize on purpose.
    Api::<kube::api::DynamicObject>::namespaced_with(
        user.clone(),
        ns,
        &kube::api::ApiResource::erase::<IssuedCertificate>(&()),
    )
    .list(&ListParams::default())
    .await
    .unwrap();
    let mut obj = Fixture::issued_certificate(CA, &f.leaves[0]).unwrap();
    obj.metadata.name = Some("rbac-probe".into());
    forbidden(
        issued.create(&PostParams::default(), &obj).await,
        "create IssuedCertificate",
    );
    forbidden(
        issued
            .patch(
                &format!("{CA}-probe"),
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"state": "Valid"}})),
            )
            .await,
        "patch IssuedCertificate state",
    );
    let cas: Api<CertificateAuthority> = Api::namespaced(user.clone(), ns);
    forbidden(
        cas.patch(
            CA,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await,
        "patch CertificateAuthority",
    );
    let cms: Api<ConfigMap> = Api::namespaced(user.clone(), ns);
    forbidden(
        cms.create(&PostParams::default(), &ConfigMap::default())
            .await,
        "create ConfigMap",
    );
    let secrets: Api<Secret> = Api::namespaced(user, ns);
    secrets.get(&secret_name(CA)).await.unwrap();
    forbidden(secrets.get("other-secret").await, "get another Secret");
    forbidden(
        secrets.list(&ListParams::default()).await,
        "list every Secret",
    );
    forbidden(
        secrets
            .delete(&secret_name(CA), &DeleteParams::default())
            .await,
        "delete the Secret",
    );
}

fn secret(cert_der: &[u8], key: &ca::signer::software::SoftwareKey) -> Secret {
    serde_json::from_value(json!({
        "metadata": {"name": secret_name(CA)},
        "type": "kubernetes.io/tls",
        "stringData": {
            "tls.crt": cert_pem(cert_der).unwrap(),
            "tls.key": Fixture::key_pem(key).unwrap(),
        }
    }))
    .unwrap()
}

async fn set_status(env: &TestEnv, leaf: &ca::issue::IssuedCertificate, status: serde_json::Value) {
    let name = format!("{CA}-{}", leaf.serial.to_hex().to_lowercase());
    let patch = Patch::Merge(json!({ "status": status }));
    let start = Instant::now();
    loop {
        match api::<IssuedCertificate>(env)
            .patch(&name, &PatchParams::default(), &patch)
            .await
        {
            Ok(_) => return,
            // Right after the CRD is installed it may not be served yet on
            // a loaded machine.
            Err(kube::Error::Api(s))
                if s.code == 404 && start.elapsed() < Duration::from_secs(10) =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("status of {name}: {e}"),
        }
    }
}

/// `openssl ocsp` against the responder: (the certificate's status word, the
/// whole output). `va` is the trusted responder certificate file.
fn ocsp(dir: &Path, url: &str, leaf: &str, va: &str, extra: &[&str]) -> (String, String) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args([
            "ocsp", "-url", url, "-issuer", "ca.pem", "-cert", leaf, "-VAfile", va,
        ])
        .args(extra)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let word = text
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{leaf}: ")))
        .unwrap_or("")
        .trim()
        .to_owned();
    (word, text)
}

/// Poll `f` every 20 ms until it returns `Some`, at most `timeout`.
async fn until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ocsp_status(addr: SocketAddr, f: &Fixture, leaf: usize) -> x509_ocsp::OcspResponseStatus {
    let req = f.request(&f.leaves[leaf].serial, None).unwrap();
    let reply = common::request(
        addr,
        "POST",
        "/",
        &["Content-Type: application/ocsp-request"],
        &req,
    );
    assert_eq!(reply.code, 200);
    x509_ocsp::OcspResponse::from_der(&reply.body)
        .unwrap()
        .response_status
}

/// The CRD with the times in the status of CertificateAuthority, CRLSchedule
/// and IssuedCertificate left unchecked (`format: date-time` dropped), as a
/// CRD upgrade or a cluster administrator could leave it: so that the test
/// can store objects that no longer deserialize into chop's types (the API
/// server checks the real schema; kube-rs issue 774 is about what happens when
/// an object does not fit anyway).
fn loosen_status(
    mut crd: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
) -> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition {
    if matches!(
        crd.spec.names.kind.as_str(),
        "CRLSchedule" | "CertificateAuthority" | "IssuedCertificate"
    ) {
        for v in &mut crd.spec.versions {
            let status = v
                .schema
                .as_mut()
                .and_then(|s| s.open_api_v3_schema.as_mut())
                .and_then(|s| s.properties.as_mut())
                .and_then(|p| p.get_mut("status"))
                .and_then(|s| s.properties.as_mut())
                .unwrap();
            for prop in status.values_mut() {
                if prop.format.as_deref() == Some("date-time") {
                    prop.format = None;
                }
            }
        }
    }
    crd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_one_ca_from_the_cluster_read_only() {
    let crds: Vec<_> = crds::all()
        .into_iter()
        .map(|(_, c)| loosen_status(c))
        .collect();
    let env = TestEnv::with_crds(&crds).await.unwrap();
    let ns = env.namespace().to_owned();
    let f = &Fixture::new(4).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("ca.pem"), cert_pem(&f.ca.der).unwrap()).unwrap();
    std::fs::write(d.join("responder.pem"), cert_pem(&f.responder.der).unwrap()).unwrap();
    for (i, leaf) in f.leaves.iter().enumerate() {
        std::fs::write(d.join(format!("leaf{i}.pem")), cert_pem(&leaf.der).unwrap()).unwrap();
    }

    // The CA (no certificate yet), records for leaves 0 and 1, a malformed
    // record for leaf 3 and one that does not deserialize for leaf 2.
    let ca: CertificateAuthority = serde_json::from_value(json!({
        "apiVersion": "chop.dev/v1alpha1", "kind": "CertificateAuthority",
        "metadata": {"name": CA},
        "spec": {
            "type": "Root",
            "subject": {"country": "TW", "organization": "行政院", "commonName": "chop test root"},
            "hsm": {"module": "/usr/lib/softhsm/libsofthsm2.so", "tokenLabel": "moica",
                    "keyLabel": "root", "pinSecretRef": {"name": "pin", "key": "pin"},
                    "key": {"algorithm": "RSA", "size": 2048}},
        }
    }))
    .unwrap();
    api::<CertificateAuthority>(&env)
        .create(&PostParams::default(), &ca)
        .await
        .unwrap();
    let issued = api::<IssuedCertificate>(&env);
    for leaf in &f.leaves[..2] {
        let obj = Fixture::issued_certificate(CA, leaf).unwrap();
        issued.create(&PostParams::default(), &obj).await.unwrap();
        set_status(&env, leaf, json!({"state": "Valid"})).await;
    }
    let mut bad = Fixture::issued_certificate(CA, &f.leaves[3]).unwrap();
    bad.spec.certificate = "not a PEM certificate".into();
    issued.create(&PostParams::default(), &bad).await.unwrap();
    // Leaf 2's record says Valid but no longer deserializes (revokedAt is not
    // a time): it must answer unknown, and not blind the watch of the others.
    let leaf2 = Fixture::issued_certificate(CA, &f.leaves[2]).unwrap();
    issued.create(&PostParams::default(), &leaf2).await.unwrap();
    untyped::<IssuedCertificate>(&env)
        .patch(
            &leaf2.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"state": "Valid", "revokedAt": "not a time"}})),
        )
        .await
        .unwrap();

    // A CRLSchedule (another CA's) whose status no longer deserializes: it
    // must not blind the responder's watch of the others (kube-rs issue 774).
    let broken: CRLSchedule = serde_json::from_value(json!({
        "apiVersion": "chop.dev/v1alpha1", "kind": "CRLSchedule",
        "metadata": {"name": "aa-broken"},
        "spec": {"caRef": {"name": "other"}, "interval": "24h", "validity": "36h", "overlap": "12h"}
    }))
    .unwrap();
    api::<CRLSchedule>(&env)
        .create(&PostParams::default(), &broken)
        .await
        .unwrap();
    untyped::<CRLSchedule>(&env)
        .patch_status(
            "aa-broken",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"thisUpdate": "not a time"}})),
        )
        .await
        .unwrap();
    assert!(
        api::<CRLSchedule>(&env)
            .list(&ListParams::default())
            .await
            .is_err(),
        "the typed list fails: the object is malformed for kube-rs"
    );

    let kubeconfig = responder_identity(&env).await;
    let other: Secret = serde_json::from_value(json!({"metadata": {"name": "other-secret"},
        "stringData": {"k": "v"}}))
    .unwrap();
    api::<Secret>(&env)
        .create(&PostParams::default(), &other)
        .await
        .unwrap();

    // The responder, before the CA has a certificate and before its Secret.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let url = format!("http://{addr}/");
    let log_path = d.join("responder.log");
    let _child = ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_chop-responder"))
            .args([
                "serve",
                "--kube",
                "--namespace",
                &ns,
                "--ca",
                CA,
                "--poll-ms",
                "300",
                "--listen",
            ])
            .arg(addr.to_string())
            .env("KUBECONFIG", &kubeconfig)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap(),
    );
    until("the responder to listen", Duration::from_secs(30), || {
        std::net::TcpStream::connect(addr).ok()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(common::request(addr, "GET", "/readyz", &[], b"").code, 503);
    assert_eq!(
        ocsp_status(addr, f, 0),
        x509_ocsp::OcspResponseStatus::TryLater
    );

    api::<CertificateAuthority>(&env)
        .patch_status(
            CA,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "certificate": cert_pem(&f.ca.der).unwrap(), "chain": ""}})),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        common::request(addr, "GET", "/readyz", &[], b"").code,
        503,
        "no responder key yet"
    );
    api::<Secret>(&env)
        .create(
            &PostParams::default(),
            &secret(&f.responder.der, &f.responder_key),
        )
        .await
        .unwrap();
    let started = Instant::now();
    until("/readyz", Duration::from_secs(30), || {
        (common::request(addr, "GET", "/readyz", &[], b"").code == 200).then_some(())
    })
    .await;
    println!("ready {:?} after the Secret was created", started.elapsed());
    assert_read_only(&env, f).await;

    // Statuses from the records; the malformed one stops nothing.
    let (word, text) = ocsp(d, &url, "leaf0.pem", "responder.pem", &[]);
    assert_eq!(word, "good", "{text}");
    assert!(text.contains("Response verify OK"), "{text}");
    assert_eq!(ocsp(d, &url, "leaf1.pem", "responder.pem", &[]).0, "good");
    assert_eq!(
        ocsp(d, &url, "leaf2.pem", "responder.pem", &[]).0,
        "unknown"
    );
    assert_eq!(
        ocsp(d, &url, "leaf3.pem", "responder.pem", &[]).0,
        "unknown"
    );

    // The repository.
    let get = |path: &str| common::request(addr, "GET", path, &[], b"");
    let ca_pem = cert_pem(&f.ca.der).unwrap();
    assert_eq!(get("/ca.pem").body, ca_pem.as_bytes());
    assert_eq!(get("/chain.pem").body, ca_pem.as_bytes());
    assert_eq!(get("/ca.crt").body, f.ca.der);
    let leaf0_path = format!("/certs/{}.pem", f.leaves[0].serial.to_hex());
    assert_eq!(
        get(&leaf0_path).body,
        cert_pem(&f.leaves[0].der).unwrap().as_bytes()
    );
    assert_eq!(
        get(&format!("/certs/{}.crt", f.leaves[1].serial.to_hex())).body,
        f.leaves[1].der
    );
    assert_eq!(
        get(&format!("/certs/{}.pem", f.leaves[3].serial.to_hex())).code,
        404
    );

    // Revocation: time from the status patch to the first revoked answer, with
    // requests without nonce (the good answer was pre-signed and cached).
    let no_nonce = ["-no_nonce"];
    assert_eq!(
        ocsp(d, &url, "leaf0.pem", "responder.pem", &no_nonce).0,
        "good"
    );
    let t0 = Instant::now();
    set_status(
        &env,
        &f.leaves[0],
        json!({"state": "Revoked", "revokedAt": "2026-11-01T00:00:00Z",
               "reason": "keyCompromise", "invalidityDate": "2026-10-30T00:00:00Z"}),
    )
    .await;
    let text = until("revoked", Duration::from_secs(10), || {
        let (word, text) = ocsp(d, &url, "leaf0.pem", "responder.pem", &no_nonce);
        (word == "revoked").then_some(text)
    })
    .await;
    let latency = t0.elapsed();
    println!("revocation visible in OCSP {latency:?} after the status patch");
    assert!(text.contains("Reason: keyCompromise"), "{text}");
    assert!(latency < Duration::from_secs(2), "{latency:?}");

    // Held, then resumed.
    set_status(
        &env,
        &f.leaves[0],
        json!({"state": "Held", "revokedAt": "2026-11-02T00:00:00Z",
               "reason": "certificateHold", "invalidityDate": null}),
    )
    .await;
    until("held", Duration::from_secs(10), || {
        let (_, text) = ocsp(d, &url, "leaf0.pem", "responder.pem", &no_nonce);
        text.contains("Reason: certificateHold").then_some(())
    })
    .await;
    set_status(
        &env,
        &f.leaves[0],
        json!({"state": "Valid", "revokedAt": null, "reason": null}),
    )
    .await;
    until("resumed", Duration::from_secs(10), || {
        (ocsp(d, &url, "leaf0.pem", "responder.pem", &no_nonce).0 == "good").then_some(())
    })
    .await;

    // A deleted record: unknown, and no longer downloadable.
    issued
        .delete(
            &format!("{CA}-{}", f.leaves[1].serial.to_hex().to_lowercase()),
            &DeleteParams::default(),
        )
        .await
        .unwrap();
    until("forgotten", Duration::from_secs(10), || {
        (ocsp(d, &url, "leaf1.pem", "responder.pem", &[]).0 == "unknown").then_some(())
    })
    .await;
    assert_eq!(
        get(&format!("/certs/{}.crt", f.leaves[1].serial.to_hex())).code,
        404
    );

    // The controller renews the responder certificate: the new one signs, the
    // statuses stay.
    let (renewed, renewed_key) = f.new_responder("chop test OCSP responder 2").unwrap();
    std::fs::write(d.join("renewed.pem"), cert_pem(&renewed.der).unwrap()).unwrap();
    api::<Secret>(&env)
        .replace(
            &secret_name(CA),
            &PostParams::default(),
            &secret(&renewed.der, &renewed_key),
        )
        .await
        .unwrap();
    let text = until("the renewed responder", Duration::from_secs(10), || {
        let (word, text) = ocsp(d, &url, "leaf0.pem", "renewed.pem", &["-resp_text"]);
        (word == "good" && text.contains("OCSP responder 2")).then_some(text)
    })
    .await;
    assert!(text.contains("Response verify OK"), "{text}");
    assert_eq!(ocsp(d, &url, "leaf1.pem", "renewed.pem", &[]).0, "unknown");
    assert_eq!(ocsp(d, &url, "leaf2.pem", "renewed.pem", &[]).0, "unknown");

    // A CRL published as chunked ConfigMaps for a CRLSchedule of this CA.
    let schedule: CRLSchedule = serde_json::from_value(json!({
        "apiVersion": "chop.dev/v1alpha1", "kind": "CRLSchedule",
        "metadata": {"name": "root-full"},
        "spec": {"caRef": {"name": CA}, "interval": "24h", "validity": "36h", "overlap": "12h"}
    }))
    .unwrap();
    api::<CRLSchedule>(&env)
        .create(&PostParams::default(), &schedule)
        .await
        .unwrap();
    let publish_full = |number: u64, der: Vec<u8>| {
        let (env, ns) = (&env, &ns);
        async move {
            let p = Publication {
                namespace: ns,
                schedule: "root-full",
                owner: None,
                manifest: Manifest::of(CA, number, &der, "t".into(), "n".into()),
            };
            publish(&env.admin(), &p, &der).await.unwrap();
        }
    };
    let mut last = Vec::new();
    for number in 1..=2 {
        let der = f.crl_numbered(number, None).unwrap();
        assert_ne!(der, last);
        publish_full(number, der.clone()).await;
        until("the published CRL", Duration::from_secs(10), || {
            let r = get("/crl/root-full.crl");
            (r.code == 200 && r.body == der).then_some(())
        })
        .await;
        last = der;
    }

    // Finding 4, as whoever can write ConfigMaps in the namespace (or replay an
    // old publication): a CRL signed by another key under the CA's name, a CRL
    // of the CA with a lower number than served, a CRL of another issuer. None
    // is served, each is counted by reason, the last good CRL stays.
    let refused = |reason: &str| {
        let metrics = String::from_utf8(get("/metrics").body).unwrap();
        let label = format!("chop_responder_crl_refused_total{{reason=\"{reason}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&label))
            .map_or(0.0, |v| v.parse::<f64>().unwrap())
    };
    let same_name_other_key = Fixture::new(0).unwrap();
    let (stranger, stranger_key) = Fixture::other_root("C=TW, O=Mallory, OU=Not this CA").unwrap();
    let attacks = [
        (
            "signature",
            5,
            same_name_other_key.crl_numbered(5, None).unwrap(),
        ),
        ("number", 1, f.crl_numbered(1, None).unwrap()),
        (
            "issuer",
            6,
            responder::fixture::crl_signed(&stranger.der, &stranger_key, 6, None).unwrap(),
        ),
    ];
    for (reason, number, bad) in attacks {
        assert_ne!(bad, last);
        publish_full(number, bad).await;
        until(
            &format!("the {reason} refusal"),
            Duration::from_secs(10),
            || (refused(reason) >= 1.0).then_some(()),
        )
        .await;
        let r = get("/crl/root-full.crl");
        assert_eq!(
            (r.code, &r.body),
            (200, &last),
            "{reason}: the last good CRL stays"
        );
    }
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.contains("CRL refused") && log.contains("lower than 2"),
        "refusals logged with the reason:\n{log}"
    );
    // A manifest ConfigMap that does not read (garbage data): logged, the last
    // good CRL stays, and the watch goes on.
    api::<ConfigMap>(&env)
        .patch(
            &manifest_name("root-full"),
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"sha256": "not hex", "chunks": "many"}})),
        )
        .await
        .unwrap();
    until(
        "the unreadable manifest logged",
        Duration::from_secs(10),
        || {
            std::fs::read_to_string(&log_path)
                .unwrap()
                .contains("cannot read the published CRL")
                .then_some(())
        },
    )
    .await;
    assert_eq!(get("/crl/root-full.crl").body, last);
    // The next good CRL is served.
    let der = f.crl_numbered(7, None).unwrap();
    publish_full(7, der.clone()).await;
    until("the next good CRL", Duration::from_secs(10), || {
        (get("/crl/root-full.crl").body == der).then_some(())
    })
    .await;

    // A partitioned schedule: each partition CRL is its own publication
    // `<schedule>-<n>`, served at /crl/<schedule>-<n>.crl; a publication past
    // the schedule's partitions is not served.
    let schedule: CRLSchedule = serde_json::from_value(json!({
        "apiVersion": "chop.dev/v1alpha1", "kind": "CRLSchedule",
        "metadata": {"name": "root-part"},
        "spec": {"caRef": {"name": CA}, "interval": "24h", "validity": "36h", "overlap": "12h",
                 "partitions": 2,
                 "partitionURLTemplate": "http://r.example/crl/root-part-{n}.crl"}
    }))
    .unwrap();
    api::<CRLSchedule>(&env)
        .create(&PostParams::default(), &schedule)
        .await
        .unwrap();
    for n in [1u32, 2] {
        let url = format!("http://r.example/crl/root-part-{n}.crl");
        let der = f.crl_numbered(3, Some((n, &url))).unwrap();
        let name = partition_publication("root-part", n);
        let p = Publication {
            namespace: &ns,
            schedule: &name,
            owner: None,
            manifest: Manifest::of(CA, 3, &der, "t".into(), "n".into()).in_partition(n),
        };
        publish(&env.admin(), &p, &der).await.unwrap();
        if n == 1 {
            until("the partition CRL", Duration::from_secs(10), || {
                let r = get("/crl/root-part-1.crl");
                (r.code == 200 && r.body == der).then_some(())
            })
            .await;
        }
    }
    // Partition 1's place with a CRL whose issuingDistributionPoint names
    // partition 0 (signed by the CA, higher number): refused, scope.
    let part1 = get("/crl/root-part-1.crl").body;
    let wrong = f
        .crl_numbered(8, Some((0, "http://r.example/crl/root-part-0.crl")))
        .unwrap();
    let p = Publication {
        namespace: &ns,
        schedule: &partition_publication("root-part", 1),
        owner: None,
        manifest: Manifest::of(CA, 8, &wrong, "t".into(), "n".into()).in_partition(1),
    };
    publish(&env.admin(), &p, &wrong).await.unwrap();
    until("the scope refusal", Duration::from_secs(10), || {
        (refused("scope") >= 1.0).then_some(())
    })
    .await;
    assert_eq!(get("/crl/root-part-1.crl").body, part1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(get("/crl/root-part-2.crl").code, 404);
    assert_eq!(get("/crl/root-part-0.crl").code, 404, "not published yet");

    // The CertificateAuthority itself turns malformed: the material read
    // before stays served (and OCSP answers), the error names the object.
    untyped::<CertificateAuthority>(&env)
        .patch_status(
            CA,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"nextCRLTime": "not a time"}})),
        )
        .await
        .unwrap();
    until("the malformed CA logged", Duration::from_secs(10), || {
        std::fs::read_to_string(&log_path)
            .unwrap()
            .contains("malformed CertificateAuthority")
            .then_some(())
    })
    .await;
    assert_eq!(get("/ca.pem").body, ca_pem.as_bytes());
    assert_eq!(ocsp(d, &url, "leaf0.pem", "renewed.pem", &[]).0, "good");

    let metrics = String::from_utf8(get("/metrics").body).unwrap();
    let events: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("chop_responder_feed_events_total "))
        .expect("feed events metric")
        .parse()
        .unwrap();
    assert!(events >= 10, "{events}");
    assert!(metrics.contains("chop_responder_ready 1"), "{metrics}");
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(!log.contains("PRIVATE KEY"), "{log}");
    assert!(
        log.contains(&format!(
            "{CA}-{}",
            f.leaves[3].serial.to_hex().to_lowercase()
        )),
        "the malformed record is logged by name:\n{log}"
    );
    drop(_child);
    env.cleanup().await.unwrap();
}
