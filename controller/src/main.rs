//! `chop-controller`: leader election, then the chop.dev controllers.
//!
//! ```text
//! chop-controller [--namespace NS] [--lease-namespace NS] [--lease-name NAME]
//!                 [--metrics-addr ADDR] [--pkcs11-module PATH]...
//!                 [--responder-image IMAGE]... [--log-format text|json]
//! ```
//! Each flag may also be given as an environment variable (`CHOP_NAMESPACE`,
//! `CHOP_LEASE_NAMESPACE`, `CHOP_LEASE_NAME`, `CHOP_METRICS_ADDR`,
//! `CHOP_PKCS11_MODULES` with paths separated by `:`). Without
//! `--namespace` every namespace is watched. `--pkcs11-module` (repeatable)
//! lists the PKCS#11 libraries a CA's `spec.hsm.module` may name (compared
//! after resolving symlinks and `..`); default: Debian's SoftHSM2 module
//! `/usr/lib/softhsm/libsofthsm2.so`. A CA naming another one is refused
//! (`Ready=False ModuleNotAllowed`) and nothing is loaded. `--responder-image`
//! (repeatable, or `CHOP_RESPONDER_IMAGES` separated by `,`) lists the images a
//! CA's `spec.responder.image` may name, the first being the default; default:
//! the chop-responder image of this release. The responder runs with the
//! delegated OCSP signing key, so a CA naming another image gets
//! `ResponderReady=False ImageNotAllowed` and no workload. The replica's identity is `POD_NAME`
//! or the host name. `/metrics`, `/healthz` and `/readyz` are served on
//! `--metrics-addr` (default `0.0.0.0:8080`). Logs: `RUST_LOG` = a level name;
//! `--log-format text|json` (`CHOP_LOG_FORMAT`), default text.
//!
//! The audit trail (CPS §5.4, [`controller::audit`]): `--audit-namespace NS`
//! (`CHOP_AUDIT_NAMESPACE`; default the lease namespace) holds the
//! AuditSegments and the ConfigMap `chop-audit-key`; `--audit-token-label
//! LABEL` (`CHOP_AUDIT_TOKEN_LABEL`) names the token of the audit key
//! (`chop-audit`, EC P-256, generated there if absent), in the module
//! `--audit-module PATH` (`CHOP_AUDIT_MODULE`; default the first
//! `--pkcs11-module`), opened with the PIN in `CHOP_AUDIT_PIN` or the file
//! `--audit-pin-file PATH` (`CHOP_AUDIT_PIN_FILE`; never logged).
//! `--audit-retention 62d` (`CHOP_AUDIT_RETENTION`, days `d` or hours `h`, at
//! least 60 days) marks older segments `chop.dev/retention-expired=true`.
//! `--audit-commit-delay MS` (`CHOP_AUDIT_COMMIT_DELAY_MS`, default 0) waits
//! that long for more records before sealing a segment. With auditing on and no
//! token configured the controller starts, logs why, and every action that
//! must be recorded first waits (`AuditUnavailable`). `--audit off`
//! (`CHOP_AUDIT=off`) records nothing: benchmarks only (a loud warning,
//! `chop_audit_enabled 0`).
//!
//! The archive ([`controller::archive`], CPS §4.10.1, §5.5): `--archive-after
//! 30d` (`CHOP_ARCHIVE_AFTER`; `s`, `m`, `h` or `d`; `off` disables) is how long
//! after its notAfter a certificate's record leaves the register, recorded
//! with the certificate in the audit trail first; `--archive-every 1h`
//! (`CHOP_ARCHIVE_EVERY`) is the time between scans.
//!
//! Finished CertificateRequests (issued, denied, failed, lapsed) are deleted
//! `--request-retention DURATION` (`CHOP_REQUEST_RETENTION`; days `7d`, or
//! `168h`, `90m`, `30s`; default 7d; `off` or `0` keeps them) after they
//! finished ([`controller::gc`]); the register and the audit trail keep
//! what matters.
//!
//! Only the leader runs the controllers; when leadership is lost the process
//! exits (status 1) so a new term always starts from a fresh process.
//!
//! Test-only hooks: `CHOP_TEST_CRASH_AFTER_RESERVE=1` makes the process abort
//! right after it reserved a serial in a CertificateRequest's status;
//! `CHOP_TEST_CRASH_AFTER_COMMIT=1` right after it created the IssuedCertificate,
//! before the request's status records it; `CHOP_TEST_CRASH_AFTER_CRL_RESERVE=1`
//! right after it reserved a CRL number in a CRLSchedule's status (used by the
//! crash-recovery e2e tests); `CHOP_TEST_AUDIT_RETENTION_SECS=N` gives audit
//! segments a retention of N seconds, checked every second;
//! `CHOP_TEST_ARCHIVE_CLOCK_AHEAD_SECS=N` runs the archive's clock N seconds
//! ahead. Never set them in a deployment.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use ca::signer::Pin;
use controller::audit::AuditConfig;
use controller::context::{Context, ModuleAllowList};
use controller::leader::{LeaderElector, LeaseConfig};
use controller::metrics::Metrics;
use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};

