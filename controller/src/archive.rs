//! The archive path of the Kubernetes register (CPS §4.10.1, §5.5; issue 12).
//!
//! A record whose certificate expired more than `--archive-after` ago leaves
//! the hot register: the controller first commits a `certificate.archived`
//! record to the signed audit trail, holding the certificate itself (PEM) with
//! its final state, reason and revocation time, then deletes the
//! IssuedCertificate and removes its `chop.dev/register` finalizer. The trail,
//! exported by the auditor (`kubectl chop audit export`) and kept for ten years
//! (§5.5.2), is the archive; `kubectl chop audit search --serial` finds a
//! certificate in it.
//!
//! Why this is safe:
//! - §4.10.1: revocation information may leave the CRL and OCSP only after the
//!   certificate has expired; a record is archived only after expiry plus the
//!   grace period, so every relying party that can still check it is served.
//! - The record of the archive is durable before the deletion (fail closed, as
//!   every other action: no trail, no deletion). A crash between the two leaves
//!   a record being deleted (deletionTimestamp set), whose finalizer the next
//!   scan removes without recording it again.
//! - A certificate revoked for `keyCompromise` stays: its record is the key's
//!   entry in the block list ([`crate::blocklist`]), which must outlive the
//!   certificate.
//! - Only the controller's identity may delete a record or remove its finalizer
//!   (chop-register-protection), and each deletion carries the record's uid and
//!   resourceVersion as preconditions: a record changed since it was read (a
//!   late revocation) is re-read at the next scan, never archived stale.

use std::sync::Arc;
use std::time::Duration;

use crds::IssuedCertificate;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, Preconditions};

use crate::audit::AuditEvent;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::register::{self, FINALIZER, State};

/// Records archived per scan at most (the rest wait for the next scan).
const PER_SCAN: usize = 500;

/// When and how often the archive runs.
#[derive(Clone, Copy, Debug)]
pub struct ArchiveConfig {
    /// How long after its notAfter a certificate leaves the register; `None`
    /// disables archiving.
    pub after: Option<Duration>,
    /// Time between scans.
    pub every: Duration,
    /// Test hook (`CHOP_TEST_ARCHIVE_CLOCK_AHEAD_SECS`): the archive's clock
    /// runs this far ahead, so that an end-to-end test sees certificates of
    /// the shortest validity (one day) expire. Zero in a deployment.
    pub clock_ahead: Duration,
}

/// Default grace after expiry: 30 days.
pub const DEFAULT_AFTER: Duration = Duration::from_secs(30 * 86_400);
/// Default time between scans: one hour.
pub const DEFAULT_EVERY: Duration = Duration::from_secs(3600);

impl Default for ArchiveConfig {
    fn default() -> Self {
        ArchiveConfig {
            after: Some(DEFAULT_AFTER),
            every: DEFAULT_EVERY,
            clock_ahead: Duration::ZERO,
        }
    }
}

/// Scan the register every `config.every` and archive what is due, until the
/// process ends.
pub async fn run(ctx: Arc<Context>, namespace: Option<String>, config: ArchiveConfig) {
    let Some(after) = config.after else {
        tracing::info!("archive of expired certificates: off");
        return;
    };
    let api: Api<IssuedCertificate> = match &namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    loop {
        match scan(&ctx, &api, after, config.clock_ahead).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(records = n, "archived expired certificates"),
            Err(e) => tracing::warn!(error = %e, "archive of expired certificates: will retry"),
        }
        tokio::time::sleep(config.every).await;
    }
}

/// Whether `record` is due at `now` (seconds since the epoch): expired more
/// than `after` ago, and not a compromised key's entry in the block list.
pub fn due(record: &IssuedCertificate, now: i64, after: Duration) -> bool {
    let expired_at = record.spec.not_after.0.as_second();
    let after = i64::try_from(after.as_secs()).unwrap_or(i64::MAX);
    if expired_at.saturating_add(after) >= now {
        return false;
    }
    let status = record.status.as_ref();
    let compromised = matches!(register::state(record), Ok(State::Revoked))
        && status.and_then(|s| s.reason.as_deref())
            == Some(ca::revocation::Reason::KeyCompromise.name());
    !compromised
}

/// One pass over the register, by pages; returns how many records left it.
async fn scan(
    ctx: &Context,
    api: &Api<IssuedCertificate>,
    after: Duration,
    clock_ahead: Duration,
) -> Result<usize> {
    let now = jiff::Timestamp::now()
        .as_second()
        .saturating_add(i64::try_from(clock_ahead.as_secs()).unwrap_or(0));
    let mut done = 0;
    let mut lp = ListParams::default().limit(500);
    loop {
        let page = api
            .list(&lp)
            .await
            .map_err(Error::kube("list IssuedCertificates"))?;
        for record in page.items {
            if done >= PER_SCAN {
                return Ok(done);
            }
            if record.metadata.deletion_timestamp.is_some() {
                // Recorded and deleted by an earlier scan that stopped before
                // removing the finalizer.
                if record.finalizers().iter().any(|f| f == FINALIZER) {
                    release(api, &record).await?;
                }
                continue;
            }
            if due(&record, now, after) {
                archive(ctx, &record).await?;
                done += 1;
            }
        }
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
            _ => return Ok(done),
        }
    }
}

