//! The API server's side of a KeyCeremony (manifests/policies/key-ceremony.yaml,
//! the keyFrom rules of issuance-field.yaml), on a real kube-apiserver, acting as
//! distinct users bound to the shipped roles: each attack is refused with its
//! specific message and leaves the ceremony (or the CA) as it was; each role's
//! legitimate step goes through.
//!
//! The manifests are installed as shipped (`manifests/kustomization.yaml`); the
//! policy bindings are renamed `<policy>-ceremony-tests` and select this file's
//! namespaces only (label [`TEST_LABEL`]), since policies are cluster-wide objects
//! on a plane shared with the other test files. `status.specHash`/`status.phase`
//! are published as the chop-controller service account (impersonated), bound to
//! the shipped `chop-controller` ClusterRole.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use e2e::{TestEnv, eventually};
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::Client;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use serde_json::{Value, json};

const TEST_LABEL: &str = "chop.dev/e2e-ceremony-admission";
const FIELD_MANAGER: &str = "chop-e2e-ceremony-admission";
const REQUESTED_BY: &str = "chop.dev/requested-by";
/// Two spec hashes the controller publishes in turn.
const H1: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const H2: &str = "2222222222222222222222222222222222222222222222222222222222222222";

/// Group → ClusterRole, bound in every test namespace. Users are the plane's
/// static-token users (chop-admin-1, chop-admin-2, officer-1, officer-2,
/// auditor-1, controller-1, ra-system).
const BINDINGS: &[(&str, &str)] = &[
    ("chop:administrators", "chop:administrator"),
    ("chop:officers", "chop:officer"),
    ("chop:auditors", "chop:auditor"),
    ("chop:controllers", "chop:controller"),
    (
        "chop:registration-authorities",
        "chop:registration-authority",
    ),
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn gvr(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("chop.dev", "v1alpha1", kind), plural)
}

/// Asserts a rejection with HTTP `code` and `phrase` in the message.
#[track_caller]
fn assert_rejected<T: std::fmt::Debug>(result: Result<T, kube::Error>, code: u16, phrase: &str) {
    match result {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, code, "{status:?}");
            assert!(
                status.message.contains(phrase),
                "expected {phrase:?} in {:?}",
                status.message
            );
        }
        other => panic!("expected a rejection containing {phrase:?}, got {other:?}"),
    }
}

fn dry_post() -> PostParams {
    PostParams {
        dry_run: true,
        ..PostParams::default()
    }
}

/// A KeyCeremony body.
fn ceremony(name: &str, operation: &str) -> DynamicObject {
    let mut spec = json!({
        "operation": operation,
        "caRef": {"name": "moica-root"},
        "reason": "e2e ceremony",
    });
    if operation == "Restore" {
        spec["restore"] = json!({
            "backupRef": {"name": "backup"},
            "tokenLabel": "moica-2",
            "pinSecretRef": {"name": "moica-2-pin", "key": "pin"},
        });
    }
    serde_json::from_value(json!({
        "apiVersion": "chop.dev/v1alpha1", "kind": "KeyCeremony",
        "metadata": {"name": name}, "spec": spec
    }))
    .unwrap()
}

fn approval(user: &str, role: &str, hash: &str) -> Value {
    json!({"user": user, "role": role, "specHash": hash, "reason": "reviewed in the ceremony room"})
}

/// Server-side apply of one entry of `field` (`approvals` or `shares`), as the
/// docs tell users: field manager = the user.
fn apply_entry(field: &str, name: &str, entry: Value) -> Patch<Value> {
    Patch::Apply(json!({
        "apiVersion": "chop.dev/v1alpha1", "kind": "KeyCeremony",
        "metadata": {"name": name}, "spec": {field: [entry]}
    }))
}

fn ssa(manager: &str) -> PatchParams {
    PatchParams::apply(manager)
}

fn merge(v: Value) -> Patch<Value> {
    Patch::Merge(v)
}

struct Fixture {
    env: TestEnv,
}

