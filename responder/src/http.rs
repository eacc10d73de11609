//! The HTTP layer: routing, OCSP over GET and POST, repository downloads, health
//! and metrics.
//!
//! | path | methods | answer |
//! |---|---|---|
//! | `/` , `/ocsp` | POST | OCSP request in the body (`application/ocsp-request`, at most [`ServerConfig::max_body`] octets, more → 413) |
//! | `/{base64}`, `/ocsp/{base64}` | GET, HEAD | OCSP request in the path (RFC 6960 A.1, RFC 5019 §5) |
//! | `/ca.crt`, `/ca.pem`, `/chain.pem` | GET, HEAD | CA certificate (DER, PEM), chain (PEM) |
//! | `/crl/<name>.crl` | GET, HEAD | current CRL (DER) |
//! | `/certs/<serial hex>.crt`, `.pem` | GET, HEAD | an issued certificate |
//! | `/healthz`, `/readyz`, `/metrics` | GET, HEAD | liveness, readiness, Prometheus text |
//!
//! Successful answers to requests without nonce come from the pre-signed cache
//! with RFC 5019 §6.2 headers (`Cache-Control: max-age`, `Last-Modified`,
//! `Expires`, `ETag`); a GET with a matching `If-None-Match` gets 304.
//!
//! A path that is none of the fixed ones is an OCSP GET: the base64 of a DER
//! OCSPRequest starts with `M`, so it never collides with them. Other methods get
//! 405 with `Allow`.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;

use ca::ocsp::{
    CertOutcome, OcspAnswer, OcspRequest, OcspResponder, ResponseStatus, parse_get_path,
    parse_request,
};
use ca::revocation::{CertStatus, StatusSource};
use ca::serial::Serial;

use crate::budget::SignBudget;
use crate::cache::{CachedResponse, ResponseCache};
use crate::metrics::{HttpLabels, Metrics, OcspLabels};
use crate::register_source::RegisterStatuses;
use crate::state::{SerialKey, StateHandle, cert_pem};

/// Server settings.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Largest POST body accepted (default 10 KiB); bigger → 413.
    pub max_body: usize,
    /// Most pre-signed responses kept (default 65,536; about 2 KiB each with an
    /// RSA-2048 responder certificate). 0 disables the cache.
    pub cache_entries: usize,
    /// A cached response is not served later than nextUpdate − this (default
    /// 5 min), so a relying party always gets a response with time to spare.
    pub next_update_margin: Duration,
    /// `Cache-Control: max-age` of repository downloads (default 5 min).
    pub repository_max_age: Duration,
    /// Log every request at `info` (default off: it costs throughput).
    pub log_requests: bool,
    /// How long to wait for open connections on shutdown (default 10 s).
    pub shutdown_grace: Duration,
    /// Signatures per second for answers that cannot be pre-signed (unknown
    /// serial, nonce, several CertIDs; [`crate::budget`]), default 100: about 4%
    /// of a core with RSA-2048. 0: never sign them.
    pub sign_budget: f64,
    /// Most such signatures in a burst (default 200).
    pub sign_burst: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_body: 10 * 1024,
            cache_entries: 65_536,
            next_update_margin: Duration::from_secs(300),
            repository_max_age: Duration::from_secs(300),
            log_requests: false,
            shutdown_grace: Duration::from_secs(10),
            sign_budget: 100.0,
            sign_burst: 200,
        }
    }
}

/// Everything a request handler needs.
#[derive(Debug)]
pub struct App {
    /// The state the feeder fills.
    pub state: StateHandle,
    /// Pre-signed responses.
    pub cache: ResponseCache,
    /// Metrics.
    pub metrics: Metrics,
    /// The signing budget for answers that cannot be pre-signed.
    pub budget: SignBudget,
    /// Settings.
    pub config: ServerConfig,
    /// Unix second of the last "signing budget exhausted" warning (one every
    /// [`BUDGET_WARN_EVERY`] seconds at most, so a flood does not flood the log).
    budget_warned_at: AtomicU64,
    /// Budget refusals since that warning.
    budget_refusals: AtomicU64,
    /// Where statuses are looked up, if not all in the state's table
    /// (`--register postgres`).
    pub register: Option<Arc<RegisterStatuses>>,
}

