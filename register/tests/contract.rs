//! The register's contract (`chop_register::api`), checked against a real
//! PostgreSQL 15 started by `e2e/postgres.sh` (scripts/test.sh runs the suite
//! under `e2e/postgres.sh run`, which sets CHOP_PG_URL). Each test uses CAs of
//! its own, so tests share one database and run in parallel.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, SystemTime};

use ca::revocation::Reason;
use ca::serial::Serial;
use chop_register::api::{
    Change, Commit, NewCertificate, Register, Reservation, State, Transition,
};
use chop_register::postgres::{self, PgRegister};
use futures::StreamExt;

fn url() -> String {
    std::env::var("CHOP_PG_URL").expect(
        "CHOP_PG_URL is not set: run under `bash e2e/postgres.sh run -- cargo test -p chop-register`",
    )
}

async fn register() -> PgRegister {
    postgres::migrate(&url()).await.unwrap();
    PgRegister::connect(&url(), 4).await.unwrap()
}

/// A CA name no other test uses.
fn ca(test: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("contract/{test}-{nanos}")
}

fn serial(n: u64) -> Serial {
    let mut b = vec![0x40];
    b.extend_from_slice(&n.to_be_bytes());
    Serial::from_be_bytes(&b).unwrap()
}

fn cert(ca: &str, n: u64, request: &str, not_after: SystemTime) -> NewCertificate {
    NewCertificate {
        ca: ca.to_string(),
        serial: serial(n),
        request: request.to_string(),
        subscriber: format!("sub-{n}"),
        key_fingerprint: [n as u8; 32],
        not_before: SystemTime::now() - Duration::from_secs(60),
        not_after,
        partition: Some((n % 4) as u32),
        der: format!("certificate {n} of {request}").into_bytes(),
    }
}

fn in_a_year() -> SystemTime {
    SystemTime::now() + Duration::from_secs(365 * 86400)
}

#[tokio::test]
async fn a_serial_is_reserved_once_and_a_request_keeps_its_serial() {
    let r = register().await;
    let ca = ca("reserve");
    let (a, b, c) = (
        format!("{ca}/a/uid-a"),
        format!("{ca}/b/uid-b"),
        format!("{ca}/c/uid-c"),
    );
    assert_eq!(
        r.reserve(&ca, &serial(1), &a).await.unwrap(),
        Reservation::Reserved
    );
    // A retry of the same request with the same serial: still its own.
    assert_eq!(
        r.reserve(&ca, &serial(1), &a).await.unwrap(),
        Reservation::Reserved
    );
    // The same request drawing another serial (a restart after a crash) gets
    // its first one back: the HSM re-signs that serial, never a second one.
    assert_eq!(
        r.reserve(&ca, &serial(2), &a).await.unwrap(),
        Reservation::Existing(serial(1))
    );
    // Another request never gets a serial that is taken.
    assert_eq!(
        r.reserve(&ca, &serial(1), &b).await.unwrap(),
        Reservation::Taken
    );
    // The same serial number in another CA is another certificate.
    let other = format!("{ca}-other");
    assert_eq!(
        r.reserve(&other, &serial(1), &c).await.unwrap(),
        Reservation::Reserved
    );
}

