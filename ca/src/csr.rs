//! Requests and key policy: PKCS#10 certificate requests (RFC 2986), bare
//! SubjectPublicKeyInfos from RA-attested on-card keys (CPS §3.2.1), and the key
//! sizes the CPS allows (§6.1.5).
//!
//! **Only the key is taken from a request.** The subject and every other field of
//! the certificate come from the registration authority (the caller); nothing in
//! a CSR's subject or requested extensions is copied (CPS §3.2.4: "未經驗證之用戶
//! 資訊不得寫入憑證", unverified subscriber information is never put in a
//! certificate).

use std::fmt;

use der::asn1::{BitString, SetOfVec};
use der::{Decode, Encode};
use spki::SubjectPublicKeyInfoOwned;
use x509_cert::Certificate;
use x509_cert::name::Name;
use x509_cert::request::{CertReq, CertReqInfo, Version};

use crate::error::{Error, Result};
use crate::goodkey;
use crate::signer::{KeySpec, SignatureAlgorithm, Signer, verify};

/// Which keys a profile accepts (CPS §6.1.5: "用戶使用 2048 位元(含)以上的 RSA 或
/// 521 位元(含)以上的 ECC 金鑰"; the CA itself uses RSA 2048).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyPolicy {
    /// Smallest RSA modulus accepted, in bits. Never below 2048: chop's verifier
    /// (aws-lc-rs) does not verify smaller RSA signatures.
    pub min_rsa_bits: u32,
    /// Largest RSA modulus accepted, in bits.
    pub max_rsa_bits: u32,
    /// Smallest EC field size accepted, in bits; `None` refuses EC keys.
    pub min_ec_bits: Option<u32>,
}

impl KeyPolicy {
    /// Subscribers: RSA ≥ 2048 or EC ≥ 521 bits (CPS §6.1.5, §6.3.2.2).
    pub fn subscriber() -> Self {
        KeyPolicy {
            min_rsa_bits: 2048,
            max_rsa_bits: 8192,
            min_ec_bits: Some(521),
        }
    }

    /// CA keys: RSA ≥ 2048 (CPS §6.1.5, §6.3.2.1: "金鑰長度為RSA 2048位元").
    pub fn ca() -> Self {
        KeyPolicy {
            min_rsa_bits: 2048,
            max_rsa_bits: 8192,
            min_ec_bits: None,
        }
    }

    /// Delegated OCSP responders: RSA ≥ 2048 (CPS §4.9.9 item 3: "RSA 2048
    /// /SHA-256 之線上憑證狀態協定回應伺服器之憑證").
    pub fn ocsp_responder() -> Self {
        Self::ca()
    }

    /// Check a key against the policy and return its type and size. Errors:
    /// [`Error::Malformed`] / [`Error::UnsupportedAlgorithm`] for keys that cannot be
    /// read, [`Error::WeakKey`] for keys that are too small (or EC where only RSA is
    /// accepted, or RSA beyond the maximum), then the structural checks of
    /// [`goodkey::check`] (every profile, every source of key: CSR, RA-attested,
    /// renewal): [`Error::WeakKeyExponent`], [`Error::WeakKeySmallFactor`],
    /// [`Error::WeakKeyFermat`], [`Error::WeakKeyRoca`], [`Error::InvalidEcPoint`].
    pub fn check(&self, spki: &SubjectPublicKeyInfoOwned) -> Result<KeySpec> {
        let spec = key_spec(spki)?;
        match spec {
            KeySpec::Rsa { bits } => {
                let min = self.min_rsa_bits.max(2048);
                if bits < min {
                    return Err(Error::WeakKey {
                        found: spec.to_string(),
                        required: self.to_string(),
                    });
                }
                if bits > self.max_rsa_bits {
                    return Err(Error::UnsupportedAlgorithm(format!(
                        "{spec}: RSA keys larger than {} bits are not accepted",
                        self.max_rsa_bits
                    )));
                }
            }
            KeySpec::Ec(curve) => match self.min_ec_bits {
                Some(min) if curve.bits() >= min => {}
                _ => {
                    return Err(Error::WeakKey {
                        found: spec.to_string(),
                        required: self.to_string(),
                    });
                }
            },
        }
        goodkey::check(spki, spec)?;
        Ok(spec)
    }
}

impl fmt::Display for KeyPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RSA ≥ {} bits", self.min_rsa_bits.max(2048))?;
        if let Some(ec) = self.min_ec_bits {
            write!(f, " or EC ≥ {ec} bits")?;
        }
        Ok(())
    }
}

/// [`KeySpec::of`] with the algorithm's name in the error (e.g. `id-Ed25519`).
pub fn key_spec(spki: &SubjectPublicKeyInfoOwned) -> Result<KeySpec> {
    KeySpec::of(spki).map_err(|e| match e {
        Error::UnsupportedAlgorithm(detail) => {
            match const_oid::db::DB.by_oid(&spki.algorithm.oid) {
                Some(name) => Error::UnsupportedAlgorithm(format!("{detail} ({name})")),
                None => Error::UnsupportedAlgorithm(detail),
            }
        }
        other => other,
    })
}

