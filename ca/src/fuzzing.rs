//! Entry points of the fuzz targets in `fuzz/`, shared with the corpus replay test
//! (`ca/tests/fuzz_corpus.rs`) so that both run exactly the same code. Not API.
//!
//! Each entry point takes arbitrary bytes and must never panic except on a broken
//! invariant, which it asserts.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use der::Decode;

use crate::csr::{KeyPolicy, SubjectKey, build_csr};
use crate::issue::{CaConfig, IssuanceRequest, Issuer, RootRequest, self_sign_root};
use crate::name::DistinguishedName;
use crate::ocsp::{OcspConfig, OcspResponder, parse_request};
use crate::profile::Profile;
use crate::revocation::{MemoryIndex, Reason, RevokedEntry};
use crate::serial::Serial;
use crate::signer::software::SoftwareKey;
use crate::signer::{Curve, KeySpec, Signer};

/// PKCS#10 / SPKI input from an RA: parse, verify proof of possession, apply the
/// subscriber key policy.
pub fn csr(data: &[u8]) {
    if let Ok(key) = SubjectKey::from_csr(data) {
        // A request that parsed and verified has a key the policy can judge.
        let _ = KeyPolicy::subscriber().check(key.spki());
    }
    let _ = SubjectKey::from_attested_spki(data);
}

/// OCSP request bytes, as a POST body and (when UTF-8) as a GET path, through the
/// whole responder. Every answer must be a well-formed DER OCSPResponse.
pub fn ocsp_request(data: &[u8]) {
    let _ = parse_request(data, 64);
    let fixture = fixture();
    assert!(
        fixture.is_some(),
        "the fuzz fixture (CA + responder) could not be built"
    );
    let Some((responder, index)) = fixture else {
        return;
    };
    let now = SystemTime::now();
    let answer = responder.respond(data, index, now);
    assert!(
        x509_ocsp::OcspResponse::from_der(&answer.der).is_ok(),
        "respond() produced a response that does not decode"
    );
    if let Ok(path) = std::str::from_utf8(data) {
        let answer = responder.respond_get(path, index, now);
        assert!(
            x509_ocsp::OcspResponse::from_der(&answer.der).is_ok(),
            "respond_get() produced a response that does not decode"
        );
    }
}

/// A CA with a delegated EC P-256 responder (fast to sign with) and an index holding
/// one good, one revoked and one held certificate; built once per process.
fn fixture() -> Option<&'static (OcspResponder, MemoryIndex)> {
    static FIXTURE: OnceLock<Option<(OcspResponder, MemoryIndex)>> = OnceLock::new();
    FIXTURE.get_or_init(|| build_fixture().ok()).as_ref()
}

fn build_fixture() -> crate::Result<(OcspResponder, MemoryIndex)> {
    let ca_key: Arc<dyn Signer> = Arc::new(SoftwareKey::generate(KeySpec::Rsa { bits: 2048 })?);
    let ca_dn = DistinguishedName::parse("C=TW, O=行政院, OU=內政部憑證管理中心")?;
    let root = self_sign_root(ca_key.as_ref(), &RootRequest::new(&ca_dn)?)?;
    let mut config = CaConfig::new(x509_cert::Certificate::from_der(&root.der)?, ca_key);
    config.crl_urls = vec!["http://repository.example.tw/crl/fuzz.crl".into()];
    let issuer = Issuer::new(config)?;
    let responder_key = Arc::new(SoftwareKey::generate(KeySpec::Ec(Curve::P256))?);
    let dn = DistinguishedName::parse("C=TW, O=行政院, CN=fuzz responder")?;
    let csr = build_csr(responder_key.as_ref(), &dn.to_name()?)?;
    let mut profile = Profile::ocsp_responder();
    profile.key_policy.min_ec_bits = Some(256);
    let responder_cert = issuer.issue(&IssuanceRequest::new(
        profile,
        &dn,
        SubjectKey::from_csr(&csr)?,
        Serial::random()?,
    )?)?;
    let mut index = MemoryIndex::new();
    let not_after = SystemTime::now() + Duration::from_secs(86_400);
    for (n, reason) in [
        (1u8, None),
        (2, Some(Reason::KeyCompromise)),
        (3, Some(Reason::CertificateHold)),
    ] {
        let serial = Serial::from_be_bytes(&[n])?;
        index.issue(&serial, not_after, None)?;
        if let Some(reason) = reason {
            index.revoke(&RevokedEntry {
                serial,
                revoked_at: SystemTime::now(),
                reason,
                invalidity_date: None,
                not_after,
                partition: None,
            })?;
        }
    }
    let responder = OcspResponder::new(
        &root.der,
        &responder_cert.der,
        responder_key,
        OcspConfig::default(),
    )?;
    Ok((responder, index))
}
