//! authorityInfoAccess (RFC 5280 §4.2.2.1).

use der::Decode;
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{AccessDescription, AuthorityInfoAccessSyntax};

use super::{checked_uri, extension, oid};
use crate::error::{Error, Result};

/// authorityInfoAccess with id-ad-ocsp locations (`ocsp`) then id-ad-caIssuers
/// locations (`ca_issuers`). Non-critical: RFC 5280 §4.2.2.1 "Conforming CAs MUST
/// mark this extension as non-critical." CPS §7.3 item 1: the OCSP service is
/// named in this extension.
pub fn build(ocsp: &[String], ca_issuers: &[String]) -> Result<Extension> {
    if ocsp.is_empty() && ca_issuers.is_empty() {
        return Err(Error::IssuerConfig(
            "authorityInfoAccess needs at least one URL".into(),
        ));
    }
    let mut descriptions = Vec::new();
    for (method, urls) in [(oid::ID_AD_OCSP, ocsp), (oid::ID_AD_CA_ISSUERS, ca_issuers)] {
        for u in urls {
            descriptions.push(AccessDescription {
                access_method: method,
                access_location: GeneralName::UniformResourceIdentifier(checked_uri(u)?),
            });
        }
    }
    extension(
        oid::ID_PE_AUTHORITY_INFO_ACCESS,
        false,
        &AuthorityInfoAccessSyntax(descriptions),
    )
}

/// The (OCSP URLs, caIssuers URLs) in the extension; other methods are ignored.
pub fn parse_urls(ext: &Extension) -> Result<(Vec<String>, Vec<String>)> {
    let aia = AuthorityInfoAccessSyntax::from_der(ext.extn_value.as_bytes())?;
    let (mut ocsp, mut issuers) = (Vec::new(), Vec::new());
    for d in aia.0 {
        if let GeneralName::UniformResourceIdentifier(u) = d.access_location {
            if d.access_method == oid::ID_AD_OCSP {
                ocsp.push(u.to_string());
            } else if d.access_method == oid::ID_AD_CA_ISSUERS {
                issuers.push(u.to_string());
            }
        }
    }
    Ok((ocsp, issuers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let o = vec!["http://ocsp.example".to_string()];
        let i = vec!["http://ca.example/ca.crt".to_string()];
        let ext = build(&o, &i).unwrap();
        assert!(!ext.critical);
        assert_eq!(parse_urls(&ext).unwrap(), (o, i));
        assert!(build(&[], &[]).is_err());
    }
}
