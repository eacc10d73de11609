//! chop's CRDs on a real kube-apiserver: they install (so every CEL rule compiles),
//! every example in `examples/` is accepted, and the invariants users rely on are
//! enforced by the API server itself, with the message a user would read.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use e2e::TestEnv;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use serde_json::{Value, json};

fn crds()
-> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    crds::all().into_iter().map(|(_, crd)| crd).collect()
}

fn api(env: &TestEnv, kind: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("chop.dev", "v1alpha1", kind);
    let plural = match kind {
        "CertificateAuthority" => "certificateauthorities".to_string(),
        "CRLSchedule" => "crlschedules".to_string(),
        "KeyCeremony" => "keyceremonies".to_string(),
        other => format!("{}s", other.to_lowercase()),
    };
    Api::namespaced_with(
        env.admin(),
        env.namespace(),
        &ApiResource::from_gvk_with_plural(&gvk, &plural),
    )
}

fn example(file: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    serde_saphyr::from_str(&text).unwrap()
}

async fn create(env: &TestEnv, obj: Value) -> Result<DynamicObject, kube::Error> {
    let kind = obj["kind"].as_str().unwrap().to_string();
    let obj: DynamicObject = serde_json::from_value(obj).unwrap();
    api(env, &kind).create(&PostParams::default(), &obj).await
}

/// The API server's rejection: 422 with `message` in it.
fn assert_rejected(result: Result<DynamicObject, kube::Error>, message: &str) {
    match result {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 422, "{s:?}");
            assert!(
                s.message.contains(message),
                "expected {message:?} in {:?}",
                s.message
            );
        }
        other => panic!("expected a 422 rejection containing {message:?}, got {other:?}"),
    }
}

#[tokio::test]
async fn every_example_is_accepted() {
    let env = TestEnv::with_crds(&crds()).await.unwrap();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut created = 0;
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for path in files {
        // Directories (examples/ra-client/) hold programs, not objects.
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let file = path.file_name().unwrap().to_str().unwrap().to_string();
        let obj = example(&file);
        if obj["apiVersion"] != "chop.dev/v1alpha1" {
            continue;
        }
        let made = create(&env, obj)
            .await
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(made.metadata.namespace.as_deref(), Some(env.namespace()));
        created += 1;
    }
    assert!(created >= 8, "only {created} chop examples");

    // Defaults from the CRD schema are applied by the API server.
    let ca = api(&env, "CertificateAuthority")
        .get("moica")
        .await
        .unwrap();
    assert_eq!(ca.data["spec"]["policyOIDs"], json!(["2.16.886.101.0.3.3"]));
    let root = api(&env, "CertificateAuthority")
        .get("moica-root")
        .await
        .unwrap();
    assert_eq!(root.data["spec"]["issuance"], "Enabled");
    env.cleanup().await.unwrap();
}

#[tokio::test]
async fn cps_limits_and_one_of_rules_are_enforced_on_create() {
    let env = TestEnv::with_crds(&crds()).await.unwrap();

    let mut crl = example("crlschedule.yaml");
    crl["spec"]["validity"] = json!("37h");
    assert_rejected(create(&env, crl.clone()).await, "validity over 36h");
    crl["spec"]["allowValidityOver36h"] = json!(true);
    crl["metadata"]["name"] = json!("allowed");
    create(&env, crl).await.unwrap();

    let mut crl = example("crlschedule.yaml");
    crl["spec"]["interval"] = json!("24h");
    crl["spec"]["overlap"] = json!("13h");
    assert_rejected(create(&env, crl).await, "interval + overlap");

    let mut crl = example("crlschedule-partitioned.yaml");
    crl["spec"]["partitionURLTemplate"] = json!("http://repository.example/crl/moica.crl");
    assert_rejected(create(&env, crl).await, "must contain {n}");

    let mut crl = example("crlschedule.yaml");
    crl["spec"]["interval"] = json!("sometimes");
    let err = create(&env, crl).await.unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 422),
        "{err:?}"
    );

    let mut cr = example("certificaterequest-signature.yaml");
    cr["spec"]["publicKey"] = json!("-----BEGIN PUBLIC KEY-----\nAA==\n-----END PUBLIC KEY-----\n");
    assert_rejected(create(&env, cr).await, "exactly one of csr or publicKey");

    // A renewal may give no key (it keeps the original's), but no subject.
    let mut cr = example("certificaterequest-renewal.yaml");
    cr["spec"]["subscriber"] = json!({"reference": "ra-1", "commonName": "王小明"});
    assert_rejected(create(&env, cr).await, "a renewal copies the subject");

    let mut cr = example("certificaterequest-encryption.yaml");
    cr["spec"]["emailVerified"] = json!(false);
    assert_rejected(create(&env, cr).await, "emailVerified");

    let mut cr = example("certificaterequest-signature.yaml");
    cr["spec"].as_object_mut().unwrap().remove("subscriber");
    assert_rejected(create(&env, cr).await, "subscriber is required");

    let mut rev = example("revocation.yaml");
    rev["spec"]["reason"] = json!("certificateHold");
    let err = create(&env, rev).await.unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 422 && s.message.contains("reason")),
        "{err:?}"
    );

    let mut rev = example("revocation.yaml");
    rev["spec"]["serialNumber"] = json!("0A1B");
    assert_rejected(
        create(&env, rev).await,
        "exactly one of certificateRequestRef or serialNumber",
    );

    let mut sub = example("certificateauthority-root.yaml");
    sub["spec"]["parentRef"] = json!({"name": "elsewhere"});
    assert_rejected(create(&env, sub).await, "only for subordinate CAs");
    env.cleanup().await.unwrap();
}

