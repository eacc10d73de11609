//! The PostgreSQL register: a CA's certificates in the database users already
//! run (replicas, managed offerings, PostgreSQL-compatible distributed engines),
//! for CAs that outgrow etcd (issue 12).
//!
//! Schema: `register/migrations/` (versioned, applied by [`migrate`] under an
//! advisory lock, each in one transaction, never edited once released). Every
//! write is one SQL statement, so it is atomic without an explicit transaction
//! and can be pipelined on a shared connection:
//! - reserve: `INSERT … ON CONFLICT DO NOTHING`, then the request's existing row;
//! - commit: the certificate and its status row in one statement (data-modifying
//!   CTE), only under the request's reservation;
//! - status changes: conditional `UPDATE … WHERE state …`.
//!
//! Responders follow changes with `LISTEN chop_register_status` ([`follow`]):
//! the trigger of migration 1 notifies each status change, with no polling.
//!
//! Non-goals (today): TLS to the database (connect over loopback or a private
//! network; a URL with `sslmode=require` is refused rather than silently sent in
//! clear); the Kubernetes register behind the same trait (chop-controller keeps
//! its own today).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use ca::revocation::{Reason, RevokedEntry};
use ca::serial::Serial;
use futures::{Stream, StreamExt};
use tokio_postgres::{AsyncMessage, Client, NoTls};

use crate::api::{
    Change, Commit, NewCertificate, Register, Reservation, State, Status, Summary, Transition,
};
use crate::{Error, Result};

/// The migrations, in order: (version, name, SQL).
pub const MIGRATIONS: &[(i32, &str, &str)] = &[(
    1,
    "0001_register",
    include_str!("../migrations/0001_register.sql"),
)];

/// The channel status changes are notified on.
pub const CHANNEL: &str = "chop_register_status";

fn db(action: &'static str) -> impl Fn(tokio_postgres::Error) -> Error {
    move |source| Error::Database { action, source }
}

async fn connect_one(url: &str) -> Result<Client> {
    if url.contains("sslmode=require") || url.contains("sslmode=verify") {
        return Err(Error::Config {
            message: "TLS to PostgreSQL is not supported yet: connect over loopback or a private network (docs/register.md)".into(),
        });
    }
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .map_err(db("connect to PostgreSQL"))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "PostgreSQL connection ended");
        }
    });
    Ok(client)
}

/// Apply the migrations the database does not have yet; returns how many ran.
/// Safe to call from several processes at once (advisory lock).
pub async fn migrate(url: &str) -> Result<usize> {
    let mut client = connect_one(url).await?;
    let tx = client.transaction().await.map_err(db("begin migration"))?;
    // One migrator at a time (the key is arbitrary, fixed: "chop" in ASCII).
    tx.execute("SELECT pg_advisory_xact_lock(1667788656)", &[])
        .await
        .map_err(db("lock for migration"))?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS chop_register_migrations (
             version integer PRIMARY KEY, name text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .await
    .map_err(db("create the migrations table"))?;
    let row = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM chop_register_migrations",
            &[],
        )
        .await
        .map_err(db("read the schema version"))?;
    let current: i32 = row.get(0);
    let latest = MIGRATIONS.last().map_or(0, |m| m.0);
    if current > latest {
        return Err(Error::Config {
            message: format!(
                "the database's register schema is version {current}, newer than this chop's {latest}: upgrade chop first"
            ),
        });
    }
    let mut applied = 0;
    for (version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
        tx.batch_execute(sql)
            .await
            .map_err(db("apply a migration"))?;
        tx.execute(
            "INSERT INTO chop_register_migrations (version, name) VALUES ($1, $2)",
            &[version, name],
        )
        .await
        .map_err(db("record a migration"))?;
        applied += 1;
    }
    tx.commit().await.map_err(db("commit migration"))?;
    Ok(applied)
}

/// A CA register in PostgreSQL: a few connections, queries pipelined on each.
#[derive(Clone)]
pub struct PgRegister {
    clients: Arc<Vec<Client>>,
    next: Arc<AtomicUsize>,
}

impl std::fmt::Debug for PgRegister {
    // The URL holds the password: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgRegister")
            .field("connections", &self.clients.len())
            .finish()
    }
}

impl PgRegister {
    /// Connect `connections` (≥ 1) times to `url`. The schema must be migrated
    /// ([`migrate`]).
    pub async fn connect(url: &str, connections: usize) -> Result<Self> {
        let mut clients = Vec::with_capacity(connections.max(1));
        for _ in 0..connections.max(1) {
            clients.push(connect_one(url).await?);
        }
        Ok(PgRegister {
            clients: Arc::new(clients),
            next: Arc::new(AtomicUsize::new(0)),
        })
    }