/// Seconds between two "signing budget exhausted" warnings.
pub const BUDGET_WARN_EVERY: u64 = 10;

impl App {
    /// An application over `state`.
    pub fn new(state: StateHandle, config: ServerConfig) -> Arc<Self> {
        Self::build(state, config, None)
    }

    /// An application answering with statuses from `register`; `state` must
    /// be [`StateHandle::with_register`] and followed by
    /// [`RegisterStatuses::follow`].
    pub fn with_register(
        state: StateHandle,
        config: ServerConfig,
        register: Arc<RegisterStatuses>,
    ) -> Arc<Self> {
        Self::build(state, config, Some(register))
    }

    fn build(
        state: StateHandle,
        config: ServerConfig,
        register: Option<Arc<RegisterStatuses>>,
    ) -> Arc<Self> {
        let mut metrics = Metrics::new();
        metrics.register_feed(&state);
        if let Some(r) = &register {
            metrics.register_register(r.stats());
        }
        Arc::new(App {
            register,
            state,
            cache: ResponseCache::new(config.cache_entries),
            metrics,
            budget: SignBudget::new(config.sign_budget, config.sign_burst),
            config,
            budget_warned_at: AtomicU64::new(0),
            budget_refusals: AtomicU64::new(0),
        })
    }
}

type Body = Full<Bytes>;

const OCSP_RESPONSE: HeaderValue = HeaderValue::from_static("application/ocsp-response");
const NO_CACHE: HeaderValue = HeaderValue::from_static("no-cache, no-store, must-revalidate");
const TEXT: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");

/// Accept connections on `listener` until `shutdown` turns true (or its sender is
/// dropped), then stop accepting and wait up to
/// [`ServerConfig::shutdown_grace`] for open connections to finish.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    mut shutdown: watch::Receiver<bool>,
) -> crate::Result<()> {
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .keep_alive(true);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(s) => s,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning or dying.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                app.metrics.connections.inc();
                let _ = stream.set_nodelay(true);
                let app = app.clone();
                let conn = builder.serve_connection(
                    TokioIo::new(stream),
                    service_fn(move |req| {
                        let app = app.clone();
                        async move { Ok::<_, Infallible>(handle(&app, req).await) }
                    }),
                );
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
            }
        }
    }
    drop(listener);
    tracing::info!("shutting down: waiting for open connections");
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(app.config.shutdown_grace) => {
            tracing::warn!("shutdown grace period over; closing remaining connections");
        }
    }
    Ok(())
}

/// Answer one request.
pub async fn handle(app: &App, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let (endpoint, resp) = route(app, req, &method, &path).await;
    app.metrics
        .http_requests
        .get_or_create(&HttpLabels {
            endpoint,
            code: resp.status().as_u16(),
        })
        .inc();
    if app.config.log_requests {
        // The path of an OCSP GET holds a serial: log only the endpoint and,
        // for OCSP, the answer and why.
        let code = resp.status().as_u16();
        match resp.extensions().get::<Decision>() {
            Some(d) => tracing::info!(
                %method,
                endpoint,
                code,
                ocsp_status = d.status,
                cert_status = d.cert_status,
                reason = d.reason,
                "request"
            ),
            None => tracing::info!(%method, endpoint, code, "request"),
        }
    }
    resp
}

/// What an OCSP request was answered and why, attached to the response for the
/// request log line (only with [`ServerConfig::log_requests`]).
#[derive(Clone, Copy, Debug)]
struct Decision {
    status: &'static str,
    cert_status: &'static str,
    reason: &'static str,
}