/// Where a subject key came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// A PKCS#10 request whose self-signature verified (proof of possession).
    ProofOfPossession,
    /// A bare SubjectPublicKeyInfo delivered by the RA over a secure channel for a key
    /// generated on the card (CPS §3.2.1: no proof of possession needed).
    RaAttested,
    /// The key of a certificate being renewed (CPS §3.3.3: same key).
    Renewal,
}

/// A subject public key ready for issuance: parsed, readable by chop, and (for
/// CSRs) with verified proof of possession. Fields are private so that an
/// unverified CSR key cannot be dressed up as a verified one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubjectKey {
    spki: SubjectPublicKeyInfoOwned,
    spec: KeySpec,
    source: KeySource,
}

impl SubjectKey {
    /// Parse a PKCS#10 request (PEM `CERTIFICATE REQUEST` or DER), verify its
    /// signature with its own key (proof of possession, RFC 2986 §3) and keep only
    /// the key.
    pub fn from_csr(input: &[u8]) -> Result<Self> {
        let csr = parse_csr(input)?;
        let spec = verify_csr(&csr)?;
        Ok(SubjectKey {
            spki: csr.info.public_key,
            spec,
            source: KeySource::ProofOfPossession,
        })
    }

    /// A bare SubjectPublicKeyInfo (PEM `PUBLIC KEY` or DER) attested by the RA
    /// (CPS §3.2.1). Only profiles with `allow_attested_spki` accept it.
    pub fn from_attested_spki(input: &[u8]) -> Result<Self> {
        let der = pem_or_der(input, &["PUBLIC KEY"], "SubjectPublicKeyInfo")?;
        let spki = SubjectPublicKeyInfoOwned::from_der(&der).map_err(|e| Error::Malformed {
            what: "SubjectPublicKeyInfo",
            detail: e.to_string(),
        })?;
        let spec = key_spec(&spki)?;
        Ok(SubjectKey {
            spki,
            spec,
            source: KeySource::RaAttested,
        })
    }

    /// The key of an existing certificate, for renewal (CPS §3.3.3: same key).
    pub fn from_certificate(certificate: &Certificate) -> Result<Self> {
        let spki = certificate.tbs_certificate.subject_public_key_info.clone();
        let spec = key_spec(&spki)?;
        Ok(SubjectKey {
            spki,
            spec,
            source: KeySource::Renewal,
        })
    }

    /// The SubjectPublicKeyInfo.
    pub fn spki(&self) -> &SubjectPublicKeyInfoOwned {
        &self.spki
    }

    /// The key's type and size.
    pub fn spec(&self) -> KeySpec {
        self.spec
    }

    /// Where the key came from.
    pub fn source(&self) -> KeySource {
        self.source
    }
}

/// Parse a PKCS#10 request from PEM (`CERTIFICATE REQUEST` or the legacy `NEW
/// CERTIFICATE REQUEST`) or DER. Does not verify it: see [`verify_csr`].
pub fn parse_csr(input: &[u8]) -> Result<CertReq> {
    let der = pem_or_der(
        input,
        &["CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST"],
        "certificate request",
    )?;
    CertReq::from_der(&der).map_err(|e| Error::Malformed {
        what: "certificate request",
        detail: e.to_string(),
    })
}

/// Verify a request's self-signature (proof of possession) and return its key's
/// type. Errors name the problem: an unreadable or unsupported key
/// ([`Error::Malformed`], [`Error::UnsupportedAlgorithm`]), an RSA key below 2048
/// bits ([`Error::WeakKey`]: no chop policy accepts one), a weak or invalid key
/// ([`goodkey::check`]: checked before the signature, so that the answer names the
/// key's flaw rather than the verifier's refusal of it), an unsupported signature
/// algorithm, or a signature that does not verify ([`Error::CsrSignatureInvalid`]).
pub fn verify_csr(csr: &CertReq) -> Result<KeySpec> {
    let spki = &csr.info.public_key;
    let spec = key_spec(spki)?;
    if let KeySpec::Rsa { bits } = spec
        && bits < 2048
    {
        return Err(Error::WeakKey {
            found: spec.to_string(),
            required: "RSA ≥ 2048 bits".into(),
        });
    }
    goodkey::check(spki, spec)?;
    let algorithm =
        SignatureAlgorithm::from_algorithm_identifier(&csr.algorithm).map_err(|_| {
            let name = const_oid::db::DB
                .by_oid(&csr.algorithm.oid)
                .unwrap_or("unknown");
            Error::UnsupportedAlgorithm(format!(
                "request signature algorithm {} ({name})",
                csr.algorithm.oid
            ))
        })?;
    if !algorithm.fits(spec) {
        return Err(Error::UnsupportedAlgorithm(format!(
            "request signed with {algorithm:?} but its key is {spec}"
        )));
    }
    let info = csr.info.to_der()?;
    let signature = csr.signature.as_bytes().ok_or(Error::CsrSignatureInvalid)?;
    verify(spki, algorithm, &info, signature).map_err(|e| match e {
        Error::SignatureCheck(_) => Error::CsrSignatureInvalid,
        other => other,
    })?;
    Ok(spec)
}

