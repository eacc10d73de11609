//! One reconciler per kind (kube-rs controller-rs style): a thin `reconcile` that
//! opens a span, times itself and dispatches to `apply`; an `error_policy` that
//! counts the error and requeues with per-object backoff.

pub mod ca_key;
pub mod certificate_authority;
pub mod certificate_request;
pub mod crl_schedule;
pub mod key_ceremony;
pub mod responder;
pub mod revocation;
pub mod subordinate;
pub mod suspension;

use std::time::SystemTime;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Api;
use kube::core::NamespaceResourceScope;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::context::Context;
use crate::error::{Error, Result};

/// Read `obj` afresh from the API server. Reconcilers decide on the object as it
/// is now, not as the watch cache last saw it: the cache may not yet hold this
/// controller's own last write, and a status computed from it would drop a
/// reservation, a certificate or a recorded time (server-side apply removes owned
/// fields an apply omits). Reconciles of one object are serialised and only the
/// leader writes, so this read includes every earlier write of ours. `None`: the
/// object is gone. An object whose resourceVersion is the one our own last write
/// returned ([`Context::note_written`]) is current already and is not read again.
pub async fn fresh<K>(obj: &K, ctx: &Context, action: &'static str) -> Result<Option<K>>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    // The watch already delivered this controller's own last write: that is the
    // current state, no need to read it again.
    if ctx.is_own_write(
        &obj.uid().unwrap_or_default(),
        obj.resource_version().as_deref(),
    ) {
        return Ok(Some(obj.clone()));
    }
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let current = api
        .get_opt(&obj.name_any())
        .await
        .map_err(Error::kube(action))?;
    if current.is_none() {
        ctx.note_written(&obj.uid().unwrap_or_default(), None);
    }
    Ok(current)
}

/// Write `status` to `obj`'s status subresource by server-side apply as
/// `field_manager` (forced: the controller owns what it writes there). With
/// `resource_version`, only if the object is still at that version (a conflict
/// means someone wrote in between: read again and decide again).
pub async fn apply_status<K, S>(
    client: &kube::Client,
    obj: &K,
    field_manager: &str,
    status: &S,
    resource_version: Option<&str>,
    action: &'static str,
) -> Result<K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
    S: serde::Serialize,
{
    let mut body = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    if let Some(rv) = resource_version {
        body["metadata"] = serde_json::json!({ "resourceVersion": rv });
    }
    let api: Api<K> = Api::namespaced(client.clone(), &obj.namespace().unwrap_or_default());
    api.patch_status(
        &obj.name_any(),
        &kube::api::PatchParams::apply(field_manager).force(),
        &kube::api::Patch::Apply(&body),
    )
    .await
    .map_err(Error::kube(action))
}

/// Every reconciler's error policy: count the error under `kind` and requeue with
/// the object's own backoff.
pub fn requeue_after_error<K: Resource>(
    kind: &'static str,
    obj: &K,
    error: &Error,
    ctx: &Context,
) -> Action {
    ctx.metrics.reconcile_error(kind, error.metric_label());
    let delay = ctx.backoff(&obj.uid().unwrap_or_default());
    tracing::warn!(kind, name = %obj.name_any(), error = %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// A `SystemTime` as a Kubernetes `Time`.
pub fn to_time(t: SystemTime, object: &str) -> Result<Time> {
    jiff::Timestamp::try_from(t)
        .map(Time)
        .map_err(|e| Error::Invalid {
            object: object.to_string(),
            message: format!("time out of range: {e}"),
        })
}

/// A Kubernetes/Go duration such as `43800h` or `1h30m` as a profile period of
/// whole days (the CRDs validate the format with CEL `duration()`; the core counts
/// validity in days or calendar years).
pub fn parse_period(s: &str) -> std::result::Result<ca::profile::Period, String> {
    let d: jiff::SignedDuration = s.parse().map_err(|e| format!("duration {s:?}: {e}"))?;
    let days = d.as_secs() / 86_400;
    if days < 1 {
        return Err(format!("duration {s:?} is shorter than one day"));
    }
    u32::try_from(days)
        .map(ca::profile::Period::Days)
        .map_err(|_| format!("duration {s:?} is too long"))
}

/// A Kubernetes `Time` as a `SystemTime`.
pub fn from_time(t: &Time) -> SystemTime {
    SystemTime::from(t.0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use ca::profile::Period;

    #[test]
    fn go_durations_become_whole_days() {
        assert_eq!(parse_period("43800h").unwrap(), Period::Days(1825));
        assert_eq!(parse_period("175200h").unwrap(), Period::Days(7300));
        assert_eq!(parse_period("49h30m").unwrap(), Period::Days(2));
        assert!(parse_period("23h").is_err());
        assert!(parse_period("soon").is_err());
    }
}
