//! Shamir secret sharing over GF(2^8) (Shamir 1979, "How to share a secret"),
//! byte by byte: each secret byte is the constant term of its own random
//! polynomial of degree `threshold - 1`, and share `x` holds the value of every
//! polynomial at `x` (1..=n; x = 0 would be the secret itself).
//!
//! The field is GF(2^8) with the AES reduction polynomial x^8 + x^4 + x^3 + x + 1
//! (0x11b, FIPS 197 §4.2). Multiplication is a fixed 8-round shift-and-add with
//! masks instead of branches or log tables, so its timing does not depend on the
//! secret bytes; inversion is a^254 (Fermat), also fixed-time.
//!
//! Fewer than `threshold` shares give no information about the secret: every value
//! of the secret is equally consistent with them. Interpolating them anyway yields
//! an unrelated value, which is why the caller checks the result (here: the
//! unwrapped key's public key against the manifest).

use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// Multiply in GF(2^8) mod 0x11b without secret-dependent branches.
fn mul(mut a: u8, mut b: u8) -> u8 {
    let mut product = 0u8;
    for _ in 0..8 {
        // 0xff when the low bit of b is set, else 0.
        product ^= a & 0u8.wrapping_sub(b & 1);
        let carry = 0u8.wrapping_sub(a >> 7);
        a = (a << 1) ^ (0x1b & carry);
        b >>= 1;
    }
    product
}

/// a^-1 = a^254 in GF(2^8) (0 maps to 0; never called with 0 here).
fn inv(a: u8) -> u8 {
    let mut result = 1u8;
    let mut base = a;
    let mut e = 254u8;
    for _ in 0..8 {
        let take = 0u8.wrapping_sub(e & 1);
        let m = mul(result, base);
        result = (m & take) | (result & !take);
        base = mul(base, base);
        e >>= 1;
    }
    result
}

/// Check 1 < threshold <= n <= 255.
pub(crate) fn check_parameters(threshold: u8, n: usize) -> Result<()> {
    if threshold < 2 {
        return Err(Error::CeremonyInvalid(format!(
            "threshold {threshold}: a backup needs at least 2 shares to restore (a 1-of-n backup is a plain copy of the key-encryption key)"
        )));
    }
    if n > 255 {
        return Err(Error::CeremonyInvalid(format!(
            "{n} custodians: at most 255 shares (share indices are 1..=255 in GF(2^8))"
        )));
    }
    if usize::from(threshold) > n {
        return Err(Error::CeremonyInvalid(format!(
            "threshold {threshold} is more than the {n} custodians"
        )));
    }
    Ok(())
}

/// Split `secret` into `n` shares, any `threshold` of which rebuild it. Share `i`
/// (0-based) has x coordinate `i + 1`; its y values are returned zeroizing.
pub(crate) fn split(secret: &[u8], threshold: u8, n: usize) -> Result<Vec<Zeroizing<Vec<u8>>>> {
    check_parameters(threshold, n)?;
    let degree = usize::from(threshold) - 1;
    // coefficients[j * degree + k]: coefficient of x^(k+1) for secret byte j.
    let mut coefficients = Zeroizing::new(vec![0u8; secret.len() * degree]);
    aws_lc_rs::rand::fill(&mut coefficients)
        .map_err(|_| Error::SoftwareKey("random Shamir coefficients".into()))?;
    let mut shares = Vec::with_capacity(n);
    for i in 0..n {
        // i < 255, checked above.
        let x = u8::try_from(i + 1).map_err(|_| Error::CeremonyInvalid("share index".into()))?;
        let mut ys = Zeroizing::new(Vec::with_capacity(secret.len()));
        for (j, &s) in secret.iter().enumerate() {
            // Horner: ((c_d x + c_{d-1}) x + … + c_1) x + s.
            let mut y = 0u8;
            for k in (0..degree).rev() {
                y = mul(y, x) ^ coefficients[j * degree + k];
            }
            ys.push(mul(y, x) ^ s);
        }
        shares.push(ys);
    }
    Ok(shares)
}

