//! # kubectl-chop
//!
//! The kubectl plugin for chop: the everyday actions of the trusted roles
//! (approve, deny, accept, revoke, suspend, resume, key-ceremony approvals) and
//! two read-only views (`status`, `conformance`), as thin commands over the
//! Kubernetes API. The plugin holds no privilege of its own: every write is made
//! as the user of the kubeconfig, and the API server (RBAC and chop's admission
//! policies, docs/roles.md) decides. A refusal is printed with the API server's
//! message and the role that grants the right.
//!
//! One file per command group: [`request`] (approve, deny, accept),
//! [`revocation`] (revoke, suspend, resume), [`status`], [`find`] (a
//! certificate in the register, also after its request was deleted), [`conformance`],
//! [`ceremony`], [`audit`] (the auditor's commands over the signed audit trail,
//! which read an export file offline or the cluster). Non-goals: no caching, no retries beyond what makes a command
//! idempotent, no client-side policy (the server's refusal is the answer).

pub mod audit;
pub mod ceremony;
pub mod conformance;
pub mod duration;
pub mod find;
pub mod request;
pub mod revocation;
pub mod status;

use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};

/// Field manager of every server-side apply the plugin makes.
pub const FIELD_MANAGER: &str = "kubectl-chop";

/// Everything that can go wrong, each with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No usable kubeconfig.
    #[error(
        "cannot load the kubeconfig: {0}\n  hint: pass --kubeconfig FILE, set KUBECONFIG, or check --context"
    )]
    Kubeconfig(String),
    /// The API server refused the request.
    #[error("Error from server ({reason}): {message}\n  hint: {hint}")]
    Refused {
        /// HTTP reason, e.g. `Forbidden`.
        reason: String,
        /// The API server's message, verbatim.
        message: String,
        /// What to do.
        hint: String,
    },
    /// An object the command needs does not exist.
    #[error("{kind} {name:?} not found in namespace {namespace:?}\n  hint: {hint}")]
    NotFound {
        /// Kind, e.g. `CertificateRequest`.
        kind: &'static str,
        /// Name asked for.
        name: String,
        /// Namespace looked in.
        namespace: String,
        /// What to do.
        hint: String,
    },
    /// The command cannot be carried out as asked (the state forbids it).
    #[error("{0}")]
    Invalid(String),
    /// Any other failure talking to the API server.
    #[error("talking to the API server: {0}")]
    Kube(#[source] kube::Error),
    /// Writing the output failed.
    #[error("writing output: {0}")]
    Io(#[from] std::io::Error),
    /// `conformance` found requirements not met (exit status 1).
    #[error("{0} CPS requirement(s) not met")]
    NotConforming(usize),
    /// `audit` found the trail invalid: tampered, truncated, or signed by another
    /// key (exit status 1). The message names the problem.
    #[error("{0}\n  hint: docs/audit.md says what each problem means and what to do")]
    AuditProblem(String),
}

impl Error {
    /// Exit status: 1 when `conformance` found something not met or `audit` a
    /// problem in the trail, 2 for any error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::NotConforming(_) | Error::AuditProblem(_) => 1,
            _ => 2,
        }
    }
}

/// Turn a kube error into one that says what to do. `hint403` names the role
/// that grants the refused right.
pub(crate) fn api_error(err: kube::Error, hint403: &str) -> Error {
    match err {
        kube::Error::Api(status) => {
            let hint = match status.code {
                401 => "your credentials were not accepted: refresh them (kubectl auth whoami shows who you are)".to_owned(),
                403 => hint403.to_owned(),
                409 => "the object changed or exists already: read it again (kubectl get) and retry".to_owned(),
                422 => "the API server or a chop admission policy refused the change as invalid; the message says which rule (docs/roles.md)".to_owned(),
                _ => "see the message; docs/kubectl-chop.md lists what each command needs".to_owned(),
            };
            Error::Refused {
                reason: if status.reason.is_empty() {
                    status.code.to_string()
                } else {
                    status.reason.clone()
                },
                message: status.message.clone(),
                hint,
            }
        }
        other => Error::Kube(other),
    }
}

/// Map a 404 to [`Error::NotFound`], anything else through [`api_error`].
pub(crate) fn get_error(
    err: kube::Error,
    kind: &'static str,
    name: &str,
    namespace: &str,
    hint403: &str,
) -> Error {
    match &err {
        kube::Error::Api(s) if s.code == 404 => Error::NotFound {
            kind,
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            hint: format!(
                "list them with `kubectl get {} -n {namespace}`, or pass -n NAMESPACE",
                kind.to_ascii_lowercase()
            ),
        },
        _ => api_error(err, hint403),
    }
}

const ABOUT: &str = "Operate a chop certification authority from kubectl.

