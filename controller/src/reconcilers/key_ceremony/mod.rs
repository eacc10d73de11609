//! KeyCeremony: a witnessed, quorum-approved operation on a CA key (CPS §5.2.2,
//! §6.1.1, §6.2; issue 9).
//!
//! One reconcile: read the ceremony afresh, read its CertificateAuthority,
//! compute the spec hash, judge the approvals ([`quorum`]), and
//!
//! * while the quorum is incomplete: publish hash and progress, wait;
//! * once complete: record the start (phase `Running`, conditional on the
//!   resourceVersion judged, so the quorum that starts it is the one judged),
//!   then run the operation's steps, each recorded in `status.steps`, an Event
//!   and a metric, re-judging the quorum on the current object first;
//! * `Succeeded` / `Failed` are final: the ceremony never runs twice.
//!
//! Crash safety: every step that changes a token is reserved in status before
//! it runs (key id, root serial) or is idempotent (destroy), and a restarted
//! step recognises its own earlier effect (a key with the reserved id) instead of
//! repeating it; outputs (shares, certificate) are published in one status
//! write, so a half-done step is never presented as done. The test hook
//! `CHOP_TEST_CRASH_AFTER_<STEP>=1` aborts the process right after a step's
//! effect and before its record.

mod activation;
mod generate;
mod hsm;
mod keys;
pub mod quorum;

use std::sync::Arc;
use std::time::Duration;

use crds::key_ceremony::{
    CeremonyOperation, CeremonyPhase, CeremonyStep, KeyCeremonyStatus, QuorumStatus,
};
use crds::{CertificateAuthority, KeyCeremony};
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use tracing::Instrument;

use crate::conditions::{self, Cond};
use crate::context::{Context, FIELD_MANAGER, object_id};
use crate::error::{Error, Result};

/// Kind label in metrics and spans.
pub const KIND: &str = "KeyCeremony";

/// Reconcile one KeyCeremony.
pub async fn reconcile(kc: Arc<KeyCeremony>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_timer(KIND);
    let span = tracing::info_span!("reconcile", kind = KIND, namespace = %kc.namespace().unwrap_or_default(), name = %kc.name_any());
    let action = async {
        match super::fresh(kc.as_ref(), &ctx, "get KeyCeremony").await? {
            Some(current) => apply(&current, &ctx).await,
            None => Ok(Action::await_change()),
        }
    }
    .instrument(span)
    .await
    .map_err(|e| e.about(&object_id(kc.as_ref())))?;
    ctx.reset_backoff(&kc.uid().unwrap_or_default());
    Ok(action)
}

/// Count the error and requeue with backoff.
pub fn error_policy(kc: Arc<KeyCeremony>, error: &Error, ctx: Arc<Context>) -> Action {
    super::requeue_after_error(KIND, kc.as_ref(), error, &ctx)
}

/// Run the KeyCeremony controller until shutdown.
pub async fn run(ctx: Arc<Context>, namespace: Option<&str>) {
    use futures::StreamExt;
    use kube::runtime::{Controller, watcher};
    let api: Api<crate::malformed::Guarded<KeyCeremony>> = match namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    Controller::new(api, watcher::Config::default())
        .run(
            crate::malformed::reconcile(reconcile),
            crate::malformed::error_policy(error_policy),
            ctx,
        )
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "KeyCeremony controller event");
            }
        })
        .await;
}

/// A ceremony being run: the object, its CA, and the status being written.
pub(crate) struct Run<'a> {
    pub kc: &'a KeyCeremony,
    pub ca: CertificateAuthority,
    pub ctx: &'a Context,
    pub status: KeyCeremonyStatus,
}

