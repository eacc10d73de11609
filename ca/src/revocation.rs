//! The revocation index: the one source of truth for certificate status.
//!
//! DESIGN §1 and CPS §7.3: "CRL builder and OCSP responder derive from the same
//! revocation index, so a CRL reason and an OCSP reason can never disagree." Both
//! [`crate::crl`] and [`crate::ocsp`] read a [`MemoryIndex`]; the CRL builder walks
//! its revoked records in serial order, the OCSP responder asks it through
//! [`StatusSource`]. Times are kept at one-second resolution (what both X.509 times
//! and OCSP GeneralizedTime carry, RFC 5280 §4.1.2.5.1/§4.1.2.5.2 and RFC 6960
//! §4.2.2.1 via DER), so the revocation time a relying party reads in the CRL is the
//! one it reads in an OCSP response, to the second.
//!
//! ## Lifetime of an entry (CPS §4.10.1, RFC 5280 §3.3, RFC 6960 §4.4.4)
//! CPS §4.10.1: revocation information in the CRL or OCSP "may only be removed after
//! the revoked certificate has expired". The index keeps every record until the
//! caller [`prune`](MemoryIndex::prune)s it. The CRL builder leaves an entry out once
//! the certificate's notAfter lies more than a retention period before the CRL's
//! thisUpdate ([`crate::crl::CrlConfig::expired_retention`], default 24 h, so with
//! CRLs issued at least daily per CPS §4.9.7 the entry appears on one scheduled CRL
//! issued after the certificate expired, as RFC 5280 §3.3 requires). OCSP keeps
//! answering `revoked` for an expired revoked certificate for as long as the index
//! holds it: RFC 6960 §4.4.4 (archive cutoff) lets responders keep revocation
//! information past expiry, and answering `good` for an expired revoked certificate
//! would be wrong.
//!
//! ## Memory
//! The index stores one compact 53-octet record per certificate (serial inline,
//! times as seconds) in a B-tree ordered numerically by serial, so 1,000,000 revoked
//! entries take about 55 MB and the CRL builder never has to sort.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};
use crate::serial::Serial;

/// A CRLReason code (RFC 5280 §5.3.1), shared by CRL entries and OCSP `RevokedInfo`.
///
/// ```text
/// CRLReason ::= ENUMERATED {
///      unspecified             (0),
///      keyCompromise           (1),
///      cACompromise            (2),
///      affiliationChanged      (3),
///      superseded              (4),
///      cessationOfOperation    (5),
///      certificateHold         (6),
///           -- value 7 is not used
///      removeFromCRL           (8),
///      privilegeWithdrawn      (9),
///      aACompromise           (10) }
/// ```
///
/// In the operator's YAML a reason is written by its ASN.1 name in camelCase
/// (`keyCompromise`, `certificateHold`, ...); see [`Reason::from_str`].
///
/// CPS §4.9.1 maps onto these codes as follows (the operator picks the code; the
/// mapping is documentation):
/// - subscriber-requested ([`Reason::SUBSCRIBER`]): private key compromised, or card
///   damaged/stolen → `keyCompromise`; certificate information changed materially →
///   `affiliationChanged`; certificate no longer needed → `cessationOfOperation`;
///   plus `unspecified` and `superseded` (renewal/re-key, §4.6).
/// - CA-initiated ([`Reason::CA`]): false content, not issued per the CPS, CPS or
///   legal violation, court order, guardianship → `privilegeWithdrawn`; subscriber key
///   misused or compromised → `keyCompromise`; CA key or system compromised →
///   `cACompromise`; death, CA system destroyed → `cessationOfOperation`; nationality,
///   name or ID-number change → `affiliationChanged`; content change or key change
///   requested → `superseded`.
/// - suspension (CPS §4.9.13–§4.9.17) → `certificateHold`, lifted by
///   [`MemoryIndex::resume`].
/// - `removeFromCRL` only exists in delta CRLs (RFC 5280 §5.3.1), which chop does not
///   issue; the index refuses it. `aACompromise` concerns attribute authorities.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Reason {
    /// unspecified (0). RFC 5280 §5.3.1: "the reason code CRL entry extension SHOULD
    /// be absent instead of using the unspecified (0) reasonCode value".
    Unspecified = 0,
    /// keyCompromise (1).
    KeyCompromise = 1,
    /// cACompromise (2).
    CaCompromise = 2,
    /// affiliationChanged (3).
    AffiliationChanged = 3,
    /// superseded (4).
    Superseded = 4,
    /// cessationOfOperation (5).
    CessationOfOperation = 5,
    /// certificateHold (6): a suspension (CPS §4.9.13), reversible.
    CertificateHold = 6,
    /// removeFromCRL (8): delta CRLs only.
    RemoveFromCrl = 8,
    /// privilegeWithdrawn (9).
    PrivilegeWithdrawn = 9,
    /// aACompromise (10).
    AaCompromise = 10,
}

