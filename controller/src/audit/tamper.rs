//! The tamper watch and retention (CPS §5.4.3, §5.4.4).
//!
//! Tamper: the controller watches the AuditSegments of the audit namespace. A
//! segment it committed (or read at start) whose spec no longer has the
//! segment hash it knows, or that disappears while not yet past retention, was
//! changed by someone bypassing the API server's rules (etcd access, or a
//! member of system:masters after removing the chop-audit-segment policy): the
//! controller records `audit.tamper`, counts `chop_audit_tamper_detected_total`
//! and publishes a Warning Event `AuditTamperDetected` on the segment.
//!
//! Retention: every hour, segments signed longer ago than `--audit-retention`
//! get the label `chop.dev/retention-expired=true` (field manager
//! `chop-controller-audit-retention`); only then may an auditor delete them,
//! after archiving them (`kubectl chop audit export`).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use crds::AuditSegment;
use crds::audit_segment::{RETENTION_EXPIRED_LABEL, segment_name};
use futures::StreamExt;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};

use super::AuditEvent;
use crate::context::Context;

/// Field manager of the retention label.
pub const RETENTION_MANAGER: &str = "chop-controller-audit-retention";

/// How often segments are checked for the end of their retention period.
pub const RETENTION_CHECK: Duration = Duration::from_secs(3600);

/// Watch the trail for tampering and label segments past `retention` (checked
/// every `check`, [`RETENTION_CHECK`] outside tests), until the process ends.
pub async fn run(ctx: Arc<Context>, namespace: String, retention: Duration, check: Duration) {
    if !ctx.audit.enabled() {
        return;
    }
    let api: Api<AuditSegment> = Api::namespaced(ctx.client.clone(), &namespace);
    let labeller = {
        let api = api.clone();
        async move {
            loop {
                if let Err(e) = label_expired(&api, retention).await {
                    tracing::warn!(error = %e, "audit retention: could not label segments");
                }
                tokio::time::sleep(check).await;
            }
        }
    };
    let mut reported: HashSet<(u64, String)> = HashSet::new();
    let watch = watcher(api, watcher::Config::default())
        .default_backoff()
        .for_each(|event| {
            let mut found = Vec::new();
            match event {
                Ok(watcher::Event::Apply(seg) | watcher::Event::InitApply(seg)) => {
                    if let Some(what) = changed(&ctx, &seg) {
                        found.push((seg, what));
                    }
                }
                Ok(watcher::Event::Delete(seg)) => {
                    let known = ctx.audit.committed_hash(seg.spec.index).is_some();
                    let expired = seg
                        .labels()
                        .get(RETENTION_EXPIRED_LABEL)
                        .is_some_and(|v| v == "true");
                    if known && !expired {
                        found.push((seg, "deleted before its retention period ended".to_string()));
                    }
                }
                _ => {}
            }
            let found: Vec<_> = found
                .into_iter()
                .filter(|(seg, _)| {
                    reported.insert((seg.spec.index, seg.resource_version().unwrap_or_default()))
                })
                .collect();
            let ctx = Arc::clone(&ctx);
            async move {
                for (seg, what) in found {
                    tamper(&ctx, &seg, &what).await;
                }
            }
        });
    tokio::join!(labeller, watch);
}

/// What changed in a segment the controller knows, if anything.
fn changed(ctx: &Context, seg: &AuditSegment) -> Option<String> {
    let known = ctx.audit.committed_hash(seg.spec.index)?;
    if seg.name_any() != segment_name(seg.spec.index) {
        return Some(format!(
            "it is named {} but holds index {}",
            seg.name_any(),
            seg.spec.index
        ));
    }
    match chop_audit::head::segment_hash(&seg.spec) {
        Ok(h) if h == known => None,
        Ok(_) => Some("its content is not what the controller committed".into()),
        Err(e) => Some(format!("it no longer reads as a segment ({e})")),
    }
}

async fn tamper(ctx: &Context, seg: &AuditSegment, what: &str) {
    let name = seg.name_any();
    tracing::error!(segment = %name, what, "audit trail tampered with");
    ctx.metrics.audit_tamper();
    ctx.audit.note(
        AuditEvent::new("audit.tamper", "observed")
            .object(seg)
            .reason("AuditTamperDetected")
            .detail("segment", name.clone())
            .detail("index", seg.spec.index.to_string())
            .detail("what", what.to_string()),
    );
    ctx.event(
        seg,
        true,
        "AuditTamperDetected",
        format!(
            "audit segment {name} was altered outside chop: {what}; run kubectl chop audit verify"
        ),
    )
    .await;
}

async fn label_expired(api: &Api<AuditSegment>, retention: Duration) -> Result<(), kube::Error> {
    let cutoff = jiff::Timestamp::now()
        .checked_sub(jiff::SignedDuration::try_from(retention).unwrap_or(jiff::SignedDuration::MAX))
        .unwrap_or(jiff::Timestamp::MIN);
    for seg in api.list(&ListParams::default()).await?.items {
        let expired = seg
            .labels()
            .get(RETENTION_EXPIRED_LABEL)
            .is_some_and(|v| v == "true");
        let old = seg
            .spec
            .signed_at
            .parse::<jiff::Timestamp>()
            .is_ok_and(|t| t < cutoff);
        if old && !expired {
            let patch =
                serde_json::json!({"metadata": {"labels": {RETENTION_EXPIRED_LABEL: "true"}}});
            api.patch(
                &seg.name_any(),
                &PatchParams {
                    field_manager: Some(RETENTION_MANAGER.into()),
                    ..PatchParams::default()
                },
                &Patch::Merge(&patch),
            )
            .await?;
            tracing::info!(segment = %seg.name_any(), "audit segment past retention: labelled");
        }
    }
    Ok(())
}
