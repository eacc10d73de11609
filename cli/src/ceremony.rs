//! `ceremony approve`, `ceremony status`: KeyCeremony approvals (docs/ceremonies.md).
//!
//! An approval is one entry of `spec.approvals` naming the user, the trusted role
//! and the `status.specHash` reviewed, applied server-side under a field manager
//! of its own, `approve-<first 16 hex of the hash>-<user>` (apply owns what a
//! manager sent: reusing a manager would withdraw its earlier entry, which
//! chop-key-ceremony refuses). The user is who the API server says we are
//! (a SelfSubjectReview), since the policy checks the entry against it.

use std::io::Write;

use clap::Subcommand;
use crds::KeyCeremony;
use crds::key_ceremony::{CeremonyPhase, TrustedRole};
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::status::human;
use crate::{Ctx, Error, READ_HINT, api_error, get_error};

/// `ceremony` subcommands.
#[derive(Debug, Subcommand)]
pub enum CeremonyCommand {
    /// Approve a KeyCeremony's current spec hash in your trusted role.
    #[command(
        after_help = "Reads status.specHash, asks the API server who you are, and applies \
your approval with the field manager approve-<hash[0:16]>-<you>. The API server checks that \
you hold the role, did not create the ceremony, have not approved it already, and that the \
hash is current.

Roles: Administrator (chop:administrator), Officer (chop:officer), Auditor (chop:auditor),
Controller (chop:controller).

Example:
  kubectl chop ceremony approve gen-root --role Auditor -n moica --reason 'witnessed, spec reviewed'"
    )]
    Approve {
        /// The KeyCeremony.
        name: String,
        /// The trusted role you approve in: Administrator, Officer, Auditor, Controller.
        #[arg(long)]
        role: String,
        /// Why you agree, for the minutes. No personal data.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Show a KeyCeremony: phase, spec hash, quorum, approvals and steps.
    #[command(after_help = "Example:
  kubectl chop ceremony status gen-root -n moica")]
    Status {
        /// The KeyCeremony.
        name: String,
    },
}

/// Run a `ceremony` subcommand.
pub async fn run(ctx: &Ctx, cmd: CeremonyCommand, out: &mut dyn Write) -> Result<(), Error> {
    match cmd {
        CeremonyCommand::Approve { name, role, reason } => {
            approve(ctx, &name, &role, reason, out).await
        }
        CeremonyCommand::Status { name } => status(ctx, &name, out).await,
    }
}

/// The ClusterRole that carries a trusted role.
pub fn cluster_role(role: TrustedRole) -> &'static str {
    match role {
        TrustedRole::Administrator => "chop:administrator",
        TrustedRole::Officer => "chop:officer",
        TrustedRole::Auditor => "chop:auditor",
        TrustedRole::Controller => "chop:controller",
    }
}

/// The field manager of one approval, as docs/ceremonies.md writes it.
pub fn field_manager(hash: &str, user: &str) -> String {
    let short: String = hash.chars().take(16).collect();
    format!("approve-{short}-{user}")
        .chars()
        .take(128)
        .collect()
}

/// The server-side apply body adding one approval.
pub fn approval_body(
    name: &str,
    user: &str,
    role: TrustedRole,
    hash: &str,
    reason: Option<&str>,
) -> Value {
    let mut entry = json!({"user": user, "role": role.as_str(), "specHash": hash});
    if let Some(r) = reason {
        entry["reason"] = json!(r);
    }
    json!({
        "apiVersion": "chop.dev/v1alpha1",
        "kind": "KeyCeremony",
        "metadata": {"name": name},
        "spec": {"approvals": [entry]}
    })
}

/// Who the API server says the kubeconfig's user is.
pub async fn whoami(ctx: &Ctx) -> Result<String, Error> {
    let review = Api::<SelfSubjectReview>::all(ctx.client.clone())
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .map_err(|e| {
            api_error(
                e,
                "the API server did not say who you are (SelfSubjectReview)",
            )
        })?;
    review
        .status
        .and_then(|s| s.user_info)
        .and_then(|u| u.username)
        .ok_or_else(|| {
            Error::Invalid("the API server's SelfSubjectReview named no user".to_owned())
        })
}

