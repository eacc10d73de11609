//! Hand-written DER for the hot paths of CRLs and OCSP (X.690 §8, §10), shared by
//! [`crate::crl`] and [`crate::ocsp`]: definite-length TLV writing into a caller's
//! buffer, X.509/OCSP time formatting, and a strict TLV reader.
//!
//! Only what chop emits and reads is covered: single-octet tags (X.690 §8.1.2.2,
//! tag numbers below 31) and definite lengths in the minimal form (X.690 §10.1).

use crate::error::{Error, Result};

/// Universal and context tags used here.
pub(crate) mod tag {
    pub const BOOLEAN: u8 = 0x01;
    pub const INTEGER: u8 = 0x02;
    pub const BIT_STRING: u8 = 0x03;
    pub const OCTET_STRING: u8 = 0x04;
    pub const NULL: u8 = 0x05;
    pub const OID: u8 = 0x06;
    pub const ENUMERATED: u8 = 0x0a;
    pub const UTC_TIME: u8 = 0x17;
    pub const GENERALIZED_TIME: u8 = 0x18;
    pub const SEQUENCE: u8 = 0x30;
    /// `[n]` constructed (EXPLICIT, or IMPLICIT over a constructed type).
    pub const fn ctx_cons(n: u8) -> u8 {
        0xa0 | n
    }
    /// `[n]` primitive (IMPLICIT over a primitive type).
    pub const fn ctx_prim(n: u8) -> u8 {
        0x80 | n
    }
}

/// Octets taken by the length field for `len` content octets (X.690 §8.1.3).
pub(crate) const fn len_len(len: usize) -> usize {
    if len < 0x80 {
        1
    } else if len <= 0xff {
        2
    } else if len <= 0xffff {
        3
    } else if len <= 0xff_ffff {
        4
    } else {
        5
    }
}

/// Total octets of a TLV with a one-octet tag and `len` content octets.
pub(crate) const fn tlv_len(len: usize) -> usize {
    1 + len_len(len) + len
}

/// Append a tag and a definite length in minimal form.
pub(crate) fn push_header(buf: &mut Vec<u8>, tag: u8, len: usize) {
    buf.push(tag);
    if len < 0x80 {
        buf.push(len as u8);
    } else {
        let n = len_len(len) - 1;
        buf.push(0x80 | n as u8);
        for i in (0..n).rev() {
            buf.push((len >> (8 * i)) as u8);
        }
    }
}

/// Append a complete TLV.
pub(crate) fn push_tlv(buf: &mut Vec<u8>, tag: u8, content: &[u8]) {
    push_header(buf, tag, content.len());
    buf.extend_from_slice(content);
}

/// A complete TLV as a new vector.
pub(crate) fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(tlv_len(content.len()));
    push_tlv(&mut v, tag, content);
    v
}

/// The content octets of a non-negative INTEGER holding `n` (X.690 §8.3: minimal,
/// with a leading zero when the top bit is set).
pub(crate) fn uint_content(n: u64) -> Vec<u8> {
    let bytes = n.to_be_bytes();
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(7);
    let mut v = Vec::with_capacity(9);
    if bytes[start] & 0x80 != 0 {
        v.push(0);
    }
    v.extend_from_slice(&bytes[start..]);
    v
}

/// Civil date and time of `secs` seconds since the Unix epoch (proleptic
/// Gregorian, UTC): (year, month, day, hour, minute, second).
pub(crate) fn civil(secs: i64) -> (i64, u32, u32, u32, u32, u32) {
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400) as u32;
    // Howard Hinnant's days_from_civil inverse.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = if m <= 2 { y + 1 } else { y };
    (y, m, d, sod / 3600, (sod / 60) % 60, sod % 60)
}

/// Seconds since the epoch of a civil UTC date and time (inverse of [`civil`]).
pub(crate) fn from_civil(y: i64, m: u32, d: u32, hh: u32, mm: u32, ss: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * 86_400 + i64::from(hh) * 3600 + i64::from(mm) * 60 + i64::from(ss)
}