impl Reason {
    /// Every reason, in code order.
    pub const ALL: [Reason; 10] = [
        Reason::Unspecified,
        Reason::KeyCompromise,
        Reason::CaCompromise,
        Reason::AffiliationChanged,
        Reason::Superseded,
        Reason::CessationOfOperation,
        Reason::CertificateHold,
        Reason::RemoveFromCrl,
        Reason::PrivilegeWithdrawn,
        Reason::AaCompromise,
    ];

    /// Reasons a subscriber may give when requesting revocation (CPS §4.9.1, first
    /// list; see the type documentation for the mapping).
    pub const SUBSCRIBER: [Reason; 5] = [
        Reason::Unspecified,
        Reason::KeyCompromise,
        Reason::AffiliationChanged,
        Reason::Superseded,
        Reason::CessationOfOperation,
    ];

    /// Reasons the CA may record when it revokes on its own initiative (CPS §4.9.1,
    /// second and third lists).
    pub const CA: [Reason; 7] = [
        Reason::Unspecified,
        Reason::KeyCompromise,
        Reason::CaCompromise,
        Reason::AffiliationChanged,
        Reason::Superseded,
        Reason::CessationOfOperation,
        Reason::PrivilegeWithdrawn,
    ];

    /// The ENUMERATED value.
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// The reason with ENUMERATED value `code` (7 and values above 10 are not
    /// reasons).
    pub fn from_code(code: u8) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.code() == code)
    }

    /// The ASN.1 name in camelCase, as written in YAML and printed by OpenSSL.
    pub const fn name(self) -> &'static str {
        match self {
            Reason::Unspecified => "unspecified",
            Reason::KeyCompromise => "keyCompromise",
            Reason::CaCompromise => "cACompromise",
            Reason::AffiliationChanged => "affiliationChanged",
            Reason::Superseded => "superseded",
            Reason::CessationOfOperation => "cessationOfOperation",
            Reason::CertificateHold => "certificateHold",
            Reason::RemoveFromCrl => "removeFromCRL",
            Reason::PrivilegeWithdrawn => "privilegeWithdrawn",
            Reason::AaCompromise => "aACompromise",
        }
    }

    /// Whether this is a suspension (`certificateHold`), which can be lifted.
    pub const fn is_hold(self) -> bool {
        matches!(self, Reason::CertificateHold)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Reason {
    type Err = Error;

    /// Parse the camelCase ASN.1 name (`keyCompromise`). Case-insensitive, so
    /// `cACompromise`, `caCompromise` and `CACompromise` are all accepted.
    fn from_str(s: &str) -> Result<Self> {
        Reason::ALL
            .into_iter()
            .find(|r| r.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                let names: Vec<&str> = Reason::ALL.iter().map(|r| r.name()).collect();
                Error::InvalidRevocation(format!(
                    "unknown revocation reason {s:?}; RFC 5280 §5.3.1 reasons are {}",
                    names.join(", ")
                ))
            })
    }
}

/// One revoked (or suspended) certificate, as the operator records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevokedEntry {
    /// The certificate's serial number.
    pub serial: Serial,
    /// When the CA revoked it (CRL revocationDate, OCSP revocationTime). Sub-second
    /// precision is dropped.
    pub revoked_at: SystemTime,
    /// Why ([`Reason::CertificateHold`] for a suspension).
    pub reason: Reason,
    /// When the key is known or suspected to have been compromised (RFC 5280
    /// §5.3.2 invalidityDate), if that differs from `revoked_at`.
    pub invalidity_date: Option<SystemTime>,
    /// The certificate's notAfter: the entry leaves the CRL after it (CPS §4.10.1).
    pub not_after: SystemTime,
    /// The CRL partition chosen at issuance and written in the certificate's CRL
    /// distribution point, if CRLs are partitioned.
    pub partition: Option<u32>,
}

