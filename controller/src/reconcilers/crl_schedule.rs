//! CRLSchedule reconciler: when a CA's CRL is due, reserve its number, sign it
//! with the CA key, publish it, record it.
//!
//! ```text
//! CA not found          ──► Ready=False UnknownCA + Warning Event (requeue 60 s)
//! older schedule, same CA ─► Ready=False DuplicateSchedule (oldest wins)
//! publication names taken ─► Ready=False PublicationNameConflict (oldest wins)
//! CA not Ready          ──► Ready=False CaNotReady (requeue 15 s)
//! due? none published · now ≥ thisUpdate + interval · entries changed
//!      (reissueOnChange) · spec changed · an interrupted attempt
//!   no  ──► requeue at thisUpdate + interval
//!   yes ──► reserve number (status.reservedCRLNumber, conditional on the
//!           resourceVersion read) → sign (HSM) the full CRL and each partition
//!           CRL → publish chunks + manifest of each →
//!           status crlNumber/thisUpdate/nextUpdate/entries/sizeBytes,
//!           Published=True, Event CRLPublished, CA status.nextCRLTime
//! ```
//!
//! Decisions, with the text they follow:
//! - **Number reserved before signing** (ADR 0002 §3; RFC 5280 §5.2.3 "CRL
//!   issuers conforming to this profile MUST include this extension in all
//!   CRLs and MUST mark this extension as non-critical ... a monotonically
//!   increasing sequence number"). `reservedCRLNumber` is a separate field from
//!   `crlNumber` (the number of the CRL actually published): the next number is
//!   `max(crlNumber, reservedCRLNumber, highest published) + 1`, so a crash
//!   after the reservation wastes a number and never reuses one. Gaps are
//!   allowed: the RFC asks for increase, not contiguity.
//! - **Numbers survive the schedule** (issue 8, finding 4; Boulder's
//!   crl-updater numbers CRLs by time): the next number is also at least the
//!   current Unix time in milliseconds ([`next_number`]), and "highest
//!   published" is read from the labels of the CA's published CRL ConfigMaps,
//!   which belong to the CA, not to the schedule. Deleting and re-creating a
//!   schedule (a GitOps prune), or restoring it without status, therefore never
//!   restarts at 1; with every status and every publication lost the clock
//!   still keeps the number above every earlier one, as long as the clock
//!   does not go back.
//! - **Timing** (CPS §4.9.7: at least daily, validity ≤ 36 h; §4.9.8: the next
//!   CRL published before the current nextUpdate). nextUpdate = thisUpdate +
//!   `validity`; the next regular CRL is issued at thisUpdate + `interval`, and
//!   the CRD's CEL rule `interval + overlap ≤ validity` makes that at least
//!   `overlap` before nextUpdate.
//! - **Reissue on change** (CPS §4.9.7: reissued within 24 h of a revocation;
//!   chop: seconds). The schedule watches its CA's IssuedCertificates; the
//!   digest of the revoked/held entries (status `entriesDigest`) tells whether
//!   the CRL is out of date.
//! - **Entries** (CPS §4.10.1: entries stay until the certificate expires;
//!   RFC 5280 §3.3: and on one regular CRL after): every IssuedCertificate whose
//!   status is `Revoked` or `Held` goes into the index with its notAfter; the
//!   core drops it once expired longer than `expired_retention` (24 h).
//! - **Memory**: the register is listed with a label and a field selector
//!   (`chop.dev/ca=<ca>` and `status.state=Revoked`, then `=Held`: the
//!   record's state itself, which OCSP reads too; pages of 500), so only the
//!   revoked and held records are fetched, and each page is turned into 53-byte
//!   index records and dropped. The trade-off: the list returns full objects
//!   (with their PEM, ~2.5 KB each), because status is not in metadata; at
//!   100k revocations that is ~250 MB transferred per CRL but never more than
//!   one page held at once. Annotations with the revocation data (ADR 0002 §1)
//!   would allow a metadata-only list.
//! - **Partitions** (`partitions: P > 0`; RFC 5280 §5.2.5, §6.3.3 (b)): at
//!   issuance a certificate gets partition `serial mod P` ([`Partitioning::index`])
//!   and that partition's URL ([`Partitioning::url`]: `partitionURLTemplate` with
//!   `{n}` replaced, or the CA's first `crlDistributionPoints` URL with `-<n>`
//!   inserted before its extension) as its only CRL distribution point; the
//!   IssuedCertificate records it (`spec.crlPartition`), so CRLs are built from
//!   the register without parsing certificates. The serial is reserved before
//!   signing and P and the URL are immutable, so a re-sign after a crash gives
//!   the same certificate. Each round signs the full CRL (every entry, no IDP:
//!   certificates issued before partitions, or without a CDP, are on it only)
//!   and the P partition CRLs (only their partition's entries, a critical IDP
//!   with the partition's URL), all with **one number** reserved once: every
//!   CRL scope then sees a strictly increasing sequence (§5.2.3), and a relying
//!   party comparing a partition CRL with the full CRL sees the same round. All
//!   P + 1 are re-signed on every change (reissueOnChange): at the P ≤ 1024 the
//!   CRD allows and with partition CRLs of a fraction of the entries, one HSM
//!   signature each is cheaper than tracking which partitions changed. Each is
//!   published as its own chunked ConfigMap publication
//!   (`<schedule>-<n>`, [`publish::partition_publication`]). Two schedules whose
//!   publication names collide (`a` with partitions and another schedule named
//!   `a-0` in the namespace): the older wins, the newer is Ready=False
//!   `PublicationNameConflict`. Without a template and without a CA CRL URL no
//!   partition URL exists: the full CRL is published, issuance assigns no
//!   partitions, Ready=False `NoPartitionURL`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ca::crl::{CrlConfig, CrlIssuer, CrlRequest, CrlScope, DEFAULT_MAX_VALIDITY};
use ca::revocation::{MemoryIndex, Reason, RevokedEntry};
use ca::serial::Serial;
use crds::issued_certificate::{LABEL_CA, LABEL_STATUS};
use crds::{CRLSchedule, CRLScheduleStatus, CertificateAuthority, IssuedCertificate};
use der::Encode;
use futures::StreamExt;
use kube::api::{Api, ListParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Config as ControllerConfig};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::utils::PredicateConfig;
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use tracing::Instrument;

