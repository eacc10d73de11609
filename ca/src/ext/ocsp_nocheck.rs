//! id-pkix-ocsp-nocheck (RFC 6960 §4.2.2.2.1).

use der::asn1::Null;
use x509_cert::ext::Extension;

use super::{extension, oid};
use crate::error::Result;

/// id-pkix-ocsp-nocheck: "The value of the extension SHALL be NULL" (RFC 6960
/// §4.2.2.2.1). Non-critical ("CAs ... SHOULD ... as a non-critical extension"
/// is RFC 2560's wording; RFC 6960 keeps it and OpenSSL expects it). Required in the
/// delegated responder certificate by CPS §4.9.9 item 4.
pub fn build() -> Result<Extension> {
    extension(oid::ID_PKIX_OCSP_NOCHECK, false, &Null)
}

/// Whether the extension value is the DER NULL.
pub fn is_valid(ext: &Extension) -> bool {
    ext.extn_value.as_bytes() == [0x05, 0x00]
}
