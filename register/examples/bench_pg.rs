//! The PostgreSQL register at scale (issue 12), side by side in one run:
//!
//! ```text
//! bash scripts/bench-register.sh [RECORDS] [REVOKED]      # defaults 1000000 100000
//! ```
//!
//! Two schemas of one database: `empty` and `loaded` (RECORDS certificate records
//! bulk-loaded with COPY, DER of a realistic 1,200 bytes, REVOKED of them revoked).
//! Then, alternating rounds between the two schemas (this machine is noisy):
//! - issuance: reserve + commit of fresh certificates, 32 at a time (the
//!   register's share of issuance; signing is measured by bench-ca.sh);
//! - CRL: every revoked entry of the CA read with the indexed query and turned
//!   into a signed DER CRL (ca::crl, RSA-2048 software key; the HSM's one
//!   signature is not the cost);
//! - revocation → LISTEN notification latency (p50, p99) for 200 revocations;
//! - disk per certificate (pg_total_relation_size of the three tables) and this
//!   process's peak RSS (the CRL build holds the CRL's entries; nothing else grows
//!   with the register).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ca::crl::{CrlConfig, CrlIssuer, CrlRequest, CrlScope};
use ca::revocation::{MemoryIndex, Reason};
use ca::serial::Serial;
use ca::signer::software::SoftwareKey;
use ca::signer::{KeySpec, SignatureAlgorithm};
use chop_register::api::{Change, NewCertificate, Register, Reservation};
use chop_register::postgres::{self, PgRegister};
use futures::StreamExt;
use tokio_postgres::NoTls;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;

const CA: &str = "bench/moica";
const DER_BYTES: usize = 1200;

fn with_schema(url: &str, schema: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options=-csearch_path%3D{schema}")
}

fn serial_bytes(i: u64, salt: u64) -> Vec<u8> {
    let mixed = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ salt;
    let mut b = vec![0x11];
    b.extend_from_slice(&mixed.to_be_bytes());
    b.extend_from_slice(&i.to_be_bytes());
    b
}

fn der(i: u64) -> Vec<u8> {
    let mut d = Vec::with_capacity(DER_BYTES);
    let mut x = i.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1;
    while d.len() < DER_BYTES {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        d.extend_from_slice(&x.to_le_bytes());
    }
    d.truncate(DER_BYTES);
    d
}

async fn raw(url: &str) -> tokio_postgres::Client {
    let (c, conn) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(conn);
    c
}

/// COPY `n` records (of which every `n / revoked`-th is revoked) into the schema.
async fn bulk_load(url: &str, n: u64, revoked: u64) {
    let c = raw(url).await;
    let now = SystemTime::now();
    let not_after = now + Duration::from_secs(365 * 86400);
    let every = n.checked_div(revoked).map_or(u64::MAX, |e| e.max(1));
    let batch = 200_000u64;
    let mut done = 0;
    while done < n {
        let end = (done + batch).min(n);
        for (table, types) in [
            (
                "COPY reservations (ca, serial, request) FROM STDIN BINARY",
                vec![Type::TEXT, Type::BYTEA, Type::TEXT],
            ),
            (
                "COPY certificates (ca, serial, request, subscriber, key_fingerprint, not_before, not_after, partition, der) FROM STDIN BINARY",
                vec![
                    Type::TEXT,
                    Type::BYTEA,
                    Type::TEXT,
                    Type::TEXT,
                    Type::BYTEA,
                    Type::TIMESTAMPTZ,
                    Type::TIMESTAMPTZ,
                    Type::INT4,
                    Type::BYTEA,
                ],
            ),
            (
                "COPY status (ca, serial, state, reason, revoked_at, not_after, partition) FROM STDIN BINARY",
                vec![
                    Type::TEXT,
                    Type::BYTEA,
                    Type::INT2,
                    Type::INT2,
                    Type::TIMESTAMPTZ,
                    Type::TIMESTAMPTZ,
                    Type::INT4,
                ],
            ),
        ] {
            let sink = c.copy_in(table).await.unwrap();
            let w = BinaryCopyInWriter::new(sink, &types);
            futures::pin_mut!(w);
            for i in done..end {
                let s = serial_bytes(i, 0x5bd1_e995);
                let req = format!("bench/req-{i}/uid");
                let part = (i % 16) as i32;
                if table.starts_with("COPY reservations") {
                    w.as_mut().write(&[&CA, &s, &req]).await.unwrap();
                } else if table.starts_with("COPY certificates") {
                    let fp = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &s);
                    w.as_mut()
                        .write(&[
                            &CA,
                            &s,
                            &req,
                            &format!("sub-{i}"),
                            &fp.as_ref(),
                            &now,
                            &not_after,
                            &part,
                            &der(i),
                        ])
                        .await
                        .unwrap();
                } else {
                    let is_revoked = i % every == 0;
                    let state: i16 = if is_revoked { 2 } else { 0 };
                    let reason: Option<i16> = is_revoked.then_some(1);
                    let at: Option<SystemTime> = is_revoked.then_some(now);
                    w.as_mut()
                        .write(&[&CA, &s, &state, &reason, &at, &not_after, &part])
                        .await
                        .unwrap();
                }
            }
            w.finish().await.unwrap();
        }
        done = end;
        eprint!("\r  loaded {done}/{n}");
    }
    eprintln!();
    for t in ["reservations", "certificates", "status"] {
        c.batch_execute(&format!("VACUUM ANALYZE {t}"))
            .await
            .unwrap();
    }
    // The load's dirty pages are flushed before measuring: the steady state of a
    // loaded register, not a bulk load's pending checkpoint.
    c.batch_execute("CHECKPOINT").await.unwrap();
}

