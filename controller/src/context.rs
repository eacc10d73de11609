//! What every reconcile shares: the client, metrics, the Event recorder, the
//! per-CA signing contexts and per-object retry backoff.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime};

use ca::issue::Issuer;
use crds::{CRLSchedule, CertificateAuthority};
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::Store;
use kube::{Resource, ResourceExt};

use crate::malformed::Guarded;
use crate::metrics::Metrics;
use crate::reconcilers::responder::Outcome;
use crate::record_index::RecordIndex;

/// The one field manager of every status write.
pub const FIELD_MANAGER: &str = chop_register::CONTROLLER_FIELD_MANAGER;

/// A CA ready to sign: its issuer (certificate + HSM signer + lint key) and the
/// PEM chain handed out with every certificate it issues.
#[derive(Debug)]
pub struct SigningContext {
    /// The issuer.
    pub issuer: Issuer,
    /// The CA certificate followed by its chain up to the root (PEM).
    pub chain_pem: String,
}

/// Key of the signing-context cache: CA uid, generation and certificate serial.
pub type SigningKey = (String, i64, String);

/// Shared state of the controllers.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Event recorder (reporting controller `chop-controller`).
    pub recorder: Recorder,
    /// Test hook: abort the process right after a serial was reserved
    /// (`CHOP_TEST_CRASH_AFTER_RESERVE=1`). Never set in production.
    pub crash_after_reserve: bool,
    /// Test hook: abort the process right after an IssuedCertificate was created,
    /// before the request's status records it (`CHOP_TEST_CRASH_AFTER_COMMIT=1`).
    /// Never set in production.
    pub crash_after_commit: bool,
    /// Test hook: abort the process right after a CRL number was reserved in a
    /// CRLSchedule's status, before signing (`CHOP_TEST_CRASH_AFTER_CRL_RESERVE=1`).
    /// Never set in production.
    pub crash_after_crl_reserve: bool,
    signing: Mutex<HashMap<SigningKey, Arc<SigningContext>>>,
    responders: Mutex<HashMap<String, (SigningKey, SystemTime, Outcome)>>,
    /// The register's CA and state per record, kept by a watch (see [`crate::run`]).
    pub records: RecordIndex,
    cas: OnceLock<Store<Guarded<CertificateAuthority>>>,
    schedules: OnceLock<Store<Guarded<CRLSchedule>>>,
    written: Mutex<HashMap<String, String>>,
    failures: Mutex<HashMap<String, u32>>,
    /// Malformed objects already reported: uid → resourceVersion.
    invalid: Mutex<HashMap<String, String>>,
    /// The PKCS#11 modules CAs may name (`--pkcs11-module`), canonical.
    pub modules: ModuleAllowList,
    /// The chop-responder images a CA's `spec.responder.image` may name
    /// (`--responder-image`); the first is the default.
    pub responder_images: Vec<String>,
    /// The audit trail ([`crate::audit`]); off unless `main` starts a writer.
    pub audit: crate::audit::Audit,
    /// `--request-retention`: finished CertificateRequests are deleted this
    /// long after they finished ([`crate::gc`]); `None` keeps them.
    pub request_retention: Option<Duration>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("crash_after_reserve", &self.crash_after_reserve)
            .field("crash_after_commit", &self.crash_after_commit)
            .field("crash_after_crl_reserve", &self.crash_after_crl_reserve)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Context {
    /// A context for `client`; `instance` names this replica in Events.
    pub fn new(client: Client, metrics: Arc<Metrics>, instance: Option<String>) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: FIELD_MANAGER.into(),
                instance,
            },
        );
        Context {
            client,
            metrics,
            recorder,
            crash_after_reserve: false,
            crash_after_commit: false,
            crash_after_crl_reserve: false,
            signing: Mutex::new(HashMap::new()),
            responders: Mutex::new(HashMap::new()),
            records: RecordIndex::default(),
            cas: OnceLock::new(),
            schedules: OnceLock::new(),
            written: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            invalid: Mutex::new(HashMap::new()),
            modules: ModuleAllowList::default(),
            responder_images: vec![crate::reconcilers::responder::DEFAULT_IMAGE.to_string()],
            audit: crate::audit::Audit::off(),
            request_retention: None,
        }
    }

    /// Record that malformed object `uid` at `resource_version` is being
    /// reported; `false` if it already was at that version.
    pub fn note_invalid(&self, uid: &str, resource_version: Option<&str>) -> bool {
        let rv = resource_version.unwrap_or_default().to_string();
        lock(&self.invalid).insert(uid.to_string(), rv.clone()) != Some(rv)
    }

    /// Object `uid` deserialized: a later malformed version is reported again.
    pub fn forget_invalid(&self, uid: &str) {
        let mut map = lock(&self.invalid);
        if !map.is_empty() {
            map.remove(uid);
        }
    }

    /// The cached signing context for `key`.
    pub fn signing(&self, key: &SigningKey) -> Option<Arc<SigningContext>> {
        lock(&self.signing).get(key).cloned()
    }

    /// Cache a signing context, dropping older ones of the same CA.
    pub fn cache_signing(&self, key: SigningKey, ctx: Arc<SigningContext>) {
        let mut map = lock(&self.signing);
        map.retain(|k, _| k.0 != key.0);
        map.insert(key, ctx);
    }

    /// Drop every cached signing context of the CA with `uid` (its key was
    /// destroyed or moved): the next reconcile opens the token again.
    pub fn forget_signing(&self, uid: &str) {
        lock(&self.signing).retain(|k, _| k.0 != uid);
    }

    /// The responder outcome remembered for CA `key` (uid, generation, CA
    /// serial), if it is still good at `now`.
    pub fn responder_outcome(&self, key: &SigningKey, now: SystemTime) -> Option<Outcome> {
        lock(&self.responders)
            .get(&key.0)
            .filter(|(k, until, _)| k == key && now < *until)
            .map(|(_, _, o)| o.clone())
    }

    /// Remember a responder outcome for CA `key` until `until`.
    pub fn remember_responder(&self, key: SigningKey, until: SystemTime, outcome: Outcome) {
        lock(&self.responders).insert(key.0.clone(), (key, until, outcome));
    }

    /// Use `store` (the CertificateAuthorities, kept by a watch) for reads.
    pub fn set_cas(&self, store: Store<Guarded<CertificateAuthority>>) {
        let _ = self.cas.set(store);
    }

    /// CertificateAuthority `name` in `namespace` from the watch's store, once
    /// it has listed everything: `Some(None)` when it does not exist, `None`
    /// when the store cannot tell yet or holds it malformed (read the API
    /// instead: its error names the object).
    pub fn cached_ca(&self, namespace: &str, name: &str) -> Option<Option<CertificateAuthority>> {
        let store = self.cas.get()?;
        futures::FutureExt::now_or_never(store.wait_until_ready())?.ok()?;
        let key = kube::runtime::reflector::ObjectRef::new(name).within(namespace);
        match store.get(&key) {
            None => Some(None),
            Some(g) => crate::malformed::valid(g.as_ref()).map(|ca| Some(ca.clone())),
        }
    }

    /// Use `store` (the CRLSchedule controller's) for [`Context::cached_schedules`].
    pub fn set_schedules(&self, store: Store<Guarded<CRLSchedule>>) {
        let _ = self.schedules.set(store);
    }

    /// The live CRLSchedules of `namespace` from the watch's store, once it
    /// has listed everything; `None` before, or when one of the namespace's
    /// schedules is malformed (the API list then decides, and names it).
    pub fn cached_schedules(&self, namespace: &str) -> Option<Vec<CRLSchedule>> {
        let store = self.schedules.get()?;
        futures::FutureExt::now_or_never(store.wait_until_ready())?.ok()?;
        let mut out = Vec::new();
        for g in store.state() {
            if g.meta().namespace.as_deref() != Some(namespace) {
                continue;
            }
            let s = crate::malformed::valid(g.as_ref())?;
            if s.metadata.deletion_timestamp.is_none() {
                out.push(s.clone());
            }
        }
        Some(out)
    }

    /// Every CertificateAuthority in the watch's store, once it has listed
    /// everything (`None` before); malformed ones are left out.
    pub fn cached_cas(&self) -> Option<Vec<Arc<CertificateAuthority>>> {
        let store = self.cas.get()?;
        futures::FutureExt::now_or_never(store.wait_until_ready())?.ok()?;
        Some(
            store
                .state()
                .iter()
                .filter_map(|g| crate::malformed::valid(g.as_ref()).map(|ca| Arc::new(ca.clone())))
                .collect(),
        )
    }

    /// Remember that this controller's last write of object `uid` left it at
    /// `resource_version`: an object at that version is the current one.
    pub fn note_written(&self, uid: &str, resource_version: Option<String>) {
        let mut map = lock(&self.written);
        match resource_version {
            Some(rv) => map.insert(uid.to_string(), rv),
            None => map.remove(uid),
        };
    }

    /// Whether `resource_version` of object `uid` is the one this controller
    /// last wrote.
    pub fn is_own_write(&self, uid: &str, resource_version: Option<&str>) -> bool {
        resource_version.is_some_and(|rv| lock(&self.written).get(uid).is_some_and(|w| w == rv))
    }

    /// Backoff for the next retry of object `uid` after a failure: 2 s doubling up
    /// to 5 minutes.
    pub fn backoff(&self, uid: &str) -> Duration {
        let mut map = lock(&self.failures);
        let n = map.entry(uid.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        let secs = 2u64.saturating_pow((*n).min(8)).min(300);
        Duration::from_secs(secs)
    }

    /// Forget the failures of object `uid` (it reconciled successfully).
    pub fn reset_backoff(&self, uid: &str) {
        lock(&self.failures).remove(uid);
    }

    /// Publish an Event about `obj` (PascalCase `reason`). Failures to publish
    /// are logged, never fatal.
    pub async fn event<K>(&self, obj: &K, warning: bool, reason: &str, note: String)
    where
        K: Resource<DynamicType = ()>,
    {
        let ev = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.to_string(),
            note: Some(note),
            action: reason.to_string(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &obj.object_ref(&())).await {
            tracing::warn!(error = %e, name = %obj.meta().name.clone().unwrap_or_default(), "could not publish event");
        }
    }
}

