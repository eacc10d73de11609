//! Role separation, cell by cell (CPS §5.2, issue 10): every trusted role, the RA
//! system, an unbound user and the chop-controller service account, each as a
//! distinct user, tries every operation on a real kube-apiserver running the
//! shipped `manifests/` (RBAC and admission policies). Each cell asserts allowed,
//! or denied with the API server's own message: RBAC's `User "u" cannot VERB
//! resource "R"`, or the named ValidatingAdmissionPolicy's refusal, or the CRD's.
//!
//! [`MATRIX`] is the single source: `matrix_is_the_documented_one` renders it as
//! Markdown and compares it with the block between `<!-- role-matrix:begin -->` and
//! `<!-- role-matrix:end -->` in docs/roles.md (`CHOP_UPDATE_DOCS=1` rewrites the
//! block), so the documentation cannot drift from what the API server does.
//!
//! One fixture: the objects each operation acts on are set up once; every write of
//! the matrix is a dry run (authentication, RBAC, admission policies and schema
//! validation all run, nothing is stored), so the cells are independent and the
//! matrix takes seconds.
//!
//! `api_audit_log_names_who_approved` shows the other half of "who did this?":
//! the plane's API audit log (e2e/audit-policy.yaml) records an officer's
//! approval, and an auditor's refused attempt, under their user names.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use e2e::{TestEnv, eventually};
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::Client;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
};
use kube::core::GroupVersionKind;
use serde_json::{Value, json};

/// Label put on this file's namespaces; the policy bindings select it.
const TEST_LABEL: &str = "chop.dev/e2e-role-matrix";
const FIELD_MANAGER: &str = "chop-e2e-role-matrix";
/// Policy bindings are renamed `<binding>-role-matrix` (the plane may be shared).
const BINDING_SUFFIX: &str = "role-matrix";
const REQUESTED_BY: &str = "chop.dev/requested-by";
/// The spec hash "the controller" publishes for the ceremony under approval.
const HASH: &str = "3333333333333333333333333333333333333333333333333333333333333333";
const DOC_BEGIN: &str = "<!-- role-matrix:begin -->";
const DOC_END: &str = "<!-- role-matrix:end -->";

/// Group → ClusterRole, bound in the test namespace.
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

/// A column of the matrix: who acts.
struct Actor {
    /// Column heading in docs/roles.md.
    heading: &'static str,
    /// User name (a static-token user of the plane, or minted); empty for the
    /// chop-controller service account, whose name depends on the namespace.
    user: &'static str,
    /// Groups (for minted users; token users have theirs in tokens.csv).
    groups: &'static [&'static str],
    /// A static-token user of the plane (`e2e/controlplane.sh`).
    token: bool,
}

const ACTORS: [Actor; 8] = [
    Actor {
        heading: "Administrator",
        user: "chop-admin-1",
        groups: &[],
        token: true,
    },
    Actor {
        heading: "Officer",
        user: "officer-1",
        groups: &[],
        token: true,
    },
    Actor {
        heading: "Auditor",
        user: "auditor-1",
        groups: &[],
        token: true,
    },
    Actor {
        heading: "Operator",
        user: "operator-1",
        groups: &["chop:operators"],
        token: false,
    },
    Actor {
        heading: "Controller",
        user: "controller-1",
        groups: &[],
        token: true,
    },
    Actor {
        heading: "RA system",
        user: "ra-system",
        groups: &[],
        token: true,
    },
    Actor {
        heading: "unbound user",
        user: "nobody-1",
        groups: &[],
        token: false,
    },
    Actor {
        heading: "chop-controller SA",
        user: "",
        groups: &[],
        token: false,
    },
];

/// What the API server answers in one cell.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// Allowed.
    Y,
    /// 403 from RBAC: `User "u" cannot VERB resource "R"`.
    R,
    /// 403 from the named admission policy, whose message holds the phrase.
    P(&'static str, &'static str),
    /// 422 from the CRD's validation, whose message holds the phrase.
    V(&'static str),
    /// 422 from the named admission policy, whose message holds the phrase.
    I(&'static str, &'static str),
}
use Expect::{I, P, R, V, Y};

/// A row of the matrix: what is tried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    ListRequests,
    CreateCa,
    CreateRequest,
    CreateRevocation,
    CreateSuspension,
    CreateCrlSchedule,
    CreateGenerateCeremony,
    CreateActivateCeremony,
    ApproveRequest,
    DenyRequest,
    AcceptRequest,
    StampDecidedBy,
    StampAcceptedBy,
    DeleteRequest,
    ResumeSuspension,
    SwitchIssuance,
    ConfigureCa,
    CeremonyApproval(&'static str),
    DeleteCeremony,
    ListAuditSegments,
    CreateAuditSegment,
    LabelAuditSegment,
    EditAuditSegment,
    DeleteAuditSegment,
    DeleteExpiredAuditSegment,
    GetSecret,
    ListSecrets,
}

const KC: &str = "chop-key-ceremony";
const IF: &str = "chop-issuance-field";
const AS: &str = "chop-audit-segment";
const SR: &str = "chop-suspension-resume";
const NOT_HELD: &str = "does not hold the trusted role";
const AB: &str = "chop-acted-by";

