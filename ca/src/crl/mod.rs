//! Certificate revocation lists (RFC 5280 §5; CPS §4.9.7, §4.10.1, §7.2).
//!
//! [`CrlIssuer::issue`] turns a [`MemoryIndex`] into a signed X.509 v2 CRL:
//!
//! ```text
//! CertificateList  ::=  SEQUENCE  {
//!      tbsCertList          TBSCertList,
//!      signatureAlgorithm   AlgorithmIdentifier,
//!      signatureValue       BIT STRING  }
//!
//! TBSCertList  ::=  SEQUENCE  {
//!      version                 Version OPTIONAL, -- if present, MUST be v2
//!      signature               AlgorithmIdentifier,
//!      issuer                  Name,
//!      thisUpdate              Time,
//!      nextUpdate              Time OPTIONAL,
//!      revokedCertificates     SEQUENCE OF SEQUENCE  {
//!           userCertificate         CertificateSerialNumber,
//!           revocationDate          Time,
//!           crlEntryExtensions      Extensions OPTIONAL }  OPTIONAL,
//!      crlExtensions           [0]  EXPLICIT Extensions OPTIONAL }
//! ```
//!
//! `revokedCertificates` is written straight into one pre-sized buffer, entry by
//! entry, from the index's records (already in numeric serial order, one record per
//! serial): no typed value per entry (ADR 0001). A 1,000,000-entry CRL is about
//! 50 MB and builds in well under a second (see `examples/bench_crl.rs`).
//!
//! Decisions, with the text they follow:
//! - version v2, because extensions are present (§5.1.2.1 "this field MUST be
//!   present and MUST specify version 2"); CPS §7.2.1.
//! - issuer: the CA certificate's subject byte for byte (§5.1.2.3 "The issuer
//!   field MUST contain a non-empty X.500 distinguished name"; path validation
//!   matches it against the certificate's issuer).
//! - authorityKeyIdentifier: the keyIdentifier copied from the CA certificate's
//!   subjectKeyIdentifier, never recomputed (§5.2.1 "Conforming CRL issuers MUST use
//!   the key identifier method, and MUST include this extension in all CRLs", and
//!   §4.2.1.1: it is the issuer's SKI, which another tool may have computed for a
//!   subordinate CA).
//! - cRLNumber: supplied by the caller, who persists it (§5.2.3 "a monotonically
//!   increasing sequence number ... MUST include this extension").
//! - thisUpdate/nextUpdate: nextUpdate always present (§5.1.2.5 "Conforming CRL
//!   issuers MUST include the nextUpdate field"), at most
//!   [`CrlConfig::max_validity`] after thisUpdate (CPS §4.9.7: 36 h).
//! - entries: reasonCode omitted for unspecified (§5.3.1 "the reason code CRL entry
//!   extension SHOULD be absent instead of using the unspecified (0) reasonCode
//!   value"), certificateHold for suspensions, invalidityDate as GeneralizedTime
//!   (§5.3.2). Entry extensions are non-critical (§5.3).
//! - an empty list is left out (§5.1.2.6 "When there are no revoked certificates,
//!   the revoked certificates list MUST be absent").
//! - partition CRLs carry a critical issuingDistributionPoint naming the
//!   partition's URL (§5.2.5 "this extension ... MUST be critical"); the full CRL
//!   carries none and covers every certificate.

mod parse;
pub(crate) mod wire;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use der::Encode;
use spki::SubjectPublicKeyInfoOwned;

pub use parse::{ParsedCrl, ParsedEntry, parse_crl};

use crate::error::{Error, Result};
use crate::revocation::{MemoryIndex, Reason, Record, SerialKey, from_unix_secs, unix_secs};
use crate::signer::{KeySpec, Signer, parse_spki, verify};
use wire::{oid, tag};

/// CPS §4.9.7: "憑證廢止清冊 ... 其有效期限不超過 36 小時" (a CRL is valid for at
/// most 36 hours).
pub const DEFAULT_MAX_VALIDITY: Duration = Duration::from_secs(36 * 3600);

/// How long after a revoked certificate's notAfter its entry stays on CRLs: one
/// day, the longest interval between CRLs in CPS §4.9.7 ("每日至少簽發 1 次", at
/// least once a day). RFC 5280 §3.3: "An entry MUST NOT be removed from the CRL
/// until it appears on one regularly scheduled CRL issued beyond the revoked
/// certificate's validity period."
pub const DEFAULT_EXPIRED_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// CRL policy settings; the defaults are the CPS values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrlConfig {
    /// Longest allowed nextUpdate − thisUpdate. Default 36 h (CPS §4.9.7).
    pub max_validity: Duration,
    /// How long after notAfter an entry stays on the CRL. Default 24 h.
    pub expired_retention: Duration,
}

