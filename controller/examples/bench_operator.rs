//! The operator benchmark of issue 4, in one run on the real local control
//! plane with the real release binaries (driven by `scripts/bench-operator.sh`,
//! which builds them, initialises the SoftHSM2 token and starts the plane):
//!
//! 1. the raw SoftHSM2 signing rate of the CA key (RSA-2048, the controller's
//!    token), measured in this process;
//! 2. N certificates end to end: CertificateRequests (CSRs made beforehand,
//!    untimed) approved automatically (`spec.approval.autoApproveUsers`, with
//!    the admission policies of `manifests/policies` in force) or by an
//!    officer, from the first create to the last `Issued=True`, with a bounded
//!    number in flight; certs/s next to the raw HSM rate;
//! 3. chop-responder `serve --kube` as the CA's ServiceAccount: time from a
//!    Revocation's creation to the first OCSP answer "revoked" (POST every 10 ms);
//! 4. memory at scale: BENCH_RECORDS IssuedCertificates created directly, then
//!    (certificates signed in-process by a software RSA-2048 key), then
//!    VmRSS/VmHWM of the controller, the responder, kube-apiserver and etcd,
//!    and one more revocation latency at that size.
//!
//! Environment: CHOP_CONTROLLER_BIN, CHOP_RESPONDER_BIN, SOFTHSM2_CONF (token
//! `moica`, user PIN BENCH_PIN), BENCH_DIR (work directory), CHOP_E2E_DIR and
//! KUBECONFIG (from `e2e/controlplane.sh run`), BENCH_N (500), BENCH_INFLIGHT
//! (32), BENCH_REVOCATIONS (50), BENCH_RECORDS (100000), BENCH_APPROVAL
//! (`auto` or `officer`), BENCH_AUDIT (`on`: the controller writes its audit
//! trail with the key in token `chop-audit`, same PIN; `off`: `--audit off`),
//! BENCH_ISSUANCE_ONLY (1: stop after step 2; the audit on/off comparison),
//! BENCH_SCALE_COMPARE (1: instead of steps 2-4, BENCH_ROUNDS (2) rounds of N
//! certificates with an empty register, then BENCH_RECORDS records, then
//! BENCH_ROUNDS rounds more; the ratio of the medians, issue 12).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use ca::csr::{SubjectKey, build_csr, to_pem};
use ca::issue::{CaConfig, IssuanceRequest, Issuer, RootRequest, self_sign_root};
use ca::name::DistinguishedName;
use ca::ocsp::CertIdHash;
use ca::profile::Profile;
use ca::serial::Serial;
use ca::signer::pkcs11::{KeyRef, Pkcs11Signer, SOFTHSM2_MODULE};
use ca::signer::software::SoftwareKey;
use ca::signer::{Curve, KeySpec, Pin, Signer};
use controller::register::{Entry, commit};
use crds::{CertificateAuthority, CertificateRequest, IssuedCertificate, Revocation};
use der::{Decode, DecodePem, Encode};
use futures::{SinkExt, StreamExt};
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use kube::runtime::watcher;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use x509_cert::Certificate;

const CA: &str = "root";
const RA_USER: &str = "ra-bench";
const SSA: &str = "chop-bench";

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn env_path(name: &str) -> Result<PathBuf> {
    std::env::var_os(name)
        .map(PathBuf::from)
        .with_context(|| format!("{name} is not set (run scripts/bench-operator.sh)"))
}

/// A child process killed when dropped.
#[derive(Debug)]
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[derive(Debug)]
struct Bench {
    env: e2e::TestEnv,
    dir: PathBuf,
    ns: String,
}

impl Bench {
    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.env.admin(), &self.ns)
    }

    /// Server-side apply every document of `files` (under `manifests/`);
    /// bindings are renamed and limited to namespaces labelled `select`.
    async fn apply_manifests(&self, files: &[&str], select: &str) -> Result<()> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests");
        for file in files {
            let text = std::fs::read_to_string(root.join(file))?;
            let docs: Vec<Option<Value>> = serde_saphyr::from_multiple(&text)?;
            for mut doc in docs.into_iter().flatten() {
                let kind = doc["kind"].as_str().context("kind")?.to_owned();
                if kind.ends_with("AdmissionPolicyBinding") {
                    let name = format!("{}-bench", doc["metadata"]["name"].as_str().unwrap());
                    doc["metadata"]["name"] = json!(name);
                    doc["spec"]["matchResources"] =
                        json!({"namespaceSelector": {"matchLabels": {select: "true"}}});
                }
                let (group, version) = doc["apiVersion"]
                    .as_str()
                    .and_then(|v| v.split_once('/'))
                    .context("apiVersion")?;
                let gvk = GroupVersionKind::gvk(group, version, &kind);
                let lower = kind.to_ascii_lowercase();
                let plural = lower
                    .strip_suffix('y')
                    .map_or(format!("{lower}s"), |s| format!("{s}ies"));
                let resource = ApiResource::from_gvk_with_plural(&gvk, &plural);
                let obj: DynamicObject = serde_json::from_value(doc)?;
                let name = obj.metadata.name.clone().context("name")?;
                Api::<DynamicObject>::all_with(self.env.admin(), &resource)
                    .patch(&name, &PatchParams::apply(SSA).force(), &Patch::Apply(&obj))
                    .await
                    .with_context(|| format!("applying {kind} {name}"))?;
            }
        }
        Ok(())
    }

    /// A RoleBinding in the namespace of ClusterRole `role` to subject `user`.
    async fn bind(&self, name: &str, role: &str, user: &str) -> Result<()> {
        let rb: k8s_openapi::api::rbac::v1::RoleBinding = serde_json::from_value(json!({
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]
        }))?;
        self.api().create(&PostParams::default(), &rb).await?;
        Ok(())
    }

    /// A kubeconfig for client-certificate user `user`, copied to a path
    /// without ':' (KUBECONFIG is a colon-separated list).
    async fn kubeconfig(&self, user: &str, groups: &[&str], file: &str) -> Result<PathBuf> {
        let minted = self.env.plane().kubeconfig_for_user(user, groups).await?;
        let safe = self.dir.join(file);
        std::fs::copy(minted, &safe)?;
        Ok(safe)
    }
}

