//! Statuses from the PostgreSQL register (`--register postgres`, issue 12): the
//! responder of a CA of millions of certificates, in bounded memory.
//!
//! The feeder (`--dir` or `--kube`) still installs the CA material; the
//! statuses come from [`chop_register::postgres::PgRegister`]:
//! - **Lookup** ([`RegisterStatuses::lookup`]): a request's serial is looked up
//!   in the bounded status cache ([`StatusTable::bounded`], `--status-cache N`
//!   entries, oldest evicted first), else read from PostgreSQL by an indexed
//!   point query (the primary key of `status`) and cached, an unknown serial
//!   included (its issuance is notified too). A read that a notification
//!   overtook is not cached and is read again ([`StatusTable::fill`]).
//! - **Changes** ([`RegisterStatuses::follow`]): `LISTEN chop_register_status`
//!   on a connection of its own; each change of this CA drops the serial's
//!   cached status and makes every pre-signed response about it stale (the
//!   status generation, [`crate::cache`]): the next request reads the new
//!   status. No polling.
//! - **Lost connection**: when the notification connection ends (PostgreSQL
//!   restarted, network), the responder stops answering (`tryLater`,
//!   RFC 6960 §2.3) and drops every cached status and response; it reconnects
//!   (LISTEN first, then the query connections) and only then answers again, so
//!   a change made while it was not listening is read from the database, never
//!   missed. A lookup that fails or takes longer than the timeout answers
//!   `tryLater` too (`chop_responder_register_errors_total`): never a guess.
//!
//! Memory: the status cache (at most `--status-cache` entries, about 100 bytes
//! each), the change log of [`StatusTable`] (at most 65,536 serials) and the
//! pre-signed response cache (`--cache-entries`): none of it grows with the
//! register.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use ca::revocation::{CertStatus, Reason, StatusSource};
use ca::serial::Serial;
use chop_register::api::State;
use chop_register::postgres::{self, PgRegister};
use futures::StreamExt;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::watch;
use zeroize::Zeroizing;

use crate::state::{SerialKey, StateHandle, StatusTable};
use crate::{Error, Result};

/// What the register source reports, exported by [`crate::metrics`].
#[derive(Debug, Default, Clone)]
pub struct RegisterStats {
    /// Status cache hits (`chop_responder_register_cache_hits_total`).
    pub hits: Counter,
    /// Point queries to the database (`chop_responder_register_queries_total`).
    pub queries: Counter,
    /// Lookups that failed or timed out: answered `tryLater`
    /// (`chop_responder_register_errors_total`).
    pub errors: Counter,
    /// Change notifications of this CA applied
    /// (`chop_responder_register_notifications_total`).
    pub notifications: Counter,
    /// Times the notification connection was lost
    /// (`chop_responder_register_disconnects_total`).
    pub disconnects: Counter,
    /// 1 while the change feed is followed (`chop_responder_register_following`).
    pub following: Gauge,
}

/// Settings of the register source.
#[derive(Clone)]
pub struct RegisterConfig {
    /// The PostgreSQL URL. Holds the password: never logged, not in `Debug`.
    pub url: Zeroizing<String>,
    /// The CA, `namespace/name`, as the register names it.
    pub ca: String,
    /// Query connections (default 2; queries are pipelined on each).
    pub connections: usize,
    /// Longest wait for a lookup before answering `tryLater` (default 2 s).
    pub timeout: Duration,
    /// Wait before reconnecting after the connection was lost (default 500 ms;
    /// doubled after each failed attempt, up to 5 s).
    pub reconnect_delay: Duration,
}

impl std::fmt::Debug for RegisterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegisterConfig")
            .field("url", &"<redacted>")
            .field("ca", &self.ca)
            .field("connections", &self.connections)
            .field("timeout", &self.timeout)
            .field("reconnect_delay", &self.reconnect_delay)
            .finish()
    }
}

impl RegisterConfig {
    /// Settings for CA `ca` at `url`, defaults otherwise.
    pub fn new(url: impl Into<String>, ca: impl Into<String>) -> Self {
        RegisterConfig {
            url: Zeroizing::new(url.into()),
            ca: ca.into(),
            connections: 2,
            timeout: Duration::from_secs(2),
            reconnect_delay: Duration::from_millis(500),
        }
    }
}

