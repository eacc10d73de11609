//! Every shell command in README.md and docs/ runs as written (issue 11).
//!
//! Each fenced `sh` block is classified by an HTML comment between the previous
//! fence and its own (README.md, "Documented commands", explains the
//! markers to writers):
//!
//! - `<!-- test: run -->`: run here, with bash `-euo pipefail`, from the
//!   repository root, against a private control plane started for this test
//!   (so that cluster-wide objects such as the admission policies of the base
//!   touch no other test), as its admin, in namespace `moica`, with the pinned
//!   kubectl first on PATH. `KEY=value` words after `run` replace the
//!   placeholder word KEY in the block (`NS=moica`), as a reader would.
//!   `own-plane`: the block starts and stops a plane itself; it gets a state
//!   directory of its own (`CHOP_E2E_DIR`) and no KUBECONFIG. `as=USER:GROUP`:
//!   run as that user (a client certificate from `controlplane.sh user`), in
//!   `moica`, where the test bound the trusted-role groups as docs/roles.md
//!   shows (`chop:officers` → `chop:officer`).
//! - `<!-- tested: NAME -->`: run by controller/tests/ceremony_docs.rs as doc
//!   block NAME (checked here: that test names it).
//! - `<!-- test: skip REASON -->`: not run, for the reason given (the suite
//!   itself, a benchmark, a release build, a real HSM or a cluster of your own).
//! - `<!-- test-default: skip REASON -->`, once in a file: the marker of every
//!   block of that file that has none of its own.
//!
//! A block with no marker fails the test, so a new command is run or its reason
//! written down.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

#[derive(Debug, Clone, PartialEq)]
enum Marker {
    Run {
        own_plane: bool,
        subst: Vec<(String, String)>,
        user: Option<(String, String)>,
    },
    Tested(String),
    Skip(String),
}

#[derive(Debug)]
struct Block {
    file: String,
    line: usize,
    marker: Option<Marker>,
    text: String,
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

/// README.md, then every Markdown file under docs/, sorted.
fn doc_files() -> Vec<String> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                walk(&p, root, out);
            } else if p.extension().is_some_and(|e| e == "md") {
                out.push(p.strip_prefix(root).unwrap().to_str().unwrap().to_owned());
            }
        }
    }
    let root = repo();
    let mut docs = Vec::new();
    walk(&root.join("docs"), &root, &mut docs);
    docs.sort();
    let mut files = vec!["README.md".to_owned()];
    files.extend(docs);
    files
}

fn parse_marker(comment: &str) -> Result<Marker, String> {
    let body = comment
        .trim()
        .strip_prefix("<!--")
        .and_then(|c| c.strip_suffix("-->"))
        .map(str::trim)
        .ok_or("not an HTML comment")?;
    if let Some(name) = body.strip_prefix("tested:") {
        return Ok(Marker::Tested(name.trim().to_owned()));
    }
    let rest = body
        .strip_prefix("test:")
        .ok_or("not a test marker")?
        .trim();
    if let Some(reason) = rest.strip_prefix("skip") {
        let reason = reason.trim();
        if reason.is_empty() {
            return Err("`test: skip` needs a reason".into());
        }
        return Ok(Marker::Skip(reason.to_owned()));
    }
    let mut words = rest.split_whitespace();
    if words.next() != Some("run") {
        return Err(format!("unknown marker {body:?}"));
    }
    let mut own_plane = false;
    let mut subst = Vec::new();
    let mut user = None;
    for w in words {
        if w == "own-plane" {
            own_plane = true;
        } else if let Some(who) = w.strip_prefix("as=") {
            let (name, group) = who
                .split_once(':')
                .ok_or_else(|| format!("`as=` wants USER:GROUP, not {who:?}"))?;
            user = Some((name.to_owned(), group.to_owned()));
        } else if let Some((k, v)) = w.split_once('=') {
            subst.push((k.to_owned(), v.to_owned()));
        } else {
            return Err(format!("unknown word {w:?} in {body:?}"));
        }
    }
    Ok(Marker::Run {
        own_plane,
        subst,
        user,
    })
}

fn is_marker(line: &str) -> bool {
    let t = line.trim();
    t.starts_with("<!-- test:") || t.starts_with("<!-- tested:")
}

