//! What the responder answers from: the CA material (swapped whole) and the status
//! table (updated per certificate).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use ca::ocsp::{OcspConfig, OcspResponder};
use ca::revocation::{CertStatus, StatusSource};
use ca::serial::Serial;
use ca::signer::Signer;
use der::{Decode, Encode};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use x509_cert::Certificate;

use crate::{Error, Result};

/// Issued certificates by serial, for `/certs/<serial>.crt`. Implementations may
/// hold them in memory ([`MemoryCertificates`]) or fetch them lazily; the call is
/// synchronous and must be fast (it runs on the request path).
pub trait CertificateStore: Send + Sync + fmt::Debug {
    /// The DER certificate with `serial`, if this CA issued it and the store has it.
    fn certificate(&self, serial: &Serial) -> Option<Bytes>;
}

/// A [`CertificateStore`] in a hash map.
#[derive(Debug, Default, Clone)]
pub struct MemoryCertificates(HashMap<Vec<u8>, Bytes>);

impl MemoryCertificates {
    /// Add a DER certificate; its serial is read from it.
    pub fn insert(&mut self, der: Vec<u8>) -> Result<Serial> {
        let cert = Certificate::from_der(&der).map_err(|e| Error::invalid("certificate", e))?;
        let serial = Serial::from_serial_number(&cert.tbs_certificate.serial_number)?;
        self.0
            .insert(serial.as_be_bytes().to_vec(), Bytes::from(der));
        Ok(serial)
    }

    /// Number of certificates held.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl CertificateStore for MemoryCertificates {
    fn certificate(&self, serial: &Serial) -> Option<Bytes> {
        self.0.get(serial.as_be_bytes()).cloned()
    }
}

/// A [`CertificateStore`] updated in place, one certificate at a time, while the
/// material that refers to it stays installed: the Kubernetes feeder keeps the
/// DER of every certificate it watches here (a re-list swaps the whole map).
#[derive(Debug, Default)]
pub struct SharedCertificates(RwLock<HashMap<SerialKey, Bytes>>);

