//! PKCS#11 tokens: CA keys generated and used inside an HSM (SoftHSM2 in dev/test).
//!
//! Three layers, each `Send + Sync`:
//!
//! - [`Pkcs11Module`]: a loaded, initialised PKCS#11 library. There is **one per
//!   module path per process** (a process-wide registry): `C_Initialize` may be
//!   called once per process, and every part of chop shares that context
//!   (PKCS#11 Base v2.40, C_Initialize: a second call returns
//!   CKR_CRYPTOKI_ALREADY_INITIALIZED). It is
//!   initialised with `CKF_OS_LOCKING_OK` so the library serialises itself with OS
//!   mutexes when several threads call it, and it is never finalised.
//! - [`Token`]: a token found **by label** (slot ids are not stable: SoftHSM2 derives
//!   them from the token serial and an HSM may renumber slots after a restart) and
//!   logged in with a [`Pin`]. It creates, lists, finds and destroys keys, and
//!   initialises new tokens ([`Pkcs11Module::init_token`], for tests, the demo and
//!   key ceremonies).
//! - [`Pkcs11Signer`]: a [`Signer`](crate::signer::Signer) over one private key,
//!   holding a small pool of logged-in sessions so several threads sign at once.
//!
//! ## Errors
//! Each failure has its own variant, carrying the token label (and the key label or
//! id) but never the PIN: [`Error::ModuleLoad`] (names the module path),
//! [`Error::TokenNotFound`], [`Error::PinIncorrect`], [`Error::PinLocked`],
//! [`Error::KeyNotFound`], [`Error::KeyExists`], [`Error::TokenExists`],
//! [`Error::TokenGone`], and [`Error::Pkcs11`] for everything else, whose detail is
//! the PKCS#11 function and `CKR_` code.
//!
//! ## Login state is per process
//! PKCS#11 Base v2.40, C_Login: "When the user type is either CKU_SO or CKU_USER, if
//! the call succeeds, each of the application's sessions will enter either the
//! 'R/W SO Functions' state, … or the 'R/W User Functions' state". Login is shared by
//! all sessions of a token in the process and ends when its last session closes;
//! a second C_Login returns CKR_USER_ALREADY_LOGGED_IN *without checking the PIN*.
//! So that a wrong PIN is still refused while another [`Token`] of the same token is
//! logged in, the module remembers the PIN of its last successful login per token
//! and compares (constant time) in that case.
//!
//! ## When the token goes away
//! CKR_DEVICE_REMOVED, CKR_TOKEN_NOT_PRESENT, CKR_SESSION_HANDLE_INVALID,
//! CKR_SESSION_CLOSED, CKR_DEVICE_ERROR and CKR_CRYPTOKI_NOT_INITIALIZED mean the
//! token (or the session to it) is gone; CKR_USER_NOT_LOGGED_IN,
//! CKR_OBJECT_HANDLE_INVALID and CKR_KEY_HANDLE_INVALID mean the login or the key
//! handle was lost (another part of the process logged out, which also invalidates
//! every private-object handle in SoftHSM2). On any of them a signature is retried
//! once on a fresh session: the slot is looked up again by label, the session
//! logged in and the key found again. If that fails the caller gets
//! [`Error::TokenGone`] (token no longer present), [`Error::KeyNotFound`] (key
//! destroyed) or the precise login error, so a recovered HSM works again without a
//! restart and a dead one fails clearly. SoftHSM2 itself never re-attaches a token
//! whose directory disappeared while the process ran; real network HSMs do.
//!
//! ## Secrets
//! A [`Token`] (and its signers) keeps its [`Pin`], zeroised on drop, to log in new
//! pool sessions and after recovery. PINs are only ever [`Pin`] values: `Debug` of every type here shows labels and
//! the module path only, errors carry labels and `CKR_` codes only, and nothing here
//! logs. Private keys are generated with CKA_SENSITIVE and without CKA_EXTRACTABLE,
//! so they never leave the token; a key generated for a key ceremony
//! ([`Backup::Allowed`]) is CKA_EXTRACTABLE too, so it leaves the token only
//! wrapped (CKA_SENSITIVE forbids reading it in the clear).
//!
//! ## Non-goals
//! Key import other than the ceremony's unwrap (`ceremony.rs` here, used by
//! [`crate::ceremony`]), PSS,
//! EdDSA, token PIN changes, and protected authentication paths (PIN pads).

