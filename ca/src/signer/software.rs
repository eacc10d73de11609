//! Software keys held in process memory by aws-lc-rs (constant-time, blinded RSA).
//!
//! Used for two things only: the per-CA throwaway key that signs a certificate
//! before linting (Boulder's "lint before sign"), and delegated OCSP-responder keys
//! that the stateless responder replicas hold. CA keys never live here: they stay in
//! the HSM ([`super::pkcs11`]). No private-key operation uses the `rsa` crate
//! (RUSTSEC-2023-0071).

use std::fmt;

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self as sig, KeyPair};
use spki::SubjectPublicKeyInfoOwned;
use zeroize::Zeroizing;

use super::{Curve, KeySpec, SignatureAlgorithm, Signer, parse_spki};
use crate::error::{Error, Result};

enum Inner {
    Rsa(sig::RsaKeyPair),
    Ec(sig::EcdsaKeyPair),
}

/// A private key in memory. `Debug` shows only the algorithm and public key size.
pub struct SoftwareKey {
    inner: Inner,
    spec: KeySpec,
    algorithm: SignatureAlgorithm,
    public_key: SubjectPublicKeyInfoOwned,
}

impl fmt::Debug for SoftwareKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SoftwareKey")
            .field("spec", &self.spec)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

fn ec_signing(
    curve: Curve,
    alg: SignatureAlgorithm,
) -> Result<&'static sig::EcdsaSigningAlgorithm> {
    Ok(match (curve, alg) {
        (Curve::P256, SignatureAlgorithm::EcdsaSha256) => &sig::ECDSA_P256_SHA256_ASN1_SIGNING,
        (Curve::P384, SignatureAlgorithm::EcdsaSha384) => &sig::ECDSA_P384_SHA384_ASN1_SIGNING,
        (Curve::P521, SignatureAlgorithm::EcdsaSha512) => &sig::ECDSA_P521_SHA512_ASN1_SIGNING,
        (Curve::P521, SignatureAlgorithm::EcdsaSha384) => &sig::ECDSA_P521_SHA384_ASN1_SIGNING,
        (Curve::P521, SignatureAlgorithm::EcdsaSha256) => &sig::ECDSA_P521_SHA256_ASN1_SIGNING,
        (c, a) => {
            return Err(Error::UnsupportedAlgorithm(format!(
                "{a:?} with curve {c:?}"
            )));
        }
    })
}

fn rsa_padding(alg: SignatureAlgorithm) -> Result<&'static dyn sig::RsaEncoding> {
    Ok(match alg {
        SignatureAlgorithm::RsaSha256 => &sig::RSA_PKCS1_SHA256,
        SignatureAlgorithm::RsaSha384 => &sig::RSA_PKCS1_SHA384,
        SignatureAlgorithm::RsaSha512 => &sig::RSA_PKCS1_SHA512,
        other => {
            return Err(Error::UnsupportedAlgorithm(format!(
                "{other:?} with an RSA key"
            )));
        }
    })
}

impl SoftwareKey {
    /// Generate a fresh key of `spec` that signs with `spec`'s default algorithm.
    pub fn generate(spec: KeySpec) -> Result<Self> {
        Self::generate_with(spec, spec.default_signature_algorithm())
    }

    /// Generate a fresh key of `spec` that signs with `algorithm`.
    pub fn generate_with(spec: KeySpec, algorithm: SignatureAlgorithm) -> Result<Self> {
        if !algorithm.fits(spec) {
            return Err(Error::UnsupportedAlgorithm(format!(
                "{algorithm:?} cannot be used with a {spec} key"
            )));
        }
        let inner = match spec {
            KeySpec::Rsa { bits } => {
                let size = match bits {
                    2048 => KeySize::Rsa2048,
                    3072 => KeySize::Rsa3072,
                    4096 => KeySize::Rsa4096,
                    8192 => KeySize::Rsa8192,
                    other => {
                        return Err(Error::UnsupportedAlgorithm(format!(
                            "RSA key size {other} (2048, 3072, 4096 or 8192)"
                        )));
                    }
                };
                Inner::Rsa(
                    sig::RsaKeyPair::generate(size)
                        .map_err(|_| Error::SoftwareKey("RSA key generation failed".into()))?,
                )
            }
            KeySpec::Ec(curve) => Inner::Ec(
                sig::EcdsaKeyPair::generate(ec_signing(curve, algorithm)?)
                    .map_err(|_| Error::SoftwareKey("EC key generation failed".into()))?,
            ),
        };
        Self::from_inner(inner, algorithm)
    }

