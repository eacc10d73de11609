//! Key ceremony backup and restore against real SoftHSM2 tokens, with custodians
//! played by the openssl CLI (`openssl cms -decrypt` / `-encrypt`), as they would
//! be by people. Each test runs in its own process with its own token directory.

// Helpers outside #[test] fns are test code too (clippy.toml allows unwrap in tests).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use ca::Error;
use ca::ceremony::{
    BackupManifest, BackupOutput, Custodian, SubmittedShare, backup, create_recipient,
    destroy_recipient, restore,
};
use ca::signer::pkcs11::{Backup, KeyRef, Token};
use ca::signer::{Curve, KeySpec, Signer, verify};
use ca::softhsm::{TestToken, isolated};
use cryptoki::object::{Attribute, AttributeType};

const NAMES: [&str; 5] = ["alice", "bob", "carol", "dave", "erin"];
const RECIPIENT: &str = "restore-recipient";

fn openssl(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Five custodians with RSA-2048 keys and self-signed certificates, made by openssl.
fn custodians(dir: &Path) -> Vec<Custodian> {
    NAMES
        .iter()
        .map(|name| {
            openssl(
                dir,
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-keyout",
                    &format!("{name}.key"),
                    "-out",
                    &format!("{name}.crt"),
                    "-subj",
                    &format!("/CN=custodian {name}"),
                    "-days",
                    "30",
                ],
            );
            Custodian {
                name: (*name).to_string(),
                certificate_pem: std::fs::read_to_string(dir.join(format!("{name}.crt"))).unwrap(),
            }
        })
        .collect()
}

/// What custodian `name` does with their envelope: `openssl cms -decrypt`.
fn custodian_decrypts(dir: &Path, name: &str, envelope_pem: &str) -> Vec<u8> {
    std::fs::write(dir.join("share.pem"), envelope_pem).unwrap();
    openssl(
        dir,
        &[
            "cms",
            "-decrypt",
            "-inform",
            "PEM",
            "-in",
            "share.pem",
            "-inkey",
            &format!("{name}.key"),
            "-recip",
            &format!("{name}.crt"),
        ],
    )
}

/// What a custodian does to submit a share: the documented `openssl cms -encrypt`.
fn custodian_encrypts(dir: &Path, plaintext: &[u8], recipient_pem: &str) -> String {
    std::fs::write(dir.join("plain.bin"), plaintext).unwrap();
    std::fs::write(dir.join("recipient.pem"), recipient_pem).unwrap();
    let out = openssl(
        dir,
        &[
            "cms",
            "-encrypt",
            "-aes-256-cbc",
            "-recip",
            "recipient.pem",
            "-keyopt",
            "rsa_padding_mode:oaep",
            "-keyopt",
            "rsa_oaep_md:sha256",
            "-keyopt",
            "rsa_mgf1_md:sha256",
            "-outform",
            "PEM",
            "-binary",
            "-in",
            "plain.bin",
        ],
    );
    String::from_utf8(out).unwrap()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes))
}

/// GF(2^8) mod 0x11b, written independently of the crate (plain branches).
fn gf_mul(mut a: u8, mut b: u8) -> u8 {
    let mut p = 0;
    while b != 0 {
        if b & 1 == 1 {
            p ^= a;
        }
        a = if a & 0x80 != 0 {
            (a << 1) ^ 0x1b
        } else {
            a << 1
        };
        b >>= 1;
    }
    p
}

fn gf_inv(a: u8) -> u8 {
    (1..=255u8).find(|&b| gf_mul(a, b) == 1).unwrap()
}