impl Fixture {
    async fn new() -> Self {
        let crds: Vec<_> = crds::all().into_iter().map(|(_, c)| c).collect();
        let env = TestEnv::with_crds(&crds).await.unwrap();
        let admin = env.admin();
        Api::<Namespace>::all(admin.clone())
            .patch(
                env.namespace(),
                &PatchParams::default(),
                // chop.dev/register: a CA may be created here (chop-register-protection).
                &merge(json!({"metadata": {"labels": {TEST_LABEL: "true", "chop.dev/register": "true"}}})),
            )
            .await
            .unwrap();
        e2e::install_manifests(
            &admin,
            &e2e::kustomization_files().unwrap(),
            TEST_LABEL,
            Some("ceremony-tests"),
            FIELD_MANAGER,
        )
        .await
        .unwrap();
        let f = Fixture { env };
        for (group, role) in BINDINGS {
            f.bind(
                role,
                json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": group}),
            )
            .await;
        }
        f.bind(
            "chop-controller",
            json!({"kind": "ServiceAccount", "name": "chop-controller", "namespace": f.ns()}),
        )
        .await;
        for (group, role) in BINDINGS {
            let (verb, resource, name) = match role.strip_prefix("chop:").unwrap() {
                "registration-authority" => ("create", "certificaterequests", ""),
                marker => ("assume", "trustedroles", marker),
            };
            f.wait_allowed("someone", &[group], verb, resource, name)
                .await;
        }
        f.wait_allowed(
            &f.controller_sa_name(),
            &[],
            "write",
            "controllerstatus",
            "",
        )
        .await;
        f.wait_for_policies().await;
        f
    }

    fn ns(&self) -> &str {
        self.env.namespace()
    }

    fn controller_sa_name(&self) -> String {
        format!("system:serviceaccount:{}:chop-controller", self.ns())
    }

    async fn bind(&self, role: &str, subject: Value) {
        let binding: RoleBinding = serde_json::from_value(json!({
            "metadata": {"name": format!("{}-{}", role.replace(':', "-"),
                subject["name"].as_str().unwrap().replace(':', "-")), "namespace": self.ns()},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [subject]
        }))
        .unwrap();
        Api::<RoleBinding>::namespaced(self.env.admin(), self.ns())
            .create(&PostParams::default(), &binding)
            .await
            .unwrap();
    }

    async fn wait_allowed(&self, user: &str, groups: &[&str], verb: &str, res: &str, name: &str) {
        let (resource, subresource) = res.split_once('/').unwrap_or((res, ""));
        let review: SubjectAccessReview = serde_json::from_value(json!({
            "spec": {"user": user, "groups": groups, "resourceAttributes": {
                "namespace": self.ns(), "verb": verb, "group": "chop.dev",
                "resource": resource, "subresource": subresource, "name": name}}
        }))
        .unwrap();
        let api = Api::<SubjectAccessReview>::all(self.env.admin());
        eventually(
            &format!("{user} {groups:?} allowed to {verb} {res}"),
            || {
                let (api, review) = (api.clone(), review.clone());
                async move {
                    let allowed = api
                        .create(&PostParams::default(), &review)
                        .await
                        .map_err(|e| e.to_string())?
                        .status
                        .is_some_and(|s| s.allowed);
                    allowed.then_some(()).ok_or_else(|| "denied".to_owned())
                }
            },
        )
        .await;
    }

    /// Waits until chop-requested-by stamps KeyCeremonies, chop-key-ceremony and
    /// chop-issuance-field reject a known-bad dry run here.
    async fn wait_for_policies(&self) {
        let admin = self.ceremonies(self.env.admin());
        eventually("chop-requested-by stamps KeyCeremonies", || async {
            let made = admin
                .create(&dry_post(), &ceremony("probe", "Generate"))
                .await
                .map_err(|e| e.to_string())?;
            match made
                .metadata
                .annotations
                .unwrap_or_default()
                .get(REQUESTED_BY)
            {
                Some(who) if who == "admin" => Ok(()),
                other => Err(format!("annotation {other:?}")),
            }
        })
        .await;
        let mut bad = ceremony("probe", "Generate");
        bad.data["spec"]["approvals"] = json!([approval("admin", "Administrator", H1)]);
        eventually("chop-key-ceremony in force", || async {
            match admin.create(&dry_post(), &bad).await {
                Err(kube::Error::Api(s))
                    if s.message.contains("created without spec.approvals") =>
                {
                    Ok(())
                }
                other => Err(format!("{other:?}")),
            }
        })
        .await;
        let cas = self.cas(self.env.admin());
        let ca = ceremony_ca("probe", "Enabled");
        eventually("chop-issuance-field (keyFrom) in force", || async {
            match cas.create(&dry_post(), &ca).await {
                Err(kube::Error::Api(s))
                    if s.message.contains("set spec.issuance to Suspended") =>
                {
                    Ok(())
                }
                other => Err(format!("{other:?}")),
            }
        })
        .await;
    }

