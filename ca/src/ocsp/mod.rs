//! OCSP responses (RFC 6960, RFC 5019; CPS §4.9.9–§4.9.11, §7.3).
//!
//! [`OcspResponder::respond`] turns request bytes into response bytes; HTTP is the
//! responder binary's job. Every outcome is a DER OCSPResponse the caller sends as
//! is (`application/ocsp-response`): junk gets `malformedRequest`, an issuer this
//! CA does not serve gets `unauthorized` (RFC 5019 §2.2.3), a signing failure gets
//! `internalError` or `tryLater`.
//!
//! ```text
//! OCSPResponse ::= SEQUENCE {
//!    responseStatus         OCSPResponseStatus,
//!    responseBytes          [0] EXPLICIT ResponseBytes OPTIONAL }
//! ResponseBytes ::= SEQUENCE { responseType OBJECT IDENTIFIER, response OCTET STRING }
//! BasicOCSPResponse ::= SEQUENCE {
//!    tbsResponseData      ResponseData,
//!    signatureAlgorithm   AlgorithmIdentifier,
//!    signature            BIT STRING,
//!    certs            [0] EXPLICIT SEQUENCE OF Certificate OPTIONAL }
//! ResponseData ::= SEQUENCE {
//!    version              [0] EXPLICIT Version DEFAULT v1,
//!    responderID              ResponderID,
//!    producedAt               GeneralizedTime,
//!    responses                SEQUENCE OF SingleResponse,
//!    responseExtensions   [1] EXPLICIT Extensions OPTIONAL }
//! SingleResponse ::= SEQUENCE {
//!    certID                       CertID,
//!    certStatus                   CertStatus,
//!    thisUpdate                   GeneralizedTime,
//!    nextUpdate         [0]       EXPLICIT GeneralizedTime OPTIONAL,
//!    singleExtensions   [1]       EXPLICIT Extensions OPTIONAL }
//! CertStatus ::= CHOICE {
//!    good        [0]     IMPLICIT NULL,
//!    revoked     [1]     IMPLICIT RevokedInfo,
//!    unknown     [2]     IMPLICIT UnknownInfo }
//! RevokedInfo ::= SEQUENCE {
//!    revocationTime              GeneralizedTime,
//!    revocationReason    [0]     EXPLICIT CRLReason OPTIONAL }
//! ```
//!
//! Decisions:
//! - responderID byName: the delegated responder certificate's subject (CPS §7.3
//!   table, "線上憑證狀態協定回應伺服器之主體名稱"; RFC 6960 §4.2.2.3).
//! - signed by the delegated responder key (CPS §4.9.9(3): an RSA 2048/SHA-256
//!   certificate signed by the CA key, with id-pkix-ocsp-nocheck), and `certs`
//!   carries that certificate (RFC 6960 §4.2.2.2: the client needs it to check the
//!   delegation; CPS §7.3 table "憑證: 線上憑證狀態協定回應伺服器之憑證").
//! - status comes from a [`StatusSource`], the same [`crate::revocation`] index the
//!   CRL is built from, so revocation time, reason and invalidity date are the
//!   CRL's (CPS §7.3: "廢止原因應與憑證機構廢止清冊所註記之原因代碼相符", the
//!   reason must match the CRL's reason code). As in the CRL, an unspecified
//!   reason is left out (RFC 5280 §5.3.1) and invalidityDate travels as a
//!   singleExtension (RFC 6960 §4.4.5 lets CRL entry extensions appear there).
//! - never `good` for a serial that was not issued (CPS §4.9.10(4), RFC 6960 §2.2):
//!   the index says `unknown`.
//! - thisUpdate = producedAt = now: the status is real time (CPS §4.9.10(3)
//!   "憑證狀態資訊為即時更新"; RFC 6960 §4.2.2.1 "thisUpdate: The most recent time
//!   at which the status being indicated is known by the responder to have been
//!   correct"). nextUpdate = now +
//!   [`OcspConfig::validity`] (default 1 h): well inside the CRL's 36 h so an
//!   OCSP answer is never staler than the CRL, and long enough for stapling
//!   (CPS §4.9.11) and pre-produced responses (RFC 6960 §4.2.2.1, RFC 5019 §6).
//! - nonce (RFC 6960 §4.4.1, RFC 8954): echoed verbatim when present (CPS
//!   §7.3.2(3)); longer than 32 octets or empty → `malformedRequest` (RFC 8954
//!   §2.1).
//! - CertIDs with SHA-1, SHA-256, SHA-384 or SHA-512 are matched against hashes
//!   precomputed at construction (RFC 6960 §4.1.1: issuerKeyHash is the hash of the
//!   subjectPublicKey BIT STRING value, without tag, length and unused-bits
//!   octet). A CertID for another issuer gets `unknown` when at least one CertID is
//!   ours, and the whole request gets `unauthorized` otherwise.

