//! CMS EnvelopedData (RFC 5652 §6) for key-ceremony shares: written to a
//! custodian's X.509 certificate at backup, read from what a custodian's
//! `openssl cms -encrypt` produced at restore.
//!
//! What is written, each choice with its source:
//! - `ContentInfo { id-envelopedData, [0] EXPLICIT EnvelopedData }` (RFC 5652 §3,
//!   §6.1), PEM label `CMS` (RFC 7468 §9), which `openssl cms -inform PEM` reads.
//! - `EnvelopedData.version` 0: RFC 5652 §6.1 says version is 0 when
//!   originatorInfo and unprotectedAttrs are absent and all RecipientInfo
//!   structures are version 0.
//! - One `KeyTransRecipientInfo` (RFC 5652 §6.2.1), version 0 because `rid` is
//!   `issuerAndSerialNumber` (the custodian certificate's issuer and serial).
//! - `keyEncryptionAlgorithm` id-RSAES-OAEP with explicit parameters hashFunc
//!   sha256 and maskGenFunc mgf1 with sha256, pSourceFunc left at its DEFAULT
//!   (empty label) and so omitted (RFC 4055 §4.1, the structure; X.690 §11.5: a
//!   DER value equal to its DEFAULT is omitted). The sha256 AlgorithmIdentifiers
//!   carry NULL parameters, as RFC 4055 §2.1 requires for sha256Identifier; when
//!   reading, absent parameters are accepted too ("MUST accept both").
//! - Content: id-data encrypted with AES-256-CBC (RFC 3565 §4.1: id-aes256-CBC,
//!   parameters the 16-octet IV), PKCS#7 padding (RFC 5652 §6.3), a fresh random
//!   256-bit content-encryption key and IV per envelope; the CEK is OAEP-encrypted
//!   to the custodian's RSA key (RFC 8017 §7.1).
//!
//! What is read: the same, also with `subjectKeyIdentifier` rids, any number of
//! recipients, and originatorInfo/unprotectedAttrs skipped. Any key transport other
//! than RSAES-OAEP-SHA256/MGF1-SHA256 (PKCS#1 v1.5 `rsaEncryption`, whose
//! decryption is a padding oracle, or SHA-1 OAEP) and any other content cipher are
//! refused, naming the `openssl cms -encrypt` command that produces what is
//! accepted ([`OPENSSL_ENCRYPT`]).

use std::fmt;

use const_oid::ObjectIdentifier;
use der::asn1::{Any, Null, OctetString, SetOfVec};
use der::{Decode, Encode, Reader, Sequence, SliceReader, Tag, TagNumber, Tagged};
use spki::AlgorithmIdentifierOwned;
use x509_cert::Certificate;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use zeroize::Zeroizing;

use crate::error::Redacted;
use crate::signer::KeySpec;

/// The one error for content that does not decrypt to a share, whatever the
/// cause (CBC padding, share format): telling them apart would give whoever can
/// submit envelopes a padding oracle on other custodians' submitted ciphertexts.
pub(crate) const CONTENT_ERROR: &str = "the envelope's content does not decrypt to a chop key share (altered ciphertext, or not a share)";

/// Largest envelope accepted (PEM octets): a share envelope is about 1 KiB.
const MAX_ENVELOPE: usize = 64 * 1024;
/// Most recipients tried per envelope (each costs one RSA decryption in the token).
const MAX_RECIPIENTS: usize = 8;

/// The command a custodian runs to re-encrypt a share to the restore recipient.
pub const OPENSSL_ENCRYPT: &str = "openssl cms -encrypt -binary -aes-256-cbc -recip recipient.pem -keyopt rsa_padding_mode:oaep -keyopt rsa_oaep_md:sha256 -keyopt rsa_mgf1_md:sha256 -outform PEM";

const ID_ENVELOPED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.3");
const ID_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const ID_RSAES_OAEP: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.7");
const ID_MGF1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.8");
const ID_P_SPECIFIED: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.9");
const ID_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const ID_AES256_CBC: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.1.42");

/// `ContentInfo` (RFC 5652 §3).
#[derive(Sequence)]
struct ContentInfo {
    content_type: ObjectIdentifier,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT")]
    content: Any,
}

