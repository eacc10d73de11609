//! The end-to-end harness shared by the controller's tests: the real
//! `chop-controller` binary as a child process with its own SoftHSM2 token
//! directory, a real kube-apiserver (from `e2e`), and `openssl` helpers.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod ceremony;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crds::{CertificateAuthority, CertificateRequest, IssuedCertificate, Revocation, Suspension};
use e2e::TestEnv;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

// Distinctive, so a leak into logs or metrics cannot be a coincidence.
pub const PIN: &str = "sesame-Kq2vXw";

/// Label of the audit token every test controller writes its trail with.
pub const AUDIT_TOKEN: &str = "chop-audit";

/// The register of CA `root` without its delegated OCSP responder certificates.
pub const SUBSCRIBER_RECORDS: &str = "chop.dev/ca=root,chop.dev/profile!=OCSPResponder";

pub struct Harness {
    pub env: TestEnv,
    pub dir: tempfile::TempDir,
    pub conf: PathBuf,
    pub child: ChildGuard,
    /// More environment for the controller processes this harness starts.
    pub extra_env: Vec<(String, String)>,
    pub metrics_port: u16,
    pub starts: u32,
    /// The controller runs as the user `chop-controller`, bound only to the
    /// shipped `manifests/rbac/chop-controller.yaml` ClusterRole: a missing rule
    /// there fails these tests.
    pub controller_kubeconfig: PathBuf,
    /// Extra command-line flags of every controller started from now on
    /// (e.g. `--request-retention 3s`).
    pub args: Vec<String>,
}

/// Install the controller's ClusterRole from `manifests/` and bind it, in `ns`,
/// to the user `chop-controller`; return that user's kubeconfig.
async fn controller_identity(env: &TestEnv) -> PathBuf {
    use k8s_openapi::api::rbac::v1::{ClusterRole, RoleBinding};
    // The controller's own role, and the read-only role it binds each CA's
    // responder to (both as shipped).
    let ssa = PatchParams::apply("chop-tests").force();
    for file in ["chop-controller.yaml", "responder.yaml"] {
        let yaml = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../manifests/rbac")
                .join(file),
        )
        .unwrap();
        let role: ClusterRole = serde_saphyr::from_str(&yaml).unwrap();
        Api::<ClusterRole>::all(env.admin())
            .patch(
                role.metadata.name.as_deref().unwrap(),
                &ssa,
                &Patch::Apply(&role),
            )
            .await
            .unwrap();
    }
    let binding: RoleBinding = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "chop-controller", "namespace": env.namespace()},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "chop-controller"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "chop-controller"}]
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(env.admin(), env.namespace())
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    env.plane()
        .kubeconfig_for_user("chop-controller", &[])
        .await
        .unwrap()
}

