//! chop-responder on the PostgreSQL register (issue 12), side by side in one run:
//!
//! ```text
//! bash scripts/bench-responder-register.sh [RECORDS] [SMALL] [QUERIES]   # 1000000 10000 30000
//! ```
//!
//! Two schemas of one database: `small` (SMALL certificates) and `large`
//! (RECORDS), bulk-loaded with COPY. Two `chop-responder` processes (release
//! build, `--register postgres`, `--threads 1`, the same bounds:
//! `--status-cache 20000 --cache-entries 20000`), one per schema, get the same
//! load, alternately:
//! - min(QUERIES, SMALL) GETs over distinct serials of the register: cache
//!   misses (point query + RSA-2048 signature), requests/s; then the
//!   responder's RSS;
//! - the same again over the 1,000 serials last asked: pre-signed cache hits,
//!   requests/s;
//! - revocation → first OCSP "revoked": Register::change, then GET until the
//!   answer is revoked (the answer was pre-signed "good" before), p50/p99 over
//!   200 revocations each;
//! - the `large` responder's RSS again after QUERIES, then 2 × QUERIES more
//!   distinct serials (past both bounds): bounded, it grows neither with what
//!   was asked nor with the register.
//!
//! The DER stored per certificate is 64 bytes (the responder never reads it;
//! bench_pg measures the register's disk with realistic DER). Both schemas are
//! dropped at the end.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use ca::revocation::Reason;
use ca::serial::Serial;
use chop_register::api::{Change, Register, Transition};
use chop_register::postgres::{self, PgRegister};
use der::Decode;
use responder::fixture::{Fixture, get_path};
use tokio_postgres::NoTls;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;
use x509_ocsp::{BasicOcspResponse, OcspResponse};

const BOUND: usize = 20_000;

fn with_schema(url: &str, schema: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options=-csearch_path%3D{schema}")
}

fn serial(i: u64) -> Serial {
    let mixed = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut b = vec![0x21];
    b.extend_from_slice(&mixed.to_be_bytes());
    b.extend_from_slice(&i.to_be_bytes());
    Serial::from_be_bytes(&b).unwrap()
}

async fn raw(url: &str) -> tokio_postgres::Client {
    let (c, conn) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(conn);
    c
}

/// COPY `n` valid certificates of CA `ca` into the schema of `url` (the
/// notification trigger off during the load: nobody listens yet).
async fn bulk_load(url: &str, ca: &str, n: u64) {
    let c = raw(url).await;
    c.batch_execute("ALTER TABLE status DISABLE TRIGGER status_notify")
        .await
        .unwrap();
    let now = SystemTime::now();
    let not_after = now + Duration::from_secs(365 * 86400);
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
                "COPY certificates (ca, serial, request, subscriber, key_fingerprint, not_before, not_after, der) FROM STDIN BINARY",
                vec![
                    Type::TEXT,
                    Type::BYTEA,
                    Type::TEXT,
                    Type::TEXT,
                    Type::BYTEA,
                    Type::TIMESTAMPTZ,
                    Type::TIMESTAMPTZ,
                    Type::BYTEA,
                ],
            ),
            (
                "COPY status (ca, serial, not_after) FROM STDIN BINARY",
                vec![Type::TEXT, Type::BYTEA, Type::TIMESTAMPTZ],
            ),
        ] {
            let sink = c.copy_in(table).await.unwrap();
            let w = BinaryCopyInWriter::new(sink, &types);
            futures::pin_mut!(w);
            for i in done..end {
                let s = serial(i);
                let s = s.as_be_bytes();
                let req = format!("{ca}/req-{i}/uid");
                if table.starts_with("COPY reservations") {
                    w.as_mut().write(&[&ca, &s, &req]).await.unwrap();
                } else if table.starts_with("COPY certificates") {
                    let fp = [(i % 251) as u8; 32];
                    let der = [0x30u8; 64];
                    w.as_mut()
                        .write(&[
                            &ca,
                            &s,
                            &req,
                            &format!("sub-{i}"),
                            &fp.as_slice(),
                            &now,
                            &not_after,
                            &der.as_slice(),
                        ])
                        .await
                        .unwrap();
                } else {
                    w.as_mut().write(&[&ca, &s, &not_after]).await.unwrap();
                }
            }
            w.finish().await.unwrap();
        }
        done = end;
        eprint!("\r  {ca}: loaded {done}/{n}");
    }
    eprintln!();
    for sql in [
        "ALTER TABLE status ENABLE TRIGGER status_notify",
        "VACUUM ANALYZE reservations",
        "VACUUM ANALYZE certificates",
        "VACUUM ANALYZE status",
    ] {
        c.batch_execute(sql).await.unwrap();
    }
}