mod ceremony;
mod encoding;
mod oaep;
mod signer;

pub use ceremony::Backup;
pub use signer::Pkcs11Signer;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use spki::SubjectPublicKeyInfoOwned;

use crate::error::{Error, Result};
use crate::signer::{KeySpec, Pin};

/// Where Debian's `softhsm2` package installs the SoftHSM2 PKCS#11 module.
pub const SOFTHSM2_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// A PKCS#11 library loaded and initialised once for the whole process.
///
/// Obtain it with [`Pkcs11Module::open`]; opening the same path again returns the
/// same `Arc`. `Debug` shows the path.
pub struct Pkcs11Module {
    path: PathBuf,
    ctx: Pkcs11,
    /// Serialises administrative operations (token initialisation, key generation
    /// and destruction) so check-then-create cannot race within the process.
    admin: Mutex<()>,
    /// PIN of the last successful user login per token label (see the module doc:
    /// login state is per process).
    logins: Mutex<HashMap<String, Pin>>,
}

impl fmt::Debug for Pkcs11Module {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Module")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Lock a mutex, recovering the data if another thread panicked while holding it
/// (everything guarded here stays consistent across a panic).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Pkcs11Module {
    /// Load and initialise the PKCS#11 library at `path`, or return the instance this
    /// process already has for it.
    ///
    /// Errors: [`Error::ModuleLoad`] naming the path when the file is missing, is not
    /// a PKCS#11 library, or `C_Initialize` fails.
    pub fn open(path: impl AsRef<Path>) -> Result<Arc<Pkcs11Module>> {
        static REGISTRY: OnceLock<Mutex<HashMap<PathBuf, Arc<Pkcs11Module>>>> = OnceLock::new();
        let given = path.as_ref();
        let load_err = |detail: String| Error::ModuleLoad {
            module: given.display().to_string(),
            detail,
        };
        // The same library through a symlink is the same library (and the same
        // C_Initialize state), so key the registry by the canonical path.
        let canonical = given.canonicalize().map_err(|e| load_err(e.to_string()))?;
        let mut registry = lock(REGISTRY.get_or_init(Default::default));
        if let Some(module) = registry.get(&canonical) {
            return Ok(Arc::clone(module));
        }
        let ctx = Pkcs11::new(&canonical).map_err(|e| load_err(e.to_string()))?;
        match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            // Already initialised by other code in this process: the library state is
            // shared, which is what we want.
            Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(e) => return Err(load_err(ck_detail(&e))),
        }
        let module = Arc::new(Pkcs11Module {
            path: given.to_path_buf(),
            ctx,
            admin: Mutex::new(()),
            logins: Mutex::new(HashMap::new()),
        });
        registry.insert(canonical, Arc::clone(&module));
        Ok(module)
    }

    /// The module path as given to [`Pkcs11Module::open`].
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The underlying cryptoki context, for operations this module does not wrap
    /// (tests use it to simulate failures). Do not finalise it.
    pub fn context(&self) -> &Pkcs11 {
        &self.ctx
    }

    /// Labels of all initialised tokens present (padding trimmed).
    pub fn token_labels(&self) -> Result<Vec<String>> {
        let slots = self
            .ctx
            .get_slots_with_token()
            .map_err(|e| map_ck(e, "C_GetSlotList", "", None))?;
        Ok(slots
            .into_iter()
            .filter_map(|s| self.ctx.get_token_info(s).ok())
            .filter(|i| i.token_initialized())
            .map(|i| i.label().trim_end().to_string())
            .collect())
    }

    /// The slot holding the initialised token labelled `label`, if any.
    ///
    /// Token labels are 32 octets padded with blanks (PKCS#11 Base v2.40,
    /// CK_TOKEN_INFO `label`); the padding is trimmed before comparing. Slots whose
    /// token cannot be queried (SoftHSM2 answers CKR_GENERAL_ERROR for a token whose
    /// directory vanished) are skipped rather than hiding the others.
    fn find_slot(&self, label: &str) -> Result<Option<Slot>> {
        let slots = self
            .ctx
            .get_slots_with_token()
            .map_err(|e| map_ck(e, "C_GetSlotList", label, None))?;
        let mut found = None;
        for slot in slots {
            let Ok(info) = self.ctx.get_token_info(slot) else {
                continue;
            };
            if info.token_initialized() && info.label().trim_end() == label {
                if found.is_some() {
                    return Err(Error::Pkcs11 {
                        operation: "C_GetTokenInfo",
                        detail: format!("more than one token is labelled {label:?}"),
                    });
                }
                found = Some(slot);
            }
        }
        Ok(found)
    }

    /// Initialise a new token labelled `label` on the first free slot, with SO PIN
    /// `so_pin` and user PIN `user_pin` (C_InitToken, then C_InitPIN as SO).
    ///
    /// Refuses with [`Error::TokenExists`] if a token with that label is present: a
    /// token is never re-initialised (that would destroy its keys). SoftHSM2 always
    /// offers one uninitialised slot and adds a new one after each C_InitToken,
    /// without re-initialising the library. Labels longer than 32 octets are
    /// refused (PKCS#11 would silently truncate them).
    pub fn init_token(&self, label: &str, so_pin: &Pin, user_pin: &Pin) -> Result<()> {
        if label.is_empty() || label.len() > 32 || label.trim_end() != label {
            return Err(Error::Pkcs11 {
                operation: "C_InitToken",
                detail: format!(
                    "token label {label:?} must be 1 to 32 octets without trailing blanks"
                ),
            });
        }
        let _admin = lock(&self.admin);
        if self.find_slot(label)?.is_some() {
            return Err(Error::TokenExists {
                label: label.to_string(),
            });
        }
        let slots = self
            .ctx
            .get_slots_with_token()
            .map_err(|e| map_ck(e, "C_GetSlotList", label, None))?;
        let free = slots
            .into_iter()
            .find(|s| {
                self.ctx
                    .get_token_info(*s)
                    .is_ok_and(|i| !i.token_initialized())
            })
            .ok_or_else(|| Error::Pkcs11 {
                operation: "C_InitToken",
                detail: format!("no slot with an uninitialised token for {label:?}"),
            })?;
        self.ctx
            .init_token(free, &auth_pin(so_pin), label)
            .map_err(|e| map_ck(e, "C_InitToken", label, None))?;
        let session = self
            .ctx
            .open_rw_session(free)
            .map_err(|e| map_ck(e, "C_OpenSession", label, None))?;
        session
            .login(UserType::So, Some(&auth_pin(so_pin)))
            .map_err(|e| map_ck(e, "C_Login", label, None))?;
        session
            .init_pin(&auth_pin(user_pin))
            .map_err(|e| map_ck(e, "C_InitPIN", label, None))?;
        session
            .logout()
            .map_err(|e| map_ck(e, "C_Logout", label, None))?;
        Ok(())
    }
}

