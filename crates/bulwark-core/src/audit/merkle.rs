//! RFC 6962 / RFC 9162 Merkle tree hashing over audit records: leaf and node hashes, the
//! compact "frontier" that lets the log extend its root in O(log n) per record, inclusion
//! proofs and their verification.
//!
//! This module only hashes; it never sees the records' meaning, and it must stay bit-for-bit
//! compatible with RFC 9162 §2.1 so that any Certificate-Transparency-style verifier can check
//! a Bulwark proof.

use aws_lc_rs::digest;

use super::Hash;

/// `SHA-256(0x00 || data)`: the hash of one leaf.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut c = digest::Context::new(&digest::SHA256);
    c.update(&[0]);
    c.update(data);
    to_hash(c.finish().as_ref())
}

/// `SHA-256(0x01 || left || right)`: the hash of an inner node.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut c = digest::Context::new(&digest::SHA256);
    c.update(&[1]);
    c.update(left);
    c.update(right);
    to_hash(c.finish().as_ref())
}

fn to_hash(b: &[u8]) -> Hash {
    let mut h = [0u8; 32];
    h.copy_from_slice(b);
    h
}

/// The root of the empty tree: `SHA-256("")`.
pub fn empty_root() -> Hash {
    to_hash(digest::digest(&digest::SHA256, b"").as_ref())
}

/// The roots of the perfect subtrees that make up a tree of `size` leaves, largest (leftmost)
/// first: one per set bit of `size`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    nodes: Vec<Hash>,
}

impl Frontier {
    /// Rebuilds a frontier from its parts; `None` when the node count does not match `size`.
    pub fn from_parts(size: u64, nodes: Vec<Hash>) -> Option<Self> {
        (nodes.len() == size.count_ones() as usize).then_some(Self { size, nodes })
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The subtree roots, leftmost first.
    pub fn nodes(&self) -> &[Hash] {
        &self.nodes
    }

    /// Appends one leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        let mut h = leaf;
        // Each trailing 1 bit of the old size is a perfect subtree of equal height to merge.
        let mut s = self.size;
        while s & 1 == 1 {
            let left = self.nodes.pop().unwrap_or_default();
            h = node_hash(&left, &h);
            s >>= 1;
        }
        self.nodes.push(h);
        self.size += 1;
    }

    /// The RFC 6962 Merkle tree hash of every leaf so far.
    pub fn root(&self) -> Hash {
        let mut it = self.nodes.iter().rev();
        let Some(last) = it.next() else { return empty_root() };
        it.fold(*last, |acc, left| node_hash(left, &acc))
    }

    /// Encodes as `size (8 bytes BE) || nodes`.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = self.size.to_be_bytes().to_vec();
        for n in &self.nodes {
            v.extend_from_slice(n);
        }
        v
    }

    /// Decodes [`Frontier::encode`]'s output.
    pub fn decode(b: &[u8]) -> Option<Self> {
        let size = u64::from_be_bytes(b.get(..8)?.try_into().ok()?);
        let rest = b.get(8..)?;
        if rest.len() % 32 != 0 {
            return None;
        }
        Self::from_parts(size, rest.chunks(32).map(to_hash).collect())
    }
}

/// The Merkle tree hash of `leaves` (RFC 6962 §2.1).
pub fn root_of(leaves: &[Hash]) -> Hash {
    let mut f = Frontier::default();
    for l in leaves {
        f.push(*l);
    }
    f.root()
}

fn split(n: usize) -> usize {
    // The largest power of two strictly smaller than n (n >= 2).
    let mut k = 1;
    while k << 1 < n {
        k <<= 1;
    }
    k
}

/// The audit path of leaf `m` in the tree over `leaves` (RFC 6962 §2.1.1 `PATH(m, D[n])`),
/// from the leaf upwards. Empty when `m` is out of range.
pub fn inclusion_path(m: usize, leaves: &[Hash]) -> Vec<Hash> {
    let n = leaves.len();
    if m >= n || n < 2 {
        return Vec::new();
    }
    let k = split(n);
    if m < k {
        let mut p = inclusion_path(m, &leaves[..k]);
        p.push(root_of(&leaves[k..]));
        p
    } else {
        let mut p = inclusion_path(m - k, &leaves[k..]);
        p.push(root_of(&leaves[..k]));
        p
    }
}

/// Checks an inclusion proof (RFC 9162 §2.1.3.2): `leaf` is leaf number `index` of the tree of
/// `size` leaves whose root is `root`.
pub fn verify_inclusion(index: u64, size: u64, leaf: &Hash, path: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut f, mut s, mut r) = (index, size - 1, *leaf);
    for p in path {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    s == 0 && r == *root
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference_root(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => empty_root(),
            1 => leaves[0],
            n => {
                let k = split(n);
                node_hash(&reference_root(&leaves[..k]), &reference_root(&leaves[k..]))
            }
        }
    }

    #[test]
    fn frontier_matches_the_recursive_definition_and_proofs_verify() {
        let leaves: Vec<Hash> = (0u32..40).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        for n in 0..leaves.len() {
            let t = &leaves[..n];
            let root = reference_root(t);
            assert_eq!(root_of(t), root, "size {n}");
            let f = Frontier::decode(&{
                let mut f = Frontier::default();
                for l in t {
                    f.push(*l);
                }
                f.encode()
            })
            .unwrap();
            assert_eq!(f.root(), root);
            for m in 0..n {
                let p = inclusion_path(m, t);
                assert!(verify_inclusion(m as u64, n as u64, &t[m], &p, &root), "{m}/{n}");
                // Tampered twins: another leaf, another index, a flipped path node.
                let other = leaf_hash(b"forged");
                assert!(!verify_inclusion(m as u64, n as u64, &other, &p, &root));
                if n > 1 {
                    let wrong = (m + 1) % n;
                    assert!(!verify_inclusion(wrong as u64, n as u64, &t[m], &p, &root));
                    let mut bad = p.clone();
                    bad[0][0] ^= 1;
                    assert!(!verify_inclusion(m as u64, n as u64, &t[m], &bad, &root));
                }
            }
        }
    }

    #[test]
    fn rfc6962_empty_root() {
        assert_eq!(
            hex::encode(empty_root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
