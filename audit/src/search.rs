//! Finding records: by object, user, serial, event and time. Filters combine with
//! AND; an absent filter matches everything.

use crds::AuditRecord;

use crate::Error;

/// A record filter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Object kind, case-insensitive (`CertificateRequest`, `certificaterequest`).
    pub kind: Option<String>,
    /// Object namespace.
    pub namespace: Option<String>,
    /// Object name.
    pub name: Option<String>,
    /// A user named in the record (any part).
    pub user: Option<String>,
    /// Certificate serial, hex, case and colons ignored.
    pub serial: Option<String>,
    /// Event class; a trailing `*` matches a prefix (`certificate.*`).
    pub event: Option<String>,
    /// Records at or after this time.
    pub since: Option<jiff::Timestamp>,
    /// Records before this time.
    pub until: Option<jiff::Timestamp>,
}

/// Parse a time: RFC 3339 (`2026-12-03T15:40:00Z`) or a date (`2026-12-03`, UTC
/// midnight).
pub fn parse_time(s: &str) -> Result<jiff::Timestamp, Error> {
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return Ok(t);
    }
    s.parse::<jiff::civil::Date>()
        .ok()
        .and_then(|d| d.to_zoned(jiff::tz::TimeZone::UTC).ok())
        .map(|z| z.timestamp())
        .ok_or_else(|| {
            Error::Argument(format!(
                "{s:?} is not a time: give RFC 3339 (2026-12-03T15:40:00Z) or a date (2026-12-03, UTC)"
            ))
        })
}

fn normalize_serial(s: &str) -> String {
    s.chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .trim_start_matches('0')
        .to_ascii_lowercase()
}

impl Filter {
    /// Set the object filter from `KIND`, `KIND/NAME` or `KIND/NAMESPACE/NAME`.
    pub fn object(mut self, spec: &str) -> Result<Filter, Error> {
        let parts: Vec<&str> = spec.split('/').collect();
        if parts.iter().any(|p| p.is_empty()) || parts.len() > 3 {
            return Err(Error::Argument(format!(
                "--object {spec:?}: give KIND, KIND/NAME or KIND/NAMESPACE/NAME, e.g. CertificateRequest/moica/alice-sig"
            )));
        }
        self.kind = Some(parts[0].to_owned());
        match parts.len() {
            2 => self.name = Some(parts[1].to_owned()),
            3 => {
                self.namespace = Some(parts[1].to_owned());
                self.name = Some(parts[2].to_owned());
            }
            _ => {}
        }
        Ok(self)
    }

    /// Whether `r` passes the filter (a record whose time does not parse fails a
    /// time filter).
    pub fn matches(&self, r: &AuditRecord) -> bool {
        let obj = r.object.as_ref();
        let kind = self
            .kind
            .as_ref()
            .is_none_or(|k| obj.is_some_and(|o| o.kind.eq_ignore_ascii_case(k)));
        let namespace = self
            .namespace
            .as_ref()
            .is_none_or(|ns| obj.is_some_and(|o| o.namespace.as_deref() == Some(ns.as_str())));
        let name = self
            .name
            .as_ref()
            .is_none_or(|n| obj.is_some_and(|o| o.name == *n));
        let user = self
            .user
            .as_ref()
            .is_none_or(|u| r.users.iter().any(|x| x.user == *u));
        let serial = self.serial.as_ref().is_none_or(|s| {
            let want = normalize_serial(s);
            r.serial
                .as_deref()
                .is_some_and(|x| normalize_serial(x) == want)
        });
        let event = self
            .event
            .as_ref()
            .is_none_or(|e| match e.strip_suffix('*') {
                Some(prefix) => r.event.starts_with(prefix),
                None => r.event == *e,
            });
        let time = (self.since.is_none() && self.until.is_none())
            || r.time.parse::<jiff::Timestamp>().is_ok_and(|t| {
                self.since.is_none_or(|s| t >= s) && self.until.is_none_or(|u| t < u)
            });
        kind && namespace && name && user && serial && event && time
    }

    /// The records that pass, in trail order.
    pub fn apply<'a>(
        &self,
        records: impl IntoIterator<Item = &'a AuditRecord>,
    ) -> Vec<&'a AuditRecord> {
        records.into_iter().filter(|r| self.matches(r)).collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crds::audit_segment::{AuditObject, AuditUser};

    fn rec(event: &str, name: &str, user: &str, serial: Option<&str>, time: &str) -> AuditRecord {
        AuditRecord {
            time: time.into(),
            event: event.into(),
            object: Some(AuditObject {
                kind: "CertificateRequest".into(),
                namespace: Some("moica".into()),
                name: name.into(),
                ..AuditObject::default()
            }),
            users: vec![AuditUser {
                role: "approvedBy".into(),
                user: user.into(),
            }],
            serial: serial.map(Into::into),
            outcome: "succeeded".into(),
            ..AuditRecord::default()
        }
    }

    #[test]
    fn filters_combine_and_each_narrows() {
        let rs = [
            rec(
                "request.approved",
                "alice",
                "officer-1",
                None,
                "2026-12-01T10:00:00Z",
            ),
            rec(
                "certificate.issued",
                "alice",
                "officer-1",
                Some("0A:1B"),
                "2026-12-01T10:00:01Z",
            ),
            rec(
                "certificate.issued",
                "bob",
                "officer-2",
                Some("ff"),
                "2026-12-02T10:00:00Z",
            ),
        ];
        let n = |f: Filter| f.apply(&rs).len();
        assert_eq!(n(Filter::default()), 3);
        assert_eq!(
            n(Filter::default()
                .object("certificaterequest/alice")
                .unwrap()),
            2
        );
        assert_eq!(
            n(Filter::default()
                .object("CertificateRequest/moica/bob")
                .unwrap()),
            1
        );
        assert_eq!(
            n(Filter::default()
                .object("CertificateRequest/other/bob")
                .unwrap()),
            0
        );
        assert_eq!(
            n(Filter {
                user: Some("officer-2".into()),
                ..Filter::default()
            }),
            1
        );
        assert_eq!(
            n(Filter {
                serial: Some("a1b".into()),
                ..Filter::default()
            }),
            1
        );
        assert_eq!(
            n(Filter {
                event: Some("certificate.*".into()),
                ..Filter::default()
            }),
            2
        );
        assert_eq!(
            n(Filter {
                event: Some("certificate".into()),
                ..Filter::default()
            }),
            0
        );
        let since = parse_time("2026-12-02").unwrap();
        assert_eq!(
            n(Filter {
                since: Some(since),
                ..Filter::default()
            }),
            1
        );
        assert_eq!(
            n(Filter {
                until: Some(since),
                ..Filter::default()
            }),
            2
        );
        assert!(Filter::default().object("a//b").is_err());
        assert!(
            parse_time("yesterday")
                .unwrap_err()
                .to_string()
                .contains("RFC 3339")
        );
    }
}
