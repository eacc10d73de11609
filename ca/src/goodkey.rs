//! Weak-key checks on subject public keys: the structural tests a CA runs on
//! every key it certifies, beyond its size (CPS §6.1.5, §6.1.6), in the manner
//! of Let's Encrypt's Boulder (`goodkey`).
//!
//! RSA ([`check_rsa`]):
//! - public exponent exactly 65537;
//! - modulus odd and with no prime factor below 752;
//! - modulus not factored by 110 rounds of Fermat's method;
//! - modulus without the ROCA fingerprint (CVE-2017-15361).
//!
//! EC ([`check_ec_point`]): the point is uncompressed, its coordinates lie in
//! `[0, p−1]` and it is on the key's curve (hence, on chop's prime-order curves,
//! in the right group and not the identity).
//!
//! Every failure is its own [`Error`] variant with a stable reason
//! (`WeakKeyExponent`, `WeakKeySmallFactor`, `WeakKeyFermat`, `WeakKeyROCA`,
//! `InvalidECPoint`). Everything here works on public values only, so timing
//! that depends on the input reveals nothing secret.

use std::sync::OnceLock;

use der::Decode;
use num_bigint::BigUint;
use num_integer::Integer;
use spki::SubjectPublicKeyInfoOwned;

use crate::error::{Error, Result};
use crate::signer::{Curve, KeySpec};

/// The one RSA public exponent chop certifies, F4 = 2^16 + 1.
///
/// CA/Browser Forum Baseline Requirements §6.1.6: the exponent is odd, ≥ 3,
/// and SHOULD be in [2^16 + 1, 2^256 − 1]; NIST SP 800-89 §5.3.1 and FIPS 186-5
/// §A.1.1 require e > 2^16. Like Boulder, chop accepts 65537 alone: every
/// common key generator uses it, and a single value leaves no room for small
/// exponents (e = 3, the Bleichenbacher 2006 signature forgery and
/// Håstad's broadcast attack) or unusual large ones.
pub const RSA_EXPONENT: u32 = 65_537;

/// Prime factors below this bound are refused (BR §6.1.6 and NIST SP 800-89
/// §5.3.3: the modulus SHOULD be odd, not a prime power and have no factor
/// smaller than 752).
pub const SMALL_PRIME_BOUND: u32 = 752;

/// Rounds of Fermat's factorization method. BR §6.1.1.3 calls a key weak
/// when Fermat's method factors its modulus within 100 rounds; like Boulder,
/// chop runs 110 for a margin.
pub const FERMAT_ROUNDS: u32 = 110;

/// Largest prime of the ROCA fingerprint: the primes 3…167, i.e. the odd primes
/// of the smallest primorial M the Infineon generator uses (the product of the
/// first 39 primes, for 512-bit keys; larger keys use the first 71, 126 or 225
/// primes, so every vulnerable modulus shows the structure modulo these).
pub const ROCA_LAST_PRIME: u32 = 167;

/// Check a key's structure: RSA modulus and exponent ([`check_rsa`]) or EC point
/// ([`check_ec_point`]). `spec` is the key's type as read by
/// [`KeySpec::of`](crate::signer::KeySpec::of); sizes are the policy's business
/// ([`KeyPolicy`](crate::csr::KeyPolicy)).
pub fn check(spki: &SubjectPublicKeyInfoOwned, spec: KeySpec) -> Result<()> {
    let bits = spki.subject_public_key.as_bytes().ok_or(Error::Malformed {
        what: "public key",
        detail: "BIT STRING has unused bits".into(),
    })?;
    match spec {
        KeySpec::Rsa { .. } => {
            // RFC 3279 §2.3.1: the parameters MUST be NULL. Accepting them absent
            // too would give one key two encodings, hence two fingerprints (the
            // SHA-256 of the SPKI), and a compromised key could slip past the
            // block list and the same-key revocation (CPS §4.6.2) re-encoded.
            // EC keys have one encoding already: a named curve (explicit
            // parameters are refused by `KeySpec::of`) and the uncompressed
            // point; the RSAPublicKey itself is strict DER (`der` refuses
            // non-minimal integers and trailing data).
            if spki.algorithm.parameters != Some(der::Any::null()) {
                return Err(Error::Malformed {
                    what: "RSA public key",
                    detail: "the rsaEncryption AlgorithmIdentifier's parameters must be NULL (RFC 3279 §2.3.1)".into(),
                });
            }
            let key = RsaPublicKey::from_der(bits).map_err(|e| Error::Malformed {
                what: "RSA public key",
                detail: e.to_string(),
            })?;
            check_rsa(key.modulus.as_bytes(), key.public_exponent.as_bytes())
        }
        KeySpec::Ec(curve) => check_ec_point(curve, bits),
    }
}

