//! `kubectl chop audit` against export files (no cluster needed): the built
//! binary, trails sealed by the chop-audit library with a software P-256 key,
//! tampered the way an attacker holding the file would.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use chop_audit::export::Export;
use chop_audit::testing::SoftwareSigner;
use crds::AuditRecord;

mod audit_common;
mod run;
use audit_common::trail;
use run::{chop_offline, expect};

fn write(dir: &Path, name: &str, key: &SoftwareSigner, segs: &[crds::AuditSegmentSpec]) -> PathBuf {
    let export = Export::new(
        jiff::Timestamp::now(),
        "chop-system",
        &key.pem(),
        segs.to_vec(),
    );
    let path = dir.join(name);
    std::fs::write(&path, export.to_json().unwrap()).unwrap();
    path
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn verify_passes_an_intact_export_and_names_each_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let key = SoftwareSigner::generate();
    let segs = trail(&key, 5);
    let good = write(dir.path(), "good.json", &key, &segs);
    let o = chop_offline(&["audit", "verify", s(&good)]);
    expect(&o, 0, "audit trail verified");
    expect(&o, 0, &chop_audit::key::key_id(key.spki_der()));
    expect(&o, 0, "records:   20 (sequence 0 to 19)");

    // An attacker with the file edits who approved request 1 (record 5).
    let mut t = segs.clone();
    t[1].records[1].users[0].user = "mallory".into();
    let f = write(dir.path(), "edited.json", &key, &t);
    expect(
        &chop_offline(&["audit", "verify", s(&f)]),
        1,
        "AlteredRecord: record 5 (segment 1) was altered",
    );

    // Deletes segment 2.
    let mut t = segs.clone();
    t.remove(2);
    let f = write(dir.path(), "deleted.json", &key, &t);
    expect(
        &chop_offline(&["audit", "verify", s(&f)]),
        1,
        "MissingSegment: segment 2 is missing",
    );

    // Swaps segments 1 and 3.
    let mut t = segs.clone();
    t.swap(1, 3);
    let f = write(dir.path(), "reordered.json", &key, &t);
    expect(
        &chop_offline(&["audit", "verify", s(&f)]),
        1,
        "ReorderedSegment: segment 3 comes after segment 0",
    );

    // Replays segment 1 as segment 5.
    let mut t = segs.clone();
    let mut replay = segs[1].clone();
    replay.index = 5;
    t.push(replay);
    let f = write(dir.path(), "replayed.json", &key, &t);
    expect(
        &chop_offline(&["audit", "verify", s(&f)]),
        1,
        "BadSignature: segment 5",
    );

    // Re-seals the whole trail with a key of their own (and ships it in the file):
    // the key id printed differs, and pinning the real key names it.
    let mallory = SoftwareSigner::generate();
    let forged = write(dir.path(), "forged.json", &mallory, &trail(&mallory, 5));
    expect(
        &chop_offline(&["audit", "verify", s(&forged)]),
        0,
        &chop_audit::key::key_id(mallory.spki_der()),
    );
    let pem = dir.path().join("audit-key.pem");
    std::fs::write(&pem, key.pem()).unwrap();
    expect(
        &chop_offline(&["audit", "verify", s(&forged), "--key", s(&pem)]),
        1,
        "WrongKey: the trail is signed by audit key",
    );
    let id = chop_audit::key::key_id(key.spki_der());
    expect(
        &chop_offline(&["audit", "verify", s(&forged), "--key", &id]),
        1,
        "WrongKey",
    );
    expect(
        &chop_offline(&["audit", "verify", s(&good), "--key", s(&pem)]),
        0,
        "audit trail verified",
    );
}

#[test]
fn verify_since_proves_an_earlier_export_is_still_whole() {
    let dir = tempfile::tempdir().unwrap();
    let key = SoftwareSigner::generate();
    let segs = trail(&key, 6);
    let q3 = write(dir.path(), "early.json", &key, &segs[..3]);
    let now = write(dir.path(), "now.json", &key, &segs);
    expect(
        &chop_offline(&["audit", "verify", s(&now), "--since", s(&q3)]),
        0,
        "its 12 records (root",
    );
    // Archived and pruned: the trail now starts at segment 2, still provable.
    let pruned = write(dir.path(), "pruned.json", &key, &segs[2..]);
    expect(
        &chop_offline(&["audit", "verify", s(&pruned), "--since", s(&q3)]),
        0,
        "consistent with",
    );
    // The last segments deleted: the shorter trail verifies alone, not against
    // the earlier export.
    let cut = write(dir.path(), "cut.json", &key, &segs[..2]);
    expect(
        &chop_offline(&["audit", "verify", s(&cut)]),
        0,
        "cannot be seen from the trail alone",
    );
    expect(
        &chop_offline(&["audit", "verify", s(&cut), "--since", s(&q3)]),
        1,
        "Truncated: the trail has 8 records, fewer than the 12",
    );
    let p = chop_offline(&["audit", "prove", "--consistency", s(&q3), s(&now)]);
    expect(&p, 0, "consistency proof (RFC 9162 §2.1.4, verified)");
    let p = chop_offline(&["audit", "prove", "--inclusion", "13", s(&now)]);
    expect(&p, 0, "audit path (RFC 9162 §2.1.3, verified)");
}

