//! The one error type of the `ca` crate.
//!
//! Every variant names the problem precisely enough that a caller (the operator
//! writing a status condition, the responder writing an HTTP answer) can show it to a
//! user as is. Variants never carry secret material (PINs, private keys, shares).
//! [`Error::reason`] gives a stable PascalCase label for metrics, condition reasons
//! and Events.

use std::fmt;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the CA core.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // ----- signer (HSM and software keys) -----
    /// The PKCS#11 module could not be loaded or initialised.
    #[error("cannot load PKCS#11 module {module}: {detail}")]
    ModuleLoad {
        /// Path of the module.
        module: String,
        /// What the loader or `C_Initialize` said.
        detail: String,
    },
    /// No token with the requested label is present.
    #[error("no PKCS#11 token labelled {label:?} is present")]
    TokenNotFound {
        /// Token label looked for.
        label: String,
    },
    /// The token rejected the PIN.
    #[error("the PIN for token {label:?} was rejected")]
    PinIncorrect {
        /// Token label.
        label: String,
    },
    /// The token's PIN is locked after too many failures (§6.4.2).
    #[error("the PIN for token {label:?} is locked")]
    PinLocked {
        /// Token label.
        label: String,
    },
    /// No private key with the given label/id exists on the token.
    #[error("no private key {key:?} on token {label:?}")]
    KeyNotFound {
        /// Token label.
        label: String,
        /// Key label or id (hex) looked for.
        key: String,
    },
    /// A key with that label already exists (generation never overwrites).
    #[error("a key {key:?} already exists on token {label:?}")]
    KeyExists {
        /// Token label.
        label: String,
        /// Key label.
        key: String,
    },
    /// The token went away (removed, module crashed, session closed) mid-operation.
    #[error("token {label:?} is no longer available: {detail}")]
    TokenGone {
        /// Token label.
        label: String,
        /// What PKCS#11 said.
        detail: String,
    },
    /// A token with that label already exists (token initialisation never
    /// re-initialises, which would destroy its keys).
    #[error("a PKCS#11 token labelled {label:?} already exists")]
    TokenExists {
        /// Token label.
        label: String,
    },
    /// Any other PKCS#11 failure.
    #[error("PKCS#11 {operation} failed: {detail}")]
    Pkcs11 {
        /// The operation (e.g. `C_Sign`).
        operation: &'static str,
        /// What PKCS#11 said.
        detail: String,
    },
    /// A software-key operation failed.
    #[error("software key operation failed: {0}")]
    SoftwareKey(String),
    /// A signature produced by the CA did not verify with the CA's public key.
    #[error("signature check after signing failed: {0}")]
    SignatureCheck(String),

    // ----- requests, keys, names -----
    /// A PKCS#10 request or SPKI could not be parsed.
    #[error("malformed {what}: {detail}")]
    Malformed {
        /// What was being parsed (e.g. `certificate request`).
        what: &'static str,
        /// Parser detail.
        detail: String,
    },
    /// The CSR's self-signature does not verify (no proof of possession).
    #[error("the certificate request's signature does not verify (no proof of possession)")]
    CsrSignatureInvalid,
    /// A key or signature algorithm that chop does not accept.
    #[error("unsupported algorithm: {0}")]
    UnsupportedAlgorithm(String),
    /// A key weaker than the policy allows.
    #[error("key too weak: {found}, policy requires {required}")]
    WeakKey {
        /// What the key is (e.g. `RSA 1024 bits`).
        found: String,
        /// What the policy requires.
        required: String,
    },
    /// An RSA public exponent other than 65537 ([`crate::goodkey::RSA_EXPONENT`]).
    #[error("weak RSA key: public exponent {exponent}, chop accepts only 65537")]
    WeakKeyExponent {
        /// The exponent found (decimal; its size when above 64 bits).
        exponent: String,
    },
    /// An RSA modulus with a prime factor below 752 (even included).
    #[error(
        "weak RSA key: the modulus is divisible by {prime} (no prime factor below 752 is allowed)"
    )]
    WeakKeySmallFactor {
        /// The smallest such prime factor.
        prime: u32,
    },
    /// An RSA modulus whose primes are so close that Fermat's method factors it.
    #[error(
        "weak RSA key: Fermat's method factors the modulus within {rounds} rounds (its two primes are too close together)"
    )]
    WeakKeyFermat {
        /// The rounds run.
        rounds: u32,
    },
    /// An RSA modulus with the ROCA fingerprint (CVE-2017-15361).
    #[error(
        "weak RSA key: the modulus has the ROCA fingerprint (CVE-2017-15361, Infineon RSALib): its private key can be computed; generate a new key on an unaffected device"
    )]
    WeakKeyRoca,
    /// An EC public key that is not a valid point of its curve.
    #[error("invalid EC public key on {curve}: {detail}")]
    InvalidEcPoint {
        /// The curve (e.g. `P521`).
        curve: String,
        /// What is wrong with the point.
        detail: String,
    },
    /// The profile does not allow this kind of request.
    #[error("profile {profile}: {detail}")]
    ProfileViolation {
        /// The profile name.
        profile: String,
        /// What is not allowed.
        detail: String,
    },
    /// An invalid subject name or attribute.
    #[error("invalid subject: {0}")]
    InvalidSubject(String),
    /// Validity that cannot be honoured.
    #[error("invalid validity: {0}")]
    InvalidValidity(String),
    /// Information that was not verified may not be put in a certificate (CPS
    /// §3.2.4), e.g. an e-mail address without `emailVerified`.
    #[error("unverified information refused: {0}")]
    Unverified(String),

    // ----- issuance -----
    /// The pre-issuance lint found problems; nothing was signed.
    #[error("lint refused the certificate: {}", .0.join("; "))]
    Lint(Vec<String>),
    /// The issuing CA's certificate, key or settings cannot issue (e.g. the signer's
    /// key is not the certificate's, no subjectKeyIdentifier, a bad URL).
    #[error("issuer configuration: {0}")]
    IssuerConfig(String),

    // ----- CRL / OCSP -----
    /// CRL parameters outside policy.
    #[error("invalid CRL parameters: {0}")]
    CrlPolicy(String),
    /// An OCSP request that cannot be parsed (`malformedRequest`).
    #[error("malformed OCSP request: {0}")]
    OcspMalformed(String),
    /// A revocation the index refuses (unknown reason name, `removeFromCRL`,
    /// resuming a revoked certificate).
    #[error("invalid revocation: {0}")]
    InvalidRevocation(String),
    /// The OCSP responder's certificates or key do not fit together (wrong issuer,
    /// no id-kp-OCSPSigning, key mismatch).
    #[error("OCSP responder misconfigured: {0}")]
    OcspResponderConfig(String),

    // ----- key ceremony (backup and restore) -----
    /// Ceremony parameters that cannot work (threshold, custodians, backup id).
    #[error("invalid key ceremony: {0}")]
    CeremonyInvalid(String),
    /// The key was generated without backup (not CKA_EXTRACTABLE), so it cannot be
    /// wrapped for a backup.
    #[error(
        "key {key:?} on token {label:?} was generated without backup (not CKA_EXTRACTABLE) and can never leave the token; generate the CA key in a key ceremony to back it up"
    )]
    KeyNotExtractable {
        /// Token label.
        label: String,
        /// Key label.
        key: String,
    },
    /// A custodian's certificate cannot receive a share.
    #[error("custodian {custodian:?}: certificate unusable: {detail}")]
    CustodianCertificate {
        /// Custodian name.
        custodian: String,
        /// What is wrong with the certificate.
        detail: String,
    },
    /// Fewer distinct valid shares than the backup's threshold.
    #[error("too few shares: {have} of the {need} needed to restore")]
    SharesTooFew {
        /// Valid distinct shares submitted.
        have: usize,
        /// The backup's threshold.
        need: u8,
    },
    /// A submitted share is not a CMS envelope the recipient key decrypts.
    #[error("the share submitted by {from:?} cannot be decrypted with the restore key: {detail}")]
    ShareUndecryptable {
        /// The submitting user.
        from: String,
        /// Why (never share content).
        detail: String,
    },
    /// A submitted share belongs to another backup.
    #[error(
        "the share submitted by {from:?} belongs to backup {found:?}, not to backup {expected:?}"
    )]
    ShareFromOtherBackup {
        /// The submitting user.
        from: String,
        /// The backup id in the share.
        found: String,
        /// The backup being restored.
        expected: String,
    },
    /// A share whose fingerprint is not the one the backup published for its index.
    #[error(
        "share {index} submitted by {from:?} was altered: its SHA-256 fingerprint is not the one the backup published for index {index}"
    )]
    ShareAltered {
        /// Share index.
        index: u8,
        /// The submitting user.
        from: String,
    },
    /// Two submitted shares have the same index.
    #[error("share {index} was submitted twice (by {first:?} and by {from:?})")]
    ShareDuplicate {
        /// Share index.
        index: u8,
        /// Who submitted it first.
        first: String,
        /// Who submitted it again.
        from: String,
    },
    /// The token refused to unwrap the key (wrong key-encryption key or an altered
    /// wrapped key).
    #[error("the wrapped key does not unwrap: {detail}")]
    KeyUnwrap {
        /// What PKCS#11 said.
        detail: String,
    },
    /// The restored private key does not belong to the backup's public key.
    #[error("the restored key does not match the backup's public key; nothing was stored")]
    RestoredKeyMismatch,

    // ----- encoding -----
    /// DER encoding or decoding failed.
    #[error("DER: {0}")]
    Der(#[from] der::Error),
}

