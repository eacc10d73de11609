//! Prometheus metrics (`prometheus-client`, prefix `chop_`) and the tiny HTTP
//! server that serves them with `/healthz` and `/readyz`.
//!
//! | metric | labels |
//! |---|---|
//! | `chop_reconcile_duration_seconds` | `kind` |
//! | `chop_reconcile_errors_total` | `kind`, `error` |
//! | `chop_certificates_issued_total` | `ca`, `profile`, `result` |
//! | `chop_hsm_operation_duration_seconds` | `operation` |
//! | `chop_crl_number` | `ca` |
//! | `chop_crl_entries` | `ca` |
//! | `chop_crl_size_bytes` | `ca` |
//! | `chop_crl_next_update_timestamp_seconds` | `ca` |
//! | `chop_revocations_total` | `ca`, `reason` (certificates newly revoked) |
//! | `chop_suspensions_total` | `ca`, `action` (`held`, `resumed`) |
//! | `chop_certificate_requests_deleted_total` | `ca`, `outcome` (`Issued`, `Denied`, `Failed`, `Lapsed`): finished requests garbage-collected |
//! | `chop_key_ceremony_steps_total` | `operation`, `step`, `outcome` |
//! | `chop_controller_leader` | (1 on the replica that leads) |
//! | `chop_ca_issuance_enabled` | `ca` (1 Enabled, 0 Suspended) |
//! | `chop_ca_certificate_not_after_timestamp_seconds` | `ca` |
//! | `chop_hsm_login_failures_total` | `ca`, `reason` (wrong or locked PIN, lock-out) |
//! | `chop_audit_enabled` | (1 auditing on, 0 with `--audit off`) |
//! | `chop_audit_writable` | (1 while audit segments commit, 0 while actions wait) |
//! | `chop_audit_records_total` | `event` |
//! | `chop_audit_segments_total` | |
//! | `chop_audit_commit_seconds` | (seal, sign and create one segment) |
//! | `chop_audit_pending_records` | |
//! | `chop_audit_tamper_detected_total` | |
//! | `chop_audit_tree_size` | |
//! | `chop_certificates_archived_total` | `ca` (expired records moved to the audit trail) |
//!
//! No label ever carries a subject, a subscriber reference or anything secret
//! (CPS §9.4): only kinds, CA names, profile names and error reasons.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::io::{Read, Write};
use std::net::TcpListener;

/// Labels of `chop_reconcile_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// The resource kind reconciled.
    pub kind: String,
}

/// Labels of `chop_reconcile_errors_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// The resource kind reconciled.
    pub kind: String,
    /// The error's PascalCase label ([`crate::error::Error::metric_label`]).
    pub error: String,
}

/// Labels of `chop_key_ceremony_steps_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CeremonyLabels {
    /// The operation (Generate, Backup, ...).
    pub operation: String,
    /// The step (QuorumMet, GenerateKey, SelfSign, Wrap, ..., Ceremony).
    pub step: String,
    /// `Succeeded`, `Failed` or `Started`.
    pub outcome: String,
}

/// Labels of `chop_certificates_issued_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IssuedLabels {
    /// The issuing CertificateAuthority's name.
    pub ca: String,
    /// The profile.
    pub profile: String,
    /// `Issued`, or the reason issuance was refused.
    pub result: String,
}

/// Labels of `chop_hsm_operation_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HsmLabels {
    /// `open`, `generate`, `selfSign`, `sign`.
    pub operation: String,
}

/// Labels of the `chop_crl_*` gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CaLabels {
    /// The CertificateAuthority's name.
    pub ca: String,
}

/// Labels of `chop_hsm_login_failures_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LoginLabels {
    /// The CertificateAuthority's name.
    pub ca: String,
    /// `HsmPinIncorrect`, `HsmPinLocked` or `ActivationDataLocked`.
    pub reason: String,
}

/// Labels of `chop_revocations_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RevocationLabels {
    /// The issuing CertificateAuthority's name.
    pub ca: String,
    /// RFC 5280 CRLReason name (camelCase).
    pub reason: String,
}