impl Run<'_> {
    fn operation(&self) -> &'static str {
        self.kc.spec.operation.as_str()
    }

    /// The ceremony's namespace.
    pub fn namespace(&self) -> String {
        self.kc.namespace().unwrap_or_default()
    }

    /// `KeyCeremony/ns/name`, for errors.
    pub fn id(&self) -> String {
        object_id(self.kc)
    }

    /// Record a step (status, Event, metric). Not written until [`Run::save`].
    pub async fn step(&mut self, name: &str, outcome: &str, message: String) {
        self.status.steps.push(CeremonyStep {
            name: name.to_string(),
            outcome: outcome.to_string(),
            message: Some(message.clone()),
            time: conditions::now(),
        });
        self.ctx
            .metrics
            .ceremony_step(self.operation(), name, outcome);
        let warning = outcome == "Failed";
        self.ctx
            .event(self.kc, warning, &format!("{name}{outcome}"), message)
            .await;
    }

    /// Write the status as it stands.
    pub async fn save(&mut self) -> Result<()> {
        write(self.kc, self.ctx, &mut self.status, &[], None).await
    }

    /// Write the status with `conds`.
    pub async fn save_with(&mut self, conds: &[Cond]) -> Result<()> {
        write(self.kc, self.ctx, &mut self.status, conds, None).await
    }

    /// Record the end of the ceremony (`ceremony.finished`).
    fn finished(&self, outcome: &str, reason: &str) {
        self.ctx.audit.note(
            crate::audit::AuditEvent::new("ceremony.finished", outcome)
                .object(self.kc)
                .ca(&self.namespace(), &self.kc.spec.ca_ref.name)
                .reason(reason)
                .user("requestedBy", crate::audit::requested_by(self.kc.meta()))
                .detail("operation", self.operation())
                .dedup(format!(
                    "ceremony.finished/{}",
                    self.kc.uid().unwrap_or_default()
                )),
        );
    }

    /// End the ceremony successfully.
    pub async fn succeed(&mut self, message: String) -> Result<Action> {
        self.status.phase = Some(CeremonyPhase::Succeeded);
        self.status.completed_at = Some(conditions::now());
        self.ctx
            .metrics
            .ceremony_step(self.operation(), "Ceremony", "Succeeded");
        self.ctx
            .event(self.kc, false, "CeremonySucceeded", message.clone())
            .await;
        self.finished("succeeded", "Succeeded");
        tracing::info!(operation = self.operation(), %message, "key ceremony succeeded");
        self.save_with(&[Cond::yes("Succeeded", "Succeeded", message)])
            .await?;
        Ok(Action::await_change())
    }

    /// End the ceremony as failed, for good: `reason` and `message` say why.
    pub async fn fail(&mut self, reason: &str, message: String) -> Result<Action> {
        self.status.phase = Some(CeremonyPhase::Failed);
        self.status.completed_at = Some(conditions::now());
        self.ctx
            .metrics
            .ceremony_step(self.operation(), "Ceremony", "Failed");
        self.ctx.event(self.kc, true, reason, message.clone()).await;
        self.finished("failed", reason);
        tracing::warn!(operation = self.operation(), reason, %message, "key ceremony failed");
        self.save_with(&[Cond::no("Succeeded", reason, message)])
            .await?;
        Ok(Action::await_change())
    }

    /// Stay in the current phase, saying what is awaited.
    pub async fn wait(
        &mut self,
        reason: &str,
        message: String,
        recheck: Option<Duration>,
    ) -> Result<Action> {
        self.save_with(&[Cond::no("Succeeded", reason, message)])
            .await?;
        Ok(recheck.map_or_else(Action::await_change, Action::requeue))
    }

    /// A `ca` crate failure: transient ones are retried (the step is repeated
    /// and recognises its own effect), the others end the ceremony.
    pub async fn hsm_failure(&mut self, step: &str, source: ca::Error) -> Result<Action> {
        if source.is_transient() {
            return Err(Error::Ca {
                object: self.id(),
                source,
            });
        }
        let message = source.to_string();
        self.step(step, "Failed", message.clone()).await;
        self.fail(source.reason(), message).await
    }
}

