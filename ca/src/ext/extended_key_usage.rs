//! extendedKeyUsage (RFC 5280 §4.2.1.12).

use const_oid::ObjectIdentifier;
use der::Decode;
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::ExtendedKeyUsage;

use super::{extension, oid};
use crate::error::Result;

/// extendedKeyUsage with `purposes`. Non-critical: RFC 5280 §4.2.1.12 "This
/// extension MAY, at the option of the certificate issuer, be either critical or
/// non-critical"; chop's only EKU user is the OCSP responder certificate, and
/// RFC 6960 §4.2.2.2 requires id-kp-OCSPSigning to be present, not critical.
/// anyExtendedKeyUsage is never written.
pub fn build(purposes: &[ObjectIdentifier]) -> Result<Extension> {
    extension(
        oid::ID_CE_EXT_KEY_USAGE,
        false,
        &ExtendedKeyUsage(purposes.to_vec()),
    )
}

/// Decode the extension value.
pub fn parse(ext: &Extension) -> Result<Vec<ObjectIdentifier>> {
    Ok(ExtendedKeyUsage::from_der(ext.extn_value.as_bytes())?.0)
}