/// Why an OCSP answer has `status`, in a few words.
fn reason_of(status: &str) -> &'static str {
    match status {
        "successful" => "answered from the statuses served",
        "tryLater" => "no CA material or statuses loaded yet",
        "unauthorized" => "signing budget exhausted and no pre-signed answer applies",
        "malformedRequest" => "not a DER OCSPRequest",
        _ => "refused by the OCSP core",
    }
}

impl App {
    /// A request needed a signature and the budget had none: count it, and warn
    /// at most every [`BUDGET_WARN_EVERY`] seconds with the count.
    fn budget_refused(&self, now_secs: u64, answer: &'static str) {
        let refused = self.budget_refusals.fetch_add(1, Ordering::Relaxed) + 1;
        let last = self.budget_warned_at.load(Ordering::Relaxed);
        if now_secs >= last.saturating_add(BUDGET_WARN_EVERY)
            && self
                .budget_warned_at
                .compare_exchange(last, now_secs, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.budget_refusals.store(0, Ordering::Relaxed);
            tracing::warn!(
                decision = answer,
                reason = "signing budget exhausted",
                refused,
                budget_per_sec = self.config.sign_budget,
                burst = self.config.sign_burst,
                "OCSP requests that need a fresh signature are answered without one \
                 (pre-signed without nonce, or unsigned unauthorized) until the budget refills"
            );
        }
    }
}

async fn route(
    app: &App,
    req: Request<Incoming>,
    method: &Method,
    path: &str,
) -> (&'static str, Response<Body>) {
    let read_only = *method == Method::GET || *method == Method::HEAD;
    let fixed = |endpoint: &'static str, f: &dyn Fn() -> Response<Body>| {
        if read_only {
            (endpoint, f())
        } else {
            (endpoint, method_not_allowed("GET, HEAD"))
        }
    };
    match path {
        "/healthz" => fixed("health", &|| text(StatusCode::OK, "ok\n")),
        "/readyz" => fixed("health", &|| {
            if app.state.is_ready(SystemTime::now()) {
                text(StatusCode::OK, "ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
            }
        }),
        "/metrics" => fixed("metrics", &|| {
            app.metrics
                .sign_budget_tokens
                .set(app.budget.available(Instant::now()) as i64);
            let mut r = Response::new(Body::from(app.metrics.render(&app.state)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }),
        "/ca.crt" | "/ca.pem" | "/chain.pem" => fixed("repository", &|| repository(app, path)),
        p if p.starts_with("/crl/") || p.starts_with("/certs/") => {
            fixed("repository", &|| repository(app, path))
        }
        "/" | "/ocsp" if *method == Method::POST => ("ocsp", ocsp_post(app, req).await),
        _ if read_only => {
            let b64 = path.strip_prefix("/ocsp/").unwrap_or(path);
            let inm = req.headers().get(header::IF_NONE_MATCH);
            ("ocsp", ocsp_get(app, method, b64, inm).await)
        }
        _ => ("other", method_not_allowed("GET, HEAD, POST")),
    }
}

fn text(code: StatusCode, body: &'static str) -> Response<Body> {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = code;
    r.headers_mut().insert(header::CONTENT_TYPE, TEXT);
    r.headers_mut().insert(header::CACHE_CONTROL, NO_CACHE);
    r
}

fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

fn not_found() -> Response<Body> {
    text(StatusCode::NOT_FOUND, "not found\n")
}

fn blob(app: &App, data: Bytes, content_type: &'static str) -> Response<Body> {
    let mut r = Response::new(Body::from(data));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(&format!(
        "max-age={}, public",
        app.config.repository_max_age.as_secs()
    )) {
        h.insert(header::CACHE_CONTROL, v);
    }
    r
}

const PKIX_CERT: &str = "application/pkix-cert";
const PKIX_CRL: &str = "application/pkix-crl";
const PEM: &str = "application/x-pem-file";

fn repository(app: &App, path: &str) -> Response<Body> {
    let Some(m) = app.state.material() else {
        return text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n");
    };
    match path {
        "/ca.crt" => return blob(app, m.ca_der.clone(), PKIX_CERT),
        "/ca.pem" => return blob(app, m.ca_pem.clone(), PEM),
        "/chain.pem" => return blob(app, m.chain_pem.clone(), PEM),
        _ => {}
    }
    if let Some(name) = path
        .strip_prefix("/crl/")
        .and_then(|n| n.strip_suffix(".crl"))
    {
        return match m.crls.get(name) {
            Some(der) => blob(app, der.clone(), PKIX_CRL),
            None => not_found(),
        };
    }
    if let Some(file) = path.strip_prefix("/certs/") {
        let (hex, pem) = match (file.strip_suffix(".crt"), file.strip_suffix(".pem")) {
            (Some(h), _) => (h, false),
            (_, Some(h)) => (h, true),
            _ => return not_found(),
        };
        let Some(der) = hex_serial(hex).and_then(|s| m.certs.certificate(&s)) else {
            return not_found();
        };
        return if pem {
            match cert_pem(&der) {
                Ok(p) => blob(app, Bytes::from(p), PEM),
                Err(_) => not_found(),
            }
        } else {
            blob(app, der, PKIX_CERT)
        };
    }
    not_found()
}

fn hex_serial(hex: &str) -> Option<Serial> {
    if hex.is_empty() || hex.len() > 42 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Serial::from_hex(hex).ok()
}

async fn ocsp_post(app: &App, req: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    let max = app.config.max_body;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return too_large();
    }
    let body = match Limited::new(req.into_body(), max).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            if e.is::<http_body_util::LengthLimitError>() {
                return too_large();
            }
            return text(StatusCode::BAD_REQUEST, "cannot read request body\n");
        }
    };
    ocsp(app, "POST", &body, None, started).await
}