/// A cryptoki PIN from a [`Pin`] (a zeroising copy).
fn auth_pin(pin: &Pin) -> AuthPin {
    AuthPin::from(pin.expose().to_string())
}

/// `C_Sign returned CKR_PIN_INCORRECT`-style detail for a cryptoki error; never
/// contains a PIN (cryptoki errors carry none).
fn ck_detail(e: &CkError) -> String {
    match e {
        CkError::Pkcs11(rv, function) => {
            format!("C_{function:?} returned {}", ckr_name(*rv))
        }
        other => other.to_string(),
    }
}

/// `CKR_PIN_INCORRECT` from `RvError::PinIncorrect`.
fn ckr_name(rv: RvError) -> String {
    let camel = format!("{rv:?}");
    let mut out = String::from("CKR");
    for c in camel.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// Whether the return value means the token, or our session to it, is gone.
fn is_gone(rv: RvError) -> bool {
    matches!(
        rv,
        RvError::DeviceRemoved
            | RvError::TokenNotPresent
            | RvError::SessionHandleInvalid
            | RvError::SessionClosed
            | RvError::DeviceError
            | RvError::CryptokiNotInitialized
    )
}

/// Whether an error may go away on a fresh, logged-in session with the key found
/// again (see "When the token goes away" in the module doc).
fn is_recoverable(e: &CkError) -> bool {
    match e {
        CkError::Pkcs11(rv, _) => {
            is_gone(*rv)
                || matches!(
                    rv,
                    RvError::UserNotLoggedIn
                        | RvError::ObjectHandleInvalid
                        | RvError::KeyHandleInvalid
                )
        }
        _ => false,
    }
}

/// Map a cryptoki error precisely onto the crate error for token `label` (and key
/// `key`, for errors that concern it).
fn map_ck(e: CkError, operation: &'static str, label: &str, key: Option<&KeyRef>) -> Error {
    let detail = ck_detail(&e);
    match e {
        CkError::Pkcs11(RvError::PinIncorrect, _) => Error::PinIncorrect {
            label: label.to_string(),
        },
        CkError::Pkcs11(RvError::PinLocked, _) => Error::PinLocked {
            label: label.to_string(),
        },
        CkError::Pkcs11(rv, _) if is_gone(rv) => Error::TokenGone {
            label: label.to_string(),
            detail,
        },
        CkError::Pkcs11(RvError::KeyHandleInvalid | RvError::ObjectHandleInvalid, _)
            if key.is_some() =>
        {
            Error::KeyNotFound {
                label: label.to_string(),
                key: key.map(ToString::to_string).unwrap_or_default(),
            }
        }
        _ => Error::Pkcs11 { operation, detail },
    }
}

/// How a key is named on a token: by CKA_LABEL or by CKA_ID.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum KeyRef {
    /// CKA_LABEL (UTF-8).
    Label(String),
    /// CKA_ID (arbitrary octets; shown as hex).
    Id(Vec<u8>),
}

