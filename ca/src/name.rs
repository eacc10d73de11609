//! Subject and issuer distinguished names (CPS §3.1, RFC 5280 §4.1.2.4, §4.1.2.6).
//!
//! A [`DistinguishedName`] is an ordered list of (attribute, value) pairs, one
//! attribute per RDN, **in X.500 order** (most general first: `C` first), which is
//! the order in which the DER `RDNSequence` lists them and the order in which the
//! CPS writes names: `C=TW, O=行政院, OU=內政部憑證管理中心` (§3.1.5).
//!
//! RFC 4514 strings are written the other way round (most specific first:
//! `OU=內政部憑證管理中心,O=行政院,C=TW`). Use [`DistinguishedName::parse`] for
//! the CPS form and [`DistinguishedName::parse_rfc4514`] for RFC 4514 strings; the
//! two never guess.
//!
//! Encodings (RFC 5280 §4.1.2.4 and Appendix A.1):
//! - `countryName`: PrintableString, exactly two letters (ISO 3166 alpha-2).
//! - `serialNumber` (X520SerialNumber): PrintableString, at most 64 characters.
//! - everything else (DirectoryString): UTF8String, so Chinese names such as
//!   `王小明` and `內政部憑證管理中心` are encoded as the RFC requires ("CAs
//!   conforming to this profile MUST use either the PrintableString or UTF8String
//!   encoding of DirectoryString").

use std::fmt;

use const_oid::ObjectIdentifier;
use der::asn1::{Any, PrintableStringRef, SetOfVec, Utf8StringRef};
use der::{Encode, Tag, Tagged};
use x509_cert::attr::AttributeTypeAndValue;
use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};

use crate::error::{Error, Result};

/// The attribute types chop puts in names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Attribute {
    /// countryName, `C` (2.5.4.6).
    Country,
    /// stateOrProvinceName, `ST` (2.5.4.8).
    State,
    /// localityName, `L` (2.5.4.7).
    Locality,
    /// organizationName, `O` (2.5.4.10).
    Organization,
    /// organizationalUnitName, `OU` (2.5.4.11).
    OrganizationalUnit,
    /// commonName, `CN` (2.5.4.3).
    CommonName,
    /// serialNumber (2.5.4.5): the CA-assigned unique subscriber id (§3.1.5). Never
    /// the national ID (§9.4).
    SerialNumber,
}

impl Attribute {
    /// Every supported attribute.
    pub const ALL: [Attribute; 7] = [
        Attribute::Country,
        Attribute::State,
        Attribute::Locality,
        Attribute::Organization,
        Attribute::OrganizationalUnit,
        Attribute::CommonName,
        Attribute::SerialNumber,
    ];

    /// The attribute type OID (RFC 4519).
    pub fn oid(self) -> ObjectIdentifier {
        use const_oid::db::rfc4519 as o;
        match self {
            Attribute::Country => o::COUNTRY_NAME,
            Attribute::State => o::ST,
            Attribute::Locality => o::LOCALITY_NAME,
            Attribute::Organization => o::ORGANIZATION_NAME,
            Attribute::OrganizationalUnit => o::ORGANIZATIONAL_UNIT_NAME,
            Attribute::CommonName => o::COMMON_NAME,
            Attribute::SerialNumber => o::SERIAL_NUMBER,
        }
    }

    /// The attribute for an OID, if chop supports it.
    pub fn from_oid(oid: &ObjectIdentifier) -> Option<Attribute> {
        Attribute::ALL.into_iter().find(|a| a.oid() == *oid)
    }

