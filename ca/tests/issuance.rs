//! Every bad-input class of issuance, each with its specific error.
//!
//! Not tested here because it cannot be written: building a [`ca::issue::Linted`]
//! outside `ca::issue` (private fields, no constructor) — the type system
//! guarantees that only linted certificates are signed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ca::Error;
use ca::csr::{SubjectKey, build_csr};
use ca::issue::{
    CaConfig, Email, IssuanceRequest, IssuedCertificate, Issuer, RootRequest, check_renewal_window,
    renewal_window, self_sign_root,
};
use ca::name::DistinguishedName;
use ca::profile::{BeyondIssuer, Profile, RenewalRule};
use ca::serial::Serial;
use ca::signer::software::SoftwareKey;
use ca::signer::{Curve, KeySpec, SignatureAlgorithm, Signer};
use ca::time::{DAY, add_years, sub_years};
use spki::SubjectPublicKeyInfoOwned;
use x509_cert::ext::pkix::KeyUsages;

const YEAR: Duration = Duration::from_secs(365 * 86_400);

struct Ca {
    root: IssuedCertificate,
    key: Arc<SoftwareKey>,
    issuer: Issuer,
}

/// A root CA valid from 10 years ago for 20 years, issuing directly.
fn new_ca() -> Ca {
    ca_from(SystemTime::now() - 10 * YEAR)
}

fn ca_from(not_before: SystemTime) -> Ca {
    let key = Arc::new(SoftwareKey::generate(KeySpec::Rsa { bits: 2048 }).unwrap());
    let mut req =
        RootRequest::new(&DistinguishedName::parse("C=TW, O=行政院, OU=測試").unwrap()).unwrap();
    req.not_before = not_before;
    let root = self_sign_root(key.as_ref(), &req).unwrap();
    let issuer = Issuer::new(config(&root, key.clone())).unwrap();
    Ca { root, key, issuer }
}

fn config(root: &IssuedCertificate, signer: Arc<dyn Signer>) -> CaConfig {
    let mut c = CaConfig::new(root.certificate.clone(), signer);
    c.crl_urls = vec!["http://ca.example.tw/crl/full.crl".into()];
    c.ocsp_urls = vec!["http://ocsp.example.tw".into()];
    c.ca_issuers_urls = vec!["http://ca.example.tw/ca.crt".into()];
    c
}

fn subject() -> DistinguishedName {
    DistinguishedName::parse("C=TW, CN=王小明, serialNumber=A0001").unwrap()
}

fn p521_key() -> SubjectKey {
    let k = SoftwareKey::generate(KeySpec::Ec(Curve::P521)).unwrap();
    SubjectKey::from_csr(&build_csr(&k, &subject().to_name().unwrap()).unwrap()).unwrap()
}

fn request(profile: Profile, key: SubjectKey) -> IssuanceRequest {
    IssuanceRequest::new(profile, &subject(), key, Serial::random().unwrap()).unwrap()
}

fn openssl_csr(newkey: &[&str]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec![
        "req", "-new", "-nodes", "-keyout", "k.pem", "-subj", "/CN=x", "-out", "r.der", "-outform",
        "DER",
    ];
    args.extend_from_slice(newkey);
    let out = Command::new("openssl")
        .args(&args)
        .current_dir(dir.path())
        .output()
        .expect("openssl CLI");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(dir.path().join("r.der")).unwrap()
}

#[test]
fn good_request_issues_and_verifies() {
    let ca = new_ca();
    let cert = ca
        .issuer
        .issue(&request(Profile::subscriber_signature(), p521_key()))
        .unwrap();
    assert_eq!(
        cert.not_after,
        add_years(ca::time::truncate_to_seconds(cert.not_before).unwrap(), 5).unwrap()
    );
    assert!(
        cert.to_pem()
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----\n")
    );
    assert_eq!(
        ca::serial::Serial::from_serial_number(&cert.certificate.tbs_certificate.serial_number)
            .unwrap(),
        cert.serial
    );
    // The prepared value exposes the TBS before signing, and signing consumes it.
    let linted = ca
        .issuer
        .prepare(&request(Profile::subscriber_encryption(), p521_key()))
        .unwrap();
    assert_eq!(
        linted.tbs_certificate().issuer,
        ca.root.certificate.tbs_certificate.subject
    );
    let _ = linted.sign(&ca.issuer).unwrap();
}

