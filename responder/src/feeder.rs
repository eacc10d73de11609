//! Feeders fill a [`StateHandle`]: CA material, then statuses, then updates.
//!
//! Implemented here: [`DirFeeder`], which reads a directory. The Kubernetes
//! feeder ([`crate::kube_feeder::KubeFeeder`]) implements the same [`Feeder`]
//! trait: it builds a [`CaMaterial`] and calls [`StateHandle::install`] and
//! [`StateHandle::load_statuses`]; then for every watch event it calls
//! [`StateHandle::set_status`] or [`StateHandle::forget`] (a per-certificate
//! delta, visible to the next request), and `install` again when the CA
//! certificate, responder key or a CRL changes.
//!
//! ## The directory layout (`--dir DIR`)
//! | file | content |
//! |---|---|
//! | `ca.pem` | the CA certificate (PEM) |
//! | `chain.pem` | optional: its issuers (PEM bundle; the CA certificate itself may be first) |
//! | `responder.pem` | the delegated OCSP responder certificate (PEM), or the CA certificate itself |
//! | `responder.key` | its private key, unencrypted PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`) |
//! | `crl/<name>.crl`, `<name>.crl` | current CRLs, DER or PEM, served as `/crl/<name>.crl` if signed by the CA (issuer and signature checked) with a cRLNumber not lower than the last served as `<name>`; else the previous one stays ([`crate::crl_check`]) |
//! | `certs/<anything>.pem` / `.crt` / `.der` | optional: issued certificates, served by serial |
//! | `index.json` | statuses, see [`IndexFile`] |
//!
//! Every [`DirFeeder::poll`] interval (default 1 s), and at once on SIGHUP, the
//! feeder compares file sizes and modification times. A changed `index.json` is
//! diffed against the previous one and applied as per-certificate changes (the
//! response cache stays warm for the others); any other changed file reloads the
//! material. A file that does not parse (e.g. caught half-written; write a
//! temporary file and rename it) is logged and retried at the next poll, and
//! the previous state keeps being served.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::crl_check::{self, CrlGuard, Scope};
use crate::state::FeedStats;
use bytes::Bytes;
use ca::ocsp::OcspConfig;
use ca::revocation::{CertStatus, Reason};
use ca::serial::Serial;
use ca::signer::software::SoftwareKey;
use ca::signer::{KeySpec, parse_spki};
use der::{Decode, Encode};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use x509_cert::Certificate;

use crate::state::{CaMaterial, MemoryCertificates, StateHandle, parse_pem_certs};
use crate::{Error, Result};

/// A source of responder state. The binary starts one and runs it until shutdown.
pub trait Feeder: Send + 'static {
    /// Fill `state` and keep it current until `shutdown` turns true. Errors that
    /// a retry can fix (a file half-written, the API server unreachable) are
    /// logged and retried; the returned error is fatal.
    fn run(
        self,
        state: StateHandle,
        shutdown: watch::Receiver<bool>,
    ) -> impl Future<Output = Result<()>> + Send;
}

/// `index.json`: every issued certificate and every revocation.
///
/// ```json
/// {
///   "issued":  [ { "serial": "3A0F...", "notAfter": 1830297600 } ],
///   "revoked": [ { "serial": "3A0F...", "revokedAt": 1764400000,
///                  "reason": "keyCompromise", "invalidityDate": 1764300000 } ]
/// }
/// ```
///
/// Serials are hexadecimal (any case, `:` allowed), times Unix seconds, reasons
/// RFC 5280 names as in [`Reason`]'s `FromStr` (`certificateHold` for a
/// suspension). A revoked serial is `revoked` whether or not it is listed as
/// issued; an issued one is `good`; any other is `unknown`. `notAfter` is kept for
/// the record: like the core, the responder answers for a certificate until it
/// leaves the index.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IndexFile {
    /// Issued certificates.
    #[serde(default)]
    pub issued: Vec<IssuedRecord>,
    /// Revoked or suspended certificates.
    #[serde(default)]
    pub revoked: Vec<RevokedRecord>,
}

/// One issued certificate in [`IndexFile`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IssuedRecord {
    /// Serial, hexadecimal.
    pub serial: String,
    /// notAfter, Unix seconds.
    pub not_after: i64,
}

/// One revocation in [`IndexFile`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RevokedRecord {
    /// Serial, hexadecimal.
    pub serial: String,
    /// Revocation time, Unix seconds.
    pub revoked_at: i64,
    /// RFC 5280 reason name; default `unspecified`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// invalidityDate, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalidity_date: Option<i64>,
}