use super::certificate_authority::signing_context;
use super::{from_time, to_time};
use crate::conditions::{self, Cond};
use crate::context::{Context, FIELD_MANAGER, object_id};
use crate::error::{Error, Result};
use crate::malformed::{Guarded, GuardedApi, valid};
use crate::publish::{self, Manifest, Publication};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// Kind label in metrics and spans.
pub const KIND: &str = "CRLSchedule";

/// The longest single requeue delay.
const MAX_REQUEUE: Duration = Duration::from_secs(86_400);

/// Run the CRLSchedule controller until its stream ends. A change to an
/// IssuedCertificate of a CA (revocation, hold, resumption) or to the CA
/// itself reconciles that CA's schedules.
pub async fn run(ctx: Arc<Context>, namespace: Option<&str>) {
    let client = ctx.client.clone();
    let (schedules, issued_meta, cas): (
        GuardedApi<CRLSchedule>,
        Api<PartialObjectMeta<IssuedCertificate>>,
        GuardedApi<CertificateAuthority>,
    ) = match namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client, ns),
        ),
        None => (
            Api::all(client.clone()),
            Api::all(client.clone()),
            Api::all(client),
        ),
    };
    // Records by metadata only (the `chop.dev/status` label says Valid, Held or
    // Revoked), and only when that label changes: a new Valid certificate does
    // not make a CRL out of date.
    let record_states = watcher(issued_meta, watcher::Config::default().labels(LABEL_CA))
        .default_backoff()
        .touched_objects()
        .predicate_filter(
            |ic: &PartialObjectMeta<IssuedCertificate>| {
                use std::hash::{Hash, Hasher};
                let mut h = std::collections::hash_map::DefaultHasher::new();
                ic.labels().get(LABEL_STATUS).hash(&mut h);
                Some(h.finish())
            },
            PredicateConfig::default(),
        );
    let controller = Controller::new(schedules, watcher::Config::default());
    let store = controller.store();
    ctx.set_schedules(store.clone());
    let by_ca = move |ns: Option<String>, ca: String| {
        store
            .state()
            .into_iter()
            .filter(|g| {
                valid(g).is_some_and(|s| s.metadata.namespace == ns && s.spec.ca_ref.name == ca)
            })
            .map(|s| ObjectRef::from_obj(s.as_ref()))
            .collect::<Vec<_>>()
    };
    let by_ca2 = by_ca.clone();
    controller
        .with_config(ControllerConfig::default().debounce(Duration::from_millis(300)))
        .watches_stream(
            record_states,
            move |ic: PartialObjectMeta<IssuedCertificate>| {
                let ca = ic.labels().get(LABEL_CA).cloned().unwrap_or_default();
                by_ca(ic.metadata.namespace.clone(), ca)
            },
        )
        .watches_stream(
            watcher(cas, watcher::Config::default())
                .default_backoff()
                .touched_objects()
                .predicate_filter(
                    crate::malformed::predicate(super::certificate_authority::signing_state),
                    PredicateConfig::default(),
                ),
            move |ca: Guarded<CertificateAuthority>| by_ca2(ca.namespace(), ca.name_any()),
        )
        .run(
            crate::malformed::reconcile(reconcile),
            crate::malformed::error_policy(error_policy),
            ctx,
        )
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "CRLSchedule controller event");
            }
        })
        .await;
}

/// Reconcile one CRLSchedule, from a fresh read (see `certificate_request`).
pub async fn reconcile(s: Arc<CRLSchedule>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_timer(KIND);
    let span = tracing::info_span!("reconcile", kind = KIND, namespace = %s.namespace().unwrap_or_default(), name = %s.name_any());
    let action = async {
        match super::fresh(s.as_ref(), &ctx, "get CRLSchedule").await? {
            Some(current) => apply(&current, &ctx).await,
            None => Ok(Action::await_change()),
        }
    }
    .instrument(span)
    .await
    .map_err(|e| e.about(&object_id(s.as_ref())))?;
    ctx.reset_backoff(&s.uid().unwrap_or_default());
    Ok(action)
}

/// Count the error and requeue with backoff.
pub fn error_policy(s: Arc<CRLSchedule>, error: &Error, ctx: Arc<Context>) -> Action {
    super::requeue_after_error(KIND, s.as_ref(), error, &ctx)
}

/// The schedule's durations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// Time between regular CRLs.
    pub interval: Duration,
    /// nextUpdate − thisUpdate.
    pub validity: Duration,
    /// Minimum lead of the next CRL over the current nextUpdate.
    pub overlap: Duration,
}

fn duration(s: &str, field: &str) -> std::result::Result<Duration, String> {
    let d: jiff::SignedDuration = s.parse().map_err(|e| format!("{field} {s:?}: {e}"))?;
    Duration::try_from(d).map_err(|e| format!("{field} {s:?}: {e}"))
}

/// Parse the schedule's durations (Go/Kubernetes syntax, e.g. `24h`, `1h30m`).
pub fn timing(s: &CRLSchedule) -> std::result::Result<Timing, String> {
    Ok(Timing {
        interval: duration(&s.spec.interval, "interval")?,
        validity: duration(&s.spec.validity, "validity")?,
        overlap: duration(&s.spec.overlap, "overlap")?,
    })
}

