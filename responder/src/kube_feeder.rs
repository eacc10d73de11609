//! The Kubernetes feeder (`--kube --namespace NS --ca NAME`): serves one
//! CertificateAuthority straight from the cluster, read-only.
//!
//! | what | from | becomes |
//! |---|---|---|
//! | CA certificate, chain | CertificateAuthority `NAME`: `status.certificate`, `status.chain` | `/ca.crt`, `/ca.pem`, `/chain.pem`, the OCSP issuer |
//! | delegated responder certificate and key | Secret `NAME-ocsp-responder` (`tls.crt`, `tls.key` PKCS#8 PEM) | the OCSP signer |
//! | statuses and certificates | IssuedCertificates labelled `chop.dev/ca=NAME` | the status table, `/certs/<serial>.crt` |
//! | CRLs | each CRLSchedule with `spec.caRef.name == NAME`: its published CRL (chunked ConfigMaps, [`chop_register::publish`]), and with `partitions: P` each partition CRL | `/crl/<schedule>.crl`, `/crl/<schedule>-<n>.crl` (n < P) |
//!
//! Two tasks, each driving `kube::runtime::watcher` streams (no reflector: only
//! what is served is kept, the DER of each certificate and its status):
//! - **certificates**: every IssuedCertificate event is one per-serial delta
//!   ([`delta`]): [`StateHandle::set_status`] or [`StateHandle::forget`], visible
//!   to the next request. A (re-)list (`Init` … `InitApply` … `InitDone`) is
//!   collected aside and swapped in whole with [`StateHandle::load_statuses`].
//! - **material**: the CertificateAuthority, the Secret (read by name every
//!   `secret_poll`, so a Role granting `get` on that one name suffices), the CRLSchedules and the CRL manifest
//!   ConfigMaps. Any change that alters the bytes served builds a new
//!   [`CaMaterial`] and installs it; the status table is untouched, so a renewed
//!   responder certificate takes effect without a restart and without a re-list.
//!
//! A malformed object is logged by name (never its data) and not served: an
//! IssuedCertificate whose serial is readable but whose certificate or status is
//! not answers `unknown` (never `good` for what cannot be read); a bad Secret or
//! CA status keeps the previous material; a CRLSchedule that cannot be read is
//! ignored (what was known of it stays). Nothing breaks the watch: the
//! IssuedCertificates, the CertificateAuthority and the CRLSchedules are
//! watched untyped ([`DynamicObject`]) and parsed one object at a time, so an
//! object that no longer deserializes into chop's types (CRD upgrade, a field
//! the schema does not check) cannot fail the list of the others (kube-rs
//! issue 774). ConfigMaps always deserialize; a manifest that does not read is
//! logged and the CRL served before stays.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use ca::ocsp::OcspConfig;
use ca::revocation::{CertStatus, Reason};
use ca::serial::Serial;
use ca::signer::software::SoftwareKey;
use chop_register::Partitioning;
use chop_register::publish;
use crds::issued_certificate::{LABEL_CA, RecordState};
use crds::{CRLSchedule, CertificateAuthority, IssuedCertificate, IssuedCertificateStatus};
use der::Decode;
use futures::stream::{BoxStream, StreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::sync::watch;
use x509_cert::Certificate;

use crate::crl_check::{CrlGuard, Scope};
use crate::feeder::{Feeder, key_from_pem};
use crate::state::{
    CaMaterial, FeedStats, SerialKey, SharedCertificates, StateHandle, parse_pem_certs,
};
use crate::{Error, Result};

/// The Secret holding the delegated responder credentials: `<ca>-ocsp-responder`.
pub fn secret_name(ca: &str) -> String {
    format!("{ca}-ocsp-responder")
}

/// Serves one CertificateAuthority from the Kubernetes API.
#[derive(Clone)]
pub struct KubeFeeder {
    /// The client (read-only RBAC suffices: `manifests/rbac/responder.yaml`).
    pub client: Client,
    /// The namespace of the CA.
    pub namespace: String,
    /// The CertificateAuthority's name.
    pub ca: String,
    /// OCSP response settings.
    pub ocsp: OcspConfig,
    /// How often the responder Secret is read (`--secret-poll-ms`, default 5 s).
    pub secret_poll: std::time::Duration,
}

impl std::fmt::Debug for KubeFeeder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeFeeder")
            .field("namespace", &self.namespace)
            .field("ca", &self.ca)
            .finish_non_exhaustive()
    }
}

