//! basicConstraints (RFC 5280 §4.2.1.9).

use der::Decode;
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::BasicConstraints;

use super::{extension, oid};
use crate::error::Result;

/// basicConstraints, always critical. RFC 5280 §4.2.1.9: CAs "MUST include this
/// extension in all CA certificates that contain public keys used to validate
/// digital signatures on certificates and MUST mark the extension as critical";
/// it "MAY appear as a critical or non-critical extension in end entity
/// certificates": chop includes it, critical with cA FALSE, in every certificate
/// (issue 2), so no end-entity certificate can be mistaken for a CA.
/// pathLenConstraint only with cA TRUE ("CAs MUST NOT include the
/// pathLenConstraint field unless the cA boolean is asserted").
pub fn build(ca: bool, path_len: Option<u8>) -> Result<Extension> {
    let value = BasicConstraints {
        ca,
        path_len_constraint: if ca { path_len } else { None },
    };
    extension(oid::ID_CE_BASIC_CONSTRAINTS, true, &value)
}

/// Decode the extension value.
pub fn parse(ext: &Extension) -> Result<BasicConstraints> {
    Ok(BasicConstraints::from_der(ext.extn_value.as_bytes())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings() {
        // End entity: cA DEFAULT FALSE is omitted in DER, leaving an empty SEQUENCE.
        assert_eq!(
            build(false, Some(3)).unwrap().extn_value.as_bytes(),
            [0x30, 0x00]
        );
        let ca = build(true, Some(0)).unwrap();
        assert_eq!(
            ca.extn_value.as_bytes(),
            [0x30, 0x06, 0x01, 0x01, 0xff, 0x02, 0x01, 0x00]
        );
        assert!(parse(&ca).unwrap().ca);
    }
}