#[derive(Debug)]
struct Args {
    namespace: Option<String>,
    lease_namespace: String,
    lease_name: String,
    metrics_addr: String,
    pkcs11_modules: Vec<String>,
    responder_images: Vec<String>,
    audit: AuditConfig,
    request_retention: Option<Duration>,
    archive: controller::archive::ArchiveConfig,
}

/// `30s`, `5m`, `12h` or `30d` as a duration.
fn parse_duration(flag: &str, v: &str) -> anyhow::Result<Duration> {
    let (n, unit) = v.split_at(v.len().saturating_sub(1));
    let n: u64 = n
        .parse()
        .with_context(|| format!("{flag} {v:?}: a number with s, m, h or d (30d)"))?;
    let secs = match unit {
        "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3_600),
        "d" => n.saturating_mul(86_400),
        _ => bail!("{flag} {v:?}: a number with s, m, h or d (30d)"),
    };
    Ok(Duration::from_secs(secs))
}

/// `62d` or `1488h` as a duration.
fn parse_retention(v: &str) -> anyhow::Result<Duration> {
    let (n, unit) = v.split_at(v.len().saturating_sub(1));
    let n: u64 = n.parse().with_context(|| {
        format!("--audit-retention {v:?}: a number of days (62d) or hours (1488h)")
    })?;
    let secs = match unit {
        "d" => n.saturating_mul(86_400),
        "h" => n.saturating_mul(3_600),
        _ => bail!("--audit-retention {v:?}: a number of days (62d) or hours (1488h)"),
    };
    let d = Duration::from_secs(secs);
    if d < controller::audit::MIN_RETENTION {
        bail!("--audit-retention {v:?} is shorter than two months (60d, CPS 5.4.3)");
    }
    Ok(d)
}

