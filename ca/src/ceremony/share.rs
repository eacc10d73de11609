//! The plaintext of one key-encryption-key share, as a custodian holds it.
//!
//! A small versioned binary structure (all lengths one octet, so no field can be
//! mis-sized):
//!
//! ```text
//! "chop-share"   10 octets, magic
//! version        1 octet, = 1
//! threshold      1 octet, m (2..=255)
//! index          1 octet, the Shamir x coordinate (1..=255)
//! id length      1 octet, L (1..=255)
//! backup id      L octets, UTF-8: the uid of the Backup ceremony
//! value length   1 octet, = 32
//! values         32 octets: y of each of the 32 KEK-byte polynomials at x = index
//! ```
//!
//! Binding the backup id and threshold into the plaintext lets restore refuse a
//! share of another backup before combining, and the fingerprint (lower-case hex
//! SHA-256 of the whole plaintext, published by backup next to the index) lets it
//! name an altered share and its submitter.

use std::fmt;

use zeroize::Zeroizing;

use crate::error::Redacted;

const MAGIC: &[u8] = b"chop-share";
const VERSION: u8 = 1;
/// Octets of the key-encryption key (AES-256) and so of each share's values.
pub(crate) const KEK_LEN: usize = 32;

/// A decoded share plaintext. `Debug` never shows the values.
pub(crate) struct SharePlaintext {
    pub(crate) backup_id: String,
    pub(crate) threshold: u8,
    pub(crate) index: u8,
    pub(crate) values: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for SharePlaintext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharePlaintext")
            .field("backup_id", &self.backup_id)
            .field("threshold", &self.threshold)
            .field("index", &self.index)
            .field("values", &Redacted)
            .finish()
    }
}

impl SharePlaintext {
    /// The encoding above (zeroizing). Fails only for a backup id of 0 or more
    /// than 255 octets or values that are not 32 octets.
    pub(crate) fn encode(&self) -> Result<Zeroizing<Vec<u8>>, String> {
        let id = self.backup_id.as_bytes();
        let id_len = u8::try_from(id.len())
            .ok()
            .filter(|l| *l > 0)
            .ok_or_else(|| format!("backup id must be 1 to 255 octets, not {}", id.len()))?;
        if self.values.len() != KEK_LEN {
            return Err(format!("share values must be {KEK_LEN} octets"));
        }
        let mut out = Zeroizing::new(Vec::with_capacity(MAGIC.len() + 5 + id.len() + KEK_LEN));
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&[VERSION, self.threshold, self.index, id_len]);
        out.extend_from_slice(id);
        out.push(KEK_LEN as u8);
        out.extend_from_slice(&self.values);
        Ok(out)
    }

    /// Parse the encoding above; the error says what is wrong (never the values).
    pub(crate) fn decode(bytes: &[u8]) -> Result<SharePlaintext, String> {
        let rest = bytes
            .strip_prefix(MAGIC)
            .ok_or("not a chop key-ceremony share (no \"chop-share\" header)")?;
        let [version, threshold, index, id_len, rest @ ..] = rest else {
            return Err("share truncated in its header".into());
        };
        if *version != VERSION {
            return Err(format!(
                "share format version {version}, this chop reads {VERSION}"
            ));
        }
        let id_len = usize::from(*id_len);
        let (id, rest) = rest
            .split_at_checked(id_len)
            .ok_or("share truncated in its backup id")?;
        let [value_len, values @ ..] = rest else {
            return Err("share truncated before its values".into());
        };
        if usize::from(*value_len) != KEK_LEN || values.len() != KEK_LEN {
            return Err(format!(
                "share values must be {KEK_LEN} octets (header says {value_len}, found {})",
                values.len()
            ));
        }
        let backup_id = std::str::from_utf8(id)
            .map_err(|_| "share backup id is not UTF-8".to_string())?
            .to_string();
        if *index == 0 || *threshold < 2 || id_len == 0 {
            return Err("share has index 0, threshold below 2 or an empty backup id".into());
        }
        Ok(SharePlaintext {
            backup_id,
            threshold: *threshold,
            index: *index,
            values: Zeroizing::new(values.to_vec()),
        })
    }
}

/// Lower-case hex SHA-256 of a share plaintext (safe to publish: SHA-256 is
/// preimage resistant and the plaintext has 256 bits of entropy).
pub(crate) fn fingerprint(plaintext: &[u8]) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, plaintext)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SharePlaintext {
        SharePlaintext {
            backup_id: "0b4c-uid".into(),
            threshold: 3,
            index: 4,
            values: Zeroizing::new((0..32).collect()),
        }
    }

    #[test]
    fn round_trips_and_debug_hides_values() {
        let bytes = sample().encode().unwrap();
        assert_eq!(bytes.len(), 10 + 4 + 8 + 1 + 32);
        let back = SharePlaintext::decode(&bytes).unwrap();
        assert_eq!(
            (back.backup_id.as_str(), back.threshold, back.index),
            ("0b4c-uid", 3, 4)
        );
        assert_eq!(back.values.as_slice(), sample().values.as_slice());
        let debug = format!("{back:?}");
        assert!(
            debug.contains("<redacted>") && !debug.contains("[0, 1, 2"),
            "{debug}"
        );
        assert_eq!(fingerprint(&bytes).len(), 64);
    }

    #[test]
    fn truncated_or_foreign_bytes_are_refused() {
        let bytes = sample().encode().unwrap();
        for cut in [0, 5, 12, 16, bytes.len() - 1] {
            assert!(
                SharePlaintext::decode(&bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert!(SharePlaintext::decode(&longer).is_err());
        let mut v2 = bytes.to_vec();
        v2[10] = 2;
        assert!(
            SharePlaintext::decode(&v2)
                .unwrap_err()
                .contains("version 2")
        );
    }
}
