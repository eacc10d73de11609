//! `chop-responder`: OCSP responder and CA repository server.
//!
//! ```text
//! chop-responder [serve] --dir DIR [--listen ADDR] [options]
//! chop-responder [serve] --kube --namespace NS --ca NAME [--listen ADDR] [options]
//! chop-responder [serve] (--dir DIR | --kube ...) --register postgres --register-url-file FILE [--register-ca NS/NAME] [options]
//! chop-responder gen-fixture DIR [--leaves N]
//! ```
//! See `docs/responder.md`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use responder::{App, DirFeeder, Feeder, KubeFeeder, ServerConfig, StateHandle};

const USAGE: &str = "usage:
  chop-responder [serve] (--dir DIR | --kube --namespace NS --ca NAME)
                 [--listen ADDR (0.0.0.0:8080)] [--poll-ms MS (--dir: the directory, 1000;
                  --kube: the responder Secret, 5000)]
                 [--cache-entries N (65536)] [--max-age SECS (300)] [--validity SECS (3600)]
                 [--max-body BYTES (10240)] [--threads N (all cores)] [--log-requests]
                 [--sign-budget PER_SEC (100)] [--sign-burst N (200)]
                 [--log-format text|json (text; env CHOP_LOG_FORMAT)]
                 [--register postgres --register-url-file FILE (or env CHOP_REGISTER_URL)
                  [--register-ca NS/NAME (--kube: NS/CA; --dir: required)]
                  [--status-cache N (100000)] [--register-connections N (2)]]
  chop-responder gen-fixture DIR [--leaves N (3)]
--kube: the Kubernetes client comes from KUBECONFIG / ~/.kube/config / in-cluster.
--register postgres: statuses from the PostgreSQL register (bounded cache, LISTEN for
  changes); the CA material still from --dir or --kube.
Logging: to stderr; RUST_LOG (default info); --log-format json: one JSON object a line.";

/// Where the state comes from.
enum Source {
    Dir(PathBuf),
    Kube { namespace: String, ca: String },
}

/// `--register postgres`: where statuses come from instead.
struct RegisterArgs {
    config: responder::RegisterConfig,
    status_cache: usize,
}

struct ServeArgs {
    source: Source,
    register: Option<RegisterArgs>,
    listen: String,
    poll: Option<Duration>,
    threads: Option<usize>,
    server: ServerConfig,
    ocsp: ca::ocsp::OcspConfig,
}

fn value<T: std::str::FromStr>(args: &mut impl Iterator<Item = String>, flag: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    let v = args
        .next()
        .with_context(|| format!("{flag} needs a value"))?;
    v.parse::<T>()
        .map_err(|e| anyhow::anyhow!("{flag} {v:?}: {e}"))
}

