//! chop's trusted roles (CPS §5.2) and admission policies on a real kube-apiserver,
//! with distinct users: the ClusterRoles of `manifests/rbac` grant what the CPS
//! assigns, and the policies of `manifests/policies` make the API server itself
//! check approval rights, self-approval, the officer's one field of a
//! CertificateAuthority and the separation of roles (§5.2.4).
//!
//! Every test installs the CRDs and `manifests/` (server-side apply, idempotent)
//! and works in its own namespace. One change to the manifests under test: the
//! policy bindings get a namespace selector for the label [`TEST_LABEL`], so that
//! the policies, which are cluster-wide objects on a plane shared with the other
//! test files, only act on this file's namespaces.
//!
//! RBAC grants and admission policies reach the API server's caches a moment after
//! they are written: [`Fixture::new`] waits until every binding is visible to the
//! authorizer and every policy rejects a known-bad dry-run request before a test
//! asserts anything.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use e2e::{TestEnv, eventually};
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{GroupVersionKind, Status};
use serde_json::{Value, json};

/// Label put on this file's namespaces; the policy bindings select it.
const TEST_LABEL: &str = "chop.dev/e2e-roles";
const FIELD_MANAGER: &str = "chop-e2e-roles";
const REQUESTED_BY: &str = "chop.dev/requested-by";
const ACCEPTED_BY: &str = "chop.dev/accepted-by";
const RESUMED_BY: &str = "chop.dev/resumed-by";
const PROBE: &str = "probe";

/// Group → ClusterRole, bound in every test namespace.
const BINDINGS: &[(&str, &str)] = &[
    ("chop:administrators", "chop:administrator"),
    ("chop:officers", "chop:officer"),
    ("chop:auditors", "chop:auditor"),
    ("chop:operators", "chop:operator"),
    ("chop:controllers", "chop:controller"),
    (
        "chop:registration-authorities",
        "chop:registration-authority",
    ),
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn crds()
-> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    crds::all().into_iter().map(|(_, crd)| crd).collect()
}

