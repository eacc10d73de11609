//! The Merkle tree of RFC 9162 §2.1: hashes, roots, the compact frontier, and
//! inclusion and consistency proofs.
//!
//! RFC 9162 §2.1.1: "The hash of an empty list is the hash of an empty string:
//! `MTH({}) = HASH()`. The hash of a list with one entry (also known as a leaf hash)
//! is: `MTH({d(0)}) = HASH(0x00 || d(0))`. For n > 1, let k be the largest power of
//! two smaller than n (i.e., k < n <= 2k). The Merkle Tree Hash of an n-element
//! list D_n is then defined recursively as
//! `MTH(D_n) = HASH(0x01 || MTH(D[0:k]) || MTH(D[k:n]))`".
//!
//! Everything here works on leaf hashes (`HASH(0x00 || leaf)`), never on leaf
//! bytes, so that a verifier holds 32 bytes per record. [`CompactTree`] is a tree
//! of which only the leaves from some size `f` on are held, the first `f` being
//! summarised by their [`Frontier`]: that is what a pruned trail gives a verifier,
//! and it is enough to compute every root, every inclusion proof of a held leaf and
//! every consistency proof from a size `m >= f` (see [`CompactTree::subtree`]).

use aws_lc_rs::digest::{Context, SHA256, digest};

use crate::Error;

/// A SHA-256 hash.
pub type Hash = [u8; 32];

/// The hash of the empty tree: SHA-256 of the empty string (RFC 9162 §2.1.1).
pub fn empty_root() -> Hash {
    to_hash(digest(&SHA256, b"").as_ref())
}

/// Leaf hash: `SHA-256(0x00 || leaf)`.
pub fn leaf_hash(leaf: &[u8]) -> Hash {
    let mut ctx = Context::new(&SHA256);
    ctx.update(&[0x00]);
    ctx.update(leaf);
    to_hash(ctx.finish().as_ref())
}

/// Interior node hash: `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut ctx = Context::new(&SHA256);
    ctx.update(&[0x01]);
    ctx.update(left);
    ctx.update(right);
    to_hash(ctx.finish().as_ref())
}

fn to_hash(bytes: &[u8]) -> Hash {
    let mut h = [0u8; 32];
    h.copy_from_slice(&bytes[..32]);
    h
}

/// Lower-case hex of a hash.
pub fn to_hex(h: &Hash) -> String {
    hex::encode(h)
}

/// Parse 64 hex digits (either case) as a hash.
pub fn from_hex(s: &str) -> Result<Hash, Error> {
    let bytes = hex::decode(s).map_err(|_| Error::BadHash(s.to_owned()))?;
    if bytes.len() != 32 {
        return Err(Error::BadHash(s.to_owned()));
    }
    Ok(to_hash(&bytes))
}

/// Largest power of two strictly smaller than `n` (`n >= 2`).
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// Merkle Tree Hash of a list of leaf hashes (RFC 9162 §2.1.1).
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split(n as u64) as usize;
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// The compact range `[0, size)`: the roots of the perfect subtrees given by the
/// binary representation of `size`, largest (leftmost) first. With it, appending
/// leaves and computing the root needs no earlier leaf.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    hashes: Vec<Hash>,
}

impl Frontier {
    /// The frontier of the empty tree.
    pub fn new() -> Frontier {
        Frontier::default()
    }

