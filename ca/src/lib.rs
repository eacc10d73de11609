//! # chop's certification-authority core
//!
//! Everything a certification authority computes, with no Kubernetes and no async
//! runtime: certificate profiles from the MOICA CPS, PKCS#10 parsing and key policy,
//! lint-before-sign issuance, HSM signing over PKCS#11, CRLs and OCSP. The operator,
//! the responder and the CLI all call this crate; they only move bytes between it and
//! the Kubernetes API.
//!
//! ## Design
//! - **RustCrypto 0.2 generation** (`der` 0.7, `x509-cert` 0.2, `x509-ocsp` 0.2) for
//!   ASN.1 types; see `docs/adr/0001-rustcrypto-generation.md`.
//! - **Keys never leave their store.** CA keys sign inside a PKCS#11 token
//!   ([`signer::pkcs11`]); the throwaway lint key and delegated OCSP keys are
//!   aws-lc-rs keys ([`signer::software`]). No private-key operation in the `rsa`
//!   crate (RUSTSEC-2023-0071).
//! - **CA keys leave a token only wrapped, under a quorum.** [`ceremony`] backs a
//!   key up m-of-n to custodians and restores it (design and non-goals there).
//! - **Secrets cannot be printed.** PINs and private keys have redacting `Debug`
//!   and no `Display`.
//!
//! ## Non-goals
//! - Storage. Callers persist serials, revocation records and CRL numbers; this
//!   crate takes them as inputs.
//! - Networking: the OCSP module turns request bytes into response bytes; HTTP is
//!   the responder's job.

pub mod ceremony;
pub mod crl;
pub mod csr;
pub mod error;
pub mod ext;
#[doc(hidden)]
pub mod fuzzing;
pub mod goodkey;
pub mod issue;
pub mod lint;
pub mod name;
pub mod ocsp;
pub mod profile;
pub mod revocation;
pub mod serial;
pub mod signer;
#[cfg(any(test, feature = "softhsm-fixture"))]
pub mod softhsm;
pub mod time;

pub use error::{Error, Result};
