//! The writer task: group commit of queued records into signed segments.
//!
//! At start it opens the audit key, publishes it, lists the segments of the
//! audit namespace and continues after the last one (whose signature it checks
//! with the key); a new trail starts with `audit.key`. Then: take everything
//! queued (up to [`MAX_RECORDS`]), seal it into segment `audit-{index:012}`,
//! create it, answer the callers, repeat. A create that fails is retried with
//! backoff, with the same records (and any queued meanwhile), while
//! `chop_audit_writable` is 0; once it succeeds an `audit.resumed` record notes
//! the pause. `AlreadyExists` means another writer took that index: the writer
//! reads the trail again and seals its records after that segment, so the trail
//! never forks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crds::AuditSegment;
use crds::audit_segment::{AuditRecord, AuditSegmentSpec, segment_name};
use kube::Client;
use kube::api::{Api, ListParams, PostParams};
use tokio::sync::mpsc;

use super::key::{self, AuditKey};
use super::{Audit, AuditConfig, AuditEvent, Dedup, Queued, Shared, lock};
use crate::error::{Error, Result};
use crate::metrics::Metrics;

/// The most records in one segment.
pub const MAX_RECORDS: usize = 1000;
/// The most bytes of records (as JSON) in one segment: a segment is one object
/// and the API server stores at most 1.5 MiB per object; an archived
/// certificate's record carries its PEM (~2 KB), so 1,000 of them would not fit.
pub const MAX_SEGMENT_BYTES: usize = 768 * 1024;

/// The size a record adds to its segment (its JSON encoding).
fn record_bytes(q: &Queued) -> usize {
    serde_json::to_vec(&q.record).map_or(0, |v| v.len())
}

/// Add the records already queued to `batch`, up to [`MAX_RECORDS`] and
/// [`MAX_SEGMENT_BYTES`]; the first record that would not fit is kept in
/// `carry` for the next segment (never dropped, never reordered).
fn fill(
    batch: &mut Vec<Queued>,
    carry: &mut Option<Queued>,
    rx: &mut mpsc::UnboundedReceiver<Queued>,
) {
    let mut bytes: usize = batch.iter().map(record_bytes).sum();
    while batch.len() < MAX_RECORDS && carry.is_none() {
        match rx.try_recv() {
            Ok(q) => {
                let size = record_bytes(&q);
                if !batch.is_empty() && bytes + size > MAX_SEGMENT_BYTES {
                    *carry = Some(q);
                } else {
                    bytes += size;
                    batch.push(q);
                }
            }
            Err(_) => break,
        }
    }
}
/// How long a committed dedup key is remembered.
const DEDUP_TTL: Duration = Duration::from_secs(3600);

/// The trail as the writer knows it: the state to seal the next segment
/// from, and the segments it committed or read (index → spec), for the tamper
/// watch.
#[derive(Debug)]
pub(crate) struct Trail {
    pub(crate) state: chop_audit::TrailState,
    pub(crate) key: AuditKey,
}

/// Start the writer for `config`; the handle records through it.
pub fn start(client: Client, config: AuditConfig, writer: String, metrics: Arc<Metrics>) -> Audit {
    if !config.enabled {
        metrics.audit_enabled(false);
        tracing::warn!(
            "AUDITING IS OFF (--audit off): nothing is recorded and nothing waits for the trail; benchmarks only, never in production (CPS 5.4)"
        );
        return Audit::off();
    }
    metrics.audit_enabled(true);
    let (Some(label), Some(pin)) = (config.token_label.clone(), config.pin.clone()) else {
        let why = "no audit token configured (--audit-token-label and CHOP_AUDIT_PIN or --audit-pin-file): \
                   every action that must be recorded waits (CPS 5.4.6)"
            .to_string();
        tracing::error!("{why}");
        metrics.audit_writable(false);
        return Audit::unconfigured(why);
    };
    let shared = Arc::new(Shared::default());
    shared.set_writable(false, "the audit writer is starting");
    metrics.audit_writable(false);
    let (tx, rx) = mpsc::unbounded_channel();
    let audit = Audit::writer(tx, Arc::clone(&shared));
    let w = Writer {
        client,
        config,
        label,
        pin,
        writer,
        metrics,
        shared,
    };
    tokio::spawn(w.run(rx));
    audit
}

struct Writer {
    client: Client,
    config: AuditConfig,
    label: String,
    pin: ca::signer::Pin,
    writer: String,
    metrics: Arc<Metrics>,
    shared: Arc<Shared>,
}