/// `IssuerAndSerialNumber` (RFC 5652 §10.2.4).
#[derive(Sequence)]
struct IssuerAndSerialNumber {
    issuer: Name,
    serial_number: SerialNumber,
}

/// `KeyTransRecipientInfo` (RFC 5652 §6.2.1); `rid` kept as is (either choice).
#[derive(Sequence)]
struct KeyTransRecipientInfo {
    version: u8,
    rid: Any,
    key_encryption_algorithm: AlgorithmIdentifierOwned,
    encrypted_key: OctetString,
}

/// `EncryptedContentInfo` (RFC 5652 §6.1).
#[derive(Sequence)]
struct EncryptedContentInfo {
    content_type: ObjectIdentifier,
    content_encryption_algorithm: AlgorithmIdentifierOwned,
    #[asn1(context_specific = "0", tag_mode = "IMPLICIT", optional = "true")]
    encrypted_content: Option<OctetString>,
}

/// `EnvelopedData` as written (version 0, no originatorInfo/unprotectedAttrs).
#[derive(Sequence)]
struct EnvelopedDataV0 {
    version: u8,
    recipient_infos: SetOfVec<Any>,
    encrypted_content_info: EncryptedContentInfo,
}

/// `RSAES-OAEP-params` (RFC 4055 §4.1; the module uses EXPLICIT TAGS).
#[derive(Sequence)]
struct RsaesOaepParams {
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    hash_func: Option<AlgorithmIdentifierOwned>,
    #[asn1(context_specific = "1", tag_mode = "EXPLICIT", optional = "true")]
    mask_gen_func: Option<AlgorithmIdentifierOwned>,
    #[asn1(context_specific = "2", tag_mode = "EXPLICIT", optional = "true")]
    p_source_func: Option<AlgorithmIdentifierOwned>,
}

/// sha256Identifier with NULL parameters (RFC 4055 §2.1).
fn sha256_identifier() -> Result<AlgorithmIdentifierOwned, der::Error> {
    Ok(AlgorithmIdentifierOwned {
        oid: ID_SHA256,
        parameters: Some(Any::encode_from(&Null)?),
    })
}

/// id-RSAES-OAEP with SHA-256 and MGF1-SHA-256 (RFC 4055 §4.1, §4.2).
fn oaep_sha256_identifier() -> Result<AlgorithmIdentifierOwned, der::Error> {
    let params = RsaesOaepParams {
        hash_func: Some(sha256_identifier()?),
        mask_gen_func: Some(AlgorithmIdentifierOwned {
            oid: ID_MGF1,
            parameters: Some(Any::encode_from(&sha256_identifier()?)?),
        }),
        p_source_func: None,
    };
    Ok(AlgorithmIdentifierOwned {
        oid: ID_RSAES_OAEP,
        parameters: Some(Any::encode_from(&params)?),
    })
}

/// Whether `alg` is sha256 with NULL or absent parameters (RFC 4055 §2.1).
fn is_sha256(alg: &AlgorithmIdentifierOwned) -> bool {
    alg.oid == ID_SHA256
        && alg
            .parameters
            .as_ref()
            .is_none_or(|p| p.tag() == Tag::Null && p.value().is_empty())
}

/// Check an id-RSAES-OAEP identifier is SHA-256 / MGF1-SHA-256 / empty label.
fn check_oaep(alg: &AlgorithmIdentifierOwned) -> Result<(), String> {
    let bad = |what: &str| {
        format!("RSAES-OAEP with {what}; chop accepts only SHA-256 with MGF1-SHA-256 and no label")
    };
    let params: RsaesOaepParams = alg
        .parameters
        .as_ref()
        .ok_or_else(|| bad("no parameters (SHA-1)"))?
        .decode_as()
        .map_err(|e| bad(&format!("unreadable parameters ({e})")))?;
    if !params.hash_func.as_ref().is_some_and(is_sha256) {
        return Err(bad("a hash other than SHA-256"));
    }
    let mgf_ok = params.mask_gen_func.as_ref().is_some_and(|m| {
        m.oid == ID_MGF1
            && m.parameters
                .as_ref()
                .and_then(|p| p.decode_as::<AlgorithmIdentifierOwned>().ok())
                .as_ref()
                .is_some_and(is_sha256)
    });
    if !mgf_ok {
        return Err(bad("a mask generation other than MGF1-SHA-256"));
    }
    if let Some(p) = &params.p_source_func {
        let empty = p.oid == ID_P_SPECIFIED
            && p.parameters
                .as_ref()
                .and_then(|x| x.decode_as::<OctetString>().ok())
                .is_some_and(|l| l.as_bytes().is_empty());
        if !empty {
            return Err(bad("a label"));
        }
    }
    Ok(())
}

