//! OCSP core benchmark: signed responses per second from
//! [`ca::ocsp::OcspResponder::respond`] with an RSA-2048 delegated responder key,
//! on one thread and on two, plus the cost of everything except the signature.
//!
//! ```text
//! cargo run --release -p ca --example bench_ocsp [-- SECONDS]
//! ```
//!
//! Requests come from `openssl ocsp -reqout` (SHA-1 CertIDs, with and without
//! nonce, good and revoked serials); the index holds 100,000 issued certificates,
//! 10,000 of them revoked.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use ca::ocsp::{OcspConfig, OcspResponder, ResponseStatus};
use ca::revocation::{MemoryIndex, Reason, RevokedEntry};
use ca::serial::Serial;
use ca::signer::software::SoftwareKey;
use ca::signer::{KeySpec, SignatureAlgorithm, Signer};
use spki::SubjectPublicKeyInfoOwned;

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut s = format!("-----BEGIN {label}-----\n");
    for c in b64.as_bytes().chunks(64) {
        s.push_str(std::str::from_utf8(c).unwrap());
        s.push('\n');
    }
    s.push_str(&format!("-----END {label}-----\n"));
    s
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A signer with the responder's public key that returns a fixed signature:
/// isolates the cost of everything but the RSA operation.
#[derive(Debug)]
struct NoSign(SubjectPublicKeyInfoOwned);

impl Signer for NoSign {
    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::RsaSha256
    }
    fn public_key(&self) -> &SubjectPublicKeyInfoOwned {
        &self.0
    }
    fn sign(&self, _message: &[u8]) -> ca::Result<Vec<u8>> {
        Ok(vec![0x42; 256])
    }
}

fn rate(threads: usize, secs: f64, f: &(dyn Fn(usize) + Sync)) -> f64 {
    let deadline = Duration::from_secs_f64(secs);
    let start = Instant::now();
    let total: u64 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut n = 0u64;
                    while start.elapsed() < deadline {
                        for _ in 0..16 {
                            f(n as usize);
                            n += 1;
                        }
                    }
                    n
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    total as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let secs: f64 = std::env::args()
        .nth(1)
        .map(|s| s.parse().unwrap())
        .unwrap_or(3.0);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ca_key = SoftwareKey::generate(KeySpec::Rsa { bits: 2048 }).unwrap();
    std::fs::write(
        dir.join("ca.key"),
        pem("PRIVATE KEY", &ca_key.to_pkcs8().unwrap()),
    )
    .unwrap();
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "ca.key",
            "-subj",
            "/C=TW/O=chop bench/CN=Bench CA",
            "-days",
            "3650",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-addext",
            "subjectKeyIdentifier=hash",
            "-out",
            "ca.pem",
        ],
    );
    let resp_key = Arc::new(SoftwareKey::generate(KeySpec::Rsa { bits: 2048 }).unwrap());
    std::fs::write(
        dir.join("resp.key"),
        pem("PRIVATE KEY", &resp_key.to_pkcs8().unwrap()),
    )
    .unwrap();
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-key",
            "resp.key",
            "-subj",
            "/C=TW/O=chop bench/CN=OCSP Responder",
            "-out",
            "resp.csr",
        ],
    );
    std::fs::write(
        dir.join("resp.ext"),
        "extendedKeyUsage=OCSPSigning\n1.3.6.1.5.5.7.48.1.5=ASN1:NULL\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "resp.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-days",
            "30",
            "-set_serial",
            "0x7E01",
            "-extfile",
            "resp.ext",
            "-out",
            "resp.pem",
        ],
    );
    for (name, src) in [("ca.der", "ca.pem"), ("resp.der", "resp.pem")] {
        openssl(dir, &["x509", "-in", src, "-outform", "DER", "-out", name]);
    }
    let ca_der = std::fs::read(dir.join("ca.der")).unwrap();
    let resp_der = std::fs::read(dir.join("resp.der")).unwrap();

    let now = SystemTime::now();
    let year = Duration::from_secs(365 * 86_400);
    let mut index = MemoryIndex::new();
    for i in 1..=100_000u32 {
        let serial = Serial::from_be_bytes(&(u64::from(i) << 20).to_be_bytes()).unwrap();
        if i % 10 == 0 {
            index
                .revoke(&RevokedEntry {
                    serial,
                    revoked_at: now - Duration::from_secs(u64::from(i)),
                    reason: Reason::KeyCompromise,
                    invalidity_date: None,
                    not_after: now + year,
                    partition: None,
                })
                .unwrap();
        } else {
            index.issue(&serial, now + year, None).unwrap();
        }
    }
    let mut requests = Vec::new();
    for (i, serial) in [7u64, 10, 12345, 20].iter().enumerate() {
        let hex = format!("0x{:X}", serial << 20);
        let nonce = if i % 2 == 0 { "-no_nonce" } else { "-nonce" };
        let out = format!("req{i}.der");
        openssl(
            dir,
            &[
                "ocsp", "-issuer", "ca.pem", "-serial", &hex, nonce, "-reqout", &out,
            ],
        );
        requests.push(std::fs::read(dir.join(out)).unwrap());
    }

    let responder =
        OcspResponder::new(&ca_der, &resp_der, resp_key.clone(), OcspConfig::default()).unwrap();
    let unsigned = OcspResponder::new(
        &ca_der,
        &resp_der,
        Arc::new(NoSign(resp_key.public_key().clone())),
        OcspConfig::default(),
    )
    .unwrap();
    for r in &requests {
        let a = responder.respond(r, &index, now);
        assert_eq!(a.status, ResponseStatus::Successful);
    }
    let size = responder.respond(&requests[0], &index, now).der.len();

    let tbs = vec![0x30u8; 420];
    let sign1 = rate(1, secs, &|_| {
        resp_key.sign(&tbs).unwrap();
    });
    let sign2 = rate(2, secs, &|_| {
        resp_key.sign(&tbs).unwrap();
    });
    let respond = |r: &OcspResponder, threads: usize| {
        rate(threads, secs, &|i: usize| {
            let a = r.respond(&requests[i % requests.len()], &index, SystemTime::now());
            assert_eq!(a.status, ResponseStatus::Successful);
        })
    };
    let resp1 = respond(&responder, 1);
    let resp2 = respond(&responder, 2);
    let core1 = respond(&unsigned, 1);
    let core2 = respond(&unsigned, 2);

    println!("OCSP core, RSA-2048 responder key, {size}-octet responses, {secs} s per figure");
    println!("{:<46} {:>12}", "measurement", "per second");
    println!("{:<46} {:>12.0}", "RSA-2048 sign only, 1 thread", sign1);
    println!("{:<46} {:>12.0}", "RSA-2048 sign only, 2 threads", sign2);
    println!("{:<46} {:>12.0}", "respond() signed, 1 thread", resp1);
    println!("{:<46} {:>12.0}", "respond() signed, 2 threads", resp2);
    println!(
        "{:<46} {:>12.0}",
        "respond() without the RSA operation, 1 thread", core1
    );
    println!(
        "{:<46} {:>12.0}",
        "respond() without the RSA operation, 2 threads", core2
    );
    println!(
        "non-signing work per response: {:.1} µs ({:.1}% of a signed response)",
        1e6 / core1,
        100.0 * resp1 / core1
    );
}