fn too_large() -> Response<Body> {
    text(StatusCode::PAYLOAD_TOO_LARGE, "OCSP request too large\n")
}

async fn ocsp_get(
    app: &App,
    method: &Method,
    b64: &str,
    if_none_match: Option<&HeaderValue>,
) -> Response<Body> {
    let started = Instant::now();
    let label = if *method == Method::HEAD {
        "HEAD"
    } else {
        "GET"
    };
    match parse_get_path(b64) {
        Ok(der) => ocsp(app, label, &der, if_none_match, started).await,
        Err(_) => {
            let status = ResponseStatus::MalformedRequest;
            finish(
                app,
                label,
                status.label(),
                "none",
                unsuccessful(status),
                started,
            )
        }
    }
}

fn unix_now() -> (SystemTime, u64) {
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    (now, secs)
}

fn secs_of(t: Option<SystemTime>) -> u64 {
    t.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

/// Whether an `If-None-Match` value names `etag` (a list, `*`, weak tags).
fn etag_matches(if_none_match: &HeaderValue, etag: &HeaderValue) -> bool {
    let Ok(list) = if_none_match.to_str() else {
        return false;
    };
    let etag = etag.as_bytes();
    list.split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t).as_bytes() == etag)
}

/// Answer a DER request: from the cache if possible, else sign — without limit
/// only what can be pre-signed ([`Class::Presignable`]), anything else within
/// the signing budget; beyond it a nonce request about a known certificate gets
/// the answer without nonce, any other the unsigned `unauthorized`. A GET whose
/// `If-None-Match` names the cached response's ETag gets 304 Not Modified
/// (RFC 9110 §13.1.2), so a caching proxy can revalidate without the body.
///
/// With a register ([`App::with_register`]) the statuses of the request's
/// serials are looked up first (bounded cache, else the database); a failed
/// lookup answers `tryLater`, never a guess.
async fn ocsp(
    app: &App,
    method: &'static str,
    der: &[u8],
    if_none_match: Option<&HeaderValue>,
    started: Instant,
) -> Response<Body> {
    let material = app.state.material().filter(|_| app.state.statuses_loaded());
    let Some(material) = material else {
        // RFC 6960 §2.3: tryLater while the responder has nothing to answer
        // with — no material, or no statuses yet (every serial would look
        // unknown and draw on the signing budget).
        return refuse(app, method, ResponseStatus::TryLater, started);
    };
    let (now, now_secs) = unix_now();
    let table = app.state.table();
    let req = match parse_request(der, material.ocsp.config().max_certs) {
        Ok(r) => r,
        Err(_) => {
            return refuse(app, method, ResponseStatus::MalformedRequest, started);
        }
    };
    let mut req = req;
    let mut key = req.cache_key();
    if let Some(hit) = from_cache(app, key.as_deref(), now_secs, if_none_match) {
        return finish(app, method, "successful", hit.0, hit.1, started);
    }
    // Read the generation before the statuses: a change that lands in between
    // makes the entry stale, never wrong.
    let generation = table.generation();
    let looked = match &app.register {
        None => None,
        Some(register) => {
            let serials: Vec<Serial> = req
                .certs
                .iter()
                .filter(|c| material.ocsp.serves(c))
                .filter_map(|c| c.serial())
                .collect();
            match register.lookup(table, &serials).await {
                Ok(l) => Some(l),
                Err(e) => {
                    tracing::debug!(error = %e, "register lookup failed: tryLater");
                    return refuse(app, method, ResponseStatus::TryLater, started);
                }
            }
        }
    };
    let statuses: &dyn StatusSource = match &looked {
        Some(l) => l,
        None => table,
    };
    if classify(&material.ocsp, &req, statuses) == Class::Budgeted {
        if app.budget.try_take(Instant::now()) {
            app.metrics.sign_budget_spent.inc();
        } else {
            app.metrics.sign_budget_exhausted.inc();
            // RFC 5019 §2.2.1: a responder that cannot honour a nonce "SHOULD
            // return a response that does not include a nonce": the pre-signed
            // answer, when the request is about one certificate it knows.
            let presignable = req.nonce.is_some() && {
                req.nonce = None;
                classify(&material.ocsp, &req, statuses) == Class::Presignable
            };
            app.budget_refused(
                now_secs,
                if presignable {
                    "pre-signed answer without nonce"
                } else {
                    "unauthorized"
                },
            );
            if !presignable {
                // RFC 6960 §2.3, RFC 5019 §2.2.3: "unauthorized" when the
                // responder "is not capable of responding authoritatively";
                // unsigned.
                return refuse(app, method, ResponseStatus::Unauthorized, started);
            }
            key = req.cache_key();
            if let Some(hit) = from_cache(app, key.as_deref(), now_secs, if_none_match) {
                return finish(app, method, "successful", hit.0, hit.1, started);
            }
        }
    }
    if key.is_some() {
        app.metrics.cache_misses.inc();
    }
    let answer = material.ocsp.respond_parsed(&req, statuses, now);
    let cert_status = cert_status_label(&answer);
    let status = answer.status.label();
    let resp = if answer.status == ResponseStatus::Successful && answer.cache.cacheable {
        match (&key, to_cached(app, &answer, generation)) {
            (Some(key), Some(entry)) => {
                let entry = Arc::new(entry);
                let resp = cached_response(&entry, now_secs);
                app.cache.insert(key, entry, now_secs);
                resp
            }
            _ => fresh_response(answer),
        }
    } else {
        if answer.status != ResponseStatus::Successful
            && let Some(detail) = &answer.detail
        {
            tracing::debug!(status, detail, "unsuccessful OCSP response");
        }
        fresh_response(answer)
    };
    finish(app, method, status, cert_status, resp, started)
}