fn parse_serve(mut args: impl Iterator<Item = String>) -> Result<ServeArgs> {
    let (mut dir, mut kube, mut namespace, mut ca) = (None, false, None, None);
    let (mut register, mut url_file, mut register_ca) = (None::<String>, None::<PathBuf>, None);
    let (mut status_cache, mut connections) = (100_000usize, 2usize);
    let mut a = ServeArgs {
        source: Source::Dir(PathBuf::new()),
        register: None,
        listen: "0.0.0.0:8080".into(),
        poll: None,
        threads: None,
        server: ServerConfig::default(),
        ocsp: ca::ocsp::OcspConfig::default(),
    };
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--dir" => dir = Some(value::<PathBuf>(&mut args, &flag)?),
            "--kube" => kube = true,
            "--namespace" => namespace = Some(value::<String>(&mut args, &flag)?),
            "--ca" => ca = Some(value::<String>(&mut args, &flag)?),
            "--listen" => a.listen = value(&mut args, &flag)?,
            "--register" => register = Some(value(&mut args, &flag)?),
            "--register-url-file" => url_file = Some(value(&mut args, &flag)?),
            "--register-ca" => register_ca = Some(value::<String>(&mut args, &flag)?),
            "--status-cache" => status_cache = value(&mut args, &flag)?,
            "--register-connections" => connections = value(&mut args, &flag)?,
            "--poll-ms" => a.poll = Some(Duration::from_millis(value(&mut args, &flag)?)),
            "--cache-entries" => a.server.cache_entries = value(&mut args, &flag)?,
            "--max-age" => a.ocsp.max_age = Duration::from_secs(value(&mut args, &flag)?),
            "--validity" => a.ocsp.validity = Duration::from_secs(value(&mut args, &flag)?),
            "--max-body" => a.server.max_body = value(&mut args, &flag)?,
            "--threads" => a.threads = Some(value(&mut args, &flag)?),
            "--log-requests" => a.server.log_requests = true,
            "--sign-budget" => a.server.sign_budget = value(&mut args, &flag)?,
            "--sign-burst" => a.server.sign_burst = value(&mut args, &flag)?,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    if !(a.server.sign_budget.is_finite() && a.server.sign_budget >= 0.0) {
        bail!("--sign-budget must be a number of signatures per second, 0 or more\n{USAGE}");
    }
    a.source = match (dir, kube) {
        (Some(_), true) => bail!("--dir and --kube are exclusive\n{USAGE}"),
        (Some(d), false) => {
            if namespace.is_some() || ca.is_some() {
                bail!("--namespace and --ca go with --kube\n{USAGE}");
            }
            Source::Dir(d)
        }
        (None, true) => Source::Kube {
            namespace: namespace.with_context(|| format!("--kube needs --namespace\n{USAGE}"))?,
            ca: ca.with_context(|| format!("--kube needs --ca\n{USAGE}"))?,
        },
        (None, false) => bail!("--dir or --kube is required\n{USAGE}"),
    };
    a.register = match register.as_deref() {
        None => {
            if url_file.is_some() || register_ca.is_some() {
                bail!("--register-url-file and --register-ca go with --register postgres\n{USAGE}");
            }
            None
        }
        Some("postgres") => {
            let url = match url_file {
                Some(f) => std::fs::read_to_string(&f)
                    .with_context(|| format!("--register-url-file {}", f.display()))?,
                None => std::env::var("CHOP_REGISTER_URL").with_context(|| {
                    format!("--register postgres needs --register-url-file FILE or CHOP_REGISTER_URL\n{USAGE}")
                })?,
            };
            let url = zeroize::Zeroizing::new(url.trim().to_string());
            if url.is_empty() {
                bail!("the register URL is empty (--register-url-file / CHOP_REGISTER_URL)");
            }
            let ca = match (register_ca, &a.source) {
                (Some(c), _) => c,
                (None, Source::Kube { namespace, ca }) => format!("{namespace}/{ca}"),
                (None, Source::Dir(_)) => {
                    bail!("--register postgres with --dir needs --register-ca NS/NAME\n{USAGE}")
                }
            };
            if status_cache == 0 {
                bail!("--status-cache must be at least 1\n{USAGE}");
            }
            let mut config = responder::RegisterConfig::new(url.as_str(), ca);
            config.connections = connections.max(1);
            Some(RegisterArgs {
                config,
                status_cache,
            })
        }
        Some(other) => bail!("--register {other:?}: the only register is postgres\n{USAGE}"),
    };
    Ok(a)
}

/// The log line format: `text` (default) or `json` (one JSON object a line,
/// for log shippers).
#[derive(Clone, Copy, PartialEq, Eq)]
enum LogFormat {
    Text,
    Json,
}

/// `--log-format FORMAT` (or `--log-format=FORMAT`, anywhere on the command
/// line; taken out of `args`), else `CHOP_LOG_FORMAT`, else `text`.
fn take_log_format(args: &mut Vec<String>) -> Result<LogFormat> {
    let mut value = std::env::var("CHOP_LOG_FORMAT")
        .ok()
        .filter(|v| !v.is_empty());
    let mut i = 0;
    while i < args.len() {
        if args[i] == "--log-format" {
            args.remove(i);
            if i >= args.len() {
                bail!("--log-format needs a value: text or json\n{USAGE}");
            }
            value = Some(args.remove(i));
        } else if let Some(v) = args[i].strip_prefix("--log-format=") {
            value = Some(v.to_string());
            args.remove(i);
        } else {
            i += 1;
        }
    }
    match value.as_deref() {
        None | Some("text") => Ok(LogFormat::Text),
        Some("json") => Ok(LogFormat::Json),
        Some(other) => bail!("--log-format {other:?}: use text or json\n{USAGE}"),
    }
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
        LogFormat::Text => fmt
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
}

