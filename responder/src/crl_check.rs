//! Which CRLs the responder serves (issue 8, finding 4): only a CRL signed by
//! its CA, whose issuer is the CA's subject, whose scope is the one expected at
//! that place (a full CRL carries no issuingDistributionPoint, partition `n`'s
//! carries a critical one with partition `n`'s URL), and whose cRLNumber is not
//! lower than the last one served at that place (RFC 5280 §5.2.3: "monotonically
//! increasing"). A refused CRL is logged with the reason, counted in
//! `chop_responder_crl_refused_total{reason}`, and the previous good CRL keeps
//! being served.

use std::collections::HashMap;
use std::fmt;

use ca::crl::parse_crl;
use der::{Decode, Encode};
use x509_cert::Certificate;

/// What a CRL served at one place must cover.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every certificate of the CA: no issuingDistributionPoint.
    Full,
    /// One partition: a critical issuingDistributionPoint with this URL (any
    /// URL when the responder cannot tell which one the controller uses).
    Partition(Option<String>),
    /// Not known (directory mode): the scope is not checked.
    Any,
}

/// Why a CRL is not served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    /// Metric label: `unparsable`, `issuer`, `signature`, `scope`, `number`.
    pub reason: &'static str,
    /// For the log.
    pub detail: String,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.detail)
    }
}

fn refused(reason: &'static str, detail: impl Into<String>) -> Refused {
    Refused {
        reason,
        detail: detail.into(),
    }
}

/// Check `der` as a CRL of the CA `ca_der` for `scope`; its cRLNumber.
pub fn verify(der: &[u8], ca_der: &[u8], scope: &Scope) -> Result<u64, Refused> {
    let crl = parse_crl(der).map_err(|e| refused("unparsable", e.to_string()))?;
    let ca = Certificate::from_der(ca_der)
        .map_err(|e| refused("unparsable", format!("CA certificate: {e}")))?;
    let subject = ca
        .tbs_certificate
        .subject
        .to_der()
        .map_err(|e| refused("unparsable", format!("CA subject: {e}")))?;
    if crl.issuer != subject.as_slice() {
        return Err(refused(
            "issuer",
            "the CRL's issuer is not the CA's subject",
        ));
    }
    crl.verify_signature(&ca.tbs_certificate.subject_public_key_info)
        .map_err(|_| {
            refused(
                "signature",
                "the CRL's signature does not verify with the CA's key",
            )
        })?;
    match (scope, &crl.issuing_distribution_point) {
        (Scope::Any, _) | (Scope::Full, None) => {}
        (Scope::Full, Some((url, _))) => {
            return Err(refused(
                "scope",
                format!(
                    "a partition CRL (issuingDistributionPoint {url}) where the full CRL belongs"
                ),
            ));
        }
        (Scope::Partition(_), None) => {
            return Err(refused(
                "scope",
                "a full CRL (no issuingDistributionPoint) where a partition CRL belongs",
            ));
        }
        (Scope::Partition(want), Some((url, critical))) => {
            if !critical {
                return Err(refused("scope", "issuingDistributionPoint is not critical"));
            }
            if want.as_ref().is_some_and(|w| w != url) {
                return Err(refused(
                    "scope",
                    format!(
                        "issuingDistributionPoint {url} is not this partition's ({})",
                        want.as_deref().unwrap_or_default()
                    ),
                ));
            }
        }
    }
    crl.number
        .ok_or_else(|| refused("number", "no cRLNumber (or one longer than 8 octets)"))
}

/// The last cRLNumber served at each place (`<schedule>`, `<schedule>-<n>`, or
/// the directory mode's file name), kept for the life of the process, even
/// when the place stops being served (a schedule deleted and re-created may
/// not restart its numbers below what was served).
#[derive(Debug, Default, Clone)]
pub struct CrlGuard {
    last: HashMap<String, u64>,
}

impl CrlGuard {
    /// Check `der` for place `name` (see [`verify`]) and that its number is not
    /// lower than the last served there; on success, record it as served and
    /// return its number.
    pub fn admit(
        &mut self,
        name: &str,
        der: &[u8],
        ca_der: &[u8],
        scope: &Scope,
    ) -> Result<u64, Refused> {
        let number = verify(der, ca_der, scope)?;
        if let Some(last) = self.last.get(name)
            && number < *last
        {
            return Err(refused(
                "number",
                format!("cRLNumber {number} is lower than {last}, already served"),
            ));
        }
        self.last.insert(name.to_owned(), number);
        Ok(number)
    }

    /// The last number served at `name`.
    pub fn last(&self, name: &str) -> Option<u64> {
        self.last.get(name).copied()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::fixture::Fixture;

    #[test]
    fn only_the_cas_own_crls_in_order_and_scope() {
        let f = Fixture::new(0).unwrap();
        let other = Fixture::new(0).unwrap();
        let ca = &f.ca.der;
        let mut g = CrlGuard::default();
        let n5 = f.crl_numbered(5, None).unwrap();
        assert_eq!(g.admit("s", &n5, ca, &Scope::Full), Ok(5));
        // Another CA's key (and subject: same name, other key).
        let forged = other.crl_numbered(9, None).unwrap();
        assert_eq!(
            g.admit("s", &forged, ca, &Scope::Full).unwrap_err().reason,
            "signature"
        );
        // Lower number: refused; equal: the same CRL again, fine; higher: fine.
        let n4 = f.crl_numbered(4, None).unwrap();
        assert_eq!(
            g.admit("s", &n4, ca, &Scope::Full).unwrap_err().reason,
            "number"
        );
        assert_eq!(g.admit("s", &n5, ca, &Scope::Full), Ok(5));
        // Large, time-based numbers.
        let big = f.crl_numbered(1_764_700_000_000, None).unwrap();
        assert_eq!(g.admit("s", &big, ca, &Scope::Full), Ok(1_764_700_000_000));
        assert_eq!(g.last("s"), Some(1_764_700_000_000));
        // Each place has its own sequence.
        assert_eq!(g.admit("t", &n4, ca, &Scope::Full), Ok(4));
        // Scope.
        let url = "http://r.example/crl/root-full-1.crl";
        let part = f.crl_numbered(6, Some((1, url))).unwrap();
        assert_eq!(
            g.admit("u", &part, ca, &Scope::Full).unwrap_err().reason,
            "scope"
        );
        assert_eq!(
            g.admit("p", &n5, ca, &Scope::Partition(Some(url.into())))
                .unwrap_err()
                .reason,
            "scope"
        );
        assert_eq!(
            g.admit(
                "p",
                &part,
                ca,
                &Scope::Partition(Some("http://x/2.crl".into()))
            )
            .unwrap_err()
            .reason,
            "scope"
        );
        assert_eq!(
            g.admit("p", &part, ca, &Scope::Partition(Some(url.into()))),
            Ok(6)
        );
        assert_eq!(g.admit("q", &part, ca, &Scope::Any), Ok(6));
        assert_eq!(
            g.admit("q", b"junk", ca, &Scope::Any).unwrap_err().reason,
            "unparsable"
        );
    }
}
