//! The sample PKI (`cargo run -p ca --example sample_pki -- DIR`) checked end to end
//! with the `openssl` CLI as the independent verifier: chains, CRLs with
//! `verify -crl_check_all`, and every OCSP response against its own request (so the
//! nonce is checked too).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// `cargo test` builds the examples next to the test binaries:
/// target/<profile>/deps/<test> → target/<profile>/examples/sample_pki.
fn sample_pki_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let bin = profile_dir.join("examples").join("sample_pki");
    assert!(
        bin.exists(),
        "{} missing: cargo test builds examples; run `cargo build -p ca --examples`",
        bin.display()
    );
    bin
}

fn openssl(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl CLI");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn sample_pki_verifies_with_openssl() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pki");
    let out = Command::new(sample_pki_binary())
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sample_pki failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in [
        "root.pem",
        "subordinate.pem",
        "signature.pem",
        "encryption.pem",
        "responder.pem",
        "revoked.pem",
        "held.pem",
        "crl.der",
        "root-crl.der",
        "ocsp-good.der",
        "ocsp-revoked.der",
        "ocsp-held.der",
        "ocsp-unknown.der",
        "ocsp-good.req.der",
        "ocsp-revoked.req.der",
        "ocsp-held.req.der",
        "ocsp-unknown.req.der",
    ] {
        assert!(dir.join(f).is_file(), "{f} not written");
    }

    // Chains: root → subordinate → every end-entity certificate.
    let (ok, text) = openssl(
        &dir,
        &[
            "verify",
            "-x509_strict",
            "-CAfile",
            "root.pem",
            "-untrusted",
            "subordinate.pem",
            "signature.pem",
            "encryption.pem",
            "responder.pem",
            "revoked.pem",
            "held.pem",
        ],
    );
    assert!(ok, "{text}");
    assert_eq!(text.matches(": OK").count(), 5, "{text}");

    // Both CRLs verify under their issuers.
    for (crl, ca) in [("crl.der", "chain.pem"), ("root-crl.der", "root.pem")] {
        let (ok, text) = openssl(
            &dir,
            &["crl", "-inform", "DER", "-in", crl, "-CAfile", ca, "-noout"],
        );
        assert!(ok && text.contains("verify OK"), "{crl}: {text}");
        let pem = crl.replace(".der", ".pem");
        assert!(openssl(&dir, &["crl", "-inform", "DER", "-in", crl, "-out", &pem]).0);
    }
    let (_, crl_text) = openssl(
        &dir,
        &["crl", "-inform", "DER", "-in", "crl.der", "-noout", "-text"],
    );
    assert!(crl_text.contains("Key Compromise"), "{crl_text}");
    assert!(crl_text.contains("Certificate Hold"), "{crl_text}");
    assert!(crl_text.contains("X509v3 CRL Number"), "{crl_text}");

    // verify -crl_check_all: the subscriber is good, the revoked and held ones are not.
    let crl_check = |leaf: &str| {
        openssl(
            &dir,
            &[
                "verify",
                "-crl_check_all",
                "-CAfile",
                "root.pem",
                "-untrusted",
                "subordinate.pem",
                "-CRLfile",
                "crl.pem",
                "-CRLfile",
                "root-crl.pem",
                leaf,
            ],
        )
    };
    let (ok, text) = crl_check("signature.pem");
    assert!(ok && text.contains("signature.pem: OK"), "{text}");
    for leaf in ["revoked.pem", "held.pem"] {
        let (ok, text) = crl_check(leaf);
        assert!(
            !ok && text.contains("certificate revoked"),
            "{leaf}: {text}"
        );
    }

    // OCSP: each response answers its own request (nonce checked), signed by the
    // delegated responder, with the status the index holds.
    for (name, status, reason) in [
        ("good", "Cert Status: good", None),
        ("revoked", "Cert Status: revoked", Some("keyCompromise")),
        ("held", "Cert Status: revoked", Some("certificateHold")),
        ("unknown", "Cert Status: unknown", None),
    ] {
        let resp = format!("ocsp-{name}.der");
        let req = format!("ocsp-{name}.req.der");
        let (ok, text) = openssl(
            &dir,
            &[
                "ocsp",
                "-respin",
                &resp,
                "-reqin",
                &req,
                "-CAfile",
                "chain.pem",
                "-resp_text",
            ],
        );
        assert!(ok, "{name}: {text}");
        assert!(text.contains("Response verify OK"), "{name}: {text}");
        assert!(!text.contains("Nonce Verify error"), "{name}: {text}");
        assert!(text.contains(status), "{name}: {text}");
        if let Some(r) = reason {
            assert!(
                text.contains(&format!("Revocation Reason: {r}")),
                "{name}: {text}"
            );
        }
    }

    // One subscriber, two certificates, one CA-assigned identifier; Chinese name intact.
    for f in ["signature.pem", "encryption.pem"] {
        let (_, subject) = openssl(
            &dir,
            &[
                "x509",
                "-in",
                f,
                "-noout",
                "-subject",
                "-nameopt",
                "utf8,sep_comma_plus_space",
            ],
        );
        assert!(
            subject.contains("C=TW, CN=王小明, serialNumber=MOICA0000000001"),
            "{f}: {subject}"
        );
    }
}