/// RSAPublicKey (RFC 8017 §A.1.1).
#[derive(Clone, Debug, der::Sequence)]
struct RsaPublicKey<'a> {
    modulus: der::asn1::UintRef<'a>,
    public_exponent: der::asn1::UintRef<'a>,
}

/// Moduli above this size are refused before any arithmetic: no chop policy
/// accepts them (at most 8192 bits), and this check also runs on unverified
/// CSRs, whose size only the API server's object limit bounds.
pub const MAX_RSA_BITS: u64 = 16_384;

/// Check an RSA public key given as big-endian unsigned integers: exponent,
/// small factors, ROCA, Fermat, in that order (cheapest first).
pub fn check_rsa(modulus: &[u8], exponent: &[u8]) -> Result<()> {
    let e = BigUint::from_bytes_be(exponent);
    if e != BigUint::from(RSA_EXPONENT) {
        return Err(Error::WeakKeyExponent {
            exponent: if e.bits() <= 64 {
                e.to_string()
            } else {
                format!("of {} bits", e.bits())
            },
        });
    }
    let n = BigUint::from_bytes_be(modulus);
    if n.bits() > MAX_RSA_BITS {
        return Err(Error::UnsupportedAlgorithm(format!(
            "RSA modulus of {} bits (at most {MAX_RSA_BITS})",
            n.bits()
        )));
    }
    if let Some(prime) = small_factor(&n) {
        return Err(Error::WeakKeySmallFactor { prime });
    }
    if has_roca_fingerprint(&n) {
        return Err(Error::WeakKeyRoca);
    }
    if fermat_factorable(&n, FERMAT_ROUNDS) {
        return Err(Error::WeakKeyFermat {
            rounds: FERMAT_ROUNDS,
        });
    }
    Ok(())
}

/// The primes below [`SMALL_PRIME_BOUND`] (sieve of Eratosthenes) and their
/// product, computed once.
fn small_primes() -> &'static (Vec<u32>, BigUint) {
    static PRIMES: OnceLock<(Vec<u32>, BigUint)> = OnceLock::new();
    PRIMES.get_or_init(|| {
        let primes = primes_below(SMALL_PRIME_BOUND);
        let product = primes
            .iter()
            .fold(BigUint::from(1u32), |acc, p| acc * BigUint::from(*p));
        (primes, product)
    })
}

/// The primes below `bound`, in increasing order.
fn primes_below(bound: u32) -> Vec<u32> {
    let size = usize::try_from(bound).unwrap_or(0);
    let mut composite = vec![false; size];
    let mut primes = Vec::new();
    for i in 2..size {
        if composite.get(i).copied().unwrap_or(true) {
            continue;
        }
        primes.extend(u32::try_from(i).ok());
        let mut multiple = i * i;
        while multiple < size {
            if let Some(c) = composite.get_mut(multiple) {
                *c = true;
            }
            multiple += i;
        }
    }
    primes
}

