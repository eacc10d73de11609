//! OCSP checked with `openssl ocsp` as the client: openssl builds the requests,
//! chop answers, openssl verifies and prints the answers. x509-ocsp decodes them
//! as a second, independent reader.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use base64::Engine;
use common::{der_of, must, openssl, self_signed, write_key};

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ca::crl::{CrlConfig, CrlIssuer, CrlRequest, CrlScope, parse_crl};
use ca::ocsp::{CertOutcome, OcspConfig, OcspResponder, ResponseStatus, parse_get_path};
use ca::revocation::{MemoryIndex, Reason, RevokedEntry};
use ca::serial::Serial;
use ca::signer::KeySpec;
use ca::signer::software::SoftwareKey;
use der::Decode;
use x509_ocsp::{BasicOcspResponse, OcspResponse};

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

fn now() -> SystemTime {
    UNIX_EPOCH
        + Duration::from_secs(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs(),
        )
}

/// Sign `name.csr` with `issuer` into `name.pem`.
fn sign_csr(dir: &Path, issuer: &str, name: &str, serial_hex: &str, ext: &str) {
    std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
    must(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{issuer}.pem"),
            "-CAkey",
            &format!("{issuer}.key"),
            "-set_serial",
            &format!("0x{serial_hex}"),
            "-days",
            "365",
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.pem"),
        ],
    );
}

fn leaf(dir: &Path, issuer: &str, name: &str, serial_hex: &str) {
    must(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.leafkey"),
            "-subj",
            &format!("/CN={name}"),
            "-out",
            &format!("{name}.csr"),
        ],
    );
    sign_csr(
        dir,
        issuer,
        name,
        serial_hex,
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n",
    );
}

struct Setup {
    tmp: tempfile::TempDir,
    ca_key: Arc<SoftwareKey>,
    ca_der: Vec<u8>,
    responder: OcspResponder,
    index: MemoryIndex,
    t: SystemTime,
}

impl Setup {
    fn dir(&self) -> &Path {
        self.tmp.path()
    }
}

/// CA, delegated responder (RSA-2048, id-kp-OCSPSigning, ocsp-nocheck), leaves
/// `good` (0A01), `revoked` (0A02, keyCompromise), `held` (0A03), `stranger`
/// (0A04, signed by the CA but not in the index).
fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ca_key = self_signed(dir, "ca", "/C=TW/O=chop test/CN=OCSP Test CA");
    let ca_der = der_of(dir, "ca.pem");
    let resp_key = Arc::new(SoftwareKey::generate(KeySpec::Rsa { bits: 2048 }).unwrap());
    write_key(dir, "responder", &resp_key);
    must(
        dir,
        &[
            "req",
            "-new",
            "-key",
            "responder.key",
            "-subj",
            "/C=TW/O=chop test/CN=OCSP Responder",
            "-out",
            "responder.csr",
        ],
    );
    sign_csr(
        dir,
        "ca",
        "responder",
        "7E01",
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
         extendedKeyUsage=OCSPSigning\n1.3.6.1.5.5.7.48.1.5=ASN1:NULL\n",
    );
    let responder_der = der_of(dir, "responder.pem");
    for (name, serial) in [
        ("good", "0A01"),
        ("revoked", "0A02"),
        ("held", "0A03"),
        ("stranger", "0A04"),
    ] {
        leaf(dir, "ca", name, serial);
    }
    let t = now();
    let mut index = MemoryIndex::new();
    index
        .issue(&Serial::from_hex("0A01").unwrap(), t + 300 * DAY, None)
        .unwrap();
    index
        .revoke(&RevokedEntry {
            serial: Serial::from_hex("0A02").unwrap(),
            revoked_at: t - 2 * HOUR,
            reason: Reason::KeyCompromise,
            invalidity_date: Some(t - 5 * DAY),
            not_after: t + 300 * DAY,
            partition: None,
        })
        .unwrap();
    index
        .revoke(&RevokedEntry {
            serial: Serial::from_hex("0A03").unwrap(),
            revoked_at: t - HOUR,
            reason: Reason::CertificateHold,
            invalidity_date: None,
            not_after: t + 300 * DAY,
            partition: None,
        })
        .unwrap();
    let responder =
        OcspResponder::new(&ca_der, &responder_der, resp_key, OcspConfig::default()).unwrap();
    Setup {
        tmp,
        ca_key,
        ca_der,
        responder,
        index,
        t,
    }
}

