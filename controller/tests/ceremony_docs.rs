//! Backup and restore of a CA key (issue 9), run with the commands of
//! docs/ceremonies.md as written: every approval, every custodian's decryption
//! and re-encryption is the doc's `sh` block, run by bash with kubectl as that
//! user and openssl. Then: the key restored into a new token is the same key
//! and signs again; two shares are not enough; an altered share is refused;
//! and no share or KEK is anywhere in etcd or the controller's log.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::ceremony::*;
use common::*;
use crds::{CertificateAuthority, KeyCeremony};
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

/// The `sh` block after `<!-- tested: NAME -->` in docs/ceremonies.md.
fn doc_block(name: &str) -> String {
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/ceremonies.md"),
    )
    .unwrap();
    let marker = format!("<!-- tested: {name} -->");
    let at = doc
        .find(&marker)
        .unwrap_or_else(|| panic!("no block {name}"));
    let rest = &doc[at..];
    let start = rest.find("```sh\n").unwrap() + "```sh\n".len();
    let end = rest[start..].find("```").unwrap();
    rest[start..start + end].to_string()
}

/// Run doc block `name` with bash in `dir` as the user of `kubeconfig`.
fn run_doc(name: &str, dir: &Path, kubeconfig: &Path, env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new("bash");
    cmd.args(["-euo", "pipefail", "-c", &doc_block(name)])
        .current_dir(dir)
        .env("KUBECONFIG", kubeconfig);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "doc block {name} failed:\n{text}");
    text
}

struct Person {
    name: &'static str,
    kubeconfig: PathBuf,
    dir: PathBuf,
}

async fn person(h: &Harness, file: &str, name: &'static str) -> Person {
    h.shipped_role_user(file, name).await;
    let kubeconfig = h.env.plane().kubeconfig_for_user(name, &[]).await.unwrap();
    let dir = h.path(name);
    std::fs::create_dir_all(&dir).unwrap();
    Person {
        name,
        kubeconfig,
        dir,
    }
}

impl Person {
    fn approve(&self, h: &Harness, ceremony: &str, role: &str) {
        run_doc(
            "approve",
            &self.dir,
            &self.kubeconfig,
            &[
                ("NS", h.ns()),
                ("CEREMONY", ceremony),
                ("ME", self.name),
                ("ROLE", role),
                ("REASON", "checked the spec and the CA"),
            ],
        );
    }
}

fn softhsm(h: &Harness, args: &[&str]) {
    let out = Command::new("softhsm2-util")
        .args(args)
        .env("SOFTHSM2_CONF", &h.conf)
        .output()
        .unwrap();
    assert!(out.status.success(), "softhsm2-util {args:?}: {out:?}");
}

/// A new token `label` in the harness's SoftHSM2, and the controller restarted
/// to see it (SoftHSM2 lists tokens once per process, at C_Initialize, like
/// many vendor modules; docs/ceremonies.md, Restore).
fn new_token(h: &mut Harness, label: &str) {
    softhsm(
        h,
        &[
            "--init-token",
            "--free",
            "--label",
            label,
            "--pin",
            PIN,
            "--so-pin",
            "87654321",
        ],
    );
    h.child.stop();
    h.start(false);
}

