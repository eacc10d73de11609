//! One reconciler per kind (kube-rs controller-rs style): a thin `reconcile` that
//! opens a span, times itself and dispatches to `apply`; an `error_policy` that
//! counts the error and requeues with per-object backoff.

pub mod certificate_authority;
pub mod certificate_request;

use std::time::SystemTime;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::error::{Error, Result};

/// A `SystemTime` as a Kubernetes `Time`.
pub(crate) fn to_time(t: SystemTime, object: &str) -> Result<Time> {
    jiff::Timestamp::try_from(t)
        .map(Time)
        .map_err(|e| Error::Invalid {
            object: object.to_string(),
            message: format!("time out of range: {e}"),
        })
}

/// A Kubernetes `Time` as a `SystemTime`.
pub(crate) fn from_time(t: &Time) -> SystemTime {
    SystemTime::from(t.0)
}