/// The API error of a call that must fail.
fn api_error<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> Status {
    match result {
        Err(kube::Error::Api(status)) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// Asserts a rejection with HTTP `code` and `phrase` in the message.
fn assert_rejected<T: std::fmt::Debug>(result: Result<T, kube::Error>, code: u16, phrase: &str) {
    let status = api_error(result);
    assert_eq!(status.code, code, "{status:?}");
    assert!(
        status.message.contains(phrase),
        "expected {phrase:?} in {:?}",
        status.message
    );
}

/// Retries `f` (a dry run) until it is rejected with `phrase` in the message.
async fn until_rejected<T, F, Fut>(what: &str, phrase: &str, mut f: F)
where
    T: std::fmt::Debug,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    eventually(what, || {
        let fut = f();
        async move {
            match fut.await {
                Err(kube::Error::Api(s)) if s.message.contains(phrase) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;
}

fn dry_patch() -> PatchParams {
    PatchParams {
        dry_run: true,
        ..PatchParams::default()
    }
}

fn dry_post() -> PostParams {
    PostParams {
        dry_run: true,
        ..PostParams::default()
    }
}

fn condition(kind: &str, status: &str) -> Value {
    json!({
        "type": kind, "status": status, "reason": "E2E", "message": "set by the roles test",
        "lastTransitionTime": "2026-11-29T00:00:00Z"
    })
}

/// Merge patch of status.conditions (replaces the list).
fn conditions(list: &[Value]) -> Patch<Value> {
    Patch::Merge(json!({"status": {"conditions": list}}))
}

fn example(file: &str) -> Value {
    serde_saphyr::from_str(&std::fs::read_to_string(repo().join("examples").join(file)).unwrap())
        .unwrap()
}

/// A signature-certificate request for CA `moica`, named `name`.
fn request(name: &str) -> DynamicObject {
    let mut doc = example("certificaterequest-signature.yaml");
    doc["metadata"]["name"] = json!(name);
    serde_json::from_value(doc).unwrap()
}

fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("chop.dev", "v1alpha1", kind), plural)
}

/// One test's namespace with the manifests installed, the roles bound to their
/// groups and every policy in force.
struct Fixture {
    env: TestEnv,
}

impl Fixture {
    async fn new() -> Self {
        let env = TestEnv::with_crds(&crds()).await.unwrap();
        let admin = env.admin();
        let ns = env.namespace().to_owned();
        Api::<Namespace>::all(admin.clone())
            .patch(
                &ns,
                &PatchParams::default(),
                // chop.dev/register: a CA may be created here (chop-register-protection).
                &Patch::Merge(
                    json!({"metadata": {"labels": {TEST_LABEL: "true", "chop.dev/register": "true"}}}),
                ),
            )
            .await
            .unwrap();
        e2e::install_manifests(
            &admin,
            &e2e::kustomization_files().unwrap(),
            TEST_LABEL,
            None,
            FIELD_MANAGER,
        )
        .await
        .unwrap();
        let fixture = Fixture { env };
        for (group, role) in BINDINGS {
            fixture.bind_group(role, group).await;
        }
        for (group, role) in BINDINGS {
            let marker = role.trim_start_matches("chop:");
            if marker != "registration-authority" {
                fixture
                    .wait_allowed("someone", &[group], "assume", "trustedroles", marker)
                    .await;
            }
        }
        fixture
            .wait_allowed(
                "someone",
                &["chop:registration-authorities"],
                "create",
                "certificaterequests",
                "",
            )
            .await;
        fixture.wait_for_policies().await;
        fixture
    }

    fn ns(&self) -> &str {
        self.env.namespace()
    }

    fn requests(&self, client: Client) -> Api<DynamicObject> {
        Api::namespaced_with(
            client,
            self.ns(),
            &resource("CertificateRequest", "certificaterequests"),
        )
    }

    fn cas(&self, client: Client) -> Api<DynamicObject> {
        Api::namespaced_with(
            client,
            self.ns(),
            &resource("CertificateAuthority", "certificateauthorities"),
        )
    }

    async fn token_user(&self, name: &str) -> Client {
        self.env.token_user(name).await.unwrap()
    }

    async fn user(&self, name: &str, groups: &[&str]) -> Client {
        self.env.user(name, groups).await.unwrap()
    }

    /// RoleBinding of ClusterRole `role` to a subject in this namespace.
    async fn bind(&self, role_kind: &str, role: &str, subject: Value) {
        let name = format!(
            "{}-{}",
            role.replace(':', "-"),
            subject["name"].as_str().unwrap().replace(':', "-")
        );
        let binding: RoleBinding = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": self.ns()},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role},
            "subjects": [subject]
        }))
        .unwrap();
        Api::<RoleBinding>::namespaced(self.env.admin(), self.ns())
            .create(&PostParams::default(), &binding)
            .await
            .unwrap();
    }

    async fn bind_group(&self, role: &str, group: &str) {
        self.bind(
            "ClusterRole",
            role,
            json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": group}),
        )
        .await;
    }

    async fn bind_user(&self, role_kind: &str, role: &str, user: &str) {
        self.bind(
            role_kind,
            role,
            json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}),
        )
        .await;
    }

    /// A namespaced Role with one rule on chop.dev.
    async fn role(&self, name: &str, resources: &[&str], verbs: &[&str], names: &[&str]) {
        let mut rule = json!({"apiGroups": ["chop.dev"], "resources": resources, "verbs": verbs});
        if !names.is_empty() {
            rule["resourceNames"] = json!(names);
        }
        let role: Role = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": self.ns()},
            "rules": [rule]
        }))
        .unwrap();
        Api::<Role>::namespaced(self.env.admin(), self.ns())
            .create(&PostParams::default(), &role)
            .await
            .unwrap();
    }

    /// What the authorizer answers for `user` in `groups` (SubjectAccessReview).
    async fn allowed(
        &self,
        user: &str,
        groups: &[&str],
        verb: &str,
        resource: &str,
        name: &str,
    ) -> bool {
        let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
        let (group, resource) = match resource.split_once('.') {
            Some((r, g)) => (g, r),
            None => ("chop.dev", resource),
        };
        let group = if group == "core" { "" } else { group };
        let review: SubjectAccessReview = serde_json::from_value(json!({
            "spec": {
                "user": user, "groups": groups,
                "resourceAttributes": {
                    "namespace": self.ns(), "verb": verb, "group": group,
                    "resource": resource, "subresource": subresource, "name": name
                }
            }
        }))
        .unwrap();
        Api::<SubjectAccessReview>::all(self.env.admin())
            .create(&PostParams::default(), &review)
            .await
            .unwrap()
            .status
            .unwrap()
            .allowed
    }

    async fn wait_allowed(&self, user: &str, groups: &[&str], verb: &str, res: &str, name: &str) {
        eventually(&format!("{groups:?} allowed to {verb} {res}"), || async {
            if self.allowed(user, groups, verb, res, name).await {
                Ok(())
            } else {
                Err("denied".to_owned())
            }
        })
        .await;
    }

    /// Waits until every admission policy of `manifests/` is in force here, each
    /// proven by a dry-run request it must reject.
    async fn wait_for_policies(&self) {
        let admin = self.requests(self.env.admin());
        // chop-requested-by records the creator (and chop-no-self-approval
        // accepts it on CREATE).
        eventually("chop-requested-by sets the annotation", || async {
            let made = admin
                .create(&dry_post(), &request(PROBE))
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
        // Each probe is rejected by one policy only (a rejection names only one).
        // The probe request is the RA's, so the admin is not its requester.
        self.requests(self.token_user("ra-system").await)
            .create(&PostParams::default(), &request(PROBE))
            .await
            .unwrap();
        until_rejected("chop-approval", "take status True only", || async {
            admin
                .patch_status(
                    PROBE,
                    &dry_patch(),
                    &conditions(&[condition("Approved", "False")]),
                )
                .await
        })
        .await;
        until_rejected("chop-no-self-approval", "is immutable", || async {
            admin
                .patch(
                    PROBE,
                    &dry_patch(),
                    &Patch::Merge(json!({"metadata": {"annotations": {REQUESTED_BY: "x"}}})),
                )
                .await
        })
        .await;
        // chop-decided-by stamps a decision (a dry run: the probe stays undecided).
        let officer = self.requests(self.user("officer-1", &["chop:officers"]).await);
        eventually("chop-decided-by stamps status.decidedBy", || async {
            let decided = officer
                .patch_status(
                    PROBE,
                    &dry_patch(),
                    &conditions(&[condition("Approved", "True")]),
                )
                .await
                .map_err(|e| e.to_string())?;
            match decided.data["status"]["decidedBy"].as_str() {
                Some("officer-1") => Ok(()),
                other => Err(format!("decidedBy {other:?}")),
            }
        })
        .await;
        until_rejected("chop-acted-by", "is immutable", || async {
            admin
                .patch_status(
                    PROBE,
                    &dry_patch(),
                    &Patch::Merge(json!({"status": {"decidedBy": "x"}})),
                )
                .await
        })
        .await;
        until_rejected("chop-request-spec", "only spec.accepted", || async {
            admin
                .patch(
                    PROBE,
                    &dry_patch(),
                    &Patch::Merge(
                        json!({"spec": {"email": "x@example.org", "emailVerified": true}}),
                    ),
                )
                .await
        })
        .await;
        // chop-issuance-field needs a CA and someone without `update` on it.
        let mut ca = example("certificateauthority-subordinate.yaml");
        ca["metadata"]["name"] = json!(PROBE);
        let ca: DynamicObject = serde_json::from_value(ca).unwrap();
        self.cas(self.env.admin())
            .create(&PostParams::default(), &ca)
            .await
            .unwrap();
        let officer = self.cas(self.token_user("officer-1").await);
        until_rejected(
            "chop-issuance-field",
            "may change only spec.issuance",
            || async {
                officer
                    .patch(
                        PROBE,
                        &dry_patch(),
                        &Patch::Merge(json!({"spec": {"validity": "1h"}})),
                    )
                    .await
            },
        )
        .await;
        // chop-role-separation: someone holding officer and auditor.
        let dual = self.requests(
            self.user("e2e-dual-probe", &["chop:officers", "chop:auditors"])
                .await,
        );
        until_rejected("chop-role-separation", "keeps apart", || async {
            dual.patch_status(PROBE, &dry_patch(), &conditions(&[]))
                .await
        })
        .await;
    }

    async fn cleanup(self) {
        self.env.cleanup().await.unwrap();
    }
}

/// The ClusterRoles grant what CPS §5.2.1 assigns to each role, and nothing of
/// the other roles' duties (asked of the authorizer with SubjectAccessReviews).
#[tokio::test]
async fn roles_grant_what_the_cps_assigns() {
    let f = Fixture::new().await;
    let ns = f.ns().to_owned();
    let signer = format!("{ns}.moica");
    // group, verb, resource (`.group` when not chop.dev, `/subresource`), name
    // (SIGNER: this namespace's CA moica; `-`: none), allowed.
    const MATRIX: &str = "
    chop:administrators            create   certificateauthorities           -              yes
    chop:administrators            update   certificateauthorities           -              yes
    chop:administrators            delete   crlschedules                     -              yes
    chop:administrators            create   keyceremonies                    -              yes
    chop:administrators            list     certificaterequests              -              yes
    chop:administrators            approve  signers                          SIGNER         no
    chop:administrators            patch    certificaterequests/status       -              no
    chop:administrators            update   certificateauthorities/issuance  -              no
    chop:administrators            create   revocations                      -              no
    chop:administrators            create   secrets.core                     -              no
    chop:officers                  approve  signers                          SIGNER         yes
    chop:officers                  patch    certificaterequests/status       -              yes
    chop:officers                  create   revocations                      -              yes
    chop:officers                  create   suspensions                      -              yes
    chop:officers                  patch    suspensions                      -              yes
    chop:officers                  patch    certificateauthorities           -              yes
    chop:officers                  update   certificateauthorities/issuance  -              yes
    chop:officers                  update   certificateauthorities           -              no
    chop:officers                  create   certificateauthorities           -              no
    chop:officers                  delete   certificaterequests              -              no
    chop:officers                  update   revocations                      -              no
    chop:auditors                  list     certificaterequests              -              yes
    chop:auditors                  get      certificaterequests/status       -              yes
    chop:auditors                  watch    revocations                      -              yes
    chop:auditors                  list     auditsegments                    -              yes
    chop:auditors                  create   certificaterequests              -              no
    chop:auditors                  list     issuedcertificates               -              yes
    chop:auditors                  delete   issuedcertificates               -              no
    chop:officers                  get      issuedcertificates               -              yes
    chop:officers                  patch    issuedcertificates/status        -              no
    chop:administrators            delete   issuedcertificates               -              no
    chop:administrators            delete   registers                        -              no
    chop:administrators            decommission registers                    -              no
    chop:officers                  decommission registers                    -              no
    chop:auditors                  decommission registers                    -              no
    chop:auditors                  patch    certificaterequests/status       -              no
    chop:auditors                  approve  signers                          SIGNER         no
    chop:operators                 get      certificateauthorities/status    -              yes
    chop:operators                 delete   pods.core                        -              yes
    chop:operators                 get      deployments.apps                 -              yes
    chop:operators                 patch    deployments.apps                 -              no
    chop:operators                 patch    certificateauthorities           -              no
    chop:controllers               get      keyceremonies                    -              yes
    chop:controllers               list     certificateauthorities           -              yes
    chop:controllers               watch    certificateauthorities           -              no
    chop:controllers               create   keyceremonies                    -              no
    chop:registration-authorities  create   certificaterequests              -              yes
    chop:registration-authorities  create   revocations                      -              yes
    chop:registration-authorities  create   suspensions                      -              yes
    chop:registration-authorities  patch    certificaterequests              -              yes
    chop:registration-authorities  approve  signers                          SIGNER         no
    chop:registration-authorities  patch    certificaterequests/status       -              no
    chop:registration-authorities  delete   certificaterequests              -              no
    # Each role holds its own trusted-role marker and no other.
    chop:administrators            assume   trustedroles                     administrator  yes
    chop:administrators            assume   trustedroles                     officer        no
    chop:administrators            assume   trustedroles                     auditor        no
    chop:administrators            assume   trustedroles                     operator       no
    chop:administrators            assume   trustedroles                     controller     no
    chop:officers                  assume   trustedroles                     administrator  no
    chop:officers                  assume   trustedroles                     officer        yes
    chop:officers                  assume   trustedroles                     auditor        no
    chop:officers                  assume   trustedroles                     operator       no
    chop:officers                  assume   trustedroles                     controller     no
    chop:auditors                  assume   trustedroles                     administrator  no
    chop:auditors                  assume   trustedroles                     officer        no
    chop:auditors                  assume   trustedroles                     auditor        yes
    chop:auditors                  assume   trustedroles                     operator       no
    chop:auditors                  assume   trustedroles                     controller     no
    chop:operators                 assume   trustedroles                     administrator  no
    chop:operators                 assume   trustedroles                     officer        no
    chop:operators                 assume   trustedroles                     auditor        no
    chop:operators                 assume   trustedroles                     operator       yes
    chop:operators                 assume   trustedroles                     controller     no
    chop:controllers               assume   trustedroles                     administrator  no
    chop:controllers               assume   trustedroles                     officer        no
    chop:controllers               assume   trustedroles                     auditor        no
    chop:controllers               assume   trustedroles                     operator       no
    chop:controllers               assume   trustedroles                     controller     yes
    chop:registration-authorities  assume   trustedroles                     administrator  no
    chop:registration-authorities  assume   trustedroles                     officer        no
    chop:registration-authorities  assume   trustedroles                     auditor        no
    chop:registration-authorities  assume   trustedroles                     operator       no
    chop:registration-authorities  assume   trustedroles                     controller     no
    ";
    let mut wrong = Vec::new();
    for line in MATRIX
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.trim().starts_with('#'))
    {
        let [group, verb, res, name, expected] = line.split_whitespace().collect::<Vec<_>>()[..]
        else {
            panic!("bad matrix line {line:?}");
        };
        let name = match name {
            "SIGNER" => signer.as_str(),
            "-" => "",
            other => other,
        };
        let expected = expected == "yes";
        if f.allowed("someone", &[group], verb, res, name).await != expected {
            wrong.push(format!(
                "{group} {verb} {res} {name}: expected allowed={expected}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    f.cleanup().await;
}

/// The RA requests, an officer approves; the auditor can do neither; the
/// decision is final and the request's spec only takes the applicant's acceptance.
#[tokio::test]
async fn ra_requests_and_officer_approves() {
    let f = Fixture::new().await;
    let ra = f.requests(f.token_user("ra-system").await);
    let auditor = f.requests(f.token_user("auditor-1").await);
    let officer1 = f.requests(f.token_user("officer-1").await);
    let officer2 = f.requests(f.token_user("officer-2").await);
    let pp = PostParams::default();
    let mp = PatchParams::default();

    // The RA creates the request; the API server records it as the requester,
    // whatever the client claims.
    let mut forged = request("wang");
    forged.metadata.annotations = Some([(REQUESTED_BY.to_owned(), "officer-1".to_owned())].into());
    let made = ra.create(&pp, &forged).await.unwrap();
    assert_eq!(
        made.metadata.annotations.unwrap()[REQUESTED_BY],
        "ra-system"
    );

    // The auditor reads, but neither creates nor approves (RBAC).
    auditor.get("wang").await.unwrap();
    assert_rejected(
        auditor.create(&pp, &request("by-auditor")).await,
        403,
        r#"User "auditor-1" cannot create resource "certificaterequests""#,
    );
    assert_rejected(
        auditor
            .patch_status("wang", &mp, &conditions(&[condition("Approved", "True")]))
            .await,
        403,
        r#"cannot patch resource "certificaterequests/status""#,
    );

    // An officer approves.
    let approved = officer1
        .patch_status("wang", &mp, &conditions(&[condition("Approved", "True")]))
        .await
        .unwrap();
    assert_eq!(approved.data["status"]["conditions"][0]["type"], "Approved");

    // The decision is final: another officer can neither deny nor withdraw it.
    assert_rejected(
        officer2
            .patch_status("wang", &mp, &conditions(&[condition("Denied", "True")]))
            .await,
        422,
        "the decision on this request is final (Approved)",
    );
    assert_rejected(
        officer2.patch_status("wang", &mp, &conditions(&[])).await,
        422,
        "is final",
    );
    // ... nor add Denied next to it.
    assert_rejected(
        officer2
            .patch_status(
                "wang",
                &mp,
                &conditions(&[condition("Approved", "True"), condition("Denied", "True")]),
            )
            .await,
        422,
        "is final",
    );
    // The controller's own conditions still go through (no decision change).
    let with_issued = f
        .requests(f.env.admin())
        .patch_status(
            "wang",
            &mp,
            &conditions(&[condition("Approved", "True"), condition("Issued", "False")]),
        )
        .await
        .unwrap();
    assert_eq!(
        with_issued.data["status"]["conditions"][1]["type"],
        "Issued"
    );

    // The requester is recorded for good.
    assert_rejected(
        f.requests(f.env.admin())
            .patch(
                "wang",
                &mp,
                &Patch::Merge(json!({"metadata": {"annotations": {REQUESTED_BY: "someone-else"}}})),
            )
            .await,
        422,
        r#"metadata.annotations["chop.dev/requested-by"] is immutable"#,
    );

    // The RA records the applicant's acceptance, and changes nothing else.
    let accepted = ra
        .patch(
            "wang",
            &mp,
            &Patch::Merge(json!({"spec": {"accepted": true}})),
        )
        .await
        .unwrap();
    assert_eq!(accepted.data["spec"]["accepted"], true);
    assert_rejected(
        ra.patch(
            "wang",
            &mp,
            &Patch::Merge(json!({"spec": {"email": "wang@example.org", "emailVerified": true}})),
        )
        .await,
        422,
        "after creation only spec.accepted of a CertificateRequest may change",
    );

    // Denying a fresh request works too; approving AND denying at once does not.
    ra.create(&pp, &request("lee")).await.unwrap();
    assert_rejected(
        officer1
            .patch_status(
                "lee",
                &mp,
                &conditions(&[condition("Approved", "True"), condition("Denied", "True")]),
            )
            .await,
        422,
        "a request cannot be both Approved and Denied",
    );
    assert_rejected(
        officer1
            .patch_status("lee", &mp, &conditions(&[condition("Approved", "False")]))
            .await,
        422,
        "take status True only",
    );
    officer2
        .patch_status("lee", &mp, &conditions(&[condition("Denied", "True")]))
        .await
        .unwrap();
    assert_rejected(
        officer1
            .patch_status("lee", &mp, &conditions(&[condition("Approved", "True")]))
            .await,
        422,
        "the decision on this request is final (Denied)",
    );
    f.cleanup().await;
}

/// Writing status is not approving: the API server asks for `approve` on the
/// signer, which can be scoped to one CA.
#[tokio::test]
async fn approval_needs_approve_on_the_signer() {
    let f = Fixture::new().await;
    let ns = f.ns().to_owned();
    let pp = PostParams::default();
    let mp = PatchParams::default();
    f.requests(f.token_user("ra-system").await)
        .create(&pp, &request("wang"))
        .await
        .unwrap();

    // A status writer without `approve` (first without, then with the
    // controller's mark).
    f.role(
        "status-writer",
        &["certificaterequests/status"],
        &["patch"],
        &[],
    )
    .await;
    f.bind_user("Role", "status-writer", "status-writer-1")
        .await;
    f.wait_allowed(
        "status-writer-1",
        &[],
        "patch",
        "certificaterequests/status",
        "",
    )
    .await;
    let writer = f.requests(f.user("status-writer-1", &[]).await);
    // Writing status is not being the controller either: the conditions that
    // are not decisions belong to chop-controller (chop-controller-state) ...
    assert_rejected(
        writer
            .patch_status("wang", &mp, &conditions(&[condition("Failed", "False")]))
            .await,
        403,
        "user status-writer-1 may change only the Approved/Denied decision of a CertificateRequest",
    );
    // ... whose identity is the mark `write` on controllerstatus.chop.dev.
    f.role("controller-mark", &["controllerstatus"], &["write"], &[])
        .await;
    f.bind_user("Role", "controller-mark", "status-writer-1")
        .await;
    f.wait_allowed("status-writer-1", &[], "write", "controllerstatus", "")
        .await;
    // With it, the writer sets the conditions that are not decisions ...
    writer
        .patch_status("wang", &mp, &conditions(&[condition("Failed", "False")]))
        .await
        .unwrap();
    // ... but not Approved or Denied.
    let phrase = format!(
        "user status-writer-1 may not approve or deny requests for CA moica: needs verb approve on signers.chop.dev/{ns}.moica"
    );
    for kind in ["Approved", "Denied"] {
        assert_rejected(
            writer
                .patch_status(
                    "wang",
                    &mp,
                    &conditions(&[condition("Failed", "False"), condition(kind, "True")]),
                )
                .await,
            403,
            &phrase,
        );
    }

    // An officer scoped to another CA of the namespace may not decide for moica.
    f.role(
        "approve-other",
        &["signers"],
        &["approve"],
        &[&format!("{ns}.other")],
    )
    .await;
    f.bind_user("Role", "approve-other", "status-writer-1")
        .await;
    f.wait_allowed(
        "status-writer-1",
        &[],
        "approve",
        "signers",
        &format!("{ns}.other"),
    )
    .await;
    assert_rejected(
        writer
            .patch_status("wang", &mp, &conditions(&[condition("Approved", "True")]))
            .await,
        403,
        &phrase,
    );

    // Scoped to moica: allowed.
    f.role(
        "approve-moica",
        &["signers"],
        &["approve"],
        &[&format!("{ns}.moica")],
    )
    .await;
    f.bind_user("Role", "approve-moica", "status-writer-1")
        .await;
    f.wait_allowed(
        "status-writer-1",
        &[],
        "approve",
        "signers",
        &format!("{ns}.moica"),
    )
    .await;
    writer
        .patch_status("wang", &mp, &conditions(&[condition("Approved", "True")]))
        .await
        .unwrap();
    f.cleanup().await;
}

/// CPS §5.2.4: nobody approves their own request, even when allowed to approve.
#[tokio::test]
async fn requester_cannot_approve_own_request() {
    let f = Fixture::new().await;
    let ns = f.ns().to_owned();
    let pp = PostParams::default();
    let mp = PatchParams::default();
    let ra = f.requests(f.token_user("ra-system").await);
    ra.create(&pp, &request("wang")).await.unwrap();

    // Give the RA the officer's approval rights on top of its own.
    f.role(
        "approver",
        &["certificaterequests/status", "signers"],
        &["patch", "approve"],
        &[],
    )
    .await;
    f.bind_user("Role", "approver", "ra-system").await;
    f.wait_allowed(
        "ra-system",
        &[],
        "approve",
        "signers",
        &format!("{ns}.moica"),
    )
    .await;
    f.wait_allowed("ra-system", &[], "patch", "certificaterequests/status", "")
        .await;

    for kind in ["Approved", "Denied"] {
        assert_rejected(
            ra.patch_status("wang", &mp, &conditions(&[condition(kind, "True")]))
                .await,
            403,
            "user ra-system requested this certificate and may not approve or deny it",
        );
    }
    // Someone else's request it may approve.
    let mut other = request("lee");
    other.metadata.annotations = None;
    f.requests(f.env.admin()).create(&pp, &other).await.unwrap();
    ra.patch_status("lee", &mp, &conditions(&[condition("Approved", "True")]))
        .await
        .unwrap();
    f.cleanup().await;
}

/// Officers start and stop issuance and change nothing else of a CA;
/// administrators configure the CA and do not start or stop issuance.
#[tokio::test]
async fn officer_changes_only_issuance() {
    let f = Fixture::new().await;
    let pp = PostParams::default();
    let mp = PatchParams::default();
    let admin1 = f.cas(f.user("admin-1", &["chop:administrators"]).await);
    let officer = f.cas(f.token_user("officer-1").await);
    let ca: DynamicObject =
        serde_json::from_value(example("certificateauthority-root.yaml")).unwrap();

    // RBAC: officers do not create CAs; administrators do.
    assert_rejected(
        officer.create(&pp, &ca).await,
        403,
        r#"User "officer-1" cannot create resource "certificateauthorities""#,
    );
    admin1.create(&pp, &ca).await.unwrap();

    // The officer suspends and resumes issuance.
    let issuance = |state: &str| Patch::Merge(json!({"spec": {"issuance": state}}));
    let suspended = officer
        .patch("moica-root", &mp, &issuance("Suspended"))
        .await
        .unwrap();
    assert_eq!(suspended.data["spec"]["issuance"], "Suspended");

    // ... but changes nothing else: the subject is immutable for everyone (CRD),
    // other fields are the administrator's (chop-issuance-field).
    assert_rejected(
        officer
            .patch(
                "moica-root",
                &mp,
                &Patch::Merge(json!({"spec": {"subject": {"commonName": "evil"}}})),
            )
            .await,
        422,
        "subject is immutable",
    );
    let phrase = "user officer-1 may change only spec.issuance of CA moica-root";
    assert_rejected(
        officer
            .patch(
                "moica-root",
                &mp,
                &Patch::Merge(json!({"spec": {"validity": "1h"}})),
            )
            .await,
        403,
        phrase,
    );
    assert_rejected(
        officer
            .patch(
                "moica-root",
                &mp,
                &Patch::Merge(json!({"spec": {"issuance": "Enabled", "validity": "1h"}})),
            )
            .await,
        403,
        phrase,
    );
    assert_rejected(
        officer
            .patch(
                "moica-root",
                &mp,
                &Patch::Merge(json!({"metadata": {"labels": {"tier": "x"}}})),
            )
            .await,
        403,
        phrase,
    );

    // The administrator changes the configuration but not issuance.
    let changed = admin1
        .patch(
            "moica-root",
            &mp,
            &Patch::Merge(json!({"spec": {"validity": "87600h"}})),
        )
        .await
        .unwrap();
    assert_eq!(changed.data["spec"]["validity"], "87600h");
    assert_rejected(
        admin1.patch("moica-root", &mp, &issuance("Enabled")).await,
        403,
        "user admin-1 may not start or stop issuance of CA moica-root",
    );
    let resumed = officer
        .patch("moica-root", &mp, &issuance("Enabled"))
        .await
        .unwrap();
    assert_eq!(resumed.data["spec"]["issuance"], "Enabled");
    f.cleanup().await;
}

/// CPS §5.2.4: administrator, officer and auditor are mutually exclusive and the
/// controller holds no other role: enforced when such a principal acts, and for
/// service accounts already when the second role is bound.
#[tokio::test]
async fn trusted_roles_are_kept_apart() {
    let f = Fixture::new().await;
    let ns = f.ns().to_owned();
    let pp = PostParams::default();
    let mp = PatchParams::default();
    f.requests(f.token_user("ra-system").await)
        .create(&pp, &request("wang"))
        .await
        .unwrap();

    // An officer who is also an auditor cannot act as an officer.
    let dual = f.requests(f.user("dual-1", &["chop:officers", "chop:auditors"]).await);
    assert_rejected(
        dual.patch_status("wang", &mp, &conditions(&[condition("Approved", "True")]))
            .await,
        403,
        &format!("user dual-1 holds the trusted roles officer and auditor in namespace {ns}"),
    );
    // Nor an officer who is also the physical-security controller.
    let witness = f.requests(
        f.user("witness-1", &["chop:officers", "chop:controllers"])
            .await,
    );
    assert_rejected(
        witness
            .patch_status("wang", &mp, &conditions(&[condition("Approved", "True")]))
            .await,
        403,
        "holds the trusted roles controller and officer",
    );
    // Whoever holds every permission holds every role: not a CA identity.
    f.bind_user("ClusterRole", "cluster-admin", "root-1").await;
    f.wait_allowed("root-1", &[], "assume", "trustedroles", "officer")
        .await;
    let root = f.requests(f.user("root-1", &[]).await);
    assert_rejected(
        root.patch_status("wang", &mp, &conditions(&[condition("Approved", "True")]))
            .await,
        403,
        "user root-1 holds the trusted roles administrator and officer",
    );
    // Officer and operator may be combined (§5.2.4 rule 1).
    let on_call = f.requests(
        f.user("on-call-1", &["chop:officers", "chop:operators"])
            .await,
    );
    on_call
        .patch_status("wang", &mp, &conditions(&[condition("Approved", "True")]))
        .await
        .unwrap();

    // Service accounts: the second conflicting binding is refused outright.
    let sa: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "robot"}})).unwrap();
    Api::<ServiceAccount>::namespaced(f.env.admin(), &ns)
        .create(&pp, &sa)
        .await
        .unwrap();
    let robot = json!({"kind": "ServiceAccount", "name": "robot", "namespace": ns});
    f.bind("ClusterRole", "chop:officer", robot.clone()).await;
    f.wait_allowed(
        &format!("system:serviceaccount:{ns}:robot"),
        &[
            "system:serviceaccounts",
            &format!("system:serviceaccounts:{ns}"),
        ],
        "assume",
        "trustedroles",
        "officer",
    )
    .await;
    let binding = |role: &str| -> RoleBinding {
        serde_json::from_value(json!({
            "metadata": {"name": format!("robot-{}", role.replace(':', "-")), "namespace": ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [robot]
        }))
        .unwrap()
    };
    let bindings = Api::<RoleBinding>::namespaced(f.env.admin(), &ns);
    let phrase = format!(
        "service account {ns}/robot already holds a trusted role that CPS 5.2.4 keeps apart from auditor"
    );
    until_rejected("chop-role-binding-separation", &phrase, || async {
        bindings.create(&dry_post(), &binding("chop:auditor")).await
    })
    .await;
    assert_rejected(
        bindings.create(&pp, &binding("chop:auditor")).await,
        403,
        &phrase,
    );
    assert_rejected(
        bindings.create(&pp, &binding("chop:controller")).await,
        403,
        "keeps apart from controller",
    );
    bindings
        .create(&pp, &binding("chop:operator"))
        .await
        .unwrap();
    f.cleanup().await;
}

/// `manifests/kustomization.yaml` lists every file of `manifests/rbac`,
/// `manifests/policies` and `crds/yaml`, so what the tests apply is what ships.
#[test]
fn kustomization_lists_every_manifest() {
    let root = repo();
    let kustomization: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(root.join("manifests/kustomization.yaml")).unwrap(),
    )
    .unwrap();
    let mut listed: Vec<String> = kustomization["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .filter(|f| f != "deploy")
        .collect();
    listed.sort();
    let mut present = Vec::new();
    for (dir, prefix) in [
        ("manifests/rbac", "rbac/"),
        ("manifests/policies", "policies/"),
        ("manifests/crds", "crds/"),
    ] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            if name.ends_with(".yaml") {
                present.push(format!("{prefix}{name}"));
            }
        }
    }
    present.sort();
    assert_eq!(listed, present);
}

