//! chop's alerting rules and dashboard, checked against what chop exports:
//!
//! - `promtool check rules` and `promtool test rules` on the PrometheusRule of
//!   `manifests/monitoring/` (its `spec` is a Prometheus rule file) with the unit
//!   tests of `manifests/monitoring/tests/`. promtool is built from the Go module
//!   pinned in `e2e/promtool/go.mod` by `e2e/promtool.sh build` (cached, like the
//!   control plane), and built here if missing.
//! - every alert has a unit test and a section in docs/runbooks.md (its
//!   `runbook_url`);
//! - every PromQL expression of the rules and of `dashboards/chop-ca.json`
//!   names only metrics that chop exports, as read from the controller's and the
//!   responder's own registries (`encode()` / `render()`), plus Prometheus's
//!   `up`; every dashboard query parses (promtool, as recording rules); and
//!   docs/metrics.md lists every exported metric.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: impl AsRef<Path>) -> String {
    let path = repo().join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The PrometheusRule object.
fn prometheus_rule() -> Value {
    serde_saphyr::from_str(&read("manifests/monitoring/prometheusrule.yaml")).unwrap()
}

/// Every rule of the PrometheusRule.
fn rules() -> Vec<Value> {
    prometheus_rule()["spec"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().clone())
        .collect()
}

fn alert_names() -> Vec<String> {
    rules()
        .iter()
        .filter_map(|r| r["alert"].as_str().map(String::from))
        .collect()
}

/// The cached promtool, built by `e2e/promtool.sh build` if missing.
fn promtool() -> PathBuf {
    let script = repo().join("e2e/promtool.sh");
    let build = Command::new("bash")
        .arg(&script)
        .arg("build")
        .output()
        .unwrap();
    assert!(
        build.status.success(),
        "e2e/promtool.sh build failed: {}",
        String::from_utf8_lossy(&build.stderr)
    );
    let path = Command::new("bash")
        .arg(&script)
        .arg("path")
        .output()
        .unwrap();
    PathBuf::from(String::from_utf8(path.stdout).unwrap().trim())
}

/// `spec` of the PrometheusRule as `chop-rules.yaml`, and the unit tests beside
/// it (they name `rule_files: [chop-rules.yaml]`), in a temporary directory.
fn rules_workdir() -> (tempfile::TempDir, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    // JSON is YAML: promtool reads it as a rule file.
    std::fs::write(
        dir.path().join("chop-rules.yaml"),
        serde_json::to_string_pretty(&prometheus_rule()["spec"]).unwrap(),
    )
    .unwrap();
    let mut tests = Vec::new();
    for entry in std::fs::read_dir(repo().join("manifests/monitoring/tests")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            assert_ne!(name, "chop-rules.yaml", "reserved name");
            std::fs::copy(&path, dir.path().join(&name)).unwrap();
            tests.push(name);
        }
    }
    tests.sort();
    assert!(
        !tests.is_empty(),
        "no promtool tests in manifests/monitoring/tests"
    );
    (dir, tests)
}

