//! Key-ceremony cryptography: backing a CA key up to m-of-n custodians and
//! restoring it into a token from m of their shares (CPS §6.2.2, §6.2.4, §6.2.6,
//! §6.2.7). No Kubernetes: the controller's KeyCeremony calls [`backup`],
//! [`create_recipient`], [`restore`] and [`destroy_recipient`].
//!
//! ## Design
//! - **Backup.** A fresh random AES-256 key-encryption key (KEK) is imported into
//!   the token as a session object and wraps the CA private key with
//!   CKM_AES_KEY_WRAP_PAD (RFC 5649); the key must have been generated with
//!   [`Backup::Allowed`](crate::signer::pkcs11::Backup) (sensitive + extractable,
//!   so it leaves the token only wrapped). The KEK is split m-of-n by Shamir over
//!   GF(2^8) (`shamir.rs`); each share plaintext (`share.rs`) binds the backup id,
//!   threshold and index, and is encrypted to one custodian's X.509 certificate as
//!   CMS EnvelopedData with RSAES-OAEP-SHA256 and AES-256-CBC ([`cms`]). What is
//!   published (wrapped key, public key, per share: custodian, index, SHA-256
//!   fingerprint, envelope) reveals nothing: the wrapped key needs the KEK, the
//!   KEK needs m shares, each share needs a custodian's private key.
//! - **Restore.** Custodians never submit a plaintext share: [`create_recipient`]
//!   makes a one-time RSA-2048 key inside the target token and a self-signed
//!   certificate for it; each custodian decrypts their envelope with
//!   `openssl cms -decrypt` and re-encrypts the plaintext to that certificate with
//!   [`OPENSSL_ENCRYPT`]. [`restore`] decrypts the content keys with the
//!   recipient key inside the token, checks every share (backup id, published
//!   fingerprint, distinct index, count), combines the KEK and unwraps the key,
//!   storing it only after a signature by it verifies under the backup's public
//!   key (a session-object trial copy is tested first, so a crash leaves nothing).
//!   The restored key is signing-only and not extractable: a further backup is
//!   made from the original backup's shares, not from the restored key.
//! - **OAEP in the token.** The recipient key decrypts with CKM_RSA_PKCS_OAEP
//!   (SHA-256, MGF1-SHA-256). SoftHSM2 2.6 implements that mechanism for SHA-1
//!   only (CKR_ARGUMENTS_BAD otherwise); on such a token the RSA operation is
//!   CKM_RSA_X_509 in the token and the EME-OAEP decoding is done in constant
//!   time here, with one error for every decoding failure. The recipient key's
//!   CKA_ALLOWED_MECHANISMS are OAEP, raw RSA and sha256WithRSA only: no PKCS#1
//!   v1.5 decryption.
//! - **No oracle for submitters.** An envelope whose content key decrypts but
//!   whose content does not decrypt to a share gets one error, whether the CBC
//!   padding or the share format is wrong, so altered copies of another
//!   custodian's submitted envelope reveal nothing (a CBC padding oracle would).
//!   The controller should still destroy the recipient key after a failed
//!   restore and create a new one for the next attempt, which ends any oracle.
//! - **Secrets in memory.** The KEK, shares, content keys and decrypted
//!   plaintexts are `Zeroizing` and zeroized when dropped; the KEK also exists in
//!   the token, as a session object destroyed right after use. No type here
//!   prints them (custom `Debug`), and errors name indices, fingerprints' owners
//!   and submitters, never share content.
//!
//! ## Non-goals
//! - Custodian keys other than RSA (≥ 2048 bits): an EC custodian would need
//!   KeyAgreeRecipientInfo (ECDH, RFC 5753), which chop neither writes nor reads.
//! - CKA_WRAP_WITH_TRUSTED: see [`Backup`](crate::signer::pkcs11::Backup).
//! - Verifiable secret sharing: a custodian cannot check a share against the
//!   others before restore; the published fingerprints detect alteration at
//!   restore, and the public-key check detects any wrong combination.

pub mod cms;
mod shamir;
mod share;

use std::fmt;
use std::str::FromStr;

use der::asn1::{BitString, OctetString};
use der::{Encode, EncodePem};
use spki::SubjectPublicKeyInfoOwned;
use x509_cert::certificate::{Certificate, TbsCertificate, Version};
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::{KeyUsage, KeyUsages};
use x509_cert::name::Name;
use x509_cert::time::Validity;
use zeroize::Zeroizing;

