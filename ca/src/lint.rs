//! Lint before sign: RFC 5280 and profile checks on a certificate signed with a
//! throwaway key, before the CA key signs the same TBSCertificate (Boulder's
//! practice, DESIGN §1).
//!
//! [`lint`] takes a parsed certificate (so it sees exactly what the DER says, not
//! what the builder meant) and returns findings: short precise strings such as
//! `keyUsage must be critical` or `notAfter 2040-01-01T00:00:00Z is after the CA's
//! notAfter 2035-01-01T00:00:00Z`. An empty list means the certificate may be
//! signed. Issuance ([`crate::issue`]) refuses to sign on any finding with
//! [`crate::Error::Lint`].

use std::collections::HashSet;
use std::time::SystemTime;

use const_oid::ObjectIdentifier;
use der::flagset::FlagSet;
use spki::SubjectPublicKeyInfoOwned;
use x509_cert::Certificate;
use x509_cert::certificate::Version;
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::KeyUsages;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::name::Name;

use crate::ext::{self, oid};
use crate::name::{Attribute, check_name, name_der};
use crate::profile::{ID_KP_OCSP_SIGNING, Profile, ProfileKind};
use crate::serial::Serial;
use crate::signer::SignatureAlgorithm;
use crate::time;

/// What a certificate is linted against: the profile, the issuing CA, and what the
/// registration authority verified.
#[derive(Clone, Copy, Debug)]
pub struct LintContext<'a> {
    /// The profile the certificate was built from.
    pub profile: &'a Profile,
    /// The issuing CA's subject name (the certificate's own subject for a root).
    pub issuer_name: &'a Name,
    /// The issuing CA's public key.
    pub issuer_spki: &'a SubjectPublicKeyInfoOwned,
    /// The issuing CA's subjectKeyIdentifier, as found in its certificate.
    pub issuer_key_id: &'a [u8],
    /// The issuing CA certificate's notBefore.
    pub issuer_not_before: SystemTime,
    /// The issuing CA certificate's notAfter.
    pub issuer_not_after: SystemTime,
    /// The algorithm the CA signs with.
    pub signature_algorithm: SignatureAlgorithm,
    /// The configured certificate policy OIDs.
    pub policy_oids: &'a [ObjectIdentifier],
    /// The e-mail address the caller verified, if any (CPS §3.2.4).
    pub verified_email: Option<&'a str>,
    /// Expected cRLDistributionPoints URLs (empty: extension must be absent).
    pub crl_urls: &'a [String],
    /// Expected OCSP URLs in authorityInfoAccess.
    pub ocsp_urls: &'a [String],
    /// Expected caIssuers URLs in authorityInfoAccess.
    pub ca_issuers_urls: &'a [String],
}

/// Extensions chop may write; anything else is a finding.
const KNOWN: [ObjectIdentifier; 10] = [
    oid::ID_CE_BASIC_CONSTRAINTS,
    oid::ID_CE_KEY_USAGE,
    oid::ID_CE_EXT_KEY_USAGE,
    oid::ID_CE_SUBJECT_KEY_IDENTIFIER,
    oid::ID_CE_AUTHORITY_KEY_IDENTIFIER,
    oid::ID_CE_CERTIFICATE_POLICIES,
    oid::ID_CE_CRL_DISTRIBUTION_POINTS,
    oid::ID_PE_AUTHORITY_INFO_ACCESS,
    oid::ID_CE_SUBJECT_ALT_NAME,
    oid::ID_PKIX_OCSP_NOCHECK,
];