/// Labels of `chop_suspensions_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SuspensionLabels {
    /// The issuing CertificateAuthority's name.
    pub ca: String,
    /// `held` or `resumed`.
    pub action: String,
}

/// Labels of `chop_certificate_requests_deleted_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeletedLabels {
    /// The CertificateAuthority's name.
    pub ca: String,
    /// How the request finished: `Issued`, `Denied`, `Failed` or `Lapsed`.
    pub outcome: String,
}

/// Labels of `chop_certificate_requests_waiting`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WaitingLabels {
    /// The CertificateAuthority's name.
    pub ca: String,
    /// Why the requests wait: the reason of their `Issued=False` condition
    /// (`WaitingForApproval`, `WaitingForAcceptance`, `IssuanceSuspended`,
    /// `CANotReady`, ...).
    pub reason: String,
}

/// Labels of `chop_audit_records_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuditLabels {
    /// The record's event class (`certificate.issue`, ...).
    pub event: String,
}

/// All metrics of the controller.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reconcile_duration: Family<KindLabels, Histogram>,
    reconcile_errors: Family<ErrorLabels, Counter>,
    issued: Family<IssuedLabels, Counter>,
    hsm_duration: Family<HsmLabels, Histogram>,
    crl_number: Family<CaLabels, Gauge>,
    crl_entries: Family<CaLabels, Gauge>,
    crl_size: Family<CaLabels, Gauge>,
    crl_next_update: Family<CaLabels, Gauge>,
    revocations: Family<RevocationLabels, Counter>,
    suspensions: Family<SuspensionLabels, Counter>,
    ceremony_steps: Family<CeremonyLabels, Counter>,
    leader: Gauge,
    issuance_enabled: Family<CaLabels, Gauge>,
    ca_not_after: Family<CaLabels, Gauge>,
    login_failures: Family<LoginLabels, Counter>,
    audit_enabled: Gauge,
    audit_writable: Gauge,
    audit_records: Family<AuditLabels, Counter>,
    audit_segments: Counter,
    audit_commit: Histogram,
    audit_pending: Gauge,
    audit_tamper: Counter,
    audit_tree_size: Gauge,
    archived: Family<CaLabels, Counter>,
    requests_waiting: Family<WaitingLabels, Gauge>,
    requests_deleted: Family<DeletedLabels, Counter>,
    /// Which label set each waiting request (by uid) is counted in.
    waiting: std::sync::Mutex<std::collections::HashMap<String, WaitingLabels>>,
    ready: AtomicBool,
}

