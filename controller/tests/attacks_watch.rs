//! Issue 8, finding 7, played by the attacker: one malformed object must not
//! blind the controller to every other object of its kind (kube-rs issue 774).
//!
//! A cluster admin loosens the chop CRDs for a moment (schema: any object),
//! creates one object of every chop kind that the API server accepts but the
//! controller's types do not (a bad enum value, a wrong type), and restores the
//! schemas. The restored schemas do not remove the stored objects, and the
//! schema change closes every watch, so the controller lists them all again.
//! Then, on the real control plane with the real controller binary:
//! - a request created afterwards is still approved and issued, a Revocation
//!   still revokes, a Suspension still holds, the CA still counts, and the
//!   CRLSchedule (older than the malformed one naming the same CA) still
//!   publishes a CRL listing both;
//! - each malformed object (CertificateAuthority, CertificateRequest,
//!   Revocation, Suspension, CRLSchedule) has a Warning Event `InvalidObject`
//!   naming the deserialization error, and `/metrics` counts them.
//!
//! The IssuedCertificate is watched by metadata only (validated by the API
//! server), so a malformed record cannot blind a watch: the test checks that
//! everything above still works with one in the register.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use controller::publish;
use crds::{CRLSchedule, CertificateAuthority};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use serde_json::{Value, json};

mod common;
use common::*;

/// (kind, plural, name, the malformed object's body without apiVersion/kind/name).
fn malformed() -> Vec<(&'static str, &'static str, &'static str, Value)> {
    vec![
        (
            "CertificateAuthority",
            "certificateauthorities",
            "bad-ca",
            json!({"spec": {"type": "Intermediate", "subject": {"commonName": "x"},
                "hsm": {"tokenLabel": "moica", "keyLabel": "bad", "pinSecretRef": {"name": "hsm-pin", "key": "pin"}}}}),
        ),
        (
            "CertificateRequest",
            "certificaterequests",
            "bad-request",
            json!({"spec": {"caRef": {"name": "root"}, "profile": "Everything",
                "subscriber": {"reference": "x", "commonName": "x"}, "csr": "x", "accepted": true}}),
        ),
        (
            "Revocation",
            "revocations",
            "bad-revocation",
            json!({"spec": {"caRef": {"name": "root"}, "serialNumber": "01",
                "reason": "becauseISaidSo", "requester": "Subscriber"}}),
        ),
        (
            "Suspension",
            "suspensions",
            "bad-suspension",
            json!({"spec": {"caRef": {"name": "root"}, "serialNumber": "01", "requester": 7}}),
        ),
        (
            "CRLSchedule",
            "crlschedules",
            // Sorts after "moica": with creation times equal to the second,
            // the valid schedule is still the older one (the controller's order).
            "stale-schedule",
            json!({"spec": {"caRef": {"name": "root"}, "interval": "1h", "validity": "36h",
                "overlap": "12h", "partitions": "many"}}),
        ),
        (
            "IssuedCertificate",
            "issuedcertificates",
            "root-bad",
            json!({"metadata": {"labels": {"chop.dev/ca": "root", "chop.dev/status": "Valid"}},
                "spec": {"caRef": {"name": "root"}, "serialNumber": 12}}),
        ),
    ]
}

fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("chop.dev", "v1alpha1", kind), plural)
}

