//! EME-OAEP decoding with SHA-256 and MGF1-SHA-256 (RFC 8017 §7.1.2 step 3), for
//! tokens whose CKM_RSA_PKCS_OAEP offers only SHA-1 (SoftHSM2 2.6): the token does
//! the RSA private-key operation (CKM_RSA_X_509) and this decodes its output.
//!
//! Every check is done on every input and folded into one flag without
//! data-dependent branches, and every failure is the same `None`, so that the
//! caller cannot become a Manger-style oracle (RFC 8017 §7.1.2 Note: "an opponent
//! [must not] be able to distinguish" the error conditions).

use aws_lc_rs::digest::{SHA256, SHA256_OUTPUT_LEN, digest};
use zeroize::Zeroizing;

const H: usize = SHA256_OUTPUT_LEN;

/// MGF1 with SHA-256 (RFC 8017 §B.2.1).
fn mgf1(seed: &[u8], len: usize) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(len + H));
    let mut counter = 0u32;
    while out.len() < len {
        let mut input = Zeroizing::new(seed.to_vec());
        input.extend_from_slice(&counter.to_be_bytes());
        out.extend_from_slice(digest(&SHA256, &input).as_ref());
        counter = counter.wrapping_add(1);
    }
    out.truncate(len);
    out
}

/// 0xff if `a == b` else 0, without branches.
fn ct_eq(a: u8, b: u8) -> u8 {
    let x = u32::from(a ^ b);
    // x - 1 underflows (sets bit 31) only when x == 0.
    (((x.wrapping_sub(1)) >> 31) as u8).wrapping_neg()
}

/// Decode the encoded message `em` (the raw RSA output, left-padded to
/// `modulus_len` octets) with an empty label; `None` on any decryption error.
pub(super) fn decode_sha256(em: &[u8], modulus_len: usize) -> Option<Zeroizing<Vec<u8>>> {
    // Step 1 (length checks), on public lengths only.
    if modulus_len < 2 * H + 2 || em.len() > modulus_len {
        return None;
    }
    let mut padded = Zeroizing::new(vec![0u8; modulus_len - em.len()]);
    padded.extend_from_slice(em);
    let l_hash = digest(&SHA256, b"");
    let (y, rest) = padded.split_at(1);
    let (masked_seed, masked_db) = rest.split_at(H);
    let seed_mask = mgf1(masked_db, H);
    let seed: Zeroizing<Vec<u8>> = Zeroizing::new(
        masked_seed
            .iter()
            .zip(seed_mask.iter())
            .map(|(a, b)| a ^ b)
            .collect(),
    );
    let db_mask = mgf1(&seed, masked_db.len());
    let db: Zeroizing<Vec<u8>> = Zeroizing::new(
        masked_db
            .iter()
            .zip(db_mask.iter())
            .map(|(a, b)| a ^ b)
            .collect(),
    );
    // good = 0xff while every check holds.
    let mut good = ct_eq(y[0], 0);
    for (a, b) in db[..H].iter().zip(l_hash.as_ref()) {
        good &= ct_eq(*a, *b);
    }
    // Find the 0x01 after the zero padding: `looking` is 0xff until it is seen;
    // any non-zero, non-0x01 octet before it is an error.
    let mut looking = 0xffu8;
    let mut index = 0usize;
    for (i, &b) in db[H..].iter().enumerate() {
        let is_one = ct_eq(b, 1);
        let is_zero = ct_eq(b, 0);
        let found_here = looking & is_one;
        // index = i where found_here (mask applied to every bit of usize).
        // usize::MAX where found, else 0.
        index |= i & usize::from(found_here & 1).wrapping_neg();
        good &= !(looking & !is_one & !is_zero);
        looking &= !is_one;
    }
    good &= !looking;
    if good != 0xff {
        return None;
    }
    Some(Zeroizing::new(db[H + index + 1..].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-built EM (RFC 8017 §7.1.1 step 2) decodes; any flipped octet
    /// outside the message is a decryption error.
    #[test]
    fn decodes_an_encoded_message_and_rejects_tampering() {
        let cek = [0x5au8; 32];
        let k = 256;
        let seed = [0x11u8; H];
        let mut db = digest(&SHA256, b"").as_ref().to_vec();
        db.resize(k - cek.len() - H - 2, 0);
        db.push(1);
        db.extend_from_slice(&cek);
        let db_mask = mgf1(&seed, db.len());
        let masked_db: Vec<u8> = db.iter().zip(db_mask.iter()).map(|(a, b)| a ^ b).collect();
        let seed_mask = mgf1(&masked_db, H);
        let masked_seed: Vec<u8> = seed
            .iter()
            .zip(seed_mask.iter())
            .map(|(a, b)| a ^ b)
            .collect();
        let mut em = vec![0u8];
        em.extend_from_slice(&masked_seed);
        em.extend_from_slice(&masked_db);
        assert_eq!(decode_sha256(&em, k).unwrap().as_slice(), cek);
        // Leading zero octet stripped by the token: still decodes.
        assert_eq!(decode_sha256(&em[1..], k).unwrap().as_slice(), cek);
        for i in [0, 5, 40, 100, 200, 223] {
            let mut bad = em.clone();
            bad[i] ^= 0x01;
            assert!(decode_sha256(&bad, k).is_none(), "flip at {i}");
        }
        assert!(decode_sha256(&em, 64).is_none());
    }
}
