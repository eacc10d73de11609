//! `--log-format json` (and `CHOP_LOG_FORMAT=json`): the chop-responder binary
//! writes one JSON object a line, which a log shipper can parse, and the
//! decisions it takes come with their reason: the OCSP answer of each request
//! (with `--log-requests`) and the refusal when the signing budget is spent.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_chop-responder");

/// The responder's stderr, line by line, from a reader thread.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Running {
    fn start(args: &[&str], env: &[(&str, &str)]) -> Running {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env_remove("CHOP_LOG_FORMAT")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The first line (read from now on) whose JSON satisfies `pred`.
    fn wait_for(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|_| panic!("no log line {what}; seen:\n{}", self.seen.join("\n")));
            self.seen.push(line.clone());
            let v: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
            if pred(&v) {
                return v;
            }
        }
    }

    /// SIGTERM, then the exit status and every line.
    fn stop(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let status = self.child.wait().unwrap();
        self.seen.extend(self.lines.iter());
        (status, self.seen)
    }
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn openssl_ocsp(dir: &Path, url: &str, what: &[&str]) -> String {
    let mut args = vec![
        "ocsp", "-url", url, "-issuer", "ca.pem", "-CAfile", "ca.pem",
    ];
    args.extend_from_slice(what);
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(&args)
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn json_lines_with_each_decision_and_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["gen-fixture", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");

    // No budget: any answer that needs a fresh signature is refused.
    let mut r = Running::start(
        &[
            "--dir",
            dir.path().to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--log-requests",
            "--sign-budget",
            "0",
            "--sign-burst",
            "0",
        ],
        &[],
    );
    let started = r.wait_for("chop-responder starting", |v| {
        str_of(v, "message") == "chop-responder starting"
    });
    assert_eq!(str_of(&started, "level"), "INFO", "{started}");
    assert!(started.get("timestamp").is_some(), "{started}");
    let url = format!("http://{}", str_of(&started, "listen"));
    r.wait_for("statuses loaded", |v| {
        str_of(v, "message") == "statuses loaded"
    });

    // An issued certificate, no nonce: the pre-signed "good".
    let good = openssl_ocsp(dir.path(), &url, &["-cert", "leaf-0.pem", "-no_nonce"]);
    assert!(good.contains("leaf-0.pem: good"), "{good}");
    let line = r.wait_for("the request line of the good answer", |v| {
        str_of(v, "message") == "request" && str_of(v, "endpoint") == "ocsp"
    });
    assert_eq!(str_of(&line, "ocsp_status"), "successful", "{line}");
    assert_eq!(str_of(&line, "cert_status"), "good", "{line}");
    assert_eq!(line.get("code").and_then(Value::as_u64), Some(200));

    // A serial never issued, with a nonce: needs a signature; the budget is 0.
    let refused = openssl_ocsp(dir.path(), &url, &["-serial", "0x0123456789abcdef"]);
    assert!(refused.contains("unauthorized"), "{refused}");
    let warn = r.wait_for("the budget warning", |v| {
        str_of(v, "reason") == "signing budget exhausted"
    });
    assert_eq!(str_of(&warn, "level"), "WARN", "{warn}");
    assert_eq!(str_of(&warn, "decision"), "unauthorized", "{warn}");
    assert_eq!(warn.get("refused").and_then(Value::as_u64), Some(1));
    let line = r.wait_for("the request line of the refusal", |v| {
        str_of(v, "message") == "request" && str_of(v, "endpoint") == "ocsp"
    });
    assert_eq!(str_of(&line, "ocsp_status"), "unauthorized", "{line}");
    assert_eq!(
        str_of(&line, "reason"),
        "signing budget exhausted and no pre-signed answer applies",
        "{line}"
    );

    // Every line, to the last one on shutdown, is JSON; the serial is in none.
    let (status, all) = r.stop();
    assert!(status.success(), "exit 0 on SIGTERM: {status:?}");
    for l in &all {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert!(v.is_object(), "{l}");
        assert!(!l.to_lowercase().contains("0123456789abcdef"), "{l}");
    }
    assert!(
        all.iter().any(|l| l.contains("\"stopped\"")),
        "{}",
        all.join("\n")
    );
}

#[test]
fn chop_log_format_env_and_a_bad_value() {
    // CHOP_LOG_FORMAT=json does what the flag does.
    let dir = tempfile::tempdir().unwrap();
    let mut r = Running::start(
        &[
            "--dir",
            dir.path().to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        &[("CHOP_LOG_FORMAT", "json")],
    );
    let v = r.wait_for("chop-responder starting", |v| {
        str_of(v, "message") == "chop-responder starting"
    });
    assert_eq!(str_of(&v, "level"), "INFO");
    // (Stopped at once: SIGTERM may come before its handler is installed.)
    r.stop();

    // Anything else than text or json is refused before anything starts.
    let out = Command::new(BIN)
        .args(["--log-format=yaml", "--dir", "/nonexistent"])
        .env_remove("CHOP_LOG_FORMAT")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--log-format \"yaml\": use text or json"),
        "{err}"
    );
}