#[test]
fn garbage_csr_is_malformed() {
    for input in [
        &b"not a CSR"[..],
        b"",
        b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
        &[0x30, 0x03, 0x02, 0x01, 0x00],
    ] {
        let err = SubjectKey::from_csr(input).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Malformed {
                    what: "certificate request",
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(err.reason(), "Malformed");
    }
}

#[test]
fn tampered_csr_has_no_proof_of_possession() {
    let k = SoftwareKey::generate(KeySpec::Rsa { bits: 2048 }).unwrap();
    let name = DistinguishedName::parse("C=TW, CN=Tamper")
        .unwrap()
        .to_name()
        .unwrap();
    let mut der = build_csr(&k, &name).unwrap();
    let at = der.windows(6).position(|w| w == b"Tamper").unwrap();
    der[at] = b'D';
    let err = SubjectKey::from_csr(&der).unwrap_err();
    assert!(matches!(err, Error::CsrSignatureInvalid), "{err}");
    // A flipped signature bit as well.
    let mut der = build_csr(&k, &name).unwrap();
    let last = der.len() - 1;
    der[last] ^= 1;
    assert!(matches!(
        SubjectKey::from_csr(&der),
        Err(Error::CsrSignatureInvalid)
    ));
}

#[test]
fn rsa_1024_is_weak() {
    let csr = openssl_csr(&["-newkey", "rsa:1024"]);
    let err = SubjectKey::from_csr(&csr).unwrap_err();
    assert!(matches!(err, Error::WeakKey { .. }), "{err}");
    assert!(err.to_string().contains("RSA 1024 bits"), "{err}");
}

#[test]
fn p256_is_weak_for_subscribers() {
    let ca = new_ca();
    let k = SoftwareKey::generate(KeySpec::Ec(Curve::P256)).unwrap();
    let key = SubjectKey::from_csr(&build_csr(&k, &subject().to_name().unwrap()).unwrap()).unwrap();
    let err = ca
        .issuer
        .prepare(&request(Profile::subscriber_signature(), key))
        .unwrap_err();
    assert!(matches!(err, Error::WeakKey { .. }), "{err}");
    assert!(err.to_string().contains("EC ≥ 521 bits"), "{err}");
}

#[test]
fn ed25519_is_unsupported() {
    let csr = openssl_csr(&["-newkey", "ed25519"]);
    let err = SubjectKey::from_csr(&csr).unwrap_err();
    assert!(matches!(err, Error::UnsupportedAlgorithm(_)), "{err}");
    assert!(err.to_string().contains("1.3.101.112"), "{err}");
    assert!(err.to_string().contains("Ed25519"), "{err}");
}

#[test]
fn bare_spki_only_where_the_profile_allows() {
    let ca = new_ca();
    let k = SoftwareKey::generate(KeySpec::Rsa { bits: 2048 }).unwrap();
    let spki_der = ca::signer::spki_der(k.public_key()).unwrap();
    let key = SubjectKey::from_attested_spki(&spki_der).unwrap();
    let err = ca
        .issuer
        .prepare(&request(Profile::subordinate_ca(), key.clone()))
        .unwrap_err();
    assert!(matches!(err, Error::ProfileViolation { .. }), "{err}");
    assert!(err.to_string().contains("§3.2.1"), "{err}");
    let err = ca
        .issuer
        .prepare(&request(Profile::ocsp_responder(), key.clone()))
        .unwrap_err();
    assert!(matches!(err, Error::ProfileViolation { .. }), "{err}");
    // Allowed for subscriber certificates (on-card keys).
    ca.issuer
        .issue(&request(Profile::subscriber_encryption(), key))
        .unwrap();
    assert!(matches!(
        SubjectKey::from_attested_spki(b"junk"),
        Err(Error::Malformed { .. })
    ));
}

#[test]
fn empty_subject_and_empty_cn_are_refused() {
    let ca = new_ca();
    let err = DistinguishedName::parse("").unwrap_err();
    assert!(matches!(err, Error::InvalidSubject(_)), "{err}");
    let err = DistinguishedName::parse("C=TW, CN=, serialNumber=1").unwrap_err();
    assert!(matches!(err, Error::InvalidSubject(_)), "{err}");
    assert!(err.to_string().contains("CN: empty"), "{err}");
    // A raw empty Name in a request is refused too.
    let mut req = request(Profile::subscriber_signature(), p521_key());
    req.subject = x509_cert::name::RdnSequence(vec![]);
    let err = ca.issuer.prepare(&req).unwrap_err();
    assert!(matches!(err, Error::InvalidSubject(_)), "{err}");
    assert!(err.to_string().contains("anonymous"), "{err}");
    // Missing serialNumber, required by the subscriber profile (§3.1.5).
    let mut req = request(Profile::subscriber_signature(), p521_key());
    req.subject = DistinguishedName::parse("C=TW, CN=王小明")
        .unwrap()
        .to_name()
        .unwrap();
    let err = ca.issuer.prepare(&req).unwrap_err();
    assert!(
        err.to_string().contains("serialNumber is required"),
        "{err}"
    );
}

#[test]
fn email_only_when_verified_and_allowed() {
    let ca = new_ca();
    let mut req = request(Profile::subscriber_signature(), p521_key());
    req.email = Some(Email {
        address: "wang@example.tw".into(),
        verified: false,
    });
    let err = ca.issuer.prepare(&req).unwrap_err();
    assert!(matches!(err, Error::Unverified(_)), "{err}");
    assert_eq!(err.reason(), "UnverifiedInformation");
    let mut profile = Profile::subscriber_signature();
    profile.allow_email = false;
    req.profile = profile;
    req.email = Some(Email {
        address: "wang@example.tw".into(),
        verified: true,
    });
    assert!(matches!(
        ca.issuer.prepare(&req),
        Err(Error::ProfileViolation { .. })
    ));
}

#[test]
fn validity_is_clamped_to_the_ca_or_refused() {
    // A CA that ends in about 2 years: a 5-year certificate is clamped.
    let ca = ca_from(SystemTime::now() - 18 * YEAR);
    let ca_not_after = ca::time::from_x509(&ca.root.certificate.tbs_certificate.validity.not_after);
    let cert = ca
        .issuer
        .issue(&request(Profile::subscriber_signature(), p521_key()))
        .unwrap();
    assert_eq!(cert.not_after, ca_not_after);
    let mut profile = Profile::subscriber_signature();
    profile.beyond_issuer = BeyondIssuer::Refuse;
    let err = ca
        .issuer
        .prepare(&request(profile, p521_key()))
        .unwrap_err();
    assert!(matches!(err, Error::InvalidValidity(_)), "{err}");
    assert!(
        err.to_string().contains("is after the CA's notAfter"),
        "{err}"
    );
    // notBefore before the CA's notBefore, and notAfter before notBefore.
    let mut req = request(Profile::subscriber_signature(), p521_key());
    req.not_before = SystemTime::now() - 19 * YEAR;
    assert!(matches!(
        ca.issuer.prepare(&req),
        Err(Error::InvalidValidity(_))
    ));
    let mut req = request(Profile::subscriber_signature(), p521_key());
    req.not_after = Some(req.not_before - DAY);
    assert!(matches!(
        ca.issuer.prepare(&req),
        Err(Error::InvalidValidity(_))
    ));
}

#[test]
fn lint_refuses_a_non_critical_key_usage() {
    let ca = new_ca();
    let mut profile = Profile::subscriber_signature();
    profile.key_usage_critical = false;
    match ca.issuer.prepare(&request(profile, p521_key())) {
        Err(Error::Lint(findings)) => assert_eq!(findings, ["keyUsage must be critical"]),
        other => panic!("expected a lint refusal, got {other:?}"),
    }
    // A subscriber profile that grants keyCertSign.
    let mut profile = Profile::subscriber_signature();
    profile.key_usage_ec |= KeyUsages::KeyCertSign;
    match ca.issuer.prepare(&request(profile, p521_key())) {
        Err(Error::Lint(findings)) => {
            assert!(
                findings
                    .iter()
                    .any(|f| f.contains("must not include keyCertSign")),
                "{findings:?}"
            )
        }
        other => panic!("expected a lint refusal, got {other:?}"),
    }
    // An OCSP responder profile that forgot the nocheck extension.
    let mut profile = Profile::ocsp_responder();
    profile.ocsp_nocheck = false;
    let k = SoftwareKey::generate(KeySpec::Rsa { bits: 2048 }).unwrap();
    let key = SubjectKey::from_csr(&build_csr(&k, &subject().to_name().unwrap()).unwrap()).unwrap();
    match ca.issuer.prepare(&request(profile, key)) {
        Err(Error::Lint(findings)) => assert_eq!(
            findings,
            ["OCSP responder certificate lacks id-pkix-ocsp-nocheck (CPS §4.9.9)"]
        ),
        other => panic!("expected a lint refusal, got {other:?}"),
    }
}

/// A signer that claims the CA key but returns garbage signatures.
#[derive(Debug)]
struct BrokenSigner(Arc<SoftwareKey>);

impl Signer for BrokenSigner {
    fn algorithm(&self) -> SignatureAlgorithm {
        self.0.algorithm()
    }
    fn public_key(&self) -> &SubjectPublicKeyInfoOwned {
        self.0.public_key()
    }
    fn sign(&self, message: &[u8]) -> ca::Result<Vec<u8>> {
        let mut s = self.0.sign(message)?;
        s[10] ^= 0x40;
        Ok(s)
    }
}

#[test]
fn a_bad_ca_signature_is_caught() {
    let ca = new_ca();
    let broken = Issuer::new(config(&ca.root, Arc::new(BrokenSigner(ca.key.clone())))).unwrap();
    let err = broken
        .issue(&request(Profile::subscriber_signature(), p521_key()))
        .unwrap_err();
    assert!(matches!(err, Error::SignatureCheck(_)), "{err}");
    assert_eq!(err.reason(), "SignatureCheckFailed");
}

#[test]
fn issuer_configuration_is_checked() {
    let ca = new_ca();
    let other = Arc::new(SoftwareKey::generate(KeySpec::Rsa { bits: 2048 }).unwrap());
    let err = Issuer::new(config(&ca.root, other)).unwrap_err();
    assert!(matches!(err, Error::IssuerConfig(_)), "{err}");
    let mut c = config(&ca.root, ca.key.clone());
    c.crl_urls = vec!["ftp://nope".into()];
    assert!(matches!(Issuer::new(c), Err(Error::IssuerConfig(_))));
    // A prepared certificate cannot be signed by another CA.
    let ca2 = new_ca();
    let linted = ca
        .issuer
        .prepare(&request(Profile::subscriber_signature(), p521_key()))
        .unwrap();
    assert!(matches!(
        linted.sign(&ca2.issuer),
        Err(Error::IssuerConfig(_))
    ));
    // A subscriber certificate is not a CA certificate.
    let leaf = ca
        .issuer
        .issue(&request(Profile::subscriber_signature(), p521_key()))
        .unwrap();
    let k = Arc::new(SoftwareKey::generate(KeySpec::Ec(Curve::P521)).unwrap());
    let mut c = CaConfig::new(leaf.certificate, k);
    c.crl_urls = vec![];
    assert!(matches!(Issuer::new(c), Err(Error::IssuerConfig(_))));
    // Root profile through the issuer is refused.
    let err = ca
        .issuer
        .prepare(&request(Profile::root_ca(), p521_key()))
        .unwrap_err();
    assert!(matches!(err, Error::ProfileViolation { .. }), "{err}");
}

#[test]
fn crl_partition_url_replaces_the_full_crl() {
    let ca = new_ca();
    let mut req = request(Profile::subscriber_signature(), p521_key());
    req.crl_distribution_point = Some("http://ca.example.tw/crl/3.crl".into());
    let cert = ca.issuer.issue(&req).unwrap();
    let exts = cert.certificate.tbs_certificate.extensions.unwrap();
    let cdp = ca::ext::find(&exts, &ca::ext::oid::ID_CE_CRL_DISTRIBUTION_POINTS).unwrap();
    assert_eq!(
        ca::ext::crl_distribution_points::parse_urls(cdp).unwrap(),
        ["http://ca.example.tw/crl/3.crl"]
    );
}

#[test]
fn renewal_keeps_subject_and_key_and_adds_three_years() {
    let ca = new_ca();
    let now = SystemTime::now();
    // Issued 5 years minus 30 days ago: expires in 30 days, inside the window.
    let mut req = request(Profile::subscriber_signature(), p521_key());
    req.not_before = sub_years(now, 5).unwrap() + 30 * DAY;
    req.email = Some(Email {
        address: "wang@example.tw".into(),
        verified: true,
    });
    let old = ca.issuer.issue(&req).unwrap();
    let renewal = IssuanceRequest::renewal(
        &old.certificate,
        Profile::subscriber_signature(),
        Serial::random().unwrap(),
        now,
    )
    .unwrap();
    let new = ca.issuer.issue(&renewal).unwrap();
    assert_eq!(new.not_after, add_years(old.not_after, 3).unwrap());
    assert_ne!(new.serial, old.serial);
    let (o, n) = (
        &old.certificate.tbs_certificate,
        &new.certificate.tbs_certificate,
    );
    assert_eq!(o.subject, n.subject);
    assert_eq!(o.subject_public_key_info, n.subject_public_key_info);
    assert_eq!(
        o.extensions.as_ref().unwrap().len(),
        n.extensions.as_ref().unwrap().len()
    );

    // Mobile certificates are never renewed (§6.3.2.2).
    let err = IssuanceRequest::renewal(
        &old.certificate,
        Profile::mobile_signature(),
        Serial::random().unwrap(),
        now,
    )
    .unwrap_err();
    assert!(matches!(err, Error::ProfileViolation { .. }), "{err}");

    // Window: 60 days before to 3 years after notAfter (§4.6.2).
    let rule = RenewalRule::default();
    let t = old.not_after;
    let (opens, closes) = renewal_window(t, &rule).unwrap();
    assert_eq!(opens, t - 60 * DAY);
    assert_eq!(closes, add_years(t, 3).unwrap());
    assert!(check_renewal_window(t, t - 60 * DAY, &rule).is_ok());
    let err = check_renewal_window(t, t - 61 * DAY, &rule).unwrap_err();
    assert!(err.to_string().contains("renewal window opens"), "{err}");
    assert!(check_renewal_window(t, closes, &rule).is_ok());
    let err = check_renewal_window(t, closes + Duration::from_secs(1), &rule).unwrap_err();
    assert!(err.to_string().contains("renewal window closed"), "{err}");
    assert!(matches!(err, Error::InvalidValidity(_)));
}