/// A certificate's status as the OCSP responder reports it (RFC 6960 §2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertStatus {
    /// Issued by this CA and not revoked or suspended.
    Good,
    /// Revoked or suspended (`certificateHold`).
    Revoked {
        /// Revocation time, whole seconds (identical to the CRL's revocationDate).
        time: SystemTime,
        /// Reason (identical to the CRL entry's reasonCode).
        reason: Reason,
        /// invalidityDate, if recorded (also a CRL entry extension).
        invalidity_date: Option<SystemTime>,
    },
    /// Not issued by this CA as far as the index knows. CPS §4.9.10(4): a serial
    /// that was not issued is never answered "good".
    Unknown,
}

/// Where the OCSP responder gets a certificate's status from.
///
/// Implementations must answer [`CertStatus::Unknown`] for a serial they never saw
/// issued (CPS §4.9.10(4), RFC 6960 §2.2).
pub trait StatusSource {
    /// The status of the certificate with `serial`.
    fn status(&self, serial: &Serial) -> CertStatus;
}

/// Seconds since the Unix epoch, rounded down. The whole crate's revocation times
/// go through this, so the CRL and OCSP see the same instant.
pub(crate) fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => {
            let d = e.duration();
            let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            -secs - i64::from(d.subsec_nanos() > 0)
        }
    }
}

/// The instant `secs` seconds after the Unix epoch.
pub(crate) fn from_unix_secs(secs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

/// A serial number stored inline: length, then big-endian octets left-aligned and
/// zero-padded. Ordering by (length, octets) is numeric order for minimal encodings.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct SerialKey {
    len: u8,
    bytes: [u8; 20],
}

impl SerialKey {
    pub(crate) fn new(serial: &Serial) -> SerialKey {
        let src = serial.as_be_bytes();
        let mut bytes = [0u8; 20];
        // `Serial` guarantees at most 20 octets (RFC 5280 §4.1.2.2).
        let n = src.len().min(20);
        bytes[..n].copy_from_slice(&src[..n]);
        SerialKey {
            len: n as u8,
            bytes,
        }
    }

    /// Minimal big-endian octets.
    pub(crate) fn be_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    fn to_serial(self) -> Option<Serial> {
        Serial::from_be_bytes(self.be_bytes()).ok()
    }
}

impl fmt::Debug for SerialKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.be_bytes() {
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

const NO_INVALIDITY: i64 = i64::MIN;
const NO_PARTITION: u32 = u32::MAX;

/// What the index knows about one issued certificate (32 octets).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Record {
    pub(crate) not_after: i64,
    pub(crate) revoked_at: i64,
    invalidity: i64,
    partition: u32,
    pub(crate) reason: Option<Reason>,
}

impl Record {
    pub(crate) fn invalidity(&self) -> Option<i64> {
        (self.invalidity != NO_INVALIDITY).then_some(self.invalidity)
    }

    pub(crate) fn partition(&self) -> Option<u32> {
        (self.partition != NO_PARTITION).then_some(self.partition)
    }

    fn from_entry(e: &RevokedEntry) -> Result<Record> {
        if e.reason == Reason::RemoveFromCrl {
            return Err(Error::InvalidRevocation(format!(
                "serial {}: removeFromCRL is only used in delta CRLs (RFC 5280 §5.3.1); \
                 lift a suspension with resume instead",
                e.serial
            )));
        }
        let partition = match e.partition {
            Some(NO_PARTITION) => {
                return Err(Error::InvalidRevocation(format!(
                    "serial {}: partition {NO_PARTITION} is reserved",
                    e.serial
                )));
            }
            Some(p) => p,
            None => NO_PARTITION,
        };
        Ok(Record {
            not_after: unix_secs(e.not_after),
            revoked_at: unix_secs(e.revoked_at),
            invalidity: e.invalidity_date.map_or(NO_INVALIDITY, unix_secs),
            partition,
            reason: Some(e.reason),
        })
    }

    /// Merge `new` into `self` (same serial). The rule, independent of order:
    /// a revocation supersedes a hold (a suspended certificate can be revoked, a
    /// revoked one cannot be suspended); between two of the same kind the earlier
    /// revocation time stands (the first revocation is the revocation), ties broken
    /// by the higher reason code.
    fn merge(&mut self, new: Record) {
        self.not_after = self.not_after.max(new.not_after);
        if self.partition == NO_PARTITION {
            self.partition = new.partition;
        }
        let take_new = match (self.reason, new.reason) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(old), Some(n)) => match (old.is_hold(), n.is_hold()) {
                (true, false) => true,
                (false, true) => false,
                _ => {
                    new.revoked_at < self.revoked_at
                        || (new.revoked_at == self.revoked_at && n.code() > old.code())
                }
            },
        };
        if take_new {
            self.revoked_at = new.revoked_at;
            self.invalidity = new.invalidity;
            self.reason = new.reason;
        }
    }
}

