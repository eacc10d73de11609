//! Issuance that cannot go wrong silently.
//!
//! ```text
//! Issuer::new(CaConfig)          one throwaway SoftwareKey of the CA key's spec
//!   └─ issuer.prepare(&request)  build TBSCertificate → sign with throwaway key →
//!        │                       parse the DER back → lint → Linted
//!        └─ linted.sign(&issuer) CA signer signs the same TBS DER → assemble →
//!                                verify with the CA certificate's public key →
//!                                IssuedCertificate
//! ```
//!
//! [`Linted`] has private fields and no public constructor: the only way to get
//! one is [`Issuer::prepare`] (or [`self_sign_root`] internally), which runs the
//! lint. [`Linted::sign`] consumes it. So a certificate that was not linted cannot
//! be signed by this crate: a compile-time guarantee, not a convention.
//!
//! The serial number is chosen by the caller: the operator reserves it in status
//! before signing (DESIGN §1 "never issue twice"). [`Serial::random`] gives a
//! fresh one (127 bits from the CSPRNG, RFC 5280 §4.1.2.2).
//!
//! Validity never extends beyond the issuing CA's notAfter: by default notAfter is
//! clamped to it ([`BeyondIssuer::Clamp`], issue 2: "never beyond the issuing CA's
//! notAfter"); [`BeyondIssuer::Refuse`] turns that into an error.

use std::sync::Arc;
use std::time::SystemTime;

use const_oid::ObjectIdentifier;
use der::asn1::BitString;
use der::{Decode, Encode};
use spki::SubjectPublicKeyInfoOwned;
use x509_cert::certificate::Version;
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::name::Name;
use x509_cert::time::Validity;
use x509_cert::{Certificate, TbsCertificate};

use crate::csr::{self, KeyPolicy, KeySource, SubjectKey};
use crate::error::{Error, Result};
use crate::ext::{self, oid};
use crate::lint::{LintContext, has_attribute, lint};
use crate::name::{DistinguishedName, check_name, name_der};
use crate::profile::{BeyondIssuer, DEFAULT_POLICY_OID, Profile, ProfileKind, RenewalRule};
use crate::serial::Serial;
use crate::signer::software::SoftwareKey;
use crate::signer::{KeySpec, SignatureAlgorithm, Signer, verify};
use crate::time;

/// The issuing CA: its certificate, its key (behind [`Signer`], normally in the
/// HSM) and the URLs and policies it writes into the certificates it issues.
#[derive(Clone, Debug)]
pub struct CaConfig {
    /// The CA's own certificate (self-signed root, or issued by a parent or an
    /// external CA).
    pub certificate: Certificate,
    /// The CA's signing key; its public key must be the certificate's.
    pub signer: Arc<dyn Signer>,
    /// certificatePolicies OIDs (default `2.16.886.101.0.3.3`, DESIGN §2).
    pub policy_oids: Vec<ObjectIdentifier>,
    /// cRLDistributionPoints URLs of the full CRL. A request may name its CRL
    /// partition instead ([`IssuanceRequest::crl_distribution_point`]).
    pub crl_urls: Vec<String>,
    /// OCSP responder URLs for authorityInfoAccess (CPS §7.3 item 1).
    pub ocsp_urls: Vec<String>,
    /// caIssuers URLs (where this CA's certificate can be fetched).
    pub ca_issuers_urls: Vec<String>,
}

impl CaConfig {
    /// A configuration with the default policy OID and no URLs.
    pub fn new(certificate: Certificate, signer: Arc<dyn Signer>) -> Self {
        CaConfig {
            certificate,
            signer,
            policy_oids: vec![DEFAULT_POLICY_OID],
            crl_urls: Vec::new(),
            ocsp_urls: Vec::new(),
            ca_issuers_urls: Vec::new(),
        }
    }
}

/// What a lint pass needs to know about the issuer.
#[derive(Clone, Debug)]
struct IssuerView {
    name: Name,
    spki: SubjectPublicKeyInfoOwned,
    key_id: Vec<u8>,
    not_before: SystemTime,
    not_after: SystemTime,
    algorithm: SignatureAlgorithm,
}

/// A CA ready to issue: the configuration, checked, plus the throwaway lint key
/// (one per CA, generated in [`Issuer::new`]).
#[derive(Debug)]
pub struct Issuer {
    config: CaConfig,
    view: IssuerView,
    throwaway: SoftwareKey,
}

