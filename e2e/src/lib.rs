//! chop's end-to-end harness: a real etcd + kube-apiserver on loopback (built from
//! source by `e2e/controlplane.sh build`) and the helper tests use to get clients,
//! users, fresh namespaces and CRDs.
//!
//! Which control plane a test talks to:
//! - if `CHOP_E2E_DIR` is set, the plane running there (started by
//!   `e2e/controlplane.sh up`, as `scripts/test.sh` does);
//! - otherwise the first test of the process starts a private plane in a temporary
//!   directory. A watchdog stops it when the test process exits, whatever the
//!   reason, so `cargo test -p e2e` works on its own and leaves nothing running.
//!
//! A test that cannot get a plane fails with the reason (for instance "control-plane
//! binaries missing ...: run e2e/controlplane.sh build"); it is never skipped.
//!
//! ```no_run
//! # async fn demo() -> Result<(), e2e::Error> {
//! let env = e2e::TestEnv::with_crds(&[/* CustomResourceDefinition */]).await?;
//! let admin = env.admin();                                   // system:masters
//! let officer = env.token_user("officer-1").await?;          // pre-defined, group chop:officers
//! let other = env.user("officer-9", &["chop:officers"]).await?; // minted client certificate
//! # let _ = (admin, officer, other);
//! env.cleanup().await?;
//! # Ok(()) }
//! ```

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::{Namespace, NamespaceSpec};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, ObjectMeta, Patch, PatchParams, PostParams,
};
use kube::config::{AuthInfo, KubeConfigOptions, Kubeconfig};
use kube::core::{ApiResource, GroupVersionKind};
use kube::discovery::{Discovery, Scope, verbs};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, Config};

/// Environment variable naming the state directory of a running plane.
pub const STATE_DIR_ENV: &str = "CHOP_E2E_DIR";
/// Field manager used by the helper for server-side apply.
pub const FIELD_MANAGER: &str = "chop-e2e";
/// Label put on every namespace the helper creates.
pub const NAMESPACE_LABEL: &str = "chop.e2e/test";

const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Everything that can go wrong in the harness.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No control plane could be started or found.
    #[error("cannot get an e2e control plane: {0}")]
    ControlPlane(String),
    /// `e2e/controlplane.sh` failed.
    #[error("`controlplane.sh {command}` failed: {stderr}")]
    Script {
        /// The sub-command that failed.
        command: String,
        /// What the script printed on stderr.
        stderr: String,
    },
    /// A file of the plane could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A kubeconfig could not be loaded.
    #[error("kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: kube::config::KubeconfigError,
    },
    /// A pre-defined token user that is not in the plane's token file.
    #[error("no pre-defined user {0:?} in tokens.csv")]
    UnknownUser(String),
    /// A CRD document that cannot be used.
    #[error("invalid CRD: {0}")]
    InvalidCrd(String),
    /// Something did not happen in time.
    #[error("timed out after {:?} waiting for {what}", READY_TIMEOUT)]
    Timeout {
        /// What was awaited.
        what: String,
    },
    /// A manifest of `manifests/` that cannot be installed as is.
    #[error("manifests/{file}: {message}")]
    Manifest {
        /// The file under `manifests/`.
        file: String,
        /// What is wrong.
        message: String,
    },
    /// The Kubernetes API answered with an error.
    #[error(transparent)]
    Kube(#[from] kube::Error),
}

/// A running control plane: its state directory and the script that manages it.
#[derive(Debug)]
pub struct ControlPlane {
    dir: PathBuf,
    script: PathBuf,
}

static SHARED: OnceLock<Result<ControlPlane, String>> = OnceLock::new();