/// What the responder keeps of one IssuedCertificate.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// The serial.
    pub serial: Serial,
    /// Its status.
    pub status: CertStatus,
    /// The certificate, DER.
    pub der: Bytes,
}

/// One IssuedCertificate event as a change to the served state.
#[derive(Clone, Debug, PartialEq)]
pub enum Delta {
    /// Serve this record.
    Set(Record),
    /// Answer `unknown` for this serial (deleted, or unreadable).
    Forget(Serial),
    /// Nothing to do (not even the serial could be read).
    Skip,
}

fn time_of(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> SystemTime {
    SystemTime::from(t.0)
}

/// The status an IssuedCertificate's `status` states: `Valid` (or no status
/// yet: the record's creation is the issuance) → good; `Held` → revoked with
/// certificateHold; `Revoked` → revoked with its reason (default unspecified).
/// `revokedAt` is required for both.
pub fn status_of(status: Option<&IssuedCertificateStatus>) -> Result<CertStatus> {
    let Some(st) = status else {
        return Ok(CertStatus::Good);
    };
    let revoked = |reason: Reason| -> Result<CertStatus> {
        let time = st
            .revoked_at
            .as_ref()
            .ok_or_else(|| Error::invalid("status", "revokedAt is missing"))?;
        Ok(CertStatus::Revoked {
            time: time_of(time),
            reason,
            invalidity_date: st.invalidity_date.as_ref().map(time_of),
        })
    };
    // The register's one definition of a record's state (the CRL builder and
    // the controller's counters go by the same).
    let state = RecordState::parse(st.state.as_deref())
        .map_err(|detail| Error::invalid("status.state", detail))?;
    match state {
        RecordState::Valid => Ok(CertStatus::Good),
        RecordState::Held => revoked(Reason::CertificateHold),
        RecordState::Revoked => {
            let reason = match st.reason.as_deref() {
                None | Some("") => Reason::Unspecified,
                Some(name) => name.parse::<Reason>()?,
            };
            if reason == Reason::RemoveFromCrl {
                return Err(Error::invalid(
                    "status.reason",
                    "removeFromCRL is not a revocation reason",
                ));
            }
            revoked(reason)
        }
    }
}

/// The record of `obj` for CA `ca`: serial, status, certificate DER (whose
/// serial must be the spec's).
pub fn record(obj: &IssuedCertificate, ca: &str) -> Result<Record> {
    let serial = Serial::from_hex(&obj.spec.serial_number)
        .map_err(|e| Error::invalid("spec.serialNumber", e))?;
    if obj.spec.ca_ref.name != ca {
        return Err(Error::invalid(
            "spec.caRef",
            format!("names {:?}, not {ca:?}", obj.spec.ca_ref.name),
        ));
    }
    let der = parse_pem_certs("spec.certificate", obj.spec.certificate.as_bytes())?
        .into_iter()
        .next()
        .ok_or_else(|| Error::invalid("spec.certificate", "no certificate"))?;
    let cert = Certificate::from_der(&der).map_err(|e| Error::invalid("spec.certificate", e))?;
    let in_cert = Serial::from_serial_number(&cert.tbs_certificate.serial_number)?;
    if in_cert != serial {
        return Err(Error::invalid(
            "spec.certificate",
            format!("serial {} differs from spec.serialNumber", in_cert.to_hex()),
        ));
    }
    let status = status_of(obj.status.as_ref())?;
    Ok(Record {
        serial,
        status,
        der: Bytes::from(der),
    })
}

/// What an added or modified IssuedCertificate changes. Unreadable objects are
/// logged here (by name only).
pub fn delta(obj: &IssuedCertificate, ca: &str) -> Delta {
    match record(obj, ca) {
        Ok(r) => Delta::Set(r),
        Err(e) => {
            tracing::warn!(issuedcertificate = %obj.name_any(), error = %e, "malformed IssuedCertificate: not served");
            match Serial::from_hex(&obj.spec.serial_number) {
                Ok(s) => Delta::Forget(s),
                Err(_) => Delta::Skip,
            }
        }
    }
}

/// `spec.serialNumber` of an untyped IssuedCertificate, if readable.
fn serial_of(obj: &DynamicObject) -> Option<Serial> {
    let hex = obj.data.get("spec")?.get("serialNumber")?.as_str()?;
    Serial::from_hex(hex).ok()
}

/// What an added or modified untyped IssuedCertificate changes: [`delta`] when
/// it deserializes; else logged by name, and its serial (if readable) is not
/// served — one object that no longer fits the type never fails the others'
/// watch (kube-rs issue 774).
pub fn untyped_delta(obj: DynamicObject, ca: &str) -> Delta {
    let serial = serial_of(&obj);
    let name = obj.name_any();
    match obj.try_parse::<IssuedCertificate>() {
        Ok(typed) => delta(&typed, ca),
        Err(e) => {
            tracing::warn!(issuedcertificate = %name, error = %e, "malformed IssuedCertificate: not served");
            serial.map_or(Delta::Skip, Delta::Forget)
        }
    }
}

/// What a deleted IssuedCertificate changes: its serial becomes unknown.
pub fn delta_of_delete(obj: &IssuedCertificate) -> Delta {
    match Serial::from_hex(&obj.spec.serial_number) {
        Ok(s) => Delta::Forget(s),
        Err(_) => Delta::Skip,
    }
}

/// A (re-)list of IssuedCertificates being collected, swapped in at `InitDone`.
#[derive(Default)]
struct Listing {
    statuses: Vec<(Serial, CertStatus)>,
    ders: HashMap<SerialKey, Bytes>,
}

/// Wait for `shutdown` to turn true (or its sender to go away).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    while !*shutdown.borrow() {
        if shutdown.changed().await.is_err() {
            return;
        }
    }
}

