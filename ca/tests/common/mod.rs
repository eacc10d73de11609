//! Helpers shared by the integration tests that use the `openssl` CLI as the
//! independent verifier and to make test certificates.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

use base64::Engine;
use std::sync::Arc;

use ca::signer::KeySpec;
use ca::signer::software::SoftwareKey;

/// Run `openssl ARGS` in `dir`: (success, stdout + stderr).
pub fn openssl(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Like [`openssl`], failing the test when openssl fails.
pub fn must(dir: &Path, args: &[&str]) -> String {
    let (ok, text) = openssl(dir, args);
    assert!(ok, "openssl {args:?} failed:\n{text}");
    text
}

/// PEM with 64-column lines.
pub fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut s = format!("-----BEGIN {label}-----\n");
    for c in b64.as_bytes().chunks(64) {
        s.push_str(std::str::from_utf8(c).unwrap());
        s.push('\n');
    }
    s.push_str(&format!("-----END {label}-----\n"));
    s
}

/// Write `key` as `<dir>/<name>.key` (PKCS#8 PEM) for openssl to sign with.
pub fn write_key(dir: &Path, name: &str, key: &SoftwareKey) {
    std::fs::write(
        dir.join(format!("{name}.key")),
        pem("PRIVATE KEY", &key.to_pkcs8().unwrap()),
    )
    .unwrap();
}

/// The DER of the certificate in `<dir>/<pem_file>`.
pub fn der_of(dir: &Path, pem_file: &str) -> Vec<u8> {
    let out = format!("{pem_file}.der");
    must(
        dir,
        &["x509", "-in", pem_file, "-outform", "DER", "-out", &out],
    );
    std::fs::read(dir.join(out)).unwrap()
}

/// A CA key (chop `SoftwareKey`) with a self-signed CA certificate made by
/// openssl: `<dir>/<name>.key` and `<dir>/<name>.pem`.
pub fn self_signed(dir: &Path, name: &str, subject: &str) -> Arc<SoftwareKey> {
    let key = Arc::new(SoftwareKey::generate(KeySpec::Rsa { bits: 2048 }).unwrap());
    write_key(dir, name, &key);
    must(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            &format!("{name}.key"),
            "-subj",
            subject,
            "-days",
            "3650",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-addext",
            "subjectKeyIdentifier=hash",
            "-out",
            &format!("{name}.pem"),
        ],
    );
    key
}
