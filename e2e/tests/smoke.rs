//! Proof that the e2e control plane is a real Kubernetes API server: CRD schema and
//! CEL validation, the status subresource, server-side-apply conflicts, RBAC for
//! distinct users, ValidatingAdmissionPolicy and service-account tokens. The tests
//! run concurrently, each in its own namespace, all installing the same CRD.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use e2e::{TestEnv, eventually};
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::authentication::v1::{SelfSubjectReview, TokenRequest, UserInfo};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::Status;
use kube::{Client, CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

const GROUP: &str = "e2e.chop.example";

/// A test resource with a status subresource and a CEL rule.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "e2e.chop.example",
    version = "v1",
    kind = "Widget",
    namespaced,
    status = "WidgetStatus"
)]
#[x_kube(validation = Rule::new("!has(self.minSize) || self.minSize <= self.size").message("size must not be below minSize"))]
#[serde(rename_all = "camelCase")]
pub struct WidgetSpec {
    size: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    min_size: Option<i32>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct WidgetStatus {
    ready: bool,
}

fn spec(size: i32) -> WidgetSpec {
    WidgetSpec {
        size,
        min_size: None,
    }
}

async fn env() -> TestEnv {
    TestEnv::with_crds(&[Widget::crd()])
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

fn widgets(client: Client, env: &TestEnv) -> Api<Widget> {
    Api::namespaced(client, env.namespace())
}

/// The API error of a call that must fail.
fn api_error<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> Status {
    match result {
        Err(kube::Error::Api(status)) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn token_of(env: &TestEnv, name: &str) -> String {
    let users = env.plane().token_users().unwrap();
    users
        .iter()
        .find(|u| u.name == name)
        .unwrap()
        .token()
        .to_owned()
}

async fn whoami_result(client: Client) -> Result<SelfSubjectReview, kube::Error> {
    Api::<SelfSubjectReview>::all(client)
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
}

async fn whoami(client: Client) -> UserInfo {
    whoami_result(client)
        .await
        .unwrap()
        .status
        .and_then(|s| s.user_info)
        .unwrap()
}

#[tokio::test]
async fn namespace_crd_validation_and_status_subresource() {
    let env = env().await;
    let ns = Api::<Namespace>::all(env.admin())
        .get(env.namespace())
        .await
        .unwrap();
    assert_eq!(ns.metadata.labels.unwrap()["chop.e2e/test"], "true");

    let api = widgets(env.admin(), &env);
    let pp = PostParams::default();

    // x-kubernetes-validations (CEL) rejects the object.
    let bad = Widget::new(
        "bad",
        WidgetSpec {
            size: 1,
            min_size: Some(5),
        },
    );
    let err = api_error(api.create(&pp, &bad).await);
    assert_eq!(err.code, 422, "{err:?}");
    assert_eq!(err.reason, "Invalid");
    assert!(
        err.message.contains("size must not be below minSize"),
        "{}",
        err.message
    );

    // The OpenAPI schema rejects a wrong type.
    let raw = Api::<DynamicObject>::namespaced_with(
        env.admin(),
        env.namespace(),
        &ApiResource::erase::<Widget>(&()),
    );
    let mut typed = DynamicObject::new("typed", &ApiResource::erase::<Widget>(&()));
    typed.data = json!({"spec": {"size": "three"}});
    let err = api_error(raw.create(&pp, &typed).await);
    assert_eq!(err.code, 422, "{err:?}");
    assert!(
        err.message.contains("spec.size") && err.message.contains("integer"),
        "{}",
        err.message
    );

    // Status subresource: status is written only through /status, spec only through the main resource.
    let created = api
        .create(&pp, &Widget::new("good", spec(3)))
        .await
        .unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    assert_eq!(created.status, None);
    let patched = api
        .patch_status(
            "good",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"ready": true}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.status, Some(WidgetStatus { ready: true }));
    assert_eq!(
        patched.metadata.generation,
        Some(1),
        "status writes keep the generation"
    );

    let mut update = patched.clone();
    update.spec.size = 4;
    update.status = Some(WidgetStatus { ready: false });
    let replaced = api.replace("good", &pp, &update).await.unwrap();
    assert_eq!(replaced.spec.size, 4);
    assert_eq!(replaced.metadata.generation, Some(2));
    assert_eq!(
        replaced.status,
        Some(WidgetStatus { ready: true }),
        "the main resource ignores status"
    );

    env.cleanup().await.unwrap();
}

#[tokio::test]
async fn server_side_apply_conflict() {
    let env = env().await;
    let api = widgets(env.admin(), &env);
    let apply = |size: i32| {
        let mut w = Widget::new("shared", spec(size));
        w.metadata.namespace = Some(env.namespace().to_owned());
        w
    };

    api.patch(
        "shared",
        &PatchParams::apply("alice"),
        &Patch::Apply(&apply(2)),
    )
    .await
    .unwrap();
    let err = api_error(
        api.patch(
            "shared",
            &PatchParams::apply("bob"),
            &Patch::Apply(&apply(7)),
        )
        .await,
    );
    assert_eq!(err.code, 409, "{err:?}");
    assert_eq!(err.reason, "Conflict");
    assert!(
        err.message.contains("alice") && err.message.contains(".spec.size"),
        "{}",
        err.message
    );
    assert_eq!(api.get("shared").await.unwrap().spec.size, 2);

    let forced = api
        .patch(
            "shared",
            &PatchParams::apply("bob").force(),
            &Patch::Apply(&apply(7)),
        )
        .await
        .unwrap();
    assert_eq!(forced.spec.size, 7);
    let managers: Vec<String> = forced
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert!(managers.contains(&"bob".to_owned()), "{managers:?}");

    // Cleanup removes the namespace and what was in it.
    let (admin, ns) = (env.admin(), env.namespace().to_owned());
    env.cleanup().await.unwrap();
    let err = api_error(Api::<Namespace>::all(admin.clone()).get(&ns).await);
    assert_eq!(err.code, 404, "{err:?}");
    let left = Api::<Widget>::all(admin)
        .list(&Default::default())
        .await
        .unwrap();
    assert!(
        left.items
            .iter()
            .all(|w| w.metadata.namespace.as_deref() != Some(ns.as_str())),
        "widgets left in {ns}"
    );
}

#[tokio::test]
async fn rbac_allows_and_denies_distinct_users() {
    let env = env().await;
    let ns = env.namespace().to_owned();

    // The pre-defined static-token users exist with their groups.
    let users = env.plane().token_users().unwrap();
    for (name, group) in [
        ("chop-admin-1", "chop:administrators"),
        ("officer-1", "chop:officers"),
        ("officer-2", "chop:officers"),
        ("auditor-1", "chop:auditors"),
        ("ra-system", "chop:registration-authorities"),
    ] {
        let user = users.iter().find(|u| u.name == name).unwrap();
        assert_eq!(user.groups, vec![group.to_owned()]);
    }

    let auditor = env.token_user("auditor-1").await.unwrap();
    let me = whoami(auditor.clone()).await;
    assert_eq!(me.username.as_deref(), Some("auditor-1"));
    assert!(me.groups.unwrap().contains(&"chop:auditors".to_owned()));

    // A user minted on the fly with a client certificate.
    let officer = env
        .user("officer-7", &["chop:officers", "chop:staff"])
        .await
        .unwrap();
    let me = whoami(officer.clone()).await;
    assert_eq!(me.username.as_deref(), Some("officer-7"));
    let groups = me.groups.unwrap();
    assert!(
        groups.contains(&"chop:officers".to_owned()) && groups.contains(&"chop:staff".to_owned())
    );

    // Before any grant, everyone but the admin is denied.
    let err = api_error(
        widgets(auditor.clone(), &env)
            .list(&Default::default())
            .await,
    );
    assert_eq!(err.code, 403, "{err:?}");
    assert_eq!(err.reason, "Forbidden");

    let role = |name: &str, verbs: &[&str]| -> Role {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns},
            "rules": [{"apiGroups": [GROUP], "resources": ["widgets"], "verbs": verbs}]
        }))
        .unwrap()
    };
    let binding = |name: &str, group: &str| -> RoleBinding {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": group}]
        }))
        .unwrap()
    };
    let pp = PostParams::default();
    let roles = Api::<Role>::namespaced(env.admin(), &ns);
    let bindings = Api::<RoleBinding>::namespaced(env.admin(), &ns);
    roles
        .create(&pp, &role("widget-reader", &["get", "list", "watch"]))
        .await
        .unwrap();
    bindings
        .create(&pp, &binding("widget-reader", "chop:auditors"))
        .await
        .unwrap();
    roles
        .create(
            &pp,
            &role(
                "widget-writer",
                &["get", "list", "create", "update", "patch"],
            ),
        )
        .await
        .unwrap();
    bindings
        .create(&pp, &binding("widget-writer", "chop:officers"))
        .await
        .unwrap();

    let officer_widgets = widgets(officer.clone(), &env);
    eventually("officer creates a widget", || {
        let api = officer_widgets.clone();
        async move {
            api.create(&PostParams::default(), &Widget::new("w1", spec(1)))
                .await
                .map_err(|e| e.to_string())
        }
    })
    .await;
    let auditor_widgets = widgets(auditor.clone(), &env);
    let listed = eventually("auditor lists widgets", || {
        let api = auditor_widgets.clone();
        async move {
            api.list(&Default::default())
                .await
                .map_err(|e| e.to_string())
        }
    })
    .await;
    assert_eq!(listed.items.len(), 1);

    // Denied: the auditor may not create, the officer may not delete, and the other
    // officer group member (pre-defined token user) is allowed the same as officer-7.
    let err = api_error(
        auditor_widgets
            .create(&pp, &Widget::new("w2", spec(1)))
            .await,
    );
    assert_eq!(err.code, 403, "{err:?}");
    assert!(
        err.message
            .contains(r#"User "auditor-1" cannot create resource "widgets""#),
        "{}",
        err.message
    );
    let err = api_error(officer_widgets.delete("w1", &DeleteParams::default()).await);
    assert_eq!(err.code, 403, "{err:?}");
    assert!(
        err.message.contains(r#"User "officer-7" cannot delete"#),
        "{}",
        err.message
    );
    let officer2 = env.token_user("officer-2").await.unwrap();
    widgets(officer2, &env).get("w1").await.unwrap();

    // Impersonation: the admin may act as an officer and gets the officer's rights;
    // an officer may not impersonate anyone.
    let as_officer = env
        .plane()
        .client_impersonating("officer-3", &["chop:officers"])
        .await
        .unwrap();
    assert_eq!(
        whoami(as_officer.clone()).await.username.as_deref(),
        Some("officer-3")
    );
    widgets(as_officer.clone(), &env)
        .create(&pp, &Widget::new("w3", spec(3)))
        .await
        .unwrap();
    let err = api_error(
        widgets(as_officer, &env)
            .delete("w3", &DeleteParams::default())
            .await,
    );
    assert_eq!(err.code, 403, "{err:?}");
    let mut config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(env.plane().admin_kubeconfig()).unwrap(),
        &Default::default(),
    )
    .await
    .unwrap();
    config.auth_info = kube::config::AuthInfo {
        token: Some(token_of(&env, "officer-1").into()),
        impersonate: Some("admin".to_owned()),
        ..Default::default()
    };
    let err = api_error(whoami_result(Client::try_from(config).unwrap()).await);
    assert_eq!(err.code, 403, "{err:?}");
    assert!(
        err.message.contains("cannot impersonate"),
        "{}",
        err.message
    );

    // Namespaced grants do not leak: the RA system has none, and nobody reads ConfigMaps.
    let ra = env.token_user("ra-system").await.unwrap();
    assert_eq!(api_error(widgets(ra, &env).get("w1").await).code, 403);
    let err = api_error(
        Api::<ConfigMap>::namespaced(officer, &ns)
            .list(&Default::default())
            .await,
    );
    assert_eq!(err.code, 403, "{err:?}");

    env.cleanup().await.unwrap();
}

