//! `audit verify | export | search | sample | prove`: the auditor's commands over
//! chop's signed audit trail (CPS §5.4, §5.5, §8.4; docs/audit.md).
//!
//! A trail is read either from an export FILE (offline, nothing else needed) or
//! with `--from-cluster` from the AuditSegments of the audit namespace (default
//! `chop-system`, flag `-n`) and the audit key the controller publishes in
//! ConfigMap `chop-audit-key`. Every command verifies the trail first (the
//! `chop-audit` crate): a finding is printed with its name and exits with status
//! 1; a usage or I/O error exits with 2. Non-goals: no writes to the cluster (an
//! auditor prunes with `kubectl delete`, after exporting), no caching.

use std::io::Write;
use std::path::{Path, PathBuf};

use chop_audit::export::Export;
use chop_audit::sample::Quarter;
use chop_audit::search::{Filter, parse_time};
use chop_audit::verify::{self, Summary};
use chop_audit::{Problem, key};
use clap::{Args, Subcommand, ValueEnum};
use crds::{AuditRecord, AuditSegment, AuditSegmentSpec};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::ListParams;

use crate::{Cli, Ctx, Error, api_error, get_error};

/// The namespace of the audit trail unless `-n` says otherwise.
pub const DEFAULT_NAMESPACE: &str = "chop-system";
/// The ConfigMap in which the controller publishes the audit key.
pub const KEY_CONFIGMAP: &str = "chop-audit-key";

const READ_AUDIT_HINT: &str = "reading the audit trail needs chop:auditor (get/list auditsegments) bound in the audit namespace (docs/roles.md)";

/// Where the trail comes from.
#[derive(Debug, Clone, Args)]
pub struct Source {
    /// An export file (`kubectl chop audit export -o FILE`).
    #[arg(value_name = "FILE", conflicts_with = "from_cluster")]
    pub file: Option<PathBuf>,
    /// Read the AuditSegments of the audit namespace (-n, default chop-system).
    #[arg(long)]
    pub from_cluster: bool,
    /// Pin the audit key: a PEM public key file, or its key id (64 hex digits).
    /// Without it the key of the FILE or of ConfigMap chop-audit-key is used and its
    /// id printed: compare it with the one you recorded.
    #[arg(long, value_name = "PEM|KEY-ID")]
    pub key: Option<String>,
}

/// Output format of `search`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns.
    Table,
    /// The records as a JSON array (exactly as in the trail).
    Json,
}

/// The audit commands.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Verify the trail: signatures, tree heads, record and segment continuity; name the first problem.
    #[command(
        after_help = "Checks every segment's signature by the audit key, that the \
records give each signed Merkle root, that record sequences, previousHash links, segment \
indexes and previousSegmentHash links have no gap, and names the FIRST problem (e.g. \
`AlteredRecord: record 4 (segment 1) was altered`). With --since EXPORT it also proves \
(RFC 9162 consistency proof) that the trail still holds every record of that earlier \
export unchanged: the only way to see segments deleted at the end of the trail.

Exit status: 0 valid; 1 a problem was found (tampered, truncated, wrong key); 2 usage or I/O error.

Examples:
  kubectl chop audit verify --from-cluster
  kubectl chop audit verify audit-2026Q4.json --key audit-key.pem
  kubectl chop audit verify --from-cluster --since audit-2026Q3.json"
    )]
    Verify {
        /// The trail.
        #[command(flatten)]
        source: Source,
        /// An earlier export: prove the trail extends it.
        #[arg(long, value_name = "EXPORT")]
        since: Option<PathBuf>,
    },
    /// Export the trail to a file an auditor keeps and verifies offline (CPS §5.5.2).
    #[command(
        after_help = "Reads every AuditSegment of the audit namespace and the audit \
key (ConfigMap chop-audit-key, or --key), verifies them, and only then writes FILE (it \
never overwrites one). Keep the file for the archive period; then prune the archived \
segments the controller marked chop.dev/retention-expired=true (docs/audit.md).

Example:
  kubectl chop audit export -o audit-$(date +%F).json"
    )]
    Export {
        /// The file to write (must not exist).
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: PathBuf,
        /// Pin the audit key: a PEM public key file, or its key id.
        #[arg(long, value_name = "PEM|KEY-ID")]
        key: Option<String>,
    },
    /// Find records by object, user, serial, event and time.
    #[command(after_help = "Filters combine (AND). --event accepts a trailing * \
