//! CRLs checked by an independent verifier: the `openssl` CLI (`crl`, `verify
//! -crl_check`), plus chop's own parser.
//!
//! Certificates are made with `openssl req`/`openssl x509 -req` for now: the
//! in-house issuance code is written in parallel.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::{der_of, must, openssl, pem, self_signed, write_key};

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ca::crl::{CrlConfig, CrlIssuer, CrlRequest, CrlScope, parse_crl};
use ca::revocation::{MemoryIndex, Reason, RevokedEntry, StatusSource};
use ca::serial::Serial;
use ca::signer::software::SoftwareKey;
use ca::signer::{KeySpec, Signer};
use ca::{Error, revocation};

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

/// A CA whose key is a chop `SoftwareKey` and whose certificate openssl made.
struct TestCa {
    key: Arc<SoftwareKey>,
    name: String,
    cert_der: Vec<u8>,
}

impl TestCa {
    fn key_file(&self, dir: &Path) -> PathBuf {
        dir.join(format!("{}.key", self.name))
    }
    fn cert_file(&self, dir: &Path) -> PathBuf {
        dir.join(format!("{}.pem", self.name))
    }
}

fn root_ca(dir: &Path, name: &str, subject: &str) -> TestCa {
    let key = self_signed(dir, name, subject);
    let cert_der = der_of(dir, &format!("{name}.pem"));
    TestCa {
        key,
        name: name.into(),
        cert_der,
    }
}

/// A certificate signed by `issuer` with `serial_hex`; `ext` is an extfile body.
fn sign_cert(dir: &Path, issuer: &TestCa, name: &str, subject: &str, serial_hex: &str, ext: &str) {
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
            subject,
            "-out",
            &format!("{name}.csr"),
        ],
    );
    sign_csr(dir, issuer, name, serial_hex, ext);
}