/// The statuses of one CA in the PostgreSQL register, looked up per request.
pub struct RegisterStatuses {
    config: RegisterConfig,
    /// `None` until connected (and while reconnecting after a loss).
    pool: ArcSwap<Option<PgRegister>>,
    stats: RegisterStats,
}

impl std::fmt::Debug for RegisterStatuses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegisterStatuses")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The statuses of one request's serials, as looked up: what the OCSP
/// responder signs from. Serials not in it are [`CertStatus::Unknown`].
#[derive(Debug, Default)]
pub struct Looked(Vec<(SerialKey, CertStatus)>);

impl StatusSource for Looked {
    fn status(&self, serial: &Serial) -> CertStatus {
        let key = SerialKey::new(serial);
        self.0
            .iter()
            .find(|(k, _)| *k == key)
            .map_or(CertStatus::Unknown, |(_, s)| *s)
    }
}

/// The OCSP status of a register record.
fn cert_status(
    found: Option<(chop_register::api::Status, Option<std::time::SystemTime>)>,
) -> CertStatus {
    let Some((status, invalidity)) = found else {
        return CertStatus::Unknown;
    };
    match (status.state, status.revoked) {
        (State::Valid, _) => CertStatus::Good,
        (State::Held, Some((_, time))) => CertStatus::Revoked {
            time,
            reason: Reason::CertificateHold,
            invalidity_date: None,
        },
        (State::Revoked, Some((reason, time))) => CertStatus::Revoked {
            time,
            reason,
            invalidity_date: invalidity,
        },
        // The schema's CHECK makes this impossible; never good if it happens.
        (_, None) => CertStatus::Unknown,
    }
}

/// Reads of one serial before giving up when notifications keep overtaking them.
const READS: usize = 3;

/// Longest wait between two connection attempts while the database is down.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(5);

impl RegisterStatuses {
    /// A source for `config` (not connected: [`RegisterStatuses::follow`]
    /// connects).
    pub fn new(config: RegisterConfig) -> Arc<Self> {
        Arc::new(RegisterStatuses {
            config,
            pool: ArcSwap::from_pointee(None),
            stats: RegisterStats::default(),
        })
    }

    /// The counters.
    pub fn stats(&self) -> &RegisterStats {
        &self.stats
    }

    /// The statuses of `serials`, from `table` (the bounded cache) or the
    /// database. Fails (the caller answers `tryLater`) when the database cannot
    /// be read in time or the change feed is not followed.
    pub async fn lookup(&self, table: &StatusTable, serials: &[Serial]) -> Result<Looked> {
        let mut out = Vec::with_capacity(serials.len());
        for serial in serials {
            let key = SerialKey::new(serial);
            if out.iter().any(|(k, _)| *k == key) {
                continue;
            }
            let status = match table.cached(&key) {
                Some(s) => {
                    self.stats.hits.inc();
                    s
                }
                None => self.read(table, key, serial).await.inspect_err(|_| {
                    self.stats.errors.inc();
                })?,
            };
            out.push((key, status));
        }
        Ok(Looked(out))
    }

    async fn read(
        &self,
        table: &StatusTable,
        key: SerialKey,
        serial: &Serial,
    ) -> Result<CertStatus> {
        for _ in 0..READS {
            let pool = self.pool.load_full();
            let Some(pool) = pool.as_ref() else {
                return Err(Error::invalid("register", "not connected"));
            };
            // The generation before the read: a change notified after it makes
            // this read unfit for the cache (fill refuses it).
            let read_at = table.generation();
            self.stats.queries.inc();
            let found = tokio::time::timeout(
                self.config.timeout,
                pool.ocsp_status(&self.config.ca, serial),
            )
            .await
            .map_err(|_| Error::invalid("register", "lookup timed out"))?
            .map_err(|e| Error::invalid("register", e))?;
            let status = cert_status(found);
            if table.fill(key, status, read_at) {
                return Ok(status);
            }
        }
        Err(Error::invalid(
            "register",
            "the status kept changing while being read",
        ))
    }