/// Abort here when the test hook `CHOP_TEST_CRASH_AFTER_<STEP>=1` is set
/// (crash-safety tests only; e.g. `CHOP_TEST_CRASH_AFTER_GENERATEKEY`).
pub(crate) fn crash_point(step: &str) {
    let var = format!("CHOP_TEST_CRASH_AFTER_{}", step.to_ascii_uppercase());
    if std::env::var(&var).as_deref() == Ok("1") {
        tracing::error!(
            step,
            "{var}=1 is set: aborting after the step's effect, before its record"
        );
        std::process::abort();
    }
}

async fn write(
    kc: &KeyCeremony,
    ctx: &Context,
    status: &mut KeyCeremonyStatus,
    conds: &[Cond],
    resource_version: Option<&str>,
) -> Result<()> {
    let generation = kc.meta().generation;
    let mut list = status.conditions.clone();
    for c in conds {
        let new = conditions::build(&list, c, generation, conditions::now());
        list.retain(|x| x.type_ != c.type_);
        list.push(new);
    }
    status.conditions = list;
    status.observed_generation = generation;
    let written = super::apply_status(
        &ctx.client,
        kc,
        FIELD_MANAGER,
        &*status,
        resource_version,
        "apply KeyCeremony status",
    )
    .await?;
    ctx.note_written(&kc.uid().unwrap_or_default(), written.resource_version());
    Ok(())
}