/// The matrix. Columns: Administrator, Officer, Auditor, Operator, Controller,
/// RA system, unbound user, chop-controller service account ([`ACTORS`]).
#[rustfmt::skip]
const MATRIX: &[(Op, &str, [Expect; 8])] = &[
    (Op::ListRequests, "read CertificateRequests (`list`)",
        [Y, Y, Y, Y, Y, Y, R, Y]),
    (Op::CreateCa, "create a CertificateAuthority",
        [Y, R, R, R, R, R, R, R]),
    (Op::CreateRequest, "create a CertificateRequest",
        [R, R, R, R, R, Y, R, Y]),
    (Op::CreateRevocation, "create a Revocation",
        [R, Y, R, R, R, Y, R, R]),
    (Op::CreateSuspension, "create a Suspension",
        [R, Y, R, R, R, Y, R, R]),
    (Op::CreateCrlSchedule, "create a CRLSchedule",
        [Y, R, R, R, R, R, R, R]),
    (Op::CreateGenerateCeremony, "create a KeyCeremony (Generate, Backup, Restore, Destroy)",
        [Y, P(KC, "are created by an administrator"), R, R, R, R, R, R]),
    (Op::CreateActivateCeremony, "create a KeyCeremony (Activate, Deactivate)",
        [P(KC, "are created by an officer"), Y, R, R, R, R, R, R]),
    (Op::ApproveRequest, "approve a CertificateRequest (status `Approved`)",
        [R, Y, R, R, R, R, R, Y]),
    (Op::DenyRequest, "deny a CertificateRequest (status `Denied`)",
        [R, Y, R, R, R, R, R, Y]),
    (Op::AcceptRequest, "set `spec.accepted` of a CertificateRequest",
        [R, R, R, R, R, Y, R, R]),
    (Op::StampDecidedBy, "set `status.decidedBy` (who decided) without deciding",
        [R, I(AB, "with the decision only"), R, R, R, R, R, I(AB, "with the decision only")]),
    (Op::StampAcceptedBy, "set the `chop.dev/accepted-by` annotation without accepting",
        [R, R, R, R, R, I(AB, "with spec.accepted only"), R, R]),
    (Op::DeleteRequest, "delete a CertificateRequest",
        [R, R, R, R, R, R, R, Y]),
    (Op::ResumeSuspension, "lift a Suspension (`spec.resumed`)",
        [R, Y, R, R, R, P(SR, "officer's decision"), R, P(SR, "officer's decision")]),
    (Op::SwitchIssuance, "change a CA's `spec.issuance` (start/stop issuance)",
        [P(IF, "(officers only"), Y, R, R, R, R, R, P(IF, "(officers only")]),
    (Op::ConfigureCa, "change a CA's configuration (`spec.validity`)",
        [Y, P(IF, "may change only spec.issuance"), R, R, R, R, R, P(IF, "may change only spec.issuance")]),
    (Op::CeremonyApproval("Administrator"), "approve a KeyCeremony as Administrator",
        [Y, P(KC, NOT_HELD), P(KC, NOT_HELD), R, P(KC, NOT_HELD), R, R, R]),
    (Op::CeremonyApproval("Officer"), "approve a KeyCeremony as Officer",
        [P(KC, NOT_HELD), Y, P(KC, NOT_HELD), R, P(KC, NOT_HELD), R, R, R]),
    (Op::CeremonyApproval("Auditor"), "approve a KeyCeremony as Auditor",
        [P(KC, NOT_HELD), P(KC, NOT_HELD), Y, R, P(KC, NOT_HELD), R, R, R]),
    (Op::CeremonyApproval("Controller"), "approve a KeyCeremony as Controller (witness)",
        [P(KC, NOT_HELD), P(KC, NOT_HELD), P(KC, NOT_HELD), R, Y, R, R, R]),
    (Op::DeleteCeremony, "withdraw (delete) a KeyCeremony waiting for its quorum",
        [Y, R, R, R, R, R, R, R]),
    (Op::ListAuditSegments, "read AuditSegments (the audit trail)",
        [R, R, Y, R, R, R, R, Y]),
    (Op::CreateAuditSegment, "create an AuditSegment",
        [R, R, R, R, R, R, R, Y]),
    (Op::LabelAuditSegment, "change an AuditSegment's labels",
        [R, R, R, R, R, R, R, Y]),
    (Op::EditAuditSegment, "change an AuditSegment's records",
        [R, R, R, R, R, R, R, V("an audit segment is immutable")]),
    (Op::DeleteAuditSegment, "delete an AuditSegment within retention",
        [R, R, P(AS, "not yet past its retention period"), R, R, R, R, R]),
    (Op::DeleteExpiredAuditSegment, "delete an AuditSegment labelled `chop.dev/retention-expired=true`",
        [R, R, Y, R, R, R, R, R]),
    (Op::GetSecret, "read a Secret (`get`)",
        [R, R, R, R, R, R, R, Y]),
    (Op::ListSecrets, "list Secrets",
        [R, R, R, R, R, R, R, R]),
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn gvr(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("chop.dev", "v1alpha1", kind), plural)
}

fn example(file: &str) -> Value {
    serde_saphyr::from_str(&std::fs::read_to_string(repo().join("examples").join(file)).unwrap())
        .unwrap()
}

fn object(doc: Value) -> DynamicObject {
    serde_json::from_value(doc).unwrap()
}

fn dry_post() -> PostParams {
    PostParams {
        dry_run: true,
        ..PostParams::default()
    }
}

fn dry_patch() -> PatchParams {
    PatchParams {
        dry_run: true,
        ..PatchParams::default()
    }
}