fn parse_args() -> anyhow::Result<Args> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let mut namespace = env("CHOP_NAMESPACE");
    let mut lease_namespace = env("CHOP_LEASE_NAMESPACE");
    let mut lease_name = env("CHOP_LEASE_NAME");
    let mut metrics_addr = env("CHOP_METRICS_ADDR");
    let mut modules: Vec<String> = env("CHOP_PKCS11_MODULES")
        .map(|v| {
            v.split(':')
                .filter(|p| !p.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    let mut modules_from_flags = false;
    let mut images: Vec<String> = env("CHOP_RESPONDER_IMAGES")
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    let mut images_from_flags = false;
    let mut audit_namespace = env("CHOP_AUDIT_NAMESPACE");
    let mut audit_token = env("CHOP_AUDIT_TOKEN_LABEL");
    let mut audit_module = env("CHOP_AUDIT_MODULE");
    let mut audit_pin_file = env("CHOP_AUDIT_PIN_FILE");
    let mut audit_retention = env("CHOP_AUDIT_RETENTION");
    let mut audit_mode = env("CHOP_AUDIT");
    let mut audit_delay = env("CHOP_AUDIT_COMMIT_DELAY_MS");
    let mut archive_after = env("CHOP_ARCHIVE_AFTER");
    let mut archive_every = env("CHOP_ARCHIVE_EVERY");
    let mut request_retention = env("CHOP_REQUEST_RETENTION");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) => (f.to_string(), Some(v.to_string())),
            None => (a.clone(), None),
        };
        let mut value = || -> anyhow::Result<String> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => args.next().with_context(|| format!("{flag} needs a value")),
            }
        };
        match flag.as_str() {
            "--namespace" => namespace = Some(value()?),
            "--lease-namespace" => lease_namespace = Some(value()?),
            "--lease-name" => lease_name = Some(value()?),
            "--metrics-addr" => metrics_addr = Some(value()?),
            // Read before the subscriber starts (main).
            "--log-format" => {
                value()?;
            }
            "--pkcs11-module" => {
                // The flags replace the environment's list.
                if !modules_from_flags {
                    modules.clear();
                    modules_from_flags = true;
                }
                modules.push(value()?);
            }
            "--responder-image" => {
                if !images_from_flags {
                    images.clear();
                    images_from_flags = true;
                }
                images.push(value()?);
            }
            "--audit-namespace" => audit_namespace = Some(value()?),
            "--audit-token-label" => audit_token = Some(value()?),
            "--audit-module" => audit_module = Some(value()?),
            "--audit-pin-file" => audit_pin_file = Some(value()?),
            "--audit-retention" => audit_retention = Some(value()?),
            "--audit-commit-delay" => audit_delay = Some(value()?),
            "--audit" => audit_mode = Some(value()?),
            "--archive-after" => archive_after = Some(value()?),
            "--archive-every" => archive_every = Some(value()?),
            "--request-retention" => request_retention = Some(value()?),
            "-h" | "--help" => {
                println!(
                    "chop-controller [--namespace NS] [--lease-namespace NS] [--lease-name NAME] [--metrics-addr ADDR] [--pkcs11-module PATH]... [--responder-image IMAGE]... [--log-format text|json] [--audit on|off] [--audit-namespace NS] [--audit-token-label LABEL] [--audit-module PATH] [--audit-pin-file PATH] [--audit-retention 62d] [--audit-commit-delay MS] [--archive-after 30d|off] [--archive-every 1h] [--request-retention 7d|168h|off]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}"),
        }
    }
    let lease_namespace = lease_namespace
        .or_else(|| namespace.clone())
        .unwrap_or_else(|| "default".into());
    let pkcs11_modules = if modules.is_empty() {
        vec![ca::signer::pkcs11::SOFTHSM2_MODULE.to_string()]
    } else {
        modules
    };
    let enabled = match audit_mode.as_deref() {
        None | Some("on") => true,
        Some("off") => false,
        Some(other) => bail!("--audit {other:?}: on or off"),
    };
    let pin = match (env("CHOP_AUDIT_PIN"), audit_pin_file) {
        (Some(p), _) => Some(Pin::new(p)),
        (None, Some(f)) => {
            let text =
                std::fs::read_to_string(&f).with_context(|| format!("--audit-pin-file {f:?}"))?;
            Some(Pin::new(text.trim_end_matches(['\n', '\r']).to_string()))
        }
        (None, None) => None,
    };
    let audit = AuditConfig {
        enabled,
        namespace: audit_namespace.unwrap_or_else(|| lease_namespace.clone()),
        module: audit_module
            .or_else(|| pkcs11_modules.first().cloned())
            .unwrap_or_default()
            .into(),
        token_label: audit_token,
        pin,
        retention: match audit_retention {
            Some(v) => parse_retention(&v)?,
            None => controller::audit::DEFAULT_RETENTION,
        },
        commit_delay: Duration::from_millis(match audit_delay {
            Some(v) => v
                .parse()
                .with_context(|| format!("--audit-commit-delay {v:?}: milliseconds"))?,
            None => 0,
        }),
    };
    let archive = controller::archive::ArchiveConfig {
        after: match archive_after.as_deref() {
            Some("off") => None,
            Some(v) => Some(parse_duration("--archive-after", v)?),
            None => Some(controller::archive::DEFAULT_AFTER),
        },
        every: match archive_every.as_deref() {
            Some(v) => parse_duration("--archive-every", v)?.max(Duration::from_secs(1)),
            None => controller::archive::DEFAULT_EVERY,
        },
        clock_ahead: match env("CHOP_TEST_ARCHIVE_CLOCK_AHEAD_SECS") {
            Some(v) => Duration::from_secs(
                v.parse()
                    .with_context(|| format!("CHOP_TEST_ARCHIVE_CLOCK_AHEAD_SECS {v:?}"))?,
            ),
            None => Duration::ZERO,
        },
    };
    if !archive.clock_ahead.is_zero() {
        tracing::warn!(
            "CHOP_TEST_ARCHIVE_CLOCK_AHEAD_SECS: test hook active, the archive's clock runs ahead"
        );
    }
    let request_retention = match request_retention {
        Some(v) => controller::gc::parse_retention(&v).map_err(anyhow::Error::msg)?,
        None => Some(controller::gc::DEFAULT_RETENTION),
    };
    Ok(Args {
        request_retention,
        lease_namespace,
        audit,
        archive,
        namespace,
        lease_name: lease_name.unwrap_or_else(|| "chop-controller".into()),
        metrics_addr: metrics_addr.unwrap_or_else(|| "0.0.0.0:8080".into()),
        pkcs11_modules,
        responder_images: if images.is_empty() {
            vec![controller::reconcilers::responder::DEFAULT_IMAGE.to_string()]
        } else {
            images
        },
    })
}

