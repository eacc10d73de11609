//! The quarterly sample of issued certificates an auditor inspects (CPS §8.4):
//! at least 3% of the certificates issued in the quarter, and at least one,
//! chosen reproducibly so that a second auditor with the same trail and seed gets
//! the same list.
//!
//! Population: the distinct serials with a `certificate.issued` record (outcome
//! `succeeded`) in the quarter, or a `certificate.issue` intent in the quarter and
//! a `succeeded` record of the same serial after it. Size: `ceil(3% × population)`,
//! at least 1 (none for an empty population). Choice: serials (lower-case hex,
//! colons removed) ordered by `SHA-256(seed ‖ "\n" ‖ serial)`, the first ones taken.
//! Default seed: the hex SHA-256 of the 32 root-hash bytes of the last tree head
//! signed in the quarter: fixed once the quarter is over, unknown before, so
//! neither the CA nor the auditor can steer it.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use aws_lc_rs::digest::{Context, SHA256, digest};
use crds::{AuditRecord, AuditSegmentSpec};

use crate::Error;
use crate::merkle;

/// A calendar quarter (UTC), e.g. `2026Q4`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quarter {
    /// Year.
    pub year: i16,
    /// Quarter, 1 to 4.
    pub quarter: i8,
}

impl FromStr for Quarter {
    type Err = Error;
    fn from_str(s: &str) -> Result<Quarter, Error> {
        let bad = || {
            Error::Argument(format!(
                "{s:?} is not a quarter: give YEAR then Q and 1 to 4, e.g. 2026Q4"
            ))
        };
        let (y, q) = s.split_once(['Q', 'q']).ok_or_else(bad)?;
        let year: i16 = y.parse().map_err(|_| bad())?;
        let quarter: i8 = q.parse().map_err(|_| bad())?;
        if !(1..=4).contains(&quarter) || !(1970..=9998).contains(&year) {
            return Err(bad());
        }
        Ok(Quarter { year, quarter })
    }
}

impl fmt::Display for Quarter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}Q{}", self.year, self.quarter)
    }
}

impl Quarter {
    fn month_start(year: i16, month: i8) -> jiff::Timestamp {
        jiff::civil::date(year, month, 1)
            .to_zoned(jiff::tz::TimeZone::UTC)
            .map(|z| z.timestamp())
            .unwrap_or(jiff::Timestamp::MAX)
    }

    /// First instant of the quarter.
    pub fn start(&self) -> jiff::Timestamp {
        Quarter::month_start(self.year, 3 * (self.quarter - 1) + 1)
    }

    /// First instant after the quarter.
    pub fn end(&self) -> jiff::Timestamp {
        if self.quarter == 4 {
            Quarter::month_start(self.year + 1, 1)
        } else {
            Quarter::month_start(self.year, 3 * self.quarter + 1)
        }
    }

    /// Whether an RFC 3339 time falls in the quarter.
    pub fn contains(&self, time: &str) -> bool {
        time.parse::<jiff::Timestamp>()
            .is_ok_and(|t| t >= self.start() && t < self.end())
    }
}

fn normalize(serial: &str) -> String {
    serial
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase()
}

/// The serials issued in the quarter (sorted).
pub fn issued_in<'a>(
    records: impl IntoIterator<Item = &'a AuditRecord>,
    quarter: Quarter,
) -> Vec<String> {
    let records: Vec<&AuditRecord> = records.into_iter().collect();
    let mut out = BTreeSet::new();
    for (i, r) in records.iter().enumerate() {
        let Some(serial) = &r.serial else { continue };
        if !quarter.contains(&r.time) {
            continue;
        }
        let issued = r.event == "certificate.issued" && r.outcome == "succeeded";
        let intent_followed = r.event == "certificate.issue"
            && r.outcome == "intent"
            && records[i + 1..]
                .iter()
                .any(|n| n.serial.as_ref() == Some(serial) && n.outcome == "succeeded");
        if issued || intent_followed {
            out.insert(normalize(serial));
        }
    }
    out.into_iter().collect()
}

/// How many to sample from a population: 3% rounded up, at least one.
pub fn sample_size(population: usize) -> usize {
    if population == 0 {
        0
    } else {
        (population * 3).div_ceil(100).max(1)
    }
}

/// The default seed: hex SHA-256 of the root-hash bytes of the last segment
/// signed in the quarter.
pub fn default_seed(segments: &[AuditSegmentSpec], quarter: Quarter) -> Result<String, Error> {
    let last = segments
        .iter()
        .rev()
        .find(|s| quarter.contains(&s.signed_at))
        .ok_or_else(|| {
            Error::Argument(format!(
                "no tree head was signed in {quarter} in this trail: pass --seed, or use a trail that covers the quarter"
            ))
        })?;
    let root = merkle::from_hex(&last.root_hash)?;
    Ok(hex::encode(digest(&SHA256, &root)))
}