impl KeyRef {
    /// A key by label.
    pub fn label(label: impl Into<String>) -> KeyRef {
        KeyRef::Label(label.into())
    }

    /// A key by id given as hex (as `pkcs11-tool --id` takes it).
    pub fn id_hex(hex: &str) -> Result<KeyRef> {
        let bad = || Error::Malformed {
            what: "key id",
            detail: format!("{hex:?} is not an even number of hex digits"),
        };
        if hex.is_empty() || !hex.len().is_multiple_of(2) {
            return Err(bad());
        }
        let id = (0..hex.len())
            .step_by(2)
            .map(|i| {
                hex.get(i..i + 2)
                    .and_then(|pair| u8::from_str_radix(pair, 16).ok())
            })
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(bad)?;
        Ok(KeyRef::Id(id))
    }

    /// The search template attribute.
    fn attribute(&self) -> Attribute {
        match self {
            KeyRef::Label(l) => Attribute::Label(l.as_bytes().to_vec()),
            KeyRef::Id(id) => Attribute::Id(id.clone()),
        }
    }
}

/// Lower-case hex of `bytes`.
fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `label` for a label, `id:0a1b…` for an id (as errors show it).
impl fmt::Display for KeyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyRef::Label(l) => f.write_str(l),
            KeyRef::Id(id) => write!(f, "id:{}", to_hex(id)),
        }
    }
}

impl fmt::Debug for KeyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.to_string())
    }
}

/// A private key on a token, as [`Token::list_keys`] and [`Token::find_key`] report it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyInfo {
    /// CKA_LABEL.
    pub label: String,
    /// CKA_ID.
    pub id: Vec<u8>,
    /// Key type and size.
    pub spec: KeySpec,
}

/// State shared by a [`Token`] and the signers made from it.
pub(crate) struct TokenInner {
    module: Arc<Pkcs11Module>,
    label: String,
    pin: Pin,
    /// The slot the token was last found in (looked up again on recovery).
    slot: Mutex<Slot>,
}

impl TokenInner {
    /// Open a read/write session on the token and log the user in.
    ///
    /// `C_Login` answering CKR_USER_ALREADY_LOGGED_IN means another session of this
    /// process is logged in: accepted only if our PIN equals the one that logged in
    /// (see the module doc).
    fn session(&self) -> Result<Session> {
        let slot = *lock(&self.slot);
        let session = self
            .module
            .ctx
            .open_rw_session(slot)
            .map_err(|e| map_ck(e, "C_OpenSession", &self.label, None))?;
        self.login(&session)?;
        Ok(session)
    }

    /// Log `session` in as the user (see [`TokenInner::session`]).
    fn login(&self, session: &Session) -> Result<()> {
        match session.login(UserType::User, Some(&auth_pin(&self.pin))) {
            Ok(()) => {
                lock(&self.module.logins).insert(self.label.clone(), self.pin.clone());
                Ok(())
            }
            Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {
                let logins = lock(&self.module.logins);
                match logins.get(&self.label) {
                    Some(pin)
                        if aws_lc_rs::constant_time::verify_slices_are_equal(
                            pin.expose().as_bytes(),
                            self.pin.expose().as_bytes(),
                        )
                        .is_ok() =>
                    {
                        Ok(())
                    }
                    Some(_) => Err(Error::PinIncorrect {
                        label: self.label.clone(),
                    }),
                    None => Err(Error::Pkcs11 {
                        operation: "C_Login",
                        detail: format!(
                            "token {:?} is logged in by code outside chop; PIN not verified",
                            self.label
                        ),
                    }),
                }
            }
            Err(e) => Err(map_ck(e, "C_Login", &self.label, None)),
        }
    }