mod request;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use der::Encode;

pub use request::{
    CertIdHash, MAX_GET_PATH, MAX_NONCE_LEN, OcspRequest, RequestedCert, build_request,
    parse_get_path, parse_request,
};

use crate::crl::push_extension;
use crate::crl::wire::{self, oid, tag};
use crate::error::{Error, Result};
use crate::revocation::{CertStatus, Reason, StatusSource, unix_secs};
use crate::serial::Serial;
use crate::signer::{SignatureAlgorithm, Signer, parse_spki, verify};

/// OCSPResponseStatus (RFC 6960 §4.2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResponseStatus {
    /// successful (0): a signed BasicOCSPResponse follows.
    Successful,
    /// malformedRequest (1): the request could not be parsed.
    MalformedRequest,
    /// internalError (2).
    InternalError,
    /// tryLater (3): e.g. the signing key is temporarily unavailable.
    TryLater,
    /// unauthorized (6): no CertID names an issuer this responder serves (RFC 5019
    /// §2.2.3).
    Unauthorized,
}

impl ResponseStatus {
    /// The ENUMERATED value.
    pub const fn code(self) -> u8 {
        match self {
            ResponseStatus::Successful => 0,
            ResponseStatus::MalformedRequest => 1,
            ResponseStatus::InternalError => 2,
            ResponseStatus::TryLater => 3,
            ResponseStatus::Unauthorized => 6,
        }
    }

    /// A stable lower-camel label for metrics (`successful`, `malformedRequest`,
    /// ...), as RFC 6960 names them.
    pub const fn label(self) -> &'static str {
        match self {
            ResponseStatus::Successful => "successful",
            ResponseStatus::MalformedRequest => "malformedRequest",
            ResponseStatus::InternalError => "internalError",
            ResponseStatus::TryLater => "tryLater",
            ResponseStatus::Unauthorized => "unauthorized",
        }
    }

    /// The complete DER OCSPResponse for an unsuccessful status (no responseBytes;
    /// RFC 6960 §4.2.1: these are not signed).
    pub fn unsigned_response(self) -> Vec<u8> {
        vec![tag::SEQUENCE, 3, tag::ENUMERATED, 1, self.code()]
    }
}

/// The status given for one CertID, for metrics and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CertOutcome {
    /// good.
    Good,
    /// revoked, with the reason.
    Revoked(Reason),
    /// unknown: not issued by this CA (or not a valid serial).
    Unknown,
    /// unknown: the CertID names another issuer or an unsupported hash.
    ForeignIssuer,
}

impl CertOutcome {
    /// Metric label: `good`, `revoked`, `unknown`, `foreign`.
    pub const fn label(self) -> &'static str {
        match self {
            CertOutcome::Good => "good",
            CertOutcome::Revoked(_) => "revoked",
            CertOutcome::Unknown => "unknown",
            CertOutcome::ForeignIssuer => "foreign",
        }
    }
}

/// HTTP caching inputs (RFC 5019 §6.2): `Last-Modified` = `this_update`,
/// `Expires` = `next_update`, `Cache-Control: max-age=<max_age_secs>, public,
/// no-transform, must-revalidate` and `ETag` when `cacheable`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheHints {
    /// thisUpdate of the answer (whole seconds); `None` for unsigned statuses.
    pub this_update: Option<SystemTime>,
    /// nextUpdate of the answer; `None` for unsigned statuses.
    pub next_update: Option<SystemTime>,
    /// Seconds an HTTP cache may keep the response: min([`OcspConfig::max_age`],
    /// nextUpdate − now); 0 when not cacheable.
    pub max_age_secs: u64,
    /// Lower-case hex SHA-256 of the response DER, for `ETag` (RFC 5019 §6.2 "a
    /// unique identifier for the response, e.g. a hash of it").
    pub etag: String,
    /// Whether the response may be cached and reused for the same request: a
    /// successful response to a request without nonce (RFC 6960 §4.2.2.1 allows
    /// pre-produced responses; a nonce asks for a fresh one).
    pub cacheable: bool,
}