fn sign_csr(dir: &Path, issuer: &TestCa, name: &str, serial_hex: &str, ext: &str) {
    std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
    must(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            issuer.cert_file(dir).to_str().unwrap(),
            "-CAkey",
            issuer.key_file(dir).to_str().unwrap(),
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

fn now() -> SystemTime {
    // Whole seconds, so comparisons with parsed times are exact.
    UNIX_EPOCH
        + Duration::from_secs(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs(),
        )
}

fn entry(hex: &str, at: SystemTime, reason: Reason) -> RevokedEntry {
    RevokedEntry {
        serial: Serial::from_hex(hex).unwrap(),
        revoked_at: at,
        reason,
        invalidity_date: None,
        not_after: now() + 365 * DAY,
        partition: None,
    }
}

fn full(number: u64, this: SystemTime) -> CrlRequest {
    CrlRequest {
        number,
        this_update: this,
        next_update: this + 24 * HOUR,
        scope: CrlScope::Full,
    }
}

fn issuer(ca: &TestCa) -> CrlIssuer {
    CrlIssuer::new(&ca.cert_der, ca.key.clone(), CrlConfig::default()).unwrap()
}

fn write_crl(dir: &Path, name: &str, der: &[u8]) {
    std::fs::write(dir.join(format!("{name}.der")), der).unwrap();
    std::fs::write(dir.join(format!("{name}.pem")), pem("X509 CRL", der)).unwrap();
}

const LEAF_EXT: &str = "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n";

#[test]
fn crl_verifies_and_shows_number_aki_reasons_and_invalidity_date() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ca = root_ca(dir, "ca", "/C=TW/O=chop test/CN=Test Root CA");
    let t = now();
    let mut idx = MemoryIndex::new();
    let mut kc = entry("1001", t - HOUR, Reason::KeyCompromise);
    kc.invalidity_date = Some(t - 3 * DAY);
    idx.revoke(&kc).unwrap();
    idx.revoke(&entry("1002", t - 2 * HOUR, Reason::CertificateHold))
        .unwrap();
    idx.revoke(&entry("1003", t - 3 * HOUR, Reason::Unspecified))
        .unwrap();
    idx.issue(&Serial::from_hex("1004").unwrap(), t + DAY, None)
        .unwrap();

    let crl = issuer(&ca).issue(&idx, &full(42, t)).unwrap();
    assert_eq!(crl.entries, 3);
    write_crl(dir, "crl", &crl.der);

    let out = must(
        dir,
        &[
            "crl", "-inform", "DER", "-in", "crl.der", "-CAfile", "ca.pem", "-noout",
        ],
    );
    assert!(out.contains("verify OK"), "{out}");

    let text = must(
        dir,
        &["crl", "-inform", "DER", "-in", "crl.der", "-noout", "-text"],
    );
    assert!(text.contains("Version 2"), "{text}");
    assert!(
        text.contains("X509v3 CRL Number: \n                42"),
        "{text}"
    );
    let ski = must(
        dir,
        &[
            "x509",
            "-in",
            "ca.pem",
            "-noout",
            "-ext",
            "subjectKeyIdentifier",
        ],
    );
    let ski = ski.lines().nth(1).unwrap().trim().to_string();
    assert!(text.contains("X509v3 Authority Key Identifier"), "{text}");
    assert!(
        text.contains(&ski),
        "AKI must be the CA's SKI {ski}:\n{text}"
    );
    assert!(text.contains("Serial Number: 1001"), "{text}");
    assert!(text.contains("Key Compromise"), "{text}");
    assert!(text.contains("Certificate Hold"), "{text}");
    assert!(text.contains("Invalidity Date"), "{text}");
    assert!(!text.contains("Serial Number: 1004"), "{text}");
    // Unspecified: listed, but without a reasonCode (RFC 5280 §5.3.1).
    let entry_1003 = text.split("Serial Number: 1003").nth(1).unwrap();
    let entry_1003 = entry_1003.split("Serial Number:").next().unwrap();
    assert!(!entry_1003.contains("Reason Code"), "{entry_1003}");
    assert!(!text.contains("Issuing Distribution Point"), "{text}");

    // chop's parser agrees, and the signature verifies.
    let parsed = parse_crl(&crl.der).unwrap();
    parsed.verify_signature(ca.key.public_key()).unwrap();
    assert_eq!(parsed.number, Some(42));
    assert_eq!(parsed.version, Some(1));
    assert_eq!(parsed.this_update, t);
    assert_eq!(parsed.next_update, Some(t + 24 * HOUR));
    let e = &parsed.entries[0];
    assert_eq!(e.serial.to_hex(), "1001");
    assert_eq!(e.reason, Some(Reason::KeyCompromise));
    assert_eq!(e.revoked_at, t - HOUR);
    assert_eq!(e.invalidity_date, Some(t - 3 * DAY));
    assert_eq!(parsed.entries[2].reason, None);
}

#[test]
fn openssl_verify_crl_check_revoked_held_and_good() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ca = root_ca(dir, "ca", "/C=TW/O=chop test/CN=Test Root CA");
    sign_cert(dir, &ca, "revoked", "/CN=revoked", "0A01", LEAF_EXT);
    sign_cert(dir, &ca, "held", "/CN=held", "0A02", LEAF_EXT);
    sign_cert(dir, &ca, "good", "/CN=good", "0A03", LEAF_EXT);
    let t = now();
    let mut idx = MemoryIndex::new();
    idx.revoke(&entry("0A01", t - HOUR, Reason::KeyCompromise))
        .unwrap();
    idx.revoke(&entry("0A02", t - HOUR, Reason::CertificateHold))
        .unwrap();
    idx.issue(&Serial::from_hex("0A03").unwrap(), t + DAY, None)
        .unwrap();
    let crl = issuer(&ca).issue(&idx, &full(1, t)).unwrap();
    write_crl(dir, "crl", &crl.der);

    let check = |leaf: &str| {
        openssl(
            dir,
            &[
                "verify",
                "-crl_check",
                "-CRLfile",
                "crl.pem",
                "-CAfile",
                "ca.pem",
                leaf,
            ],
        )
    };
    let (ok, out) = check("good.pem");
    assert!(ok && out.contains("good.pem: OK"), "{out}");
    let (ok, out) = check("revoked.pem");
    assert!(!ok && out.contains("certificate revoked"), "{out}");
    let (ok, out) = check("held.pem");
    assert!(!ok && out.contains("certificate revoked"), "{out}");

    // After resumption (CPS §4.9.17) the next CRL no longer lists the held one.
    idx.resume(&Serial::from_hex("0A02").unwrap()).unwrap();
    let crl = issuer(&ca).issue(&idx, &full(2, t)).unwrap();
    write_crl(dir, "crl", &crl.der);
    let (ok, out) = check("held.pem");
    assert!(ok, "{out}");
}