/// GitOps (Flux, Argo CD) and `kubectl apply --server-side` write with PATCH:
/// every kind a role may create, that role can also apply server-side, and
/// applying again is a no-op; the spec's immutability still holds.
#[tokio::test]
async fn each_role_applies_what_it_creates_server_side() {
    let f = Fixture::new().await;
    let apply = |who: &str| PatchParams::apply(&format!("gitops-{who}"));
    for (user, groups, kind, plural, name) in [
        (
            "officer-1",
            &["chop:officers"][..],
            "Revocation",
            "revocations",
            "rev-by-officer",
        ),
        (
            "officer-1",
            &["chop:officers"][..],
            "Suspension",
            "suspensions",
            "hold-by-officer",
        ),
        (
            "ra-system",
            &["chop:registration-authorities"][..],
            "Revocation",
            "revocations",
            "rev-by-ra",
        ),
        (
            "ra-system",
            &["chop:registration-authorities"][..],
            "Suspension",
            "suspensions",
            "hold-by-ra",
        ),
        (
            "ra-system",
            &["chop:registration-authorities"][..],
            "CertificateRequest",
            "certificaterequests",
            "req-by-ra",
        ),
    ] {
        let client = f.user(user, groups).await;
        let api: Api<DynamicObject> = Api::namespaced_with(client, f.ns(), &resource(kind, plural));
        let spec = match kind {
            "Revocation" => {
                json!({"caRef": {"name": "moica"}, "certificateRequestRef": {"name": "wang"},
                                   "reason": "keyCompromise", "requester": "Subscriber"})
            }
            "Suspension" => {
                json!({"caRef": {"name": "moica"}, "certificateRequestRef": {"name": "wang"},
                                   "requester": "Subscriber", "resumed": false})
            }
            _ => request(name).data["spec"].clone(),
        };
        let body = json!({"apiVersion": "chop.dev/v1alpha1", "kind": kind,
                          "metadata": {"name": name}, "spec": spec});
        let made = eventually(&format!("{user} applies a {kind}"), || {
            let (api, body) = (api.clone(), body.clone());
            async move {
                api.patch(name, &apply(user), &Patch::Apply(&body))
                    .await
                    .map_err(|e| e.to_string())
            }
        })
        .await;
        // Applying the same again changes nothing.
        let again = api
            .patch(name, &apply(user), &Patch::Apply(&body))
            .await
            .unwrap_or_else(|e| panic!("{user} re-applying its {kind}: {e}"));
        assert_eq!(
            again.metadata.resource_version, made.metadata.resource_version,
            "{kind}"
        );
        // A changed identity is refused by the CRD's immutability rules.
        let mut changed = body.clone();
        changed["spec"]["caRef"]["name"] = json!("another-ca");
        let err = api_error(api.patch(name, &apply(user), &Patch::Apply(&changed)).await);
        assert_eq!(err.code, 422, "{kind}: {}", err.message);
        assert!(
            err.message.contains("immutable") || err.message.contains("cannot be changed"),
            "{kind}: {}",
            err.message
        );
    }
    // The RA applies its Suspension server-side, but lifting the hold through the
    // same apply is an officer's decision (chop-suspension-resume, CPS 4.9.17).
    let resume = |name: &str| {
        json!({"apiVersion": "chop.dev/v1alpha1", "kind": "Suspension", "metadata": {"name": name},
               "spec": {"caRef": {"name": "moica"}, "certificateRequestRef": {"name": "wang"},
                        "requester": "Subscriber", "resumed": true}})
    };
    let ra = f
        .user("ra-system", &["chop:registration-authorities"])
        .await;
    let holds: Api<DynamicObject> =
        Api::namespaced_with(ra, f.ns(), &resource("Suspension", "suspensions"));
    let err = api_error(
        holds
            .patch(
                "hold-by-ra",
                &apply("ra-system"),
                &Patch::Apply(&resume("hold-by-ra")),
            )
            .await,
    );
    assert_eq!(err.code, 403, "{}", err.message);
    assert!(
        err.message.contains("chop-suspension-resume"),
        "{}",
        err.message
    );
    assert!(
        err.message.contains("officer's decision"),
        "{}",
        err.message
    );
    let officer = f.user("officer-1", &["chop:officers"]).await;
    let holds: Api<DynamicObject> =
        Api::namespaced_with(officer, f.ns(), &resource("Suspension", "suspensions"));
    // (`kubectl chop resume`: a merge patch; the RA's apply owns the other fields.)
    let resumed = holds
        .patch(
            "hold-by-ra",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"resumed": true}})),
        )
        .await
        .unwrap_or_else(|e| panic!("the officer resumes the RA's hold: {e}"));
    assert_eq!(resumed.data["spec"]["resumed"], json!(true));
}