/// The result of answering one request.
#[derive(Clone, Debug)]
pub struct OcspAnswer {
    /// The DER OCSPResponse to send.
    pub der: Vec<u8>,
    /// Its responseStatus.
    pub status: ResponseStatus,
    /// Per CertID, in request order: the serial (if valid) and what was answered.
    pub certs: Vec<(Option<Serial>, CertOutcome)>,
    /// Caching inputs.
    pub cache: CacheHints,
    /// For requests without nonce: the concatenated CertID DER, a key under which
    /// the caller may cache `der` until `cache.next_update` (see
    /// [`OcspRequest::cache_key`]).
    pub cache_key: Option<Vec<u8>>,
    /// Why the status is not `successful`/what went wrong, for logs. Never holds
    /// secrets.
    pub detail: Option<String>,
}

/// Default response validity (nextUpdate − thisUpdate): 1 hour.
pub const DEFAULT_VALIDITY: Duration = Duration::from_secs(3600);
/// Default HTTP max-age: 5 minutes, so a revocation reaches HTTP caches within
/// minutes while the signed response stays usable for stapling for an hour.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(300);

/// Responder settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OcspConfig {
    /// nextUpdate − thisUpdate. Default [`DEFAULT_VALIDITY`].
    pub validity: Duration,
    /// Upper bound of `max-age`. Default [`DEFAULT_MAX_AGE`].
    pub max_age: Duration,
    /// Most CertIDs accepted in one request (more → `malformedRequest`). Default 64.
    pub max_certs: usize,
    /// Check each signature with the responder certificate's key after signing.
    /// Default `false`: the responder key is a local software key and RSA
    /// verification would cost ~10% of the throughput; CRLs and certificates
    /// are always verified.
    pub verify_after_sign: bool,
}

impl Default for OcspConfig {
    fn default() -> Self {
        OcspConfig {
            validity: DEFAULT_VALIDITY,
            max_age: DEFAULT_MAX_AGE,
            max_certs: 64,
            verify_after_sign: false,
        }
    }
}

/// Precomputed issuerNameHash and issuerKeyHash for one hash algorithm.
#[derive(Clone, Debug)]
struct IssuerHashes {
    alg: CertIdHash,
    name: Vec<u8>,
    key: Vec<u8>,
}

/// An OCSP responder for one CA, signing with a delegated responder key.
///
/// Everything that does not depend on the request is encoded once at
/// construction: responderID, the `certs` field, the signature AlgorithmIdentifier
/// and the issuer hashes. Per request, the work is parsing, index lookups, a few
/// hundred octets of encoding and one signature.
pub struct OcspResponder {
    hashes: Vec<IssuerHashes>,
    /// `[1] EXPLICIT Name` (ResponderID byName).
    responder_id: Vec<u8>,
    /// `[0] EXPLICIT SEQUENCE OF Certificate` with the responder certificate.
    certs_field: Vec<u8>,
    signature_algorithm: Vec<u8>,
    algorithm: SignatureAlgorithm,
    signer: Arc<dyn Signer>,
    responder_spki: spki::SubjectPublicKeyInfoOwned,
    config: OcspConfig,
}

impl fmt::Debug for OcspResponder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OcspResponder")
            .field("algorithm", &self.algorithm)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn config_error(detail: impl Into<String>) -> Error {
    Error::OcspResponderConfig(detail.into())
}