fn decision(kind: &str) -> Patch<Value> {
    Patch::Merge(json!({"status": {"conditions": [{
        "type": kind, "status": "True", "reason": "RoleMatrix", "message": "set by the role matrix",
        "lastTransitionTime": "2026-12-03T00:00:00Z"
    }]}}))
}

/// An AuditSegment with one record (its content is not checked by the API server).
fn segment(index: u64) -> DynamicObject {
    object(json!({
        "apiVersion": "chop.dev/v1alpha1", "kind": "AuditSegment",
        "metadata": {"name": format!("audit-{index:012}")},
        "spec": segment_spec(index)
    }))
}

/// The spec of [`segment`].
fn segment_spec(index: u64) -> Value {
    json!({
        "index": index, "firstSequence": index, "treeSize": index + 1,
        "records": [{"sequence": index, "time": "2026-12-03T00:00:00.000000Z",
                     "event": "controller.start", "outcome": "observed",
                     "previousHash": "0".repeat(64)}],
        "frontier": [], "rootHash": "0".repeat(64), "previousSegmentHash": "0".repeat(64),
        "signedAt": "2026-12-03T00:00:00Z", "writer": "role-matrix", "keyId": "0".repeat(64),
        "signatureAlgorithm": "ecdsa-p256-sha256", "signature": "AA=="
    })
}

/// Names of the objects the operations act on.
const CA: &str = "moica";
const REQUEST: &str = "wang";
const CEREMONY: &str = "gen-root";
const KEPT_SEGMENT: &str = "audit-000000000000";
const EXPIRED_SEGMENT: &str = "audit-000000000001";
const SECRET: &str = "moica-hsm-pin";
const SUSPENSION: &str = "wang-hold";

struct Fixture {
    env: TestEnv,
}