/// Encrypt `plaintext` to the RSA key of the certificate `cert_pem` as a PEM
/// `CMS` EnvelopedData (module doc). The error says what is wrong with the
/// certificate.
pub(crate) fn encrypt_to_certificate(cert_pem: &str, plaintext: &[u8]) -> Result<String, String> {
    use der::DecodePem;
    let cert = Certificate::from_pem(cert_pem.as_bytes())
        .map_err(|e| format!("not a PEM X.509 certificate: {e}"))?;
    let spki = &cert.tbs_certificate.subject_public_key_info;
    match KeySpec::of(spki) {
        Ok(KeySpec::Rsa { bits }) if bits >= 2048 => {}
        Ok(KeySpec::Rsa { bits }) => {
            return Err(format!(
                "RSA key of {bits} bits; custodian keys need at least 2048"
            ));
        }
        Ok(other) => {
            return Err(format!(
                "{other} key; custodian certificates must have an RSA key (key transport; EC would need KeyAgreeRecipientInfo, which chop does not write)"
            ));
        }
        Err(e) => return Err(e.to_string()),
    }
    let spki_der = spki.to_der().map_err(|e| e.to_string())?;
    let public = aws_lc_rs::rsa::PublicEncryptingKey::from_der(&spki_der)
        .map_err(|e| format!("RSA public key rejected: {e}"))?;
    let oaep = aws_lc_rs::rsa::OaepPublicEncryptingKey::new(public)
        .map_err(|_| "RSA public key unusable for OAEP".to_string())?;

    let mut cek = Zeroizing::new([0u8; 32]);
    aws_lc_rs::rand::fill(cek.as_mut()).map_err(|_| "random content key".to_string())?;
    let mut encrypted_key = vec![0u8; oaep.ciphertext_size()];
    let encrypted_key = oaep
        .encrypt(
            &aws_lc_rs::rsa::OAEP_SHA256_MGF1SHA256,
            cek.as_ref(),
            &mut encrypted_key,
            None,
        )
        .map_err(|_| "RSA-OAEP encryption failed".to_string())?
        .to_vec();

    let key = aws_lc_rs::cipher::UnboundCipherKey::new(&aws_lc_rs::cipher::AES_256, cek.as_ref())
        .map_err(|_| "AES key".to_string())?;
    let cbc = aws_lc_rs::cipher::PaddedBlockEncryptingKey::cbc_pkcs7(key)
        .map_err(|_| "AES-CBC key".to_string())?;
    // Room for the padding, so that encrypting in place never reallocates (which
    // would free a plaintext copy unzeroized).
    let mut content = Vec::with_capacity(plaintext.len() + 16);
    content.extend_from_slice(plaintext);
    let context = cbc
        .encrypt(&mut content)
        .map_err(|_| "AES-CBC encryption failed".to_string())?;
    let iv: [u8; 16] = match context {
        aws_lc_rs::cipher::DecryptionContext::Iv128(iv) => *iv.as_ref(),
        _ => return Err("AES-CBC gave no IV".into()),
    };

    let der_err = |e: der::Error| format!("encoding the envelope: {e}");
    let rid = IssuerAndSerialNumber {
        issuer: cert.tbs_certificate.issuer.clone(),
        serial_number: cert.tbs_certificate.serial_number.clone(),
    };
    let ktri = KeyTransRecipientInfo {
        version: 0,
        rid: Any::encode_from(&rid).map_err(der_err)?,
        key_encryption_algorithm: oaep_sha256_identifier().map_err(der_err)?,
        encrypted_key: OctetString::new(encrypted_key).map_err(der_err)?,
    };
    let mut recipient_infos = SetOfVec::new();
    recipient_infos
        .insert(Any::encode_from(&ktri).map_err(der_err)?)
        .map_err(der_err)?;
    let enveloped = EnvelopedDataV0 {
        version: 0,
        recipient_infos,
        encrypted_content_info: EncryptedContentInfo {
            content_type: ID_DATA,
            content_encryption_algorithm: AlgorithmIdentifierOwned {
                oid: ID_AES256_CBC,
                parameters: Some(
                    Any::encode_from(&OctetString::new(iv.to_vec()).map_err(der_err)?)
                        .map_err(der_err)?,
                ),
            },
            encrypted_content: Some(OctetString::new(content).map_err(der_err)?),
        },
    };
    let info = ContentInfo {
        content_type: ID_ENVELOPED_DATA,
        content: Any::encode_from(&enveloped).map_err(der_err)?,
    };
    let der = info.to_der().map_err(der_err)?;
    der::pem::encode_string("CMS", der::pem::LineEnding::LF, &der)
        .map_err(|e| format!("PEM encoding: {e}"))
}