    /// The short name used in string forms (`C`, `ST`, `L`, `O`, `OU`, `CN`,
    /// `serialNumber`).
    pub fn short_name(self) -> &'static str {
        match self {
            Attribute::Country => "C",
            Attribute::State => "ST",
            Attribute::Locality => "L",
            Attribute::Organization => "O",
            Attribute::OrganizationalUnit => "OU",
            Attribute::CommonName => "CN",
            Attribute::SerialNumber => "serialNumber",
        }
    }

    /// Parse a short name (case-insensitive; `SN` is *not* accepted because it is
    /// `surname` in RFC 4519, a classic source of confusion with `serialNumber`).
    pub fn from_short_name(s: &str) -> Option<Attribute> {
        let s = s.trim();
        Attribute::ALL
            .into_iter()
            .find(|a| a.short_name().eq_ignore_ascii_case(s))
    }

    /// Upper bound on the value length in characters (RFC 5280 Appendix A.1:
    /// ub-country-name-alpha-length 2, ub-state-name 128, ub-locality-name 128,
    /// ub-organization-name 64, ub-organizational-unit-name 64, ub-common-name 64,
    /// ub-serial-number 64).
    pub fn max_len(self) -> usize {
        match self {
            Attribute::Country => 2,
            Attribute::State | Attribute::Locality => 128,
            Attribute::Organization
            | Attribute::OrganizationalUnit
            | Attribute::CommonName
            | Attribute::SerialNumber => 64,
        }
    }

    /// The string type chop encodes this attribute with (RFC 5280 Appendix A.1:
    /// `countryName` and `serialNumber` are PrintableString; DirectoryString
    /// attributes are UTF8String, §4.1.2.4).
    pub fn string_tag(self) -> Tag {
        match self {
            Attribute::Country | Attribute::SerialNumber => Tag::PrintableString,
            _ => Tag::Utf8String,
        }
    }

    /// String types a name attribute may carry in a certificate chop signs: the
    /// type chop itself writes, plus PrintableString for DirectoryString attributes
    /// (RFC 5280 §4.1.2.4 allows either).
    pub fn allowed_tags(self) -> &'static [Tag] {
        match self {
            Attribute::Country | Attribute::SerialNumber => &[Tag::PrintableString],
            _ => &[Tag::Utf8String, Tag::PrintableString],
        }
    }
}

impl fmt::Display for Attribute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.short_name())
    }
}

/// Whether `c` is in the PrintableString repertoire (X.680 §41.4: letters, digits,
/// space and `'()+,-./:=?`).
pub fn is_printable_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || " '()+,-./:=?".contains(c)
}

/// Check one attribute value against its type's rules; the error names the
/// attribute and the problem.
pub fn check_value(attribute: Attribute, value: &str) -> Result<()> {
    let bad = |detail: String| Err(Error::InvalidSubject(format!("{attribute}: {detail}")));
    if value.is_empty() {
        return bad("empty value".into());
    }
    if value.trim() != value {
        return bad(format!("{value:?} has leading or trailing white space"));
    }
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return bad(format!("control character U+{:04X}", u32::from(c)));
    }
    let chars = value.chars().count();
    if chars > attribute.max_len() {
        return bad(format!(
            "{chars} characters, at most {} allowed (RFC 5280 Appendix A.1)",
            attribute.max_len()
        ));
    }
    if attribute.string_tag() == Tag::PrintableString
        && let Some(c) = value.chars().find(|c| !is_printable_char(*c))
    {
        return bad(format!(
            "{c:?} is not allowed in a PrintableString (letters, digits, space, '()+,-./:=?)"
        ));
    }
    if attribute == Attribute::SerialNumber && looks_like_national_id(value) {
        return bad(format!(
            "{value:?} looks like a national ID number; the serialNumber attribute holds the CA-assigned id, never the national ID (CPS §9.4, DESIGN §4)"
        ));
    }
    if attribute == Attribute::Country
        && !(chars == 2 && value.chars().all(|c| c.is_ascii_uppercase()))
    {
        return bad(format!(
            "{value:?} is not a two-letter upper-case ISO 3166 code"
        ));
    }
    Ok(())
}

/// Whether `value` has the shape of a Taiwanese national ID (國民身分證統一編號:
/// one letter, then `1`/`2`, then 8 digits) or resident certificate number (one
/// letter, then `8`/`9` or `A`–`D`, then 8 digits).
pub fn looks_like_national_id(value: &str) -> bool {
    let b = value.as_bytes();
    b.len() == 10
        && b[0].is_ascii_uppercase()
        && matches!(b[1], b'1' | b'2' | b'8' | b'9' | b'A'..=b'D')
        && b[2..].iter().all(u8::is_ascii_digit)
}