impl Fixture {
    /// The namespace, the manifests, the bindings, and the objects every
    /// operation acts on.
    async fn new() -> Self {
        let crds: Vec<_> = crds::all().into_iter().map(|(_, c)| c).collect();
        let env = TestEnv::with_crds(&crds).await.unwrap();
        let admin = env.admin();
        Api::<Namespace>::all(admin.clone())
            .patch(
                env.namespace(),
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
            Some(BINDING_SUFFIX),
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
        f.wait_allowed(&f.sa_name(), &[], "write", "controllerstatus", "")
            .await;
        f.set_up_objects().await;
        f
    }

    fn ns(&self) -> &str {
        self.env.namespace()
    }

    fn sa_name(&self) -> String {
        format!("system:serviceaccount:{}:chop-controller", self.ns())
    }

    fn api(&self, client: Client, kind: &str, plural: &str) -> Api<DynamicObject> {
        Api::namespaced_with(client, self.ns(), &gvr(kind, plural))
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
        let review: SubjectAccessReview = serde_json::from_value(json!({
            "spec": {"user": user, "groups": groups, "resourceAttributes": {
                "namespace": self.ns(), "verb": verb, "group": "chop.dev",
                "resource": res, "name": name}}
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

    /// Deletes the namespace. chop-audit-segment refuses everyone the deletion
    /// of audit segments not past retention, the cluster admin included, so the
    /// namespace is first taken out of the policy bindings' selector.
    async fn cleanup(self) {
        let admin = self.env.admin();
        Api::<Namespace>::all(admin.clone())
            .patch(
                self.ns(),
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {TEST_LABEL: null}}})),
            )
            .await
            .unwrap();
        let segments = self.api(admin, "AuditSegment", "auditsegments");
        eventually("the policies to leave the namespace", || async {
            segments
                .delete(KEPT_SEGMENT, &DeleteParams::default().dry_run())
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        })
        .await;
        self.env.cleanup().await.unwrap();
    }

    /// The client of one column.
    async fn client(&self, actor: &Actor) -> Client {
        if actor.user.is_empty() {
            let ns_group = format!("system:serviceaccounts:{}", self.ns());
            self.env
                .plane()
                .client_impersonating(
                    &self.sa_name(),
                    &["system:serviceaccounts", &ns_group, "system:authenticated"],
                )
                .await
                .unwrap()
        } else if actor.token {
            self.env.token_user(actor.user).await.unwrap()
        } else {
            self.env.user(actor.user, actor.groups).await.unwrap()
        }
    }

    /// The user name the API server sees for a column.
    fn user_name(&self, actor: &Actor) -> String {
        if actor.user.is_empty() {
            self.sa_name()
        } else {
            actor.user.to_owned()
        }
    }

    /// What every operation acts on, written as its real author: the CA and the
    /// HSM PIN Secret by the cluster admin, the request and a Suspension by the RA, the ceremony
    /// by another administrator (so nobody in the matrix approves their own) with
    /// its spec hash published, and two audit segments by the chop-controller
    /// service account, one marked past retention.
    async fn set_up_objects(&self) {
        let admin = self.env.admin();
        let pp = PostParams::default();
        let mut ca = example("certificateauthority-subordinate.yaml");
        ca["metadata"]["name"] = json!(CA);
        let cas = self.api(
            admin.clone(),
            "CertificateAuthority",
            "certificateauthorities",
        );
        eventually("the CA is created", || async {
            cas.create(&pp, &object(ca.clone()))
                .await
                .map_err(|e| e.to_string())
        })
        .await;
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": SECRET}, "stringData": {"pin": "not-a-real-pin"}
        }))
        .unwrap();
        Api::<Secret>::namespaced(admin.clone(), self.ns())
            .create(&pp, &secret)
            .await
            .unwrap();
        // The ceremony, created once chop-requested-by stamps its creator (the
        // mutating policy reaches the API server a moment after it is written).
        let admin2 = self.api(
            self.env.token_user("chop-admin-2").await.unwrap(),
            "KeyCeremony",
            "keyceremonies",
        );
        let mut ceremony = example("keyceremony-generate.yaml");
        ceremony["metadata"]["name"] = json!(CEREMONY);
        let ceremony = object(ceremony);
        eventually(
            "chop-requested-by stamps the ceremony's creator",
            || async {
                let made = admin2
                    .create(&dry_post(), &ceremony)
                    .await
                    .map_err(|e| e.to_string())?;
                match made
                    .metadata
                    .annotations
                    .unwrap_or_default()
                    .get(REQUESTED_BY)
                {
                    Some(who) if who == "chop-admin-2" => Ok(()),
                    other => Err(format!("annotation {other:?}")),
                }
            },
        )
        .await;
        admin2.create(&pp, &ceremony).await.unwrap();
        // The request, now that its creator is recorded too.
        let ra = self.env.token_user("ra-system").await.unwrap();
        let mut request = example("certificaterequest-signature.yaml");
        request["metadata"]["name"] = json!(REQUEST);
        self.api(ra.clone(), "CertificateRequest", "certificaterequests")
            .create(&pp, &object(request))
            .await
            .unwrap();
        let mut hold = example("suspension.yaml");
        hold["metadata"]["name"] = json!(SUSPENSION);
        hold["spec"]["certificateRequestRef"]["name"] = json!(REQUEST);
        self.api(ra, "Suspension", "suspensions")
            .create(&pp, &object(hold))
            .await
            .unwrap();
        let sa = self.client(&ACTORS[7]).await;
        self.api(sa.clone(), "KeyCeremony", "keyceremonies")
            .patch_status(
                CEREMONY,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"phase": "WaitingForQuorum", "specHash": HASH}})),
            )
            .await
            .unwrap();
        let segments = self.api(sa, "AuditSegment", "auditsegments");
        eventually("chop-controller writes two audit segments", || async {
            for index in [0, 1] {
                match segments.create(&pp, &segment(index)).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 409 => {}
                    Err(e) => return Err(e.to_string()),
                }
            }
            Ok(())
        })
        .await;
        segments
            .patch(
                EXPIRED_SEGMENT,
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"metadata": {"labels": {"chop.dev/retention-expired": "true"}}}),
                ),
            )
            .await
            .unwrap();
    }

    /// Performs `op` as `client` (every write a dry run). `Err` is the API error.
    async fn perform(&self, op: Op, user: &str, client: Client) -> Result<(), kube::Error> {
        let pp = dry_post();
        let create = |kind: &str, plural: &str, mut doc: Value| {
            doc["metadata"]["name"] = json!("role-matrix-new");
            let api = self.api(client.clone(), kind, plural);
            async move { api.create(&dry_post(), &object(doc)).await.map(drop) }
        };
        let cas = self.api(
            client.clone(),
            "CertificateAuthority",
            "certificateauthorities",
        );
        let requests = self.api(client.clone(), "CertificateRequest", "certificaterequests");
        let segments = self.api(client.clone(), "AuditSegment", "auditsegments");
        let secrets = Api::<Secret>::namespaced(client.clone(), self.ns());
        let dry_delete = DeleteParams::default().dry_run();
        match op {
            Op::ListRequests => requests.list(&ListParams::default()).await.map(drop),
            Op::CreateCa => {
                create(
                    "CertificateAuthority",
                    "certificateauthorities",
                    example("certificateauthority-subordinate.yaml"),
                )
                .await
            }
            Op::CreateRequest => {
                create(
                    "CertificateRequest",
                    "certificaterequests",
                    example("certificaterequest-signature.yaml"),
                )
                .await
            }
            Op::CreateRevocation => {
                create("Revocation", "revocations", example("revocation.yaml")).await
            }
            Op::CreateSuspension => {
                create("Suspension", "suspensions", example("suspension.yaml")).await
            }
            Op::CreateCrlSchedule => {
                create("CRLSchedule", "crlschedules", example("crlschedule.yaml")).await
            }
            Op::CreateGenerateCeremony | Op::CreateActivateCeremony => {
                let mut doc = example("keyceremony-generate.yaml");
                if op == Op::CreateActivateCeremony {
                    doc["spec"]["operation"] = json!("Activate");
                }
                create("KeyCeremony", "keyceremonies", doc).await
            }
            Op::ApproveRequest => requests
                .patch_status(REQUEST, &dry_patch(), &decision("Approved"))
                .await
                .map(drop),
            Op::DenyRequest => requests
                .patch_status(REQUEST, &dry_patch(), &decision("Denied"))
                .await
                .map(drop),
            Op::AcceptRequest => requests
                .patch(
                    REQUEST,
                    &dry_patch(),
                    &Patch::Merge(json!({"spec": {"accepted": true}})),
                )
                .await
                .map(drop),
            Op::StampDecidedBy => requests
                .patch_status(
                    REQUEST,
                    &dry_patch(),
                    &Patch::Merge(json!({"status": {"decidedBy": user}})),
                )
                .await
                .map(drop),
            Op::StampAcceptedBy => requests
                .patch(
                    REQUEST,
                    &dry_patch(),
                    &Patch::Merge(
                        json!({"metadata": {"annotations": {"chop.dev/accepted-by": "x"}}}),
                    ),
                )
                .await
                .map(drop),
            Op::DeleteRequest => requests.delete(REQUEST, &dry_delete).await.map(drop),
            Op::ResumeSuspension => self
                .api(client.clone(), "Suspension", "suspensions")
                .patch(
                    SUSPENSION,
                    &dry_patch(),
                    &Patch::Merge(json!({"spec": {"resumed": true}})),
                )
                .await
                .map(drop),
            Op::DeleteCeremony => self
                .api(client.clone(), "KeyCeremony", "keyceremonies")
                .delete(CEREMONY, &dry_delete)
                .await
                .map(drop),
            Op::SwitchIssuance => cas
                .patch(
                    CA,
                    &dry_patch(),
                    &Patch::Merge(json!({"spec": {"issuance": "Suspended"}})),
                )
                .await
                .map(drop),
            Op::ConfigureCa => cas
                .patch(
                    CA,
                    &dry_patch(),
                    &Patch::Merge(json!({"spec": {"validity": "1h"}})),
                )
                .await
                .map(drop),
            Op::CeremonyApproval(role) => {
                // As docs/ceremonies.md says: server-side apply of one entry, with
                // a field manager of that approval's own.
                let entry = json!({"user": user, "role": role, "specHash": HASH,
                                   "reason": "reviewed in the ceremony room"});
                let body = json!({
                    "apiVersion": "chop.dev/v1alpha1", "kind": "KeyCeremony",
                    "metadata": {"name": CEREMONY}, "spec": {"approvals": [entry]}
                });
                let manager = format!("approve-{}-{}", &HASH[..16], user.replace(':', "-"));
                self.api(client.clone(), "KeyCeremony", "keyceremonies")
                    .patch(
                        CEREMONY,
                        &PatchParams::apply(&manager).dry_run(),
                        &Patch::Apply(body),
                    )
                    .await
                    .map(drop)
            }
            Op::ListAuditSegments => segments.list(&ListParams::default()).await.map(drop),
            Op::CreateAuditSegment => segments.create(&pp, &segment(2)).await.map(drop),
            Op::LabelAuditSegment => segments
                .patch(
                    KEPT_SEGMENT,
                    &dry_patch(),
                    &Patch::Merge(json!({"metadata": {"labels": {"role-matrix": "edited"}}})),
                )
                .await
                .map(drop),
            Op::EditAuditSegment => segments
                .patch(
                    KEPT_SEGMENT,
                    &dry_patch(),
                    &Patch::Merge(json!({"spec": {"records": []}})),
                )
                .await
                .map(drop),
            Op::DeleteAuditSegment => segments.delete(KEPT_SEGMENT, &dry_delete).await.map(drop),
            Op::DeleteExpiredAuditSegment => segments
                .delete(EXPIRED_SEGMENT, &dry_delete)
                .await
                .map(drop),
            Op::GetSecret => secrets.get(SECRET).await.map(drop),
            Op::ListSecrets => secrets.list(&ListParams::default()).await.map(drop),
        }
    }
}

