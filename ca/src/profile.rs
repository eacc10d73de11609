//! Certificate profiles from the CPS (§6.1.5, §6.1.7, §6.3.2, §7.1), as data.
//!
//! Every number the CPS states is a field with the CPS value as default, so an
//! operator can run a different practice by changing settings rather than code. The
//! constructors give the MOICA defaults:
//!
//! | constructor | keyUsage | EKU | validity | keys |
//! |---|---|---|---|---|
//! | [`Profile::root_ca`] | keyCertSign, cRLSign (§6.1.7) | – | 20 years (§6.3.2.1) | RSA ≥ 2048 |
//! | [`Profile::subordinate_ca`] | keyCertSign, cRLSign | – | 20 years | RSA ≥ 2048 |
//! | [`Profile::subscriber_signature`] | digitalSignature, nonRepudiation | – | 5 years, renewable once by 3 (§6.3.2.2) | RSA ≥ 2048, EC ≥ 521 |
//! | [`Profile::subscriber_encryption`] | RSA: keyEncipherment, dataEncipherment; EC: keyAgreement | – | 5 years, renewable once by 3 | RSA ≥ 2048, EC ≥ 521 |
//! | [`Profile::mobile_signature`], [`Profile::mobile_encryption`] | as above | – | 1 year, no renewal (§6.3.2.2) | as above |
//! | [`Profile::ocsp_responder`] | digitalSignature | OCSPSigning + ocsp-nocheck (§4.9.9) | 30 days | RSA ≥ 2048 |

use std::time::{Duration, SystemTime};

use const_oid::ObjectIdentifier;
use der::flagset::FlagSet;
use x509_cert::ext::pkix::KeyUsages;

use crate::csr::KeyPolicy;
use crate::error::{Error, Result};
use crate::name::Attribute;
use crate::signer::KeySpec;
use crate::time;

/// id-tw-gpki-certpolicy-class3Assurance, the default certificate policy (DESIGN §2).
pub const DEFAULT_POLICY_OID: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.886.101.0.3.3");

/// id-kp-OCSPSigning (RFC 6960 §4.2.2.2).
pub const ID_KP_OCSP_SIGNING: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.9");

/// What a profile issues.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProfileKind {
    /// A self-signed root CA certificate.
    RootCa,
    /// A subordinate CA certificate issued by a parent CA.
    SubordinateCa,
    /// A subscriber signature certificate (§1.4.1, §6.1.7).
    SubscriberSignature,
    /// A subscriber encryption certificate (§1.4.1, §6.1.7).
    SubscriberEncryption,
    /// A delegated OCSP responder certificate (§4.9.9, RFC 6960 §4.2.2.2).
    OcspResponder,
}

impl ProfileKind {
    /// Whether certificates of this kind are CA certificates (basicConstraints
    /// cA = TRUE).
    pub fn is_ca(self) -> bool {
        matches!(self, ProfileKind::RootCa | ProfileKind::SubordinateCa)
    }
}

/// How long certificates of a profile are valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Period {
    /// Calendar years (29 February becomes 28 February in a non-leap target year).
    Years(u32),
    /// Whole days of 86 400 seconds.
    Days(u32),
}

impl Period {
    /// `start` plus this period.
    pub fn after(self, start: SystemTime) -> Result<SystemTime> {
        match self {
            Period::Years(y) => time::add_years(start, y),
            Period::Days(d) => start
                .checked_add(Duration::from_secs(u64::from(d) * 86_400))
                .ok_or_else(|| Error::InvalidValidity(format!("{d} days is out of range"))),
        }
    }
}

/// The renewal rule of CPS §3.3.3, §4.6 and §6.3.2.2: a renewed certificate has the
/// same subject and key, a new serial, and notAfter = old notAfter + `extension`;
/// it may be requested from `before_expiry` before the old certificate's notAfter
/// until `after_expiry` after it (§4.6.2/§4.6.3: "在憑證到期前的60天開始至到期後3年
/// 內"). Renewing only once, and not when held or revoked, are enforced by the
/// operator, which knows the history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RenewalRule {
    /// How far notAfter moves (§6.3.2.2: "得展期1次，且為期3年").
    pub extension: Period,
    /// Window opens this many days before the old notAfter (§4.6.2: 60 days).
    pub before_expiry_days: u32,
    /// Window closes this long after the old notAfter (§4.6.2: 3 years).
    pub after_expiry: Period,
}

impl Default for RenewalRule {
    fn default() -> Self {
        RenewalRule {
            extension: Period::Years(3),
            before_expiry_days: 60,
            after_expiry: Period::Years(3),
        }
    }
}

/// What to do when a profile's validity would end after the issuing CA's
/// certificate does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BeyondIssuer {
    /// Shorten notAfter to the CA's notAfter (the default: issue 2, "never beyond
    /// the issuing CA's notAfter"; RFC 5280 §6.1.3 path validation would reject the
    /// excess anyway).
    Clamp,
    /// Refuse with [`Error::InvalidValidity`].
    Refuse,
}

