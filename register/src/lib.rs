//! # What chop-controller and chop-responder share
//!
//! The responder serves what the controller publishes, so the two must agree on
//! the formats between them; they live here, and the responder does not depend on
//! the controller (its image carries no controller code, issue 11):
//!
//! - [`publish`]: a CRL published as chunked ConfigMaps (ADR 0002 §4): the writer
//!   the controller uses and the reader the responder uses, with the size and
//!   SHA-256 checks that make a torn or tampered publication an error.
//! - [`Partitioning`]: how a CA's certificates are spread over partition CRLs
//!   (which partition a serial is on, and that partition's URL).
//! - [`Register`]: the contract of a CA's store of certificates (serials reserved
//!   before signing, one certificate per reservation, conditional status changes,
//!   indexed CRL queries), and [`postgres::PgRegister`], its PostgreSQL
//!   implementation for CAs of millions of certificates (issue 12).
//!
//! Design: the functions take a [`kube::Client`] and plain names; nothing here
//! reconciles or holds state. Non-goals: no signing, no policy; the register of
//! certificates itself (IssuedCertificate objects today) is read by each binary
//! through the CRD types of `chop-crds`.

pub mod api;
pub mod partitioning;
pub mod postgres;
pub mod publish;

pub use api::Register;
pub use partitioning::Partitioning;

/// The field manager of everything chop-controller writes (server-side apply).
pub const CONTROLLER_FIELD_MANAGER: &str = "chop-controller";

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong publishing or reading a CRL.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("{}Kubernetes API: {action}: {source}", object.as_deref().map(|o| format!("{o}: ")).unwrap_or_default())]
    Kube {
        /// What was being done.
        action: &'static str,
        /// `Kind/namespace/name` of the object concerned, when known.
        object: Option<String>,
        /// The client error.
        #[source]
        source: Box<kube::Error>,
    },
    /// A database call failed.
    #[error("PostgreSQL: {action}: {source}")]
    Database {
        /// What was being done.
        action: &'static str,
        /// The driver's error (never holds the connection URL's password).
        #[source]
        source: tokio_postgres::Error,
    },
    /// A write the register's rules refuse (a second certificate under one
    /// serial, a commit without its reservation).
    #[error("{message}")]
    Conflict {
        /// What was refused and why.
        message: String,
    },
    /// The register's configuration is unusable (URL, schema version).
    #[error("{message}")]
    Config {
        /// What is wrong and what to do.
        message: String,
    },
    /// A published object's content is unusable (torn, tampered, malformed).
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
            object: None,
            source: Box::new(e),
        }
    }

    /// Name the object this error concerns, if it does not already.
    #[must_use]
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

    /// Whether the error is the API server's 404 (the object does not exist).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Kube { source, .. } if matches!(**source, kube::Error::Api(ref s) if s.code == 404))
    }
}

/// Lower-case hex.
pub(crate) fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