/// Why a new CRL is due, if it is (pure; `now` injected for tests).
/// `partitions` is the number of partition CRLs a round publishes.
pub fn due(
    s: &CRLSchedule,
    timing: &Timing,
    digest: &str,
    partitions: u32,
    now: SystemTime,
) -> Option<&'static str> {
    let st = s.status.clone().unwrap_or_default();
    let (Some(number), Some(this), Some(next)) = (st.crl_number, &st.this_update, &st.next_update)
    else {
        return Some("NotYetPublished");
    };
    if st.reserved_crl_number.is_some_and(|r| r > number) {
        return Some("InterruptedAttempt");
    }
    if st.observed_generation != s.meta().generation {
        return Some("SpecChanged");
    }
    // Published before partitions were (an upgrade): publish them now.
    if u32::try_from(st.partitions_published.unwrap_or(0)).unwrap_or(0) != partitions {
        return Some("PartitionsMissing");
    }
    if s.spec.reissue_on_change && st.entries_digest.as_deref() != Some(digest) {
        return Some("EntriesChanged");
    }
    if now >= from_time(this) + timing.interval {
        return Some("Interval");
    }
    // Belt and braces for §4.9.8 (the CEL rule makes this follow from the above).
    if now + timing.overlap >= from_time(next) {
        return Some("Overlap");
    }
    None
}

/// The next CRL number of a CA (pure; `now` injected for tests): greater than
/// every number the CA is known to have used in any scope (the schedule's
/// `crlNumber` and `reservedCRLNumber`, and `published`, the highest number on
/// the CA's published CRL objects), and at least `now` in milliseconds since
/// the Unix epoch. The clock is the floor that holds when everything else is
/// lost (a schedule re-created, restored without status, its ConfigMaps gone):
/// every earlier number was at most the clock of its time (or one above a
/// number that was), so unless the clock went back the new one is greater.
/// Milliseconds keep the number under 2^53 (exact in every JSON reader) until
/// the year 287,396, far inside RFC 5280's 20 octets. None when exhausted.
pub fn next_number(
    status: &CRLScheduleStatus,
    published: Option<u64>,
    now: SystemTime,
) -> Option<i64> {
    let floor = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_millis()).ok())
        .unwrap_or(0);
    let published = match published {
        Some(p) => Some(i64::try_from(p).ok()?),
        None => None,
    };
    let known = [status.crl_number, status.reserved_crl_number, published]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(0);
    Some(known.checked_add(1)?.max(floor))
}

/// SHA-256 over the sorted (serial, revocation time, reason, invalidity date)
/// of `index`'s revoked and held entries, lower-case hex.
pub fn entries_digest(index: &MemoryIndex) -> String {
    let mut text = String::new();
    let secs = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    };
    for e in index.revoked() {
        text.push_str(&format!(
            "{} {} {} {}\n",
            e.serial.to_hex(),
            secs(e.revoked_at),
            e.reason as u8,
            e.invalidity_date.map(secs).unwrap_or(0)
        ));
    }
    publish::sha256_hex(text.as_bytes())
}

/// The revocation entry of one register record, if it is revoked or held
/// (its state: `register::state`, i.e. `status.state`, as OCSP reads it).
fn entry_of(ic: &IssuedCertificate) -> Result<Option<RevokedEntry>> {
    let id = object_id(ic);
    let held = match crate::register::state(ic)? {
        crate::register::State::Valid => return Ok(None),
        crate::register::State::Held => true,
        crate::register::State::Revoked => false,
    };
    let st = ic.status.clone().unwrap_or_default();
    let cerr = Error::ca(&id);
    // The state, the time and the reason are written in one PATCH: a revoked
    // or held state without a time is an error (retried), never silently left
    // off the CRL.
    let Some(revoked_at) = st.revoked_at.as_ref() else {
        return Err(Error::Invalid {
            object: id,
            message: "status says revoked or held but has no revokedAt".into(),
        });
    };
    let reason = match (held, st.reason.as_deref()) {
        (true, _) => Reason::CertificateHold,
        (false, Some(r)) => r.parse::<Reason>().map_err(cerr)?,
        (false, None) => Reason::Unspecified,
    };
    Ok(Some(RevokedEntry {
        serial: Serial::from_hex(&ic.spec.serial_number).map_err(cerr)?,
        revoked_at: from_time(revoked_at),
        reason,
        invalidity_date: st.invalidity_date.as_ref().map(from_time),
        not_after: from_time(&ic.spec.not_after),
        partition: ic.spec.crl_partition.and_then(|p| u32::try_from(p).ok()),
    }))
}

/// The revocation index of CA `ca` in `ns`: its revoked and held records,
/// selected by their state itself (field selector on `status.state`, so a
/// record is on the CRL exactly when OCSP says revoked), listed in pages (see
/// the module doc on memory).
async fn revocation_index(ctx: &Context, ns: &str, ca: &str) -> Result<MemoryIndex> {
    let api: Api<IssuedCertificate> = Api::namespaced(ctx.client.clone(), ns);
    let labels = format!("{LABEL_CA}={ca}");
    let mut entries = Vec::new();
    for state in [
        crate::register::State::Revoked,
        crate::register::State::Held,
    ] {
        let fields = format!("status.state={}", state.as_str());
        let mut token: Option<String> = None;
        loop {
            let mut lp = ListParams::default()
                .labels(&labels)
                .fields(&fields)
                .limit(500);
            if let Some(t) = token.take() {
                lp = lp.continue_token(&t);
            }
            let page = api
                .list(&lp)
                .await
                .map_err(Error::kube("list IssuedCertificates"))?;
            for ic in &page.items {
                if let Some(e) = entry_of(ic)? {
                    entries.push(e);
                }
            }
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(c) => token = Some(c),
                None => break,
            }
        }
    }
    MemoryIndex::from_entries(entries).map_err(|source| Error::Ca {
        object: format!("CertificateAuthority/{ns}/{ca}"),
        source,
    })
}

pub use chop_register::Partitioning;