impl KubeFeeder {
    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Watch the CA's IssuedCertificates; apply every event as a delta.
    async fn certificates(
        self,
        state: StateHandle,
        certs: Arc<SharedCertificates>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<()> {
        let config = watcher::Config::default().labels(&format!("{LABEL_CA}={}", self.ca));
        // Untyped, parsed per object: see [`untyped_delta`].
        let api: Api<DynamicObject> = Api::namespaced_with(
            self.client.clone(),
            &self.namespace,
            &ApiResource::erase::<IssuedCertificate>(&()),
        );
        let mut stream = watcher(api, config).default_backoff().boxed();
        // A (re-)list being collected: statuses and certificates.
        let mut listing: Option<Listing> = None;
        loop {
            let event = tokio::select! {
                e = stream.next() => e,
                () = stopped(&mut shutdown) => return Ok(()),
            };
            let event = match event {
                None => return Ok(()),
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "watching IssuedCertificates; retrying");
                    continue;
                }
                Some(Ok(e)) => e,
            };
            state.feed().events.inc();
            match event {
                Event::Init => listing = Some(Listing::default()),
                Event::InitApply(obj) => {
                    if let (Some(l), Delta::Set(r)) =
                        (listing.as_mut(), untyped_delta(obj, &self.ca))
                    {
                        l.ders.insert(SerialKey::new(&r.serial), r.der);
                        l.statuses.push((r.serial, r.status));
                    }
                }
                Event::InitDone => {
                    let Listing { statuses, ders } = listing.take().unwrap_or_default();
                    let n = statuses.len();
                    // Certificates first: a serial is never good without its
                    // certificate being downloadable.
                    certs.replace(ders);
                    state.load_statuses(statuses);
                    state.feed().synced();
                    tracing::info!(certificates = n, "IssuedCertificates listed");
                }
                Event::Apply(obj) => match untyped_delta(obj, &self.ca) {
                    Delta::Set(r) => {
                        certs.insert(&r.serial, r.der);
                        state.set_status(&r.serial, r.status);
                    }
                    Delta::Forget(s) => {
                        state.forget(&s);
                        certs.remove(&s);
                    }
                    Delta::Skip => {}
                },
                Event::Delete(obj) => {
                    if let Some(s) = serial_of(&obj) {
                        state.forget(&s);
                        certs.remove(&s);
                    }
                }
            }
        }
    }
}

