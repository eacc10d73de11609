//! # chop-responder
//!
//! The stateless HTTP server that answers OCSP (RFC 6960, RFC 5019) and serves the
//! CA repository (CA certificate, chain, CRLs, issued certificates) for **one CA
//! per process** (the operator runs one Deployment per CA). All OCSP encoding and
//! signing is done by [`ca::ocsp::OcspResponder`]; this crate moves bytes between
//! HTTP and it, and keeps what it needs in memory.
//!
//! ## Design
//! - **State** ([`state`]): a [`StateHandle`] holds two things. The CA *material*
//!   ([`CaMaterial`]: OCSP responder with CA and delegated responder certificate
//!   and key, and the repository blobs) is immutable and swapped atomically
//!   (`arc-swap`) when a feeder installs a new one. The *status table*
//!   ([`StatusTable`]) maps serials to their status and takes per-certificate
//!   updates (issue, revoke, hold, resume, forget) in place: a revocation costs one
//!   hash-map write, not a rebuild.
//! - **Feeders** ([`feeder`]): whatever fills the state implements [`Feeder`]. The
//!   [`DirFeeder`] reads a directory (`--dir`) and reloads it on change; the
//!   [`KubeFeeder`] (`--kube`, [`kube_feeder`]) watches one CertificateAuthority's
//!   resources with read-only RBAC and applies every IssuedCertificate event as a
//!   per-serial delta through the same [`StateHandle`] calls.
//! - **Pre-signed responses** ([`cache`]): answers to requests without nonce are
//!   kept (RFC 5019 §2.1.1 allows pre-produced responses), keyed by the requested
//!   CertIDs, until `thisUpdate + max-age` (bounded by `nextUpdate`). Every entry
//!   remembers the status generation it was signed at; the status table records
//!   the generation at which each serial last changed, so a revocation makes every
//!   cached answer about that serial stale *at once*: the next request is signed
//!   afresh with the new status. Requests with a nonce are signed fresh (within the signing budget).
//! - **Signing budget** ([`budget`]): what cannot be pre-signed (an unknown
//!   serial, a nonce, several CertIDs) is signed only while a token bucket
//!   allows; beyond it the answer is the unsigned `unauthorized` (RFC 5019
//!   §2.2.3), or for a nonce the pre-signed answer without it, so a flood of
//!   random serials cannot make the responder sign per request.
//! - **HTTP** ([`http`]): hyper 1 on tokio, HTTP/1.1 with keep-alive, no
//!   middleware; per-request work on a cache hit is a base64 decode, a DER parse,
//!   two hash lookups and a handful of headers.
//! - **Metrics** ([`metrics`]): Prometheus text at `/metrics`, prefix `chop_`.
//!
//! ## Non-goals
//! - HTTP/2, TLS
//!   (OCSP and CRLs are signed objects served over plain HTTP, RFC 5019 §5), several
//!   CAs per process, request signature checking (RFC 5019 §2.1.1: requests are
//!   unsigned).
//! - Deciding status: the feeder states facts (the controller has already applied
//!   the revocation rules of [`ca::revocation::MemoryIndex`]); the responder never
//!   merges or overrides them.

pub mod budget;
pub mod cache;
pub mod crl_check;
pub mod feeder;
#[doc(hidden)]
pub mod fixture;
pub mod http;
pub mod kube_feeder;
pub mod metrics;
pub mod register_source;
pub mod state;

pub use feeder::{DirFeeder, Feeder};
pub use http::{App, ServerConfig, serve};
pub use kube_feeder::KubeFeeder;
pub use register_source::{RegisterConfig, RegisterStatuses};
pub use state::{CaMaterial, CertificateStore, StateHandle, StatusTable};

/// Everything that can go wrong in the responder library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A socket operation failed.
    #[error("network: {0}")]
    Net(#[from] std::io::Error),
    /// An input (PEM, DER, JSON, key) is not what it should be.
    #[error("{what}: {detail}")]
    Invalid {
        /// What was being read.
        what: String,
        /// Why it was rejected.
        detail: String,
    },
    /// The CA core refused something (e.g. the responder certificate is not
    /// issued by the CA).
    #[error(transparent)]
    Ca(#[from] ca::Error),
}

impl Error {
    pub(crate) fn invalid(what: impl Into<String>, detail: impl ToString) -> Self {
        Error::Invalid {
            what: what.into(),
            detail: detail.to_string(),
        }
    }

    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
