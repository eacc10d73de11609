//! The docs and the krew manifest keep up with the command line (no cluster needed).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use clap::CommandFactory;
use serde_json::Value;

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)).unwrap()
}

#[test]
fn every_command_has_a_section_and_an_example_in_the_docs() {
    let doc = read("../docs/kubectl-chop.md");
    let cmd = kubectl_chop::Cli::command();
    for sub in cmd.get_subcommands() {
        let name = sub.get_name();
        let nested: Vec<String> = sub
            .get_subcommands()
            .map(|s| format!("{name} {}", s.get_name()))
            .collect();
        let names = if nested.is_empty() {
            vec![name.to_owned()]
        } else {
            nested
        };
        for n in names {
            assert!(
                doc.contains(&format!("### {n}")) || n == "completion",
                "no section for {n}"
            );
            assert!(
                doc.contains(&format!("kubectl chop {n} ")),
                "no example of {n}"
            );
        }
        assert!(
            sub.get_after_help().is_some() || sub.has_subcommands(),
            "{name} --help has no example"
        );
    }
}

#[test]
fn krew_manifest_names_the_binary_and_the_crate_version() {
    let docs: Vec<Option<Value>> = serde_saphyr::from_multiple(&read("krew/chop.yaml")).unwrap();
    let m = docs.into_iter().flatten().next().unwrap();
    assert_eq!(m["kind"], "Plugin");
    assert_eq!(m["metadata"]["name"], "chop");
    assert_eq!(
        m["spec"]["version"],
        format!("v{}", env!("CARGO_PKG_VERSION"))
    );
    for p in m["spec"]["platforms"].as_array().unwrap() {
        assert_eq!(p["bin"], "kubectl-chop");
        let uri = p["uri"].as_str().unwrap();
        assert!(
            uri.contains(&format!("v{}", env!("CARGO_PKG_VERSION"))),
            "{uri}"
        );
        assert!(
            p["sha256"].as_str().unwrap().starts_with("SHA256_"),
            "placeholder or real hash"
        );
    }
}