/// Retry delay after `failures` failed commits: 0.5 s doubling up to 5 s (a
/// create is cheap, and every recorded action waits for it).
fn backoff(failures: u32) -> Duration {
    Duration::from_millis(500u64.saturating_mul(1 << failures.min(6))).min(Duration::from_secs(5))
}

fn now_rfc3339(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

impl Writer {
    fn api(&self) -> Api<AuditSegment> {
        Api::namespaced(self.client.clone(), &self.config.namespace)
    }

    fn unwritable(&self, why: &str) {
        self.shared.set_writable(false, why);
        self.metrics.audit_writable(false);
    }

    /// Open the key, publish it, read the trail's last segment.
    async fn init(&self) -> Result<Trail> {
        let (module, label, pin) = (
            self.config.module.clone(),
            self.label.clone(),
            self.pin.clone(),
        );
        let key = tokio::task::spawn_blocking(move || key::open(&module, &label, pin))
            .await
            .map_err(|e| Error::AuditUnavailable {
                message: format!("audit key task: {e}"),
            })??;
        if key.generated {
            tracing::info!(key_id = %key.key_id, "generated the audit key");
        }
        key::publish(&self.client, &self.config.namespace, &key).await?;
        let state = self.read_state(&key).await?;
        Ok(Trail { state, key })
    }

    /// The trail state after the last segment in the API server (its
    /// signature checked with `key`).
    async fn read_state(&self, key: &AuditKey) -> Result<chop_audit::TrailState> {
        let list = self
            .api()
            .list(&ListParams::default())
            .await
            .map_err(Error::kube("list AuditSegments"))?;
        {
            let mut known = lock(&self.shared.committed);
            for s in &list.items {
                if let Ok(h) = chop_audit::head::segment_hash(&s.spec) {
                    known.insert(s.spec.index, h);
                }
            }
        }
        let Some(last) = list.items.into_iter().max_by_key(|s| s.spec.index) else {
            return Ok(chop_audit::TrailState::genesis());
        };
        chop_audit::TrailState::after_signed(&last.spec, &key.spki_der).map_err(|e| {
            Error::AuditUnavailable {
                message: format!(
                    "the last segment {} does not continue with the audit key {}: {e}; \
                     the trail is not continued (run kubectl chop audit verify)",
                    segment_name(last.spec.index),
                    key.key_id
                ),
            }
        })
    }

    async fn run(self, mut rx: mpsc::UnboundedReceiver<Queued>) {
        let mut failures = 0u32;
        let mut trail = loop {
            match self.init().await {
                Ok(t) => break t,
                Err(e) => {
                    let why = e.to_string();
                    tracing::error!(error = %why, "audit trail not writable: actions that must be recorded wait");
                    self.unwritable(&why);
                    tokio::time::sleep(backoff(failures)).await;
                    failures = failures.saturating_add(1);
                }
            }
        };
        self.metrics.audit_tree_size(trail.state.next_sequence);
        let mut batch: Vec<Queued> = Vec::new();
        if trail.state.next_sequence == 0 {
            let ev = AuditEvent::new("audit.key", "observed")
                .detail("algorithm", "ecdsa-p256-sha256")
                .detail("keyLabel", super::KEY_LABEL);
            let mut r = ev.record;
            r.key = Some(trail.key.key_id.clone());
            batch.push(Queued {
                record: r,
                dedup: None,
                reply: None,
            });
        }
        let mut paused_since: Option<Instant> = None;
        // A record received that did not fit the last segment: the next one's first.
        let mut carry: Option<Queued> = None;
        failures = 0;
        loop {
            if batch.is_empty() {
                if let Some(q) = carry.take() {
                    batch.push(q);
                } else {
                    match rx.recv().await {
                        Some(q) => batch.push(q),
                        None => return,
                    }
                    if !self.config.commit_delay.is_zero() {
                        tokio::time::sleep(self.config.commit_delay).await;
                    }
                }
            }
            fill(&mut batch, &mut carry, &mut rx);
            self.metrics.audit_pending(batch.len() + rx.len());
            match self.commit(&mut trail, &batch).await {
                Ok(first) => {
                    answer(&self.shared, std::mem::take(&mut batch), first);
                    failures = 0;
                    self.shared.set_writable(true, "");
                    self.metrics.audit_writable(true);
                    self.metrics.audit_pending(rx.len());
                    if let Some(since) = paused_since.take() {
                        let secs = since.elapsed().as_secs_f64();
                        tracing::info!(paused_seconds = secs, "audit trail writable again");
                        let r = AuditEvent::new("audit.resumed", "observed")
                            .detail("pausedSeconds", format!("{secs:.3}"))
                            .record;
                        batch.push(Queued {
                            record: r,
                            dedup: None,
                            reply: None,
                        });
                    }
                }
                Err(Retry::Now) => {}
                Err(Retry::Later(why)) => {
                    if paused_since.is_none() {
                        tracing::error!(error = %why, records = batch.len(), "cannot commit an audit segment: actions that must be recorded wait (CPS 5.4.6)");
                    } else {
                        tracing::warn!(error = %why, records = batch.len(), "audit segment still not committed");
                    }
                    paused_since.get_or_insert_with(Instant::now);
                    self.unwritable(&why);
                    tokio::time::sleep(backoff(failures)).await;
                    failures = failures.saturating_add(1);
                }
            }
        }
    }

    /// Seal `batch` after `trail` and create the segment; the first sequence
    /// number of the batch.
    async fn commit(&self, trail: &mut Trail, batch: &[Queued]) -> Result<u64, Retry> {
        let started = Instant::now();
        let now = jiff::Timestamp::now();
        let time = now_rfc3339(now);
        let records: Vec<AuditRecord> = batch
            .iter()
            .map(|q| {
                let mut r = q.record.clone();
                r.time.clone_from(&time);
                r
            })
            .collect();
        let state = trail.state.clone();
        let signer = HsmSigner(trail.key.clone());
        let writer = self.writer.clone();
        let sealed = tokio::task::spawn_blocking(move || {
            chop_audit::seal(&state, records, now, &writer, &signer)
        })
        .await
        .map_err(|e| Retry::Later(format!("sealing task: {e}")))?
        .map_err(|e| Retry::Later(format!("sealing a segment: {e}")))?;
        let (spec, next) = sealed;
        let name = segment_name(spec.index);
        let seg = AuditSegment::new(&name, spec.clone());
        match self.api().create(&PostParams::default(), &seg).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {
                // Ours already? A create whose answer was lost (timeout) and
                // was sealed again: same writer, same records but for their
                // time. Then it is adopted as it is, not written twice.
                let existing = self.api().get(&name).await.ok();
                match existing {
                    Some(e) if is_our_batch(&e.spec, &spec) => {
                        let next =
                            chop_audit::TrailState::after_signed(&e.spec, &trail.key.spki_der)
                                .map_err(|err| Retry::Later(format!("segment {name}: {err}")))?;
                        tracing::info!(segment = %name, "an earlier attempt committed this segment");
                        return Ok(self.committed(trail, &e.spec, next, started));
                    }
                    _ => {
                        tracing::warn!(segment = %name, "another writer committed this segment: reading the trail again");
                        trail.state = self
                            .read_state(&trail.key)
                            .await
                            .map_err(|e| Retry::Later(e.to_string()))?;
                        return Err(Retry::Now);
                    }
                }
            }
            Err(e) => {
                return Err(Retry::Later(format!(
                    "create AuditSegment {}/{name}: {e}",
                    self.config.namespace
                )));
            }
        }
        Ok(self.committed(trail, &spec, next, started))
    }

    /// Segment `spec` is stored: advance to `next`; its first sequence.
    fn committed(
        &self,
        trail: &mut Trail,
        spec: &AuditSegmentSpec,
        next: chop_audit::TrailState,
        started: Instant,
    ) -> u64 {
        trail.state = next;
        if let Ok(h) = chop_audit::head::segment_hash(spec) {
            lock(&self.shared.committed).insert(spec.index, h);
        }
        self.metrics.audit_committed(spec, started);
        // Mirrored as JSON log lines for log shippers.
        for r in &spec.records {
            tracing::info!(target: "chop_audit", record = %serde_json::to_string(r).unwrap_or_default(), "audit");
        }
        spec.first_sequence
    }
}