impl Error {
    /// A stable PascalCase label for this error: used as condition reason, Event
    /// reason and metric label value.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::ModuleLoad { .. } => "HsmModuleLoad",
            Error::TokenNotFound { .. } => "HsmTokenNotFound",
            Error::PinIncorrect { .. } => "HsmPinIncorrect",
            Error::PinLocked { .. } => "HsmPinLocked",
            Error::KeyNotFound { .. } => "HsmKeyNotFound",
            Error::KeyExists { .. } => "HsmKeyExists",
            Error::TokenGone { .. } => "HsmUnavailable",
            Error::TokenExists { .. } => "HsmTokenExists",
            Error::Pkcs11 { .. } => "HsmError",
            Error::SoftwareKey(_) => "SoftwareKeyError",
            Error::SignatureCheck(_) => "SignatureCheckFailed",
            Error::Malformed { .. } => "Malformed",
            Error::CsrSignatureInvalid => "CsrSignatureInvalid",
            Error::UnsupportedAlgorithm(_) => "UnsupportedAlgorithm",
            Error::WeakKey { .. } => "WeakKey",
            Error::WeakKeyExponent { .. } => "WeakKeyExponent",
            Error::WeakKeySmallFactor { .. } => "WeakKeySmallFactor",
            Error::WeakKeyFermat { .. } => "WeakKeyFermat",
            Error::WeakKeyRoca => "WeakKeyROCA",
            Error::InvalidEcPoint { .. } => "InvalidECPoint",
            Error::ProfileViolation { .. } => "ProfileViolation",
            Error::InvalidSubject(_) => "InvalidSubject",
            Error::InvalidValidity(_) => "InvalidValidity",
            Error::Unverified(_) => "UnverifiedInformation",
            Error::Lint(_) => "LintFailed",
            Error::IssuerConfig(_) => "IssuerConfig",
            Error::CrlPolicy(_) => "CrlPolicy",
            Error::OcspMalformed(_) => "OcspMalformed",
            Error::InvalidRevocation(_) => "InvalidRevocation",
            Error::OcspResponderConfig(_) => "OcspResponderConfig",
            Error::CeremonyInvalid(_) => "CeremonyInvalid",
            Error::KeyNotExtractable { .. } => "KeyNotExtractable",
            Error::CustodianCertificate { .. } => "CustodianCertificateInvalid",
            Error::SharesTooFew { .. } => "SharesTooFew",
            Error::ShareUndecryptable { .. } => "ShareUndecryptable",
            Error::ShareFromOtherBackup { .. } => "ShareFromOtherBackup",
            Error::ShareAltered { .. } => "ShareAltered",
            Error::ShareDuplicate { .. } => "ShareDuplicate",
            Error::KeyUnwrap { .. } => "KeyUnwrapFailed",
            Error::RestoredKeyMismatch => "RestoredKeyMismatch",
            Error::Der(_) => "EncodingError",
        }
    }

    /// Whether retrying later may succeed (HSM temporarily gone) as opposed to a
    /// permanent problem with the input.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::TokenGone { .. } | Error::Pkcs11 { .. } | Error::ModuleLoad { .. }
        )
    }
}

/// A helper to name a thing in errors without printing its value.
pub(crate) struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}
