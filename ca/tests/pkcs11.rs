//! The PKCS#11 signer against real SoftHSM2. Each test runs in its own process with
//! its own token directory (`ca::softhsm::isolated`).

// Helpers outside #[test] fns are test code too (clippy.toml allows unwrap in tests).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ca::Error;
use ca::signer::pkcs11::{KeyRef, Pkcs11Module, Pkcs11Signer, Token};
use ca::signer::{Curve, KeySpec, Pin, SignatureAlgorithm, Signer, verify};
use ca::softhsm::{TestToken, isolated};
use cryptoki::object::{Attribute, AttributeType};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use der::EncodePem;
use spki::SubjectPublicKeyInfoOwned;

const MSG: &[u8] = b"tbsCertificate: C=TW, CN=\xe6\xb8\xac\xe8\xa9\xa6";

/// Verify with the openssl CLI, independently of aws-lc-rs.
fn openssl_verify(
    spki: &SubjectPublicKeyInfoOwned,
    alg: SignatureAlgorithm,
    msg: &[u8],
    sig: &[u8],
) {
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("pub.pem");
    std::fs::write(&pem, spki.to_pem(der::pem::LineEnding::LF).unwrap()).unwrap();
    std::fs::write(dir.path().join("sig.bin"), sig).unwrap();
    std::fs::write(dir.path().join("msg"), msg).unwrap();
    let digest = match alg {
        SignatureAlgorithm::RsaSha256 | SignatureAlgorithm::EcdsaSha256 => "-sha256",
        SignatureAlgorithm::RsaSha384 | SignatureAlgorithm::EcdsaSha384 => "-sha384",
        SignatureAlgorithm::RsaSha512 | SignatureAlgorithm::EcdsaSha512 => "-sha512",
    };
    let out = Command::new("openssl")
        .current_dir(dir.path())
        .args([
            "dgst",
            digest,
            "-verify",
            "pub.pem",
            "-signature",
            "sig.bin",
            "msg",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("Verified OK"),
        "openssl rejected a {alg:?} signature: {} {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Generate `spec` as `label`, sign `MSG` with each of `algs`, verify twice.
fn generate_sign_verify(token: &Token, label: &str, spec: KeySpec, algs: &[SignatureAlgorithm]) {
    let spki = token.generate_key(label, None, spec).unwrap();
    assert_eq!(KeySpec::of(&spki).unwrap(), spec);
    let default = token.signer(&KeyRef::label(label)).unwrap();
    assert_eq!(default.algorithm(), spec.default_signature_algorithm());
    assert_eq!(default.spec(), spec);
    for &alg in algs {
        let signer = token.signer_with(&KeyRef::label(label), alg).unwrap();
        assert_eq!(signer.public_key(), &spki);
        let sig = signer.sign(MSG).unwrap();
        verify(&spki, alg, MSG, &sig).unwrap();
        assert!(verify(&spki, alg, b"another message", &sig).is_err());
        openssl_verify(&spki, alg, MSG, &sig);
    }
}

#[test]
fn rsa_2048_and_3072_sign_with_every_hash() {
    isolated(|| {
        let t = TestToken::new().unwrap();
        let token = t.open().unwrap();
        let all = [
            SignatureAlgorithm::RsaSha256,
            SignatureAlgorithm::RsaSha384,
            SignatureAlgorithm::RsaSha512,
        ];
        generate_sign_verify(&token, "rsa2048", KeySpec::Rsa { bits: 2048 }, &all);
        generate_sign_verify(&token, "rsa3072", KeySpec::Rsa { bits: 3072 }, &all[..1]);
    });
}

#[test]
fn rsa_4096_signs() {
    isolated(|| {
        let t = TestToken::new().unwrap();
        let token = t.open().unwrap();
        generate_sign_verify(
            &token,
            "rsa4096",
            KeySpec::Rsa { bits: 4096 },
            &[SignatureAlgorithm::RsaSha256],
        );
    });
}

#[test]
fn ecdsa_on_every_curve() {
    isolated(|| {
        let t = TestToken::new().unwrap();
        let token = t.open().unwrap();
        generate_sign_verify(
            &token,
            "p256",
            KeySpec::Ec(Curve::P256),
            &[
                SignatureAlgorithm::EcdsaSha256,
                SignatureAlgorithm::EcdsaSha384,
            ],
        );
        generate_sign_verify(
            &token,
            "p384",
            KeySpec::Ec(Curve::P384),
            &[SignatureAlgorithm::EcdsaSha384],
        );
        generate_sign_verify(
            &token,
            "p521",
            KeySpec::Ec(Curve::P521),
            &[
                SignatureAlgorithm::EcdsaSha512,
                SignatureAlgorithm::EcdsaSha256,
            ],
        );
        // Many signatures so that r or s with leading zero octets (1 in 128 per
        // half) are exercised through the DER conversion.
        let signer = token.signer(&KeyRef::label("p256")).unwrap();
        for i in 0..300u32 {
            let msg = i.to_be_bytes();
            let sig = signer.sign(&msg).unwrap();
            verify(signer.public_key(), signer.algorithm(), &msg, &sig).unwrap();
        }
    });
}

#[test]
fn algorithm_must_fit_the_key() {
    isolated(|| {
        let t = TestToken::new().unwrap();
        let token = t.open().unwrap();
        token
            .generate_key("ec", None, KeySpec::Ec(Curve::P256))
            .unwrap();
        let err = token
            .signer_with(&KeyRef::label("ec"), SignatureAlgorithm::RsaSha256)
            .unwrap_err();
        assert!(matches!(err, Error::UnsupportedAlgorithm(_)), "{err}");
        let err = token
            .generate_key("rsa1024", None, KeySpec::Rsa { bits: 1024 })
            .unwrap_err();
        assert!(matches!(err, Error::UnsupportedAlgorithm(_)), "{err}");
    });
}

#[test]
fn private_keys_are_sensitive_and_not_extractable() {
    isolated(|| {
        let t = TestToken::new().unwrap();
        let token = t.open().unwrap();
        for (label, spec) in [
            ("rsa", KeySpec::Rsa { bits: 2048 }),
            ("ec", KeySpec::Ec(Curve::P384)),
        ] {
            token
                .generate_key(label, Some(label.as_bytes()), spec)
                .unwrap();
        }
        let ctx = t.module.context();
        let session = ctx.open_ro_session(token.slot()).unwrap();
        session
            .login(
                UserType::User,
                Some(&AuthPin::from(t.user_pin.expose().to_string())),
            )
            .unwrap();
        for label in ["rsa", "ec"] {
            let handle = session
                .find_objects(&[
                    Attribute::Class(cryptoki::object::ObjectClass::PRIVATE_KEY),
                    Attribute::Label(label.as_bytes().to_vec()),
                ])
                .unwrap()[0];
            let attrs = session
                .get_attributes(
                    handle,
                    &[
                        AttributeType::Sensitive,
                        AttributeType::Extractable,
                        AttributeType::AlwaysSensitive,
                        AttributeType::NeverExtractable,
                        AttributeType::Private,
                        AttributeType::Token,
                        AttributeType::Sign,
                        AttributeType::Decrypt,
                        AttributeType::Unwrap,
                        AttributeType::Derive,
                        AttributeType::Id,
                    ],
                )
                .unwrap();
            let expected = [
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::AlwaysSensitive(true),
                Attribute::NeverExtractable(true),
                Attribute::Private(true),
                Attribute::Token(true),
                Attribute::Sign(true),
                Attribute::Decrypt(false),
                Attribute::Unwrap(false),
                Attribute::Derive(false),
                Attribute::Id(label.as_bytes().to_vec()),
            ];
            assert_eq!(attrs, expected, "{label}");
        }
        // The private exponent cannot be read (CKR_ATTRIBUTE_SENSITIVE: cryptoki
        // leaves the attribute out of the result).
        let rsa = session
            .find_objects(&[
                Attribute::Class(cryptoki::object::ObjectClass::PRIVATE_KEY),
                Attribute::Label(b"rsa".to_vec()),
            ])
            .unwrap()[0];
        let secret = session
            .get_attributes(rsa, &[AttributeType::PrivateExponent])
            .unwrap_or_default();
        assert!(secret.is_empty(), "private exponent readable: {secret:?}");
    });
}

#[test]
fn wrong_pin_is_pin_incorrect_and_never_shown() {
    isolated(|| {
        let t = TestToken::new().unwrap();
        let wrong = "wrong-pin-731946";
        let check = |err: Error| {
            assert!(
                matches!(err, Error::PinIncorrect { ref label } if *label == t.label),
                "{err}"
            );
            assert!(!err.to_string().contains(wrong), "{err}");
            assert!(!format!("{err:?}").contains(wrong), "{err:?}");
            assert!(err.to_string().contains(&t.label), "{err}");
        };
        check(Token::open(&t.module, &t.label, Pin::new(wrong)).unwrap_err());
        // While another part of the process is logged in, C_Login answers
        // CKR_USER_ALREADY_LOGGED_IN without checking: the wrong PIN is still refused.
        let token = t.open().unwrap();
        token
            .generate_key("k", None, KeySpec::Ec(Curve::P256))
            .unwrap();
        let signer = token.signer(&KeyRef::label("k")).unwrap();
        check(Token::open(&t.module, &t.label, Pin::new(wrong)).unwrap_err());
        // And the right PIN still works alongside.
        Token::open(&t.module, &t.label, t.user_pin.clone()).unwrap();
        signer.sign(MSG).unwrap();
    });
}

#[test]
fn missing_token_is_token_not_found() {
    isolated(|| {
        let t = TestToken::new().unwrap();
        let err = Token::open(&t.module, "no-such-token", t.user_pin.clone()).unwrap_err();
        assert!(
            matches!(err, Error::TokenNotFound { ref label } if label == "no-such-token"),
            "{err}"
        );
        let err = Pkcs11Signer::open(
            ca::signer::pkcs11::SOFTHSM2_MODULE,
            "no-such-token",
            t.user_pin.clone(),
            &KeyRef::label("k"),
        )
        .unwrap_err();
        assert!(matches!(err, Error::TokenNotFound { .. }), "{err}");
    });
}

#[test]
fn missing_key_is_key_not_found() {
    isolated(|| {
        let t = TestToken::new().unwrap();
        let token = t.open().unwrap();
        let err = token.signer(&KeyRef::label("absent")).unwrap_err();
        assert!(
            matches!(err, Error::KeyNotFound { ref label, ref key } if *label == t.label && key == "absent"),
            "{err}"
        );
        let err = token
            .find_key(&KeyRef::id_hex("c0ffee").unwrap())
            .unwrap_err();
        assert!(
            matches!(err, Error::KeyNotFound { ref key, .. } if key == "id:c0ffee"),
            "{err}"
        );
        let err = token.destroy_key("absent").unwrap_err();
        assert!(matches!(err, Error::KeyNotFound { .. }), "{err}");
    });
}

#[test]
fn keys_are_found_by_label_or_id_and_listed() {
    isolated(|| {
        let t = TestToken::new().unwrap();
        let token = t.open().unwrap();
        let spki = token
            .generate_key(
                "ca-2025",
                Some(&[0xc0, 0xff, 0xee]),
                KeySpec::Rsa { bits: 2048 },
            )
            .unwrap();
        token
            .generate_key("ocsp", None, KeySpec::Ec(Curve::P256))
            .unwrap();
        let by_id = token.find_key(&KeyRef::id_hex("c0ffee").unwrap()).unwrap();
        assert_eq!(by_id.label, "ca-2025");
        assert_eq!(by_id.spec, KeySpec::Rsa { bits: 2048 });
        let signer = token.signer(&KeyRef::id_hex("C0FFEE").unwrap()).unwrap();
        assert_eq!(signer.public_key(), &spki);
        assert_eq!(token.public_key(&KeyRef::label("ca-2025")).unwrap(), spki);
        let mut keys = token.list_keys().unwrap();
        keys.sort_by(|a, b| a.label.cmp(&b.label));
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0].label, "ca-2025");
        assert_eq!(keys[1].label, "ocsp");
        assert_eq!(keys[1].spec, KeySpec::Ec(Curve::P256));
        assert_eq!(keys[1].id.len(), 16);
    });
}

#[test]
fn duplicate_label_is_key_exists_and_the_original_survives() {
    isolated(|| {
        let t = TestToken::new().unwrap();
        let token = t.open().unwrap();
        let original = token
            .generate_key("ca", Some(b"1"), KeySpec::Rsa { bits: 2048 })
            .unwrap();
        let err = token
            .generate_key("ca", None, KeySpec::Ec(Curve::P256))
            .unwrap_err();
        assert!(
            matches!(err, Error::KeyExists { ref label, ref key } if *label == t.label && key == "ca"),
            "{err}"
        );
        let err = token
            .generate_key("other", Some(b"1"), KeySpec::Ec(Curve::P256))
            .unwrap_err();
        assert!(
            matches!(err, Error::KeyExists { ref key, .. } if key == "id:31"),
            "{err}"
        );
        assert_eq!(token.list_keys().unwrap().len(), 1);
        let signer = token.signer(&KeyRef::label("ca")).unwrap();
        assert_eq!(signer.public_key(), &original);
        let sig = signer.sign(MSG).unwrap();
        verify(&original, signer.algorithm(), MSG, &sig).unwrap();
    });
}

#[test]
fn destroyed_key_is_gone_for_its_signer() {
    isolated(|| {
        let t = TestToken::new().unwrap();
        let token = t.open().unwrap();
        token
            .generate_key("old-ca", None, KeySpec::Ec(Curve::P256))
            .unwrap();
        let signer = token.signer(&KeyRef::label("old-ca")).unwrap();
        signer.sign(MSG).unwrap();
        // A non-key object under the same label (as a CA certificate often is).
        let session = t.module.context().open_rw_session(token.slot()).unwrap();
        session
            .create_object(&[
                Attribute::Class(cryptoki::object::ObjectClass::DATA),
                Attribute::Token(true),
                Attribute::Label(b"old-ca".to_vec()),
                Attribute::Value(b"certificate".to_vec()),
            ])
            .unwrap();
        token.destroy_key("old-ca").unwrap();
        assert!(token.list_keys().unwrap().is_empty());
        let left = session
            .find_objects(&[Attribute::Label(b"old-ca".to_vec())])
            .unwrap();
        assert_eq!(left.len(), 1, "only the data object is left");
        drop(session);
        let err = signer.sign(MSG).unwrap_err();
        assert!(
            matches!(err, Error::KeyNotFound { ref key, .. } if key == "old-ca"),
            "{err}"
        );
    });
}

/// Another part of the process logs the token out (PKCS#11 Base v2.40, C_Logout:
/// login state is shared by all sessions of the application). SoftHSM2 then invalidates all
/// private-object handles (CKR_OBJECT_HANDLE_INVALID on C_SignInit). The signer
/// recovers transparently: fresh session, login, key found again.
#[test]
fn lost_login_recovers_transparently() {
    isolated(|| {
        let t = TestToken::new().unwrap();
        let token = t.open().unwrap();
        let spki = token
            .generate_key("ca", None, KeySpec::Rsa { bits: 2048 })
            .unwrap();
        let signer = token.signer(&KeyRef::label("ca")).unwrap();
        signer.sign(MSG).unwrap();
        let other = t.module.context().open_ro_session(token.slot()).unwrap();
        other.logout().unwrap();
        drop(other);
        let sig = signer.sign(MSG).unwrap();
        verify(&spki, signer.algorithm(), MSG, &sig).unwrap();
        // and keeps working
        for _ in 0..3 {
            signer.sign(MSG).unwrap();
        }
    });
}

/// The token's storage disappears under a running signer (SoftHSM2: its directory
/// is moved away; a network HSM would answer CKR_DEVICE_REMOVED). The signer tries
/// once to re-open the token by label and then reports TokenGone with the token
/// label; it stays TokenGone (SoftHSM2 never re-attaches the token in a running
/// process), and opening the token by label reports TokenNotFound.
#[test]
fn vanished_token_is_token_gone() {
    isolated(|| {
        let t = TestToken::new().unwrap();
        let token = t.open().unwrap();
        token
            .generate_key("ca", None, KeySpec::Ec(Curve::P384))
            .unwrap();
        let signer = token.signer(&KeyRef::label("ca")).unwrap();
        signer.sign(MSG).unwrap();
        let dir = TestToken::token_dir().unwrap();
        let entries: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(entries.len(), 1, "{entries:?}");
        let away = dir.with_file_name("away");
        std::fs::rename(&entries[0], &away).unwrap();
        for _ in 0..2 {
            let err = signer.sign(MSG).unwrap_err();
            assert!(
                matches!(err, Error::TokenGone { ref label, .. } if *label == t.label),
                "{err}"
            );
            assert!(err.is_transient());
            assert_eq!(err.reason(), "HsmUnavailable");
        }
        let err = t.open().unwrap_err();
        assert!(matches!(err, Error::TokenNotFound { .. }), "{err}");
    });
}

#[test]
fn four_threads_sign_on_one_signer() {
    isolated(|| {
        let t = TestToken::new().unwrap();
        let token = t.open().unwrap();
        for (label, spec) in [
            ("rsa", KeySpec::Rsa { bits: 2048 }),
            ("ec", KeySpec::Ec(Curve::P256)),
        ] {
            token.generate_key(label, None, spec).unwrap();
            let signer = Arc::new(token.signer(&KeyRef::label(label)).unwrap());
            let threads: Vec<_> = (0..4u8)
                .map(|n| {
                    let signer = Arc::clone(&signer);
                    std::thread::spawn(move || {
                        for i in 0..50u8 {
                            let msg = [n, i];
                            let sig = signer.sign(&msg).unwrap();
                            verify(signer.public_key(), signer.algorithm(), &msg, &sig).unwrap();
                        }
                    })
                })
                .collect();
            for th in threads {
                th.join().unwrap();
            }
        }
    });
}

#[test]
fn wrong_module_path_is_module_load_naming_it() {
    for path in ["/nonexistent/libnothing.so", "/etc/hostname"] {
        if !Path::new(path).exists() && path == "/etc/hostname" {
            continue;
        }
        let err = Pkcs11Module::open(path).unwrap_err();
        assert!(
            matches!(err, Error::ModuleLoad { ref module, .. } if module == path),
            "{err}"
        );
        assert!(err.to_string().contains(path), "{err}");
        let err = Pkcs11Signer::open(path, "t", Pin::new("1234"), &KeyRef::label("k")).unwrap_err();
        assert!(matches!(err, Error::ModuleLoad { .. }), "{err}");
    }
}

#[test]
fn opening_a_module_twice_shares_one_context() {
    isolated(|| {
        let a = Pkcs11Module::open(ca::signer::pkcs11::SOFTHSM2_MODULE).unwrap();
        let b = Pkcs11Module::open(ca::signer::pkcs11::SOFTHSM2_MODULE).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
    });
}

#[test]
fn debug_output_shows_no_pin() {
    isolated(|| {
        let t = TestToken::new().unwrap();
        let token = t.open().unwrap();
        token
            .generate_key("ca", None, KeySpec::Ec(Curve::P256))
            .unwrap();
        let signer = token.signer(&KeyRef::label("ca")).unwrap();
        let pins = [t.user_pin.expose(), t.so_pin.expose()];
        for shown in [
            format!("{token:?}"),
            format!("{signer:?}"),
            format!("{t:?}"),
            format!("{:?}", t.module),
            format!("{:?}", t.user_pin),
        ] {
            for pin in pins {
                assert!(!shown.contains(pin), "{shown}");
            }
        }
        assert!(format!("{signer:?}").contains(&t.label));
        assert!(format!("{signer:?}").contains("\"ca\""));
    });
}

#[test]
fn tokens_are_initialised_once() {
    isolated(|| {
        let t = TestToken::new().unwrap();
        let err = t
            .module
            .init_token(&t.label, &Pin::new("so"), &Pin::new("user"))
            .unwrap_err();
        assert!(matches!(err, Error::TokenExists { .. }), "{err}");
        // the original PIN still opens it
        t.open().unwrap();
        // a second token in the same process
        let t2 = TestToken::new().unwrap();
        t2.open().unwrap();
        let labels = t.module.token_labels().unwrap();
        assert!(
            labels.contains(&t.label) && labels.contains(&t2.label),
            "{labels:?}"
        );
    });
}

/// Sign for `period` on `threads` threads with `sign`; signatures per second.
fn rate(threads: usize, period: Duration, sign: Arc<dyn Fn() + Send + Sync>) -> f64 {
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let sign = Arc::clone(&sign);
            std::thread::spawn(move || {
                let mut n = 0u64;
                while start.elapsed() < period {
                    sign();
                    n += 1;
                }
                n
            })
        })
        .collect();
    let total: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    total as f64 / start.elapsed().as_secs_f64()
}