#[tokio::test]
async fn validating_admission_policy_rejects() {
    let env = env().await;
    let ns = env.namespace().to_owned();
    let name = format!("widget-max-size-{ns}");
    let policy: ValidatingAdmissionPolicy = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": [GROUP], "apiVersions": ["v1"],
                "operations": ["CREATE", "UPDATE"], "resources": ["widgets"]
            }]},
            "validations": [{
                "expression": "object.spec.size <= 10",
                "message": "widgets are at most size 10"
            }]
        }
    }))
    .unwrap();
    let binding: ValidatingAdmissionPolicyBinding = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "policyName": name,
            "validationActions": ["Deny"],
            "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}}
        }
    }))
    .unwrap();
    let pp = PostParams::default();
    let policies = Api::<ValidatingAdmissionPolicy>::all(env.admin());
    let bindings = Api::<ValidatingAdmissionPolicyBinding>::all(env.admin());
    policies.create(&pp, &policy).await.unwrap();
    bindings.create(&pp, &binding).await.unwrap();

    let api = widgets(env.admin(), &env);
    let mut attempt = 0;
    let err = eventually("the policy rejects a big widget", || {
        attempt += 1;
        let api = api.clone();
        async move {
            let name = format!("big-{attempt}");
            match api
                .create(&PostParams::default(), &Widget::new(&name, spec(11)))
                .await
            {
                // Admitted before the policy reached the admission cache: retry.
                Ok(_) => {
                    api.delete(&name, &DeleteParams::default()).await.ok();
                    Err("admitted".to_owned())
                }
                Err(kube::Error::Api(status)) => Ok(*status),
                Err(e) => panic!("unexpected error: {e}"),
            }
        }
    })
    .await;
    assert_eq!(err.code, 422, "{err:?}");
    assert!(
        err.message
            .contains(&format!("ValidatingAdmissionPolicy '{name}'"))
            && err.message.contains("widgets are at most size 10"),
        "{}",
        err.message
    );
    // Small widgets pass; the policy only binds in this namespace.
    api.create(&pp, &Widget::new("small", spec(10)))
        .await
        .unwrap();

    bindings
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    policies
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    env.cleanup().await.unwrap();
}