    /// Follow the register's changes into `state` until `shutdown`: connect,
    /// `LISTEN`, connect the query pool, then answer; on a lost connection stop
    /// answering, drop every cached status and response, and start over.
    /// Connection failures are logged (never the URL) and retried.
    pub async fn follow(
        self: Arc<Self>,
        state: StateHandle,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<()> {
        let mut first = true;
        // Doubles after each failed attempt, up to MAX_RECONNECT_DELAY.
        let mut delay = self.config.reconnect_delay;
        loop {
            if *shutdown.borrow() {
                return Ok(());
            }
            if !first {
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.changed() => return Ok(()),
                }
            }
            first = false;
            let stream = match postgres::follow(&self.config.url).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?delay, "cannot follow the register's changes; retrying");
                    delay = (delay * 2).min(MAX_RECONNECT_DELAY.max(self.config.reconnect_delay));
                    continue;
                }
            };
            let pool = match PgRegister::connect(&self.config.url, self.config.connections).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?delay, "cannot connect to the register; retrying");
                    delay = (delay * 2).min(MAX_RECONNECT_DELAY.max(self.config.reconnect_delay));
                    continue;
                }
            };
            delay = self.config.reconnect_delay;
            self.pool.store(Arc::new(Some(pool)));
            // Listening since before this point: whatever changed before is
            // read from the database, whatever changes after is notified.
            state.set_following(true);
            self.stats.following.set(1);
            tracing::info!(ca = %self.config.ca, "following the register's changes");
            futures::pin_mut!(stream);
            let mut check = tokio::time::interval(Duration::from_secs(1));
            let stop = loop {
                tokio::select! {
                    change = stream.next() => match change {
                        Some(c) if c.ca == self.config.ca => {
                            self.stats.notifications.inc();
                            state.table().apply([(c.serial, None)]);
                        }
                        Some(_) => {}
                        None => break false,
                    },
                    _ = check.tick() => {
                        let closed = self.pool.load().as_ref().as_ref().is_none_or(PgRegister::is_closed);
                        if closed {
                            break false;
                        }
                    }
                    _ = shutdown.changed() => break true,
                }
            };
            // Not following any more: no answer until followed again.
            state.set_following(false);
            self.stats.following.set(0);
            self.pool.store(Arc::new(None));
            if stop {
                return Ok(());
            }
            self.stats.disconnects.inc();
            tracing::warn!(ca = %self.config.ca, "lost the register's change feed: answering tryLater until reconnected");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn debug_never_prints_the_url() {
        let c = RegisterConfig::new("postgres://chop:s3cret@127.0.0.1/chop", "ns/ca");
        let s = RegisterStatuses::new(c.clone());
        for text in [format!("{c:?}"), format!("{s:?}")] {
            assert!(!text.contains("s3cret"), "{text}");
            assert!(text.contains("ns/ca"));
        }
    }

    fn serial(n: u32) -> Serial {
        Serial::from_be_bytes(&(n + 0x100).to_be_bytes()).unwrap()
    }

    #[test]
    fn the_status_cache_stays_within_its_bound() {
        let t = StatusTable::bounded(100);
        for i in 0..10_000 {
            let g = t.generation();
            assert!(t.fill(SerialKey::new(&serial(i)), CertStatus::Good, g));
            if i % 3 == 0 {
                // A notification drops some: the eviction order must not grow.
                t.apply([(serial(i), None)]);
            }
            assert!(t.len() <= 100);
        }
        assert!(t.cached(&SerialKey::new(&serial(9_998))).is_some());
        assert!(t.cached(&SerialKey::new(&serial(1))).is_none(), "evicted");
    }

    #[test]
    fn a_read_overtaken_by_a_notification_is_not_cached() {
        let t = StatusTable::bounded(10);
        let k = SerialKey::new(&serial(1));
        let read_at = t.generation();
        // The revocation is notified while the read (of "good") is in flight.
        t.apply([(serial(1), None)]);
        assert!(!t.fill(k, CertStatus::Good, read_at));
        assert!(t.cached(&k).is_none());
        // Losing the feed drops everything, and reads begun before stay out.
        let read_at = t.generation();
        t.replace(std::iter::empty());
        assert!(!t.fill(SerialKey::new(&serial(2)), CertStatus::Good, read_at));
        assert!(t.fill(k, CertStatus::Good, t.generation()));
    }
}
