//! Issue 8, finding 4, played by the attacker on a real kube-apiserver with the
//! real `chop-controller` binary and SoftHSM2; CRL numbers read with
//! `openssl crl -text`.
//!
//! - `the_crl_number_never_goes_back_when_a_schedule_is_recreated`: a user
//!   bound to `chop:administrator` (who may create and delete CRLSchedules but
//!   not write their status) publishes CRL N (the full CRL and two partition
//!   CRLs), deletes the schedule and creates it again: the next round's number
//!   is > N in every scope. The administrator cannot forge the status (403 on
//!   `crlschedules/status`; a status sent with the create is dropped). Then
//!   the worst restore (the schedule back from a backup without status, and
//!   every published CRL ConfigMap gone, as a garbage collector deleting the
//!   schedule's dependents would do) still gives a greater number.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use controller::publish;
use crds::CRLSchedule;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

mod common;
use common::*;

fn schedule(status: Option<Value>) -> CRLSchedule {
    let mut body = json!({
        "apiVersion": "chop.dev/v1alpha1",
        "kind": "CRLSchedule",
        "metadata": {"name": "moica"},
        "spec": {"caRef": {"name": "root"}, "interval": "1h", "validity": "36h",
                 "overlap": "12h", "partitions": 2}
    });
    if let Some(st) = status {
        body["status"] = st;
    }
    serde_json::from_value(body).unwrap()
}

/// Wait until schedule `moica` (uid `uid`) has published a round (full CRL and
/// both partitions); its number.
async fn published_round(h: &Harness, uid: &str) -> i64 {
    let api = h.api::<CRLSchedule>();
    h.wait("a published round", 60, || {
        let api = api.clone();
        async move {
            let s = api.get("moica").await.ok()?;
            (s.metadata.uid.as_deref() == Some(uid)).then_some(())?;
            let st = s.status?;
            let ok = st
                .conditions
                .iter()
                .any(|c| c.type_ == "Published" && c.status == "True");
            (ok && st.partitions_published == Some(2)).then_some(())?;
            st.crl_number
        }
    })
    .await
}

/// The CRL Number of each published CRL of the round (full, partition 0,
/// partition 1), as `openssl crl -text` prints it.
async fn numbers(h: &Harness, tag: &str) -> Vec<u128> {
    let mut out = Vec::new();
    for publication in ["moica", "moica-0", "moica-1"] {
        let der = publish::read_crl(&h.env.admin(), h.ns(), publication)
            .await
            .unwrap();
        let text = crl_text(h, &format!("{tag}-{publication}"), &der);
        let line = text
            .lines()
            .skip_while(|l| !l.contains("X509v3 CRL Number"))
            .nth(1)
            .unwrap_or_else(|| panic!("no CRL Number in\n{text}"))
            .trim()
            .to_string();
        out.push(
            line.parse()
                .unwrap_or_else(|_| panic!("CRL Number {line:?}")),
        );
    }
    out
}

#[tokio::test]
async fn the_crl_number_never_goes_back_when_a_schedule_is_recreated() {
    let mut h = Harness::new().await;
    h.start(false);
    h.create_ca().await;
    let admin = h
        .shipped_role_user("administrator.yaml", "admin-mallory")
        .await;
    let schedules: Api<CRLSchedule> = Api::namespaced(admin.clone(), h.ns());

    let s = schedules
        .create(&PostParams::default(), &schedule(None))
        .await
        .unwrap();
    published_round(&h, s.metadata.uid.as_deref().unwrap()).await;
    let first = numbers(&h, "first").await;
    assert!(first.iter().all(|n| *n == first[0]), "{first:?}");

    // The administrator may not write status: no forged crlNumber.
    let forged = json!({"apiVersion": "chop.dev/v1alpha1", "kind": "CRLSchedule",
        "status": {"crlNumber": 0, "reservedCRLNumber": 0}});
    match schedules
        .patch_status(
            "moica",
            &PatchParams::apply("mallory").force(),
            &Patch::Apply(&forged),
        )
        .await
    {
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 403, "{e:?}"),
        other => panic!("the administrator wrote the schedule's status: {other:?}"),
    }

    // Delete the schedule and create it again (a GitOps prune and re-sync),
    // with a status in the body, which the API server drops.
    schedules
        .delete("moica", &DeleteParams::default())
        .await
        .unwrap();
    h.wait("the schedule gone", 30, || {
        let api = schedules.clone();
        async move { api.get_opt("moica").await.ok()?.is_none().then_some(()) }
    })
    .await;
    let s = schedules
        .create(
            &PostParams::default(),
            &schedule(Some(json!({"crlNumber": 1, "reservedCRLNumber": 1}))),
        )
        .await
        .unwrap();
    assert!(
        s.status.as_ref().and_then(|st| st.crl_number).is_none(),
        "{:?}",
        s.status
    );
    published_round(&h, s.metadata.uid.as_deref().unwrap()).await;
    let second = numbers(&h, "second").await;
    for (scope, (a, b)) in first.iter().zip(&second).enumerate() {
        assert!(
            b > a,
            "scope {scope}: CRL number {b} after the schedule was re-created, {a} before"
        );
    }

    // The worst restore: the schedule back without status and every published
    // CRL of the CA gone.
    schedules
        .delete("moica", &DeleteParams::default())
        .await
        .unwrap();
    let cms = h.api::<ConfigMap>();
    cms.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("chop.dev/ca=root,chop.dev/crl-number"),
    )
    .await
    .unwrap();
    h.wait("the schedule gone", 30, || {
        let api = schedules.clone();
        async move { api.get_opt("moica").await.ok()?.is_none().then_some(()) }
    })
    .await;
    let s = schedules
        .create(&PostParams::default(), &schedule(None))
        .await
        .unwrap();
    published_round(&h, s.metadata.uid.as_deref().unwrap()).await;
    let third = numbers(&h, "third").await;
    for (scope, (a, b)) in second.iter().zip(&third).enumerate() {
        assert!(
            b > a,
            "scope {scope}: CRL number {b} after a restore without status or CRLs, {a} before"
        );
    }
    h.child.stop();
    h.env.cleanup().await.unwrap();
}