/// Every ```sh block of `file`, with the marker written since the previous fence.
fn blocks_of(file: &str) -> Vec<(Block, Option<String>)> {
    let text = std::fs::read_to_string(repo().join(file)).unwrap();
    let default = text.lines().find_map(|l| {
        let t = l.trim();
        t.strip_prefix("<!-- test-default:")
            .map(|rest| format!("<!-- test:{rest}"))
    });
    let mut out = Vec::new();
    let mut pending: Option<String> = None;
    let mut current: Option<(usize, Option<String>, String)> = None;
    let mut in_other_fence = false;
    for (i, line) in text.lines().enumerate() {
        if let Some((start, marker, body)) = current.as_mut() {
            if line.trim_start().starts_with("```") {
                let (start, marker, body) = (*start, marker.take(), std::mem::take(body));
                let marker = marker.or_else(|| default.clone());
                let (parsed, error) = match marker.as_deref().map(parse_marker) {
                    None => (None, None),
                    Some(Ok(m)) => (Some(m), None),
                    Some(Err(e)) => (None, Some(e)),
                };
                out.push((
                    Block {
                        file: file.to_owned(),
                        line: start,
                        marker: parsed,
                        text: body,
                    },
                    error,
                ));
                current = None;
            } else {
                body.push_str(line);
                body.push('\n');
            }
            continue;
        }
        let fence = line.trim_start().strip_prefix("```");
        if in_other_fence {
            if fence.is_some() {
                in_other_fence = false;
            }
            continue;
        }
        match fence {
            Some(lang) if lang.trim() == "sh" => {
                current = Some((i + 1, pending.take(), String::new()));
            }
            Some(_) => {
                in_other_fence = true;
                pending = None;
            }
            None if is_marker(line) => pending = Some(line.to_owned()),
            None => {}
        }
    }
    out
}

fn all_blocks() -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut errors = Vec::new();
    for file in doc_files() {
        for (b, err) in blocks_of(&file) {
            if let Some(e) = err {
                errors.push(format!("{}:{}: {e}", b.file, b.line));
            }
            blocks.push(b);
        }
    }
    assert!(errors.is_empty(), "bad markers:\n{}", errors.join("\n"));
    blocks
}

/// `text` with each whole word `key` replaced by `value`.
fn substitute(text: &str, subst: &[(String, String)]) -> String {
    let mut text = text.to_owned();
    for (key, value) in subst {
        let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
        let mut out = String::new();
        let mut rest = text.as_str();
        while let Some(at) = rest.find(key.as_str()) {
            let before = rest[..at].chars().next_back();
            let after = rest[at + key.len()..].chars().next();
            out.push_str(&rest[..at]);
            if before.is_some_and(word) || after.is_some_and(word) {
                out.push_str(key);
            } else {
                out.push_str(value);
            }
            rest = &rest[at + key.len()..];
        }
        out.push_str(rest);
        text = out;
    }
    text
}

#[test]
fn every_sh_block_is_run_or_says_why_not() {
    let blocks = all_blocks();
    let unmarked: Vec<String> = blocks
        .iter()
        .filter(|b| b.marker.is_none())
        .map(|b| {
            format!(
                "{}:{}: {}",
                b.file,
                b.line,
                b.text.lines().next().unwrap_or("")
            )
        })
        .collect();
    assert!(
        unmarked.is_empty(),
        "sh blocks without a `<!-- test: run -->`, `<!-- tested: NAME -->` or \
         `<!-- test: skip REASON -->` line before them:\n{}",
        unmarked.join("\n")
    );
    let ceremony_docs =
        std::fs::read_to_string(repo().join("controller/tests/ceremony_docs.rs")).unwrap();
    for b in &blocks {
        if let Some(Marker::Tested(name)) = &b.marker {
            assert!(
                ceremony_docs.contains(&format!("\"{name}\"")),
                "{}:{}: `tested: {name}` but controller/tests/ceremony_docs.rs runs no block {name}",
                b.file,
                b.line
            );
        }
    }
    let count = |f: fn(&Marker) -> bool| {
        blocks
            .iter()
            .filter(|b| f(b.marker.as_ref().unwrap()))
            .count()
    };
    println!(
        "{} sh blocks: {} run here, {} by ceremony_docs, {} skipped",
        blocks.len(),
        count(|m| matches!(m, Marker::Run { .. })),
        count(|m| matches!(m, Marker::Tested(_))),
        count(|m| matches!(m, Marker::Skip(_))),
    );
    // The parser itself: a marker applies to the next block only.
    assert_eq!(
        substitute(
            "kubectl label namespace NS x; NS-responder NSX",
            &[("NS".into(), "moica".into())]
        ),
        "kubectl label namespace moica x; moica-responder NSX"
    );
}

/// A control plane of this test's own, stopped on drop.
struct Plane {
    dir: tempfile::TempDir,
}

