//! The controller's one error type. Each variant knows its metric label and
//! whether retrying can help; errors that concern an object name it.

/// Result alias for the controller.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while reconciling.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("Kubernetes API: {action}: {source}")]
    Kube {
        /// What the controller was doing.
        action: &'static str,
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
}

impl Error {
    /// A closure mapping a `kube::Error` for use with `map_err`.
    pub fn kube(action: &'static str) -> impl Fn(kube::Error) -> Error {
        move |e| Error::Kube {
            action,
            source: Box::new(e),
        }
    }

    /// The label value used in `chop_reconcile_errors_total{error=...}`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube { .. } => "KubeApi",
            Error::Ca { source, .. } => source.reason(),
            Error::Invalid { .. } => "Invalid",
        }
    }
}
