//! Reading a CRL back (RFC 5280 §5.1): for tests, for the responder's repository
//! checks, and for anyone who wants to see what a published CRL says.

use std::time::SystemTime;

use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};

use super::wire::{self, Reader, oid, tag};
use crate::error::{Error, Result};
use crate::revocation::{Reason, from_unix_secs};
use crate::serial::Serial;
use crate::signer::{SignatureAlgorithm, verify};

/// One revokedCertificates entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedEntry {
    /// userCertificate.
    pub serial: Serial,
    /// revocationDate.
    pub revoked_at: SystemTime,
    /// reasonCode; `None` when absent (meaning unspecified, RFC 5280 §5.3.1).
    pub reason: Option<Reason>,
    /// invalidityDate (RFC 5280 §5.3.2).
    pub invalidity_date: Option<SystemTime>,
}

/// A decoded CRL, borrowing the DER it came from.
#[derive(Clone, Debug)]
pub struct ParsedCrl<'a> {
    tbs: &'a [u8],
    signature: &'a [u8],
    /// signatureAlgorithm.
    pub signature_algorithm: SignatureAlgorithm,
    /// version (1 for v2).
    pub version: Option<u8>,
    /// issuer Name, DER.
    pub issuer: &'a [u8],
    /// thisUpdate.
    pub this_update: SystemTime,
    /// nextUpdate.
    pub next_update: Option<SystemTime>,
    /// cRLNumber, if present and at most 8 octets.
    pub number: Option<u64>,
    /// authorityKeyIdentifier keyIdentifier.
    pub authority_key_id: Option<Vec<u8>>,
    /// The issuingDistributionPoint fullName URI and whether the extension is
    /// critical.
    pub issuing_distribution_point: Option<(String, bool)>,
    /// revokedCertificates, in the order they appear.
    pub entries: Vec<ParsedEntry>,
}

fn bad(detail: impl Into<String>) -> Error {
    Error::Malformed {
        what: "CRL",
        detail: detail.into(),
    }
}

/// Decode a DER CertificateList. Checks structure only; call
/// [`ParsedCrl::verify_signature`] to check the signature.
pub fn parse_crl(der: &[u8]) -> Result<ParsedCrl<'_>> {
    let mut outer = Reader::new(der);
    let list = outer.expect(tag::SEQUENCE, "CertificateList")?;
    outer.finish("CertificateList")?;
    let mut c = Reader::new(list.value);
    let tbs = c.expect(tag::SEQUENCE, "TBSCertList")?;
    let alg = c.expect(tag::SEQUENCE, "signatureAlgorithm")?;
    let sig = c.expect(tag::BIT_STRING, "signatureValue")?;
    c.finish("CertificateList")?;
    let signature = match sig.value.split_first() {
        Some((0, rest)) => rest,
        _ => return Err(bad("signatureValue has unused bits")),
    };
    let alg_id: AlgorithmIdentifierOwned = der::Decode::from_der(alg.raw)?;
    let signature_algorithm = SignatureAlgorithm::from_algorithm_identifier(&alg_id)?;

    let mut t = Reader::new(tbs.value);
    let version = match t.optional(tag::INTEGER)? {
        Some(v) if v.value.len() == 1 => Some(v.value[0]),
        Some(_) => return Err(bad("bad version")),
        None => None,
    };
    let inner_alg = t.expect(tag::SEQUENCE, "signature")?;
    if inner_alg.raw != alg.raw {
        return Err(bad(
            "signature and signatureAlgorithm differ (RFC 5280 §5.1.1.2)",
        ));
    }
    let issuer = t.expect(tag::SEQUENCE, "issuer")?.raw;
    let this_update = from_unix_secs(wire::parse_time(&t.read()?)?);
    let next_update = match t.peek_tag() {
        Some(tag::UTC_TIME | tag::GENERALIZED_TIME) => {
            Some(from_unix_secs(wire::parse_time(&t.read()?)?))
        }
        _ => None,
    };
    let mut entries = Vec::new();
    if let Some(list) = t.optional(tag::SEQUENCE)? {
        let mut r = Reader::new(list.value);
        while !r.is_empty() {
            entries.push(parse_entry(&r.expect(tag::SEQUENCE, "revoked entry")?)?);
        }
    }
    let mut crl = ParsedCrl {
        tbs: tbs.raw,
        signature,
        signature_algorithm,
        version,
        issuer,
        this_update,
        next_update,
        number: None,
        authority_key_id: None,
        issuing_distribution_point: None,
        entries,
    };
    if let Some(exts) = t.optional(tag::ctx_cons(0))? {
        for (id, critical, value) in wire::parse_extensions(exts.value)? {
            match id {
                oid::CRL_NUMBER => {
                    let n = Reader::new(value).expect(tag::INTEGER, "cRLNumber")?;
                    if n.value.len() <= 9 && n.value.first().is_some_and(|b| b & 0x80 == 0) {
                        crl.number =
                            Some(n.value.iter().fold(0u64, |a, b| (a << 8) | u64::from(*b)));
                    }
                }
                oid::AUTHORITY_KEY_ID => {
                    let seq = Reader::new(value).expect(tag::SEQUENCE, "authorityKeyIdentifier")?;
                    let mut r = Reader::new(seq.value);
                    if let Some(k) = r.optional(tag::ctx_prim(0))? {
                        crl.authority_key_id = Some(k.value.to_vec());
                    }
                }
                oid::ISSUING_DISTRIBUTION_POINT => {
                    let seq =
                        Reader::new(value).expect(tag::SEQUENCE, "issuingDistributionPoint")?;
                    let dp =
                        Reader::new(seq.value).expect(tag::ctx_cons(0), "distributionPoint")?;
                    let full = Reader::new(dp.value).expect(tag::ctx_cons(0), "fullName")?;
                    let uri = Reader::new(full.value).expect(tag::ctx_prim(6), "URI")?;
                    let url = String::from_utf8(uri.value.to_vec())
                        .map_err(|_| bad("distribution point URI is not ASCII"))?;
                    crl.issuing_distribution_point = Some((url, critical));
                }
                _ if critical => {
                    return Err(bad("unrecognised critical CRL extension"));
                }
                _ => {}
            }
        }
    }
    t.finish("TBSCertList")?;
    Ok(crl)
}