/// One key-transport recipient of an envelope: its encrypted CEK, or why its key
/// transport is refused.
struct Recipient {
    encrypted_key: Result<Vec<u8>, String>,
}

/// A parsed EnvelopedData ready to decrypt. `Debug` shows sizes only.
pub(crate) struct Envelope {
    recipients: Vec<Recipient>,
    iv: [u8; 16],
    ciphertext: Vec<u8>,
}

impl fmt::Debug for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Envelope")
            .field("recipients", &self.recipients.len())
            .field("ciphertext", &Redacted)
            .finish()
    }
}

impl Envelope {
    /// Parse a PEM (`CMS` or `PKCS7`) ContentInfo holding an EnvelopedData. The
    /// error says what is wrong (and which command produces what is accepted).
    pub(crate) fn parse(pem: &str) -> Result<Envelope, String> {
        if pem.len() > MAX_ENVELOPE {
            return Err(format!(
                "{} octets; a share envelope is at most {MAX_ENVELOPE}",
                pem.len()
            ));
        }
        let (label, der) = der::pem::decode_vec(pem.trim().as_bytes())
            .map_err(|e| format!("not PEM ({e}); produce it with: {OPENSSL_ENCRYPT}"))?;
        if label != "CMS" && label != "PKCS7" {
            return Err(format!("PEM label {label:?}, expected \"CMS\""));
        }
        let info = ContentInfo::from_der(&der).map_err(|e| {
            format!("not a DER CMS ContentInfo ({e}); produce it with: {OPENSSL_ENCRYPT}")
        })?;
        if info.content_type != ID_ENVELOPED_DATA {
            return Err(format!(
                "CMS content type {} is not envelopedData (1.2.840.113549.1.7.3); produce it with: {OPENSSL_ENCRYPT}",
                info.content_type
            ));
        }
        Self::parse_enveloped(&info.content).map_err(|e| format!("EnvelopedData: {e}"))
    }