fn push2(buf: &mut Vec<u8>, v: u32) {
    buf.push(b'0' + (v / 10 % 10) as u8);
    buf.push(b'0' + (v % 10) as u8);
}

fn time_error(secs: i64) -> Error {
    Error::CrlPolicy(format!(
        "time {secs} s after 1970 cannot be encoded (years 0000-9999 only)"
    ))
}

/// Append a GeneralizedTime TLV `YYYYMMDDHHMMSSZ` (RFC 5280 §4.1.2.5.2: seconds,
/// no fractions, Zulu; RFC 6960 uses the same form).
pub(crate) fn push_generalized_time(buf: &mut Vec<u8>, secs: i64) -> Result<()> {
    let (y, mo, d, h, mi, s) = civil(secs);
    if !(0..=9999).contains(&y) {
        return Err(time_error(secs));
    }
    let y = y as u32;
    buf.push(tag::GENERALIZED_TIME);
    buf.push(15);
    push2(buf, y / 100);
    push2(buf, y % 100);
    for v in [mo, d, h, mi, s] {
        push2(buf, v);
    }
    buf.push(b'Z');
    Ok(())
}

/// Whether an X.509 Time for `secs` is a UTCTime: RFC 5280 §4.1.2.5 "CAs
/// conforming to this profile MUST always encode certificate validity dates
/// through the year 2049 as UTCTime; certificate validity dates in 2050 or later
/// MUST be encoded as GeneralizedTime", and UTCTime covers 1950-2049 only
/// (§4.1.2.5.1). §5.1.2.4-§5.1.2.6 apply the same rule to thisUpdate, nextUpdate and
/// revocationDate.
pub(crate) fn is_utc_time(secs: i64) -> bool {
    // 1950-01-01T00:00:00Z and 2050-01-01T00:00:00Z.
    (-631_152_000..2_524_608_000).contains(&secs)
}

/// Octets of the X.509 Time TLV for `secs`.
pub(crate) fn x509_time_len(secs: i64) -> usize {
    if is_utc_time(secs) { 15 } else { 17 }
}

/// Append an X.509 Time (UTCTime `YYMMDDHHMMSSZ` through 2049, GeneralizedTime
/// from 2050 and before 1950).
pub(crate) fn push_x509_time(buf: &mut Vec<u8>, secs: i64) -> Result<()> {
    if !is_utc_time(secs) {
        return push_generalized_time(buf, secs);
    }
    let (y, mo, d, h, mi, s) = civil(secs);
    buf.push(tag::UTC_TIME);
    buf.push(13);
    push2(buf, (y % 100) as u32);
    for v in [mo, d, h, mi, s] {
        push2(buf, v);
    }
    buf.push(b'Z');
    Ok(())
}

/// One TLV read from DER.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tlv<'a> {
    pub tag: u8,
    /// Content octets.
    pub value: &'a [u8],
    /// The whole TLV, header included.
    pub raw: &'a [u8],
}

/// A strict DER reader over a slice.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Reader<'a> {
    data: &'a [u8],
}

fn malformed(what: &str) -> Error {
    Error::Malformed {
        what: "DER",
        detail: what.to_string(),
    }
}