/// Lint `cert` against RFC 5280, the CPS and `ctx`. Returns every finding; empty
/// means "may be signed".
pub fn lint(cert: &Certificate, ctx: &LintContext<'_>) -> Vec<String> {
    let mut f = Vec::new();
    let tbs = &cert.tbs_certificate;
    let profile = ctx.profile;

    // RFC 5280 §4.1.2.1: extensions require v3; CPS §7.1.1.
    if tbs.version != Version::V3 {
        f.push("version must be v3 (RFC 5280 §4.1.2.1, CPS §7.1.1)".into());
    }

    // RFC 5280 §4.1.2.2: positive, ≤ 20 octets; ≥ 64 bits from a CSPRNG.
    match Serial::from_serial_number(&tbs.serial_number) {
        Err(e) => f.push(format!("serialNumber: {e}")),
        Ok(s) => {
            let bytes = s.as_be_bytes();
            let bits = bytes.len() * 8
                - bytes
                    .first()
                    .map_or(8, |b| usize::try_from(b.leading_zeros()).unwrap_or(8));
            if bits < 64 {
                f.push(format!(
                    "serialNumber has {bits} significant bits, at least 64 random bits are required"
                ));
            }
        }
    }

    // RFC 5280 §4.1.1.2 / §4.1.2.3: both algorithm fields MUST be identical.
    if tbs.signature != cert.signature_algorithm {
        f.push(
            "signature algorithm inside the TBSCertificate differs from signatureAlgorithm (RFC 5280 §4.1.2.3)"
                .into(),
        );
    }
    if tbs.signature != ctx.signature_algorithm.algorithm_identifier() {
        f.push(format!(
            "signature algorithm {} is not the CA's {:?} with its RFC 4055/5758 parameters",
            tbs.signature.oid, ctx.signature_algorithm
        ));
    }

    lint_validity(tbs, ctx, &mut f);

    // RFC 5280 §4.1.2.4: issuer = the CA certificate's subject, byte for byte.
    match (name_der(&tbs.issuer), name_der(ctx.issuer_name)) {
        (Ok(a), Ok(b)) if a == b => {}
        _ => f.push("issuer DN differs from the CA's subject DN (RFC 5280 §4.1.2.4)".into()),
    }

    // RFC 5280 §4.1.2.6, CPS §3.1.
    f.extend(check_name(&tbs.subject, "subject"));
    for required in &profile.required_attributes {
        if !has_attribute(&tbs.subject, *required) {
            f.push(format!(
                "subject lacks {required}, required by profile {} (CPS §3.1.5)",
                profile.name
            ));
        }
    }
    if tbs.issuer_unique_id.is_some() || tbs.subject_unique_id.is_some() {
        f.push("issuerUniqueID/subjectUniqueID must be absent (RFC 5280 §4.1.2.8)".into());
    }

    // Key policy (CPS §6.1.5).
    let spec = match profile.key_policy.check(&tbs.subject_public_key_info) {
        Ok(spec) => Some(spec),
        Err(e) => {
            f.push(format!("subject key: {e}"));
            None
        }
    };
    if profile.kind != ProfileKind::RootCa && tbs.subject_public_key_info == *ctx.issuer_spki {
        f.push("subject key is the issuing CA's own key".into());
    }

    lint_extensions(cert, ctx, spec, &mut f);
    f
}