/// Issue `k` certificates (reserve + commit), 32 at a time; returns per second.
async fn issuance(r: &PgRegister, round: u64, k: u64) -> f64 {
    let start = Instant::now();
    let now = SystemTime::now();
    futures::stream::iter(0..k)
        .map(|i| {
            let r = r.clone();
            async move {
                let id = 1_000_000_000 + round * 1_000_000 + i;
                let serial = Serial::from_be_bytes(&serial_bytes(id, 0x77)).unwrap();
                let request = format!("bench/new-{id}/uid");
                assert_eq!(
                    r.reserve(CA, &serial, &request).await.unwrap(),
                    Reservation::Reserved
                );
                let fp =
                    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, serial.as_be_bytes());
                let mut key_fingerprint = [0u8; 32];
                key_fingerprint.copy_from_slice(fp.as_ref());
                r.commit(&NewCertificate {
                    ca: CA.into(),
                    serial,
                    request,
                    subscriber: format!("sub-{id}"),
                    key_fingerprint,
                    not_before: now,
                    not_after: now + Duration::from_secs(365 * 86400),
                    partition: Some((id % 16) as u32),
                    der: der(id),
                })
                .await
                .unwrap();
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
    k as f64 / start.elapsed().as_secs_f64()
}

fn ca_files(dir: &Path) -> (Vec<u8>, SoftwareKey) {
    let key = SoftwareKey::generate(KeySpec::Rsa { bits: 2048 }).unwrap();
    let pk8 = key.to_pkcs8().unwrap();
    let pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        base64_lines(&pk8)
    );
    std::fs::write(dir.join("ca.key"), pem).unwrap();
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
            "-outform",
            "DER",
            "-out",
            "ca.der",
        ])
        .status()
        .unwrap()
        .success();
    assert!(ok, "openssl req failed");
    let key = SoftwareKey::from_pkcs8(&pk8, SignatureAlgorithm::RsaSha256).unwrap();
    (std::fs::read(dir.join("ca.der")).unwrap(), key)
}

fn base64_lines(b: &[u8]) -> String {
    use base64::Engine;
    let s = base64::engine::general_purpose::STANDARD.encode(b);
    s.as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Read the CA's CRL entries from the register and sign the CRL; returns
/// (query seconds, build seconds, entries, bytes).
async fn crl(r: &PgRegister, issuer: &CrlIssuer) -> (f64, f64, usize, usize) {
    let start = Instant::now();
    let now = SystemTime::now();
    let entries = r.crl_entries(CA, None, now).await.unwrap();
    let t_query = start.elapsed().as_secs_f64();
    let n = entries.len();
    let index = MemoryIndex::from_entries(entries).unwrap();
    let crl = issuer
        .issue(
            &index,
            &CrlRequest {
                number: 1,
                this_update: now,
                next_update: now + Duration::from_secs(24 * 3600),
                scope: CrlScope::Full,
            },
        )
        .unwrap();
    (
        t_query,
        start.elapsed().as_secs_f64() - t_query,
        n,
        crl.der.len(),
    )
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1]
}

