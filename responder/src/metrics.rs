//! Prometheus metrics (`/metrics`), all prefixed `chop_`. Labels carry no serials,
//! names or other personal data (CPS §9.3, §9.4).
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `chop_ocsp_requests_total` | counter | `method` (GET, POST), `status` (OCSP responseStatus: successful, malformedRequest, unauthorized, internalError, tryLater), `cert_status` (good, revoked, unknown, foreign, mixed, none) |
//! | `chop_ocsp_request_duration_seconds` | histogram | — (handler time, without network) |
//! | `chop_ocsp_cache_hits_total`, `chop_ocsp_cache_misses_total` | counter | — (requests without nonce only) |
//! | `chop_ocsp_sign_budget_spent_total`, `chop_ocsp_sign_budget_exhausted_total` | counter | — (answers that could not be pre-signed: signed with a token of the budget; refused for want of one) |
//! | `chop_ocsp_sign_budget_tokens` | gauge | — (tokens left, rounded down) |
//! | `chop_http_requests_total` | counter | `endpoint` (ocsp, repository, health, metrics, other), `code` |
//! | `chop_http_connections_total` | counter | — (accepted TCP connections) |
//! | `chop_responder_state_generation` | gauge | — (status generation; increases with every change) |
//! | `chop_responder_statuses` | gauge | — (serials known; `--register`: statuses cached) |
//! | `chop_responder_certificate_not_after_seconds` | gauge | — (responder certificate notAfter, Unix seconds; 0 before load) |
//! | `chop_responder_ready` | gauge | — (1 when `/readyz` would say ready) |
//! | `chop_responder_feed_events_total` | counter | — (watch events the feeder applied; Kubernetes feeder) |
//! | `chop_responder_crl_refused_total` | counter | `reason` (unparsable, issuer, signature, scope, number: CRLs not served, [`crate::crl_check`]) |
//! | `chop_responder_feed_last_sync_seconds` | gauge | — (end of the feeder's last full list of certificates, Unix seconds; 0 before) |
//! | `chop_responder_register_cache_hits_total`, `chop_responder_register_queries_total` | counter | — (`--register postgres`: statuses from the bounded cache, from the database) |
//! | `chop_responder_register_errors_total` | counter | — (lookups failed or timed out: answered tryLater) |
//! | `chop_responder_register_notifications_total`, `chop_responder_register_disconnects_total` | counter | — (changes of this CA applied; change feed lost) |
//! | `chop_responder_register_following` | gauge | — (1 while the change feed is followed) |

use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::state::StateHandle;

/// Labels of `chop_ocsp_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OcspLabels {
    /// HTTP method.
    pub method: &'static str,
    /// OCSP responseStatus.
    pub status: &'static str,
    /// Certificate status answered.
    pub cert_status: &'static str,
}

/// Labels of `chop_http_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// Which endpoint family.
    pub endpoint: &'static str,
    /// HTTP status code.
    pub code: u16,
}

/// The responder's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// `chop_ocsp_requests_total`.
    pub ocsp_requests: Family<OcspLabels, Counter>,
    /// `chop_ocsp_request_duration_seconds`.
    pub ocsp_duration: Histogram,
    /// `chop_ocsp_cache_hits_total`.
    pub cache_hits: Counter,
    /// `chop_ocsp_cache_misses_total`.
    pub cache_misses: Counter,
    /// `chop_ocsp_sign_budget_spent_total`.
    pub sign_budget_spent: Counter,
    /// `chop_ocsp_sign_budget_exhausted_total`.
    pub sign_budget_exhausted: Counter,
    /// `chop_ocsp_sign_budget_tokens`.
    pub sign_budget_tokens: Gauge,
    /// `chop_http_requests_total`.
    pub http_requests: Family<HttpLabels, Counter>,
    /// `chop_http_connections_total`.
    pub connections: Counter,
    generation: Gauge,
    statuses: Gauge,
    not_after: Gauge,
    ready: Gauge,
}