impl<'a> Reader<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Reader { data }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub(crate) fn peek_tag(&self) -> Option<u8> {
        self.data.first().copied()
    }

    /// Read the next TLV. Refuses multi-octet tags, indefinite and non-minimal
    /// lengths, and lengths past the end of the input.
    pub(crate) fn read(&mut self) -> Result<Tlv<'a>> {
        let d = self.data;
        let (&tag, rest) = d.split_first().ok_or_else(|| malformed("unexpected end"))?;
        if tag & 0x1f == 0x1f {
            return Err(malformed("multi-octet tags are not used here"));
        }
        let (&first, rest) = rest
            .split_first()
            .ok_or_else(|| malformed("missing length"))?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 {
                return Err(malformed("indefinite length is not DER"));
            }
            if n > 4 || rest.len() < n {
                return Err(malformed("bad length"));
            }
            let mut len = 0usize;
            for b in &rest[..n] {
                len = (len << 8) | usize::from(*b);
            }
            if len < 0x80 || len_len(len) != n + 1 {
                return Err(malformed("non-minimal length"));
            }
            (len, &rest[n..])
        };
        if rest.len() < len {
            return Err(malformed("length runs past the end"));
        }
        let header = d.len() - rest.len();
        let raw = &d[..header + len];
        self.data = &rest[len..];
        Ok(Tlv {
            tag,
            value: &rest[..len],
            raw,
        })
    }

    /// Read a TLV that must have `tag`.
    pub(crate) fn expect(&mut self, tag: u8, what: &str) -> Result<Tlv<'a>> {
        let t = self.read()?;
        if t.tag != tag {
            return Err(malformed(&format!(
                "{what}: expected tag 0x{tag:02x}, found 0x{:02x}",
                t.tag
            )));
        }
        Ok(t)
    }

    /// Read the next TLV if it has `tag`.
    pub(crate) fn optional(&mut self, tag: u8) -> Result<Option<Tlv<'a>>> {
        if self.peek_tag() == Some(tag) {
            self.read().map(Some)
        } else {
            Ok(None)
        }
    }

    /// Fail if anything is left.
    pub(crate) fn finish(&self, what: &str) -> Result<()> {
        if self.data.is_empty() {
            Ok(())
        } else {
            Err(malformed(&format!("{what}: trailing data")))
        }
    }
}

/// Parse an X.509 Time or GeneralizedTime TLV in the `...Z` form to epoch seconds.
pub(crate) fn parse_time(t: &Tlv<'_>) -> Result<i64> {
    let s = t.value;
    let digits = |r: &[u8]| -> Result<u32> {
        let mut v = 0u32;
        for c in r {
            if !c.is_ascii_digit() {
                return Err(malformed("time is not numeric"));
            }
            v = v * 10 + u32::from(c - b'0');
        }
        Ok(v)
    };
    let (year, rest) = match (t.tag, s.len()) {
        (tag::UTC_TIME, 13) => {
            let yy = i64::from(digits(&s[..2])?);
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &s[2..])
        }
        (tag::GENERALIZED_TIME, 15) => (i64::from(digits(&s[..4])?), &s[4..]),
        _ => {
            return Err(malformed(
                "time must be UTCTime or GeneralizedTime ending in Z",
            ));
        }
    };
    if rest.last() != Some(&b'Z') {
        return Err(malformed("time must end in Z"));
    }
    let (mo, d, h, mi, se) = (
        digits(&rest[0..2])?,
        digits(&rest[2..4])?,
        digits(&rest[4..6])?,
        digits(&rest[6..8])?,
        digits(&rest[8..10])?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 59 {
        return Err(malformed("time out of range"));
    }
    Ok(from_civil(year, mo, d, h, mi, se))
}

/// The fields of a certificate the CRL issuer and OCSP responder need, as raw DER.
#[derive(Clone, Debug)]
pub(crate) struct CertFields<'a> {
    /// TBSCertificate TLV (what the issuer signed).
    pub tbs: &'a [u8],
    /// signatureAlgorithm TLV.
    pub signature_algorithm: &'a [u8],
    /// signatureValue BIT STRING content, unused-bits octet removed.
    pub signature: &'a [u8],
    /// issuer Name TLV.
    pub issuer: &'a [u8],
    /// subject Name TLV, byte for byte.
    pub subject: &'a [u8],
    /// subjectPublicKeyInfo TLV.
    pub spki: &'a [u8],
    /// subjectPublicKey BIT STRING value without the unused-bits octet (what RFC
    /// 6960 §4.1.1 issuerKeyHash hashes).
    pub public_key_bits: &'a [u8],
    /// Extensions.
    pub extensions: Vec<RawExtension<'a>>,
}

impl<'a> CertFields<'a> {
    /// The extnValue of extension `oid` (OID content octets).
    pub(crate) fn extension(&self, oid: &[u8]) -> Option<&'a [u8]> {
        self.extensions
            .iter()
            .find(|(id, _, _)| *id == oid)
            .map(|(_, _, v)| *v)
    }
}