/// The pre-signed answer under `key`, with its `cert_status` label; a GET whose
/// `If-None-Match` names its ETag gets 304 Not Modified (RFC 9110 §13.1.2).
fn from_cache(
    app: &App,
    key: Option<&[u8]>,
    now_secs: u64,
    if_none_match: Option<&HeaderValue>,
) -> Option<(&'static str, Response<Body>)> {
    let hit = app.cache.get(key?, now_secs, app.state.table())?;
    app.metrics.cache_hits.inc();
    let mut resp = cached_response(&hit, now_secs);
    if if_none_match.is_some_and(|v| etag_matches(v, &hit.etag)) {
        *resp.status_mut() = StatusCode::NOT_MODIFIED;
        *resp.body_mut() = Body::default();
    }
    Some((hit.cert_status, resp))
}

/// What answering a request would cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// No CertID names this CA: `unauthorized`, nothing to sign.
    Foreign,
    /// One CertID of a certificate the responder knows (good or revoked), in
    /// canonical DER (a minimal serial), without nonce: signed once, then served
    /// pre-signed until it changes or expires. The number of such answers is
    /// bounded by the certificates issued (times the four CertID hashes, with
    /// or without NULL parameters), so signing them needs no budget.
    Presignable,
    /// Anything else that is ours: an unknown serial, a nonce, several CertIDs,
    /// a non-minimal serial encoding. Each of these can be made unique per
    /// request, so each signature takes a token of the budget.
    Budgeted,
}