    fn ceremonies(&self, client: Client) -> Api<DynamicObject> {
        Api::namespaced_with(client, self.ns(), &gvr("KeyCeremony", "keyceremonies"))
    }

    fn cas(&self, client: Client) -> Api<DynamicObject> {
        Api::namespaced_with(
            client,
            self.ns(),
            &gvr("CertificateAuthority", "certificateauthorities"),
        )
    }

    /// KeyCeremonies as the static-token user `name`.
    async fn as_user(&self, name: &str) -> Api<DynamicObject> {
        self.ceremonies(self.env.token_user(name).await.unwrap())
    }

    /// The chop-controller service account (impersonated), bound to the shipped
    /// chop-controller ClusterRole.
    async fn controller_sa(&self) -> Client {
        let ns_group = format!("system:serviceaccounts:{}", self.ns());
        self.env
            .plane()
            .client_impersonating(
                &self.controller_sa_name(),
                &["system:serviceaccounts", &ns_group, "system:authenticated"],
            )
            .await
            .unwrap()
    }

    /// The controller publishes `status` (merge patch of the status subresource).
    async fn publish(&self, name: &str, status: Value) {
        self.ceremonies(self.controller_sa().await)
            .patch_status(
                name,
                &PatchParams::default(),
                &merge(json!({"status": status})),
            )
            .await
            .unwrap();
    }

    async fn get(&self, name: &str) -> DynamicObject {
        self.ceremonies(self.env.admin()).get(name).await.unwrap()
    }

    /// Decommissions the namespace, waits until chop-key-ceremony sees it (a
    /// started ceremony is deleted only then), and deletes it.
    async fn cleanup(self) {
        Api::<Namespace>::all(self.env.admin())
            .patch(
                self.ns(),
                &PatchParams::default(),
                &merge(json!({"metadata": {"labels": {"chop.dev/decommissioned": "true"}}})),
            )
            .await
            .unwrap();
        let api = self.ceremonies(self.env.admin());
        let dry = DeleteParams {
            dry_run: true,
            ..DeleteParams::default()
        };
        for kc in api.list(&Default::default()).await.unwrap() {
            let name = kc.metadata.name.unwrap();
            eventually("decommissioning seen by chop-key-ceremony", || async {
                api.delete(&name, &dry)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })
            .await;
        }
        self.env.cleanup().await.unwrap();
    }
}

/// A root CA taking its key from KeyCeremony `gen`.
fn ceremony_ca(name: &str, issuance: &str) -> DynamicObject {
    let mut doc: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(repo().join("examples/certificateauthority-root.yaml")).unwrap(),
    )
    .unwrap();
    doc["metadata"]["name"] = json!(name);
    doc["spec"]["hsm"]["keyGeneration"] = json!("Never");
    doc["spec"]["hsm"]["keyFrom"] = json!({"ceremony": "gen"});
    doc["spec"]["issuance"] = json!(issuance);
    serde_json::from_value(doc).unwrap()
}

fn approvals(obj: &DynamicObject) -> Value {
    obj.data["spec"]
        .get("approvals")
        .cloned()
        .unwrap_or(json!([]))
}