/// The live CRLSchedules in `ns`. A malformed one is skipped, unless it may be
/// the schedule in force for CA `ca` (it may name `ca` and is older than its
/// valid ones): then this fails, naming it (see `malformed::list_valid`).
async fn schedules(ctx: &Context, ns: &str, ca: &str) -> Result<Vec<CRLSchedule>> {
    let concerns = |m: &ObjectMeta, v: &serde_json::Value, valid: &[CRLSchedule]| {
        let age = (
            m.creation_timestamp.as_ref().map(|t| t.0),
            m.name.clone().unwrap_or_default(),
        );
        m.deletion_timestamp.is_none()
            && v["spec"]["caRef"]["name"].as_str().is_none_or(|n| n == ca)
            && oldest(valid, ca).is_none_or(|o| age < self::age(o))
    };
    let list =
        crate::malformed::list_valid(&ctx.client, ns, &ListParams::default(), concerns).await?;
    Ok(list
        .into_iter()
        .filter(|s| s.meta().deletion_timestamp.is_none())
        .collect())
}

/// Creation time, then name: the order in which schedules win.
fn age(s: &CRLSchedule) -> (Option<jiff::Timestamp>, String) {
    (
        s.meta().creation_timestamp.as_ref().map(|t| t.0),
        s.name_any(),
    )
}

/// The oldest schedule naming CA `ca` among `all` (pure).
fn oldest<'a>(all: &'a [CRLSchedule], ca: &str) -> Option<&'a CRLSchedule> {
    all.iter()
        .filter(|s| s.spec.ca_ref.name == ca)
        .min_by_key(|s| age(s))
}

/// The partitioning in force for CA `ca` in `ns`: its (oldest) schedule's.
/// Issuance calls this to choose a new certificate's partition, from the
/// schedules' watch store (no request per certificate; a schedule created or
/// deleted a moment ago may not be seen yet, the same as an issuance a moment
/// earlier), or from the API until that store is ready or while a schedule
/// of the namespace is malformed.
pub async fn partitioning_for(ctx: &Context, ns: &str, ca: &str) -> Result<Option<Partitioning>> {
    let all = match ctx.cached_schedules(ns) {
        Some(all) => all,
        None => schedules(ctx, ns, ca).await?,
    };
    Ok(oldest(&all, ca).and_then(Partitioning::of))
}

/// Whether `name` is the name of partition publication of schedule `of`.
fn is_partition_of(name: &str, of: &CRLSchedule) -> bool {
    let base = of.name_any();
    name.strip_prefix(base.as_str())
        .and_then(|r| r.strip_prefix('-'))
        .and_then(|n| n.parse::<u32>().ok())
        .is_some_and(|n| {
            i64::from(n) < i64::from(of.spec.partitions)
                && publish::partition_publication(&base, n) == name
        })
}

/// An older schedule in `all` whose publication names collide with `s`'s (one
/// is named like a partition publication of the other), if any (pure).
fn name_conflict<'a>(s: &CRLSchedule, all: &'a [CRLSchedule]) -> Option<&'a CRLSchedule> {
    let name = s.name_any();
    all.iter()
        .filter(|o| o.name_any() != name && age(o) < age(s))
        .find(|o| is_partition_of(&name, o) || is_partition_of(&o.name_any(), s))
}