    /// Look the token's slot up again by label (after the token went away).
    fn relocate(&self, cause: &str) -> Result<()> {
        match self.module.find_slot(&self.label)? {
            Some(slot) => {
                *lock(&self.slot) = slot;
                Ok(())
            }
            None => Err(Error::TokenGone {
                label: self.label.clone(),
                detail: format!("no slot holds the token any more (after {cause})"),
            }),
        }
    }

    /// The single private key named by `key`.
    fn find_private_key(&self, session: &Session, key: &KeyRef) -> Result<ObjectHandle> {
        let found = session
            .find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY), key.attribute()])
            .map_err(|e| map_ck(e, "C_FindObjects", &self.label, None))?;
        match found.as_slice() {
            [one] => Ok(*one),
            [] => Err(Error::KeyNotFound {
                label: self.label.clone(),
                key: key.to_string(),
            }),
            many => Err(Error::Pkcs11 {
                operation: "C_FindObjects",
                detail: format!(
                    "{} private keys match {key} on token {:?}; refusing to guess",
                    many.len(),
                    self.label
                ),
            }),
        }
    }

    /// The private- and public-key objects named by `key` (not certificates or data
    /// objects that share the label).
    fn find_key_objects(&self, session: &Session, key: &KeyRef) -> Result<Vec<ObjectHandle>> {
        let mut found = Vec::new();
        for class in [ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY] {
            found.extend(
                session
                    .find_objects(&[Attribute::Class(class), key.attribute()])
                    .map_err(|e| map_ck(e, "C_FindObjects", &self.label, None))?,
            );
        }
        Ok(found)
    }

    /// Label, id and spec of the private key `handle`.
    fn key_info(&self, session: &Session, handle: ObjectHandle) -> Result<KeyInfo> {
        let attrs = session
            .get_attributes(
                handle,
                &[
                    AttributeType::Label,
                    AttributeType::Id,
                    AttributeType::KeyType,
                    AttributeType::Modulus,
                    AttributeType::EcParams,
                ],
            )
            .map_err(|e| map_ck(e, "C_GetAttributeValue", &self.label, None))?;
        let mut info = KeyInfo {
            label: String::new(),
            id: Vec::new(),
            spec: KeySpec::Rsa { bits: 0 },
        };
        let mut key_type = None;
        let mut modulus = None;
        let mut params = None;
        for a in attrs {
            match a {
                Attribute::Label(l) => info.label = String::from_utf8_lossy(&l).into_owned(),
                Attribute::Id(id) => info.id = id,
                Attribute::KeyType(t) => key_type = Some(t),
                Attribute::Modulus(m) => modulus = Some(m),
                Attribute::EcParams(p) => params = Some(p),
                _ => {}
            }
        }
        info.spec = match (key_type, modulus, params) {
            (Some(KeyType::RSA), Some(m), _) => KeySpec::Rsa {
                bits: crate::signer::bit_length(&m),
            },
            (Some(KeyType::EC), _, Some(p)) => KeySpec::Ec(encoding::curve_of_ec_params(&p)?),
            (t, _, _) => {
                return Err(Error::UnsupportedAlgorithm(format!(
                    "key {:?} on token {:?} has key type {t:?}",
                    info.label, self.label
                )));
            }
        };
        Ok(info)
    }

    /// The SubjectPublicKeyInfo of the private key `handle` (named `key`), read from
    /// its public-key object (same CKA_ID, else same CKA_LABEL); for RSA, the
    /// private key's own CKA_MODULUS/CKA_PUBLIC_EXPONENT serve if there is none.
    fn public_key(
        &self,
        session: &Session,
        handle: ObjectHandle,
        info: &KeyInfo,
        key: &KeyRef,
    ) -> Result<SubjectPublicKeyInfoOwned> {
        let by = if info.id.is_empty() {
            Attribute::Label(info.label.as_bytes().to_vec())
        } else {
            Attribute::Id(info.id.clone())
        };
        let public = session
            .find_objects(&[Attribute::Class(ObjectClass::PUBLIC_KEY), by])
            .map_err(|e| map_ck(e, "C_FindObjects", &self.label, None))?;
        let get = |h: ObjectHandle, types: &[AttributeType]| {
            session
                .get_attributes(h, types)
                .map_err(|e| map_ck(e, "C_GetAttributeValue", &self.label, Some(key)))
        };
        match info.spec {
            KeySpec::Rsa { .. } => {
                let source = public.first().copied().unwrap_or(handle);
                let (mut n, mut e) = (None, None);
                for a in get(
                    source,
                    &[AttributeType::Modulus, AttributeType::PublicExponent],
                )? {
                    match a {
                        Attribute::Modulus(m) => n = Some(m),
                        Attribute::PublicExponent(x) => e = Some(x),
                        _ => {}
                    }
                }
                match (n, e) {
                    (Some(n), Some(e)) => encoding::rsa_spki(&n, &e),
                    _ => Err(Error::Pkcs11 {
                        operation: "C_GetAttributeValue",
                        detail: format!("RSA key {key} has no readable modulus/exponent"),
                    }),
                }
            }
            KeySpec::Ec(curve) => {
                let Some(h) = public.first().copied() else {
                    return Err(Error::KeyNotFound {
                        label: self.label.clone(),
                        key: format!("{key} (public key object)"),
                    });
                };
                let point = get(h, &[AttributeType::EcPoint])?
                    .into_iter()
                    .find_map(|a| match a {
                        Attribute::EcPoint(p) => Some(p),
                        _ => None,
                    })
                    .ok_or_else(|| Error::Pkcs11 {
                        operation: "C_GetAttributeValue",
                        detail: format!("EC public key {key} has no CKA_EC_POINT"),
                    })?;
                encoding::ec_spki(curve, &point)
            }
        }
    }
}

