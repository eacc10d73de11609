//! certificatePolicies (RFC 5280 §4.2.1.4).

use const_oid::ObjectIdentifier;
use der::Decode;
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::CertificatePolicies;
use x509_cert::ext::pkix::certpolicy::PolicyInformation;

use super::{extension, oid};
use crate::error::{Error, Result};

/// certificatePolicies with `policies` and **no policy qualifiers** (CPS §7.1.8:
/// "憑證管理中心簽發之憑證不含政策限定元"). Non-critical: RFC 5280 §4.2.1.4 allows
/// either; CPS §7.1.9 defers to the GPKI certificate profile, whose end-entity
/// and CA profiles mark certificatePolicies non-critical, which also keeps relying
/// parties that do not process policies working.
pub fn build(policies: &[ObjectIdentifier]) -> Result<Extension> {
    if policies.is_empty() {
        return Err(Error::IssuerConfig(
            "at least one certificate policy OID is required".into(),
        ));
    }
    let mut seen = Vec::new();
    for p in policies {
        if seen.contains(p) {
            return Err(Error::IssuerConfig(format!(
                "policy {p} is listed twice (RFC 5280 §4.2.1.4: a policy OID MUST NOT appear more than once)"
            )));
        }
        seen.push(*p);
    }
    let value = CertificatePolicies(
        policies
            .iter()
            .map(|p| PolicyInformation {
                policy_identifier: *p,
                policy_qualifiers: None,
            })
            .collect(),
    );
    extension(oid::ID_CE_CERTIFICATE_POLICIES, false, &value)
}

/// Decode the extension value.
pub fn parse(ext: &Extension) -> Result<Vec<PolicyInformation>> {
    Ok(CertificatePolicies::from_der(ext.extn_value.as_bytes())?.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::DEFAULT_POLICY_OID;

    #[test]
    fn no_qualifiers() {
        let ext = build(&[DEFAULT_POLICY_OID]).unwrap();
        let p = parse(&ext).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].policy_identifier, DEFAULT_POLICY_OID);
        assert!(p[0].policy_qualifiers.is_none());
        assert!(build(&[]).is_err());
        assert!(build(&[DEFAULT_POLICY_OID, DEFAULT_POLICY_OID]).is_err());
    }
}