impl Harness {
    pub async fn new() -> Harness {
        let crds: Vec<_> = crds::all().into_iter().map(|(_, c)| c).collect();
        let env = TestEnv::with_crds(&crds).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens");
        std::fs::create_dir_all(&tokens).unwrap();
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
                tokens.display()
            ),
        )
        .unwrap();
        let out = Command::new("softhsm2-util")
            .args([
                "--init-token",
                "--free",
                "--label",
                "moica",
                "--pin",
                PIN,
                "--so-pin",
                "87654321",
            ])
            .env("SOFTHSM2_CONF", &conf)
            .output()
            .unwrap();
        assert!(out.status.success(), "softhsm2-util: {out:?}");
        // The audit token: every controller of the tests records its audit
        // trail (in the test namespace), so every test runs with auditing on.
        let out = Command::new("softhsm2-util")
            .args([
                "--init-token",
                "--free",
                "--label",
                AUDIT_TOKEN,
                "--pin",
                PIN,
                "--so-pin",
                "87654321",
            ])
            .env("SOFTHSM2_CONF", &conf)
            .output()
            .unwrap();
        assert!(out.status.success(), "softhsm2-util: {out:?}");
        let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let controller_kubeconfig = controller_identity(&env).await;
        Harness {
            env,
            dir,
            conf,
            child: ChildGuard(None),
            extra_env: Vec::new(),
            metrics_port,
            starts: 0,
            controller_kubeconfig,
            args: Vec::new(),
        }
    }

    pub fn ns(&self) -> &str {
        self.env.namespace()
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.env.admin(), self.ns())
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn start(&mut self, crash_after_reserve: bool) {
        self.start_with(if crash_after_reserve {
            Some("CHOP_TEST_CRASH_AFTER_RESERVE")
        } else {
            None
        });
    }

    /// Wait until the running controller aborts (a crash hook fired) and
    /// check it did not exit cleanly; fail with its log after `secs`.
    pub async fn wait_for_abort(&mut self, what: &str, secs: u64) {
        let mut child = self.child.0.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(secs);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("the controller did not abort {what}\n{}", self.logs());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(!status.success(), "{status:?}");
    }

    /// Start the controller, with the crash hook `hook` (an env var name) set.
    pub fn start_with(&mut self, hook: Option<&str>) {
        let port = self.metrics_port;
        self.child.0 = Some(self.spawn("chop-controller-test", port, hook));
    }

    /// Spawn one controller replica named `pod` serving metrics on `port`.
    pub fn spawn(&mut self, pod: &str, port: u16, hook: Option<&str>) -> Child {
        self.starts += 1;
        let log =
            std::fs::File::create(self.path(&format!("controller-{}.log", self.starts))).unwrap();
        // CHOP_CONTROLLER_BIN: a binary of this tree's exact build (the shared
        // target dir's target/debug/chop-controller is whichever tree built last).
        let bin = std::env::var_os("CHOP_CONTROLLER_BIN")
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_chop-controller").into());
        let mut cmd = Command::new(bin);
        cmd.args(["--namespace", self.ns(), "--metrics-addr"])
            .arg(format!("127.0.0.1:{port}"))
            .args(&self.args)
            .env("KUBECONFIG", &self.controller_kubeconfig)
            .env("SOFTHSM2_CONF", &self.conf)
            .env("POD_NAME", pod)
            .env("CHOP_AUDIT_TOKEN_LABEL", AUDIT_TOKEN)
            .env("CHOP_AUDIT_PIN", PIN)
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        cmd.env_remove("CHOP_TEST_CRASH_AFTER_RESERVE")
            .env_remove("CHOP_TEST_CRASH_AFTER_COMMIT");
        if let Some(hook) = hook {
            cmd.env(hook, "1");
        }
        cmd.envs(self.extra_env.iter().map(|(k, v)| (k, v)));
        cmd.spawn().unwrap()
    }

    pub fn logs(&self) -> String {
        (1..=self.starts)
            .map(|i| {
                std::fs::read_to_string(self.path(&format!("controller-{i}.log")))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n----- restart -----\n")
    }

    /// Poll `f` until it returns `Some`, failing with the controller's log after `secs`.
    pub async fn wait<T, F, Fut>(&self, what: &str, secs: u64, mut f: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(v) = f().await {
                return v;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}\ncontroller log:\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    pub async fn create_ca(&self) -> CertificateAuthority {
        self.create_ca_with(json!({})).await
    }

    /// The root CA `root` with `extra` merged into its spec (e.g. `profiles`,
    /// `approval`), once Ready.
    pub async fn create_ca_with(&self, extra: Value) -> CertificateAuthority {
        self.create_ca_spec("root", "moica-root", "IfMissing", extra)
            .await;
        self.wait_ca_ready("root").await
    }

    /// Start the controller, create the root CA `root`, wait until it is
    /// Ready and write its certificate to `file`.
    pub async fn start_with_root(&mut self, file: &str) -> (CertificateAuthority, PathBuf) {
        self.start(false);
        let ca = self.create_ca().await;
        let pem = self.write(
            file,
            ca.status.as_ref().unwrap().certificate.as_deref().unwrap(),
        );
        (ca, pem)
    }

    pub async fn wait_ca_ready(&self, name: &str) -> CertificateAuthority {
        let api = self.api::<CertificateAuthority>();
        self.wait(&format!("CA {name} Ready"), 90, || {
            let api = api.clone();
            async move {
                let ca = api.get(name).await.ok()?;
                let st = ca.status.as_ref()?;
                let ready = st
                    .conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True");
                (ready && st.certificate.is_some()).then_some(ca)
            }
        })
        .await
    }

    pub async fn create_ca_named(&self, name: &str, key_label: &str, key_generation: &str) {
        self.create_ca_spec(name, key_label, key_generation, json!({}))
            .await;
    }

    /// Create a root CA; `extra` is merged into its spec.
    pub async fn create_ca_spec(
        &self,
        name: &str,
        key_label: &str,
        key_generation: &str,
        extra: Value,
    ) {
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": "hsm-pin"},
            "stringData": {"pin": PIN},
        }))
        .unwrap();
        match self
            .api::<Secret>()
            .create(&PostParams::default(), &secret)
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => panic!("{e}"),
        }
        let mut body = json!({
            "apiVersion": "chop.dev/v1alpha1",
            "kind": "CertificateAuthority",
            "metadata": {"name": name},
            "spec": {
                "type": "Root",
                "subject": {"country": "TW", "organization": "行政院", "organizationalUnits": ["內政部憑證管理中心"]},
                "hsm": {
                    "tokenLabel": "moica",
                    "keyLabel": key_label,
                    "pinSecretRef": {"name": "hsm-pin", "key": "pin"},
                    "keyGeneration": key_generation
                },
                "crlDistributionPoints": ["http://repository.moica.example.tw/crl/root.crl"],
                "ocspURLs": ["http://ocsp.moica.example.tw"],
                "caIssuersURLs": ["http://repository.moica.example.tw/certs/root.cer"]
            }
        });
        for (k, v) in extra.as_object().unwrap() {
            body["spec"][k] = v.clone();
        }
        let ca: CertificateAuthority = serde_json::from_value(body).unwrap();
        self.api::<CertificateAuthority>()
            .create(&PostParams::default(), &ca)
            .await
            .unwrap();
    }

    pub fn csr(&self, name: &str) -> String {
        let key = self.path(&format!("{name}.key"));
        let csr = self.path(&format!("{name}.csr"));
        let out = Command::new("openssl")
            .args([
                "req",
                "-new",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=ignored by the CA",
                "-keyout",
            ])
            .arg(&key)
            .arg("-out")
            .arg(&csr)
            .output()
            .unwrap();
        assert!(out.status.success(), "openssl req: {out:?}");
        std::fs::read_to_string(csr).unwrap()
    }

    pub async fn create_request(
        &self,
        name: &str,
        profile: &str,
        reference: &str,
        csr: &str,
        accepted: bool,
    ) {
        self.api::<CertificateRequest>()
            .create(
                &PostParams::default(),
                &request_body(name, profile, reference, csr, accepted),
            )
            .await
            .unwrap();
    }

    /// Install the admission policies and the RA role of `manifests/` and make
    /// them act in this test's namespace: the policies are cluster-wide objects
    /// on a plane shared with other test files, so this file's bindings (named
    /// `<policy>-controller-tests`) select namespaces labelled
    /// `chop.dev/e2e-controller-policies`. Returns once `chop-requested-by`
    /// stamps the creator and chop-approval rejects a bad decision here.
    pub async fn install_policies(&self) {
        use k8s_openapi::api::core::v1::Namespace;
        use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
        const LABEL: &str = "chop.dev/e2e-controller-policies";
        let admin = self.env.admin();
        Api::<Namespace>::all(admin.clone())
            .patch(
                self.ns(),
                &PatchParams::default(),
                // chop.dev/register: a CA may be created here (chop-register-protection).
                &Patch::Merge(
                    json!({"metadata": {"labels": {LABEL: "true", "chop.dev/register": "true"}}}),
                ),
            )
            .await
            .unwrap();
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests");
        let mut docs = Vec::new();
        for file in [
            "rbac/registration-authority.yaml",
            "rbac/officer.yaml",
            "rbac/administrator.yaml",
            "policies/approval.yaml",
            "policies/no-self-approval.yaml",
            "policies/request-spec.yaml",
            "policies/controller-state.yaml",
            "policies/register-protection.yaml",
            "policies/issuance-field.yaml",
            "policies/key-ceremony.yaml",
        ] {
            let text = std::fs::read_to_string(root.join(file)).unwrap();
            let parsed: Vec<Option<Value>> = serde_saphyr::from_multiple(&text).unwrap();
            docs.extend(parsed.into_iter().flatten());
        }
        for mut doc in docs {
            let kind = doc["kind"].as_str().unwrap().to_owned();
            if kind.ends_with("AdmissionPolicyBinding") {
                let name = format!(
                    "{}-controller-tests",
                    doc["metadata"]["name"].as_str().unwrap()
                );
                doc["metadata"]["name"] = json!(name);
                doc["spec"]["matchResources"] =
                    json!({"namespaceSelector": {"matchLabels": {LABEL: "true"}}});
            }
            let (group, version) = doc["apiVersion"].as_str().unwrap().split_once('/').unwrap();
            let gvk = GroupVersionKind::gvk(group, version, &kind);
            let lower = kind.to_ascii_lowercase();
            let plural = match lower.strip_suffix('y') {
                Some(stem) => format!("{stem}ies"),
                None => format!("{lower}s"),
            };
            let resource = ApiResource::from_gvk_with_plural(&gvk, &plural);
            let obj: DynamicObject = serde_json::from_value(doc).unwrap();
            Api::<DynamicObject>::all_with(admin.clone(), &resource)
                .patch(
                    obj.metadata.name.as_deref().unwrap(),
                    &PatchParams::apply("chop-controller-tests").force(),
                    &Patch::Apply(&obj),
                )
                .await
                .unwrap_or_else(|e| panic!("applying {kind}: {e}"));
        }
        let api = self.api::<CertificateRequest>();
        let dry = PostParams {
            dry_run: true,
            ..PostParams::default()
        };
        let probe = request_body("policy-probe", "Signature", "probe", "x", false);
        self.wait("chop-requested-by in force", 60, || {
            let (api, dry, probe) = (api.clone(), dry.clone(), probe.clone());
            async move {
                let made = api.create(&dry, &probe).await.ok()?;
                let who = made.metadata.annotations?.get(REQUESTED_BY)?.clone();
                (who == "admin").then_some(())
            }
        })
        .await;
        // A probe to decide on, created by someone else than the admin (who
        // may not decide on their own request).
        let ra: Api<CertificateRequest> =
            Api::namespaced(self.ra_user("policy-probe-ra").await, self.ns());
        ra.create(&PostParams::default(), &probe).await.unwrap();
        let bad = json!({"apiVersion": "chop.dev/v1alpha1", "kind": "CertificateRequest",
            "status": {"conditions": [{"type": "Approved", "status": "False", "reason": "Probe",
              "message": "", "lastTransitionTime": jiff::Timestamp::now().to_string()}]}});
        self.wait("chop-approval in force", 60, || {
            let (api, bad) = (api.clone(), bad.clone());
            async move {
                let pp = PatchParams {
                    dry_run: true,
                    ..PatchParams::apply("officer").force()
                };
                match api
                    .patch_status("policy-probe", &pp, &Patch::Apply(&bad))
                    .await
                {
                    Err(kube::Error::Api(s)) if s.message.contains("take status True only") => {
                        Some(())
                    }
                    _ => None,
                }
            }
        })
        .await;
        // chop-decided-by stamps who decides (a dry run: the probe stays undecided).
        let decide = json!({"apiVersion": "chop.dev/v1alpha1", "kind": "CertificateRequest",
            "status": {"conditions": [{"type": "Approved", "status": "True", "reason": "Probe",
              "message": "", "lastTransitionTime": jiff::Timestamp::now().to_string()}]}});
        self.wait("chop-decided-by in force", 60, || {
            let (api, decide) = (api.clone(), decide.clone());
            async move {
                let pp = PatchParams {
                    dry_run: true,
                    ..PatchParams::apply("officer").force()
                };
                let made = api
                    .patch_status("policy-probe", &pp, &Patch::Apply(&decide))
                    .await
                    .ok()?;
                (made.status?.decided_by? == "admin").then_some(())
            }
        })
        .await;
    }

    /// A client for user `name`, bound in this namespace to the ClusterRole
    /// shipped in `manifests/rbac/<file>` (installed first, as shipped).
    pub async fn shipped_role_user(&self, file: &str, name: &str) -> kube::Client {
        use k8s_openapi::api::rbac::v1::ClusterRole;
        let yaml = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../manifests/rbac")
                .join(file),
        )
        .unwrap();
        let role: ClusterRole = serde_saphyr::from_str(&yaml).unwrap();
        let role_name = role.metadata.name.clone().unwrap();
        Api::<ClusterRole>::all(self.env.admin())
            .patch(
                &role_name,
                &PatchParams::apply("chop-tests").force(),
                &Patch::Apply(&role),
            )
            .await
            .unwrap();
        self.user_with_role(name, &role_name).await
    }

    /// A client for user `name` bound to ClusterRole `role` (e.g. `chop:officer`,
    /// installed by [`Harness::install_policies`]) in this namespace, once RBAC
    /// lets it read CertificateRequests.
    pub async fn user_with_role(&self, name: &str, role: &str) -> kube::Client {
        use k8s_openapi::api::rbac::v1::RoleBinding;
        let binding: RoleBinding = serde_json::from_value(json!({
            "metadata": {"name": format!("{}-{name}", role.replace(':', "-")), "namespace": self.ns()},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": name}]
        }))
        .unwrap();
        Api::<RoleBinding>::namespaced(self.env.admin(), self.ns())
            .create(&PostParams::default(), &binding)
            .await
            .unwrap();
        let client = self.env.user(name, &[]).await.unwrap();
        let api: Api<CertificateRequest> = Api::namespaced(client.clone(), self.ns());
        self.wait(&format!("RBAC for {name}"), 30, || {
            let api = api.clone();
            async move { api.list(&ListParams::default()).await.ok().map(|_| ()) }
        })
        .await;
        client
    }

    /// A client for user `name`, bound to the RA's ClusterRole in this namespace
    /// (needs [`Harness::install_policies`] for the role), once RBAC lets it create
    /// requests.
    pub async fn ra_user(&self, name: &str) -> kube::Client {
        self.user_with_role(name, "chop:registration-authority")
            .await
    }

    /// An officer approves: server-side apply of the Approved condition on the
    /// status subresource with field manager `officer`.
    pub async fn approve(&self, name: &str) {
        self.officer_sets(name, "Approved", "OfficerApproved").await;
    }

    /// An officer sets condition `type_` to True (SSA, field manager `officer`).
    pub async fn officer_sets(&self, name: &str, type_: &str, reason: &str) {
        let body = json!({
            "apiVersion": "chop.dev/v1alpha1",
            "kind": "CertificateRequest",
            "status": {"conditions": [{
                "type": type_,
                "status": "True",
                "reason": reason,
                "message": "identity checked in person",
                "lastTransitionTime": jiff::Timestamp::now().to_string(),
            }]}
        });
        self.api::<CertificateRequest>()
            .patch_status(
                name,
                &PatchParams::apply("officer").force(),
                &Patch::Apply(&body),
            )
            .await
            .unwrap();
    }

    pub async fn accept(&self, name: &str) {
        self.api::<CertificateRequest>()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"accepted": true}})),
            )
            .await
            .unwrap();
    }

    /// Wait until the request's `type_` condition has `status` (and `reason`, if given).
    pub async fn wait_condition(
        &self,
        name: &str,
        type_: &str,
        status: &str,
        reason: Option<&str>,
    ) -> CertificateRequest {
        let api = self.api::<CertificateRequest>();
        self.wait(&format!("{name}: {type_}={status} {reason:?}"), 60, || {
            let api = api.clone();
            async move {
                let cr = api.get(name).await.ok()?;
                let ok = cr.status.as_ref()?.conditions.iter().any(|c| {
                    c.type_ == type_ && c.status == status && reason.is_none_or(|r| c.reason == r)
                });
                ok.then_some(cr)
            }
        })
        .await
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

/// Kills the controller when the test ends, however it ends.
pub struct ChildGuard(pub Option<Child>);

impl ChildGuard {
    pub fn stop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn openssl(args: &[&str], files: &[&Path]) -> String {
    let mut cmd = Command::new("openssl");
    cmd.args(args);
    for f in files {
        cmd.arg(f);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run `cmd`; whether it succeeded and its stdout followed by its stderr.
pub fn run_text(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

pub fn issued_name(serial_upper_hex: &str) -> String {
    format!("root-{}", serial_upper_hex.to_ascii_lowercase())
}

pub fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    if path == "/metrics" {
        return out
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or(out);
    }
    out
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Annotation the chop-requested-by admission policy writes.
pub const REQUESTED_BY: &str = "chop.dev/requested-by";

/// A subscriber CertificateRequest for CA `root`.
pub fn request_body(
    name: &str,
    profile: &str,
    reference: &str,
    csr: &str,
    accepted: bool,
) -> CertificateRequest {
    serde_json::from_value(json!({
        "apiVersion": "chop.dev/v1alpha1",
        "kind": "CertificateRequest",
        "metadata": {"name": name},
        "spec": {
            "caRef": {"name": "root"},
            "profile": profile,
            "subscriber": {"reference": reference, "commonName": "王小明"},
            "csr": csr,
            "accepted": accepted
        }
    }))
    .unwrap()
}

/// The record of serial `serial` (upper-case hex) at CA `root`.
pub async fn record(h: &Harness, serial: &str) -> IssuedCertificate {
    h.api::<IssuedCertificate>()
        .get(&issued_name(serial))
        .await
        .unwrap()
}

/// A record's state from its status (None = never changed) and its label.
pub fn state(r: &IssuedCertificate) -> (Option<String>, String) {
    (
        r.status.as_ref().and_then(|s| s.state.clone()),
        r.metadata.labels.as_ref().unwrap()["chop.dev/status"].clone(),
    )
}

/// Create an object of kind `K` from its JSON.
pub async fn create<K>(h: &Harness, body: Value)
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let obj: K = serde_json::from_value(body).unwrap();
    h.api::<K>()
        .create(&PostParams::default(), &obj)
        .await
        .unwrap();
}

/// A Revocation at CA `root` of `target` (e.g. `{"certificateRequestRef": ...}`).
pub async fn revoke(h: &Harness, name: &str, target: Value, reason: &str) {
    let mut spec = json!({"caRef": {"name": "root"}, "reason": reason, "requester": "Subscriber"});
    for (k, v) in target.as_object().unwrap() {
        spec[k] = v.clone();
    }
    create::<Revocation>(
        h,
        json!({"apiVersion": "chop.dev/v1alpha1", "kind": "Revocation",
               "metadata": {"name": name}, "spec": spec}),
    )
    .await;
}

/// A Suspension (hold) of the certificate of request `request`.
pub async fn suspend(h: &Harness, name: &str, request: &str) {
    create::<Suspension>(
        h,
        json!({"apiVersion": "chop.dev/v1alpha1", "kind": "Suspension",
               "metadata": {"name": name},
               "spec": {"caRef": {"name": "root"}, "certificateRequestRef": {"name": request},
                        "requester": "Subscriber"}}),
    )
    .await;
}

/// Wait until the record of `serial` is in state `want` (status and label).
/// Revoke the certificate of request `request` (Revocation `name`, `reason`)
/// and wait until its record is Revoked; its serial.
pub async fn revoke_request(h: &Harness, name: &str, request: &str, reason: &str) -> String {
    revoke(
        h,
        name,
        json!({"certificateRequestRef": {"name": request}}),
        reason,
    )
    .await;
    let cr = h.api::<CertificateRequest>().get(request).await.unwrap();
    let serial = cr.status.unwrap().serial_number.unwrap();
    wait_record(h, &serial, "Revoked").await;
    serial
}

pub async fn wait_record(h: &Harness, serial: &str, want: &str) -> IssuedCertificate {
    h.wait(&format!("record {serial} {want}"), 60, || async move {
        let r = record(h, serial).await;
        let (st, label) = state(&r);
        (st.as_deref().unwrap_or("Valid") == want && label == want).then_some(r)
    })
    .await
}

/// Wait for a Warning Event with `reason` about `object`.
pub async fn warning_event(h: &Harness, object: &str, reason: &str) {
    wait_event(h, object, reason, "Warning").await;
}

/// Wait for an Event of `type_` (Normal, Warning) with `reason` about `object`.
pub async fn wait_event(h: &Harness, object: &str, reason: &str, type_: &str) {
    let events: Api<Event> = h.api();
    h.wait(&format!("{type_} {reason} for {object}"), 30, || {
        let events = events.clone();
        async move {
            let list = events.list(&ListParams::default()).await.ok()?;
            list.items
                .iter()
                .any(|e| {
                    e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(object)
                        && e.reason.as_deref() == Some(reason)
                        && e.type_.as_deref() == Some(type_)
                })
                .then_some(())
        }
    })
    .await;
}

/// Create an accepted Signature request, approve it and wait for it to be
/// issued; its serial (upper-case hex).
pub async fn issue(h: &Harness, name: &str, reference: &str, csr: &str) -> String {
    h.create_request(name, "Signature", reference, csr, true)
        .await;
    h.approve(name).await;
    let cr = h
        .wait_condition(name, "Issued", "True", Some("Issued"))
        .await;
    cr.status.unwrap().serial_number.unwrap()
}

/// `openssl verify -crl_check -CAfile root -CRLfile <crl> cert`, the CRL given
/// as DER (written next to the test's files as `<name>.pem`): whether it
/// verified, and openssl's output.
pub fn verify_with_crl(
    h: &Harness,
    name: &str,
    crl_der: &[u8],
    root: &Path,
    cert: &Path,
) -> (bool, String) {
    let der = h.path(&format!("{name}.der"));
    let pem = h.path(&format!("{name}.pem"));
    std::fs::write(&der, crl_der).unwrap();
    openssl(
        &[
            "crl",
            "-inform",
            "DER",
            "-outform",
            "PEM",
            "-out",
            pem.to_str().unwrap(),
            "-in",
        ],
        &[&der],
    );
    run_text(
        Command::new("openssl")
            .args(["verify", "-crl_check", "-CAfile"])
            .arg(root)
            .arg("-CRLfile")
            .arg(&pem)
            .arg(cert),
    )
}

/// `openssl crl -text` of a DER CRL.
pub fn crl_text(h: &Harness, name: &str, crl_der: &[u8]) -> String {
    let der = h.path(&format!("{name}.der"));
    std::fs::write(&der, crl_der).unwrap();
    openssl(
        &["crl", "-inform", "DER", "-noout", "-text", "-in"],
        &[&der],
    )
}

/// The records of the register that name request `request`.
pub async fn records_of(h: &Harness, request: &str) -> Vec<IssuedCertificate> {
    h.api::<IssuedCertificate>()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|r| {
            r.spec
                .request_ref
                .as_ref()
                .is_some_and(|q| q.name == request)
        })
        .collect()
}