impl Default for CrlConfig {
    fn default() -> Self {
        CrlConfig {
            max_validity: DEFAULT_MAX_VALIDITY,
            expired_retention: DEFAULT_EXPIRED_RETENTION,
        }
    }
}

/// Which certificates a CRL covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CrlScope {
    /// Every certificate of the CA; no issuingDistributionPoint.
    Full,
    /// The certificates issued into partition `index`, whose CRL distribution
    /// point is `distribution_point_url`. Only entries with that partition appear.
    Partition {
        /// The partition number written at issuance.
        index: u32,
        /// The URL in the certificates' cRLDistributionPoints, repeated in the
        /// CRL's issuingDistributionPoint.
        distribution_point_url: String,
    },
}

/// What one CRL should say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrlRequest {
    /// cRLNumber: monotonically increasing, persisted by the caller (§5.2.3).
    pub number: u64,
    /// thisUpdate; entries whose certificate expired more than
    /// [`CrlConfig::expired_retention`] before it are left out.
    pub this_update: SystemTime,
    /// nextUpdate.
    pub next_update: SystemTime,
    /// Full CRL or one partition.
    pub scope: CrlScope,
}

/// A signed CRL.
#[derive(Clone, PartialEq, Eq)]
pub struct Crl {
    /// The DER CertificateList.
    pub der: Vec<u8>,
    /// Its cRLNumber.
    pub number: u64,
    /// thisUpdate, whole seconds.
    pub this_update: SystemTime,
    /// nextUpdate, whole seconds.
    pub next_update: SystemTime,
    /// Number of entries in revokedCertificates.
    pub entries: usize,
    /// Its scope.
    pub scope: CrlScope,
}

impl fmt::Debug for Crl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Crl")
            .field("number", &self.number)
            .field("entries", &self.entries)
            .field("bytes", &self.der.len())
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

impl Crl {
    /// PEM ("-----BEGIN X509 CRL-----", RFC 7468 §6).
    pub fn to_pem(&self) -> String {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(&self.der);
        let mut s = String::with_capacity(b64.len() + b64.len() / 64 + 64);
        s.push_str("-----BEGIN X509 CRL-----\n");
        for chunk in b64.as_bytes().chunks(64) {
            s.push_str(std::str::from_utf8(chunk).unwrap_or_default());
            s.push('\n');
        }
        s.push_str("-----END X509 CRL-----\n");
        s
    }
}

/// Issues CRLs for one CA with its signing key.
pub struct CrlIssuer {
    subject: Vec<u8>,
    key_id: Vec<u8>,
    ca_spki: SubjectPublicKeyInfoOwned,
    signer: Arc<dyn Signer>,
    signature_algorithm: Vec<u8>,
    config: CrlConfig,
}