/// Record, then delete, one record.
async fn archive(ctx: &Context, record: &IssuedCertificate) -> Result<()> {
    let ns = record.namespace().unwrap_or_default();
    let api: Api<IssuedCertificate> = Api::namespaced(ctx.client.clone(), &ns);
    let status = record.status.as_ref();
    let state = register::state(record)?;
    let mut event = AuditEvent::new("certificate.archived", "success")
        .object(record)
        .ca(&ns, &record.spec.ca_ref.name)
        .serial(record.spec.serial_number.clone())
        .detail("state", state.as_str())
        .detail("notAfter", record.spec.not_after.0.to_string())
        .detail("certificate", record.spec.certificate.clone())
        .dedup(format!(
            "certificate.archived/{}",
            record.uid().unwrap_or_default()
        ));
    if let Some(reason) = status.and_then(|s| s.reason.as_deref()) {
        event = event.reason(reason);
    }
    if let Some(at) = status.and_then(|s| s.revoked_at.as_ref()) {
        event = event.detail("revokedAt", at.0.to_string());
    }
    if let Some(r) = &record.spec.request_ref {
        event = event.detail("request", r.name.clone());
    }
    ctx.audit.record(event).await?;
    let delete = DeleteParams {
        preconditions: Some(Preconditions {
            uid: record.uid(),
            resource_version: record.resource_version(),
        }),
        ..DeleteParams::default()
    };
    match api.delete(&record.name_any(), &delete).await {
        Ok(_) => {}
        // Gone, or changed since it was read: the next scan decides again.
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => return Ok(()),
        Err(e) => return Err(Error::kube("delete IssuedCertificate")(e)),
    }
    let current = match api
        .get_opt(&record.name_any())
        .await
        .map_err(Error::kube("get IssuedCertificate"))?
    {
        Some(r) => r,
        None => return Ok(()),
    };
    release(&api, &current).await?;
    ctx.metrics.archived(&record.spec.ca_ref.name);
    tracing::info!(
        record = %record.name_any(),
        namespace = %ns,
        serial = %record.spec.serial_number,
        "certificate archived: expired, recorded in the audit trail, removed from the register"
    );
    Ok(())
}

/// Remove the register finalizer of a record being deleted (a merge patch
/// carrying the resourceVersion read: only the finalizer list as read is
/// replaced, or the API server refuses with a conflict).
async fn release(api: &Api<IssuedCertificate>, record: &IssuedCertificate) -> Result<()> {
    let kept: Vec<&String> = record
        .finalizers()
        .iter()
        .filter(|f| f.as_str() != FINALIZER)
        .collect();
    let patch = serde_json::json!({
        "metadata": {"resourceVersion": record.resource_version(), "finalizers": kept}
    });
    match api
        .patch(
            &record.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(Error::kube("remove the register finalizer")(e)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn record(not_after: i64, state: Option<&str>, reason: Option<&str>) -> IssuedCertificate {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "chop.dev/v1alpha1", "kind": "IssuedCertificate",
            "metadata": {"name": "moica-01", "namespace": "ca"},
            "spec": {"caRef": {"name": "moica"}, "serialNumber": "01", "subject": "CN=x",
                     "profile": "Signature",
                     "notBefore": "2020-01-01T00:00:00Z",
                     "notAfter": jiff::Timestamp::from_second(not_after).unwrap().to_string(),
                     "keyFingerprint": "00", "certificate": "PEM"},
            "status": {"state": state, "reason": reason},
        }))
        .unwrap()
    }

    #[test]
    fn due_only_after_expiry_plus_grace_and_never_a_compromised_key() {
        let day = Duration::from_secs(86_400);
        let t = 1_800_000_000;
        // Expired 31 days ago, 30 days of grace: due, whatever its state.
        let old = t - 31 * 86_400;
        assert!(due(&record(old, None, None), t, 30 * day));
        assert!(due(&record(old, Some("Held"), None), t, 30 * day));
        assert!(due(
            &record(old, Some("Revoked"), Some("superseded")),
            t,
            30 * day
        ));
        // Still in its grace period, or not expired: stays.
        assert!(!due(&record(t - 29 * 86_400, None, None), t, 30 * day));
        assert!(!due(&record(t + 86_400, None, None), t, Duration::ZERO));
        // The block list's entry stays however old.
        assert!(!due(
            &record(old, Some("Revoked"), Some("keyCompromise")),
            t,
            30 * day
        ));
    }
}
