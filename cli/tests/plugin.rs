//! kubectl-chop end to end: the built binary, run as distinct users (client
//! certificates, each bound in the test namespace to a shipped ClusterRole), against
//! a real kube-apiserver with chop's CRDs, roles and admission policies installed as
//! shipped. chop-controller does not run: the test writes, as the cluster admin,
//! the status the controller would (a CA certificate, a CRL number, a spec hash),
//! so every write the plugin makes meets the real RBAC and policies.
//!
//! Run: `bash e2e/controlplane.sh run -- cargo test -p kubectl-chop --test plugin`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crds::{CertificateRequest, KeyCeremony, Revocation, Suspension};
use e2e::TestEnv;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use serde_json::json;

mod run;
use run::{Out, chop};

const POLICY_LABEL: &str = "chop.dev/e2e-cli-policies";

fn ok(o: Out) -> String {
    assert_eq!(o.code, 0, "stdout:\n{}\nstderr:\n{}", o.stdout, o.stderr);
    o.stdout
}

async fn wait<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Apply the shipped roles and policies (bindings narrowed to namespaces with
/// [`POLICY_LABEL`]) and label `env`'s namespace.
async fn install_policies(env: &TestEnv) {
    let admin = env.admin();
    Api::<k8s_openapi::api::core::v1::Namespace>::all(admin.clone())
        .patch(
            env.namespace(),
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"labels": {POLICY_LABEL: "true", "chop.dev/register": "true"}}}),
            ),
        )
        .await
        .unwrap();
    let files: Vec<String> = [
        "rbac/registration-authority.yaml",
        "rbac/officer.yaml",
        "rbac/administrator.yaml",
        "rbac/auditor.yaml",
        "policies/approval.yaml",
        "policies/no-self-approval.yaml",
        "policies/request-spec.yaml",
        "policies/controller-state.yaml",
        "policies/key-ceremony.yaml",
        "policies/suspension-resume.yaml",
    ]
    .map(String::from)
    .to_vec();
    e2e::install_manifests(
        &admin,
        &files,
        POLICY_LABEL,
        Some("cli-tests"),
        "chop-cli-tests",
    )
    .await
    .unwrap();
}

/// Bind `user` to ClusterRole `role` in the namespace; its kubeconfig, once RBAC
/// lets it read.
async fn user(env: &TestEnv, name: &str, role: &str) -> PathBuf {
    use k8s_openapi::api::rbac::v1::RoleBinding;
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": format!("{}-{name}", role.replace(':', "-")), "namespace": env.namespace()},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": name}]
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(env.admin(), env.namespace())
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    let client = env.user(name, &[]).await.unwrap();
    let api: Api<CertificateRequest> = Api::namespaced(client, env.namespace());
    wait(&format!("RBAC for {name}"), || {
        let api = api.clone();
        async move { api.list(&Default::default()).await.ok().map(|_| ()) }
    })
    .await;
    env.plane().kubeconfig_for_user(name, &[]).await.unwrap()
}