/// Who may create which ceremony, and the creator's record.
#[tokio::test]
async fn ceremony_creation_follows_the_roles() {
    let f = Fixture::new().await;
    let officer = f.as_user("officer-1").await;
    let admin1 = f.as_user("chop-admin-1").await;
    let pp = PostParams::default();

    // An officer may not create key management; an administrator not activation.
    assert_rejected(
        officer.create(&pp, &ceremony("gen", "Generate")).await,
        403,
        "user officer-1 may not create a Generate KeyCeremony: Generate, Backup, Restore and Destroy ceremonies are created by an administrator",
    );
    assert_rejected(
        admin1.create(&pp, &ceremony("act", "Activate")).await,
        403,
        "user chop-admin-1 may not create a Activate KeyCeremony: Activate and Deactivate ceremonies are created by an officer",
    );
    // An auditor creates nothing (RBAC: patch only).
    assert_rejected(
        f.as_user("auditor-1")
            .await
            .create(&pp, &ceremony("gen", "Generate"))
            .await,
        403,
        "cannot create resource \"keyceremonies\"",
    );
    // Approvals cannot be smuggled in at creation.
    let mut preapproved = ceremony("gen", "Generate");
    preapproved.data["spec"]["approvals"] = json!([approval("chop-admin-2", "Administrator", H1)]);
    assert_rejected(
        admin1.create(&pp, &preapproved).await,
        422,
        "created without spec.approvals and spec.shares",
    );
    assert!(
        f.ceremonies(f.env.admin())
            .get_opt("gen")
            .await
            .unwrap()
            .is_none()
    );

    // The legitimate creations; the creator is recorded by the API server,
    // whatever the client claims.
    let mut forged = ceremony("act", "Activate");
    forged.metadata.annotations = Some([(REQUESTED_BY.to_owned(), "officer-2".to_owned())].into());
    let act = officer.create(&pp, &forged).await.unwrap();
    assert_eq!(act.metadata.annotations.unwrap()[REQUESTED_BY], "officer-1");
    let gen_ = admin1
        .create(&pp, &ceremony("gen", "Generate"))
        .await
        .unwrap();
    assert_eq!(
        gen_.metadata.annotations.unwrap()[REQUESTED_BY],
        "chop-admin-1"
    );

    // ... and stays as recorded, even for someone allowed to update the object.
    assert_rejected(
        officer
            .patch(
                "act",
                &PatchParams::default(),
                &merge(json!({"metadata": {"annotations": {REQUESTED_BY: "officer-2"}}})),
            )
            .await,
        422,
        "metadata.annotations[\"chop.dev/requested-by\"] is immutable",
    );
    assert_eq!(
        f.get("act").await.metadata.annotations.unwrap()[REQUESTED_BY],
        "officer-1"
    );
    f.cleanup().await;
}

