//! Leader election on a real API server: one leader at a time, even when
//! candidates race; takeover only after the lease lapses; a leader that cannot
//! renew stops counting itself leader before anyone else may take over.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use controller::leader::{LeaderElector, LeaseConfig, Step};
use e2e::TestEnv;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;

fn config(name: &str, identity: &str) -> LeaseConfig {
    let mut c = LeaseConfig::new(name, identity);
    c.lease_duration = Duration::from_secs(3);
    c.renew_deadline = Duration::from_secs(2);
    c.retry_period = Duration::from_millis(200);
    c
}

#[tokio::test]
async fn racing_candidates_never_both_lead() {
    let env = TestEnv::new().await.unwrap();
    let leases: Api<Lease> = Api::namespaced(env.admin(), env.namespace());
    for round in 0..8 {
        let name = format!("race-{round}");
        let (mut a, la) = LeaderElector::new(leases.clone(), config(&name, "a"));
        let (mut b, lb) = LeaderElector::new(leases.clone(), config(&name, "b"));
        let (ra, rb) = tokio::join!(a.step(), b.step());
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        assert!(
            (ra == Step::Leading) != (rb == Step::Leading),
            "round {round}: a={ra:?} b={rb:?}"
        );
        assert_eq!(la.is_leader(), ra == Step::Leading);
        assert_eq!(lb.is_leader(), rb == Step::Leading);
        // A second step keeps the same leader (renewal), the other still follows.
        let (ra2, rb2) = (a.step().await.unwrap(), b.step().await.unwrap());
        assert_eq!((ra2, rb2), (ra, rb), "round {round}");
    }
    env.cleanup().await.unwrap();
}

#[tokio::test]
async fn takeover_waits_for_the_lease_to_lapse() {
    let env = TestEnv::new().await.unwrap();
    let leases: Api<Lease> = Api::namespaced(env.admin(), env.namespace());
    let (mut a, la) = LeaderElector::new(leases.clone(), config("ca", "replica-a"));
    let (mut b, lb) = LeaderElector::new(leases.clone(), config("ca", "replica-b"));
    assert_eq!(a.step().await.unwrap(), Step::Leading);
    let started = Instant::now();
    // a stops renewing (crashed or partitioned). b must follow until the lease lapses.
    loop {
        let step = b.step().await.unwrap();
        let waited = started.elapsed();
        if step == Step::Leading {
            assert!(
                waited >= Duration::from_millis(2500),
                "took over after {waited:?}"
            );
            break;
        }
        assert!(waited < Duration::from_secs(10), "b never took over");
        // a's own view: it stops leading after its renew deadline (2 s), which is
        // before b can take over (3 s lease).
        if waited > Duration::from_millis(2200) {
            assert!(
                !la.is_leader(),
                "a still claims leadership after its renew deadline"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(lb.is_leader());
    let lease = leases.get("ca").await.unwrap();
    let spec = lease.spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("replica-b"));
    assert_eq!(spec.lease_transitions, Some(1));
    // a comes back: it must follow, not steal.
    assert_eq!(a.step().await.unwrap(), Step::Following);
    assert!(!la.is_leader());
    env.cleanup().await.unwrap();
}
