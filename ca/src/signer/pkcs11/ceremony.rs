//! Token operations of the key ceremony ([`crate::ceremony`]): wrapping a CA key
//! under a key-encryption key (KEK), unwrapping it into a token, and the one-time
//! RSA recipient key that decrypts re-encrypted shares.
//!
//! The KEK exists in the token only as a **session object** (CKA_TOKEN false),
//! imported for one operation and destroyed right after it (and in any case when
//! the session closes): it is never stored on the token.

use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::MechanismType;
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use spki::SubjectPublicKeyInfoOwned;
use zeroize::{Zeroize, Zeroizing};

use cryptoki::error::RvError;

use super::{KeyRef, Token, TokenInner, encoding, lock, map_ck, oaep};
use crate::error::{Error, Result};
use crate::signer::{KeySpec, SignatureAlgorithm};

/// Whether a token-generated private key may be backed up.
///
/// PKCS#11 has one switch for "may leave the token": CKA_EXTRACTABLE. With
/// CKA_SENSITIVE also true, C_GetAttributeValue never returns the key's private
/// values (PKCS#11 Base v2.40 §4.9, "Private key objects", footnote 11: a
/// sensitive key's value "cannot be revealed in plaintext outside the token"), so
/// the only way out is C_WrapKey, encrypted under another key the token holds. An
/// extractable key can therefore be backed up but never read; a non-extractable
/// key cannot leave at all (C_WrapKey answers CKR_KEY_UNEXTRACTABLE). Once false,
/// CKA_EXTRACTABLE can never become true again, and CKA_SENSITIVE never false again
/// (§4.9 footnote 8/9), so a key generated with [`Backup::Forbidden`] stays
/// un-backupable for life.
///
/// CKA_WRAP_WITH_TRUSTED (only wrapping keys with CKA_TRUSTED may wrap it) would
/// narrow this further, and SoftHSM2 honours it; but only a security-officer
/// session may set CKA_TRUSTED on the wrapping key (SoftHSM2
/// `P11AttrTrusted::updateAttr` answers CKR_ATTRIBUTE_READ_ONLY otherwise, as
/// PKCS#11 v3.2 §4.2 footnote 10 prescribes), and chop holds only the user PIN.
/// So chop does not set it: the restriction rests on who may log in to the token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backup {
    /// CKA_SENSITIVE and CKA_EXTRACTABLE: leaves the token only wrapped (key
    /// ceremonies).
    Allowed,
    /// CKA_SENSITIVE and not CKA_EXTRACTABLE: never leaves the token (the default).
    Forbidden,
}

/// CKM_RSA_PKCS_OAEP with SHA-256, MGF1-SHA-256 and no label (PKCS#11 Mechanisms
/// v2.40 §2.1.8; the RFC 8017 §7.1 scheme the share envelopes use).
fn oaep_sha256() -> Mechanism<'static> {
    Mechanism::RsaPkcsOaep(PkcsOaepParams::new(
        MechanismType::SHA256,
        PkcsMgfType::MGF1_SHA256,
        PkcsOaepSource::empty(),
    ))
}

/// A message signed to prove that a restored private key matches its public key.
const PROOF_MESSAGE: &[u8] = b"chop key ceremony: restored key proof of possession";

impl TokenInner {
    /// Import `kek` as an AES session key usable only to wrap (or only to unwrap).
    /// The copy in the template is zeroized before returning.
    fn import_kek(&self, session: &Session, kek: &[u8], wrap: bool) -> Result<ObjectHandle> {
        let mut template = vec![
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(false),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Encrypt(false),
            Attribute::Decrypt(false),
            Attribute::Sign(false),
            Attribute::Verify(false),
            Attribute::Derive(false),
            Attribute::Wrap(wrap),
            Attribute::Unwrap(!wrap),
            Attribute::Value(kek.to_vec()),
        ];
        let created = session.create_object(&template);
        for a in &mut template {
            if let Attribute::Value(v) = a {
                v.zeroize();
            }
        }
        created.map_err(|e| map_ck(e, "C_CreateObject", &self.label, None))
    }

