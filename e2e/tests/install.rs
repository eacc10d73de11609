//! The kustomize base installs into a real cluster: `kubectl apply --server-side
//! --dry-run=server -k manifests/` passes against the real kube-apiserver (every
//! object validated and admitted by the API server, nothing stored), alone and
//! with each HSM component (`manifests/overlays/softhsm`, `vendor-hsm`); the
//! controller's ServiceAccount is bound to exactly the least-privilege ClusterRole
//! of `manifests/rbac/chop-controller.yaml` (and to its leader-election Lease), and
//! its Deployment runs hardened.
//!
//! The base under test is `manifests/kustomization.yaml` itself, in a temporary
//! copy of `manifests/` beside the users' kustomizations that add a component.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn kubectl() -> PathBuf {
    let out = Command::new("bash")
        .arg(repo().join("e2e/controlplane.sh"))
        .arg("bin-dir")
        .output()
        .unwrap();
    assert!(out.status.success());
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim()).join("kubectl")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A copy of `manifests/` whose `kustomization.yaml` is the base under test, and
/// a user's kustomization per HSM component beside it (`with-softhsm/`,
/// `with-vendor-hsm/`), as docs/install.md shows.
fn layout() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let manifests = tmp.path().join("manifests");
    copy_dir(&repo().join("manifests"), &manifests);
    for component in ["softhsm", "vendor-hsm"] {
        let dir = tmp.path().join(format!("with-{component}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("kustomization.yaml"),
            format!(
                "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
                 resources: [../manifests]\ncomponents: [../manifests/overlays/{component}]\n"
            ),
        )
        .unwrap();
    }
    tmp
}

fn run(cmd: &mut Command) -> String {
    run_with_stderr(cmd).0
}

fn run_with_stderr(cmd: &mut Command) -> (String, String) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// `kubectl kustomize DIR`, as documents.
fn render(dir: &Path) -> Vec<Value> {
    let yaml = run(Command::new(kubectl()).arg("kustomize").arg(dir));
    serde_saphyr::from_multiple::<Option<Value>>(&yaml)
        .unwrap()
        .into_iter()
        .flatten()
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in the base"))
}

/// stdout and stderr (warnings) of the dry run.
fn server_dry_run(dir: &Path) -> (String, String) {
    let plane = e2e::ControlPlane::shared().unwrap();
    run_with_stderr(
        Command::new(kubectl())
            .arg("--kubeconfig")
            .arg(plane.admin_kubeconfig())
            .args([
                "apply",
                "--server-side",
                "--dry-run=server",
                "--field-manager=chop-install-test",
                // Other tests on a shared plane apply the same objects, some
                // changed (policy bindings scoped to their namespaces): take the
                // fields over in this dry run instead of failing on conflicts.
                "--force-conflicts",
                "-k",
            ])
            .arg(dir),
    )
}

#[test]
fn base_and_components_pass_server_side_dry_run() {
    let tmp = layout();
    // A server-side dry run stores nothing, not even the Namespace, and the
    // API server refuses objects in a namespace that does not exist: create it
    // for real first (the one object this test stores; its Pod Security labels
    // then apply to the dry run).
    let plane = e2e::ControlPlane::shared().unwrap();
    run(Command::new(kubectl())
        .arg("--kubeconfig")
        .arg(plane.admin_kubeconfig())
        .args([
            "apply",
            "--server-side",
            "--field-manager=chop-install-test",
            "-f",
            "-",
        ])
        .stdin(std::fs::File::open(repo().join("manifests/deploy/namespace.yaml")).unwrap()));
    for dir in ["manifests", "with-softhsm", "with-vendor-hsm"] {
        let dir = tmp.path().join(dir);
        let docs = render(&dir);
        let (out, warnings) = server_dry_run(&dir);
        // chop-system enforces and warns on Pod Security `restricted`: the API
        // server itself checks the Deployment's pod template.
        assert!(
            !warnings.contains("PodSecurity"),
            "{}: {warnings}",
            dir.display()
        );
        let applied = out
            .lines()
            .filter(|l| l.ends_with("(server dry run)"))
            .count();
        assert_eq!(
            applied,
            docs.len(),
            "{}: every object must be applied:\n{out}",
            dir.display()
        );
        for (kind, name) in [
            ("deployment.apps", "chop-system/chop-controller"),
            (
                "customresourcedefinition.apiextensions.k8s.io",
                "certificateauthorities.chop.dev",
            ),
            ("clusterrole.rbac.authorization.k8s.io", "chop-controller"),
            (
                "clusterrolebinding.rbac.authorization.k8s.io",
                "chop-controller",
            ),
            ("poddisruptionbudget.policy", "chop-system/chop-controller"),
        ] {
            let short = name.rsplit('/').next().unwrap();
            assert!(
                out.lines()
                    .any(|l| l.starts_with(&format!("{kind}/{short} "))),
                "{}: {kind} {name} not applied:\n{out}",
                dir.display()
            );
        }
    }
    // The monitoring objects need the Prometheus Operator's CRDs (absent here):
    // they must at least build.
    let monitoring = render(&repo().join("manifests/monitoring"));
    let mut kinds: Vec<&str> = monitoring
        .iter()
        .map(|d| d["kind"].as_str().unwrap())
        .collect();
    kinds.sort_unstable();
    assert_eq!(
        kinds,
        ["PrometheusRule", "ServiceMonitor", "ServiceMonitor"]
    );
}