#[test]
fn subordinate_ca_crl_verifies_in_a_chain_with_crl_check_all() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let root = root_ca(dir, "root", "/C=TW/O=chop test/CN=Test Root CA");
    // The subordinate's key is chop's; openssl computes its SKI when signing.
    let sub_key = Arc::new(SoftwareKey::generate(KeySpec::Rsa { bits: 2048 }).unwrap());
    write_key(dir, "sub", &sub_key);
    must(
        dir,
        &[
            "req",
            "-new",
            "-key",
            "sub.key",
            "-subj",
            "/C=TW/O=chop test/CN=Test Sub CA",
            "-out",
            "sub.csr",
        ],
    );
    sign_csr(
        dir,
        &root,
        "sub",
        "5B",
        "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n\
         subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n",
    );
    let sub = TestCa {
        key: sub_key,
        name: "sub".into(),
        cert_der: der_of(dir, "sub.pem"),
    };
    sign_cert(dir, &sub, "leaf_bad", "/CN=leaf bad", "0C01", LEAF_EXT);
    sign_cert(dir, &sub, "leaf_ok", "/CN=leaf ok", "0C02", LEAF_EXT);

    let t = now();
    let mut sub_idx = MemoryIndex::new();
    sub_idx
        .revoke(&entry("0C01", t - HOUR, Reason::Superseded))
        .unwrap();
    let sub_crl = issuer(&sub).issue(&sub_idx, &full(7, t)).unwrap();
    let root_crl = issuer(&root)
        .issue(&MemoryIndex::new(), &full(1, t))
        .unwrap();
    std::fs::write(
        dir.join("crls.pem"),
        pem("X509 CRL", &sub_crl.der) + &pem("X509 CRL", &root_crl.der),
    )
    .unwrap();

    let parsed = parse_crl(&sub_crl.der).unwrap();
    let ski = must(
        dir,
        &[
            "x509",
            "-in",
            "sub.pem",
            "-noout",
            "-ext",
            "subjectKeyIdentifier",
        ],
    );
    let ski_hex: String = ski.lines().nth(1).unwrap().trim().replace(':', "");
    assert_eq!(hex::encode_upper(parsed.authority_key_id.unwrap()), ski_hex);
    // An empty CRL has no revokedCertificates at all (RFC 5280 §5.1.2.6).
    assert!(parse_crl(&root_crl.der).unwrap().entries.is_empty());

    let check = |leaf: &str| {
        openssl(
            dir,
            &[
                "verify",
                "-crl_check_all",
                "-CRLfile",
                "crls.pem",
                "-CAfile",
                "root.pem",
                "-untrusted",
                "sub.pem",
                leaf,
            ],
        )
    };
    let (ok, out) = check("leaf_ok.pem");
    assert!(ok && out.contains("OK"), "{out}");
    let (ok, out) = check("leaf_bad.pem");
    assert!(!ok && out.contains("certificate revoked"), "{out}");
}

#[test]
fn entries_are_sorted_and_deduplicated() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ca = root_ca(dir, "ca", "/CN=Sort CA");
    let t = now();
    let hexes = ["FF", "01", "0100", "7F", "80", "01", "FF00", "02"];
    let mut entries: Vec<RevokedEntry> = hexes
        .iter()
        .map(|h| entry(h, t - HOUR, Reason::CertificateHold))
        .collect();
    // The same serial revoked after its hold: the revocation wins.
    entries.push(entry(
        "FF",
        t - 30 * 60 * Duration::from_secs(1),
        Reason::KeyCompromise,
    ));
    let idx = MemoryIndex::from_entries(entries).unwrap();
    let crl = issuer(&ca).issue(&idx, &full(3, t)).unwrap();
    let parsed = parse_crl(&crl.der).unwrap();
    let got: Vec<String> = parsed.entries.iter().map(|e| e.serial.to_hex()).collect();
    assert_eq!(got, ["01", "02", "7F", "80", "FF", "0100", "FF00"]);
    assert!(parsed.is_sorted_unique());
    let ff = parsed
        .entries
        .iter()
        .find(|e| e.serial.to_hex() == "FF")
        .unwrap();
    assert_eq!(ff.reason, Some(Reason::KeyCompromise));
    write_crl(dir, "crl", &crl.der);
    let out = must(
        dir,
        &["crl", "-in", "crl.pem", "-CAfile", "ca.pem", "-noout"],
    );
    assert!(out.contains("verify OK"), "{out}");
}