async fn apply(s: &CRLSchedule, ctx: &Context) -> Result<Action> {
    let id = object_id(s);
    let ns = s.namespace().unwrap_or_default();
    let ca_name = s.spec.ca_ref.name.clone();
    let status = s.status.clone().unwrap_or_default();
    if status.observed_generation != s.meta().generation {
        let spec = serde_json::to_vec(&s.spec).unwrap_or_default();
        let g = s.meta().generation.unwrap_or_default().to_string();
        ctx.audit.note(
            crate::audit::observed("crlschedule.changed", s, &g)
                .ca(&ns, &ca_name)
                .detail("generation", g.clone())
                .detail("specHash", crate::audit::key::sha256_hex(&spec))
                .map_users(|ev| crate::audit::changed_by(ev, s.meta())),
        );
    }
    let cas: Api<CertificateAuthority> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(ca) = cas
        .get_opt(&ca_name)
        .await
        .map_err(Error::kube("get CertificateAuthority"))?
    else {
        let msg = format!("CertificateAuthority {ca_name:?} not found");
        let cond = Cond::no("Ready", "UnknownCA", msg.clone());
        if !conditions::unchanged(&status.conditions, &cond, s.meta().generation) {
            ctx.event(s, true, "UnknownCA", msg).await;
        }
        write_status(s, ctx, status, &[cond], None).await?;
        return Ok(Action::requeue(Duration::from_secs(60)));
    };
    let all = schedules(ctx, &ns, &ca_name).await?;
    if oldest(&all, &ca_name).map(ResourceExt::name_any) != Some(s.name_any()) {
        let cond = Cond::no(
            "Ready",
            "DuplicateSchedule",
            format!(
                "an older CRLSchedule already issues the CRLs of CertificateAuthority {ca_name:?}; this one is ignored"
            ),
        );
        write_status(s, ctx, status, &[cond], None).await?;
        return Ok(Action::requeue(Duration::from_secs(60)));
    }
    if let Some(o) = name_conflict(s, &all) {
        let msg = format!(
            "the CRL publications of this schedule and of the older CRLSchedule {:?} would share ConfigMap names; rename one",
            o.name_any()
        );
        let cond = Cond::no("Ready", "PublicationNameConflict", msg.clone());
        if !conditions::unchanged(&status.conditions, &cond, s.meta().generation) {
            ctx.event(s, true, "PublicationNameConflict", msg).await;
        }
        write_status(s, ctx, status, &[cond], None).await?;
        return Ok(Action::requeue(Duration::from_secs(60)));
    }
    let ca_ready = ca
        .status
        .as_ref()
        .is_some_and(|st| conditions::is_true(&st.conditions, "Ready") && st.certificate.is_some());
    let sc = if ca_ready {
        signing_context(&ca, ctx).await?
    } else {
        None
    };
    let Some(sc) = sc else {
        let cond = Cond::no(
            "Ready",
            "CaNotReady",
            format!("CertificateAuthority {ca_name:?} is not Ready"),
        );
        write_status(s, ctx, status, &[cond], None).await?;
        return Ok(Action::requeue(Duration::from_secs(15)));
    };
    let timing = match timing(s) {
        Ok(t) => t,
        Err(m) => {
            let cond = Cond::no("Ready", "InvalidSpec", m);
            write_status(s, ctx, status, &[cond], None).await?;
            return Ok(Action::await_change());
        }
    };

    // The partition CRLs a round publishes, with their URLs (None: no URL).
    let partitions: Option<Vec<(u32, String)>> = Partitioning::of(s)
        .map(|p| {
            (0..p.count)
                .map(|n| p.url(&ca.spec.crl_distribution_points, n).map(|u| (n, u)))
                .collect()
        })
        .unwrap_or(Some(Vec::new()));
    let ready = ready_conds(s, partitions.is_some());
    let partitions = partitions.unwrap_or_default();
    let count = u32::try_from(partitions.len()).unwrap_or(0);

    let index = revocation_index(ctx, &ns, &ca_name).await?;
    let digest = entries_digest(&index);
    let now = SystemTime::now();
    let Some(why) = due(s, &timing, &digest, count, now) else {
        write_status(s, ctx, status.clone(), &ready, None).await?;
        // After a restart the gauges come from the record of the current CRL.
        if let (Some(n), Some(next)) = (status.crl_number, &status.next_update) {
            ctx.metrics.crl_published(
                &ca_name,
                u64::try_from(n).unwrap_or(0),
                usize::try_from(status.entries.unwrap_or(0)).unwrap_or(0),
                usize::try_from(status.size_bytes.unwrap_or(0)).unwrap_or(0),
                next.0.as_second(),
            );
        }
        set_next_crl_time(ctx, &ca, &status, &timing).await?;
        return Ok(requeue_at(&status, &timing, now));
    };
    tracing::info!(reason = why, "a new CRL is due");

    // Reserve the number, conditional on the resourceVersion read: a write by
    // anyone since makes this fail with a conflict and the retry decides again.
    let published = publish::highest_published(&ctx.client, &ns, &ca_name).await?;
    let number =
        next_number(&status, published, SystemTime::now()).ok_or_else(|| Error::Invalid {
            object: id.clone(),
            message: "CRL number exhausted".into(),
        })?;
    let mut reserved = status.clone();
    reserved.reserved_crl_number = Some(number);
    let cond = Cond::no(
        "Published",
        "Signing",
        format!("CRL number {number} reserved ({why}); signing"),
    );
    write_status(s, ctx, reserved.clone(), &[cond], s.resource_version()).await?;
    tracing::info!(number, "CRL number reserved");
    if ctx.crash_after_crl_reserve {
        tracing::error!(
            "CHOP_TEST_CRASH_AFTER_CRL_RESERVE is set: aborting after the CRL number reservation"
        );
        std::process::abort();
    }

    // Sign with the CA key (in the HSM), verify, then publish.
    let cerr = Error::ca(&id);
    let this_update = ca::time::truncate_to_seconds(now).map_err(cerr)?;
    let next_update = this_update + timing.validity;
    let max_validity = if s.spec.allow_validity_over_36h {
        timing.validity.max(DEFAULT_MAX_VALIDITY)
    } else {
        DEFAULT_MAX_VALIDITY
    };
    let ca_der = sc.issuer.certificate().to_der().map_err(|e| Error::Ca {
        object: id.clone(),
        source: ca::Error::Der(e),
    })?;
    let signer = Arc::clone(&sc.issuer.config().signer);
    // One number for the full CRL and every partition CRL of this round.
    let requests: Vec<CrlRequest> = std::iter::once(CrlScope::Full)
        .chain(partitions.iter().map(|(n, url)| CrlScope::Partition {
            index: *n,
            distribution_point_url: url.clone(),
        }))
        .map(|scope| CrlRequest {
            number: u64::try_from(number).unwrap_or(0),
            this_update,
            next_update,
            scope,
        })
        .collect();
    // The record of the signature is committed before the HSM signs.
    let intent = crate::audit::AuditEvent::new("crl.sign", "intent")
        .object(s)
        .ca(&ns, &ca_name)
        .crl_number(u64::try_from(number).unwrap_or(0))
        .key_use(
            crate::audit::key_fingerprint(sc.issuer.certificate()),
            "crl",
        )
        .reason(why)
        .detail("entries", index.len().to_string())
        .detail("entriesDigest", digest.clone())
        .detail("partitions", count.to_string())
        .dedup(format!("crl.sign/{}/{number}", s.uid().unwrap_or_default()));
    if let Err(e) = ctx.audit.record(intent).await {
        let msg = format!("{e}; CRL {number} was not signed (CPS 5.4.6)");
        let cond = Cond::no("Published", crate::audit::REASON, msg.clone());
        write_status(s, ctx, reserved, &[cond], None).await?;
        ctx.event(s, true, crate::audit::REASON, msg).await;
        return Ok(Action::requeue(Duration::from_secs(5)));
    }
    let started = std::time::Instant::now();
    let signed = tokio::task::spawn_blocking(move || {
        let issuer = CrlIssuer::new(
            &ca_der,
            signer,
            CrlConfig {
                max_validity,
                ..CrlConfig::default()
            },
        )?;
        requests
            .iter()
            .map(|r| issuer.issue(&index, r))
            .collect::<ca::Result<Vec<_>>>()
    })
    .await
    .map_err(|e| Error::Invalid {
        object: id.clone(),
        message: format!("CRL signing task failed: {e}"),
    })?;
    ctx.metrics.hsm("signCRL", started);
    let crls = match signed {
        Ok(c) => c,
        Err(e) => {
            let cond = Cond::no("Published", e.reason(), e.to_string());
            write_status(s, ctx, reserved, &[cond], None).await?;
            return Err(cerr(e));
        }
    };

    // Partition CRLs first, the full CRL last: its manifest is what the
    // status and the metrics describe.
    let schedule = s.name_any();
    let mut crl = None;
    for c in crls.into_iter().rev() {
        let this_t = to_time(c.this_update, &id)?;
        let next_t = to_time(c.next_update, &id)?;
        let manifest = Manifest::of(
            &ca_name,
            c.number,
            &c.der,
            this_t.0.to_string(),
            next_t.0.to_string(),
        );
        let (name, manifest) = match &c.scope {
            CrlScope::Full => (schedule.clone(), manifest),
            CrlScope::Partition { index, .. } => (
                publish::partition_publication(&schedule, *index),
                manifest.in_partition(*index),
            ),
        };
        let publication = Publication {
            namespace: &ns,
            schedule: &name,
            owner: ca.owner_ref(&()),
            manifest,
        };
        publish::publish(&ctx.client, &publication, &c.der).await?;
        if c.scope == CrlScope::Full {
            crl = Some(c);
        }
    }
    let crl = crl.ok_or_else(|| Error::Invalid {
        object: id.clone(),
        message: "no full CRL was signed".into(),
    })?;
    let this_t = to_time(crl.this_update, &id)?;
    let next_t = to_time(crl.next_update, &id)?;

    let mut done = reserved;
    done.crl_number = Some(number);
    done.this_update = Some(this_t);
    done.next_update = Some(next_t.clone());
    done.entries = i64::try_from(crl.entries).ok();
    done.size_bytes = i64::try_from(crl.der.len()).ok();
    done.entries_digest = Some(digest);
    done.partitions_published = (count > 0).then(|| i32::try_from(count).unwrap_or(0));
    let msg = format!(
        "CRL {number} published: {} entries, {} bytes, nextUpdate {}{}",
        crl.entries,
        crl.der.len(),
        next_t.0,
        if count > 0 {
            format!("; and {count} partition CRLs")
        } else {
            String::new()
        }
    );
    let mut conds = ready;
    conds.push(Cond::yes("Published", "Published", msg.clone()));
    write_status(s, ctx, done.clone(), &conds, None).await?;
    ctx.event(s, false, "CRLPublished", msg).await;
    ctx.metrics.crl_published(
        &ca_name,
        crl.number,
        crl.entries,
        crl.der.len(),
        next_t.0.as_second(),
    );
    ctx.audit.note(
        crate::audit::AuditEvent::new("crl.published", "succeeded")
            .object(s)
            .ca(&ns, &ca_name)
            .crl_number(crl.number)
            .detail("entries", crl.entries.to_string())
            .detail("sizeBytes", crl.der.len().to_string())
            .detail("nextUpdate", next_t.0.to_string())
            .dedup(format!(
                "crl.published/{}/{number}",
                s.uid().unwrap_or_default()
            )),
    );
    tracing::info!(number, entries = crl.entries, "CRL published");
    set_next_crl_time(ctx, &ca, &done, &timing).await?;
    Ok(requeue_at(&done, &timing, SystemTime::now()))
}