/// The KEK from share plaintexts (last 32 octets are the values, the index is the
/// octet after "chop-share" and version and threshold), by Lagrange at 0.
fn kek_from(plaintexts: &[Vec<u8>]) -> Vec<u8> {
    let points: Vec<(u8, &[u8])> = plaintexts
        .iter()
        .map(|p| (p[12], &p[p.len() - 32..]))
        .collect();
    let mut kek = vec![0u8; 32];
    for (i, (xi, yi)) in points.iter().enumerate() {
        let mut l = 1;
        for (j, (xj, _)) in points.iter().enumerate() {
            if i != j {
                l = gf_mul(l, gf_mul(*xj, gf_inv(xj ^ xi)));
            }
        }
        for (k, y) in kek.iter_mut().zip(yi.iter()) {
            *k ^= gf_mul(l, *y);
        }
    }
    kek
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every envelope decrypts with openssl to a plaintext whose SHA-256 is its
/// published fingerprint; returns the plaintexts in index order.
fn custodians_open(dir: &Path, out: &BackupOutput) -> Vec<Vec<u8>> {
    assert_eq!(out.shares.len(), 5);
    out.shares
        .iter()
        .enumerate()
        .map(|(i, s)| {
            assert_eq!(usize::from(s.index), i + 1);
            assert_eq!(s.custodian, NAMES[i]);
            assert!(s.envelope_pem.starts_with("-----BEGIN CMS-----"));
            let plain = custodian_decrypts(dir, NAMES[i], &s.envelope_pem);
            assert_eq!(sha256_hex(&plain), s.fingerprint, "share {}", s.index);
            plain
        })
        .collect()
}

/// Nothing published holds the KEK or any share's values.
fn assert_nothing_leaks(out: &BackupOutput, plaintexts: &[Vec<u8>]) {
    let kek = kek_from(&plaintexts[..3]);
    assert_eq!(kek, kek_from(&plaintexts[2..]), "any 3 shares give one KEK");
    let mut published = out.wrapped_key.clone();
    for s in &out.shares {
        published.extend_from_slice(s.envelope_pem.as_bytes());
        published.extend(der::pem::decode_vec(s.envelope_pem.as_bytes()).unwrap().1);
        published.extend_from_slice(s.fingerprint.as_bytes());
    }
    for secret in std::iter::once(&kek[..]).chain(plaintexts.iter().map(|p| &p[p.len() - 32..])) {
        assert!(
            !contains(&published, &secret[..8]),
            "a secret is in the published data"
        );
        assert!(!contains(&published, hex::encode(secret).as_bytes()));
    }
}

fn manifest<'a>(
    id: &'a str,
    out: &'a BackupOutput,
    published: &'a [(u8, String)],
) -> BackupManifest<'a> {
    BackupManifest {
        backup_id: id,
        threshold: 3,
        wrapped_key: &out.wrapped_key,
        public_key: &out.public_key,
        shares: published,
    }
}

fn published(out: &BackupOutput) -> Vec<(u8, String)> {
    out.shares
        .iter()
        .map(|s| (s.index, s.fingerprint.clone()))
        .collect()
}

/// Key objects (private or public) labelled `label` on the token.
fn key_objects(t: &TestToken, token: &Token, label: &str) -> usize {
    let session = t.module.context().open_ro_session(token.slot()).unwrap();
    session
        .find_objects(&[Attribute::Label(label.as_bytes().to_vec())])
        .unwrap()
        .len()
}

