//! [`Pkcs11Signer`]: a [`Signer`] over one private key in a token, with a pool of
//! logged-in sessions.

use std::fmt;
use std::sync::{Arc, Condvar, Mutex};

use cryptoki::mechanism::Mechanism;
use cryptoki::object::ObjectHandle;
use cryptoki::session::Session;
use spki::SubjectPublicKeyInfoOwned;

use super::{KeyRef, TokenInner, encoding, is_recoverable, lock, map_ck};
use crate::error::{Error, Result};
use crate::signer::{KeySpec, SignatureAlgorithm, Signer};

/// Sessions a signer keeps by default: enough for the issuance path on a few cores
/// without hogging an HSM's session limit.
const DEFAULT_MAX_SESSIONS: usize = 8;

/// A logged-in session with the key's handle, found once when the session was
/// opened (no C_FindObjects per signature).
struct Pooled {
    session: Session,
    key: ObjectHandle,
}

/// Idle sessions and the number that exist (idle + checked out).
struct Pool {
    idle: Vec<Pooled>,
    total: usize,
}

/// A private key in a PKCS#11 token, usable from many threads at once.
///
/// Each [`sign`](Signer::sign) checks out a logged-in session from a small pool
/// (a PKCS#11 session runs one operation at a time; cryptoki's `Session` is not
/// `Sync`), making
/// a new one when none is idle and fewer than the maximum exist, otherwise waiting.
/// Per signature it costs one C_SignInit + C_Sign (cryptoki asks C_Sign for the
/// length first) and, for ECDSA, a host-side hash.
///
/// `Debug` shows the token and key labels and the algorithm.
pub struct Pkcs11Signer {
    token: Arc<TokenInner>,
    key: KeyRef,
    spec: KeySpec,
    algorithm: SignatureAlgorithm,
    public_key: SubjectPublicKeyInfoOwned,
    pool: Mutex<Pool>,
    returned: Condvar,
    max_sessions: usize,
}