/// A token found by label and logged in with its user PIN. Cheap to clone; `Debug`
/// shows the label and module path, never the PIN.
#[derive(Clone)]
pub struct Token {
    inner: Arc<TokenInner>,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("label", &self.inner.label)
            .field("module", &self.inner.module.path)
            .finish_non_exhaustive()
    }
}

impl Token {
    /// Find the token labelled `label` in `module` and check `pin` by logging in.
    ///
    /// Errors: [`Error::TokenNotFound`], [`Error::PinIncorrect`] (the PIN appears in
    /// no error), [`Error::PinLocked`] (also reported, without trying the PIN, when
    /// the token flags CKF_USER_PIN_LOCKED, so no attempt is wasted: §6.4.2).
    pub fn open(module: &Arc<Pkcs11Module>, label: &str, pin: Pin) -> Result<Token> {
        let slot = module
            .find_slot(label)?
            .ok_or_else(|| Error::TokenNotFound {
                label: label.to_string(),
            })?;
        let info = module
            .ctx
            .get_token_info(slot)
            .map_err(|e| map_ck(e, "C_GetTokenInfo", label, None))?;
        if info.user_pin_locked() {
            return Err(Error::PinLocked {
                label: label.to_string(),
            });
        }
        let inner = Arc::new(TokenInner {
            module: Arc::clone(module),
            label: label.to_string(),
            pin,
            slot: Mutex::new(slot),
        });
        drop(inner.session()?);
        Ok(Token { inner })
    }

    /// Load the module at `module_path` (once per process) and open the token.
    pub fn open_path(module_path: impl AsRef<Path>, label: &str, pin: Pin) -> Result<Token> {
        Token::open(&Pkcs11Module::open(module_path)?, label, pin)
    }

    /// The token label.
    pub fn label(&self) -> &str {
        &self.inner.label
    }

    /// The module the token is in.
    pub fn module(&self) -> &Arc<Pkcs11Module> {
        &self.inner.module
    }

    /// The slot the token was last found in (slot ids can change: never persist it).
    pub fn slot(&self) -> Slot {
        *lock(&self.inner.slot)
    }