fn seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("chop");
        let reconcile_duration =
            Family::<KindLabels, Histogram>::new_with_constructor(seconds_histogram as fn() -> _);
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        let issued = Family::<IssuedLabels, Counter>::default();
        let hsm_duration =
            Family::<HsmLabels, Histogram>::new_with_constructor(seconds_histogram as fn() -> _);
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconcile",
            reconcile_duration.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Reconciles that ended in an error",
            reconcile_errors.clone(),
        );
        registry.register(
            "certificates_issued",
            "Certificate issuance outcomes",
            issued.clone(),
        );
        registry.register(
            "hsm_operation_duration_seconds",
            "Time spent in HSM operations",
            hsm_duration.clone(),
        );
        let crl_number = Family::<CaLabels, Gauge>::default();
        let crl_entries = Family::<CaLabels, Gauge>::default();
        let crl_size = Family::<CaLabels, Gauge>::default();
        let crl_next_update = Family::<CaLabels, Gauge>::default();
        registry.register(
            "crl_number",
            "cRLNumber of the CA's current full CRL",
            crl_number.clone(),
        );
        registry.register(
            "crl_entries",
            "Entries in the CA's current full CRL",
            crl_entries.clone(),
        );
        registry.register(
            "crl_size_bytes",
            "Size of the CA's current full CRL",
            crl_size.clone(),
        );
        registry.register(
            "crl_next_update_timestamp_seconds",
            "nextUpdate of the CA's current full CRL (Unix time)",
            crl_next_update.clone(),
        );
        let ceremony_steps = Family::<CeremonyLabels, Counter>::default();
        registry.register(
            "key_ceremony_steps",
            "KeyCeremony steps by operation, step and outcome (step Ceremony: whole ceremonies)",
            ceremony_steps.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "controller_leader",
            "1 on the replica that holds the leader lease and reconciles, 0 on standbys",
            leader.clone(),
        );
        let issuance_enabled = Family::<CaLabels, Gauge>::default();
        registry.register(
            "ca_issuance_enabled",
            "1 when the CA's spec.issuance is Enabled, 0 when Suspended",
            issuance_enabled.clone(),
        );
        let ca_not_after = Family::<CaLabels, Gauge>::default();
        registry.register(
            "ca_certificate_not_after_timestamp_seconds",
            "notAfter of the CA's own certificate (Unix time)",
            ca_not_after.clone(),
        );
        let login_failures = Family::<LoginLabels, Counter>::default();
        registry.register(
            "hsm_login_failures",
            "Refused logins to a CA's token (wrong or locked PIN) and lock-outs after 3 (CPS §6.4.2)",
            login_failures.clone(),
        );
        let revocations = Family::<RevocationLabels, Counter>::default();
        let suspensions = Family::<SuspensionLabels, Counter>::default();
        registry.register(
            "revocations",
            "Certificates newly revoked",
            revocations.clone(),
        );
        registry.register(
            "suspensions",
            "Certificates put on hold or resumed",
            suspensions.clone(),
        );
        let requests_waiting = Family::<WaitingLabels, Gauge>::default();
        registry.register(
            "certificate_requests_waiting",
            "CertificateRequests that wait to be issued, by CA and reason (their Issued=False reason)",
            requests_waiting.clone(),
        );
        let requests_deleted = Family::<DeletedLabels, Counter>::default();
        registry.register(
            "certificate_requests_deleted",
            "Finished CertificateRequests garbage-collected after --request-retention, by CA and outcome",
            requests_deleted.clone(),
        );
        let audit_enabled = Gauge::default();
        registry.register(
            "audit_enabled",
            "1 when the controller records the audit trail, 0 with --audit off (benchmarks only)",
            audit_enabled.clone(),
        );
        let audit_writable = Gauge::default();
        registry.register(
            "audit_writable",
            "1 while audit segments commit; 0 while they cannot and recorded actions wait (CPS 5.4.6)",
            audit_writable.clone(),
        );
        let audit_records = Family::<AuditLabels, Counter>::default();
        registry.register(
            "audit_records",
            "Audit records committed, by event class",
            audit_records.clone(),
        );
        let audit_segments = Counter::default();
        registry.register(
            "audit_segments",
            "Audit segments committed",
            audit_segments.clone(),
        );
        let audit_commit = seconds_histogram();
        registry.register(
            "audit_commit_seconds",
            "Time to seal, sign and store one audit segment",
            audit_commit.clone(),
        );
        let audit_pending = Gauge::default();
        registry.register(
            "audit_pending_records",
            "Audit records queued, not yet committed",
            audit_pending.clone(),
        );
        let audit_tamper = Counter::default();
        registry.register(
            "audit_tamper_detected",
            "Changes or deletions of committed audit segments the controller did not make",
            audit_tamper.clone(),
        );
        let audit_tree_size = Gauge::default();
        registry.register(
            "audit_tree_size",
            "Records in the audit trail (its Merkle tree size)",
            audit_tree_size.clone(),
        );
        let archived = Family::<CaLabels, Counter>::default();
        registry.register(
            "certificates_archived",
            "Expired certificates recorded in the audit trail and removed from the register",
            archived.clone(),
        );
        Metrics {
            archived,
            registry,
            audit_enabled,
            audit_writable,
            audit_records,
            audit_segments,
            audit_commit,
            audit_pending,
            audit_tamper,
            audit_tree_size,
            crl_number,
            crl_entries,
            crl_size,
            crl_next_update,
            revocations,
            suspensions,
            ceremony_steps,
            leader,
            issuance_enabled,
            ca_not_after,
            login_failures,
            reconcile_duration,
            reconcile_errors,
            issued,
            hsm_duration,
            requests_waiting,
            requests_deleted,
            waiting: std::sync::Mutex::new(std::collections::HashMap::new()),
            ready: AtomicBool::new(false),
        }
    }
}

