//! Certificate serial numbers.
//!
//! RFC 5280 §4.1.2.2: "The serial number MUST be a positive integer assigned by the
//! CA to each certificate ... Conforming CAs MUST NOT use serialNumber values longer
//! than 20 octets." CA/Browser Forum practice (adopted here) adds at least 64 bits
//! from a CSPRNG. chop draws 127 random bits: 16 octets with the top bit cleared so
//! the DER INTEGER is positive and never needs a 17th padding octet.

use std::fmt;

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use x509_cert::serial_number::SerialNumber;

use crate::error::{Error, Result};

/// Octets of randomness in a fresh serial (127 bits after clearing the sign bit).
const RANDOM_OCTETS: usize = 16;

/// A positive certificate serial number of at most 20 octets, kept in minimal
/// big-endian form (no leading zero octets). Ordered numerically.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Serial(Vec<u8>);

impl Serial {
    /// A fresh random serial: 127 bits from the operating system's CSPRNG.
    pub fn random() -> Result<Self> {
        let mut bytes = vec![0u8; RANDOM_OCTETS];
        loop {
            SystemRandom::new()
                .fill(&mut bytes)
                .map_err(|_| Error::SoftwareKey("CSPRNG failure".into()))?;
            if let Some(first) = bytes.first_mut() {
                *first &= 0x7f;
            }
            // At least 64 significant bits: redraw the (2^-63 likely) short values.
            let s = Serial::from_be_bytes(&bytes)?;
            if s.0.len() >= 9 {
                return Ok(s);
            }
        }
    }

    /// From big-endian unsigned octets (leading zeros are dropped). Zero and values
    /// longer than 20 octets are refused.
    pub fn from_be_bytes(bytes: &[u8]) -> Result<Self> {
        let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
        let v = &bytes[start..];
        if v.is_empty() {
            return Err(Error::Malformed {
                what: "serial number",
                detail: "serial number must be positive, not zero".into(),
            });
        }
        // 20 octets of DER INTEGER content: a value with the top bit set needs a
        // leading 0x00, so only 19 such octets fit.
        let der_len = v.len() + usize::from(v[0] & 0x80 != 0);
        if der_len > 20 {
            return Err(Error::Malformed {
                what: "serial number",
                detail: format!("{der_len} octets encoded, RFC 5280 allows at most 20"),
            });
        }
        Ok(Serial(v.to_vec()))
    }

    /// From the DER INTEGER content octets of a certificate's serialNumber. Negative
    /// values (top bit set without a 0x00 pad) are refused.
    pub fn from_der_content(content: &[u8]) -> Result<Self> {
        if content.first().is_some_and(|b| b & 0x80 != 0) {
            return Err(Error::Malformed {
                what: "serial number",
                detail: "negative serial number".into(),
            });
        }
        Self::from_be_bytes(content)
    }

    /// From hexadecimal (upper or lower case, optional `:` separators, as
    /// `openssl x509 -serial` prints).
    pub fn from_hex(hex: &str) -> Result<Self> {
        let clean: String = hex.chars().filter(|c| *c != ':').collect();
        let clean = if clean.len() % 2 == 1 {
            format!("0{clean}")
        } else {
            clean
        };
        let mut out = Vec::with_capacity(clean.len() / 2);
        for pair in clean.as_bytes().chunks(2) {
            let s = std::str::from_utf8(pair).map_err(|_| bad_hex(hex))?;
            out.push(u8::from_str_radix(s, 16).map_err(|_| bad_hex(hex))?);
        }
        Self::from_be_bytes(&out)
    }

    /// Minimal big-endian unsigned octets.
    pub fn as_be_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The DER INTEGER content octets (with a 0x00 pad when the top bit is set).
    pub fn der_content(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.0.len() + 1);
        if self.0.first().is_some_and(|b| b & 0x80 != 0) {
            v.push(0);
        }
        v.extend_from_slice(&self.0);
        v
    }

    /// Upper-case hexadecimal without separators (what `openssl ... -serial` and
    /// OpenSSL's `index.txt` print, and what chop writes in status).
    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(self.0.len() * 2);
        for b in &self.0 {
            s.push_str(&format!("{b:02X}"));
        }
        s
    }

    /// As the `x509-cert` type.
    pub fn to_serial_number(&self) -> Result<SerialNumber> {
        Ok(SerialNumber::new(&self.der_content())?)
    }

    /// From the `x509-cert` type.
    pub fn from_serial_number(sn: &SerialNumber) -> Result<Self> {
        Self::from_der_content(sn.as_bytes())
    }
}

/// Numeric order. The octets are minimal (no leading zeros), so a shorter value is
/// smaller, and values of one length compare octet by octet.
impl Ord for Serial {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0
            .len()
            .cmp(&other.0.len())
            .then_with(|| self.0.cmp(&other.0))
    }
}

impl PartialOrd for Serial {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

fn bad_hex(input: &str) -> Error {
    Error::Malformed {
        what: "serial number",
        detail: format!("{input:?} is not hexadecimal"),
    }
}

impl fmt::Debug for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Serial({})", self.to_hex())
    }
}

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_serials_are_positive_long_and_distinct() {
        let a = Serial::random().unwrap();
        let b = Serial::random().unwrap();
        assert_ne!(a, b);
        for s in [a, b] {
            assert!(s.as_be_bytes().len() >= 9 && s.as_be_bytes().len() <= 16);
            assert_eq!(s.as_be_bytes()[0] & 0x80, 0);
            assert!(s.der_content().len() <= 20);
        }
    }

    #[test]
    fn limits_are_enforced() {
        assert!(Serial::from_be_bytes(&[0, 0]).is_err());
        assert!(Serial::from_be_bytes(&[0x7f; 20]).is_ok());
        let err = Serial::from_be_bytes(&[0x80; 20]).unwrap_err();
        assert!(err.to_string().contains("21 octets"), "{err}");
        assert!(Serial::from_der_content(&[0xff, 0x01]).is_err());
    }

    #[test]
    fn order_is_numeric() {
        let two = Serial::from_hex("02").unwrap();
        let big = Serial::from_hex("0100").unwrap();
        assert!(two < big, "0x02 must sort before 0x0100");
        assert!(Serial::from_hex("0101").unwrap() > big);
        let mut v = vec![big.clone(), two.clone(), Serial::from_hex("FF").unwrap()];
        v.sort();
        assert_eq!(v, vec![two, Serial::from_hex("FF").unwrap(), big]);
    }

    #[test]
    fn hex_round_trips_like_openssl_prints() {
        let s = Serial::from_hex("00:0a:BC").unwrap();
        assert_eq!(s.as_be_bytes(), &[0x0a, 0xbc]);
        assert_eq!(s.to_hex(), "0ABC");
        assert_eq!(Serial::from_hex("ABC").unwrap(), s);
        assert!(Serial::from_hex("xyz").is_err());
        let padded = Serial::from_hex("80").unwrap();
        assert_eq!(padded.der_content(), vec![0, 0x80]);
    }
}
