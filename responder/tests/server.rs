//! The responder over real sockets: OpenSSL as the OCSP client, a raw HTTP/1.1
//! client for GET, HEAD and the error paths, the feeder API and the directory
//! feeder for revocation visibility.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use ca::ocsp::OcspConfig;
use ca::revocation::{CertStatus, Reason};
use ca::serial::Serial;
use chop_register::api::{Change, Commit, NewCertificate, Register, Reservation, Transition};
use chop_register::postgres::PgRegister;
use common::Reply;
use der::Decode;
use responder::feeder::{IndexFile, RevokedRecord};
use responder::fixture::{Fixture, get_path};
use responder::{
    App, DirFeeder, Feeder, RegisterConfig, RegisterStatuses, ServerConfig, StateHandle,
};
use tokio::sync::watch;
use x509_ocsp::{BasicOcspResponse, OcspResponse};

/// One fixture for the whole file (RSA key generation is the slow part).
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| Fixture::new(4).unwrap())
}

struct Server {
    addr: SocketAddr,
    state: StateHandle,
    shutdown: watch::Sender<bool>,
    rt: tokio::runtime::Runtime,
    task: Option<tokio::task::JoinHandle<responder::Result<()>>>,
    dir: tempfile::TempDir,
    /// `--register postgres`: the change follower.
    follower: Option<tokio::task::JoinHandle<responder::Result<()>>>,
}

impl Server {
    /// A server over a state filled through the feeder API.
    fn start() -> Server {
        let state = StateHandle::new();
        let f = fixture();
        state.install(f.material(OcspConfig::default()).unwrap());
        state.load_statuses(f.statuses());
        Self::with_state(state, ServerConfig::default())
    }

    fn with_state(state: StateHandle, config: ServerConfig) -> Server {
        Self::with_app(state, |state| App::new(state, config), None)
    }

    /// A server whose statuses come from the PostgreSQL register (CA `ca`),
    /// with a status cache of `status_cache` entries; the material from the
    /// fixture. Waits until the change feed is followed.
    fn with_register(ca: &str, status_cache: usize, config: ServerConfig) -> Server {
        let state = StateHandle::with_register(status_cache);
        state.install(fixture().material(OcspConfig::default()).unwrap());
        let mut rc = RegisterConfig::new(pg_url(), ca);
        // Longer than a restart of PostgreSQL takes to accept writes again:
        // the revocation below lands while nobody listens.
        rc.reconnect_delay = Duration::from_secs(3);
        let source = RegisterStatuses::new(rc);
        let for_app = source.clone();
        let s = Self::with_app(
            state.clone(),
            |state| App::with_register(state, config, for_app),
            Some(source),
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while !s.state.statuses_loaded() {
            assert!(Instant::now() < deadline, "the register is not followed");
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    fn with_app(
        state: StateHandle,
        app: impl FnOnce(StateHandle) -> std::sync::Arc<App>,
        register: Option<std::sync::Arc<RegisterStatuses>>,
    ) -> Server {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        fixture().write_dir(dir.path()).unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let (shutdown, rx) = watch::channel(false);
        let app = app(state.clone());
        let follower = register.map(|r| rt.spawn(r.follow(state.clone(), rx.clone())));
        let task = rt.spawn(responder::serve(listener, app, rx));
        Server {
            addr,
            state,
            shutdown,
            rt,
            task: Some(task),
            dir,
            follower,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Send raw bytes, read until the server closes.
    fn raw(&self, request: &[u8]) -> Reply {
        common::raw(self.addr, request)
    }

    fn get(&self, path: &str) -> Reply {
        self.request("GET", path, &[], b"")
    }

    fn request(&self, method: &str, path: &str, headers: &[&str], body: &[u8]) -> Reply {
        common::request(self.addr, method, path, headers, body)
    }

    fn openssl_ocsp(&self, leaf: &str, extra: &[&str]) -> String {
        let mut args = vec![
            "ocsp",
            "-url",
            &*Box::leak(self.url().into_boxed_str()),
            "-issuer",
            "ca.pem",
            "-cert",
            leaf,
            "-CAfile",
            "ca.pem",
            "-resp_text",
        ];
        args.extend_from_slice(extra);
        let out = Command::new("openssl")
            .current_dir(self.dir.path())
            .args(&args)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "openssl {args:?}:\n{text}");
        text
    }

    fn stop(mut self) {
        self.shutdown.send(true).unwrap();
        let task = self.task.take().unwrap();
        let r = self
            .rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(15), task).await });
        r.expect("server stops on shutdown").unwrap().unwrap();
        if let Some(f) = self.follower.take() {
            let r = self
                .rt
                .block_on(async { tokio::time::timeout(Duration::from_secs(15), f).await });
            r.expect("follower stops on shutdown").unwrap().unwrap();
        }
    }
}

/// `good`, `revoked` or `unknown` from a successful DER OCSPResponse.
fn cert_status(der: &[u8]) -> &'static str {
    let r = OcspResponse::from_der(der).expect("OCSPResponse");
    let bytes = r.response_bytes.expect("successful response");
    let basic = BasicOcspResponse::from_der(bytes.response.as_bytes()).unwrap();
    match basic.tbs_response_data.responses[0].cert_status {
        x509_ocsp::CertStatus::Good(_) => "good",
        x509_ocsp::CertStatus::Revoked(_) => "revoked",
        x509_ocsp::CertStatus::Unknown(_) => "unknown",
    }
}