/// A watch event from one of the material's sources.
enum Input {
    /// Untyped, parsed per object: one that does not deserialize must not
    /// fail the whole list (kube-rs issue 774).
    Ca(Box<Event<DynamicObject>>),
    Secret(Box<Event<Secret>>),
    /// Untyped, parsed per object (as `Ca`): every CRLSchedule of the
    /// namespace is listed, any CA's.
    Schedule(Box<Event<DynamicObject>>),
    Manifest(Box<Event<ConfigMap>>),
    Error(&'static str, watcher::Error),
}

/// The CA certificate as read from the CertificateAuthority's status.
struct CaInput {
    /// `status.certificate` and `status.chain`, as read.
    source: (String, String),
    /// The CA certificate, DER.
    der: Vec<u8>,
    /// The chain, DER.
    chain: Vec<Vec<u8>>,
}

/// Everything the material is built from, with what identifies each piece's
/// version (so a re-list that changes nothing installs nothing).
#[derive(Default)]
struct Inputs {
    /// (status.certificate, status.chain) as read, and the CA and chain DER.
    ca: Option<CaInput>,
    /// The Secret's resourceVersion, the responder certificate DER and key.
    responder: Option<(String, Vec<u8>, Arc<SoftwareKey>)>,
    /// Schedules of this CA, with their number of partitions.
    schedules: HashMap<String, u32>,
    /// The partitions' URL template of each schedule (`partitionURLTemplate`).
    templates: HashMap<String, Option<String>>,
    /// The CA's `spec.crlDistributionPoints` (partition URLs derive from them).
    crl_urls: Vec<String>,
    /// Last cRLNumber served per publication.
    crl_guard: CrlGuard,
    /// CRLs read before the CA certificate was known: checked when it is.
    pending: HashMap<String, (String, Bytes)>,
    /// SHA-256 of the last CRL refused per publication (not fetched again).
    refused: HashMap<String, String>,
    /// The state's feed counters (refused CRLs).
    feed: FeedStats,
    /// Schedules seen during a re-list of CRLSchedules.
    listing: Option<HashSet<String>>,
    /// CRL by publication (`<schedule>` or `<schedule>-<n>`): manifest
    /// SHA-256 and DER.
    crls: HashMap<String, (String, Bytes)>,
}

/// The publications of a schedule with `partitions`: the full CRL's, then each
/// partition CRL's.
fn publications(schedule: &str, partitions: u32) -> impl Iterator<Item = String> + '_ {
    std::iter::once(schedule.to_owned())
        .chain((0..partitions).map(move |n| publish::partition_publication(schedule, n)))
}

impl Inputs {
    /// What the CRL of `publication` must cover: the full CRL for a schedule,
    /// partition n's (with the URL the controller gives it) for
    /// `<schedule>-<n>`.
    fn scope(&self, publication: &str) -> Option<Scope> {
        for (s, p) in &self.schedules {
            if s == publication {
                return Some(Scope::Full);
            }
            if let Some(n) = (0..*p).find(|n| publish::partition_publication(s, *n) == publication)
            {
                let partitioning = Partitioning {
                    count: *p,
                    template: self.templates.get(s).cloned().flatten(),
                };
                return Some(Scope::Partition(partitioning.url(&self.crl_urls, n)));
            }
        }
        None
    }

    /// Whether `publication` is one of a known schedule's.
    fn serves(&self, publication: &str) -> bool {
        self.schedules
            .iter()
            .any(|(s, p)| publications(s, *p).any(|name| name == publication))
    }
}

/// A watch on `api` as material inputs.
fn inputs<K>(
    api: Api<K>,
    config: watcher::Config,
    what: &'static str,
    wrap: fn(Box<Event<K>>) -> Input,
) -> BoxStream<'static, Input>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    watcher(api, config)
        .default_backoff()
        .map(move |r| r.map_or_else(|e| Input::Error(what, e), |e| wrap(Box::new(e))))
        .boxed()
}

fn applied<K>(e: Event<K>) -> Option<K> {
    match e {
        Event::Apply(o) | Event::InitApply(o) => Some(o),
        _ => None,
    }
}

