//! The audit trail (CPS §5.4): what the controller records, and the rule that
//! the record of an action is committed before the action's effect.
//!
//! One writer task ([`writer`]) owns the trail: it appends records in signed
//! segments (`AuditSegment` objects in the audit namespace, format in
//! docs/audit.md and the `chop-audit` crate), signed with the audit key
//! ([`key`]), an HSM key that signs nothing else. Reconcilers hold an
//! [`Audit`] handle and call [`Audit::record`] with an [`AuditEvent`]
//! ([`events`] builds them); it returns once the segment holding the record
//! exists in the API server.
//!
//! Fail closed (§5.4.6): while segments cannot be written (no audit token
//! configured, the HSM or the API server refusing), `record` fails after
//! [`RECORD_TIMEOUT`] with [`Error::AuditUnavailable`], and the caller does
//! not act: its object gets a condition of reason `AuditUnavailable` and an
//! Event, and is retried. The writer keeps the queued records and commits them
//! once it can; a caller that submits the same action again (same
//! [`AuditEvent::dedup`] key) while it is pending or recently committed gets
//! the same sequence number, so nothing is lost and nothing is recorded twice.

pub mod events;
pub mod key;
pub mod tamper;
pub mod writer;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ca::signer::Pin;
use crds::audit_segment::{AuditObject, AuditRecord, AuditUser};
use kube::{Resource, ResourceExt};
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};

pub use events::*;

/// Label of the audit key in the audit token.
pub const KEY_LABEL: &str = "chop-audit";
/// Name of the ConfigMap that publishes the audit key.
pub const KEY_CONFIGMAP: &str = "chop-audit-key";
/// How long a caller waits for its record to be committed.
pub const RECORD_TIMEOUT: Duration = Duration::from_secs(10);
/// The shortest retention the controller accepts (CPS §5.4.3: two months).
pub const MIN_RETENTION: Duration = Duration::from_secs(60 * 86_400);
/// Default retention: 62 days.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(62 * 86_400);
/// Condition reason (and Event reason) of an action waiting for the trail.
pub const REASON: &str = "AuditUnavailable";

/// Where and how the trail is written (`--audit-*` flags, `CHOP_AUDIT_*`).
#[derive(Clone)]
pub struct AuditConfig {
    /// `false` with `--audit off`: nothing is recorded (benchmarks only).
    pub enabled: bool,
    /// Namespace of the AuditSegments and the key ConfigMap.
    pub namespace: String,
    /// PKCS#11 module of the audit token.
    pub module: PathBuf,
    /// Label of the audit token; `None`: not configured (fail closed).
    pub token_label: Option<String>,
    /// The audit token's user PIN.
    pub pin: Option<Pin>,
    /// Segments older than this are labelled past retention.
    pub retention: Duration,
    /// Group-commit delay: how long the writer waits for more records after
    /// the first of a segment (0: none).
    pub commit_delay: Duration,
}

impl std::fmt::Debug for AuditConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditConfig")
            .field("enabled", &self.enabled)
            .field("namespace", &self.namespace)
            .field("module", &self.module)
            .field("token_label", &self.token_label)
            .field("pin", &self.pin.as_ref().map(|_| "<redacted>"))
            .field("retention", &self.retention)
            .field("commit_delay", &self.commit_delay)
            .finish()
    }
}

/// One event to record: the record without its sequence, time and previous
/// hash (the writer fills them in), and its deduplication key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditEvent {
    /// The record (sequence, time and previousHash are set by the writer).
    pub record: AuditRecord,
    /// Records with the same key are one record: a caller that submits the
    /// action again while it is queued or recently committed gets the same
    /// sequence number.
    pub dedup: Option<String>,
}

impl AuditEvent {
    /// An event of class `event` with `outcome`.
    pub fn new(event: &str, outcome: &str) -> Self {
        AuditEvent {
            record: AuditRecord {
                event: event.to_string(),
                outcome: outcome.to_string(),
                ..AuditRecord::default()
            },
            dedup: None,
        }
    }

    /// About `obj` (kind, namespace, name, uid, resourceVersion).
    pub fn object<K: Resource<DynamicType = ()>>(mut self, obj: &K) -> Self {
        self.record.object = Some(AuditObject {
            kind: K::kind(&()).to_string(),
            namespace: obj.namespace(),
            name: obj.name_any(),
            uid: obj.uid(),
            resource_version: obj.resource_version(),
        });
        self
    }

    /// A person involved, with their part.
    pub fn user(mut self, role: &str, user: Option<&str>) -> Self {
        if let Some(u) = user.filter(|u| !u.is_empty()) {
            self.record.users.push(AuditUser {
                role: role.to_string(),
                user: u.to_string(),
            });
        }
        self
    }

