//! The controller's one error type. Each variant knows its metric label and
//! whether retrying can help; errors that concern an object name it.

/// Result alias for the controller.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while reconciling.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("{}Kubernetes API: {action}: {source}", prefix(.object))]
    Kube {
        /// What the controller was doing.
        action: &'static str,
        /// `Kind/namespace/name` of the object being reconciled, once known
        /// (filled in by [`Error::about`] at the reconcile boundary).
        object: Option<String>,
        /// The client error.
        #[source]
        source: Box<kube::Error>,
    },
    /// The CA core refused or failed.
    #[error("{object}: {source}")]
    Ca {
        /// `Kind/namespace/name` of the object concerned.
        object: String,
        /// The core's error (already free of secrets).
        #[source]
        source: ca::Error,
    },
    /// An object's content is unusable (and retrying will not help until it changes).
    #[error("{object}: {message}")]
    Invalid {
        /// `Kind/namespace/name`.
        object: String,
        /// What is wrong.
        message: String,
    },
    /// A setting an administrator chose is not one the controller's operator
    /// allowed (e.g. a responder image): refused, with a specific reason.
    #[error("{object}: {message}")]
    Refused {
        /// `Kind/namespace/name`.
        object: String,
        /// The condition reason (CamelCase), also the metric label.
        reason: &'static str,
        /// What is refused and what is allowed.
        message: String,
    },
    /// The audit trail cannot be written: the action that must be recorded
    /// first waits (CPS §5.4.6).
    #[error("audit trail unavailable: {message}; the action waits until its record is committed")]
    AuditUnavailable {
        /// Why.
        message: String,
    },
}

impl From<chop_register::Error> for Error {
    fn from(e: chop_register::Error) -> Self {
        match e {
            chop_register::Error::Kube {
                action,
                object,
                source,
            } => Error::Kube {
                action,
                object,
                source,
            },
            chop_register::Error::Invalid { object, message } => Error::Invalid { object, message },
            other => Error::Invalid {
                object: String::new(),
                message: other.to_string(),
            },
        }
    }
}

impl Error {
    /// A closure mapping a `kube::Error` for use with `map_err`.
    pub fn kube(action: &'static str) -> impl Fn(kube::Error) -> Error {
        move |e| Error::Kube {
            action,
            object: None,
            source: Box::new(e),
        }
    }

    /// A closure mapping a core error about `object` for use with `map_err`.
    pub fn ca(object: &str) -> impl Fn(ca::Error) -> Error + Copy + '_ {
        move |source| Error::Ca {
            object: object.to_string(),
            source,
        }
    }

    /// Name the object this error concerns, if it does not already.
    pub fn about(self, object: &str) -> Self {
        match self {
            Error::Kube {
                action,
                object: None,
                source,
            } => Error::Kube {
                action,
                object: Some(object.to_string()),
                source,
            },
            other => other,
        }
    }

    /// The label value used in `chop_reconcile_errors_total{error=...}`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube { .. } => "KubeApi",
            Error::Ca { source, .. } => source.reason(),
            Error::Invalid { .. } => "Invalid",
            Error::Refused { reason, .. } => reason,
            Error::AuditUnavailable { .. } => crate::audit::REASON,
        }
    }
}

fn prefix(object: &Option<String>) -> String {
    object
        .as_deref()
        .map(|o| format!("{o}: "))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kube_errors_name_their_object_once_known() {
        let e = Error::kube("get Secret")(kube::Error::LinesCodecMaxLineLengthExceeded);
        assert!(e.to_string().starts_with("Kubernetes API: get Secret"));
        let e = e.about("CertificateAuthority/ns/root");
        assert!(
            e.to_string()
                .starts_with("CertificateAuthority/ns/root: Kubernetes API: get Secret"),
            "{e}"
        );
        assert_eq!(e.metric_label(), "KubeApi");
    }
}