    /// Sign [`PROOF_MESSAGE`] with the private key `handle` of `spec` and verify
    /// under `expected`: the key pair matches iff this succeeds.
    fn proves(
        &self,
        session: &Session,
        handle: ObjectHandle,
        spec: KeySpec,
        expected: &SubjectPublicKeyInfoOwned,
    ) -> bool {
        let algorithm = spec.default_signature_algorithm();
        let (mechanism, data) = match algorithm {
            SignatureAlgorithm::RsaSha256 => (Mechanism::Sha256RsaPkcs, PROOF_MESSAGE.to_vec()),
            SignatureAlgorithm::RsaSha384 => (Mechanism::Sha384RsaPkcs, PROOF_MESSAGE.to_vec()),
            SignatureAlgorithm::RsaSha512 => (Mechanism::Sha512RsaPkcs, PROOF_MESSAGE.to_vec()),
            SignatureAlgorithm::EcdsaSha256 => (
                Mechanism::Ecdsa,
                aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, PROOF_MESSAGE)
                    .as_ref()
                    .to_vec(),
            ),
            SignatureAlgorithm::EcdsaSha384 => (
                Mechanism::Ecdsa,
                aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA384, PROOF_MESSAGE)
                    .as_ref()
                    .to_vec(),
            ),
            SignatureAlgorithm::EcdsaSha512 => (
                Mechanism::Ecdsa,
                aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA512, PROOF_MESSAGE)
                    .as_ref()
                    .to_vec(),
            ),
        };
        let Ok(raw) = session.sign(&mechanism, handle, &data) else {
            return false;
        };
        let signature = match spec {
            KeySpec::Rsa { .. } => Ok(raw),
            KeySpec::Ec(curve) => encoding::ecdsa_raw_to_der(curve, &raw),
        };
        signature
            .is_ok_and(|s| crate::signer::verify(expected, algorithm, PROOF_MESSAGE, &s).is_ok())
    }
}

impl Token {
    /// Wrap the private key `key_label` under `kek` (AES-256) with
    /// CKM_AES_KEY_WRAP_PAD (RFC 5649; the token wraps the PKCS#8 PrivateKeyInfo).
    /// The KEK is a session object destroyed before returning.
    ///
    /// Errors: [`Error::KeyNotFound`]; [`Error::KeyNotExtractable`] for a key
    /// generated without backup ([`Backup::Forbidden`]).
    pub(crate) fn wrap_with_kek(&self, key_label: &str, kek: &[u8]) -> Result<Vec<u8>> {
        let t = &*self.inner;
        let key = KeyRef::label(key_label);
        let session = t.session()?;
        let handle = t.find_private_key(&session, &key)?;
        let extractable = session
            .get_attributes(handle, &[AttributeType::Extractable])
            .map_err(|e| map_ck(e, "C_GetAttributeValue", &t.label, Some(&key)))?
            .into_iter()
            .any(|a| matches!(a, Attribute::Extractable(true)));
        if !extractable {
            return Err(Error::KeyNotExtractable {
                label: t.label.clone(),
                key: key_label.to_string(),
            });
        }
        let kek_handle = t.import_kek(&session, kek, true)?;
        let wrapped = session.wrap_key(&Mechanism::AesKeyWrapPad, kek_handle, handle);
        let destroyed = session.destroy_object(kek_handle);
        let wrapped = wrapped.map_err(|e| map_ck(e, "C_WrapKey", &t.label, Some(&key)))?;
        destroyed.map_err(|e| map_ck(e, "C_DestroyObject", &t.label, None))?;
        Ok(wrapped)
    }