    /// The CA concerned (`namespace/name`).
    pub fn ca(mut self, namespace: &str, name: &str) -> Self {
        self.record.ca = Some(format!("{namespace}/{name}"));
        self
    }

    /// The reason.
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.record.reason = Some(reason.into());
        self
    }

    /// The certificate serial (hex).
    pub fn serial(mut self, serial: impl Into<String>) -> Self {
        self.record.serial = Some(serial.into());
        self
    }

    /// The CRL number.
    pub fn crl_number(mut self, n: u64) -> Self {
        self.record.crl_number = Some(n);
        self
    }

    /// The HSM key used (fingerprint) and why (`details.purpose`).
    pub fn key_use(mut self, fingerprint: impl Into<String>, purpose: &str) -> Self {
        self.record.key = Some(fingerprint.into());
        self.record
            .details
            .insert("purpose".into(), purpose.to_string());
        self
    }

    /// A further fact.
    pub fn detail(mut self, name: &str, value: impl Into<String>) -> Self {
        self.record.details.insert(name.to_string(), value.into());
        self
    }

    /// `f` applied to this event (to add users in a builder chain).
    pub fn map_users(self, f: impl FnOnce(Self) -> Self) -> Self {
        f(self)
    }

    /// The deduplication key.
    pub fn dedup(mut self, key: impl Into<String>) -> Self {
        self.dedup = Some(key.into());
        self
    }
}

/// What the handles and the writer share.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    /// Commits succeed (false while the writer retries).
    writable: AtomicBool,
    /// Why the trail is not writable, for conditions.
    why: Mutex<String>,
    /// Deduplication: key → pending waiters or the committed sequence.
    dedup: Mutex<HashMap<String, Dedup>>,
    /// Segment hash of each segment this writer committed or read at start,
    /// by index (the tamper watch compares with it).
    pub(crate) committed: Mutex<HashMap<u64, String>>,
}

#[derive(Debug)]
pub(crate) enum Dedup {
    Pending(Vec<oneshot::Sender<u64>>),
    Committed(u64, Instant),
}

/// A queued record and who waits for it.
#[derive(Debug)]
pub(crate) struct Queued {
    pub(crate) record: AuditRecord,
    pub(crate) dedup: Option<String>,
    pub(crate) reply: Option<oneshot::Sender<u64>>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    pub(crate) fn set_writable(&self, writable: bool, why: &str) {
        self.writable.store(writable, Ordering::SeqCst);
        *lock(&self.why) = why.to_string();
    }
}

#[derive(Clone, Debug)]
enum Mode {
    /// `--audit off`.
    Off,
    /// Auditing on but no token configured: everything waits.
    Unconfigured(String),
    /// The writer task.
    Writer(mpsc::UnboundedSender<Queued>, Arc<Shared>),
}

/// The handle reconcilers record through (cheap to clone).
#[derive(Clone, Debug)]
pub struct Audit {
    mode: Mode,
}

impl Audit {
    /// Auditing off: `record` succeeds without recording (benchmarks only).
    pub fn off() -> Self {
        Audit { mode: Mode::Off }
    }

    /// Auditing on but impossible (`why`): every `record` fails.
    pub fn unconfigured(why: impl Into<String>) -> Self {
        Audit {
            mode: Mode::Unconfigured(why.into()),
        }
    }

    pub(crate) fn writer(tx: mpsc::UnboundedSender<Queued>, shared: Arc<Shared>) -> Self {
        Audit {
            mode: Mode::Writer(tx, shared),
        }
    }

    /// Whether auditing is on.
    pub fn enabled(&self) -> bool {
        !matches!(self.mode, Mode::Off)
    }

    /// Whether records are being committed now.
    pub fn is_writable(&self) -> bool {
        match &self.mode {
            Mode::Off => true,
            Mode::Unconfigured(_) => false,
            Mode::Writer(_, s) => s.writable.load(Ordering::SeqCst),
        }
    }

    /// The segment hash of segment `index` as this writer committed or read it.
    pub fn committed_hash(&self, index: u64) -> Option<String> {
        match &self.mode {
            Mode::Writer(_, s) => lock(&s.committed).get(&index).cloned(),
            _ => None,
        }
    }

    /// Record `event`; returns its sequence number once the segment holding it
    /// is stored (0 with auditing off), or [`Error::AuditUnavailable`] after
    /// [`RECORD_TIMEOUT`].
    pub async fn record(&self, event: AuditEvent) -> Result<u64> {
        self.record_within(event, RECORD_TIMEOUT).await
    }