/// One extension: (extnID content octets, critical, extnValue content octets).
pub(crate) type RawExtension<'a> = (&'a [u8], bool, &'a [u8]);

/// Parse `Extensions ::= SEQUENCE SIZE (1..MAX) OF Extension` from the content of
/// the EXPLICIT tag around it (RFC 5280 §4.1).
pub(crate) fn parse_extensions(explicit: &[u8]) -> Result<Vec<RawExtension<'_>>> {
    let mut r = Reader::new(explicit);
    let seq = r.expect(tag::SEQUENCE, "Extensions")?;
    r.finish("Extensions")?;
    let mut list = Reader::new(seq.value);
    let mut out = Vec::new();
    while !list.is_empty() {
        let ext = list.expect(tag::SEQUENCE, "Extension")?;
        let mut e = Reader::new(ext.value);
        let id = e.expect(tag::OID, "extnID")?.value;
        let critical = e.optional(tag::BOOLEAN)?.is_some_and(|b| b.value == [0xff]);
        let value = e.expect(tag::OCTET_STRING, "extnValue")?.value;
        e.finish("Extension")?;
        out.push((id, critical, value));
    }
    Ok(out)
}

/// Walk a certificate (RFC 5280 §4.1) without re-encoding anything.
pub(crate) fn cert_fields(der: &[u8]) -> Result<CertFields<'_>> {
    let mut outer = Reader::new(der);
    let cert = outer.expect(tag::SEQUENCE, "Certificate")?;
    outer.finish("Certificate")?;
    let mut c = Reader::new(cert.value);
    let tbs = c.expect(tag::SEQUENCE, "TBSCertificate")?;
    let signature_algorithm = c.expect(tag::SEQUENCE, "signatureAlgorithm")?.raw;
    let sig = c.expect(tag::BIT_STRING, "signatureValue")?;
    c.finish("Certificate")?;
    let signature = match sig.value.split_first() {
        Some((0, rest)) => rest,
        _ => return Err(malformed("signatureValue has unused bits")),
    };
    let mut t = Reader::new(tbs.value);
    t.optional(tag::ctx_cons(0))?;
    t.expect(tag::INTEGER, "serialNumber")?;
    t.expect(tag::SEQUENCE, "signature")?;
    let issuer = t.expect(tag::SEQUENCE, "issuer")?.raw;
    t.expect(tag::SEQUENCE, "validity")?;
    let subject = t.expect(tag::SEQUENCE, "subject")?.raw;
    let spki = t.expect(tag::SEQUENCE, "subjectPublicKeyInfo")?;
    let mut s = Reader::new(spki.value);
    s.expect(tag::SEQUENCE, "algorithm")?;
    let bits = s.expect(tag::BIT_STRING, "subjectPublicKey")?;
    s.finish("subjectPublicKeyInfo")?;
    let public_key_bits = match bits.value.split_first() {
        Some((0, rest)) => rest,
        _ => return Err(malformed("subjectPublicKey has unused bits")),
    };
    t.optional(tag::ctx_prim(1))?;
    t.optional(tag::ctx_prim(2))?;
    let extensions = match t.optional(tag::ctx_cons(3))? {
        Some(exts) => parse_extensions(exts.value)?,
        None => Vec::new(),
    };
    t.finish("TBSCertificate")?;
    Ok(CertFields {
        tbs: tbs.raw,
        signature_algorithm,
        signature,
        issuer,
        subject,
        spki: spki.raw,
        public_key_bits,
        extensions,
    })
}