/// A certificate profile. Build one with a CPS-default constructor and adjust
/// fields; [`crate::issue`] builds certificates from it and [`crate::lint`] checks
/// them against it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profile {
    /// Profile name, as referenced by CertificateRequest `profile`.
    pub name: String,
    /// What the profile issues.
    pub kind: ProfileKind,
    /// keyUsage bits for RSA subject keys.
    pub key_usage_rsa: FlagSet<KeyUsages>,
    /// keyUsage bits for EC subject keys.
    pub key_usage_ec: FlagSet<KeyUsages>,
    /// Whether keyUsage is marked critical. RFC 5280 §4.2.1.3: "conforming CAs
    /// SHOULD mark this extension as critical"; chop's lint requires it, so setting
    /// this to `false` makes every issuance fail lint (it exists to prove the lint).
    pub key_usage_critical: bool,
    /// extendedKeyUsage purposes; empty means no EKU extension.
    pub extended_key_usages: Vec<ObjectIdentifier>,
    /// Include id-pkix-ocsp-nocheck (RFC 6960 §4.2.2.2.1; CPS §4.9.9 item 4).
    pub ocsp_nocheck: bool,
    /// Validity of a new certificate.
    pub validity: Period,
    /// Renewal rule; `None` forbids renewal (mobile certificates, §6.3.2.2).
    pub renewal: Option<RenewalRule>,
    /// What to do when the validity would outlast the issuing CA's certificate.
    pub beyond_issuer: BeyondIssuer,
    /// Which subject keys are accepted.
    pub key_policy: KeyPolicy,
    /// Accept a bare SubjectPublicKeyInfo attested by the RA (on-card key
    /// generation, §3.2.1) instead of a CSR.
    pub allow_attested_spki: bool,
    /// Allow an rfc822Name subjectAltName (only ever when the caller says it was
    /// verified, §3.2.4).
    pub allow_email: bool,
    /// pathLenConstraint for CA profiles (RFC 5280 §4.2.1.9); `None` = unlimited.
    pub path_len: Option<u8>,
    /// Subject attributes that must be present (§3.1.5).
    pub required_attributes: Vec<Attribute>,
    /// Include cRLDistributionPoints (RFC 5280 §4.2.1.13).
    pub include_crl_distribution_points: bool,
    /// Include an OCSP accessMethod in authorityInfoAccess (RFC 5280 §4.2.2.1).
    pub include_ocsp_url: bool,
    /// Include a caIssuers accessMethod in authorityInfoAccess.
    pub include_ca_issuers_url: bool,
}

impl Profile {
    fn base(name: &str, kind: ProfileKind) -> Profile {
        let ca = kind.is_ca();
        Profile {
            name: name.to_owned(),
            kind,
            key_usage_rsa: FlagSet::default(),
            key_usage_ec: FlagSet::default(),
            key_usage_critical: true,
            extended_key_usages: Vec::new(),
            ocsp_nocheck: false,
            validity: Period::Years(5),
            renewal: None,
            beyond_issuer: BeyondIssuer::Clamp,
            key_policy: if ca {
                KeyPolicy::ca()
            } else {
                KeyPolicy::subscriber()
            },
            allow_attested_spki: false,
            allow_email: false,
            path_len: None,
            required_attributes: Vec::new(),
            include_crl_distribution_points: kind != ProfileKind::RootCa,
            include_ocsp_url: kind != ProfileKind::RootCa,
            include_ca_issuers_url: kind != ProfileKind::RootCa,
        }
    }

    /// Root CA: self-signed, keyCertSign + cRLSign only (§6.1.7), 20 years (§6.3.2.1:
    /// the CA key pair is used at most 20 years), RSA ≥ 2048, no CRL distribution
    /// point and no authorityInfoAccess (a root is a trust anchor: nothing to
    /// revoke it with, no issuer to fetch).
    pub fn root_ca() -> Profile {
        let mut p = Profile::base("root-ca", ProfileKind::RootCa);
        p.key_usage_rsa = KeyUsages::KeyCertSign | KeyUsages::CRLSign;
        p.key_usage_ec = p.key_usage_rsa;
        p.validity = Period::Years(20);
        p.required_attributes = vec![Attribute::Country];
        p
    }

    /// Subordinate CA: keyCertSign + cRLSign only (§6.1.7), 20 years (§6.3.2.1;
    /// clamped to the parent's notAfter), pathLenConstraint 0 (it issues only
    /// end-entity certificates).
    pub fn subordinate_ca() -> Profile {
        let mut p = Profile::base("subordinate-ca", ProfileKind::SubordinateCa);
        p.key_usage_rsa = KeyUsages::KeyCertSign | KeyUsages::CRLSign;
        p.key_usage_ec = p.key_usage_rsa;
        p.validity = Period::Years(20);
        p.path_len = Some(0);
        p.required_attributes = vec![Attribute::Country];
        p
    }