fn time_of(secs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

impl IndexFile {
    /// Parse JSON.
    pub fn parse(json: &[u8]) -> Result<Self> {
        serde_json::from_slice(json).map_err(|e| Error::invalid("index.json", e))
    }

    /// The status of every serial the file mentions, keyed by minimal big-endian
    /// octets.
    pub fn statuses(&self) -> Result<Statuses> {
        let serial = |hex: &str| {
            Serial::from_hex(hex)
                .map_err(|e| Error::invalid(format!("index.json serial {hex:?}"), e))
        };
        let mut out = HashMap::with_capacity(self.issued.len() + self.revoked.len());
        for i in &self.issued {
            let s = serial(&i.serial)?;
            out.entry(s.as_be_bytes().to_vec())
                .or_insert((s, CertStatus::Good));
        }
        for r in &self.revoked {
            let s = serial(&r.serial)?;
            let reason = match &r.reason {
                None => Reason::Unspecified,
                Some(name) => name.parse::<Reason>()?,
            };
            if reason == Reason::RemoveFromCrl {
                return Err(Error::invalid(
                    "index.json",
                    "removeFromCRL is not a revocation reason here",
                ));
            }
            let status = CertStatus::Revoked {
                time: time_of(r.revoked_at),
                reason,
                invalidity_date: r.invalidity_date.map(time_of),
            };
            out.insert(s.as_be_bytes().to_vec(), (s, status));
        }
        Ok(out)
    }
}

/// Reads the CA material and statuses from a directory and reloads on change.
#[derive(Clone, Debug)]
pub struct DirFeeder {
    /// The directory.
    pub dir: PathBuf,
    /// How often to look for changes.
    pub poll: Duration,
    /// OCSP response settings.
    pub ocsp: OcspConfig,
}

/// Size and modification time of each file: what "changed" means.
type Fingerprint = Vec<(PathBuf, u64, Option<SystemTime>)>;

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

fn fingerprint(paths: &[PathBuf]) -> Fingerprint {
    paths
        .iter()
        .map(|p| match std::fs::metadata(p) {
            Ok(m) => (p.clone(), m.len(), m.modified().ok()),
            Err(_) => (p.clone(), u64::MAX, None),
        })
        .collect()
}

fn files_with_ext(dir: &Path, exts: &[&str]) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| exts.contains(&e))
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

/// DER from DER-or-PEM bytes.
fn der_or_pem(what: &str, data: Vec<u8>) -> Result<Vec<u8>> {
    if data.first() == Some(&0x30) {
        return Ok(data);
    }
    der::pem::decode_vec(&data)
        .map(|(_, der)| der)
        .map_err(|e| Error::invalid(what, e))
}

impl DirFeeder {
    /// A feeder for `dir` polling every second with default OCSP settings.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        DirFeeder {
            dir: dir.into(),
            poll: Duration::from_secs(1),
            ocsp: OcspConfig::default(),
        }
    }

    fn material_files(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = ["ca.pem", "chain.pem", "responder.pem", "responder.key"]
            .iter()
            .map(|f| self.dir.join(f))
            .collect();
        v.extend(files_with_ext(&self.dir, &["crl"]));
        v.extend(files_with_ext(&self.dir.join("crl"), &["crl"]));
        v.extend(files_with_ext(
            &self.dir.join("certs"),
            &["pem", "crt", "der"],
        ));
        v
    }

    /// Read the CA material from the directory (every CRL checked afresh).
    pub fn load_material(&self) -> Result<CaMaterial> {
        self.load_checked(&mut CrlGuard::default(), None, &FeedStats::default())
    }

    /// Read the CA material; a CRL that `guard` refuses (not the CA's, or a
    /// lower cRLNumber than served under that name) is not served: the one
    /// `previous` served under that name stays, if it is the CA's.
    fn load_checked(
        &self,
        guard: &mut CrlGuard,
        previous: Option<&CaMaterial>,
        feed: &FeedStats,
    ) -> Result<CaMaterial> {
        let ca_der = parse_pem_certs("ca.pem", &read(&self.dir.join("ca.pem"))?)?
            .into_iter()
            .next()
            .ok_or_else(|| Error::invalid("ca.pem", "no certificate"))?;
        let chain_path = self.dir.join("chain.pem");
        let chain = if chain_path.exists() {
            parse_pem_certs("chain.pem", &read(&chain_path)?)?
        } else {
            Vec::new()
        };
        let responder_der =
            parse_pem_certs("responder.pem", &read(&self.dir.join("responder.pem"))?)?
                .into_iter()
                .next()
                .ok_or_else(|| Error::invalid("responder.pem", "no certificate"))?;
        let key = load_key(&self.dir.join("responder.key"), &responder_der)?;
        let mut crls = HashMap::new();
        for p in files_with_ext(&self.dir, &["crl"])
            .into_iter()
            .chain(files_with_ext(&self.dir.join("crl"), &["crl"]))
        {
            let name = p
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_owned();
            let admitted = der_or_pem(&p.display().to_string(), read(&p)?)
                .map_err(|e| crl_check::Refused {
                    reason: "unparsable",
                    detail: e.to_string(),
                })
                .and_then(|der| guard.admit(&name, &der, &ca_der, &Scope::Any).map(|_| der));
            match admitted {
                Ok(der) => {
                    crls.insert(name, Bytes::from(der));
                }
                Err(why) => {
                    feed.refused_crl(&name, &why);
                    if let Some(prev) = previous.and_then(|m| m.crls.get(&name))
                        && crl_check::verify(prev, &ca_der, &Scope::Any).is_ok()
                    {
                        crls.insert(name, prev.clone());
                    }
                }
            }
        }
        let mut certs = MemoryCertificates::default();
        for p in files_with_ext(&self.dir.join("certs"), &["pem", "crt", "der"]) {
            let data = read(&p)?;
            let ders = if data.first() == Some(&0x30) {
                vec![data]
            } else {
                parse_pem_certs(&p.display().to_string(), &data)?
            };
            for der in ders {
                certs.insert(der)?;
            }
        }
        CaMaterial::new(
            ca_der,
            chain,
            &responder_der,
            key,
            self.ocsp.clone(),
            crls,
            Arc::new(certs),
        )
    }

    /// Read `index.json`.
    pub fn load_index(&self) -> Result<IndexFile> {
        IndexFile::parse(&read(&self.dir.join("index.json"))?)
    }
}

