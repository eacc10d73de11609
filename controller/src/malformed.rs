//! Objects that no longer deserialize into this controller's types.
//!
//! A typed watch fails its whole list when one object does not deserialize
//! (kube-rs issue 774): one malformed object of a kind, made by loosening a CRD
//! or by an older or newer controller version, would blind the controller to
//! every object of that kind. Every watch of a chop kind therefore reads
//! [`DeserializeGuard`]s: a malformed object arrives as its metadata and the
//! deserialization error. [`reconcile`] and [`error_policy`] adapt a
//! reconciler written for `K` to guarded objects: a valid object goes to the
//! reconciler as before; a malformed one is reported on itself (a Warning Event
//! with reason [`REASON`] and the error, the metric
//! `chop_reconcile_errors_total{kind=...,error="InvalidObject"}`, a log line)
//! and left alone until it changes. Stores read through [`valid`], which skips
//! malformed objects. Lists done while reconciling use [`list_valid`].

use std::future::Future;
use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use kube::core::error_boundary::InvalidObject;
use kube::core::{DeserializeGuard, NamespaceResourceScope};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::context::Context;
use crate::error::{Error, Result};

/// Reason of the Warning Event on a malformed object (and the `error` label of
/// its metric).
pub const REASON: &str = "InvalidObject";

/// At most this much of a deserialization error goes into an Event's note.
const MAX_NOTE: usize = 512;

/// A chop object as watched: either `K`, or the metadata of an object that does
/// not deserialize into `K` and why.
pub type Guarded<K> = DeserializeGuard<K>;

/// An API of guarded objects: its watches survive malformed objects.
pub type GuardedApi<K> = Api<Guarded<K>>;

/// The valid object inside `g`, if it is one.
pub fn valid<K>(g: &Guarded<K>) -> Option<&K> {
    g.0.as_ref().ok()
}

/// A predicate over `K` (e.g. `signing_state`) lifted to guarded objects: a
/// malformed object hashes its resourceVersion, so each change of it passes.
pub fn predicate<K: Resource>(
    f: impl Fn(&K) -> Option<u64> + Send + Sync + 'static,
) -> impl Fn(&Guarded<K>) -> Option<u64> + Send + Sync + 'static {
    move |g| match &g.0 {
        Ok(k) => f(k),
        Err(e) => {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            e.metadata.resource_version.hash(&mut h);
            Some(h.finish())
        }
    }
}

/// Adapt reconciler `f` of `K` to guarded objects (see the module doc).
pub fn reconcile<K, F, Fut>(
    f: F,
) -> impl FnMut(Arc<Guarded<K>>, Arc<Context>) -> BoxFuture<'static, Result<Action>>
where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
    F: Fn(Arc<K>, Arc<Context>) -> Fut,
    Fut: Future<Output = Result<Action>> + Send + 'static,
{
    move |obj, ctx| match &obj.0 {
        Ok(k) => {
            ctx.forget_invalid(&obj.uid().unwrap_or_default());
            f(Arc::new(k.clone()), ctx).boxed()
        }
        Err(invalid) => {
            let invalid = invalid.clone();
            async move {
                report::<K>(obj.as_ref(), &invalid, &ctx).await;
                Ok(Action::await_change())
            }
            .boxed()
        }
    }
}

/// Adapt error policy `f` of `K` to guarded objects.
pub fn error_policy<K, F>(f: F) -> impl Fn(Arc<Guarded<K>>, &Error, Arc<Context>) -> Action
where
    K: Resource<DynamicType = ()> + Clone,
    F: Fn(Arc<K>, &Error, Arc<Context>) -> Action,
{
    move |obj, error, ctx| match &obj.0 {
        Ok(k) => f(Arc::new(k.clone()), error, ctx),
        // Not reached: a malformed object's reconcile does not fail.
        Err(_) => Action::requeue(ctx.backoff(&obj.uid().unwrap_or_default())),
    }
}