pub use cms::OPENSSL_ENCRYPT;

use crate::error::{Error, Result};
use crate::signer::pkcs11::{KeyRef, Token};
use crate::signer::{SignatureAlgorithm, Signer};
use share::{KEK_LEN, SharePlaintext};

/// A key custodian: a name (shown in the share list) and an X.509 certificate
/// with an RSA key of at least 2048 bits, to which their share is encrypted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Custodian {
    /// The custodian's name (unique within a ceremony).
    pub name: String,
    /// PEM X.509 certificate with an RSA (≥ 2048) key.
    pub certificate_pem: String,
}

/// One custodian's share, encrypted to them. Safe to publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShareEnvelope {
    /// [`Custodian::name`].
    pub custodian: String,
    /// Shamir x coordinate, 1..=n.
    pub index: u8,
    /// Lower-case hex SHA-256 of the share plaintext (never the share).
    pub fingerprint: String,
    /// `-----BEGIN CMS-----` EnvelopedData to the custodian's certificate.
    pub envelope_pem: String,
}

/// What [`backup`] produces. Safe to publish (no KEK, no share in the clear).
#[derive(Clone, Debug)]
pub struct BackupOutput {
    /// The CA private key wrapped under the KEK (CKM_AES_KEY_WRAP_PAD, RFC 5649).
    pub wrapped_key: Vec<u8>,
    /// The CA public key.
    pub public_key: SubjectPublicKeyInfoOwned,
    /// One envelope per custodian, in custodian order (index i+1 for custodian i).
    pub shares: Vec<ShareEnvelope>,
}

/// Wrap the private key `key_label` of `token` under a fresh random AES-256 KEK,
/// split the KEK `threshold`-of-n (Shamir over GF(2^8)), and encrypt each share to
/// one custodian. `ceremony_id` (the KeyCeremony uid) is bound into every share.
/// KEK and shares are zeroized before returning. The token is not changed.
///
/// Errors: [`Error::CeremonyInvalid`] (threshold not in 2..=n, n > 255, empty or
/// duplicate custodian names, empty or too long id), [`Error::CustodianCertificate`]
/// (checked before anything is wrapped), [`Error::KeyNotFound`],
/// [`Error::KeyNotExtractable`] (key generated without backup).
pub fn backup(
    token: &Token,
    key_label: &str,
    ceremony_id: &str,
    threshold: u8,
    custodians: &[Custodian],
) -> Result<BackupOutput> {
    shamir::check_parameters(threshold, custodians.len())?;
    check_backup_id(ceremony_id)?;
    for (i, c) in custodians.iter().enumerate() {
        if c.name.is_empty() || custodians[..i].iter().any(|o| o.name == c.name) {
            return Err(Error::CeremonyInvalid(format!(
                "custodian names must be non-empty and distinct ({:?})",
                c.name
            )));
        }
        // Check every certificate before the key leaves the token.
        cms::encrypt_to_certificate(&c.certificate_pem, b"probe").map_err(|detail| {
            Error::CustodianCertificate {
                custodian: c.name.clone(),
                detail,
            }
        })?;
    }
    let mut kek = Zeroizing::new([0u8; KEK_LEN]);
    aws_lc_rs::rand::fill(kek.as_mut())
        .map_err(|_| Error::SoftwareKey("random key-encryption key".into()))?;
    let wrapped_key = token.wrap_with_kek(key_label, kek.as_ref())?;
    let public_key = token.public_key(&KeyRef::label(key_label))?;
    let values = shamir::split(kek.as_ref(), threshold, custodians.len())?;
    drop(kek);
    let mut shares = Vec::with_capacity(custodians.len());
    for (i, (custodian, ys)) in custodians.iter().zip(values).enumerate() {
        let index = u8::try_from(i + 1)
            .map_err(|_| Error::CeremonyInvalid("more than 255 custodians".into()))?;
        let plaintext = SharePlaintext {
            backup_id: ceremony_id.to_string(),
            threshold,
            index,
            values: ys,
        }
        .encode()
        .map_err(Error::CeremonyInvalid)?;
        let envelope_pem = cms::encrypt_to_certificate(&custodian.certificate_pem, &plaintext)
            .map_err(|detail| Error::CustodianCertificate {
                custodian: custodian.name.clone(),
                detail,
            })?;
        shares.push(ShareEnvelope {
            custodian: custodian.name.clone(),
            index,
            fingerprint: share::fingerprint(&plaintext),
            envelope_pem,
        });
    }
    Ok(BackupOutput {
        wrapped_key,
        public_key,
        shares,
    })
}