impl Metrics {
    /// Start timing one reconcile of `kind`; the time is recorded when the guard drops.
    pub fn reconcile_timer(&self, kind: &str) -> Timer {
        Timer {
            histogram: self.reconcile_duration.get_or_create_owned(&KindLabels {
                kind: kind.to_string(),
            }),
            start: Instant::now(),
        }
    }

    /// Count a failed reconcile.
    pub fn reconcile_error(&self, kind: &str, error: &str) {
        self.reconcile_errors
            .get_or_create(&ErrorLabels {
                kind: kind.to_string(),
                error: error.to_string(),
            })
            .inc();
    }

    /// Count one KeyCeremony step outcome.
    pub fn ceremony_step(&self, operation: &str, step: &str, outcome: &str) {
        self.ceremony_steps
            .get_or_create(&CeremonyLabels {
                operation: operation.to_string(),
                step: step.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// Count a finished request garbage-collected.
    pub fn request_deleted(&self, ca: &str, outcome: &str) {
        self.requests_deleted
            .get_or_create(&DeletedLabels {
                ca: ca.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// Count an issuance outcome.
    pub fn issued(&self, ca: &str, profile: &str, result: &str) {
        self.issued
            .get_or_create(&IssuedLabels {
                ca: ca.to_string(),
                profile: profile.to_string(),
                result: result.to_string(),
            })
            .inc();
    }

    /// Record the duration of one HSM operation.
    pub fn hsm(&self, operation: &str, start: Instant) {
        self.hsm_duration
            .get_or_create(&HsmLabels {
                operation: operation.to_string(),
            })
            .observe(start.elapsed().as_secs_f64());
    }

    /// Record the CA's newly published full CRL.
    pub fn crl_published(
        &self,
        ca: &str,
        number: u64,
        entries: usize,
        size: usize,
        next_update: i64,
    ) {
        let l = CaLabels { ca: ca.to_string() };
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.crl_number.get_or_create(&l).set(n(number));
        self.crl_entries.get_or_create(&l).set(n(entries as u64));
        self.crl_size.get_or_create(&l).set(n(size as u64));
        self.crl_next_update.get_or_create(&l).set(next_update);
    }

    /// Count `n` certificates newly revoked by CA `ca` for `reason`.
    pub fn revoked(&self, ca: &str, reason: &str, n: u64) {
        self.revocations
            .get_or_create(&RevocationLabels {
                ca: ca.to_string(),
                reason: reason.to_string(),
            })
            .inc_by(n);
    }

    /// Count a hold or resumption (`action`: `held`, `resumed`) at CA `ca`.
    pub fn suspension(&self, ca: &str, action: &str) {
        self.suspensions
            .get_or_create(&SuspensionLabels {
                ca: ca.to_string(),
                action: action.to_string(),
            })
            .inc();
    }

    /// Mark the controller ready (leading and watching) or not.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
        self.leader.set(i64::from(ready));
    }

    /// Count the request with `uid` as waiting for CA `ca` with `reason`, or
    /// (`None`) as not waiting any more: issued, failed, denied, lapsed, deleted.
    pub fn request_waiting(&self, uid: &str, waiting: Option<(&str, &str)>) {
        let Ok(mut map) = self.waiting.lock() else {
            return;
        };
        let new = waiting.map(|(ca, reason)| WaitingLabels {
            ca: ca.to_string(),
            reason: reason.to_string(),
        });
        let old = match &new {
            Some(l) => map.insert(uid.to_string(), l.clone()),
            None => map.remove(uid),
        };
        if old == new {
            return;
        }
        if let Some(l) = old {
            self.requests_waiting.get_or_create(&l).dec();
        }
        if let Some(l) = new {
            self.requests_waiting.get_or_create(&l).inc();
        }
    }

    /// Record a CA's issuance switch and its certificate's notAfter (Unix time).
    pub fn ca_state(&self, ca: &str, issuance_enabled: bool, not_after: Option<i64>) {
        let l = CaLabels { ca: ca.to_string() };
        self.issuance_enabled
            .get_or_create(&l)
            .set(i64::from(issuance_enabled));
        if let Some(t) = not_after {
            self.ca_not_after.get_or_create(&l).set(t);
        }
    }

    /// Count a refused login to a CA's token.
    pub fn login_failure(&self, ca: &str, reason: &str) {
        self.login_failures
            .get_or_create(&LoginLabels {
                ca: ca.to_string(),
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Whether auditing is on.
    pub fn audit_enabled(&self, on: bool) {
        self.audit_enabled.set(i64::from(on));
    }

    /// Whether audit segments commit.
    pub fn audit_writable(&self, writable: bool) {
        self.audit_writable.set(i64::from(writable));
    }

    /// Records queued.
    pub fn audit_pending(&self, n: usize) {
        self.audit_pending.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// The trail's size.
    pub fn audit_tree_size(&self, n: u64) {
        self.audit_tree_size
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// A segment committed (started sealing at `start`).
    pub fn audit_committed(&self, spec: &crds::audit_segment::AuditSegmentSpec, start: Instant) {
        self.audit_commit.observe(start.elapsed().as_secs_f64());
        self.audit_segments.inc();
        for r in &spec.records {
            self.audit_records
                .get_or_create(&AuditLabels {
                    event: r.event.clone(),
                })
                .inc();
        }
        self.audit_tree_size(spec.tree_size);
    }

    /// A record of CA `ca` archived.
    pub fn archived(&self, ca: &str) {
        self.archived
            .get_or_create(&CaLabels { ca: ca.to_string() })
            .inc();
    }

    /// A change to the trail the controller did not make.
    pub fn audit_tamper(&self) {
        self.audit_tamper.inc();
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Records the elapsed time into a histogram when dropped.
#[derive(Debug)]
pub struct Timer {
    histogram: Histogram,
    start: Instant,
}

impl Drop for Timer {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

/// Serve `/metrics`, `/healthz` (the process is alive) and `/readyz` (this
/// replica leads and runs its controllers) on `listener`: a deliberately tiny
/// HTTP/1.1 responder on its own thread, one request per connection (no async
/// server dependency for three fixed paths).
pub fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(5)));
            // Read up to the end of the request head (or 4 KiB).
            let mut buf = Vec::with_capacity(1024);
            let mut chunk = [0u8; 1024];
            while buf.len() < 4096 && !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let request = String::from_utf8_lossy(&buf);
            let path = request.split_whitespace().nth(1).unwrap_or("/");
            let (status, content_type, body) = match path {
                "/metrics" => (
                    "200 OK",
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    metrics.encode(),
                ),
                "/healthz" => ("200 OK", "text/plain", "ok\n".to_string()),
                "/readyz" if metrics.ready.load(Ordering::Relaxed) => {
                    ("200 OK", "text/plain", "ok\n".to_string())
                }
                "/readyz" => (
                    "503 Service Unavailable",
                    "text/plain",
                    "not leading\n".to_string(),
                ),
                _ => ("404 Not Found", "text/plain", "not found\n".to_string()),
            };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes());
        }
    });
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_request_is_counted_once_where_it_waits_and_not_after() {
        let m = Metrics::default();
        m.request_waiting("u1", Some(("root", "WaitingForApproval")));
        m.request_waiting("u1", Some(("root", "WaitingForApproval")));
        m.request_waiting("u2", Some(("root", "WaitingForApproval")));
        let text = m.encode();
        assert!(
            text.contains(
                "chop_certificate_requests_waiting{ca=\"root\",reason=\"WaitingForApproval\"} 2"
            ),
            "{text}"
        );
        m.request_waiting("u1", Some(("root", "IssuanceSuspended")));
        m.request_waiting("u2", None);
        m.request_waiting("u3", None);
        let text = m.encode();
        assert!(
            text.contains(
                "chop_certificate_requests_waiting{ca=\"root\",reason=\"WaitingForApproval\"} 0"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "chop_certificate_requests_waiting{ca=\"root\",reason=\"IssuanceSuspended\"} 1"
            ),
            "{text}"
        );
    }
}