/// `Kind/namespace/name` of an object, for errors.
pub fn object_id<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    format!(
        "{}/{}/{}",
        K::kind(&()),
        obj.namespace().unwrap_or_default(),
        obj.name_any()
    )
}

/// The PKCS#11 modules the controller may load: a CA's `spec.hsm.module` is
/// compared with them after canonicalisation (symlinks and `..` resolved), and
/// anything else is refused before it is loaded. Set by the flag
/// `--pkcs11-module PATH` (repeatable).
#[derive(Clone, Debug)]
pub struct ModuleAllowList {
    /// The paths as given on the command line, for messages.
    given: Vec<String>,
    /// Their canonical forms (paths that do not exist are left out).
    canonical: Vec<PathBuf>,
}

impl Default for ModuleAllowList {
    /// Debian's SoftHSM2 module, the CRD's default `spec.hsm.module`.
    fn default() -> Self {
        ModuleAllowList::new(&[ca::signer::pkcs11::SOFTHSM2_MODULE.to_string()])
    }
}

/// Whether two `spec.hsm.module` values name the same library: compared after
/// canonicalisation (like the allow-list), so `..` or a symlink does not make
/// one module two.
pub fn same_module(a: &str, b: &str) -> bool {
    match (Path::new(a).canonicalize(), Path::new(b).canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// The flag that sets the allow-list, named in refusals.
pub const MODULE_FLAG: &str = "--pkcs11-module";

impl ModuleAllowList {
    /// The allow-list of `paths`.
    pub fn new(paths: &[String]) -> Self {
        ModuleAllowList {
            given: paths.to_vec(),
            canonical: paths
                .iter()
                .filter_map(|p| Path::new(p).canonicalize().ok())
                .collect(),
        }
    }

    /// The paths as given.
    pub fn paths(&self) -> &[String] {
        &self.given
    }

    /// The canonical path to load for `module` if it is on the list, else why
    /// not (a message naming the flag and the list).
    pub fn check(&self, module: &str) -> Result<PathBuf, String> {
        let refuse = |why: &str| {
            format!(
                "PKCS#11 module {module:?} {why}; the controller loads only the modules given with {MODULE_FLAG} ({})",
                self.given.join(", ")
            )
        };
        let path = Path::new(module);
        if !path.is_absolute() {
            return Err(refuse("is not an absolute path"));
        }
        let canonical = path
            .canonicalize()
            .map_err(|e| refuse(&format!("cannot be resolved ({e})")))?;
        if self.canonical.contains(&canonical) {
            Ok(canonical)
        } else {
            Err(refuse("is not allowed"))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn modules_are_compared_after_canonicalisation() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("lib").join("libgood.so");
        std::fs::create_dir_all(good.parent().unwrap()).unwrap();
        std::fs::write(&good, b"").unwrap();
        let evil = dir.path().join("evil.so");
        std::fs::write(&evil, b"").unwrap();
        let link = dir.path().join("link.so");
        std::os::unix::fs::symlink(&good, &link).unwrap();
        let list = ModuleAllowList::new(&[link.display().to_string()]);

        let canonical = good.canonicalize().unwrap();
        assert_eq!(list.check(good.to_str().unwrap()).unwrap(), canonical);
        let dotted = format!("{}/lib/../lib/libgood.so", dir.path().display());
        assert_eq!(list.check(&dotted).unwrap(), canonical);

        for bad in [
            evil.display().to_string(),
            format!("{}/lib/../evil.so", dir.path().display()),
            "libgood.so".to_string(),
            format!("{}/missing.so", dir.path().display()),
        ] {
            let e = list.check(&bad).unwrap_err();
            assert!(e.contains(MODULE_FLAG) && e.contains(&bad), "{e}");
        }
        assert!(same_module(good.to_str().unwrap(), &dotted));
        assert!(same_module(link.to_str().unwrap(), &dotted));
        assert!(!same_module(good.to_str().unwrap(), evil.to_str().unwrap()));
        // A symlink to a file not on the list does not make it allowed.
        let evil_link = dir.path().join("lib").join("libgood2.so");
        std::os::unix::fs::symlink(&evil, &evil_link).unwrap();
        assert!(list.check(evil_link.to_str().unwrap()).is_err());
    }
}