/// Rebuild the secret from `(x, y values)` shares by Lagrange interpolation at 0.
/// All shares must have distinct non-zero x and the same length; the caller
/// ensures there are at least `threshold` of them (with fewer, the result is an
/// unrelated value).
pub(crate) fn combine(shares: &[(u8, &[u8])]) -> Result<Zeroizing<Vec<u8>>> {
    let len = shares.first().map(|(_, y)| y.len()).unwrap_or(0);
    for (i, (x, y)) in shares.iter().enumerate() {
        if *x == 0 || y.len() != len {
            return Err(Error::CeremonyInvalid(format!(
                "share {x}: index must be 1..=255 and every share {len} octets"
            )));
        }
        if shares[..i].iter().any(|(other, _)| other == x) {
            return Err(Error::CeremonyInvalid(format!("share index {x} twice")));
        }
    }
    // Lagrange basis at 0: l_i(0) = prod_{j != i} x_j / (x_j - x_i); in GF(2^8)
    // subtraction is XOR.
    let mut secret = Zeroizing::new(vec![0u8; len]);
    for (i, (xi, yi)) in shares.iter().enumerate() {
        let mut basis = 1u8;
        for (j, (xj, _)) in shares.iter().enumerate() {
            if i != j {
                basis = mul(basis, mul(*xj, inv(*xj ^ *xi)));
            }
        }
        for (s, &y) in secret.iter_mut().zip(yi.iter()) {
            *s ^= mul(basis, y);
        }
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_arithmetic_matches_fips_197() {
        // FIPS 197 §4.2: {57} • {83} = {c1}; §4.2.1: {57} • {13} = {fe}.
        assert_eq!(mul(0x57, 0x83), 0xc1);
        assert_eq!(mul(0x57, 0x13), 0xfe);
        for a in 1..=255u8 {
            assert_eq!(mul(a, inv(a)), 1, "inverse of {a}");
        }
    }

    /// Every subset of `shares` (as indices) of size `k`.
    fn subsets(n: usize, k: usize) -> Vec<Vec<usize>> {
        (0u32..(1 << n))
            .filter(|m| m.count_ones() as usize == k)
            .map(|m| (0..n).filter(|i| m & (1 << i) != 0).collect())
            .collect()
    }

    #[test]
    fn any_m_of_n_rebuild_and_m_minus_1_do_not() {
        let mut secret = [0u8; 32];
        aws_lc_rs::rand::fill(&mut secret).unwrap();
        for (m, n) in [(2u8, 2usize), (2, 3), (3, 5), (4, 7), (5, 5)] {
            let shares = split(&secret, m, n).unwrap();
            assert_eq!(shares.len(), n);
            for subset in subsets(n, usize::from(m)) {
                let picked: Vec<(u8, &[u8])> = subset
                    .iter()
                    .map(|&i| (u8::try_from(i + 1).unwrap(), shares[i].as_slice()))
                    .collect();
                assert_eq!(
                    combine(&picked).unwrap().as_slice(),
                    secret,
                    "{m}-of-{n} {subset:?}"
                );
            }
            for subset in subsets(n, usize::from(m) - 1) {
                let picked: Vec<(u8, &[u8])> = subset
                    .iter()
                    .map(|&i| (u8::try_from(i + 1).unwrap(), shares[i].as_slice()))
                    .collect();
                assert_ne!(
                    combine(&picked).unwrap().as_slice(),
                    secret,
                    "{m}-of-{n} {subset:?}"
                );
            }
        }
    }

    #[test]
    fn no_share_equals_the_secret_and_indices_are_distinct() {
        let secret = [0x42u8; 32];
        let shares = split(&secret, 3, 255).unwrap();
        assert_eq!(shares.len(), 255);
        for s in &shares {
            assert_ne!(s.as_slice(), secret);
        }
        let picked: Vec<(u8, &[u8])> = [(1u8, 0usize), (128, 127), (255, 254)]
            .iter()
            .map(|&(x, i)| (x, shares[i].as_slice()))
            .collect();
        assert_eq!(combine(&picked).unwrap().as_slice(), secret);
    }

    #[test]
    fn parameters_outside_1_lt_m_le_n_le_255_are_refused() {
        let secret = [1u8; 32];
        for (m, n) in [(1u8, 5usize), (0, 5), (6, 5), (2, 256)] {
            let err = split(&secret, m, n).unwrap_err();
            assert!(
                matches!(err, Error::CeremonyInvalid(_)),
                "{m}-of-{n}: {err}"
            );
        }
        let shares = split(&secret, 2, 3).unwrap();
        let dup = [(1u8, shares[0].as_slice()), (1, shares[0].as_slice())];
        assert!(combine(&dup).is_err());
        let zero = [(0u8, shares[0].as_slice()), (1, shares[1].as_slice())];
        assert!(combine(&zero).is_err());
    }
}
