//! Signing keys: the [`Signer`] trait, the algorithms chop signs with, and the two
//! key stores behind it: PKCS#11 tokens ([`pkcs11`]) for CA keys and software keys
//! ([`software`]) for the throwaway lint key and delegated OCSP-responder keys.
//!
//! A [`Signer`] signs the DER of a to-be-signed structure and returns the value that
//! goes into the BIT STRING of the signed structure: the PKCS#1 v1.5 signature for
//! RSA, the DER `ECDSA-Sig-Value` for ECDSA (RFC 5480 §2.2 / RFC 5758 §3.2).

pub mod pkcs11;
pub mod software;

use std::fmt;

use const_oid::ObjectIdentifier;
use der::asn1::Null;
use der::{Any, Decode, Encode};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// OIDs used by the signer.
pub mod oid {
    use const_oid::ObjectIdentifier;
    /// rsaEncryption (RFC 8017).
    pub const RSA_ENCRYPTION: ObjectIdentifier =
        ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
    /// sha256WithRSAEncryption (RFC 4055 §5).
    pub const SHA256_WITH_RSA: ObjectIdentifier =
        ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
    /// sha384WithRSAEncryption (RFC 4055 §5).
    pub const SHA384_WITH_RSA: ObjectIdentifier =
        ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.12");
    /// sha512WithRSAEncryption (RFC 4055 §5).
    pub const SHA512_WITH_RSA: ObjectIdentifier =
        ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.13");
    /// id-ecPublicKey (RFC 5480 §2.1.1).
    pub const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
    /// ecdsa-with-SHA256 (RFC 5758 §3.2).
    pub const ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
    /// ecdsa-with-SHA384 (RFC 5758 §3.2).
    pub const ECDSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
    /// ecdsa-with-SHA512 (RFC 5758 §3.2).
    pub const ECDSA_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.4");
    /// secp256r1 (RFC 5480 §2.1.1.1).
    pub const SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
    /// secp384r1.
    pub const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
    /// secp521r1.
    pub const SECP521R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.35");
}

/// An elliptic curve chop can use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Curve {
    /// NIST P-256 (secp256r1).
    P256,
    /// NIST P-384 (secp384r1).
    P384,
    /// NIST P-521 (secp521r1).
    P521,
}

impl Curve {
    /// The curve's named-curve OID.
    pub fn oid(self) -> ObjectIdentifier {
        match self {
            Curve::P256 => oid::SECP256R1,
            Curve::P384 => oid::SECP384R1,
            Curve::P521 => oid::SECP521R1,
        }
    }
    /// Field size in bits (what §6.1.5's "ECC ≥521 bits" counts).
    pub fn bits(self) -> u32 {
        match self {
            Curve::P256 => 256,
            Curve::P384 => 384,
            Curve::P521 => 521,
        }
    }
    /// Curve from its OID.
    pub fn from_oid(oid: &ObjectIdentifier) -> Option<Curve> {
        [Curve::P256, Curve::P384, Curve::P521]
            .into_iter()
            .find(|c| c.oid() == *oid)
    }
    /// The ECDSA signature algorithm conventionally paired with this curve.
    pub fn signature_algorithm(self) -> SignatureAlgorithm {
        match self {
            Curve::P256 => SignatureAlgorithm::EcdsaSha256,
            Curve::P384 => SignatureAlgorithm::EcdsaSha384,
            Curve::P521 => SignatureAlgorithm::EcdsaSha512,
        }
    }
}

/// The type and size of a key pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeySpec {
    /// RSA with the given modulus size in bits.
    Rsa {
        /// Modulus length in bits.
        bits: u32,
    },
    /// ECDSA on the given curve.
    Ec(Curve),
}

impl fmt::Display for KeySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySpec::Rsa { bits } => write!(f, "RSA {bits} bits"),
            KeySpec::Ec(c) => write!(f, "EC {} bits ({c:?})", c.bits()),
        }
    }
}

impl KeySpec {
    /// Read the key type and size from a SubjectPublicKeyInfo.
    ///
    /// Errors name the problem: an algorithm other than rsaEncryption or
    /// id-ecPublicKey, a named curve chop does not support, or an unparsable key.
    pub fn of(spki: &SubjectPublicKeyInfoOwned) -> Result<KeySpec> {
        let alg = &spki.algorithm;
        if alg.oid == oid::RSA_ENCRYPTION {
            let bytes = spki.subject_public_key.as_bytes().ok_or(Error::Malformed {
                what: "RSA public key",
                detail: "BIT STRING has unused bits".into(),
            })?;
            let key = RsaPublicKey::from_der(bytes).map_err(|e| Error::Malformed {
                what: "RSA public key",
                detail: e.to_string(),
            })?;
            let n = key.modulus.as_bytes();
            let bits = bit_length(n);
            let e = key.public_exponent.as_bytes();
            // RFC 8017 §3.1: e is an odd integer ≥ 3. Reject e = 1 and even e.
            let e_odd = e.last().is_some_and(|b| b & 1 == 1);
            if bit_length(e) < 2 || !e_odd {
                return Err(Error::Malformed {
                    what: "RSA public key",
                    detail: "public exponent must be odd and at least 3".into(),
                });
            }
            Ok(KeySpec::Rsa { bits })
        } else if alg.oid == oid::EC_PUBLIC_KEY {
            let params = alg.parameters.as_ref().ok_or(Error::Malformed {
                what: "EC public key",
                detail: "missing namedCurve parameters".into(),
            })?;
            let curve_oid: ObjectIdentifier = params.decode_as().map_err(|_| {
                Error::UnsupportedAlgorithm(
                    "EC keys must use a namedCurve (RFC 5480 §2.1.1), not explicit parameters"
                        .into(),
                )
            })?;
            let curve = Curve::from_oid(&curve_oid).ok_or_else(|| {
                Error::UnsupportedAlgorithm(format!("elliptic curve {curve_oid}"))
            })?;
            Ok(KeySpec::Ec(curve))
        } else {
            Err(Error::UnsupportedAlgorithm(format!(
                "public key algorithm {}",
                alg.oid
            )))
        }
    }