#[test]
fn search_and_sample_read_a_verified_export() {
    let dir = tempfile::tempdir().unwrap();
    let key = SoftwareSigner::generate();
    let segs = trail(&key, 40);
    let f = write(dir.path(), "q4.json", &key, &segs);

    let o = chop_offline(&["audit", "search", s(&f), "--serial", "10:07"]);
    expect(&o, 0, "certificate.issued");
    expect(&o, 0, "2 record(s)");
    let o = chop_offline(&[
        "audit",
        "search",
        s(&f),
        "--user",
        "officer-1",
        "--object",
        "CertificateRequest/moica/req-3",
        "-o",
        "json",
    ]);
    let found: Vec<AuditRecord> = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(found.len(), 1, "{}", o.stdout);
    assert_eq!(found[0].event, "request.approved");
    assert_eq!(found[0].sequence, 13);
    expect(
        &chop_offline(&["audit", "search", s(&f), "--since", "last week"]),
        2,
        "is not a time",
    );

    // A tampered trail is not searched unless asked.
    let mut t = segs.clone();
    t[0].records[0].event = "nothing".into();
    let bad = write(dir.path(), "bad.json", &key, &t);
    expect(
        &chop_offline(&["audit", "search", s(&bad)]),
        1,
        "does NOT verify",
    );
    expect(
        &chop_offline(&["audit", "search", s(&bad), "--unverified"]),
        0,
        "160 record(s)",
    );

    // 40 certificates issued in 2026Q4: a sample of 2, reproducible from the seed.
    let o = chop_offline(&["audit", "sample", "--quarter", "2026Q4", s(&f)]);
    expect(&o, 0, "population: 40 certificates issued");
    expect(&o, 0, "sample:     2");
    let seed_line = o.stdout.lines().find(|l| l.starts_with("seed:")).unwrap();
    let seed = seed_line.split_whitespace().nth(1).unwrap().to_owned();
    let serials = |out: &str| -> Vec<String> {
        out.lines()
            .skip_while(|l| *l != "serials:")
            .skip(1)
            .take_while(|l| l.starts_with("  "))
            .map(|l| l.trim().to_owned())
            .collect()
    };
    let first = serials(&o.stdout);
    assert_eq!(first.len(), 2);
    let again = chop_offline(&[
        "audit",
        "sample",
        "--quarter",
        "2026Q4",
        "--seed",
        &seed,
        s(&f),
    ]);
    assert_eq!(serials(&again.stdout), first);
    expect(
        &chop_offline(&["audit", "sample", "--quarter", "2026Q3", s(&f)]),
        2,
        "no tree head was signed in 2026Q3",
    );
    expect(
        &chop_offline(&["audit", "sample", "--quarter", "2026-Q4", s(&f)]),
        2,
        "e.g. 2026Q4",
    );
}

#[test]
fn bad_files_and_arguments_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let v2 = dir.path().join("v2.json");
    std::fs::write(&v2, r#"{"format":"chop-audit-export/v2","segments":[]}"#).unwrap();
    expect(
        &chop_offline(&["audit", "verify", s(&v2)]),
        2,
        "unknown export format \"chop-audit-export/v2\"",
    );
    expect(
        &chop_offline(&["audit", "verify"]),
        2,
        "an export FILE, or --from-cluster",
    );
    expect(
        &chop_offline(&["audit", "verify", "/nonexistent/x.json"]),
        2,
        "cannot read /nonexistent/x.json",
    );
    // export never overwrites (checked before talking to any cluster).
    let existing = dir.path().join("existing.json");
    std::fs::write(&existing, "keep me").unwrap();
    expect(
        &chop_offline(&["audit", "export", "-o", s(&existing)]),
        2,
        "never overwrites",
    );
    assert_eq!(std::fs::read_to_string(&existing).unwrap(), "keep me");
}