/// As the cluster admin: loosen every chop CRD's schema to "any object",
/// create the malformed objects, restore the schemas exactly.
async fn plant_malformed_objects(h: &Harness) {
    let admin = h.env.admin();
    let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
    let mut originals = Vec::new();
    for (_, plural, _, _) in malformed() {
        let name = format!("{plural}.chop.dev");
        let original = crds.get(&name).await.unwrap();
        let mut loose = original.clone();
        for v in &mut loose.spec.versions {
            // Selectable fields must name fields of the schema; the original
            // ones come back with it.
            v.selectable_fields = None;
            v.schema = Some(
                serde_json::from_value(json!({"openAPIV3Schema":
                    {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}))
                .unwrap(),
            );
        }
        crds.replace(&name, &PostParams::default(), &loose)
            .await
            .unwrap();
        originals.push(original);
    }
    for (kind, plural, name, mut body) in malformed() {
        body["apiVersion"] = json!("chop.dev/v1alpha1");
        body["kind"] = json!(kind);
        body["metadata"]["name"] = json!(name);
        let obj: DynamicObject = serde_json::from_value(body).unwrap();
        let api: Api<DynamicObject> =
            Api::namespaced_with(admin.clone(), h.ns(), &resource(kind, plural));
        // The loosened schema takes a moment to be in force.
        h.wait(&format!("malformed {kind} accepted"), 30, || {
            let (api, obj) = (api.clone(), obj.clone());
            async move { api.create(&PostParams::default(), &obj).await.ok() }
        })
        .await;
    }
    for original in originals {
        let name = original.metadata.name.clone().unwrap();
        let mut current = crds.get(&name).await.unwrap();
        current.spec = original.spec;
        crds.replace(&name, &PostParams::default(), &current)
            .await
            .unwrap();
    }
    // The schemas are strict again: the same object is now refused.
    let ca: Value = json!({"apiVersion": "chop.dev/v1alpha1", "kind": "CertificateAuthority",
        "metadata": {"name": "bad-ca-again"}, "spec": malformed()[0].3["spec"]});
    let api: Api<DynamicObject> = Api::namespaced_with(
        admin,
        h.ns(),
        &resource("CertificateAuthority", "certificateauthorities"),
    );
    let obj: DynamicObject = serde_json::from_value(ca).unwrap();
    h.wait("the strict schema back in force", 30, || {
        let (api, obj) = (api.clone(), obj.clone());
        async move {
            let dry = PostParams {
                dry_run: true,
                ..PostParams::default()
            };
            api.create(&dry, &obj).await.is_err().then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn one_malformed_object_of_each_kind_blinds_nothing() {
    let mut h = Harness::new().await;
    h.start(false);
    h.create_ca().await;
    let schedule: CRLSchedule = serde_json::from_value(json!({
        "apiVersion": "chop.dev/v1alpha1", "kind": "CRLSchedule",
        "metadata": {"name": "moica"},
        "spec": {"caRef": {"name": "root"}, "interval": "1h", "validity": "36h", "overlap": "12h"}
    }))
    .unwrap();
    h.api::<CRLSchedule>()
        .create(&PostParams::default(), &schedule)
        .await
        .unwrap();
    let api = h.api::<CRLSchedule>();
    let first = h
        .wait("the first CRL published", 60, || {
            let api = api.clone();
            async move { api.get("moica").await.ok()?.status?.crl_number }
        })
        .await;

    plant_malformed_objects(&h).await;

    // Every other object is still served: issuance, revocation, suspension.
    let csr = h.csr("after");
    let revoked = issue(&h, "after", "ra-0701", &csr).await;
    let csr = h.csr("held");
    let held = issue(&h, "held", "ra-0702", &csr).await;
    revoke_request(&h, "after-revoked", "after", "keyCompromise").await;
    suspend(&h, "held-hold", "held").await;
    wait_record(&h, &held, "Held").await;

    // The CRL (the valid schedule is older than the malformed one naming the
    // same CA) is published again and lists both.
    let client = h.env.admin();
    let entries = h
        .wait(
            "a CRL listing the revoked and the held certificate",
            60,
            || {
                let (api, client) = (api.clone(), client.clone());
                let (revoked, held) = (revoked.clone(), held.clone());
                let ns = h.ns().to_string();
                async move {
                    let st = api.get("moica").await.ok()?.status?;
                    if st.crl_number? <= first {
                        return None;
                    }
                    let der = publish::read_crl(&client, &ns, "moica").await.ok()?;
                    let crl = ca::crl::parse_crl(&der).ok()?;
                    let serials: Vec<String> =
                        crl.entries.iter().map(|e| e.serial.to_hex()).collect();
                    (serials.contains(&revoked) && serials.contains(&held)).then_some(serials)
                }
            },
        )
        .await;
    assert_eq!(entries.len(), 2, "{entries:?}");

    // The CA is still reconciled and counts the register.
    let cas = h.api::<CertificateAuthority>();
    h.wait("the CA counting one revoked and one held", 30, || {
        let cas = cas.clone();
        async move {
            let st = cas.get("root").await.ok()?.status?;
            (st.revoked_count == Some(1) && st.held_count == Some(1)).then_some(())
        }
    })
    .await;

    // Each malformed object is reported on itself, with the error.
    for (kind, _, name, _) in malformed() {
        if kind == "IssuedCertificate" {
            continue;
        }
        warning_event(&h, name, "InvalidObject").await;
    }
    let events: Api<k8s_openapi::api::events::v1::Event> = h.api();
    let list = events.list(&Default::default()).await.unwrap();
    let note = |name: &str| {
        list.items
            .iter()
            .find(|e| {
                e.reason.as_deref() == Some("InvalidObject")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
            })
            .and_then(|e| e.note.clone())
            .unwrap_or_default()
    };
    assert!(
        note("bad-revocation").contains("becauseISaidSo"),
        "{}",
        note("bad-revocation")
    );
    assert!(
        note("bad-ca").contains("CertificateAuthority"),
        "{}",
        note("bad-ca")
    );
    let metrics = http_get(h.metrics_port, "/metrics");
    for kind in [
        "CertificateAuthority",
        "CertificateRequest",
        "Revocation",
        "Suspension",
        "CRLSchedule",
    ] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("chop_reconcile_errors_total")
                    && l.contains(&format!("kind=\"{kind}\""))
                    && l.contains("error=\"InvalidObject\"")),
            "no InvalidObject count for {kind}:\n{metrics}"
        );
    }
    // The controller stayed up throughout.
    assert!(h.child.0.as_mut().unwrap().try_wait().unwrap().is_none());
}