/// Issue 10: the trail's approvedBy, deniedBy, acceptedBy, revokedBy, heldBy
/// and resumedBy are what the API server authenticated, stamped in the very
/// write that decided (policies chop-requested-by, chop-decided-by,
/// chop-accepted-by, chop-resumed-by), whatever field manager or stamp the
/// client sends; nobody (another officer, the RA, a cluster admin) sets a stamp
/// outside that write or changes it afterwards (chop-acted-by).
#[tokio::test]
async fn decisions_are_stamped_with_the_authenticated_user() {
    const FORGED: &str = "officer-2";
    let f = Fixture::new().await;
    let pp = PostParams::default();
    let mp = PatchParams::default();
    // A field manager is the client's choice: it names someone else.
    let forged = PatchParams {
        field_manager: Some(FORGED.into()),
        ..PatchParams::default()
    };
    let ra_client = f
        .user("ra-system", &["chop:registration-authorities"])
        .await;
    let forged_post = PostParams {
        field_manager: Some(FORGED.into()),
        ..PostParams::default()
    };
    let ra = f.requests(ra_client.clone());
    let officer = f.requests(f.user("officer-1", &["chop:officers"]).await);
    let officer2 = f.requests(f.user(FORGED, &["chop:officers"]).await);
    let admin = f.requests(f.env.admin());
    for name in ["wang", "lee", "zhao"] {
        ra.create(&pp, &request(name)).await.unwrap();
    }

    // The decision, under a forged field manager and a forged decidedBy.
    for (name, kind) in [("wang", "Approved"), ("lee", "Denied")] {
        let decided = officer
            .patch_status(
                name,
                &forged,
                &Patch::Merge(json!({"status": {"decidedBy": FORGED,
                    "conditions": [condition(kind, "True")]}})),
            )
            .await
            .unwrap();
        assert_eq!(decided.data["status"]["decidedBy"], "officer-1", "{kind}");
    }
    // Afterwards nobody changes or removes it.
    for (who, api) in [("another officer", &officer2), ("the admin", &admin)] {
        for value in [json!(FORGED), Value::Null] {
            let err = api_error(
                api.patch_status(
                    "wang",
                    &mp,
                    &Patch::Merge(json!({"status": {"decidedBy": value}})),
                )
                .await,
            );
            assert_eq!(err.code, 422, "{who}: {err:?}");
            assert!(
                err.message.contains("chop-acted-by")
                    && err
                        .message
                        .contains("written with the decision only and is immutable"),
                "{who}: {}",
                err.message
            );
        }
    }
    // Nor does anyone set it without deciding.
    assert_rejected(
        officer
            .patch_status(
                "zhao",
                &mp,
                &Patch::Merge(json!({"status": {"decidedBy": "officer-1"}})),
            )
            .await,
        422,
        "written with the decision only",
    );
    let stamp = |o: &DynamicObject, key: &str| {
        o.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(key).cloned())
    };
    assert_eq!(
        officer.get("wang").await.unwrap().data["status"]["decidedBy"],
        "officer-1"
    );

    // The acceptance: stamped as the RA, not as the forged name.
    let annotate = |key: &str, value: Value| json!({"metadata": {"annotations": {key: value}}});
    assert_rejected(
        ra.patch(
            "zhao",
            &mp,
            &Patch::Merge(annotate(ACCEPTED_BY, json!("ra-system"))),
        )
        .await,
        422,
        "written with spec.accepted only",
    );
    let mut accept = annotate(ACCEPTED_BY, json!(FORGED));
    accept["spec"] = json!({"accepted": true});
    let accepted = ra
        .patch("wang", &forged, &Patch::Merge(accept))
        .await
        .unwrap();
    assert_eq!(stamp(&accepted, ACCEPTED_BY).as_deref(), Some("ra-system"));
    for api in [&ra, &admin] {
        for value in [json!(FORGED), Value::Null] {
            assert_rejected(
                api.patch("wang", &mp, &Patch::Merge(annotate(ACCEPTED_BY, value)))
                    .await,
                422,
                "written with spec.accepted only and is immutable",
            );
        }
    }

    // A hold and a revocation, created by the RA under a forged name.
    let holds: Api<DynamicObject> = Api::namespaced_with(
        ra_client.clone(),
        f.ns(),
        &resource("Suspension", "suspensions"),
    );
    let revocations: Api<DynamicObject> =
        Api::namespaced_with(ra_client, f.ns(), &resource("Revocation", "revocations"));
    let made = |kind: &str, extra: Value| -> DynamicObject {
        let mut spec = json!({"caRef": {"name": "moica"}, "certificateRequestRef": {"name": "wang"},
                              "requester": "Subscriber"});
        if kind == "Revocation" {
            spec["reason"] = json!("keyCompromise");
        }
        let mut annotations = json!({REQUESTED_BY: FORGED});
        if let Value::Object(m) = extra {
            annotations.as_object_mut().unwrap().extend(m);
        }
        serde_json::from_value(json!({"apiVersion": "chop.dev/v1alpha1", "kind": kind,
            "metadata": {"name": "by-ra", "annotations": annotations}, "spec": spec}))
        .unwrap()
    };
    // (Who resumes is set only by the write that resumes.)
    assert_rejected(
        holds
            .create(
                &forged_post,
                &made("Suspension", json!({RESUMED_BY: "ra-system"})),
            )
            .await,
        422,
        "written with spec.resumed only",
    );
    let hold = holds
        .create(&forged_post, &made("Suspension", Value::Null))
        .await
        .unwrap();
    assert_eq!(stamp(&hold, REQUESTED_BY).as_deref(), Some("ra-system"));
    let rev = revocations
        .create(&forged_post, &made("Revocation", Value::Null))
        .await
        .unwrap();
    assert_eq!(stamp(&rev, REQUESTED_BY).as_deref(), Some("ra-system"));
    let admin_holds: Api<DynamicObject> = Api::namespaced_with(
        f.env.admin(),
        f.ns(),
        &resource("Suspension", "suspensions"),
    );
    let admin_revocations: Api<DynamicObject> = Api::namespaced_with(
        f.env.admin(),
        f.ns(),
        &resource("Revocation", "revocations"),
    );
    for api in [&admin_holds, &admin_revocations] {
        assert_rejected(
            api.patch(
                "by-ra",
                &mp,
                &Patch::Merge(annotate(REQUESTED_BY, json!(FORGED))),
            )
            .await,
            422,
            "is immutable",
        );
    }

    // The officer lifts the hold under a forged name: stamped as the officer.
    let officer_holds: Api<DynamicObject> = Api::namespaced_with(
        f.user("officer-1", &["chop:officers"]).await,
        f.ns(),
        &resource("Suspension", "suspensions"),
    );
    let mut resume = annotate(RESUMED_BY, json!(FORGED));
    resume["spec"] = json!({"resumed": true});
    let resumed = officer_holds
        .patch("by-ra", &forged, &Patch::Merge(resume))
        .await
        .unwrap();
    assert_eq!(stamp(&resumed, RESUMED_BY).as_deref(), Some("officer-1"));
    assert_eq!(stamp(&resumed, REQUESTED_BY).as_deref(), Some("ra-system"));
    for api in [&officer_holds, &admin_holds] {
        assert_rejected(
            api.patch(
                "by-ra",
                &mp,
                &Patch::Merge(annotate(RESUMED_BY, json!(FORGED))),
            )
            .await,
            422,
            "written with spec.resumed only and is immutable",
        );
    }
    f.cleanup().await;
}