/// `openssl ocsp -reqout` for the given leaves; returns the request bytes.
fn request(s: &Setup, leaves: &[&str], extra: &[&str]) -> Vec<u8> {
    // Digest options apply to the -cert options after them.
    let mut args = vec!["ocsp"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["-issuer", "ca.pem"]);
    for l in leaves {
        args.push("-cert");
        args.push(l);
    }
    args.extend_from_slice(&["-reqout", "req.der"]);
    must(s.dir(), &args);
    std::fs::read(s.dir().join("req.der")).unwrap()
}

/// Let openssl verify and print `resp` for `leaves` (checking the nonce against
/// req.der when `with_request`).
fn check(s: &Setup, resp: &[u8], leaves: &[&str], with_request: bool) -> (bool, String) {
    std::fs::write(s.dir().join("resp.der"), resp).unwrap();
    let mut args = vec![
        "ocsp", "-respin", "resp.der", "-issuer", "ca.pem", "-CAfile", "ca.pem",
    ];
    if with_request {
        // openssl builds a fresh request (with its own nonce) from -cert options and
        // then ignores -reqin, so the nonce check needs -reqin alone; statuses are
        // then only in -resp_text.
        args.extend_from_slice(&["-reqin", "req.der"]);
    } else {
        for l in leaves {
            args.push("-cert");
            args.push(l);
        }
    }
    args.push("-resp_text");
    openssl(s.dir(), &args)
}

fn basic(resp: &[u8]) -> BasicOcspResponse {
    let r = OcspResponse::from_der(resp).unwrap();
    let bytes = r.response_bytes.unwrap();
    BasicOcspResponse::from_der(bytes.response.as_bytes()).unwrap()
}

#[test]
fn good_revoked_held_and_unknown_verify_with_openssl() {
    let s = setup();
    for (leaf, want) in [
        ("good.pem", "good.pem: good"),
        ("revoked.pem", "revoked.pem: revoked"),
        ("held.pem", "held.pem: revoked"),
        ("stranger.pem", "stranger.pem: unknown"),
    ] {
        let req = request(&s, &[leaf], &["-no_nonce"]);
        let a = s.responder.respond(&req, &s.index, s.t);
        assert_eq!(a.status, ResponseStatus::Successful);
        let (ok, out) = check(&s, &a.der, &[leaf], false);
        assert!(ok, "{out}");
        assert!(out.contains("Response verify OK"), "{out}");
        assert!(out.contains(want), "{want}:\n{out}");
        assert!(
            out.contains("Responder Id: C = TW, O = chop test, CN = OCSP Responder"),
            "{out}"
        );
        assert!(out.contains("Next Update"), "{out}");
        if leaf == "revoked.pem" {
            assert!(out.contains("Reason: keyCompromise"), "{out}");
            assert!(out.contains("Invalidity Date"), "{out}");
        }
        if leaf == "held.pem" {
            assert!(out.contains("Reason: certificateHold"), "{out}");
        }
        assert!(a.cache.cacheable);
        assert_eq!(a.cache.max_age_secs, 300);
        assert_eq!(a.cache.etag.len(), 64);
        assert!(a.cache_key.is_some());
    }
}

