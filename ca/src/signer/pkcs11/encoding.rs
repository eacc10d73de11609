//! Byte-level conversions between PKCS#11 attribute values and X.509 structures:
//! public keys (CKA_MODULUS/CKA_PUBLIC_EXPONENT, CKA_EC_PARAMS/CKA_EC_POINT →
//! SubjectPublicKeyInfo) and ECDSA signatures (raw `r || s` → DER `ECDSA-Sig-Value`).

use const_oid::ObjectIdentifier;
use der::asn1::{BitString, Null, OctetStringRef, UintRef};
use der::{Any, Decode, Encode};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};

use crate::error::{Error, Result};
use crate::signer::{Curve, oid};

/// RSAPublicKey (RFC 8017 §A.1.1).
#[derive(Clone, Debug, der::Sequence)]
struct RsaPublicKey<'a> {
    modulus: UintRef<'a>,
    public_exponent: UintRef<'a>,
}

/// `ECDSA-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER }` (RFC 5480 §2.2 / ANSI
/// X9.62; the form RFC 5758 §3.2 puts in a certificate's signatureValue).
#[derive(Clone, Debug, der::Sequence)]
struct EcdsaSigValue<'a> {
    r: UintRef<'a>,
    s: UintRef<'a>,
}

/// Length in octets of a coordinate (and of each of `r`, `s`) on `curve`:
/// ⌈field bits / 8⌉, so 66 for P-521.
pub(super) fn coordinate_len(curve: Curve) -> usize {
    match curve {
        Curve::P256 => 32,
        Curve::P384 => 48,
        Curve::P521 => 66,
    }
}

/// SubjectPublicKeyInfo of an RSA key from its big-endian modulus and exponent.
///
/// RFC 3279 §2.3.1: rsaEncryption "parameters field MUST have ASN.1 type NULL".
pub(super) fn rsa_spki(modulus: &[u8], exponent: &[u8]) -> Result<SubjectPublicKeyInfoOwned> {
    let key = RsaPublicKey {
        modulus: UintRef::new(modulus)?,
        public_exponent: UintRef::new(exponent)?,
    }
    .to_der()?;
    Ok(SubjectPublicKeyInfoOwned {
        algorithm: AlgorithmIdentifierOwned {
            oid: oid::RSA_ENCRYPTION,
            parameters: Some(Any::from(Null)),
        },
        subject_public_key: BitString::from_bytes(&key)?,
    })
}

/// The named curve in a CKA_EC_PARAMS value.
///
/// PKCS#11 Mechanisms v2.40 §2.3.3 (ECDSA public key objects): CKA_EC_PARAMS is the "DER-encoding of an ANSI X9.62
/// Parameters value"; chop accepts only the `namedCurve` choice (an OID), as RFC 5480
/// §2.1.1 requires for certificates.
pub(super) fn curve_of_ec_params(params: &[u8]) -> Result<Curve> {
    let curve_oid = ObjectIdentifier::from_der(params).map_err(|_| {
        Error::UnsupportedAlgorithm(
            "EC key with explicit or unparsable CKA_EC_PARAMS (only named curves)".into(),
        )
    })?;
    Curve::from_oid(&curve_oid)
        .ok_or_else(|| Error::UnsupportedAlgorithm(format!("elliptic curve {curve_oid}")))
}

/// CKA_EC_PARAMS for `curve`: the DER of its OID.
pub(super) fn ec_params(curve: Curve) -> Result<Vec<u8>> {
    Ok(curve.oid().to_der()?)
}

/// SubjectPublicKeyInfo of an EC key from CKA_EC_POINT on `curve`.
///
/// PKCS#11 Mechanisms v2.40 §2.3.3 (ECDSA public key objects) defines CKA_EC_POINT as the "DER-encoding of ANSI X9.62
/// ECPoint value Q", i.e. an OCTET STRING wrapping the point (what SoftHSM2
/// returns); some tokens return the bare point. Both are accepted, told apart by
/// length. Only the uncompressed form (`04 || X || Y`, SEC 1 §2.3.3) is accepted,
/// the form RFC 5480 §2.2 says MUST be supported.
pub(super) fn ec_spki(curve: Curve, ec_point: &[u8]) -> Result<SubjectPublicKeyInfoOwned> {
    let raw_len = 1 + 2 * coordinate_len(curve);
    let point = if ec_point.len() == raw_len {
        ec_point
    } else {
        OctetStringRef::from_der(ec_point)
            .map_err(|e| Error::Malformed {
                what: "CKA_EC_POINT",
                detail: e.to_string(),
            })?
            .as_bytes()
    };
    if point.len() != raw_len || point.first() != Some(&0x04) {
        return Err(Error::Malformed {
            what: "CKA_EC_POINT",
            detail: format!(
                "expected an uncompressed {curve:?} point of {raw_len} octets, got {} octets",
                point.len()
            ),
        });
    }
    Ok(SubjectPublicKeyInfoOwned {
        algorithm: AlgorithmIdentifierOwned {
            oid: oid::EC_PUBLIC_KEY,
            parameters: Some(Any::encode_from(&curve.oid())?),
        },
        subject_public_key: BitString::from_bytes(point)?,
    })
}