Every command acts as the user of your kubeconfig: the API server (RBAC and
chop's admission policies) decides, and a refusal is printed with its message
and the role that grants the right (docs/roles.md).";

const EXAMPLES: &str = "Examples:
  # an officer approves, then the applicant accepts
  kubectl chop approve alice-sig -n moica --reason 'identity checked in person'
  kubectl chop accept alice-sig -n moica

  # revoke a request's certificate (idempotent: safe to run twice)
  kubectl chop revoke --request alice-sig --reason keyCompromise -n moica

  # find a certificate in the register (also after its request was deleted)
  kubectl chop find --request alice-sig -n moica
  kubectl chop find --serial 1A:2B:3C -n moica

  # how is the CA doing, and does its configuration meet the CPS?
  kubectl chop status moica -n moica
  kubectl chop conformance moica -n moica

  # approve a key ceremony in your trusted role
  kubectl chop ceremony approve gen-root --role Auditor -n moica

  # an auditor verifies the signed audit trail, archives it, samples a quarter
  kubectl chop audit verify --from-cluster --since audit-2026Q3.json
  kubectl chop audit export -o audit-2026Q4.json
  kubectl chop audit sample --quarter 2026Q4 audit-2026Q4.json

Exit status: 0 success; 1 conformance found a requirement not met, or audit found
the trail tampered or invalid; 2 error.";

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "kubectl-chop",
    bin_name = "kubectl chop",
    version,
    about = "Operate a chop certification authority from kubectl",
    long_about = ABOUT,
    after_help = EXAMPLES
)]
pub struct Cli {
    /// Namespace of the CA and its objects (default: the context's namespace, else `default`).
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    /// Path of the kubeconfig file (default: the files in $KUBECONFIG, else ~/.kube/config).
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: the current context).
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Approve a CertificateRequest (officer; sets Approved=True on its status).
    #[command(
        after_help = "Needs chop:officer (verb approve on signers.chop.dev/<ns>.<ca>). \
A decision is final; you may not decide a request you created.

Example:
  kubectl chop approve alice-sig -n moica --reason 'identity checked in person'"
    )]
    Approve {
        /// The CertificateRequest.
        request: String,
        /// Why, for the record (the condition's message). No personal data.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Deny a CertificateRequest (officer; sets Denied=True with your reason).
    #[command(after_help = "Needs chop:officer. A decision is final.

Example:
  kubectl chop deny bob-sig -n moica --reason 'documents did not match'")]
    Deny {
        /// The CertificateRequest.
        request: String,
        /// Why (required; the condition's message). No personal data.
        #[arg(long)]
        reason: String,
    },
    /// Accept the certificate of a CertificateRequest for the applicant (CPS §4.4; spec.accepted=true).
    #[command(
        after_help = "Needs chop:registration-authority (patch certificaterequests; \
only spec.accepted may change). Acceptance cannot be withdrawn.

Example:
  kubectl chop accept alice-sig -n moica"
    )]
    Accept {
        /// The CertificateRequest.
        request: String,
    },
    /// Revoke a certificate (creates a Revocation; permanent).
    #[command(
        after_help = "Needs chop:officer or chop:registration-authority (create revocations). \
Every certificate of the CA sharing the key is revoked too (CPS §4.6.2). The Revocation's \
name is derived from the request or serial unless --name is given, so running the same \
command again changes nothing.

Reasons (RFC 5280): unspecified, keyCompromise, cACompromise, affiliationChanged, superseded,
cessationOfOperation, privilegeWithdrawn, aACompromise.
Requesters (CPS §4.9.2): Subscriber, JudicialAuthority, ImmigrationAgency,
HouseholdRegistrationOffice, RegistrationAuthority, CertificationAuthority.

Examples:
  kubectl chop revoke --request alice-sig --reason keyCompromise -n moica
  kubectl chop revoke --serial 1A2B3C --ca moica --reason superseded --requester CertificationAuthority"
    )]
    Revoke(revocation::RevokeArgs),
    /// Put a certificate on hold (creates a Suspension; CRL reason certificateHold).
    #[command(
        after_help = "Needs chop:officer or chop:registration-authority. The Suspension's \
name is derived from the request or serial unless --name is given; resume it with \
`kubectl chop resume NAME`.

Example:
  kubectl chop suspend --request alice-sig -n moica"
    )]
    Suspend(revocation::SuspendArgs),
    /// Resume a held certificate (sets spec.resumed=true on the Suspension).
    #[command(
        after_help = "Needs chop:officer (patch suspensions). Final: to hold again, suspend anew.

Example:
  kubectl chop resume hold-alice-sig -n moica"
    )]
    Resume {
        /// The Suspension.
        suspension: String,
    },
    /// Show a CA: certificate, readiness, CRL, counts by state, responder, pending requests.
    #[command(after_help = "Needs read access to chop resources (any chop role).

