//! Replays the fuzz corpus (`fuzz/corpus/<target>/`) through the same entry points
//! the fuzz targets call, so every input the fuzzer ever saved (and every crash
//! reproducer committed there) is re-checked by the normal test suite.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect();
    files.sort();
    assert!(
        files.len() >= 5,
        "{}: only {} seeds; the corpus should not shrink to nothing",
        dir.display(),
        files.len()
    );
    files
}

#[test]
fn csr_corpus_replays() {
    for (name, data) in corpus("csr") {
        eprintln!("{name}");
        ca::fuzzing::csr(&data);
    }
}

#[test]
fn ocsp_request_corpus_replays() {
    for (name, data) in corpus("ocsp_request") {
        eprintln!("{name}");
        ca::fuzzing::ocsp_request(&data);
    }
}