impl SharedCertificates {
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<SerialKey, Bytes>> {
        self.0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Add or replace the certificate with `serial`.
    pub fn insert(&self, serial: &Serial, der: Bytes) {
        self.write().insert(SerialKey::new(serial), der);
    }

    /// Remove the certificate with `serial`.
    pub fn remove(&self, serial: &Serial) {
        self.write().remove(&SerialKey::new(serial));
    }

    /// Replace every certificate.
    pub fn replace(&self, all: HashMap<SerialKey, Bytes>) {
        *self.write() = all;
    }

    /// Number of certificates held.
    pub fn len(&self) -> usize {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl CertificateStore for SharedCertificates {
    fn certificate(&self, serial: &Serial) -> Option<Bytes> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&SerialKey::new(serial))
            .cloned()
    }
}

/// One CA's immutable material: the OCSP responder (CA certificate, delegated
/// responder certificate and key) and the repository. Replaced as a whole.
#[derive(Debug)]
pub struct CaMaterial {
    /// Signs OCSP responses.
    pub ocsp: OcspResponder,
    /// The CA certificate, DER.
    pub ca_der: Bytes,
    /// The CA certificate, PEM.
    pub ca_pem: Bytes,
    /// The chain (CA certificate first, then its issuers), PEM.
    pub chain_pem: Bytes,
    /// Current CRLs by name (`/crl/<name>.crl`), DER.
    pub crls: HashMap<String, Bytes>,
    /// Issued certificates.
    pub certs: Arc<dyn CertificateStore>,
    /// The responder certificate's notAfter (`/readyz` fails after it).
    pub responder_not_after: SystemTime,
}

/// PEM of one certificate.
pub fn cert_pem(der: &[u8]) -> Result<String> {
    der::pem::encode_string("CERTIFICATE", der::pem::LineEnding::LF, der)
        .map_err(|e| Error::invalid("PEM encoding", e))
}

impl CaMaterial {
    /// Assemble the material. `chain_der` lists the CA certificate's issuers
    /// (may be empty for a root, may start with the CA certificate itself).
    /// Fails if the responder certificate or key does not belong to the CA
    /// ([`OcspResponder::new`]).
    pub fn new(
        ca_der: Vec<u8>,
        chain_der: Vec<Vec<u8>>,
        responder_der: &[u8],
        responder_key: Arc<dyn Signer>,
        config: OcspConfig,
        crls: HashMap<String, Bytes>,
        certs: Arc<dyn CertificateStore>,
    ) -> Result<Self> {
        let ocsp = OcspResponder::new(&ca_der, responder_der, responder_key, config)?;
        let responder = Certificate::from_der(responder_der)
            .map_err(|e| Error::invalid("responder certificate", e))?;
        let responder_not_after = responder
            .tbs_certificate
            .validity
            .not_after
            .to_system_time();
        let ca_pem = cert_pem(&ca_der)?;
        let mut chain_pem = ca_pem.clone();
        for c in chain_der.iter().filter(|c| **c != ca_der) {
            chain_pem.push_str(&cert_pem(c)?);
        }
        Ok(CaMaterial {
            ocsp,
            ca_der: Bytes::from(ca_der),
            ca_pem: Bytes::from(ca_pem),
            chain_pem: Bytes::from(chain_pem),
            crls,
            certs,
            responder_not_after,
        })
    }
}

/// A serial as a fixed-size, allocation-free key: length, then the minimal
/// big-endian octets (at most 20, RFC 5280 §4.1.2.2).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SerialKey([u8; 21]);

impl SerialKey {
    /// The key of `serial`.
    pub fn new(serial: &Serial) -> Self {
        let b = serial.as_be_bytes();
        let n = b.len().min(20);
        let mut k = [0u8; 21];
        k[0] = n as u8;
        k[1..=n].copy_from_slice(&b[..n]);
        SerialKey(k)
    }
}

impl fmt::Debug for SerialKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = usize::from(self.0[0]);
        for b in &self.0[1..=n] {
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

/// More remembered per-serial changes than this → forget them all and treat every
/// cached response as stale (one full cache refill; bounds memory).
const MAX_CHANGES: usize = 1 << 16;

#[derive(Default)]
struct Table {
    statuses: HashMap<SerialKey, CertStatus>,
    /// Bounded mode: the order serials were cached in (eviction, oldest first;
    /// may name serials since removed).
    order: std::collections::VecDeque<SerialKey>,
    /// Generation at which each serial last changed (since `floor`).
    changed: HashMap<SerialKey, u64>,
    /// Responses signed before this generation are all stale.
    floor: u64,
}

/// Serial → status, with a generation counter that makes cached responses
/// invalidatable per serial.
///
/// Serials not in the table are [`CertStatus::Unknown`]: never `good` for a
/// serial that was not issued (CPS §4.9.10(4)).
///
/// A *bounded* table ([`StatusTable::bounded`]) is a cache in front of a
/// register ([`crate::register_source`]): it holds at most `capacity`
/// statuses (an explicit [`CertStatus::Unknown`] included), filled by
/// [`StatusTable::fill`] and emptied per serial by [`StatusTable::apply`]
/// with `None`; a serial not in it is *not looked up yet*, not unknown.
#[derive(Default)]
pub struct StatusTable {
    table: RwLock<Table>,
    generation: AtomicU64,
    /// Most statuses kept (0: unbounded, the whole CA in memory).
    capacity: usize,
}

impl fmt::Debug for StatusTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StatusTable")
            .field("generation", &self.generation())
            .finish_non_exhaustive()
    }
}

impl StatusTable {
    /// The current generation: increases with every change. Read it *before*
    /// looking up statuses for a response that will be cached, and pass it to
    /// [`StatusTable::is_fresh`] later.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// A table of at most `capacity` (≥ 1) statuses: a cache, see above.
    pub fn bounded(capacity: usize) -> Self {
        StatusTable {
            capacity: capacity.max(1),
            ..Self::default()
        }
    }

    /// The bound, if any.
    pub fn capacity(&self) -> Option<usize> {
        (self.capacity > 0).then_some(self.capacity)
    }