/// Back a key up 3-of-5, restore from three other custodians' re-encrypted shares
/// into a second token, and sign with it there.
fn backup_and_restore(spec: KeySpec, submitters: [usize; 3]) {
    let dir = tempfile::tempdir().unwrap();
    let people = custodians(dir.path());
    let (ta, tb) = (TestToken::new().unwrap(), TestToken::new().unwrap());
    let (a, b) = (ta.open().unwrap(), tb.open().unwrap());
    let original = a
        .generate_key_with("ca", Some(&[7; 8]), spec, Backup::Allowed)
        .unwrap();
    let started = std::time::Instant::now();
    let out = backup(&a, "ca", "backup-uid-1", 3, &people).unwrap();
    eprintln!("{spec}: backup 3-of-5 took {:?}", started.elapsed());
    assert_eq!(out.public_key, original);
    let plaintexts = custodians_open(dir.path(), &out);
    assert_nothing_leaks(&out, &plaintexts);

    let recipient = create_recipient(&b, RECIPIENT, "restore-uid").unwrap();
    // openssl reads the recipient certificate, and it is the token's key.
    std::fs::write(dir.path().join("r.pem"), &recipient).unwrap();
    let text = openssl(dir.path(), &["x509", "-in", "r.pem", "-noout", "-text"]);
    assert!(String::from_utf8_lossy(&text).contains("Key Encipherment"));
    let shares: Vec<SubmittedShare> = submitters
        .iter()
        .map(|&i| SubmittedShare {
            from: NAMES[i].into(),
            envelope_pem: custodian_encrypts(dir.path(), &plaintexts[i], &recipient),
        })
        .collect();
    let published = published(&out);
    let started = std::time::Instant::now();
    let restored = restore(
        &b,
        RECIPIENT,
        &manifest("backup-uid-1", &out, &published),
        &shares,
        "ca",
        &[9; 8],
    )
    .unwrap();
    eprintln!("{spec}: restore took {:?}", started.elapsed());
    assert_eq!(restored, original);
    let info = b.find_key(&KeyRef::Id(vec![9; 8])).unwrap();
    assert_eq!((info.label.as_str(), info.spec), ("ca", spec));
    let signer = b.signer(&KeyRef::label("ca")).unwrap();
    assert_eq!(signer.public_key(), &original);
    let sig = signer.sign(b"tbsCertificate after restore").unwrap();
    verify(
        &original,
        signer.algorithm(),
        b"tbsCertificate after restore",
        &sig,
    )
    .unwrap();
    // The restored key is signing-only and never leaves the token again.
    let session = tb.module.context().open_ro_session(b.slot()).unwrap();
    let handle = session
        .find_objects(&[
            Attribute::Class(cryptoki::object::ObjectClass::PRIVATE_KEY),
            Attribute::Label(b"ca".to_vec()),
        ])
        .unwrap()[0];
    let attrs = session
        .get_attributes(
            handle,
            &[
                AttributeType::Extractable,
                AttributeType::Sensitive,
                AttributeType::Decrypt,
                AttributeType::Token,
            ],
        )
        .unwrap();
    for want in [
        Attribute::Extractable(false),
        Attribute::Sensitive(true),
        Attribute::Decrypt(false),
        Attribute::Token(true),
    ] {
        assert!(attrs.contains(&want), "{want:?} in {attrs:?}");
    }
    drop(session);

    // The recipient key refuses PKCS#1 v1.5 decryption (no Bleichenbacher oracle).
    let session = tb.module.context().open_ro_session(b.slot()).unwrap();
    let recipient_key = session
        .find_objects(&[
            Attribute::Class(cryptoki::object::ObjectClass::PRIVATE_KEY),
            Attribute::Label(RECIPIENT.as_bytes().to_vec()),
        ])
        .unwrap()[0];
    let err = session
        .decrypt(
            &cryptoki::mechanism::Mechanism::RsaPkcs,
            recipient_key,
            &[1; 256],
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::MechanismInvalid, _)
        ),
        "{err}"
    );
    drop(session);

    destroy_recipient(&b, RECIPIENT).unwrap();
    assert_eq!(key_objects(&tb, &b, RECIPIENT), 0);
    destroy_recipient(&b, RECIPIENT).unwrap();
}

#[test]
fn rsa_2048_key_backs_up_3_of_5_and_restores_into_another_token() {
    isolated(|| backup_and_restore(KeySpec::Rsa { bits: 2048 }, [0, 2, 4]));
}

#[test]
fn ec_p384_key_backs_up_3_of_5_and_restores_into_another_token() {
    isolated(|| backup_and_restore(KeySpec::Ec(Curve::P384), [3, 1, 2]));
}

