//! The export file: what `kubectl chop audit export` writes and an auditor keeps
//! (CPS §5.5.2: ten years), verifiable offline with nothing but the file (and,
//! to pin the key, the audit key id published by the controller).
//!
//! A JSON object `{"format": "chop-audit-export/v1", "exportedAt": …, "namespace":
//! …, "auditKey": PEM SubjectPublicKeyInfo, "segments": [AuditSegmentSpec…]}` with
//! the segments in index order. Reading is strict: another `format` or an unknown
//! field is refused with a clear error rather than half-read.

use crds::AuditSegmentSpec;
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::key;

/// The format name this crate reads and writes.
pub const FORMAT: &str = "chop-audit-export/v1";

/// An export file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Export {
    /// Always [`FORMAT`].
    pub format: String,
    /// When the export was made (RFC 3339 UTC).
    pub exported_at: String,
    /// The namespace of the trail.
    pub namespace: String,
    /// The audit public key, PEM SubjectPublicKeyInfo.
    pub audit_key: String,
    /// The segments, in index order.
    pub segments: Vec<AuditSegmentSpec>,
}

impl Export {
    /// An export of `segments` made now.
    pub fn new(
        exported_at: jiff::Timestamp,
        namespace: &str,
        audit_key_pem: &str,
        segments: Vec<AuditSegmentSpec>,
    ) -> Export {
        Export {
            format: FORMAT.to_owned(),
            exported_at: crate::head::rfc3339_micros(exported_at),
            namespace: namespace.to_owned(),
            audit_key: audit_key_pem.to_owned(),
            segments,
        }
    }

    /// Read an export file.
    pub fn from_json(bytes: &[u8]) -> Result<Export, Error> {
        let value: serde_json::Value = serde_json::from_slice(bytes)
            .map_err(|e| Error::Export(format!("not a chop audit export (not JSON: {e})")))?;
        let Some(object) = value.as_object() else {
            return Err(Error::Export(
                "not a chop audit export (expected a JSON object)".to_owned(),
            ));
        };
        match object.get("format").and_then(|f| f.as_str()) {
            Some(FORMAT) => {}
            Some(other) => {
                return Err(Error::Export(format!(
                    "unknown export format {other:?}: this kubectl-chop reads {FORMAT}; use the version of kubectl-chop that wrote the file"
                )));
            }
            None => {
                return Err(Error::Export(format!(
                    "not a chop audit export (no \"format\": {FORMAT:?} field)"
                )));
            }
        }
        serde_json::from_value(value)
            .map_err(|e| Error::Export(format!("malformed {FORMAT} file: {e}")))
    }

    /// The file's bytes (pretty JSON, a final newline).
    pub fn to_json(&self) -> Result<Vec<u8>, Error> {
        let mut out = serde_json::to_vec_pretty(self).map_err(Error::Json)?;
        out.push(b'\n');
        Ok(out)
    }

    /// The audit key, DER SubjectPublicKeyInfo.
    pub fn key_spki(&self) -> Result<Vec<u8>, Error> {
        key::spki_from_pem(&self.audit_key)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn reading_is_strict_and_names_what_is_wrong() {
        let e = Export::new(jiff::Timestamp::UNIX_EPOCH, "chop-system", "pem", vec![]);
        let json = e.to_json().unwrap();
        assert_eq!(Export::from_json(&json).unwrap(), e);
        let err = |s: &str| Export::from_json(s.as_bytes()).unwrap_err().to_string();
        assert!(err("[]").contains("expected a JSON object"));
        assert!(err("{}").contains("no \"format\""));
        assert!(
            err(r#"{"format":"chop-audit-export/v2"}"#)
                .contains("unknown export format \"chop-audit-export/v2\"")
        );
        assert!(err("not json").contains("not JSON"));
        let mut v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        v["extra"] = 1.into();
        assert!(err(&v.to_string()).contains("unknown field `extra`"));
    }
}
