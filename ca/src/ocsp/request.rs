//! OCSP requests (RFC 6960 §4.1) from POST bodies and GET paths (RFC 5019 §5,
//! RFC 6960 Appendix A.1).
//!
//! ```text
//! OCSPRequest ::= SEQUENCE {
//!     tbsRequest                  TBSRequest,
//!     optionalSignature   [0]     EXPLICIT Signature OPTIONAL }
//!
//! TBSRequest ::= SEQUENCE {
//!     version             [0]     EXPLICIT Version DEFAULT v1,
//!     requestorName       [1]     EXPLICIT GeneralName OPTIONAL,
//!     requestList                 SEQUENCE OF Request,
//!     requestExtensions   [2]     EXPLICIT Extensions OPTIONAL }
//!
//! Request ::= SEQUENCE {
//!     reqCert                     CertID,
//!     singleRequestExtensions [0] EXPLICIT Extensions OPTIONAL }
//!
//! CertID ::= SEQUENCE {
//!     hashAlgorithm           AlgorithmIdentifier,
//!     issuerNameHash          OCTET STRING, -- Hash of issuer's DN
//!     issuerKeyHash           OCTET STRING, -- Hash of issuer's public key
//!     serialNumber            CertificateSerialNumber }
//! ```
//!
//! The parser borrows the request bytes and keeps each CertID's DER so the
//! response can echo it unchanged (RFC 6960 §4.2.1: the response's certID is the
//! request's). A signature on the request is accepted and ignored (RFC 6960 §4.1.2
//! makes signing optional; chop does not require it, RFC 5019 §2.1.1 says
//! requests are unsigned).

use base64::Engine;

use crate::crl::wire::{Reader, oid, tag};
use crate::error::{Error, Result};
use crate::serial::Serial;

/// The hash algorithm of a CertID.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CertIdHash {
    /// SHA-1 (RFC 6960's and RFC 5019's default, what most clients send).
    Sha1,
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl CertIdHash {
    pub(crate) const ALL: [CertIdHash; 4] = [
        CertIdHash::Sha1,
        CertIdHash::Sha256,
        CertIdHash::Sha384,
        CertIdHash::Sha512,
    ];

    fn from_oid(oid: &[u8]) -> Option<CertIdHash> {
        match oid {
            oid::SHA1 => Some(CertIdHash::Sha1),
            oid::SHA256 => Some(CertIdHash::Sha256),
            oid::SHA384 => Some(CertIdHash::Sha384),
            oid::SHA512 => Some(CertIdHash::Sha512),
            _ => None,
        }
    }

    pub(crate) fn digest(self, data: &[u8]) -> Vec<u8> {
        use aws_lc_rs::digest;
        let alg = match self {
            CertIdHash::Sha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
            CertIdHash::Sha256 => &digest::SHA256,
            CertIdHash::Sha384 => &digest::SHA384,
            CertIdHash::Sha512 => &digest::SHA512,
        };
        digest::digest(alg, data).as_ref().to_vec()
    }
}

/// One CertID of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestedCert<'a> {
    /// The CertID's DER, echoed in the response.
    pub cert_id: &'a [u8],
    /// Its hash algorithm, if chop supports it.
    pub hash: Option<CertIdHash>,
    /// issuerNameHash.
    pub issuer_name_hash: &'a [u8],
    /// issuerKeyHash.
    pub issuer_key_hash: &'a [u8],
    /// serialNumber INTEGER content octets, as sent.
    pub serial_content: &'a [u8],
}

impl RequestedCert<'_> {
    /// The serial number, if it is a valid one (positive, at most 20 octets). A
    /// serial that is not valid was never issued.
    pub fn serial(&self) -> Option<Serial> {
        Serial::from_der_content(self.serial_content).ok()
    }
}

/// A parsed OCSP request, borrowing its DER.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OcspRequest<'a> {
    /// The CertIDs, in request order.
    pub certs: Vec<RequestedCert<'a>>,
    /// The nonce extension's extnValue content as sent (normally a DER OCTET
    /// STRING, RFC 8954 §2.1), echoed verbatim.
    pub nonce: Option<&'a [u8]>,
    /// Whether the request carried optionalSignature (accepted, not checked).
    pub signed: bool,
}

impl OcspRequest<'_> {
    /// A key for caching the response of a request without nonce: the
    /// concatenated CertID DER (RFC 5019 §2.1.1: one CertID per request is the
    /// norm). `None` when the request has a nonce, whose answer must be fresh.
    pub fn cache_key(&self) -> Option<Vec<u8>> {
        if self.nonce.is_some() {
            return None;
        }
        Some(
            self.certs
                .iter()
                .flat_map(|c| c.cert_id.iter().copied())
                .collect(),
        )
    }
}

fn bad(detail: impl Into<String>) -> Error {
    Error::OcspMalformed(detail.into())
}