/// Poll `f` every `every` until it returns `Some`, or fail after `secs`.
async fn until<T, F, Fut>(what: &str, secs: u64, every: Duration, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {secs} s waiting for {what}");
        }
        tokio::time::sleep(every).await;
    }
}

fn has_condition(cr: &CertificateRequest, type_: &str) -> bool {
    cr.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == type_ && c.status == "True")
    })
}

/// One HTTP/1.1 request to the responder; the body of the answer.
async fn http(port: u16, method: &str, path: &str, body: &[u8]) -> Result<Vec<u8>> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/ocsp-request\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await?;
    s.write_all(body).await?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await?;
    let at = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no HTTP header end")?;
    Ok(out.split_off(at + 4))
}

/// The certificate status word of an OCSP response (good, revoked, unknown).
fn ocsp_status(der: &[u8]) -> Result<&'static str> {
    use x509_ocsp::{BasicOcspResponse, CertStatus, OcspResponse};
    let resp = OcspResponse::from_der(der)?;
    let bytes = resp
        .response_bytes
        .ok_or_else(|| anyhow!("OCSP {:?}", resp.response_status))?;
    let basic = BasicOcspResponse::from_der(bytes.response.as_bytes())?;
    let single = basic
        .tbs_response_data
        .responses
        .first()
        .context("no SingleResponse")?;
    Ok(match single.cert_status {
        CertStatus::Good(_) => "good",
        CertStatus::Revoked(_) => "revoked",
        CertStatus::Unknown(_) => "unknown",
    })
}

/// Ask the responder on `port` about `serial` (POST).
async fn ocsp(port: u16, ca: &Certificate, serial: &Serial) -> Result<&'static str> {
    let req = ca::ocsp::build_request(ca, std::slice::from_ref(serial), CertIdHash::Sha1, None)?;
    ocsp_status(&http(port, "POST", "/", &req).await?)
}

/// Poll every 10 ms until the responder says `want` for `serial`.
async fn ocsp_until(port: u16, ca: &Certificate, serial: &Serial, want: &str) -> Result<()> {
    let what = format!("OCSP {want} for {}", serial.to_hex());
    until(&what, 60, Duration::from_millis(10), || async {
        (ocsp(port, ca, serial).await.ok()? == want).then_some(())
    })
    .await
}

/// A value of the responder's Prometheus metrics.
async fn metric(port: u16, name: &str) -> Option<f64> {
    let body = http(port, "GET", "/metrics", b"").await.ok()?;
    String::from_utf8_lossy(&body).lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == name).then(|| v.trim().parse().ok())?
    })
}

/// VmRSS and VmHWM of process `pid`, in MiB.
fn memory(pid: u32) -> (f64, f64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (kib("VmRSS:") / 1024.0, kib("VmHWM:") / 1024.0)
}

/// CPU seconds (user + system) process `pid` has used (USER_HZ = 100).
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime is the 12th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    f.get(11)
        .zip(f.get(12))
        .map_or(0.0, |(u, s)| (u + s) / 100.0)
}

/// Mean of each `<name>_sum`/`<name>_count` pair in the controller's metrics
/// (reconcile and HSM durations), and the error counters.
async fn controller_breakdown(port: u16) {
    let Ok(text) = http(port, "GET", "/metrics", b"").await else {
        return;
    };
    let text = String::from_utf8_lossy(&text);
    let mut sums = HashMap::new();
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((k, v)) = l.rsplit_once(' ') else {
            continue;
        };
        let v: f64 = v.parse().unwrap_or(0.0);
        if let Some((name, labels)) = k.split_once('{') {
            for (suffix, i) in [("_sum", 0), ("_count", 1)] {
                if let Some(base) = name.strip_suffix(suffix) {
                    let e = sums
                        .entry(format!("{base}{{{labels}"))
                        .or_insert([0.0, 0.0]);
                    e[i] = v;
                }
            }
            if name.contains("errors") && v > 0.0 {
                println!("     {k} {v}");
            }
        }
    }
    let mut keys: Vec<_> = sums.keys().cloned().collect();
    keys.sort();
    for k in keys {
        let [sum, count] = sums[&k];
        if count > 0.0 {
            println!(
                "     {k}: {count:.0} x mean {:.1} ms = {sum:.2} s",
                sum / count * 1000.0
            );
        }
    }
}