/// Field manager of the CA's `status.nextCRLTime`: separate from the CA
/// reconciler's, so its whole-status applies never remove this field.
const CA_FIELD_MANAGER: &str = "chop-controller-crl";

/// Write the CA's `status.nextCRLTime` (when its next regular CRL is issued:
/// thisUpdate + interval), if it differs.
async fn set_next_crl_time(
    ctx: &Context,
    ca: &CertificateAuthority,
    status: &CRLScheduleStatus,
    timing: &Timing,
) -> Result<()> {
    let Some(this) = &status.this_update else {
        return Ok(());
    };
    let at = to_time(from_time(this) + timing.interval, &object_id(ca))?;
    if ca.status.as_ref().and_then(|s| s.next_crl_time.as_ref()) == Some(&at) {
        return Ok(());
    }
    super::apply_status(
        &ctx.client,
        ca,
        CA_FIELD_MANAGER,
        &serde_json::json!({ "nextCRLTime": at }),
        None,
        "apply CertificateAuthority status.nextCRLTime",
    )
    .await?;
    Ok(())
}

/// `Ready` when the schedule works: True, or False `NoPartitionURL` when it
/// has partitions but no URL for them (`urls`: whether they have one).
fn ready_conds(s: &CRLSchedule, urls: bool) -> Vec<Cond> {
    if !urls {
        vec![Cond::no(
            "Ready",
            "NoPartitionURL",
            "partitions need partitionURLTemplate or a crlDistributionPoints URL on the CertificateAuthority; only the full CRL is published",
        )]
    } else if s.spec.partitions > 0 {
        vec![Cond::yes(
            "Ready",
            "Scheduled",
            format!(
                "the full CRL and {} partition CRLs are issued on schedule",
                s.spec.partitions
            ),
        )]
    } else {
        vec![Cond::yes(
            "Ready",
            "Scheduled",
            "CRLs are issued on schedule",
        )]
    }
}

/// Requeue at thisUpdate + interval (at least 1 s, at most a day from now).
fn requeue_at(status: &CRLScheduleStatus, timing: &Timing, now: SystemTime) -> Action {
    let at = status
        .this_update
        .as_ref()
        .map(|t| from_time(t) + timing.interval)
        .unwrap_or(now);
    let delay = at
        .duration_since(now)
        .unwrap_or_default()
        .max(Duration::from_secs(1));
    Action::requeue(delay.min(MAX_REQUEUE))
}