fn leaf_serial(i: usize) -> Serial {
    fixture().leaves[i].serial.clone()
}

fn revoked(reason: Reason) -> CertStatus {
    CertStatus::Revoked {
        time: SystemTime::now(),
        reason,
        invalidity_date: None,
    }
}

fn run(dir: &Path, args: &[&str]) -> String {
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
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn openssl_post_with_and_without_nonce() {
    let s = Server::start();
    let out = s.openssl_ocsp("leaf-0.pem", &["-no_nonce"]);
    assert!(out.contains("Response verify OK"), "{out}");
    assert!(out.contains("leaf-0.pem: good"), "{out}");
    assert!(!out.contains("OCSP Nonce"), "{out}");
    let out = s.openssl_ocsp("leaf-0.pem", &["-nonce"]);
    assert!(out.contains("Response verify OK"), "{out}");
    assert!(out.contains("leaf-0.pem: good"), "{out}");
    assert!(out.contains("OCSP Nonce"), "{out}");
    assert!(!out.contains("WARNING"), "{out}");

    s.state
        .set_status(&leaf_serial(1), revoked(Reason::KeyCompromise));
    let out = s.openssl_ocsp("leaf-1.pem", &["-no_nonce"]);
    assert!(out.contains("leaf-1.pem: revoked"), "{out}");
    assert!(out.contains("Reason: keyCompromise"), "{out}");
    s.stop();
}

#[test]
fn get_cacheable_response_has_rfc5019_headers() {
    let s = Server::start();
    let path = get_path(&fixture().request(&leaf_serial(0), None).unwrap());
    let a = s.get(&path);
    assert_eq!(a.code, 200);
    assert_eq!(a.header("content-type"), Some("application/ocsp-response"));
    let cc = a.header("cache-control").unwrap();
    assert!(
        cc.starts_with("max-age=") && cc.ends_with(", public, no-transform, must-revalidate"),
        "{cc}"
    );
    let max_age: u64 = cc["max-age=".len()..cc.find(',').unwrap()].parse().unwrap();
    assert!(max_age > 290 && max_age <= 300, "{max_age}");
    let etag = a.header("etag").unwrap();
    assert_eq!(etag.len(), 66, "quoted SHA-256 hex: {etag}");
    let lm = httpdate::parse_http_date(a.header("last-modified").unwrap()).unwrap();
    let exp = httpdate::parse_http_date(a.header("expires").unwrap()).unwrap();
    assert_eq!(exp.duration_since(lm).unwrap(), Duration::from_secs(3600));
    assert_eq!(cert_status(&a.body), "good");

    // The second answer is the pre-signed one: same bytes, same ETag.
    let b = s.get(&path);
    assert_eq!(b.header("etag"), Some(etag));
    assert_eq!(a.body, b.body);
    // Via POST too (same CertID, same cache entry).
    let req = fixture().request(&leaf_serial(0), None).unwrap();
    let c = s.request(
        "POST",
        "/",
        &["Content-Type: application/ocsp-request"],
        &req,
    );
    assert_eq!(c.body, a.body);
    // Revalidation by ETag: 304 without a body, same cache headers.
    let inm = format!("If-None-Match: W/\"x\", {etag}");
    let nm = s.request("GET", &path, &[&inm], b"");
    assert_eq!(nm.code, 304);
    assert!(nm.body.is_empty());
    assert_eq!(nm.header("etag"), Some(etag));
    assert!(nm.header("cache-control").unwrap().contains("max-age="));
    let other = s.request("GET", &path, &["If-None-Match: \"nope\""], b"");
    assert_eq!(other.code, 200);
    assert_eq!(other.body, a.body);
    let metrics = String::from_utf8(s.get("/metrics").body).unwrap();
    assert!(
        metrics.contains("chop_ocsp_cache_hits_total 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains("chop_ocsp_cache_misses_total 1"),
        "{metrics}"
    );
    s.stop();
}

#[test]
fn get_path_with_slash_and_plus_in_any_encoding() {
    let s = Server::start();
    let f = fixture();
    // Find a nonce whose request's base64 holds both '/' and '+'.
    let (der, b64) = (0u32..)
        .find_map(|i| {
            let nonce = [
                0x04,
                0x08,
                (i >> 24) as u8,
                (i >> 16) as u8,
                (i >> 8) as u8,
                i as u8,
                0xfb,
                0xff,
                0xbf,
                0x3e,
            ];
            let der = f.request(&leaf_serial(2), Some(&nonce)).unwrap();
            let b64 = base64::engine::general_purpose::STANDARD.encode(&der);
            (b64.contains('/') && b64.contains('+')).then_some((der, b64))
        })
        .unwrap();
    let encoded = get_path(&der);
    assert!(encoded.contains("%2F") && encoded.contains("%2B"));
    for path in [
        encoded.clone(),
        // lower-case escapes
        encoded.replace("%2F", "%2f").replace("%2B", "%2b"),
        // raw '/' and '+' (RFC 5019 §5 warns clients send these)
        format!("/{b64}"),
        format!("/ocsp{encoded}"),
    ] {
        let r = s.get(&path);
        assert_eq!(r.code, 200, "{path}");
        assert_eq!(cert_status(&r.body), "good", "{path}");
        // A nonce makes it unique: never cached.
        assert!(r.header("cache-control").unwrap().contains("no-cache"));
        assert!(r.header("etag").is_none());
    }
    s.stop();
}

#[test]
fn head_unsuccessful_and_method_errors() {
    let s = Server::start();
    let path = get_path(&fixture().request(&leaf_serial(0), None).unwrap());
    let h = s.request("HEAD", &path, &[], b"");
    assert_eq!(h.code, 200);
    assert!(h.body.is_empty());
    assert!(h.header("etag").is_some());
    assert!(
        h.header("content-length")
            .unwrap()
            .parse::<usize>()
            .unwrap()
            > 1000
    );

    // malformedRequest (1), unsigned, not cacheable.
    let m = s.get("/MAAAAA");
    assert_eq!(m.code, 200);
    assert_eq!(m.body, [0x30, 3, 0x0a, 1, 1]);
    assert!(m.header("cache-control").unwrap().contains("no-cache"));
    let m = s.request("POST", "/", &[], b"junk");
    assert_eq!(m.body, [0x30, 3, 0x0a, 1, 1]);

    // unauthorized (6): a CA this responder does not serve.
    let other = Fixture::new(0).unwrap();
    let foreign = other.request(&leaf_serial(0), None).unwrap();
    let u = s.get(&get_path(&foreign));
    assert_eq!(u.body, [0x30, 3, 0x0a, 1, 6]);
    assert!(u.header("cache-control").unwrap().contains("no-cache"));

    // Unknown serial: never "good".
    let unknown = fixture().request(&Serial::random().unwrap(), None).unwrap();
    assert_eq!(cert_status(&s.get(&get_path(&unknown)).body), "unknown");

    for (method, path) in [
        ("PUT", "/"),
        ("DELETE", "/ca.crt"),
        ("POST", "/healthz"),
        ("PATCH", path.as_str()),
    ] {
        let r = s.request(method, path, &[], b"");
        assert_eq!(r.code, 405, "{method} {path}");
        assert!(r.header("allow").is_some());
    }

    // 413: declared too large, and streamed without a length.
    let big = vec![0x30u8; 20 * 1024];
    assert_eq!(s.request("POST", "/", &[], &big).code, 413);
    let mut chunked = b"POST /ocsp HTTP/1.1\r\nHost: t\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        chunked.extend_from_slice(b"1000\r\n");
        chunked.extend_from_slice(&[0x30; 0x1000]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    assert_eq!(s.raw(&chunked).code, 413);
    s.stop();
}

#[test]
fn repository_downloads_parse_with_openssl() {
    let s = Server::start();
    let d = s.dir.path().to_path_buf();
    let save = |path: &str, name: &str, ctype: &str| {
        let r = s.get(path);
        assert_eq!(r.code, 200, "{path}");
        assert_eq!(r.header("content-type"), Some(ctype), "{path}");
        std::fs::write(d.join(name), &r.body).unwrap();
    };
    save("/ca.crt", "dl-ca.der", "application/pkix-cert");
    save("/ca.pem", "dl-ca.pem", "application/x-pem-file");
    save("/chain.pem", "dl-chain.pem", "application/x-pem-file");
    save("/crl/ca.crl", "dl.crl", "application/pkix-crl");
    let serial = leaf_serial(3).to_hex();
    save(
        &format!("/certs/{serial}.crt"),
        "dl-leaf.der",
        "application/pkix-cert",
    );
    save(
        &format!("/certs/{}.pem", serial.to_lowercase()),
        "dl-leaf.pem",
        "application/x-pem-file",
    );

    let subject = run(
        &d,
        &[
            "x509",
            "-inform",
            "DER",
            "-in",
            "dl-ca.der",
            "-noout",
            "-subject",
        ],
    );
    assert_eq!(
        subject,
        run(&d, &["x509", "-in", "dl-ca.pem", "-noout", "-subject"])
    );
    assert_eq!(
        subject,
        run(&d, &["x509", "-in", "dl-chain.pem", "-noout", "-subject"])
    );
    let crl = run(
        &d,
        &[
            "crl", "-inform", "DER", "-in", "dl.crl", "-CAfile", "ca.pem", "-noout", "-text",
        ],
    );
    assert!(crl.contains("Certificate Revocation List"), "{crl}");
    let leaf = run(
        &d,
        &[
            "x509",
            "-inform",
            "DER",
            "-in",
            "dl-leaf.der",
            "-noout",
            "-serial",
        ],
    );
    assert_eq!(leaf.trim(), format!("serial={serial}"));
    run(&d, &["verify", "-CAfile", "ca.pem", "dl-leaf.pem"]);

    for miss in [
        "/crl/nope.crl",
        "/crl/ca.der",
        "/certs/0102.crt",
        "/certs/zz.crt",
        &format!("/certs/{serial}.txt"),
        "/certs/",
    ] {
        assert_eq!(s.get(miss).code, 404, "{miss}");
    }
    s.stop();
}

#[test]
fn health_readiness_and_metrics() {
    let s = Server::with_state(StateHandle::new(), ServerConfig::default());
    assert_eq!(s.get("/healthz").code, 200);
    assert_eq!(s.get("/readyz").code, 503);
    // No material: tryLater (3), and repository 503.
    let path = get_path(&fixture().request(&leaf_serial(0), None).unwrap());
    assert_eq!(s.get(&path).body, [0x30, 3, 0x0a, 1, 3]);
    assert_eq!(s.get("/ca.crt").code, 503);
    s.state
        .install(fixture().material(OcspConfig::default()).unwrap());
    assert_eq!(s.get("/readyz").code, 503, "statuses not loaded yet");
    s.state.load_statuses(fixture().statuses());
    assert_eq!(s.get("/readyz").code, 200);
    assert_eq!(cert_status(&s.get(&path).body), "good");

    let m = s.get("/metrics");
    assert_eq!(m.code, 200);
    let text = String::from_utf8(m.body).unwrap();
    for want in [
        "chop_ocsp_requests_total{method=\"GET\",status=\"successful\",cert_status=\"good\"} 1",
        "chop_ocsp_requests_total{method=\"GET\",status=\"tryLater\",cert_status=\"none\"} 1",
        "chop_ocsp_request_duration_seconds_bucket",
        "chop_ocsp_cache_hits_total",
        "chop_ocsp_cache_misses_total",
        "chop_responder_state_generation",
        "chop_responder_certificate_not_after_seconds",
        "chop_responder_ready 1",
        "chop_responder_statuses 5",
        "chop_http_connections_total",
    ] {
        assert!(text.contains(want), "{want} missing:\n{text}");
    }
    // No serial in the metrics.
    assert!(!text.contains(&leaf_serial(0).to_hex()));
    s.stop();
}

#[test]
fn revocation_invalidates_the_cached_answer_at_once() {
    let s = Server::start();
    let serial = leaf_serial(2);
    let path = get_path(&fixture().request(&serial, None).unwrap());
    // A SHA-256 CertID for the same certificate is a second cache entry.
    let cert = x509_cert::Certificate::from_der(&fixture().ca.der).unwrap();
    let sha256 = ca::ocsp::build_request(
        &cert,
        std::slice::from_ref(&serial),
        ca::ocsp::CertIdHash::Sha256,
        None,
    )
    .unwrap();
    let path256 = get_path(&sha256);
    for p in [&path, &path256] {
        assert_eq!(cert_status(&s.get(p).body), "good");
        assert_eq!(cert_status(&s.get(p).body), "good"); // now cached
    }
    let etag = s.get(&path).header("etag").unwrap().to_owned();

    s.state.set_status(&serial, revoked(Reason::KeyCompromise));
    // The very next request, no waiting.
    for p in [&path, &path256] {
        let r = s.get(p);
        assert_eq!(cert_status(&r.body), "revoked");
        assert_ne!(r.header("etag").unwrap(), etag);
    }
    // Suspension lifted → good again; forgotten → unknown.
    s.state.set_status(&serial, CertStatus::Good);
    assert_eq!(cert_status(&s.get(&path).body), "good");
    s.state.forget(&serial);
    assert_eq!(cert_status(&s.get(&path).body), "unknown");
    // Other certificates' cached answers survive a change to this one.
    let other = get_path(&fixture().request(&leaf_serial(3), None).unwrap());
    let before = s.get(&other).header("etag").unwrap().to_owned();
    s.state.set_status(&serial, CertStatus::Good);
    assert_eq!(s.get(&other).header("etag").unwrap(), before);
    s.stop();
}

fn write_index(dir: &Path, index: &IndexFile) {
    let tmp = dir.join("index.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(index).unwrap()).unwrap();
    std::fs::rename(&tmp, dir.join("index.json")).unwrap();
}

#[test]
fn directory_feeder_reloads_index_changes() {
    let dir = tempfile::tempdir().unwrap();
    fixture().write_dir(dir.path()).unwrap();
    let state = StateHandle::new();
    let s = Server::with_state(state.clone(), ServerConfig::default());
    let feeder = DirFeeder {
        dir: dir.path().to_path_buf(),
        poll: Duration::from_millis(200),
        ocsp: OcspConfig::default(),
    };
    let (stop, rx) = watch::channel(false);
    let feeder_task = s.rt.spawn(feeder.run(state.clone(), rx));
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.get("/readyz").code != 200 {
        assert!(
            Instant::now() < deadline,
            "feeder never made the state ready"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let serial = leaf_serial(0);
    let path = get_path(&fixture().request(&serial, None).unwrap());
    assert_eq!(cert_status(&s.get(&path).body), "good");
    assert_eq!(cert_status(&s.get(&path).body), "good");

    // Revoke by rewriting index.json; visible within the poll period.
    let mut index = fixture().index();
    index.revoked.push(RevokedRecord {
        serial: serial.to_hex(),
        revoked_at: 1_764_400_000,
        reason: Some("keyCompromise".into()),
        invalidity_date: None,
    });
    let t = Instant::now();
    write_index(dir.path(), &index);
    while cert_status(&s.get(&path).body) != "revoked" {
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "revocation not visible in 2 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("revocation visible after {:?}", t.elapsed());

    // A half-written file is ignored (previous state kept), then picked up.
    std::fs::write(dir.path().join("index.json"), b"{\"issued\": [").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(cert_status(&s.get(&path).body), "revoked");
    index.issued.retain(|i| i.serial != leaf_serial(1).to_hex());
    write_index(dir.path(), &index);
    let path1 = get_path(&fixture().request(&leaf_serial(1), None).unwrap());
    let t = Instant::now();
    while cert_status(&s.get(&path1).body) != "unknown" {
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "removal not visible in 2 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(cert_status(&s.get(&path).body), "revoked");

    // New material (another CRL) is picked up as well; statuses are kept.
    assert_eq!(s.get("/crl/extra.crl").code, 404);
    std::fs::copy(
        dir.path().join("crl/ca.crl"),
        dir.path().join("crl/extra.crl"),
    )
    .unwrap();
    let t = Instant::now();
    while s.get("/crl/extra.crl").code != 200 {
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "new CRL not served in 2 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(cert_status(&s.get(&path).body), "revoked");
    assert_eq!(cert_status(&s.get(&path1).body), "unknown");

    stop.send(true).unwrap();
    s.rt.block_on(feeder_task).unwrap().unwrap();
    s.stop();
}

/// What a DER OCSPResponse says: `good`/`revoked`/`unknown` when signed, else
/// the unsigned status (`unauthorized`, ...).
fn answer(der: &[u8]) -> &'static str {
    let r = OcspResponse::from_der(der).expect("OCSPResponse");
    match r.response_status {
        x509_ocsp::OcspResponseStatus::Successful => cert_status(der),
        x509_ocsp::OcspResponseStatus::Unauthorized => "unauthorized",
        x509_ocsp::OcspResponseStatus::TryLater => "tryLater",
        x509_ocsp::OcspResponseStatus::MalformedRequest => "malformedRequest",
        _ => "other",
    }
}

fn random_serial_path() -> String {
    get_path(&fixture().request(&Serial::random().unwrap(), None).unwrap())
}

fn metric(s: &Server, name: &str) -> f64 {
    let text = String::from_utf8(s.get("/metrics").body).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no metric {name} in\n{text}"))
        .parse()
        .unwrap()
}

/// Finding 9, as the attacker: a flood of queries for random serials (each a
/// cache miss) must not make the responder sign per request. Answers for
/// unknown serials come from a bounded signing budget; beyond it the answer is
/// the unsigned `unauthorized` (RFC 5019 §2.2.3). Never `good`. The issued
/// certificates keep their pre-signed answers meanwhile.
#[test]
fn random_serial_flood_is_answered_from_a_bounded_budget() {
    let s = Server::start();
    let legit = get_path(&fixture().request(&leaf_serial(0), None).unwrap());
    assert_eq!(answer(&s.get(&legit).body), "good");
    let started = Instant::now();
    let (mut signed, mut unsigned) = (0u32, 0u32);
    for _ in 0..600 {
        let r = s.get(&random_serial_path());
        assert_eq!(r.code, 200);
        match answer(&r.body) {
            "unknown" => signed += 1,
            "unauthorized" => {
                assert_eq!(r.body, [0x30, 0x03, 0x0a, 0x01, 0x06], "unsigned");
                assert_eq!(
                    r.header("cache-control"),
                    Some("no-cache, no-store, must-revalidate")
                );
                unsigned += 1;
            }
            other => panic!("a random serial got {other}"),
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let defaults = ServerConfig::default();
    let bound = defaults.sign_burst as f64 + defaults.sign_budget * secs + 1.0;
    println!("{signed} signed, {unsigned} unsigned in {secs:.2} s (bound {bound:.0})");
    assert!(
        f64::from(signed) <= bound,
        "{signed} signatures for random serials in {secs:.2} s (bound {bound:.0})"
    );
    assert!(unsigned > 0);
    // Meanwhile the issued certificate's pre-signed answer is served as ever.
    let again = s.get(&legit);
    assert_eq!(answer(&again.body), "good");
    assert!(again.header("etag").is_some());
    assert_eq!(
        metric(&s, "chop_ocsp_sign_budget_exhausted_total"),
        f64::from(unsigned)
    );
    assert!(metric(&s, "chop_ocsp_sign_budget_spent_total") >= f64::from(signed));
    s.stop();
}

/// The budget refills at its rate; a nonce request over budget gets the
/// pre-signed answer without nonce (RFC 5019 §2.2.1), a random serial the
/// unsigned `unauthorized`; the issued certificates are never refused.
#[test]
fn sign_budget_refills_and_nonce_falls_back_to_the_presigned_answer() {
    let state = StateHandle::new();
    let f = fixture();
    state.install(f.material(OcspConfig::default()).unwrap());
    state.load_statuses(f.statuses());
    let config = ServerConfig {
        sign_budget: 4.0,
        sign_burst: 2,
        ..ServerConfig::default()
    };
    let s = Server::with_state(state, config);
    // (The first answer needs the statuses: before they are loaded, every
    // request gets tryLater and nothing is signed; see the test below.)
    let t0 = Instant::now();
    assert_eq!(answer(&s.get(&random_serial_path()).body), "unknown");
    assert_eq!(answer(&s.get(&random_serial_path()).body), "unknown");
    assert_eq!(answer(&s.get(&random_serial_path()).body), "unauthorized");
    // Over budget: a nonce request for an issued certificate is answered, from
    // the pre-signed response, without the nonce.
    let legit = f.request(&leaf_serial(1), None).unwrap();
    let presigned = s.request("POST", "/", &[], &legit);
    assert_eq!(answer(&presigned.body), "good");
    let with_nonce = f
        .request(&leaf_serial(1), Some(&[0x04, 0x02, 7, 7]))
        .unwrap();
    let r = s.request("POST", "/", &[], &with_nonce);
    assert_eq!(answer(&r.body), "good");
    assert_eq!(r.body, presigned.body, "the pre-signed answer");
    // Revoked certificates too are never refused.
    s.state
        .set_status(&leaf_serial(2), revoked(Reason::KeyCompromise));
    let r = s.get(&get_path(&f.request(&leaf_serial(2), None).unwrap()));
    assert_eq!(answer(&r.body), "revoked");
    assert!(
        t0.elapsed() < Duration::from_millis(240),
        "test too slow to tell"
    );
    // 4 tokens a second: one more after 250 ms, then none again.
    std::thread::sleep(Duration::from_millis(300).saturating_sub(t0.elapsed()));
    assert_eq!(answer(&s.get(&random_serial_path()).body), "unknown");
    assert_eq!(answer(&s.get(&random_serial_path()).body), "unauthorized");
    // And a nonce request is honoured again once a token is back.
    std::thread::sleep(Duration::from_millis(300));
    let out = s.openssl_ocsp("leaf-0.pem", &["-nonce"]);
    assert!(
        out.contains("leaf-0.pem: good") && out.contains("OCSP Nonce"),
        "{out}"
    );
    assert_eq!(metric(&s, "chop_ocsp_sign_budget_exhausted_total"), 3.0);
    assert_eq!(metric(&s, "chop_ocsp_sign_budget_spent_total"), 4.0);
    s.stop();
}

/// Finding 4, responder side, as the attacker who can write the directory's
/// CRL files (or a feed that delivers them): a CRL signed by another key, one
/// with a lower cRLNumber than served (a rollback), one from another issuer.
/// None is served; the previous good CRL stays; each refusal is counted.
#[test]
fn directory_feeder_serves_only_the_cas_crls_in_increasing_order() {
    let dir = tempfile::tempdir().unwrap();
    let f = fixture();
    f.write_dir(dir.path()).unwrap();
    let crl_path = dir.path().join("crl/ca.crl");
    let good = f.crl_numbered(10, None).unwrap();
    std::fs::write(&crl_path, &good).unwrap();
    let state = StateHandle::new();
    let s = Server::with_state(state.clone(), ServerConfig::default());
    let feeder = DirFeeder {
        dir: dir.path().to_path_buf(),
        poll: Duration::from_millis(100),
        ocsp: OcspConfig::default(),
    };
    let (stop, rx) = watch::channel(false);
    let feeder_task = s.rt.spawn(feeder.run(state.clone(), rx));
    let t = Instant::now();
    while s.get("/readyz").code != 200 {
        assert!(t.elapsed() < Duration::from_secs(10), "never ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(s.get("/crl/ca.crl").body, good);

    let same_name_other_key = Fixture::new(0).unwrap();
    let (stranger, stranger_key) = Fixture::other_root("C=TW, O=Mallory, OU=Not this CA").unwrap();
    let attacks = [
        (
            "signature",
            same_name_other_key.crl_numbered(11, None).unwrap(),
        ),
        ("number", f.crl_numbered(9, None).unwrap()),
        (
            "issuer",
            responder::fixture::crl_signed(&stranger.der, &stranger_key, 12, None).unwrap(),
        ),
    ];
    for (reason, bad) in &attacks {
        let tmp = dir.path().join("crl/ca.crl.tmp");
        std::fs::write(&tmp, bad).unwrap();
        std::fs::rename(&tmp, &crl_path).unwrap();
        // Several poll periods: the bad CRL is never served.
        for _ in 0..6 {
            std::thread::sleep(Duration::from_millis(100));
            let r = s.get("/crl/ca.crl");
            assert_eq!(r.code, 200);
            assert!(r.body == good, "{reason}: a refused CRL was served");
        }
        let label = format!("chop_responder_crl_refused_total{{reason=\"{reason}\"}}");
        assert!(metric(&s, &label) >= 1.0, "{reason}: not counted");
    }
    // A good, higher-numbered CRL is served again at once.
    let newer = f.crl_numbered(13, None).unwrap();
    std::fs::write(&crl_path, &newer).unwrap();
    let t = Instant::now();
    while s.get("/crl/ca.crl").body != newer {
        assert!(t.elapsed() < Duration::from_secs(2), "newer CRL not served");
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.send(true).unwrap();
    s.rt.block_on(feeder_task).unwrap().unwrap();
    s.stop();
}

/// Material installed but no statuses yet (a feeder still listing): tryLater,
/// not `unknown` for every certificate, and no signature spent.
#[test]
fn try_later_until_statuses_are_loaded() {
    let state = StateHandle::new();
    state.install(fixture().material(OcspConfig::default()).unwrap());
    let s = Server::with_state(state, ServerConfig::default());
    let path = get_path(&fixture().request(&leaf_serial(0), None).unwrap());
    assert_eq!(answer(&s.get(&path).body), "tryLater");
    assert_eq!(metric(&s, "chop_ocsp_sign_budget_spent_total"), 0.0);
    s.state.load_statuses(fixture().statuses());
    assert_eq!(answer(&s.get(&path).body), "good");
    s.stop();
}

// ---- Issue 12: statuses from the PostgreSQL register (`--register postgres`).
// Like the register's contract tests: CHOP_PG_URL is required (scripts/test.sh
// runs the suite under `e2e/postgres.sh run`, which sets it and CHOP_PG_DIR).

fn pg_url() -> String {
    std::env::var("CHOP_PG_URL").expect(
        "CHOP_PG_URL is not set: run under `bash e2e/postgres.sh run -- cargo test -p chop-responder --test server`",
    )
}

/// The register tests share one PostgreSQL, and one of them restarts it.
static PG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn pg_lock() -> std::sync::MutexGuard<'static, ()> {
    PG.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A CA name no other test uses.
fn pg_ca(test: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("responder/{test}-{nanos}")
}

/// One runtime for the tests' own register connections (a connection's task
/// dies with the runtime that spawned it).
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    })
    .block_on(f)
}

/// The register (migrated), and CA `ca` given `certs` (serial, DER) through its
/// API: reserve, then commit.
async fn pg_register(ca: &str, certs: &[(Serial, Vec<u8>)]) -> PgRegister {
    chop_register::postgres::migrate(&pg_url()).await.unwrap();
    let r = PgRegister::connect(&pg_url(), 4).await.unwrap();
    let commits = certs.iter().map(|(serial, der)| {
        let r = r.clone();
        async move {
            let request = format!("{ca}/req-{}/uid", serial.to_hex());
            assert_eq!(
                r.reserve(ca, serial, &request).await.unwrap(),
                Reservation::Reserved
            );
            let c = NewCertificate {
                ca: ca.to_string(),
                serial: serial.clone(),
                request,
                subscriber: "sub".into(),
                key_fingerprint: [7; 32],
                not_before: SystemTime::now() - Duration::from_secs(60),
                not_after: SystemTime::now() + Duration::from_secs(86400),
                partition: None,
                der: der.clone(),
            };
            assert_eq!(r.commit(&c).await.unwrap(), Commit::Created);
        }
    });
    futures::future::join_all(commits).await;
    r
}

fn fixture_certs() -> Vec<(Serial, Vec<u8>)> {
    fixture()
        .leaves
        .iter()
        .map(|l| (l.serial.clone(), l.der.clone()))
        .collect()
}

fn change(r: &PgRegister, ca: &str, serial: &Serial, c: Change) -> Transition {
    block_on(r.change(ca, serial, c)).unwrap()
}

/// Poll `path` until it answers `want`; every answer on the way must be one of
/// `allowed`. Returns how long it took.
fn until(s: &Server, path: &str, want: &str, allowed: &[&str]) -> Duration {
    let started = Instant::now();
    loop {
        let got = answer(&s.get(path).body);
        if got == want {
            return started.elapsed();
        }
        assert!(
            allowed.contains(&got),
            "answered {got:?} while waiting for {want:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "still {got:?} after 20 s, want {want:?}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Certificates committed through the Register API, served from PostgreSQL:
/// good, revoked through `Register::change` (seen at once, through the
/// pre-signed cache, verified by OpenSSL with its reason), held and resumed;
/// a serial the register does not have is `unknown`, never `good`.
#[test]
fn register_statuses_follow_revocation_hold_and_resume() {
    let _pg = pg_lock();
    let ca = pg_ca("follow");
    let r = block_on(pg_register(&ca, &fixture_certs()));
    let s = Server::with_register(&ca, 1000, ServerConfig::default());
    let (l0, l1) = (leaf_serial(0), leaf_serial(1));
    let p0 = get_path(&fixture().request(&l0, None).unwrap());
    let p1 = get_path(&fixture().request(&l1, None).unwrap());
    assert_eq!(answer(&s.get(&p0).body), "good");
    assert_eq!(answer(&s.get(&p0).body), "good"); // pre-signed now
    assert!(
        s.openssl_ocsp("leaf-0.pem", &["-no_nonce"])
            .contains("leaf-0.pem: good")
    );
    assert!(metric(&s, "chop_ocsp_cache_hits_total") >= 1.0);

    let revoke = Change::Revoke {
        reason: Reason::KeyCompromise,
        at: SystemTime::now(),
        invalidity: None,
    };
    assert!(matches!(
        change(&r, &ca, &l0, revoke),
        Transition::Applied { .. }
    ));
    let took = until(&s, &p0, "revoked", &["good"]);
    assert!(took < Duration::from_secs(1), "revoked seen after {took:?}");
    let out = s.openssl_ocsp("leaf-0.pem", &["-no_nonce"]);
    assert!(out.contains("leaf-0.pem: revoked"), "{out}");
    assert!(out.contains("Reason: keyCompromise"), "{out}");

    // Held → revoked (certificateHold); resumed → good again.
    assert_eq!(answer(&s.get(&p1).body), "good");
    let hold = Change::Hold {
        at: SystemTime::now(),
    };
    assert!(matches!(
        change(&r, &ca, &l1, hold),
        Transition::Applied { .. }
    ));
    until(&s, &p1, "revoked", &["good"]);
    let out = s.openssl_ocsp("leaf-1.pem", &["-no_nonce"]);
    assert!(out.contains("Reason: certificateHold"), "{out}");
    assert!(matches!(
        change(&r, &ca, &l1, Change::Resume),
        Transition::Applied { .. }
    ));
    until(&s, &p1, "good", &["revoked"]);
    // Revoked stays revoked; the other leaves were never touched.
    assert_eq!(answer(&s.get(&p0).body), "revoked");
    // Not in the register (another CA's serial space): unknown.
    assert_eq!(answer(&s.get(&random_serial_path()).body), "unknown");
    assert!(metric(&s, "chop_responder_register_notifications_total") >= 3.0);
    assert_eq!(metric(&s, "chop_responder_register_errors_total"), 0.0);
    s.stop();
}

/// Many more serials queried than the status cache holds: the cache never
/// exceeds its bound, and every answer is still right (evicted statuses are
/// read again, not guessed).
#[test]
fn register_status_cache_stays_bounded() {
    let _pg = pg_lock();
    let ca = pg_ca("bounded");
    let serials: Vec<Serial> = (0..300u32)
        .map(|i| Serial::from_be_bytes(&(0x5000_0000 + i).to_be_bytes()).unwrap())
        .collect();
    let certs: Vec<_> = serials
        .iter()
        .map(|s| {
            (
                s.clone(),
                format!("certificate {}", s.to_hex()).into_bytes(),
            )
        })
        .collect();
    let r = block_on(pg_register(&ca, &certs));
    let revoke = Change::Revoke {
        reason: Reason::Superseded,
        at: SystemTime::now(),
        invalidity: None,
    };
    for s in serials.iter().step_by(10) {
        change(&r, &ca, s, revoke);
    }
    let config = ServerConfig {
        cache_entries: 64,
        ..ServerConfig::default()
    };
    let s = Server::with_register(&ca, 50, config);
    for round in 0..2 {
        for (i, serial) in serials.iter().enumerate() {
            let path = get_path(&fixture().request(serial, None).unwrap());
            let want = if i % 10 == 0 { "revoked" } else { "good" };
            assert_eq!(answer(&s.get(&path).body), want, "round {round} serial {i}");
        }
        let cached = metric(&s, "chop_responder_statuses");
        assert!(cached <= 50.0, "{cached} statuses cached, bound 50");
    }
    // Round 2 reads every status again, but the 64 responses still pre-signed.
    assert!(metric(&s, "chop_responder_register_queries_total") >= 600.0 - 64.0);
    s.stop();
}

fn pg_ctl(args: &[&str]) {
    let dir = std::env::var("CHOP_PG_DIR").expect("CHOP_PG_DIR (set by e2e/postgres.sh run)");
    let data = format!("{dir}/data");
    let log = format!("{dir}/server.log");
    let pg_ctl = format!(
        "{}/pg_ctl",
        std::env::var("CHOP_PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into())
    );
    let mut all = vec![pg_ctl.as_str(), "-D", &data, "-l", &log, "-w", "-t", "60"];
    all.extend_from_slice(args);
    // PostgreSQL refuses to run as root: e2e/postgres.sh runs it as `postgres`.
    let root = Command::new("id").arg("-u").output().unwrap().stdout == b"0\n";
    let out = if root {
        Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .args(&all)
            .output()
    } else {
        Command::new(all[0]).args(&all[1..]).output()
    }
    .unwrap();
    assert!(
        out.status.success(),
        "pg_ctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// PostgreSQL restarted while serving, as the crash: while it is down the
/// responder answers tryLater (never a cached "good"); a revocation made after
/// it came back but before the responder listens again (its notification is
/// lost) is served as soon as the responder answers again — never the stale
/// "good" it had pre-signed.
#[test]
fn register_restart_never_serves_a_missed_revocation_as_good() {
    let _pg = pg_lock();
    let ca = pg_ca("restart");
    let certs = fixture_certs();
    block_on(pg_register(&ca, &certs));
    let s = Server::with_register(&ca, 1000, ServerConfig::default());
    let serial = leaf_serial(2);
    let path = get_path(&fixture().request(&serial, None).unwrap());
    assert_eq!(answer(&s.get(&path).body), "good");
    assert_eq!(answer(&s.get(&path).body), "good"); // pre-signed

    pg_ctl(&["-m", "fast", "stop"]);
    until(&s, &path, "tryLater", &["good"]);
    assert_eq!(answer(&s.get(&path).body), "tryLater");
    assert_eq!(metric(&s, "chop_responder_register_following"), 0.0);
    pg_ctl(&["start"]);
    // Revoke at once: the responder waits 3 s before reconnecting, so nobody
    // listens for this notification.
    block_on(async {
        let r = PgRegister::connect(&pg_url(), 1).await.unwrap();
        let revoke = Change::Revoke {
            reason: Reason::KeyCompromise,
            at: SystemTime::now(),
            invalidity: None,
        };
        assert!(matches!(
            r.change(&ca, &serial, revoke).await.unwrap(),
            Transition::Applied { .. }
        ));
    });
    // Normally still tryLater here (the responder is not listening yet); on
    // a very slow restart it may already listen again, and then it must
    // answer revoked. Never good.
    let first = answer(&s.get(&path).body);
    assert!(["tryLater", "revoked"].contains(&first), "answered {first}");
    if first != "tryLater" {
        eprintln!(
            "the responder listened again before the revocation: the missed-notification path was not exercised"
        );
    }
    until(&s, &path, "revoked", &["tryLater"]);
    assert_eq!(metric(&s, "chop_responder_register_disconnects_total"), 1.0);
    assert_eq!(metric(&s, "chop_responder_register_following"), 1.0);
    // And it follows again: the next change is seen.
    let other = get_path(&fixture().request(&leaf_serial(3), None).unwrap());
    assert_eq!(answer(&s.get(&other).body), "good");
    let r = block_on(PgRegister::connect(&pg_url(), 1)).unwrap();
    let hold = Change::Hold {
        at: SystemTime::now(),
    };
    assert!(matches!(
        change(&r, &ca, &leaf_serial(3), hold),
        Transition::Applied { .. }
    ));
    until(&s, &other, "revoked", &["good"]);
    s.stop();
}
