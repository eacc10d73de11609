//! Issue 8, finding 5, played by the attacker on a real kube-apiserver with the
//! shipped roles and `manifests/policies/register-protection.yaml`, the real
//! `chop-controller` binary and SoftHSM2.
//!
//! - `the_register_cannot_be_erased_in_one_step`: a CA's register (the record of
//!   its delegated OCSP responder certificate, and of a subscriber certificate
//!   issued and revoked through the controller, each carrying the finalizer
//!   `chop.dev/register` from its creation, kept through the controller's
//!   writes of its state) survives, each attempt refused with
//!   the policy's message: a cluster admin who is not in system:masters deletes
//!   a record, deletes the collection, removes the finalizer, relabels the
//!   revoked record (off its CA, or Valid), deletes the
//!   namespace, deletes the IssuedCertificate CRD (dry run), and tries to
//!   decommission the namespace and a chop CRD; system:masters deletes a record
//!   and the namespace (dry run); an administrator and an officer delete a record
//!   (RBAC). A CA cannot be created in a namespace without `chop.dev/register`,
//!   nor in one already labelled `chop.dev/decommissioned`.
//!   Then the documented decommission path works: a user bound to
//!   `chop:decommissioner` labels the namespace `chop.dev/decommissioned=true`,
//!   removes the finalizers, and the namespace may be deleted; the same for a
//!   throwaway `*.chop.dev` CRD, really deleted.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use crds::{CertificateAuthority, IssuedCertificate};
use e2e::TestEnv;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

mod common;
use common::*;

const RECORDS: &str = "chop.dev/ca=root";

fn dry_delete() -> DeleteParams {
    DeleteParams {
        dry_run: true,
        ..DeleteParams::default()
    }
}

fn dry_patch() -> PatchParams {
    PatchParams {
        dry_run: true,
        ..PatchParams::default()
    }
}

/// The refusal of `r`: a 403 whose message contains `want`.
fn refused<T: std::fmt::Debug>(what: &str, r: Result<T, kube::Error>, want: &str) {
    match r {
        Err(kube::Error::Api(e)) => {
            assert_eq!(e.code, 403, "{what}: {e:?}");
            assert!(e.message.contains(want), "{what}: {:?}", e.message);
        }
        other => panic!("{what} was not refused: {other:?}"),
    }
}

/// Apply the shipped ClusterRole `name` from `manifests/<file>`.
async fn shipped_role(h: &Harness, file: &str, name: &str) {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../manifests")
            .join(file),
    )
    .unwrap();
    let docs: Vec<Option<Value>> = serde_saphyr::from_multiple(&text).unwrap();
    let doc = docs
        .into_iter()
        .flatten()
        .find(|d| d["kind"] == "ClusterRole" && d["metadata"]["name"] == name)
        .unwrap();
    let role: ClusterRole = serde_json::from_value(doc).unwrap();
    Api::<ClusterRole>::all(h.env.admin())
        .patch(
            name,
            &PatchParams::apply("chop-tests").force(),
            &Patch::Apply(&role),
        )
        .await
        .unwrap();
}

/// A client for user `user`, bound to ClusterRole `role` in this namespace
/// (or cluster-wide), once RBAC lets it get the namespace's records.
async fn bound_user(h: &Harness, role: &str, user: &str, cluster_wide: bool) -> kube::Client {
    let name = format!("{user}-{}", role.replace(':', "-"));
    let body = json!({
        "metadata": {"name": name, "namespace": h.ns()},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]
    });
    if cluster_wide {
        let b: ClusterRoleBinding = serde_json::from_value(body).unwrap();
        Api::<ClusterRoleBinding>::all(h.env.admin())
            .create(&PostParams::default(), &b)
            .await
            .unwrap();
    } else {
        let b: RoleBinding = serde_json::from_value(body).unwrap();
        h.api::<RoleBinding>()
            .create(&PostParams::default(), &b)
            .await
            .unwrap();
    }
    let client = h.env.user(user, &[]).await.unwrap();
    let api: Api<IssuedCertificate> = Api::namespaced(client.clone(), h.ns());
    h.wait(&format!("RBAC for {user}"), 30, || {
        let api = api.clone();
        async move { api.list(&ListParams::default()).await.ok().map(|_| ()) }
    })
    .await;
    client
}