fn main() -> Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    init_logs(take_log_format(&mut args)?);
    let mut args = args.into_iter().peekable();
    match args.peek().map(String::as_str) {
        Some("gen-fixture") => {
            args.next();
            let dir = PathBuf::from(args.next().context(USAGE)?);
            let mut leaves = 3usize;
            while let Some(flag) = args.next() {
                match flag.as_str() {
                    "--leaves" => leaves = value(&mut args, &flag)?,
                    other => bail!("unknown argument {other:?}\n{USAGE}"),
                }
            }
            let f = responder::fixture::Fixture::new(leaves)?;
            f.write_dir(&dir)?;
            println!("fixture written to {}", dir.display());
            Ok(())
        }
        Some("serve") => {
            args.next();
            serve(parse_serve(args)?)
        }
        _ => serve(parse_serve(args)?),
    }
}

fn serve(a: ServeArgs) -> Result<()> {
    // One thread: the current-thread scheduler (no work stealing, no cross-thread
    // wake-ups); more: the multi-thread one.
    let mut rt = if a.threads == Some(1) {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    rt.enable_all();
    if let Some(n) = a.threads.filter(|n| *n > 1) {
        rt.worker_threads(n);
    }
    let rt = rt.build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&a.listen)
            .await
            .with_context(|| format!("cannot listen on {}", a.listen))?;
        let (tx, rx) = tokio::sync::watch::channel(false);
        let (state, app, follower) = match a.register {
            None => {
                let state = StateHandle::new();
                (state.clone(), App::new(state, a.server), None)
            }
            Some(r) => {
                tracing::info!(ca = %r.config.ca, status_cache = r.status_cache, "statuses from the PostgreSQL register");
                let state = StateHandle::with_register(r.status_cache);
                let source = responder::RegisterStatuses::new(r.config);
                let app = App::with_register(state.clone(), a.server, source.clone());
                let follower = tokio::spawn(source.follow(state.clone(), rx.clone()));
                (state, app, Some(follower))
            }
        };
        let mut feeder_task = match a.source {
            Source::Dir(dir) => {
                tracing::info!(listen = %listener.local_addr()?, dir = %dir.display(), "chop-responder starting");
                let feeder = DirFeeder {
                    dir,
                    poll: a.poll.unwrap_or(Duration::from_secs(1)),
                    ocsp: a.ocsp,
                };
                tokio::spawn(feeder.run(state, rx.clone()))
            }
            Source::Kube { namespace, ca } => {
                tracing::info!(listen = %listener.local_addr()?, namespace, ca, "chop-responder starting (Kubernetes)");
                let client = kube::Client::try_default()
                    .await
                    .context("cannot build a Kubernetes client")?;
                let feeder = KubeFeeder {
                    client,
                    namespace,
                    ca,
                    ocsp: a.ocsp,
                    secret_poll: a.poll.unwrap_or(Duration::from_secs(5)),
                };
                tokio::spawn(feeder.run(state, rx.clone()))
            }
        };
        let server = tokio::spawn(responder::serve(listener, app, rx));
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let feeder_ended = tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM"); None }
            _ = tokio::signal::ctrl_c() => { tracing::info!("SIGINT"); None }
            r = &mut feeder_task => Some(r),
        };
        let _ = tx.send(true);
        server.await??;
        let feeder_result = match feeder_ended {
            Some(r) => r,
            None => feeder_task.await,
        };
        feeder_result?.context("feeder failed")?;
        if let Some(f) = follower {
            f.await?.context("register follower failed")?;
        }
        tracing::info!("stopped");
        Ok(())
    })
}