/// The smallest prime below [`SMALL_PRIME_BOUND`] dividing `n` (2 for an even
/// modulus), if any. One gcd with the primes' product answers whether there is
/// one (as Boulder does); only then is the culprit looked for.
fn small_factor(n: &BigUint) -> Option<u32> {
    let (primes, product) = small_primes();
    let common = n.gcd(product);
    if common == BigUint::from(1u32) {
        return None;
    }
    primes
        .iter()
        .copied()
        .find(|p| (&common % *p) == BigUint::from(0u32))
}

/// Whether Fermat's method finds n = a² − b² = (a − b)(a + b) within `rounds`
/// values of a, starting at ⌈√n⌉. It succeeds quickly exactly when the two
/// primes are close: with p < q, a reaches (p + q)/2 after about
/// (q − p)² / (8√n) steps (Fermat 1643; de Weger, "Cryptanalysis of RSA with
/// small prime difference", AAECC 13, 2002), so 110 rounds catch every key
/// with |p − q| below roughly 2^(bits/4 + 5). Independently drawn primes of a
/// 2048-bit key differ by about 2^1023.
fn fermat_factorable(n: &BigUint, rounds: u32) -> bool {
    let mut a = n.sqrt();
    if &a * &a < *n {
        a += 1u32;
    }
    // b² = a² − n, kept up to date as a grows: (a + 1)² − a² = 2a + 1.
    let mut b2 = &a * &a - n;
    for _ in 0..rounds {
        if is_square(&b2) {
            return true;
        }
        b2 += &a * 2u32 + 1u32;
        a += 1u32;
    }
    false
}

/// Whether `x` is a perfect square. Most non-squares are ruled out by their
/// residues modulo 64, 63, 65 and 11 (a square is a quadratic residue modulo
/// every m) before the integer square root is taken.
fn is_square(x: &BigUint) -> bool {
    const FILTERS: [u32; 4] = [64, 63, 65, 11];
    let modulus: u32 = FILTERS.iter().product();
    let r = (x % modulus).iter_u32_digits().next().unwrap_or(0);
    if FILTERS.iter().any(|m| !is_quadratic_residue(r % m, *m)) {
        return false;
    }
    let root = x.sqrt();
    &root * &root == *x
}

/// Whether `r` is a square modulo `m` (small `m` only).
fn is_quadratic_residue(r: u32, m: u32) -> bool {
    (0..m).any(|y| (y * y) % m == r)
}

/// Whether `n` has the fingerprint of RSALib, the Infineon key generator of
/// CVE-2017-15361 (Nemec, Sýs, Švenda, Klinec, Matyáš: "The Return of
/// Coppersmith's Attack: Practical Factorization of Widely Used RSA Moduli",
/// ACM CCS 2017).
///
/// RSALib draws primes of the form p = k·M + (65537^a mod M), M a primorial.
/// For every prime r dividing M, p mod r is then a power of 65537 mod r, and so
/// is n = p·q mod r: n mod r lies in the multiplicative subgroup that 65537
/// generates modulo r. The paper's test checks this for each odd prime r ≤ 167;
/// a modulus that lies in the subgroup for all of them is RSALib's (the same
/// 38 primes as the authors' published detector and Boulder's). A key drawn
/// independently passes them all with probability 2^−27.8 (the product of the
/// subgroups' relative sizes; the `roca_false_positive_rate` test computes
/// it): such a key would be refused and its holder asked for another.
fn has_roca_fingerprint(n: &BigUint) -> bool {
    primes_below(ROCA_LAST_PRIME + 1)
        .into_iter()
        .filter(|r| *r > 2)
        .all(|r| {
            let residue = (n % r).iter_u32_digits().next().unwrap_or(0);
            in_subgroup_of_65537(residue, r)
        })
}

/// Whether `residue` is a power of 65537 modulo the small prime `r`.
fn in_subgroup_of_65537(residue: u32, r: u32) -> bool {
    let g = RSA_EXPONENT % r;
    let mut x = 1 % r;
    loop {
        if x == residue {
            return true;
        }
        x = (x * g) % r;
        if x == 1 % r {
            return false;
        }
    }
}