/// Build and sign a PKCS#10 request for `signer`'s key with `subject` and no
/// attributes (RFC 2986 §4.1), e.g. for a subordinate CA key in the HSM whose
/// certificate the parent CA will issue. The signature is verified before the DER
/// is returned.
pub fn build_csr(signer: &dyn Signer, subject: &Name) -> Result<Vec<u8>> {
    let info = CertReqInfo {
        version: Version::V1,
        subject: subject.clone(),
        public_key: signer.public_key().clone(),
        attributes: SetOfVec::new(),
    };
    let info_der = info.to_der()?;
    let algorithm = signer.algorithm();
    let signature = signer.sign(&info_der)?;
    verify(signer.public_key(), algorithm, &info_der, &signature)?;
    let csr = CertReq {
        info,
        algorithm: algorithm.algorithm_identifier(),
        signature: BitString::from_bytes(&signature)?,
    };
    Ok(csr.to_der()?)
}

/// PEM text for DER bytes under `label` (`CERTIFICATE`, `CERTIFICATE REQUEST`, …).
pub fn to_pem(label: &str, der: &[u8]) -> Result<String> {
    der::pem::encode_string(label, der::pem::LineEnding::LF, der).map_err(|e| Error::Malformed {
        what: "PEM",
        detail: e.to_string(),
    })
}

/// Decode PEM with one of `labels`, or take the input as DER.
fn pem_or_der(input: &[u8], labels: &[&str], what: &'static str) -> Result<Vec<u8>> {
    let trimmed = input.trim_ascii_start();
    if trimmed.starts_with(b"-----BEGIN") {
        let (label, der) = der::pem::decode_vec(trimmed).map_err(|e| Error::Malformed {
            what,
            detail: format!("PEM: {e}"),
        })?;
        if !labels.contains(&label) {
            return Err(Error::Malformed {
                what,
                detail: format!("PEM label {label:?}, expected {:?}", labels[0]),
            });
        }
        Ok(der)
    } else if input.is_empty() {
        Err(Error::Malformed {
            what,
            detail: "empty input".into(),
        })
    } else {
        Ok(input.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::name::DistinguishedName;
    use crate::signer::Curve;
    use crate::signer::software::SoftwareKey;

    fn subject() -> Name {
        DistinguishedName::parse("C=TW, CN=王小明")
            .unwrap()
            .to_name()
            .unwrap()
    }

    #[test]
    fn built_csr_round_trips_with_proof_of_possession() {
        let key = SoftwareKey::generate(KeySpec::Ec(Curve::P521)).unwrap();
        let der = build_csr(&key, &subject()).unwrap();
        let pem = to_pem("CERTIFICATE REQUEST", &der).unwrap();
        for input in [der.as_slice(), pem.as_bytes()] {
            let k = SubjectKey::from_csr(input).unwrap();
            assert_eq!(k.spki(), key.public_key());
            assert_eq!(k.spec(), KeySpec::Ec(Curve::P521));
            assert_eq!(k.source(), KeySource::ProofOfPossession);
        }
    }

    #[test]
    fn tampered_csr_has_no_proof_of_possession() {
        let key = SoftwareKey::generate(KeySpec::Ec(Curve::P256)).unwrap();
        let mut csr = parse_csr(&build_csr(&key, &subject()).unwrap()).unwrap();
        csr.info.subject = DistinguishedName::parse("C=TW, CN=someone else")
            .unwrap()
            .to_name()
            .unwrap();
        let err = verify_csr(&csr).unwrap_err();
        assert!(matches!(err, Error::CsrSignatureInvalid), "{err}");
    }

    #[test]
    fn policies() {
        let p256 = SoftwareKey::generate(KeySpec::Ec(Curve::P256)).unwrap();
        let err = KeyPolicy::subscriber()
            .check(p256.public_key())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "key too weak: EC 256 bits (P256), policy requires RSA ≥ 2048 bits or EC ≥ 521 bits"
        );
        let p521 = SoftwareKey::generate(KeySpec::Ec(Curve::P521)).unwrap();
        assert!(KeyPolicy::subscriber().check(p521.public_key()).is_ok());
        assert!(matches!(
            KeyPolicy::ca().check(p521.public_key()),
            Err(Error::WeakKey { .. })
        ));
    }

    #[test]
    fn garbage_and_wrong_labels_are_malformed() {
        assert!(matches!(parse_csr(b"hello"), Err(Error::Malformed { .. })));
        assert!(matches!(parse_csr(b""), Err(Error::Malformed { .. })));
        let pem = to_pem("CERTIFICATE", b"\x30\x00").unwrap();
        let err = parse_csr(pem.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("PEM label"), "{err}");
    }
}
