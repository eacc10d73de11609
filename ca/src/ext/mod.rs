//! The X.509 v3 extensions chop writes, one file per ASN.1 object (RFC 5280 §4.2).
//!
//! Each submodule builds its extension as an [`Extension`] (OID, criticality, DER
//! value) with the criticality RFC 5280 and the CPS prescribe, and reads it back
//! for the lint. Criticality decisions are documented at each builder.

pub mod authority_info_access;
pub mod basic_constraints;
pub mod certificate_policies;
pub mod crl_distribution_points;
pub mod extended_key_usage;
pub mod key_identifier;
pub mod key_usage;
pub mod ocsp_nocheck;
pub mod subject_alt_name;

use const_oid::ObjectIdentifier;
use der::Encode;
use der::asn1::{Ia5String, OctetString};
use x509_cert::ext::Extension;

use crate::error::{Error, Result};

/// Extension OIDs chop writes or refuses.
pub mod oid {
    use const_oid::ObjectIdentifier;
    pub use const_oid::db::rfc5280::{
        ID_CE_AUTHORITY_KEY_IDENTIFIER, ID_CE_BASIC_CONSTRAINTS, ID_CE_CERTIFICATE_POLICIES,
        ID_CE_CRL_DISTRIBUTION_POINTS, ID_CE_EXT_KEY_USAGE, ID_CE_INHIBIT_ANY_POLICY,
        ID_CE_KEY_USAGE, ID_CE_NAME_CONSTRAINTS, ID_CE_POLICY_CONSTRAINTS, ID_CE_POLICY_MAPPINGS,
        ID_CE_SUBJECT_ALT_NAME, ID_CE_SUBJECT_KEY_IDENTIFIER, ID_PE_AUTHORITY_INFO_ACCESS,
    };
    /// id-pkix-ocsp-nocheck (RFC 6960 §4.2.2.2.1).
    pub const ID_PKIX_OCSP_NOCHECK: ObjectIdentifier =
        ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.5");
    /// id-ad-ocsp (RFC 5280 §4.2.2.1).
    pub const ID_AD_OCSP: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1");
    /// id-ad-caIssuers (RFC 5280 §4.2.2.1).
    pub const ID_AD_CA_ISSUERS: ObjectIdentifier =
        ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.2");
}

/// Wrap the DER of `value` as an extension.
pub fn extension<T: Encode>(id: ObjectIdentifier, critical: bool, value: &T) -> Result<Extension> {
    Ok(Extension {
        extn_id: id,
        critical,
        extn_value: OctetString::new(value.to_der()?)?,
    })
}

/// A URI for a CRL distribution point or authorityInfoAccess location, checked:
/// ASCII (IA5String, RFC 5280 §4.2.1.6), no white space, and `http://` or `ldap://`
/// (RFC 5280 §4.2.1.13 and §4.2.2.1 name HTTP and LDAP; HTTPS is not used because
/// validating the TLS server would need the very revocation data being fetched).
pub fn checked_uri(uri: &str) -> Result<Ia5String> {
    let lower = uri.to_ascii_lowercase();
    let ok_scheme = lower.starts_with("http://") || lower.starts_with("ldap://");
    if !ok_scheme
        || uri.len() <= 7
        || !uri.is_ascii()
        || uri
            .chars()
            .any(|c| c.is_ascii_whitespace() || c.is_ascii_control())
    {
        return Err(Error::IssuerConfig(format!(
            "{uri:?} is not an http:// or ldap:// URI in ASCII without spaces"
        )));
    }
    Ok(Ia5String::new(uri)?)
}

/// The extension with `id` in `extensions`, if exactly one is present.
pub fn find<'a>(extensions: &'a [Extension], id: &ObjectIdentifier) -> Option<&'a Extension> {
    let mut it = extensions.iter().filter(|e| e.extn_id == *id);
    match (it.next(), it.next()) {
        (Some(e), None) => Some(e),
        _ => None,
    }
}