    /// Generate a key pair of `spec` inside the token, labelled `key_label` with
    /// CKA_ID `id` (16 random octets when `None`), and return its public key.
    ///
    /// RSA keys (2048, 3072 or 4096 bits) use CKM_RSA_PKCS_KEY_PAIR_GEN with public
    /// exponent 65537 (PKCS#11 Mechanisms v2.40, "PKCS #1 RSA key pair generation"); EC keys use CKM_EC_KEY_PAIR_GEN on the
    /// named curve ("Elliptic curve key pair generation"). The private key is CKA_TOKEN, CKA_PRIVATE,
    /// CKA_SENSITIVE, not CKA_EXTRACTABLE, and may only sign (CKA_SIGN; no decrypt,
    /// unwrap, derive or sign-recover): a CA key signs and does nothing else. The
    /// public key may only verify.
    ///
    /// Never overwrites: [`Error::KeyExists`] if any key with that label or id exists
    /// (checked and generated under the module's admin lock, so two threads of this
    /// process cannot both pass the check; other processes are not excluded).
    ///
    /// The same as [`Token::generate_key_with`] with [`Backup::Forbidden`].
    pub fn generate_key(
        &self,
        key_label: &str,
        id: Option<&[u8]>,
        spec: KeySpec,
    ) -> Result<SubjectPublicKeyInfoOwned> {
        self.generate_key_with(key_label, id, spec, Backup::Forbidden)
    }

    /// [`Token::generate_key`], choosing whether the private key can be backed up
    /// ([`Backup`]): with [`Backup::Allowed`] it is CKA_EXTRACTABLE (still
    /// CKA_SENSITIVE), so that a key ceremony can wrap it under a key-encryption key
    /// ([`crate::ceremony::backup`]); see [`Backup`] for why that is the only way
    /// it can leave the token.
    pub fn generate_key_with(
        &self,
        key_label: &str,
        id: Option<&[u8]>,
        spec: KeySpec,
        backup: Backup,
    ) -> Result<SubjectPublicKeyInfoOwned> {
        let t = &*self.inner;
        let id = match id {
            Some(id) => id.to_vec(),
            None => {
                let mut id = vec![0u8; 16];
                aws_lc_rs::rand::fill(&mut id)
                    .map_err(|_| Error::SoftwareKey("random key id".into()))?;
                id
            }
        };
        let (mechanism, public_specific) = match spec {
            KeySpec::Rsa {
                bits: bits @ (2048 | 3072 | 4096),
            } => (
                Mechanism::RsaPkcsKeyPairGen,
                vec![
                    Attribute::ModulusBits(cryptoki::types::Ulong::from(u64::from(bits))),
                    Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
                    Attribute::Encrypt(false),
                    Attribute::Wrap(false),
                ],
            ),
            KeySpec::Rsa { bits } => {
                return Err(Error::UnsupportedAlgorithm(format!(
                    "RSA key size {bits} in a token (2048, 3072 or 4096)"
                )));
            }
            KeySpec::Ec(curve) => (
                Mechanism::EccKeyPairGen,
                vec![Attribute::EcParams(encoding::ec_params(curve)?)],
            ),
        };
        let common = |private: bool| {
            vec![
                Attribute::Token(true),
                Attribute::Private(private),
                Attribute::Label(key_label.as_bytes().to_vec()),
                Attribute::Id(id.clone()),
            ]
        };
        let mut public_template = common(false);
        public_template.push(Attribute::Verify(true));
        public_template.extend(public_specific);
        let mut private_template = common(true);
        private_template.extend([
            Attribute::Sensitive(true),
            Attribute::Extractable(backup == Backup::Allowed),
            Attribute::Sign(true),
            Attribute::SignRecover(false),
            Attribute::Decrypt(false),
            Attribute::Unwrap(false),
            Attribute::Derive(false),
        ]);

        let _admin = lock(&t.module.admin);
        let session = t.session()?;
        for existing in [KeyRef::label(key_label), KeyRef::Id(id.clone())] {
            if !t.find_key_objects(&session, &existing)?.is_empty() {
                return Err(Error::KeyExists {
                    label: t.label.clone(),
                    key: existing.to_string(),
                });
            }
        }
        let (_, private) = session
            .generate_key_pair(&mechanism, &public_template, &private_template)
            .map_err(|e| map_ck(e, "C_GenerateKeyPair", &t.label, None))?;
        let key = KeyRef::label(key_label);
        let info = t.key_info(&session, private)?;
        t.public_key(&session, private, &info, &key)
    }