/// Tell the callers of a committed batch (first sequence `first`) their
/// sequence numbers, and remember its deduplication keys.
pub(crate) fn answer(shared: &Shared, batch: Vec<Queued>, first: u64) {
    let mut map = lock(&shared.dedup);
    let now = Instant::now();
    if map.len() > 10_000 {
        map.retain(
            |_, d| !matches!(d, Dedup::Committed(_, at) if now.duration_since(*at) > DEDUP_TTL),
        );
    }
    for (i, q) in batch.into_iter().enumerate() {
        let seq = first + i as u64;
        if let Some(reply) = q.reply {
            let _ = reply.send(seq);
        }
        if let Some(k) = q.dedup
            && let Some(Dedup::Pending(waiters)) = map.insert(k, Dedup::Committed(seq, now))
        {
            for w in waiters {
                let _ = w.send(seq);
            }
        }
    }
}

/// Why a commit did not happen.
enum Retry {
    /// Another writer moved the trail: seal again at once.
    Now,
    /// The API server or the HSM refused: retry after a backoff.
    Later(String),
}

/// Whether `stored` holds the batch sealed as `ours` (by this writer, the same
/// records but for their time and hence chain hashes).
fn is_our_batch(stored: &AuditSegmentSpec, ours: &AuditSegmentSpec) -> bool {
    let strip = |r: &AuditRecord| AuditRecord {
        time: String::new(),
        previous_hash: String::new(),
        ..r.clone()
    };
    stored.writer == ours.writer
        && stored.first_sequence == ours.first_sequence
        && stored.records.len() == ours.records.len()
        && stored
            .records
            .iter()
            .zip(&ours.records)
            .all(|(a, b)| strip(a) == strip(b))
}