/// kube-apiserver's `apiserver_request_total` for chop.dev resources and
/// Events, by (resource/subresource, verb), via `kubectl get --raw /metrics`
/// (CHOP_KUBECTL; empty without it).
fn apiserver_requests() -> HashMap<String, f64> {
    let mut out = HashMap::new();
    let Some(kubectl) = std::env::var_os("CHOP_KUBECTL") else {
        return out;
    };
    let Ok(res) = Command::new(kubectl)
        .args(["get", "--raw", "/metrics"])
        .output()
    else {
        return out;
    };
    let text = String::from_utf8_lossy(&res.stdout);
    let field = |labels: &str, key: &str| {
        labels
            .split(',')
            .find_map(|kv| kv.strip_prefix(&format!("{key}=\"")))
            .map(|v| v.trim_end_matches('"').to_owned())
            .unwrap_or_default()
    };
    for l in text.lines() {
        let Some(rest) = l.strip_prefix("apiserver_request_total{") else {
            continue;
        };
        let Some((labels, v)) = rest.rsplit_once("} ") else {
            continue;
        };
        let group = field(labels, "group");
        let resource = field(labels, "resource");
        if group != "chop.dev" && resource != "events" {
            continue;
        }
        let sub = field(labels, "subresource");
        let key = format!(
            "{resource}{}{} {}",
            if sub.is_empty() { "" } else { "/" },
            sub,
            field(labels, "verb")
        );
        *out.entry(key).or_insert(0.0) += v.parse::<f64>().unwrap_or(0.0);
    }
    out
}

/// Print the API requests between two [`apiserver_requests`] readings, per
/// certificate of `n`, by resource and verb; their total per certificate.
fn print_requests(before: &HashMap<String, f64>, after: HashMap<String, f64>, n: usize) -> f64 {
    let mut calls: Vec<(String, f64)> = after
        .into_iter()
        .map(|(k, v)| {
            let d = v - before.get(&k).copied().unwrap_or(0.0);
            (k, d)
        })
        .filter(|(_, d)| *d > 0.0)
        .collect();
    calls.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let total: f64 = calls.iter().map(|(_, d)| d).sum();
    if !calls.is_empty() {
        println!(
            "   API requests during issuance (chop.dev and Events): {total:.0} = {:.1} per certificate:",
            total / n as f64
        );
        for (k, d) in calls {
            println!("     {k:<40} {d:>7.0}  {:>5.2}/cert", d / n as f64);
        }
    }
    total / n as f64
}

/// Median of `v` (not empty).
fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// The scale comparison (BENCH_SCALE_COMPARE=1): BENCH_ROUNDS rounds of `n`
/// certificates with the register holding only what they issued, then
/// `records` IssuedCertificates created directly, then BENCH_ROUNDS rounds
/// with them; the medians' ratio (issue 12: >= 0.90) and the API requests per
/// certificate of each side's last round.
async fn scale_compare(
    b: &Bench,
    requests: Api<CertificateRequest>,
    officer: bool,
    csrs: &[String],
    inflight: usize,
    records: usize,
) -> Result<()> {
    let rounds: usize = env_or("BENCH_ROUNDS", 2).max(1);
    let n = csrs.len();
    let mut sides: Vec<(String, Vec<f64>, f64)> = Vec::new();
    for (side, loaded) in [("empty", false), ("loaded", true)] {
        if loaded {
            let took = create_records(b, records, 64).await?;
            println!(
                "== {records} IssuedCertificates created in {:.1} s ({:.0}/s)",
                took.as_secs_f64(),
                records as f64 / took.as_secs_f64()
            );
        }
        let existing = b
            .api::<IssuedCertificate>()
            .list_metadata(&ListParams::default().limit(1))
            .await?;
        let held =
            existing.metadata.remaining_item_count.unwrap_or(0) + existing.items.len() as i64;
        let mut rates = Vec::new();
        let mut per_cert = 0.0;
        for round in 1..=rounds {
            let prefix = format!("{}{round}", &side[..1]);
            let calls0 = apiserver_requests();
            let took = issue_round(b, requests.clone(), officer, csrs, inflight, &prefix).await?;
            let calls1 = apiserver_requests();
            let rate = n as f64 / took.as_secs_f64();
            println!(
                "== {side} register ({held} records before the round), round {round}: {n} certificates in {:.2} s = {rate:.1} certs/s",
                took.as_secs_f64()
            );
            if round == rounds {
                per_cert = print_requests(&calls0, calls1, n);
            }
            rates.push(rate);
        }
        sides.push((side.to_string(), rates, per_cert));
    }
    let (e, l) = (median(&sides[0].1), median(&sides[1].1));
    let ratio = l / e;
    println!(
        "== scale: {records} records vs none (medians; empty {:?}, loaded {:?}): {l:.1} / {e:.1} certs/s = {ratio:.3}; target >= 0.90 {}; API requests per certificate {:.1} empty, {:.1} loaded",
        sides[0]
            .1
            .iter()
            .map(|r| format!("{r:.1}"))
            .collect::<Vec<_>>(),
        sides[1]
            .1
            .iter()
            .map(|r| format!("{r:.1}"))
            .collect::<Vec<_>>(),
        if ratio >= 0.9 { "MET" } else { "NOT MET" },
        sides[0].2,
        sides[1].2,
    );
    println!("BENCH_SCALE empty={e:.3} loaded={l:.3} ratio={ratio:.3}");
    Ok(())
}