fn condition(
    status: &Option<crds::CertificateRequestStatus>,
    type_: &str,
) -> Option<(String, String, String)> {
    status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

fn now_minus(secs: i64) -> String {
    jiff::Timestamp::from_second(jiff::Timestamp::now().as_second() - secs)
        .unwrap()
        .to_string()
}

/// A self-signed certificate standing in for the CA's (only its subject is read).
fn ca_certificate() -> String {
    let dir = std::env::temp_dir().join(format!("chop-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ])
        .args(["-keyout", dir.join("k.pem").to_str().unwrap()])
        .args(["-subj", "/C=TW/O=chop-test/CN=Test Root CA", "-days", "1"])
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).ok();
    assert!(out.status.success(), "openssl: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn the_plugin_as_officer_auditor_ra_and_administrator() {
    let crds: Vec<_> = crds::all().into_iter().map(|(_, c)| c).collect();
    let env = TestEnv::with_crds(&crds).await.unwrap();
    let ns = env.namespace().to_owned();
    install_policies(&env).await;
    let officer = user(&env, "officer-cli", "chop:officer").await;
    let auditor = user(&env, "auditor-cli", "chop:auditor").await;
    let ra = user(&env, "ra-cli", "chop:registration-authority").await;
    let administrator = user(&env, "admin-cli", "chop:administrator").await;
    let admin = env.admin();

    // The CA (as an administrator would write it: a development key, and a CRL
    // validity the CRD allows only as a declared deviation), and the status
    // chop-controller would have written.
    let ssa = PatchParams::apply("chop-cli-tests").force();
    let dynamic = |kind: &str, plural: &str| {
        let gvk = GroupVersionKind::gvk("chop.dev", "v1alpha1", kind);
        Api::<DynamicObject>::namespaced_with(
            admin.clone(),
            &ns,
            &ApiResource::from_gvk_with_plural(&gvk, plural),
        )
    };
    let cas = dynamic("CertificateAuthority", "certificateauthorities");
    let ca: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "chop.dev/v1alpha1", "kind": "CertificateAuthority",
        "metadata": {"name": "root"},
        "spec": {"type": "Root", "subject": {"country": "TW", "commonName": "Test Root CA"},
                 "hsm": {"tokenLabel": "moica", "keyLabel": "root", "keyGeneration": "IfMissing",
                         "pinSecretRef": {"name": "hsm-pin", "key": "pin"}}}
    }))
    .unwrap();
    cas.create(&PostParams::default(), &ca).await.unwrap();
    let st = json!({"apiVersion": "chop.dev/v1alpha1", "kind": "CertificateAuthority", "status": {
        "certificate": ca_certificate(), "serialNumber": "5EED",
        "notAfter": "2046-01-01T00:00:00Z", "issuedCount": 2,
        "conditions": [{"type": "Ready", "status": "True", "reason": "Ready", "message": "",
                        "lastTransitionTime": now_minus(0)}]}});
    cas.patch_status("root", &ssa, &Patch::Apply(&st))
        .await
        .unwrap();
    let schedules = dynamic("CRLSchedule", "crlschedules");
    let sched: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "chop.dev/v1alpha1", "kind": "CRLSchedule", "metadata": {"name": "root"},
        "spec": {"caRef": {"name": "root"}, "interval": "24h", "validity": "48h", "allowValidityOver36h": true}
    }))
    .unwrap();
    schedules
        .create(&PostParams::default(), &sched)
        .await
        .unwrap();
    let st = json!({"apiVersion": "chop.dev/v1alpha1", "kind": "CRLSchedule", "status": {
        "crlNumber": 7, "entries": 1, "thisUpdate": now_minus(3600), "nextUpdate": "2046-01-01T00:00:00Z"}});
    schedules
        .patch_status("root", &ssa, &Patch::Apply(&st))
        .await
        .unwrap();
    let records = dynamic("IssuedCertificate", "issuedcertificates");
    for (serial, state) in [("1A", "Valid"), ("1B", "Held")] {
        let rec: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "chop.dev/v1alpha1", "kind": "IssuedCertificate",
            "metadata": {"name": format!("root-{}", serial.to_lowercase()),
                         "labels": {"chop.dev/ca": "root", "chop.dev/status": state}},
            "spec": {"caRef": {"name": "root"}, "serialNumber": serial, "subject": "C=TW,CN=x",
                     "profile": "Signature", "notBefore": now_minus(60), "notAfter": "2030-01-01T00:00:00Z",
                     "keyFingerprint": "00", "certificate": "-"},
            "status": {"state": state}
        }))
        .unwrap();
        records.create(&PostParams::default(), &rec).await.unwrap();
    }

    // chop-requested-by (a mutating policy) is in force once it names the admin
    // on a dry-run creation.
    let admin_requests: Api<CertificateRequest> = Api::namespaced(admin.clone(), &ns);
    wait("chop-requested-by in force", || {
        let api = admin_requests.clone();
        async move {
            let probe: CertificateRequest = serde_json::from_value(json!({
                "apiVersion": "chop.dev/v1alpha1", "kind": "CertificateRequest",
                "metadata": {"name": "probe"},
                "spec": {"caRef": {"name": "root"}, "profile": "Signature",
                         "subscriber": {"reference": "probe", "commonName": "probe"}, "csr": "x"}
            }))
            .unwrap();
            let pp = PostParams {
                dry_run: true,
                ..PostParams::default()
            };
            let made = api.create(&pp, &probe).await.ok()?;
            (made.metadata.annotations?.get("chop.dev/requested-by")? == "admin").then_some(())
        }
    })
    .await;

    // The RA files two requests (chop-requested-by records it as their creator,
    // so the officer is not deciding their own).
    let requests: Api<CertificateRequest> =
        Api::namespaced(env.user("ra-cli", &[]).await.unwrap(), &ns);
    for name in ["alice", "bob"] {
        let body: CertificateRequest = serde_json::from_value(json!({
            "apiVersion": "chop.dev/v1alpha1", "kind": "CertificateRequest",
            "metadata": {"name": name},
            "spec": {"caRef": {"name": "root"}, "profile": "Signature",
                     "subscriber": {"reference": name, "commonName": "王小明"}, "csr": "x"}
        }))
        .unwrap();
        requests
            .create(&PostParams::default(), &body)
            .await
            .unwrap();
    }
    // The policies are in force once chop-approval refuses a malformed decision.
    wait("chop-approval in force", || {
        let api = admin_requests.clone();
        async move {
            let bad = json!({"apiVersion": "chop.dev/v1alpha1", "kind": "CertificateRequest",
                "status": {"conditions": [{"type": "Approved", "status": "False", "reason": "Probe",
                  "message": "", "lastTransitionTime": now_minus(0)}]}});
            let pp = PatchParams {
                dry_run: true,
                ..PatchParams::apply("probe").force()
            };
            match api.patch_status("alice", &pp, &Patch::Apply(&bad)).await {
                Err(kube::Error::Api(s)) if s.message.contains("take status True only") => Some(()),
                _ => None,
            }
        }
    })
    .await;

    // status, as an auditor.
    let text = ok(chop(&auditor, &ns, &["status", "root"]));
    for needle in [
        "CN=Test Root CA".to_owned(),
        format!("{:<21} 5EED", "Serial"),
        "2046-01-01T00:00:00Z".to_owned(),
        format!("{:<21} True (Ready)", "Ready"),
        "crlschedule/root: number 7, 1 entries, age 1h0m".to_owned(),
        "2 issued: Expired 0, Held 1, Revoked 0, Valid 1".to_owned(),
        format!("{:<21} 2", "Pending requests"),
        "officer approval (kubectl chop approve)".to_owned(),
    ] {
        assert!(text.contains(&needle), "{needle:?} not in:\n{text}");
    }

    // An auditor may not approve: the API server's refusal, the role to ask
    // for, and nothing written.
    let o = chop(&auditor, &ns, &["approve", "alice"]);
    assert_eq!(o.code, 2, "{}{}", o.stdout, o.stderr);
    assert!(
        o.stderr.contains("Error from server (Forbidden)"),
        "{}",
        o.stderr
    );
    assert!(
        o.stderr
            .contains(r#"User "auditor-cli" cannot patch resource "certificaterequests/status""#),
        "{}",
        o.stderr
    );
    assert!(o.stderr.contains("chop:officer"), "{}", o.stderr);
    let alice = admin_requests.get("alice").await.unwrap();
    assert_eq!(condition(&alice.status, "Approved"), None);

    // An officer approves, with the field manager kubectl-chop.
    let text = ok(chop(
        &officer,
        &ns,
        &["approve", "alice", "--reason", "identity checked in person"],
    ));
    assert!(text.contains("certificaterequest/alice approved"), "{text}");
    let alice = admin_requests.get("alice").await.unwrap();
    assert_eq!(
        condition(&alice.status, "Approved"),
        Some((
            "True".into(),
            "OfficerApproved".into(),
            "identity checked in person".into()
        ))
    );
    let managers: Vec<_> = alice
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter(|m| m.subresource.as_deref() == Some("status"))
        .filter_map(|m| m.manager)
        .collect();
    assert!(
        managers.contains(&"kubectl-chop".to_owned()),
        "{managers:?}"
    );
    // Again: nothing to do.
    assert!(ok(chop(&officer, &ns, &["approve", "alice"])).contains("already Approved"));

    // deny needs a reason; the decision is final.
    let o = chop(&officer, &ns, &["deny", "bob"]);
    assert_eq!(
        o.code, 2,
        "clap refuses a deny without --reason: {}",
        o.stderr
    );
    assert!(o.stderr.contains("--reason"), "{}", o.stderr);
    ok(chop(
        &officer,
        &ns,
        &["deny", "bob", "--reason", "documents did not match"],
    ));
    let bob = admin_requests.get("bob").await.unwrap();
    assert_eq!(
        condition(&bob.status, "Denied"),
        Some((
            "True".into(),
            "OfficerDenied".into(),
            "documents did not match".into()
        ))
    );
    let o = chop(&officer, &ns, &["approve", "bob"]);
    assert_eq!(o.code, 2);
    assert!(
        o.stderr.contains("already Denied") && o.stderr.contains("final"),
        "{}",
        o.stderr
    );
    assert_eq!(
        condition(&admin_requests.get("bob").await.unwrap().status, "Approved"),
        None
    );

    // The RA accepts for the applicant.
    ok(chop(&ra, &ns, &["accept", "alice"]));
    assert!(admin_requests.get("alice").await.unwrap().spec.accepted);

    // revoke --request: the right Revocation; a second run changes nothing; a
    // different reason under the same name is refused.
    let revocations: Api<Revocation> = Api::namespaced(admin.clone(), &ns);
    let text = ok(chop(
        &officer,
        &ns,
        &["revoke", "--request", "alice", "--reason", "keyCompromise"],
    ));
    assert!(text.contains("revocation/rev-alice created"), "{text}");
    let rev = revocations.get("rev-alice").await.unwrap();
    assert_eq!(
        serde_json::to_value(&rev.spec).unwrap(),
        json!({"caRef": {"name": "root"}, "certificateRequestRef": {"name": "alice"},
               "reason": "keyCompromise", "requester": "Subscriber"})
    );
    let uid = rev.metadata.uid.clone();
    let text = ok(chop(
        &officer,
        &ns,
        &["revoke", "--request", "alice", "--reason", "keyCompromise"],
    ));
    assert!(text.contains("already exists with this spec"), "{text}");
    let o = chop(
        &officer,
        &ns,
        &["revoke", "--request", "alice", "--reason", "superseded"],
    );
    assert_eq!(o.code, 2);
    assert!(
        o.stderr.contains("reason keyCompromise") && o.stderr.contains("--name"),
        "{}",
        o.stderr
    );
    let all = revocations.list(&Default::default()).await.unwrap().items;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].metadata.uid, uid);
    let o = chop(
        &officer,
        &ns,
        &[
            "revoke",
            "--request",
            "alice",
            "--reason",
            "certificateHold",
        ],
    );
    assert!(
        o.stderr.contains("is not one of") && o.stderr.contains("keyCompromise"),
        "{}",
        o.stderr
    );

    // suspend as the RA, resume as the officer.
    ok(chop(&ra, &ns, &["suspend", "--request", "alice"]));
    ok(chop(&ra, &ns, &["suspend", "--request", "alice"]));
    let o = chop(&ra, &ns, &["resume", "hold-alice"]);
    assert_eq!(o.code, 2, "the RA may not resume: {}", o.stdout);
    assert!(o.stderr.contains("Forbidden"), "{}", o.stderr);
    assert!(o.stderr.contains("officer's decision"), "{}", o.stderr);
    ok(chop(&officer, &ns, &["resume", "hold-alice"]));
    let hold = Api::<Suspension>::namespaced(admin.clone(), &ns)
        .get("hold-alice")
        .await
        .unwrap();
    assert!(hold.spec.resumed);
    assert_eq!(hold.spec.certificate_request_ref.unwrap().name, "alice");

    // A key ceremony made by an administrator; the hash the controller would publish.
    let ceremonies: Api<KeyCeremony> =
        Api::namespaced(env.user("admin-cli", &[]).await.unwrap(), &ns);
    let kc: KeyCeremony = serde_json::from_value(json!({
        "apiVersion": "chop.dev/v1alpha1", "kind": "KeyCeremony", "metadata": {"name": "gen"},
        "spec": {"operation": "Generate", "caRef": {"name": "root"}, "reason": "new root key"}
    }))
    .unwrap();
    ceremonies
        .create(&PostParams::default(), &kc)
        .await
        .unwrap();
    let hash = "ab".repeat(32);
    let st = json!({"apiVersion": "chop.dev/v1alpha1", "kind": "KeyCeremony",
        "status": {"specHash": hash, "phase": "WaitingForQuorum"}});
    Api::<KeyCeremony>::namespaced(admin.clone(), &ns)
        .patch_status("gen", &ssa, &Patch::Apply(&st))
        .await
        .unwrap();
    // An officer claiming the Administrator role is refused by the policy.
    let o = chop(
        &officer,
        &ns,
        &["ceremony", "approve", "gen", "--role", "Administrator"],
    );
    assert_eq!(o.code, 2, "{}", o.stdout);
    assert!(
        o.stderr.contains("Error from server (Forbidden)"),
        "{}",
        o.stderr
    );
    assert!(o.stderr.contains("chop:administrator"), "{}", o.stderr);
    let text = ok(chop(
        &auditor,
        &ns,
        &[
            "ceremony",
            "approve",
            "gen",
            "--role",
            "Auditor",
            "--reason",
            "witnessed",
        ],
    ));
    assert!(
        text.contains("approved by auditor-cli as Auditor"),
        "{text}"
    );
    let kc = Api::<KeyCeremony>::namespaced(admin.clone(), &ns)
        .get("gen")
        .await
        .unwrap();
    assert_eq!(
        serde_json::to_value(&kc.spec.approvals).unwrap(),
        json!([{"user": "auditor-cli", "role": "Auditor", "specHash": hash, "reason": "witnessed"}])
    );
    let manager = format!("approve-{}-auditor-cli", &hash[..16]);
    assert!(
        kc.metadata
            .managed_fields
            .unwrap_or_default()
            .iter()
            .any(|m| m.manager.as_deref() == Some(manager.as_str())),
        "no manager {manager}"
    );
    // Any chop reader may follow the ceremony.
    ok(chop(&administrator, &ns, &["ceremony", "status", "gen"]));
    let text = ok(chop(&auditor, &ns, &["ceremony", "status", "gen"]));
    assert!(
        text.contains("auditor-cli") && text.contains("WaitingForQuorum"),
        "{text}"
    );

    // conformance: the development key and the 48h CRL validity are not met.
    let o = chop(&auditor, &ns, &["conformance", "root"]);
    assert_eq!(o.code, 1, "{}{}", o.stdout, o.stderr);
    for needle in [
        "§6.1.1    NOT MET",
        "change: spec.hsm.keyGeneration: Never",
        "crlschedule/root spec.validity = 48h",
        "change: set crlschedule/root spec.validity to at most 36h",
        "§7.1.6    met",
        "requirements met.",
    ] {
        assert!(
            o.stdout.contains(needle),
            "{needle:?} not in:\n{}",
            o.stdout
        );
    }
    assert!(
        o.stderr.contains("2 CPS requirement(s) not met"),
        "{}",
        o.stderr
    );

    // find: a certificate whose request chop-controller already deleted
    // (--request-retention) is found in the register by request name, serial,
    // subscriber id and key fingerprint; it prints no subject name (§9.4).
    let fp = "ab".repeat(32);
    let rec: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "chop.dev/v1alpha1", "kind": "IssuedCertificate",
        "metadata": {"name": "root-1c",
                     "labels": {"chop.dev/ca": "root", "chop.dev/status": "Revoked",
                                "chop.dev/subscriber-id": "S0001", "chop.dev/request": "carol",
                                "chop.dev/key-fingerprint": &fp[..63], "chop.dev/profile": "Signature"}},
        "spec": {"caRef": {"name": "root"}, "serialNumber": "1C", "subject": "C=TW,CN=陳小華",
                 "profile": "Signature", "notBefore": now_minus(60), "notAfter": "2030-01-01T00:00:00Z",
                 "keyFingerprint": fp, "subscriberId": "S0001", "requestRef": {"name": "carol"},
                 "certificate": "-"},
        "status": {"state": "Revoked"}
    }))
    .unwrap();
    records.create(&PostParams::default(), &rec).await.unwrap();
    let fp_upper = fp.to_uppercase();
    for by in [
        vec!["--request", "carol"],
        vec!["--serial", "00:1c"],
        vec!["--serial", "1C", "--ca", "root"],
        vec!["--subscriber", "S0001"],
        vec!["--key-fingerprint", &fp_upper],
    ] {
        let mut args = vec!["find"];
        args.extend(&by);
        let text = ok(chop(&auditor, &ns, &args));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{by:?}:\n{text}");
        assert!(
            lines[0].starts_with("CA") && lines[0].contains("SUBSCRIBER"),
            "{text}"
        );
        let row: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            row,
            [
                "root",
                "1C",
                "Revoked",
                "2030-01-01T00:00:00Z",
                "carol",
                "S0001",
                "Signature",
                "root-1c"
            ],
            "{by:?}:\n{text}"
        );
        assert!(!text.contains("陳小華"), "{text}");
    }
    let o = chop(&auditor, &ns, &["find", "--request", "nobody"]);
    assert_eq!(o.code, 2, "{}{}", o.stdout, o.stderr);
    assert!(o.stderr.contains("not found"), "{}", o.stderr);
    let o = chop(&auditor, &ns, &["find", "--serial", "xyz"]);
    assert_eq!(o.code, 2, "{}{}", o.stdout, o.stderr);
    assert!(
        o.stderr.contains("not a hexadecimal serial"),
        "{}",
        o.stderr
    );
    // ...and revoked by the name of the deleted request: the register names its CA.
    let text = ok(chop(
        &officer,
        &ns,
        &["revoke", "--request", "carol", "--reason", "superseded"],
    ));
    assert!(text.contains("revocation/rev-carol created"), "{text}");
    let rev = revocations.get("rev-carol").await.unwrap();
    assert_eq!(
        serde_json::to_value(&rev.spec).unwrap(),
        json!({"caRef": {"name": "root"}, "certificateRequestRef": {"name": "carol"},
               "reason": "superseded", "requester": "Subscriber"})
    );

    // completion.
    let text = ok(chop(&auditor, &ns, &["completion", "bash"]));
    assert!(
        text.contains("complete -F") && text.contains("kubectl-chop"),
        "{text}"
    );

    env.cleanup().await.unwrap();
}