/// Throughput, not a test: `cargo test --release -p ca --test pkcs11 -- --ignored
/// --nocapture throughput`. RSA-2048 SHA-256 signatures/s through the signer with 1
/// and 2 threads, against raw cryptoki C_Sign on dedicated sessions (one per
/// thread, key handle found beforehand) as the ceiling. Rounds alternate so that
/// load from other processes hits all variants alike; medians are printed.
#[test]
#[ignore = "benchmark; run in release mode"]
fn throughput_rsa2048() {
    isolated(|| {
        let t = TestToken::new().unwrap();
        let token = t.open().unwrap();
        token
            .generate_key("ca", None, KeySpec::Rsa { bits: 2048 })
            .unwrap();
        let signer = Arc::new(token.signer(&KeyRef::label("ca")).unwrap());
        let period = Duration::from_millis(1500);
        let raw_sessions: Vec<_> = (0..2)
            .map(|_| {
                let session = t.module.context().open_ro_session(token.slot()).unwrap();
                let _ = session.login(
                    UserType::User,
                    Some(&AuthPin::from(t.user_pin.expose().to_string())),
                );
                let key = session
                    .find_objects(&[
                        Attribute::Class(cryptoki::object::ObjectClass::PRIVATE_KEY),
                        Attribute::Label(b"ca".to_vec()),
                    ])
                    .unwrap()[0];
                std::sync::Mutex::new((session, key))
            })
            .collect();
        let raw_sessions = Arc::new(raw_sessions);
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let raw: Arc<dyn Fn() + Send + Sync> = {
            let sessions = Arc::clone(&raw_sessions);
            // Each thread sticks to one session (thread-local index).
            Arc::new(move || {
                thread_local!(static IDX: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) });
                let i = IDX.with(|c| {
                    *c.get().get_or_insert_with(|| {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 2;
                        c.set(Some(i));
                        i
                    })
                });
                let guard = sessions[i].lock().unwrap();
                guard
                    .0
                    .sign(&cryptoki::mechanism::Mechanism::Sha256RsaPkcs, guard.1, MSG)
                    .unwrap();
            })
        };
        let via_signer: Arc<dyn Fn() + Send + Sync> = {
            let signer = Arc::clone(&signer);
            Arc::new(move || {
                signer.sign(MSG).unwrap();
            })
        };
        let mut results: [Vec<f64>; 4] = Default::default();
        for _ in 0..3 {
            results[0].push(rate(1, period, Arc::clone(&raw)));
            results[1].push(rate(1, period, Arc::clone(&via_signer)));
            results[2].push(rate(2, period, Arc::clone(&raw)));
            results[3].push(rate(2, period, Arc::clone(&via_signer)));
        }
        let names = [
            "raw C_Sign, 1 thread   ",
            "Pkcs11Signer, 1 thread ",
            "raw C_Sign, 2 threads  ",
            "Pkcs11Signer, 2 threads",
        ];
        for (name, mut r) in names.into_iter().zip(results) {
            r.sort_by(f64::total_cmp);
            println!("{name}: median {:.0} sig/s (runs {r:.0?})", r[1]);
        }
    });
}