    /// [`Audit::record`] with another timeout.
    pub async fn record_within(&self, event: AuditEvent, timeout: Duration) -> Result<u64> {
        let rx = match self.submit(event)? {
            Submitted::Done(seq) => return Ok(seq),
            Submitted::Waiting(rx) => rx,
        };
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(seq)) => Ok(seq),
            Ok(Err(_)) => Err(Error::AuditUnavailable {
                message: "the audit writer stopped".into(),
            }),
            Err(_) => Err(Error::AuditUnavailable {
                message: format!(
                    "the record was not committed within {}s: {}",
                    timeout.as_secs(),
                    self.why()
                ),
            }),
        }
    }

    fn why(&self) -> String {
        match &self.mode {
            Mode::Writer(_, s) => lock(&s.why).clone(),
            Mode::Unconfigured(why) => why.clone(),
            Mode::Off => String::new(),
        }
    }

    /// Queue `event` now (so it precedes anything queued after this call).
    fn submit(&self, event: AuditEvent) -> Result<Submitted> {
        let (tx, shared) = match &self.mode {
            Mode::Off => return Ok(Submitted::Done(0)),
            Mode::Unconfigured(why) => {
                return Err(Error::AuditUnavailable {
                    message: why.clone(),
                });
            }
            Mode::Writer(tx, shared) => (tx, shared),
        };
        let (reply, rx) = oneshot::channel();
        let send = match &event.dedup {
            Some(key) => {
                let mut map = lock(&shared.dedup);
                match map.get_mut(key) {
                    Some(Dedup::Committed(seq, _)) => return Ok(Submitted::Done(*seq)),
                    Some(Dedup::Pending(waiters)) => {
                        waiters.push(reply);
                        None
                    }
                    None => {
                        map.insert(key.clone(), Dedup::Pending(vec![reply]));
                        Some(Queued {
                            record: event.record,
                            dedup: event.dedup.clone(),
                            reply: None,
                        })
                    }
                }
            }
            None => Some(Queued {
                record: event.record,
                dedup: None,
                reply: Some(reply),
            }),
        };
        if let Some(q) = send
            && tx.send(q).is_err()
        {
            return Err(Error::AuditUnavailable {
                message: "the audit writer stopped".into(),
            });
        }
        Ok(Submitted::Waiting(rx))
    }

    /// Record `event` without waiting for the commit (observed events and
    /// outcomes, whose effect is not the controller's to hold back): it is
    /// queued now, so it precedes what is recorded after; failures are logged.
    pub fn note(&self, event: AuditEvent) {
        let what = event.record.event.clone();
        match self.submit(event) {
            Ok(Submitted::Done(_)) => {}
            Ok(Submitted::Waiting(rx)) => {
                tokio::spawn(async move {
                    if rx.await.is_err() {
                        tracing::warn!(event = %what, "audit record not committed: the writer stopped");
                    }
                });
            }
            Err(e) => tracing::warn!(event = %what, error = %e, "audit record not queued"),
        }
    }
}

enum Submitted {
    Done(u64),
    Waiting(oneshot::Receiver<u64>),
}

/// Details as a sorted map (for tests and call sites).
pub fn details<const N: usize>(pairs: [(&str, String); N]) -> BTreeMap<String, String> {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn a_resubmitted_action_is_queued_once_and_answered_with_one_sequence() {
        let shared = Arc::new(Shared::default());
        let (tx, mut rx) = mpsc::unbounded_channel();
        let audit = Audit::writer(tx, Arc::clone(&shared));
        let ev = || AuditEvent::new("certificate.issue", "intent").dedup("certificate.issue/u/0A");
        // The first caller gives up (the trail is unwritable); the action is
        // retried: still one queued record.
        let first = audit
            .record_within(ev(), Duration::from_millis(20))
            .await
            .unwrap_err();
        assert_eq!(first.metric_label(), REASON);
        let again = tokio::spawn({
            let audit = audit.clone();
            async move { audit.record_within(ev(), Duration::from_secs(5)).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let queued = rx.recv().await.unwrap();
        assert!(rx.try_recv().is_err(), "queued twice");
        writer::answer(&shared, vec![queued], 41);
        assert_eq!(again.await.unwrap().unwrap(), 41);
        // Committed: a third submission is answered at once, nothing queued.
        assert_eq!(audit.record(ev()).await.unwrap(), 41);
        assert!(rx.try_recv().is_err());
        // Other actions are queued.
        audit.note(AuditEvent::new("request.created", "observed"));
        assert!(rx.try_recv().is_ok());
    }

    #[test]
    fn the_pin_is_not_in_debug() {
        let c = AuditConfig {
            enabled: true,
            namespace: "ns".into(),
            module: "/m.so".into(),
            token_label: Some("chop-audit".into()),
            pin: Some(Pin::new("sesame-Kq2vXw")),
            retention: DEFAULT_RETENTION,
            commit_delay: Duration::ZERO,
        };
        assert!(!format!("{c:?}").contains("sesame"));
    }
}