(certificate.*). Times are RFC 3339 or a date (UTC). The trail is verified first; a \
trail that does not verify is refused (status 1) unless --unverified.

Examples:
  kubectl chop audit search --from-cluster --object CertificateRequest/moica/alice-sig
  kubectl chop audit search audit.json --user officer-1 --since 2026-10-01 -o json
  kubectl chop audit search --from-cluster --serial 1A2B3C --event 'certificate.*'")]
    Search {
        /// The trail.
        #[command(flatten)]
        source: Source,
        /// KIND, KIND/NAME or KIND/NAMESPACE/NAME of the object concerned.
        #[arg(long, value_name = "KIND/[NS/]NAME")]
        object: Option<String>,
        /// A user named in the record (requester, approver, ...).
        #[arg(long)]
        user: Option<String>,
        /// Certificate serial (hex; case and colons ignored).
        #[arg(long)]
        serial: Option<String>,
        /// Event class, e.g. certificate.issue, or a prefix with *.
        #[arg(long)]
        event: Option<String>,
        /// Records at or after this time.
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Records before this time.
        #[arg(long, value_name = "TIME")]
        until: Option<String>,
        /// Output format.
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: Output,
        /// Search a trail that does not verify (prints the problem on stderr).
        #[arg(long)]
        unverified: bool,
    },
    /// Draw the reproducible sample (>= 3%, at least one) of a quarter's issued certificates (CPS §8.4).
    #[command(
        after_help = "Population: the serials issued in the quarter (UTC). The \
sample: serials ordered by SHA-256(seed, newline, serial), the first ceil(3%) taken. The \
default seed is the SHA-256 of the root hash of the last tree head signed in the quarter \
(fixed once the quarter is over); it is printed, so a second auditor gets the same list.

Examples:
  kubectl chop audit sample --quarter 2026Q4 audit-2026Q4.json
  kubectl chop audit sample --quarter 2026Q4 --seed 5f08... --from-cluster"
    )]
    Sample {
        /// The trail.
        #[command(flatten)]
        source: Source,
        /// The quarter, e.g. 2026Q4.
        #[arg(long)]
        quarter: String,
        /// The seed (default: derived from the quarter's last tree head).
        #[arg(long)]
        seed: Option<String>,
    },
    /// Prove one record's inclusion, or consistency with an earlier export (RFC 9162 proofs).
    #[command(
        after_help = "Prints the Merkle audit path of a record (--inclusion SEQ) or \
the consistency proof from an earlier export (--consistency EXPORT), both checked against \
the signed tree heads, for a third party who holds only tree heads.

Examples:
  kubectl chop audit prove --inclusion 42 audit.json
  kubectl chop audit prove --consistency audit-2026Q3.json --from-cluster"
    )]
    Prove {
        /// The trail.
        #[command(flatten)]
        source: Source,
        /// The sequence number of the record.
        #[arg(
            long,
            value_name = "SEQ",
            conflicts_with = "consistency",
            required_unless_present = "consistency"
        )]
        inclusion: Option<u64>,
        /// An earlier export.
        #[arg(long, value_name = "EXPORT")]
        consistency: Option<PathBuf>,
    },
}

/// A trail read and its key.
#[derive(Debug)]
struct Trail {
    /// Where from, for messages.
    origin: String,
    namespace: String,
    segments: Vec<AuditSegmentSpec>,
    /// Object names, when read from the cluster.
    names: Option<Vec<String>>,
    key_pem: String,
    spki: Vec<u8>,
}

impl Trail {
    fn records(&self) -> impl Iterator<Item = &AuditRecord> {
        self.segments.iter().flat_map(|s| s.records.iter())
    }

    fn verify(&self) -> Result<Summary, Problem> {
        match &self.names {
            Some(names) => {
                let named: Vec<(String, AuditSegmentSpec)> = names
                    .iter()
                    .cloned()
                    .zip(self.segments.iter().cloned())
                    .collect();
                verify::verify_named(&named, &self.spki)
            }
            None => verify::verify(&self.segments, &self.spki),
        }
    }
}

fn usage(msg: impl Into<String>) -> Error {
    Error::Invalid(msg.into())
}

fn read_export(path: &Path) -> Result<Export, Error> {
    let bytes =
        std::fs::read(path).map_err(|e| usage(format!("cannot read {}: {e}", path.display())))?;
    Export::from_json(&bytes).map_err(|e| usage(format!("{}: {e}", path.display())))
}