/// Domain parameters of a NIST curve y² = x³ − 3x + b over GF(p) (FIPS 186-5
/// is superseded for curves by NIST SP 800-186 §3.2.1; the same values are in
/// SEC 2 v2 §2.4.2, §2.5.1, §2.6.1).
struct CurveParams {
    /// The field prime p, big-endian hex.
    p: &'static str,
    /// The coefficient b, big-endian hex.
    b: &'static str,
}

fn params(curve: Curve) -> CurveParams {
    match curve {
        Curve::P256 => CurveParams {
            p: "ffffffff00000001000000000000000000000000ffffffffffffffffffffffff",
            b: "5ac635d8aa3a93e7b3ebbd55769886bc651d06b0cc53b0f63bce3c3e27d2604b",
        },
        Curve::P384 => CurveParams {
            p: "fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffe\
                ffffffff0000000000000000ffffffff",
            b: "b3312fa7e23ee7e4988e056be3f82d19181d9c6efe8141120314088f5013875a\
                c656398d8a2ed19d2a85c8edd3ec2aef",
        },
        Curve::P521 => CurveParams {
            p: "01ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff\
                ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff\
                ffff",
            b: "0051953eb9618e1c9a1f929a21a0b68540eea2da725b99b315f3b8b489918ef1\
                09e156193951ec7e937b1652c0bd3bb1bf073573df883d2c34f1ef451fd46b50\
                3f00",
        },
    }
}