    fn client(&self) -> &Client {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.clients.len();
        &self.clients[i]
    }

    /// Whether a connection of the pool has ended (PostgreSQL restarted, the
    /// connection was killed): reconnect with [`PgRegister::connect`].
    pub fn is_closed(&self) -> bool {
        self.clients.iter().any(Client::is_closed)
    }

    /// What OCSP answers about one certificate: its [`Status`] and, if revoked
    /// with one, the invalidity date (RFC 5280 §5.3.2). One indexed point query
    /// (the primary key of `status`); `None`: not in the register.
    pub async fn ocsp_status(
        &self,
        ca: &str,
        serial: &Serial,
    ) -> Result<Option<(Status, Option<SystemTime>)>> {
        let row = self
            .client()
            .query_opt(
                "SELECT state, reason, revoked_at, not_after, invalidity FROM status
                  WHERE ca = $1 AND serial = $2",
                &[&ca, &serial.as_be_bytes()],
            )
            .await
            .map_err(db("read a certificate's status"))?;
        let Some(row) = row else { return Ok(None) };
        let state = state_of(row.get(0))?;
        let revoked = match state {
            State::Valid => None,
            _ => Some((reason_of(row.get(1))?, row.get::<_, SystemTime>(2))),
        };
        let status = Status {
            state,
            revoked,
            not_after: row.get(3),
        };
        Ok(Some((status, row.get::<_, Option<SystemTime>>(4))))
    }

    /// How many certificates CA `ca` has in the register.
    pub async fn count(&self, ca: &str) -> Result<u64> {
        let row = self
            .client()
            .query_one("SELECT count(*) FROM certificates WHERE ca = $1", &[&ca])
            .await
            .map_err(db("count certificates"))?;
        Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
    }
}

fn serial_of(bytes: &[u8]) -> Result<Serial> {
    Serial::from_be_bytes(bytes).map_err(|e| Error::Invalid {
        object: "register row".into(),
        message: format!("serial: {e}"),
    })
}

fn partition_sql(p: Option<u32>) -> Result<Option<i32>> {
    p.map(i32::try_from)
        .transpose()
        .map_err(|_| Error::Invalid {
            object: "certificate".into(),
            message: "partition out of range".into(),
        })
}

fn state_of(code: i16) -> Result<State> {
    State::from_code(code).ok_or_else(|| Error::Invalid {
        object: "status row".into(),
        message: format!("unknown state {code}"),
    })
}

fn reason_of(code: Option<i16>) -> Result<Reason> {
    code.and_then(|c| u8::try_from(c).ok())
        .and_then(Reason::from_code)
        .ok_or_else(|| Error::Invalid {
            object: "status row".into(),
            message: format!("unknown reason {code:?}"),
        })
}