/// A keep-alive HTTP/1.1 client for GETs.
struct Conn(BufReader<TcpStream>);

impl Conn {
    fn new(port: u16) -> Conn {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_nodelay(true).unwrap();
        Conn(BufReader::new(s))
    }

    fn get(&mut self, path: &str) -> (u16, Vec<u8>) {
        write!(
            self.0.get_mut(),
            "GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n"
        )
        .unwrap();
        let mut line = String::new();
        self.0.read_line(&mut line).unwrap();
        let code: u16 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        let mut len = 0usize;
        loop {
            line.clear();
            self.0.read_line(&mut line).unwrap();
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; len];
        self.0.read_exact(&mut body).unwrap();
        (code, body)
    }
}

/// `good`, `revoked`, `unknown`, or the unsigned status.
fn answer(der: &[u8]) -> &'static str {
    let r = OcspResponse::from_der(der).expect("OCSPResponse");
    let Some(bytes) = r.response_bytes else {
        return match r.response_status {
            x509_ocsp::OcspResponseStatus::TryLater => "tryLater",
            x509_ocsp::OcspResponseStatus::Unauthorized => "unauthorized",
            _ => "other",
        };
    };
    let basic = BasicOcspResponse::from_der(bytes.response.as_bytes()).unwrap();
    match basic.tbs_response_data.responses[0].cert_status {
        x509_ocsp::CertStatus::Good(_) => "good",
        x509_ocsp::CertStatus::Revoked(_) => "revoked",
        x509_ocsp::CertStatus::Unknown(_) => "unknown",
    }
}

struct Responder {
    name: &'static str,
    ca: String,
    child: Child,
    port: u16,
    records: u64,
    register: PgRegister,
}

impl Responder {
    fn rss_mib(&self) -> (f64, f64) {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kib = |key: &str| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap()
                / 1024.0
        };
        (kib("VmRSS:"), kib("VmHWM:"))
    }

    fn metric(&self, name: &str) -> f64 {
        let (_, body) = Conn::new(self.port).get("/metrics");
        let text = String::from_utf8(body).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap()
            .parse()
            .unwrap()
    }
}

fn paths(f: &Fixture, idx: impl Iterator<Item = u64>) -> Vec<String> {
    idx.map(|i| get_path(&f.request(&serial(i), None).unwrap()))
        .collect()
}