/// Check an EC public key point (the SubjectPublicKeyInfo's BIT STRING, SEC 1
/// v2 §2.3.3 encoding) for `curve`: the partial public-key validation of NIST
/// SP 800-56A Rev. 3 §5.6.2.3.4 (SEC 1 v2 §3.2.2.1), which suffices on chop's
/// prime-order curves (cofactor 1: every point on the curve other than the
/// identity generates the whole group, so the full validation's n·Q = O holds).
///
/// - Only the uncompressed form (0x04 ‖ x ‖ y) is accepted: RFC 5480 §2.2 makes
///   it mandatory and the compressed form optional; the identity has no
///   uncompressed encoding (its SEC 1 encoding is the single octet 0x00).
/// - x and y are in [0, p − 1] (their encodings are p's length, so only values
///   ≥ p can be out of range).
/// - y² ≡ x³ − 3x + b (mod p).
pub fn check_ec_point(curve: Curve, point: &[u8]) -> Result<()> {
    let invalid = |detail: String| Error::InvalidEcPoint {
        curve: format!("{curve:?}"),
        detail,
    };
    let CurveParams { p, b } = params(curve);
    let p = BigUint::parse_bytes(p.as_bytes(), 16)
        .ok_or_else(|| invalid("internal: bad curve prime".into()))?;
    let b = BigUint::parse_bytes(b.as_bytes(), 16)
        .ok_or_else(|| invalid("internal: bad curve coefficient".into()))?;
    let field_len = usize::try_from(p.bits().div_ceil(8)).unwrap_or(usize::MAX);
    match point.first() {
        None => return Err(invalid("empty point".into())),
        Some(0x00) => return Err(invalid("the point at infinity (identity)".into())),
        Some(0x02 | 0x03) => {
            return Err(invalid(
                "compressed point encoding; chop accepts the uncompressed form (RFC 5480 §2.2)"
                    .into(),
            ));
        }
        Some(0x04) => {}
        Some(other) => {
            return Err(invalid(format!(
                "point encoding 0x{other:02x}; chop accepts the uncompressed form 0x04 (RFC 5480 §2.2)"
            )));
        }
    }
    if point.len() != 1 + 2 * field_len {
        return Err(invalid(format!(
            "uncompressed point of {} octets, expected {}",
            point.len(),
            1 + 2 * field_len
        )));
    }
    let (xs, ys) = point[1..].split_at(field_len);
    let x = BigUint::from_bytes_be(xs);
    let y = BigUint::from_bytes_be(ys);
    if x >= p || y >= p {
        return Err(invalid(
            "a coordinate is not below the field prime p".into(),
        ));
    }
    // y² and x³ − 3x + b, both reduced mod p (adding 3p keeps the subtraction
    // non-negative: x < p).
    let lhs = (&y * &y) % &p;
    let rhs = ((&x * &x % &p) * &x + &p * 3u32 - &x * 3u32 + &b) % &p;
    if lhs != rhs {
        return Err(invalid("the point is not on the curve".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signer::Signer;
    use crate::signer::software::SoftwareKey;
    use std::time::{Duration, Instant};

    // ----- helpers: primes of our own, so every test key is ours -----

    /// Miller–Rabin with the first 20 primes as bases (ample for test inputs).
    fn is_probable_prime(n: &BigUint) -> bool {
        let one = BigUint::from(1u32);
        let two = BigUint::from(2u32);
        if *n < two {
            return false;
        }
        for p in primes_below(72) {
            let p = BigUint::from(p);
            if *n == p {
                return true;
            }
            if (n % &p) == BigUint::from(0u32) {
                return false;
            }
        }
        let n1 = n - &one;
        let s = n1.trailing_zeros().unwrap_or(0);
        let d = &n1 >> s;
        'bases: for a in primes_below(72) {
            let mut x = BigUint::from(a).modpow(&d, n);
            if x == one || x == n1 {
                continue;
            }
            for _ in 1..s {
                x = &x * &x % n;
                if x == n1 {
                    continue 'bases;
                }
            }
            return false;
        }
        true
    }

    /// The smallest prime ≥ `start`.
    fn next_prime(start: &BigUint) -> BigUint {
        let mut c = start | BigUint::from(1u32);
        while !is_probable_prime(&c) {
            c += 2u32;
        }
        c
    }

    /// A deterministic "random" 1024-bit odd start value from a seed (SHA-256
    /// chain; not secret, only reproducible).
    fn start_1024(seed: u8) -> BigUint {
        let mut bytes = Vec::new();
        let mut block = [seed; 32];
        while bytes.len() < 128 {
            block = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &block)
                .as_ref()
                .try_into()
                .unwrap();
            bytes.extend_from_slice(&block);
        }
        bytes[0] |= 0xc0; // top two bits set: p·q has 2048 bits
        BigUint::from_bytes_be(&bytes[..128])
    }

    fn modulus(n: &BigUint) -> Vec<u8> {
        n.to_bytes_be()
    }

    const E: [u8; 3] = [0x01, 0x00, 0x01];

    // ----- RSA -----

    #[test]
    fn exponent_must_be_65537() {
        let n = next_prime(&start_1024(1)) * next_prime(&start_1024(2));
        assert!(check_rsa(&modulus(&n), &E).is_ok());
        for e in [&[3u8][..], &[0x01, 0x00, 0x03], &[0x01, 0x00, 0x00, 0x01]] {
            let err = check_rsa(&modulus(&n), e).unwrap_err();
            assert_eq!(err.reason(), "WeakKeyExponent", "{err}");
        }
        let err = check_rsa(&modulus(&n), &[3]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "weak RSA key: public exponent 3, chop accepts only 65537"
        );
        let err = check_rsa(&modulus(&n), &[0xff; 40]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "weak RSA key: public exponent of 320 bits, chop accepts only 65537"
        );
        // Huge moduli are refused before any arithmetic.
        let err = check_rsa(&[0xff; 2049], &E).unwrap_err();
        assert_eq!(err.reason(), "UnsupportedAlgorithm", "{err}");
    }

    #[test]
    fn exponent_3_key_from_openssl_is_refused() {
        // openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048
        //   -pkeyopt rsa_keygen_pubexp:3 | openssl pkey -pubout
        let pem = include_str!("../tests/data/rsa2048-e3.pub.pem");
        let (_, der) = der::pem::decode_vec(pem.as_bytes()).unwrap();
        let spki = SubjectPublicKeyInfoOwned::from_der(&der).unwrap();
        let spec = KeySpec::of(&spki).unwrap();
        let err = check(&spki, spec).unwrap_err();
        assert_eq!(err.reason(), "WeakKeyExponent", "{err}");
    }

    #[test]
    fn rsa_parameters_must_be_null() {
        let key = SoftwareKey::generate(KeySpec::Rsa { bits: 2048 }).unwrap();
        let mut spki = key.public_key().clone();
        let spec = KeySpec::of(&spki).unwrap();
        check(&spki, spec).unwrap();
        spki.algorithm.parameters = None;
        let err = check(&spki, spec).unwrap_err();
        assert_eq!(err.reason(), "Malformed");
        assert!(err.to_string().contains("must be NULL"), "{err}");
    }

    #[test]
    fn small_factors_are_refused() {
        let p = next_prime(&start_1024(1));
        let big = &p * next_prime(&start_1024(2));
        // Even, and a prime factor just below the bound; 757 (first prime above
        // it) is not this check's business.
        for (n, prime) in [
            (&p * 2u32 * 3u32, 2),
            (&big * 743u32, 743),
            (&big * 751u32, 751),
            (&p * 5u32 * &p, 5),
        ] {
            let err = check_rsa(&modulus(&n), &E).unwrap_err();
            assert!(
                matches!(err, Error::WeakKeySmallFactor { prime: f } if f == prime),
                "{err}"
            );
            assert_eq!(err.reason(), "WeakKeySmallFactor");
        }
        assert_eq!(small_factor(&(&big * 757u32)), None);
        assert_eq!(small_primes().0.len(), 133);
        assert_eq!(small_primes().0.last(), Some(&751));
    }

    #[test]
    fn adjacent_primes_are_factored_by_fermat() {
        let p = next_prime(&start_1024(4));
        let q = next_prime(&(&p + 1u32));
        let n = &p * &q;
        let err = check_rsa(&modulus(&n), &E).unwrap_err();
        assert_eq!(err.reason(), "WeakKeyFermat", "{err}");
        // p == q (a square) too.
        assert!(fermat_factorable(&(&p * &p), 1));
        // Still caught near the edge of the round budget, not beyond it:
        // q − p ≈ 2^(bits/4) · √(8·rounds) needs about `rounds` steps.
        let far = next_prime(&(&p + (BigUint::from(1u32) << 520)));
        assert!(!fermat_factorable(&(&p * &far), FERMAT_ROUNDS));
        assert!(check_rsa(&modulus(&(&p * &far)), &E).is_ok());
        let near = next_prime(&(&p + (BigUint::from(1u32) << 514)));
        assert!(fermat_factorable(&(&p * &near), FERMAT_ROUNDS));
    }

    /// The primorial of the first `count` primes.
    fn primorial(count: usize) -> BigUint {
        primes_below(2000)
            .into_iter()
            .take(count)
            .fold(BigUint::from(1u32), |acc, p| acc * p)
    }

    /// A prime of RSALib's form k·M + (65537^a mod M) with ~`bits` bits, built
    /// here (no vulnerable device involved).
    fn roca_prime(m: &BigUint, a: u32, bits: u64) -> BigUint {
        let g = BigUint::from(RSA_EXPONENT).modpow(&BigUint::from(a), m);
        let mut k = (BigUint::from(1u32) << (bits - m.bits())) + BigUint::from(a);
        loop {
            let candidate = &k * m + &g;
            if is_probable_prime(&candidate) {
                return candidate;
            }
            k += 1u32;
        }
    }

    #[test]
    fn roca_structured_modulus_is_refused() {
        // The paper's M for 2048-bit keys: the primorial of the first 126 primes.
        let m = primorial(126);
        let p = roca_prime(&m, 1_000_003, 1024);
        let q = roca_prime(&m, 7_777_777, 1024);
        let n = &p * &q;
        assert!(n.bits() >= 2047);
        let err = check_rsa(&modulus(&n), &E).unwrap_err();
        assert_eq!(err.reason(), "WeakKeyROCA", "{err}");
        // One prime of the form is not enough: the fingerprint is on n.
        let ordinary = next_prime(&start_1024(5));
        assert!(!has_roca_fingerprint(&(&p * &ordinary)));
    }

    #[test]
    fn roca_false_positive_rate() {
        // Probability that n mod r falls in <65537> mod r for every r, for
        // an n with uniformly distributed nonzero residues.
        let mut log2 = 0f64;
        for r in primes_below(ROCA_LAST_PRIME + 1)
            .into_iter()
            .filter(|r| *r > 2)
        {
            let size = (1..r).filter(|x| in_subgroup_of_65537(*x, r)).count();
            log2 += (size as f64 / f64::from(r - 1)).log2();
        }
        assert!(
            (-28.0..-27.5).contains(&log2),
            "false-positive probability 2^{log2}"
        );
    }

    #[test]
    fn random_rsa_keys_pass_and_the_check_is_cheap() {
        // Set CHOP_GOODKEY_KEYS to check more (the report ran 300).
        let count: usize = std::env::var("CHOP_GOODKEY_KEYS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(16);
        let mut spent = Duration::ZERO;
        for _ in 0..count {
            let key = SoftwareKey::generate(KeySpec::Rsa { bits: 2048 }).unwrap();
            let spki = key.public_key();
            let spec = KeySpec::of(spki).unwrap();
            let started = Instant::now();
            check(spki, spec).unwrap();
            spent += started.elapsed();
        }
        eprintln!(
            "goodkey: {count} RSA-2048 keys passed, {:?} per key",
            spent / u32::try_from(count).unwrap()
        );
    }

    // ----- EC -----

    fn point_of(curve: Curve) -> Vec<u8> {
        let key = SoftwareKey::generate(KeySpec::Ec(curve)).unwrap();
        key.public_key()
            .subject_public_key
            .as_bytes()
            .unwrap()
            .to_vec()
    }

    #[test]
    fn generated_points_are_on_their_curves() {
        for curve in [Curve::P256, Curve::P384, Curve::P521] {
            for _ in 0..8 {
                check_ec_point(curve, &point_of(curve)).unwrap();
            }
        }
    }

    #[test]
    fn off_curve_and_malformed_points_are_refused() {
        for curve in [Curve::P256, Curve::P384, Curve::P521] {
            let good = point_of(curve);
            let len = (good.len() - 1) / 2;
            let mut off = good.clone();
            *off.last_mut().unwrap() ^= 1; // y + 1 or y − 1: not on the curve
            let p = params(curve);
            let p = BigUint::parse_bytes(p.p.as_bytes(), 16).unwrap();
            let mut big_x = vec![0x04];
            let mut px = p.to_bytes_be();
            while px.len() < len {
                px.insert(0, 0);
            }
            big_x.extend_from_slice(&px);
            big_x.extend_from_slice(&good[1 + len..]);
            let mut compressed = vec![0x02 | (good.last().unwrap() & 1)];
            compressed.extend_from_slice(&good[1..1 + len]);
            let mut zero = vec![0u8; good.len()];
            zero[0] = 0x04;
            for (bad, what) in [
                (off, "not on the curve"),
                (big_x, "not below the field prime"),
                (compressed, "compressed"),
                (vec![0x00], "infinity"),
                (zero, "not on the curve"),
                (good[..good.len() - 1].to_vec(), "octets"),
                (Vec::new(), "empty"),
            ] {
                let err = check_ec_point(curve, &bad).unwrap_err();
                assert_eq!(err.reason(), "InvalidECPoint");
                assert!(err.to_string().contains(what), "{curve:?}: {err}");
            }
        }
    }

    #[test]
    fn point_for_another_curve_is_refused() {
        let p384 = point_of(Curve::P384);
        let err = check_ec_point(Curve::P256, &p384).unwrap_err();
        assert_eq!(err.reason(), "InvalidECPoint", "{err}");
    }
}