/// Signatures per second of `signer` over `message` for `secs`, on `threads`.
fn sign_rate(signer: &dyn Signer, message: &[u8], threads: usize, secs: f64) -> Result<f64> {
    let start = Instant::now();
    let total: usize = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| -> Result<usize> {
                    let mut n = 0;
                    while start.elapsed().as_secs_f64() < secs {
                        signer.sign(message)?;
                        n += 1;
                    }
                    Ok(n)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().map_err(|_| anyhow!("signing thread panicked"))?)
            .sum::<Result<usize>>()
    })?;
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

/// `n` PEM CSRs of fresh RSA-2048 keys, made on every core.
fn make_csrs(n: usize) -> Result<Vec<String>> {
    let threads = std::thread::available_parallelism().map_or(2, |p| p.get());
    let next = Mutex::new(0usize);
    let out = Mutex::new(Vec::with_capacity(n));
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| -> Result<()> {
                let name = DistinguishedName::parse("CN=ignored by the CA")?.to_name()?;
                loop {
                    {
                        let mut i = next.lock().unwrap();
                        if *i >= n {
                            return Ok(());
                        }
                        *i += 1;
                    }
                    let key = SoftwareKey::generate(KeySpec::Rsa { bits: 2048 })?;
                    let pem = to_pem("CERTIFICATE REQUEST", &build_csr(&key, &name)?)?;
                    out.lock().unwrap().push(pem);
                }
            });
        }
    });
    let out = out.into_inner().unwrap();
    if out.len() != n {
        bail!("made {} CSRs of {n}", out.len());
    }
    Ok(out)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn verdict(ok: bool) -> &'static str {
    if ok { "PASS" } else { "FAIL" }
}

/// Create the Revocation of request `request`'s certificate (`serial`) and
/// time until the responder answers "revoked".
async fn revocation_latency(
    b: &Bench,
    port: u16,
    ca: &Certificate,
    request: &str,
    serial: &Serial,
) -> Result<Duration> {
    if ocsp(port, ca, serial).await? != "good" {
        bail!("{request} is not good before its revocation");
    }
    let rev: Revocation = serde_json::from_value(json!({
        "apiVersion": "chop.dev/v1alpha1", "kind": "Revocation",
        "metadata": {"name": format!("{request}-lost")},
        "spec": {"caRef": {"name": CA}, "reason": "keyCompromise", "requester": "Subscriber",
                 "certificateRequestRef": {"name": request}}
    }))?;
    let t0 = Instant::now();
    b.api::<Revocation>()
        .create(&PostParams::default(), &rev)
        .await?;
    ocsp_until(port, ca, serial, "revoked").await?;
    Ok(t0.elapsed())
}

/// Auto-approval: the admission policies that stamp `chop.dev/requested-by`,
/// and the RA user `RA_USER`; a client for that user once both are in force.
async fn auto_approval_client(b: &Bench) -> Result<kube::Client> {
    use k8s_openapi::api::core::v1::Namespace;
    const LABEL: &str = "chop.dev/bench-policies";
    Api::<Namespace>::all(b.env.admin())
        .patch(
            &b.ns,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {LABEL: "true"}}})),
        )
        .await?;
    b.apply_manifests(
        &[
            "rbac/registration-authority.yaml",
            "policies/approval.yaml",
            "policies/no-self-approval.yaml",
            "policies/request-spec.yaml",
        ],
        LABEL,
    )
    .await?;
    b.bind("ra-bench", "chop:registration-authority", RA_USER)
        .await?;
    let client = b.env.user(RA_USER, &[]).await?;
    let api: Api<CertificateRequest> = Api::namespaced(client.clone(), &b.ns);
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let probe = request("policy-probe", "probe", "x")?;
    until(
        "the requested-by stamp for the RA user",
        60,
        Duration::from_millis(250),
        || async {
            let made = api.create(&dry, &probe).await.ok()?;
            let who = made
                .metadata
                .annotations?
                .get("chop.dev/requested-by")?
                .clone();
            (who == RA_USER).then_some(())
        },
    )
    .await?;
    Ok(client)
}