/// The Secret read by name every `every`, as material inputs. A `get` by name
/// (not a watch) so that the per-CA Role needs only `get` on that one Secret,
/// which is what the controller itself holds and so may grant. A renewal is
/// due days ahead of expiry; a few seconds of delay costs nothing.
fn poll_secret(
    api: Api<Secret>,
    name: String,
    every: std::time::Duration,
) -> BoxStream<'static, Input> {
    let ticks = tokio_stream_interval(every);
    ticks
        .then(move |()| {
            let api = api.clone();
            let name = name.clone();
            async move {
                match api.get_opt(&name).await {
                    Ok(Some(secret)) => Some(Input::Secret(Box::new(Event::Apply(secret)))),
                    Ok(None) => None,
                    Err(e) => {
                        tracing::warn!(secret = %name, error = %e, "cannot read the responder Secret; retrying");
                        None
                    }
                }
            }
        })
        .filter_map(futures::future::ready)
        .boxed()
}

/// A stream that yields at once, then every `every`.
fn tokio_stream_interval(every: std::time::Duration) -> BoxStream<'static, ()> {
    futures::stream::unfold(true, move |first| async move {
        if !first {
            tokio::time::sleep(every).await;
        }
        Some(((), false))
    })
    .boxed()
}

impl KubeFeeder {
    fn streams(&self) -> BoxStream<'static, Input> {
        let by_name =
            |name: &str| watcher::Config::default().fields(&format!("metadata.name={name}"));
        // CRL manifests only (not the chunks): the manifest is the commit point.
        let manifests = watcher::Config::default().labels(&format!(
            "{},!{},{LABEL_CA}={}",
            publish::LABEL_SCHEDULE,
            publish::LABEL_CHUNK,
            self.ca
        ));
        let untyped = |ar: ApiResource| -> Api<DynamicObject> {
            Api::namespaced_with(self.client.clone(), &self.namespace, &ar)
        };
        futures::stream::select_all([
            inputs(
                untyped(ApiResource::erase::<CertificateAuthority>(&())),
                by_name(&self.ca),
                "CertificateAuthority",
                Input::Ca,
            ),
            poll_secret(self.api(), secret_name(&self.ca), self.secret_poll),
            inputs(
                untyped(ApiResource::erase::<CRLSchedule>(&())),
                watcher::Config::default(),
                "CRLSchedule",
                Input::Schedule,
            ),
            inputs(self.api(), manifests, "ConfigMap", Input::Manifest),
        ])
        .boxed()
    }

    /// Apply one input; whether the material changed.
    async fn input(&self, inputs: &mut Inputs, input: Input) -> bool {
        match input {
            Input::Error(what, e) => {
                tracing::warn!(watching = what, error = %e, "watch failed; retrying");
                false
            }
            Input::Ca(e) => applied(*e).is_some_and(|obj| {
                let name = obj.name_any();
                match obj.try_parse::<CertificateAuthority>() {
                    Ok(ca) => self.ca_input(inputs, &ca),
                    Err(e) => {
                        tracing::error!(certificateauthority = %name, error = %e, "malformed CertificateAuthority; keeping the previous material");
                        false
                    }
                }
            }),
            Input::Secret(e) => applied(*e).is_some_and(|s| self.secret_input(inputs, &s)),
            Input::Schedule(e) => self.schedule_input(inputs, *e).await,
            Input::Manifest(e) => match applied(*e) {
                Some(cm) => {
                    let schedule = cm
                        .labels()
                        .get(publish::LABEL_SCHEDULE)
                        .cloned()
                        .unwrap_or_default();
                    if inputs.serves(&schedule) {
                        self.read_crl(inputs, &schedule, Some(&cm)).await
                    } else {
                        false
                    }
                }
                None => false,
            },
        }
    }

    fn ca_input(&self, inputs: &mut Inputs, ca: &CertificateAuthority) -> bool {
        let object = format!("CertificateAuthority/{}/{}", self.namespace, self.ca);
        let Some(st) = &ca.status else {
            tracing::info!(object, "CA has no status yet");
            return false;
        };
        let Some(cert) = st.certificate.clone() else {
            tracing::info!(object, "CA has no certificate yet");
            return false;
        };
        inputs.crl_urls.clone_from(&ca.spec.crl_distribution_points);
        let key = (cert, st.chain.clone().unwrap_or_default());
        if inputs.ca.as_ref().is_some_and(|c| c.source == key) {
            return false;
        }
        let parsed = (|| -> Result<(Vec<u8>, Vec<Vec<u8>>)> {
            let ca_der = parse_pem_certs("status.certificate", key.0.as_bytes())?
                .into_iter()
                .next()
                .ok_or_else(|| Error::invalid("status.certificate", "no certificate"))?;
            let chain = if key.1.trim().is_empty() {
                Vec::new()
            } else {
                parse_pem_certs("status.chain", key.1.as_bytes())?
            };
            Ok((ca_der, chain))
        })();
        match parsed {
            Ok((ca_der, chain)) => {
                inputs.ca = Some(CaInput {
                    source: key,
                    der: ca_der,
                    chain,
                });
                tracing::info!(object, "CA certificate read");
                for (publication, (sha256, der)) in std::mem::take(&mut inputs.pending) {
                    self.offer_crl(inputs, &publication, sha256, der);
                }
                true
            }
            Err(e) => {
                tracing::error!(object, error = %e, "unreadable CA certificate; keeping the previous one");
                false
            }
        }
    }

    fn secret_input(&self, inputs: &mut Inputs, secret: &Secret) -> bool {
        let object = format!("Secret/{}/{}", self.namespace, secret.name_any());
        let version = secret.resource_version().unwrap_or_default();
        if inputs
            .responder
            .as_ref()
            .is_some_and(|(v, _, _)| *v == version)
        {
            return false;
        }
        let field = |k: &str| {
            secret
                .data
                .as_ref()
                .and_then(|d| d.get(k))
                .map(|b| b.0.as_slice())
                .ok_or_else(|| Error::invalid(k, "missing"))
        };
        let parsed = (|| -> Result<(Vec<u8>, Arc<SoftwareKey>)> {
            let cert = parse_pem_certs("tls.crt", field("tls.crt")?)?
                .into_iter()
                .next()
                .ok_or_else(|| Error::invalid("tls.crt", "no certificate"))?;
            let key = key_from_pem("tls.key", field("tls.key")?, &cert)?;
            Ok((cert, key))
        })();
        match parsed {
            Ok((cert, key)) => {
                inputs.responder = Some((version, cert, key));
                tracing::info!(object, "responder certificate and key read");
                true
            }
            Err(e) => {
                tracing::error!(object, error = %e, "unreadable responder Secret; keeping the previous one");
                false
            }
        }
    }

    async fn schedule_input(&self, inputs: &mut Inputs, e: Event<DynamicObject>) -> bool {
        match e {
            Event::Init => {
                inputs.listing = Some(HashSet::new());
                false
            }
            Event::InitDone => {
                let seen = inputs.listing.take().unwrap_or_default();
                let before = inputs.crls.len();
                inputs.schedules.retain(|s, _| seen.contains(s));
                let served: HashSet<String> = inputs
                    .schedules
                    .iter()
                    .flat_map(|(s, p)| publications(s, *p).collect::<Vec<_>>())
                    .collect();
                inputs.crls.retain(|s, _| served.contains(s));
                before != inputs.crls.len()
            }
            Event::Apply(obj) | Event::InitApply(obj) => {
                let name = obj.name_any();
                if let Some(seen) = inputs.listing.as_mut() {
                    seen.insert(name.clone());
                }
                let s = match obj.try_parse::<CRLSchedule>() {
                    Ok(s) => s,
                    Err(e) => {
                        // What was known of it (if anything) stays; the
                        // other schedules are unaffected.
                        tracing::warn!(crlschedule = %name, error = %e, "malformed CRLSchedule: ignored");
                        return false;
                    }
                };
                if s.spec.ca_ref.name != self.ca {
                    return false;
                }
                let partitions = u32::try_from(s.spec.partitions).unwrap_or(0);
                inputs
                    .templates
                    .insert(name.clone(), s.spec.partition_url_template.clone());
                if inputs.schedules.insert(name.clone(), partitions) == Some(partitions) {
                    return false;
                }
                let mut changed = false;
                for publication in publications(&name, partitions) {
                    changed |= self.read_crl(inputs, &publication, None).await;
                }
                changed
            }
            Event::Delete(s) => {
                let name = s.name_any();
                let partitions = inputs.schedules.remove(&name).unwrap_or(0);
                let mut changed = false;
                for publication in publications(&name, partitions) {
                    changed |= inputs.crls.remove(&publication).is_some();
                }
                changed
            }
        }
    }

    /// (Re-)read the CRL of `schedule`, unless `manifest` says it is the one
    /// already served.
    async fn read_crl(
        &self,
        inputs: &mut Inputs,
        schedule: &str,
        manifest: Option<&ConfigMap>,
    ) -> bool {
        let object = format!(
            "ConfigMap/{}/{}",
            self.namespace,
            publish::manifest_name(schedule)
        );
        if let Some(cm) = manifest {
            let data = cm.data.clone().unwrap_or_default();
            if let Ok(m) = publish::Manifest::from_data(&data, &object)
                && (inputs
                    .crls
                    .get(schedule)
                    .is_some_and(|(h, _)| *h == m.sha256)
                    || inputs.refused.get(schedule) == Some(&m.sha256))
            {
                return false;
            }
        }
        match publish::read_published(&self.client, &self.namespace, schedule).await {
            Ok((m, der)) => {
                if inputs
                    .crls
                    .get(schedule)
                    .is_some_and(|(h, _)| *h == m.sha256)
                {
                    return false;
                }
                self.offer_crl(inputs, schedule, m.sha256, Bytes::from(der))
            }
            // Not published yet: the manifest's watch event will bring it.
            Err(e) if e.is_not_found() => {
                tracing::debug!(schedule, "no CRL published yet");
                false
            }
            Err(e) => {
                tracing::warn!(schedule, error = %e, "cannot read the published CRL");
                false
            }
        }
    }

    /// Serve `der` as the CRL of `publication` if it is the CA's, in the scope
    /// expected there, with a cRLNumber not lower than the last served there
    /// ([`crate::crl_check`]); else log and count it and keep the previous one.
    /// Before the CA certificate is known, the CRL waits in `pending`.
    fn offer_crl(
        &self,
        inputs: &mut Inputs,
        publication: &str,
        sha256: String,
        der: Bytes,
    ) -> bool {
        let Some(ca) = inputs.ca.as_ref() else {
            inputs.pending.insert(publication.to_owned(), (sha256, der));
            return false;
        };
        let Some(scope) = inputs.scope(publication) else {
            return false;
        };
        match inputs.crl_guard.admit(publication, &der, &ca.der, &scope) {
            Ok(number) => {
                tracing::info!(publication, number, "CRL read");
                inputs.refused.remove(publication);
                inputs.crls.insert(publication.to_owned(), (sha256, der));
                true
            }
            Err(why) => {
                inputs.feed.refused_crl(
                    &format!(
                        "ConfigMap/{}/{}",
                        self.namespace,
                        publish::manifest_name(publication)
                    ),
                    &why,
                );
                inputs.refused.insert(publication.to_owned(), sha256);
                false
            }
        }
    }

    fn build(&self, inputs: &Inputs, certs: &Arc<SharedCertificates>) -> Option<CaMaterial> {
        let CaInput {
            der: ca_der, chain, ..
        } = inputs.ca.as_ref()?;
        let (_, responder_der, key) = inputs.responder.as_ref()?;
        let crls = inputs
            .crls
            .iter()
            .map(|(k, (_, der))| (k.clone(), der.clone()))
            .collect();
        match CaMaterial::new(
            ca_der.clone(),
            chain.clone(),
            responder_der,
            key.clone(),
            self.ocsp.clone(),
            crls,
            certs.clone(),
        ) {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::error!(ca = %self.ca, error = %e, "cannot assemble the CA material; keeping the previous one");
                None
            }
        }
    }

    /// Watch the material's sources; install new material when it changes.
    async fn material(
        self,
        state: StateHandle,
        certs: Arc<SharedCertificates>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<()> {
        let mut stream = self.streams();
        let mut inputs = Inputs {
            feed: state.feed().clone(),
            ..Inputs::default()
        };
        loop {
            let input = tokio::select! {
                i = stream.next() => i,
                () = stopped(&mut shutdown) => return Ok(()),
            };
            let Some(input) = input else {
                return Ok(());
            };
            if !matches!(input, Input::Error(..)) {
                state.feed().events.inc();
            }
            if self.input(&mut inputs, input).await
                && let Some(m) = self.build(&inputs, &certs)
            {
                state.install(m);
                tracing::info!(ca = %self.ca, crls = inputs.crls.len(), "CA material installed");
            }
        }
    }
}