fn lint_validity(tbs: &x509_cert::TbsCertificate, ctx: &LintContext<'_>, f: &mut Vec<String>) {
    let v = &tbs.validity;
    for (label, t) in [("notBefore", &v.not_before), ("notAfter", &v.not_after)] {
        if !time::is_rfc5280_encoding(t) {
            f.push(format!(
                "{label} must be UTCTime through 2049 and GeneralizedTime from 2050 (RFC 5280 §4.1.2.5)"
            ));
        }
    }
    let nb = time::from_x509(&v.not_before);
    let na = time::from_x509(&v.not_after);
    if nb >= na {
        f.push(format!(
            "notBefore {} is not before notAfter {}",
            time::display(nb),
            time::display(na)
        ));
    }
    if nb < ctx.issuer_not_before {
        f.push(format!(
            "notBefore {} is before the CA's notBefore {}",
            time::display(nb),
            time::display(ctx.issuer_not_before)
        ));
    }
    if na > ctx.issuer_not_after {
        f.push(format!(
            "notAfter {} is after the CA's notAfter {}",
            time::display(na),
            time::display(ctx.issuer_not_after)
        ));
    }
    // Longest lifetime the profile can produce: a new certificate, or a renewal
    // requested at the opening of the renewal window.
    let profile = ctx.profile;
    let mut longest = profile.validity.after(nb).ok();
    if let Some(rule) = profile.renewal {
        let from = nb + time::DAY * rule.before_expiry_days;
        if let Ok(t) = rule.extension.after(from) {
            longest = longest.map(|l| l.max(t));
        }
    }
    if let Some(longest) = longest
        && na > longest
    {
        f.push(format!(
            "validity {} to {} is longer than profile {} allows",
            time::display(nb),
            time::display(na),
            profile.name
        ));
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

fn ku_names(usages: FlagSet<KeyUsages>) -> String {
    ext::key_usage::names(usages).join(", ")
}

fn lint_extensions(
    cert: &Certificate,
    ctx: &LintContext<'_>,
    spec: Option<crate::signer::KeySpec>,
    f: &mut Vec<String>,
) {
    let tbs = &cert.tbs_certificate;
    let profile = ctx.profile;
    let exts: &[Extension] = match tbs.extensions.as_deref() {
        None => {
            f.push("extensions are missing (a v3 certificate needs them, CPS §7.1.2)".into());
            return;
        }
        Some([]) => {
            f.push("extensions must not be an empty SEQUENCE (RFC 5280 §4.1)".into());
            return;
        }
        Some(e) => e,
    };

    // RFC 5280 §4.2: "A certificate MUST NOT include more than one instance of a
    // particular extension."
    let mut seen = HashSet::new();
    for e in exts {
        if !seen.insert(e.extn_id) {
            f.push(format!("duplicate extension {} (RFC 5280 §4.2)", e.extn_id));
        }
        if e.extn_id == oid::ID_CE_NAME_CONSTRAINTS {
            f.push("nameConstraints must be absent (CPS §7.1.5)".into());
        } else if e.extn_id == oid::ID_CE_POLICY_CONSTRAINTS {
            f.push("policyConstraints must be absent (CPS §7.1.7)".into());
        } else if !KNOWN.contains(&e.extn_id) {
            f.push(format!("unexpected extension {}", e.extn_id));
        }
    }
    let get = |id: &ObjectIdentifier| exts.iter().find(|e| e.extn_id == *id);
    let non_critical = |e: &Extension, name: &str, f: &mut Vec<String>| {
        if e.critical {
            f.push(format!("{name} must not be critical"));
        }
    };

    // keyUsage: RFC 5280 §4.2.1.3, CPS §6.1.7.
    match get(&oid::ID_CE_KEY_USAGE) {
        None => f.push("keyUsage is missing".into()),
        Some(e) => {
            if !e.critical {
                f.push("keyUsage must be critical".into());
            }
            match ext::key_usage::parse(e) {
                Err(err) => f.push(format!("keyUsage does not decode: {err}")),
                Ok(ku) => {
                    let ca_bits = KeyUsages::KeyCertSign | KeyUsages::CRLSign;
                    if ku.is_empty() {
                        f.push("keyUsage has no bit set (RFC 5280 §4.2.1.3)".into());
                    }
                    if profile.kind.is_ca() {
                        if ku != ca_bits {
                            f.push(format!(
                                "CA keyUsage must be exactly keyCertSign, cRLSign (CPS §6.1.7), found {}",
                                ku_names(ku)
                            ));
                        }
                    } else if !(ku & ca_bits).is_empty() {
                        f.push(format!(
                            "keyUsage {} of a non-CA certificate must not include keyCertSign or cRLSign (CPS §6.1.7)",
                            ku_names(ku)
                        ));
                    }
                    if let Some(spec) = spec {
                        let want = profile.key_usage_for(spec);
                        if ku != want {
                            f.push(format!(
                                "keyUsage {} differs from profile {} ({})",
                                ku_names(ku),
                                profile.name,
                                ku_names(want)
                            ));
                        }
                    }
                }
            }
        }
    }

    // basicConstraints: RFC 5280 §4.2.1.9.
    match get(&oid::ID_CE_BASIC_CONSTRAINTS) {
        None => f.push("basicConstraints is missing".into()),
        Some(e) => {
            if !e.critical {
                f.push("basicConstraints must be critical".into());
            }
            match ext::basic_constraints::parse(e) {
                Err(err) => f.push(format!("basicConstraints does not decode: {err}")),
                Ok(bc) => {
                    let want_ca = profile.kind.is_ca();
                    if bc.ca != want_ca {
                        f.push(format!(
                            "basicConstraints cA must be {} for profile {}",
                            if want_ca { "TRUE" } else { "FALSE" },
                            profile.name
                        ));
                    }
                    if !bc.ca && bc.path_len_constraint.is_some() {
                        f.push("pathLenConstraint without cA (RFC 5280 §4.2.1.9)".into());
                    }
                    if bc.ca && bc.path_len_constraint != profile.path_len {
                        f.push(format!(
                            "pathLenConstraint {:?} differs from profile {} ({:?})",
                            bc.path_len_constraint, profile.name, profile.path_len
                        ));
                    }
                }
            }
        }
    }

    // subjectKeyIdentifier: RFC 5280 §4.2.1.2 (RFC 7093 §2 method 1).
    match get(&oid::ID_CE_SUBJECT_KEY_IDENTIFIER) {
        None => f.push("subjectKeyIdentifier is missing".into()),
        Some(e) => {
            non_critical(e, "subjectKeyIdentifier", f);
            let want = ext::key_identifier::key_identifier(&tbs.subject_public_key_info);
            match (ext::key_identifier::parse_ski(e), want) {
                (Ok(got), Ok(want)) if got == want => {}
                (Ok(got), Ok(want)) => f.push(format!(
                    "subjectKeyIdentifier {} is not {} (RFC 7093 §2 method 1 of the subject key)",
                    hex(&got),
                    hex(&want)
                )),
                (Err(err), _) | (_, Err(err)) => {
                    f.push(format!("subjectKeyIdentifier: {err}"));
                }
            }
        }
    }

    // authorityKeyIdentifier: RFC 5280 §4.2.1.1.
    match get(&oid::ID_CE_AUTHORITY_KEY_IDENTIFIER) {
        None => f.push("authorityKeyIdentifier is missing".into()),
        Some(e) => {
            non_critical(e, "authorityKeyIdentifier", f);
            match ext::key_identifier::parse_aki(e) {
                Err(err) => f.push(format!("authorityKeyIdentifier does not decode: {err}")),
                Ok(aki) => {
                    match aki.key_identifier {
                        Some(id) if id.as_bytes() == ctx.issuer_key_id => {}
                        Some(id) => f.push(format!(
                            "authorityKeyIdentifier {} differs from the issuer's subjectKeyIdentifier {}",
                            hex(id.as_bytes()),
                            hex(ctx.issuer_key_id)
                        )),
                        None => f.push("authorityKeyIdentifier lacks keyIdentifier".into()),
                    }
                    if aki.authority_cert_issuer.is_some()
                        || aki.authority_cert_serial_number.is_some()
                    {
                        f.push("authorityKeyIdentifier must hold keyIdentifier only".into());
                    }
                }
            }
        }
    }

    // certificatePolicies: RFC 5280 §4.2.1.4, CPS §7.1.6, §7.1.8.
    match get(&oid::ID_CE_CERTIFICATE_POLICIES) {
        None => f.push("certificatePolicies is missing".into()),
        Some(e) => {
            non_critical(e, "certificatePolicies", f);
            match ext::certificate_policies::parse(e) {
                Err(err) => f.push(format!("certificatePolicies does not decode: {err}")),
                Ok(policies) => {
                    let got: Vec<_> = policies.iter().map(|p| p.policy_identifier).collect();
                    let got_set: HashSet<_> = got.iter().collect();
                    let want_set: HashSet<_> = ctx.policy_oids.iter().collect();
                    if got_set.len() != got.len() {
                        f.push(
                            "certificatePolicies lists a policy twice (RFC 5280 §4.2.1.4)".into(),
                        );
                    }
                    if got_set != want_set {
                        f.push(format!(
                            "certificatePolicies {} differ from the configured {}",
                            join(&got),
                            join(ctx.policy_oids)
                        ));
                    }
                    if policies.iter().any(|p| p.policy_qualifiers.is_some()) {
                        f.push("policy qualifiers are not allowed (CPS §7.1.8)".into());
                    }
                }
            }
        }
    }

    // cRLDistributionPoints: RFC 5280 §4.2.1.13.
    let want_crl: &[String] = if profile.include_crl_distribution_points {
        ctx.crl_urls
    } else {
        &[]
    };
    match (
        get(&oid::ID_CE_CRL_DISTRIBUTION_POINTS),
        want_crl.is_empty(),
    ) {
        (None, true) => {}
        (None, false) => f.push("cRLDistributionPoints is missing".into()),
        (Some(_), true) => f.push(format!(
            "cRLDistributionPoints must be absent for profile {}",
            profile.name
        )),
        (Some(e), false) => {
            non_critical(e, "cRLDistributionPoints", f);
            match ext::crl_distribution_points::parse_urls(e) {
                Ok(urls) if urls == want_crl => {}
                Ok(urls) => f.push(format!(
                    "cRLDistributionPoints {urls:?} differ from the expected {want_crl:?}"
                )),
                Err(err) => f.push(format!("cRLDistributionPoints does not decode: {err}")),
            }
        }
    }

    // authorityInfoAccess: RFC 5280 §4.2.2.1, CPS §7.3.
    let want_ocsp: &[String] = if profile.include_ocsp_url {
        ctx.ocsp_urls
    } else {
        &[]
    };
    let want_issuers: &[String] = if profile.include_ca_issuers_url {
        ctx.ca_issuers_urls
    } else {
        &[]
    };
    let want_aia = !(want_ocsp.is_empty() && want_issuers.is_empty());
    match (get(&oid::ID_PE_AUTHORITY_INFO_ACCESS), want_aia) {
        (None, false) => {}
        (None, true) => f.push("authorityInfoAccess is missing".into()),
        (Some(_), false) => f.push(format!(
            "authorityInfoAccess must be absent for profile {}",
            profile.name
        )),
        (Some(e), true) => {
            non_critical(e, "authorityInfoAccess", f);
            match ext::authority_info_access::parse_urls(e) {
                Ok((o, i)) if o == want_ocsp && i == want_issuers => {}
                Ok((o, i)) => f.push(format!(
                    "authorityInfoAccess OCSP {o:?} / caIssuers {i:?} differ from the expected {want_ocsp:?} / {want_issuers:?}"
                )),
                Err(err) => f.push(format!("authorityInfoAccess does not decode: {err}")),
            }
        }
    }

    // extendedKeyUsage: RFC 5280 §4.2.1.12; responder: RFC 6960 §4.2.2.2.
    match get(&oid::ID_CE_EXT_KEY_USAGE) {
        None => {
            if !profile.extended_key_usages.is_empty() {
                f.push("extendedKeyUsage is missing".into());
            }
        }
        Some(e) => match ext::extended_key_usage::parse(e) {
            Err(err) => f.push(format!("extendedKeyUsage does not decode: {err}")),
            Ok(ekus) => {
                if profile.extended_key_usages.is_empty() {
                    f.push(format!(
                        "extendedKeyUsage must be absent for profile {}",
                        profile.name
                    ));
                } else if ekus != profile.extended_key_usages {
                    f.push(format!(
                        "extendedKeyUsage {} differs from profile {} ({})",
                        join(&ekus),
                        profile.name,
                        join(&profile.extended_key_usages)
                    ));
                }
                if ekus.contains(&const_oid::db::rfc5280::ANY_EXTENDED_KEY_USAGE) {
                    f.push("anyExtendedKeyUsage is not allowed".into());
                }
            }
        },
    }
    if profile.kind == ProfileKind::OcspResponder {
        let has = get(&oid::ID_CE_EXT_KEY_USAGE)
            .and_then(|e| ext::extended_key_usage::parse(e).ok())
            .is_some_and(|ekus| ekus.contains(&ID_KP_OCSP_SIGNING));
        if !has {
            f.push("OCSP responder certificate lacks id-kp-OCSPSigning (RFC 6960 §4.2.2.2)".into());
        }
        if get(&oid::ID_PKIX_OCSP_NOCHECK).is_none() {
            f.push("OCSP responder certificate lacks id-pkix-ocsp-nocheck (CPS §4.9.9)".into());
        }
    }

    // id-pkix-ocsp-nocheck: RFC 6960 §4.2.2.2.1.
    match (get(&oid::ID_PKIX_OCSP_NOCHECK), profile.ocsp_nocheck) {
        (None, _) => {}
        (Some(_), false) => f.push(format!(
            "id-pkix-ocsp-nocheck must be absent for profile {}",
            profile.name
        )),
        (Some(e), true) => {
            non_critical(e, "id-pkix-ocsp-nocheck", f);
            if !ext::ocsp_nocheck::is_valid(e) {
                f.push("id-pkix-ocsp-nocheck value must be NULL (RFC 6960 §4.2.2.2.1)".into());
            }
        }
    }
    if profile.ocsp_nocheck && get(&oid::ID_PKIX_OCSP_NOCHECK).is_none() {
        f.push("id-pkix-ocsp-nocheck is missing".into());
    }

    // subjectAltName: only a verified rfc822Name (CPS §3.2.4).
    match get(&oid::ID_CE_SUBJECT_ALT_NAME) {
        None => {
            if let Some(email) = ctx.verified_email {
                f.push(format!(
                    "verified e-mail {email} is missing from subjectAltName"
                ));
            }
        }
        Some(e) => {
            non_critical(e, "subjectAltName", f);
            if !profile.allow_email {
                f.push(format!(
                    "subjectAltName is not allowed by profile {}",
                    profile.name
                ));
            }
            match ext::subject_alt_name::parse(e) {
                Err(err) => f.push(format!("subjectAltName does not decode: {err}")),
                Ok(names) => {
                    for n in names {
                        match n {
                            GeneralName::Rfc822Name(m) => {
                                if ctx.verified_email != Some(m.as_str()) {
                                    f.push(format!(
                                        "subjectAltName rfc822Name {} was not verified (CPS §3.2.4)",
                                        m.as_str()
                                    ));
                                }
                            }
                            _ => {
                                f.push("subjectAltName may only hold a verified rfc822Name".into())
                            }
                        }
                    }
                }
            }
        }
    }
}

fn join(oids: &[ObjectIdentifier]) -> String {
    let v: Vec<String> = oids.iter().map(ToString::to_string).collect();
    format!("[{}]", v.join(", "))
}

/// Whether `attribute` is present in `name`.
pub fn has_attribute(name: &Name, attribute: Attribute) -> bool {
    name.0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .any(|atv| atv.oid == attribute.oid())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use der::asn1::{GeneralizedTime, OctetString};
    use der::{Any, DateTime};
    use x509_cert::ext::pkix::certpolicy::{PolicyInformation, PolicyQualifierInfo};
    use x509_cert::ext::pkix::{CertificatePolicies, SubjectAltName};
    use x509_cert::time::Time;

    use super::*;
    use crate::csr::{SubjectKey, build_csr};
    use crate::ext::extension;
    use crate::issue::{CaConfig, Email, IssuanceRequest, Issuer, RootRequest, self_sign_root};
    use crate::name::DistinguishedName;
    use crate::profile::DEFAULT_POLICY_OID;
    use crate::signer::software::SoftwareKey;
    use crate::signer::{Curve, KeySpec, Signer};

    struct Fixture {
        ca: Certificate,
        ca_key_id: Vec<u8>,
        leaf: Certificate,
        profile: Profile,
        crl: Vec<String>,
        ocsp: Vec<String>,
        issuers: Vec<String>,
    }

    impl Fixture {
        fn ctx(&self) -> LintContext<'_> {
            let t = &self.ca.tbs_certificate;
            LintContext {
                profile: &self.profile,
                issuer_name: &t.subject,
                issuer_spki: &t.subject_public_key_info,
                issuer_key_id: &self.ca_key_id,
                issuer_not_before: time::from_x509(&t.validity.not_before),
                issuer_not_after: time::from_x509(&t.validity.not_after),
                signature_algorithm: SignatureAlgorithm::RsaSha256,
                policy_oids: &[DEFAULT_POLICY_OID],
                verified_email: Some("wang@example.tw"),
                crl_urls: &self.crl,
                ocsp_urls: &self.ocsp,
                ca_issuers_urls: &self.issuers,
            }
        }
    }

    /// A good subscriber signature certificate (with a verified e-mail) and its CA.
    fn fixture() -> Fixture {
        let ca_key = Arc::new(SoftwareKey::generate(KeySpec::Rsa { bits: 2048 }).unwrap());
        let dn = DistinguishedName::parse("C=TW, O=行政院, OU=內政部憑證管理中心").unwrap();
        let mut root_req = RootRequest::new(&dn).unwrap();
        root_req.not_before = std::time::SystemTime::now() - Duration::from_secs(86_400);
        let root = self_sign_root(ca_key.as_ref(), &root_req).unwrap();
        let (crl, ocsp, issuers) = (
            vec!["http://ca.example.tw/crl/1.crl".to_string()],
            vec!["http://ocsp.example.tw".to_string()],
            vec!["http://ca.example.tw/ca.crt".to_string()],
        );
        let mut config = CaConfig::new(root.certificate.clone(), ca_key);
        config.crl_urls = crl.clone();
        config.ocsp_urls = ocsp.clone();
        config.ca_issuers_urls = issuers.clone();
        let issuer = Issuer::new(config).unwrap();
        let k = SoftwareKey::generate(KeySpec::Ec(Curve::P521)).unwrap();
        let subject = DistinguishedName::parse("C=TW, CN=王小明, serialNumber=A1").unwrap();
        let key =
            SubjectKey::from_csr(&build_csr(&k, &subject.to_name().unwrap()).unwrap()).unwrap();
        let profile = Profile::subscriber_signature();
        let mut req =
            IssuanceRequest::new(profile.clone(), &subject, key, Serial::random().unwrap())
                .unwrap();
        req.email = Some(Email {
            address: "wang@example.tw".into(),
            verified: true,
        });
        let leaf = issuer.issue(&req).unwrap().certificate;
        Fixture {
            ca_key_id: issuer.key_identifier().to_vec(),
            ca: root.certificate,
            leaf,
            profile,
            crl,
            ocsp,
            issuers,
        }
    }

    fn exts(c: &mut Certificate) -> &mut Vec<Extension> {
        c.tbs_certificate.extensions.as_mut().unwrap()
    }

    fn replace(c: &mut Certificate, e: Extension) {
        let v = exts(c);
        let i = v.iter().position(|x| x.extn_id == e.extn_id).unwrap();
        v[i] = e;
    }

    fn remove(c: &mut Certificate, id: ObjectIdentifier) {
        exts(c).retain(|e| e.extn_id != id);
    }

    #[track_caller]
    fn expect(fx: &Fixture, cert: &Certificate, needle: &str) {
        let findings = lint(cert, &fx.ctx());
        assert!(
            findings.iter().any(|f| f.contains(needle)),
            "no finding containing {needle:?} in {findings:?}"
        );
    }

    #[test]
    fn each_check_fires_on_a_hand_made_bad_certificate() {
        let fx = fixture();
        assert_eq!(lint(&fx.leaf, &fx.ctx()), Vec::<String>::new());
        let good = &fx.leaf;
        let mut c;

        // Version, serial, algorithms.
        c = good.clone();
        c.tbs_certificate.version = Version::V2;
        expect(&fx, &c, "version must be v3");
        c = good.clone();
        c.tbs_certificate.serial_number = Serial::from_be_bytes(&[1, 2, 3])
            .unwrap()
            .to_serial_number()
            .unwrap();
        expect(&fx, &c, "has 17 significant bits");
        c = good.clone();
        c.signature_algorithm = SignatureAlgorithm::RsaSha384.algorithm_identifier();
        expect(&fx, &c, "differs from signatureAlgorithm");
        c = good.clone();
        c.tbs_certificate.signature = SignatureAlgorithm::RsaSha384.algorithm_identifier();
        expect(&fx, &c, "is not the CA's RsaSha256");

        // Validity.
        let ca_na = fx.ca.tbs_certificate.validity.not_after;
        c = good.clone();
        c.tbs_certificate.validity.not_after =
            time::to_x509(time::from_x509(&ca_na) + Duration::from_secs(86_400)).unwrap();
        expect(&fx, &c, "is after the CA's notAfter");
        c = good.clone();
        c.tbs_certificate.validity.not_after = c.tbs_certificate.validity.not_before;
        expect(&fx, &c, "is not before notAfter");
        c = good.clone();
        let nb = time::from_x509(&c.tbs_certificate.validity.not_before);
        c.tbs_certificate.validity.not_before = Time::GeneralTime(GeneralizedTime::from_date_time(
            DateTime::from_system_time(nb).unwrap(),
        ));
        expect(&fx, &c, "notBefore must be UTCTime through 2049");
        c = good.clone();
        c.tbs_certificate.validity.not_before = time::to_x509(
            time::from_x509(&fx.ca.tbs_certificate.validity.not_before) - Duration::from_secs(1),
        )
        .unwrap();
        expect(&fx, &c, "is before the CA's notBefore");
        c = good.clone();
        c.tbs_certificate.validity.not_after =
            time::to_x509(time::add_years(nb, 9).unwrap()).unwrap();
        expect(
            &fx,
            &c,
            "is longer than profile subscriber-signature allows",
        );

        // Names.
        c = good.clone();
        c.tbs_certificate.issuer = c.tbs_certificate.subject.clone();
        expect(&fx, &c, "issuer DN differs from the CA's subject DN");
        c = good.clone();
        c.tbs_certificate.subject = DistinguishedName::parse("C=TW, CN=王小明")
            .unwrap()
            .to_name()
            .unwrap();
        expect(&fx, &c, "subject lacks serialNumber");
        c = good.clone();
        let atv = &mut c.tbs_certificate.subject.0[0].0;
        let mut v = atv.clone().into_vec();
        v[0].value = Any::new(der::Tag::Utf8String, "TW".as_bytes()).unwrap();
        *atv = der::asn1::SetOfVec::try_from(v).unwrap();
        expect(
            &fx,
            &c,
            "subject C is a UTF8String, expected PrintableString",
        );
        c = good.clone();
        c.tbs_certificate.subject_unique_id = Some(der::asn1::BitString::from_bytes(&[1]).unwrap());
        expect(&fx, &c, "subjectUniqueID must be absent");

        // Subject key.
        c = good.clone();
        let p256 = SoftwareKey::generate(KeySpec::Ec(Curve::P256)).unwrap();
        c.tbs_certificate.subject_public_key_info = p256.public_key().clone();
        expect(&fx, &c, "subject key: key too weak: EC 256 bits");
        expect(&fx, &c, "subjectKeyIdentifier");
        c = good.clone();
        c.tbs_certificate.subject_public_key_info =
            fx.ca.tbs_certificate.subject_public_key_info.clone();
        expect(&fx, &c, "subject key is the issuing CA's own key");

        // Extensions as a whole.
        c = good.clone();
        c.tbs_certificate.extensions = None;
        expect(&fx, &c, "extensions are missing");
        c = good.clone();
        c.tbs_certificate.extensions = Some(vec![]);
        expect(&fx, &c, "must not be an empty SEQUENCE");
        c = good.clone();
        let dup = exts(&mut c)[0].clone();
        exts(&mut c).push(dup);
        expect(&fx, &c, "duplicate extension 2.5.29.19");
        c = good.clone();
        exts(&mut c).push(extension(oid::ID_CE_NAME_CONSTRAINTS, true, &der::asn1::Null).unwrap());
        expect(&fx, &c, "nameConstraints must be absent (CPS §7.1.5)");
        c = good.clone();
        exts(&mut c)
            .push(extension(oid::ID_CE_POLICY_CONSTRAINTS, true, &der::asn1::Null).unwrap());
        expect(&fx, &c, "policyConstraints must be absent (CPS §7.1.7)");
        c = good.clone();
        exts(&mut c).push(
            extension(
                ObjectIdentifier::new_unwrap("1.2.3.4"),
                false,
                &der::asn1::Null,
            )
            .unwrap(),
        );
        expect(&fx, &c, "unexpected extension 1.2.3.4");

        // keyUsage.
        let ds_nr = KeyUsages::DigitalSignature | KeyUsages::NonRepudiation;
        c = good.clone();
        replace(&mut c, ext::key_usage::build(ds_nr, false).unwrap());
        assert_eq!(lint(&c, &fx.ctx()), ["keyUsage must be critical"]);
        c = good.clone();
        replace(
            &mut c,
            ext::key_usage::build(ds_nr | KeyUsages::KeyCertSign, true).unwrap(),
        );
        expect(&fx, &c, "must not include keyCertSign or cRLSign");
        c = good.clone();
        replace(
            &mut c,
            ext::key_usage::build(KeyUsages::DigitalSignature.into(), true).unwrap(),
        );
        expect(
            &fx,
            &c,
            "keyUsage digitalSignature differs from profile subscriber-signature",
        );
        c = good.clone();
        remove(&mut c, oid::ID_CE_KEY_USAGE);
        expect(&fx, &c, "keyUsage is missing");

        // basicConstraints.
        c = good.clone();
        replace(&mut c, ext::basic_constraints::build(true, None).unwrap());
        expect(&fx, &c, "basicConstraints cA must be FALSE");
        c = good.clone();
        let mut bc = ext::basic_constraints::build(false, None).unwrap();
        bc.critical = false;
        replace(&mut c, bc);
        expect(&fx, &c, "basicConstraints must be critical");
        c = good.clone();
        remove(&mut c, oid::ID_CE_BASIC_CONSTRAINTS);
        expect(&fx, &c, "basicConstraints is missing");

        // Key identifiers.
        c = good.clone();
        replace(
            &mut c,
            extension(
                oid::ID_CE_SUBJECT_KEY_IDENTIFIER,
                false,
                &OctetString::new([1u8; 20]).unwrap(),
            )
            .unwrap(),
        );
        expect(&fx, &c, "(RFC 7093 §2 method 1 of the subject key)");
        c = good.clone();
        remove(&mut c, oid::ID_CE_SUBJECT_KEY_IDENTIFIER);
        expect(&fx, &c, "subjectKeyIdentifier is missing");
        c = good.clone();
        replace(
            &mut c,
            ext::key_identifier::authority_key_identifier(&[2u8; 20]).unwrap(),
        );
        expect(&fx, &c, "differs from the issuer's subjectKeyIdentifier");
        c = good.clone();
        let mut aki = ext::key_identifier::authority_key_identifier(&fx.ca_key_id).unwrap();
        aki.critical = true;
        replace(&mut c, aki);
        assert_eq!(
            lint(&c, &fx.ctx()),
            ["authorityKeyIdentifier must not be critical"]
        );

        // certificatePolicies.
        c = good.clone();
        let with_qualifier = CertificatePolicies(vec![PolicyInformation {
            policy_identifier: DEFAULT_POLICY_OID,
            policy_qualifiers: Some(vec![PolicyQualifierInfo {
                policy_qualifier_id: ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.2.1"),
                qualifier: Some(Any::from(
                    der::asn1::Ia5StringRef::new("http://cps").unwrap(),
                )),
            }]),
        }]);
        replace(
            &mut c,
            extension(oid::ID_CE_CERTIFICATE_POLICIES, false, &with_qualifier).unwrap(),
        );
        assert_eq!(
            lint(&c, &fx.ctx()),
            ["policy qualifiers are not allowed (CPS §7.1.8)"]
        );
        c = good.clone();
        replace(
            &mut c,
            ext::certificate_policies::build(&[ObjectIdentifier::new_unwrap("1.2.3.4")]).unwrap(),
        );
        expect(
            &fx,
            &c,
            "certificatePolicies [1.2.3.4] differ from the configured [2.16.886.101.0.3.3]",
        );
        c = good.clone();
        remove(&mut c, oid::ID_CE_CERTIFICATE_POLICIES);
        expect(&fx, &c, "certificatePolicies is missing");

        // CRL DP, AIA.
        c = good.clone();
        remove(&mut c, oid::ID_CE_CRL_DISTRIBUTION_POINTS);
        expect(&fx, &c, "cRLDistributionPoints is missing");
        c = good.clone();
        replace(
            &mut c,
            ext::crl_distribution_points::build(&["http://elsewhere/x.crl".into()]).unwrap(),
        );
        expect(
            &fx,
            &c,
            "cRLDistributionPoints [\"http://elsewhere/x.crl\"] differ",
        );
        c = good.clone();
        remove(&mut c, oid::ID_PE_AUTHORITY_INFO_ACCESS);
        expect(&fx, &c, "authorityInfoAccess is missing");

        // EKU, nocheck, SAN.
        c = good.clone();
        exts(&mut c).push(ext::extended_key_usage::build(&[ID_KP_OCSP_SIGNING]).unwrap());
        expect(
            &fx,
            &c,
            "extendedKeyUsage must be absent for profile subscriber-signature",
        );
        c = good.clone();
        exts(&mut c).push(ext::ocsp_nocheck::build().unwrap());
        expect(&fx, &c, "id-pkix-ocsp-nocheck must be absent");
        c = good.clone();
        replace(
            &mut c,
            ext::subject_alt_name::build_email("other@example.tw").unwrap(),
        );
        expect(
            &fx,
            &c,
            "rfc822Name other@example.tw was not verified (CPS §3.2.4)",
        );
        c = good.clone();
        let dns = SubjectAltName(vec![GeneralName::DnsName(
            der::asn1::Ia5String::new("x.tw").unwrap(),
        )]);
        replace(
            &mut c,
            extension(oid::ID_CE_SUBJECT_ALT_NAME, false, &dns).unwrap(),
        );
        expect(&fx, &c, "may only hold a verified rfc822Name");
        c = good.clone();
        remove(&mut c, oid::ID_CE_SUBJECT_ALT_NAME);
        expect(&fx, &c, "verified e-mail wang@example.tw is missing");
    }

    #[test]
    fn profile_specific_checks() {
        let fx = fixture();
        // The same certificate linted as a CA certificate or as a responder.
        let mut ca_profile = Profile::subordinate_ca();
        ca_profile.key_policy = fx.profile.key_policy.clone();
        let ctx = LintContext {
            profile: &ca_profile,
            ..fx.ctx()
        };
        let f = lint(&fx.leaf, &ctx);
        assert!(
            f.iter()
                .any(|s| s.contains("CA keyUsage must be exactly keyCertSign, cRLSign")),
            "{f:?}"
        );
        assert!(
            f.iter()
                .any(|s| s.contains("basicConstraints cA must be TRUE")),
            "{f:?}"
        );
        let mut responder = Profile::ocsp_responder();
        responder.key_policy = fx.profile.key_policy.clone();
        let ctx = LintContext {
            profile: &responder,
            ..fx.ctx()
        };
        let f = lint(&fx.leaf, &ctx);
        assert!(
            f.iter().any(|s| s.contains("lacks id-kp-OCSPSigning")),
            "{f:?}"
        );
        assert!(
            f.iter().any(|s| s.contains("lacks id-pkix-ocsp-nocheck")),
            "{f:?}"
        );
    }
}
