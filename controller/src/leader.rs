//! Leader election on a `coordination.k8s.io/v1` Lease, so that two controller
//! replicas never both sign.
//!
//! The protocol is client-go's: the holder renews `renewTime` every
//! `renew_interval`; anyone may take the Lease over once `renewTime +
//! leaseDurationSeconds` has passed. Every write carries the `resourceVersion` it
//! read, so two candidates racing for the same Lease cannot both win: the API
//! server accepts one update and answers 409 Conflict to the other.
//!
//! A replica counts itself leader only until `renew_deadline` after its last
//! successful renewal, measured on its own monotonic clock, and
//! `renew_deadline < lease_duration`. A partitioned leader therefore stops
//! signing before anyone else may take over. The binary exits when leadership is
//! lost (as client-go's `OnStoppedLeading` does), so a new term always starts
//! from a fresh process.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::watch;

use crate::error::{Error, Result};

/// Timing of the election.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Name of the Lease object.
    pub name: String,
    /// This replica's identity (the Pod name).
    pub identity: String,
    /// How long a Lease stays valid after its last renewal.
    pub lease_duration: Duration,
    /// How long this replica keeps acting as leader after its last successful
    /// renewal. Must be shorter than `lease_duration`.
    pub renew_deadline: Duration,
    /// Time between attempts to acquire or renew.
    pub retry_period: Duration,
}

impl LeaseConfig {
    /// client-go's defaults: 15 s lease, 10 s renew deadline, 2 s retry.
    pub fn new(name: impl Into<String>, identity: impl Into<String>) -> Self {
        LeaseConfig {
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// A cheap handle that tells whether this replica may act as leader right now.
#[derive(Clone, Debug)]
pub struct Leadership {
    rx: watch::Receiver<Option<Instant>>,
}

impl Leadership {
    /// True while the last successful renewal is younger than the renew deadline.
    pub fn is_leader(&self) -> bool {
        self.rx.borrow().is_some_and(|until| Instant::now() < until)
    }

    /// Wait until this replica leads.
    pub async fn wait_until_leader(&mut self) {
        loop {
            if self.is_leader() {
                return;
            }
            if self.rx.changed().await.is_err() {
                // The elector stopped; nobody will ever make us leader.
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Runs the election for one replica.
#[derive(Debug)]
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaseConfig,
    tx: watch::Sender<Option<Instant>>,
}

/// What one election step found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// This replica holds the Lease (acquired or renewed in this step).
    Leading,
    /// Another replica holds a live Lease.
    Following,
}

impl LeaderElector {
    /// An elector for the Lease `config.name` in `api`'s namespace.
    pub fn new(api: Api<Lease>, config: LeaseConfig) -> (Self, Leadership) {
        let (tx, rx) = watch::channel(None);
        (LeaderElector { api, config, tx }, Leadership { rx })
    }

    /// One attempt to acquire or renew. A conflict (someone else wrote first)
    /// is `Following`, not an error.
    pub async fn step(&mut self) -> Result<Step> {
        let started = Instant::now();
        let now = MicroTime(jiff::Timestamp::now());
        let lease_secs = i32::try_from(self.config.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let existing = self
            .api
            .get_opt(&self.config.name)
            .await
            .map_err(Error::kube("get Lease"))?;
        let outcome = match existing {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.config.name.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.config.identity.clone()),
                        lease_duration_seconds: Some(lease_secs),
                        acquire_time: Some(now.clone()),
                        renew_time: Some(now),
                        lease_transitions: Some(0),
                        ..LeaseSpec::default()
                    }),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            Some(mut lease) => {
                let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                let mine = spec.holder_identity.as_deref() == Some(self.config.identity.as_str());
                if !mine && !expired(spec, &now) {
                    self.tx.send_replace(None);
                    return Ok(Step::Following);
                }
                if !mine {
                    spec.holder_identity = Some(self.config.identity.clone());
                    spec.acquire_time = Some(now.clone());
                    spec.lease_transitions =
                        Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
                }
                spec.lease_duration_seconds = Some(lease_secs);
                spec.renew_time = Some(now);
                // `replace` sends metadata.resourceVersion: a concurrent writer gets 409.
                self.api
                    .replace(&self.config.name, &PostParams::default(), &lease)
                    .await
            }
        };
        match outcome {
            Ok(_) => {
                self.tx
                    .send_replace(Some(started + self.config.renew_deadline));
                Ok(Step::Leading)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                self.tx.send_replace(None);
                Ok(Step::Following)
            }
            Err(e) => Err(Error::kube("write Lease")(e)),
        }
    }

    /// Run the election until the process ends. Returns when leadership, once
    /// held, is lost: the caller should then exit.
    pub async fn run(mut self) -> Result<()> {
        let mut led = false;
        loop {
            match self.step().await {
                Ok(Step::Leading) => {
                    if !led {
                        tracing::info!(lease = %self.config.name, identity = %self.config.identity, "became leader");
                    }
                    led = true;
                }
                Ok(Step::Following) if led => {
                    tracing::warn!(lease = %self.config.name, "another replica took the lease");
                    return Ok(());
                }
                Ok(Step::Following) => {}
                Err(e) => tracing::warn!(error = %e, "leader election step failed"),
            }
            if led && !self.is_leading_now() {
                tracing::warn!(lease = %self.config.name, "could not renew the lease before the deadline");
                self.tx.send_replace(None);
                return Ok(());
            }
            tokio::time::sleep(self.config.retry_period).await;
        }
    }

    fn is_leading_now(&self) -> bool {
        self.tx.borrow().is_some_and(|until| Instant::now() < until)
    }
}

/// Whether the Lease's holder has let it lapse.
fn expired(spec: &LeaseSpec, now: &MicroTime) -> bool {
    let Some(renew) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else {
        return true;
    };
    let secs = i64::from(spec.lease_duration_seconds.unwrap_or(0));
    match renew.0.checked_add(jiff::SignedDuration::from_secs(secs)) {
        Ok(until) => until < now.0,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(renewed_secs_ago: i64, duration: i32) -> LeaseSpec {
        let renew = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(renewed_secs_ago);
        LeaseSpec {
            holder_identity: Some("other".into()),
            lease_duration_seconds: Some(duration),
            renew_time: Some(MicroTime(renew)),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn a_lease_expires_only_after_its_duration() {
        let now = MicroTime(jiff::Timestamp::now());
        assert!(!expired(&spec(5, 15), &now));
        assert!(expired(&spec(16, 15), &now));
        assert!(expired(&LeaseSpec::default(), &now));
    }
}