/// Every file under `dir` (etcd's data: WAL and bolt db), concatenated.
fn all_bytes(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            out.extend(all_bytes(&p));
        } else if let Ok(b) = std::fs::read(&p) {
            out.extend(b);
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn backup_three_of_five_restore_into_a_new_token_as_the_docs_say() {
    let mut h = Harness::new().await;
    h.install_policies().await;
    h.start(false);
    let creator = h.shipped_role_user("administrator.yaml", "admin-0").await;
    let admin1 = person(&h, "administrator.yaml", "admin-1").await;
    let admin2 = person(&h, "administrator.yaml", "admin-2").await;
    let auditor = person(&h, "auditor.yaml", "auditor-1").await;
    let witness = person(&h, "controller.yaml", "witness-1").await;
    let quorum = |h: &Harness, name: &str| {
        admin1.approve(h, name, "Administrator");
        admin2.approve(h, name, "Administrator");
        auditor.approve(h, name, "Auditor");
        witness.approve(h, name, "Controller");
    };

    // A CA with a ceremony key, activated by the dev path? No: issuance stays
    // Suspended; the test only needs its key and certificate.
    create_ceremony_ca(&h, "root", "root-key", "root-generate").await;
    create_ceremony(
        &h,
        (&creator, "admin-0"),
        "root-generate",
        json!({"operation": "Generate", "caRef": {"name": "root"}, "reason": "root key"}),
    )
    .await;
    spec_hash(&h, "root-generate").await;
    quorum(&h, "root-generate");
    let generated = wait_phase(&h, "root-generate", "Succeeded").await;
    let fp = generated.status.unwrap().key.unwrap().fingerprint.unwrap();
    let ca = h.wait_ca_ready("root").await;
    let root_pem = ca.status.unwrap().certificate.unwrap();
    let root_file = h.write("root.pem", &root_pem);

    // Officers activate it; a certificate is issued.
    let officer0 = h.shipped_role_user("officer.yaml", "officer-0").await;
    let officer1 = person(&h, "officer.yaml", "officer-1").await;
    let officer2 = person(&h, "officer.yaml", "officer-2").await;
    create_ceremony(
        &h,
        (&officer0, "officer-0"),
        "root-activate",
        json!({"operation": "Activate", "caRef": {"name": "root"}, "reason": "start"}),
    )
    .await;
    spec_hash(&h, "root-activate").await;
    officer1.approve(&h, "root-activate", "Officer");
    officer2.approve(&h, "root-activate", "Officer");
    witness.approve(&h, "root-activate", "Controller");
    wait_phase(&h, "root-activate", "Succeeded").await;
    let ra: Api<crds::CertificateRequest> = Api::namespaced(h.ra_user("ra-1").await, h.ns());
    let _alice = issue_at(&h, &ra, "root", "alice", "A100000001").await;

    // Five custodians with RSA certificates (openssl, as a custodian would).
    let custodians: Vec<(String, PathBuf, PathBuf)> = (1..=5)
        .map(|i| {
            let name = format!("c{i}");
            let key = h.path(&format!("{name}.key"));
            let crt = h.path(&format!("{name}.crt"));
            openssl(
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-days",
                    "2",
                    "-subj",
                    &format!("/CN=custodian {name}"),
                    "-keyout",
                    key.to_str().unwrap(),
                    "-out",
                    crt.to_str().unwrap(),
                ],
                &[],
            );
            (name, key, crt)
        })
        .collect();
    let custodian_specs: Vec<Value> = custodians
        .iter()
        .map(|(n, _, c)| json!({"name": n, "certificate": std::fs::read_to_string(c).unwrap()}))
        .collect();
    create_ceremony(
        &h,
        (&creator, "admin-0"),
        "root-backup",
        json!({"operation": "Backup", "caRef": {"name": "root"}, "reason": "first backup",
               "backup": {"threshold": 3, "custodians": custodian_specs}}),
    )
    .await;
    spec_hash(&h, "root-backup").await;
    // Killed right after wrapping and splitting, before publishing: nothing
    // half-done is shown; restarted, the backup is made once and published.
    h.child.stop();
    h.start_with(Some("CHOP_TEST_CRASH_AFTER_BACKUP"));
    quorum(&h, "root-backup");
    h.wait_for_abort("after the backup", 60).await;
    let kc = h.api::<KeyCeremony>().get("root-backup").await.unwrap();
    assert!(
        kc.status.as_ref().unwrap().backup.is_none(),
        "no half-written backup"
    );
    h.start(false);
    let backup = wait_phase(&h, "root-backup", "Succeeded").await;
    let bst = backup.status.unwrap().backup.unwrap();
    assert_eq!(bst.shares.len(), 5);

    // Custodians c1..c3 (held by admin-1, admin-2, auditor-1) take their
    // shares out with the doc's commands.
    let holders = [&admin1, &admin2, &auditor];
    let mut plaintexts = Vec::new();
    for (i, p) in holders.iter().enumerate() {
        let (name, key, crt) = &custodians[i];
        run_doc(
            "custodian-decrypt",
            &p.dir,
            &p.kubeconfig,
            &[
                ("NS", h.ns()),
                ("BACKUP", "root-backup"),
                ("CUSTODIAN", name),
                ("KEY", key.to_str().unwrap()),
                ("CERT", crt.to_str().unwrap()),
            ],
        );
        let share = std::fs::read(p.dir.join("share.bin")).unwrap();
        let fp = hex_sha256(&share);
        assert_eq!(
            bst.shares[i].fingerprint, fp,
            "share {name} has the published fingerprint"
        );
        plaintexts.push(share);
    }

    // The token dies; a new one is initialised.
    softhsm(&h, &["--delete-token", "--token", "moica"]);
    new_token(&mut h, "moica-2");

    create_ceremony(
        &h,
        (&creator, "admin-0"),
        "root-restore",
        json!({"operation": "Restore", "caRef": {"name": "root"}, "reason": "HSM replaced",
               "restore": {"backupRef": {"name": "root-backup"}, "tokenLabel": "moica-2",
                           "pinSecretRef": {"name": "hsm-pin", "key": "pin"}}}),
    )
    .await;
    spec_hash(&h, "root-restore").await;
    quorum(&h, "root-restore");
    wait_phase(&h, "root-restore", "WaitingForShares").await;

    // Two shares: it waits, nothing is restored.
    for p in &holders[..2] {
        run_doc(
            "custodian-submit",
            &p.dir,
            &p.kubeconfig,
            &[("NS", h.ns()), ("RESTORE", "root-restore"), ("ME", p.name)],
        );
    }
    let api = h.api::<KeyCeremony>();
    h.wait("2/3 shares received", 30, || {
        let api = api.clone();
        async move {
            let r = api.get("root-restore").await.ok()?.status?.restore?;
            (r.shares_received.as_deref() == Some("2/3")).then_some(())
        }
    })
    .await;
    let kc = api.get("root-restore").await.unwrap();
    assert!(
        outcome(&kc).starts_with("WaitingForShares: 2 of the 3"),
        "{}",
        outcome(&kc)
    );

    // The third: restored, same public key.
    let p = holders[2];
    run_doc(
        "custodian-submit",
        &p.dir,
        &p.kubeconfig,
        &[("NS", h.ns()), ("RESTORE", "root-restore"), ("ME", p.name)],
    );
    let restored = wait_phase(&h, "root-restore", "Succeeded").await;
    assert_eq!(
        restored
            .status
            .as_ref()
            .unwrap()
            .key
            .as_ref()
            .unwrap()
            .fingerprint
            .as_deref(),
        Some(fp.as_str())
    );

    // The CA, pointed at the new token, signs again with the same key.
    h.api::<CertificateAuthority>()
        .patch(
            "root",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"hsm": {"tokenLabel": "moica-2"}}})),
        )
        .await
        .unwrap();
    let api_ca = h.api::<CertificateAuthority>();
    let ca = h
        .wait("CA Ready on moica-2", 60, || {
            let api = api_ca.clone();
            async move {
                let ca = api.get("root").await.ok()?;
                let st = ca.status.as_ref()?;
                let ready = st
                    .conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True");
                let fresh = st.observed_generation == ca.metadata.generation;
                (ready && fresh).then_some(ca)
            }
        })
        .await;
    assert_eq!(ca.status.unwrap().certificate.unwrap(), root_pem);
    let (_, bob_pem) = issue_at(&h, &ra, "root", "bob", "A100000002").await;
    let leaf = h.write("bob.pem", &bob_pem);
    let out = openssl(
        &[
            "verify",
            "-CAfile",
            root_file.to_str().unwrap(),
            leaf.to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.contains(": OK"), "the restored key signs: {out}");

    // An altered share: the ceremony fails naming it, and the token is as it was.
    new_token(&mut h, "moica-3");
    let objects_before = token_objects(&h);
    create_ceremony(
        &h,
        (&creator, "admin-0"),
        "root-restore-bad",
        json!({"operation": "Restore", "caRef": {"name": "root"}, "reason": "drill",
               "restore": {"backupRef": {"name": "root-backup"}, "tokenLabel": "moica-3",
                           "pinSecretRef": {"name": "hsm-pin", "key": "pin"}}}),
    )
    .await;
    spec_hash(&h, "root-restore-bad").await;
    quorum(&h, "root-restore-bad");
    wait_phase(&h, "root-restore-bad", "WaitingForShares").await;
    for (i, p) in holders.iter().enumerate() {
        let mut share = plaintexts[i].clone();
        if i == 1 {
            let last = share.len() - 1;
            share[last] ^= 0x01;
        }
        std::fs::write(p.dir.join("share.bin"), &share).unwrap();
        run_doc(
            "custodian-submit",
            &p.dir,
            &p.kubeconfig,
            &[
                ("NS", h.ns()),
                ("RESTORE", "root-restore-bad"),
                ("ME", p.name),
            ],
        );
    }
    let bad = wait_phase(&h, "root-restore-bad", "Failed").await;
    let why = outcome(&bad);
    assert!(
        why.starts_with("ShareAltered") && why.contains("admin-2"),
        "{why}"
    );
    assert_eq!(
        token_objects(&h),
        objects_before,
        "nothing was left in the token"
    );

    // No share plaintext anywhere in etcd (WAL + db) or in the controller's log,
    // in any of the forms a leak would take.
    let etcd = all_bytes(&h.env.plane().dir().join("etcd"));
    let logs = h.logs();
    // The KEK, rebuilt here independently of chop (GF(2^8) Lagrange at 0),
    // unwraps the published wrapped key with openssl into the root's key.
    let kek = combine(&plaintexts);
    {
        use base64::Engine;
        let wrapped = base64::engine::general_purpose::STANDARD
            .decode(&bst.wrapped_key)
            .unwrap();
        let wfile = h.path("wrapped.bin");
        std::fs::write(&wfile, &wrapped).unwrap();
        let kfile = h.path("unwrapped.der");
        openssl(
            &[
                "enc",
                "-d",
                "-id-aes256-wrap-pad",
                "-K",
                &hex_lower(&kek),
                "-iv",
                "A65959A6",
                "-in",
                wfile.to_str().unwrap(),
                "-out",
                kfile.to_str().unwrap(),
            ],
            &[],
        );
        let from_backup = openssl(
            &[
                "pkey",
                "-inform",
                "DER",
                "-in",
                kfile.to_str().unwrap(),
                "-pubout",
            ],
            &[],
        );
        let from_root = openssl(
            &[
                "x509",
                "-in",
                root_file.to_str().unwrap(),
                "-noout",
                "-pubkey",
            ],
            &[],
        );
        assert_eq!(from_backup, from_root, "the backup holds the root's key");
        std::fs::remove_file(&kfile).unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(&kek);
        for (what, needle) in [
            ("raw", kek.clone()),
            ("base64", b64.into_bytes()),
            ("hex", hex_lower(&kek).into_bytes()),
        ] {
            assert!(!contains(&etcd, &needle), "the KEK ({what}) is in etcd");
            assert!(
                !contains(logs.as_bytes(), &needle),
                "the KEK ({what}) is in the log"
            );
        }
    }
    for share in &plaintexts {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(share);
        let hex = hex_lower(share);
        for (what, needle) in [
            ("raw", share.clone()),
            ("base64", b64.into_bytes()),
            ("hex", hex.clone().into_bytes()),
        ] {
            assert!(!contains(&etcd, &needle), "a share ({what}) is in etcd");
            assert!(
                !contains(logs.as_bytes(), &needle),
                "a share ({what}) is in the log"
            );
        }
    }
}

