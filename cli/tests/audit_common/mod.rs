//! Trails for the audit tests: sealed by the chop-audit library with a software
//! key, one issuance (created, approved, intent, issued) per segment.

#![allow(dead_code)]

use chop_audit::testing::SoftwareSigner;
use chop_audit::{TrailState, seal};
use crds::AuditRecord;
use crds::audit_segment::{AuditObject, AuditUser};

/// The records of one issuance: created, approved, intent, issued.
pub fn issuance(n: usize) -> Vec<AuditRecord> {
    let object = AuditObject {
        kind: "CertificateRequest".into(),
        namespace: Some("moica".into()),
        name: format!("req-{n}"),
        ..AuditObject::default()
    };
    let rec = |event: &str, outcome: &str, users: Vec<AuditUser>, serial: bool| AuditRecord {
        time: format!("2026-11-{:02}T10:00:00.000000Z", 1 + n % 28),
        event: event.into(),
        object: Some(object.clone()),
        users,
        outcome: outcome.into(),
        serial: serial.then(|| format!("{:04x}", 0x1000 + n)),
        ..AuditRecord::default()
    };
    let user = |role: &str, user: &str| AuditUser {
        role: role.into(),
        user: user.into(),
    };
    vec![
        rec(
            "request.created",
            "succeeded",
            vec![user("requestedBy", "ra-1")],
            false,
        ),
        rec(
            "request.approved",
            "succeeded",
            vec![user("approvedBy", &format!("officer-{}", n % 2))],
            false,
        ),
        rec("certificate.issue", "intent", vec![], true),
        rec("certificate.issued", "succeeded", vec![], true),
    ]
}

/// A trail of `segments` segments, one issuance each.
pub fn trail(key: &SoftwareSigner, segments: usize) -> Vec<crds::AuditSegmentSpec> {
    let mut state = TrailState::genesis();
    (0..segments)
        .map(|i| {
            let t: jiff::Timestamp = format!("2026-11-{:02}T10:00:01Z", 1 + i % 28)
                .parse()
                .unwrap();
            let (spec, next) = seal(&state, issuance(i), t, "chop-controller-0", key).unwrap();
            state = next;
            spec
        })
        .collect()
}