/// An in-memory revocation index: every issued serial with its notAfter and
/// partition, and the revocation of those that are revoked or suspended.
///
/// Both views come from it: [`crate::crl::CrlIssuer::issue`] walks it in serial
/// order, [`crate::ocsp::OcspResponder::respond`] asks it through
/// [`StatusSource`]. Serials that were never [`issue`](Self::issue)d or
/// [`revoke`](Self::revoke)d are [`CertStatus::Unknown`].
#[derive(Clone, Default)]
pub struct MemoryIndex {
    records: BTreeMap<SerialKey, Record>,
    revoked: usize,
}

impl fmt::Debug for MemoryIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryIndex")
            .field("issued", &self.records.len())
            .field("revoked", &self.revoked)
            .finish()
    }
}

/// What the index holds for one serial ([`MemoryIndex::get`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    /// The certificate's notAfter (whole seconds).
    pub not_after: SystemTime,
    /// Its CRL partition, if any.
    pub partition: Option<u32>,
    /// Its revocation, if revoked or suspended.
    pub revocation: Option<RevokedEntry>,
}

impl MemoryIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Build an index from revoked entries in any order, with duplicates. For each
    /// serial a revocation supersedes a hold and otherwise the earliest revocation
    /// stands (see [`MemoryIndex::revoke`]). Sorting happens once, in bulk.
    pub fn from_entries<I>(entries: I) -> Result<Self>
    where
        I: IntoIterator<Item = RevokedEntry>,
    {
        let iter = entries.into_iter();
        let mut v: Vec<(SerialKey, Record)> = Vec::with_capacity(iter.size_hint().0);
        for e in iter {
            v.push((SerialKey::new(&e.serial), Record::from_entry(&e)?));
        }
        v.sort_unstable_by_key(|e| e.0);
        // Merge runs of the same serial in place.
        let mut out = 0usize;
        for i in 0..v.len() {
            if out > 0 && v[out - 1].0 == v[i].0 {
                let rec = v[i].1;
                v[out - 1].1.merge(rec);
            } else {
                v.swap(out, i);
                out += 1;
            }
        }
        v.truncate(out);
        let revoked = v.iter().filter(|(_, r)| r.reason.is_some()).count();
        // From a sorted Vec the B-tree is bulk-built with full nodes.
        let records: BTreeMap<SerialKey, Record> = v.into_iter().collect();
        Ok(MemoryIndex { records, revoked })
    }

    /// Record that a certificate with `serial` was issued, valid until `not_after`,
    /// in CRL `partition`. Issuing a serial the index already holds updates its
    /// notAfter and partition and keeps its revocation.
    pub fn issue(
        &mut self,
        serial: &Serial,
        not_after: SystemTime,
        partition: Option<u32>,
    ) -> Result<()> {
        if partition == Some(NO_PARTITION) {
            return Err(Error::InvalidRevocation(format!(
                "serial {serial}: partition {NO_PARTITION} is reserved"
            )));
        }
        let not_after = unix_secs(not_after);
        let partition = partition.unwrap_or(NO_PARTITION);
        self.records
            .entry(SerialKey::new(serial))
            .and_modify(|r| {
                r.not_after = not_after;
                r.partition = partition;
            })
            .or_insert(Record {
                not_after,
                revoked_at: 0,
                invalidity: NO_INVALIDITY,
                partition,
                reason: None,
            });
        Ok(())
    }

    /// Revoke (or, with [`Reason::CertificateHold`], suspend) a certificate. A
    /// serial the index did not know is recorded as issued too (the entry carries
    /// its notAfter and partition).
    ///
    /// Returns whether the index changed. A revocation supersedes a hold; a hold
    /// does not replace a revocation; a second revocation keeps the earlier time.
    /// `removeFromCRL` is refused (RFC 5280 §5.3.1: delta CRLs only; use
    /// [`MemoryIndex::resume`]).
    pub fn revoke(&mut self, entry: &RevokedEntry) -> Result<bool> {
        let new = Record::from_entry(entry)?;
        let key = SerialKey::new(&entry.serial);
        match self.records.get_mut(&key) {
            Some(rec) => {
                let before = *rec;
                let was_revoked = rec.reason.is_some();
                rec.merge(new);
                if !was_revoked {
                    self.revoked += 1;
                }
                Ok(*rec != before)
            }
            None => {
                self.records.insert(key, new);
                self.revoked += 1;
                Ok(true)
            }
        }
    }

    /// Lift a suspension (CPS §4.9.17): a certificate on hold becomes good again and
    /// leaves the next CRL. Returns `Ok(false)` if the certificate was not on hold
    /// (unknown or good); revoked certificates cannot be resumed.
    pub fn resume(&mut self, serial: &Serial) -> Result<bool> {
        match self.records.get_mut(&SerialKey::new(serial)) {
            Some(rec) => match rec.reason {
                Some(Reason::CertificateHold) => {
                    rec.reason = None;
                    rec.revoked_at = 0;
                    rec.invalidity = NO_INVALIDITY;
                    self.revoked -= 1;
                    Ok(true)
                }
                Some(other) => Err(Error::InvalidRevocation(format!(
                    "serial {serial} is revoked ({other}), not on hold; revocation is final"
                ))),
                None => Ok(false),
            },
            None => Ok(false),
        }
    }

    /// Forget certificates whose notAfter is before `expired_before`, revoked or
    /// not (CPS §4.10.1: only after expiry). Afterwards OCSP answers `unknown` for
    /// them. Returns how many records were removed.
    pub fn prune(&mut self, expired_before: SystemTime) -> usize {
        let cutoff = unix_secs(expired_before);
        let before = self.records.len();
        let mut revoked_removed = 0;
        self.records.retain(|_, r| {
            let keep = r.not_after >= cutoff;
            if !keep && r.reason.is_some() {
                revoked_removed += 1;
            }
            keep
        });
        self.revoked -= revoked_removed;
        before - self.records.len()
    }

    /// Number of certificates the index knows.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether the index knows no certificate.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Number of revoked or suspended certificates.
    pub fn revoked_len(&self) -> usize {
        self.revoked
    }

    /// What the index holds for `serial`.
    pub fn get(&self, serial: &Serial) -> Option<IndexEntry> {
        let key = SerialKey::new(serial);
        self.records.get(&key).map(|r| IndexEntry {
            not_after: from_unix_secs(r.not_after),
            partition: r.partition(),
            revocation: to_entry(key, r),
        })
    }

    /// Revoked and suspended entries in numeric serial order.
    pub fn revoked(&self) -> impl Iterator<Item = RevokedEntry> + '_ {
        self.records.iter().filter_map(|(k, r)| to_entry(*k, r))
    }

    /// Revoked records in numeric serial order (for the CRL builder).
    pub(crate) fn revoked_records(&self) -> impl Iterator<Item = (&SerialKey, &Record)> + '_ {
        self.records.iter().filter(|(_, r)| r.reason.is_some())
    }
}