/// GET every path on one connection; requests/s. Every answer must be `want`.
fn run(r: &Responder, paths: &[String], want: &str) -> f64 {
    let mut c = Conn::new(r.port);
    let start = Instant::now();
    for p in paths {
        let (code, body) = c.get(p);
        assert_eq!(code, 200);
        assert_eq!(answer(&body), want, "{}", r.name);
    }
    paths.len() as f64 / start.elapsed().as_secs_f64()
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let records: u64 = args.next().map_or(1_000_000, |a| a.parse().unwrap());
    let small: u64 = args.next().map_or(10_000, |a| a.parse().unwrap());
    let queries: u64 = args.next().map_or(30_000, |a| a.parse().unwrap());
    let revocations = 200u64;
    let url = std::env::var("CHOP_PG_URL").expect("CHOP_PG_URL (run under e2e/postgres.sh run)");
    let bin = std::env::var("CHOP_RESPONDER_BIN").unwrap_or_else(|_| {
        let exe = std::env::current_exe().unwrap();
        exe.parent()
            .unwrap()
            .parent()
            .unwrap()
            .join("chop-responder")
            .display()
            .to_string()
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let f = Fixture::new(1).unwrap();
    f.write_dir(dir.path()).unwrap();
    println!(
        "chop-responder on the PostgreSQL register: {small} vs {records} certificates, bounds --status-cache {BOUND} --cache-entries {BOUND}, --threads 1"
    );
    let admin = rt.block_on(raw(&url));
    let mut responders = Vec::new();
    for (name, n) in [("small", small), ("large", records)] {
        let schema_url = with_schema(&url, name);
        let ca = format!("bench/{name}");
        rt.block_on(async {
            admin
                .batch_execute(&format!(
                    "DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}"
                ))
                .await
                .unwrap();
            postgres::migrate(&schema_url).await.unwrap();
            let start = Instant::now();
            bulk_load(&schema_url, &ca, n).await;
            println!(
                "{name}: {n} certificates loaded in {:.1} s",
                start.elapsed().as_secs_f64()
            );
        });
        let url_file = dir.path().join(format!("{name}.url"));
        std::fs::write(&url_file, &schema_url).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(&bin)
            .args(["serve", "--dir"])
            .arg(dir.path())
            .args(["--register", "postgres", "--register-url-file"])
            .arg(&url_file)
            .args([
                "--register-ca",
                &ca,
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .args(["--threads", "1", "--status-cache", &BOUND.to_string()])
            .args(["--cache-entries", &BOUND.to_string()])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let register = rt.block_on(PgRegister::connect(&schema_url, 2)).unwrap();
        responders.push(Responder {
            name,
            ca,
            child,
            port,
            records: n,
            register,
        });
    }
    for r in &responders {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = TcpStream::connect(("127.0.0.1", r.port)).is_ok()
                && Conn::new(r.port).get("/readyz").0 == 200;
            if ok {
                break;
            }
            assert!(Instant::now() < deadline, "{} not ready", r.name);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let idle: Vec<_> = responders.iter().map(Responder::rss_mib).collect();

    // Misses: the same number of distinct serials on both.
    let m = queries.min(small);
    let mut miss = Vec::new();
    let mut last = Vec::new();
    for r in &responders {
        let p = paths(&f, 0..m);
        miss.push(run(r, &p, "good"));
        last.push(p[p.len() - 1000..].to_vec());
    }
    let after: Vec<_> = responders.iter().map(Responder::rss_mib).collect();
    // Hits: the 1,000 last asked, 20 times.
    let mut hit = Vec::new();
    for (r, p) in responders.iter().zip(&last) {
        let many: Vec<String> = p.iter().cycle().take(20_000).cloned().collect();
        hit.push(run(r, &many, "good"));
    }
    for (i, r) in responders.iter().enumerate() {
        println!(
            "{}: {} certificates: RSS idle {:.1} MiB, after {m} distinct queries {:.1} MiB (peak {:.1}); requests/s misses (point query + signature) {:.0}, pre-signed hits {:.0}",
            r.name, r.records, idle[i].0, after[i].0, after[i].1, miss[i], hit[i]
        );
    }

    // Revocation → first OCSP "revoked", alternating between the two.
    let mut lat = [Vec::new(), Vec::new()];
    for k in 0..revocations {
        for (j, r) in responders.iter().enumerate() {
            // Serials answered (and pre-signed) "good" in the hit phase.
            let i = m - 1 - k;
            let path = get_path(&f.request(&serial(i), None).unwrap());
            let mut c = Conn::new(r.port);
            assert_eq!(answer(&c.get(&path).1), "good");
            let start = Instant::now();
            let t = rt
                .block_on(r.register.change(
                    &r.ca,
                    &serial(i),
                    Change::Revoke {
                        reason: Reason::KeyCompromise,
                        at: SystemTime::now(),
                        invalidity: None,
                    },
                ))
                .unwrap();
            assert!(matches!(t, Transition::Applied { .. }));
            loop {
                let a = answer(&c.get(&path).1);
                if a == "revoked" {
                    break;
                }
                assert_eq!(a, "good");
                assert!(start.elapsed() < Duration::from_secs(10));
            }
            lat[j].push(start.elapsed());
        }
    }
    for (j, r) in responders.iter().enumerate() {
        let (p50, p99) = (percentile(&mut lat[j], 0.5), percentile(&mut lat[j], 0.99));
        println!(
            "{}: revocation → first OCSP revoked, {revocations} revocations: p50 {:.1} ms, p99 {:.1} ms (target p99 ≤ 1 s)",
            r.name,
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3
        );
    }

    // Bounded: more distinct serials on the large register.
    let large = &responders[1];
    let mut from = m;
    for _ in 0..2 {
        let more = queries.min(large.records.saturating_sub(from));
        let p = paths(&f, from..from + more);
        let rate = run(large, &p, "good");
        from += more;
        let (rss, hwm) = large.rss_mib();
        println!(
            "large: after {from} distinct queries: RSS {rss:.1} MiB (peak {hwm:.1}); statuses cached {} (bound {BOUND}); misses {rate:.0}/s",
            large.metric("chop_responder_statuses")
        );
    }
    for mut r in responders {
        let _ = r.child.kill();
        let _ = r.child.wait();
    }
    rt.block_on(async {
        for name in ["small", "large"] {
            admin
                .batch_execute(&format!("DROP SCHEMA {name} CASCADE"))
                .await
                .unwrap();
        }
    });
}