fn identity() -> String {
    std::env::var("POD_NAME")
        .ok()
        .filter(|v| !v.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| format!("chop-controller-{}", std::process::id()))
}

/// The fields of a span as one JSON object, for `--log-format json`, with the
/// span field `name` (the reconciled object's) written as `object`: the JSON
/// formatter adds the span's own name under `name`, and two `name` keys would
/// hide the object from every JSON parser.
struct SpanFieldsJson;

impl SpanFieldsJson {
    fn record(
        map: &mut serde_json::Map<String, serde_json::Value>,
        fields: impl tracing_subscriber::field::RecordFields,
    ) {
        struct Visitor<'a>(&'a mut serde_json::Map<String, serde_json::Value>);
        impl Visitor<'_> {
            fn put(&mut self, field: &tracing::field::Field, value: serde_json::Value) {
                let key = match field.name() {
                    "name" => "object",
                    other => other,
                };
                self.0.insert(key.to_owned(), value);
            }
        }
        impl tracing::field::Visit for Visitor<'_> {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.put(field, format!("{value:?}").into());
            }
            fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
                self.put(field, value.into());
            }
            fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
                self.put(field, value.into());
            }
            fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
                self.put(field, value.into());
            }
            fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
                self.put(field, value.into());
            }
        }
        fields.record(&mut Visitor(map));
    }
}

impl<'w> tracing_subscriber::fmt::FormatFields<'w> for SpanFieldsJson {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        mut writer: tracing_subscriber::fmt::format::Writer<'w>,
        fields: R,
    ) -> std::fmt::Result {
        let mut map = serde_json::Map::new();
        Self::record(&mut map, fields);
        write!(writer, "{}", serde_json::Value::Object(map))
    }

    fn add_fields(
        &self,
        current: &'w mut tracing_subscriber::fmt::FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> std::fmt::Result {
        let mut map = match serde_json::from_str(&current.fields) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        };
        Self::record(&mut map, fields);
        current.fields = serde_json::Value::Object(map).to_string();
        Ok(())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let level = std::env::var("RUST_LOG")
        .ok()
        .and_then(|l| l.parse::<tracing::Level>().ok())
        .unwrap_or(tracing::Level::INFO);
    // `--log-format json` or CHOP_LOG_FORMAT=json: one JSON object a line,
    // the reconciled object in `span` (docs/install.md, "Logs").
    let log_format = std::env::args()
        .skip(1)
        .scan(false, |after_flag, a| {
            let v = if *after_flag {
                Some(a.clone())
            } else {
                a.strip_prefix("--log-format=").map(String::from)
            };
            *after_flag = a == "--log-format";
            Some(v)
        })
        .flatten()
        .last()
        .or_else(|| std::env::var("CHOP_LOG_FORMAT").ok())
        .filter(|v| !v.is_empty());
    let fmt = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_ansi(false);
    match log_format.as_deref() {
        None | Some("text") => fmt.init(),
        Some("json") => fmt
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .fmt_fields(SpanFieldsJson)
            .init(),
        Some(other) => bail!("--log-format {other:?}: use text or json"),
    }
    let args = parse_args()?;
    let identity = identity();
    tracing::info!(?args, %identity, "starting chop-controller");

    let metrics = Arc::new(Metrics::default());
    let listener = std::net::TcpListener::bind(&args.metrics_addr)
        .with_context(|| format!("bind metrics address {}", args.metrics_addr))?;
    tracing::info!(addr = %listener.local_addr()?, "serving /metrics, /healthz, /readyz");
    controller::metrics::serve(listener, Arc::clone(&metrics));

    let client = Client::try_default()
        .await
        .context("Kubernetes client configuration")?;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &args.lease_namespace);
    let (elector, mut leadership) =
        LeaderElector::new(leases, LeaseConfig::new(&args.lease_name, &identity));
    let mut election = tokio::spawn(elector.run());

    tokio::select! {
        () = leadership.wait_until_leader() => {}
        r = &mut election => {
            bail!("leader election ended before leading: {r:?}");
        }
        signal = shutdown_signal() => {
            tracing::info!(signal, "stopping before leading");
            return Ok(());
        }
    }
    tracing::info!("leading: starting controllers");
    metrics.set_ready(true);

    let audit = controller::audit::writer::start(
        client.clone(),
        args.audit.clone(),
        identity.clone(),
        Arc::clone(&metrics),
    );
    let mut ctx = Context::new(client, Arc::clone(&metrics), Some(identity.clone()));
    ctx.audit = audit;
    ctx.audit.note(
        controller::audit::AuditEvent::new("controller.leading", "observed")
            .detail("replica", identity.clone())
            .detail("version", env!("CARGO_PKG_VERSION")),
    );
    ctx.modules = ModuleAllowList::new(&args.pkcs11_modules);
    ctx.responder_images = args.responder_images.clone();
    ctx.request_retention = args.request_retention;
    ctx.crash_after_reserve = std::env::var("CHOP_TEST_CRASH_AFTER_RESERVE").as_deref() == Ok("1");
    ctx.crash_after_commit = std::env::var("CHOP_TEST_CRASH_AFTER_COMMIT").as_deref() == Ok("1");
    ctx.crash_after_crl_reserve =
        std::env::var("CHOP_TEST_CRASH_AFTER_CRL_RESERVE").as_deref() == Ok("1");
    if ctx.crash_after_reserve || ctx.crash_after_commit || ctx.crash_after_crl_reserve {
        tracing::warn!(
            "CHOP_TEST_CRASH_AFTER_RESERVE=1: test hook active, the process aborts after reserving a serial"
        );
    }
    let ctx = Arc::new(ctx);
    // Test hook: a retention of N seconds, checked every second, so that an
    // end-to-end test sees segments pass their retention period and pruned
    // (controller/tests/audit.rs). Never below the CPS minimum otherwise.
    let (retention, check) = match std::env::var("CHOP_TEST_AUDIT_RETENTION_SECS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        Some(secs) => {
            tracing::warn!(
                secs,
                "CHOP_TEST_AUDIT_RETENTION_SECS: test hook active, audit segments pass retention after {secs}s"
            );
            (Duration::from_secs(secs), Duration::from_secs(1))
        }
        None => (
            args.audit.retention,
            controller::audit::tamper::RETENTION_CHECK,
        ),
    };
    tokio::spawn(controller::archive::run(
        Arc::clone(&ctx),
        args.namespace.clone(),
        args.archive,
    ));
    tokio::spawn(controller::audit::tamper::run(
        Arc::clone(&ctx),
        args.audit.namespace.clone(),
        retention,
        check,
    ));

    tokio::select! {
        () = controller::run(Arc::clone(&ctx), args.namespace.as_deref()) => Ok(()),
        r = &mut election => {
            metrics.set_ready(false);
            tracing::error!(result = ?r, "leadership lost: exiting");
            std::process::exit(1);
        }
        signal = shutdown_signal() => {
            // Graceful stop (a Deployment's rollout or scale-down sends
            // SIGTERM): the trail says the leader stopped, and why. A crash
            // leaves no such record: the next `controller.leading` follows
            // without a `controller.stop` before it.
            metrics.set_ready(false);
            tracing::info!(signal, "stopping");
            let stop = controller::audit::AuditEvent::new("controller.stop", "observed")
                .detail("replica", identity.clone())
                .detail("signal", signal);
            if let Err(e) = ctx.audit.record_within(stop, STOP_RECORD_TIMEOUT).await {
                tracing::warn!(error = %e, "the stop could not be recorded in the audit trail");
            }
            Ok(())
        }
    }
}