#[test]
fn controller_service_account_holds_exactly_the_shipped_role() {
    let tmp = layout();
    let docs = render(&tmp.path().join("manifests"));
    let deployment = find(&docs, "Deployment", "chop-controller");
    let ns = deployment["metadata"]["namespace"].as_str().unwrap();
    let pod = &deployment["spec"]["template"]["spec"];
    let sa = pod["serviceAccountName"].as_str().unwrap();
    find(&docs, "ServiceAccount", sa);
    let is_sa =
        |s: &Value| s["kind"] == "ServiceAccount" && s["name"] == sa && s["namespace"] == ns;
    let bindings: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == "ClusterRoleBinding" || d["kind"] == "RoleBinding")
        .filter(|d| d["subjects"].as_array().into_iter().flatten().any(is_sa))
        .collect();
    let cluster: Vec<&&Value> = bindings
        .iter()
        .filter(|b| b["kind"] == "ClusterRoleBinding")
        .collect();
    assert_eq!(
        cluster.len(),
        1,
        "cluster-wide bindings of {sa}: {cluster:#?}"
    );
    let crb = cluster[0];
    assert_eq!(crb["roleRef"]["kind"], "ClusterRole");
    assert_eq!(crb["roleRef"]["name"], "chop-controller");
    assert_eq!(
        crb["subjects"].as_array().unwrap().len(),
        1,
        "the controller's role is bound to {sa} only"
    );
    // ...and that ClusterRole is the one of manifests/rbac, unchanged.
    let shipped: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(repo().join("manifests/rbac/chop-controller.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(find(&docs, "ClusterRole", "chop-controller"), &shipped);
    // Every other binding of the ServiceAccount: a Role in its own namespace
    // that grants the leader-election Lease and nothing else.
    for b in bindings.iter().filter(|b| b["kind"] == "RoleBinding") {
        assert_eq!(b["metadata"]["namespace"], ns);
        assert_eq!(b["roleRef"]["kind"], "Role", "{b:#?}");
        let role = find(&docs, "Role", b["roleRef"]["name"].as_str().unwrap());
        assert_eq!(role["metadata"]["namespace"], ns);
        for rule in role["rules"].as_array().unwrap() {
            assert_eq!(
                rule["apiGroups"],
                serde_json::json!(["coordination.k8s.io"])
            );
            assert_eq!(rule["resources"], serde_json::json!(["leases"]));
            for verb in rule["verbs"].as_array().unwrap() {
                assert!(["get", "create", "update"].contains(&verb.as_str().unwrap()));
            }
        }
    }
    // The Lease the controller elects on is the one that Role names.
    let args: Vec<&str> = pod["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(args.contains(&"--lease-name=chop-controller"), "{args:?}");
    assert!(
        args.contains(&"--lease-namespace=$(POD_NAMESPACE)"),
        "{args:?}"
    );
}

#[test]
fn controller_deployment_is_highly_available_and_hardened() {
    let tmp = layout();
    let docs = render(&tmp.path().join("manifests"));
    let deployment = find(&docs, "Deployment", "chop-controller");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let containers = pod["containers"]
        .as_array()
        .unwrap()
        .iter()
        .chain(pod["initContainers"].as_array().unwrap());
    for c in containers {
        let sc = &c["securityContext"];
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{}", c["name"]);
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{}", c["name"]);
        assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
        assert!(
            c["resources"]["requests"]["cpu"].is_string(),
            "{}",
            c["name"]
        );
        assert!(
            c["resources"]["requests"]["memory"].is_string(),
            "{}",
            c["name"]
        );
    }
    let controller = &pod["containers"][0];
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(controller[probe]["httpGet"]["port"], "metrics", "{probe}");
    }
    // The PKCS#11 module the controller allows lives on the read-only volume the
    // init container fills; no PIN is mounted (the controller reads each CA's
    // PIN Secret through the API).
    let module = controller["args"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|a| a.as_str().unwrap().strip_prefix("--pkcs11-module="))
        .unwrap();
    let mount = controller["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| module.starts_with(m["mountPath"].as_str().unwrap()))
        .unwrap_or_else(|| panic!("{module} is on no volume"));
    assert_eq!(mount["readOnly"], true);
    for v in pod["volumes"].as_array().unwrap() {
        assert!(v["secret"].is_null(), "no Secret volume in the base: {v}");
    }
    // A PodDisruptionBudget keeps one replica, a Service exposes the metrics.
    let pdb = find(&docs, "PodDisruptionBudget", "chop-controller");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"]
    );
    let svc = find(&docs, "Service", "chop-controller-metrics");
    assert_eq!(
        svc["spec"]["selector"],
        deployment["spec"]["selector"]["matchLabels"]
    );
}