/// A sample.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    /// The quarter.
    pub quarter: Quarter,
    /// The seed used.
    pub seed: String,
    /// Number of certificates issued in the quarter.
    pub population: usize,
    /// The chosen serials, in choice order.
    pub serials: Vec<String>,
}

/// Draw the sample of `quarter` with `seed`.
pub fn sample<'a>(
    records: impl IntoIterator<Item = &'a AuditRecord>,
    quarter: Quarter,
    seed: &str,
) -> Sample {
    let population = issued_in(records, quarter);
    let mut keyed: Vec<([u8; 32], String)> = population
        .iter()
        .map(|s| {
            let mut ctx = Context::new(&SHA256);
            ctx.update(seed.as_bytes());
            ctx.update(b"\n");
            ctx.update(s.as_bytes());
            let mut k = [0u8; 32];
            k.copy_from_slice(ctx.finish().as_ref());
            (k, s.clone())
        })
        .collect();
    keyed.sort();
    let n = sample_size(population.len());
    Sample {
        quarter,
        seed: seed.to_owned(),
        population: population.len(),
        serials: keyed.into_iter().take(n).map(|(_, s)| s).collect(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn issued(serial: &str, time: &str) -> AuditRecord {
        AuditRecord {
            time: time.into(),
            event: "certificate.issued".into(),
            outcome: "succeeded".into(),
            serial: Some(serial.into()),
            ..AuditRecord::default()
        }
    }

    #[test]
    fn quarters_parse_and_bound() {
        let q: Quarter = "2026Q4".parse().unwrap();
        assert_eq!(q.start().to_string(), "2026-10-01T00:00:00Z");
        assert_eq!(q.end().to_string(), "2027-01-01T00:00:00Z");
        assert!(q.contains("2026-12-31T23:59:59.999999Z"));
        assert!(!q.contains("2027-01-01T00:00:00Z"));
        let q1: Quarter = "2026q1".parse().unwrap();
        assert_eq!(q1.end().to_string(), "2026-04-01T00:00:00Z");
        for bad in ["2026Q5", "2026", "Q4", "2026Q0", "twentyQ1"] {
            assert!(
                bad.parse::<Quarter>()
                    .unwrap_err()
                    .to_string()
                    .contains("e.g. 2026Q4")
            );
        }
    }

    #[test]
    fn at_least_three_percent_and_at_least_one() {
        assert_eq!(sample_size(0), 0);
        assert_eq!(sample_size(1), 1);
        assert_eq!(sample_size(33), 1);
        assert_eq!(sample_size(34), 2);
        assert_eq!(sample_size(100), 3);
        assert_eq!(sample_size(101), 4);
        assert_eq!(sample_size(1000), 30);
    }

    #[test]
    fn the_sample_is_reproducible_from_the_seed_and_only_from_the_quarter() {
        let mut records: Vec<AuditRecord> = (0..200)
            .map(|i| issued(&format!("{i:04X}"), "2026-11-01T00:00:00Z"))
            .collect();
        records.push(issued("beef", "2026-09-30T23:59:59Z"));
        records.push(AuditRecord {
            event: "certificate.issue".into(),
            outcome: "intent".into(),
            ..issued("cafe", "2026-12-31T23:59:59Z")
        });
        records.push(AuditRecord {
            event: "certificate.issue".into(),
            outcome: "intent".into(),
            ..issued("dead", "2026-12-01T00:00:00Z")
        });
        records.push(issued("cafe", "2027-01-01T00:00:01Z"));
        let q: Quarter = "2026Q4".parse().unwrap();
        let pop = issued_in(&records, q);
        assert_eq!(
            pop.len(),
            201,
            "200 issued, cafe (intent + issued later); not beef, not dead"
        );
        assert!(pop.contains(&"cafe".to_owned()) && !pop.contains(&"dead".to_owned()));
        let a = sample(&records, q, "seed-1");
        assert_eq!(a.population, 201);
        assert_eq!(a.serials.len(), 7);
        assert_eq!(a, sample(&records, q, "seed-1"));
        assert_ne!(a.serials, sample(&records, q, "seed-2").serials);
        // The order of the records does not matter.
        let mut rev = records.clone();
        rev[..200].reverse();
        let b = sample(&rev, q, "seed-1");
        assert_eq!(b.population, 201);
        assert_eq!(b.serials, a.serials);
    }
}