#[test]
fn revocation_time_and_reason_match_the_crl_from_the_same_index() {
    let s = setup();
    let req = request(&s, &["revoked.pem"], &["-no_nonce"]);
    let a = s.responder.respond(&req, &s.index, s.t);
    let b = basic(&a.der);
    let single = &b.tbs_response_data.responses[0];
    let x509_ocsp::CertStatus::Revoked(info) = single.cert_status else {
        panic!("not revoked: {:?}", single.cert_status)
    };

    let crl = CrlIssuer::new(&s.ca_der, s.ca_key.clone(), CrlConfig::default())
        .unwrap()
        .issue(
            &s.index,
            &CrlRequest {
                number: 1,
                this_update: s.t,
                next_update: s.t + DAY,
                scope: CrlScope::Full,
            },
        )
        .unwrap();
    let parsed = parse_crl(&crl.der).unwrap();
    let entry = parsed
        .entries
        .iter()
        .find(|e| e.serial.to_hex() == "0A02")
        .unwrap();
    assert_eq!(info.revocation_time.0.to_system_time(), entry.revoked_at);
    assert_eq!(entry.revoked_at, s.t - 2 * HOUR);
    assert_eq!(
        info.revocation_reason.map(|r| r as u8),
        entry.reason.map(|r| r.code())
    );
    assert_eq!(entry.reason, Some(Reason::KeyCompromise));

    // And both as openssl prints them: the same instant.
    std::fs::write(s.dir().join("crl.der"), &crl.der).unwrap();
    let crl_text = must(
        s.dir(),
        &["crl", "-inform", "DER", "-in", "crl.der", "-noout", "-text"],
    );
    let (_, ocsp_text) = check(&s, &a.der, &["revoked.pem"], false);
    let crl_date = crl_text
        .split("Serial Number: 0A02")
        .nth(1)
        .unwrap()
        .lines()
        .find_map(|l| l.trim().strip_prefix("Revocation Date: "))
        .unwrap()
        .to_string();
    let ocsp_date = ocsp_text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Revocation Time: "))
        .unwrap()
        .to_string();
    assert_eq!(crl_date, ocsp_date);
    assert!(crl_text.contains("Key Compromise"), "{crl_text}");
    assert!(ocsp_text.contains("Reason: keyCompromise"), "{ocsp_text}");
}

#[test]
fn nonce_is_echoed_and_sha256_cert_ids_work() {
    let s = setup();
    let req = request(&s, &["good.pem"], &["-nonce", "-sha256"]);
    let a = s.responder.respond(&req, &s.index, s.t);
    let (ok, out) = check(&s, &a.der, &["good.pem"], true);
    assert!(ok, "{out}");
    assert!(out.contains("Response verify OK"), "{out}");
    assert!(!out.contains("WARNING: no nonce"), "{out}");
    assert!(out.contains("OCSP Nonce"), "{out}");
    assert!(out.contains("Hash Algorithm: sha256"), "{out}");
    assert!(out.contains("Cert Status: good"), "{out}");
    assert!(!a.cache.cacheable);
    assert_eq!(a.cache.max_age_secs, 0);
    assert_eq!(a.cache_key, None);
    let b = basic(&a.der);
    assert!(b.nonce().is_some());

    // A response to another request's nonce is refused by openssl: the echo is real.
    let other = request(&s, &["good.pem"], &["-nonce", "-sha256"]);
    assert_ne!(other, req);
    let (ok, out) = check(&s, &a.der, &["good.pem"], true);
    assert!(!ok && out.contains("Nonce Verify error"), "{out}");
}

#[test]
fn several_cert_ids_in_one_request_get_one_response() {
    let s = setup();
    let leaves = ["good.pem", "revoked.pem", "stranger.pem", "held.pem"];
    let req = request(&s, &leaves, &["-no_nonce"]);
    let a = s.responder.respond(&req, &s.index, s.t);
    let (ok, out) = check(&s, &a.der, &leaves, false);
    assert!(ok, "{out}");
    assert!(out.contains("Response verify OK"), "{out}");
    for want in [
        "good.pem: good",
        "revoked.pem: revoked",
        "stranger.pem: unknown",
        "held.pem: revoked",
    ] {
        assert!(out.contains(want), "{want}:\n{out}");
    }
    let outcomes: Vec<CertOutcome> = a.certs.iter().map(|(_, o)| *o).collect();
    assert_eq!(
        outcomes,
        [
            CertOutcome::Good,
            CertOutcome::Revoked(Reason::KeyCompromise),
            CertOutcome::Unknown,
            CertOutcome::Revoked(Reason::CertificateHold)
        ]
    );
    assert_eq!(basic(&a.der).tbs_response_data.responses.len(), 4);
}