impl ControlPlane {
    /// The plane of this test process: the one named by `CHOP_E2E_DIR`, else a private
    /// one started on first use (blocking, a few seconds) and stopped when the process exits.
    pub fn shared() -> Result<&'static ControlPlane, Error> {
        SHARED
            .get_or_init(|| Self::find_or_start().map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| Error::ControlPlane(e.clone()))
    }

    fn find_or_start() -> Result<ControlPlane, Error> {
        let script = script_path();
        if let Some(dir) = std::env::var_os(STATE_DIR_ENV) {
            let plane = ControlPlane {
                dir: PathBuf::from(dir),
                script,
            };
            if !plane.admin_kubeconfig().is_file() {
                return Err(Error::ControlPlane(format!(
                    "{STATE_DIR_ENV}={} but no plane runs there (no admin.kubeconfig); \
                     start one with `e2e/controlplane.sh up` or unset {STATE_DIR_ENV}",
                    plane.dir.display()
                )));
            }
            return Ok(plane);
        }
        let dir = std::env::temp_dir().join(format!(
            "chop-e2e-{}-{}",
            std::process::id(),
            unique_suffix()
        ));
        let plane = ControlPlane { dir, script };
        plane.run_script(&["up"], Some(std::process::id()))?;
        Ok(plane)
    }

    /// The state directory (certificates, tokens, kubeconfigs, logs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The admin kubeconfig (user `admin`, group `system:masters`).
    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.dir.join("admin.kubeconfig")
    }

    /// A client acting as the cluster admin.
    pub async fn admin_client(&self) -> Result<Client, Error> {
        client_from_kubeconfig(&self.admin_kubeconfig()).await
    }

    /// A client for a user authenticated by a client certificate with `CN=name` and one
    /// `O=` per group, minted on demand (and reused) by `controlplane.sh user`.
    pub async fn client_for_user(&self, name: &str, groups: &[&str]) -> Result<Client, Error> {
        let path = self.kubeconfig_for_user(name, groups).await?;
        client_from_kubeconfig(&path).await
    }

    /// The kubeconfig file of a client-certificate user (see
    /// [`ControlPlane::client_for_user`]), for programs the test starts.
    pub async fn kubeconfig_for_user(&self, name: &str, groups: &[&str]) -> Result<PathBuf, Error> {
        let mut args = vec!["user".to_owned(), name.to_owned()];
        args.extend(groups.iter().map(|g| (*g).to_owned()));
        let dir = self.dir.clone();
        let script = self.script.clone();
        let out = tokio::task::spawn_blocking(move || {
            let plane = ControlPlane { dir, script };
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            plane.run_script(&args, None)
        })
        .await
        .map_err(|e| Error::ControlPlane(format!("minting a user certificate: {e}")))??;
        Ok(PathBuf::from(out.trim()))
    }

    /// The pre-defined static-token users of this plane.
    pub fn token_users(&self) -> Result<Vec<TokenUser>, Error> {
        let path = self.dir.join("tokens.csv");
        let text = std::fs::read_to_string(&path).map_err(|source| Error::Io { path, source })?;
        Ok(parse_tokens(&text))
    }

    /// A client for one of the pre-defined static-token users: `chop-admin-1`,
    /// `chop-admin-2` (`chop:administrators`), `officer-1`, `officer-2` (`chop:officers`),
    /// `auditor-1` (`chop:auditors`), `ra-system` (`chop:registration-authorities`),
    /// `controller-1` (`chop:controllers`).
    pub async fn client_for_token_user(&self, name: &str) -> Result<Client, Error> {
        let token = self
            .token_users()?
            .into_iter()
            .find(|u| u.name == name)
            .map(|u| u.token)
            .ok_or_else(|| Error::UnknownUser(name.to_owned()))?;
        self.client_with_token(&token).await
    }

    /// A client presenting a bearer token (for instance a service-account token).
    pub async fn client_with_token(&self, token: &str) -> Result<Client, Error> {
        let mut config = config_from_kubeconfig(&self.admin_kubeconfig()).await?;
        config.auth_info = AuthInfo {
            token: Some(token.to_owned().into()),
            ..AuthInfo::default()
        };
        Ok(Client::try_from(config)?)
    }

    /// A client that authenticates as the admin and impersonates `user` in `groups`
    /// (`Impersonate-User` / `Impersonate-Group` headers).
    pub async fn client_impersonating(&self, user: &str, groups: &[&str]) -> Result<Client, Error> {
        let mut config = config_from_kubeconfig(&self.admin_kubeconfig()).await?;
        config.auth_info.impersonate = Some(user.to_owned());
        config.auth_info.impersonate_groups =
            Some(groups.iter().map(|g| (*g).to_owned()).collect());
        Ok(Client::try_from(config)?)
    }

    fn run_script(&self, args: &[&str], watch_pid: Option<u32>) -> Result<String, Error> {
        let mut cmd = Command::new("bash");
        cmd.arg(&self.script)
            .args(args)
            .env(STATE_DIR_ENV, &self.dir)
            .stdin(Stdio::null());
        if let Some(pid) = watch_pid {
            cmd.env("CHOP_E2E_WATCH_PID", pid.to_string());
        }
        let command = args.join(" ");
        let out = cmd.output().map_err(|source| Error::Io {
            path: self.script.clone(),
            source,
        })?;
        if !out.status.success() {
            return Err(Error::Script {
                command,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// One test's slice of the plane: an admin client and a fresh namespace.
pub struct TestEnv {
    plane: &'static ControlPlane,
    admin: Client,
    namespace: String,
}

impl std::fmt::Debug for TestEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestEnv")
            .field("plane", &self.plane)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl TestEnv {
    /// A fresh namespace `chop-test-<random>` on the shared plane.
    pub async fn new() -> Result<Self, Error> {
        Self::with_crds(&[]).await
    }

    /// Like [`TestEnv::new`], after installing `crds` (idempotent, safe to race with
    /// other tests installing the same CRDs).
    pub async fn with_crds(crds: &[CustomResourceDefinition]) -> Result<Self, Error> {
        let plane = ControlPlane::shared()?;
        let admin = plane.admin_client().await?;
        install_crds(&admin, crds).await?;
        let namespace = format!("chop-test-{}", unique_suffix());
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(namespace.clone()),
                labels: Some([(NAMESPACE_LABEL.to_owned(), "true".to_owned())].into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        Api::<Namespace>::all(admin.clone())
            .create(&PostParams::default(), &ns)
            .await?;
        Ok(TestEnv {
            plane,
            admin,
            namespace,
        })
    }

    /// The control plane.
    pub fn plane(&self) -> &'static ControlPlane {
        self.plane
    }

    /// This test's namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// A client acting as the cluster admin.
    pub fn admin(&self) -> Client {
        self.admin.clone()
    }

    /// See [`ControlPlane::client_for_user`].
    pub async fn user(&self, name: &str, groups: &[&str]) -> Result<Client, Error> {
        self.plane.client_for_user(name, groups).await
    }

    /// See [`ControlPlane::client_for_token_user`].
    pub async fn token_user(&self, name: &str) -> Result<Client, Error> {
        self.plane.client_for_token_user(name).await
    }

    /// Deletes the namespace and what is in it. The plane runs no
    /// kube-controller-manager, hence no namespace controller: the helper does its job,
    /// deleting every namespaced resource in the namespace (objects with finalizers
    /// stay until their owner removes them) and then finalizing the namespace.
    pub async fn cleanup(self) -> Result<(), Error> {
        let api = Api::<Namespace>::all(self.admin.clone());
        // A namespace holding a CA's register is deleted only once decommissioned
        // (manifests/policies/register-protection.yaml; the admin, a member of
        // system:masters, may decommission).
        let decommission =
            serde_json::json!({"metadata": {"labels": {"chop.dev/decommissioned": "true"}}});
        if let Err(e) = api
            .patch(
                &self.namespace,
                &PatchParams::default(),
                &Patch::Merge(&decommission),
            )
            .await
        {
            return ignore_not_found(e);
        }
        if let Err(e) = api.delete(&self.namespace, &DeleteParams::default()).await {
            return ignore_not_found(e);
        }
        let discovery = Discovery::new(self.admin.clone()).run_aggregated().await?;
        for group in discovery.groups() {
            for (resource, caps) in group.recommended_resources() {
                if caps.scope != Scope::Namespaced
                    || !caps.supports_operation(verbs::DELETE_COLLECTION)
                {
                    continue;
                }
                let objects = Api::<DynamicObject>::namespaced_with(
                    self.admin.clone(),
                    &self.namespace,
                    &resource,
                );
                if let Err(e) = objects
                    .delete_collection(&DeleteParams::default(), &ListParams::default())
                    .await
                {
                    ignore_not_found(e)?;
                }
            }
        }
        let mut ns = match api.get(&self.namespace).await {
            Ok(ns) => ns,
            Err(e) => return ignore_not_found(e),
        };
        ns.spec = Some(NamespaceSpec {
            finalizers: Some(Vec::new()),
        });
        match api
            .replace_subresource("finalize", &self.namespace, &PostParams::default(), &ns)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => ignore_not_found(e),
        }
    }
}

fn ignore_not_found(e: kube::Error) -> Result<(), Error> {
    match e {
        kube::Error::Api(s) if s.code == 404 => Ok(()),
        e => Err(e.into()),
    }
}

/// Server-side-applies `crds` (forcing ownership for [`FIELD_MANAGER`]) and waits
/// until each is established and its resources are served.
pub async fn install_crds(client: &Client, crds: &[CustomResourceDefinition]) -> Result<(), Error> {
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for crd in crds {
        let name = crd_name(crd)?;
        let mut crd = crd.clone();
        crd.status = None;
        crd.metadata.resource_version = None;
        crd.metadata.managed_fields = None;
        api.patch(name, &params, &Patch::Apply(&crd)).await?;
    }
    for crd in crds {
        let name = crd_name(crd)?;
        wait(
            format!("CRD {name} to be established"),
            await_condition(api.clone(), name, conditions::is_crd_established()),
        )
        .await?
        .map_err(|e| Error::InvalidCrd(format!("{name}: {e}")))?;
        for version in crd.spec.versions.iter().filter(|v| v.served) {
            let gvk = GroupVersionKind::gvk(&crd.spec.group, &version.name, &crd.spec.names.kind);
            let resource = ApiResource::from_gvk_with_plural(&gvk, &crd.spec.names.plural);
            let dynamic = Api::<DynamicObject>::all_with(client.clone(), &resource);
            wait(format!("{name} {} to be served", version.name), async {
                while dynamic.list(&ListParams::default().limit(1)).await.is_err() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
            .await?;
        }
    }
    Ok(())
}

/// Reads CRDs from a YAML file (several documents separated by `---` allowed).
pub fn load_crds(path: impl AsRef<Path>) -> Result<Vec<CustomResourceDefinition>, Error> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })?;
    parse_crds(&text).map_err(|e| Error::InvalidCrd(format!("{}: {e}", path.display())))
}

/// Parses CRDs from YAML text (several documents separated by `---` allowed).
pub fn parse_crds(yaml: &str) -> Result<Vec<CustomResourceDefinition>, Error> {
    let docs: Vec<Option<CustomResourceDefinition>> =
        serde_saphyr::from_multiple(yaml).map_err(|e| Error::InvalidCrd(e.to_string()))?;
    Ok(docs.into_iter().flatten().collect())
}

fn crd_name(crd: &CustomResourceDefinition) -> Result<&str, Error> {
    crd.metadata
        .name
        .as_deref()
        .ok_or_else(|| Error::InvalidCrd("metadata.name missing".to_owned()))
}

async fn wait<T>(what: String, fut: impl std::future::Future<Output = T>) -> Result<T, Error> {
    tokio::time::timeout(READY_TIMEOUT, fut)
        .await
        .map_err(|_| Error::Timeout { what })
}

async fn config_from_kubeconfig(path: &Path) -> Result<Config, Error> {
    let kubeconfig_error = |source| Error::Kubeconfig {
        path: path.to_owned(),
        source,
    };
    let kubeconfig = Kubeconfig::read_from(path).map_err(kubeconfig_error)?;
    Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(kubeconfig_error)
}

async fn client_from_kubeconfig(path: &Path) -> Result<Client, Error> {
    Ok(Client::try_from(config_from_kubeconfig(path).await?)?)
}

fn script_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("controlplane.sh")
}

/// A pre-defined user from the plane's static token file.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenUser {
    token: String,
    /// User name.
    pub name: String,
    /// Groups the user belongs to.
    pub groups: Vec<String>,
}

