//! `kubectl chop audit --from-cluster` on a real kube-apiserver: an auditor (the
//! shipped chop:auditor role, bound in the test namespace) verifies and exports
//! AuditSegments sealed by the chop-audit library; the cluster admin, who bypasses
//! chop's policies (the chop-audit-segment policy is not installed in this
//! namespace), tampers with them the ways the API allows; the plugin names each.
//!
//! Run: `bash e2e/controlplane.sh run -- cargo test -p kubectl-chop --test audit_cluster`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use chop_audit::testing::SoftwareSigner;
use chop_audit::{TrailState, seal};
use crds::audit_segment::segment_name;
use crds::{AuditSegment, AuditSegmentSpec};
use e2e::TestEnv;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

mod audit_common;
mod run;
use audit_common::{issuance, trail};
use run::{chop, expect};

async fn create(api: &Api<AuditSegment>, name: &str, spec: &AuditSegmentSpec) {
    api.create(
        &PostParams::default(),
        &AuditSegment::new(name, spec.clone()),
    )
    .await
    .unwrap();
}

/// Delete a segment and wait until it is gone.
async fn delete(api: &Api<AuditSegment>, name: &str) {
    api.delete(name, &DeleteParams::default()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while api.get_opt(name).await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "{name} not deleted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_auditor_verifies_and_exports_the_cluster_trail_and_each_tampering_is_named() {
    let crds: Vec<_> = crds::all().into_iter().map(|(_, c)| c).collect();
    let env = TestEnv::with_crds(&crds).await.unwrap();
    let ns = env.namespace().to_owned();
    let admin = env.admin();
    e2e::install_manifests(
        &admin,
        &["rbac/auditor.yaml".to_owned()],
        "chop.dev/e2e-cli-audit",
        None,
        "chop-cli-audit-tests",
    )
    .await
    .unwrap();
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "auditor", "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "chop:auditor"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "auditor-trail"}]
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    let auditor = env
        .plane()
        .kubeconfig_for_user("auditor-trail", &[])
        .await
        .unwrap();
    let cluster_admin = env.plane().admin_kubeconfig();

    // The trail as chop-controller would have written it: five segments and the
    // audit key in ConfigMap chop-audit-key.
    let key = SoftwareSigner::generate();
    let mut segs = trail(&key, 5);
    let api: Api<AuditSegment> = Api::namespaced(admin.clone(), &ns);
    for s in &segs {
        create(&api, &segment_name(s.index), s).await;
    }
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "chop-audit-key"},
        "data": {"audit-key.pem": key.pem(), "key-id": chop_audit::key::key_id(key.spki_der())}
    }))
    .unwrap();
    Api::<ConfigMap>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("audit-key.pem");
    std::fs::write(&pem, key.pem()).unwrap();
    let pem = pem.to_str().unwrap();

    // The auditor pins the key they recorded (chop:auditor does not read
    // ConfigMaps; without --key the plugin says what to do).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let o = chop(
            &auditor,
            &ns,
            &["audit", "verify", "--from-cluster", "--key", pem],
        );
        if o.code == 0 || Instant::now() > deadline {
            expect(&o, 0, "records:   20 (sequence 0 to 19)");
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    expect(
        &chop(&auditor, &ns, &["audit", "verify", "--from-cluster"]),
        2,
        "or pass --key PEM with the audit key you recorded",
    );
    // Whoever may read the ConfigMap gets the key from it.
    expect(
        &chop(&cluster_admin, &ns, &["audit", "verify", "--from-cluster"]),
        0,
        &chop_audit::key::key_id(key.spki_der()),
    );

    // Export, verify offline; a second export never overwrites the first.
    let first = dir.path().join("first.json");
    let first_s = first.to_str().unwrap();
    expect(
        &chop(
            &auditor,
            &ns,
            &["audit", "export", "-o", first_s, "--key", pem],
        ),
        0,
        "exported",
    );
    expect(
        &chop(&auditor, &ns, &["audit", "verify", first_s]),
        0,
        "audit trail verified",
    );
    expect(
        &chop(
            &auditor,
            &ns,
            &["audit", "export", "-o", first_s, "--key", pem],
        ),
        2,
        "never overwrites",
    );

    // The controller goes on: segment 5. The trail extends the export.
    let state = TrailState::after(&segs[4]).unwrap();
    let t: jiff::Timestamp = "2026-11-20T10:00:00Z".parse().unwrap();
    let (next, _) = seal(&state, issuance(5), t, "chop-controller-0", &key).unwrap();
    create(&api, &segment_name(5), &next).await;
    segs.push(next);
    let since = [
        "audit",
        "verify",
        "--from-cluster",
        "--key",
        pem,
        "--since",
        first_s,
    ];
    expect(&chop(&auditor, &ns, &since), 0, "consistent with");
    let second = dir.path().join("second.json");
    let second_s = second.to_str().unwrap();
    expect(
        &chop(
            &auditor,
            &ns,
            &["audit", "export", "-o", second_s, "--key", pem],
        ),
        0,
        "exported",
    );
    let verify = ["audit", "verify", "--from-cluster", "--key", pem];

    // 1. Edit a record. The spec is immutable (CRD rule), even for the admin ...
    let err = api
        .patch(
            &segment_name(1),
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"writer": "mallory"}})),
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("an audit segment is immutable"),
        "{err}"
    );
    // ... so the admin deletes and recreates it with request 1 approved by mallory.
    let mut edited = segs[1].clone();
    edited.records[1].users[0].user = "mallory".into();
    delete(&api, &segment_name(1)).await;
    create(&api, &segment_name(1), &edited).await;
    expect(
        &chop(&auditor, &ns, &verify),
        1,
        "AlteredRecord: record 5 (segment 1) was altered",
    );
    // Even an export of the altered trail is refused (nothing written).
    let third = dir.path().join("third.json");
    expect(
        &chop(
            &auditor,
            &ns,
            &[
                "audit",
                "export",
                "-o",
                third.to_str().unwrap(),
                "--key",
                pem,
            ],
        ),
        1,
        "AlteredRecord",
    );
    assert!(!third.exists());
    delete(&api, &segment_name(1)).await;
    create(&api, &segment_name(1), &segs[1]).await;
    expect(&chop(&auditor, &ns, &verify), 0, "audit trail verified");

    // 2. Replay segment 1 under the next free name.
    create(&api, &segment_name(6), &segs[1]).await;
    expect(
        &chop(&auditor, &ns, &verify),
        1,
        "MisnamedSegment: object audit-000000000006 holds segment 1",
    );
    delete(&api, &segment_name(6)).await;

    // 3. Delete a segment in the middle.
    delete(&api, &segment_name(2)).await;
    expect(
        &chop(&auditor, &ns, &verify),
        1,
        "MissingSegment: segment 2 is missing",
    );
    create(&api, &segment_name(2), &segs[2]).await;

    // 4. Delete the last segment: the shorter trail is valid on its own; against
    // the export that held it, it is truncated.
    delete(&api, &segment_name(5)).await;
    expect(
        &chop(&auditor, &ns, &verify),
        0,
        "cannot be seen from the trail alone",
    );
    let since2 = [
        "audit",
        "verify",
        "--from-cluster",
        "--key",
        pem,
        "--since",
        second_s,
    ];
    expect(
        &chop(&auditor, &ns, &since2),
        1,
        "Truncated: the trail has 20 records, fewer than the 24 of the earlier export",
    );

    env.cleanup().await.unwrap();
}
