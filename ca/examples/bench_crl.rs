//! CRL benchmark: chop's CRL issuer against `openssl ca -gencrl` over the same
//! revoked entries, for 10k, 100k and 1M entries.
//!
//! ```text
//! cargo run --release -p ca --example bench_crl [-- SIZE ...]
//! ```
//!
//! Each measurement runs in its own child process under `/usr/bin/time -f '%e %M'`
//! (wall seconds, peak RSS in KiB), so chop and openssl are timed and measured the
//! same way, each from process start (reading its inputs, building, signing,
//! writing the CRL). The chop child also reports its internal split (index build vs
//! CRL build + sign + verify). Targets at 1,000,000 entries (issue 2): at least 5×
//! faster than openssl and at most a third of its peak memory; aims < 1 s and
//! < 150 MB. Every chop CRL is then (untimed) parsed back, checked for count,
//! order and signature, and verified by `openssl crl -CAfile`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use base64::Engine;
use ca::crl::{CrlConfig, CrlIssuer, CrlRequest, CrlScope, parse_crl};
use ca::revocation::{MemoryIndex, Reason, RevokedEntry};
use ca::serial::Serial;
use ca::signer::software::SoftwareKey;
use ca::signer::{KeySpec, SignatureAlgorithm, Signer};

const TIME: &str = "/usr/bin/time";
/// Fixed "now" so both tools see identical entries: 2026-11-01T00:00:00Z.
const NOW: u64 = 1_793_491_200;
const REASONS: [(Reason, &str); 4] = [
    (Reason::KeyCompromise, "keyCompromise"),
    (Reason::Superseded, "superseded"),
    (Reason::CessationOfOperation, "cessationOfOperation"),
    (Reason::AffiliationChanged, "affiliationChanged"),
];

/// Entry `i`: a distinct 16-octet positive serial (like chop's random serials),
/// revoked within the last 30 days, valid for another year.
fn entry(i: u64) -> (u128, u64, usize) {
    let mixed = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5bd1_e995_1234_5678;
    let serial =
        ((u128::from(mixed) & 0x7fff_ffff_ffff_ffff | 0x0100_0000_0000_0000) << 64) | u128::from(i);
    let revoked = NOW - 1 - (i * 7919) % (30 * 86_400);
    (serial, revoked, (i % 4) as usize)
}

fn not_after() -> u64 {
    NOW + 365 * 86_400
}