/// How long a stopping controller waits for its `controller.stop` record
/// (well inside a pod's default 30 s termination grace period).
const STOP_RECORD_TIMEOUT: Duration = Duration::from_secs(10);

/// Resolves with the signal's name on SIGINT or SIGTERM.
async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => tokio::select! {
            _ = tokio::signal::ctrl_c() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        },
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch for SIGTERM; stopping on SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
            "SIGINT"
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::SpanFieldsJson;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A decision logged inside a reconcile span, as `--log-format json` writes
    /// it: one JSON line, the object in `span` (`kind`, `namespace`, `object`),
    /// the decision's fields at the top level.
    #[test]
    fn json_lines_carry_the_reconciled_object() {
        let buf = Buf::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || out.clone())
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .fmt_fields(SpanFieldsJson)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("reconcile", kind = "CRLSchedule", namespace = %"moica", name = %"moica");
            let _e = span.enter();
            tracing::info!(reason = "interval elapsed", "a new CRL is due");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line["message"], "a new CRL is due", "{text}");
        assert_eq!(line["reason"], "interval elapsed", "{text}");
        assert_eq!(line["level"], "INFO", "{text}");
        assert_eq!(line["span"]["kind"], "CRLSchedule", "{text}");
        assert_eq!(line["span"]["namespace"], "moica", "{text}");
        assert_eq!(line["span"]["object"], "moica", "{text}");
        assert_eq!(line["span"]["name"], "reconcile", "{text}");
        assert_eq!(
            text.matches("\"name\"").count(),
            1,
            "no duplicate key: {text}"
        );
    }
}