impl Feeder for KubeFeeder {
    async fn run(self, state: StateHandle, shutdown: watch::Receiver<bool>) -> Result<()> {
        let certs = Arc::new(SharedCertificates::default());
        let certificates = tokio::spawn(self.clone().certificates(
            state.clone(),
            certs.clone(),
            shutdown.clone(),
        ));
        let material = tokio::spawn(self.material(state, certs, shutdown));
        let (a, b) = tokio::join!(certificates, material);
        a.map_err(|e| Error::invalid("certificate watch", e))??;
        b.map_err(|e| Error::invalid("material watch", e))??;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::fixture::Fixture;
    use serde_json::json;

    fn object(f: &Fixture, status: serde_json::Value) -> IssuedCertificate {
        let mut obj = Fixture::issued_certificate("root", &f.leaves[0]).unwrap();
        obj.status = serde_json::from_value(status).unwrap();
        obj
    }

    fn unix(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs)
    }

    #[test]
    fn events_map_to_per_serial_deltas() {
        let f = Fixture::new(1).unwrap();
        let serial = f.leaves[0].serial.clone();
        let set = |d: Delta| match d {
            Delta::Set(r) => {
                assert_eq!(r.serial, serial);
                assert_eq!(&r.der[..], &f.leaves[0].der[..]);
                r.status
            }
            other => panic!("expected Set, got {other:?}"),
        };
        assert_eq!(
            set(delta(&object(&f, json!(null)), "root")),
            CertStatus::Good
        );
        assert_eq!(
            set(delta(&object(&f, json!({"state": "Valid"})), "root")),
            CertStatus::Good
        );
        assert_eq!(
            set(delta(
                &object(
                    &f,
                    json!({"state": "Held", "revokedAt": "2026-03-01T00:00:00Z", "reason": "certificateHold"})
                ),
                "root"
            )),
            CertStatus::Revoked {
                time: unix(1_772_323_200),
                reason: Reason::CertificateHold,
                invalidity_date: None
            }
        );
        assert_eq!(
            set(delta(
                &object(
                    &f,
                    json!({"state": "Revoked", "revokedAt": "2026-03-01T00:00:00Z",
                           "reason": "keyCompromise", "invalidityDate": "2026-02-28T00:00:00Z"})
                ),
                "root"
            )),
            CertStatus::Revoked {
                time: unix(1_772_323_200),
                reason: Reason::KeyCompromise,
                invalidity_date: Some(unix(1_772_236_800)),
            }
        );
        // Unreadable status, certificate or CA: the serial is not served.
        for bad in [
            object(&f, json!({"state": "Revoked"})),
            object(
                &f,
                json!({"state": "Revoked", "revokedAt": "2026-03-01T00:00:00Z", "reason": "bogus"}),
            ),
            object(&f, json!({"state": "Gone"})),
        ] {
            assert_eq!(delta(&bad, "root"), Delta::Forget(serial.clone()));
        }
        let mut not_pem = object(&f, json!(null));
        not_pem.spec.certificate = "not a certificate".into();
        assert_eq!(delta(&not_pem, "root"), Delta::Forget(serial.clone()));
        let mut other_ca = object(&f, json!(null));
        other_ca.spec.ca_ref.name = "other".into();
        assert_eq!(delta(&other_ca, "root"), Delta::Forget(serial.clone()));
        let mut wrong_serial = object(&f, json!(null));
        wrong_serial.spec.serial_number = "0ABC".into();
        assert_eq!(
            delta(&wrong_serial, "root"),
            Delta::Forget(Serial::from_hex("0ABC").unwrap())
        );
        let mut no_serial = object(&f, json!(null));
        no_serial.spec.serial_number = "xyz".into();
        assert_eq!(delta(&no_serial, "root"), Delta::Skip);
        // An object that no longer deserializes: its serial is not served.
        let mut value = serde_json::to_value(object(&f, json!({"state": "Valid"}))).unwrap();
        value["status"]["revokedAt"] = json!("not a time");
        let untyped: DynamicObject = serde_json::from_value(value).unwrap();
        assert_eq!(
            untyped_delta(untyped, "root"),
            Delta::Forget(serial.clone())
        );
        let good: DynamicObject =
            serde_json::from_value(serde_json::to_value(object(&f, json!(null))).unwrap()).unwrap();
        assert!(matches!(untyped_delta(good, "root"), Delta::Set(_)));
        assert_eq!(
            delta_of_delete(&object(&f, json!(null))),
            Delta::Forget(serial)
        );
    }
}