    /// The signature algorithm a CA key of this spec signs with by default
    /// (§6.1.5: SHA-256 for RSA; SHA-384/512 for the larger curves).
    pub fn default_signature_algorithm(self) -> SignatureAlgorithm {
        match self {
            KeySpec::Rsa { .. } => SignatureAlgorithm::RsaSha256,
            KeySpec::Ec(c) => c.signature_algorithm(),
        }
    }
}

/// Length in bits of a big-endian unsigned integer (leading zero octets ignored).
fn bit_length(bytes: &[u8]) -> u32 {
    let mut iter = bytes.iter().skip_while(|b| **b == 0);
    match iter.next() {
        None => 0,
        Some(first) => {
            let rest = u32::try_from(iter.count()).unwrap_or(u32::MAX / 16);
            rest * 8 + (8 - first.leading_zeros())
        }
    }
}

/// RSAPublicKey (RFC 8017 §A.1.1).
#[derive(Clone, Debug, der::Sequence)]
struct RsaPublicKey<'a> {
    modulus: der::asn1::UintRef<'a>,
    public_exponent: der::asn1::UintRef<'a>,
}

/// A signature algorithm chop signs and verifies with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SignatureAlgorithm {
    /// sha256WithRSAEncryption, PKCS#1 v1.5 (the CPS default, §6.1.5).
    RsaSha256,
    /// sha384WithRSAEncryption.
    RsaSha384,
    /// sha512WithRSAEncryption.
    RsaSha512,
    /// ecdsa-with-SHA256.
    EcdsaSha256,
    /// ecdsa-with-SHA384.
    EcdsaSha384,
    /// ecdsa-with-SHA512.
    EcdsaSha512,
}

impl SignatureAlgorithm {
    /// The algorithm OID.
    pub fn oid(self) -> ObjectIdentifier {
        match self {
            SignatureAlgorithm::RsaSha256 => oid::SHA256_WITH_RSA,
            SignatureAlgorithm::RsaSha384 => oid::SHA384_WITH_RSA,
            SignatureAlgorithm::RsaSha512 => oid::SHA512_WITH_RSA,
            SignatureAlgorithm::EcdsaSha256 => oid::ECDSA_SHA256,
            SignatureAlgorithm::EcdsaSha384 => oid::ECDSA_SHA384,
            SignatureAlgorithm::EcdsaSha512 => oid::ECDSA_SHA512,
        }
    }

    /// The AlgorithmIdentifier to place in `signature` / `signatureAlgorithm`.
    ///
    /// RFC 4055 §5: for the sha*WithRSAEncryption OIDs "the parameters MUST be
    /// present and MUST be NULL". RFC 5758 §3.2: for ecdsa-with-SHA* "the parameters
    /// field MUST be absent".
    pub fn algorithm_identifier(self) -> AlgorithmIdentifierOwned {
        let parameters = if self.is_rsa() {
            Some(Any::from(Null))
        } else {
            None
        };
        AlgorithmIdentifierOwned {
            oid: self.oid(),
            parameters,
        }
    }

    /// Parse an AlgorithmIdentifier into a supported algorithm.
    pub fn from_algorithm_identifier(alg: &AlgorithmIdentifierOwned) -> Result<Self> {
        [
            SignatureAlgorithm::RsaSha256,
            SignatureAlgorithm::RsaSha384,
            SignatureAlgorithm::RsaSha512,
            SignatureAlgorithm::EcdsaSha256,
            SignatureAlgorithm::EcdsaSha384,
            SignatureAlgorithm::EcdsaSha512,
        ]
        .into_iter()
        .find(|a| a.oid() == alg.oid)
        .ok_or_else(|| Error::UnsupportedAlgorithm(format!("signature algorithm {}", alg.oid)))
    }

    /// Whether this is an RSA algorithm.
    pub fn is_rsa(self) -> bool {
        matches!(
            self,
            SignatureAlgorithm::RsaSha256
                | SignatureAlgorithm::RsaSha384
                | SignatureAlgorithm::RsaSha512
        )
    }