/// Who changed a CA's or CRL schedule's configuration (`changedBy` of the
/// trail's `ca.changed`/`crlschedule.changed`) is the user the API server
/// authenticated, stamped by chop-changed-by on the write that creates the
/// object or changes its spec, whatever field manager or annotation the client
/// sends; nobody moves the stamp without changing the spec; a GitOps re-apply
/// of the same spec keeps it.
#[tokio::test]
async fn configuration_changes_are_stamped_with_the_authenticated_user() {
    const CHANGED_BY: &str = "chop.dev/changed-by";
    let f = Fixture::new().await;
    let admins = &["chop:administrators"][..];
    let amy = f.user("admin-amy", admins).await;
    let bob = f.user("admin-bob", admins).await;
    let schedules = |c: Client| -> Api<DynamicObject> {
        Api::namespaced_with(c, f.ns(), &resource("CRLSchedule", "crlschedules"))
    };
    let stamp = |o: &DynamicObject| {
        o.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(CHANGED_BY))
            .cloned()
    };
    let mut body = example("crlschedule.yaml");
    body["metadata"]["name"] = json!("stamped");
    // A forged annotation (and field manager) on creation.
    body["metadata"]["annotations"] = json!({CHANGED_BY: "admin-bob"});
    let apply = |who: &str| PatchParams::apply(&format!("gitops-{who}")).force();
    let made = eventually("chop-changed-by stamps the creator", || {
        let (api, body) = (schedules(amy.clone()), body.clone());
        async move {
            let made = api
                .patch(
                    "stamped",
                    &PatchParams::apply("admin-bob"),
                    &Patch::Apply(&body),
                )
                .await
                .map_err(|e| e.to_string())?;
            match stamp(&made).as_deref() {
                Some("admin-amy") => Ok(made),
                other => Err(format!("changed-by {other:?}")),
            }
        }
    })
    .await;
    // GitOps re-applies the same spec (without the annotation): a no-op.
    let mut plain = body.clone();
    plain["metadata"]["annotations"] = json!({});
    let again = schedules(amy.clone())
        .patch("stamped", &apply("admin-amy"), &Patch::Apply(&plain))
        .await
        .unwrap();
    assert_eq!(stamp(&again).as_deref(), Some("admin-amy"));
    let _ = made;
    // Another administrator changes the spec, claiming to be amy.
    let changed = schedules(bob.clone())
        .patch(
            "stamped",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {CHANGED_BY: "admin-amy"}},
                                 "spec": {"interval": "12h"}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(stamp(&changed).as_deref(), Some("admin-bob"));
    // Moving the stamp without changing the spec is refused, to anyone (once
    // chop-changed-by's validation is in force: a dry run first).
    until_rejected("chop-changed-by", "chop-changed-by", || {
        let api = schedules(amy.clone());
        async move {
            api.patch(
                "stamped",
                &dry_patch(),
                &Patch::Merge(json!({"metadata": {"annotations": {CHANGED_BY: "x"}}})),
            )
            .await
        }
    })
    .await;
    for client in [amy.clone(), f.env.admin()] {
        assert_rejected(
            schedules(client)
                .patch(
                    "stamped",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"annotations": {CHANGED_BY: "admin-amy"}}})),
                )
                .await,
            422,
            "chop-changed-by",
        );
    }
    let now = schedules(f.env.admin()).get("stamped").await.unwrap();
    assert_eq!(stamp(&now).as_deref(), Some("admin-bob"));
}