Example:
  kubectl chop status moica -n moica")]
    Status {
        /// The CertificateAuthority.
        ca: String,
    },
    /// Find a certificate in the register by serial, subscriber, request name or key fingerprint.
    #[command(
        after_help = "Needs read access to chop resources (any chop role). Reads the CA's \
register (IssuedCertificates), which keeps every certificate after chop-controller deleted \
its finished CertificateRequest (--request-retention, default 7 days): --request NAME still \
finds it. Prints CA, serial, status (Valid, Held, Revoked), notAfter, request, the \
CA-assigned subscriber identifier, profile and the record's name (`kubectl get issued \
RECORD -o yaml` shows the certificate); never the subject's name (CPS §9.4). Exit status \
2 when nothing matches.

Examples:
  kubectl chop find --request alice-sig -n moica
  kubectl chop find --serial 1A:2B:3C -n moica          # as `openssl x509 -serial` prints it
  kubectl chop find --subscriber M1234567890123 --ca moica
  kubectl chop find --key-fingerprint 3f1c...e9 -n moica  # every certificate of that key pair"
    )]
    Find(find::FindArgs),
    /// Check a CA and its CRLSchedule against the CPS limits; exit status 1 if any is not met.
    #[command(
        after_help = "Needs read access to chop resources (any chop role). Each CPS \
section is printed as met or NOT MET with the field to change.

Example:
  kubectl chop conformance moica -n moica"
    )]
    Conformance {
        /// The CertificateAuthority.
        ca: String,
    },
    /// Key ceremonies: approve in your trusted role, show status.
    #[command(subcommand)]
    Ceremony(ceremony::CeremonyCommand),
    /// The signed audit trail: verify, export, search, sample, prove (auditor).
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Print a shell completion script.
    #[command(after_help = "Examples:
  kubectl chop completion bash > /etc/bash_completion.d/kubectl-chop
  kubectl chop completion zsh > \"${fpath[1]}/_kubectl-chop\"
  kubectl chop completion fish > ~/.config/fish/completions/kubectl-chop.fish")]
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// A connected client and the namespace commands act in.
#[derive(Clone)]
pub struct Ctx {
    /// The client, authenticated as the kubeconfig's user.
    pub client: Client,
    /// The namespace.
    pub namespace: String,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl Ctx {
    /// Connect as the kubeconfig's user.
    pub async fn connect(cli: &Cli) -> Result<Ctx, Error> {
        let kubeconfig = match &cli.kubeconfig {
            Some(path) => Kubeconfig::read_from(path),
            None => Kubeconfig::read(),
        }
        .map_err(|e| Error::Kubeconfig(e.to_string()))?;
        let options = KubeConfigOptions {
            context: cli.context.clone(),
            ..KubeConfigOptions::default()
        };
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .map_err(|e| Error::Kubeconfig(e.to_string()))?;
        let namespace = cli
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = Client::try_from(config).map_err(|e| Error::Kubeconfig(e.to_string()))?;
        Ok(Ctx { client, namespace })
    }
}

/// Run one parsed command line, writing its output to `out`.
pub async fn run(cli: Cli, out: &mut dyn Write) -> Result<(), Error> {
    if let Command::Completion { shell } = &cli.command {
        let mut cmd = <Cli as clap::CommandFactory>::command();
        clap_complete::generate(*shell, &mut cmd, "kubectl-chop", out);
        return Ok(());
    }
    if let Command::Audit(command) = &cli.command {
        // Connects only for --from-cluster: an export FILE is verified offline.
        return audit::run(&cli, command, out).await;
    }
    let ctx = Ctx::connect(&cli).await?;
    match cli.command {
        Command::Approve { request, reason } => {
            request::decide(&ctx, &request, request::Decision::Approve, reason, out).await
        }
        Command::Deny { request, reason } => {
            request::decide(&ctx, &request, request::Decision::Deny, Some(reason), out).await
        }
        Command::Accept { request } => request::accept(&ctx, &request, out).await,
        Command::Revoke(args) => revocation::revoke(&ctx, args, out).await,
        Command::Suspend(args) => revocation::suspend(&ctx, args, out).await,
        Command::Resume { suspension } => revocation::resume(&ctx, &suspension, out).await,
        Command::Status { ca } => status::status(&ctx, &ca, out).await,
        Command::Find(args) => find::find(&ctx, &args, out).await,
        Command::Conformance { ca } => conformance::conformance(&ctx, &ca, out).await,
        Command::Ceremony(c) => ceremony::run(&ctx, c, out).await,
        Command::Completion { .. } | Command::Audit(_) => Ok(()),
    }
}

/// Hint for reads refused with 403.
pub(crate) const READ_HINT: &str = "reading chop resources needs a chop role bound in this namespace \
(chop:auditor, chop:operator, chop:officer, chop:administrator, ...; docs/roles.md)";

/// Now, as an RFC 3339 timestamp in whole seconds (as Kubernetes writes them).
pub(crate) fn now_rfc3339() -> String {
    let now = jiff::Timestamp::now();
    jiff::Timestamp::from_second(now.as_second())
        .unwrap_or(now)
        .to_string()
}
