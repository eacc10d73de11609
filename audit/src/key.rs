//! The audit key as a verifier sees it: its DER SubjectPublicKeyInfo, the PEM form
//! the controller publishes (ConfigMap `chop-audit-key`, data `audit-key.pem`) and
//! exports carry, its key id, and signature verification.
//!
//! The key id is the lower-case hex SHA-256 of the DER SubjectPublicKeyInfo; the
//! signature is ECDSA P-256 with SHA-256, DER `ECDSA-Sig-Value` (RFC 5480 §2.1.1,
//! RFC 3279 §2.2.3), as in X.509.

use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::Error;

/// The one signature algorithm of tree heads.
pub const ALGORITHM: &str = "ecdsa-p256-sha256";

const BEGIN: &str = "-----BEGIN PUBLIC KEY-----";
const END: &str = "-----END PUBLIC KEY-----";

/// Key id: hex SHA-256 of the DER SubjectPublicKeyInfo.
pub fn key_id(spki_der: &[u8]) -> String {
    hex::encode(digest(&SHA256, spki_der))
}

/// The DER SubjectPublicKeyInfo of a PEM `PUBLIC KEY` block (the first one in
/// `pem`; text around it is ignored).
pub fn spki_from_pem(pem: &str) -> Result<Vec<u8>, Error> {
    let start = pem
        .find(BEGIN)
        .ok_or_else(|| Error::Pem(format!("no {BEGIN:?} line")))?;
    let body = &pem[start + BEGIN.len()..];
    let end = body
        .find(END)
        .ok_or_else(|| Error::Pem(format!("no {END:?} line")))?;
    let b64: String = body[..end].split_whitespace().collect();
    let der = STANDARD
        .decode(b64)
        .map_err(|e| Error::Pem(format!("the base64 between the lines is invalid: {e}")))?;
    if der.first() != Some(&0x30) {
        return Err(Error::Pem("not a DER SubjectPublicKeyInfo".to_owned()));
    }
    Ok(der)
}

/// PEM `PUBLIC KEY` block of a DER SubjectPublicKeyInfo (64-column lines).
pub fn spki_to_pem(spki_der: &[u8]) -> String {
    let b64 = STANDARD.encode(spki_der);
    let mut out = String::from(BEGIN);
    out.push('\n');
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(END);
    out.push('\n');
    out
}

/// Whether `signature` (DER ECDSA-Sig-Value) is a valid ECDSA P-256 SHA-256
/// signature of `message` by the key `spki_der`.
pub fn verify_signature(spki_der: &[u8], message: &[u8], signature: &[u8]) -> bool {
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, spki_der)
        .verify(message, signature)
        .is_ok()
}