/// Classify `req` for `ocsp` with statuses from `table`.
pub fn classify(ocsp: &OcspResponder, req: &OcspRequest<'_>, table: &dyn StatusSource) -> Class {
    if !req.certs.iter().any(|c| ocsp.serves(c)) {
        return Class::Foreign;
    }
    let [c] = req.certs.as_slice() else {
        return Class::Budgeted;
    };
    if req.nonce.is_some() {
        return Class::Budgeted;
    }
    match c.serial() {
        Some(s)
            if s.der_content() == c.serial_content && table.status(&s) != CertStatus::Unknown =>
        {
            Class::Presignable
        }
        _ => Class::Budgeted,
    }
}

/// An unsuccessful answer (RFC 6960 §2.3), counted like every other.
fn refuse(
    app: &App,
    method: &'static str,
    status: ResponseStatus,
    started: Instant,
) -> Response<Body> {
    finish(
        app,
        method,
        status.label(),
        "none",
        unsuccessful(status),
        started,
    )
}

fn finish(
    app: &App,
    method: &'static str,
    status: &'static str,
    cert_status: &'static str,
    resp: Response<Body>,
    started: Instant,
) -> Response<Body> {
    app.metrics
        .ocsp_requests
        .get_or_create(&OcspLabels {
            method,
            status,
            cert_status,
        })
        .inc();
    app.metrics
        .ocsp_duration
        .observe(started.elapsed().as_secs_f64());
    let mut resp = resp;
    if app.config.log_requests {
        resp.extensions_mut().insert(Decision {
            status,
            cert_status,
            reason: reason_of(status),
        });
    }
    resp
}

fn cert_status_label(answer: &OcspAnswer) -> &'static str {
    let mut labels = answer.certs.iter().map(|(_, o)| o.label());
    match labels.next() {
        None => "none",
        Some(first) => {
            if labels.all(|l| l == first) {
                first
            } else {
                "mixed"
            }
        }
    }
}

fn to_cached(app: &App, answer: &OcspAnswer, generation: u64) -> Option<CachedResponse> {
    let this_update = answer.cache.this_update?;
    let next_update = answer.cache.next_update?;
    let this_secs = secs_of(Some(this_update));
    let next_secs = secs_of(Some(next_update));
    let valid_until = (this_secs + answer.cache.max_age_secs)
        .min(next_secs.saturating_sub(app.config.next_update_margin.as_secs()));
    let serials = answer
        .certs
        .iter()
        .filter_map(|(s, o)| match o {
            CertOutcome::ForeignIssuer => None,
            _ => s.as_ref().map(SerialKey::new),
        })
        .collect();
    Some(CachedResponse {
        der: Bytes::from(answer.der.clone()),
        etag: HeaderValue::from_str(&format!("\"{}\"", answer.cache.etag)).ok()?,
        last_modified: HeaderValue::from_str(&httpdate::fmt_http_date(this_update)).ok()?,
        expires: HeaderValue::from_str(&httpdate::fmt_http_date(next_update)).ok()?,
        valid_until,
        serials,
        generation,
        cert_status: cert_status_label(answer),
    })
}