/// A validated distinguished name: attributes in X.500 order (C first), one per
/// RDN. Construct with [`DistinguishedName::new`], [`DistinguishedName::parse`] or
/// [`DistinguishedName::parse_rfc4514`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DistinguishedName {
    attributes: Vec<(Attribute, String)>,
}

impl DistinguishedName {
    /// A name from (attribute, value) pairs in X.500 order. Refuses an empty list
    /// (§3.1.3: no anonymous certificates) and any invalid value.
    pub fn new<S: Into<String>>(
        attributes: impl IntoIterator<Item = (Attribute, S)>,
    ) -> Result<Self> {
        let attributes: Vec<(Attribute, String)> =
            attributes.into_iter().map(|(a, v)| (a, v.into())).collect();
        if attributes.is_empty() {
            return Err(Error::InvalidSubject(
                "empty name: anonymous certificates are not issued (CPS §3.1.3)".into(),
            ));
        }
        for (a, v) in &attributes {
            check_value(*a, v)?;
        }
        Ok(DistinguishedName { attributes })
    }

    /// The CPS §3.1.5 subscriber name `C=<country>, CN=<name>, serialNumber=<CA-assigned
    /// id>`, in that order.
    pub fn subscriber(country: &str, common_name: &str, serial_number: &str) -> Result<Self> {
        Self::new([
            (Attribute::Country, country),
            (Attribute::CommonName, common_name),
            (Attribute::SerialNumber, serial_number),
        ])
    }

    /// Parse the CPS string form, **in X.500 order** (most general first), the way
    /// CPS §3.1.5 writes names: `C=TW, O=行政院, OU=內政部憑證管理中心`. Separators
    /// are `,` (ASCII) or `，` (full-width comma as in the CPS text); a literal comma
    /// or backslash in a value is written `\,` / `\\`. Multi-valued RDNs (`+`) are
    /// not supported.
    pub fn parse(s: &str) -> Result<Self> {
        let mut pairs = Vec::new();
        for part in split_unescaped(s)? {
            let (key, value) = part.split_once('=').ok_or_else(|| {
                Error::InvalidSubject(format!("{part:?} is not of the form TYPE=value"))
            })?;
            let attribute = Attribute::from_short_name(key).ok_or_else(|| {
                Error::InvalidSubject(format!(
                    "unknown attribute type {:?} (C, ST, L, O, OU, CN, serialNumber)",
                    key.trim()
                ))
            })?;
            pairs.push((attribute, value.trim().to_owned()));
        }
        Self::new(pairs)
    }

    /// Parse an RFC 4514 string, which lists RDNs **most specific first**
    /// (`CN=王小明,C=TW`), and reverse it into X.500 order (RFC 4514 §2.1: "the
    /// output consists of the string encodings of each RelativeDistinguishedName in
    /// the RDNSequence ... starting with the last element of the sequence").
    pub fn parse_rfc4514(s: &str) -> Result<Self> {
        let mut dn = Self::parse(s)?;
        dn.attributes.reverse();
        Ok(dn)
    }

    /// The attributes in X.500 order.
    pub fn attributes(&self) -> &[(Attribute, String)] {
        &self.attributes
    }

    /// The first value of `attribute`, if present.
    pub fn get(&self, attribute: Attribute) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(a, _)| *a == attribute)
            .map(|(_, v)| v.as_str())
    }

    /// The `x509-cert` name: one AttributeTypeAndValue per RDN, in the order given.
    pub fn to_name(&self) -> Result<Name> {
        let mut rdns = Vec::with_capacity(self.attributes.len());
        for (attribute, value) in &self.attributes {
            let value = match attribute.string_tag() {
                Tag::PrintableString => Any::from(PrintableStringRef::new(value)?),
                _ => Any::from(Utf8StringRef::new(value)?),
            };
            let atv = AttributeTypeAndValue {
                oid: attribute.oid(),
                value,
            };
            let mut set = SetOfVec::new();
            set.insert(atv)?;
            rdns.push(RelativeDistinguishedName(set));
        }
        Ok(RdnSequence(rdns))
    }

    /// Read a certificate name back (e.g. to renew with the same subject). Refuses
    /// names chop could not have issued: multi-valued RDNs, unsupported attributes,
    /// non-string values.
    pub fn from_name(name: &Name) -> Result<Self> {
        let mut pairs = Vec::new();
        for rdn in name.0.iter() {
            let atvs = rdn.0.as_slice();
            let [atv] = atvs else {
                return Err(Error::InvalidSubject(
                    "multi-valued RDNs are not supported".into(),
                ));
            };
            let attribute = Attribute::from_oid(&atv.oid).ok_or_else(|| {
                Error::InvalidSubject(format!("unsupported attribute type {}", atv.oid))
            })?;
            pairs.push((attribute, attribute_string(atv)?));
        }
        Self::new(pairs)
    }
}

