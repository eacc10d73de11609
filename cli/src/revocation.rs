//! `revoke`, `suspend`, `resume`: Revocation and Suspension objects.
//!
//! Both are created with a name derived from what they target (unless `--name`
//! is given), so running the same command twice finds the first object and
//! changes nothing: `rev-<request>` / `rev-<ca>-<serial>` and `hold-<request>` /
//! `hold-<ca>-<serial>` (serial in lower-case hex).

use std::io::Write;

use clap::Args;
use crds::revocation::{RevocationReason, RevocationRequester};
use crds::suspension::SuspensionRequester;
use crds::{CertificateRequest, Revocation, Suspension};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::{Ctx, Error, FIELD_MANAGER, api_error, get_error};

/// `revoke` arguments.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["request", "serial"])))]
pub struct RevokeArgs {
    /// The CertificateRequest whose certificate is revoked.
    #[arg(long, conflicts_with = "serial")]
    pub request: Option<String>,
    /// Or the certificate's serial number (hex); needs --ca.
    #[arg(long, requires = "ca")]
    pub serial: Option<String>,
    /// The CertificateAuthority that issued the serial.
    #[arg(long)]
    pub ca: Option<String>,
    /// RFC 5280 reason, e.g. keyCompromise, superseded, cessationOfOperation.
    #[arg(long)]
    pub reason: String,
    /// Who asked for it (CPS §4.9.2).
    #[arg(long, default_value = "Subscriber")]
    pub requester: String,
    /// Note for the audit record. No personal data.
    #[arg(long)]
    pub comment: Option<String>,
    /// Name of the Revocation (default: derived, so a retry is idempotent).
    #[arg(long)]
    pub name: Option<String>,
}

/// `suspend` arguments.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["request", "serial"])))]
pub struct SuspendArgs {
    /// The CertificateRequest whose certificate is held.
    #[arg(long, conflicts_with = "serial")]
    pub request: Option<String>,
    /// Or the certificate's serial number (hex); needs --ca.
    #[arg(long, requires = "ca")]
    pub serial: Option<String>,
    /// The CertificateAuthority that issued the serial.
    #[arg(long)]
    pub ca: Option<String>,
    /// Who asked for it (CPS §4.9.14): Subscriber, JudicialAuthority,
    /// RegistrationAuthority, CertificationAuthority.
    #[arg(long, default_value = "Subscriber")]
    pub requester: String,
    /// Name of the Suspension (default: derived, so a retry is idempotent).
    #[arg(long)]
    pub name: Option<String>,
}

const WRITE_HINT: &str = "creating revocations and suspensions needs chop:officer or \
chop:registration-authority bound in this namespace; resuming needs chop:officer (docs/roles.md)";

/// Parse a spec enum from its API spelling, listing the valid values otherwise.
fn parse_enum<T: DeserializeOwned>(what: &str, value: &str, valid: &str) -> Result<T, Error> {
    serde_json::from_value(Value::String(value.to_owned()))
        .map_err(|_| Error::Invalid(format!("{what} {value:?} is not one of: {valid}")))
}

/// A spec enum as the API spells it.
fn api_name<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The revocation reasons, as the API spells them.
pub const REASONS: &str = "unspecified, keyCompromise, cACompromise, affiliationChanged, \
superseded, cessationOfOperation, privilegeWithdrawn, aACompromise";

/// What a Revocation or Suspension points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The CA.
    pub ca: String,
    /// `certificateRequestRef.name`, or
    pub request: Option<String>,
    /// `serialNumber` (upper-case hex).
    pub serial: Option<String>,
}

impl Target {
    /// The derived object name: `<prefix>-<request>` or `<prefix>-<ca>-<serial>`.
    pub fn derived_name(&self, prefix: &str) -> String {
        let name = match (&self.request, &self.serial) {
            (Some(r), _) => format!("{prefix}-{r}"),
            (None, Some(s)) => format!("{prefix}-{}-{}", self.ca, s.to_ascii_lowercase()),
            (None, None) => prefix.to_owned(),
        };
        name.chars().take(253).collect()
    }

    fn spec_fields(&self) -> Value {
        let mut v = json!({"caRef": {"name": self.ca}});
        if let Some(r) = &self.request {
            v["certificateRequestRef"] = json!({"name": r});
        }
        if let Some(s) = &self.serial {
            v["serialNumber"] = json!(s);
        }
        v
    }
}