/// A backup id must fit the share format (1 to 255 octets).
fn check_backup_id(id: &str) -> Result<()> {
    if id.is_empty() || id.len() > 255 {
        return Err(Error::CeremonyInvalid(format!(
            "backup id must be 1 to 255 octets, not {}",
            id.len()
        )));
    }
    Ok(())
}

/// Create a one-time RSA-2048 decryption key labelled `label` on `token` (token
/// object, private, sensitive, not extractable, may only decrypt and sign its own
/// certificate) and return a self-signed certificate (PEM) for it, to which
/// custodians re-encrypt their shares with [`OPENSSL_ENCRYPT`]. If a key with that
/// label exists already it is destroyed and replaced.
///
/// The certificate: subject = issuer = `CN=chop key ceremony <ceremony_id>`,
/// valid 7 days from now, keyUsage keyEncipherment (critical), signed
/// sha256WithRSAEncryption by the key itself and verified after signing.
pub fn create_recipient(token: &Token, label: &str, ceremony_id: &str) -> Result<String> {
    let spki = token.create_recipient_key(label)?;
    let signer = token.signer_with(&KeyRef::label(label), SignatureAlgorithm::RsaSha256)?;
    let safe_id: String = ceremony_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(40)
        .collect();
    let name = Name::from_str(&format!("CN=chop key ceremony {safe_id}"))?;
    let mut serial = [0u8; 16];
    aws_lc_rs::rand::fill(&mut serial).map_err(|_| Error::SoftwareKey("random serial".into()))?;
    serial[0] = (serial[0] & 0x7f) | 0x40;
    let key_usage = KeyUsage(KeyUsages::KeyEncipherment.into());
    let algorithm = SignatureAlgorithm::RsaSha256.algorithm_identifier();
    let tbs = TbsCertificate {
        version: Version::V3,
        serial_number: x509_cert::serial_number::SerialNumber::new(&serial)?,
        signature: algorithm.clone(),
        issuer: name.clone(),
        validity: Validity::from_now(std::time::Duration::from_secs(7 * 24 * 3600))?,
        subject: name,
        subject_public_key_info: spki.clone(),
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: Some(vec![Extension {
            extn_id: const_oid::db::rfc5280::ID_CE_KEY_USAGE,
            critical: true,
            extn_value: OctetString::new(key_usage.to_der()?)?,
        }]),
    };
    let tbs_der = tbs.to_der()?;
    let signature = signer.sign(&tbs_der)?;
    crate::signer::verify(&spki, SignatureAlgorithm::RsaSha256, &tbs_der, &signature)?;
    let cert = Certificate {
        tbs_certificate: tbs,
        signature_algorithm: algorithm,
        signature: BitString::from_bytes(&signature)?,
    };
    Ok(cert.to_pem(der::pem::LineEnding::LF)?)
}

/// Destroy the recipient key `label` (both key objects). Ok if already gone.
pub fn destroy_recipient(token: &Token, label: &str) -> Result<()> {
    token.destroy_key_objects(label)
}

/// What [`restore`] needs of a backup (as [`backup`] published it).
#[derive(Clone, Copy, Debug)]
pub struct BackupManifest<'a> {
    /// Uid of the Backup ceremony (the `ceremony_id` given to [`backup`]).
    pub backup_id: &'a str,
    /// m.
    pub threshold: u8,
    /// [`BackupOutput::wrapped_key`].
    pub wrapped_key: &'a [u8],
    /// [`BackupOutput::public_key`].
    pub public_key: &'a SubjectPublicKeyInfoOwned,
    /// (index, fingerprint) of every share, as published by [`backup`].
    pub shares: &'a [(u8, String)],
}

/// A share as a custodian submitted it: re-encrypted to the recipient
/// certificate. `Debug` does not show the envelope.
#[derive(Clone, PartialEq, Eq)]
pub struct SubmittedShare {
    /// The submitting user.
    pub from: String,
    /// PEM CMS EnvelopedData (from [`OPENSSL_ENCRYPT`]).
    pub envelope_pem: String,
}