    /// Load a key from unencrypted PKCS#8 DER (e.g. a responder key from a Secret).
    pub fn from_pkcs8(pkcs8: &[u8], algorithm: SignatureAlgorithm) -> Result<Self> {
        let inner = if algorithm.is_rsa() {
            Inner::Rsa(
                sig::RsaKeyPair::from_pkcs8(pkcs8)
                    .map_err(|e| Error::SoftwareKey(format!("RSA PKCS#8 key rejected: {e}")))?,
            )
        } else {
            // Try each curve whose default pairing matches the algorithm.
            let mut found = None;
            for curve in [Curve::P256, Curve::P384, Curve::P521] {
                if let Ok(alg) = ec_signing(curve, algorithm)
                    && let Ok(k) = sig::EcdsaKeyPair::from_pkcs8(alg, pkcs8)
                {
                    found = Some(k);
                    break;
                }
            }
            Inner::Ec(found.ok_or_else(|| {
                Error::SoftwareKey(format!("no EC PKCS#8 key usable with {algorithm:?}"))
            })?)
        };
        Self::from_inner(inner, algorithm)
    }

    fn from_inner(inner: Inner, algorithm: SignatureAlgorithm) -> Result<Self> {
        let spki_der = match &inner {
            Inner::Rsa(k) => k.public_key().as_der(),
            Inner::Ec(k) => k.public_key().as_der(),
        }
        .map_err(|_| Error::SoftwareKey("cannot encode public key".into()))?;
        let public_key = parse_spki(spki_der.as_ref())?;
        let spec = KeySpec::of(&public_key)?;
        Ok(SoftwareKey {
            inner,
            spec,
            algorithm,
            public_key,
        })
    }

    /// The key's type and size.
    pub fn spec(&self) -> KeySpec {
        self.spec
    }

    /// Export the private key as unencrypted PKCS#8 DER, zeroed on drop. For handing
    /// a responder key to a Kubernetes Secret; never log it.
    pub fn to_pkcs8(&self) -> Result<Zeroizing<Vec<u8>>> {
        let fail = |_| Error::SoftwareKey("cannot export key".into());
        let bytes = match &self.inner {
            Inner::Rsa(k) => {
                let der: Pkcs8V1Der<'static> = k.as_der().map_err(fail)?;
                der.as_ref().to_vec()
            }
            Inner::Ec(k) => k.to_pkcs8v1().map_err(fail)?.as_ref().to_vec(),
        };
        Ok(Zeroizing::new(bytes))
    }
}

impl Signer for SoftwareKey {
    fn algorithm(&self) -> SignatureAlgorithm {
        self.algorithm
    }

    fn public_key(&self) -> &SubjectPublicKeyInfoOwned {
        &self.public_key
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        let rng = SystemRandom::new();
        match &self.inner {
            Inner::Rsa(k) => {
                let mut out = vec![0u8; k.public_modulus_len()];
                k.sign(rsa_padding(self.algorithm)?, &rng, message, &mut out)
                    .map_err(|_| Error::SoftwareKey("RSA signing failed".into()))?;
                Ok(out)
            }
            Inner::Ec(k) => Ok(k
                .sign(&rng, message)
                .map_err(|_| Error::SoftwareKey("ECDSA signing failed".into()))?
                .as_ref()
                .to_vec()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signer::verify;

    #[test]
    fn every_spec_signs_and_verifies() {
        for spec in [
            KeySpec::Rsa { bits: 2048 },
            KeySpec::Ec(Curve::P256),
            KeySpec::Ec(Curve::P384),
            KeySpec::Ec(Curve::P521),
        ] {
            let key = SoftwareKey::generate(spec).unwrap();
            assert_eq!(key.spec(), spec);
            let sig = key.sign(b"to be signed").unwrap();
            verify(key.public_key(), key.algorithm(), b"to be signed", &sig).unwrap();
            let err = verify(key.public_key(), key.algorithm(), b"other", &sig).unwrap_err();
            assert!(matches!(err, Error::SignatureCheck(_)), "{err}");
        }
    }

    #[test]
    fn pkcs8_round_trip_keeps_the_key() {
        let key = SoftwareKey::generate(KeySpec::Ec(Curve::P256)).unwrap();
        let back =
            SoftwareKey::from_pkcs8(&key.to_pkcs8().unwrap(), SignatureAlgorithm::EcdsaSha256)
                .unwrap();
        assert_eq!(back.public_key(), key.public_key());
        let rsa = SoftwareKey::generate(KeySpec::Rsa { bits: 2048 }).unwrap();
        let back = SoftwareKey::from_pkcs8(&rsa.to_pkcs8().unwrap(), SignatureAlgorithm::RsaSha256)
            .unwrap();
        assert_eq!(back.public_key(), rsa.public_key());
    }

    #[test]
    fn mismatched_algorithm_is_refused() {
        let err = SoftwareKey::generate_with(
            KeySpec::Rsa { bits: 2048 },
            SignatureAlgorithm::EcdsaSha256,
        )
        .unwrap_err();
        assert!(matches!(err, Error::UnsupportedAlgorithm(_)));
        let err = SoftwareKey::generate(KeySpec::Rsa { bits: 1024 }).unwrap_err();
        assert!(err.to_string().contains("1024"), "{err}");
    }

    #[test]
    fn debug_shows_no_key_material() {
        let key = SoftwareKey::generate(KeySpec::Ec(Curve::P256)).unwrap();
        let shown = format!("{key:?}");
        assert!(shown.starts_with("SoftwareKey"), "{shown}");
        assert!(shown.len() < 120, "{shown}");
    }
}
