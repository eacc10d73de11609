//! keyUsage (RFC 5280 §4.2.1.3).

use der::Decode;
use der::flagset::FlagSet;
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::{KeyUsage, KeyUsages};

use super::{extension, oid};
use crate::error::Result;

/// keyUsage with `usages`. RFC 5280 §4.2.1.3: "When present, conforming CAs SHOULD
/// mark this extension as critical"; chop passes `critical = true` from every
/// default profile (CPS §6.1.7 restricts key use, which only binds relying parties
/// if critical).
pub fn build(usages: FlagSet<KeyUsages>, critical: bool) -> Result<Extension> {
    extension(oid::ID_CE_KEY_USAGE, critical, &KeyUsage(usages))
}

/// Decode the extension value.
pub fn parse(ext: &Extension) -> Result<FlagSet<KeyUsages>> {
    Ok(KeyUsage::from_der(ext.extn_value.as_bytes())?.0)
}

/// Human-readable names of the bits in `usages` (OpenSSL's spelling).
pub fn names(usages: FlagSet<KeyUsages>) -> Vec<&'static str> {
    usages
        .into_iter()
        .map(|u| match u {
            KeyUsages::DigitalSignature => "digitalSignature",
            KeyUsages::NonRepudiation => "nonRepudiation",
            KeyUsages::KeyEncipherment => "keyEncipherment",
            KeyUsages::DataEncipherment => "dataEncipherment",
            KeyUsages::KeyAgreement => "keyAgreement",
            KeyUsages::KeyCertSign => "keyCertSign",
            KeyUsages::CRLSign => "cRLSign",
            KeyUsages::EncipherOnly => "encipherOnly",
            KeyUsages::DecipherOnly => "decipherOnly",
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_key_usage_is_minimal_der() {
        let ext = build(KeyUsages::KeyCertSign | KeyUsages::CRLSign, true).unwrap();
        // BIT STRING, 1 unused bit, bits 5 and 6 set.
        assert_eq!(ext.extn_value.as_bytes(), [0x03, 0x02, 0x01, 0x06]);
        assert!(ext.critical);
        assert_eq!(
            parse(&ext).unwrap(),
            KeyUsages::KeyCertSign | KeyUsages::CRLSign
        );
        let ext = build(
            KeyUsages::DigitalSignature | KeyUsages::NonRepudiation,
            true,
        )
        .unwrap();
        assert_eq!(ext.extn_value.as_bytes(), [0x03, 0x02, 0x06, 0xc0]);
        assert_eq!(
            names(parse(&ext).unwrap()),
            ["digitalSignature", "nonRepudiation"]
        );
    }
}