#[test]
fn entries_drop_only_after_not_after_plus_retention() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = root_ca(tmp.path(), "ca", "/CN=Expiry CA");
    let t = now();
    let mut idx = MemoryIndex::new();
    let mut live = entry("01", t - 10 * DAY, Reason::KeyCompromise);
    live.not_after = t + DAY;
    let mut just_expired = entry("02", t - 10 * DAY, Reason::KeyCompromise);
    just_expired.not_after = t - HOUR;
    let mut long_expired = entry("03", t - 10 * DAY, Reason::KeyCompromise);
    long_expired.not_after = t - 2 * DAY;
    for e in [&live, &just_expired, &long_expired] {
        idx.revoke(e).unwrap();
    }
    let serials = |crl: &ca::crl::Crl| -> Vec<String> {
        parse_crl(&crl.der)
            .unwrap()
            .entries
            .iter()
            .map(|e| e.serial.to_hex())
            .collect()
    };
    // Default: kept for 24 h after notAfter (RFC 5280 §3.3 with daily CRLs).
    let crl = issuer(&ca).issue(&idx, &full(1, t)).unwrap();
    assert_eq!(serials(&crl), ["01", "02"]);
    // Without retention an entry leaves as soon as notAfter has passed.
    let strict = CrlIssuer::new(
        &ca.cert_der,
        ca.key.clone(),
        CrlConfig {
            expired_retention: Duration::ZERO,
            ..CrlConfig::default()
        },
    )
    .unwrap();
    assert_eq!(serials(&strict.issue(&idx, &full(2, t)).unwrap()), ["01"]);
    // A CRL issued before notAfter lists it.
    assert_eq!(
        serials(&strict.issue(&idx, &full(3, t - 3 * DAY)).unwrap()),
        ["01", "02", "03"]
    );
    // OCSP keeps saying revoked after expiry (RFC 6960 §4.4.4), from the index.
    assert!(matches!(
        idx.status(&long_expired.serial),
        revocation::CertStatus::Revoked { .. }
    ));
}

#[test]
fn validity_over_36_hours_is_refused_unless_configured() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = root_ca(tmp.path(), "ca", "/CN=Validity CA");
    let t = now();
    let req = CrlRequest {
        next_update: t + 37 * HOUR,
        ..full(1, t)
    };
    let err = issuer(&ca).issue(&MemoryIndex::new(), &req).unwrap_err();
    assert!(matches!(err, Error::CrlPolicy(_)), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("37 h") && msg.contains("36 h"), "{msg}");
    assert_eq!(err.reason(), "CrlPolicy");

    let exactly = CrlRequest {
        next_update: t + 36 * HOUR,
        ..full(1, t)
    };
    issuer(&ca).issue(&MemoryIndex::new(), &exactly).unwrap();
    let backwards = CrlRequest {
        next_update: t,
        ..full(1, t)
    };
    assert!(issuer(&ca).issue(&MemoryIndex::new(), &backwards).is_err());

    let relaxed = CrlIssuer::new(
        &ca.cert_der,
        ca.key.clone(),
        CrlConfig {
            max_validity: 48 * HOUR,
            ..CrlConfig::default()
        },
    )
    .unwrap();
    let crl = relaxed.issue(&MemoryIndex::new(), &req).unwrap();
    assert_eq!(crl.next_update, t + 37 * HOUR);
}