impl TokenUser {
    /// The bearer token.
    pub fn token(&self) -> &str {
        &self.token
    }
}

impl std::fmt::Debug for TokenUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenUser")
            .field("name", &self.name)
            .field("groups", &self.groups)
            .finish_non_exhaustive()
    }
}

/// Parses `token,user,uid,"group1,group2"` lines.
fn parse_tokens(text: &str) -> Vec<TokenUser> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(4, ',');
            let token = parts.next()?.trim();
            let name = parts.next()?.trim();
            let _uid = parts.next()?;
            let groups = parts.next().unwrap_or("").trim().trim_matches('"');
            (!token.is_empty() && !name.is_empty()).then(|| TokenUser {
                token: token.to_owned(),
                name: name.to_owned(),
                groups: groups
                    .split(',')
                    .filter(|g| !g.is_empty())
                    .map(str::to_owned)
                    .collect(),
            })
        })
        .collect()
}

/// 10 hex digits, unique within the process and random across processes.
fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    format!("{:010x}", h.finish() & 0xff_ffff_ffff)
}

/// The repository's `manifests/` directory.
pub fn manifests_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../manifests")
}

/// The resource files `manifests/kustomization.yaml` lists, but the CRDs (tests
/// install `crds::all()`) and directories (`deploy/`, the workload).
pub fn kustomization_files() -> Result<Vec<String>, Error> {
    let path = manifests_dir().join("kustomization.yaml");
    let text = std::fs::read_to_string(&path).map_err(|source| Error::Io {
        path: path.clone(),
        source,
    })?;
    let doc: serde_json::Value = serde_saphyr::from_str(&text).map_err(|e| Error::Manifest {
        file: "kustomization.yaml".into(),
        message: e.to_string(),
    })?;
    Ok(doc["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r.as_str())
        .filter(|f| !f.starts_with("crds/") && f.ends_with(".yaml"))
        .map(str::to_owned)
        .collect())
}

/// Server-side apply (as `manager`, forced) of the documents of `files` under
/// `manifests/` (ClusterRoles and admission policies: every one must be
/// cluster-scoped). Every admission policy binding is restricted to namespaces
/// labelled `<label>=true` and, with `suffix`, renamed `<name>-<suffix>`, so
/// test binaries running side by side each bind their own namespaces only.
pub async fn install_manifests(
    client: &Client,
    files: &[String],
    label: &str,
    suffix: Option<&str>,
    manager: &str,
) -> Result<(), Error> {
    for file in files {
        let path = manifests_dir().join(file);
        let text = std::fs::read_to_string(&path).map_err(|source| Error::Io { path, source })?;
        let docs: Vec<Option<serde_json::Value>> =
            serde_saphyr::from_multiple(&text).map_err(|e| Error::Manifest {
                file: file.clone(),
                message: e.to_string(),
            })?;
        for mut doc in docs.into_iter().flatten() {
            let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
            if kind.ends_with("AdmissionPolicyBinding") {
                if let Some(suffix) = suffix {
                    let name = format!(
                        "{}-{suffix}",
                        doc["metadata"]["name"].as_str().unwrap_or_default()
                    );
                    doc["metadata"]["name"] = serde_json::json!(name);
                }
                doc["spec"]["matchResources"] =
                    serde_json::json!({"namespaceSelector": {"matchLabels": {label: "true"}}});
            }
            let api_version = doc["apiVersion"].as_str().unwrap_or_default().to_owned();
            let (group, version) = api_version.split_once('/').unwrap_or(("", &api_version));
            let gvk = GroupVersionKind::gvk(group, version, &kind);
            let (resource, caps) = kube::discovery::pinned_kind(client, &gvk).await?;
            if caps.scope != Scope::Cluster {
                return Err(Error::Manifest {
                    file: file.clone(),
                    message: format!(
                        "{kind} is namespaced; manifests/ holds cluster-scoped objects"
                    ),
                });
            }
            let obj: kube::api::DynamicObject =
                serde_json::from_value(doc).map_err(|e| Error::Manifest {
                    file: file.clone(),
                    message: e.to_string(),
                })?;
            let name = obj.metadata.name.clone().unwrap_or_default();
            Api::<kube::api::DynamicObject>::all_with(client.clone(), &resource)
                .patch(
                    &name,
                    &PatchParams::apply(manager).force(),
                    &Patch::Apply(&obj),
                )
                .await?;
        }
    }
    Ok(())
}

/// Retries `f` every 200 ms until it returns `Ok`, and panics after 30 s with
/// the last error: RBAC and admission policies reach the API server's
/// authorizer and admission caches through informers, a moment after they are
/// written, so a test waits for them before it asserts a refusal or a grant.
#[allow(clippy::panic)]
pub async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) if std::time::Instant::now() > deadline => {
                panic!("{what}: still failing after 30s: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_lines_parse() {
        let users = parse_tokens(
            "abc,officer-1,officer-1,\"chop:officers\"\nxyz,admin,admin,\"system:masters,extra\"\n\n",
        );
        assert_eq!(users.len(), 2);
        assert_eq!(users[0].name, "officer-1");
        assert_eq!(users[0].groups, vec!["chop:officers"]);
        assert_eq!(users[1].token, "xyz");
        assert_eq!(users[1].groups, vec!["system:masters", "extra"]);
    }

    #[test]
    fn crd_yaml_parses_multiple_documents() {
        let yaml = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: things.example.com
spec:
  group: example.com
  names: {kind: Thing, plural: things}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema: {type: object}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: others.example.com
spec:
  group: example.com
  names: {kind: Other, plural: others}
  scope: Cluster
  versions: []
"#;
        let crds = parse_crds(yaml).unwrap();
        assert_eq!(crds.len(), 2);
        assert_eq!(crd_name(&crds[0]).unwrap(), "things.example.com");
        assert_eq!(crds[1].spec.scope, "Cluster");
    }

    #[test]
    fn suffixes_differ() {
        let a = unique_suffix();
        let b = unique_suffix();
        assert_eq!(a.len(), 10);
        assert_ne!(a, b);
    }
}