    /// The cached status of `serial`, if cached (bounded tables).
    pub fn cached(&self, serial: &SerialKey) -> Option<CertStatus> {
        self.read().statuses.get(serial).copied()
    }

    /// Cache `status` of `serial`, read from the register after
    /// [`StatusTable::generation`] returned `read_at`, unless the serial (or
    /// everything) changed since: a notification that arrived while the read
    /// was in flight wins over the read. Evicts the oldest entries beyond the
    /// bound. Returns whether it was cached.
    pub fn fill(&self, serial: SerialKey, status: CertStatus, read_at: u64) -> bool {
        let mut t = self.write();
        if read_at < t.floor || t.changed.get(&serial).is_some_and(|g| *g > read_at) {
            return false;
        }
        let cap = self.capacity.max(1);
        if !t.statuses.contains_key(&serial) {
            // `order` may name serials removed since (a notification): bound it
            // too, so it never grows past twice the capacity.
            while t.statuses.len() >= cap || t.order.len() >= 2 * cap {
                let Some(old) = t.order.pop_front() else {
                    break;
                };
                t.statuses.remove(&old);
            }
            t.order.push_back(serial);
        }
        t.statuses.insert(serial, status);
        true
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Table> {
        self.table
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Table> {
        self.table
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Apply per-certificate changes: `Some(status)` sets, `None` forgets (the
    /// serial becomes unknown). One write lock for the whole batch.
    pub fn apply<I>(&self, changes: I) -> usize
    where
        I: IntoIterator<Item = (Serial, Option<CertStatus>)>,
    {
        let mut t = self.write();
        let next = self.generation.load(Ordering::Relaxed) + 1;
        let mut n = 0;
        for (serial, status) in changes {
            let key = SerialKey::new(&serial);
            match status {
                Some(s) => {
                    t.statuses.insert(key, s);
                }
                None => {
                    t.statuses.remove(&key);
                }
            }
            t.changed.insert(key, next);
            n += 1;
        }
        if t.changed.len() > MAX_CHANGES {
            t.changed.clear();
            t.floor = next;
        }
        if n > 0 {
            self.generation.store(next, Ordering::Release);
        }
        n
    }

    /// Replace the whole table (a full load). Every cached response becomes stale.
    pub fn replace<I>(&self, statuses: I)
    where
        I: IntoIterator<Item = (Serial, CertStatus)>,
    {
        let map: HashMap<SerialKey, CertStatus> = statuses
            .into_iter()
            .map(|(s, st)| (SerialKey::new(&s), st))
            .collect();
        let mut t = self.write();
        t.statuses = map;
        t.order.clear();
        self.invalidate_locked(&mut t);
    }

    /// Make every cached response stale (e.g. new CA material).
    pub fn invalidate_all(&self) {
        let mut t = self.write();
        self.invalidate_locked(&mut t);
    }

    fn invalidate_locked(&self, t: &mut Table) {
        let next = self.generation.load(Ordering::Relaxed) + 1;
        t.changed.clear();
        t.floor = next;
        self.generation.store(next, Ordering::Release);
    }

    /// Whether a response about `serials` built from statuses read at generation
    /// `generation` still tells the truth: none of them changed since.
    pub fn is_fresh(&self, serials: &[SerialKey], generation: u64) -> bool {
        let t = self.read();
        generation >= t.floor
            && serials
                .iter()
                .all(|s| t.changed.get(s).is_none_or(|g| *g <= generation))
    }

    /// Number of serials known.
    pub fn len(&self) -> usize {
        self.read().statuses.len()
    }

    /// Whether no serial is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl StatusSource for StatusTable {
    fn status(&self, serial: &Serial) -> CertStatus {
        self.read()
            .statuses
            .get(&SerialKey::new(serial))
            .copied()
            .unwrap_or(CertStatus::Unknown)
    }
}

#[derive(Default)]
struct Shared {
    material: ArcSwapOption<CaMaterial>,
    table: StatusTable,
    statuses_loaded: AtomicBool,
    feed: FeedStats,
    /// Statuses come from a register ([`crate::register_source`]), not from
    /// the feeder: the feeder's status calls are ignored.
    external: bool,
}

/// Labels of `chop_responder_crl_refused_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct CrlRefusedLabels {
    /// Why: `unparsable`, `issuer`, `signature`, `scope`, `number`.
    pub reason: &'static str,
}

/// What a feeder reports about itself, exported by [`crate::metrics`].
#[derive(Debug, Default, Clone)]
pub struct FeedStats {
    /// CRLs not served, by reason (`chop_responder_crl_refused_total`).
    pub crl_refused: prometheus_client::metrics::family::Family<CrlRefusedLabels, Counter>,
    /// Watch events applied (`chop_responder_feed_events_total`).
    pub events: Counter,
    /// When the feeder last completed a full (re-)list, Unix seconds
    /// (`chop_responder_feed_last_sync_seconds`).
    pub last_sync: Gauge,
}

impl FeedStats {
    /// Log and count a refused CRL (`name`: where it would have been served).
    pub fn refused_crl(&self, name: &str, why: &crate::crl_check::Refused) {
        tracing::error!(crl = name, reason = why.reason, detail = %why.detail, "CRL refused: not served; the previous one (if any) stays");
        self.crl_refused
            .get_or_create(&CrlRefusedLabels { reason: why.reason })
            .inc();
    }

    /// Record a completed full list now.
    pub fn synced(&self) {
        let now = SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        self.last_sync.set(now);
    }
}

/// The responder's state, shared by the HTTP server and the feeder. Cheap to clone.
///
/// This is the whole feeder API: [`install`](Self::install) new CA material,
/// [`load_statuses`](Self::load_statuses) for a full status list, and
/// [`set_status`](Self::set_status) / [`forget`](Self::forget) /
/// [`apply`](Self::apply) for per-certificate events. Every call is visible to the
/// very next request when it returns.
#[derive(Clone, Default)]
pub struct StateHandle(Arc<Shared>);

impl fmt::Debug for StateHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateHandle")
            .field("material", &self.0.material.load().is_some())
            .field("table", &self.0.table)
            .finish()
    }
}

impl StateHandle {
    /// Empty state: not ready until material and statuses are loaded.
    pub fn new() -> Self {
        Self::default()
    }