fn request(name: &str, reference: &str, csr: &str) -> Result<CertificateRequest> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "chop.dev/v1alpha1",
        "kind": "CertificateRequest",
        "metadata": {"name": name},
        "spec": {
            "caRef": {"name": CA},
            "profile": "Signature",
            "subscriber": {"reference": reference, "commonName": "王小明"},
            "csr": csr,
            "accepted": true
        }
    }))?)
}

type Waiters = Arc<Mutex<HashMap<String, oneshot::Sender<Instant>>>>;

/// Watch CertificateRequests; hand each waiter the instant its request was
/// seen `Issued=True`.
fn watch_issued(api: Api<CertificateRequest>, waiters: Waiters) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut events = std::pin::pin!(watcher(api, watcher::Config::default()));
        while let Some(ev) = events.next().await {
            let (watcher::Event::Apply(cr) | watcher::Event::InitApply(cr)) = (match ev {
                Ok(ev) => ev,
                Err(_) => continue,
            }) else {
                continue;
            };
            if has_condition(&cr, "Issued") {
                let name = cr.metadata.name.clone().unwrap_or_default();
                if let Some(tx) = waiters.lock().unwrap().remove(&name) {
                    let _ = tx.send(Instant::now());
                }
            }
        }
    })
}

/// Issue `csrs.len()` certificates with at most `inflight` requests not yet
/// issued; the time from the first create to the last `Issued=True`.
async fn issue_all(
    b: &Bench,
    requests: Api<CertificateRequest>,
    officer: bool,
    csrs: &[String],
    inflight: usize,
) -> Result<Duration> {
    issue_round(b, requests, officer, csrs, inflight, "sub").await
}

/// [`issue_all`] with requests named `<prefix>-NNNNNN` for subscribers
/// `<prefix>:NNNNNN` (a round of the scale comparison).
async fn issue_round(
    b: &Bench,
    requests: Api<CertificateRequest>,
    officer: bool,
    csrs: &[String],
    inflight: usize,
    prefix: &str,
) -> Result<Duration> {
    let waiters: Waiters = Arc::default();
    let watch = watch_issued(b.api(), waiters.clone());
    let approve = PatchParams::apply("officer").force();
    let start = Instant::now();
    let results: Vec<Result<Instant>> = futures::stream::iter(csrs.iter().enumerate())
        .map(|(i, csr)| {
            let (requests, waiters, approve) = (requests.clone(), waiters.clone(), &approve);
            let admin = b.api::<CertificateRequest>();
            async move {
                let name = format!("{prefix}-{i:06}");
                let (tx, rx) = oneshot::channel();
                waiters.lock().unwrap().insert(name.clone(), tx);
                let reference = if prefix == "sub" {
                    format!("ra:{i:06}")
                } else {
                    format!("{prefix}:{i:06}")
                };
                let body = request(&name, &reference, csr)?;
                requests.create(&PostParams::default(), &body).await?;
                if officer {
                    let status = json!({
                        "apiVersion": "chop.dev/v1alpha1", "kind": "CertificateRequest",
                        "status": {"conditions": [{"type": "Approved", "status": "True",
                          "reason": "OfficerApproved", "message": "benchmark",
                          "lastTransitionTime": jiff::Timestamp::now().to_string()}]}
                    });
                    admin
                        .patch_status(&name, approve, &Patch::Apply(&status))
                        .await?;
                }
                tokio::time::timeout(Duration::from_secs(300), rx)
                    .await
                    .with_context(|| format!("{name} not issued within 300 s"))?
                    .map_err(|_| anyhow!("watch ended"))
            }
        })
        .buffer_unordered(inflight)
        .collect()
        .await;
    watch.abort();
    let mut last = start;
    for r in results {
        last = last.max(r?);
    }
    Ok(last - start)
}