/// The verb and resource RBAC names when it refuses `op`.
fn rbac_words(op: Op) -> (&'static str, &'static str) {
    match op {
        Op::ListRequests => ("list", "certificaterequests"),
        Op::CreateCa => ("create", "certificateauthorities"),
        Op::CreateRequest => ("create", "certificaterequests"),
        Op::CreateRevocation => ("create", "revocations"),
        Op::CreateSuspension => ("create", "suspensions"),
        Op::CreateCrlSchedule => ("create", "crlschedules"),
        Op::CreateGenerateCeremony | Op::CreateActivateCeremony => ("create", "keyceremonies"),
        Op::ApproveRequest | Op::DenyRequest => ("patch", "certificaterequests/status"),
        Op::AcceptRequest | Op::StampAcceptedBy => ("patch", "certificaterequests"),
        Op::StampDecidedBy => ("patch", "certificaterequests/status"),
        Op::DeleteRequest => ("delete", "certificaterequests"),
        Op::ResumeSuspension => ("patch", "suspensions"),
        Op::DeleteCeremony => ("delete", "keyceremonies"),
        Op::SwitchIssuance | Op::ConfigureCa => ("patch", "certificateauthorities"),
        Op::CeremonyApproval(_) => ("patch", "keyceremonies"),
        Op::ListAuditSegments => ("list", "auditsegments"),
        Op::CreateAuditSegment => ("create", "auditsegments"),
        Op::LabelAuditSegment | Op::EditAuditSegment => ("patch", "auditsegments"),
        Op::DeleteAuditSegment | Op::DeleteExpiredAuditSegment => ("delete", "auditsegments"),
        Op::GetSecret => ("get", "secrets"),
        Op::ListSecrets => ("list", "secrets"),
    }
}