impl fmt::Display for DistinguishedName {
    /// The CPS form in X.500 order, `C=TW, CN=王小明, serialNumber=…`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (a, v)) in self.attributes.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{a}={}", v.replace('\\', "\\\\").replace(',', "\\,"))?;
        }
        Ok(())
    }
}

/// The string value of an attribute (PrintableString, UTF8String or IA5String).
pub fn attribute_string(atv: &AttributeTypeAndValue) -> Result<String> {
    let value = &atv.value;
    let s = match value.tag() {
        Tag::PrintableString => value.decode_as::<PrintableStringRef<'_>>()?.to_string(),
        Tag::Utf8String => value.decode_as::<Utf8StringRef<'_>>()?.to_string(),
        Tag::Ia5String => value
            .decode_as::<der::asn1::Ia5StringRef<'_>>()?
            .to_string(),
        other => {
            return Err(Error::InvalidSubject(format!(
                "attribute {} has unsupported string type {other}",
                atv.oid
            )));
        }
    };
    Ok(s)
}

/// Problems with a name inside a certificate chop is about to sign (used by the
/// lint): empty names, multi-valued RDNs, unknown attributes, wrong string types,
/// invalid values. `what` is `subject` or `issuer`.
pub fn check_name(name: &Name, what: &str) -> Vec<String> {
    let mut findings = Vec::new();
    if name.0.is_empty() {
        findings.push(format!("{what} is empty"));
    }
    for rdn in name.0.iter() {
        if rdn.0.len() != 1 {
            findings.push(format!("{what} has a multi-valued RDN"));
        }
        for atv in rdn.0.iter() {
            let Some(attribute) = Attribute::from_oid(&atv.oid) else {
                findings.push(format!("{what} has unsupported attribute {}", atv.oid));
                continue;
            };
            let tag = atv.value.tag();
            if !attribute.allowed_tags().contains(&tag) {
                findings.push(format!(
                    "{what} {attribute} is a {tag}, expected {}",
                    attribute.string_tag()
                ));
                continue;
            }
            match attribute_string(atv) {
                Ok(v) => {
                    if let Err(e) = check_value(attribute, &v) {
                        findings.push(format!("{what} {e}"));
                    }
                }
                Err(e) => findings.push(format!("{what} {attribute}: {e}")),
            }
        }
    }
    findings
}

/// DER of a name, for byte-for-byte comparison (RFC 5280 §4.1.2.4: the issuer field
/// of an issued certificate must match the subject of the issuer's certificate).
pub fn name_der(name: &Name) -> Result<Vec<u8>> {
    Ok(name.to_der()?)
}