impl fmt::Debug for SubmittedShare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubmittedShare")
            .field("from", &self.from)
            .finish_non_exhaustive()
    }
}

/// Decrypt each submitted share with the recipient key `recipient_label` (inside
/// the token), check it belongs to this backup and is unaltered, combine at least
/// `threshold` shares, unwrap the key into `token` as a signing-only private key
/// `key_label` (+ its public key object, CKA_ID `key_id`), check that its public
/// key equals the manifest's by signing and verifying, and return that public key.
/// Nothing is created on the token unless all checks pass.
///
/// Checked in this order, each with its own error (and [`Error::reason`]):
/// fewer submissions than the threshold → [`Error::SharesTooFew`]; a share that is
/// not a CMS envelope the recipient key opens, or whose plaintext is not a chop
/// share → [`Error::ShareUndecryptable`] naming `from`; another backup's share →
/// [`Error::ShareFromOtherBackup`]; a plaintext whose SHA-256 is not the
/// published fingerprint of its index (or whose index or threshold was not
/// published) → [`Error::ShareAltered`] naming index and `from`; an index twice →
/// [`Error::ShareDuplicate`]; then [`Error::KeyExists`], [`Error::KeyUnwrap`],
/// [`Error::RestoredKeyMismatch`].
pub fn restore(
    token: &Token,
    recipient_label: &str,
    manifest: &BackupManifest,
    shares: &[SubmittedShare],
    key_label: &str,
    key_id: &[u8],
) -> Result<SubjectPublicKeyInfoOwned> {
    shamir::check_parameters(manifest.threshold, manifest.shares.len())?;
    let need = manifest.threshold;
    if shares.len() < usize::from(need) {
        return Err(Error::SharesTooFew {
            have: shares.len(),
            need,
        });
    }
    let mut accepted: Vec<(SharePlaintext, &str)> = Vec::with_capacity(shares.len());
    for submitted in shares {
        let undecryptable = |detail: String| Error::ShareUndecryptable {
            from: submitted.from.clone(),
            detail,
        };
        let envelope = cms::Envelope::parse(&submitted.envelope_pem).map_err(undecryptable)?;
        let plaintext = envelope
            .decrypt(|encrypted_key| {
                token
                    .decrypt_oaep(recipient_label, encrypted_key)
                    .map_err(|e| match e {
                        Error::Pkcs11 { detail, .. } => format!(
                            "the restore key cannot decrypt its content key ({detail}): encrypted to another certificate?"
                        ),
                        other => other.to_string(),
                    })
            })
            .map_err(undecryptable)?;
        let share = SharePlaintext::decode(&plaintext)
            .map_err(|_| undecryptable(cms::CONTENT_ERROR.to_string()))?;
        if share.backup_id != manifest.backup_id {
            return Err(Error::ShareFromOtherBackup {
                from: submitted.from.clone(),
                found: share.backup_id.clone(),
                expected: manifest.backup_id.to_string(),
            });
        }
        let fingerprint = share::fingerprint(&plaintext);
        let published = manifest
            .shares
            .iter()
            .find(|(i, _)| *i == share.index)
            .map(|(_, f)| f.as_str());
        let matches = published.is_some_and(|p| {
            aws_lc_rs::constant_time::verify_slices_are_equal(
                p.to_ascii_lowercase().as_bytes(),
                fingerprint.as_bytes(),
            )
            .is_ok()
        });
        if !matches || share.threshold != need {
            return Err(Error::ShareAltered {
                index: share.index,
                from: submitted.from.clone(),
            });
        }
        if let Some((_, first)) = accepted.iter().find(|(s, _)| s.index == share.index) {
            return Err(Error::ShareDuplicate {
                index: share.index,
                first: (*first).to_string(),
                from: submitted.from.clone(),
            });
        }
        accepted.push((share, submitted.from.as_str()));
    }
    if accepted.len() < usize::from(need) {
        return Err(Error::SharesTooFew {
            have: accepted.len(),
            need,
        });
    }
    let points: Vec<(u8, &[u8])> = accepted
        .iter()
        .map(|(s, _)| (s.index, s.values.as_slice()))
        .collect();
    let kek = shamir::combine(&points)?;
    token.unwrap_with_kek(
        &kek,
        manifest.wrapped_key,
        manifest.public_key,
        key_label,
        key_id,
    )?;
    drop(kek);
    token.public_key(&KeyRef::label(key_label))
}