/// Check the trail's key against `--key` (a PEM file or a key id).
fn pin(spki: &[u8], key: Option<&str>) -> Result<(), Error> {
    let Some(key) = key else { return Ok(()) };
    let have = key::key_id(spki);
    let want = if key.len() == 64 && key.chars().all(|c| c.is_ascii_hexdigit()) {
        key.to_ascii_lowercase()
    } else {
        let pem = std::fs::read_to_string(key).map_err(|e| {
            usage(format!(
                "--key {key}: cannot read it ({e}); give a PEM public key file or a key id (64 hex digits)"
            ))
        })?;
        key::key_id(&key::spki_from_pem(&pem).map_err(|e| usage(format!("--key {key}: {e}")))?)
    };
    if have != want {
        return Err(Error::AuditProblem(format!(
            "WrongKey: the trail is signed by audit key {have}, not by the pinned key {want}"
        )));
    }
    Ok(())
}

async fn from_cluster(cli: &Cli, key: Option<&str>) -> Result<Trail, Error> {
    let mut ctx = Ctx::connect(cli).await?;
    ctx.namespace = cli
        .namespace
        .clone()
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
    let ns = ctx.namespace.clone();
    let api: Api<AuditSegment> = Api::namespaced(ctx.client.clone(), &ns);
    let mut objects = Vec::new();
    let mut params = ListParams::default().limit(500);
    loop {
        let page = api
            .list(&params)
            .await
            .map_err(|e| api_error(e, READ_AUDIT_HINT))?;
        let next = page.metadata.continue_.clone().filter(|c| !c.is_empty());
        objects.extend(page.items);
        match next {
            Some(c) => params = params.continue_token(&c),
            None => break,
        }
    }
    objects.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let names = objects
        .iter()
        .map(|o| o.metadata.name.clone().unwrap_or_default())
        .collect();
    let segments = objects.into_iter().map(|o| o.spec).collect();
    // The key: pinned by --key PEM, else the controller's ConfigMap.
    let (key_pem, spki) = match key.filter(|k| Path::new(k).is_file()) {
        Some(path) => {
            let pem =
                std::fs::read_to_string(path).map_err(|e| usage(format!("--key {path}: {e}")))?;
            let spki = key::spki_from_pem(&pem).map_err(|e| usage(format!("--key {path}: {e}")))?;
            (pem, spki)
        }
        None => {
            let cm = Api::<ConfigMap>::namespaced(ctx.client.clone(), &ns)
                .get(KEY_CONFIGMAP)
                .await
                .map_err(|e| {
                    get_error(
                        e,
                        "ConfigMap",
                        KEY_CONFIGMAP,
                        &ns,
                        "reading ConfigMap chop-audit-key needs get on configmaps in the audit namespace; or pass --key PEM with the audit key you recorded",
                    )
                })?;
            let data = cm.data.unwrap_or_default();
            let pem = data.get("audit-key.pem").cloned().ok_or_else(|| {
                usage(format!(
                    "ConfigMap {KEY_CONFIGMAP} in {ns} has no audit-key.pem: is chop-controller running with auditing on? Or pass --key PEM"
                ))
            })?;
            let spki = key::spki_from_pem(&pem)
                .map_err(|e| usage(format!("ConfigMap {KEY_CONFIGMAP}: {e}")))?;
            if let Some(id) = data.get("key-id")
                && *id != key::key_id(&spki)
            {
                return Err(Error::AuditProblem(format!(
                    "WrongKey: ConfigMap {KEY_CONFIGMAP} says key-id {id} but its audit-key.pem has id {}",
                    key::key_id(&spki)
                )));
            }
            (pem, spki)
        }
    };
    pin(&spki, key)?;
    Ok(Trail {
        origin: format!("AuditSegments in namespace {ns}"),
        namespace: ns,
        segments,
        names: Some(names),
        key_pem,
        spki,
    })
}

async fn load(cli: &Cli, source: &Source) -> Result<Trail, Error> {
    match (&source.file, source.from_cluster) {
        (Some(path), false) => {
            let export = read_export(path)?;
            let spki = export
                .key_spki()
                .map_err(|e| usage(format!("{}: {e}", path.display())))?;
            pin(&spki, source.key.as_deref())?;
            Ok(Trail {
                origin: path.display().to_string(),
                namespace: export.namespace.clone(),
                segments: export.segments,
                names: None,
                key_pem: export.audit_key,
                spki,
            })
        }
        (None, true) => from_cluster(cli, source.key.as_deref()).await,
        _ => Err(usage(
            "say which trail: an export FILE, or --from-cluster [-n NAMESPACE] (default namespace chop-system)",
        )),
    }
}