#[tokio::test]
async fn concurrent_reservations_of_one_serial_have_one_winner() {
    let r = register().await;
    let ca = ca("race");
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let r = r.clone();
            let ca = ca.clone();
            tokio::spawn(async move { r.reserve(&ca, &serial(7), &format!("{ca}/r{i}/u")).await })
        })
        .collect();
    let mut won = 0;
    for t in tasks {
        match t.await.unwrap().unwrap() {
            Reservation::Reserved => won += 1,
            Reservation::Taken => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(won, 1, "exactly one request holds serial 7");
}

#[tokio::test]
async fn one_certificate_per_reservation() {
    let r = register().await;
    let ca = ca("commit");
    let c = cert(&ca, 1, &format!("{ca}/a/uid-a"), in_a_year());
    // No reservation, no commit.
    let e = r.commit(&c).await.unwrap_err();
    assert!(e.to_string().contains("not reserved"), "{e}");
    r.reserve(&ca, &c.serial, &c.request).await.unwrap();
    assert_eq!(r.commit(&c).await.unwrap(), Commit::Created);
    // A retry (crash after commit, before the request's status said so).
    assert_eq!(r.commit(&c).await.unwrap(), Commit::AlreadyCommitted);
    // Another certificate under the same serial: refused, the first stays.
    let mut forged = c.clone();
    forged.der = b"another certificate".to_vec();
    let e = r.commit(&forged).await.unwrap_err();
    assert!(
        e.to_string().contains("already holds another certificate"),
        "{e}"
    );
    // A second certificate for the same request under a fresh serial: refused
    // (its reservation is serial 1).
    let mut second = cert(&ca, 2, &format!("{ca}/a/uid-a"), in_a_year());
    second.request = c.request.clone();
    assert_eq!(
        r.reserve(&ca, &second.serial, &second.request)
            .await
            .unwrap(),
        Reservation::Existing(serial(1))
    );
    assert!(r.commit(&second).await.is_err());
    let s = r.status(&ca, &c.serial).await.unwrap().unwrap();
    assert_eq!(s.state, State::Valid);
    assert_eq!(r.count(&ca).await.unwrap(), 1);
    let by_key = r.by_key(&c.key_fingerprint).await.unwrap();
    assert!(
        by_key
            .iter()
            .any(|k| k.ca == ca && k.serial == c.serial && k.subscriber == "sub-1")
    );
}

async fn issued(r: &PgRegister, ca: &str, n: u64, not_after: SystemTime) -> Serial {
    let c = cert(ca, n, &format!("{ca}/req-{n}/uid"), not_after);
    r.reserve(ca, &c.serial, &c.request).await.unwrap();
    r.commit(&c).await.unwrap();
    c.serial
}

#[tokio::test]
async fn status_changes_apply_only_where_defined_and_revoked_is_final() {
    let r = register().await;
    let ca = ca("states");
    let s = issued(&r, &ca, 1, in_a_year()).await;
    let now = SystemTime::now();
    let hold = Change::Hold { at: now };
    let revoke = Change::Revoke {
        reason: Reason::KeyCompromise,
        at: now,
        invalidity: None,
    };
    use State::*;
    use Transition::*;
    assert_eq!(
        r.change(&ca, &s, Change::Resume).await.unwrap(),
        NotApplicable { current: Valid }
    );
    assert_eq!(
        r.change(&ca, &s, hold).await.unwrap(),
        Applied { from: Valid }
    );
    assert_eq!(
        r.change(&ca, &s, hold).await.unwrap(),
        NotApplicable { current: Held }
    );
    let st = r.status(&ca, &s).await.unwrap().unwrap();
    assert_eq!(st.state, Held);
    assert_eq!(st.revoked.map(|x| x.0), Some(Reason::CertificateHold));
    assert_eq!(
        r.change(&ca, &s, Change::Resume).await.unwrap(),
        Applied { from: Held }
    );
    assert_eq!(r.status(&ca, &s).await.unwrap().unwrap().revoked, None);
    assert_eq!(
        r.change(&ca, &s, hold).await.unwrap(),
        Applied { from: Valid }
    );
    // A revocation supersedes a hold, and nothing undoes it.
    assert_eq!(
        r.change(&ca, &s, revoke).await.unwrap(),
        Applied { from: Held }
    );
    for c in [Change::Resume, hold, revoke] {
        assert_eq!(
            r.change(&ca, &s, c).await.unwrap(),
            NotApplicable { current: Revoked }
        );
    }
    let st = r.status(&ca, &s).await.unwrap().unwrap();
    assert_eq!(st.state, Revoked);
    assert_eq!(st.revoked.map(|x| x.0), Some(Reason::KeyCompromise));
    assert_eq!(r.change(&ca, &serial(99), hold).await.unwrap(), NotFound);
    assert_eq!(r.status(&ca, &serial(99)).await.unwrap(), None);
}

#[tokio::test]
async fn concurrent_holds_resumes_and_a_revocation_end_revoked() {
    let r = register().await;
    let ca = ca("state-race");
    let s = issued(&r, &ca, 1, in_a_year()).await;
    let now = SystemTime::now();
    let mut tasks = Vec::new();
    for i in 0..40 {
        let (r, ca, s) = (r.clone(), ca.clone(), s.clone());
        let change = match i % 3 {
            0 => Change::Hold { at: now },
            1 => Change::Resume,
            _ => Change::Revoke {
                reason: Reason::Superseded,
                at: now,
                invalidity: None,
            },
        };
        tasks.push(tokio::spawn(async move { r.change(&ca, &s, change).await }));
    }
    let mut revocations_applied = 0;
    for (i, t) in tasks.into_iter().enumerate() {
        let outcome = t.await.unwrap().unwrap();
        if i % 3 == 2 && matches!(outcome, Transition::Applied { .. }) {
            revocations_applied += 1;
        }
    }
    assert_eq!(
        revocations_applied, 1,
        "one revocation applies; the others find it revoked"
    );
    assert_eq!(
        r.status(&ca, &s).await.unwrap().unwrap().state,
        State::Revoked
    );
}

#[tokio::test]
async fn crl_entries_are_the_unexpired_held_and_revoked_of_one_partition() {
    let r = register().await;
    let ca = ca("crl");
    let now = SystemTime::now();
    let revoke = Change::Revoke {
        reason: Reason::KeyCompromise,
        at: now,
        invalidity: Some(now - Duration::from_secs(3600)),
    };
    let mut revoked = Vec::new();
    for n in 1..=12u64 {
        let s = issued(&r, &ca, n, in_a_year()).await;
        match n % 3 {
            0 => {
                r.change(&ca, &s, revoke).await.unwrap();
                revoked.push(s);
            }
            1 => {
                r.change(&ca, &s, Change::Hold { at: now }).await.unwrap();
                revoked.push(s);
            }
            _ => {}
        }
    }
    // Held then resumed: not on the CRL.
    let resumed = issued(&r, &ca, 13, in_a_year()).await;
    r.change(&ca, &resumed, Change::Hold { at: now })
        .await
        .unwrap();
    r.change(&ca, &resumed, Change::Resume).await.unwrap();
    // Revoked but expired: off the CRL (CPS §4.10.1).
    let expired = issued(&r, &ca, 14, now + Duration::from_secs(2)).await;
    r.change(&ca, &expired, revoke).await.unwrap();
    let later = now + Duration::from_secs(5);
    let all = r.crl_entries(&ca, None, later).await.unwrap();
    let mut serials: Vec<_> = all.iter().map(|e| e.serial.clone()).collect();
    serials.sort_by(|a, b| a.as_be_bytes().cmp(b.as_be_bytes()));
    assert_eq!(serials, revoked);
    assert!(all.iter().any(|e| e.reason == Reason::CertificateHold));
    assert!(
        all.iter()
            .any(|e| e.reason == Reason::KeyCompromise && e.invalidity_date.is_some())
    );
    // Before expiry it is listed.
    assert_eq!(
        r.crl_entries(&ca, None, now).await.unwrap().len(),
        revoked.len() + 1
    );
    for p in 0..4u32 {
        let part = r.crl_entries(&ca, Some(p), later).await.unwrap();
        assert!(part.iter().all(|e| e.partition == Some(p)));
        let expected = revoked
            .iter()
            .filter(|s| u64::from(*s.as_be_bytes().last().unwrap()) % 4 == u64::from(p))
            .count();
        assert_eq!(part.len(), expected, "partition {p}");
    }
}

#[tokio::test]
async fn a_follower_hears_each_status_change() {
    let r = register().await;
    let ca = ca("follow");
    let s = issued(&r, &ca, 1, in_a_year()).await;
    let mut changes = Box::pin(postgres::follow(&url()).await.unwrap());
    let started = std::time::Instant::now();
    r.change(
        &ca,
        &s,
        Change::Revoke {
            reason: Reason::KeyCompromise,
            at: SystemTime::now(),
            invalidity: None,
        },
    )
    .await
    .unwrap();
    let heard = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let c = changes.next().await.expect("notification stream ended");
            if c.ca == ca {
                return c;
            }
        }
    })
    .await
    .expect("no notification within 5 s");
    assert_eq!(heard.serial, s);
    assert_eq!(heard.state, State::Revoked);
    eprintln!("revocation → notification: {:?}", started.elapsed());
}

#[tokio::test]
async fn migrations_are_idempotent_and_a_newer_schema_is_refused() {
    postgres::migrate(&url()).await.unwrap();
    assert_eq!(
        postgres::migrate(&url()).await.unwrap(),
        0,
        "nothing left to apply"
    );
    let e = PgRegister::connect("postgres://chop@127.0.0.1:1/chop?sslmode=require", 1)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("TLS"), "{e}");
}