/// Approvals are bound to the authenticated user, their role and the published
/// hash; append-only; frozen with the spec once the ceremony starts.
#[tokio::test]
async fn approvals_are_bound_to_who_gives_them() {
    let f = Fixture::new().await;
    let admin1 = f.as_user("chop-admin-1").await;
    let admin2 = f.as_user("chop-admin-2").await;
    let auditor = f.as_user("auditor-1").await;
    let witness = f.as_user("controller-1").await;
    let officer = f.as_user("officer-1").await;
    admin1
        .create(&PostParams::default(), &ceremony("gen", "Generate"))
        .await
        .unwrap();

    // Nothing to approve before the controller has published the hash.
    assert_rejected(
        admin2
            .patch(
                "gen",
                &ssa("chop-admin-2"),
                &apply_entry(
                    "approvals",
                    "gen",
                    approval("chop-admin-2", "Administrator", H1),
                ),
            )
            .await,
        422,
        "has not published status.specHash",
    );
    // Only the controller publishes it.
    assert_rejected(
        admin2
            .patch_status(
                "gen",
                &PatchParams::default(),
                &merge(json!({"status": {"specHash": H1}})),
            )
            .await,
        403,
        "cannot patch resource \"keyceremonies/status\"",
    );
    f.publish("gen", json!({"phase": "WaitingForQuorum", "specHash": H1}))
        .await;

    // Attacks, each by someone with exactly their role's rights.
    let attempt = |api: &Api<DynamicObject>, who: &str, entry: Value| {
        let (api, who) = (api.clone(), who.to_owned());
        async move {
            api.patch("gen", &ssa(&who), &apply_entry("approvals", "gen", entry))
                .await
        }
    };
    assert_rejected(
        attempt(
            &auditor,
            "auditor-1",
            approval("chop-admin-2", "Administrator", H1),
        )
        .await,
        403,
        "user auditor-1 may not add an approval in the name of chop-admin-2",
    );
    assert_rejected(
        attempt(
            &auditor,
            "auditor-1",
            approval("auditor-1", "Administrator", H1),
        )
        .await,
        403,
        "user auditor-1 does not hold the trusted role Administrator",
    );
    assert_rejected(
        attempt(
            &admin1,
            "chop-admin-1",
            approval("chop-admin-1", "Administrator", H1),
        )
        .await,
        403,
        "user chop-admin-1 created this KeyCeremony and may not approve it",
    );
    assert_rejected(
        attempt(&auditor, "auditor-1", approval("auditor-1", "Auditor", H2)).await,
        422,
        &format!("names specHash {H2} but the spec under review has status.specHash {H1}"),
    );
    // The RA system: no right to touch ceremonies; granted `patch` by a careless
    // namespace admin (with status too), still no role to approve in and no
    // right to write the minutes.
    let ra = f.as_user("ra-system").await;
    assert_rejected(
        attempt(&ra, "ra-system", approval("ra-system", "Officer", H1)).await,
        403,
        "cannot patch resource \"keyceremonies\"",
    );
    let role: Role = serde_json::from_value(json!({
        "metadata": {"name": "ra-patches-ceremonies", "namespace": f.ns()},
        "rules": [{"apiGroups": ["chop.dev"], "resources": ["keyceremonies", "keyceremonies/status"], "verbs": ["patch"]}]
    }))
    .unwrap();
    Api::<Role>::namespaced(f.env.admin(), f.ns())
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "ra-patches-ceremonies", "namespace": f.ns()},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "ra-patches-ceremonies"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "ra-system"}]
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(f.env.admin(), f.ns())
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    f.wait_allowed("ra-system", &[], "patch", "keyceremonies", "gen")
        .await;
    assert_rejected(
        attempt(&ra, "ra-system", approval("ra-system", "Officer", H1)).await,
        403,
        "user ra-system does not hold the trusted role Officer",
    );
    // ... nor may it publish a hash of its choosing (chop-controller-state).
    assert_rejected(
        ra.patch_status(
            "gen",
            &PatchParams::default(),
            &merge(json!({"status": {"specHash": H2}})),
        )
        .await,
        403,
        "user ra-system may not write keyceremonies/status: this state is written by chop-controller alone",
    );
    assert_eq!(f.get("gen").await.data["status"]["specHash"], H1);
    // A spec edit smuggled in with an approval.
    assert_rejected(
        admin2
            .patch(
                "gen",
                &PatchParams::default(),
                &merge(json!({"spec": {"reason": "something else",
                    "approvals": [approval("chop-admin-2", "Administrator", H1)]}})),
            )
            .await,
        422,
        "an approval cannot come with a change of the spec in the same request",
    );
    assert_eq!(approvals(&f.get("gen").await), json!([]));

    // The legitimate approvals: each role's member, in their own name.
    for (api, who, role) in [
        (&admin2, "chop-admin-2", "Administrator"),
        (&auditor, "auditor-1", "Auditor"),
        (&witness, "controller-1", "Controller"),
    ] {
        attempt(api, who, approval(who, role, H1))
            .await
            .unwrap_or_else(|e| panic!("{who} approving as {role}: {e}"));
    }
    let three = approvals(&f.get("gen").await);
    assert_eq!(three.as_array().unwrap().len(), 3, "{three}");

    // Nobody counts twice: the same person for the same spec in another role
    // (appended to the list, so the earlier approval stays) is refused.
    let append = |entry: Value| {
        let mut list = three.clone();
        list.as_array_mut().unwrap().push(entry);
        merge(json!({"spec": {"approvals": list}}))
    };
    let twice = auditor
        .patch(
            "gen",
            &PatchParams::default(),
            &append(approval("auditor-1", "Controller", H1)),
        )
        .await;
    match twice {
        Err(kube::Error::Api(s)) => assert!(
            s.message.contains("Duplicate value")
                || s.message.contains("has already approved this spec"),
            "{}",
            s.message
        ),
        other => panic!("approving twice was not refused: {other:?}"),
    }
    assert_rejected(
        attempt(
            &auditor,
            "auditor-1",
            approval("auditor-1", "Controller", H1),
        )
        .await,
        403,
        "spec.approvals is append-only",
    );
    // Removing or editing someone else's approval.
    assert_rejected(
        admin2
            .patch(
                "gen",
                &PatchParams::default(),
                &merge(
                    json!({"spec": {"approvals": [approval("chop-admin-2", "Administrator", H1)]}}),
                ),
            )
            .await,
        403,
        "spec.approvals is append-only",
    );
    let mut edited = three.clone();
    edited[0]["reason"] = json!("I never agreed");
    assert_rejected(
        auditor
            .patch(
                "gen",
                &PatchParams::default(),
                &merge(json!({"spec": {"approvals": edited}})),
            )
            .await,
        403,
        "spec.approvals is append-only",
    );
    // An auditor (patch, no update) may not edit the spec.
    assert_rejected(
        auditor
            .patch(
                "gen",
                &PatchParams::default(),
                &merge(json!({"spec": {"reason": "edited"}})),
            )
            .await,
        403,
        "user auditor-1 may only add their approval or share to KeyCeremony gen",
    );
    assert_eq!(approvals(&f.get("gen").await), three);

    // An officer (update on keyceremonies) may not prepare key management.
    assert_rejected(
        officer
            .patch(
                "gen",
                &PatchParams::default(),
                &merge(json!({"spec": {"reason": "edited"}})),
            )
            .await,
        403,
        "user officer-1 may not change the spec of a Generate KeyCeremony: administrators (chop:administrator) prepare it",
    );
    assert_eq!(approvals(&f.get("gen").await), three);

    // Before the ceremony starts an administrator may edit it; the controller
    // then publishes the new hash and an approval of the old one is stale.
    admin1
        .patch(
            "gen",
            &PatchParams::default(),
            &merge(json!({"spec": {"reason": "annual key generation"}})),
        )
        .await
        .unwrap();
    f.publish("gen", json!({"specHash": H2})).await;
    assert_rejected(
        attempt(&officer, "officer-1", approval("officer-1", "Officer", H1)).await,
        422,
        &format!("names specHash {H1} but the spec under review has status.specHash {H2}"),
    );
    // The same people may approve the edited spec (their H1 approvals stay in
    // the minutes and no longer count); still once each.
    // (A field manager per approval: the docs' `approve-<hash>-<user>`.)
    auditor
        .patch(
            "gen",
            &ssa("approve-h2-auditor-1"),
            &apply_entry("approvals", "gen", approval("auditor-1", "Auditor", H2)),
        )
        .await
        .unwrap_or_else(|e| panic!("re-approving the edited spec: {e}"));
    let twice = auditor
        .patch(
            "gen",
            &ssa("approve-h2-auditor-1b"),
            &apply_entry("approvals", "gen", approval("auditor-1", "Controller", H2)),
        )
        .await;
    assert!(
        twice.is_err(),
        "approving the same spec twice was not refused"
    );
    // A withdrawn (not started) ceremony may be deleted; see below for a started one.

    // Started: no approvals, no edits, no deletion.
    f.publish("gen", json!({"phase": "Running"})).await;
    assert_rejected(
        attempt(&officer, "officer-1", approval("officer-1", "Officer", H2)).await,
        403,
        "the ceremony has started (phase Running): it takes no more approvals",
    );
    assert_rejected(
        admin1
            .patch(
                "gen",
                &PatchParams::default(),
                &merge(json!({"spec": {"reason": "too late"}})),
            )
            .await,
        403,
        "the ceremony has started (phase Running): its spec is frozen; create a new KeyCeremony",
    );
    assert_rejected(
        admin1.delete("gen", &DeleteParams::default()).await,
        403,
        "KeyCeremony gen has started (phase Running) and is the record of a key operation",
    );
    let after = f.get("gen").await;
    let mut four = three.clone();
    four.as_array_mut()
        .unwrap()
        .push(approval("auditor-1", "Auditor", H2));
    assert_eq!(approvals(&after), four);
    assert_eq!(after.data["spec"]["reason"], "annual key generation");

    // A ceremony still waiting for its quorum may be withdrawn by an administrator.
    admin1
        .create(&PostParams::default(), &ceremony("spare", "Destroy"))
        .await
        .unwrap();
    admin1
        .delete("spare", &DeleteParams::default())
        .await
        .unwrap();
    f.cleanup().await;
}