/// A cached response with RFC 5019 §6.2 headers; max-age counts down so that no
/// HTTP cache keeps it past the entry's own validity.
fn cached_response(entry: &CachedResponse, now_secs: u64) -> Response<Body> {
    let mut r = Response::new(Body::from(entry.der.clone()));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, OCSP_RESPONSE);
    let max_age = entry.valid_until.saturating_sub(now_secs);
    if let Ok(v) = HeaderValue::from_str(&format!(
        "max-age={max_age}, public, no-transform, must-revalidate"
    )) {
        h.insert(header::CACHE_CONTROL, v);
    }
    h.insert(header::LAST_MODIFIED, entry.last_modified.clone());
    h.insert(header::EXPIRES, entry.expires.clone());
    h.insert(header::ETAG, entry.etag.clone());
    r
}

/// A response that is not cached: signed with a nonce, or unsuccessful.
fn fresh_response(answer: OcspAnswer) -> Response<Body> {
    let mut r = Response::new(Body::from(answer.der));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, OCSP_RESPONSE);
    if answer.status == ResponseStatus::Successful {
        // With a nonce: unique to this request, useless to any cache.
        h.insert(header::CACHE_CONTROL, NO_CACHE);
        if let Some(t) = answer.cache.this_update
            && let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(t))
        {
            h.insert(header::LAST_MODIFIED, v);
        }
    } else {
        h.insert(header::CACHE_CONTROL, NO_CACHE);
    }
    r
}

fn unsuccessful(status: ResponseStatus) -> Response<Body> {
    let mut r = Response::new(Body::from(status.unsigned_response()));
    r.headers_mut().insert(header::CONTENT_TYPE, OCSP_RESPONSE);
    r.headers_mut().insert(header::CACHE_CONTROL, NO_CACHE);
    r
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::fixture::Fixture;

    #[test]
    fn only_one_canonical_known_certid_without_nonce_is_presignable() {
        let f = Fixture::new(2).unwrap();
        let m = f.material(ca::ocsp::OcspConfig::default()).unwrap();
        let state = StateHandle::new();
        state.load_statuses(f.statuses());
        let table = state.table();
        let known = f.request(&f.leaves[0].serial, None).unwrap();
        let class = |der: &[u8]| classify(&m.ocsp, &parse_request(der, 64).unwrap(), table);
        assert_eq!(class(&known), Class::Presignable);
        state.forget(&f.leaves[0].serial);
        assert_eq!(class(&known), Class::Budgeted, "unknown serial");
        state.set_status(&f.leaves[0].serial, CertStatus::Good);
        let nonce = f.request(&f.leaves[0].serial, Some(&[4, 1, 9])).unwrap();
        assert_eq!(class(&nonce), Class::Budgeted, "nonce");
        let ca = <x509_cert::Certificate as der::Decode>::from_der(&f.ca.der).unwrap();
        let two = ca::ocsp::build_request(
            &ca,
            &[f.leaves[0].serial.clone(), f.leaves[1].serial.clone()],
            ca::ocsp::CertIdHash::Sha256,
            None,
        )
        .unwrap();
        assert_eq!(class(&two), Class::Budgeted, "several CertIDs");
        // The same serial with a leading zero octet: another cache key for the
        // same certificate, as many as an attacker likes.
        let req = parse_request(&known, 64).unwrap();
        let padded: Vec<u8> = [&[0u8][..], req.certs[0].serial_content].concat();
        let mut odd = req.clone();
        odd.certs[0].serial_content = &padded;
        assert_eq!(odd.certs[0].serial(), Some(f.leaves[0].serial.clone()));
        assert_eq!(classify(&m.ocsp, &odd, table), Class::Budgeted);
        // Another issuer's CertID: nothing to sign.
        let mut foreign = req.clone();
        foreign.certs[0].issuer_key_hash = &[0u8; 20];
        assert_eq!(classify(&m.ocsp, &foreign, table), Class::Foreign);
    }
}