    /// All private keys on the token.
    pub fn list_keys(&self) -> Result<Vec<KeyInfo>> {
        let t = &*self.inner;
        let session = t.session()?;
        let handles = session
            .find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)])
            .map_err(|e| map_ck(e, "C_FindObjects", &t.label, None))?;
        handles
            .into_iter()
            .map(|h| t.key_info(&session, h))
            .collect()
    }

    /// The private key named by `key`, or [`Error::KeyNotFound`].
    pub fn find_key(&self, key: &KeyRef) -> Result<KeyInfo> {
        let t = &*self.inner;
        let session = t.session()?;
        let handle = t.find_private_key(&session, key)?;
        t.key_info(&session, handle)
    }

    /// The public key of the private key named by `key`.
    pub fn public_key(&self, key: &KeyRef) -> Result<SubjectPublicKeyInfoOwned> {
        let t = &*self.inner;
        let session = t.session()?;
        let handle = t.find_private_key(&session, key)?;
        let info = t.key_info(&session, handle)?;
        t.public_key(&session, handle, &info, key)
    }

    /// Destroy the key pair labelled `key_label` (private and public objects), e.g.
    /// to zeroise a retired CA key (§6.2.10). [`Error::KeyNotFound`] if there is no
    /// private key with that label. Signers of the key fail with
    /// [`Error::KeyNotFound`] afterwards.
    pub fn destroy_key(&self, key_label: &str) -> Result<()> {
        let t = &*self.inner;
        let key = KeyRef::label(key_label);
        let _admin = lock(&t.module.admin);
        let session = t.session()?;
        t.find_private_key(&session, &key)?;
        // Only key objects: a certificate stored under the same label stays.
        for object in t.find_key_objects(&session, &key)? {
            session
                .destroy_object(object)
                .map_err(|e| map_ck(e, "C_DestroyObject", &t.label, Some(&key)))?;
        }
        Ok(())
    }

    /// A signer for the private key named by `key`, signing with the key's default
    /// algorithm ([`KeySpec::default_signature_algorithm`]).
    pub fn signer(&self, key: &KeyRef) -> Result<Pkcs11Signer> {
        Pkcs11Signer::new(Arc::clone(&self.inner), key.clone(), None)
    }

    /// A signer for the private key named by `key`, signing with `algorithm`
    /// ([`Error::UnsupportedAlgorithm`] if it does not fit the key).
    pub fn signer_with(
        &self,
        key: &KeyRef,
        algorithm: crate::signer::SignatureAlgorithm,
    ) -> Result<Pkcs11Signer> {
        Pkcs11Signer::new(Arc::clone(&self.inner), key.clone(), Some(algorithm))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_values_map_to_distinct_errors() {
        let e = |rv| CkError::Pkcs11(rv, cryptoki::context::Function::Login);
        let label = "tok";
        assert!(matches!(
            map_ck(e(RvError::PinIncorrect), "C_Login", label, None),
            Error::PinIncorrect { .. }
        ));
        assert!(matches!(
            map_ck(e(RvError::PinLocked), "C_Login", label, None),
            Error::PinLocked { .. }
        ));
        for rv in [
            RvError::DeviceRemoved,
            RvError::TokenNotPresent,
            RvError::SessionHandleInvalid,
            RvError::SessionClosed,
            RvError::DeviceError,
        ] {
            let err = map_ck(e(rv), "C_Sign", label, None);
            assert!(matches!(err, Error::TokenGone { .. }), "{err}");
            assert!(is_recoverable(&e(rv)));
        }
        let err = map_ck(e(RvError::GeneralError), "C_Sign", label, None);
        assert_eq!(
            err.to_string(),
            "PKCS#11 C_Sign failed: C_Login returned CKR_GENERAL_ERROR"
        );
    }

    #[test]
    fn ckr_names_follow_the_spec() {
        assert_eq!(ckr_name(RvError::PinIncorrect), "CKR_PIN_INCORRECT");
        assert_eq!(
            ckr_name(RvError::SessionHandleInvalid),
            "CKR_SESSION_HANDLE_INVALID"
        );
    }

    #[test]
    fn key_refs_parse_and_display() {
        assert_eq!(
            KeyRef::id_hex("0a1B").unwrap(),
            KeyRef::Id(vec![0x0a, 0x1b])
        );
        assert_eq!(KeyRef::id_hex("0a1B").unwrap().to_string(), "id:0a1b");
        assert!(KeyRef::id_hex("abc").is_err());
        assert!(KeyRef::id_hex("zz").is_err());
        assert_eq!(KeyRef::label("ca-2025").to_string(), "ca-2025");
    }

    #[test]
    fn missing_module_is_module_load_naming_the_path() {
        let err = Pkcs11Module::open("/nonexistent/libpkcs11.so").unwrap_err();
        assert!(matches!(err, Error::ModuleLoad { .. }), "{err}");
        assert!(
            err.to_string().contains("/nonexistent/libpkcs11.so"),
            "{err}"
        );
    }
}