/// Every bad restore: a specific error, and the target token keeps no key.
#[test]
fn bad_shares_are_refused_and_the_token_is_unchanged() {
    isolated(|| {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let people = custodians(d);
        let (ta, tb) = (TestToken::new().unwrap(), TestToken::new().unwrap());
        let (a, b) = (ta.open().unwrap(), tb.open().unwrap());
        a.generate_key_with("ca", None, KeySpec::Ec(Curve::P256), Backup::Allowed)
            .unwrap();
        a.generate_key_with("other", None, KeySpec::Ec(Curve::P256), Backup::Allowed)
            .unwrap();
        let out = backup(&a, "ca", "backup-1", 3, &people).unwrap();
        let second = backup(&a, "ca", "backup-2", 3, &people).unwrap();
        let plain = custodians_open(d, &out);
        let plain2 = custodians_open(d, &second);
        let recipient = create_recipient(&b, RECIPIENT, "restore-1").unwrap();
        let submit = |from: &str, plaintext: &[u8]| SubmittedShare {
            from: from.into(),
            envelope_pem: custodian_encrypts(d, plaintext, &recipient),
        };
        let good: Vec<SubmittedShare> = (0..3).map(|i| submit(NAMES[i], &plain[i])).collect();
        let pubs = published(&out);
        let m = manifest("backup-1", &out, &pubs);
        let before = b.list_keys().unwrap();
        let attempt = |shares: &[SubmittedShare], m: &BackupManifest| {
            let err = restore(&b, RECIPIENT, m, shares, "ca", b"ca-id").unwrap_err();
            assert_eq!(b.list_keys().unwrap(), before, "after {err}");
            assert_eq!(key_objects(&tb, &b, "ca"), 0, "after {err}");
            err
        };

        // Two shares of a 3-of-5 backup.
        let err = attempt(&good[..2], &m);
        assert!(
            matches!(err, Error::SharesTooFew { have: 2, need: 3 }),
            "{err}"
        );
        assert_eq!(err.reason(), "SharesTooFew");

        // Bob flips one octet of his share's values before re-encrypting it.
        let mut altered = plain[1].clone();
        let last = altered.len() - 1;
        altered[last] ^= 0x01;
        let shares = [good[0].clone(), submit("bob", &altered), good[2].clone()];
        let err = attempt(&shares, &m);
        assert!(
            matches!(&err, Error::ShareAltered { index: 2, from } if from == "bob"),
            "{err}"
        );
        assert_eq!(err.reason(), "ShareAltered");

        // Carol submits her share of another backup of the same key.
        let shares = [
            good[0].clone(),
            good[1].clone(),
            submit("carol", &plain2[2]),
        ];
        let err = attempt(&shares, &m);
        assert!(
            matches!(&err, Error::ShareFromOtherBackup { from, found, .. } if from == "carol" && found == "backup-2"),
            "{err}"
        );
        assert_eq!(err.reason(), "ShareFromOtherBackup");

        // Shares of the second backup alone, against the first backup's manifest.
        let mixed: Vec<SubmittedShare> = (0..3).map(|i| submit(NAMES[i], &plain2[i])).collect();
        assert!(matches!(
            attempt(&mixed, &m),
            Error::ShareFromOtherBackup { .. }
        ));

        // The same share twice (by two people) to reach the threshold.
        let shares = [
            good[0].clone(),
            good[1].clone(),
            submit("mallory", &plain[0]),
        ];
        let err = attempt(&shares, &m);
        assert!(
            matches!(&err, Error::ShareDuplicate { index: 1, first, from } if first == "alice" && from == "mallory"),
            "{err}"
        );

        // Dave submits his envelope as received (encrypted to his own certificate).
        let shares = [
            good[0].clone(),
            good[1].clone(),
            SubmittedShare {
                from: "dave".into(),
                envelope_pem: out.shares[3].envelope_pem.clone(),
            },
        ];
        let err = attempt(&shares, &m);
        assert!(
            matches!(&err, Error::ShareUndecryptable { from, .. } if from == "dave"),
            "{err}"
        );
        assert_eq!(err.reason(), "ShareUndecryptable");

        // PKCS#1 v1.5 key transport (openssl's default): refused, naming the command.
        std::fs::write(d.join("plain.bin"), &plain[2]).unwrap();
        let v15 = openssl(
            d,
            &[
                "cms",
                "-encrypt",
                "-aes-256-cbc",
                "-recip",
                "recipient.pem",
                "-outform",
                "PEM",
                "-binary",
                "-in",
                "plain.bin",
            ],
        );
        let shares = [
            good[0].clone(),
            good[1].clone(),
            SubmittedShare {
                from: "carol".into(),
                envelope_pem: String::from_utf8(v15).unwrap(),
            },
        ];
        let err = attempt(&shares, &m);
        assert!(
            matches!(&err, Error::ShareUndecryptable { from, .. } if from == "carol"),
            "{err}"
        );
        assert!(err.to_string().contains("rsa_padding_mode:oaep"), "{err}");

        // Altered ciphertext: a broken CBC padding (last block) and a broken share
        // header (first block) give the very same error, so that submitting
        // altered copies of someone else's envelope is no padding oracle.
        let der = der::pem::decode_vec(good[2].envelope_pem.as_bytes())
            .unwrap()
            .1;
        let mut errors = Vec::new();
        for back in [1, 64] {
            let mut flipped = der.clone();
            let at = flipped.len() - back;
            flipped[at] ^= 0x01;
            let shares = [
                good[0].clone(),
                good[1].clone(),
                SubmittedShare {
                    from: "carol".into(),
                    envelope_pem: der::pem::encode_string(
                        "CMS",
                        der::pem::LineEnding::LF,
                        &flipped,
                    )
                    .unwrap(),
                },
            ];
            let err = attempt(&shares, &m);
            assert!(matches!(&err, Error::ShareUndecryptable { .. }), "{err}");
            errors.push(err.to_string());
        }
        assert_eq!(errors[0], errors[1]);

        // Garbage instead of an envelope.
        let shares = [
            good[0].clone(),
            good[1].clone(),
            SubmittedShare {
                from: "carol".into(),
                envelope_pem: "not a share".into(),
            },
        ];
        assert!(matches!(
            attempt(&shares, &m),
            Error::ShareUndecryptable { .. }
        ));

        // A manifest naming another key's public key: the unwrapped key is not its.
        let other = a.public_key(&KeyRef::label("other")).unwrap();
        let wrong_key = BackupManifest {
            public_key: &other,
            ..m
        };
        let err = attempt(&good, &wrong_key);
        assert!(matches!(err, Error::RestoredKeyMismatch), "{err}");
        assert_eq!(err.reason(), "RestoredKeyMismatch");

        // An altered wrapped key does not unwrap (RFC 5649 integrity check).
        let mut bad_blob = out.wrapped_key.clone();
        bad_blob[20] ^= 0x80;
        let bad_wrap = BackupManifest {
            wrapped_key: &bad_blob,
            ..m
        };
        let err = attempt(&good, &bad_wrap);
        assert!(matches!(err, Error::KeyUnwrap { .. }), "{err}");
        assert_eq!(err.reason(), "KeyUnwrapFailed");

        // After all that, the right shares still restore.
        let restored = restore(&b, RECIPIENT, &m, &good, "ca", b"ca-id").unwrap();
        assert_eq!(restored, out.public_key);
        // And a second restore never overwrites it.
        let err = restore(&b, RECIPIENT, &m, &good, "ca", b"ca-id").unwrap_err();
        assert!(matches!(err, Error::KeyExists { .. }), "{err}");
    });
}