/// `None` when `result` is what `expect` says, else what was wrong.
fn check(op: Op, user: &str, expect: Expect, result: &Result<(), kube::Error>) -> Option<String> {
    let status = match result {
        Ok(()) => {
            return match expect {
                Y => None,
                _ => Some("allowed".to_owned()),
            };
        }
        Err(kube::Error::Api(status)) => status,
        Err(e) => return Some(format!("not an API answer: {e}")),
    };
    let answer = format!("{} {}", status.code, status.message);
    let ok = match expect {
        Y => false,
        R => {
            let (verb, resource) = rbac_words(op);
            status.code == 403
                && status.message.contains(&format!(
                    "User \"{user}\" cannot {verb} resource \"{resource}\""
                ))
        }
        P(policy, phrase) => {
            status.code == 403
                && status
                    .message
                    .contains(&format!("ValidatingAdmissionPolicy '{policy}'"))
                && status.message.contains(phrase)
        }
        V(phrase) => status.code == 422 && status.message.contains(phrase),
        I(policy, phrase) => {
            status.code == 422
                && status
                    .message
                    .contains(&format!("ValidatingAdmissionPolicy '{policy}'"))
                && status.message.contains(phrase)
        }
    };
    (!ok).then_some(answer)
}

/// Every cell of [`MATRIX`], as its user, on the real API server.
#[tokio::test]
async fn every_role_tries_every_operation() {
    let f = Fixture::new().await;
    let mut clients = Vec::new();
    for actor in &ACTORS {
        clients.push((f.user_name(actor), f.client(actor).await));
    }
    // RBAC and the policies reach the API server's caches a moment after they
    // are written: retry the cells that disagree for a while, then require one
    // whole pass in agreement (policy refusals in it prove each policy in force).
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut pending: Vec<(usize, usize)> = (0..MATRIX.len())
        .flat_map(|row| (0..ACTORS.len()).map(move |col| (row, col)))
        .collect();
    let mut final_pass = false;
    loop {
        let mut wrong = Vec::new();
        for &(row, col) in &pending {
            let (op, label, expects) = MATRIX[row];
            let (user, client) = &clients[col];
            let result = f.perform(op, user, client.clone()).await;
            if let Some(got) = check(op, user, expects[col], &result) {
                wrong.push((
                    (row, col),
                    format!("{label} as {user}: expected {:?}, got {got}", expects[col]),
                ));
            }
        }
        if wrong.is_empty() && final_pass {
            break;
        }
        if wrong.is_empty() {
            final_pass = true;
            pending = (0..MATRIX.len())
                .flat_map(|row| (0..ACTORS.len()).map(move |col| (row, col)))
                .collect();
            continue;
        }
        if Instant::now() > deadline {
            let report: Vec<_> = wrong.into_iter().map(|(_, w)| w).collect();
            panic!(
                "{} cells disagree with the matrix:\n{}",
                report.len(),
                report.join("\n")
            );
        }
        final_pass = false;
        pending = wrong.into_iter().map(|(cell, _)| cell).collect();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Beyond RBAC: an administrator and an officer who are also granted
    // `delete` and `patch` on auditsegments (a custom Role), and a cluster-admin
    // (wildcard rules), are still refused by chop-audit-segment: no deletion,
    // even of a segment past retention; no relabelling; no edit (the CRD).
    let admin = f.env.admin();
    let role: k8s_openapi::api::rbac::v1::Role = serde_json::from_value(json!({
        "metadata": {"name": "delete-auditsegments", "namespace": f.ns()},
        "rules": [{"apiGroups": ["chop.dev"], "resources": ["auditsegments"], "verbs": ["delete", "patch"]}]
    }))
    .unwrap();
    Api::<k8s_openapi::api::rbac::v1::Role>::namespaced(admin.clone(), f.ns())
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "delete-auditsegments", "namespace": f.ns()},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "delete-auditsegments"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "chop-admin-1"},
                     {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "officer-1"}]
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(admin.clone(), f.ns())
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    f.bind(
        "cluster-admin",
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "root-1"}),
    )
    .await;
    let dry_delete = DeleteParams::default().dry_run();
    for (who, client) in [
        ("chop-admin-1", clients[0].1.clone()),
        ("officer-1", clients[1].1.clone()),
        ("root-1", f.env.user("root-1", &[]).await.unwrap()),
    ] {
        let segments = f.api(client, "AuditSegment", "auditsegments");
        // cluster-admin holds every trusted-role marker, so chop-role-separation
        // may answer first; either refusal names the user.
        let audit_segment = format!(
            "ValidatingAdmissionPolicy 'chop-audit-segment' with binding \
             'chop-audit-segment-{BINDING_SUFFIX}' denied request: AuditSegment {}/{EXPIRED_SEGMENT} \
             is part of the audit trail (CPS 5.4.3): user {who} may not delete it; only an auditor \
             (chop:auditor) prunes",
            f.ns()
        );
        let separation = format!(
            "ValidatingAdmissionPolicy 'chop-role-separation' with binding \
             'chop-role-separation-{BINDING_SUFFIX}' denied request: user {who} holds the trusted roles"
        );
        eventually(&format!("{who} refused by the policies"), || async {
            match segments.delete(EXPIRED_SEGMENT, &dry_delete).await {
                Err(kube::Error::Api(s))
                    if s.code == 403
                        && (s.message.contains(&audit_segment)
                            || (who == "root-1" && s.message.contains(&separation))) =>
                {
                    Ok(())
                }
                other => Err(format!("{other:?}")),
            }
        })
        .await;
        if who == "root-1" {
            continue;
        }
        let relabel = segments
            .patch(
                EXPIRED_SEGMENT,
                &dry_patch(),
                &Patch::Merge(
                    json!({"metadata": {"labels": {"chop.dev/retention-expired": null}}}),
                ),
            )
            .await;
        let phrase = format!(
            "ValidatingAdmissionPolicy 'chop-audit-segment' with binding \
             'chop-audit-segment-{BINDING_SUFFIX}' denied request: AuditSegment {}/{EXPIRED_SEGMENT} \
             is part of the audit trail (CPS 5.4): user {who} may not change its labels, annotations \
             or finalizers",
            f.ns()
        );
        assert!(
            matches!(&relabel, Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains(&phrase)),
            "{who} relabelling: {relabel:?}"
        );
        let edit = segments
            .patch(
                KEPT_SEGMENT,
                &dry_patch(),
                &Patch::Merge(json!({"spec": {"records": []}})),
            )
            .await;
        assert!(
            matches!(&edit, Err(kube::Error::Api(s)) if s.code == 422
                && s.message.contains("an audit segment is immutable")),
            "{who} editing records: {edit:?}"
        );
    }
    // Nothing was changed by the dry runs: no object created or deleted, the
    // request undecided and as accepted as it was, the hold in force, the CA as
    // configured, the ceremony unapproved, both segments there, unlabelled but
    // for the retention mark.
    for (kind, plural, count) in [
        ("CertificateAuthority", "certificateauthorities", 1),
        ("CertificateRequest", "certificaterequests", 1),
        ("Revocation", "revocations", 0),
        ("Suspension", "suspensions", 1),
        ("CRLSchedule", "crlschedules", 0),
        ("KeyCeremony", "keyceremonies", 1),
        ("AuditSegment", "auditsegments", 2),
    ] {
        let list = f
            .api(admin.clone(), kind, plural)
            .list(&ListParams::default())
            .await
            .unwrap();
        assert_eq!(list.items.len(), count, "{kind}");
    }
    let ca = f
        .api(
            admin.clone(),
            "CertificateAuthority",
            "certificateauthorities",
        )
        .get(CA)
        .await
        .unwrap();
    let shipped = example("certificateauthority-subordinate.yaml");
    assert_eq!(ca.data["spec"]["issuance"], shipped["spec"]["issuance"]);
    assert_eq!(ca.data["spec"]["validity"], shipped["spec"]["validity"]);
    let hold = f
        .api(admin.clone(), "Suspension", "suspensions")
        .get(SUSPENSION)
        .await
        .unwrap();
    assert_eq!(hold.data["spec"]["resumed"], json!(false), "{hold:?}");
    let segment = f
        .api(admin.clone(), "AuditSegment", "auditsegments")
        .get(KEPT_SEGMENT)
        .await
        .unwrap();
    assert_eq!(segment.data["spec"], segment_spec(0));
    assert!(segment.metadata.labels.unwrap_or_default().is_empty());
    let request = f
        .api(admin.clone(), "CertificateRequest", "certificaterequests")
        .get(REQUEST)
        .await
        .unwrap();
    assert!(
        request.data["status"]["conditions"].is_null(),
        "{request:?}"
    );
    assert_eq!(
        request.data["spec"].get("accepted"),
        example("certificaterequest-signature.yaml")["spec"].get("accepted"),
        "{request:?}"
    );
    let ceremony = f
        .api(admin.clone(), "KeyCeremony", "keyceremonies")
        .get(CEREMONY)
        .await
        .unwrap();
    assert!(ceremony.data["spec"]["approvals"].is_null(), "{ceremony:?}");
    f.cleanup().await;
}