async fn apply(kc: &KeyCeremony, ctx: &Context) -> Result<Action> {
    let mut status = kc.status.clone().unwrap_or_default();
    let phase = status.phase.unwrap_or_default();
    if matches!(phase, CeremonyPhase::Succeeded | CeremonyPhase::Failed) {
        return Ok(Action::await_change());
    }
    let ns = kc.namespace().unwrap_or_default();
    let cas: Api<CertificateAuthority> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(ca) = cas
        .get_opt(&kc.spec.ca_ref.name)
        .await
        .map_err(Error::kube("get CertificateAuthority"))?
    else {
        let msg = format!(
            "CertificateAuthority {:?} not found in namespace {ns:?}",
            kc.spec.ca_ref.name
        );
        if phase == CeremonyPhase::WaitingForQuorum {
            status.phase = Some(phase);
            write(
                kc,
                ctx,
                &mut status,
                &[Cond::no("Succeeded", "CANotFound", msg)],
                None,
            )
            .await?;
            return Ok(Action::requeue(Duration::from_secs(30)));
        }
        // Running without its CA: the ceremony cannot go on.
        status.phase = Some(CeremonyPhase::Failed);
        status.completed_at = Some(conditions::now());
        ctx.metrics
            .ceremony_step(kc.spec.operation.as_str(), "Ceremony", "Failed");
        ctx.event(kc, true, "CANotFound", msg.clone()).await;
        write(
            kc,
            ctx,
            &mut status,
            &[Cond::no("Succeeded", "CANotFound", msg)],
            None,
        )
        .await?;
        return Ok(Action::await_change());
    };

    // What approvers approve, and whether enough of them did, judged on the
    // object as it is now.
    let hash = quorum::spec_hash(&kc.spec, &ca);
    let required = quorum::required(kc, &ca);
    let previous = status
        .quorum
        .as_ref()
        .map(|q| q.approvals.clone())
        .unwrap_or_default();
    let now = conditions::now();
    let eval = quorum::evaluate(
        &kc.spec.approvals,
        &hash,
        quorum::creator(kc),
        &required,
        &previous,
        &now,
    );
    for a in &eval.records {
        ctx.audit.note(
            crate::audit::AuditEvent::new("ceremony.approval", "observed")
                .object(kc)
                .ca(&kc.namespace().unwrap_or_default(), &kc.spec.ca_ref.name)
                .user("approvedBy", Some(&a.user))
                .reason(if a.counted { "Counted" } else { "NotCounted" })
                .detail("role", a.role.clone())
                .detail("specHash", hash.clone())
                .detail("operation", kc.spec.operation.as_str())
                .dedup(format!(
                    "ceremony.approval/{}/{}/{hash}/{}",
                    kc.uid().unwrap_or_default(),
                    a.user,
                    a.counted
                )),
        );
    }
    status.spec_hash = Some(hash);
    status.quorum = Some(QuorumStatus {
        required: quorum::describe(&required),
        progress: format!("{}/{}", eval.counted, eval.needed),
        approvals: eval.records.clone(),
    });
    let mut run = Run {
        kc,
        ca,
        ctx,
        status,
    };

    if phase == CeremonyPhase::WaitingForQuorum {
        run.status.phase = Some(CeremonyPhase::WaitingForQuorum);
        if let Some((reason, msg)) = precondition(&run) {
            return run.wait(reason, msg, Some(Duration::from_secs(60))).await;
        }
        if !eval.met {
            let msg = format!(
                "{}/{} approvals of {}; missing {}. Approvers name status.specHash.",
                eval.counted,
                eval.needed,
                quorum::describe(&required),
                eval.missing
            );
            let conds = [
                Cond::no("QuorumMet", "WaitingForQuorum", msg.clone()),
                Cond::no("Succeeded", "WaitingForQuorum", msg),
            ];
            write(kc, ctx, &mut run.status, &conds, None).await?;
            return Ok(Action::await_change());
        }
        // Start, only on the object judged: a change since (a new spec, a
        // withdrawn CA) makes this write conflict and the next reconcile judge
        // again.
        let who: Vec<String> = eval
            .records
            .iter()
            .filter(|r| r.counted)
            .map(|r| format!("{} ({})", r.user, r.role))
            .collect();
        let msg = format!("quorum met: {}", who.join(", "));
        run.status.phase = Some(CeremonyPhase::Running);
        run.status.started_at = Some(conditions::now());
        run.status.steps.push(CeremonyStep {
            name: "QuorumMet".into(),
            outcome: "Succeeded".into(),
            message: Some(msg.clone()),
            time: conditions::now(),
        });
        let conds = [
            Cond::yes("QuorumMet", "QuorumMet", msg.clone()),
            Cond::no("Succeeded", "Running", "the ceremony is running"),
        ];
        let rv = kc.resource_version();
        write(kc, ctx, &mut run.status, &conds, rv.as_deref()).await?;
        ctx.metrics
            .ceremony_step(kc.spec.operation.as_str(), "QuorumMet", "Succeeded");
        ctx.event(kc, false, "QuorumMet", msg).await;
    } else if !eval.met {
        // The API server freezes the spec once the ceremony runs; re-checked.
        let msg = format!(
            "the quorum no longer holds for the current spec (missing {}): the spec or the CertificateAuthority changed after the ceremony started",
            eval.missing
        );
        return run.fail("QuorumLost", msg).await;
    }

    match kc.spec.operation {
        CeremonyOperation::Generate => generate::run(&mut run).await,
        CeremonyOperation::Backup => keys::backup(&mut run).await,
        CeremonyOperation::Restore => keys::restore(&mut run).await,
        CeremonyOperation::Activate | CeremonyOperation::Deactivate => {
            activation::switch(&mut run).await
        }
        CeremonyOperation::Destroy => activation::destroy(&mut run).await,
    }
}

/// What must hold before a ceremony may even gather approvals to run.
fn precondition(run: &Run<'_>) -> Option<(&'static str, String)> {
    let kc = run.kc;
    let ca = &run.ca;
    match kc.spec.operation {
        CeremonyOperation::Generate => {
            let named = ca.spec.hsm.key_from.as_ref().map(|k| k.ceremony.as_str());
            if named != Some(kc.name_any().as_str()) {
                return Some((
                    "NotTheCAsCeremony",
                    format!(
                        "CertificateAuthority {:?} does not name this ceremony in spec.hsm.keyFrom; a Generate ceremony makes the key of the CA that asks for it",
                        ca.name_any()
                    ),
                ));
            }
        }
        CeremonyOperation::Destroy
        | CeremonyOperation::Backup
        | CeremonyOperation::Activate
        | CeremonyOperation::Deactivate
        | CeremonyOperation::Restore => {}
    }
    None
}
