//! The register's contract: what a CA's store of certificates must guarantee,
//! whatever holds it (issue 12).
//!
//! Guarantees every implementation gives, checked by the contract tests
//! (`register/tests/contract.rs`):
//! - **A serial is reserved before the HSM signs**, bound to one request: the
//!   same request always gets the same serial back (a crash after signing re-signs
//!   that serial), and a serial bound to one request is never given to another.
//! - **One certificate per reservation**: committing the same DER again is a
//!   no-op; committing a different DER under a reserved serial is refused.
//! - **Status changes are conditional**: valid → held → valid, valid/held →
//!   revoked; revoked is final; each change says whether it happened.
//! - **CRL entries come from an indexed query** whose cost follows the number of
//!   entries of the CA (and partition), not the size of the register.
//!
//! Implementations: [`crate::postgres::PgRegister`] (PostgreSQL, for CAs of
//! millions of certificates). The Kubernetes register (IssuedCertificate objects)
//! is chop-controller's today and implements the same rules with conditional
//! writes; moving it behind this trait is the next step of issue 12.

use std::future::Future;
use std::time::SystemTime;

use ca::revocation::{Reason, RevokedEntry};
use ca::serial::Serial;

use crate::Result;

/// What the controller knows when it commits a signed certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewCertificate {
    /// The CA, `namespace/name`.
    pub ca: String,
    /// The serial reserved for `request`.
    pub serial: Serial,
    /// The CertificateRequest, `namespace/name/uid`.
    pub request: String,
    /// The subscriber reference (CPS §9.4), never a national identity number.
    pub subscriber: String,
    /// SHA-256 of the certificate's SubjectPublicKeyInfo.
    pub key_fingerprint: [u8; 32],
    /// notBefore.
    pub not_before: SystemTime,
    /// notAfter.
    pub not_after: SystemTime,
    /// The CRL partition written into the certificate, if CRLs are partitioned.
    pub partition: Option<u32>,
    /// The certificate.
    pub der: Vec<u8>,
}

/// The outcome of a reservation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reservation {
    /// The serial offered is now this request's.
    Reserved,
    /// The request already had a serial (a retry, or a restart after a crash):
    /// use this one.
    Existing(Serial),
    /// The serial offered belongs to another request: draw another.
    Taken,
}

/// The outcome of a commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Commit {
    /// The certificate is now in the register.
    Created,
    /// The same certificate was already there (a retry).
    AlreadyCommitted,
}

/// A change of a certificate's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Revoke (final), at `at`, for `reason`; `invalidity` per RFC 5280 §5.3.2.
    Revoke {
        /// Why.
        reason: Reason,
        /// When the CA revoked it.
        at: SystemTime,
        /// When the key was compromised, if known and different.
        invalidity: Option<SystemTime>,
    },
    /// Put on hold (certificateHold) at `at`.
    Hold {
        /// When.
        at: SystemTime,
    },
    /// Resume a held certificate.
    Resume,
}

/// The state of a certificate in the register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Good.
    Valid,
    /// On hold (certificateHold).
    Held,
    /// Revoked: final.
    Revoked,
}

impl State {
    /// The code stored in the database (0, 1, 2).
    pub fn code(self) -> i16 {
        match self {
            State::Valid => 0,
            State::Held => 1,
            State::Revoked => 2,
        }
    }

    /// From the stored code.
    pub fn from_code(code: i16) -> Option<State> {
        match code {
            0 => Some(State::Valid),
            1 => Some(State::Held),
            2 => Some(State::Revoked),
            _ => None,
        }
    }
}

/// Whether a [`Change`] happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// It happened: the certificate was in `from`.
    Applied {
        /// The state before.
        from: State,
    },
    /// It did not apply to the certificate's current state (e.g. resuming a valid
    /// certificate, holding a revoked one); nothing changed.
    NotApplicable {
        /// The current state.
        current: State,
    },
    /// No certificate with that serial in that CA.
    NotFound,
}

/// A certificate's status as OCSP reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status {
    /// Valid, held or revoked.
    pub state: State,
    /// The revocation or hold, if any.
    pub revoked: Option<(Reason, SystemTime)>,
    /// notAfter.
    pub not_after: SystemTime,
}

/// What the register holds about a certificate (without its DER).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// The CA, `namespace/name`.
    pub ca: String,
    /// The serial.
    pub serial: Serial,
    /// The CertificateRequest, `namespace/name/uid`.
    pub request: String,
    /// The subscriber reference.
    pub subscriber: String,
}

/// A CA's register of certificates.
pub trait Register: Send + Sync {
    /// Reserve `serial` of CA `ca` for `request` (before signing).
    fn reserve(
        &self,
        ca: &str,
        serial: &Serial,
        request: &str,
    ) -> impl Future<Output = Result<Reservation>> + Send;

    /// Commit a signed certificate under its reservation.
    fn commit(&self, cert: &NewCertificate) -> impl Future<Output = Result<Commit>> + Send;

    /// Change a certificate's status, if the change applies to its current state.
    fn change(
        &self,
        ca: &str,
        serial: &Serial,
        change: Change,
    ) -> impl Future<Output = Result<Transition>> + Send;

    /// The status of one certificate (OCSP).
    fn status(
        &self,
        ca: &str,
        serial: &Serial,
    ) -> impl Future<Output = Result<Option<Status>>> + Send;

    /// The CRL entries of CA `ca` (of one partition, or all) whose certificate
    /// has not expired at `now`.
    fn crl_entries(
        &self,
        ca: &str,
        partition: Option<u32>,
        now: SystemTime,
    ) -> impl Future<Output = Result<Vec<RevokedEntry>>> + Send;

    /// Every certificate of the key with this SPKI fingerprint (re-key checks,
    /// revocation of every certificate of a compromised key).
    fn by_key(&self, fingerprint: &[u8; 32]) -> impl Future<Output = Result<Vec<Summary>>> + Send;
}
