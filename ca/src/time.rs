//! `SystemTime` ↔ X.509 `Time`, and the calendar arithmetic of validity periods.
//!
//! RFC 5280 §4.1.2.5: "CAs conforming to this profile MUST always encode certificate
//! validity dates through the year 2049 as UTCTime; certificate validity dates in
//! 2050 or later MUST be encoded as GeneralizedTime." Both forms are expressed in
//! Greenwich Mean Time (`Z`) and include seconds (§4.1.2.5.1, §4.1.2.5.2), and
//! GeneralizedTime "MUST NOT include fractional seconds". `der` 0.7 encodes both
//! types exactly that way; this module only chooses the type and drops sub-second
//! precision so that the value in the certificate is the value the caller sees.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use der::DateTime;
use der::asn1::{GeneralizedTime, UtcTime};
use x509_cert::time::Time;

use crate::error::{Error, Result};

/// Last year that RFC 5280 §4.1.2.5 encodes as UTCTime.
pub const LAST_UTCTIME_YEAR: u16 = 2049;

/// `time` truncated to whole seconds since the Unix epoch (X.509 times carry no
/// fractional seconds, RFC 5280 §4.1.2.5.2). Times before 1970 are refused.
pub fn truncate_to_seconds(time: SystemTime) -> Result<SystemTime> {
    let since = time
        .duration_since(UNIX_EPOCH)
        .map_err(|_| Error::InvalidValidity("times before 1970 are not supported".into()))?;
    Ok(UNIX_EPOCH + Duration::from_secs(since.as_secs()))
}

/// Encode `time` as an X.509 `Time`: UTCTime through 2049, GeneralizedTime from
/// 2050 (RFC 5280 §4.1.2.5), in `Z` with seconds and no fractional seconds.
pub fn to_x509(time: SystemTime) -> Result<Time> {
    let time = truncate_to_seconds(time)?;
    let dt = DateTime::from_system_time(time)
        .map_err(|e| Error::InvalidValidity(format!("time cannot be encoded: {e}")))?;
    if dt.year() <= LAST_UTCTIME_YEAR {
        Ok(Time::UtcTime(UtcTime::from_date_time(dt)?))
    } else {
        Ok(Time::GeneralTime(GeneralizedTime::from_date_time(dt)))
    }
}

/// Decode an X.509 `Time` to `SystemTime`.
pub fn from_x509(time: &Time) -> SystemTime {
    time.to_system_time()
}

/// Whether `time` uses the encoding RFC 5280 §4.1.2.5 requires for its year
/// (UTCTime through 2049, GeneralizedTime from 2050).
pub fn is_rfc5280_encoding(time: &Time) -> bool {
    match time {
        Time::UtcTime(t) => t.to_date_time().year() <= LAST_UTCTIME_YEAR,
        Time::GeneralTime(t) => t.to_date_time().year() > LAST_UTCTIME_YEAR,
    }
}

/// ISO 8601 rendering (`2035-01-31T00:00:00Z`) for error messages and lint findings.
pub fn display(time: SystemTime) -> String {
    match DateTime::from_system_time(time) {
        Ok(dt) => dt.to_string(),
        Err(_) => format!("{time:?}"),
    }
}

/// `time` plus `years` calendar years, same month, day and time of day. 29 February
/// becomes 28 February in a non-leap target year (so "5 years" never overshoots).
pub fn add_years(time: SystemTime, years: u32) -> Result<SystemTime> {
    let dt = ::time::OffsetDateTime::from(truncate_to_seconds(time)?);
    let target = i32::try_from(years)
        .ok()
        .and_then(|y| dt.year().checked_add(y))
        .ok_or_else(|| Error::InvalidValidity(format!("{years} years is out of range")))?;
    let moved = dt.replace_year(target).or_else(|_| {
        // Only 29 February can fail: step back to the 28th.
        dt.replace_day(28).and_then(|d| d.replace_year(target))
    });
    let moved =
        moved.map_err(|e| Error::InvalidValidity(format!("cannot add {years} years: {e}")))?;
    Ok(SystemTime::from(moved))
}

/// `time` minus `years` calendar years (the inverse of [`add_years`], same 29 February
/// rule).
pub fn sub_years(time: SystemTime, years: u32) -> Result<SystemTime> {
    let dt = ::time::OffsetDateTime::from(truncate_to_seconds(time)?);
    let target = i32::try_from(years)
        .ok()
        .and_then(|y| dt.year().checked_sub(y))
        .ok_or_else(|| Error::InvalidValidity(format!("{years} years is out of range")))?;
    let moved = dt
        .replace_year(target)
        .or_else(|_| dt.replace_day(28).and_then(|d| d.replace_year(target)));
    let moved =
        moved.map_err(|e| Error::InvalidValidity(format!("cannot subtract {years} years: {e}")))?;
    Ok(SystemTime::from(moved))
}

/// Seconds in a day.
pub const DAY: Duration = Duration::from_secs(86_400);

#[cfg(test)]
mod tests {
    use super::*;
    use der::Encode;

    fn at(y: u16, mo: u8, d: u8, h: u8, mi: u8, s: u8) -> SystemTime {
        DateTime::new(y, mo, d, h, mi, s).unwrap().to_system_time()
    }

    #[test]
    fn utctime_through_2049_generalized_from_2050() {
        let t = to_x509(at(2049, 12, 31, 23, 59, 59)).unwrap();
        assert!(matches!(t, Time::UtcTime(_)));
        assert_eq!(t.to_der().unwrap()[2..], *b"491231235959Z");
        let t = to_x509(at(2050, 1, 1, 0, 0, 0)).unwrap();
        assert!(matches!(t, Time::GeneralTime(_)));
        assert_eq!(t.to_der().unwrap()[2..], *b"20500101000000Z");
        assert!(is_rfc5280_encoding(&t));
        let wrong = Time::GeneralTime(GeneralizedTime::from_date_time(
            DateTime::new(2030, 1, 1, 0, 0, 0).unwrap(),
        ));
        assert!(!is_rfc5280_encoding(&wrong));
    }

    #[test]
    fn fractional_seconds_are_dropped() {
        let t = at(2030, 6, 1, 12, 0, 0) + Duration::from_millis(999);
        let enc = to_x509(t).unwrap();
        assert_eq!(from_x509(&enc), at(2030, 6, 1, 12, 0, 0));
        assert!(to_x509(UNIX_EPOCH - Duration::from_secs(1)).is_err());
    }

    #[test]
    fn calendar_years() {
        assert_eq!(
            add_years(at(2025, 3, 1, 8, 0, 0), 5).unwrap(),
            at(2030, 3, 1, 8, 0, 0)
        );
        assert_eq!(
            add_years(at(2024, 2, 29, 0, 0, 0), 1).unwrap(),
            at(2025, 2, 28, 0, 0, 0)
        );
        assert_eq!(
            sub_years(at(2030, 3, 1, 8, 0, 0), 3).unwrap(),
            at(2027, 3, 1, 8, 0, 0)
        );
        assert_eq!(display(at(2035, 1, 31, 0, 0, 0)), "2035-01-31T00:00:00Z");
    }
}