/// The register's records: names, none being deleted, each with the finalizer
/// if `finalizer`.
async fn register(h: &Harness, finalizer: bool) -> Vec<String> {
    let list = h
        .api::<IssuedCertificate>()
        .list(&ListParams::default().labels(RECORDS))
        .await
        .unwrap();
    list.items
        .iter()
        .map(|r| {
            assert!(
                r.metadata.deletion_timestamp.is_none(),
                "record {:?} is being deleted",
                r.metadata.name
            );
            assert!(
                !finalizer
                    || r.metadata
                        .finalizers
                        .as_ref()
                        .is_some_and(|f| f.iter().any(|f| f == "chop.dev/register")),
                "record {:?} has no finalizer chop.dev/register: {:?}",
                r.metadata.name,
                r.metadata.finalizers
            );
            r.metadata.name.clone().unwrap()
        })
        .collect()
}

#[tokio::test]
async fn the_register_cannot_be_erased_in_one_step() {
    let mut h = Harness::new().await;
    h.install_policies().await;
    h.start(false);
    h.create_ca().await;
    let records: Api<IssuedCertificate> = h.api();
    // The CA's delegated OCSP certificate is its first record.
    let record = h
        .wait("the responder certificate's record", 60, || {
            let records = records.clone();
            async move {
                let list = records
                    .list(&ListParams::default().labels(RECORDS))
                    .await
                    .ok()?;
                list.items.first().and_then(|r| r.metadata.name.clone())
            }
        })
        .await;
    // A certificate issued and revoked through the controller: its record keeps
    // the finalizer through the controller's own writes of its state, and
    // erasing it would forget the revocation.
    let csr = h.csr("ann");
    let ra = h.ra_user("ra-ann").await;
    Api::<crds::CertificateRequest>::namespaced(ra, h.ns())
        .create(
            &PostParams::default(),
            &request_body("ann", "Signature", "ra-0001", &csr, true),
        )
        .await
        .unwrap();
    h.approve("ann").await;
    h.wait_condition("ann", "Issued", "True", Some("Issued"))
        .await;
    let revoked = revoke_request(&h, "ann-gone", "ann", "keyCompromise").await;
    let revoked = issued_name(&revoked);
    h.child.stop();

    let ns = h.ns().to_string();
    let masters = h.env.admin();
    let cluster_admin = bound_user(&h, "cluster-admin", &format!("{ns}-root"), true).await;
    shipped_role(&h, "rbac/administrator.yaml", "chop:administrator").await;
    shipped_role(&h, "rbac/officer.yaml", "chop:officer").await;
    let administrator = bound_user(&h, "chop:administrator", "admin-mallory", false).await;
    let officer = bound_user(&h, "chop:officer", "officer-mallory", false).await;
    let before = register(&h, false).await;
    assert!(
        before.contains(&record) && before.contains(&revoked),
        "{before:?}"
    );

    // The policy may reach the API server's cache a moment after install_policies.
    let ca_records: Api<IssuedCertificate> = Api::namespaced(cluster_admin.clone(), &ns);
    let probe = || {
        let (api, record) = (ca_records.clone(), record.clone());
        async move {
            match api.delete(&record, &dry_delete()).await {
                Err(kube::Error::Api(e)) if e.code == 403 => Some(()),
                _ => None,
            }
        }
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while probe().await.is_none() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }

    // The cluster admin (every permission, not system:masters).
    refused(
        "cluster admin deletes a record",
        ca_records.delete(&record, &DeleteParams::default()).await,
        "may not delete it",
    );
    refused(
        "cluster admin deletes a revoked certificate's record",
        ca_records.delete(&revoked, &DeleteParams::default()).await,
        "may not delete it",
    );
    refused(
        "cluster admin deletes the collection",
        ca_records
            .delete_collection(&DeleteParams::default(), &ListParams::default())
            .await,
        "may not delete it",
    );
    refused(
        "cluster admin removes the finalizer",
        ca_records
            .patch(
                &record,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"finalizers": null}})),
            )
            .await,
        "may not remove its finalizer",
    );
    // Relabelling the revoked record would take it off its CA's CRL.
    for (label, value) in [("chop.dev/ca", "other"), ("chop.dev/status", "Valid")] {
        refused(
            &format!("cluster admin sets {label}={value} on the revoked record"),
            ca_records
                .patch(
                    &revoked,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"labels": {label: value}}})),
                )
                .await,
            "may not change its labels or annotations",
        );
    }
    let namespaces: Api<Namespace> = Api::all(cluster_admin.clone());
    refused(
        "cluster admin deletes the namespace",
        namespaces.delete(&ns, &dry_delete()).await,
        "holds a CA register",
    );
    let decommission = json!({"metadata": {"labels": {"chop.dev/decommissioned": "true"}}});
    refused(
        "cluster admin decommissions the namespace",
        namespaces
            .patch(&ns, &dry_patch(), &Patch::Merge(&decommission))
            .await,
        "may not decommission namespace",
    );
    refused(
        "cluster admin removes chop.dev/register from the namespace",
        namespaces
            .patch(
                &ns,
                &dry_patch(),
                &Patch::Merge(json!({"metadata": {"labels": {"chop.dev/register": null}}})),
            )
            .await,
        "may not decommission namespace",
    );
    let crds: Api<CustomResourceDefinition> = Api::all(cluster_admin.clone());
    refused(
        "cluster admin deletes the IssuedCertificate CRD",
        crds.delete("issuedcertificates.chop.dev", &dry_delete())
            .await,
        "may not be deleted",
    );
    refused(
        "cluster admin decommissions the IssuedCertificate CRD",
        crds.patch(
            "issuedcertificates.chop.dev",
            &dry_patch(),
            &Patch::Merge(&decommission),
        )
        .await,
        "may not decommission CustomResourceDefinition",
    );

    // system:masters is not exempt from the one-step deletions.
    let masters_records: Api<IssuedCertificate> = Api::namespaced(masters.clone(), &ns);
    refused(
        "system:masters deletes a record",
        masters_records
            .delete(&record, &DeleteParams::default())
            .await,
        "may not delete it",
    );
    refused(
        "system:masters deletes the namespace",
        Api::<Namespace>::all(masters.clone())
            .delete(&ns, &dry_delete())
            .await,
        "holds a CA register",
    );
    refused(
        "system:masters deletes the CertificateAuthority CRD",
        Api::<CustomResourceDefinition>::all(masters.clone())
            .delete("certificateauthorities.chop.dev", &dry_delete())
            .await,
        "may not be deleted",
    );

    // The trusted roles: RBAC already says no.
    for (who, client) in [("administrator", &administrator), ("officer", &officer)] {
        let api: Api<IssuedCertificate> = Api::namespaced(client.clone(), &ns);
        refused(
            &format!("{who} deletes a record"),
            api.delete(&record, &DeleteParams::default()).await,
            "forbidden",
        );
        refused(
            &format!("{who} deletes the collection"),
            api.delete_collection(&DeleteParams::default(), &ListParams::default())
                .await,
            "forbidden",
        );
    }
    assert_eq!(register(&h, true).await, before, "the register changed");
    let r = records.get(&revoked).await.unwrap();
    let labels = r.metadata.labels.unwrap();
    assert_eq!(
        (
            labels["chop.dev/ca"].as_str(),
            labels["chop.dev/status"].as_str()
        ),
        ("root", "Revoked")
    );

    // A CA only in a namespace marked as holding a register.
    let other = TestEnv::new().await.unwrap();
    Api::<Namespace>::all(masters.clone())
        .patch(
            other.namespace(),
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"labels": {"chop.dev/e2e-controller-policies": "true"}}}),
            ),
        )
        .await
        .unwrap();
    let ca = h.api::<CertificateAuthority>().get("root").await.unwrap();
    let mut body = serde_json::to_value(&ca.spec).unwrap();
    body = json!({"apiVersion": "chop.dev/v1alpha1", "kind": "CertificateAuthority",
                  "metadata": {"name": "root"}, "spec": body});
    refused(
        "a CA in an unmarked namespace",
        Api::<CertificateAuthority>::namespaced(masters.clone(), other.namespace())
            .create(
                &PostParams {
                    dry_run: true,
                    ..PostParams::default()
                },
                &serde_json::from_value(body.clone()).unwrap(),
            )
            .await,
        "chop.dev/register=true before creating a CertificateAuthority",
    );
    // Nor in one created already decommissioned (its register could be erased
    // in one step).
    Api::<Namespace>::all(masters.clone())
        .patch(
            other.namespace(),
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {
                "chop.dev/register": "true", "chop.dev/decommissioned": "true"}}})),
        )
        .await
        .unwrap();
    refused(
        "a CA in a decommissioned namespace",
        Api::<CertificateAuthority>::namespaced(masters.clone(), other.namespace())
            .create(
                &PostParams {
                    dry_run: true,
                    ..PostParams::default()
                },
                &serde_json::from_value(body.clone()).unwrap(),
            )
            .await,
        "is decommissioned",
    );
    other.cleanup().await.unwrap();

    // The documented decommission path (docs/operator.md, Removing a CA).
    shipped_role(
        &h,
        "policies/register-protection.yaml",
        "chop:decommissioner",
    )
    .await;
    let decommissioner = bound_user(&h, "chop:decommissioner", &format!("{ns}-decom"), true).await;
    Api::<Namespace>::all(decommissioner.clone())
        .patch(&ns, &PatchParams::default(), &Patch::Merge(&decommission))
        .await
        .unwrap();
    let decom_records: Api<IssuedCertificate> = Api::namespaced(decommissioner.clone(), &ns);
    for name in &before {
        decom_records
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"finalizers": null}})),
            )
            .await
            .unwrap();
    }
    namespaces.delete(&ns, &dry_delete()).await.unwrap();
    ca_records
        .delete_collection(&dry_delete(), &ListParams::default())
        .await
        .unwrap();

    // The same for a chop CRD: refused, decommissioned, deleted.
    let group = format!("{ns}.chop.dev");
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "metadata": {"name": format!("widgets.{group}")},
        "spec": {"group": group, "scope": "Namespaced",
                 "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                 "versions": [{"name": "v1", "served": true, "storage": true,
                               "schema": {"openAPIV3Schema": {"type": "object"}}}]}
    }))
    .unwrap();
    let masters_crds: Api<CustomResourceDefinition> = Api::all(masters.clone());
    masters_crds
        .create(&PostParams::default(), &crd)
        .await
        .unwrap();
    let widgets = format!("widgets.{group}");
    refused(
        "cluster admin deletes a chop CRD",
        crds.delete(&widgets, &DeleteParams::default()).await,
        "may not be deleted",
    );
    Api::<CustomResourceDefinition>::all(decommissioner.clone())
        .patch(
            &widgets,
            &PatchParams::default(),
            &Patch::Merge(&decommission),
        )
        .await
        .unwrap();
    crds.delete(&widgets, &DeleteParams::default())
        .await
        .unwrap();

    for name in [
        format!("{ns}-root-cluster-admin"),
        format!("{ns}-decom-chop-decommissioner"),
    ] {
        Api::<ClusterRoleBinding>::all(masters.clone())
            .delete(&name, &DeleteParams::default())
            .await
            .unwrap();
    }
    h.env.cleanup().await.unwrap();
}