    /// The frontier of a tree of `size` leaves from its hex list (as in
    /// `AuditSegmentSpec.frontier`); the list must have one hash per bit set in `size`.
    pub fn from_hex(size: u64, hashes: &[String]) -> Result<Frontier, Error> {
        if hashes.len() != size.count_ones() as usize {
            return Err(Error::BadFrontier {
                size,
                expected: size.count_ones(),
                found: hashes.len(),
            });
        }
        let hashes = hashes
            .iter()
            .map(|h| from_hex(h))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Frontier { size, hashes })
    }

    /// The frontier of the tree of these leaves.
    pub fn of(leaves: &[Hash]) -> Frontier {
        let mut f = Frontier::new();
        for l in leaves {
            f.push(*l);
        }
        f
    }

    /// The hashes as lower-case hex, largest subtree first.
    pub fn to_hex(&self) -> Vec<String> {
        self.hashes.iter().map(to_hex).collect()
    }

    /// Number of leaves of the tree.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The subtree roots, largest first.
    pub fn hashes(&self) -> &[Hash] {
        &self.hashes
    }

    /// The leaf ranges `[start, end)` of the subtrees, largest first.
    pub fn ranges(&self) -> Vec<(u64, u64)> {
        let mut out = Vec::with_capacity(self.hashes.len());
        let mut start = 0u64;
        for bit in (0..64).rev() {
            let width = 1u64 << bit;
            if self.size & width != 0 {
                out.push((start, start + width));
                start += width;
            }
        }
        out
    }

    /// Append one leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        let mut h = leaf;
        let mut size = self.size;
        while size & 1 == 1 {
            // The smallest subtree has the same width as `h`: merge them.
            if let Some(left) = self.hashes.pop() {
                h = node_hash(&left, &h);
            }
            size >>= 1;
        }
        self.hashes.push(h);
        self.size += 1;
    }

    /// Merkle Tree Hash of the tree: the subtree roots folded from the right.
    pub fn root(&self) -> Hash {
        let mut it = self.hashes.iter().rev();
        match it.next() {
            None => empty_root(),
            Some(last) => it.fold(*last, |acc, h| node_hash(h, &acc)),
        }
    }
}

/// A tree of which the first `frontier.size()` leaves are known only by their
/// frontier and the following ones by their leaf hashes.
#[derive(Clone, Debug, Default)]
pub struct CompactTree {
    frontier: Frontier,
    leaves: Vec<Hash>,
}

impl CompactTree {
    /// A tree from a frontier and the leaf hashes that follow it.
    pub fn new(frontier: Frontier, leaves: Vec<Hash>) -> CompactTree {
        CompactTree { frontier, leaves }
    }

    /// A tree of which every leaf is held.
    pub fn from_leaves(leaves: Vec<Hash>) -> CompactTree {
        CompactTree::new(Frontier::new(), leaves)
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.frontier.size() + self.leaves.len() as u64
    }

    /// Index of the first leaf held as a leaf hash.
    pub fn first_held(&self) -> u64 {
        self.frontier.size()
    }