/// GF(2^8) (AES polynomial) multiplication.
fn gf_mul(mut a: u8, mut b: u8) -> u8 {
    let mut p = 0;
    while b != 0 {
        if b & 1 != 0 {
            p ^= a;
        }
        let carry = a & 0x80 != 0;
        a <<= 1;
        if carry {
            a ^= 0x1b;
        }
        b >>= 1;
    }
    p
}

fn gf_inv(a: u8) -> u8 {
    (1..=255u8).find(|b| gf_mul(a, *b) == 1).unwrap()
}

/// The secret of share plaintexts (docs: ca/src/ceremony/share.rs layout):
/// Lagrange interpolation at x = 0, byte by byte.
fn combine(plaintexts: &[Vec<u8>]) -> Vec<u8> {
    let parsed: Vec<(u8, Vec<u8>)> = plaintexts
        .iter()
        .map(|p| {
            assert_eq!(&p[..10], b"chop-share");
            let index = p[12];
            let id_len = p[13] as usize;
            let vlen = p[14 + id_len] as usize;
            (index, p[15 + id_len..15 + id_len + vlen].to_vec())
        })
        .collect();
    let len = parsed[0].1.len();
    (0..len)
        .map(|j| {
            parsed.iter().fold(0u8, |acc, (xi, yi)| {
                let li = parsed
                    .iter()
                    .filter(|(xk, _)| xk != xi)
                    .fold(1u8, |l, (xk, _)| gf_mul(l, gf_mul(*xk, gf_inv(*xk ^ *xi))));
                acc ^ gf_mul(yi[j], li)
            })
        })
        .collect()
}

fn hex_lower(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn hex_sha256(b: &[u8]) -> String {
    hex_lower(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b).as_ref())
}