    fn parse_enveloped(content: &Any) -> Result<Envelope, String> {
        let der_err = |e: der::Error| e.to_string();
        if content.tag() != Tag::Sequence {
            return Err("not a SEQUENCE".into());
        }
        let mut r = SliceReader::new(content.value()).map_err(der_err)?;
        let _version: der::asn1::Int = r.decode().map_err(der_err)?;
        // originatorInfo [0] IMPLICIT OPTIONAL (RFC 5652 §6.1): skipped.
        if r.peek_tag().map_err(der_err)?
            == (Tag::ContextSpecific {
                constructed: true,
                number: TagNumber::N0,
            })
        {
            let _: Any = r.decode().map_err(der_err)?;
        }
        let set: Any = r.decode().map_err(der_err)?;
        if set.tag() != Tag::Set {
            return Err("recipientInfos is not a SET".into());
        }
        let mut recipients = Vec::new();
        let mut items = SliceReader::new(set.value()).map_err(der_err)?;
        while !items.is_finished() {
            if recipients.len() == MAX_RECIPIENTS {
                return Err(format!("more than {MAX_RECIPIENTS} recipients"));
            }
            let item: Any = items.decode().map_err(der_err)?;
            if item.tag() != Tag::Sequence {
                // kari [1], kekri [2], pwri [3], ori [4] (RFC 5652 §6.2).
                recipients.push(Recipient {
                    encrypted_key: Err(format!(
                        "recipient type {} is not key transport (KeyTransRecipientInfo)",
                        item.tag()
                    )),
                });
                continue;
            }
            let ktri: KeyTransRecipientInfo = item.decode_as().map_err(der_err)?;
            let alg = &ktri.key_encryption_algorithm;
            let encrypted_key = if alg.oid == ID_RSAES_OAEP {
                check_oaep(alg).map(|()| ktri.encrypted_key.as_bytes().to_vec())
            } else if alg.oid == RSA_ENCRYPTION {
                Err("RSA PKCS#1 v1.5 key transport (rsaEncryption) is refused (padding oracle); use RSAES-OAEP with SHA-256".into())
            } else {
                Err(format!("key transport {} is not RSAES-OAEP", alg.oid))
            };
            recipients.push(Recipient { encrypted_key });
        }
        let eci: EncryptedContentInfo = r.decode().map_err(der_err)?;
        // unprotectedAttrs [1] IMPLICIT OPTIONAL: ignored.
        let cea = &eci.content_encryption_algorithm;
        if cea.oid != ID_AES256_CBC {
            return Err(format!(
                "content encryption {} is not AES-256-CBC (2.16.840.1.101.3.4.1.42); produce it with: {OPENSSL_ENCRYPT}",
                cea.oid
            ));
        }
        let iv: [u8; 16] = cea
            .parameters
            .as_ref()
            .and_then(|p| p.decode_as::<OctetString>().ok())
            .and_then(|iv| <[u8; 16]>::try_from(iv.as_bytes()).ok())
            .ok_or("AES-256-CBC parameters are not a 16-octet IV (RFC 3565 §4.1)")?;
        let ciphertext = eci
            .encrypted_content
            .ok_or("no encryptedContent (detached content is not accepted)")?
            .into_bytes();
        if ciphertext.is_empty() || ciphertext.len() % 16 != 0 {
            return Err("encryptedContent is not a whole number of AES blocks".into());
        }
        Ok(Envelope {
            recipients,
            iv,
            ciphertext,
        })
    }

    /// Decrypt: `decrypt_cek` is tried on each acceptable recipient's encrypted
    /// CEK (RSAES-OAEP-SHA256 with the holder's private key) until one gives a
    /// 32-octet key, which then decrypts the content. The error says why none did.
    pub(crate) fn decrypt(
        &self,
        mut decrypt_cek: impl FnMut(&[u8]) -> Result<Zeroizing<Vec<u8>>, String>,
    ) -> Result<Zeroizing<Vec<u8>>, String> {
        let mut why = Vec::new();
        let mut cek = None;
        for r in &self.recipients {
            match &r.encrypted_key {
                Ok(k) => match decrypt_cek(k) {
                    Ok(key) if key.len() == 32 => {
                        cek = Some(key);
                        break;
                    }
                    Ok(key) => why.push(format!(
                        "content key of {} octets is not AES-256",
                        key.len()
                    )),
                    Err(e) => why.push(e),
                },
                Err(e) => why.push(format!("{e}; produce it with: {OPENSSL_ENCRYPT}")),
            }
        }
        let Some(cek) = cek else {
            if why.is_empty() {
                why.push("no recipients".into());
            }
            return Err(why.join("; "));
        };
        let key = aws_lc_rs::cipher::UnboundCipherKey::new(&aws_lc_rs::cipher::AES_256, &cek)
            .map_err(|_| "AES key".to_string())?;
        let cbc = aws_lc_rs::cipher::PaddedBlockDecryptingKey::cbc_pkcs7(key)
            .map_err(|_| "AES-CBC key".to_string())?;
        let mut buf = Zeroizing::new(self.ciphertext.clone());
        let context = aws_lc_rs::cipher::DecryptionContext::Iv128(self.iv.into());
        let plain = cbc
            .decrypt(&mut buf, context)
            .map_err(|_| CONTENT_ERROR.to_string())?;
        Ok(Zeroizing::new(plain.to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oaep_identifier_round_trips_and_sha1_is_refused() {
        let alg = oaep_sha256_identifier().unwrap();
        check_oaep(&alg).unwrap();
        let sha1_default = AlgorithmIdentifierOwned {
            oid: ID_RSAES_OAEP,
            parameters: Some(
                Any::encode_from(&RsaesOaepParams {
                    hash_func: None,
                    mask_gen_func: None,
                    p_source_func: None,
                })
                .unwrap(),
            ),
        };
        assert!(check_oaep(&sha1_default).unwrap_err().contains("SHA-256"));
    }
}