    /// Unwrap `wrapped` (CKM_AES_KEY_WRAP_PAD under `kek`) into the token as the
    /// signing-only private key `key_label` / CKA_ID `key_id` plus a public-key
    /// object made from `expected`, after proving on a session copy that the
    /// unwrapped key is `expected`'s private key.
    ///
    /// Nothing is stored on the token unless every check passes: the key is first
    /// unwrapped as a session object (gone when the session closes), tested by
    /// signing and verifying under `expected`, and only then unwrapped again as a
    /// token object; if creating the public-key object fails, the private key is
    /// destroyed again.
    ///
    /// Errors: [`Error::KeyExists`] (label or id taken), [`Error::KeyUnwrap`]
    /// (wrong KEK or altered blob), [`Error::RestoredKeyMismatch`].
    pub(crate) fn unwrap_with_kek(
        &self,
        kek: &[u8],
        wrapped: &[u8],
        expected: &SubjectPublicKeyInfoOwned,
        key_label: &str,
        key_id: &[u8],
    ) -> Result<()> {
        let t = &*self.inner;
        let spec = KeySpec::of(expected)?;
        let key_type = match spec {
            KeySpec::Rsa { .. } => KeyType::RSA,
            KeySpec::Ec(_) => KeyType::EC,
        };
        let template = |token: bool| {
            vec![
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::KeyType(key_type),
                Attribute::Token(token),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Sign(true),
                Attribute::SignRecover(false),
                Attribute::Decrypt(false),
                Attribute::Unwrap(false),
                Attribute::Derive(false),
                Attribute::Label(key_label.as_bytes().to_vec()),
                Attribute::Id(key_id.to_vec()),
            ]
        };
        let _admin = lock(&t.module.admin);
        let session = t.session()?;
        for existing in [KeyRef::label(key_label), KeyRef::Id(key_id.to_vec())] {
            if !t.find_key_objects(&session, &existing)?.is_empty() {
                return Err(Error::KeyExists {
                    label: t.label.clone(),
                    key: existing.to_string(),
                });
            }
        }
        let kek_handle = t.import_kek(&session, kek, false)?;
        let result = (|| {
            let trial = session
                .unwrap_key(
                    &Mechanism::AesKeyWrapPad,
                    kek_handle,
                    wrapped,
                    &template(false),
                )
                .map_err(|e| Error::KeyUnwrap {
                    detail: super::ck_detail(&e),
                })?;
            let info = t.key_info(&session, trial);
            let ok =
                info.is_ok_and(|i| i.spec == spec) && t.proves(&session, trial, spec, expected);
            let _ = session.destroy_object(trial);
            if !ok {
                return Err(Error::RestoredKeyMismatch);
            }
            let private = session
                .unwrap_key(
                    &Mechanism::AesKeyWrapPad,
                    kek_handle,
                    wrapped,
                    &template(true),
                )
                .map_err(|e| Error::KeyUnwrap {
                    detail: super::ck_detail(&e),
                })?;
            let mut public_template = vec![
                Attribute::Class(ObjectClass::PUBLIC_KEY),
                Attribute::KeyType(key_type),
                Attribute::Token(true),
                Attribute::Private(false),
                Attribute::Verify(true),
                Attribute::Encrypt(false),
                Attribute::Wrap(false),
                Attribute::Label(key_label.as_bytes().to_vec()),
                Attribute::Id(key_id.to_vec()),
            ];
            let created = encoding::public_key_attributes(expected).and_then(|attrs| {
                public_template.extend(attrs);
                session
                    .create_object(&public_template)
                    .map_err(|e| map_ck(e, "C_CreateObject", &t.label, None))
            });
            if let Err(e) = created {
                let _ = session.destroy_object(private);
                return Err(e);
            }
            Ok(())
        })();
        let _ = session.destroy_object(kek_handle);
        result
    }