    /// Whether a key of `spec` can produce signatures of this algorithm.
    pub fn fits(self, spec: KeySpec) -> bool {
        self.is_rsa() == matches!(spec, KeySpec::Rsa { .. })
    }
}

/// Something that signs with a private key it never reveals.
pub trait Signer: Send + Sync + fmt::Debug {
    /// The algorithm the signatures are made with.
    fn algorithm(&self) -> SignatureAlgorithm;
    /// The public key, as a SubjectPublicKeyInfo.
    fn public_key(&self) -> &SubjectPublicKeyInfoOwned;
    /// Sign `message` (the DER of a to-be-signed structure); returns the signature
    /// value in X.509 form (DER `ECDSA-Sig-Value` for ECDSA).
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>>;
}

/// Verify `signature` over `message` with the public key in `spki`.
///
/// Used after every CA signature (sign-then-verify) and to check CSR
/// proof-of-possession. Verification uses aws-lc-rs, independent of the key store
/// that signed.
pub fn verify(
    spki: &SubjectPublicKeyInfoOwned,
    algorithm: SignatureAlgorithm,
    message: &[u8],
    signature: &[u8],
) -> Result<()> {
    use aws_lc_rs::signature as sig;
    let spec = KeySpec::of(spki)?;
    if !algorithm.fits(spec) {
        return Err(Error::UnsupportedAlgorithm(format!(
            "{algorithm:?} cannot be used with a {spec} key"
        )));
    }
    let params: &'static dyn sig::VerificationAlgorithm = match (algorithm, spec) {
        (SignatureAlgorithm::RsaSha256, _) => &sig::RSA_PKCS1_2048_8192_SHA256,
        (SignatureAlgorithm::RsaSha384, _) => &sig::RSA_PKCS1_2048_8192_SHA384,
        (SignatureAlgorithm::RsaSha512, _) => &sig::RSA_PKCS1_2048_8192_SHA512,
        (SignatureAlgorithm::EcdsaSha256, KeySpec::Ec(Curve::P256)) => &sig::ECDSA_P256_SHA256_ASN1,
        (SignatureAlgorithm::EcdsaSha384, KeySpec::Ec(Curve::P256)) => &sig::ECDSA_P256_SHA384_ASN1,
        (SignatureAlgorithm::EcdsaSha256, KeySpec::Ec(Curve::P384)) => &sig::ECDSA_P384_SHA256_ASN1,
        (SignatureAlgorithm::EcdsaSha384, KeySpec::Ec(Curve::P384)) => &sig::ECDSA_P384_SHA384_ASN1,
        (SignatureAlgorithm::EcdsaSha512, KeySpec::Ec(Curve::P521)) => &sig::ECDSA_P521_SHA512_ASN1,
        (SignatureAlgorithm::EcdsaSha384, KeySpec::Ec(Curve::P521)) => &sig::ECDSA_P521_SHA384_ASN1,
        (SignatureAlgorithm::EcdsaSha256, KeySpec::Ec(Curve::P521)) => &sig::ECDSA_P521_SHA256_ASN1,
        (a, s) => {
            return Err(Error::UnsupportedAlgorithm(format!("{a:?} with a {s} key")));
        }
    };
    let key_bytes = spki
        .subject_public_key
        .as_bytes()
        .ok_or_else(|| Error::SignatureCheck("public key BIT STRING has unused bits".into()))?;
    sig::UnparsedPublicKey::new(params, key_bytes)
        .verify(message, signature)
        .map_err(|_| Error::SignatureCheck(format!("{algorithm:?} signature does not verify")))
}

/// Parse a DER SubjectPublicKeyInfo.
pub fn parse_spki(der: &[u8]) -> Result<SubjectPublicKeyInfoOwned> {
    SubjectPublicKeyInfoOwned::from_der(der).map_err(|e| Error::Malformed {
        what: "SubjectPublicKeyInfo",
        detail: e.to_string(),
    })
}

/// DER of a SubjectPublicKeyInfo.
pub fn spki_der(spki: &SubjectPublicKeyInfoOwned) -> Result<Vec<u8>> {
    Ok(spki.to_der()?)
}

/// A token PIN (or any activation secret). It cannot be printed: `Debug` shows
/// `Pin(<redacted>)`, there is no `Display`, and the memory is zeroed on drop.
#[derive(Clone)]
pub struct Pin(Zeroizing<String>);

impl Pin {
    /// Wrap a PIN.
    pub fn new(pin: impl Into<String>) -> Self {
        Pin(Zeroizing::new(pin.into()))
    }
    /// The PIN, for handing to the token and nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Pin").field(&crate::error::Redacted).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_debug_is_redacted() {
        let pin = Pin::new("123456");
        let shown = format!("{pin:?}");
        assert!(!shown.contains("123456"), "{shown}");
        assert_eq!(shown, "Pin(<redacted>)");
    }

    #[test]
    fn bit_length_counts_significant_bits() {
        assert_eq!(bit_length(&[0, 0x80, 0]), 16);
        assert_eq!(bit_length(&[0x01]), 1);
        assert_eq!(bit_length(&[0, 0]), 0);
        assert_eq!(bit_length(&[0x7f, 0xff]), 15);
    }
}