/// OID content octets used by the CRL and OCSP code.
pub(crate) mod oid {
    /// id-ce-subjectKeyIdentifier 2.5.29.14.
    pub const SUBJECT_KEY_ID: &[u8] = &[0x55, 0x1d, 0x0e];
    /// id-ce-cRLNumber 2.5.29.20.
    pub const CRL_NUMBER: &[u8] = &[0x55, 0x1d, 0x14];
    /// id-ce-cRLReasons 2.5.29.21.
    pub const CRL_REASON: &[u8] = &[0x55, 0x1d, 0x15];
    /// id-ce-invalidityDate 2.5.29.24.
    pub const INVALIDITY_DATE: &[u8] = &[0x55, 0x1d, 0x18];
    /// id-ce-issuingDistributionPoint 2.5.29.28.
    pub const ISSUING_DISTRIBUTION_POINT: &[u8] = &[0x55, 0x1d, 0x1c];
    /// id-ce-authorityKeyIdentifier 2.5.29.35.
    pub const AUTHORITY_KEY_ID: &[u8] = &[0x55, 0x1d, 0x23];
    /// id-ce-extKeyUsage 2.5.29.37.
    pub const EXT_KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x25];
    /// id-kp-OCSPSigning 1.3.6.1.5.5.7.3.9.
    pub const KP_OCSP_SIGNING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x09];
    /// id-pkix-ocsp-basic 1.3.6.1.5.5.7.48.1.1.
    pub const OCSP_BASIC: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x01];
    /// id-pkix-ocsp-nonce 1.3.6.1.5.5.7.48.1.2.
    pub const OCSP_NONCE: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x02];
    /// id-sha1 1.3.14.3.2.26.
    pub const SHA1: &[u8] = &[0x2b, 0x0e, 0x03, 0x02, 0x1a];
    /// id-sha256 2.16.840.1.101.3.4.2.1.
    pub const SHA256: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
    /// id-sha384 2.16.840.1.101.3.4.2.2.
    pub const SHA384: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02];
    /// id-sha512 2.16.840.1.101.3.4.2.3.
    pub const SHA512: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_minimal() {
        let mut v = Vec::new();
        push_header(&mut v, 0x30, 0x7f);
        push_header(&mut v, 0x30, 0x80);
        push_header(&mut v, 0x30, 0x1_0000);
        assert_eq!(v, [0x30, 0x7f, 0x30, 0x81, 0x80, 0x30, 0x83, 1, 0, 0]);
        assert_eq!(tlv_len(0x1_0000), 0x1_0000 + 5);
    }

    #[test]
    fn times_follow_rfc5280() {
        let mut v = Vec::new();
        // 2049-12-31T23:59:59Z is the last UTCTime.
        push_x509_time(&mut v, 2_524_607_999).unwrap();
        assert_eq!(&v[2..], b"491231235959Z");
        v.clear();
        push_x509_time(&mut v, 2_524_608_000).unwrap();
        assert_eq!(&v[..2], &[0x18, 15]);
        assert_eq!(&v[2..], b"20500101000000Z");
        v.clear();
        push_generalized_time(&mut v, 0).unwrap();
        assert_eq!(&v[2..], b"19700101000000Z");
        for secs in [
            -631_152_000i64,
            0,
            951_782_400,
            2_524_608_000,
            253_402_300_799,
        ] {
            let mut v = Vec::new();
            push_x509_time(&mut v, secs).unwrap();
            let t = Reader::new(&v).read().unwrap();
            assert_eq!(parse_time(&t).unwrap(), secs);
        }
        assert!(push_generalized_time(&mut v, 253_402_300_800).is_err());
    }

    #[test]
    fn reader_refuses_bad_lengths() {
        assert!(Reader::new(&[0x30, 0x80, 0, 0]).read().is_err());
        assert!(
            Reader::new(&[0x30, 0x81, 0x05, 0, 0, 0, 0, 0])
                .read()
                .is_err()
        );
        assert!(Reader::new(&[0x30, 0x03, 0]).read().is_err());
        let mut r = Reader::new(&[0x02, 0x01, 0x05, 0x05, 0x00]);
        assert_eq!(r.read().unwrap().value, &[5]);
        assert_eq!(r.read().unwrap().tag, 0x05);
        assert!(r.is_empty());
    }

    #[test]
    fn uint_content_is_minimal() {
        assert_eq!(uint_content(0), vec![0]);
        assert_eq!(uint_content(0x80), vec![0, 0x80]);
        assert_eq!(uint_content(0x0102), vec![1, 2]);
    }
}
