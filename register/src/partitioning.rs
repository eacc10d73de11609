//! How a CA's certificates are spread over partition CRLs: a CRLSchedule with
//! `partitions: P` puts the certificate with serial `s` on partition `s mod P`,
//! published at that partition's URL (the controller writes it into the
//! certificate's CRL distribution point; the responder serves it there).

use ca::serial::Serial;
use crds::CRLSchedule;

/// How a CA's certificates are spread over partition CRLs (see the module doc).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partitioning {
    /// Number of partitions (> 0).
    pub count: u32,
    /// `partitionURLTemplate`, if set.
    pub template: Option<String>,
}

impl Partitioning {
    /// The partitioning of schedule `s`, if it has partitions.
    pub fn of(s: &CRLSchedule) -> Option<Self> {
        let count = u32::try_from(s.spec.partitions).ok().filter(|c| *c > 0)?;
        Some(Partitioning {
            count,
            template: s.spec.partition_url_template.clone(),
        })
    }

    /// The partition of `serial`: its value modulo the count (pure, so a
    /// re-sign of a reserved serial picks the same one).
    pub fn index(&self, serial: &Serial) -> u32 {
        let m = u64::from(self.count);
        let rem = serial
            .as_be_bytes()
            .iter()
            .fold(0u64, |acc, b| (acc * 256 + u64::from(*b)) % m);
        u32::try_from(rem).unwrap_or(0)
    }

    /// Partition `n`'s URL: the template with `{n}` replaced, else the CA's
    /// first CRL URL with `-<n>` inserted before the extension of its last path
    /// segment (`http://h/crl/moica.crl` → `http://h/crl/moica-<n>.crl`;
    /// without an extension `-<n>` is appended). None without a template when
    /// the CA has no CRL URL or its URL has no file name (`http://h/`).
    pub fn url(&self, ca_crl_urls: &[String], n: u32) -> Option<String> {
        if let Some(t) = &self.template {
            return Some(t.replace("{n}", &n.to_string()));
        }
        let base = ca_crl_urls.first()?;
        let authority = base.find("://").map_or(0, |i| i + 3);
        base[authority..].find('/')?;
        let segment = base.rfind('/').map_or(0, |i| i + 1);
        if segment >= base.len() {
            return None;
        }
        Some(match base[segment..].rfind('.') {
            Some(dot) if dot > 0 => {
                let at = segment + dot;
                format!("{}-{n}{}", &base[..at], &base[at..])
            }
            _ => format!("{base}-{n}"),
        })
    }

    /// The partition and CRL distribution point of the certificate with
    /// `serial`, if a URL exists.
    pub fn assign(&self, serial: &Serial, ca_crl_urls: &[String]) -> Option<(u32, String)> {
        let n = self.index(serial);
        self.url(ca_crl_urls, n).map(|u| (n, u))
    }
}