impl Register for PgRegister {
    async fn reserve(&self, ca: &str, serial: &Serial, request: &str) -> Result<Reservation> {
        let rows = self
            .client()
            .query(
                "WITH ins AS (
                     INSERT INTO reservations (ca, serial, request) VALUES ($1, $2, $3)
                     ON CONFLICT DO NOTHING RETURNING serial)
                 SELECT serial, true FROM ins
                 UNION ALL
                 SELECT serial, false FROM reservations
                  WHERE request = $3 AND ca = $1 AND NOT EXISTS (SELECT 1 FROM ins)",
                &[&ca, &serial.as_be_bytes(), &request],
            )
            .await
            .map_err(db("reserve a serial"))?;
        match rows.first() {
            Some(r) if r.get::<_, bool>(1) => Ok(Reservation::Reserved),
            Some(r) => {
                let existing = serial_of(r.get::<_, &[u8]>(0))?;
                if &existing == serial {
                    Ok(Reservation::Reserved)
                } else {
                    Ok(Reservation::Existing(existing))
                }
            }
            None => Ok(Reservation::Taken),
        }
    }

    async fn commit(&self, c: &NewCertificate) -> Result<Commit> {
        let serial = c.serial.as_be_bytes();
        let partition = partition_sql(c.partition)?;
        let client = self.client();
        let inserted = client
            .execute(
                "WITH r AS (SELECT ca, serial FROM reservations
                             WHERE ca = $1 AND serial = $2 AND request = $3),
                      c AS (INSERT INTO certificates
                              (ca, serial, request, subscriber, key_fingerprint,
                               not_before, not_after, partition, der)
                            SELECT ca, serial, $3, $4, $5, $6, $7, $8, $9 FROM r
                            ON CONFLICT DO NOTHING
                            RETURNING ca, serial, not_after, partition)
                 INSERT INTO status (ca, serial, not_after, partition)
                 SELECT ca, serial, not_after, partition FROM c",
                &[
                    &c.ca,
                    &serial,
                    &c.request,
                    &c.subscriber,
                    &c.key_fingerprint.as_slice(),
                    &c.not_before,
                    &c.not_after,
                    &partition,
                    &c.der,
                ],
            )
            .await
            .map_err(db("commit a certificate"))?;
        if inserted == 1 {
            return Ok(Commit::Created);
        }
        // Not inserted: already committed (same DER: a retry), another
        // certificate under that serial (refused), or no reservation.
        let existing = client
            .query_opt(
                "SELECT der, request FROM certificates WHERE ca = $1 AND serial = $2",
                &[&c.ca, &serial],
            )
            .await
            .map_err(db("read a committed certificate"))?;
        match existing {
            Some(row) if row.get::<_, &[u8]>(0) == c.der.as_slice() => Ok(Commit::AlreadyCommitted),
            Some(row) => Err(Error::Conflict {
                message: format!(
                    "CA {} serial {} already holds another certificate (request {}): a serial is signed once",
                    c.ca,
                    c.serial.to_hex(),
                    row.get::<_, &str>(1)
                ),
            }),
            None => Err(Error::Conflict {
                message: format!(
                    "CA {} serial {} is not reserved for request {} (or that request already has a certificate): reserve before signing",
                    c.ca,
                    c.serial.to_hex(),
                    c.request
                ),
            }),
        }
    }

    async fn change(&self, ca: &str, serial: &Serial, change: Change) -> Result<Transition> {
        let s = serial.as_be_bytes();
        let client = self.client();
        // Each UPDATE applies only from the states the change is defined for;
        // RETURNING the old state needs a self-join (UPDATE … FROM).
        let rows = match change {
            Change::Revoke {
                reason,
                at,
                invalidity,
            } => {
                client
                    .query(
                        "UPDATE status n SET state = 2, reason = $3, revoked_at = $4,
                                invalidity = $5, changed_at = now()
                           FROM status o
                          WHERE n.ca = $1 AND n.serial = $2 AND o.ca = n.ca AND o.serial = n.serial
                            AND n.state <> 2
                         RETURNING o.state",
                        &[&ca, &s, &i16::from(reason as u8), &at, &invalidity],
                    )
                    .await
            }
            Change::Hold { at } => client
                .query(
                    "UPDATE status n SET state = 1, reason = 6, revoked_at = $3, changed_at = now()
                           FROM status o
                          WHERE n.ca = $1 AND n.serial = $2 AND o.ca = n.ca AND o.serial = n.serial
                            AND n.state = 0
                         RETURNING o.state",
                    &[&ca, &s, &at],
                )
                .await,
            Change::Resume => {
                client
                    .query(
                        "UPDATE status n SET state = 0, reason = NULL, revoked_at = NULL,
                                invalidity = NULL, changed_at = now()
                           FROM status o
                          WHERE n.ca = $1 AND n.serial = $2 AND o.ca = n.ca AND o.serial = n.serial
                            AND n.state = 1
                         RETURNING o.state",
                        &[&ca, &s],
                    )
                    .await
            }
        }
        .map_err(db("change a certificate's status"))?;
        if let Some(r) = rows.first() {
            return Ok(Transition::Applied {
                from: state_of(r.get(0))?,
            });
        }
        let current = client
            .query_opt(
                "SELECT state FROM status WHERE ca = $1 AND serial = $2",
                &[&ca, &s],
            )
            .await
            .map_err(db("read a certificate's status"))?;
        Ok(match current {
            Some(r) => Transition::NotApplicable {
                current: state_of(r.get(0))?,
            },
            None => Transition::NotFound,
        })
    }

    async fn status(&self, ca: &str, serial: &Serial) -> Result<Option<Status>> {
        let row = self
            .client()
            .query_opt(
                "SELECT state, reason, revoked_at, not_after FROM status WHERE ca = $1 AND serial = $2",
                &[&ca, &serial.as_be_bytes()],
            )
            .await
            .map_err(db("read a certificate's status"))?;
        let Some(row) = row else { return Ok(None) };
        let state = state_of(row.get(0))?;
        let revoked = match state {
            State::Valid => None,
            _ => Some((reason_of(row.get(1))?, row.get::<_, SystemTime>(2))),
        };
        Ok(Some(Status {
            state,
            revoked,
            not_after: row.get(3),
        }))
    }

    async fn crl_entries(
        &self,
        ca: &str,
        partition: Option<u32>,
        now: SystemTime,
    ) -> Result<Vec<RevokedEntry>> {
        let p = partition_sql(partition)?;
        // Served by the partial index status_crl (state <> 0): the cost follows
        // the CRL's size, not the register's. Unordered (the CRL builder sorts)
        // and streamed: rows are turned into entries as they arrive, never all
        // held as rows at once.
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] = [&ca, &p, &now];
        let rows = self
            .client()
            .query_raw(
                "SELECT serial, reason, revoked_at, invalidity, not_after, partition FROM status
                  WHERE ca = $1 AND state <> 0 AND ($2::integer IS NULL OR partition = $2)
                    AND not_after > $3",
                params,
            )
            .await
            .map_err(db("read CRL entries"))?;
        futures::pin_mut!(rows);
        let mut entries = Vec::new();
        while let Some(r) = rows.next().await {
            let r = r.map_err(db("read CRL entries"))?;
            entries.push(RevokedEntry {
                serial: serial_of(r.get::<_, &[u8]>(0))?,
                reason: reason_of(r.get(1))?,
                revoked_at: r.get(2),
                invalidity_date: r.get(3),
                not_after: r.get(4),
                partition: r
                    .get::<_, Option<i32>>(5)
                    .and_then(|p| u32::try_from(p).ok()),
            });
        }
        Ok(entries)
    }

    async fn by_key(&self, fingerprint: &[u8; 32]) -> Result<Vec<Summary>> {
        let rows = self
            .client()
            .query(
                "SELECT ca, serial, request, subscriber FROM certificates WHERE key_fingerprint = $1
                  ORDER BY ca, serial",
                &[&fingerprint.as_slice()],
            )
            .await
            .map_err(db("find certificates by key"))?;
        rows.iter()
            .map(|r| {
                Ok(Summary {
                    ca: r.get(0),
                    serial: serial_of(r.get::<_, &[u8]>(1))?,
                    request: r.get(2),
                    subscriber: r.get(3),
                })
            })
            .collect()
    }
}