    /// Empty state whose statuses come from a register
    /// ([`crate::register_source::RegisterStatuses`]) through a bounded cache of
    /// `capacity` statuses. The feeder installs the material only: its status
    /// calls ([`load_statuses`](Self::load_statuses), [`set_status`](Self::set_status),
    /// [`forget`](Self::forget), [`apply`](Self::apply)) do nothing. Ready
    /// while the register's change feed is followed ([`set_following`](Self::set_following)).
    pub fn with_register(capacity: usize) -> Self {
        StateHandle(Arc::new(Shared {
            table: StatusTable::bounded(capacity),
            external: true,
            ..Shared::default()
        }))
    }

    /// Whether statuses come from a register ([`with_register`](Self::with_register)).
    pub fn is_external(&self) -> bool {
        self.0.external
    }

    /// Register mode: the change feed is followed (`true`: answers may be
    /// given) or lost (`false`: `tryLater` until it is followed again). Either
    /// way every cached status and response is dropped: a change missed while
    /// not following must never leave a stale answer.
    pub fn set_following(&self, following: bool) {
        self.0.table.replace(std::iter::empty());
        self.0.statuses_loaded.store(following, Ordering::Release);
    }

    /// Install new CA material (certificates, responder key, CRLs, issued
    /// certificates). Cached responses signed with the old material are dropped.
    pub fn install(&self, material: CaMaterial) {
        self.0.material.store(Some(Arc::new(material)));
        // After the swap: a response signed with the old material carries an
        // older generation and is stale.
        self.0.table.invalidate_all();
    }

    /// The current material, if any.
    pub fn material(&self) -> Option<Arc<CaMaterial>> {
        self.0.material.load_full()
    }

    /// Replace all statuses (full load).
    pub fn load_statuses<I>(&self, statuses: I)
    where
        I: IntoIterator<Item = (Serial, CertStatus)>,
    {
        if self.0.external {
            return;
        }
        self.0.table.replace(statuses);
        self.0.statuses_loaded.store(true, Ordering::Release);
    }