    /// Decrypt `ciphertext` with CKM_RSA_PKCS_OAEP (SHA-256, MGF1-SHA-256, no
    /// label) using the private key `key_label`, inside the token.
    pub(crate) fn decrypt_oaep(
        &self,
        key_label: &str,
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        let t = &*self.inner;
        let key = KeyRef::label(key_label);
        let session = t.session()?;
        let handle = t.find_private_key(&session, &key)?;
        match session.decrypt(&oaep_sha256(), handle, ciphertext) {
            Ok(plain) => Ok(Zeroizing::new(plain)),
            // The token has no SHA-256 OAEP (SoftHSM2 2.6 accepts only SHA-1:
            // MechParamCheckRSAPKCSOAEP answers CKR_ARGUMENTS_BAD for any other
            // hash). Do the RSA private-key operation in the token (CKM_RSA_X_509)
            // and the EME-OAEP decoding here.
            Err(cryptoki::error::Error::Pkcs11(
                RvError::ArgumentsBad | RvError::MechanismParamInvalid | RvError::MechanismInvalid,
                _,
            )) => {
                let modulus_len = match t.key_info(&session, handle)?.spec {
                    KeySpec::Rsa { bits } => usize::try_from(bits.div_ceil(8)).unwrap_or(0),
                    KeySpec::Ec(_) => 0,
                };
                let em = Zeroizing::new(
                    session
                        .decrypt(&Mechanism::RsaX509, handle, ciphertext)
                        .map_err(|e| map_ck(e, "C_Decrypt", &t.label, Some(&key)))?,
                );
                oaep::decode_sha256(&em, modulus_len).ok_or_else(|| Error::Pkcs11 {
                    operation: "C_Decrypt",
                    detail: "RSAES-OAEP-SHA256 decryption error".into(),
                })
            }
            Err(e) => Err(map_ck(e, "C_Decrypt", &t.label, Some(&key))),
        }
    }

    /// Create the one-time RSA-2048 recipient key pair `label` (token objects;
    /// the private key is sensitive, not extractable, and may decrypt and sign,
    /// nothing else), destroying any key objects already labelled so. Returns its
    /// public key.
    pub(crate) fn create_recipient_key(&self, label: &str) -> Result<SubjectPublicKeyInfoOwned> {
        let t = &*self.inner;
        self.destroy_key_objects(label)?;
        let mut id = vec![0u8; 16];
        aws_lc_rs::rand::fill(&mut id).map_err(|_| Error::SoftwareKey("random key id".into()))?;
        let common = |private: bool| {
            vec![
                Attribute::Token(true),
                Attribute::Private(private),
                Attribute::Label(label.as_bytes().to_vec()),
                Attribute::Id(id.clone()),
            ]
        };
        let mut public_template = common(false);
        public_template.extend([
            Attribute::ModulusBits(cryptoki::types::Ulong::from(2048u64)),
            Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
            Attribute::Encrypt(true),
            Attribute::Verify(true),
            Attribute::Wrap(false),
        ]);
        let mut private_template = common(true);
        private_template.extend([
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Decrypt(true),
            Attribute::Sign(true),
            // No PKCS#1 v1.5 decryption (a Bleichenbacher oracle), no other
            // signature scheme: OAEP (or raw RSA for the fallback in
            // `decrypt_oaep`) and the certificate's sha256WithRSAEncryption.
            Attribute::AllowedMechanisms(vec![
                MechanismType::RSA_PKCS_OAEP,
                MechanismType::RSA_X_509,
                MechanismType::SHA256_RSA_PKCS,
            ]),
            Attribute::SignRecover(false),
            Attribute::Unwrap(false),
            Attribute::Derive(false),
        ]);
        let _admin = lock(&t.module.admin);
        let session = t.session()?;
        let (_, private) = session
            .generate_key_pair(
                &Mechanism::RsaPkcsKeyPairGen,
                &public_template,
                &private_template,
            )
            .map_err(|e| map_ck(e, "C_GenerateKeyPair", &t.label, None))?;
        let info = t.key_info(&session, private)?;
        t.public_key(&session, private, &info, &KeyRef::label(label))
    }

    /// Destroy every private- and public-key object labelled `label`; Ok if none.
    pub(crate) fn destroy_key_objects(&self, label: &str) -> Result<()> {
        let t = &*self.inner;
        let key = KeyRef::label(label);
        let _admin = lock(&t.module.admin);
        let session = t.session()?;
        for object in t.find_key_objects(&session, &key)? {
            session
                .destroy_object(object)
                .map_err(|e| map_ck(e, "C_DestroyObject", &t.label, Some(&key)))?;
        }
        Ok(())
    }
}