/// Latency buckets: 10 µs to 1 s.
const BUCKETS: [f64; 14] = [
    0.000_01, 0.000_02, 0.000_05, 0.000_1, 0.000_2, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1,
    0.5, 1.0,
];

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Register every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("chop");
        let ocsp_requests = Family::<OcspLabels, Counter>::default();
        let ocsp_duration = Histogram::new(BUCKETS);
        let cache_hits = Counter::default();
        let cache_misses = Counter::default();
        let sign_budget_spent = Counter::default();
        let sign_budget_exhausted = Counter::default();
        let sign_budget_tokens = Gauge::default();
        let http_requests = Family::<HttpLabels, Counter>::default();
        let connections = Counter::default();
        let generation = Gauge::default();
        let statuses = Gauge::default();
        let not_after = Gauge::default();
        let ready = Gauge::default();
        registry.register(
            "ocsp_requests",
            "OCSP requests by method, OCSP response status and certificate status",
            ocsp_requests.clone(),
        );
        registry.register(
            "ocsp_request_duration_seconds",
            "Time to answer an OCSP request (handler only)",
            ocsp_duration.clone(),
        );
        registry.register(
            "ocsp_cache_hits",
            "OCSP requests without nonce answered from the pre-signed cache",
            cache_hits.clone(),
        );
        registry.register(
            "ocsp_cache_misses",
            "OCSP requests without nonce that had to be signed",
            cache_misses.clone(),
        );
        registry.register(
            "ocsp_sign_budget_spent",
            "OCSP answers that could not be pre-signed (unknown serial, nonce, several CertIDs) signed with a token of the budget",
            sign_budget_spent.clone(),
        );
        registry.register(
            "ocsp_sign_budget_exhausted",
            "OCSP answers that could not be pre-signed and found the signing budget empty (answered unsigned unauthorized, or without nonce)",
            sign_budget_exhausted.clone(),
        );
        registry.register(
            "ocsp_sign_budget_tokens",
            "Tokens left in the signing budget",
            sign_budget_tokens.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests by endpoint and status code",
            http_requests.clone(),
        );
        registry.register(
            "http_connections",
            "Accepted TCP connections",
            connections.clone(),
        );
        registry.register(
            "responder_state_generation",
            "Status generation: increases with every status or material change",
            generation.clone(),
        );
        registry.register(
            "responder_statuses",
            "Certificates whose status the responder knows",
            statuses.clone(),
        );
        registry.register(
            "responder_certificate_not_after_seconds",
            "notAfter of the OCSP responder certificate (Unix seconds)",
            not_after.clone(),
        );
        registry.register(
            "responder_ready",
            "1 when state is loaded and the responder certificate is valid",
            ready.clone(),
        );
        Metrics {
            registry,
            ocsp_requests,
            ocsp_duration,
            cache_hits,
            cache_misses,
            sign_budget_spent,
            sign_budget_exhausted,
            sign_budget_tokens,
            http_requests,
            connections,
            generation,
            statuses,
            not_after,
            ready,
        }
    }

    /// Export the feeder's counters of `state` ([`crate::state::FeedStats`]).
    pub fn register_feed(&mut self, state: &StateHandle) {
        let feed = state.feed().clone();
        self.registry.register(
            "responder_feed_events",
            "Watch events applied by the feeder",
            feed.events,
        );
        self.registry.register(
            "responder_crl_refused",
            "CRLs not served: not signed by the CA, another issuer, another scope, or a lower cRLNumber than served",
            feed.crl_refused,
        );
        self.registry.register(
            "responder_feed_last_sync_seconds",
            "When the feeder last completed a full list of certificates (Unix seconds)",
            feed.last_sync,
        );
    }

    /// Export the register source's counters (`--register postgres`).
    pub fn register_register(&mut self, stats: &crate::register_source::RegisterStats) {
        let s = stats.clone();
        self.registry.register(
            "responder_register_cache_hits",
            "Statuses answered from the bounded status cache",
            s.hits,
        );
        self.registry.register(
            "responder_register_queries",
            "Statuses read from the register by point query",
            s.queries,
        );
        self.registry.register(
            "responder_register_errors",
            "Status lookups that failed or timed out (answered tryLater)",
            s.errors,
        );
        self.registry.register(
            "responder_register_notifications",
            "Status change notifications of this CA applied",
            s.notifications,
        );
        self.registry.register(
            "responder_register_disconnects",
            "Times the register's change feed was lost",
            s.disconnects,
        );
        self.registry.register(
            "responder_register_following",
            "1 while the register's change feed is followed",
            s.following,
        );
    }

    /// The Prometheus text exposition, with the state gauges refreshed from
    /// `state`.
    pub fn render(&self, state: &StateHandle) -> String {
        let now = SystemTime::now();
        self.generation
            .set(i64::try_from(state.table().generation()).unwrap_or(i64::MAX));
        self.statuses
            .set(i64::try_from(state.table().len()).unwrap_or(i64::MAX));
        let not_after = state
            .material()
            .and_then(|m| m.responder_not_after.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        self.not_after.set(not_after);
        self.ready.set(i64::from(state.is_ready(now)));
        let mut out = String::with_capacity(8192);
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