/// Apply the whole status (every field this manager owns, so none is dropped)
/// with `conds` replacing conditions of the same type; conditional on
/// `resource_version` when given.
async fn write_status(
    s: &CRLSchedule,
    ctx: &Context,
    mut status: CRLScheduleStatus,
    conds: &[Cond],
    resource_version: Option<String>,
) -> Result<()> {
    let generation = s.meta().generation;
    let existing = status.conditions.clone();
    // observedGeneration describes the CRL: it moves when a CRL is published
    // with no attempt pending, so a spec change stays "due" until then.
    let publishing = conds.iter().any(|c| c.type_ == "Published");
    let all_unchanged = resource_version.is_none()
        && conds
            .iter()
            .all(|c| conditions::unchanged(&existing, c, generation))
        && s.status.as_ref() == Some(&status);
    if all_unchanged {
        return Ok(());
    }
    let mut out: Vec<_> = existing
        .iter()
        .filter(|c| !conds.iter().any(|n| n.type_ == c.type_))
        .cloned()
        .collect();
    for c in conds {
        out.push(conditions::build(
            &existing,
            c,
            generation,
            conditions::now(),
        ));
    }
    status.conditions = out;
    if publishing && status.crl_number == status.reserved_crl_number {
        status.observed_generation = generation;
    }
    super::apply_status(
        &ctx.client,
        s,
        FIELD_MANAGER,
        &status,
        resource_version.as_deref(),
        "apply CRLSchedule status",
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crds::CRLScheduleSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn schedule() -> CRLSchedule {
        let spec: CRLScheduleSpec =
            serde_json::from_value(serde_json::json!({"caRef": {"name": "root"}})).unwrap();
        let mut s = CRLSchedule::new("root", spec);
        s.metadata.generation = Some(1);
        s
    }

    fn at(t: SystemTime) -> Time {
        Time(jiff::Timestamp::try_from(t).unwrap())
    }

    fn published(s: &mut CRLSchedule, this: SystemTime, digest: &str) {
        s.status = Some(CRLScheduleStatus {
            observed_generation: Some(1),
            crl_number: Some(4),
            reserved_crl_number: Some(4),
            this_update: Some(at(this)),
            next_update: Some(at(this + Duration::from_secs(36 * 3600))),
            entries_digest: Some(digest.into()),
            ..Default::default()
        });
    }

    #[test]
    fn numbers_increase_over_status_publications_and_the_clock() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_000_000_000);
        let st = |c: Option<i64>, r: Option<i64>| CRLScheduleStatus {
            crl_number: c,
            reserved_crl_number: r,
            ..Default::default()
        };
        // Nothing known (a new or re-created schedule, no publication): the clock.
        assert_eq!(
            next_number(&st(None, None), None, t),
            Some(1_764_000_000_000)
        );
        // Small numbers of an older release: the clock is above them.
        assert_eq!(
            next_number(&st(Some(4), Some(5)), None, t),
            Some(1_764_000_000_000)
        );
        // Above the clock (several CRLs in one millisecond, a clock that went
        // back): one more than the highest known, whichever knows it.
        let hi = 1_764_000_000_500;
        assert_eq!(next_number(&st(Some(hi), None), None, t), Some(hi + 1));
        assert_eq!(next_number(&st(Some(1), Some(hi)), None, t), Some(hi + 1));
        let published = u64::try_from(hi).unwrap();
        assert_eq!(
            next_number(&st(None, None), Some(published), t),
            Some(hi + 1)
        );
        assert_eq!(
            next_number(&st(Some(2), None), Some(published), t),
            Some(hi + 1)
        );
        // Exhausted: none, never a wrap-around.
        assert_eq!(next_number(&st(Some(i64::MAX), None), None, t), None);
        assert_eq!(next_number(&st(None, None), Some(u64::MAX), t), None);
    }

    #[test]
    fn defaults_follow_the_cps() {
        let t = timing(&schedule()).unwrap();
        assert_eq!(t.interval, Duration::from_secs(24 * 3600));
        assert_eq!(t.validity, Duration::from_secs(36 * 3600));
        assert_eq!(t.overlap, Duration::from_secs(12 * 3600));
    }

    #[test]
    fn a_crl_is_due_when_none_interval_change_spec_or_interruption() {
        let now = SystemTime::now();
        let mut s = schedule();
        let t = timing(&s).unwrap();
        assert_eq!(due(&s, &t, "d", 0, now), Some("NotYetPublished"));
        published(&mut s, now - Duration::from_secs(3600), "d");
        assert_eq!(due(&s, &t, "d", 0, now), None);
        assert_eq!(due(&s, &t, "other", 0, now), Some("EntriesChanged"));
        s.spec.reissue_on_change = false;
        assert_eq!(due(&s, &t, "other", 0, now), None);
        assert_eq!(
            due(&s, &t, "d", 0, now + Duration::from_secs(23 * 3600)),
            Some("Interval")
        );
        s.metadata.generation = Some(2);
        assert_eq!(due(&s, &t, "d", 0, now), Some("SpecChanged"));
        s.metadata.generation = Some(1);
        s.status.as_mut().unwrap().reserved_crl_number = Some(5);
        assert_eq!(due(&s, &t, "d", 0, now), Some("InterruptedAttempt"));
    }

    #[test]
    fn partitions_are_published_when_they_have_urls_and_requeue_is_at_the_interval() {
        let mut s = schedule();
        assert_eq!(ready_conds(&s, true)[0].status, conditions::TRUE);
        s.spec.partitions = 4;
        assert_eq!(ready_conds(&s, true)[0].status, conditions::TRUE);
        let c = &ready_conds(&s, false)[0];
        assert_eq!(
            (c.status, c.reason.as_str()),
            (conditions::FALSE, "NoPartitionURL")
        );
        // Published before partitions (an upgrade): due until they are.
        let now = SystemTime::now();
        published(&mut s, now - Duration::from_secs(3600), "d");
        let t = timing(&s).unwrap();
        assert_eq!(due(&s, &t, "d", 4, now), Some("PartitionsMissing"));
        s.status.as_mut().unwrap().partitions_published = Some(4);
        assert_eq!(due(&s, &t, "d", 4, now), None);
        let a = requeue_at(s.status.as_ref().unwrap(), &t, now);
        assert_eq!(a, Action::requeue(Duration::from_secs(23 * 3600)));
        // Overdue: at once (1 s), never a negative or zero delay.
        let a = requeue_at(
            s.status.as_ref().unwrap(),
            &t,
            now + Duration::from_secs(48 * 3600),
        );
        assert_eq!(a, Action::requeue(Duration::from_secs(1)));
    }

    #[test]
    fn partitions_follow_the_serial_and_the_url_rule() {
        let mut s = schedule();
        assert!(Partitioning::of(&s).is_none());
        s.spec.partitions = 3;
        let p = Partitioning::of(&s).unwrap();
        // 0x0100 = 256 = 3·85 + 1.
        assert_eq!(p.index(&Serial::from_hex("0100").unwrap()), 1);
        assert_eq!(p.index(&Serial::from_hex("0102").unwrap()), 0);
        let long = Serial::from_hex("7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF").unwrap();
        assert_eq!(p.index(&long), p.index(&long));
        assert!(p.index(&long) < 3);
        let urls = ["http://h.example/crl/moica.crl".to_string()];
        assert_eq!(p.url(&urls, 2).unwrap(), "http://h.example/crl/moica-2.crl");
        assert_eq!(
            p.url(&["http://h.example/crl/moica".into()], 0).unwrap(),
            "http://h.example/crl/moica-0"
        );
        assert!(p.url(&["http://h.example.tw".into()], 0).is_none());
        assert!(p.url(&["http://h.example.tw/crl/".into()], 0).is_none());
        assert!(p.url(&[], 0).is_none());
        s.spec.partition_url_template = Some("http://r.example/{n}/c.crl".into());
        let p = Partitioning::of(&s).unwrap();
        assert_eq!(
            p.assign(&Serial::from_hex("0100").unwrap(), &[]),
            Some((1, "http://r.example/1/c.crl".into()))
        );
    }

    #[test]
    fn colliding_publication_names_are_refused_to_the_newer_schedule() {
        let named = |n: &str, partitions: i32, secs: i64| {
            let mut s = schedule();
            s.metadata.name = Some(n.into());
            s.spec.partitions = partitions;
            s.metadata.creation_timestamp = Some(Time(jiff::Timestamp::from_second(secs).unwrap()));
            s
        };
        let a = named("a", 2, 1);
        let a1 = named("a-1", 0, 2);
        let a2 = named("a-2", 0, 3);
        let all = vec![a.clone(), a1.clone(), a2.clone()];
        assert!(name_conflict(&a, &all).is_none());
        assert_eq!(name_conflict(&a1, &all).unwrap().name_any(), "a");
        assert!(name_conflict(&a2, &all).is_none());
        // The other way round: the older full schedule keeps its name.
        let old = named("b-0", 0, 1);
        let b = named("b", 1, 2);
        assert_eq!(
            name_conflict(&b, &[old.clone(), b.clone()])
                .unwrap()
                .name_any(),
            "b-0"
        );
        assert!(name_conflict(&old, &[old.clone(), b]).is_none());
    }

    fn record(state: Option<&str>, reason: Option<&str>, revoked: bool) -> IssuedCertificate {
        let spec: crds::IssuedCertificateSpec = serde_json::from_value(serde_json::json!({
            "caRef": {"name": "root"}, "serialNumber": "1F", "subject": "CN=x",
            "profile": "Signature", "notBefore": "2026-01-01T00:00:00Z",
            "notAfter": "2029-01-01T00:00:00Z", "keyFingerprint": "ab", "certificate": "PEM",
        }))
        .unwrap();
        let mut ic = IssuedCertificate::new("root-1f", spec);
        ic.metadata.namespace = Some("ns".into());
        ic.status = Some(crds::IssuedCertificateStatus {
            state: state.map(str::to_string),
            reason: reason.map(str::to_string),
            revoked_at: revoked.then(|| at(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000))),
            invalidity_date: None,
        });
        ic
    }

    #[test]
    fn register_records_become_crl_entries_fail_closed() {
        assert!(
            entry_of(&record(Some("Valid"), None, false))
                .unwrap()
                .is_none()
        );
        let e = entry_of(&record(Some("Revoked"), Some("keyCompromise"), true))
            .unwrap()
            .unwrap();
        assert_eq!(e.reason, Reason::KeyCompromise);
        assert_eq!(e.serial.to_hex(), "1F");
        let h = entry_of(&record(Some("Held"), None, true))
            .unwrap()
            .unwrap();
        assert_eq!(h.reason, Reason::CertificateHold);
        let u = entry_of(&record(Some("Revoked"), None, true))
            .unwrap()
            .unwrap();
        assert_eq!(u.reason, Reason::Unspecified);
        assert_eq!(u.partition, None);
        let mut p = record(Some("Revoked"), None, true);
        p.spec.crl_partition = Some(3);
        assert_eq!(entry_of(&p).unwrap().unwrap().partition, Some(3));
        // The label alone makes no entry: the state is status.state.
        let mut under_way = record(None, None, false);
        under_way
            .metadata
            .labels
            .get_or_insert_default()
            .insert(LABEL_STATUS.into(), "Revoked".into());
        assert!(entry_of(&under_way).unwrap().is_none());
        // Revoked without a time, or with an unknown reason: an error naming the record.
        let err = entry_of(&record(Some("Revoked"), None, false)).unwrap_err();
        assert!(
            err.to_string().contains("IssuedCertificate/ns/root-1f"),
            "{err}"
        );
        assert!(entry_of(&record(Some("Revoked"), Some("lostIt"), true)).is_err());
    }

    #[test]
    fn the_digest_changes_with_the_entries() {
        let empty = entries_digest(&MemoryIndex::new());
        let e = RevokedEntry {
            serial: Serial::from_hex("0A").unwrap(),
            revoked_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_000),
            reason: Reason::KeyCompromise,
            invalidity_date: None,
            not_after: SystemTime::UNIX_EPOCH + Duration::from_secs(9_000_000_000),
            partition: None,
        };
        let one = entries_digest(&MemoryIndex::from_entries([e.clone()]).unwrap());
        assert_ne!(empty, one);
        let mut held = e;
        held.reason = Reason::CertificateHold;
        assert_ne!(
            one,
            entries_digest(&MemoryIndex::from_entries([held]).unwrap())
        );
    }
}