impl Issuer {
    /// Check the configuration and generate the throwaway key. Refuses
    /// ([`Error::IssuerConfig`]) a signer whose public key or algorithm does not
    /// match the certificate, a certificate that is not a CA certificate (cA TRUE,
    /// keyCertSign), lacks a subjectKeyIdentifier (needed for the AKI of every
    /// issued certificate, RFC 5280 §4.2.1.1), and bad policies or URLs.
    pub fn new(config: CaConfig) -> Result<Issuer> {
        let cert = &config.certificate;
        let tbs = &cert.tbs_certificate;
        let bad = |s: String| Err(Error::IssuerConfig(s));
        if *config.signer.public_key() != tbs.subject_public_key_info {
            return bad("the signer's public key is not the key in the CA certificate".into());
        }
        let spec = KeySpec::of(&tbs.subject_public_key_info)?;
        let algorithm = config.signer.algorithm();
        if !algorithm.fits(spec) {
            return bad(format!(
                "signer algorithm {algorithm:?} does not fit a {spec} key"
            ));
        }
        let exts = tbs.extensions.as_deref().unwrap_or(&[]);
        let is_ca = ext::find(exts, &oid::ID_CE_BASIC_CONSTRAINTS)
            .and_then(|e| ext::basic_constraints::parse(e).ok())
            .is_some_and(|bc| bc.ca);
        if !is_ca {
            return bad("the CA certificate lacks basicConstraints cA TRUE".into());
        }
        if let Some(e) = ext::find(exts, &oid::ID_CE_KEY_USAGE) {
            let ku = ext::key_usage::parse(e)?;
            if !ku.contains(x509_cert::ext::pkix::KeyUsages::KeyCertSign) {
                return bad("the CA certificate's keyUsage lacks keyCertSign".into());
            }
        }
        let key_id = ext::key_identifier::certificate_ski(cert)?.ok_or_else(|| {
            Error::IssuerConfig("the CA certificate has no subjectKeyIdentifier".into())
        })?;
        // Validate policies and URLs once, up front.
        ext::certificate_policies::build(&config.policy_oids)?;
        for u in config
            .crl_urls
            .iter()
            .chain(&config.ocsp_urls)
            .chain(&config.ca_issuers_urls)
        {
            ext::checked_uri(u)?;
        }
        let view = IssuerView {
            name: tbs.subject.clone(),
            spki: tbs.subject_public_key_info.clone(),
            key_id,
            not_before: time::from_x509(&tbs.validity.not_before),
            not_after: time::from_x509(&tbs.validity.not_after),
            algorithm,
        };
        let throwaway = SoftwareKey::generate_with(spec, algorithm)?;
        Ok(Issuer {
            config,
            view,
            throwaway,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &CaConfig {
        &self.config
    }

    /// The CA certificate.
    pub fn certificate(&self) -> &Certificate {
        &self.config.certificate
    }

    /// The CA's subjectKeyIdentifier as found in its certificate (what every issued
    /// certificate's authorityKeyIdentifier holds; CRLs and OCSP use it too).
    pub fn key_identifier(&self) -> &[u8] {
        &self.view.key_id
    }

    /// Build the certificate for `request`, sign it with the throwaway key, lint it
    /// and return it ready for [`Linted::sign`]. Errors name the problem: key
    /// policy ([`Error::WeakKey`], [`Error::UnsupportedAlgorithm`]), profile
    /// ([`Error::ProfileViolation`]), subject ([`Error::InvalidSubject`]),
    /// unverified e-mail ([`Error::Unverified`]), validity
    /// ([`Error::InvalidValidity`]), lint findings ([`Error::Lint`]).
    pub fn prepare(&self, request: &IssuanceRequest) -> Result<Linted> {
        let profile = &request.profile;
        if profile.kind == ProfileKind::RootCa {
            return Err(violation(
                profile,
                "root CA certificates are self-signed: use self_sign_root".into(),
            ));
        }
        check_key(profile, &request.key)?;
        check_subject(profile, &request.subject)?;
        let email = check_email(profile, request.email.as_ref())?;
        let (not_before, not_after) = self.validity(profile, request)?;

        let crl_urls: Vec<String> = if profile.include_crl_distribution_points {
            match &request.crl_distribution_point {
                Some(u) => vec![u.clone()],
                None => self.config.crl_urls.clone(),
            }
        } else {
            Vec::new()
        };
        if profile.include_crl_distribution_points && crl_urls.is_empty() {
            return Err(Error::IssuerConfig(format!(
                "profile {} needs a CRL distribution point but none is configured",
                profile.name
            )));
        }
        let ocsp_urls = if profile.include_ocsp_url {
            self.config.ocsp_urls.clone()
        } else {
            Vec::new()
        };
        let ca_issuers_urls = if profile.include_ca_issuers_url {
            self.config.ca_issuers_urls.clone()
        } else {
            Vec::new()
        };

        let plan = Plan {
            profile,
            serial: &request.serial,
            issuer: &self.view,
            subject: &request.subject,
            spki: request.key.spki(),
            spec: request.key.spec(),
            not_before,
            not_after,
            policy_oids: &self.config.policy_oids,
            crl_urls: &crl_urls,
            ocsp_urls: &ocsp_urls,
            ca_issuers_urls: &ca_issuers_urls,
            email,
        };
        plan.build_and_lint(&self.throwaway)
    }

    /// [`Issuer::prepare`] then [`Linted::sign`].
    pub fn issue(&self, request: &IssuanceRequest) -> Result<IssuedCertificate> {
        self.prepare(request)?.sign(self)
    }

    fn validity(
        &self,
        profile: &Profile,
        request: &IssuanceRequest,
    ) -> Result<(SystemTime, SystemTime)> {
        let nb = time::truncate_to_seconds(request.not_before)?;
        let mut na = match request.not_after {
            Some(t) => time::truncate_to_seconds(t)?,
            None => profile.validity.after(nb)?,
        };
        if nb < self.view.not_before {
            return Err(Error::InvalidValidity(format!(
                "notBefore {} is before the CA's notBefore {}",
                time::display(nb),
                time::display(self.view.not_before)
            )));
        }
        if na > self.view.not_after {
            match profile.beyond_issuer {
                BeyondIssuer::Clamp => na = self.view.not_after,
                BeyondIssuer::Refuse => {
                    return Err(Error::InvalidValidity(format!(
                        "notAfter {} is after the CA's notAfter {}",
                        time::display(na),
                        time::display(self.view.not_after)
                    )));
                }
            }
        }
        if nb >= na {
            return Err(Error::InvalidValidity(format!(
                "notBefore {} is not before notAfter {}",
                time::display(nb),
                time::display(na)
            )));
        }
        Ok((nb, na))
    }
}

/// An e-mail address for an rfc822Name subjectAltName and whether the RA verified
/// it. Unverified addresses are refused (CPS §3.2.4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Email {
    /// The address.
    pub address: String,
    /// Whether the RA verified that the subscriber controls it.
    pub verified: bool,
}

/// One certificate to issue. The subject comes from the RA, the key from the
/// request (CSR, attested SPKI, or the certificate being renewed); nothing else is
/// taken from a CSR (CPS §3.2.4).
#[derive(Clone, Debug)]
pub struct IssuanceRequest {
    /// The profile to issue under.
    pub profile: Profile,
    /// The subject name (built from a [`DistinguishedName`]).
    pub subject: Name,
    /// The subject public key.
    pub key: SubjectKey,
    /// The serial number, reserved by the caller before signing.
    pub serial: Serial,
    /// notBefore (truncated to whole seconds).
    pub not_before: SystemTime,
    /// notAfter; `None` = notBefore + the profile's validity. Either way it is
    /// clamped to (or refused beyond) the CA's notAfter per the profile.
    pub not_after: Option<SystemTime>,
    /// Optional rfc822Name subjectAltName.
    pub email: Option<Email>,
    /// This certificate's CRL partition URL (e.g. `http://…/crl/3.crl`), replacing
    /// the CA's configured CRL URLs in cRLDistributionPoints.
    pub crl_distribution_point: Option<String>,
}

impl IssuanceRequest {
    /// A request valid from now for the profile's validity.
    pub fn new(
        profile: Profile,
        subject: &DistinguishedName,
        key: SubjectKey,
        serial: Serial,
    ) -> Result<Self> {
        Ok(IssuanceRequest {
            profile,
            subject: subject.to_name()?,
            key,
            serial,
            not_before: SystemTime::now(),
            not_after: None,
            email: None,
            crl_distribution_point: None,
        })
    }

    /// A renewal of `old` (CPS §3.3.3, §4.6): same subject (copied byte for byte),
    /// same key, a new `serial`, notBefore = `now`, notAfter = old notAfter + the
    /// profile's renewal extension (3 years, §6.3.2.2). Refuses profiles without
    /// renewal (mobile certificates) and requests outside the renewal window. An
    /// rfc822Name in the old certificate is carried over as verified (chop only
    /// writes verified addresses, §3.2.4). The operator enforces "once" and "not
    /// held or revoked".
    pub fn renewal(
        old: &Certificate,
        profile: Profile,
        serial: Serial,
        now: SystemTime,
    ) -> Result<Self> {
        let rule = profile.renewal.ok_or_else(|| {
            violation(
                &profile,
                "certificates of this profile cannot be renewed (CPS §6.3.2.2); issue a new key pair".into(),
            )
        })?;
        let old_not_after = time::from_x509(&old.tbs_certificate.validity.not_after);
        check_renewal_window(old_not_after, now, &rule)?;
        let not_after = renewed_not_after(old_not_after, &rule)?;
        let exts = old.tbs_certificate.extensions.as_deref().unwrap_or(&[]);
        let email = match ext::find(exts, &oid::ID_CE_SUBJECT_ALT_NAME) {
            Some(e) => ext::subject_alt_name::parse(e)?
                .into_iter()
                .find_map(|n| match n {
                    GeneralName::Rfc822Name(m) => Some(Email {
                        address: m.to_string(),
                        verified: true,
                    }),
                    _ => None,
                }),
            None => None,
        };
        Ok(IssuanceRequest {
            profile,
            subject: old.tbs_certificate.subject.clone(),
            key: SubjectKey::from_certificate(old)?,
            serial,
            not_before: now,
            not_after: Some(not_after),
            email,
            crl_distribution_point: None,
        })
    }
}

/// The renewal window for a certificate expiring at `old_not_after`: from
/// `before_expiry_days` before it to `after_expiry` after it (CPS §4.6.2–§4.6.3:
/// from 60 days before expiry to 3 years after).
pub fn renewal_window(
    old_not_after: SystemTime,
    rule: &RenewalRule,
) -> Result<(SystemTime, SystemTime)> {
    let opens = old_not_after
        .checked_sub(time::DAY * rule.before_expiry_days)
        .ok_or_else(|| Error::InvalidValidity("renewal window out of range".into()))?;
    let closes = rule.after_expiry.after(old_not_after)?;
    Ok((opens, closes))
}

/// Whether `now` is inside the renewal window; the error says when it opens or
/// when it closed.
pub fn check_renewal_window(
    old_not_after: SystemTime,
    now: SystemTime,
    rule: &RenewalRule,
) -> Result<()> {
    let (opens, closes) = renewal_window(old_not_after, rule)?;
    if now < opens {
        return Err(Error::InvalidValidity(format!(
            "renewal window opens {} ({} days before notAfter {}; CPS §4.6.2)",
            time::display(opens),
            rule.before_expiry_days,
            time::display(old_not_after)
        )));
    }
    if now > closes {
        return Err(Error::InvalidValidity(format!(
            "renewal window closed {} (notAfter {} plus {:?}; CPS §4.6.2): apply for a new certificate",
            time::display(closes),
            time::display(old_not_after),
            rule.after_expiry
        )));
    }
    Ok(())
}

/// notAfter of a renewed certificate: old notAfter + the extension (CPS §6.3.2.2:
/// "於效期到期時得展期1次，且為期3年").
pub fn renewed_not_after(old_not_after: SystemTime, rule: &RenewalRule) -> Result<SystemTime> {
    rule.extension.after(old_not_after)
}

/// A self-signed root CA certificate to create (key ceremony).
#[derive(Clone, Debug)]
pub struct RootRequest {
    /// The profile (normally [`Profile::root_ca`]).
    pub profile: Profile,
    /// The root's subject (and issuer) name.
    pub subject: Name,
    /// The serial number.
    pub serial: Serial,
    /// notBefore; notAfter = notBefore + the profile's validity.
    pub not_before: SystemTime,
    /// certificatePolicies OIDs.
    pub policy_oids: Vec<ObjectIdentifier>,
}

impl RootRequest {
    /// A root request with the CPS root profile, a random serial, notBefore now and
    /// the default policy.
    pub fn new(subject: &DistinguishedName) -> Result<Self> {
        Ok(RootRequest {
            profile: Profile::root_ca(),
            subject: subject.to_name()?,
            serial: Serial::random()?,
            not_before: SystemTime::now(),
            policy_oids: vec![DEFAULT_POLICY_OID],
        })
    }
}

/// Create a self-signed root CA certificate for `signer`'s key, with the same
/// lint-before-sign and verify-after-sign as every other certificate. The root
/// carries authorityKeyIdentifier = its own subjectKeyIdentifier: RFC 5280 §4.2.1.1
/// says it "MAY be omitted" in self-signed certificates; chop includes it (as the
/// CA/Browser Forum Baseline Requirements §7.1.2.1 recommend for roots) so that
/// every chop certificate has the same shape. No cRLDistributionPoints and no
/// authorityInfoAccess (the profile's defaults).
pub fn self_sign_root(signer: &dyn Signer, request: &RootRequest) -> Result<IssuedCertificate> {
    let profile = &request.profile;
    if profile.kind != ProfileKind::RootCa {
        return Err(violation(
            profile,
            "self_sign_root needs a RootCa profile".into(),
        ));
    }
    let spki = signer.public_key();
    let spec = profile.key_policy.check(spki)?;
    let algorithm = signer.algorithm();
    check_subject(profile, &request.subject)?;
    let not_before = time::truncate_to_seconds(request.not_before)?;
    let not_after = profile.validity.after(not_before)?;
    let view = IssuerView {
        name: request.subject.clone(),
        spki: spki.clone(),
        key_id: ext::key_identifier::key_identifier(spki)?,
        not_before,
        not_after,
        algorithm,
    };
    let throwaway = SoftwareKey::generate_with(spec, algorithm)?;
    let plan = Plan {
        profile,
        serial: &request.serial,
        issuer: &view,
        subject: &request.subject,
        spki,
        spec,
        not_before,
        not_after,
        policy_oids: &request.policy_oids,
        crl_urls: &[],
        ocsp_urls: &[],
        ca_issuers_urls: &[],
        email: None,
    };
    let linted = plan.build_and_lint(&throwaway)?;
    linted.sign_with(signer, spki)
}

/// A PKCS#10 request for a subordinate CA key (in the HSM behind `signer`) that the
/// parent CA will sign; the operator keeps it in status. The key must satisfy the
/// CA key policy (RSA ≥ 2048, CPS §6.1.5).
pub fn subordinate_csr(signer: &dyn Signer, subject: &DistinguishedName) -> Result<Vec<u8>> {
    KeyPolicy::ca().check(signer.public_key())?;
    csr::build_csr(signer, &subject.to_name()?)
}

/// A TBSCertificate that passed the lint, ready to be signed by the CA key. Only
/// this module can create one (private fields, no constructor), and only after
/// [`lint`] returned no finding; [`Linted::sign`] consumes it.
#[derive(Debug)]
pub struct Linted {
    tbs: TbsCertificate,
    tbs_der: Vec<u8>,
    serial: Serial,
    not_before: SystemTime,
    not_after: SystemTime,
    /// The key of the CA this was prepared for (its AKI, issuer and lint context
    /// belong to that CA only).
    issuer_spki: SubjectPublicKeyInfoOwned,
}

impl Linted {
    /// The serial number.
    pub fn serial(&self) -> &Serial {
        &self.serial
    }

    /// The linted TBSCertificate.
    pub fn tbs_certificate(&self) -> &TbsCertificate {
        &self.tbs
    }

    /// notBefore.
    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    /// notAfter.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// Sign with the CA key, assemble, and verify the signature with the public
    /// key of the CA certificate. [`Error::SignatureCheck`] if the signature does
    /// not verify (nothing is returned, so nothing can be published);
    /// [`Error::IssuerConfig`] if `issuer` is not the CA that prepared this.
    pub fn sign(self, issuer: &Issuer) -> Result<IssuedCertificate> {
        let same_name = name_der(&self.tbs.issuer)? == name_der(&issuer.view.name)?;
        if !same_name
            || self.issuer_spki != issuer.view.spki
            || self.tbs.signature != issuer.view.algorithm.algorithm_identifier()
        {
            return Err(Error::IssuerConfig(
                "this certificate was prepared by a different CA".into(),
            ));
        }
        self.sign_with(issuer.config.signer.as_ref(), &issuer.view.spki)
    }

    fn sign_with(
        self,
        signer: &dyn Signer,
        ca_spki: &SubjectPublicKeyInfoOwned,
    ) -> Result<IssuedCertificate> {
        let algorithm = signer.algorithm();
        if self.issuer_spki != *ca_spki {
            return Err(Error::IssuerConfig(
                "this certificate was prepared for a different CA key".into(),
            ));
        }
        if self.tbs.signature != algorithm.algorithm_identifier() {
            return Err(Error::IssuerConfig(format!(
                "signer algorithm {algorithm:?} differs from the linted signature algorithm"
            )));
        }
        let signature = signer.sign(&self.tbs_der)?;
        verify(ca_spki, algorithm, &self.tbs_der, &signature).map_err(|e| match e {
            Error::SignatureCheck(s) => Error::SignatureCheck(s),
            other => Error::SignatureCheck(other.to_string()),
        })?;
        let certificate = Certificate {
            tbs_certificate: self.tbs,
            signature_algorithm: algorithm.algorithm_identifier(),
            signature: BitString::from_bytes(&signature)?,
        };
        let der = certificate.to_der()?;
        // The bytes we publish must contain exactly the TBS we linted and signed.
        let reparsed = Certificate::from_der(&der)?;
        if reparsed.tbs_certificate.to_der()? != self.tbs_der {
            return Err(Error::SignatureCheck(
                "the assembled certificate does not contain the signed TBSCertificate".into(),
            ));
        }
        Ok(IssuedCertificate {
            der,
            certificate: reparsed,
            serial: self.serial,
            not_before: self.not_before,
            not_after: self.not_after,
        })
    }
}

/// A signed and verified certificate.
#[derive(Clone, Debug)]
pub struct IssuedCertificate {
    /// DER encoding.
    pub der: Vec<u8>,
    /// Parsed from `der`.
    pub certificate: Certificate,
    /// The serial number.
    pub serial: Serial,
    /// notBefore.
    pub not_before: SystemTime,
    /// notAfter.
    pub not_after: SystemTime,
}

impl IssuedCertificate {
    /// PEM (`-----BEGIN CERTIFICATE-----`).
    pub fn to_pem(&self) -> Result<String> {
        csr::to_pem("CERTIFICATE", &self.der)
    }
}

fn violation(profile: &Profile, detail: String) -> Error {
    Error::ProfileViolation {
        profile: profile.name.clone(),
        detail,
    }
}

fn check_key(profile: &Profile, key: &SubjectKey) -> Result<()> {
    if key.source() == KeySource::RaAttested && !profile.allow_attested_spki {
        return Err(violation(
            profile,
            "a bare public key (RA-attested on-card key, CPS §3.2.1) is not accepted; a PKCS#10 request with proof of possession is required".into(),
        ));
    }
    profile.key_policy.check(key.spki())?;
    Ok(())
}

fn check_subject(profile: &Profile, subject: &Name) -> Result<()> {
    if subject.0.is_empty() {
        return Err(Error::InvalidSubject(
            "empty name: anonymous certificates are not issued (CPS §3.1.3)".into(),
        ));
    }
    let findings = check_name(subject, "subject");
    if !findings.is_empty() {
        return Err(Error::InvalidSubject(findings.join("; ")));
    }
    for a in &profile.required_attributes {
        if !has_attribute(subject, *a) {
            return Err(Error::InvalidSubject(format!(
                "{a} is required by profile {} (CPS §3.1.5)",
                profile.name
            )));
        }
    }
    Ok(())
}

fn check_email<'a>(profile: &Profile, email: Option<&'a Email>) -> Result<Option<&'a str>> {
    let Some(email) = email else {
        return Ok(None);
    };
    if !email.verified {
        return Err(Error::Unverified(format!(
            "e-mail {} was not verified (CPS §3.2.4)",
            email.address
        )));
    }
    if !profile.allow_email {
        return Err(violation(profile, "no e-mail address allowed".into()));
    }
    ext::subject_alt_name::check_email(&email.address)?;
    Ok(Some(email.address.as_str()))
}