#[test]
fn partition_crl_has_critical_idp_and_only_its_entries() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ca = root_ca(dir, "ca", "/C=TW/O=chop test/CN=Partition CA");
    let url1 = "http://crl.example.test/ca/1.crl";
    let cdp = |url: &str| format!("{LEAF_EXT}crlDistributionPoints=URI:{url}\n");
    sign_cert(dir, &ca, "p1_revoked", "/CN=p1 revoked", "0D01", &cdp(url1));
    sign_cert(dir, &ca, "p1_good", "/CN=p1 good", "0D02", &cdp(url1));
    let t = now();
    let mut idx = MemoryIndex::new();
    let mut a = entry("0D01", t - HOUR, Reason::KeyCompromise);
    a.partition = Some(1);
    let mut b = entry("0E01", t - HOUR, Reason::AffiliationChanged);
    b.partition = Some(2);
    let c = entry("0F01", t - HOUR, Reason::Superseded);
    for e in [&a, &b, &c] {
        idx.revoke(e).unwrap();
    }
    idx.issue(&Serial::from_hex("0D02").unwrap(), t + DAY, Some(1))
        .unwrap();
    let req = CrlRequest {
        scope: CrlScope::Partition {
            index: 1,
            distribution_point_url: url1.into(),
        },
        ..full(9, t)
    };
    let crl = issuer(&ca).issue(&idx, &req).unwrap();
    assert_eq!(crl.entries, 1);
    write_crl(dir, "crl", &crl.der);
    let text = must(dir, &["crl", "-in", "crl.pem", "-noout", "-text"]);
    assert!(
        text.contains("X509v3 Issuing Distribution Point: critical"),
        "{text}"
    );
    assert!(text.contains(&format!("URI:{url1}")), "{text}");
    assert!(text.contains("Serial Number: 0D01"), "{text}");
    assert!(!text.contains("0E01") && !text.contains("0F01"), "{text}");
    let parsed = parse_crl(&crl.der).unwrap();
    assert_eq!(
        parsed.issuing_distribution_point,
        Some((url1.to_string(), true))
    );

    // openssl matches the IDP against the certificate's CRL distribution point.
    let check = |leaf: &str| {
        openssl(
            dir,
            &[
                "verify",
                "-crl_check",
                "-CRLfile",
                "crl.pem",
                "-CAfile",
                "ca.pem",
                leaf,
            ],
        )
    };
    let (ok, out) = check("p1_revoked.pem");
    assert!(!ok && out.contains("certificate revoked"), "{out}");
    let (ok, out) = check("p1_good.pem");
    assert!(ok, "{out}");

    // The full CRL has every entry and no IDP.
    let full_crl = issuer(&ca).issue(&idx, &full(10, t)).unwrap();
    let parsed = parse_crl(&full_crl.der).unwrap();
    assert_eq!(parsed.entries.len(), 3);
    assert_eq!(parsed.issuing_distribution_point, None);
}

#[test]
fn hundred_thousand_entries_build_and_parse() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ca = root_ca(dir, "ca", "/CN=Big CA");
    let t = now();
    let n = 100_000u64;
    let entries = (0..n).map(|i| {
        // Distinct serials spread over 9 octets, in scrambled order.
        let v = (u128::from(i.wrapping_mul(0x9E37_79B9_7F4A_7C15)) << 8) | 0x5A;
        RevokedEntry {
            serial: Serial::from_be_bytes(&v.to_be_bytes()).unwrap(),
            ..entry("01", t - HOUR, Reason::ALL[(i % 7) as usize])
        }
    });
    let idx = MemoryIndex::from_entries(entries).unwrap();
    assert_eq!(idx.revoked_len(), n as usize);
    let crl = issuer(&ca).issue(&idx, &full(100, t)).unwrap();
    assert_eq!(crl.entries, n as usize);
    let parsed = parse_crl(&crl.der).unwrap();
    assert_eq!(parsed.entries.len(), n as usize);
    assert!(parsed.is_sorted_unique());
    parsed.verify_signature(ca.key.public_key()).unwrap();
    write_crl(dir, "crl", &crl.der);
    let out = must(
        dir,
        &[
            "crl", "-inform", "DER", "-in", "crl.der", "-CAfile", "ca.pem", "-noout",
        ],
    );
    assert!(out.contains("verify OK"), "{out}");
}

#[test]
fn issuer_refuses_mismatched_key_and_missing_ski() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ca = root_ca(dir, "ca", "/CN=Key CA");
    let other = Arc::new(SoftwareKey::generate(KeySpec::Rsa { bits: 2048 }).unwrap());
    let err = CrlIssuer::new(&ca.cert_der, other, CrlConfig::default()).unwrap_err();
    assert!(
        err.to_string().contains("not the CA certificate's key"),
        "{err}"
    );

    let key = Arc::new(SoftwareKey::generate(KeySpec::Rsa { bits: 2048 }).unwrap());
    write_key(dir, "noski", &key);
    must(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "noski.key",
            "-subj",
            "/CN=No SKI",
            "-days",
            "30",
            "-addext",
            "subjectKeyIdentifier=none",
            "-out",
            "noski.pem",
        ],
    );
    let der = der_of(dir, "noski.pem");
    let err = CrlIssuer::new(&der, key, CrlConfig::default()).unwrap_err();
    assert!(err.to_string().contains("subjectKeyIdentifier"), "{err}");
}