/// One status change, as notified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusChange {
    /// The CA, `namespace/name`.
    pub ca: String,
    /// The serial.
    pub serial: Serial,
    /// The new state.
    pub state: State,
}

impl StatusChange {
    fn parse(payload: &str) -> Option<StatusChange> {
        let mut it = payload.rsplitn(3, ' ');
        let state = State::from_code(it.next()?.parse().ok()?)?;
        let serial = Serial::from_be_bytes(&hex::decode(it.next()?).ok()?).ok()?;
        let ca = it.next()?.to_string();
        Some(StatusChange { ca, serial, state })
    }
}

/// Follow status changes (a connection of its own, `LISTEN`): every change made
/// after this returns arrives on the stream. The stream ends when the connection
/// does; the follower reconnects and re-reads what it serves.
pub async fn follow(url: &str) -> Result<impl Stream<Item = StatusChange> + Send + use<>> {
    let (client, mut connection) = tokio_postgres::connect(url, NoTls)
        .await
        .map_err(db("connect to PostgreSQL"))?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let pump = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
    tokio::spawn(async move {
        let mut pump = Box::pin(pump);
        while let Some(msg) = pump.next().await {
            match msg {
                Ok(AsyncMessage::Notification(n)) => match StatusChange::parse(n.payload()) {
                    Some(c) => {
                        if tx.send(c).is_err() {
                            break;
                        }
                    }
                    None => tracing::warn!(payload = n.payload(), "unreadable status notification"),
                },
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "PostgreSQL notification connection ended");
                    break;
                }
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN {CHANNEL}"))
        .await
        .map_err(db("listen for status changes"))?;
    // The client must live as long as the stream: it owns the session.
    let keep = Arc::new(client);
    Ok(tokio_stream_from(rx).map(move |c| {
        let _session = &keep;
        c
    }))
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<T>,
) -> impl Stream<Item = T> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn notifications_parse_and_bad_ones_do_not() {
        let c = StatusChange::parse("ns/moica 0a1b 2").unwrap();
        assert_eq!(c.ca, "ns/moica");
        assert_eq!(c.serial.as_be_bytes(), &[0x0a, 0x1b]);
        assert_eq!(c.state, State::Revoked);
        assert!(StatusChange::parse("ns/moica 0a1 2").is_none());
        assert!(StatusChange::parse("ns/moica 0a1b 7").is_none());
        assert!(StatusChange::parse("0a1b").is_none());
    }
}