/// The PKCS#11 public-key attributes of a SubjectPublicKeyInfo (to create a
/// public-key object for a restored key): RSA → CKA_MODULUS and
/// CKA_PUBLIC_EXPONENT (big-endian, no sign octet); EC → CKA_EC_PARAMS and
/// CKA_EC_POINT as a DER OCTET STRING (PKCS#11 Current Mechanisms v2.40 §2.3.3,
/// "DER-encoding of ANSI X9.62 ECPoint value Q").
pub(super) fn public_key_attributes(
    spki: &SubjectPublicKeyInfoOwned,
) -> Result<Vec<cryptoki::object::Attribute>> {
    use cryptoki::object::Attribute;
    let bits = spki
        .subject_public_key
        .as_bytes()
        .ok_or_else(|| Error::Malformed {
            what: "public key",
            detail: "BIT STRING has unused bits".into(),
        })?;
    match crate::signer::KeySpec::of(spki)? {
        crate::signer::KeySpec::Rsa { .. } => {
            let key = RsaPublicKey::from_der(bits)?;
            Ok(vec![
                Attribute::Modulus(key.modulus.as_bytes().to_vec()),
                Attribute::PublicExponent(key.public_exponent.as_bytes().to_vec()),
            ])
        }
        crate::signer::KeySpec::Ec(curve) => Ok(vec![
            Attribute::EcParams(ec_params(curve)?),
            Attribute::EcPoint(OctetStringRef::new(bits)?.to_der()?),
        ]),
    }
}

/// Convert a raw CKM_ECDSA signature into DER `ECDSA-Sig-Value`.
///
/// PKCS#11 Mechanisms v2.40 §2.3.1 (EC Signatures): "the signature octets correspond to the concatenation of
/// the ECDSA values r and s, both represented as an octet string of equal length of
/// at most nLen with the most significant byte first". Each half is therefore
/// `coordinate_len(curve)` octets (66 for P-521). DER INTEGERs must be minimal
/// (X.690 §8.3.2) and non-negative, so leading zero octets are stripped and a 0x00
/// is prepended when the high bit is set; `UintRef` does both.
pub(super) fn ecdsa_raw_to_der(curve: Curve, raw: &[u8]) -> Result<Vec<u8>> {
    let half = coordinate_len(curve);
    if raw.len() != 2 * half {
        return Err(Error::Pkcs11 {
            operation: "C_Sign",
            detail: format!(
                "CKM_ECDSA on {curve:?} returned {} octets, expected {}",
                raw.len(),
                2 * half
            ),
        });
    }
    let (r, s) = raw.split_at(half);
    Ok(EcdsaSigValue {
        r: UintRef::new(r)?,
        s: UintRef::new(s)?,
    }
    .to_der()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_signature_becomes_minimal_der_integers() {
        // r with leading zero octets, s with the high bit set.
        let mut raw = vec![0u8; 64];
        raw[31] = 0x05;
        raw[32] = 0x80;
        raw[63] = 0x01;
        let der = ecdsa_raw_to_der(Curve::P256, &raw).unwrap();
        // SEQUENCE { INTEGER 5, INTEGER 0x00 80 00 .. 01 (33 octets) }
        assert_eq!(&der[..5], &[0x30, 3 + 2 + 33, 0x02, 0x01, 0x05]);
        assert_eq!(&der[5..8], &[0x02, 33, 0x00]);
        assert_eq!(der[8], 0x80);
        assert_eq!(der.len(), 2 + 3 + 2 + 33);
    }

    #[test]
    fn p521_halves_are_66_octets_and_long_form_length() {
        let raw = vec![0x01u8; 132];
        let der = ecdsa_raw_to_der(Curve::P521, &raw).unwrap();
        // 2 × (2 + 66) = 136 > 127: long-form SEQUENCE length.
        assert_eq!(&der[..3], &[0x30, 0x81, 136]);
        assert!(ecdsa_raw_to_der(Curve::P521, &raw[..128]).is_err());
    }

    #[test]
    fn ec_point_accepts_wrapped_and_bare_points() {
        let mut point = vec![0x04u8];
        point.extend_from_slice(&[7u8; 64]);
        let wrapped = OctetStringRef::new(&point).unwrap().to_der().unwrap();
        let a = ec_spki(Curve::P256, &wrapped).unwrap();
        let b = ec_spki(Curve::P256, &point).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.subject_public_key.raw_bytes(), &point[..]);
        let compressed = [0x02u8; 33];
        assert!(ec_spki(Curve::P256, &compressed).is_err());
    }

    #[test]
    fn ec_params_round_trip() {
        for c in [Curve::P256, Curve::P384, Curve::P521] {
            assert_eq!(curve_of_ec_params(&ec_params(c).unwrap()).unwrap(), c);
        }
        assert!(curve_of_ec_params(&[0x30, 0x00]).is_err());
    }
}