#[test]
fn get_path_round_trips_url_encoded_base64() {
    let s = setup();
    let req = request(&s, &["revoked.pem"], &["-no_nonce"]);
    let b64 = base64::engine::general_purpose::STANDARD.encode(&req);
    let encoded: String = b64
        .chars()
        .map(|c| match c {
            '/' => "%2F".to_string(),
            '+' => "%2B".to_string(),
            '=' => "%3D".to_string(),
            c => c.to_string(),
        })
        .collect();
    assert_eq!(parse_get_path(&encoded).unwrap(), req);
    assert_eq!(parse_get_path(&format!("/{encoded}")).unwrap(), req);
    // Unencoded '/', lower-case escapes, missing padding, '+' turned into space.
    assert_eq!(parse_get_path(&b64).unwrap(), req);
    let lower = encoded
        .replace("%2F", "%2f")
        .replace("%2B", "%2b")
        .replace("%3D", "%3d");
    assert_eq!(parse_get_path(&lower).unwrap(), req);
    assert_eq!(parse_get_path(b64.trim_end_matches('=')).unwrap(), req);
    assert_eq!(parse_get_path(&b64.replace('+', " ")).unwrap(), req);
    assert_eq!(
        parse_get_path(&b64.replace('+', "-").replace('/', "_")).unwrap(),
        req
    );

    let a = s.responder.respond_get(&encoded, &s.index, s.t);
    let (ok, out) = check(&s, &a.der, &["revoked.pem"], false);
    assert!(ok && out.contains("revoked.pem: revoked"), "{out}");
}

#[test]
fn junk_is_malformed_and_foreign_issuer_unauthorized() {
    let s = setup();
    for junk in [
        &b"junk"[..],
        &[],
        &[0x30, 0x03, 0x02, 0x01, 0x01],
        &[0x30, 0x80, 0, 0],
    ] {
        let a = s.responder.respond(junk, &s.index, s.t);
        assert_eq!(a.status, ResponseStatus::MalformedRequest);
        assert_eq!(a.der, [0x30, 0x03, 0x0a, 0x01, 0x01]);
        assert!(a.detail.is_some());
    }
    let a = s.responder.respond_get("%%%not base64!", &s.index, s.t);
    assert_eq!(a.status, ResponseStatus::MalformedRequest);
    std::fs::write(s.dir().join("junk.der"), &a.der).unwrap();
    let (_, out) = openssl(
        s.dir(),
        &["ocsp", "-respin", "junk.der", "-resp_text", "-noverify"],
    );
    assert!(out.contains("malformedrequest"), "{out}");

    // A leaf of another CA: nothing this responder serves.
    let dir = s.dir();
    self_signed(dir, "other", "/CN=Other CA");
    leaf(dir, "other", "foreign", "0A02");
    let mut args = vec!["ocsp", "-issuer", "other.pem", "-cert", "foreign.pem"];
    args.extend_from_slice(&["-no_nonce", "-reqout", "req.der"]);
    must(dir, &args);
    let req = std::fs::read(dir.join("req.der")).unwrap();
    let a = s.responder.respond(&req, &s.index, s.t);
    assert_eq!(a.status, ResponseStatus::Unauthorized);
    assert_eq!(a.der, [0x30, 0x03, 0x0a, 0x01, 0x06]);
    assert_eq!(
        a.certs,
        [(Serial::from_hex("0A02").ok(), CertOutcome::ForeignIssuer)]
    );
    std::fs::write(dir.join("unauth.der"), &a.der).unwrap();
    let (_, out) = openssl(
        dir,
        &["ocsp", "-respin", "unauth.der", "-resp_text", "-noverify"],
    );
    assert!(out.contains("unauthorized"), "{out}");

    // Mixed: ours answered, the foreign one unknown.
    let mut args = vec!["ocsp", "-issuer", "ca.pem", "-cert", "good.pem"];
    args.extend_from_slice(&["-issuer", "other.pem", "-cert", "foreign.pem"]);
    args.extend_from_slice(&["-no_nonce", "-reqout", "req.der"]);
    must(dir, &args);
    let req = std::fs::read(dir.join("req.der")).unwrap();
    let a = s.responder.respond(&req, &s.index, s.t);
    assert_eq!(a.status, ResponseStatus::Successful);
    assert_eq!(a.certs[0].1, CertOutcome::Good);
    assert_eq!(a.certs[1].1, CertOutcome::ForeignIssuer);
    let b = basic(&a.der);
    assert_eq!(
        b.tbs_response_data.responses[1].cert_status,
        x509_ocsp::CertStatus::unknown()
    );
}

