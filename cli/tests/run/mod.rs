//! Running the built plugin binary in the tests, as a user would.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

/// What the plugin printed and its exit status.
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

fn run(cmd: &mut Command) -> Out {
    let out = cmd.output().unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Run the plugin as the user of `kubeconfig` in namespace `ns`.
pub fn chop(kubeconfig: &Path, ns: &str, args: &[&str]) -> Out {
    run(Command::new(env!("CARGO_BIN_EXE_kubectl-chop"))
        .args(args)
        .args(["-n", ns])
        .env("KUBECONFIG", kubeconfig))
}

/// Run the plugin with no cluster at all: a FILE must never need one.
pub fn chop_offline(args: &[&str]) -> Out {
    run(Command::new(env!("CARGO_BIN_EXE_kubectl-chop"))
        .args(args)
        .env("KUBECONFIG", "/nonexistent"))
}

/// The exit status is `code` and the output says `needle`.
pub fn expect(o: &Out, code: i32, needle: &str) {
    let all = format!("{}{}", o.stdout, o.stderr);
    assert!(
        o.code == code && all.contains(needle),
        "expected exit {code} and {needle:?}; got exit {}\nstdout:\n{}\nstderr:\n{}",
        o.code,
        o.stdout,
        o.stderr
    );
}
