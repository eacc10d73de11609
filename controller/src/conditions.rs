//! Status conditions: set one while keeping its `lastTransitionTime` when its
//! status did not change (so re-applying the same state is a no-op for the API
//! server and produces no watch event).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// `True`.
pub const TRUE: &str = "True";
/// `False`.
pub const FALSE: &str = "False";

/// A condition to set: type, status, PascalCase reason and a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cond {
    /// Condition type, e.g. `Issued`.
    pub type_: &'static str,
    /// `True` or `False`.
    pub status: &'static str,
    /// PascalCase reason.
    pub reason: String,
    /// Human-readable message (never secret).
    pub message: String,
}

impl Cond {
    /// A `True` condition.
    pub fn yes(type_: &'static str, reason: impl Into<String>, message: impl Into<String>) -> Self {
        Cond {
            type_,
            status: TRUE,
            reason: reason.into(),
            message: message.into(),
        }
    }

    /// A `False` condition.
    pub fn no(type_: &'static str, reason: impl Into<String>, message: impl Into<String>) -> Self {
        Cond {
            type_,
            status: FALSE,
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// The condition of `type_` in `conditions`, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition `type_` is `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == TRUE)
}

/// Build the condition to write for `cond`, observed at `generation`, keeping the
/// previous `lastTransitionTime` when the status is unchanged.
pub fn build(existing: &[Condition], cond: &Cond, generation: Option<i64>, now: Time) -> Condition {
    let last_transition_time = match find(existing, cond.type_) {
        Some(old) if old.status == cond.status => old.last_transition_time.clone(),
        _ => now,
    };
    Condition {
        type_: cond.type_.to_string(),
        status: cond.status.to_string(),
        reason: cond.reason.clone(),
        message: truncate(&cond.message, 1024),
        observed_generation: generation,
        last_transition_time,
    }
}

/// Whether `existing` already holds `cond` at `generation` (same status, reason and
/// message), i.e. writing it would change nothing.
pub fn unchanged(existing: &[Condition], cond: &Cond, generation: Option<i64>) -> bool {
    find(existing, cond.type_).is_some_and(|c| {
        c.status == cond.status
            && c.reason == cond.reason
            && c.message == truncate(&cond.message, 1024)
            && c.observed_generation == generation
    })
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// The current time as a Kubernetes `Time`.
pub fn now() -> Time {
    Time(jiff::Timestamp::now())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn at(secs: i64) -> Time {
        Time(jiff::Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn transition_time_moves_only_when_the_status_changes() {
        let first = build(
            &[],
            &Cond::no("Issued", "WaitingForApproval", "m"),
            Some(1),
            at(10),
        );
        assert_eq!(first.last_transition_time, at(10));
        let same = build(
            std::slice::from_ref(&first),
            &Cond::no("Issued", "WaitingForAcceptance", "m2"),
            Some(2),
            at(20),
        );
        assert_eq!(same.last_transition_time, at(10));
        assert_eq!(same.reason, "WaitingForAcceptance");
        let flipped = build(
            &[same],
            &Cond::yes("Issued", "Issued", "ok"),
            Some(2),
            at(30),
        );
        assert_eq!(flipped.last_transition_time, at(30));
    }

    #[test]
    fn unchanged_compares_status_reason_message_and_generation() {
        let c = Cond::no("Issued", "WaitingForApproval", "waiting");
        let existing = vec![build(&[], &c, Some(3), at(1))];
        assert!(unchanged(&existing, &c, Some(3)));
        assert!(!unchanged(&existing, &c, Some(4)));
        assert!(!unchanged(
            &existing,
            &Cond::no("Issued", "Other", "waiting"),
            Some(3)
        ));
        assert!(is_true(
            &[build(&[], &Cond::yes("Approved", "A", ""), None, at(1))],
            "Approved"
        ));
        assert!(!is_true(&existing, "Issued"));
    }

    #[test]
    fn long_messages_are_cut_on_a_char_boundary() {
        let long = "證".repeat(500);
        let c = build(&[], &Cond::no("Failed", "X", long), None, at(1));
        assert!(c.message.len() <= 1024);
    }
}