#[tokio::test]
async fn immutable_fields_stay_immutable() {
    let env = TestEnv::with_crds(&crds()).await.unwrap();
    let pp = PatchParams::default();

    create(&env, example("revocation.yaml")).await.unwrap();
    let revs = api(&env, "Revocation");
    let err = revs
        .patch(
            "wang-xiaoming-key-compromise",
            &pp,
            &Patch::Merge(json!({"spec": {"reason": "superseded"}})),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 422 && s.message.contains("cannot be changed or undone")),
        "{err:?}"
    );

    create(&env, example("certificateauthority-root.yaml"))
        .await
        .unwrap();
    let err = api(&env, "CertificateAuthority")
        .patch(
            "moica-root",
            &pp,
            &Patch::Merge(json!({"spec": {"type": "Subordinate", "parentRef": {"name": "x"}}})),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.message.contains("type is immutable")),
        "{err:?}"
    );

    let mut susp = example("suspension.yaml");
    susp["spec"]["resumed"] = json!(true);
    create(&env, susp).await.unwrap();
    let err = api(&env, "Suspension")
        .patch(
            "wang-xiaoming-hold",
            &pp,
            &Patch::Merge(json!({"spec": {"resumed": false}})),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.message.contains("cannot be re-applied")),
        "{err:?}"
    );

    // Acceptance cannot be withdrawn; once issued, the request's spec is frozen.
    create(&env, example("certificaterequest-encryption.yaml"))
        .await
        .unwrap();
    let crs = api(&env, "CertificateRequest");
    let err = crs
        .patch(
            "wang-xiaoming-encryption",
            &pp,
            &Patch::Merge(json!({"spec": {"accepted": false}})),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.message.contains("acceptance cannot be withdrawn")),
        "{err:?}"
    );
    // Before issuance, a mutable field may change...
    crs.patch(
        "wang-xiaoming-encryption",
        &pp,
        &Patch::Merge(json!({"spec": {"email": "new@example.tw"}})),
    )
    .await
    .unwrap();
    // ...after the controller records the certificate, nothing in spec may.
    crs.patch_status(
        "wang-xiaoming-encryption",
        &pp,
        &Patch::Merge(json!({"status": {"certificate": "-----BEGIN CERTIFICATE-----\n...", "serialNumber": "0A"}})),
    )
    .await
    .unwrap();
    let err = crs
        .patch(
            "wang-xiaoming-encryption",
            &pp,
            &Patch::Merge(json!({"spec": {"email": "other@example.tw"}})),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.message.contains("spec cannot change after the certificate was issued")),
        "{err:?}"
    );
    env.cleanup().await.unwrap();
}

/// `kubectl get` answers the usual question without describe: a record's
/// status (Valid from the commit on, not blank), its subscriber id rather than
/// the subject's name (which only `-o wide` shows, CPS §9.4), and why a
/// request was not issued.
#[tokio::test]
async fn kubectl_get_columns_answer_without_describe() {
    let env = TestEnv::with_crds(&crds()).await.unwrap();
    let records = api(&env, "IssuedCertificate");
    let record: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "chop.dev/v1alpha1", "kind": "IssuedCertificate",
        "metadata": {"name": "root-0a1b", "labels": {"chop.dev/ca": "root", "chop.dev/status": "Valid"}},
        "spec": {"caRef": {"name": "root"}, "serialNumber": "0A1B", "subject": "C=TW, CN=王小明, serialNumber=S1",
                 "profile": "Signature", "notBefore": "2026-12-01T00:00:00Z", "notAfter": "2031-12-01T00:00:00Z",
                 "keyFingerprint": "ab", "subscriberId": "S1", "certificate": "-----BEGIN CERTIFICATE-----"}
    }))
    .unwrap();
    records
        .create(&PostParams::default(), &record)
        .await
        .unwrap();
    let requests = api(&env, "CertificateRequest");
    let mut req = example("certificaterequest-signature.yaml");
    req["metadata"]["name"] = json!("refused");
    let req: DynamicObject = serde_json::from_value(req).unwrap();
    requests.create(&PostParams::default(), &req).await.unwrap();
    let cond = json!({"apiVersion": "chop.dev/v1alpha1", "kind": "CertificateRequest",
        "status": {"conditions": [{"type": "Issued", "status": "False", "reason": "WeakKey",
            "message": "RSA 1024", "lastTransitionTime": "2026-12-01T00:00:00Z"}]}});
    requests
        .patch_status(
            "refused",
            &PatchParams::apply("test").force(),
            &Patch::Apply(&cond),
        )
        .await
        .unwrap();

    let kubectl = |args: &[&str]| {
        let out = std::process::Command::new("kubectl")
            .args(args)
            .args(["-n", env.namespace()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let plain = kubectl(&["get", "issuedcertificates"]);
    let row = plain.lines().find(|l| l.starts_with("root-0a1b")).unwrap();
    assert!(row.contains("Valid") && row.contains("S1"), "{plain}");
    assert!(
        !plain.contains("王小明"),
        "the subject's name is not in the plain listing: {plain}"
    );
    let wide = kubectl(&["get", "issuedcertificates", "-o", "wide"]);
    assert!(wide.contains("王小明"), "{wide}");
    let reqs = kubectl(&["get", "certificaterequests"]);
    let row = reqs.lines().find(|l| l.starts_with("refused")).unwrap();
    assert!(row.contains("WeakKey"), "{reqs}");
}