impl fmt::Debug for Pkcs11Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Signer")
            .field("token", &self.token.label)
            .field("key", &self.key)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl Pkcs11Signer {
    /// Open the module at `module_path` (once per process), find the token labelled
    /// `token_label`, log in with `pin` and make a signer for `key` with the key's
    /// default algorithm. The one-call form the controller uses.
    pub fn open(
        module_path: impl AsRef<std::path::Path>,
        token_label: &str,
        pin: crate::signer::Pin,
        key: &KeyRef,
    ) -> Result<Pkcs11Signer> {
        super::Token::open_path(module_path, token_label, pin)?.signer(key)
    }

    /// Make a signer: one session is opened, the key found and its public key read.
    pub(super) fn new(
        token: Arc<TokenInner>,
        key: KeyRef,
        algorithm: Option<SignatureAlgorithm>,
    ) -> Result<Self> {
        let session = token.session()?;
        let handle = token.find_private_key(&session, &key)?;
        let info = token.key_info(&session, handle)?;
        let public_key = token.public_key(&session, handle, &info, &key)?;
        let algorithm = algorithm.unwrap_or_else(|| info.spec.default_signature_algorithm());
        if !algorithm.fits(info.spec) {
            return Err(Error::UnsupportedAlgorithm(format!(
                "{algorithm:?} cannot be used with the {} key {key} on token {:?}",
                info.spec, token.label
            )));
        }
        Ok(Pkcs11Signer {
            token,
            key,
            spec: info.spec,
            algorithm,
            public_key,
            pool: Mutex::new(Pool {
                idle: vec![Pooled {
                    session,
                    key: handle,
                }],
                total: 1,
            }),
            returned: Condvar::new(),
            max_sessions: DEFAULT_MAX_SESSIONS,
        })
    }

    /// Use at most `n` (≥ 1) sessions at once (default 8).
    pub fn with_max_sessions(mut self, n: usize) -> Self {
        self.max_sessions = n.max(1);
        self
    }

    /// The key's type and size.
    pub fn spec(&self) -> KeySpec {
        self.spec
    }

    /// How the key is named on the token.
    pub fn key(&self) -> &KeyRef {
        &self.key
    }

    /// The token label.
    pub fn token_label(&self) -> &str {
        &self.token.label
    }

    /// A fresh logged-in session with the key found in it.
    fn open_session(&self) -> Result<Pooled> {
        let session = self.token.session()?;
        let key = self.token.find_private_key(&session, &self.key)?;
        Ok(Pooled { session, key })
    }

    /// Take an idle session, or open one if under the limit, or wait for one.
    fn checkout(&self) -> Result<Pooled> {
        let mut pool = lock(&self.pool);
        loop {
            if let Some(p) = pool.idle.pop() {
                return Ok(p);
            }
            if pool.total < self.max_sessions {
                pool.total += 1;
                drop(pool);
                return self.open_session().inspect_err(|_| self.forget(1));
            }
            pool = self
                .returned
                .wait(pool)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// Put a healthy session back.
    fn checkin(&self, p: Pooled) {
        lock(&self.pool).idle.push(p);
        self.returned.notify_one();
    }

    /// Account for `n` sessions that were closed.
    fn forget(&self, n: usize) {
        let mut pool = lock(&self.pool);
        pool.total = pool.total.saturating_sub(n);
        drop(pool);
        self.returned.notify_all();
    }

    /// The PKCS#11 mechanism and the data to give C_Sign for `message`.
    ///
    /// RSA: CKM_SHA{256,384,512}_RSA_PKCS hash and build the PKCS#1 v1.5 DigestInfo
    /// in the token (PKCS#11 Mechanisms v2.40, "PKCS #1 v1.5 RSA signature with … SHA-256,
    /// SHA-384, SHA-512"). ECDSA: hashed here and signed with raw
    /// CKM_ECDSA (Mechanisms v2.40 "ECDSA without hashing": the data signed is the hash), because many tokens,
    /// SoftHSM2 2.6 among them, offer no CKM_ECDSA_SHA256/384/512; the token truncates
    /// a hash longer than the group order as X9.62 requires.
    fn prepare(&self, message: &[u8]) -> (Mechanism<'static>, Vec<u8>) {
        use aws_lc_rs::digest::{SHA256, SHA384, SHA512, digest};
        let hashed = |alg| digest(alg, message).as_ref().to_vec();
        match self.algorithm {
            SignatureAlgorithm::RsaSha256 => (Mechanism::Sha256RsaPkcs, message.to_vec()),
            SignatureAlgorithm::RsaSha384 => (Mechanism::Sha384RsaPkcs, message.to_vec()),
            SignatureAlgorithm::RsaSha512 => (Mechanism::Sha512RsaPkcs, message.to_vec()),
            SignatureAlgorithm::EcdsaSha256 => (Mechanism::Ecdsa, hashed(&SHA256)),
            SignatureAlgorithm::EcdsaSha384 => (Mechanism::Ecdsa, hashed(&SHA384)),
            SignatureAlgorithm::EcdsaSha512 => (Mechanism::Ecdsa, hashed(&SHA512)),
        }
    }

    /// The raw token output in X.509 form.
    fn finish(&self, raw: Vec<u8>) -> Result<Vec<u8>> {
        match self.spec {
            KeySpec::Rsa { .. } => Ok(raw),
            KeySpec::Ec(curve) => encoding::ecdsa_raw_to_der(curve, &raw),
        }
    }

    /// Sign on a fresh session after `cause` (a failure that a new session may
    /// cure): the idle sessions are dropped (they are most likely dead too), the slot
    /// is looked up again by label (an HSM may renumber slots when it restarts), and
    /// a new session logs in and finds the key. Whatever still fails for want of the
    /// token is [`Error::TokenGone`]; a wrong PIN or a destroyed key keep their own
    /// errors.
    fn recover(&self, cause: &str, data: &[u8], mechanism: &Mechanism) -> Result<Vec<u8>> {
        let gone = |detail: String| Error::TokenGone {
            label: self.token.label.clone(),
            detail,
        };
        let stale = std::mem::take(&mut lock(&self.pool).idle);
        let n = stale.len();
        drop(stale);
        self.forget(n);
        self.token.relocate(cause)?;
        lock(&self.pool).total += 1;
        let fresh = match self.open_session() {
            Ok(fresh) => fresh,
            Err(e) => {
                self.forget(1);
                return Err(match e {
                    Error::Pkcs11 { detail, .. } | Error::TokenGone { detail, .. } => {
                        gone(format!("cannot re-open the token after {cause}: {detail}"))
                    }
                    other => other,
                });
            }
        };
        match fresh.session.sign(mechanism, fresh.key, data) {
            Ok(raw) => {
                self.checkin(fresh);
                Ok(raw)
            }
            Err(e) => {
                drop(fresh);
                self.forget(1);
                Err(if is_recoverable(&e) {
                    gone(format!(
                        "{} again on a fresh session (first: {cause})",
                        super::ck_detail(&e)
                    ))
                } else {
                    map_ck(e, "C_Sign", &self.token.label, Some(&self.key))
                })
            }
        }
    }
}

impl Signer for Pkcs11Signer {
    fn algorithm(&self) -> SignatureAlgorithm {
        self.algorithm
    }

    fn public_key(&self) -> &SubjectPublicKeyInfoOwned {
        &self.public_key
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        let (mechanism, data) = self.prepare(message);
        let pooled = match self.checkout() {
            Ok(p) => p,
            // No session could be opened on the slot we knew: re-find the token.
            Err(Error::Pkcs11 { detail, .. } | Error::TokenGone { detail, .. }) => {
                let raw = self.recover(&detail, &data, &mechanism)?;
                return self.finish(raw);
            }
            Err(other) => return Err(other),
        };
        let raw = match pooled.session.sign(&mechanism, pooled.key, &data) {
            Ok(raw) => {
                self.checkin(pooled);
                raw
            }
            Err(e) if is_recoverable(&e) => {
                drop(pooled);
                self.forget(1);
                self.recover(&super::ck_detail(&e), &data, &mechanism)?
            }
            Err(e) => {
                // The session itself is fine (e.g. CKR_DATA_LEN_RANGE): keep it.
                self.checkin(pooled);
                return Err(map_ck(e, "C_Sign", &self.token.label, Some(&self.key)));
            }
        };
        self.finish(raw)
    }
}

/// Compile-time check that the signer can be shared between threads.
const _: fn() = || {
    fn shared<T: Send + Sync>() {}
    shared::<Pkcs11Signer>();
    shared::<super::Token>();
    shared::<super::Pkcs11Module>();
};