impl fmt::Debug for CrlIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CrlIssuer")
            .field("signer", &self.signer)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl CrlIssuer {
    /// A CRL issuer for the CA whose certificate is `ca_cert_der`, signing with
    /// `signer` (the CA key, normally in the HSM).
    ///
    /// Refuses a certificate without subjectKeyIdentifier (RFC 5280 §4.2.1.2: CA
    /// certificates MUST carry it; the CRL's AKI is copied from it) and a signer
    /// whose public key is not the certificate's.
    pub fn new(ca_cert_der: &[u8], signer: Arc<dyn Signer>, config: CrlConfig) -> Result<Self> {
        let fields = wire::cert_fields(ca_cert_der)?;
        let ski = fields.extension(oid::SUBJECT_KEY_ID).ok_or_else(|| {
            Error::CrlPolicy(
                "the CA certificate has no subjectKeyIdentifier; RFC 5280 §5.2.1 needs it \
                 for the CRL's authorityKeyIdentifier"
                    .into(),
            )
        })?;
        // SubjectKeyIdentifier ::= KeyIdentifier (OCTET STRING).
        let mut r = wire::Reader::new(ski);
        let key_id = r.expect(tag::OCTET_STRING, "subjectKeyIdentifier")?.value;
        r.finish("subjectKeyIdentifier")?;
        let ca_spki = parse_spki(fields.spki)?;
        if &ca_spki != signer.public_key() {
            return Err(Error::CrlPolicy(
                "the signing key is not the CA certificate's key".into(),
            ));
        }
        if config.max_validity.is_zero() {
            return Err(Error::CrlPolicy("max_validity must be positive".into()));
        }
        let signature_algorithm = signer.algorithm().algorithm_identifier().to_der()?;
        Ok(CrlIssuer {
            subject: fields.subject.to_vec(),
            key_id: key_id.to_vec(),
            ca_spki,
            signer,
            signature_algorithm,
            config,
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &CrlConfig {
        &self.config
    }

    /// Build and sign the CRL `req` describes from `index`, then check the
    /// signature with the CA certificate's key (sign-then-verify, DESIGN §1).
    ///
    /// Errors: [`Error::CrlPolicy`] when nextUpdate is not after thisUpdate or the
    /// validity exceeds [`CrlConfig::max_validity`]; signer errors as they come.
    pub fn issue(&self, index: &MemoryIndex, req: &CrlRequest) -> Result<Crl> {
        let this = unix_secs(req.this_update);
        let next = unix_secs(req.next_update);
        if next <= this {
            return Err(Error::CrlPolicy(
                "nextUpdate must be later than thisUpdate".into(),
            ));
        }
        let validity = (next - this).unsigned_abs();
        let max = self.config.max_validity.as_secs();
        if validity > max {
            return Err(Error::CrlPolicy(format!(
                "CRL validity {} exceeds the limit of {} (CPS §4.9.7 allows 36 h unless \
                 configured otherwise)",
                hours(validity),
                hours(max)
            )));
        }
        if let CrlScope::Partition {
            distribution_point_url,
            ..
        } = &req.scope
            && (distribution_point_url.is_empty() || !distribution_point_url.is_ascii())
        {
            return Err(Error::CrlPolicy(
                "a partition's distribution point URL must be non-empty ASCII (IA5String)".into(),
            ));
        }
        let retention = i64::try_from(self.config.expired_retention.as_secs()).unwrap_or(i64::MAX);
        let oldest_not_after = this.saturating_sub(retention);
        let partition = match &req.scope {
            CrlScope::Full => None,
            CrlScope::Partition { index, .. } => Some(*index),
        };
        let included = |r: &Record| {
            r.not_after >= oldest_not_after && partition.is_none_or(|p| r.partition() == Some(p))
        };

        // Fixed fields before revokedCertificates.
        let mut prefix = Vec::with_capacity(64 + self.subject.len());
        prefix.extend_from_slice(&[tag::INTEGER, 1, 1]); // version v2 (§5.1.2.1)
        prefix.extend_from_slice(&self.signature_algorithm);
        prefix.extend_from_slice(&self.subject);
        wire::push_x509_time(&mut prefix, this)?;
        wire::push_x509_time(&mut prefix, next)?;
        let extensions = self.crl_extensions(req)?;

        // Pass 1: exact size of revokedCertificates.
        let mut entries_len = 0usize;
        let mut count = 0usize;
        for (key, rec) in index.revoked_records() {
            if included(rec) {
                entries_len += entry_len(key, rec);
                count += 1;
            }
        }
        let revoked_len = if count > 0 {
            wire::tlv_len(entries_len)
        } else {
            0
        };
        let tbs_content = prefix.len() + revoked_len + extensions.len();
        let tbs_len = wire::tlv_len(tbs_content);
        const OUTER_MAX: usize = 6;
        let sig_max = max_signature_len(self.signer.public_key());
        let capacity =
            OUTER_MAX + tbs_len + self.signature_algorithm.len() + wire::tlv_len(sig_max + 1);
        let mut buf = Vec::with_capacity(capacity);
        buf.resize(OUTER_MAX, 0);

        // Pass 2: encode.
        wire::push_header(&mut buf, tag::SEQUENCE, tbs_content);
        buf.extend_from_slice(&prefix);
        if count > 0 {
            wire::push_header(&mut buf, tag::SEQUENCE, entries_len);
            for (key, rec) in index.revoked_records() {
                if included(rec) {
                    push_entry(&mut buf, key, rec)?;
                }
            }
        }
        buf.extend_from_slice(&extensions);
        if buf.len() != OUTER_MAX + tbs_len {
            return Err(Error::CrlPolicy(format!(
                "internal error: TBSCertList is {} octets, computed {tbs_len}",
                buf.len() - OUTER_MAX
            )));
        }

        let tbs = &buf[OUTER_MAX..];
        let signature = self.signer.sign(tbs)?;
        verify(&self.ca_spki, self.signer.algorithm(), tbs, &signature)?;
        buf.extend_from_slice(&self.signature_algorithm);
        // signatureValue BIT STRING: no unused bits.
        wire::push_header(&mut buf, tag::BIT_STRING, signature.len() + 1);
        buf.push(0);
        buf.extend_from_slice(&signature);

        let outer_content = buf.len() - OUTER_MAX;
        let mut header = Vec::with_capacity(OUTER_MAX);
        wire::push_header(&mut header, tag::SEQUENCE, outer_content);
        let start = OUTER_MAX - header.len();
        buf[start..OUTER_MAX].copy_from_slice(&header);
        buf.drain(..start);

        Ok(Crl {
            der: buf,
            number: req.number,
            this_update: from_unix_secs(this),
            next_update: from_unix_secs(next),
            entries: count,
            scope: req.scope.clone(),
        })
    }

    /// crlExtensions: `[0] EXPLICIT SEQUENCE OF Extension`.
    fn crl_extensions(&self, req: &CrlRequest) -> Result<Vec<u8>> {
        let mut exts = Vec::with_capacity(128);
        // AuthorityKeyIdentifier ::= SEQUENCE { keyIdentifier [0] KeyIdentifier ... }
        // (RFC 5280 §4.2.1.1; IMPLICIT tagging: [0] primitive OCTET STRING).
        let aki = wire::tlv(tag::SEQUENCE, &wire::tlv(tag::ctx_prim(0), &self.key_id));
        push_extension(&mut exts, oid::AUTHORITY_KEY_ID, false, &aki);
        // CRLNumber ::= INTEGER (0..MAX) (§5.2.3), non-critical.
        let number = wire::tlv(tag::INTEGER, &wire::uint_content(req.number));
        push_extension(&mut exts, oid::CRL_NUMBER, false, &number);
        if let CrlScope::Partition {
            distribution_point_url,
            ..
        } = &req.scope
        {
            // IssuingDistributionPoint ::= SEQUENCE {
            //      distributionPoint [0] DistributionPointName OPTIONAL, ... }
            // DistributionPointName ::= CHOICE { fullName [0] GeneralNames, ... }
            // GeneralName ::= CHOICE { ... uniformResourceIdentifier [6] IA5String }
            // (§5.2.5, §4.2.1.13; a tagged CHOICE is explicit, so [0] is constructed).
            let uri = wire::tlv(tag::ctx_prim(6), distribution_point_url.as_bytes());
            let full_name = wire::tlv(tag::ctx_cons(0), &uri);
            let dp = wire::tlv(tag::ctx_cons(0), &full_name);
            let idp = wire::tlv(tag::SEQUENCE, &dp);
            push_extension(&mut exts, oid::ISSUING_DISTRIBUTION_POINT, true, &idp);
        }
        Ok(wire::tlv(
            tag::ctx_cons(0),
            &wire::tlv(tag::SEQUENCE, &exts),
        ))
    }
}

fn hours(secs: u64) -> String {
    if secs.is_multiple_of(3600) {
        format!("{} h", secs / 3600)
    } else {
        format!("{secs} s")
    }
}

/// Extension ::= SEQUENCE { extnID OBJECT IDENTIFIER, critical BOOLEAN DEFAULT
/// FALSE, extnValue OCTET STRING } (RFC 5280 §4.1; DER omits a FALSE default).
pub(crate) fn push_extension(buf: &mut Vec<u8>, oid: &[u8], critical: bool, value: &[u8]) {
    let content =
        wire::tlv_len(oid.len()) + if critical { 3 } else { 0 } + wire::tlv_len(value.len());
    wire::push_header(buf, tag::SEQUENCE, content);
    wire::push_tlv(buf, tag::OID, oid);
    if critical {
        buf.extend_from_slice(&[tag::BOOLEAN, 1, 0xff]);
    }
    wire::push_tlv(buf, tag::OCTET_STRING, value);
}

/// reasonCode extension: SEQUENCE { OID 2.5.29.21, OCTET STRING { ENUMERATED } }.
const REASON_EXT_LEN: usize = 12;
/// invalidityDate extension: SEQUENCE { OID 2.5.29.24, OCTET STRING {
/// GeneralizedTime } }.
const INVALIDITY_EXT_LEN: usize = 26;

/// Content octets of the INTEGER for `key` (leading zero when the top bit is set).
fn serial_content_len(key: &SerialKey) -> usize {
    let b = key.be_bytes();
    b.len() + usize::from(b.first().is_some_and(|x| x & 0x80 != 0))
}

fn entry_ext_len(rec: &Record) -> usize {
    let mut n = 0;
    if rec.reason.is_some_and(|r| r != Reason::Unspecified) {
        n += REASON_EXT_LEN;
    }
    if rec.invalidity().is_some() {
        n += INVALIDITY_EXT_LEN;
    }
    if n > 0 { wire::tlv_len(n) } else { 0 }
}

/// Octets of one revokedCertificates entry.
fn entry_len(key: &SerialKey, rec: &Record) -> usize {
    wire::tlv_len(
        wire::tlv_len(serial_content_len(key))
            + wire::x509_time_len(rec.revoked_at)
            + entry_ext_len(rec),
    )
}

/// Append one entry: SEQUENCE { userCertificate INTEGER, revocationDate Time,
/// crlEntryExtensions Extensions OPTIONAL }.
fn push_entry(buf: &mut Vec<u8>, key: &SerialKey, rec: &Record) -> Result<()> {
    let serial_len = serial_content_len(key);
    let ext_len = entry_ext_len(rec);
    let content = wire::tlv_len(serial_len) + wire::x509_time_len(rec.revoked_at) + ext_len;
    wire::push_header(buf, tag::SEQUENCE, content);
    wire::push_header(buf, tag::INTEGER, serial_len);
    let b = key.be_bytes();
    if serial_len > b.len() {
        buf.push(0);
    }
    buf.extend_from_slice(b);
    wire::push_x509_time(buf, rec.revoked_at)?;
    if ext_len > 0 {
        wire::push_header(buf, tag::SEQUENCE, ext_len - 2);
        if let Some(reason) = rec.reason.filter(|r| *r != Reason::Unspecified) {
            // Extension { 2.5.29.21, OCTET STRING { ENUMERATED code } } (§5.3.1).
            buf.extend_from_slice(&[
                tag::SEQUENCE,
                0x0a,
                tag::OID,
                0x03,
                0x55,
                0x1d,
                0x15,
                tag::OCTET_STRING,
                0x03,
                tag::ENUMERATED,
                0x01,
                reason.code(),
            ]);
        }
        if let Some(inv) = rec.invalidity() {
            // Extension { 2.5.29.24, OCTET STRING { GeneralizedTime } } (§5.3.2).
            buf.extend_from_slice(&[
                tag::SEQUENCE,
                0x18,
                tag::OID,
                0x03,
                0x55,
                0x1d,
                0x18,
                tag::OCTET_STRING,
                0x11,
            ]);
            wire::push_generalized_time(buf, inv)?;
        }
    }
    Ok(())
}

/// Upper bound of a signature's length for `spki`'s key.
fn max_signature_len(spki: &SubjectPublicKeyInfoOwned) -> usize {
    match KeySpec::of(spki) {
        Ok(KeySpec::Rsa { bits }) => (bits as usize).div_ceil(8),
        // ECDSA-Sig-Value: SEQUENCE of two INTEGERs of at most field size + 1.
        Ok(KeySpec::Ec(c)) => 2 * ((c.bits() as usize).div_ceil(8) + 3) + 4,
        Err(_) => 1024,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::revocation::RevokedEntry;
    use crate::serial::Serial;
    use std::time::UNIX_EPOCH;

    #[test]
    fn entry_lengths_match_encoding() {
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let late = UNIX_EPOCH + Duration::from_secs(2_600_000_000);
        let mut entries = Vec::new();
        for (hex, reason, inv, when) in [
            ("01", Reason::Unspecified, false, at),
            ("FF", Reason::KeyCompromise, true, at),
            ("7F0102", Reason::CertificateHold, false, late),
            (
                "0123456789ABCDEF0123456789ABCDEF01234567",
                Reason::Superseded,
                true,
                late,
            ),
        ] {
            entries.push(RevokedEntry {
                serial: Serial::from_hex(hex).unwrap(),
                revoked_at: when,
                reason,
                invalidity_date: inv.then_some(at),
                not_after: late,
                partition: None,
            });
        }
        let idx = MemoryIndex::from_entries(entries).unwrap();
        for (k, r) in idx.revoked_records() {
            let mut v = Vec::new();
            push_entry(&mut v, k, r).unwrap();
            assert_eq!(v.len(), entry_len(k, r), "{k:?}");
            let mut rd = wire::Reader::new(&v);
            rd.expect(tag::SEQUENCE, "entry").unwrap();
            rd.finish("entry").unwrap();
        }
    }
}
