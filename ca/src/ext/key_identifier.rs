//! subjectKeyIdentifier (RFC 5280 §4.2.1.2) and authorityKeyIdentifier (§4.2.1.1).
//!
//! **Method:** RFC 7093 §2 method 1: "The keyIdentifier is composed of the leftmost
//! 160-bits of the SHA-256 hash of the value of the BIT STRING subjectPublicKey
//! (excluding the tag, length, and number of unused bits)". chop uses it for every
//! SKI it writes (roots, subordinates, subscribers, responders). The AKI of an
//! issued certificate is **copied from the issuer certificate's SKI**, never
//! recomputed, so chains work with externally issued CA certificates whose SKI
//! used another method (e.g. RFC 5280 §4.2.1.2 method 1, SHA-1).

use aws_lc_rs::digest;
use der::Decode;
use der::asn1::OctetString;
use spki::SubjectPublicKeyInfoOwned;
use x509_cert::Certificate;
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::{AuthorityKeyIdentifier, SubjectKeyIdentifier};

use super::{extension, find, oid};
use crate::error::{Error, Result};

/// Key identifier octets per RFC 7093 §2 method 1 (20 octets).
pub fn key_identifier(spki: &SubjectPublicKeyInfoOwned) -> Result<Vec<u8>> {
    let key = spki.subject_public_key.as_bytes().ok_or(Error::Malformed {
        what: "SubjectPublicKeyInfo",
        detail: "subjectPublicKey BIT STRING has unused bits".into(),
    })?;
    let hash = digest::digest(&digest::SHA256, key);
    Ok(hash.as_ref()[..20].to_vec())
}

/// subjectKeyIdentifier for `spki`. Non-critical: RFC 5280 §4.2.1.2 "Conforming CAs
/// MUST mark this extension as non-critical."
pub fn subject_key_identifier(spki: &SubjectPublicKeyInfoOwned) -> Result<Extension> {
    let id = SubjectKeyIdentifier(OctetString::new(key_identifier(spki)?)?);
    extension(oid::ID_CE_SUBJECT_KEY_IDENTIFIER, false, &id)
}

/// authorityKeyIdentifier with only keyIdentifier set to `issuer_key_id`.
/// Non-critical: RFC 5280 §4.2.1.1 "Conforming CAs MUST mark this extension as
/// non-critical." The issuer/serial form is not used (it would pin the issuer's
/// certificate and break when the CA certificate is renewed with the same key).
pub fn authority_key_identifier(issuer_key_id: &[u8]) -> Result<Extension> {
    let aki = AuthorityKeyIdentifier {
        key_identifier: Some(OctetString::new(issuer_key_id)?),
        authority_cert_issuer: None,
        authority_cert_serial_number: None,
    };
    extension(oid::ID_CE_AUTHORITY_KEY_IDENTIFIER, false, &aki)
}

/// Decode a subjectKeyIdentifier value.
pub fn parse_ski(ext: &Extension) -> Result<Vec<u8>> {
    Ok(SubjectKeyIdentifier::from_der(ext.extn_value.as_bytes())?
        .0
        .as_bytes()
        .to_vec())
}

/// Decode an authorityKeyIdentifier value.
pub fn parse_aki(ext: &Extension) -> Result<AuthorityKeyIdentifier> {
    Ok(AuthorityKeyIdentifier::from_der(ext.extn_value.as_bytes())?)
}

/// The subjectKeyIdentifier of a certificate, as found in it (`None` when absent).
pub fn certificate_ski(cert: &Certificate) -> Result<Option<Vec<u8>>> {
    let exts = cert.tbs_certificate.extensions.as_deref().unwrap_or(&[]);
    let count = exts
        .iter()
        .filter(|e| e.extn_id == oid::ID_CE_SUBJECT_KEY_IDENTIFIER)
        .count();
    if count > 1 {
        return Err(Error::Malformed {
            what: "certificate",
            detail: "more than one subjectKeyIdentifier".into(),
        });
    }
    find(exts, &oid::ID_CE_SUBJECT_KEY_IDENTIFIER)
        .map(parse_ski)
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signer::software::SoftwareKey;
    use crate::signer::{KeySpec, Signer};

    #[test]
    fn rfc7093_method_1() {
        let key = SoftwareKey::generate(KeySpec::Rsa { bits: 2048 }).unwrap();
        let spki = key.public_key();
        let id = key_identifier(spki).unwrap();
        let full = digest::digest(&digest::SHA256, spki.subject_public_key.raw_bytes());
        assert_eq!(id, full.as_ref()[..20]);
        let ski = subject_key_identifier(spki).unwrap();
        assert!(!ski.critical);
        assert_eq!(parse_ski(&ski).unwrap(), id);
        let aki = authority_key_identifier(&id).unwrap();
        assert_eq!(
            parse_aki(&aki).unwrap().key_identifier.unwrap().as_bytes(),
            id
        );
    }
}
