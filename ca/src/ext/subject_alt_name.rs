//! subjectAltName with an rfc822Name (RFC 5280 §4.2.1.6).

use der::Decode;
use der::asn1::Ia5String;
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::pkix::name::GeneralName;

use super::{extension, oid};
use crate::error::{Error, Result};

/// Check an e-mail address for an rfc822Name: ASCII (IA5String; RFC 5280 §4.2.1.6
/// "rfc822Name ... MUST be a Mailbox as defined in Section 4.1.2 of RFC 2821"; SMTPUTF8
/// addresses would need RFC 8398's otherName, which chop does not write), exactly
/// one `@`, non-empty local part and domain, no white space or angle brackets.
pub fn check_email(address: &str) -> Result<()> {
    let bad = |why: &str| Err(Error::InvalidSubject(format!("e-mail {address:?}: {why}")));
    if !address.is_ascii() {
        return bad("must be ASCII (RFC 5280 §4.2.1.6 rfc822Name)");
    }
    if address
        .chars()
        .any(|c| c.is_ascii_whitespace() || c.is_ascii_control() || "<>()[],;\\\"".contains(c))
    {
        return bad("contains characters not allowed in a mailbox");
    }
    let Some((local, domain)) = address.split_once('@') else {
        return bad("no @");
    };
    if local.is_empty()
        || domain.is_empty()
        || domain.contains('@')
        || !domain.contains('.')
        || domain.starts_with('.')
        || domain.ends_with('.')
        || address.len() > 254
    {
        return bad("not a mailbox local@domain");
    }
    Ok(())
}

/// subjectAltName holding one rfc822Name. Non-critical: RFC 5280 §4.2.1.6 makes
/// it critical only when the subject field is empty, and chop never issues with an
/// empty subject (CPS §3.1.3).
pub fn build_email(address: &str) -> Result<Extension> {
    check_email(address)?;
    let san = SubjectAltName(vec![GeneralName::Rfc822Name(Ia5String::new(address)?)]);
    extension(oid::ID_CE_SUBJECT_ALT_NAME, false, &san)
}

/// Decode the extension value.
pub fn parse(ext: &Extension) -> Result<Vec<GeneralName>> {
    Ok(SubjectAltName::from_der(ext.extn_value.as_bytes())?.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert!(check_email("wang@example.tw").is_ok());
        for bad in [
            "", "a", "a@", "@b.tw", "a@b", "王@b.tw", "a b@c.tw", "a@@b.tw",
        ] {
            assert!(check_email(bad).is_err(), "{bad}");
        }
        let ext = build_email("wang@example.tw").unwrap();
        assert!(!ext.critical);
        assert_eq!(parse(&ext).unwrap().len(), 1);
    }
}