/// Everything that goes into one TBSCertificate.
struct Plan<'a> {
    profile: &'a Profile,
    serial: &'a Serial,
    issuer: &'a IssuerView,
    subject: &'a Name,
    spki: &'a SubjectPublicKeyInfoOwned,
    spec: KeySpec,
    not_before: SystemTime,
    not_after: SystemTime,
    policy_oids: &'a [ObjectIdentifier],
    crl_urls: &'a [String],
    ocsp_urls: &'a [String],
    ca_issuers_urls: &'a [String],
    email: Option<&'a str>,
}

impl Plan<'_> {
    /// Extensions in a fixed order: basicConstraints, keyUsage, extendedKeyUsage,
    /// subjectKeyIdentifier, authorityKeyIdentifier, certificatePolicies,
    /// cRLDistributionPoints, authorityInfoAccess, subjectAltName, ocsp-nocheck.
    fn extensions(&self) -> Result<Vec<Extension>> {
        let p = self.profile;
        let mut v = vec![
            ext::basic_constraints::build(p.kind.is_ca(), p.path_len)?,
            ext::key_usage::build(p.key_usage_for(self.spec), p.key_usage_critical)?,
        ];
        if !p.extended_key_usages.is_empty() {
            v.push(ext::extended_key_usage::build(&p.extended_key_usages)?);
        }
        v.push(ext::key_identifier::subject_key_identifier(self.spki)?);
        v.push(ext::key_identifier::authority_key_identifier(
            &self.issuer.key_id,
        )?);
        v.push(ext::certificate_policies::build(self.policy_oids)?);
        if !self.crl_urls.is_empty() {
            v.push(ext::crl_distribution_points::build(self.crl_urls)?);
        }
        if !(self.ocsp_urls.is_empty() && self.ca_issuers_urls.is_empty()) {
            v.push(ext::authority_info_access::build(
                self.ocsp_urls,
                self.ca_issuers_urls,
            )?);
        }
        if let Some(email) = self.email {
            v.push(ext::subject_alt_name::build_email(email)?);
        }
        if p.ocsp_nocheck {
            v.push(ext::ocsp_nocheck::build()?);
        }
        Ok(v)
    }

    fn tbs(&self) -> Result<TbsCertificate> {
        Ok(TbsCertificate {
            version: Version::V3,
            serial_number: self.serial.to_serial_number()?,
            signature: self.issuer.algorithm.algorithm_identifier(),
            issuer: self.issuer.name.clone(),
            validity: Validity {
                not_before: time::to_x509(self.not_before)?,
                not_after: time::to_x509(self.not_after)?,
            },
            subject: self.subject.clone(),
            subject_public_key_info: self.spki.clone(),
            issuer_unique_id: None,
            subject_unique_id: None,
            extensions: Some(self.extensions()?),
        })
    }

    fn build_and_lint(&self, throwaway: &SoftwareKey) -> Result<Linted> {
        let tbs = self.tbs()?;
        let tbs_der = tbs.to_der()?;
        let signature = throwaway.sign(&tbs_der)?;
        let trial = Certificate {
            tbs_certificate: tbs,
            signature_algorithm: self.issuer.algorithm.algorithm_identifier(),
            signature: BitString::from_bytes(&signature)?,
        };
        // Lint what the DER says, not what we meant.
        let parsed = Certificate::from_der(&trial.to_der()?)?;
        let ctx = LintContext {
            profile: self.profile,
            issuer_name: &self.issuer.name,
            issuer_spki: &self.issuer.spki,
            issuer_key_id: &self.issuer.key_id,
            issuer_not_before: self.issuer.not_before,
            issuer_not_after: self.issuer.not_after,
            signature_algorithm: self.issuer.algorithm,
            policy_oids: self.policy_oids,
            verified_email: self.email,
            crl_urls: self.crl_urls,
            ocsp_urls: self.ocsp_urls,
            ca_issuers_urls: self.ca_issuers_urls,
        };
        let findings = lint(&parsed, &ctx);
        if !findings.is_empty() {
            return Err(Error::Lint(findings));
        }
        let reparsed_der = parsed.tbs_certificate.to_der()?;
        if reparsed_der != tbs_der {
            return Err(Error::Lint(vec![
                "the TBSCertificate does not survive a DER round trip".into(),
            ]));
        }
        verify(
            throwaway.public_key(),
            throwaway.algorithm(),
            &tbs_der,
            &signature,
        )?;
        Ok(Linted {
            tbs: parsed.tbs_certificate,
            tbs_der,
            serial: self.serial.clone(),
            not_before: self.not_before,
            not_after: self.not_after,
            issuer_spki: self.issuer.spki.clone(),
        })
    }
}