/// Create `count` IssuedCertificates for CA `CA` (certificates from a
/// software RSA-2048 issuer (the CA key policy), one EC P-521 subscriber
/// key), `inflight` creates at a time.
async fn create_records(b: &Bench, count: usize, inflight: usize) -> Result<Duration> {
    let (mut tx, rx) = futures::channel::mpsc::channel::<ca::issue::IssuedCertificate>(4096);
    let producer = std::thread::spawn(move || -> Result<()> {
        let key = Arc::new(SoftwareKey::generate(KeySpec::Rsa { bits: 2048 })?);
        let dn = DistinguishedName::parse("C=TW, O=chop bench, CN=bench issuer")?;
        let root = self_sign_root(key.as_ref(), &RootRequest::new(&dn)?)?;
        let mut config = CaConfig::new(Certificate::from_der(&root.der)?, key as Arc<dyn Signer>);
        config.crl_urls = vec!["http://repository.moica.example.tw/crl/root.crl".into()];
        config.ocsp_urls = vec!["http://ocsp.moica.example.tw".into()];
        let issuer = Issuer::new(config)?;
        let leaf = SoftwareKey::generate(KeySpec::Ec(Curve::P521))?;
        let csr = build_csr(&leaf, &DistinguishedName::parse("CN=x")?.to_name()?)?;
        let subject_key = SubjectKey::from_csr(&csr)?;
        for i in 0..count {
            let subject = DistinguishedName::subscriber("TW", "測試", &format!("B{i:010}"))?;
            let req = IssuanceRequest::new(
                Profile::subscriber_signature(),
                &subject,
                subject_key.clone(),
                Serial::random()?,
            )?;
            let cert = issuer.issue(&req)?;
            if futures::executor::block_on(tx.send(cert)).is_err() {
                break;
            }
        }
        Ok(())
    });
    let api = b.api::<IssuedCertificate>();
    let start = Instant::now();
    let done = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<Result<()>> = rx
        .map(|signed| {
            let (api, done) = (api.clone(), &done);
            async move {
                let entry = Entry {
                    ca: CA.into(),
                    profile: "Signature".into(),
                    subscriber_id: None,
                    request_ref: None,
                    renewal_of: None,
                };
                commit(&api, &signed, entry, "bench").await?;
                let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                if n.is_multiple_of(10_000) {
                    println!(
                        "   {n} records created ({:.0} s)",
                        start.elapsed().as_secs_f64()
                    );
                }
                Ok(())
            }
        })
        .buffer_unordered(inflight)
        .collect()
        .await;
    producer
        .join()
        .map_err(|_| anyhow!("certificate producer panicked"))??;
    results.into_iter().collect::<Result<Vec<()>>>()?;
    Ok(start.elapsed())
}

