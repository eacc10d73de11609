//! The subscriber-id register on a real API server: concurrent assignments for
//! one reference agree on one identifier; different references never share one.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};

use controller::subscribers::{assign, configmap_name, key_for};
use e2e::TestEnv;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::ListParams;

#[tokio::test]
async fn concurrent_assignments_agree_and_never_collide() {
    let env = TestEnv::new().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(env.admin(), env.namespace());

    // Eight writers race for the same reference: one identifier wins, all see it.
    let same =
        futures::future::join_all((0..8).map(|_| assign(&cms, "moica", "ra:person:1"))).await;
    let ids: BTreeSet<String> = same.into_iter().map(Result::unwrap).collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let id = ids.into_iter().next().unwrap();

    // Sixteen different references at once: sixteen distinct identifiers.
    let refs: Vec<String> = (0..16).map(|i| format!("ra:person:{}", i + 100)).collect();
    let many = futures::future::join_all(refs.iter().map(|r| assign(&cms, "moica", r))).await;
    let many: Vec<String> = many.into_iter().map(Result::unwrap).collect();
    assert_eq!(many.iter().collect::<BTreeSet<_>>().len(), 16);
    assert!(!many.contains(&id));

    // Stable afterwards, and the register holds no reference in clear: each
    // reference sits in the shard its key names, and the shards together hold
    // exactly the seventeen.
    assert_eq!(assign(&cms, "moica", "ra:person:1").await.unwrap(), id);
    let key = key_for("ra:person:1");
    let cm = cms.get(&configmap_name("moica", &key)).await.unwrap();
    assert_eq!(cm.data.unwrap()[&key], id);
    let shards = cms
        .list(&ListParams::default().labels("chop.dev/ca=moica"))
        .await
        .unwrap()
        .items;
    let mut all = BTreeMap::new();
    for cm in &shards {
        let name = cm.metadata.name.clone().unwrap();
        for (k, v) in cm.data.clone().unwrap() {
            assert_eq!(configmap_name("moica", &k), name, "key in its own shard");
            assert!(!k.contains("person"));
            all.insert(k, v);
        }
    }
    assert_eq!(all.len(), 17);
    assert_eq!(
        all.values().collect::<BTreeSet<_>>().len(),
        17,
        "no identifier twice"
    );

    env.cleanup().await.unwrap();
}