fn problem(origin: &str, p: &Problem) -> Error {
    Error::AuditProblem(format!("the audit trail ({origin}) does NOT verify: {p}"))
}

fn verified(trail: &Trail) -> Result<Summary, Error> {
    trail.verify().map_err(|p| problem(&trail.origin, &p))
}

/// Run an audit command.
pub async fn run(cli: &Cli, command: &AuditCommand, out: &mut dyn Write) -> Result<(), Error> {
    match command {
        AuditCommand::Verify { source, since } => {
            let trail = load(cli, source).await?;
            let summary = verified(&trail)?;
            writeln!(out, "audit trail verified: {}", trail.origin)?;
            write!(out, "{summary}")?;
            if let Some(path) = since {
                let old = read_export(path)?;
                let old_spki = old
                    .key_spki()
                    .map_err(|e| usage(format!("{}: {e}", path.display())))?;
                if old_spki != trail.spki {
                    return Err(problem(
                        &trail.origin,
                        &Problem::KeyChanged {
                            old: key::key_id(&old_spki),
                            new: key::key_id(&trail.spki),
                        },
                    ));
                }
                let s = verify::verify_since(&old.segments, &trail.segments, &trail.spki)
                    .map_err(|p| problem(&trail.origin, &p))?;
                writeln!(
                    out,
                    "consistent with {}: its {} records (root {}) are the first {} of this trail (consistency proof of {} hashes verified)",
                    path.display(),
                    s.old.tree_size,
                    s.old.root_hash,
                    s.old.tree_size,
                    s.proof.len()
                )?;
            } else {
                writeln!(
                    out,
                    "note: segments deleted at the end of a trail cannot be seen from the trail alone; verify --since your last export to prove nothing was removed"
                )?;
            }
            Ok(())
        }
        AuditCommand::Export { output, key } => {
            if output.exists() {
                return Err(usage(format!(
                    "{} exists: the export never overwrites a file; choose another name",
                    output.display()
                )));
            }
            let source = Source {
                file: None,
                from_cluster: true,
                key: key.clone(),
            };
            let trail = load(cli, &source).await?;
            let summary = verified(&trail)?;
            let export = Export::new(
                jiff::Timestamp::now(),
                &trail.namespace,
                &trail.key_pem,
                trail.segments,
            );
            let bytes = export.to_json().map_err(|e| usage(e.to_string()))?;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(output)
                .map_err(|e| usage(format!("cannot create {}: {e}", output.display())))?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            writeln!(out, "exported {} (verified):", output.display())?;
            write!(out, "{summary}")?;
            Ok(())
        }
        AuditCommand::Search {
            source,
            object,
            user,
            serial,
            event,
            since,
            until,
            output,
            unverified,
        } => {
            let trail = load(cli, source).await?;
            if let Err(p) = trail.verify() {
                if !*unverified {
                    return Err(problem(&trail.origin, &p));
                }
                eprintln!("warning: the audit trail does NOT verify: {p}");
            }
            let mut filter = Filter {
                user: user.clone(),
                serial: serial.clone(),
                event: event.clone(),
                since: since
                    .as_deref()
                    .map(parse_time)
                    .transpose()
                    .map_err(|e| usage(format!("--since: {e}")))?,
                until: until
                    .as_deref()
                    .map(parse_time)
                    .transpose()
                    .map_err(|e| usage(format!("--until: {e}")))?,
                ..Filter::default()
            };
            if let Some(o) = object {
                filter = filter.object(o).map_err(|e| usage(e.to_string()))?;
            }
            let found = filter.apply(trail.records());
            match output {
                Output::Json => {
                    serde_json::to_writer_pretty(&mut *out, &found)
                        .map_err(|e| usage(e.to_string()))?;
                    writeln!(out)?;
                }
                Output::Table => table(&found, out)?,
            }
            Ok(())
        }
        AuditCommand::Sample {
            source,
            quarter,
            seed,
        } => {
            let quarter: Quarter = quarter
                .parse()
                .map_err(|e: chop_audit::Error| usage(e.to_string()))?;
            let trail = load(cli, source).await?;
            let summary = verified(&trail)?;
            // The population must be whole: the trail must reach back to the quarter.
            if summary.first_index > 0
                && summary
                    .first_time
                    .parse::<jiff::Timestamp>()
                    .is_ok_and(|t| t > quarter.start())
            {
                return Err(usage(format!(
                    "the trail starts at {} (earlier segments pruned), after {quarter} began: sample from an export that covers the whole quarter",
                    summary.first_time
                )));
            }
            let (seed, origin) = match seed {
                Some(s) => (s.clone(), "given".to_owned()),
                None => (
                    chop_audit::sample::default_seed(&trail.segments, quarter)
                        .map_err(|e| usage(e.to_string()))?,
                    format!("SHA-256 of the root hash of the last tree head signed in {quarter}"),
                ),
            };
            let s = chop_audit::sample::sample(trail.records(), quarter, &seed);
            writeln!(out, "quarter:    {quarter}")?;
            writeln!(out, "population: {} certificates issued", s.population)?;
            writeln!(
                out,
                "sample:     {} (at least 3%, at least one)",
                s.serials.len()
            )?;
            writeln!(out, "seed:       {seed} ({origin})")?;
            if summary
                .last_signed_at
                .parse::<jiff::Timestamp>()
                .is_ok_and(|t| t < quarter.end())
            {
                writeln!(
                    out,
                    "note:       the trail ends before {quarter} does: the population and the default seed may still change"
                )?;
            }
            writeln!(out, "serials:")?;
            for serial in &s.serials {
                writeln!(out, "  {serial}")?;
            }
            writeln!(
                out,
                "reproduce:  kubectl chop audit sample --quarter {quarter} --seed {seed} FILE"
            )?;
            Ok(())
        }
        AuditCommand::Prove {
            source,
            inclusion,
            consistency,
        } => {
            let trail = load(cli, source).await?;
            let (summary, tree) = verify::verify_tree(&trail.segments, &trail.spki)
                .map_err(|p| problem(&trail.origin, &p))?;
            if let Some(seq) = inclusion {
                let p = verify::prove_inclusion(&summary, &tree, *seq)
                    .map_err(|p| problem(&trail.origin, &p))?;
                writeln!(out, "record:    {}", p.sequence)?;
                writeln!(out, "leaf hash: {}", p.leaf_hash)?;
                writeln!(
                    out,
                    "tree size: {} (segment {}, signed at {})",
                    p.tree_size, summary.last_index, summary.last_signed_at
                )?;
                writeln!(out, "root hash: {}", p.root_hash)?;
                writeln!(out, "audit path (RFC 9162 §2.1.3, verified):")?;
                for h in &p.proof {
                    writeln!(out, "  {h}")?;
                }
            } else if let Some(path) = consistency {
                let old = read_export(path)?;
                let s = verify::verify_since(&old.segments, &trail.segments, &trail.spki)
                    .map_err(|p| problem(&trail.origin, &p))?;
                writeln!(out, "old tree size: {}", s.old.tree_size)?;
                writeln!(out, "old root hash: {}", s.old.root_hash)?;
                writeln!(out, "new tree size: {}", s.new.tree_size)?;
                writeln!(out, "new root hash: {}", s.new.root_hash)?;
                writeln!(out, "consistency proof (RFC 9162 §2.1.4, verified):")?;
                for h in &s.proof {
                    writeln!(out, "  {h}")?;
                }
            }
            Ok(())
        }
    }
}