/// The responder key from PKCS#8 PEM, signing with the default algorithm for the
/// responder certificate's key.
fn load_key(path: &Path, responder_der: &[u8]) -> Result<Arc<SoftwareKey>> {
    key_from_pem(&path.display().to_string(), &read(path)?, responder_der)
}

/// The responder key from PKCS#8 PEM `data` (named `what` in errors, which
/// never quote the key), signing with the default algorithm for the responder
/// certificate's key.
pub(crate) fn key_from_pem(
    what: &str,
    data: &[u8],
    responder_der: &[u8],
) -> Result<Arc<SoftwareKey>> {
    let (label, pkcs8) = der::pem::decode_vec(data).map_err(|e| Error::invalid(what, e))?;
    let pkcs8 = zeroize::Zeroizing::new(pkcs8);
    if label != "PRIVATE KEY" {
        return Err(Error::invalid(
            what,
            format!("expected an unencrypted PKCS#8 key (BEGIN PRIVATE KEY), found {label}"),
        ));
    }
    let cert = Certificate::from_der(responder_der)
        .map_err(|e| Error::invalid("responder certificate", e))?;
    let spki_der = cert
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|e| Error::invalid("responder certificate", e))?;
    let spec = KeySpec::of(&parse_spki(&spki_der)?)?;
    Ok(Arc::new(SoftwareKey::from_pkcs8(
        &pkcs8,
        spec.default_signature_algorithm(),
    )?))
}

/// Parsed `index.json`: serial octets → (serial, status).
pub type Statuses = HashMap<Vec<u8>, (Serial, CertStatus)>;

#[derive(Default)]
struct Loaded {
    crls: CrlGuard,
    material: Option<Fingerprint>,
    index: Option<(Fingerprint, Statuses)>,
}

impl DirFeeder {
    /// One reload pass: reload what changed since `loaded`.
    fn pass(&self, state: &StateHandle, loaded: &mut Loaded) {
        let files = self.material_files();
        let fp = fingerprint(&files);
        if loaded.material.as_ref() != Some(&fp) {
            let previous = state.material();
            match self.load_checked(&mut loaded.crls, previous.as_deref(), state.feed()) {
                Ok(m) => {
                    state.install(m);
                    loaded.material = Some(fp);
                    tracing::info!(dir = %self.dir.display(), "CA material loaded");
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot load CA material; keeping the previous one")
                }
            }
        }
        let index_path = [self.dir.join("index.json")];
        let ifp = fingerprint(&index_path);
        if loaded.index.as_ref().map(|(f, _)| f) == Some(&ifp) {
            return;
        }
        match self.load_index().and_then(|i| i.statuses()) {
            Ok(new) => {
                match loaded.index.take() {
                    None => {
                        state.load_statuses(new.values().cloned());
                        if !state.is_external() {
                            tracing::info!(statuses = new.len(), "statuses loaded");
                        }
                    }
                    Some((_, old)) => {
                        let mut changes: Vec<(Serial, Option<CertStatus>)> = new
                            .iter()
                            .filter(|(k, (_, st))| old.get(*k).is_none_or(|(_, o)| o != st))
                            .map(|(_, (s, st))| (s.clone(), Some(*st)))
                            .collect();
                        changes.extend(
                            old.iter()
                                .filter(|(k, _)| !new.contains_key(*k))
                                .map(|(_, (s, _))| (s.clone(), None)),
                        );
                        let n = state.apply(changes);
                        tracing::info!(changed = n, statuses = new.len(), "statuses updated");
                    }
                }
                loaded.index = Some((ifp, new));
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot load index.json; keeping the previous statuses")
            }
        }
    }
}

impl Feeder for DirFeeder {
    async fn run(self, state: StateHandle, mut shutdown: watch::Receiver<bool>) -> Result<()> {
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        let mut loaded = Loaded::default();
        let mut tick = tokio::time::interval(self.poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let this = self.clone();
            let st = state.clone();
            // File reads and parsing off the async workers.
            loaded = tokio::task::spawn_blocking(move || {
                this.pass(&st, &mut loaded);
                loaded
            })
            .await
            .map_err(|e| Error::invalid("directory feeder", e))?;
            tokio::select! {
                _ = tick.tick() => {}
                _ = hup.recv() => tracing::info!("SIGHUP: reloading"),
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        return Ok(());
                    }
                }
            }
        }
    }
}