    /// Set one certificate's status (issued → `Good`, revoked or held →
    /// `Revoked`, resumed → `Good`).
    pub fn set_status(&self, serial: &Serial, status: CertStatus) {
        self.apply([(serial.clone(), Some(status))]);
    }

    /// Forget a certificate (it answers `unknown` from now on).
    pub fn forget(&self, serial: &Serial) {
        self.apply([(serial.clone(), None)]);
    }

    /// Apply a batch of per-certificate changes atomically; returns how many.
    pub fn apply<I>(&self, changes: I) -> usize
    where
        I: IntoIterator<Item = (Serial, Option<CertStatus>)>,
    {
        if self.0.external {
            return 0;
        }
        self.0.table.apply(changes)
    }

    /// Whether a full list of statuses has been loaded.
    pub fn statuses_loaded(&self) -> bool {
        self.0.statuses_loaded.load(Ordering::Acquire)
    }

    /// The feeder's counters.
    pub fn feed(&self) -> &FeedStats {
        &self.0.feed
    }

    /// The status table.
    pub fn table(&self) -> &StatusTable {
        &self.0.table
    }

    /// Ready to serve: material installed, statuses loaded, responder certificate
    /// not expired at `now`.
    pub fn is_ready(&self, now: SystemTime) -> bool {
        self.0.statuses_loaded.load(Ordering::Acquire)
            && self
                .0
                .material
                .load()
                .as_ref()
                .is_some_and(|m| now < m.responder_not_after)
    }
}

/// DER of every certificate in a PEM bundle.
pub fn parse_pem_certs(what: &str, pem: &[u8]) -> Result<Vec<Vec<u8>>> {
    let certs = Certificate::load_pem_chain(pem).map_err(|e| Error::invalid(what, e))?;
    certs
        .iter()
        .map(|c| c.to_der().map_err(|e| Error::invalid(what, e)))
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn serial(n: u8) -> Serial {
        Serial::from_be_bytes(&[n]).unwrap()
    }

    #[test]
    fn unknown_unless_stated() {
        let t = StatusTable::default();
        assert_eq!(t.status(&serial(1)), CertStatus::Unknown);
        t.replace([(serial(1), CertStatus::Good)]);
        assert_eq!(t.status(&serial(1)), CertStatus::Good);
        assert_eq!(t.status(&serial(2)), CertStatus::Unknown);
        t.apply([(serial(1), None)]);
        assert_eq!(t.status(&serial(1)), CertStatus::Unknown);
    }

    #[test]
    fn freshness_is_per_serial() {
        let t = StatusTable::default();
        t.replace([(serial(1), CertStatus::Good), (serial(2), CertStatus::Good)]);
        let g = t.generation();
        let (k1, k2) = (SerialKey::new(&serial(1)), SerialKey::new(&serial(2)));
        assert!(t.is_fresh(&[k1], g) && t.is_fresh(&[k2], g));
        t.apply([(serial(1), Some(CertStatus::Good))]);
        assert!(
            !t.is_fresh(&[k1], g),
            "a change to 1 makes answers about 1 stale"
        );
        assert!(t.is_fresh(&[k2], g), "answers about 2 stay");
        assert!(!t.is_fresh(&[k2, k1], g));
        assert!(t.is_fresh(&[k1], t.generation()));
        // A full reload or new material makes everything stale.
        let g = t.generation();
        t.invalidate_all();
        assert!(!t.is_fresh(&[k2], g));
    }

    #[test]
    fn change_log_is_bounded() {
        let t = StatusTable::default();
        let g = t.generation();
        let k = SerialKey::new(&serial(1));
        for i in 0..(MAX_CHANGES as u32 + 10) {
            let s = Serial::from_be_bytes(&(i + 1000).to_be_bytes()).unwrap();
            t.apply([(s, Some(CertStatus::Good))]);
        }
        assert!(t.read().changed.len() <= MAX_CHANGES);
        assert!(!t.is_fresh(&[k], g), "overflow → everything older is stale");
    }
}