async fn target(
    ctx: &Ctx,
    request: Option<String>,
    serial: Option<String>,
    ca: Option<String>,
) -> Result<Target, Error> {
    if let Some(request) = request {
        let api: Api<CertificateRequest> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
        let cr = api
            .get_opt(&request)
            .await
            .map_err(|e| crate::api_error(e, crate::READ_HINT))?;
        let Some(cr) = cr else {
            // Deleted (chop-controller collects finished requests): the
            // register still knows which CA issued a certificate for it.
            let found = crate::find::records(
                ctx,
                &crate::find::FindArgs {
                    serial: None,
                    subscriber: None,
                    request: Some(request.clone()),
                    key_fingerprint: None,
                    ca: ca.clone(),
                },
            )
            .await?;
            let mut cas: Vec<String> = found.iter().map(|r| r.spec.ca_ref.name.clone()).collect();
            cas.dedup();
            return match cas.as_slice() {
                [only] => Ok(Target {
                    ca: only.clone(),
                    request: Some(request),
                    serial: None,
                }),
                [] => Err(Error::NotFound {
                    kind: "CertificateRequest",
                    name: request,
                    namespace: ctx.namespace.clone(),
                    hint: "no request of that name, and no certificate of the register was issued for one \
                           (kubectl chop find --request NAME); name the certificate with --serial HEX --ca CA"
                        .to_owned(),
                }),
                _ => Err(Error::Invalid(format!(
                    "certificaterequest/{request} is gone and certificates of several CAs ({}) were issued for requests of that name; add --ca CA",
                    cas.join(", ")
                ))),
            };
        };
        if let Some(ca) = ca
            && ca != cr.spec.ca_ref.name
        {
            return Err(Error::Invalid(format!(
                "certificaterequest/{request} belongs to CA {}, not {ca}; drop --ca",
                cr.spec.ca_ref.name
            )));
        }
        return Ok(Target {
            ca: cr.spec.ca_ref.name,
            request: Some(request),
            serial: None,
        });
    }
    let serial = serial.unwrap_or_default();
    let ok =
        !serial.is_empty() && serial.len() <= 40 && serial.chars().all(|c| c.is_ascii_hexdigit());
    if !ok {
        return Err(Error::Invalid(format!(
            "--serial {serial:?} is not a hexadecimal serial number (1 to 40 hex digits)"
        )));
    }
    let ca = ca.ok_or_else(|| Error::Invalid("--serial needs --ca CA".to_owned()))?;
    Ok(Target {
        ca,
        request: None,
        serial: Some(serial.to_ascii_uppercase()),
    })
}

/// Create `body` named `name`; if it exists, accept it when `same(existing)`.
/// Returns whether it was created.
async fn create_idempotent<K>(
    api: &Api<K>,
    name: &str,
    body: &K,
    same: impl Fn(&K) -> Result<(), String>,
) -> Result<bool, Error>
where
    K: Resource + Clone + std::fmt::Debug + Serialize + DeserializeOwned,
{
    match api.create(&PostParams::default(), body).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 && s.reason == "AlreadyExists" => {
            let existing = api.get(name).await.map_err(|e| api_error(e, WRITE_HINT))?;
            same(&existing).map_err(Error::Invalid)?;
            Ok(false)
        }
        Err(e) => Err(api_error(e, WRITE_HINT)),
    }
}

/// Build the Revocation `revoke` creates (pure, for tests).
pub fn revocation_body(
    name: &str,
    target: &Target,
    reason: RevocationReason,
    requester: RevocationRequester,
    comment: Option<&str>,
) -> Result<Revocation, Error> {
    let mut spec = target.spec_fields();
    spec["reason"] = serde_json::to_value(reason).map_err(|e| Error::Invalid(e.to_string()))?;
    spec["requester"] =
        serde_json::to_value(requester).map_err(|e| Error::Invalid(e.to_string()))?;
    if let Some(c) = comment {
        spec["comment"] = json!(c);
    }
    serde_json::from_value(json!({
        "apiVersion": "chop.dev/v1alpha1", "kind": "Revocation",
        "metadata": {"name": name}, "spec": spec
    }))
    .map_err(|e| Error::Invalid(e.to_string()))
}