fn pid_file(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn print_memory(label: &str, procs: &[(&str, Option<u32>)]) {
    println!("   memory {label}:");
    for (name, pid) in procs {
        if let Some(pid) = pid {
            let (rss, hwm) = memory(*pid);
            println!("     {name:<16} VmRSS {rss:>8.1} MiB   VmHWM {hwm:>8.1} MiB");
        }
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let controller_bin = env_path("CHOP_CONTROLLER_BIN")?;
    let responder_bin = env_path("CHOP_RESPONDER_BIN")?;
    let dir = env_path("BENCH_DIR")?;
    let plane_dir = env_path("CHOP_E2E_DIR")?;
    let softhsm_conf = env_path("SOFTHSM2_CONF")?;
    let pin = std::env::var("BENCH_PIN").context("BENCH_PIN")?;
    let n: usize = env_or("BENCH_N", 500);
    let inflight: usize = env_or("BENCH_INFLIGHT", 32);
    let revocations: usize = env_or("BENCH_REVOCATIONS", 50).min(n.saturating_sub(1));
    let records: usize = env_or("BENCH_RECORDS", 100_000);
    let officer = std::env::var("BENCH_APPROVAL").is_ok_and(|v| v == "officer");
    let audit = std::env::var("BENCH_AUDIT").map_or(true, |v| v != "off");
    let issuance_only = std::env::var("BENCH_ISSUANCE_ONLY").is_ok_and(|v| v == "1");
    let scale = std::env::var("BENCH_SCALE_COMPARE").is_ok_and(|v| v == "1");

    let crds: Vec<_> = crds::all().into_iter().map(|(_, c)| c).collect();
    let env = e2e::TestEnv::with_crds(&crds).await?;
    let ns = env.namespace().to_owned();
    let b = Bench { env, dir, ns };
    println!("== namespace {}, work directory {}", b.ns, b.dir.display());

    // The controller under its shipped least-privilege role.
    b.apply_manifests(
        &["rbac/chop-controller.yaml", "rbac/responder.yaml"],
        "unused",
    )
    .await?;
    b.bind("chop-controller", "chop-controller", "chop-controller")
        .await?;
    let requests = if officer {
        b.api::<CertificateRequest>()
    } else {
        Api::namespaced(auto_approval_client(&b).await?, &b.ns)
    };
    let kubeconfig = b
        .kubeconfig("chop-controller", &[], "controller.kubeconfig")
        .await?;
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let log = std::fs::File::create(b.dir.join("controller.log"))?;
    let mut cmd = Command::new(&controller_bin);
    cmd.args(["--namespace", &b.ns, "--lease-namespace", &b.ns])
        .arg("--metrics-addr")
        .arg(format!("127.0.0.1:{metrics_port}"))
        .env("KUBECONFIG", &kubeconfig)
        .env("SOFTHSM2_CONF", &softhsm_conf)
        .env("POD_NAME", "chop-controller-bench")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    if audit {
        cmd.env("CHOP_AUDIT_TOKEN_LABEL", "chop-audit")
            .env("CHOP_AUDIT_PIN", &pin);
    } else {
        cmd.env("CHOP_AUDIT", "off");
    }
    let controller = Proc(cmd.spawn()?);
    println!("== audit trail {}", if audit { "on" } else { "off" });

    // The CA (key generated in the token), Ready with its responder certificate.
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "metadata": {"name": "hsm-pin"}, "stringData": {"pin": pin}
    }))?;
    b.api().create(&PostParams::default(), &secret).await?;
    let approval = if officer {
        json!({})
    } else {
        json!({"autoApproveUsers": [RA_USER]})
    };
    let ca_obj: CertificateAuthority = serde_json::from_value(json!({
        "apiVersion": "chop.dev/v1alpha1", "kind": "CertificateAuthority",
        "metadata": {"name": CA},
        "spec": {
            "type": "Root",
            "subject": {"country": "TW", "organization": "行政院", "organizationalUnits": ["內政部憑證管理中心"]},
            "hsm": {"tokenLabel": "moica", "keyLabel": "moica-root",
                    "pinSecretRef": {"name": "hsm-pin", "key": "pin"}, "keyGeneration": "IfMissing"},
            "crlDistributionPoints": ["http://repository.moica.example.tw/crl/root.crl"],
            "ocspURLs": ["http://ocsp.moica.example.tw"],
            "caIssuersURLs": ["http://repository.moica.example.tw/certs/root.cer"],
            "approval": approval
        }
    }))?;
    let cas = b.api::<CertificateAuthority>();
    cas.create(&PostParams::default(), &ca_obj).await?;
    let ca_pem = until(
        "CA Ready and ResponderReady",
        120,
        Duration::from_millis(250),
        || async {
            let st = cas.get(CA).await.ok()?.status?;
            let ready = |t: &str| {
                st.conditions
                    .iter()
                    .any(|c| c.type_ == t && c.status == "True")
            };
            (ready("Ready") && ready("ResponderReady")).then_some(st.certificate.clone()?)
        },
    )
    .await?;
    let ca_cert = Certificate::from_pem(ca_pem.as_bytes())?;

    // 1. Raw HSM signing rate with the CA key, same token.
    let threads = std::thread::available_parallelism().map_or(2, |p| p.get());
    let signer = Pkcs11Signer::open(
        SOFTHSM2_MODULE,
        "moica",
        Pin::new(pin.clone()),
        &KeyRef::label("moica-root"),
    )?
    .with_max_sessions(threads);
    let message = ca_cert.tbs_certificate.to_der()?;
    let raw1 = sign_rate(&signer, &message, 1, 3.0)?;
    let raw = sign_rate(&signer, &message, threads, 3.0)?;
    println!(
        "== 1. raw HSM signing (SoftHSM2 RSA-2048, CA key): {raw1:.0} sig/s on 1 thread, {raw:.0} sig/s on {threads} threads (3 s each)"
    );

    // 2. Issuance end to end.
    println!("   making {n} RSA-2048 CSRs (not timed)");
    let csrs = make_csrs(n)?;
    let approval_word = if officer {
        "officer SSA"
    } else {
        "autoApproveUsers"
    };
    if scale {
        scale_compare(&b, requests, officer, &csrs, inflight, records).await?;
        controller_breakdown(metrics_port).await;
        drop(controller);
        return Ok(());
    }
    let plane_pids = [
        (
            "kube-apiserver",
            pid_file(&plane_dir.join("kube-apiserver.pid")),
        ),
        ("etcd", pid_file(&plane_dir.join("etcd.pid"))),
    ];
    let mut cpu_pids: Vec<(&str, u32)> = vec![
        ("chop-controller", controller.0.id()),
        ("this benchmark", std::process::id()),
    ];
    cpu_pids.extend(plane_pids.iter().filter_map(|(n, p)| Some((*n, (*p)?))));
    let cpu0: Vec<f64> = cpu_pids.iter().map(|(_, p)| cpu_secs(*p)).collect();
    let calls0 = apiserver_requests();
    let took = issue_all(&b, requests, officer, &csrs, inflight).await?;
    let calls1 = apiserver_requests();
    let cpu: Vec<String> = cpu_pids
        .iter()
        .zip(cpu0)
        .map(|((n, p), c0)| format!("{n} {:.1} s", cpu_secs(*p) - c0))
        .collect();
    let rate = n as f64 / took.as_secs_f64();
    println!(
        "== 2. issuance: {n} certificates ({approval_word}, {inflight} in flight) in {:.2} s = {rate:.1} certs/s; raw HSM {raw:.0} sig/s; ratio {:.3}; target >= 50 certs/s {}",
        took.as_secs_f64(),
        rate / raw,
        verdict(rate >= 50.0)
    );
    println!(
        "   CPU during issuance ({:.1} s wall, {threads} cores): {}",
        took.as_secs_f64(),
        cpu.join(", ")
    );
    print_requests(&calls0, calls1, n);
    println!(
        "BENCH_RATE audit={} {rate:.3}",
        if audit { "on" } else { "off" }
    );
    if audit {
        // What the trail costs: records and stored bytes (the segment JSON as
        // the API server stores it, about its size in etcd) per certificate.
        let segs = b
            .api::<crds::AuditSegment>()
            .list(&kube::api::ListParams::default())
            .await?
            .items;
        let recs: usize = segs.iter().map(|s| s.spec.records.len()).sum();
        let bytes: usize = segs
            .iter()
            .map(|s| serde_json::to_vec(s).map_or(0, |v| v.len()))
            .sum();
        let issues = segs
            .iter()
            .flat_map(|s| &s.spec.records)
            .filter(|r| r.event == "certificate.issue")
            .count();
        println!(
            "   audit trail: {recs} records in {} segments, {bytes} bytes; per certificate {:.2} records, {:.0} bytes ({issues} certificate.issue records)",
            segs.len(),
            recs as f64 / n as f64,
            bytes as f64 / n as f64
        );
    }
    if issuance_only {
        return Ok(());
    }
    println!("   controller metrics after issuance:");
    controller_breakdown(metrics_port).await;
    print_memory(
        "after issuance",
        &[("chop-controller", Some(controller.0.id()))],
    );

    // 3. The responder, as the CA's ServiceAccount.
    let sa = format!("system:serviceaccount:{}:{CA}-responder", b.ns);
    let rkubeconfig = b
        .kubeconfig(&sa, &["system:serviceaccounts"], "responder.kubeconfig")
        .await?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let rlog = std::fs::File::create(b.dir.join("responder.log"))?;
    let responder = Proc(
        Command::new(&responder_bin)
            .args(["serve", "--kube", "--namespace", &b.ns, "--ca", CA])
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .env("KUBECONFIG", &rkubeconfig)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(rlog.try_clone()?)
            .stderr(rlog)
            .spawn()?,
    );
    let mut serials = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("sub-{i:06}");
        let cr = b.api::<CertificateRequest>().get(&name).await?;
        let hex = cr
            .status
            .and_then(|s| s.serial_number)
            .context("serial of an issued request")?;
        serials.push((name, Serial::from_hex(&hex)?));
    }
    let (last_name, last_serial) = serials.last().context("N = 0")?.clone();
    ocsp_until(port, &ca_cert, &last_serial, "good").await?;
    let mut lat = Vec::with_capacity(revocations);
    for (name, serial) in serials.iter().take(revocations) {
        lat.push(revocation_latency(&b, port, &ca_cert, name, serial).await?);
    }
    lat.sort();
    if !lat.is_empty() {
        let p99 = pct(&lat, 0.99);
        println!(
            "== 3. revocation -> OCSP revoked ({revocations} revocations, poll 10 ms): p50 {:.3} s, p99 {:.3} s, max {:.3} s; target p99 < 2 s {}",
            pct(&lat, 0.5).as_secs_f64(),
            p99.as_secs_f64(),
            lat[lat.len() - 1].as_secs_f64(),
            verdict(p99 < Duration::from_secs(2))
        );
    }

    // 4. Memory at scale.
    let procs = [
        ("chop-controller", Some(controller.0.id())),
        ("chop-responder", Some(responder.0.id())),
        plane_pids[0],
        plane_pids[1],
    ];
    print_memory(&format!("before {records} records"), &procs);
    let selector = format!("chop.dev/ca={CA}");
    let existing = b
        .api::<IssuedCertificate>()
        .list_metadata(&ListParams::default().labels(&selector))
        .await?
        .items
        .len();
    let took = create_records(&b, records, 64).await?;
    println!(
        "== 4. {records} IssuedCertificates created in {:.1} s ({:.0}/s)",
        took.as_secs_f64(),
        records as f64 / took.as_secs_f64()
    );
    let total = existing + records;
    let t0 = Instant::now();
    until(
        "the responder to load every record",
        900,
        Duration::from_millis(500),
        || async { (metric(port, "chop_responder_statuses").await? >= total as f64).then_some(()) },
    )
    .await?;
    println!(
        "   responder: {total} statuses loaded {:.1} s after the last create",
        t0.elapsed().as_secs_f64()
    );
    let mut pokes = 0u32;
    until("the CA's issuedCount", 900, Duration::from_secs(1), || {
        pokes += 1;
        let cas = cas.clone();
        let poke = pokes;
        async move {
            let count = cas.get(CA).await.ok()?.status?.issued_count.unwrap_or(0);
            if count >= total as i64 {
                return Some(());
            }
            if poke.is_multiple_of(15) {
                // Nudge the CA's reconcile (the count is refreshed by it).
                let p =
                    json!({"metadata": {"annotations": {"bench.chop.dev/poke": poke.to_string()}}});
                let _ = cas
                    .patch(CA, &PatchParams::default(), &Patch::Merge(&p))
                    .await;
            }
            None
        }
    })
    .await?;
    println!(
        "   controller: status.issuedCount = {total} {:.1} s after the last create",
        t0.elapsed().as_secs_f64()
    );
    print_memory(&format!("with {total} records"), &procs);
    let one = revocation_latency(&b, port, &ca_cert, &last_name, &last_serial).await?;
    println!(
        "   revocation -> OCSP revoked with {total} records: {:.3} s; target < 2 s {}",
        one.as_secs_f64(),
        verdict(one < Duration::from_secs(2))
    );
    print_memory("at the end", &procs);
    drop(responder);
    drop(controller);
    Ok(())
}
