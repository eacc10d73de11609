//! One reconciler per kind (kube-rs controller-rs style): a thin `reconcile` that
//! opens a span, times itself and dispatches to `apply`; an `error_policy` that
//! counts the error and requeues with per-object backoff.

pub mod certificate_authority;
pub mod certificate_request;
pub mod crl_schedule;
pub mod revocation;
pub mod suspension;

use std::time::SystemTime;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::error::{Error, Result};

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