/// Restore shares: in one's own name, append-only, only while the ceremony
/// waits for them.
#[tokio::test]
async fn shares_are_bound_to_who_submits_them() {
    let f = Fixture::new().await;
    let admin1 = f.as_user("chop-admin-1").await;
    let auditor = f.as_user("auditor-1").await;
    let witness = f.as_user("controller-1").await;
    admin1
        .create(&PostParams::default(), &ceremony("restore", "Restore"))
        .await
        .unwrap();
    let share = |user: &str| json!({"user": user, "envelope": "-----BEGIN CMS-----\nMIIB\n-----END CMS-----\n"});
    let submit = |api: &Api<DynamicObject>, who: &str, entry: Value| {
        let (api, who) = (api.clone(), who.to_owned());
        async move {
            api.patch(
                "restore",
                &ssa(&who),
                &apply_entry("shares", "restore", entry),
            )
            .await
        }
    };
    assert_rejected(
        submit(&auditor, "auditor-1", share("auditor-1")).await,
        422,
        "shares are accepted only while the ceremony is WaitingForShares (now: WaitingForQuorum)",
    );
    f.publish(
        "restore",
        json!({"phase": "WaitingForShares", "specHash": H1}),
    )
    .await;
    assert_rejected(
        submit(&auditor, "auditor-1", share("custodian-7")).await,
        403,
        "user auditor-1 may not submit a share in the name of custodian-7",
    );
    submit(&auditor, "auditor-1", share("auditor-1"))
        .await
        .unwrap();
    submit(&witness, "controller-1", share("controller-1"))
        .await
        .unwrap();
    assert_rejected(
        witness
            .patch(
                "restore",
                &PatchParams::default(),
                &merge(json!({"spec": {"shares": [share("controller-1")]}})),
            )
            .await,
        403,
        "spec.shares is append-only",
    );
    let shares = f.get("restore").await.data["spec"]["shares"].clone();
    assert_eq!(shares.as_array().unwrap().len(), 2, "{shares}");
    f.cleanup().await;
}

