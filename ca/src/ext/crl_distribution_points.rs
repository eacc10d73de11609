//! cRLDistributionPoints (RFC 5280 §4.2.1.13).

use der::Decode;
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::CrlDistributionPoints;
use x509_cert::ext::pkix::crl::dp::DistributionPoint;
use x509_cert::ext::pkix::name::{DistributionPointName, GeneralName};

use super::{checked_uri, extension, oid};
use crate::error::{Error, Result};

/// One DistributionPoint whose fullName lists `urls` (all locations of the same
/// CRL: the CA's full CRL, or the partition the certificate belongs to, e.g.
/// `http://…/crl/3.crl`). No reasons, no cRLIssuer (RFC 5280 §4.2.1.13: "a
/// DistributionPoint MUST NOT consist of only the reasons field"; the CA issues
/// its own CRLs). Non-critical: "The extension SHOULD be non-critical".
pub fn build(urls: &[String]) -> Result<Extension> {
    if urls.is_empty() {
        return Err(Error::IssuerConfig("no CRL distribution point URL".into()));
    }
    let names = urls
        .iter()
        .map(|u| Ok(GeneralName::UniformResourceIdentifier(checked_uri(u)?)))
        .collect::<Result<Vec<_>>>()?;
    let value = CrlDistributionPoints(vec![DistributionPoint {
        distribution_point: Some(DistributionPointName::FullName(names)),
        reasons: None,
        crl_issuer: None,
    }]);
    extension(oid::ID_CE_CRL_DISTRIBUTION_POINTS, false, &value)
}

/// The URIs in the extension (fullName URIs of every distribution point).
pub fn parse_urls(ext: &Extension) -> Result<Vec<String>> {
    let dps = CrlDistributionPoints::from_der(ext.extn_value.as_bytes())?;
    let mut out = Vec::new();
    for dp in dps.0 {
        if let Some(DistributionPointName::FullName(names)) = dp.distribution_point {
            for n in names {
                if let GeneralName::UniformResourceIdentifier(u) = n {
                    out.push(u.to_string());
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let urls = vec!["http://ca.example/crl/3.crl".to_string()];
        let ext = build(&urls).unwrap();
        assert!(!ext.critical);
        assert_eq!(parse_urls(&ext).unwrap(), urls);
        assert!(build(&["https://x/crl".into()]).is_err());
        assert!(build(&["http://x/a b".into()]).is_err());
        assert!(build(&[]).is_err());
    }
}