fn parse_entry(e: &wire::Tlv<'_>) -> Result<ParsedEntry> {
    let mut r = Reader::new(e.value);
    let serial = Serial::from_der_content(r.expect(tag::INTEGER, "userCertificate")?.value)?;
    let revoked_at = from_unix_secs(wire::parse_time(&r.read()?)?);
    let mut entry = ParsedEntry {
        serial,
        revoked_at,
        reason: None,
        invalidity_date: None,
    };
    if let Some(exts) = r.optional(tag::SEQUENCE)? {
        let mut list = Reader::new(exts.value);
        while !list.is_empty() {
            let ext = list.expect(tag::SEQUENCE, "Extension")?;
            let mut x = Reader::new(ext.value);
            let id = x.expect(tag::OID, "extnID")?.value;
            let critical = x.optional(tag::BOOLEAN)?.is_some_and(|b| b.value == [0xff]);
            let value = x.expect(tag::OCTET_STRING, "extnValue")?.value;
            match id {
                oid::CRL_REASON => {
                    let v = Reader::new(value).expect(tag::ENUMERATED, "CRLReason")?;
                    entry.reason = match v.value {
                        [code] => Reason::from_code(*code),
                        _ => None,
                    };
                    if entry.reason.is_none() {
                        return Err(bad("unknown CRLReason"));
                    }
                }
                oid::INVALIDITY_DATE => {
                    let t = Reader::new(value).expect(tag::GENERALIZED_TIME, "invalidityDate")?;
                    entry.invalidity_date = Some(from_unix_secs(wire::parse_time(&t)?));
                }
                _ if critical => return Err(bad("unrecognised critical CRL entry extension")),
                _ => {}
            }
        }
    }
    r.finish("revoked entry")?;
    Ok(entry)
}

impl ParsedCrl<'_> {
    /// Check the CRL's signature with the issuer's public key.
    pub fn verify_signature(&self, issuer_key: &SubjectPublicKeyInfoOwned) -> Result<()> {
        verify(
            issuer_key,
            self.signature_algorithm,
            self.tbs,
            self.signature,
        )
    }

    /// Whether the entries are in strictly increasing numeric serial order (sorted,
    /// no duplicates).
    pub fn is_sorted_unique(&self) -> bool {
        self.entries.windows(2).all(|w| {
            let (a, b) = (w[0].serial.as_be_bytes(), w[1].serial.as_be_bytes());
            (a.len(), a) < (b.len(), b)
        })
    }
}