fn utc(secs: u64) -> String {
    // YYMMDDHHMMSSZ via `time`.
    let t = time::OffsetDateTime::from_unix_timestamp(secs as i64).unwrap();
    format!(
        "{:02}{:02}{:02}{:02}{:02}{:02}Z",
        t.year() % 100,
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

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

/// The chop child: build the index from the generated entries, issue the CRL,
/// write it. Prints "index_secs crl_secs bytes".
fn child(dir: &Path, n: u64) {
    let key = SoftwareKey::from_pkcs8(
        &std::fs::read(dir.join("ca.pk8")).unwrap(),
        SignatureAlgorithm::RsaSha256,
    )
    .unwrap();
    let cert = std::fs::read(dir.join("ca.der")).unwrap();
    let issuer = CrlIssuer::new(&cert, Arc::new(key), CrlConfig::default()).unwrap();
    let start = Instant::now();
    let na = UNIX_EPOCH + Duration::from_secs(not_after());
    let entries = (0..n).map(|i| {
        let (serial, revoked, r) = entry(i);
        RevokedEntry {
            serial: Serial::from_be_bytes(&serial.to_be_bytes()).unwrap(),
            revoked_at: UNIX_EPOCH + Duration::from_secs(revoked),
            reason: REASONS[r].0,
            invalidity_date: None,
            not_after: na,
            partition: None,
        }
    });
    let index = MemoryIndex::from_entries(entries).unwrap();
    let t_index = start.elapsed();
    let this = UNIX_EPOCH + Duration::from_secs(NOW);
    let crl = issuer
        .issue(
            &index,
            &CrlRequest {
                number: 1,
                this_update: this,
                next_update: this + Duration::from_secs(36 * 3600),
                scope: CrlScope::Full,
            },
        )
        .unwrap();
    let t_crl = start.elapsed() - t_index;
    assert_eq!(crl.entries as u64, n);
    std::fs::write(dir.join("chop.crl"), &crl.der).unwrap();
    println!(
        "{:.3} {:.3} {}",
        t_index.as_secs_f64(),
        t_crl.as_secs_f64(),
        crl.der.len()
    );
}

/// Run `cmd` under /usr/bin/time; returns (wall seconds, peak RSS MiB, stdout).
fn measure(cmd: &mut Command) -> (f64, f64, String) {
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{cmd:?} failed:\n{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    let mut it = last.split_whitespace();
    let secs: f64 = it.next().and_then(|s| s.parse().ok()).unwrap_or(f64::NAN);
    let kib: f64 = it.next().and_then(|s| s.parse().ok()).unwrap_or(f64::NAN);
    (
        secs,
        kib / 1024.0,
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn write_openssl_inputs(dir: &Path, n: u64) {
    let mut w = BufWriter::new(std::fs::File::create(dir.join("index.txt")).unwrap());
    let na = utc(not_after());
    for i in 0..n {
        let (serial, revoked, r) = entry(i);
        writeln!(
            w,
            "R\t{na}\t{},{}\t{serial:032X}\tunknown\t/CN=x",
            utc(revoked),
            REASONS[r].1
        )
        .unwrap();
    }
    w.flush().unwrap();
    std::fs::write(dir.join("index.txt.attr"), "unique_subject = no\n").unwrap();
    std::fs::write(dir.join("crlnumber"), "01\n").unwrap();
    let d = dir.display();
    std::fs::write(
        dir.join("openssl.cnf"),
        format!(
            "[ca]\ndefault_ca = CA_default\n\n[CA_default]\ndir = {d}\n\
             database = $dir/index.txt\ncertificate = $dir/ca.pem\n\
             private_key = $dir/ca.key\ncrlnumber = $dir/crlnumber\n\
             default_md = sha256\ndefault_crl_hours = 36\ncrl_extensions = crl_ext\n\n\
             [crl_ext]\nauthorityKeyIdentifier = keyid:always\n"
        ),
    )
    .unwrap();
}

fn setup(dir: &Path) {
    let key = SoftwareKey::generate(KeySpec::Rsa { bits: 2048 }).unwrap();
    let pk8 = key.to_pkcs8().unwrap();
    std::fs::write(dir.join("ca.pk8"), &*pk8).unwrap();
    std::fs::write(dir.join("ca.key"), pem("PRIVATE KEY", &pk8)).unwrap();
    let ok = Command::new("openssl")
        .current_dir(dir)
        .args([
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
        ])
        .status()
        .unwrap()
        .success();
    assert!(ok, "openssl req failed");
    let ok = Command::new("openssl")
        .current_dir(dir)
        .args(["x509", "-in", "ca.pem", "-outform", "DER", "-out", "ca.der"])
        .status()
        .unwrap()
        .success();
    assert!(ok, "openssl x509 failed");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--child") {
        child(Path::new(&args[2]), args[3].parse().unwrap());
        return;
    }
    assert!(
        Path::new(TIME).exists(),
        "{TIME} is needed to measure peak memory (Debian package `time`)"
    );
    let sizes: Vec<u64> = if args.len() > 1 {
        args[1..].iter().map(|s| s.parse().unwrap()).collect()
    } else {
        vec![10_000, 100_000, 1_000_000]
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir: PathBuf = tmp.path().to_path_buf();
    setup(&dir);
    let exe = std::env::current_exe().unwrap();

    println!(
        "{:>9} | {:>8} {:>8} {:>8} {:>9} {:>7} | {:>10} {:>12} | {:>7} {:>7} | result",
        "entries",
        "chop s",
        "index s",
        "crl s",
        "chop MiB",
        "CRL MB",
        "openssl s",
        "openssl MiB",
        "speedup",
        "mem ×",
    );
    let mut all_pass = true;
    for n in sizes {
        let (c_secs, c_mib, c_out) = measure(
            Command::new(TIME)
                .args(["-f", "%e %M"])
                .arg(&exe)
                .arg("--child")
                .arg(&dir)
                .arg(n.to_string()),
        );
        let mut parts = c_out.split_whitespace();
        let idx_s: f64 = parts.next().unwrap().parse().unwrap();
        let crl_s: f64 = parts.next().unwrap().parse().unwrap();
        let bytes: f64 = parts.next().unwrap().parse().unwrap();

        // Not timed: read chop's CRL back and have openssl check it.
        let der = std::fs::read(dir.join("chop.crl")).unwrap();
        let parsed = parse_crl(&der).unwrap();
        assert_eq!(parsed.entries.len() as u64, n);
        assert!(parsed.is_sorted_unique());
        let ca_key = SoftwareKey::from_pkcs8(
            &std::fs::read(dir.join("ca.pk8")).unwrap(),
            SignatureAlgorithm::RsaSha256,
        )
        .unwrap();
        parsed.verify_signature(ca_key.public_key()).unwrap();
        let out = Command::new("openssl")
            .current_dir(&dir)
            .args([
                "crl", "-inform", "DER", "-in", "chop.crl", "-CAfile", "ca.pem", "-noout",
            ])
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        assert!(said.contains("verify OK"), "openssl crl: {said}");

        write_openssl_inputs(&dir, n);
        let (o_secs, o_mib, _) = measure(
            Command::new(TIME)
                .current_dir(&dir)
                .args(["-f", "%e %M", "openssl", "ca", "-gencrl", "-batch"])
                .args(["-config", "openssl.cnf", "-out", "openssl.crl"]),
        );
        let speedup = o_secs / c_secs.max(0.01);
        let mem = o_mib / c_mib;
        let pass = speedup >= 5.0 && mem >= 3.0;
        // The targets are stated for 1M entries; smaller sizes are informative.
        if n >= 1_000_000 {
            all_pass &= pass && c_secs < 1.0 && c_mib < 150.0;
        }
        println!(
            "{n:>9} | {c_secs:>8.2} {idx_s:>8.3} {crl_s:>8.3} {c_mib:>9.1} {:>7.1} | {o_secs:>10.2} {o_mib:>12.1} | {speedup:>6.1}× {mem:>6.1}× | {}",
            bytes / 1e6,
            match (n >= 1_000_000, pass) {
                (true, true) => "PASS",
                (true, false) => "FAIL",
                (false, true) => "(info: ratios met)",
                (false, false) => "(info: targets are for 1M)",
            }
        );
    }
    println!(
        "targets at 1M: ≥5× faster and ≤1/3 of openssl's peak RSS (aim < 1 s, < 150 MiB): {}",
        if all_pass { "PASS" } else { "FAIL" }
    );
}