/// RFC 8954 §2.1: "Nonce ::= OCTET STRING(SIZE(1..32))"; "an OCSP responder ...
/// MUST reject any OCSP request that has a nonce with a length greater than 32
/// octets" (and one with none: the minimum is 1).
pub const MAX_NONCE_LEN: usize = 32;

/// Parse a DER OCSPRequest, at most `max_certs` CertIDs. Errors are
/// [`Error::OcspMalformed`] (answered with `malformedRequest`).
pub fn parse_request(der: &[u8], max_certs: usize) -> Result<OcspRequest<'_>> {
    let wrap = |e: Error| match e {
        Error::OcspMalformed(_) => e,
        other => bad(other.to_string()),
    };
    parse_inner(der, max_certs).map_err(wrap)
}

fn parse_inner(der: &[u8], max_certs: usize) -> Result<OcspRequest<'_>> {
    let mut outer = Reader::new(der);
    let req = outer.expect(tag::SEQUENCE, "OCSPRequest")?;
    outer.finish("OCSPRequest")?;
    let mut r = Reader::new(req.value);
    let tbs = r.expect(tag::SEQUENCE, "TBSRequest")?;
    let signed = r.optional(tag::ctx_cons(0))?.is_some();
    r.finish("OCSPRequest")?;

    let mut t = Reader::new(tbs.value);
    if let Some(v) = t.optional(tag::ctx_cons(0))? {
        let version = Reader::new(v.value).expect(tag::INTEGER, "version")?;
        if version.value != [0] {
            return Err(bad("only OCSP v1 requests exist (RFC 6960 §4.1.1)"));
        }
    }
    t.optional(tag::ctx_cons(1))?; // requestorName, ignored
    let list = t.expect(tag::SEQUENCE, "requestList")?;
    let mut nonce = None;
    if let Some(exts) = t.optional(tag::ctx_cons(2))? {
        let mut er = Reader::new(exts.value);
        let seq = er.expect(tag::SEQUENCE, "requestExtensions")?;
        er.finish("requestExtensions")?;
        let mut l = Reader::new(seq.value);
        while !l.is_empty() {
            let ext = l.expect(tag::SEQUENCE, "Extension")?;
            let mut e = Reader::new(ext.value);
            let id = e.expect(tag::OID, "extnID")?.value;
            e.optional(tag::BOOLEAN)?;
            let value = e.expect(tag::OCTET_STRING, "extnValue")?.value;
            e.finish("Extension")?;
            if id == oid::OCSP_NONCE {
                if nonce.is_some() {
                    return Err(bad("two nonce extensions"));
                }
                check_nonce(value)?;
                nonce = Some(value);
            }
            // Other extensions are optional to support (RFC 6960 §4.4) and ignored.
        }
    }
    t.finish("TBSRequest")?;

    let mut certs = Vec::new();
    let mut lr = Reader::new(list.value);
    while !lr.is_empty() {
        if certs.len() == max_certs {
            return Err(bad(format!("more than {max_certs} CertIDs in one request")));
        }
        let one = lr.expect(tag::SEQUENCE, "Request")?;
        let mut q = Reader::new(one.value);
        let cert_id = q.expect(tag::SEQUENCE, "CertID")?;
        q.optional(tag::ctx_cons(0))?; // singleRequestExtensions, ignored
        q.finish("Request")?;
        let mut c = Reader::new(cert_id.value);
        let alg = c.expect(tag::SEQUENCE, "hashAlgorithm")?;
        let name = c.expect(tag::OCTET_STRING, "issuerNameHash")?;
        let key = c.expect(tag::OCTET_STRING, "issuerKeyHash")?;
        let serial = c.expect(tag::INTEGER, "serialNumber")?;
        c.finish("CertID")?;
        if serial.value.is_empty() {
            return Err(bad("empty serialNumber"));
        }
        let mut a = Reader::new(alg.value);
        let alg_oid = a.expect(tag::OID, "hash algorithm")?.value;
        // Parameters: absent or NULL (RFC 5754 §2 allows both for SHA-2).
        a.optional(tag::NULL)?;
        a.finish("hashAlgorithm")?;
        certs.push(RequestedCert {
            cert_id: cert_id.raw,
            hash: CertIdHash::from_oid(alg_oid),
            issuer_name_hash: name.value,
            issuer_key_hash: key.value,
            serial_content: serial.value,
        });
    }
    if certs.is_empty() {
        return Err(bad("empty requestList"));
    }
    Ok(OcspRequest {
        certs,
        nonce,
        signed,
    })
}

/// The nonce's length check (RFC 8954 §2.1). The extnValue normally wraps the
/// nonce in an OCTET STRING; some old clients put the raw octets there, which is
/// tolerated with the same limits.
fn check_nonce(value: &[u8]) -> Result<()> {
    let mut r = Reader::new(value);
    let len = match r.read() {
        Ok(t) if t.tag == tag::OCTET_STRING && r.is_empty() => t.value.len(),
        _ => value.len(),
    };
    if len == 0 || len > MAX_NONCE_LEN {
        return Err(bad(format!(
            "nonce of {len} octets; RFC 8954 allows 1 to {MAX_NONCE_LEN}"
        )));
    }
    Ok(())
}