    /// Subscriber signature certificate: digitalSignature + nonRepudiation, 5 years,
    /// renewable once by 3 years (§6.3.2.2), RSA ≥ 2048 or EC ≥ 521 (§6.1.5),
    /// on-card keys attested by the RA accepted (§3.2.1), subject `C, CN,
    /// serialNumber` (§3.1.5).
    pub fn subscriber_signature() -> Profile {
        let mut p = Profile::base("subscriber-signature", ProfileKind::SubscriberSignature);
        p.key_usage_rsa = KeyUsages::DigitalSignature | KeyUsages::NonRepudiation;
        p.key_usage_ec = p.key_usage_rsa;
        p.renewal = Some(RenewalRule::default());
        p.allow_attested_spki = true;
        p.allow_email = true;
        p.required_attributes = vec![
            Attribute::Country,
            Attribute::CommonName,
            Attribute::SerialNumber,
        ];
        p
    }

    /// Subscriber encryption certificate: keyEncipherment + dataEncipherment for RSA
    /// keys, keyAgreement for EC keys (an EC key cannot encipher; RFC 5480 §3), 5
    /// years renewable once by 3 (§6.3.2.2).
    pub fn subscriber_encryption() -> Profile {
        let mut p = Profile::subscriber_signature();
        p.name = "subscriber-encryption".into();
        p.kind = ProfileKind::SubscriberEncryption;
        p.key_usage_rsa = KeyUsages::KeyEncipherment | KeyUsages::DataEncipherment;
        p.key_usage_ec = KeyUsages::KeyAgreement.into();
        p
    }

    /// Mobile citizen signature certificate: as [`Profile::subscriber_signature`]
    /// but valid 1 year and never renewed (§6.3.2.2: "公開金鑰憑證之使用期限為1年
    /// ... 效期到期後不得展期").
    pub fn mobile_signature() -> Profile {
        let mut p = Profile::subscriber_signature();
        p.name = "mobile-signature".into();
        p.validity = Period::Years(1);
        p.renewal = None;
        p
    }

    /// Mobile citizen encryption certificate: 1 year, no renewal (§6.3.2.2).
    pub fn mobile_encryption() -> Profile {
        let mut p = Profile::subscriber_encryption();
        p.name = "mobile-encryption".into();
        p.validity = Period::Years(1);
        p.renewal = None;
        p
    }

    /// Delegated OCSP responder: digitalSignature, EKU id-kp-OCSPSigning, and
    /// id-pkix-ocsp-nocheck (RFC 6960 §4.2.2.2; CPS §4.9.9 items 3–4), RSA ≥ 2048.
    /// Short-lived (30 days: the CPS gives no number; chop renews responder
    /// certificates automatically, and nocheck certificates should be short-lived,
    /// RFC 6960 §4.2.2.2.1). No OCSP URL (it would not be consulted).
    pub fn ocsp_responder() -> Profile {
        let mut p = Profile::base("ocsp-responder", ProfileKind::OcspResponder);
        p.key_usage_rsa = KeyUsages::DigitalSignature.into();
        p.key_usage_ec = p.key_usage_rsa;
        p.extended_key_usages = vec![ID_KP_OCSP_SIGNING];
        p.ocsp_nocheck = true;
        p.validity = Period::Days(30);
        p.key_policy = KeyPolicy::ocsp_responder();
        p.include_ocsp_url = false;
        p.required_attributes = vec![Attribute::CommonName];
        p
    }

    /// The keyUsage bits for a subject key of `spec`.
    pub fn key_usage_for(&self, spec: KeySpec) -> FlagSet<KeyUsages> {
        match spec {
            KeySpec::Rsa { .. } => self.key_usage_rsa,
            KeySpec::Ec(_) => self.key_usage_ec,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cps_defaults() {
        let s = Profile::subscriber_signature();
        assert_eq!(s.validity, Period::Years(5));
        assert_eq!(s.renewal.unwrap().extension, Period::Years(3));
        assert_eq!(s.key_policy.min_ec_bits, Some(521));
        assert!(s.allow_attested_spki);
        let m = Profile::mobile_signature();
        assert_eq!(m.validity, Period::Years(1));
        assert!(m.renewal.is_none());
        let e = Profile::subscriber_encryption();
        assert_eq!(
            e.key_usage_for(KeySpec::Ec(crate::signer::Curve::P521)),
            FlagSet::from(KeyUsages::KeyAgreement)
        );
        assert!(Profile::root_ca().kind.is_ca());
        assert!(!Profile::root_ca().include_crl_distribution_points);
        assert!(Profile::ocsp_responder().ocsp_nocheck);
        for p in [Profile::root_ca(), Profile::subordinate_ca()] {
            assert_eq!(p.key_usage_rsa, KeyUsages::KeyCertSign | KeyUsages::CRLSign);
        }
    }

    #[test]
    fn periods() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            Period::Days(2).after(t).unwrap(),
            t + Duration::from_secs(172_800)
        );
        assert!(Period::Years(5).after(t).unwrap() > Period::Days(5 * 365).after(t).unwrap());
    }
}