#[test]
fn keys_generated_without_backup_and_bad_parameters_are_refused() {
    isolated(|| {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let people = custodians(d);
        let t = TestToken::new().unwrap();
        let token = t.open().unwrap();
        token
            .generate_key("plain", None, KeySpec::Ec(Curve::P256))
            .unwrap();
        token
            .generate_key_with(
                "forbidden",
                None,
                KeySpec::Ec(Curve::P256),
                Backup::Forbidden,
            )
            .unwrap();
        token
            .generate_key_with("allowed", None, KeySpec::Ec(Curve::P256), Backup::Allowed)
            .unwrap();
        for label in ["plain", "forbidden"] {
            let err = backup(&token, label, "b", 3, &people).unwrap_err();
            assert!(matches!(err, Error::KeyNotExtractable { .. }), "{err}");
            assert!(
                err.to_string().contains("generated without backup"),
                "{err}"
            );
            assert_eq!(err.reason(), "KeyNotExtractable");
        }
        // A backup-allowed key is still sensitive: its value cannot be read. (The
        // signer keeps a logged-in session, so the raw session sees private objects.)
        let _logged_in = token.signer(&KeyRef::label("allowed")).unwrap();
        let session = t.module.context().open_ro_session(token.slot()).unwrap();
        let handle = session
            .find_objects(&[
                Attribute::Class(cryptoki::object::ObjectClass::PRIVATE_KEY),
                Attribute::Label(b"allowed".to_vec()),
            ])
            .unwrap()[0];
        let value = session
            .get_attributes(handle, &[AttributeType::Value])
            .unwrap();
        assert!(
            !value.iter().any(|a| matches!(a, Attribute::Value(_))),
            "sensitive value readable: {value:?}"
        );
        drop(session);

        for (m, n) in [(1u8, 5usize), (6, 5), (0, 5)] {
            let err = backup(&token, "allowed", "b", m, &people[..n]).unwrap_err();
            assert!(
                matches!(err, Error::CeremonyInvalid(_)),
                "{m}-of-{n}: {err}"
            );
        }
        let err = backup(&token, "allowed", "", 3, &people).unwrap_err();
        assert!(matches!(err, Error::CeremonyInvalid(_)), "{err}");
        let mut twice = people.clone();
        twice[1].name = "alice".into();
        assert!(matches!(
            backup(&token, "allowed", "b", 3, &twice).unwrap_err(),
            Error::CeremonyInvalid(_)
        ));
        // An EC custodian certificate: refused, naming the custodian.
        openssl(
            d,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "ec.key",
                "-out",
                "ec.crt",
                "-subj",
                "/CN=ec",
                "-days",
                "1",
            ],
        );
        let mut ec = people.clone();
        ec[4].certificate_pem = std::fs::read_to_string(d.join("ec.crt")).unwrap();
        let err = backup(&token, "allowed", "b", 3, &ec).unwrap_err();
        assert!(
            matches!(&err, Error::CustodianCertificate { custodian, .. } if custodian == "erin"),
            "{err}"
        );
        assert!(err.to_string().contains("KeyAgreeRecipientInfo"), "{err}");
    });
}