/// A request with a nonce of `len` octets and a signature, built with x509-ocsp
/// from an openssl request's CertID.
fn request_with_nonce(s: &Setup, len: usize, signed: bool) -> Vec<u8> {
    use der::Encode;
    use der::asn1::{BitString, OctetString};
    use x509_cert::ext::Extension;
    let base = request(s, &["good.pem"], &["-no_nonce"]);
    let mut req = x509_ocsp::OcspRequest::from_der(&base).unwrap();
    let nonce = OctetString::new(vec![0x5a; len]).unwrap().to_der().unwrap();
    req.tbs_request.request_extensions = Some(vec![Extension {
        extn_id: const_oid::db::rfc6960::ID_PKIX_OCSP_NONCE,
        critical: false,
        extn_value: OctetString::new(nonce).unwrap(),
    }]);
    if signed {
        req.optional_signature = Some(x509_ocsp::Signature {
            signature_algorithm: ca::signer::SignatureAlgorithm::RsaSha256.algorithm_identifier(),
            signature: BitString::from_bytes(&[1, 2, 3]).unwrap(),
            certs: None,
        });
    }
    req.to_der().unwrap()
}

#[test]
fn nonce_limits_and_signed_requests() {
    let s = setup();
    let a = s
        .responder
        .respond(&request_with_nonce(&s, 33, false), &s.index, s.t);
    assert_eq!(a.status, ResponseStatus::MalformedRequest);
    assert!(a.detail.unwrap().contains("33"));
    let a = s
        .responder
        .respond(&request_with_nonce(&s, 0, false), &s.index, s.t);
    assert_eq!(a.status, ResponseStatus::MalformedRequest);
    let req = request_with_nonce(&s, 32, true);
    let a = s.responder.respond(&req, &s.index, s.t);
    assert_eq!(a.status, ResponseStatus::Successful);
    let b = basic(&a.der);
    let echoed = b.nonce().unwrap();
    assert_eq!(echoed.0.as_bytes(), [0x5a; 32]);
    std::fs::write(s.dir().join("req.der"), &req).unwrap();
    let (ok, out) = check(&s, &a.der, &["good.pem"], true);
    assert!(ok && out.contains("Response verify OK"), "{out}");
    assert!(out.contains("Cert Status: good"), "{out}");
}

#[test]
fn response_fields_decode_with_x509_ocsp() {
    let s = setup();
    let req = request(&s, &["good.pem"], &["-no_nonce"]);
    let a = s.responder.respond(&req, &s.index, s.t);
    let b = basic(&a.der);
    let rd = &b.tbs_response_data;
    assert!(matches!(rd.responder_id, x509_ocsp::ResponderId::ByName(_)));
    assert_eq!(rd.produced_at.0.to_system_time(), s.t);
    let single = &rd.responses[0];
    assert_eq!(single.this_update.0.to_system_time(), s.t);
    assert_eq!(single.next_update.unwrap().0.to_system_time(), s.t + HOUR);
    assert_eq!(a.cache.this_update, Some(s.t));
    assert_eq!(a.cache.next_update, Some(s.t + HOUR));
    assert_eq!(b.certs.as_ref().map(Vec::len), Some(1));
    assert_eq!(
        b.signature_algorithm,
        ca::signer::SignatureAlgorithm::RsaSha256.algorithm_identifier()
    );
    // The CertID is echoed exactly.
    let req_parsed = x509_ocsp::OcspRequest::from_der(&req).unwrap();
    assert_eq!(
        single.cert_id,
        req_parsed.tbs_request.request_list[0].req_cert
    );
}

#[test]
fn responder_refuses_certificate_without_ocsp_signing() {
    let s = setup();
    let dir = s.dir();
    let key = Arc::new(SoftwareKey::generate(KeySpec::Rsa { bits: 2048 }).unwrap());
    write_key(dir, "plain", &key);
    must(
        dir,
        &[
            "req",
            "-new",
            "-key",
            "plain.key",
            "-subj",
            "/CN=plain",
            "-out",
            "plain.csr",
        ],
    );
    sign_csr(dir, "ca", "plain", "7E02", "extendedKeyUsage=clientAuth\n");
    let der = der_of(dir, "plain.pem");
    let err = OcspResponder::new(&s.ca_der, &der, key.clone(), OcspConfig::default()).unwrap_err();
    assert!(err.to_string().contains("OCSPSigning"), "{err}");
    let other = Arc::new(SoftwareKey::generate(KeySpec::Rsa { bits: 2048 }).unwrap());
    let err = OcspResponder::new(&s.ca_der, &der, other, OcspConfig::default()).unwrap_err();
    assert!(err.to_string().contains("key"), "{err}");
    // The CA may answer itself.
    OcspResponder::new(
        &s.ca_der,
        &s.ca_der,
        s.ca_key.clone(),
        OcspConfig::default(),
    )
    .unwrap();
}