/// Report malformed object `obj` once per resourceVersion: a Warning Event on
/// it, the metric, a log line.
async fn report<K>(obj: &Guarded<K>, invalid: &InvalidObject, ctx: &Context)
where
    K: Resource<DynamicType = ()>,
{
    let uid = obj.uid().unwrap_or_default();
    if !ctx.note_invalid(&uid, obj.resource_version().as_deref()) {
        return;
    }
    let kind = K::kind(&());
    ctx.metrics.reconcile_error(&kind, REASON);
    tracing::warn!(
        kind = %kind,
        namespace = %obj.namespace().unwrap_or_default(),
        name = %obj.name_any(),
        error = %invalid.error,
        "object does not match this controller's types: ignored until it changes"
    );
    ctx.event(obj, true, REASON, note(&kind, &invalid.error))
        .await;
}

/// The Event note for a malformed object of `kind`.
fn note(kind: &str, error: &str) -> String {
    let mut error = error.to_string();
    if error.len() > MAX_NOTE {
        let mut cut = MAX_NOTE;
        while !error.is_char_boundary(cut) {
            cut -= 1;
        }
        error.truncate(cut);
        error.push('…');
    }
    format!("this {kind} does not deserialize and is ignored until it changes: {error}")
}

/// The objects of kind `K` in `ns` matching `lp`, without the malformed ones,
/// unless `concerns` says a malformed one matters to the caller (it gets the
/// object's metadata, its JSON and the valid objects): then an
/// [`Error::Invalid`] naming it, so the caller fails closed rather than decide
/// without it. Malformed objects are reported by their kind's watch.
pub async fn list_valid<K>(
    client: &kube::Client,
    ns: &str,
    lp: &ListParams,
    concerns: impl Fn(&ObjectMeta, &serde_json::Value, &[K]) -> bool,
) -> Result<Vec<K>>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope> + DeserializeOwned,
{
    let resource = ApiResource::erase::<K>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &resource);
    let list = api
        .list(lp)
        .await
        .map_err(Error::kube("list (tolerating malformed objects)"))?;
    let mut valid = Vec::with_capacity(list.items.len());
    let mut malformed = Vec::new();
    for item in list.items {
        let id = format!("{}/{ns}/{}", K::kind(&()), item.name_any());
        let mut value = serde_json::to_value(&item).map_err(|e| Error::Invalid {
            object: id.clone(),
            message: format!("cannot re-encode: {e}"),
        })?;
        // A list's items carry no apiVersion/kind; the types want them.
        value["apiVersion"] = serde_json::json!(resource.api_version);
        value["kind"] = serde_json::json!(resource.kind);
        match serde_json::from_value::<K>(value.clone()) {
            Ok(k) => valid.push(k),
            Err(e) => malformed.push((id, item.metadata, value, e)),
        }
    }
    for (object, meta, value, e) in malformed {
        if concerns(&meta, &value, &valid) {
            return Err(Error::Invalid {
                object,
                message: format!("{REASON}: does not deserialize: {e}"),
            });
        }
    }
    Ok(valid)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn notes_are_bounded_and_name_the_kind() {
        let n = note("Revocation", &"é".repeat(1000));
        assert!(n.starts_with("this Revocation does not deserialize"));
        assert!(n.len() < MAX_NOTE + 100, "{}", n.len());
        let n = note("CRLSchedule", "unknown variant `Sometimes`");
        assert!(n.ends_with("unknown variant `Sometimes`"), "{n}");
    }

    #[test]
    fn predicates_pass_each_change_of_a_malformed_object() {
        let bad: Guarded<crds::Revocation> = serde_json::from_value(serde_json::json!({
            "apiVersion": "chop.dev/v1alpha1", "kind": "Revocation",
            "metadata": {"name": "r", "resourceVersion": "1"},
            "spec": {"reason": 7}
        }))
        .unwrap();
        assert!(valid(&bad).is_none());
        let p = predicate(|_: &crds::Revocation| Some(0));
        let first = p(&bad);
        let mut changed = bad.clone();
        changed.meta_mut().resource_version = Some("2".into());
        assert_ne!(first, p(&changed));
    }
}
