//! Opening the tokens a ceremony works on: the module only from the allow-list,
//! the PIN only from its Secret, every PKCS#11 call off the async runtime.

use ca::signer::Pin;
use ca::signer::pkcs11::{Pkcs11Module, Token};
use crds::common::SecretKeySelector;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::controller::Action;

use super::Run;
use crate::error::{Error, Result};

/// Why a token could not be opened.
pub enum Opening {
    /// Open.
    Token(Token),
    /// A configuration problem the ceremony fails with: reason, message.
    Refused(&'static str, String),
    /// A token error (wrong PIN, missing token, ...).
    Hsm(ca::Error),
}

/// Open `token_label` in `module` with the PIN in `pin_ref` (ceremony namespace).
pub async fn open(
    run: &Run<'_>,
    module: &str,
    token_label: &str,
    pin_ref: &SecretKeySelector,
) -> Result<Opening> {
    let path = match run.ctx.modules.check(module) {
        Ok(p) => p,
        Err(msg) => return Ok(Opening::Refused("ModuleNotAllowed", msg)),
    };
    let secrets: Api<Secret> = Api::namespaced(run.ctx.client.clone(), &run.namespace());
    let secret = secrets
        .get_opt(&pin_ref.name)
        .await
        .map_err(Error::kube("get PIN Secret"))?;
    let Some(bytes) = secret
        .as_ref()
        .and_then(|s| s.data.as_ref())
        .and_then(|d| d.get(&pin_ref.key))
    else {
        return Ok(Opening::Refused(
            "PinSecretNotFound",
            format!(
                "Secret {:?} with key {:?} not found",
                pin_ref.name, pin_ref.key
            ),
        ));
    };
    let Ok(text) = String::from_utf8(bytes.0.clone()) else {
        return Ok(Opening::Refused(
            "PinSecretInvalid",
            format!(
                "PIN Secret {:?} key {:?} is not UTF-8",
                pin_ref.name, pin_ref.key
            ),
        ));
    };
    let pin = Pin::new(text.trim_end_matches(['\n', '\r']).to_string());
    let label = token_label.to_string();
    let opened = blocking(run, move || {
        let module = Pkcs11Module::open(&path)?;
        Token::open(&module, &label, pin)
    })
    .await?;
    Ok(match opened {
        Ok(t) => Opening::Token(t),
        Err(e) => Opening::Hsm(e),
    })
}

/// Open a token for `step`, or end the ceremony saying why: `Ok(Err(action))`
/// when it could not be opened (a transient token error is returned as `Err`
/// and retried).
pub async fn open_for(
    run: &mut Run<'_>,
    step: &str,
    module: &str,
    token_label: &str,
    pin_ref: &SecretKeySelector,
) -> Result<std::result::Result<Token, Action>> {
    Ok(match open(run, module, token_label, pin_ref).await? {
        Opening::Token(t) => Ok(t),
        Opening::Refused(reason, msg) => Err(run.fail(reason, msg).await?),
        Opening::Hsm(e) => Err(run.hsm_failure(step, e).await?),
    })
}

/// Commit the `ceremony.step` record of HSM step `step` (`purpose`: why the
/// CA key is used, e.g. `ceremony-generate`) before it runs (CPS §5.4.6): an
/// error (`AuditUnavailable`) means the step does not run and is retried.
pub async fn audited(run: &Run<'_>, step: &str, purpose: &str) -> Result<()> {
    let ns = run.namespace();
    let ev = crate::audit::AuditEvent::new("ceremony.step", "intent")
        .object(run.kc)
        .ca(&ns, &run.kc.spec.ca_ref.name)
        .detail("step", step)
        .detail("purpose", purpose)
        .detail("operation", run.kc.spec.operation.as_str())
        .detail("keyLabel", run.ca.spec.hsm.key_label.clone())
        .detail("token", run.ca.spec.hsm.token_label.clone())
        .dedup(format!(
            "ceremony.step/{}/{step}",
            kube::ResourceExt::uid(run.kc).unwrap_or_default()
        ));
    run.ctx.audit.record(ev).await.map(|_| ())
}

/// Run a PKCS#11 job on the blocking pool.
pub async fn blocking<T, F>(run: &Run<'_>, f: F) -> Result<std::result::Result<T, ca::Error>>
where
    F: FnOnce() -> std::result::Result<T, ca::Error> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Invalid {
            object: run.id(),
            message: format!("HSM task failed: {e}"),
        })
}

/// Generate a CA key that can later be backed up (wrapped, never exported in
/// the clear).
pub fn generate_wrappable(
    token: &Token,
    label: &str,
    id: &[u8],
    spec: ca::signer::KeySpec,
) -> std::result::Result<spki::SubjectPublicKeyInfoOwned, ca::Error> {
    token.generate_key_with(label, Some(id), spec, ca::signer::pkcs11::Backup::Allowed)
}