/// The longest GET path accepted (base64 of a 4 KiB request). RFC 5019 §5 expects
/// GET for requests under 255 octets; bigger ones are tolerated up to this.
pub const MAX_GET_PATH: usize = 8192;

/// Decode the request from the path of an HTTP GET: `{url}/{url-encoding of
/// base-64 encoding of the DER encoding of the OCSPRequest}` (RFC 6960 §A.1.1,
/// RFC 5019 §5). `path` is what follows the responder's base URL; leading slashes
/// are dropped (a DER OCSPRequest starts with 0x30, so its base64 starts with
/// `M`).
///
/// Tolerated, as RFC 5019 §5 warns clients get it wrong: percent-encoded `%2F`,
/// `%2B`, `%3D` (any case), unencoded `/` inside the base64, `+` turned into a
/// space by form encoding, missing `=` padding, and the URL-safe alphabet.
pub fn parse_get_path(path: &str) -> Result<Vec<u8>> {
    if path.len() > MAX_GET_PATH {
        return Err(bad(format!("GET path longer than {MAX_GET_PATH} octets")));
    }
    let decoded =
        percent_encoding::percent_decode_str(path.trim_start_matches('/')).collect::<Vec<u8>>();
    let mut b64: Vec<u8> = Vec::with_capacity(decoded.len() + 3);
    for c in decoded {
        match c {
            b' ' => b64.push(b'+'),
            b'-' => b64.push(b'+'),
            b'_' => b64.push(b'/'),
            b'=' | b'\r' | b'\n' => {}
            c => b64.push(c),
        }
    }
    while !b64.len().is_multiple_of(4) {
        b64.push(b'=');
    }
    base64::engine::general_purpose::STANDARD
        .decode(&b64)
        .map_err(|e| bad(format!("GET path is not base64: {e}")))
}

/// Build an unsigned DER `OCSPRequest` (RFC 6960 §4.1.1) asking about `serials`
/// issued by `issuer`, with an optional nonce (RFC 8954: 1 to 32 octets).
///
/// For clients of chop's responder: the CLI, the samples, benchmarks and tests.
/// Per RFC 6960 §4.1.1, issuerNameHash is the hash of the DER of the issuer's
/// subject name and issuerKeyHash the hash of the value of its subjectPublicKey
/// BIT STRING (excluding tag, length and unused-bits octet). The hash
/// AlgorithmIdentifier carries NULL parameters, as OpenSSL sends it.
pub fn build_request(
    issuer: &x509_cert::Certificate,
    serials: &[Serial],
    hash: CertIdHash,
    nonce: Option<&[u8]>,
) -> Result<Vec<u8>> {
    use der::asn1::{Null, OctetString};
    use der::{Any, Encode};
    use spki::AlgorithmIdentifierOwned;
    use x509_cert::ext::{AsExtension, Extensions};
    use x509_ocsp::{CertId, OcspRequest, Request, TbsRequest, Version};

    if let Some(n) = nonce
        && (n.is_empty() || n.len() > 32)
    {
        return Err(Error::OcspMalformed(format!(
            "nonce of {} octets; RFC 8954 allows 1 to 32",
            n.len()
        )));
    }
    let hash_oid = match hash {
        CertIdHash::Sha1 => const_oid::db::rfc5912::ID_SHA_1,
        CertIdHash::Sha256 => const_oid::db::rfc5912::ID_SHA_256,
        CertIdHash::Sha384 => const_oid::db::rfc5912::ID_SHA_384,
        CertIdHash::Sha512 => const_oid::db::rfc5912::ID_SHA_512,
    };
    let subject = issuer.tbs_certificate.subject.to_der()?;
    let key = issuer
        .tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .raw_bytes();
    let name_hash = OctetString::new(hash.digest(&subject))?;
    let key_hash = OctetString::new(hash.digest(key))?;
    let mut request_list = Vec::with_capacity(serials.len());
    for serial in serials {
        request_list.push(Request {
            req_cert: CertId {
                hash_algorithm: AlgorithmIdentifierOwned {
                    oid: hash_oid,
                    parameters: Some(Any::from(Null)),
                },
                issuer_name_hash: name_hash.clone(),
                issuer_key_hash: key_hash.clone(),
                serial_number: serial.to_serial_number()?,
            },
            single_request_extensions: None,
        });
    }
    let request_extensions: Option<Extensions> = match nonce {
        Some(n) => {
            let ext = x509_ocsp::ext::Nonce::new(n)?;
            Some(vec![
                ext.to_extension(&issuer.tbs_certificate.subject, &[])?,
            ])
        }
        None => None,
    };
    let request = OcspRequest {
        tbs_request: TbsRequest {
            version: Version::V1,
            requestor_name: None,
            request_list,
            request_extensions,
        },
        optional_signature: None,
    };
    Ok(request.to_der()?)
}