/// The matrix as Markdown (the block of docs/roles.md).
fn render() -> String {
    let mut out = String::new();
    out.push_str("| operation |");
    for actor in &ACTORS {
        write!(out, " {} |", actor.heading).unwrap();
    }
    out.push_str("\n|---|");
    for _ in &ACTORS {
        out.push_str(":-:|");
    }
    out.push('\n');
    for (_, label, expects) in MATRIX {
        write!(out, "| {label} |").unwrap();
        for expect in expects {
            let cell = match expect {
                Y => "✅".to_owned(),
                R => "RBAC".to_owned(),
                P(policy, _) => format!("`{}`", policy.trim_start_matches("chop-")),
                V(_) => "422 CRD".to_owned(),
                I(policy, _) => format!("422 `{}`", policy.trim_start_matches("chop-")),
            };
            write!(out, " {cell} |").unwrap();
        }
        out.push('\n');
    }
    out
}

/// docs/roles.md shows exactly [`MATRIX`] (`CHOP_UPDATE_DOCS=1` rewrites it).
#[test]
fn matrix_is_the_documented_one() {
    let path = repo().join("docs/roles.md");
    let text = std::fs::read_to_string(&path).unwrap();
    let begin = text
        .find(DOC_BEGIN)
        .expect("docs/roles.md has no role-matrix:begin marker")
        + DOC_BEGIN.len();
    let end = text
        .find(DOC_END)
        .expect("docs/roles.md has no role-matrix:end marker");
    let block = format!("\n{}", render());
    if std::env::var_os("CHOP_UPDATE_DOCS").is_some_and(|v| v == "1") {
        let updated = format!("{}{block}{}", &text[..begin], &text[end..]);
        std::fs::write(&path, updated).unwrap();
        return;
    }
    assert_eq!(
        &text[begin..end],
        block,
        "docs/roles.md's role matrix differs from e2e/tests/role_matrix.rs: \
         run CHOP_UPDATE_DOCS=1 cargo test -p e2e --test role_matrix matrix_is_the_documented_one"
    );
}