/// The audit key in the HSM as the sealer's signer.
struct HsmSigner(AuditKey);

impl chop_audit::TreeHeadSigner for HsmSigner {
    type Error = ca::Error;
    fn key_id(&self) -> String {
        self.0.key_id.clone()
    }
    fn algorithm(&self) -> &str {
        "ecdsa-p256-sha256"
    }
    fn sign(&self, text: &[u8]) -> Result<Vec<u8>, ca::Error> {
        self.0.signer.sign(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queued(event: &str, pem_bytes: usize) -> Queued {
        let mut record = AuditEvent::new(event, "success")
            .detail("certificate", "A".repeat(pem_bytes))
            .record;
        record.sequence = 0;
        Queued {
            record,
            dedup: None,
            reply: None,
        }
    }

    /// Archived certificates (~2 KB records) are split over segments that stay
    /// under the API server's object size, in order, none lost.
    #[test]
    fn segments_stay_under_the_byte_cap_in_order() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let n = 1000;
        for i in 0..n {
            tx.send(queued(&format!("e{i}"), 2000)).ok();
        }
        let (mut batch, mut carry, mut segments) = (Vec::new(), None, Vec::new());
        loop {
            if let Some(q) = carry.take() {
                batch.push(q);
            }
            fill(&mut batch, &mut carry, &mut rx);
            if batch.is_empty() {
                break;
            }
            segments.push(std::mem::take(&mut batch));
        }
        assert!(segments.len() > 1, "{} segments", segments.len());
        for s in &segments {
            let bytes: usize = s.iter().map(record_bytes).sum();
            assert!(bytes <= MAX_SEGMENT_BYTES, "{bytes}");
        }
        let order: Vec<String> = segments
            .iter()
            .flatten()
            .map(|q| q.record.event.clone())
            .collect();
        let want: Vec<String> = (0..n).map(|i| format!("e{i}")).collect();
        assert_eq!(order, want);
        // Small records: one segment of at most MAX_RECORDS.
        for i in 0..1500 {
            tx.send(queued(&format!("s{i}"), 10)).ok();
        }
        let mut batch = Vec::new();
        fill(&mut batch, &mut carry, &mut rx);
        assert_eq!(batch.len(), MAX_RECORDS);
        assert!(carry.is_none());
    }

    fn spec(writer: &str, events: &[&str], time: &str) -> AuditSegmentSpec {
        AuditSegmentSpec {
            index: 3,
            first_sequence: 10,
            records: events
                .iter()
                .enumerate()
                .map(|(i, e)| AuditRecord {
                    sequence: 10 + i as u64,
                    time: time.into(),
                    event: (*e).into(),
                    outcome: "intent".into(),
                    previous_hash: format!("{time}{i}"),
                    ..AuditRecord::default()
                })
                .collect(),
            frontier: vec![],
            tree_size: 10 + events.len() as u64,
            root_hash: time.into(),
            previous_segment_hash: String::new(),
            signed_at: time.into(),
            writer: writer.into(),
            key_id: String::new(),
            signature_algorithm: String::new(),
            signature: time.into(),
        }
    }

    #[test]
    fn a_resealed_batch_is_recognised_and_another_writers_is_not() {
        let ours = spec("a", &["certificate.issue", "crl.sign"], "t2");
        assert!(is_our_batch(
            &spec("a", &["certificate.issue", "crl.sign"], "t1"),
            &ours
        ));
        assert!(!is_our_batch(
            &spec("b", &["certificate.issue", "crl.sign"], "t1"),
            &ours
        ));
        assert!(!is_our_batch(
            &spec("a", &["certificate.issue"], "t1"),
            &ours
        ));
        assert!(!is_our_batch(
            &spec("a", &["certificate.issue", "crl.published"], "t1"),
            &ours
        ));
    }
}