async fn notify_latency(url: &str, r: &PgRegister, n: u64) -> (Duration, Duration) {
    let mut changes = Box::pin(postgres::follow(url).await.unwrap());
    let mut lat = Vec::new();
    // Valid records of the bulk load (not multiples of the revoked stride).
    for i in 0..n {
        let idx = i * 2 + 1;
        let serial = Serial::from_be_bytes(&serial_bytes(idx, 0x5bd1_e995)).unwrap();
        let start = Instant::now();
        let t = r
            .change(
                CA,
                &serial,
                Change::Revoke {
                    reason: Reason::KeyCompromise,
                    at: SystemTime::now(),
                    invalidity: None,
                },
            )
            .await
            .unwrap();
        if !matches!(t, chop_register::api::Transition::Applied { .. }) {
            continue;
        }
        loop {
            let c = tokio::time::timeout(Duration::from_secs(5), changes.next())
                .await
                .expect("notification within 5 s")
                .unwrap();
            if c.serial == serial {
                break;
            }
        }
        lat.push(start.elapsed());
    }
    (percentile(&mut lat, 0.5), percentile(&mut lat, 0.99))
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().map_or(1_000_000, |a| a.parse().unwrap());
    let revoked: u64 = args.next().map_or(100_000, |a| a.parse().unwrap());
    let url = std::env::var("CHOP_PG_URL").expect("CHOP_PG_URL (run under e2e/postgres.sh run)");
    let admin = raw(&url).await;
    for schema in ["empty", "loaded"] {
        admin
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
            ))
            .await
            .unwrap();
        postgres::migrate(&with_schema(&url, schema)).await.unwrap();
    }
    let (empty_url, loaded_url) = (with_schema(&url, "empty"), with_schema(&url, "loaded"));
    println!(
        "PostgreSQL register benchmark: {n} records ({revoked} revoked) in schema `loaded`, none in `empty`"
    );
    let start = Instant::now();
    bulk_load(&loaded_url, n, revoked).await;
    let load_secs = start.elapsed().as_secs_f64();
    println!(
        "bulk load: {load_secs:.1} s ({:.0} records/s)",
        n as f64 / load_secs
    );
    let empty = PgRegister::connect(&empty_url, 8).await.unwrap();
    let loaded = PgRegister::connect(&loaded_url, 8).await.unwrap();

    // Issuance, alternating rounds.
    let k = 4000;
    let (mut e_rates, mut l_rates) = (Vec::new(), Vec::new());
    for round in 0..5 {
        e_rates.push(issuance(&empty, round, k).await);
        l_rates.push(issuance(&loaded, round, k).await);
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (e, l) = (med(&mut e_rates), med(&mut l_rates));
    println!(
        "issuance (reserve + commit, 32 in flight, {k} × 5 rounds each, median): empty {e:.0}/s, with {n} records {l:.0}/s: ratio {:.2} (target ≥ 0.90)",
        l / e
    );

    // CRL from the database.
    let dir = tempfile::tempdir().unwrap();
    let (ca_der, key) = ca_files(dir.path());
    let issuer = CrlIssuer::new(&ca_der, Arc::new(key), CrlConfig::default()).unwrap();
    let (q, b, entries, bytes) = crl(&loaded, &issuer).await;
    println!(
        "CRL of {entries} revoked entries from the database: query {q:.2} s + build and sign {b:.2} s = {:.2} s, {:.1} MB (target ≤ 5 s at 1,000,000)",
        q + b,
        bytes as f64 / 1e6
    );

    // Revocation → notification.
    let (p50, p99) = notify_latency(&loaded_url, &loaded, 200).await;
    println!(
        "revocation → LISTEN notification, 200 revocations: p50 {p50:?}, p99 {p99:?} (target p99 ≤ 1 s to OCSP)"
    );

    // Disk.
    let row = admin
        .query_one(
            "SELECT pg_total_relation_size('loaded.reservations') + pg_total_relation_size('loaded.certificates') + pg_total_relation_size('loaded.status'),
                    (SELECT count(*) FROM loaded.certificates)",
            &[],
        )
        .await
        .unwrap();
    let (bytes, count): (i64, i64) = (row.get(0), row.get(1));
    println!(
        "disk: {:.2} GB for {count} certificates = {:.0} bytes per certificate (DER {DER_BYTES} bytes)",
        bytes as f64 / 1e9,
        bytes as f64 / count as f64
    );
    println!(
        "this process's peak RSS: {:.0} MiB (the CRL build holds its entries; nothing else grows with the register)",
        peak_rss_mib()
    );
    for schema in ["empty", "loaded"] {
        admin
            .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
            .await
            .unwrap();
    }
}