/// `revoke`.
pub async fn revoke(ctx: &Ctx, args: RevokeArgs, out: &mut dyn Write) -> Result<(), Error> {
    let reason: RevocationReason = parse_enum("--reason", &args.reason, REASONS)?;
    let requester: RevocationRequester = parse_enum(
        "--requester",
        &args.requester,
        "Subscriber, JudicialAuthority, ImmigrationAgency, HouseholdRegistrationOffice, \
         RegistrationAuthority, CertificationAuthority",
    )?;
    let target = target(ctx, args.request, args.serial, args.ca).await?;
    let name = args.name.unwrap_or_else(|| target.derived_name("rev"));
    let body = revocation_body(&name, &target, reason, requester, args.comment.as_deref())?;
    let api: Api<Revocation> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let created = create_idempotent(&api, &name, &body, |existing| {
        if existing.spec == body.spec {
            Ok(())
        } else {
            Err(format!(
                "revocation/{name} already exists with another spec (reason {}, requester {}); a \
                 revocation is permanent and cannot change. Pass --name to record another one.",
                api_name(&existing.spec.reason),
                api_name(&existing.spec.requester)
            ))
        }
    })
    .await?;
    if created {
        writeln!(out, "revocation/{name} created (CA {})", target.ca)?;
    } else {
        writeln!(
            out,
            "revocation/{name} already exists with this spec; nothing to do"
        )?;
    }
    Ok(())
}

/// `suspend`.
pub async fn suspend(ctx: &Ctx, args: SuspendArgs, out: &mut dyn Write) -> Result<(), Error> {
    let requester: SuspensionRequester = parse_enum(
        "--requester",
        &args.requester,
        "Subscriber, JudicialAuthority, RegistrationAuthority, CertificationAuthority",
    )?;
    let target = target(ctx, args.request, args.serial, args.ca).await?;
    let name = args.name.unwrap_or_else(|| target.derived_name("hold"));
    let mut spec = target.spec_fields();
    spec["requester"] =
        serde_json::to_value(requester).map_err(|e| Error::Invalid(e.to_string()))?;
    let body: Suspension = serde_json::from_value(json!({
        "apiVersion": "chop.dev/v1alpha1", "kind": "Suspension",
        "metadata": {"name": name}, "spec": spec
    }))
    .map_err(|e| Error::Invalid(e.to_string()))?;
    let api: Api<Suspension> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let created = create_idempotent(&api, &name, &body, |existing| {
        if existing.spec.resumed {
            Err(format!(
                "suspension/{name} exists and was resumed; pass --name to hold the certificate again"
            ))
        } else if existing.spec.ca_ref != body.spec.ca_ref
            || existing.spec.certificate_request_ref != body.spec.certificate_request_ref
            || existing.spec.serial_number != body.spec.serial_number
        {
            Err(format!(
                "suspension/{name} exists for another certificate; pass --name"
            ))
        } else {
            Ok(())
        }
    })
    .await?;
    if created {
        writeln!(out, "suspension/{name} created (CA {})", target.ca)?;
    } else {
        writeln!(out, "suspension/{name} already holds it; nothing to do")?;
    }
    Ok(())
}

/// `resume`.
pub async fn resume(ctx: &Ctx, name: &str, out: &mut dyn Write) -> Result<(), Error> {
    let api: Api<Suspension> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let s = api
        .get(name)
        .await
        .map_err(|e| get_error(e, "Suspension", name, &ctx.namespace, crate::READ_HINT))?;
    if s.spec.resumed {
        writeln!(out, "suspension/{name} is already resumed; nothing to do")?;
        return Ok(());
    }
    api.patch(
        name,
        &PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        },
        &Patch::Merge(json!({"spec": {"resumed": true}})),
    )
    .await
    .map_err(|e| api_error(e, WRITE_HINT))?;
    writeln!(out, "suspension/{name} resumed")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn derived_names_are_stable_and_valid() {
        let t = Target {
            ca: "moica".into(),
            request: None,
            serial: Some("1A2B".into()),
        };
        assert_eq!(t.derived_name("rev"), "rev-moica-1a2b");
        let t = Target {
            ca: "moica".into(),
            request: Some("alice".into()),
            serial: None,
        };
        assert_eq!(t.derived_name("hold"), "hold-alice");
    }

    #[test]
    fn reasons_parse_in_api_spelling_only() {
        let r: RevocationReason = parse_enum("--reason", "cACompromise", REASONS).unwrap();
        assert_eq!(r, RevocationReason::CaCompromise);
        let e = parse_enum::<RevocationReason>("--reason", "certificateHold", REASONS).unwrap_err();
        assert!(e.to_string().contains("keyCompromise"), "{e}");
    }
}
