//! `approve`, `deny`, `accept`: the decisions on a CertificateRequest.
//!
//! An officer's decision is the `Approved` or `Denied` condition on the request's
//! status subresource, written by server-side apply under the field manager
//! `kubectl-chop` (the conditions are a map keyed by type, so the officer owns
//! only that entry). chop-approval checks the right (`approve` on
//! `signers.chop.dev/<ns>.<ca>`) and that a decision is final; chop-no-self-approval
//! that nobody decides their own request. The applicant's acceptance is
//! `spec.accepted: true`, the only spec field that may change (chop-request-spec).

use std::io::Write;

use crds::CertificateRequest;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use crate::{Ctx, Error, FIELD_MANAGER, api_error, get_error};

/// Approve or deny.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// `Approved=True`, reason `OfficerApproved`.
    Approve,
    /// `Denied=True`, reason `OfficerDenied`.
    Deny,
}

impl Decision {
    fn condition(self) -> &'static str {
        match self {
            Decision::Approve => "Approved",
            Decision::Deny => "Denied",
        }
    }
    fn reason(self) -> &'static str {
        match self {
            Decision::Approve => "OfficerApproved",
            Decision::Deny => "OfficerDenied",
        }
    }
}

fn officer_hint(ns: &str, ca: &str) -> String {
    format!(
        "deciding requests for CA {ca} needs the chop:officer role (verb approve on \
         signers.chop.dev/{ns}.{ca}) bound in namespace {ns}; ask your cluster administrator \
         (docs/roles.md). Nobody may decide a request they created."
    )
}

/// The request's final decision, if any: (`Approved`|`Denied`, reason, message).
pub fn decision_of(cr: &CertificateRequest) -> Option<(String, String, String)> {
    cr.status.as_ref().and_then(|s| {
        s.conditions
            .iter()
            .find(|c| (c.type_ == "Approved" || c.type_ == "Denied") && c.status == "True")
            .map(|c| (c.type_.clone(), c.reason.clone(), c.message.clone()))
    })
}

/// Write the officer's decision on `name`.
pub async fn decide(
    ctx: &Ctx,
    name: &str,
    decision: Decision,
    reason: Option<String>,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let api: Api<CertificateRequest> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let cr = api.get(name).await.map_err(|e| {
        get_error(
            e,
            "CertificateRequest",
            name,
            &ctx.namespace,
            crate::READ_HINT,
        )
    })?;
    let ca = cr.spec.ca_ref.name.clone();
    if let Some((kind, why, message)) = decision_of(&cr) {
        if kind == decision.condition() {
            writeln!(
                out,
                "certificaterequest/{name} is already {kind} ({why}: {message}); nothing to do"
            )?;
            return Ok(());
        }
        return Err(Error::Invalid(format!(
            "certificaterequest/{name} is already {kind} ({why}: {message}): a decision is final; \
             create a new CertificateRequest"
        )));
    }
    let message = match (decision, reason) {
        (_, Some(r)) if !r.trim().is_empty() => r,
        (Decision::Approve, _) => "approved with kubectl chop".to_owned(),
        (Decision::Deny, _) => {
            return Err(Error::Invalid(
                "deny needs a non-empty --reason (it is the applicant's answer)".to_owned(),
            ));
        }
    };
    let body = json!({
        "apiVersion": "chop.dev/v1alpha1",
        "kind": "CertificateRequest",
        "metadata": {"name": name},
        "status": {"conditions": [{
            "type": decision.condition(),
            "status": "True",
            "reason": decision.reason(),
            "message": message,
            "lastTransitionTime": crate::now_rfc3339(),
        }]}
    });
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER),
        &Patch::Apply(&body),
    )
    .await
    .map_err(|e| api_error(e, &officer_hint(&ctx.namespace, &ca)))?;
    let verb = match decision {
        Decision::Approve => "approved",
        Decision::Deny => "denied",
    };
    writeln!(out, "certificaterequest/{name} {verb} (CA {ca})")?;
    Ok(())
}

/// Set `spec.accepted: true` on `name`.
pub async fn accept(ctx: &Ctx, name: &str, out: &mut dyn Write) -> Result<(), Error> {
    let api: Api<CertificateRequest> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let cr = api.get(name).await.map_err(|e| {
        get_error(
            e,
            "CertificateRequest",
            name,
            &ctx.namespace,
            crate::READ_HINT,
        )
    })?;
    if cr.spec.accepted {
        writeln!(
            out,
            "certificaterequest/{name} is already accepted; nothing to do"
        )?;
        return Ok(());
    }
    api.patch(
        name,
        &PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        },
        &Patch::Merge(json!({"spec": {"accepted": true}})),
    )
    .await
    .map_err(|e| {
        api_error(
            e,
            &format!(
                "accepting needs the chop:registration-authority role (patch certificaterequests) \
                 bound in namespace {}; docs/roles.md",
                ctx.namespace
            ),
        )
    })?;
    writeln!(out, "certificaterequest/{name} accepted")?;
    Ok(())
}