fn to_entry(key: SerialKey, r: &Record) -> Option<RevokedEntry> {
    let reason = r.reason?;
    Some(RevokedEntry {
        serial: key.to_serial()?,
        revoked_at: from_unix_secs(r.revoked_at),
        reason,
        invalidity_date: r.invalidity().map(from_unix_secs),
        not_after: from_unix_secs(r.not_after),
        partition: r.partition(),
    })
}

impl StatusSource for MemoryIndex {
    fn status(&self, serial: &Serial) -> CertStatus {
        match self.records.get(&SerialKey::new(serial)) {
            None => CertStatus::Unknown,
            Some(r) => match r.reason {
                None => CertStatus::Good,
                Some(reason) => CertStatus::Revoked {
                    time: from_unix_secs(r.revoked_at),
                    reason,
                    invalidity_date: r.invalidity().map(from_unix_secs),
                },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn entry(hex: &str, at: u64, reason: Reason) -> RevokedEntry {
        RevokedEntry {
            serial: Serial::from_hex(hex).unwrap(),
            revoked_at: t(at),
            reason,
            invalidity_date: None,
            not_after: t(2_000_000_000),
            partition: None,
        }
    }

    #[test]
    fn reasons_parse_from_camel_case_and_codes() {
        for r in Reason::ALL {
            assert_eq!(r.name().parse::<Reason>().unwrap(), r);
            assert_eq!(Reason::from_code(r.code()), Some(r));
        }
        assert_eq!(
            "caCompromise".parse::<Reason>().unwrap(),
            Reason::CaCompromise
        );
        assert_eq!(Reason::from_code(7), None);
        let err = "stolen".parse::<Reason>().unwrap_err();
        assert!(err.to_string().contains("keyCompromise"), "{err}");
        assert!(Reason::SUBSCRIBER.iter().all(|r| Reason::CA.contains(r)));
        assert!(!Reason::SUBSCRIBER.contains(&Reason::CaCompromise));
    }

    #[test]
    fn serial_keys_order_numerically() {
        let small = SerialKey::new(&Serial::from_hex("02").unwrap());
        let big = SerialKey::new(&Serial::from_hex("0100").unwrap());
        assert!(small < big);
        assert_eq!(big.be_bytes(), &[1, 0]);
    }

    #[test]
    fn revocation_supersedes_hold_in_any_order() {
        let hold = entry("0A", 100, Reason::CertificateHold);
        let revoke = entry("0A", 200, Reason::KeyCompromise);
        for input in [
            vec![hold.clone(), revoke.clone()],
            vec![revoke.clone(), hold.clone()],
        ] {
            let idx = MemoryIndex::from_entries(input).unwrap();
            assert_eq!(idx.revoked_len(), 1);
            let got: Vec<_> = idx.revoked().collect();
            assert_eq!(got, vec![revoke.clone()]);
        }
        let mut idx = MemoryIndex::new();
        assert!(idx.revoke(&hold).unwrap());
        assert!(idx.revoke(&revoke).unwrap());
        assert!(!idx.revoke(&hold).unwrap());
        assert_eq!(idx.revoked().next().unwrap().reason, Reason::KeyCompromise);
        assert!(idx.resume(&revoke.serial).is_err());
    }

    #[test]
    fn earliest_revocation_stands() {
        let a = entry("0B", 300, Reason::Superseded);
        let b = entry("0B", 100, Reason::KeyCompromise);
        let idx = MemoryIndex::from_entries(vec![a.clone(), b.clone()]).unwrap();
        assert_eq!(idx.revoked().next().unwrap(), b);
        let idx = MemoryIndex::from_entries(vec![b.clone(), a]).unwrap();
        assert_eq!(idx.revoked().next().unwrap(), b);
    }

    #[test]
    fn status_good_unknown_revoked_and_resume() {
        let mut idx = MemoryIndex::new();
        let s = Serial::from_hex("1234").unwrap();
        assert_eq!(idx.status(&s), CertStatus::Unknown);
        idx.issue(&s, t(2_000_000_000), Some(3)).unwrap();
        assert_eq!(idx.status(&s), CertStatus::Good);
        let mut hold = entry("1234", 1_700_000_000, Reason::CertificateHold);
        hold.revoked_at += Duration::from_millis(700);
        idx.revoke(&hold).unwrap();
        assert_eq!(
            idx.status(&s),
            CertStatus::Revoked {
                time: t(1_700_000_000),
                reason: Reason::CertificateHold,
                invalidity_date: None
            }
        );
        assert_eq!(idx.get(&s).unwrap().partition, Some(3));
        assert!(idx.resume(&s).unwrap());
        assert_eq!(idx.status(&s), CertStatus::Good);
        assert_eq!(idx.revoked_len(), 0);
        assert!(!idx.resume(&s).unwrap());
    }

    #[test]
    fn remove_from_crl_is_refused_and_prune_only_drops_expired() {
        let mut idx = MemoryIndex::new();
        assert!(idx.revoke(&entry("01", 1, Reason::RemoveFromCrl)).is_err());
        let mut old = entry("02", 1, Reason::KeyCompromise);
        old.not_after = t(1000);
        idx.revoke(&old).unwrap();
        idx.revoke(&entry("03", 1, Reason::KeyCompromise)).unwrap();
        assert_eq!(idx.prune(t(999)), 0);
        assert_eq!(idx.prune(t(1001)), 1);
        assert_eq!(idx.revoked_len(), 1);
        assert_eq!(idx.status(&old.serial), CertStatus::Unknown);
    }

    #[test]
    fn unix_seconds_round_down() {
        assert_eq!(unix_secs(UNIX_EPOCH - Duration::from_millis(1500)), -2);
        assert_eq!(unix_secs(UNIX_EPOCH + Duration::from_millis(1500)), 1);
        assert_eq!(from_unix_secs(-2), UNIX_EPOCH - Duration::from_secs(2));
    }
}