#[tokio::test]
async fn service_account_tokens_are_issued() {
    let env = env().await;
    let ns = env.namespace().to_owned();
    let pp = PostParams::default();
    let sas = Api::<ServiceAccount>::namespaced(env.admin(), &ns);
    let sa: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "robot"}})).unwrap();
    sas.create(&pp, &sa).await.unwrap();
    let issued = sas
        .create_token_request("robot", &pp, &TokenRequest::default())
        .await
        .unwrap();
    let token = issued.status.unwrap().token.unwrap();
    assert!(!token.is_empty());

    let robot = env.plane().client_with_token(&token).await.unwrap();
    let me = whoami(robot.clone()).await;
    assert_eq!(
        me.username.as_deref(),
        Some(format!("system:serviceaccount:{ns}:robot").as_str())
    );
    let err = api_error(widgets(robot, &env).list(&Default::default()).await);
    assert_eq!(err.code, 403, "{err:?}");

    env.cleanup().await.unwrap();
}

#[tokio::test]
async fn a_stranger_is_rejected() {
    let env = env().await;
    let stranger = env.plane().client_with_token("not-a-token").await.unwrap();
    let err = api_error(widgets(stranger, &env).list(&Default::default()).await);
    assert_eq!(err.code, 401, "{err:?}");
    env.cleanup().await.unwrap();
}