    /// Append a leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        self.leaves.push(leaf);
    }

    /// The held leaf hash at `index`, if held.
    pub fn leaf(&self, index: u64) -> Option<Hash> {
        let i = index.checked_sub(self.frontier.size())?;
        self.leaves.get(usize::try_from(i).ok()?).copied()
    }

    /// Merkle Tree Hash of the whole tree.
    pub fn root(&self) -> Hash {
        self.subtree(0, self.size()).unwrap_or_else(empty_root)
    }

    /// The frontier of the first `size` leaves, if computable (`size` at least the
    /// frontier's).
    pub fn frontier_at(&self, size: u64) -> Option<Frontier> {
        if size < self.frontier.size() || size > self.size() {
            return None;
        }
        let mut f = self.frontier.clone();
        let held = usize::try_from(size - self.frontier.size()).ok()?;
        for l in &self.leaves[..held] {
            f.push(*l);
        }
        Some(f)
    }

    /// `MTH(D[start:end])`, for the ranges that appear in RFC 9162's tree (aligned
    /// perfect subtrees and right edges). `None` when the range lies strictly inside a
    /// frontier subtree (those leaves are not held) or is empty or out of bounds.
    pub fn subtree(&self, start: u64, end: u64) -> Option<Hash> {
        if start >= end || end > self.size() {
            return None;
        }
        let f = self.frontier.size();
        if start >= f {
            let a = usize::try_from(start - f).ok()?;
            let b = usize::try_from(end - f).ok()?;
            return Some(root(&self.leaves[a..b]));
        }
        if let Some(i) = self
            .frontier
            .ranges()
            .iter()
            .position(|r| *r == (start, end))
        {
            return Some(self.frontier.hashes[i]);
        }
        if end - start == 1 {
            return None;
        }
        let k = split(end - start);
        Some(node_hash(
            &self.subtree(start, start + k)?,
            &self.subtree(start + k, end)?,
        ))
    }

    /// Audit path of leaf `index` in the tree of the first `size` leaves
    /// (RFC 9162 §2.1.3.1), if computable.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Option<Vec<Hash>> {
        if index >= size || size > self.size() {
            return None;
        }
        let mut out = Vec::new();
        self.path(index, 0, size, &mut out)?;
        Some(out)
    }

    fn path(&self, m: u64, start: u64, end: u64, out: &mut Vec<Hash>) -> Option<()> {
        let n = end - start;
        if n == 1 {
            return Some(());
        }
        let k = split(n);
        if m < k {
            self.path(m, start, start + k, out)?;
            out.push(self.subtree(start + k, end)?);
        } else {
            self.path(m - k, start + k, end, out)?;
            out.push(self.subtree(start, start + k)?);
        }
        Some(())
    }

    /// Consistency proof between the tree of the first `old_size` leaves and the tree
    /// of the first `new_size` (RFC 9162 §2.1.4.1), if computable (`old_size` at least
    /// the frontier's size). Empty when `old_size` is 0 or equals `new_size`.
    pub fn consistency_proof(&self, old_size: u64, new_size: u64) -> Option<Vec<Hash>> {
        if old_size > new_size || new_size > self.size() {
            return None;
        }
        let mut out = Vec::new();
        if old_size == 0 || old_size == new_size {
            return Some(out);
        }
        self.subproof(old_size, 0, new_size, true, &mut out)?;
        Some(out)
    }

    fn subproof(&self, m: u64, start: u64, end: u64, b: bool, out: &mut Vec<Hash>) -> Option<()> {
        let n = end - start;
        if m == n {
            if !b {
                out.push(self.subtree(start, end)?);
            }
            return Some(());
        }
        let k = split(n);
        if m <= k {
            self.subproof(m, start, start + k, b, out)?;
            out.push(self.subtree(start + k, end)?);
        } else {
            self.subproof(m - k, start + k, end, false, out)?;
            out.push(self.subtree(start, start + k)?);
        }
        Some(())
    }
}