fn table(records: &[&AuditRecord], out: &mut dyn Write) -> Result<(), Error> {
    let rows: Vec<[String; 7]> = records
        .iter()
        .map(|r| {
            let object = r
                .object
                .as_ref()
                .map(|o| match &o.namespace {
                    Some(ns) => format!("{}/{ns}/{}", o.kind, o.name),
                    None => format!("{}/{}", o.kind, o.name),
                })
                .unwrap_or_else(|| "-".to_owned());
            let users = if r.users.is_empty() {
                "-".to_owned()
            } else {
                r.users
                    .iter()
                    .map(|u| format!("{}={}", u.role, u.user))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            [
                r.sequence.to_string(),
                r.time.clone(),
                r.event.clone(),
                r.outcome.clone(),
                object,
                users,
                r.serial
                    .clone()
                    .or_else(|| r.crl_number.map(|n| format!("crl {n}")))
                    .unwrap_or_else(|| "-".to_owned()),
            ]
        })
        .collect();
    let header = [
        "SEQ", "TIME", "EVENT", "OUTCOME", "OBJECT", "USERS", "SERIAL",
    ]
    .map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.len());
        }
    }
    for row in std::iter::once(&header).chain(rows.iter()) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        writeln!(out, "{}", line.join("  ").trim_end())?;
    }
    writeln!(out, "{} record(s)", rows.len())?;
    Ok(())
}