impl OcspResponder {
    /// A responder for the CA certificate `ca_cert_der`, answering with
    /// `responder_cert_der` and its key `responder_signer`.
    ///
    /// Checks (RFC 6960 §4.2.2.2): the responder certificate is the CA
    /// certificate itself, or is issued by the CA (issuer name equals the CA's
    /// subject, signature verifies with the CA key) and carries
    /// id-kp-OCSPSigning in extendedKeyUsage; `responder_signer`'s public key is
    /// the responder certificate's.
    pub fn new(
        ca_cert_der: &[u8],
        responder_cert_der: &[u8],
        responder_signer: Arc<dyn Signer>,
        config: OcspConfig,
    ) -> Result<Self> {
        let ca = wire::cert_fields(ca_cert_der)?;
        let responder = wire::cert_fields(responder_cert_der)?;
        let responder_spki = parse_spki(responder.spki)?;
        if &responder_spki != responder_signer.public_key() {
            return Err(config_error(
                "the responder key is not the responder certificate's key",
            ));
        }
        if ca_cert_der != responder_cert_der {
            if responder.issuer != ca.subject {
                return Err(config_error(
                    "the responder certificate is not issued by this CA (issuer differs)",
                ));
            }
            let ca_spki = parse_spki(ca.spki)?;
            let alg_id: spki::AlgorithmIdentifierOwned =
                der::Decode::from_der(responder.signature_algorithm)?;
            let alg = SignatureAlgorithm::from_algorithm_identifier(&alg_id)?;
            verify(&ca_spki, alg, responder.tbs, responder.signature).map_err(|_| {
                config_error(
                    "the responder certificate's signature does not verify with the CA key",
                )
            })?;
            let eku = responder
                .extension(oid::EXT_KEY_USAGE)
                .ok_or_else(|| config_error("the responder certificate has no extendedKeyUsage"))?;
            if !has_oid(eku, oid::KP_OCSP_SIGNING)? {
                return Err(config_error(
                    "the responder certificate lacks id-kp-OCSPSigning (RFC 6960 §4.2.2.2)",
                ));
            }
        }
        if config.validity.is_zero() || config.max_certs == 0 {
            return Err(config_error("validity and max_certs must be positive"));
        }
        let hashes = CertIdHash::ALL
            .into_iter()
            .map(|alg| IssuerHashes {
                alg,
                name: alg.digest(ca.subject),
                key: alg.digest(ca.public_key_bits),
            })
            .collect();
        let responder_id = wire::tlv(tag::ctx_cons(1), responder.subject);
        let certs_field = wire::tlv(
            tag::ctx_cons(0),
            &wire::tlv(tag::SEQUENCE, responder_cert_der),
        );
        let algorithm = responder_signer.algorithm();
        Ok(OcspResponder {
            hashes,
            responder_id,
            certs_field,
            signature_algorithm: algorithm.algorithm_identifier().to_der()?,
            algorithm,
            signer: responder_signer,
            responder_spki,
            config,
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &OcspConfig {
        &self.config
    }

    /// Whether `cert` names this responder's CA (hash algorithm supported and both
    /// hashes match).
    pub fn serves(&self, cert: &RequestedCert<'_>) -> bool {
        cert.hash.is_some_and(|alg| {
            self.hashes.iter().any(|h| {
                h.alg == alg && h.name == cert.issuer_name_hash && h.key == cert.issuer_key_hash
            })
        })
    }

    /// Answer the DER request `request_der` (an HTTP POST body) with statuses from
    /// `source` at time `now`. Never fails: problems become unsuccessful
    /// responses (see the module documentation).
    pub fn respond(
        &self,
        request_der: &[u8],
        source: &dyn StatusSource,
        now: SystemTime,
    ) -> OcspAnswer {
        match parse_request(request_der, self.config.max_certs) {
            Ok(req) => self.respond_parsed(&req, source, now),
            Err(e) => unsuccessful(ResponseStatus::MalformedRequest, e.to_string()),
        }
    }

    /// Answer an HTTP GET: `path` is what follows the responder's base URL
    /// ([`parse_get_path`]).
    pub fn respond_get(
        &self,
        path: &str,
        source: &dyn StatusSource,
        now: SystemTime,
    ) -> OcspAnswer {
        match parse_get_path(path) {
            Ok(der) => self.respond(&der, source, now),
            Err(e) => unsuccessful(ResponseStatus::MalformedRequest, e.to_string()),
        }
    }

    /// Answer an already parsed request (lets the caller look at
    /// [`OcspRequest::cache_key`] first and skip signing on a cache hit).
    pub fn respond_parsed(
        &self,
        req: &OcspRequest<'_>,
        source: &dyn StatusSource,
        now: SystemTime,
    ) -> OcspAnswer {
        match self.build(req, source, now) {
            Ok(a) => a,
            Err(e) => {
                let status = if e.is_transient() {
                    ResponseStatus::TryLater
                } else {
                    ResponseStatus::InternalError
                };
                unsuccessful(status, e.to_string())
            }
        }
    }

    fn build(
        &self,
        req: &OcspRequest<'_>,
        source: &dyn StatusSource,
        now_time: SystemTime,
    ) -> Result<OcspAnswer> {
        let mut outcomes = Vec::with_capacity(req.certs.len());
        let mut any_ours = false;
        for c in &req.certs {
            let serial = c.serial();
            if !self.serves(c) {
                outcomes.push((serial, CertOutcome::ForeignIssuer, CertStatus::Unknown));
                continue;
            }
            any_ours = true;
            let status = match &serial {
                Some(s) => source.status(s),
                None => CertStatus::Unknown,
            };
            let outcome = match status {
                CertStatus::Good => CertOutcome::Good,
                CertStatus::Revoked { reason, .. } => CertOutcome::Revoked(reason),
                CertStatus::Unknown => CertOutcome::Unknown,
            };
            outcomes.push((serial, outcome, status));
        }
        if !any_ours {
            let mut a = unsuccessful(
                ResponseStatus::Unauthorized,
                "no CertID names this responder's CA".into(),
            );
            a.certs = outcomes.into_iter().map(|(s, o, _)| (s, o)).collect();
            return Ok(a);
        }

        let now = unix_secs(now_time);
        let validity = i64::try_from(self.config.validity.as_secs()).unwrap_or(i64::MAX);
        let next = now.saturating_add(validity);

        // ResponseData.
        let mut responses = Vec::with_capacity(req.certs.len() * 96);
        for (c, (_, _, status)) in req.certs.iter().zip(&outcomes) {
            single_response(&mut responses, c.cert_id, status, now, next)?;
        }
        let mut rd = Vec::with_capacity(responses.len() + self.responder_id.len() + 96);
        rd.extend_from_slice(&self.responder_id);
        wire::push_generalized_time(&mut rd, now)?; // producedAt
        wire::push_tlv(&mut rd, tag::SEQUENCE, &responses);
        if let Some(nonce) = req.nonce {
            let mut ext = Vec::with_capacity(nonce.len() + 20);
            push_extension(&mut ext, oid::OCSP_NONCE, false, nonce);
            let seq = wire::tlv(tag::SEQUENCE, &ext);
            wire::push_tlv(&mut rd, tag::ctx_cons(1), &seq);
        }
        let tbs = wire::tlv(tag::SEQUENCE, &rd);

        let signature = self.signer.sign(&tbs)?;
        if self.config.verify_after_sign {
            verify(&self.responder_spki, self.algorithm, &tbs, &signature)?;
        }

        // BasicOCSPResponse.
        let sig_bits = wire::tlv_len(signature.len() + 1);
        let basic_content =
            tbs.len() + self.signature_algorithm.len() + sig_bits + self.certs_field.len();
        let basic_len = wire::tlv_len(basic_content);
        // ResponseBytes ::= SEQUENCE { OID, OCTET STRING { BasicOCSPResponse } }
        let rb_content = wire::tlv_len(oid::OCSP_BASIC.len()) + wire::tlv_len(basic_len);
        let rb_len = wire::tlv_len(rb_content);
        let resp_content = 3 + wire::tlv_len(rb_len);
        let mut der = Vec::with_capacity(wire::tlv_len(resp_content));
        wire::push_header(&mut der, tag::SEQUENCE, resp_content);
        der.extend_from_slice(&[tag::ENUMERATED, 1, 0]); // successful
        wire::push_header(&mut der, tag::ctx_cons(0), rb_len);
        wire::push_header(&mut der, tag::SEQUENCE, rb_content);
        wire::push_tlv(&mut der, tag::OID, oid::OCSP_BASIC);
        wire::push_header(&mut der, tag::OCTET_STRING, basic_len);
        wire::push_header(&mut der, tag::SEQUENCE, basic_content);
        der.extend_from_slice(&tbs);
        der.extend_from_slice(&self.signature_algorithm);
        wire::push_header(&mut der, tag::BIT_STRING, signature.len() + 1);
        der.push(0);
        der.extend_from_slice(&signature);
        der.extend_from_slice(&self.certs_field);

        let cacheable = req.nonce.is_none();
        let max_age_secs = if cacheable {
            self.config.max_age.as_secs().min(validity.unsigned_abs())
        } else {
            0
        };
        let etag = hex_sha256(&der);
        Ok(OcspAnswer {
            der,
            status: ResponseStatus::Successful,
            certs: outcomes.into_iter().map(|(s, o, _)| (s, o)).collect(),
            cache: CacheHints {
                this_update: Some(crate::revocation::from_unix_secs(now)),
                next_update: Some(crate::revocation::from_unix_secs(next)),
                max_age_secs,
                etag,
                cacheable,
            },
            cache_key: req.cache_key(),
            detail: None,
        })
    }
}

fn unsuccessful(status: ResponseStatus, detail: String) -> OcspAnswer {
    let der = status.unsigned_response();
    let etag = hex_sha256(&der);
    OcspAnswer {
        der,
        status,
        certs: Vec::new(),
        cache: CacheHints {
            this_update: None,
            next_update: None,
            max_age_secs: 0,
            etag,
            cacheable: false,
        },
        cache_key: None,
        detail: Some(detail),
    }
}

fn hex_sha256(data: &[u8]) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    let mut s = String::with_capacity(64);
    for b in d.as_ref() {
        s.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('0'));
        s.push(char::from_digit(u32::from(b & 0xf), 16).unwrap_or('0'));
    }
    s
}

/// Whether the ExtKeyUsageSyntax `eku` (SEQUENCE OF KeyPurposeId) lists `purpose`.
fn has_oid(eku: &[u8], purpose: &[u8]) -> Result<bool> {
    let mut r = wire::Reader::new(eku);
    let seq = r.expect(tag::SEQUENCE, "extendedKeyUsage")?;
    let mut l = wire::Reader::new(seq.value);
    while !l.is_empty() {
        if l.expect(tag::OID, "KeyPurposeId")?.value == purpose {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Append one SingleResponse.
fn single_response(
    buf: &mut Vec<u8>,
    cert_id: &[u8],
    status: &CertStatus,
    now: i64,
    next: i64,
) -> Result<()> {
    let mut s = Vec::with_capacity(cert_id.len() + 80);
    s.extend_from_slice(cert_id);
    let mut invalidity = None;
    match status {
        CertStatus::Good => s.extend_from_slice(&[tag::ctx_prim(0), 0]),
        CertStatus::Unknown => s.extend_from_slice(&[tag::ctx_prim(2), 0]),
        CertStatus::Revoked {
            time,
            reason,
            invalidity_date,
        } => {
            let mut info = Vec::with_capacity(24);
            wire::push_generalized_time(&mut info, unix_secs(*time))?;
            if *reason != Reason::Unspecified {
                // revocationReason [0] EXPLICIT CRLReason; absent for unspecified, as
                // in the CRL (RFC 5280 §5.3.1).
                info.extend_from_slice(&[tag::ctx_cons(0), 3, tag::ENUMERATED, 1, reason.code()]);
            }
            wire::push_tlv(&mut s, tag::ctx_cons(1), &info);
            invalidity = *invalidity_date;
        }
    }
    wire::push_generalized_time(&mut s, now)?; // thisUpdate
    let mut nu = Vec::with_capacity(17);
    wire::push_generalized_time(&mut nu, next)?;
    wire::push_tlv(&mut s, tag::ctx_cons(0), &nu); // nextUpdate
    if let Some(inv) = invalidity {
        // singleExtensions [1] EXPLICIT Extensions { invalidityDate } (RFC 6960
        // §4.4.5, RFC 5280 §5.3.2).
        let mut t = Vec::with_capacity(17);
        wire::push_generalized_time(&mut t, unix_secs(inv))?;
        let mut ext = Vec::with_capacity(32);
        push_extension(&mut ext, oid::INVALIDITY_DATE, false, &t);
        let seq = wire::tlv(tag::SEQUENCE, &ext);
        wire::push_tlv(&mut s, tag::ctx_cons(1), &seq);
    }
    wire::push_tlv(buf, tag::SEQUENCE, &s);
    Ok(())
}