async fn approve(
    ctx: &Ctx,
    name: &str,
    role: &str,
    reason: Option<String>,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let role: TrustedRole =
        serde_json::from_value(Value::String(role.to_owned())).map_err(|_| {
            Error::Invalid(format!(
                "--role {role:?} is not one of: Administrator, Officer, Auditor, Controller"
            ))
        })?;
    let api: Api<KeyCeremony> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let kc = api
        .get(name)
        .await
        .map_err(|e| get_error(e, "KeyCeremony", name, &ctx.namespace, READ_HINT))?;
    let st = kc.status.clone().unwrap_or_default();
    let hash = st.spec_hash.clone().ok_or_else(|| {
        Error::Invalid(format!(
            "keyceremony/{name} has no status.specHash yet: chop-controller publishes it once it \
             has read the ceremony; wait and retry (is chop-controller running?)"
        ))
    })?;
    if let Some(phase) = st.phase
        && phase != CeremonyPhase::WaitingForQuorum
    {
        return Err(Error::Invalid(format!(
            "keyceremony/{name} is {phase:?}: approvals are closed once a ceremony has started"
        )));
    }
    let me = whoami(ctx).await?;
    if kc
        .spec
        .approvals
        .iter()
        .any(|a| a.user == me && a.spec_hash == hash && a.role == role)
    {
        writeln!(
            out,
            "keyceremony/{name}: {me} already approved spec hash {} as {}; nothing to do",
            &hash[..hash.len().min(16)],
            role.as_str()
        )?;
        return Ok(());
    }
    let body = approval_body(name, &me, role, &hash, reason.as_deref());
    let hint = format!(
        "approving as {} needs the {} role bound to you in namespace {}, and you may not approve \
         a ceremony you created or approve twice (docs/roles.md, docs/ceremonies.md)",
        role.as_str(),
        cluster_role(role),
        ctx.namespace
    );
    api.patch(
        name,
        &PatchParams::apply(&field_manager(&hash, &me)),
        &Patch::Apply(&body),
    )
    .await
    .map_err(|e| api_error(e, &hint))?;
    writeln!(
        out,
        "keyceremony/{name}: approved by {me} as {} (spec hash {})",
        role.as_str(),
        &hash[..hash.len().min(16)]
    )?;
    Ok(())
}

async fn status(ctx: &Ctx, name: &str, out: &mut dyn Write) -> Result<(), Error> {
    let api: Api<KeyCeremony> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let kc = api
        .get(name)
        .await
        .map_err(|e| get_error(e, "KeyCeremony", name, &ctx.namespace, READ_HINT))?;
    let st = kc.status.clone().unwrap_or_default();
    let now = jiff::Timestamp::now();
    let rows = [
        (
            "KeyCeremony",
            format!("{name} (namespace {})", ctx.namespace),
        ),
        ("Operation", format!("{:?}", kc.spec.operation)),
        ("CA", kc.spec.ca_ref.name.clone()),
        ("Reason", kc.spec.reason.clone()),
        (
            "Phase",
            st.phase
                .map(|p| format!("{p:?}"))
                .unwrap_or_else(|| "(not judged yet)".to_owned()),
        ),
        (
            "Spec hash",
            st.spec_hash.clone().unwrap_or_else(|| "-".to_owned()),
        ),
        (
            "Quorum",
            st.quorum
                .as_ref()
                .map(|q| format!("{} of {}", q.progress, q.required))
                .unwrap_or_else(|| "-".to_owned()),
        ),
        (
            "Outcome",
            st.conditions
                .iter()
                .find(|c| c.type_ == "Succeeded")
                .map(|c| format!("{} ({}: {})", c.status, c.reason, c.message))
                .unwrap_or_else(|| "-".to_owned()),
        ),
    ];
    for (k, v) in rows {
        writeln!(out, "{k:<12} {v}")?;
    }
    writeln!(out, "\nApprovals:")?;
    if kc.spec.approvals.is_empty() {
        writeln!(out, "  (none)")?;
    }
    let judged = st
        .quorum
        .as_ref()
        .map(|q| q.approvals.as_slice())
        .unwrap_or_default();
    for a in &kc.spec.approvals {
        let current = st.spec_hash.as_deref() == Some(a.spec_hash.as_str());
        let verdict = judged
            .iter()
            .find(|j| j.user == a.user && j.role == a.role.as_str())
            .map(|j| {
                if j.counted {
                    "counted".to_owned()
                } else {
                    format!("not counted ({})", j.note.as_deref().unwrap_or("-"))
                }
            })
            .unwrap_or_else(|| {
                if current {
                    "not judged yet".to_owned()
                } else {
                    "names an older spec hash".to_owned()
                }
            });
        writeln!(
            out,
            "  {:<24} {:<14} {:<16} {verdict}",
            a.user,
            a.role.as_str(),
            &a.spec_hash[..a.spec_hash.len().min(16)]
        )?;
    }
    if !st.steps.is_empty() {
        writeln!(out, "\nSteps:")?;
        for s in &st.steps {
            writeln!(
                out,
                "  {:<16} {:<10} {} ago  {}",
                s.name,
                s.outcome,
                human(now.as_second() - s.time.0.as_second()),
                s.message.as_deref().unwrap_or("")
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn manager_and_body_follow_the_docs() {
        let hash = "0123456789abcdef".repeat(4);
        assert_eq!(
            field_manager(&hash, "auditor-1"),
            "approve-0123456789abcdef-auditor-1"
        );
        let b = approval_body("gen", "auditor-1", TrustedRole::Auditor, &hash, Some("ok"));
        assert_eq!(
            b["spec"]["approvals"],
            json!([{"user": "auditor-1", "role": "Auditor", "specHash": hash, "reason": "ok"}])
        );
        assert_eq!(field_manager(&hash, &"u".repeat(300)).len(), 128);
    }
}