/// Split at unescaped `,` / `，`, undoing `\,` and `\\`; trims each part.
fn split_unescaped(s: &str) -> Result<Vec<String>> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(e @ (',' | '\\' | '+' | '=' | '"' | ';' | '<' | '>' | '#' | ' ')) => {
                    cur.push(e)
                }
                other => {
                    return Err(Error::InvalidSubject(format!(
                        "bad escape \\{} in {s:?}",
                        other.map(String::from).unwrap_or_default()
                    )));
                }
            },
            ',' | '，' => parts.push(std::mem::take(&mut cur)),
            '+' => {
                return Err(Error::InvalidSubject(
                    "multi-valued RDNs (+) are not supported".into(),
                ));
            }
            c => cur.push(c),
        }
    }
    parts.push(cur);
    if parts.len() == 1 && parts[0].trim().is_empty() {
        return Ok(Vec::new());
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use der::Decode;

    #[test]
    fn cps_form_keeps_order_and_encodings() {
        let dn = DistinguishedName::parse("C=TW, O=行政院, OU=內政部憑證管理中心").unwrap();
        let name = dn.to_name().unwrap();
        let oids: Vec<_> = name.0.iter().map(|r| r.0.as_slice()[0].oid).collect();
        use const_oid::db::rfc4519 as o;
        assert_eq!(
            oids,
            [
                o::COUNTRY_NAME,
                o::ORGANIZATION_NAME,
                o::ORGANIZATIONAL_UNIT_NAME
            ]
        );
        let tags: Vec<_> = name
            .0
            .iter()
            .map(|r| r.0.as_slice()[0].value.tag())
            .collect();
        assert_eq!(
            tags,
            [Tag::PrintableString, Tag::Utf8String, Tag::Utf8String]
        );
        // The DER round-trips and reads back to the same name.
        let der = name.to_der().unwrap();
        let back = DistinguishedName::from_name(&Name::from_der(&der).unwrap()).unwrap();
        assert_eq!(back, dn);
        assert_eq!(back.to_string(), "C=TW, O=行政院, OU=內政部憑證管理中心");
    }

    #[test]
    fn rfc4514_is_reversed() {
        let a = DistinguishedName::parse_rfc4514("serialNumber=A1234,CN=王小明,C=TW").unwrap();
        let b = DistinguishedName::parse("C=TW, CN=王小明, serialNumber=A1234").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.get(Attribute::CommonName), Some("王小明"));
        assert_eq!(a.attributes()[0].0, Attribute::Country);
        assert_eq!(
            DistinguishedName::subscriber("TW", "王小明", "A1234").unwrap(),
            b
        );
    }

    #[test]
    fn bad_names_are_refused() {
        let msg = |s: &str| DistinguishedName::parse(s).unwrap_err().to_string();
        assert!(msg("").contains("anonymous"));
        assert!(msg("C=TW, CN=").contains("CN: empty"));
        assert!(msg("C=Taiwan").contains("C: 6 characters"));
        assert!(msg("C=tw").contains("ISO 3166"));
        assert!(msg("C=TW, serialNumber=王").contains("PrintableString"));
        assert!(msg(&format!("CN={}", "字".repeat(65))).contains("65 characters"));
        assert!(msg("C=TW, SN=x").contains("unknown attribute"));
        assert!(msg("CN=a+O=b").contains("multi-valued"));
        assert!(msg("CN=tab\there").contains("control"));
        assert!(msg("C=TW, CN=x, serialNumber=A123456789").contains("national ID"));
        assert!(msg("C=TW, CN=x, serialNumber=FC12345678").contains("national ID"));
        assert!(DistinguishedName::parse("C=TW, CN=x, serialNumber=0000000012345678").is_ok());
        // 64 Chinese characters are fine: the bound counts characters, not octets.
        assert!(DistinguishedName::parse(&format!("CN={}", "字".repeat(64))).is_ok());
    }

    #[test]
    fn escapes_and_fullwidth_commas() {
        let dn = DistinguishedName::parse("C=TW，CN=Wang\\, Xiao-Ming").unwrap();
        assert_eq!(dn.get(Attribute::CommonName), Some("Wang, Xiao-Ming"));
        assert_eq!(dn.to_string(), "C=TW, CN=Wang\\, Xiao-Ming");
        assert_eq!(DistinguishedName::parse(&dn.to_string()).unwrap(), dn);
    }

    #[test]
    fn check_name_reports_wrong_string_types() {
        let bad_c = AttributeTypeAndValue {
            oid: Attribute::Country.oid(),
            value: Any::from(Utf8StringRef::new("TW").unwrap()),
        };
        let mut set = SetOfVec::new();
        set.insert(bad_c).unwrap();
        let name = RdnSequence(vec![RelativeDistinguishedName(set)]);
        let f = check_name(&name, "subject");
        assert_eq!(f, ["subject C is a UTF8String, expected PrintableString"]);
        assert_eq!(
            check_name(&RdnSequence(vec![]), "subject"),
            ["subject is empty"]
        );
    }
}