/// The one way a record leaves the register (CPS §4.10.1, §5.5): the
/// controller's archive, after the certificate expired and its grace period
/// passed, with the certificate committed to the signed audit trail first, by
/// the controller's own identity through chop-register-protection. A
/// certificate revoked for keyCompromise stays: it is its key's block-list
/// entry; a certificate not yet expired (the responder's, 7 days) stays.
/// (Certificates valid one day; then a controller whose archive clock runs a
/// day ahead, archiving 1 s after expiry, scanning every second.)
#[tokio::test]
async fn expired_records_leave_the_register_only_through_the_archive() {
    use crds::AuditSegment;
    let mut h = Harness::new().await;
    h.install_policies().await;
    h.start(false);
    h.create_ca_with(json!({"profiles": {"subscriberValidity": "24h"}}))
        .await;
    // Requested by the RA, approved by another user (chop-no-self-approval).
    let ra = h.ra_user("ra-archive").await;
    let mut serials = Vec::new();
    for (name, reference) in [("expiring", "ref-e"), ("compromised", "ref-c")] {
        Api::<crds::CertificateRequest>::namespaced(ra.clone(), h.ns())
            .create(
                &PostParams::default(),
                &request_body(name, "Signature", reference, &h.csr(name), true),
            )
            .await
            .unwrap();
        h.approve(name).await;
        let cr = h
            .wait_condition(name, "Issued", "True", Some("Issued"))
            .await;
        serials.push(cr.status.unwrap().serial_number.unwrap());
    }
    let (expiring, compromised) = (serials[0].clone(), serials[1].clone());
    revoke_request(&h, "compromised-key", "compromised", "keyCompromise").await;
    let before = register(&h, true).await;
    assert_eq!(before.len(), 3, "responder + 2 subscribers: {before:?}");
    h.child.stop();
    h.extra_env.extend([
        ("CHOP_TEST_ARCHIVE_CLOCK_AHEAD_SECS".into(), "86460".into()),
        ("CHOP_ARCHIVE_AFTER".into(), "1s".into()),
        ("CHOP_ARCHIVE_EVERY".into(), "1s".into()),
    ]);
    h.start(false);
    let expiring_record = record(&h, &expiring).await;
    let records: Api<IssuedCertificate> = h.api();
    h.wait("the expired record to leave the register", 60, || {
        let (records, name) = (records.clone(), issued_name(&expiring));
        async move { records.get_opt(&name).await.ok()?.is_none().then_some(()) }
    })
    .await;
    // The trail holds the certificate, committed before the deletion.
    let trail: Vec<_> = h
        .api::<AuditSegment>()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .flat_map(|s| s.spec.records)
        .collect();
    let archived: Vec<_> = trail
        .iter()
        .filter(|r| r.event == "certificate.archived")
        .collect();
    assert_eq!(archived.len(), 1, "{archived:#?}");
    assert_eq!(archived[0].serial.as_deref(), Some(expiring.as_str()));
    assert_eq!(
        archived[0].details["certificate"],
        expiring_record.spec.certificate
    );
    assert_eq!(archived[0].details["state"], "Valid");
    // Scans go on; the compromised key's record and the responder's stay,
    // finalizer and all.
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    let after = register(&h, true).await;
    assert_eq!(
        after,
        before
            .into_iter()
            .filter(|n| *n != issued_name(&expiring))
            .collect::<Vec<_>>()
    );
    let kept = record(&h, &compromised).await;
    assert!(kept.metadata.deletion_timestamp.is_none());
    assert_eq!(
        kept.status.as_ref().and_then(|s| s.reason.as_deref()),
        Some("keyCompromise")
    );
    let metrics = http_get(h.metrics_port, "/metrics");
    assert!(
        metrics.contains("chop_certificates_archived_total{ca=\"root\"} 1"),
        "{metrics}"
    );
}