/// Verify an inclusion proof (RFC 9162 §2.1.3.2): leaf `index` with hash `leaf` is
/// in the tree of `size` leaves whose root is `root`.
pub fn verify_inclusion(index: u64, size: u64, leaf: &Hash, proof: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if snode == 0 {
            return false;
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    snode == 0 && r == *root
}

/// Verify a consistency proof (RFC 9162 §2.1.4.2): the tree of `new_size` leaves
/// with root `new_root` extends the tree of `old_size` leaves with root `old_root`.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> bool {
    if old_size > new_size {
        return false;
    }
    if old_size == new_size {
        return proof.is_empty() && old_root == new_root;
    }
    if old_size == 0 {
        // Every tree extends the empty one.
        return proof.is_empty() && *old_root == empty_root();
    }
    if proof.is_empty() {
        return false;
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old_size.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let (mut fnode, mut snode) = (old_size - 1, new_size - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let (mut fr, mut sr) = (path[0], path[0]);
    for c in &path[1..] {
        if snode == 0 {
            return false;
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    fr == *old_root && sr == *new_root && snode == 0
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    /// The RFC 6962 reference leaves (certificate-transparency's merkle tree tests).
    fn ct_leaves() -> Vec<Hash> {
        [
            "",
            "00",
            "10",
            "2021",
            "3031",
            "40414243",
            "5051525354555657",
            "606162636465666768696a6b6c6d6e6f",
        ]
        .iter()
        .map(|h| leaf_hash(&hex::decode(h).unwrap()))
        .collect()
    }

    fn h(s: &str) -> Hash {
        from_hex(s).unwrap()
    }

    const CT_ROOTS: [&str; 9] = [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    #[test]
    fn roots_match_the_rfc6962_reference_vectors() {
        let leaves = ct_leaves();
        for n in 0..=8 {
            assert_eq!(to_hex(&root(&leaves[..n])), CT_ROOTS[n], "n={n}");
            assert_eq!(to_hex(&Frontier::of(&leaves[..n]).root()), CT_ROOTS[n]);
            assert_eq!(
                to_hex(&CompactTree::from_leaves(leaves[..n].to_vec()).root()),
                CT_ROOTS[n]
            );
        }
    }

    #[test]
    fn inclusion_proofs_match_the_reference_vectors() {
        let cases: [(u64, u64, &[&str]); 5] = [
            (0, 1, &[]),
            (
                0,
                8,
                &[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                5,
                8,
                &[
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (
                2,
                3,
                &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
            ),
            (
                1,
                5,
                &[
                    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
        ];
        let leaves = ct_leaves();
        let tree = CompactTree::from_leaves(leaves.clone());
        for (i, n, path) in cases {
            let proof = tree.inclusion_proof(i, n).unwrap();
            let want: Vec<Hash> = path.iter().map(|p| h(p)).collect();
            assert_eq!(proof, want, "i={i} n={n}");
            assert!(verify_inclusion(
                i,
                n,
                &leaves[i as usize],
                &proof,
                &h(CT_ROOTS[n as usize])
            ));
        }
    }

    #[test]
    fn consistency_proofs_match_the_reference_vectors() {
        let cases: [(u64, u64, &[&str]); 4] = [
            (1, 1, &[]),
            (
                1,
                8,
                &[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                6,
                8,
                &[
                    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (
                2,
                5,
                &[
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
        ];
        let tree = CompactTree::from_leaves(ct_leaves());
        for (m, n, path) in cases {
            let proof = tree.consistency_proof(m, n).unwrap();
            let want: Vec<Hash> = path.iter().map(|p| h(p)).collect();
            assert_eq!(proof, want, "m={m} n={n}");
            assert!(verify_consistency(
                m,
                n,
                &h(CT_ROOTS[m as usize]),
                &h(CT_ROOTS[n as usize]),
                &proof
            ));
        }
    }

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    fn flip(h: &Hash, bit: usize) -> Hash {
        let mut out = *h;
        out[bit / 8] ^= 1 << (bit % 8);
        out
    }

    #[test]
    fn frontier_round_trips_and_matches_the_recursive_root_for_every_size() {
        let all = leaves(64);
        let mut f = Frontier::new();
        for n in 0..=64u64 {
            assert_eq!(f.size(), n);
            assert_eq!(f.root(), root(&all[..n as usize]), "n={n}");
            assert_eq!(f.hashes().len(), n.count_ones() as usize);
            let back = Frontier::from_hex(n, &f.to_hex()).unwrap();
            assert_eq!(back, f);
            for (i, (a, b)) in f.ranges().iter().enumerate() {
                assert_eq!(f.hashes()[i], root(&all[*a as usize..*b as usize]));
            }
            if n < 64 {
                f.push(all[n as usize]);
            }
        }
        assert!(matches!(
            Frontier::from_hex(3, &[to_hex(&all[0])]),
            Err(Error::BadFrontier { .. })
        ));
    }

    #[test]
    fn every_inclusion_proof_verifies_and_every_bit_flip_fails() {
        let all = leaves(64);
        for n in 1..=64u64 {
            let tree = CompactTree::from_leaves(all[..n as usize].to_vec());
            let r = tree.root();
            for i in 0..n {
                let leaf = all[i as usize];
                let proof = tree.inclusion_proof(i, n).unwrap();
                assert!(verify_inclusion(i, n, &leaf, &proof, &r), "n={n} i={i}");
                // Every single-bit change of the leaf, of any proof element, or of
                // the root fails.
                for bit in 0..256 {
                    assert!(!verify_inclusion(i, n, &flip(&leaf, bit), &proof, &r));
                    assert!(!verify_inclusion(i, n, &leaf, &proof, &flip(&r, bit)));
                    for j in 0..proof.len() {
                        let mut bad = proof.clone();
                        bad[j] = flip(&bad[j], bit);
                        assert!(!verify_inclusion(i, n, &leaf, &bad, &r));
                    }
                }
                // The wrong index, a shorter or longer path fail.
                if n > 1 {
                    assert!(!verify_inclusion((i + 1) % n, n, &leaf, &proof, &r));
                }
                // (A proof does not always bind the tree size: leaf 0 of 3 has the
                // same path in a tree of 4 whose last leaf is the root of
                // leaves 2..4. The size is bound by the signed tree head.)
                if !proof.is_empty() {
                    assert!(!verify_inclusion(i, n, &leaf, &proof[1..], &r));
                }
                let mut longer = proof.clone();
                longer.push(r);
                assert!(!verify_inclusion(i, n, &leaf, &longer, &r));
            }
        }
    }

    #[test]
    fn every_consistency_proof_verifies_and_every_bit_flip_fails() {
        let all = leaves(64);
        let tree = CompactTree::from_leaves(all.clone());
        for n in 1..=64u64 {
            let rn = root(&all[..n as usize]);
            for m in 1..=n {
                let rm = root(&all[..m as usize]);
                let proof = tree.consistency_proof(m, n).unwrap();
                assert!(verify_consistency(m, n, &rm, &rn, &proof), "m={m} n={n}");
                for bit in (0..256).step_by(7) {
                    assert!(!verify_consistency(m, n, &flip(&rm, bit), &rn, &proof));
                    assert!(!verify_consistency(m, n, &rm, &flip(&rn, bit), &proof));
                    for j in 0..proof.len() {
                        let mut bad = proof.clone();
                        bad[j] = flip(&bad[j], bit);
                        assert!(
                            !verify_consistency(m, n, &rm, &rn, &bad),
                            "m={m} n={n} j={j} bit={bit}"
                        );
                    }
                }
                if m < n {
                    // A tree that differs in one old leaf is not consistent.
                    let mut other = all[..n as usize].to_vec();
                    other[(m - 1) as usize] = flip(&other[(m - 1) as usize], 0);
                    let other_root = root(&other);
                    assert!(!verify_consistency(m, n, &rm, &other_root, &proof));
                }
            }
        }
    }

    #[test]
    fn a_compact_tree_proves_from_its_frontier_on() {
        let all = leaves(64);
        let full = CompactTree::from_leaves(all.clone());
        for f in 0..=40u64 {
            let tree =
                CompactTree::new(Frontier::of(&all[..f as usize]), all[f as usize..].to_vec());
            assert_eq!(tree.root(), full.root());
            for i in f..64 {
                assert_eq!(
                    tree.inclusion_proof(i, 64),
                    full.inclusion_proof(i, 64),
                    "f={f} i={i}"
                );
            }
            for m in f.max(1)..=64 {
                assert_eq!(
                    tree.consistency_proof(m, 64),
                    full.consistency_proof(m, 64),
                    "f={f} m={m}"
                );
                assert_eq!(tree.frontier_at(m), Some(Frontier::of(&all[..m as usize])));
            }
        }
        // A leaf inside a frontier subtree of more than one leaf cannot be proved.
        let tree = CompactTree::new(Frontier::of(&all[..5]), all[5..].to_vec());
        assert_eq!(tree.inclusion_proof(3, 64), None);
        assert_eq!(tree.leaf(4), None);
        assert_eq!(tree.leaf(5), Some(all[5]));
    }
}