impl Plane {
    fn script() -> PathBuf {
        repo().join("e2e/controlplane.sh")
    }

    fn up() -> Plane {
        let dir = tempfile::Builder::new()
            .prefix("chop-doc-plane-")
            .tempdir()
            .unwrap();
        let out = Command::new("bash")
            .arg(Self::script())
            .arg("up")
            .env("CHOP_E2E_DIR", dir.path())
            .env("CHOP_E2E_WATCH_PID", std::process::id().to_string())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "controlplane.sh up: {out:?}");
        Plane { dir }
    }

    fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("admin.kubeconfig")
    }
}

impl Drop for Plane {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(Self::script())
            .arg("down")
            .env("CHOP_E2E_DIR", self.dir.path())
            .stdin(Stdio::null())
            .output();
    }
}

fn bin_dir() -> PathBuf {
    let out = Command::new("bash")
        .arg(Plane::script())
        .arg("bin-dir")
        .output()
        .unwrap();
    assert!(out.status.success());
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `bash -euo pipefail -c script` from the repository root with `env`.
fn bash(script: &str, env: &[(&str, &Path)], path: &str, unset_kubeconfig: bool) -> Output {
    let mut cmd = Command::new("timeout");
    cmd.args(["120", "bash", "-euo", "pipefail", "-c", script])
        .current_dir(repo())
        .env("PATH", path)
        .stdin(Stdio::null());
    if unset_kubeconfig {
        cmd.env_remove("KUBECONFIG");
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// The files whose blocks run first: the install, which every other block needs.
const FIRST: &[&str] = &["docs/install.md"];

#[test]
fn documented_commands_run_as_written() {
    let started = Instant::now();
    let mut blocks: Vec<Block> = all_blocks()
        .into_iter()
        .filter(|b| matches!(b.marker, Some(Marker::Run { .. })))
        .collect();
    blocks.sort_by_key(|b| !FIRST.contains(&b.file.as_str()));
    assert!(!blocks.is_empty());

    let plane = Plane::up();
    let path = format!(
        "{}:{}",
        bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // The reader's context: the plane's admin, in namespace moica.
    let kubeconfig = plane.dir.path().join("reader.kubeconfig");
    std::fs::copy(plane.kubeconfig(), &kubeconfig).unwrap();
    let out = bash(
        "kubectl create namespace moica && kubectl config set-context --current --namespace=moica && \
         kubectl create rolebinding chop-officers --clusterrole=chop:officer --group=chop:officers",
        &[("KUBECONFIG", &kubeconfig)],
        &path,
        false,
    );
    assert!(out.status.success(), "{}", text(&out));
    println!("plane up in {:.1} s", started.elapsed().as_secs_f64());

    for b in &blocks {
        let Some(Marker::Run {
            own_plane,
            subst,
            user,
        }) = &b.marker
        else {
            unreachable!()
        };
        // Another person: a kubeconfig of their own, in namespace moica.
        let kubeconfig = match user {
            None => kubeconfig.clone(),
            Some((name, group)) => {
                let out = bash(
                    &format!(
                        "kc=$(bash e2e/controlplane.sh user {name} {group}) && \
                         KUBECONFIG=$kc kubectl config set-context --current --namespace=moica >/dev/null && \
                         echo \"$kc\""
                    ),
                    &[("CHOP_E2E_DIR", plane.dir.path())],
                    &path,
                    true,
                );
                assert!(out.status.success(), "{}", text(&out));
                PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
            }
        };
        let script = substitute(&b.text, subst);
        let t = Instant::now();
        let out = if *own_plane {
            let own = tempfile::Builder::new()
                .prefix("chop-doc-own-plane-")
                .tempdir()
                .unwrap();
            let out = bash(&script, &[("CHOP_E2E_DIR", own.path())], &path, true);
            // Whatever the block did, its plane stops.
            let _ = bash(
                "bash e2e/controlplane.sh down",
                &[("CHOP_E2E_DIR", own.path())],
                &path,
                true,
            );
            out
        } else {
            // CHOP_E2E_DIR too: a `controlplane.sh` command in the block
            // acts on this test's plane, never on the suite's.
            bash(
                &script,
                &[
                    ("KUBECONFIG", &kubeconfig),
                    ("CHOP_E2E_DIR", plane.dir.path()),
                ],
                &path,
                false,
            )
        };
        assert!(
            out.status.success(),
            "{}:{} failed ({:?}):\n{script}\n---\n{}",
            b.file,
            b.line,
            out.status,
            text(&out)
        );
        println!(
            "{}:{} ok in {:.1} s",
            b.file,
            b.line,
            t.elapsed().as_secs_f64()
        );
    }

    // What the blocks did, seen by the API server.
    let check = |script: &str, want: &str| {
        let out = bash(script, &[("KUBECONFIG", &kubeconfig)], &path, false);
        let got = text(&out);
        assert!(got.contains(want), "{script}: want {want:?}, got:\n{got}");
    };
    // docs/install.md: the base is installed, the controller's Deployment with it.
    check(
        "kubectl -n chop-system get deployment chop-controller -o name",
        "deployment.apps/chop-controller",
    );
    // docs/operator.md, then docs/upgrade.md: what the walkthrough created is
    // still there after the base was applied again.
    check(
        "kubectl get certificateauthority moica-root moica -o name && \
         kubectl get certificaterequest wang-xiaoming-signature -o name && \
         kubectl get suspension wang-xiaoming-hold -o jsonpath='{.spec.resumed}'",
        "certificateauthority.chop.dev/moica-root\ncertificateauthority.chop.dev/moica\n\
         certificaterequest.chop.dev/wang-xiaoming-signature\ntrue",
    );
    // docs/operator.md: the officer's approval was admitted and recorded.
    check(
        "kubectl get certificaterequest wang-xiaoming-signature \
         -o jsonpath='{.status.conditions[?(@.type==\"Approved\")].status}'",
        "True",
    );
    // docs/responder.md: the responder's ServiceAccount reads its own Secret
    // and no other.
    check(
        "kubectl auth can-i get secret/moica-ocsp-responder -n moica \
         --as=system:serviceaccount:moica:moica-responder",
        "yes",
    );
    check(
        "kubectl auth can-i get secret/moica-hsm-pin -n moica \
         --as=system:serviceaccount:moica:moica-responder || true",
        "no",
    );
    println!(
        "{} blocks run in {:.1} s (plane included)",
        blocks.len(),
        started.elapsed().as_secs_f64()
    );
}

/// `fn name` in `file` (under the repository root).
fn defines(file: &str, name: &str) -> bool {
    std::fs::read_to_string(repo().join(file)).is_ok_and(|text| {
        let needle = format!("fn {name}");
        text.match_indices(&needle).any(|(at, _)| {
            !text[at + needle.len()..]
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        })
    })
}

/// docs/cps-map.md names only files and tests that exist: every `path`,
/// `file.rs::test`, `::test` (same file as the previous one) and
/// `crate::module::tests::test`. A missing one is allowed only in a row that
/// says it is issue 10's (being written).
#[test]
fn the_cps_map_names_only_files_and_tests_that_exist() {
    let map = std::fs::read_to_string(repo().join("docs/cps-map.md")).unwrap();
    let mut missing = Vec::new();
    let mut checked = 0;
    for row in map.lines().filter(|l| l.starts_with("| ")) {
        let mut last_file: Option<String> = None;
        for token in row.split('`').skip(1).step_by(2) {
            let found = if let Some((file, name)) = token
                .split_once("::")
                .filter(|(f, _)| f.ends_with(".rs") && f.contains('/'))
            {
                last_file = Some(file.to_owned());
                Some(defines(file, name))
            } else if let Some(name) = token.strip_prefix("::") {
                Some(last_file.as_deref().is_some_and(|f| defines(f, name)))
            } else if let Some((module, name)) = token.split_once("::tests::") {
                let mut parts = module.split("::");
                let krate = parts.next().unwrap();
                let rest: Vec<&str> = parts.collect();
                let base = format!("{krate}/src/{}", rest.join("/"));
                let file = [format!("{base}.rs"), format!("{base}/mod.rs")]
                    .into_iter()
                    .find(|f| repo().join(f).is_file());
                last_file = file.clone();
                Some(file.is_some_and(|f| defines(&f, name)))
            } else if token.contains('/')
                && !token.contains(' ')
                && !token.contains(':')
                && !token.contains('<')
                && (token.ends_with('/') || token.rsplit('/').next().unwrap().contains('.'))
            {
                Some(repo().join(token).exists())
            } else {
                None
            };
            if let Some(ok) = found {
                checked += 1;
                if !ok && !row.contains("issue 10") {
                    missing.push(token.to_owned());
                }
            }
        }
    }
    assert!(
        checked > 80,
        "only {checked} references found: did the format change?"
    );
    assert!(
        missing.is_empty(),
        "docs/cps-map.md names what does not exist:\n{}",
        missing.join("\n")
    );
    println!("{checked} references checked");
}