#[test]
fn rules_pass_promtool_check_and_unit_tests() {
    let promtool = promtool();
    let (dir, tests) = rules_workdir();
    let check = Command::new(&promtool)
        .current_dir(dir.path())
        .args(["check", "rules", "chop-rules.yaml"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success(),
        "promtool check rules: {out}{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let n = rules().len();
    assert!(out.contains(&format!("SUCCESS: {n} rules found")), "{out}");
    let test = Command::new(&promtool)
        .current_dir(dir.path())
        .args(["test", "rules"])
        .args(&tests)
        .output()
        .unwrap();
    assert!(
        test.status.success(),
        "promtool test rules: {}{}",
        String::from_utf8_lossy(&test.stdout),
        String::from_utf8_lossy(&test.stderr)
    );
}

/// Every dashboard query parses as PromQL: promtool checks them as recording
/// rules, with Grafana's variables replaced by values.
#[test]
fn dashboard_queries_are_valid_promql() {
    let promtool = promtool();
    let dir = tempfile::tempdir().unwrap();
    let rules: Vec<Value> = dashboard_exprs()
        .iter()
        .filter(|(what, _)| !what.starts_with("variable "))
        .enumerate()
        .map(|(i, (_, expr))| {
            let expr = expr.replace("$__rate_interval", "5m").replace("$ca", ".*");
            serde_json::json!({ "record": format!("chop:dashboard_query_{i}"), "expr": expr })
        })
        .collect();
    let file = serde_json::json!({ "groups": [{ "name": "dashboard", "rules": rules }] });
    std::fs::write(dir.path().join("dashboard.yaml"), file.to_string()).unwrap();
    let check = Command::new(&promtool)
        .current_dir(dir.path())
        .args(["check", "rules", "dashboard.yaml"])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "dashboards/chop-ca.json: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn every_alert_has_a_unit_test_and_a_runbook_section() {
    let (dir, tests) = rules_workdir();
    let tested: String = tests
        .iter()
        .map(|t| std::fs::read_to_string(dir.path().join(t)).unwrap())
        .collect();
    let runbooks = read("docs/runbooks.md");
    let headings: BTreeSet<String> = runbooks
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(|h| h.trim().to_lowercase())
        .collect();
    for rule in rules() {
        let Some(alert) = rule["alert"].as_str() else {
            continue;
        };
        assert!(
            tested.contains(&format!("alertname: {alert}\n")),
            "{alert}: no promtool unit test in manifests/monitoring/tests"
        );
        let url = rule["annotations"]["runbook_url"].as_str().unwrap_or("");
        let anchor = alert.to_lowercase();
        assert!(
            url.ends_with(&format!("/docs/runbooks.md#{anchor}")),
            "{alert}: runbook_url {url:?}"
        );
        assert!(
            headings.contains(&anchor),
            "{alert}: no `## {alert}` section in docs/runbooks.md"
        );
        for key in ["summary", "description"] {
            assert!(
                rule["annotations"][key]
                    .as_str()
                    .is_some_and(|s| !s.is_empty()),
                "{alert}: no {key}"
            );
        }
        let severity = rule["labels"]["severity"].as_str().unwrap_or("");
        assert!(
            ["critical", "warning", "info"].contains(&severity),
            "{alert}: severity {severity:?}"
        );
    }
}

/// Sample names chop exports, from the `# TYPE` lines of both registries. A
/// labelled family is encoded only once it has a child, so every recording
/// method is called once first.
fn exported_metrics() -> BTreeSet<String> {
    let controller = controller::metrics::Metrics::default();
    drop(controller.reconcile_timer("CertificateAuthority"));
    controller.reconcile_error("CertificateAuthority", "KubeApi");
    controller.ceremony_step("Generate", "GenerateKey", "Failed");
    controller.issued("root", "tlsServer", "Issued");
    controller.hsm("sign", std::time::Instant::now());
    controller.crl_published("root", 1, 0, 500, 0);
    controller.revoked("root", "keyCompromise", 1);
    controller.suspension("root", "held");
    controller.ca_state("root", true, Some(1_900_000_000));
    controller.login_failure("root", "HsmPinIncorrect");
    controller.request_waiting("uid", Some(("root", "IssuanceSuspended")));
    let controller = controller.encode();
    let mut responder = responder::metrics::Metrics::new();
    let state = responder::state::StateHandle::default();
    responder.register_feed(&state);
    responder
        .ocsp_requests
        .get_or_create(&responder::metrics::OcspLabels {
            method: "GET",
            status: "successful",
            cert_status: "good",
        })
        .inc();
    responder
        .http_requests
        .get_or_create(&responder::metrics::HttpLabels {
            endpoint: "ocsp",
            code: 200,
        })
        .inc();
    state
        .feed()
        .crl_refused
        .get_or_create(&responder::state::CrlRefusedLabels { reason: "issuer" })
        .inc();
    let responder = responder.render(&state);
    let mut names = BTreeSet::new();
    for line in controller.lines().chain(responder.lines()) {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').unwrap();
        match kind {
            "counter" => {
                names.insert(format!("{name}_total"));
            }
            "histogram" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
            _ => {
                names.insert(name.to_string());
            }
        }
    }
    names
}

/// Metric names a PromQL expression selects: identifiers that are not
/// functions, keywords, label names of grouping clauses, label matchers, strings,
/// durations or Grafana variables.
fn metric_names(expr: &str) -> BTreeSet<String> {
    // Grafana's label_values(METRIC, LABEL).
    if let Some(args) = expr.trim().strip_prefix("label_values(") {
        let metric = args.split([',', ')']).next().unwrap_or("");
        return metric_names(metric);
    }
    // Drop strings, label matchers and ranges.
    let mut flat = String::new();
    let mut chars = expr.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' | '`' => {
                while let Some(d) = chars.next() {
                    if d == '\\' {
                        chars.next();
                    } else if d == c {
                        break;
                    }
                }
                flat.push(' ');
            }
            '{' => {
                for d in chars.by_ref() {
                    if d == '}' {
                        break;
                    }
                }
                flat.push(' ');
            }
            '[' => {
                for d in chars.by_ref() {
                    if d == ']' {
                        break;
                    }
                }
                flat.push(' ');
            }
            c => flat.push(c),
        }
    }
    // Tokens: identifiers (with a leading `$` for variables), numbers and
    // durations (leading digit), and single punctuation characters.
    let mut tokens: Vec<String> = Vec::new();
    let mut chars = flat.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c.is_ascii_alphanumeric() || c == '_' || c == ':' || c == '$' || c == '.' {
            let mut t = String::new();
            while let Some(&d) = chars.peek() {
                if d.is_ascii_alphanumeric() || d == '_' || d == ':' || d == '$' || d == '.' {
                    t.push(d);
                    chars.next();
                } else {
                    break;
                }
            }
            tokens.push(t);
        } else {
            tokens.push(c.to_string());
            chars.next();
        }
    }
    const KEYWORDS: &[&str] = &[
        "and",
        "or",
        "unless",
        "offset",
        "bool",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "inf",
        "nan",
        "atan2",
    ];
    const GROUPING: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < tokens.len() {
        let t = &tokens[i];
        let next = tokens.get(i + 1).map(String::as_str);
        let lower = t.to_lowercase();
        if GROUPING.contains(&lower.as_str()) && next == Some("(") {
            // Skip the label list.
            while i < tokens.len() && tokens[i] != ")" {
                i += 1;
            }
        } else {
            let skip = next == Some("(") // function or aggregation
                || next.is_some_and(|n| GROUPING.contains(&n.to_lowercase().as_str())) // `sum by (...)`
                || KEYWORDS.contains(&lower.as_str())
                || !t.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_' || c == ':');
            if !skip {
                names.insert(t.clone());
            }
        }
        i += 1;
    }
    names
}

#[test]
fn metric_name_extraction_sees_every_selector() {
    let names = metric_names(
        r#"histogram_quantile(0.99, sum by (le, operation) (rate(a_bucket{x="b c", y=~"d"}[5m])))
            / on (ca) group_left (profile) max without (pod) (b offset 25h) > 2 * 86400
            and absent(up{job="j"} == 1) unless c[$__rate_interval] - time()"#,
    );
    let want: BTreeSet<String> = ["a_bucket", "b", "up", "c"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(names, want);
    assert_eq!(
        metric_names("label_values(chop_crl_number, ca)"),
        BTreeSet::from(["chop_crl_number".to_string()])
    );
}

/// Every PromQL expression of the dashboard: panel targets and query variables.
fn dashboard_exprs() -> Vec<(String, String)> {
    let dash: Value = serde_json::from_str(&read("dashboards/chop-ca.json")).unwrap();
    let mut out = Vec::new();
    fn panels(v: &Value, out: &mut Vec<(String, String)>) {
        for p in v.as_array().into_iter().flatten() {
            let title = p["title"].as_str().unwrap_or("").to_string();
            for t in p["targets"].as_array().into_iter().flatten() {
                out.push((title.clone(), t["expr"].as_str().unwrap().to_string()));
            }
            panels(&p["panels"], out);
        }
    }
    panels(&dash["panels"], &mut out);
    for var in dash["templating"]["list"].as_array().unwrap() {
        if var["type"] == "query" {
            let q = &var["query"];
            let q = q["query"].as_str().or(q.as_str()).unwrap();
            out.push((format!("variable {}", var["name"]), q.to_string()));
        }
    }
    out
}

#[test]
fn every_query_names_only_metrics_chop_exports() {
    let exported = exported_metrics();
    // The families the alerts and the dashboard rely on must be there at all.
    for name in [
        "chop_crl_next_update_timestamp_seconds",
        "chop_key_ceremony_steps_total",
        "chop_ocsp_requests_total",
        "chop_responder_ready",
    ] {
        assert!(exported.contains(name), "{name} not in {exported:#?}");
    }
    // Prometheus adds `up` to every scraped target.
    let allowed = |n: &str| exported.contains(n) || n == "up";
    let mut queries: Vec<(String, String)> = rules()
        .iter()
        .map(|r| {
            let name = r["alert"].as_str().or(r["record"].as_str()).unwrap();
            (
                format!("rule {name}"),
                r["expr"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let dashboard = dashboard_exprs();
    assert!(
        dashboard.len() >= 10,
        "dashboard has {} queries",
        dashboard.len()
    );
    queries.extend(dashboard);
    let mut unknown = Vec::new();
    for (what, expr) in &queries {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{what}: no metric in {expr:?}");
        for n in names {
            if !allowed(&n) {
                unknown.push(format!("{what}: {n}"));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "metrics chop does not export: {unknown:#?}\nexported: {exported:#?}"
    );
}

#[test]
fn docs_metrics_lists_every_metric() {
    let doc = read("docs/metrics.md");
    let exported = exported_metrics();
    let missing: Vec<&String> = exported
        .iter()
        .filter(|n| {
            let family = n
                .strip_suffix("_bucket")
                .or(n.strip_suffix("_sum"))
                .or(n.strip_suffix("_count"))
                .unwrap_or(n);
            !doc.contains(&format!("`{family}`")) && !doc.contains(&format!("`{n}`"))
        })
        .collect();
    assert!(missing.is_empty(), "not in docs/metrics.md: {missing:#?}");
    assert!(!alert_names().is_empty());
}