/// A CA whose key comes from a ceremony is switched on and off by the
/// controller (as the result of an Activate/Deactivate ceremony) only.
#[tokio::test]
async fn ceremony_ca_issuance_is_the_controllers() {
    let f = Fixture::new().await;
    let admin1 = f.cas(f.env.token_user("chop-admin-1").await.unwrap());
    let officer = f.cas(f.env.token_user("officer-1").await.unwrap());
    let controller = f.cas(f.controller_sa().await);
    let pp = PostParams::default();
    let issuance = |value: &str| merge(json!({"spec": {"issuance": value}}));
    let current = |name: &'static str| {
        let admin1 = admin1.clone();
        async move { admin1.get(name).await.unwrap().data["spec"]["issuance"].clone() }
    };

    assert_rejected(
        admin1.create(&pp, &ceremony_ca("root", "Enabled")).await,
        422,
        "CA root takes its key from KeyCeremony gen: set spec.issuance to Suspended",
    );
    admin1
        .create(&pp, &ceremony_ca("root", "Suspended"))
        .await
        .unwrap();
    for (api, who) in [(&officer, "officer-1"), (&admin1, "chop-admin-1")] {
        assert_rejected(
            api.patch("root", &PatchParams::default(), &issuance("Enabled"))
                .await,
            403,
            &format!(
                "user {who} may not start or stop issuance of CA root: its key comes from a KeyCeremony"
            ),
        );
    }
    assert_eq!(current("root").await, "Suspended");
    // The controller writes the ceremony's outcome, and nothing else.
    controller
        .patch("root", &PatchParams::default(), &issuance("Enabled"))
        .await
        .unwrap();
    assert_eq!(current("root").await, "Enabled");
    assert_rejected(
        controller
            .patch(
                "root",
                &PatchParams::default(),
                &merge(json!({"spec": {"validity": "1h"}})),
            )
            .await,
        403,
        "may change only spec.issuance of CA root",
    );

    // A CA without keyFrom keeps the officer's toggle, which the controller may
    // not flip.
    let mut plain: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(repo().join("examples/certificateauthority-root.yaml")).unwrap(),
    )
    .unwrap();
    plain["metadata"]["name"] = json!("plain");
    admin1
        .create(&pp, &serde_json::from_value(plain).unwrap())
        .await
        .unwrap();
    assert_rejected(
        controller
            .patch("plain", &PatchParams::default(), &issuance("Suspended"))
            .await,
        403,
        "may not start or stop issuance of CA plain (officers only",
    );
    officer
        .patch("plain", &PatchParams::default(), &issuance("Suspended"))
        .await
        .unwrap();
    assert_eq!(current("plain").await, "Suspended");
    f.cleanup().await;
}