/// The API server's audit log (e2e/audit-policy.yaml) names who approved a
/// request, and who tried and was refused.
/// A decommissioned namespace (label `chop.dev/decommissioned=true`, the
/// deliberate second step of removing a CA: docs/operator.md) may have its trail
/// pruned before retention ends, by an auditor only; in a live namespace the
/// same deletion is refused (the matrix's cell).
#[tokio::test]
async fn a_decommissioned_namespaces_trail_is_pruned_by_an_auditor_only() {
    let f = Fixture::new().await;
    let dry_delete = DeleteParams::default().dry_run();
    let auditor = f.env.user("auditor-9", &["chop:auditors"]).await.unwrap();
    let admin_user = f
        .env
        .user("chop-admin-9", &["chop:administrators"])
        .await
        .unwrap();
    let by_auditor = f.api(auditor, "AuditSegment", "auditsegments");
    let by_admin = f.api(admin_user, "AuditSegment", "auditsegments");
    let kept = by_auditor.delete(KEPT_SEGMENT, &dry_delete).await;
    assert!(
        matches!(&kept, Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains("not yet past its retention period")),
        "live namespace: {kept:?}"
    );
    Api::<Namespace>::all(f.env.admin())
        .patch(
            f.ns(),
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"chop.dev/decommissioned": "true"}}})),
        )
        .await
        .unwrap();
    eventually(
        "the auditor prunes a decommissioned namespace's segment",
        || async {
            by_auditor
                .delete(KEPT_SEGMENT, &dry_delete)
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        },
    )
    .await;
    let refused = by_admin.delete(KEPT_SEGMENT, &dry_delete).await;
    assert!(
        matches!(&refused, Err(kube::Error::Api(s)) if s.code == 403
            && s.message.contains("cannot delete resource \"auditsegments\"")),
        "administrator (no RBAC delete on segments): {refused:?}"
    );
}

#[tokio::test]
async fn api_audit_log_names_who_approved() {
    let env = TestEnv::with_crds(&crds::all().into_iter().map(|(_, c)| c).collect::<Vec<_>>())
        .await
        .unwrap();
    let ns = env.namespace().to_owned();
    for (group, role) in [
        ("chop:officers", "chop:officer"),
        ("chop:auditors", "chop:auditor"),
    ] {
        let binding: RoleBinding = serde_json::from_value(json!({
            "metadata": {"name": role.replace(':', "-"), "namespace": ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": group}]
        }))
        .unwrap();
        Api::<RoleBinding>::namespaced(env.admin(), &ns)
            .create(&PostParams::default(), &binding)
            .await
            .unwrap();
    }
    // The manifests' ClusterRoles (no policies needed: this is about the log).
    e2e::install_manifests(
        &env.admin(),
        &[
            "rbac/officer.yaml".to_owned(),
            "rbac/auditor.yaml".to_owned(),
        ],
        TEST_LABEL,
        Some(BINDING_SUFFIX),
        FIELD_MANAGER,
    )
    .await
    .unwrap();
    let mut request = example("certificaterequest-signature.yaml");
    request["metadata"]["name"] = json!(REQUEST);
    let api = |client: Client| {
        Api::<DynamicObject>::namespaced_with(
            client,
            &ns,
            &gvr("CertificateRequest", "certificaterequests"),
        )
    };
    api(env.admin())
        .create(&PostParams::default(), &object(request))
        .await
        .unwrap();
    let auditor = api(env.token_user("auditor-1").await.unwrap());
    let refused = auditor
        .patch_status(REQUEST, &PatchParams::default(), &decision("Approved"))
        .await;
    assert!(
        matches!(&refused, Err(kube::Error::Api(s)) if s.code == 403),
        "{refused:?}"
    );
    let officer = api(env.token_user("officer-1").await.unwrap());
    eventually("officer-1 approves", || async {
        officer
            .patch_status(REQUEST, &PatchParams::default(), &decision("Approved"))
            .await
            .map_err(|e| e.to_string())
    })
    .await;

    let log = env.plane().dir().join("audit.log");
    assert!(
        log.is_file(),
        "{} missing: the plane runs without its API audit log (started with CHOP_E2E_API_AUDIT=0?)",
        log.display()
    );
    let events = |user: &'static str, code: u16| {
        let (log, ns) = (log.clone(), ns.clone());
        move || {
            let (log, ns) = (log.clone(), ns.clone());
            async move {
                let text =
                    std::fs::read_to_string(&log).map_err(|e| format!("{}: {e}", log.display()))?;
                text.lines()
                    .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                    .find(|e| {
                        e["user"]["username"] == user
                            && e["verb"] == "patch"
                            && e["objectRef"]["resource"] == "certificaterequests"
                            && e["objectRef"]["subresource"] == "status"
                            && e["objectRef"]["namespace"] == ns.as_str()
                            && e["objectRef"]["name"] == REQUEST
                            && e["responseStatus"]["code"] == code
                    })
                    .ok_or_else(|| format!("no event by {user} with code {code}"))
            }
        }
    };
    let approval = eventually(
        "the approval in the API audit log",
        events("officer-1", 200),
    )
    .await;
    assert_eq!(approval["level"], "RequestResponse", "{approval}");
    assert_eq!(
        approval["requestObject"]["status"]["conditions"][0]["type"], "Approved",
        "{approval}"
    );
    let attempt = eventually(
        "the refused attempt in the API audit log",
        events("auditor-1", 403),
    )
    .await;
    assert_eq!(
        attempt["annotations"]["authorization.k8s.io/decision"], "forbid",
        "{attempt}"
    );
    env.cleanup().await.unwrap();
}
